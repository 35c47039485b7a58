#!/bin/sh
# Starts an operator script (scripts/NAME.ts) under the zx CLI.
#
# Why not plain `node --import tsx zx/cli.js NAME.ts` every time: on Node 20
# tsx's hooks run in a loader thread that every one of the ~100 modules waits
# on, which made each start cost about 1 s (measured: `backup.sh --help`
# 1.0 s, the same code as one bundled file 0.4 s). Every backup, restore
# and drill pays that, so it counts against the backup window and the RTO.
#
# So the sources are transpiled once by esbuild (the transpiler tsx itself
# uses) into .bundle/KEY/, KEY being a hash of every source file, tsconfig and the
# lockfile: any edit, checkout or deploy gives a new key, so a stale
# bundle can never run. npm packages stay external (zx, chalk, minimist and
# the AWS SDK are loaded from node_modules as before). Anything that stops
# the bundle from being built or found (read-only checkout, no esbuild)
# falls back to the tsx way: slower, same behaviour.
set -u
script=$1
shift
# Parameter expansion, not dirname/basename: this must work on whatever PATH cron gives.
root=${script%/*}
root=${root%/*}
name=${script##*/}
name=${name%.ts}
zx=$root/node_modules/zx/build/cli.js
esbuild=$root/node_modules/esbuild/bin/esbuild

bundle() {
  [ -x "$esbuild" ] || return 1
  key=$(cd "$root" && { find lib scripts -type f -name '*.ts' -exec sha256sum {} + | LC_ALL=C sort -k 2 && sha256sum package-lock.json tsconfig.json; } 2>/dev/null | sha256sum | cut -c 1-20) || return 1
  case $key in *[!0-9a-f]* | '') return 1 ;; esac
  dir=$root/.bundle/$key
  [ -f "$dir/$name.mjs" ] && return 0
  mkdir -p "$root/.bundle" 2>/dev/null || return 1
  tmp=$(mktemp -d "$root/.bundle/.build-XXXXXX" 2>/dev/null) || return 1
  # Every operator script at once, sharing chunks; --splitting keeps a dynamic
  # import (the AWS SDK's store) lazy, as it is unbundled.
  if (cd "$root" && "$esbuild" scripts/backup.ts scripts/restore.ts scripts/drill.ts scripts/status.ts scripts/prune.ts \
    --bundle --splitting --format=esm --platform=node --target=node20 --packages=external \
    --out-extension:.js=.mjs --outdir="$tmp" --log-level=error) >/dev/null 2>&1 && [ -f "$tmp/$name.mjs" ]; then
    # Atomic publish; a concurrent start that published first wins and ours goes.
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    # Bundles of earlier sources, once nothing can still be running them.
    find "$root/.bundle" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -mtime +7 -exec rm -rf {} + 2>/dev/null
  else
    rm -rf "$tmp"
  fi
  [ -f "$dir/$name.mjs" ]
}

# The young generation: a backup's data passes through in 64 KiB buffers whose memory is only
# given back when their small JS handles are collected, and 1 MiB collects them sooner. Measured
# on a 1 GiB upload to a bucket: peak RSS 119 MiB instead of 133-145, the same seconds (the same
# for a 1 GiB files backup). A files restore was ~15% slower with it, so the others keep 2 MiB.
# --expose-gc: lib/pipeline/reclaim.ts collects that generation every 8 MiB of streamed data, which
# keeps dead socket buffers from piling up (a 1 GiB --copy-to: 130-137 MB peak RSS instead of 160-175).
case $name in
backup) semi=1 ;;
*) semi=2 ;;
esac
# Quietly: a tool missing from PATH only means the slower start below.
if bundle 2>/dev/null; then
  exec node --max-semi-space-size=$semi --expose-gc "$zx" "$dir/$name.mjs" "$@"
fi
exec node --max-semi-space-size=$semi --expose-gc --import "$root/node_modules/tsx/dist/loader.mjs" "$zx" "$script" "$@"
