#!/usr/bin/env bash
# Refresh the README's console screenshot (docs/images/console.png): `warden demo` under
# tests/console/k6-console.js's mixed load for ~40 s, then one headless-Chromium screenshot.
#
#   WARDEN_BIN (debug build by default), RATE (calls/s, 25)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
RATE="${RATE:-25}"
K6=""
for k in "$ROOT/loadtest/.venv/bin/k6" "$ROOT/tests/load-audit/.venv/bin/k6" "$HERE/.venv/bin/k6"; do
  [[ -x "$k" ]] && { K6="$k"; break; }
done
[[ -n "$K6" ]] || { echo "k6 missing: run tests/console/run.sh once (it installs k6)"; exit 1; }
[[ -d "$HERE/node_modules/puppeteer-core" ]] || (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
read -r GW AS ADMIN < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-console-shot.XXXXXX")"
mkdir "$WORK/audit"
NO_COLOR=1 "$WARDEN_BIN" demo --shards 2 --listen "127.0.0.1:$GW" --auth-listen "127.0.0.1:$AS" \
  --admin-listen "127.0.0.1:$ADMIN" --audit-dir "$WORK/audit" --data-dir "$WORK/data" >"$WORK/demo.log" 2>&1 </dev/null &
DEMO=$!
K6_PID=""
trap 'kill $DEMO $K6_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz"; do sleep 0.2; done
MCP="http://127.0.0.1:$GW/mcp"
tok() { curl -s "http://127.0.0.1:$AS/token" -d grant_type=password -d client_id=loadtest --data-urlencode "username=$1" \
  -d "password=$2" --data-urlencode "scope=$3" --data-urlencode "resource=$MCP" | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])'; }
MCP_URL="$MCP" JOHN_TOKEN="$(tok john.mcclane@orchestrator.lab yippiekayay mcp:tools)" \
  SARAH_TOKEN="$(tok sarah.connor@orchestrator.lab judgmentday 'mcp:tools pii:read')" BAD_TOKEN=x RATE="$RATE" DURATION=60s \
  K6_NO_USAGE_REPORT=true "$K6" run --quiet --no-color "$HERE/k6-console.js" >"$WORK/k6.out" 2>&1 &
K6_PID=$!
sleep 40
mkdir -p "$ROOT/docs/images"
node "$HERE/browser.mjs" shot "http://127.0.0.1:$ADMIN" "$ROOT/docs/images/console.png"
echo "wrote $ROOT/docs/images/console.png"
