#!/usr/bin/env bash
# Where Warden's CPU goes under load (issue 12's profile-driven pass): the load test's full
# configuration (loadtest/lib.sh) and the echo upstream, wrk on core LOAD_CPU sending the same
# checked tools/call as loadtest/run.sh, while `perf record -e cpu-clock` samples Warden's
# process (user and kernel) for DURATION seconds. Prints the top symbols (self time, by DSO and
# symbol) and the syscall count per request (perf trace -s when it works, else strace -c -f).
#
#   SKIP_BUILD=1 loadtest/profile.sh            # DURATION=10 TOP=40
#   CALLGRAPH=1 loadtest/profile.sh             # --call-graph dwarf (heavier; fewer samples)
#   PERF_OUT=/tmp/p.data loadtest/profile.sh    # keep the samples for `perf report -i`
#
# Needs perf (Debian's linux-perf), wrk, curl, python3, taskset; the release binaries.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_PORT=${BASE_PORT:-18281}
# shellcheck source=loadtest/lib.sh
. "$HERE/lib.sh"
DURATION=${DURATION:-10}
TOP=${TOP:-40}
need_tools curl python3 taskset ss perf
apt_install wrk wrk
build
refuse_busy_ports "$UPSTREAM_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$AS_PORT"
make_work
start_upstream
start_warden
user_token
SID=$(mcp_session "$PUBLIC_URL")
ARGS='{"text":"hello from the load test","n":42}'
out=$(mcp_call "$PUBLIC_URL" "$SID" bench_echo "$ARGS")
grep -q '"result"' <<<"$out" || die "tools/call did not return a result: $out"

export WRK_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bench_echo","arguments":'"$ARGS"'}}'
export WRK_SESSION=$SID WRK_PROTOCOL=$PROTOCOL
WRK_TOKEN=$(cat "$WORK/token"); export WRK_TOKEN
taskset -c "$LOAD_CPU" wrk -t2 -c32 -d2s -s "$HERE/mcp-call.lua" "$PUBLIC_URL" >/dev/null # warm-up

graph=()
[ "${CALLGRAPH:-0}" = 1 ] && graph=(--call-graph dwarf,16384)
taskset -c "$LOAD_CPU" wrk -t2 -c32 -d"$((DURATION + 2))s" --latency -s "$HERE/mcp-call.lua" "$PUBLIC_URL" \
    >"$WORK/wrk.out" &
WRK_PID=$!
sleep 1
perf record -q -e cpu-clock -F 2000 "${graph[@]}" -p "$WARDEN_PID" -o "$WORK/perf.data" -- sleep "$DURATION" \
    2>"$WORK/perf.err" || die "perf record failed: $(cat "$WORK/perf.err")"
wait "$WRK_PID"
grep -E 'Requests/sec|WRKJSON' "$WORK/wrk.out" | sed 's/^/[wrk] /' >&2
report() { perf report -i "$WORK/perf.data" "$@" --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP" || true; }
echo "--- self time (dso, symbol)"
report --no-children --sort dso,sym
if [ "${CALLGRAPH:-0}" = 1 ]; then
    echo "--- inclusive time (symbol, with callees)"
    report --children --sort sym -g none
    echo "--- callers of the allocator"
    perf report -i "$WORK/perf.data" --no-children --sort sym -S _int_malloc,malloc,_int_free,cfree@GLIBC_2.2.5 \
        -g caller,0.5,callee --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 120 || true
fi

# Syscalls per request over a short window (strace slows the process: counts, not times).
if command -v strace >/dev/null; then
    taskset -c "$LOAD_CPU" wrk -t1 -c8 -d4s -s "$HERE/mcp-call.lua" "$PUBLIC_URL" >"$WORK/wrk2.out" &
    WRK_PID=$!
    sleep 1
    timeout 2 strace -c -f -p "$WARDEN_PID" -o "$WORK/strace.out" 2>/dev/null || true
    wait "$WRK_PID"
    echo "--- syscalls during 2 s of wrk -t1 -c8 (strace -c; requests in that run: $(grep -o 'requests in [^,]*' "$WORK/wrk2.out" || true))"
    head -n 25 "$WORK/strace.out"
fi
[ -n "${PERF_OUT:-}" ] && cp "$WORK/perf.data" "$PERF_OUT"
exit 0
