#!/usr/bin/env bash
# The console's own cost: CPU of the admin side (the control plane's tokio threads, where the
# admin listener runs, plus the audit writer that feeds the console) at a fixed k6 call rate,
# with the console closed, then open in headless Chromium; and the process's memory.
# Figures for docs/operations.md; not part of run-all.sh (it takes ~2 minutes of steady load).
# The demo's own upstreams and authorization server run on the same tokio threads, so "admin
# side" is an upper bound of the admin listener's share; the open-minus-closed difference is
# the console's cost.
#
#   WARDEN_BIN (debug build by default), RATE (calls/s, 50), PHASE (seconds per phase, 30)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
RATE="${RATE:-50}"
PHASE="${PHASE:-30}"
K6=""
for k in "$ROOT/loadtest/.venv/bin/k6" "$ROOT/tests/load-audit/.venv/bin/k6" "$HERE/.venv/bin/k6"; do
  [[ -x "$k" ]] && { K6="$k"; break; }
done
[[ -n "$K6" ]] || { echo "k6 missing: run tests/console/run.sh once (it installs k6)"; exit 1; }
read -r GW AS ADMIN < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-console-cost.XXXXXX")"
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
JOHN="$(tok john.mcclane@orchestrator.lab yippiekayay mcp:tools)"
SARAH="$(tok sarah.connor@orchestrator.lab judgmentday 'mcp:tools pii:read')"
MCP_URL="$MCP" JOHN_TOKEN="$JOHN" SARAH_TOKEN="$SARAH" BAD_TOKEN=x RATE="$RATE" DURATION="$((PHASE * 2 + 20))s" \
  K6_NO_USAGE_REPORT=true "$K6" run --quiet --no-color "$HERE/k6-console.js" >"$WORK/k6.out" 2>&1 &
K6_PID=$!
# CPU ticks (utime+stime) of the admin side and of the shards.
ticks() {
  local admin=0 shards=0 comm t
  for t in /proc/$DEMO/task/*; do
    comm="$(cat "$t/comm" 2>/dev/null)" || continue
    t="$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null)" || continue
    case "$comm" in warden-shard-*) shards=$((shards + t)) ;; *) admin=$((admin + t)) ;; esac
  done
  echo "$admin $shards"
}
HZ="$(getconf CLK_TCK)"
# RSS every 5 s for the whole run (memory must level off, whatever the rate).
( while kill -0 "$DEMO" 2>/dev/null; do awk '/VmRSS/ {printf "%.1f ", $2 / 1024}' "/proc/$DEMO/status" 2>/dev/null >>"$WORK/rss.txt"; sleep 5; done ) &
rss() { awk '/VmRSS/ {print $2}' "/proc/$DEMO/status"; }
sleep 10
read -r a0 s0 < <(ticks); sleep "$PHASE"; read -r a1 s1 < <(ticks)
RSS_CLOSED="$(rss)"
node "$HERE/browser.mjs" hold "http://127.0.0.1:$ADMIN" "$((PHASE + 4))" >"$WORK/hold.out" 2>&1 &
HOLD=$!
sleep 4
read -r b0 t0 < <(ticks); sleep "$PHASE"; read -r b1 t1 < <(ticks)
RSS_OPEN="$(rss)"
wait "$HOLD" || { echo "browser failed: $(cat "$WORK/hold.out")"; exit 1; }
python3 - "$HZ" "$PHASE" "$RATE" "$a0" "$a1" "$s0" "$s1" "$b0" "$b1" "$t0" "$t1" "$RSS_CLOSED" "$RSS_OPEN" <<'PY'
import sys
hz, phase, rate = (float(x) for x in sys.argv[1:4])
a0, a1, s0, s1, b0, b1, t0, t1, rc, ro = (float(x) for x in sys.argv[4:])
closed, opened = (a1 - a0) / hz / phase * 100, (b1 - b0) / hz / phase * 100
print(f"rate {rate:.0f} calls/s, {phase:.0f} s per phase")
print(f"admin side CPU: console closed {closed:.1f}% of a core, open {opened:.1f}% (difference {opened - closed:+.1f} points)")
print(f"shards CPU:     closed {(s1 - s0) / hz / phase * 100:.1f}%, open {(t1 - t0) / hz / phase * 100:.1f}%")
print(f"RSS: closed {rc / 1024:.1f} MiB, open {ro / 1024:.1f} MiB")
PY
echo "RSS every 5 s (MiB): $(cat "$WORK/rss.txt")"
