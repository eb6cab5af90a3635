#!/usr/bin/env bash
# End-to-end tests with real MCP clients against `warden demo`:
#   - the TypeScript SDK (@modelcontextprotocol/sdk, pinned in package-lock.json), with dynamic
#     client registration and with the pre-registered public client `mcp-client-cli`;
#   - the Python SDK (`mcp`, pinned in requirements.txt, in tests/e2e/.venv), both ways too.
# Each client does the SDK's own OAuth flow (401 -> RFC 9728 -> RFC 8414 -> [RFC 7591] -> PKCE
# S256 -> token; the sign-in and consent pages are driven over HTTP), lists the six ledger
# tools and calls enterprise_ledger_listAccounts (8 accounts). Then the demo's log must show a
# delegation token per call (act ai-identity-gateway, scope ledger:ListAccounts, 5 s) and none
# of the clients' access tokens.
#
#   WARDEN_BIN   the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden);
#                this script builds nothing.
#   E2E_TIMEOUT  seconds per client run (default 120)
#   E2E_KEEP_LOG copy the demo's log (no tokens in it, as checked) to this path on exit
#
# Exit status 0 only if every check passed; the last line is `e2e: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
E2E_TIMEOUT="${E2E_TIMEOUT:-120}"

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "e2e: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (build it: cargo build -p controlplane --bin warden)"
command -v node >/dev/null || die "node is required"
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 18 )) || die "node >= 18 required, got $(node -v)"

# --- install (pinned) -----------------------------------------------------------------------------
log "npm ci (@modelcontextprotocol/sdk pinned in package-lock.json)"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2
if [[ ! -x "$HERE/.venv/bin/python" ]]; then
  log "creating $HERE/.venv"
  python3 -m venv "$HERE/.venv" >&2
fi
log "pip install -r requirements.txt"
"$HERE/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" >&2

# --- start the demo -------------------------------------------------------------------------------
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
read -r GW_PORT AS_PORT ADMIN_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()')
for p in "$GW_PORT" "$AS_PORT" "$ADMIN_PORT"; do
  if port_in_use "$p"; then die "port $p is already in use on 127.0.0.1"; fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-e2e.XXXXXX")"
DEMO_LOG="$WORK/demo.log"
TOKEN_FILE="$WORK/access-tokens" # raw access tokens, only for the leak check; deleted on exit
DEMO_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$DEMO_PID" ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
    kill -TERM "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  rm -f "$TOKEN_FILE"
  if [[ -n "${E2E_KEEP_LOG:-}" && -f "$DEMO_LOG" ]]; then cp "$DEMO_LOG" "$E2E_KEEP_LOG" || true; fi
  if [[ $rc -ne 0 && -f "$DEMO_LOG" ]]; then
    log "demo log (last 40 lines):"
    tail -n 40 "$DEMO_LOG" >&2 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting $WARDEN_BIN demo: gateway 127.0.0.1:$GW_PORT, auth 127.0.0.1:$AS_PORT, admin 127.0.0.1:$ADMIN_PORT"
NO_COLOR=1 "$WARDEN_BIN" demo \
  --listen "127.0.0.1:$GW_PORT" --auth-listen "127.0.0.1:$AS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --data-dir "$WORK/data" >"$DEMO_LOG" 2>&1 </dev/null &
DEMO_PID=$!

deadline=$((SECONDS + 30))
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz"; do
  kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo exited before it was ready"
  (( SECONDS < deadline )) || die "warden demo not ready within 30 s"
  sleep 0.3
done
MCP_URL="http://127.0.0.1:$GW_PORT/mcp"
log "ready: $MCP_URL"

# --- the clients ----------------------------------------------------------------------------------
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

: >"$TOKEN_FILE"
chmod 600 "$TOKEN_FILE"
CLIENT_SHAS=()
run_client() { # name cmd... ; the client prints one JSON summary line on stdout
  local name="$1"; shift
  local out="$WORK/$name.json" rc=0
  log "--- $name"
  (cd "$HERE" && E2E_TOKEN_FILE="$TOKEN_FILE" timeout "$E2E_TIMEOUT" "$@") >"$out" || rc=$?
  local summary
  summary="$(tail -n 1 "$out" 2>/dev/null || true)"
  printf '%s\n' "$summary"
  if [[ $rc -eq 0 ]] && python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") is True else 1)' "$summary" 2>/dev/null; then
    CLIENT_SHAS+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token_sha256"])' "$summary")")
    pass "$name"
  else
    fail "$name (exit $rc)"
  fi
}

run_client ts-dcr node ts-client.mjs dcr "$MCP_URL"
run_client ts-preregistered node ts-client.mjs preregistered "$MCP_URL"
run_client py-dcr .venv/bin/python py-client.py "$MCP_URL" dcr
run_client py-preregistered .venv/bin/python py-client.py "$MCP_URL" preregistered

# --- the demo's log -------------------------------------------------------------------------------
if grep -q $'\x1b\[' "$DEMO_LOG"; then
  log "note: the demo log has ANSI escapes despite NO_COLOR=1; stripping them for the checks"
fi
PLAIN="$WORK/demo.plain.log"
sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' "$DEMO_LOG" >"$PLAIN"

# The Employee Directory (REST, bridged): the TypeScript clients called four operations each,
# and the directory logged a delegation token with its own audience and the operation's scope.
for op_scope in "listEmployees employee:List" "getEmployee employee:Get" "listDepartments department:List" "createEmployee employee:Create"; do
  op="${op_scope%% *}"; scope="${op_scope##* }"
  n="$(grep -F 'directory: delegation chain received' "$PLAIN" | grep -F "operation=\"$op\"" \
      | grep -F 'employee-directory.orchestrator.lab' | grep -F "scope=\"$scope\"" \
      | grep -F 'act="ai-identity-gateway"' | grep -c . || true)"
  if (( n >= 2 )); then pass "directory-$op ($n delegation chains with scope $scope)"; else fail "directory-$op ($n delegation chains with scope $scope, want >= 2)"; fi
done

# One delegation token per listAccounts call: at least one per passing client, and at least 3.
want=$(( ${#CLIENT_SHAS[@]} > 3 ? ${#CLIENT_SHAS[@]} : 3 ))
chains="$(grep -F 'delegation chain received' "$PLAIN" \
  | grep -F 'tool="listAccounts"' \
  | grep -F 'sub="john.mcclane@orchestrator.lab"' \
  | grep -F 'act="ai-identity-gateway"' \
  | grep -F 'scope="ledger:ListAccounts"' \
  | grep -E 'ttl_secs=5([^0-9]|$)' || true)"
n_chains="$(printf '%s' "$chains" | grep -c . || true)"
if (( n_chains >= want )); then
  pass "ledger-delegation-log ($n_chains delegation chains for listAccounts: act ai-identity-gateway, scope ledger:ListAccounts, ttl 5 s; want >= $want)"
else
  fail "ledger-delegation-log ($n_chains matching 'delegation chain received' lines, want >= $want)"
  grep -F 'delegation chain' "$PLAIN" >&2 || true
fi

# No client access token in the log (raw), none forwarded upstream (its jti not among the
# delegation tokens the ledger saw), and the tokens are the ones the clients reported.
leak_rc=0
python3 - "$TOKEN_FILE" "$PLAIN" "${CLIENT_SHAS[@]}" <<'PY' || leak_rc=$?
import base64, hashlib, json, re, sys
tokens = [t for t in open(sys.argv[1]).read().split("\n") if t]
log = open(sys.argv[2], encoding="utf-8", errors="replace").read()
shas = sys.argv[3:]
bad = []
if len(tokens) != len(shas):
    bad.append(f"{len(tokens)} tokens written, {len(shas)} clients passed")
if sorted(hashlib.sha256(t.encode()).hexdigest() for t in tokens) != sorted(shas):
    bad.append("token SHA-256s differ from the ones the clients printed")
if len(set(tokens)) != len(tokens):
    bad.append("two clients got the same access token")
ledger_jtis = set(re.findall(r'delegation chain received .*?jti="([^"]+)"', log))
for i, t in enumerate(tokens):
    if t in log:
        bad.append(f"access token #{i + 1} (sha256 {hashlib.sha256(t.encode()).hexdigest()[:16]}…) appears in the demo log")
    # Only the signature-less parts would also be a leak: check the payload segment alone.
    parts = t.split(".")
    if len(parts) == 3:
        if len(parts[1]) > 20 and parts[1] in log:
            bad.append(f"access token #{i + 1}'s payload appears in the demo log")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except Exception:
            claims = {}
        if claims.get("jti") and claims["jti"] in ledger_jtis:
            bad.append(f"access token #{i + 1} (jti {claims['jti']}) reached the ledger: the client's token was passed upstream")
for b in bad:
    print(f"[e2e] {b}", file=sys.stderr)
print(f"[e2e] checked {len(tokens)} access tokens against {len(log)} bytes of log and {len(ledger_jtis)} ledger jtis", file=sys.stderr)
sys.exit(1 if bad or not tokens else 0)
PY
if [[ $leak_rc -eq 0 ]]; then
  pass "no-token-in-log (${#CLIENT_SHAS[@]} client access tokens: none in the demo log, none forwarded upstream)"
else
  fail "no-token-in-log"
fi

echo "e2e: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
