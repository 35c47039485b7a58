#!/usr/bin/env bash
# A throwaway one-node Ceph cluster (monitor + memstore OSD + RADOS Gateway) that speaks real S3,
# for the tests and CI. Nothing here is for production: fixed test keys, no auth between daemons
# beyond cephx keys in the state directory, data in RAM.
#
#   test/s3/server.sh start   start it (does nothing if it already answers with the test keys)
#   test/s3/server.sh stop    stop the daemons it started and delete its state (logs are kept)
#   test/s3/server.sh env     print the `export AWS_...` lines a client needs
#
# Settings (environment): CONDUCTOR_S3_DIR (state, default /tmp/conductor-s3),
# CONDUCTOR_S3_PORT (RGW, default 47480), CONDUCTOR_S3_MON_PORT (default 46789),
# CONDUCTOR_S3_OSD_PORTS (the daemons' port range, default 46800-46899),
# CONDUCTOR_S3_MEMSTORE_BYTES (RAM the OSD may fill, default 4 GiB; allocated as used).
# Debian packages: radosgw ceph-mon ceph-osd (with --no-install-recommends), curl, uuid-runtime.
set -euo pipefail

D=${CONDUCTOR_S3_DIR:-/tmp/conductor-s3}
PORT=${CONDUCTOR_S3_PORT:-47480}
MONPORT=${CONDUCTOR_S3_MON_PORT:-46789}
OSD_PORTS=${CONDUCTOR_S3_OSD_PORTS:-46800-46899}
MEMSTORE_BYTES=${CONDUCTOR_S3_MEMSTORE_BYTES:-4294967296}
ENDPOINT="http://127.0.0.1:$PORT"
# start and stop delete this directory: only an absolute path below / will do.
while [[ "$D" == */ && "$D" != / ]]; do D=${D%/}; done
if ! [[ "$D" =~ ^/[^/] ]]; then
  echo "s3 server: CONDUCTOR_S3_DIR must be an absolute path below /, got '$D'" >&2
  exit 2
fi
# Fixed test credentials for a server that only listens on 127.0.0.1 and holds test data.
ACCESS_KEY=CDRTESTACCESSKEY0001
SECRET_KEY=cdr-test-secret-for-the-local-rgw-only
REGION=us-east-1
WARMUP_BUCKET=cdr-warmup

log() { printf 's3 server: %s\n' "$*" >&2; }
die() {
  log "$*"
  for f in "$D"/log/*.log; do
    [ -f "$f" ] || continue
    log "last lines of $f:"
    tail -n 15 "$f" >&2 || true
  done
  exit 1
}

print_env() {
  printf 'export AWS_ENDPOINT_URL=%s\n' "$ENDPOINT"
  printf 'export AWS_ACCESS_KEY_ID=%s\n' "$ACCESS_KEY"
  printf 'export AWS_SECRET_ACCESS_KEY=%s\n' "$SECRET_KEY"
  printf 'export AWS_REGION=%s\n' "$REGION"
}

# A signed request with the test keys; prints the HTTP status (000 when nothing answers).
# The keys go on curl's argv: they are fixed test values, printed by `env` anyway. RGW refuses a
# signature without x-amz-content-sha256, which curl 7.88 does not add by itself.
s3_curl() {
  local method=$1 path=$2
  shift 2
  curl -s -o /dev/null -w '%{http_code}' --max-time "${S3_CURL_TIMEOUT:-5}" -X "$method" \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "$ENDPOINT$path" || true
}

answering() { [ "$(s3_curl GET /)" = 200 ]; }

# PIDs of daemons started from this state directory: the pid files, checked against the command
# line (which names our ceph.conf) so that a recycled PID is never killed.
our_pids() {
  local f pid
  for f in "$D"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$D/ceph.conf"; then
      echo "$pid"
    fi
  done
}

stop_daemons() {
  local pids i
  pids=$(our_pids)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for i in $(seq 1 100); do
    pids=$(for p in $pids; do if [ -d "/proc/$p" ]; then echo "$p"; fi; done)
    [ -z "$pids" ] && return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
}

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local seconds=$1 i
  shift
  for i in $(seq 1 $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

write_conf() {
  local fsid=$1
  cat >"$D/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MONPORT
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind port min = ${OSD_PORTS%-*}
ms bind port max = ${OSD_PORTS#*-}
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
keyring = $D/keyring
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
[mon]
mon data = $D/mon/\$cluster-\$id
mon initial members = a
[osd]
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object size = 134217728
[client.rgw]
rgw data = $D/rgw
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw dns name = localhost
rgw enable usage log = false
rgw gc obj min wait = 10
rgw gc processor period = 10
CONF
}

start() {
  if answering; then
    log "already running on $ENDPOINT"
    return 0
  fi
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$ENDPOINT/" || true)
  if [ "$code" != 000 ] && [ -z "$(our_pids)" ]; then
    die "something else answers on $ENDPOINT (HTTP $code); stop it or set CONDUCTOR_S3_PORT"
  fi
  local missing=()
  for tool in ceph ceph-mon ceph-osd ceph-authtool monmaptool radosgw radosgw-admin uuidgen curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing ${missing[*]}; apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd curl uuid-runtime"

  # Leftovers of an earlier run that no longer answers: a fresh cluster is quicker than a repair.
  stop_daemons
  rm -rf "$D"
  mkdir -p "$D"/{mon,osd,run,log,rgw}
  chmod 700 "$D"
  local started=$SECONDS
  local fsid osd_uuid id
  fsid=$(uuidgen)
  write_conf "$fsid"
  export CEPH_CONF="$D/ceph.conf"
  local c=(--conf "$D/ceph.conf")

  ceph-authtool "${c[@]}" --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "${c[@]}" "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "${c[@]}" "$D/keyring" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' >/dev/null
  ceph-authtool "${c[@]}" "$D/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MONPORT]" "$D/monmap" >/dev/null 2>&1

  ceph-mon "${c[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" >>"$D/log/setup.log" 2>&1 ||
    die "ceph-mon --mkfs failed"
  # The daemons fork into the background: 9>&- keeps them from inheriting (and holding) the lock.
  ceph-mon "${c[@]}" -i a >>"$D/log/setup.log" 2>&1 9>&- || die "ceph-mon did not start"
  timeout 40 ceph "${c[@]}" --connect-timeout 30 -s >/dev/null 2>>"$D/log/setup.log" || die "the monitor did not answer"

  osd_uuid=$(uuidgen)
  id=$(ceph "${c[@]}" osd new "$osd_uuid" 2>>"$D/log/setup.log") || die "ceph osd new failed"
  mkdir -p "$D/osd/ceph-$id"
  ceph-osd "${c[@]}" -i "$id" --mkfs --osd-uuid "$osd_uuid" >>"$D/log/setup.log" 2>&1 || die "ceph-osd --mkfs failed"
  ceph-osd "${c[@]}" -i "$id" >>"$D/log/setup.log" 2>&1 9>&- || die "ceph-osd did not start"
  osd_up() { ceph "${c[@]}" osd stat 2>/dev/null | grep -q '1 up'; }
  wait_for 60 osd_up || die "the OSD did not come up"

  timeout 90 radosgw "${c[@]}" -n client.rgw --rgw-init-timeout 80 >>"$D/log/setup.log" 2>&1 9>&- || die "radosgw did not start"
  rgw_http() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ENDPOINT/")" != 000 ]; }
  wait_for 90 rgw_http || die "radosgw does not answer on $ENDPOINT"

  radosgw-admin "${c[@]}" -n client.admin user create --uid=conductor-test --display-name=conductor-test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null 2>>"$D/log/setup.log" ||
    die "radosgw-admin user create failed"

  # The first bucket creation and the first upload are slow (pools are created on demand);
  # pay for them here, not in the first test.
  S3_CURL_TIMEOUT=60 wait_for 60 answering || die "radosgw does not accept the test keys"
  local status
  status=$(S3_CURL_TIMEOUT=60 s3_curl PUT "/$WARMUP_BUCKET")
  [ "$status" = 200 ] || [ "$status" = 409 ] || die "warm-up bucket creation answered HTTP $status"
  status=$(S3_CURL_TIMEOUT=60 s3_curl PUT "/$WARMUP_BUCKET/hello" --data-binary 'hello')
  [ "$status" = 200 ] || die "warm-up upload answered HTTP $status"
  s3_curl DELETE "/$WARMUP_BUCKET/hello" >/dev/null
  log "running on $ENDPOINT after $((SECONDS - started)) s (state in $D; \`$0 env\` for the settings)"
}

stop() {
  stop_daemons
  if [ -d "$D" ]; then
    # Keep the logs for a post-mortem; the rest is in RAM (memstore) or useless without the daemons.
    find "$D" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
  fi
  log "stopped"
}

case "${1:-}" in
  start)
    mkdir -p "$(dirname "$D")"
    # One start at a time: two test runs racing to create the same cluster would break both.
    exec 9>"$D.lock"
    flock -w 300 9 || die "another start holds $D.lock"
    start
    ;;
  stop)
    mkdir -p "$(dirname "$D")"
    exec 9>"$D.lock"
    flock -w 300 9 || die "another start holds $D.lock"
    stop
    ;;
  env) print_env ;;
  gc)
    # Deleted objects' data is freed by RGW's garbage collector, minutes later; the memstore OSD
    # holds it in RAM until then, and a full OSD refuses every write (the collector's too).
    # Runs that upload gigabytes in a row (bench-s3.ts) reclaim it at once after each delete.
    answering || die "not running"
    radosgw-admin --conf "$D/ceph.conf" -n client.admin gc process --include-all >/dev/null 2>&1 || die "gc failed"
    ;;
  *)
    echo "usage: $0 start|stop|env|gc" >&2
    exit 2
    ;;
esac
