#!/usr/bin/env bash
# npm run bench: every benchmark in one run, each printing its ratios against the plain tools.
# Arguments (--megabytes N, --runs N) go to each of them.
set -euo pipefail
here="$(dirname "$(realpath "$0")")"
"$here/bench.ts" "$@"
"$here/bench-files.ts" "$@"
if [ -x "$here/bench-s3.ts" ]; then "$here/bench-s3.ts" "$@"; fi
