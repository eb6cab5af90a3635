#!/usr/bin/env bash
# Federated login end to end: two local OpenID providers (panva's oidc-provider, OpenID
# Certified, pinned in package-lock.json; users of their own) behind `warden demo
# --connectors`, and the real TypeScript and Python MCP SDK clients of tests/e2e signing in
# through them (pre-registered client, DCR, and a Client ID Metadata Document served over https
# with the dev CA in certs/), listing and calling tools. The MCP conformance suite's
# `authorization` scenarios (0.2.0-alpha.12, spec 2026-07-28) pass with no warning without a
# client id, with a DCR client id and with a CIMD client id. Then:
#   - the ledger's delegation tokens carry the federated user as `sub`;
#   - one IdP is stopped mid-test: the login page says which one is down, users of the other
#     still sign in, and an access token issued earlier through the stopped IdP is still accepted.
#
#   WARDEN_BIN   the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden)
#   IDP_TIMEOUT  seconds per client run (default 120)
# The last line is `idp: N passed, M failed`; exit status 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E="$HERE/../e2e"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
IDP_TIMEOUT="${IDP_TIMEOUT:-120}"

log() { printf '[idp] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "idp: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (cargo build -p controlplane --bin warden)"
for c in node python3 curl; do command -v "$c" >/dev/null || die "$c is required"; done

log "npm ci (oidc-provider pinned in tests/idp/package-lock.json; the SDK in tests/e2e)"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2
(cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error) >&2
if [[ ! -x "$E2E/.venv/bin/python" ]]; then python3 -m venv "$E2E/.venv" >&2; fi
"$E2E/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$E2E/requirements.txt" >&2

read -r GW_PORT AS_PORT ADMIN_PORT CORP_PORT PARTNER_PORT CIMD_PORT CONF_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(7)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()')

WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-idp.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $rc -ne 0 && -f "$WORK/demo.log" ]]; then
    log "demo log (last 40 lines):"; tail -n 40 "$WORK/demo.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

AS="http://127.0.0.1:$AS_PORT"
export IDP_CLIENT_SECRET WARDEN_IDP_SECRET
IDP_CLIENT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
WARDEN_IDP_SECRET="$IDP_CLIENT_SECRET"

start_idp() { # name port -> pid in LAST_PID
  node "$HERE/idp.mjs" "$2" "$1" "$AS/federate/callback" >"$WORK/idp-$1.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  local deadline=$((SECONDS + 20))
  until grep -q '^ready ' "$WORK/idp-$1.log"; do
    kill -0 "$LAST_PID" 2>/dev/null || { cat "$WORK/idp-$1.log" >&2; die "IdP $1 exited"; }
    (( SECONDS < deadline )) || die "IdP $1 not ready within 20 s"
    sleep 0.2
  done
}
node "$HERE/cimd-server.mjs" "$CIMD_PORT" "$HERE/../../certs/localhost.pem" "$HERE/../../certs/localhost.key" \
  http://localhost:19876/callback "http://127.0.0.1:$CONF_PORT/callback" >"$WORK/cimd.log" 2>&1 &
PIDS+=("$!")
CIMD="https://localhost:$CIMD_PORT"
start_idp corp "$CORP_PORT"; CORP_PID=$LAST_PID
until grep -q '^ready ' "$WORK/cimd.log"; do sleep 0.2; done
start_idp partner "$PARTNER_PORT"; PARTNER_PID=$LAST_PID
log "IdPs: corp http://127.0.0.1:$CORP_PORT, partner http://127.0.0.1:$PARTNER_PORT"

for n in corp partner; do
  port=CORP_PORT; [[ $n == partner ]] && port=PARTNER_PORT
  cat <<YAML
- id: $n
  name: $n SSO
  issuer: http://127.0.0.1:${!port}
  client_id: warden
  client_secret_env: WARDEN_IDP_SECRET
  scopes: [openid, email, profile, groups]
  claims: {sub: email, groups: groups}
  allowed_email_domains: [corp.example, partner.example]
  refresh_interval: 1s
  min_refetch_interval: 1s
  timeout: 2s
YAML
done >"$WORK/connectors.yaml"

# A candidate policy in shadow (evaluated on every call, never enforced): listAccounts only for
# members of Group::"employees" and of Group::"compliance". The federated users' groups come
# from their IdP's `groups` claim; their audit records show which rule Cedar applied.
cat >"$WORK/shadow.cedar" <<'CEDAR'
@id("candidate:employees-only")
@reason("employees only")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_listAccounts")
unless { principal in Group::"employees" };
@id("candidate:compliance-only")
@reason("compliance only")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_listAccounts")
unless { principal in Group::"compliance" };
CEDAR
NO_COLOR=1 "$WARDEN_BIN" demo --audit-dir "$WORK/audit" --shadow-policy "$WORK/shadow.cedar" \
  --listen "127.0.0.1:$GW_PORT" --auth-listen "127.0.0.1:$AS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --data-dir "$WORK/data" --connectors "$WORK/connectors.yaml" --cimd-test-ca "$HERE/../../certs/dev-ca.pem" >"$WORK/demo.log" 2>&1 </dev/null &
DEMO_PID=$!
PIDS+=("$DEMO_PID")
deadline=$((SECONDS + 30))
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz"; do
  kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo exited before it was ready"
  (( SECONDS < deadline )) || die "warden demo not ready within 30 s"
  sleep 0.3
done
MCP_URL="http://127.0.0.1:$GW_PORT/mcp"
log "ready: $MCP_URL (authorization server $AS)"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

TOKENS="$WORK/tokens"
: >"$TOKENS"
run_client() { # name connector idp-login cmd...
  local name="$1" conn="$2" user="$3"; shift 3
  local out="$WORK/$name.json" rc=0
  log "--- $name (through $conn as $user)"
  (cd "$E2E" && E2E_TOKEN_FILE="$WORK/$name.token" E2E_FEDERATE="$conn" E2E_USERNAME="$user" \
     timeout "$IDP_TIMEOUT" "$@") >"$out" 2>"$WORK/$name.err" || rc=$?
  local summary
  summary="$(tail -n 1 "$out" 2>/dev/null || true)"
  if [[ $rc -eq 0 ]] && python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") is True else 1)' "$summary" 2>/dev/null; then
    pass "$name (federated via $conn: signed in, listed and called tools)"
  else
    fail "$name (exit $rc)"; tail -n 20 "$WORK/$name.err" >&2 || true; printf '%s\n' "$summary" | cut -c1-2000 >&2
  fi
}

run_client ts-preregistered-corp corp alice node ts-client.mjs preregistered "$MCP_URL"
E2E_CIMD_URL="$CIMD/ts-client.json" run_client ts-cimd-corp corp alice node ts-client.mjs cimd "$MCP_URL"
E2E_CIMD_URL="$CIMD/py-client.json" run_client py-cimd-partner partner bob .venv/bin/python py-client.py "$MCP_URL" cimd
run_client ts-dcr-partner partner bob node ts-client.mjs dcr "$MCP_URL"
run_client py-preregistered-corp corp alice .venv/bin/python py-client.py "$MCP_URL" preregistered
run_client py-dcr-partner partner bob .venv/bin/python py-client.py "$MCP_URL" dcr

# CIMD: fetched once per document (cached per its max-age) and refused when it names another client.
n_fetch="$(curl -sk "$CIMD/fetches")"
if [[ "$n_fetch" == 2 ]]; then pass "cimd-cached (2 documents fetched once each for authorize + token)"
else fail "cimd-cached (document server saw $n_fetch fetches, want 2)"; fi
liar="$(curl -s -o /dev/null -w '%{http_code}' "$AS/authorize?response_type=code&client_id=$CIMD/liar.json&redirect_uri=http%3A%2F%2Flocalhost%3A19876%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")"
if [[ "$liar" == 400 ]]; then pass "cimd-client-id-must-equal-url (a document naming another client_id: 400)"
else fail "cimd-client-id-must-equal-url (HTTP $liar)"; fi
wrong_cb="$(curl -s -o /dev/null -w '%{http_code}' "$AS/authorize?response_type=code&client_id=$CIMD/ts-client.json&redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")"
if [[ "$wrong_cb" == 400 ]]; then pass "cimd-redirect-uris-enforced (a redirect_uri not in the document: 400)"
else fail "cimd-redirect-uris-enforced (HTTP $wrong_cb)"; fi

# The conformance suite's authorization-server scenarios; conformance-as.py is the browser.
conf() { # label [client-id port]
  local rc=0
  python3 "$HERE/conformance-as.py" "$AS" "$MCP_URL" "$@" >"$WORK/conf-$1.txt" 2>"$WORK/conf-$1.err" || rc=$?
  sed "s/^/    /" "$WORK/conf-$1.txt"
  if [[ $rc -eq 0 ]]; then pass "conformance-authorization-$1 ($(grep -c '^PASS' "$WORK/conf-$1.txt") checks, no warnings)"
  else fail "conformance-authorization-$1"; tail -n 20 "$WORK/conf-$1.err" >&2 || true; fi
}
conf no-client-id
dcr_id="$(curl -s "$AS/register" -H 'content-type: application/json' \
  -d "{\"redirect_uris\":[\"http://127.0.0.1:$CONF_PORT/callback\"],\"application_type\":\"native\",\"token_endpoint_auth_method\":\"none\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
CONF_USERNAME=john.mcclane@orchestrator.lab conf dcr "$dcr_id" "$CONF_PORT"
conf cimd "$CIMD/conformance.json" "$CONF_PORT"
# DCR without application_type is refused (MCP 2025-11-25).
no_type="$(curl -s -o /dev/null -w '%{http_code}' "$AS/register" -H 'content-type: application/json' \
  -d '{"redirect_uris":["http://127.0.0.1:5000/cb"],"token_endpoint_auth_method":"none"}')"
if [[ "$no_type" == 400 ]]; then pass "dcr-requires-application_type (400 without it)"
else fail "dcr-requires-application_type (HTTP $no_type)"; fi

PLAIN="$WORK/demo.plain.log"
sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/demo.log" >"$PLAIN"
for who in alice@corp.example bob@partner.example; do
  n="$(grep -F 'delegation chain received' "$PLAIN" | grep -F 'tool="listAccounts"' \
      | grep -F "sub=\"$who\"" | grep -F 'act="ai-identity-gateway"' | grep -c . || true)"
  if (( n >= 2 )); then pass "delegation-sub-$who ($n ledger delegation tokens with sub $who)"
  else fail "delegation-sub-$who ($n ledger delegation tokens with sub $who, want >= 2)"; fi
done

# Group mapping into Cedar: alice and bob (IdP groups [employees]) pass `principal in
# Group::"employees"` and fail `principal in Group::"compliance"`.
if python3 - "$WORK/audit" >"$WORK/groups.txt" 2>&1 <<'PY'; then
import glob, json, sys
recs = [json.loads(l) for f in sorted(glob.glob(f"{sys.argv[1]}/audit-*.jsonl")) for l in open(f) if l.strip()]
bad, seen = [], 0
for r in recs:
    if r.get("sub") not in ("alice@corp.example", "bob@partner.example") or r.get("upstream_tool") != "listAccounts":
        continue
    seen += 1
    s = r.get("shadow") or {}
    if r.get("decision") != "allow" or s.get("decision") != "deny" or s.get("policy_ids") != ["candidate:compliance-only"]:
        bad.append(f"seq {r.get('seq')} sub {r.get('sub')}: decision {r.get('decision')} shadow {s}")
print(f"{seen} federated listAccounts records; {len(bad)} not as expected")
for b in bad:
    print(b)
sys.exit(1 if bad or seen < 4 else 0)
PY
  pass "groups-in-cedar ($(head -n 1 "$WORK/groups.txt"): shadow forbid by compliance-only, not by employees-only)"
else
  fail "groups-in-cedar"; cat "$WORK/groups.txt" >&2
fi

# --- one IdP stops ----------------------------------------------------------------------------------
log "stopping the partner IdP"
kill -TERM "$PARTNER_PID"; wait "$PARTNER_PID" 2>/dev/null || true
AUTHZ="$AS/authorize?response_type=code&client_id=mcp-client-cli&redirect_uri=http%3A%2F%2Flocalhost%3A19876%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=x"
down=0
for _ in $(seq 50); do
  page="$(curl -s "$AUTHZ")"
  if grep -qF '<strong>partner SSO</strong> is unavailable right now' <<<"$page"; then down=1; break; fi
  sleep 0.2
done
if (( down )) && grep -qF 'Sign in with corp SSO' <<<"$page" && ! grep -qF 'Sign in with partner SSO' <<<"$page"; then
  pass "login-page-says-partner-down (corp still offered)"
else
  fail "login-page-says-partner-down"; printf '%s\n' "$page" >&2
fi
run_client ts-preregistered-corp-after corp alice node ts-client.mjs preregistered "$MCP_URL"

# A token issued through the stopped IdP is still accepted by the gateway.
bob_token="$(head -n 1 "$WORK/ts-dcr-partner.token" 2>/dev/null || true)"
code="$(curl -s -D "$WORK/init.headers" -o "$WORK/init.json" -w '%{http_code}' -X POST "$MCP_URL" \
  -H "authorization: Bearer $bob_token" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
  --data '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"idp-suite","version":"1"}}}' || true)"
if [[ -n "$bob_token" && "$code" == 200 ]]; then
  pass "issued-token-still-accepted (bob's token from the stopped IdP: initialize 200)"
else
  fail "issued-token-still-accepted (HTTP $code)"; head -c 300 "$WORK/init.json" >&2 || true
  grep -iF 'www-authenticate' "$WORK/init.headers" >&2 || true
fi
rm -f "$WORK"/*.token

echo "idp: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
