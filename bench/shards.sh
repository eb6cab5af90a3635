#!/usr/bin/env bash
# Per-request instruction count of the real release `warden` with 1 and with 2 shards (issue 12:
# the state the shards share — the session table, the audit queue, atomics, DashMap locks —
# must not make a call costlier with more shards). Warden runs with the load test's full
# configuration (loadtest/lib.sh) under valgrind's callgrind; the same authenticated tools/call
# is sent over CONNECTIONS keep-alive connections (the kernel spreads them over the shards'
# SO_REUSEPORT listeners), warmed up, then in two windows of N1 and N2 calls, each window
# zeroed and dumped with callgrind_control. Per request = (I(N2) - I(N1)) / (N2 - N1), so what
# a window costs whatever its size (the dump itself, timers) cancels out. Every answer is
# checked; the shards' open-connection gauges show that each shard held connections.
#
#   bash bench/shards.sh                  # SHARDS="1 2" N1=300 N2=1500 CONNECTIONS=8
#   ECHO_UPSTREAM=/path/to/echo-upstream SKIP_BUILD=1 bash bench/shards.sh
#
# Needs valgrind (apt-get installs it when missing), curl, python3, a release `warden` in
# $CARGO_TARGET_DIR/release (built with `cargo build --release -p controlplane --bin warden`
# unless SKIP_BUILD=1). Callgrind runs the threads one at a time, so this counts the
# instructions a call executes, not what contention or cache-line traffic would add on cores
# running truly in parallel (see docs/performance.md, "1 vs 2 shards").
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../loadtest" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_PORT=${BASE_PORT:-18281}
LOG_TAG=shards
# shellcheck source=loadtest/lib.sh
. "$HERE/lib.sh"
SHARDS=${SHARDS:-1 2}
N1=${N1:-300}
N2=${N2:-1500}
CONNECTIONS=${CONNECTIONS:-8}
WARM=${WARM:-20}

need_tools curl python3 taskset ss
command -v valgrind >/dev/null || apt_install valgrind valgrind
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -j 1 -q -p controlplane --bin warden) || die "build failed"
fi
SKIP_BUILD=1 build
refuse_busy_ports "$UPSTREAM_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$AS_PORT"
make_work
start_upstream

# Zero the counters, send $2 calls, dump: the window's instruction count on stdout.
window() { # pid calls
    callgrind_control -z "$1" >/dev/null
    taskset -c "$LOAD_CPU" python3 "$WORK/drive.py" "$PUBLIC_URL" "$WORK/token" "$SID" "$CONNECTIONS" "$2" \
        "http://127.0.0.1:$ADMIN_PORT/metrics" 2>>"$WORK/gauges" || die "calls failed"
    local before after
    before=$(ls "$WORK"/cg.out.* 2>/dev/null | wc -l)
    callgrind_control -d "$1" >/dev/null
    for _ in $(seq 1 600); do
        after=$(ls "$WORK"/cg.out.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    local f
    f=$(ls -t "$WORK"/cg.out.* | head -n1)
    sed -n 's/^summary: *\([0-9]*\).*/\1/p;s/^totals: *\([0-9]*\).*/\1/p' "$f" | head -n1
}

# The driver: N calls round-robin over CONNECTIONS keep-alive connections; every answer must be
# a JSON-RPC result. Before closing them it writes the shards' open-connection gauges to stderr.
cat >"$WORK/drive.py" <<'PY'
import http.client, sys, urllib.parse, urllib.request
url, token_file, sid, conns, n, metrics = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
token = open(token_file).read().strip()
u = urllib.parse.urlsplit(url)
hdr = {"content-type": "application/json", "accept": "application/json, text/event-stream",
       "authorization": "Bearer " + token, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
cs = [http.client.HTTPConnection(u.hostname, u.port, timeout=600) for _ in range(conns)]
for i in range(n):
    c = cs[i % conns]
    body = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"bench_echo",'
            '"arguments":{"text":"hello","n":1}}}' % (i + 1)).encode()
    c.request("POST", u.path, body, hdr)
    r = c.getresponse(); b = r.read()
    if r.status != 200 or b'"result"' not in b or b'"isError":true' in b:
        sys.exit(f"call {i}: {r.status} {b[:200]!r}")
text = urllib.request.urlopen(metrics, timeout=600).read().decode()
print(" ".join(l for l in text.splitlines() if l.startswith("warden_connections_open")), file=sys.stderr)
PY

declare -A PER
for s in $SHARDS; do
    log "warden with $s shard(s) under callgrind"
    # epoll: under valgrind a shard blocked in io_uring_enter stalls the whole process.
    WARDEN_SHARDS=$s READY_TRIES=3000 IO_DRIVER=epoll \
        WARDEN_WRAP="valgrind --tool=callgrind --callgrind-out-file=$WORK/cg.out.%p --collect-atstart=yes" \
        start_warden
    user_token
    SID=$(mcp_session "$PUBLIC_URL")
    taskset -c "$LOAD_CPU" python3 "$WORK/drive.py" "$PUBLIC_URL" "$WORK/token" "$SID" "$CONNECTIONS" "$WARM" \
        "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || die "warm-up failed"
    : >"$WORK/gauges"
    i1=$(window "$WARDEN_PID" "$N1")
    i2=$(window "$WARDEN_PID" "$N2")
    gauges=$(tail -n1 "$WORK/gauges")
    per=$(( (i2 - i1) / (N2 - N1) ))
    PER[$s]=$per
    log "$s shard(s): I($N1)=$i1 I($N2)=$i2 -> $per instructions per call; $gauges"
    echo "shards=$s N1=$N1 I1=$i1 N2=$N2 I2=$i2 per_call=$per gauges: $gauges"
    kill "$WARDEN_PID" 2>/dev/null || true
    wait "$WARDEN_PID" 2>/dev/null || true
    rm -f "$WORK"/cg.out.*
done
if [ -n "${PER[1]:-}" ] && [ -n "${PER[2]:-}" ]; then
    python3 -c "import sys; a, b = int(sys.argv[1]), int(sys.argv[2]); print(f'2 shards / 1 shard: {b / a:.3f}')" "${PER[1]}" "${PER[2]}"
fi
