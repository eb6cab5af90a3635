#!/usr/bin/env bash
# Mixed-era test: one Warden with authentication (its embedded authorization server) in front
# of a 2025-11-25 upstream and a 2026-07-28 upstream (tests/conformance/fixture, --era legacy /
# --era modern, namespaces legacy_ / modern_, a 5 s delegation token per call), a policy that
# denies test_error_handling on both, and a file audit trail. eras.mjs then drives a 2025-11-25
# client (@modelcontextprotocol/sdk) and a 2026-07-28 client (@modelcontextprotocol/client)
# through it and checks revisions, results, denial text, MRTR, delegation tokens and audit;
# then py-modern.py, the Python SDK (`mcp`) as a second 2026-07-28 client.
#
#   WARDEN_BIN=path/to/warden bash tests/eras/run.sh
# Exit 0 only if every check passed; the last line is `eras: N passed, M failed`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF="$HERE/../conformance"
WARDEN_BIN="${WARDEN_BIN:?set WARDEN_BIN to the warden binary}"
start=$SECONDS

[ -d "$CONF/node_modules/express" ] || (cd "$CONF" && npm ci --no-audit --no-fund --loglevel=error >&2)
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >&2)
# The Python SDK (a second 2026-07-28 client), pinned in requirements.txt, in tests/eras/.venv.
[ -x "$HERE/.venv/bin/python" ] || python3 -m venv "$HERE/.venv" >&2
"$HERE/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" >&2
export PATH="$CONF/node_modules/.bin:$PATH" # the pinned Node 22

work="$(mktemp -d)"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ $rc -ne 0 ] && [ -f "$work/warden.log" ]; then echo "--- warden log (last 30 lines)" >&2; tail -n 30 "$work/warden.log" >&2; fi
  if [ -n "${ERAS_KEEP:-}" ]; then rm -rf "$ERAS_KEEP"; cp -a "$work" "$ERAS_KEEP"; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

export FIXTURE_AUTH_LOG="$work/upstream-auth.jsonl"
export FIXTURE_OUT_OF_CALL=1 # the legacy fixture's tools that ask the client outside a call
start_fixture() { # era -> URL (set, not printed: a $(...) subshell would lose pids+=)
  node "$CONF/fixture/server.mjs" --era "$1" >"$work/fixture-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    grep -q "listening on" "$work/fixture-$1.log" && { URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/fixture-$1.log")"; return; }
    sleep 0.1
  done
  cat "$work/fixture-$1.log" >&2; exit 1
}
start_fixture legacy; legacy="$URL"
start_fixture modern; modern="$URL"

gw="$(free_port)"; as="$(free_port)"; admin="$(free_port)"
GW_URL="http://127.0.0.1:$gw/mcp"
ISSUER="http://127.0.0.1:$as"
PASSWORD="eras-$RANDOM-$RANDOM-password"
hash="$(printf '%s' "$PASSWORD" | "$WARDEN_BIN" hash-password)"
tools() { # the delegation entries of one upstream
  local t
  for t in "$@"; do printf '        - {name: %s, ttl: 5s, scopes: [fixture:call]}\n' "$t"; done
}
common="test_simple_text test_image_content test_error_handling test_elicitation test_header_param"
cat >"$work/warden.yaml" <<YAML
authorization_server:
  listen: 127.0.0.1:$as
  issuer: $ISSUER
  resources: [$GW_URL]
  dynamic_registration: false
  users:
    - {username: alice@eras.test, email: alice@eras.test, password_hash: '$hash', groups: []}
  scopes:
    - {name: mcp:tools}
  clients:
    - {client_id: eras-test, public: true, grant_types: [password]}
issuers:
  - issuer: $ISSUER
delegation:
  client_id: warden-eras
  mode: embedded
  issuer: $ISSUER
policy:
  default: allow
  rules:
    - tools: [legacy_test_error_handling, modern_test_error_handling]
      deny: true
      reason: "Denied by the eras test policy: test_error_handling is off limits."
audit:
  sink: file
  dir: $work/audit
gateway:
  listen: 127.0.0.1:$gw
  public_url: $GW_URL
admin:
  listen: 127.0.0.1:$admin
upstreams:
  - name: legacy
    url: $legacy
    namespace: legacy_
    token_exchange:
      type: delegation
      audience: https://legacy.eras.test/
      tools:
$(tools $common test_sampling_outside_call test_sampling_outside_call_answer test_touch_watched_resource)
  - name: modern
    url: $modern
    namespace: modern_
    token_exchange:
      type: delegation
      audience: https://modern.eras.test/
      tools:
$(tools $common test_input_required_result_elicitation)
YAML
"$WARDEN_BIN" serve -c "$work/warden.yaml" --data-dir "$work/data" >"$work/warden.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && { ready=1; break; }
  sleep 0.1
done
[ $ready = 1 ] || { echo "warden not ready" >&2; exit 1; }

# The user's access token: the password grant of the public test client (no browser needed).
TOKEN="$(curl -sf "$ISSUER/token" -d grant_type=password -d client_id=eras-test \
  -d username=alice@eras.test --data-urlencode "password=$PASSWORD" -d scope=mcp:tools \
  --data-urlencode "resource=$GW_URL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
USER_SUB="$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["sub"])' "$TOKEN")"
JWKS_URL="$(curl -sf "$ISSUER/.well-known/oauth-authorization-server" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jwks_uri"])')"

rc=0
(cd "$HERE" && GW_URL="$GW_URL" TOKEN="$TOKEN" USER_SUB="$USER_SUB" ACT_SUB=warden-eras JWKS_URL="$JWKS_URL" \
  AUTH_LOG="$FIXTURE_AUTH_LOG" AUDIT_DIR="$work/audit" CONFIG="$work/warden.yaml" ADMIN_URL="http://127.0.0.1:$admin" \
  timeout 120 node eras.mjs) || rc=$?
# The Python client last (its calls are not in eras.mjs's per-call accounting); its checks go
# through the same known-gaps.txt.
(cd "$HERE" && GW_URL="$GW_URL" TOKEN="$TOKEN" timeout 60 .venv/bin/python py-modern.py) >"$work/py.jsonl" 2>"$work/py.err" || true
python3 - "$work/py.jsonl" "$HERE/known-gaps.txt" "$work/py.err" <<'PY' || rc=1
import json, sys
gaps = {l.split("\t")[0].strip() for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")}
gaps = {g for g in gaps if g.startswith("python client:")}
seen, bad, known = set(), 0, 0
for line in open(sys.argv[1]):
    c = json.loads(line)
    seen.add(c["name"])
    if c["ok"] and c["name"] in gaps:
        print(f"FAIL STALE-GAP {c['name']}: passes now; remove it from known-gaps.txt"); bad += 1
    elif c["ok"]:
        print(f"PASS {c['name']}")
    elif c["name"] in gaps:
        print(f"KNOWN-GAP {c['name']}: {c['why']}"); known += 1
    else:
        print(f"FAIL {c['name']}: {c['why']}"); bad += 1
if not seen:
    print("FAIL python client: no checks ran: " + open(sys.argv[3]).read()[-600:]); bad += 1
for g in gaps - seen:
    print(f"FAIL STALE-GAP {g}: no such check any more"); bad += 1
print(f"eras (python client): {len(seen) - bad - known} passed, {bad} failed, {known} known gaps")
sys.exit(1 if bad else 0)
PY
if grep -qF "$TOKEN" "$work/warden.log"; then echo "FAIL the user's access token appears in Warden's log"; rc=1; fi
echo "eras step took $((SECONDS - start)) s" >&2
exit $rc
