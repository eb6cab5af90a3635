#!/usr/bin/env bash
# Load test: the same authenticated MCP `tools/call` against the echo upstream directly, through
# nginx (plain reverse proxy, no auth) and through Warden, all in ONE run, servers pinned to
# core 0 and the load generator (oha) to core 1. Prints req/s, p50/p90/p99, errors, and ratios.
#
#   loadtest/run.sh                 # DURATION=10 CONCURRENCY=32 BASE_PORT=18081
#   DURATION=30 CONCURRENCY=64 loadtest/run.sh
#
# Needs: target/release/{warden,echo-upstream,test-issuer} (built here unless SKIP_BUILD=1),
# nginx (apt-get), oha (cargo install oha --locked), curl, python3, taskset, ss.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-32}
BASE_PORT=${BASE_PORT:-18081}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warden-target}
BIN="$CARGO_TARGET_DIR/release"

UPSTREAM_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
WARDEN_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
ISSUER_PORT=$((BASE_PORT + 4))
PORTS=("$UPSTREAM_PORT" "$NGINX_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$ISSUER_PORT")

log() { printf '[loadtest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
for t in curl python3 taskset ss; do command -v "$t" >/dev/null || die "$t is required"; done
if ! command -v nginx >/dev/null; then
    log "installing nginx"
    apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null
fi
if ! command -v oha >/dev/null; then
    [ -x "$HOME/.cargo/bin/oha" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; this takes minutes)"
    cargo install oha --locked
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building warden and testkit (release)"
    (cd "$ROOT" && cargo build --release -q -p controlplane -p testkit)
fi
for b in warden echo-upstream test-issuer; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on $SERVER_CPU, load on $LOAD_CPU)"

# --- refuse busy ports (a leftover SO_REUSEPORT server would silently take connections) ------
busy=$(ss -Hltn | awk '{print $4}' | sed 's/.*://' | sort -u)
for p in "${PORTS[@]}"; do
    if grep -qx "$p" <<<"$busy"; then die "port $p is already in use; stop whatever listens there or set BASE_PORT"; fi
done

# --- processes and cleanup ---------------------------------------------------------------------
WORK=$(mktemp -d /tmp/warden-loadtest.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

# Wait until $1 (a file) has a first line, or the process $2 died.
first_line() {
    local f=$1 pid=$2
    for _ in $(seq 1 200); do
        if [ -s "$f" ] && head -n1 "$f" | grep -q .; then head -n1 "$f"; return 0; fi
        kill -0 "$pid" 2>/dev/null || die "process $pid exited; see $WORK"
        sleep 0.05
    done
    die "timed out waiting for $f"
}
wait_http() { # url pid: any HTTP answer to a POST counts (GET /mcp would open an SSE stream)
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 -X POST -d '{}' "$1"; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "process $2 exited; see $WORK"
        sleep 0.05
    done
    die "timed out waiting for $1"
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

log "work dir $WORK; servers on cpu $SERVER_CPU, oha on cpu $LOAD_CPU; ${DURATION}s x ${CONCURRENCY} connections each"

taskset -c "$SERVER_CPU" "$BIN/echo-upstream" --port "$UPSTREAM_PORT" >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
PIDS+=($!); UP_PID=$!
UP_URL=$(jget "$(first_line "$WORK/upstream.out" "$UP_PID")" url)

taskset -c "$SERVER_CPU" "$BIN/test-issuer" --port "$ISSUER_PORT" --aud "http://127.0.0.1/mcp" --scope "mcp:tools" --sub load-test \
    >"$WORK/issuer.out" 2>"$WORK/issuer.err" &
PIDS+=($!); ISS_PID=$!
ISS_LINE=$(first_line "$WORK/issuer.out" "$ISS_PID")
ISSUER=$(jget "$ISS_LINE" issuer)
TOKEN=$(jget "$ISS_LINE" token)

sed -e "s#@PREFIX@#$WORK#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" \
    "$HERE/nginx.conf.template" >"$WORK/nginx.conf"
mkdir -p "$WORK/client_body" "$WORK/proxy" "$WORK/fastcgi" "$WORK/uwsgi" "$WORK/scgi"
nginx -t -q -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" || die "nginx config test failed"
taskset -c "$SERVER_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
    >"$WORK/nginx.out" 2>&1 &
PIDS+=($!); NGINX_PID=$!

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
issuers:
  - issuer: $ISSUER
upstreams:
  - name: bench
    url: $UP_URL
    namespace: bench_
YAML
taskset -c "$SERVER_CPU" "$BIN/warden" serve -c "$WORK/warden.yaml" --data-dir "$WORK/data" --shards 1 >"$WORK/warden.out" 2>"$WORK/warden.err" &
PIDS+=($!); WARDEN_PID=$!

for _ in $(seq 1 300); do
    if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz"; then break; fi
    kill -0 "$WARDEN_PID" 2>/dev/null || die "warden exited; see $WORK/warden.err"
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || die "warden not ready; see $WORK/warden.err"
wait_http "http://127.0.0.1:$NGINX_PORT/mcp" "$NGINX_PID"

# --- one MCP session per target ----------------------------------------------------------------
HDR=(-H "content-type: application/json" -H "accept: application/json, text/event-stream" -H "authorization: Bearer $TOKEN")
INIT='{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"loadtest","version":"1"}}}'
session() { # url -> session id on stdout
    local sid
    sid=$(curl -fsS -D - -o /dev/null "${HDR[@]}" -d "$INIT" "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
    [ -n "$sid" ] || die "no Mcp-Session-Id from $1"
    curl -fsS -o /dev/null "${HDR[@]}" -H "mcp-session-id: $sid" -H "mcp-protocol-version: 2025-06-18" \
        -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$1"
    echo "$sid"
}
body() { printf '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":{"text":"hello from the load test","n":42}}}' "$1"; }

TARGETS=(direct nginx warden)
declare -A URL=([direct]="http://127.0.0.1:$UPSTREAM_PORT/mcp" [nginx]="http://127.0.0.1:$NGINX_PORT/mcp" [warden]="http://127.0.0.1:$WARDEN_PORT/mcp")
declare -A TOOL=([direct]=echo [nginx]=echo [warden]=bench_echo)
declare -A SID
for t in "${TARGETS[@]}"; do
    SID[$t]=$(session "${URL[$t]}")
    # One checked call per target before the load: it must be a JSON-RPC result, not an error.
    out=$(curl -fsS "${HDR[@]}" -H "mcp-session-id: ${SID[$t]}" -H "mcp-protocol-version: 2025-06-18" -d "$(body "${TOOL[$t]}")" "${URL[$t]}")
    grep -q '"result"' <<<"$out" || die "$t: tools/call did not return a result: $out"
done

# --- load --------------------------------------------------------------------------------------
for t in "${TARGETS[@]}"; do
    log "oha -> $t (${URL[$t]})"
    taskset -c "$LOAD_CPU" oha --no-tui --output-format json -z "${DURATION}s" -c "$CONCURRENCY" \
        --wait-ongoing-requests-after-deadline -m POST \
        -H "content-type: application/json" -H "accept: application/json, text/event-stream" \
        -H "authorization: Bearer $TOKEN" -H "mcp-session-id: ${SID[$t]}" -H "mcp-protocol-version: 2025-06-18" \
        -d "$(body "${TOOL[$t]}")" "${URL[$t]}" >"$WORK/oha-$t.json" 2>"$WORK/oha-$t.err" || die "oha failed for $t: $(cat "$WORK/oha-$t.err")"
    kill -0 "$WARDEN_PID" 2>/dev/null || die "warden died during the $t run; see $WORK/warden.err"
done

# HTTP 200 can carry a JSON-RPC error: cross-check with Warden's own counters and the response sizes.
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/warden-metrics.txt" || log "could not read Warden metrics"

python3 - "$WORK" "$DURATION" "$CONCURRENCY" <<'PY'
import json, sys
work, duration, conc = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {}
for t in ("direct", "nginx", "warden"):
    d = json.load(open(f"{work}/oha-{t}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = {str(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
    ok = codes.get("200", 0)
    non200 = sum(v for k, v in codes.items() if k != "200")
    errs = sum(d.get("errorDistribution", {}).values())
    rows[t] = dict(rps=s["requestsPerSec"], ok=ok, size=s.get("sizePerRequest") or 0, non200=non200, errs=errs, codes=codes,
                   errdist=d.get("errorDistribution", {}),
                   p50=p["p50"] * 1e3, p90=p["p90"] * 1e3, p99=p["p99"] * 1e3)
print(f"\nload test: {duration}s per target, {conc} connections, servers pinned to one core, oha on the other\n")
print(f"| target | req/s | p50 ms | p90 ms | p99 ms | 200s | non-200 | errors | bytes/response |")
print(f"|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, r in rows.items():
    print(f"| {t} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['ok']} | {r['non200']} | {r['errs']} | {r['size']:.0f} |")
for t, r in rows.items():
    if r["non200"] or r["errs"]:
        print(f"\n{t}: status codes {r['codes']}, errors {r['errdist']}")
print()
print(f"Warden / nginx throughput: {rows['warden']['rps'] / rows['nginx']['rps']:.3f}")
print(f"Warden / direct throughput: {rows['warden']['rps'] / rows['direct']['rps']:.3f}")
print(f"nginx / direct throughput: {rows['nginx']['rps'] / rows['direct']['rps']:.3f}")
print(f"Warden / nginx p50 latency: {rows['warden']['p50'] / rows['nginx']['p50']:.3f}")
try:
    keep = ("warden_tool_calls_total", "warden_upstream_errors_total", "warden_auth_failures_total",
            "warden_http_requests_total", "warden_connections_refused_total", "warden_sessions_created_total",
            "warden_upstream_request_duration_seconds_count")
    lines = [l for l in open(f"{work}/warden-metrics.txt") if l.startswith(keep)]
    print("\nWarden counters after the run:")
    for l in lines:
        print("  " + l.rstrip())
except OSError:
    pass
PY
