#!/usr/bin/env bash
# End-to-end through a balancer: the official TypeScript and Python MCP SDK clients
# (ts-client.mjs, py-client.py, E2E_PROFILE=echo) sign in with the SDK's own OAuth flow at
# Warden's embedded authorization server, list the tools and call one, with nginx round-robin in front of REPLICAS `warden
# serve` processes for both the MCP endpoint and the authorization server's port. The replicas
# share one PostgreSQL state database (started here: initdb + pg_ctl into the work dir) and one
# session key ring; every issuer and public URL in their config is the balancer's, so
# discovery, /register, /authorize, /login, /consent and /token each land on whichever replica
# nginx picks (round-robin: one sign-in's steps alternate between replicas). Each SDK twice:
# dynamic client registration, and the pre-registered public client `mcp-client-cli`. Then:
#   - nginx's access log shows both replicas served authorization-server and MCP requests;
#   - the allowed up_echo audit records summed over the replicas == the calls the clients made,
#     and `warden audit verify` accepts each replica's chain;
#   - no client access token (raw, or its payload segment) in any replica's log;
#   - every replica exits 0 on SIGTERM.
#
#   WARDEN_BIN      the warden binary (default ${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden);
#                   this script builds nothing.
#   TESTKIT_BIN_DIR where echo-upstream is (default: WARDEN_BIN's directory; cargo build -p testkit --bins)
#   REPLICAS        (2)
#   E2E_TIMEOUT     seconds per client run (default 120)
#   KEEP_WORK=1     keep the work dir (logs, audit dirs, nginx logs; tokens are always deleted)
#
# Needs node >= 18, python3 (venv), curl, nginx and PostgreSQL's server binaries (Debian's
# postgresql: /usr/lib/postgresql/*/bin, or WARDEN_PG_BIN). Everything binds 127.0.0.1.
# Exit status 0 only if every check passed; the last line is `e2e-replicas: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WARDEN_BIN="${WARDEN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/debug/warden}"
TESTKIT_BIN_DIR="${TESTKIT_BIN_DIR:-$(dirname "$WARDEN_BIN")}"
REPLICAS="${REPLICAS:-2}"
E2E_TIMEOUT="${E2E_TIMEOUT:-120}"
USERNAME=john.mcclane@orchestrator.lab
PASSWORD=yippiekayay
CALLS_PER_CLIENT=4 # ts-client.mjs and py-client.py, profile echo

log() { printf '[e2e-replicas] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "e2e-replicas: 0 passed, 1 failed"; exit 1; }

[[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (build it: cargo build -p controlplane --bin warden)"
[[ -x "$TESTKIT_BIN_DIR/echo-upstream" ]] || die "no $TESTKIT_BIN_DIR/echo-upstream (build it: cargo build -p testkit --bins; or set TESTKIT_BIN_DIR)"
for t in node python3 curl nginx; do command -v "$t" >/dev/null || die "$t is required"; done
(( REPLICAS >= 2 )) || die "REPLICAS must be at least 2"
PG_BIN="${WARDEN_PG_BIN:-}"
if [[ -z "$PG_BIN" ]]; then
  PG_BIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)"
fi
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || die "PostgreSQL's initdb/pg_ctl not found (install Debian's postgresql, or set WARDEN_PG_BIN)"

log "npm ci (@modelcontextprotocol/sdk pinned in package-lock.json)"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2
if [[ ! -x "$HERE/.venv/bin/python" ]]; then
  log "creating $HERE/.venv"
  python3 -m venv "$HERE/.venv" >&2
fi
log "pip install -r requirements.txt"
"$HERE/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" >&2

# --- free loopback ports (outside the ephemeral range, like testkit::stable_port) ---------------------
read -r -a PORTS < <(python3 - $((4 + 3 * REPLICAS)) <<'PY'
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
LB_MCP_PORT="${PORTS[0]}"
LB_AS_PORT="${PORTS[1]}"
PG_PORT="${PORTS[2]}"
UP_PORT="${PORTS[3]}"
GW_PORTS=("${PORTS[@]:4:REPLICAS}")
AS_PORTS=("${PORTS[@]:$((4 + REPLICAS)):REPLICAS}")
ADMIN_PORTS=("${PORTS[@]:$((4 + 2 * REPLICAS)):REPLICAS}")
MCP_URL="http://127.0.0.1:$LB_MCP_PORT/mcp"
ISSUER="http://127.0.0.1:$LB_AS_PORT"

# --- work dir, processes, cleanup ---------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/warden-e2e-replicas.XXXXXX")"
chmod 755 "$WORK" # the PostgreSQL server runs as `postgres` when we are root and needs to enter it
TOKEN_FILE="$WORK/access-tokens" # raw access tokens, only for the leak check; deleted on exit
PG_DIR="$WORK/pg"
PG_STARTED=0
UP_PID=""
NGINX_PID=""
declare -a W_PID
PG_USER=""
if [[ "$(id -u)" -eq 0 ]]; then
  # initdb refuses to run as root: run the server as Debian's `postgres` user.
  id -u postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run PostgreSQL as"
  PG_USER=postgres
fi
pg() { # prog args...: a PostgreSQL binary, as PG_USER when we are root
  if [[ -n "$PG_USER" ]]; then
    setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$PG_BIN/$1" "${@:2}"
  else
    "$PG_BIN/$1" "${@:2}"
  fi
}
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
  for pid in "${W_PID[@]}"; do [[ -n "$pid" ]] && stop_pid "$pid"; done
  [[ -n "$NGINX_PID" ]] && stop_pid "$NGINX_PID"
  [[ -n "$UP_PID" ]] && stop_pid "$UP_PID"
  if (( PG_STARTED )); then pg pg_ctl -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -f "$TOKEN_FILE"
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/replica-*.log; do
      [[ -f "$f" ]] || continue
      log "$(basename "$f") (last 20 lines):"
      tail -n 20 "$f" >&2 || true
    done
  fi
  if [[ $rc -ne 0 || "${KEEP_WORK:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- PostgreSQL: one state database for every replica --------------------------------------------------
PG_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
mkdir -p "$PG_DIR/sock"
printf '%s' "$PG_PASSWORD" >"$PG_DIR/pwfile"
if [[ -n "$PG_USER" ]]; then chown -R "$PG_USER:" "$PG_DIR"; fi
pg initdb -D "$PG_DIR/data" -U warden --auth=scram-sha-256 -E UTF8 --no-sync --pwfile="$PG_DIR/pwfile" >"$WORK/initdb.log" 2>&1 \
  || die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
rm -f "$PG_DIR/pwfile"
pg pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -k $PG_DIR/sock" start >"$WORK/pg_ctl.log" 2>&1 \
  || die "pg_ctl start failed: $(tail -n 5 "$PG_DIR/server.log" 2>/dev/null)"
PG_STARTED=1
PGPASSWORD="$PG_PASSWORD" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U warden warden \
  || die "createdb warden failed"
STATE_URL="postgres://warden:$PG_PASSWORD@127.0.0.1:$PG_PORT/warden"
log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $NF}') on 127.0.0.1:$PG_PORT (database warden)"

# --- the upstream ----------------------------------------------------------------------------------------
"$TESTKIT_BIN_DIR/echo-upstream" --port "$UP_PORT" >"$WORK/upstream.out" 2>"$WORK/upstream.err" </dev/null &
UP_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/upstream.out" ]] && break; sleep 0.05; done
UP_URL="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["url"])' <"$WORK/upstream.out")" \
  || die "echo-upstream printed no url"

# --- the shared secrets and the replicas' config ---------------------------------------------------------
printf 'k1:%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$WORK/session-keys"
head -c 32 /dev/urandom | base64 >"$WORK/state.key"
chmod 600 "$WORK/session-keys" "$WORK/state.key"
PASSWORD_HASH="$(printf '%s' "$PASSWORD" | "$WARDEN_BIN" hash-password)" || die "warden hash-password failed"
replica_config() { # i -> replica i's config: the shared one, with its own listeners and audit dir
  cat <<YAML
gateway:
  listen: 127.0.0.1:${GW_PORTS[$1]}
  public_url: $MCP_URL
  scopes_supported: [mcp:tools]
admin:
  listen: 127.0.0.1:${ADMIN_PORTS[$1]}
authorization_server:
  listen: 127.0.0.1:${AS_PORTS[$1]}
  issuer: $ISSUER
  resources: [$MCP_URL]
  users:
    - username: $USERNAME
      email: $USERNAME
      password_hash: '$PASSWORD_HASH'
      groups: [employees]
  scopes:
    - name: mcp:tools
  clients:
    - client_id: mcp-client-cli
      public: true
      redirect_uris: [http://localhost:19876/callback]
      grant_types: [authorization_code, refresh_token]
issuers:
  - issuer: $ISSUER
state:
  url: $STATE_URL
  encryption_key_file: $WORK/state.key
sessions:
  keys_file: $WORK/session-keys
policy:
  default: allow
audit:
  sink: file
  dir: $WORK/audit-$1
limits:
  shutdown_grace: 5s
upstreams:
  - name: up
    url: $UP_URL
    timeout: 5s
YAML
}

# --- the balancer: one port for the MCP endpoint, one for the authorization server ---------------------
mkdir "$WORK/nginx"
# max_fails=0: a backend that refused a connection (a replica's authorization server not yet
# listening while the first replica discovers its issuer through the balancer) is not taken out
# of the rotation for fail_timeout, so the clients' requests really alternate between replicas.
# Nothing is stopped here; a refused connection still moves to the next replica.
GW_SERVERS=""
AS_SERVERS=""
for i in $(seq 0 $((REPLICAS - 1))); do
  GW_SERVERS+="    server 127.0.0.1:${GW_PORTS[$i]} max_fails=0;"$'\n'
  AS_SERVERS+="    server 127.0.0.1:${AS_PORTS[$i]} max_fails=0;"$'\n'
done
cat >"$WORK/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  log_format e2e '\$server_port \$status \$request_method \$uri upstream=[\$upstream_addr]';
  access_log $WORK/nginx/access.log e2e;
  client_body_temp_path $WORK/nginx/client_body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream warden_mcp {
$GW_SERVERS    keepalive 16;
  }
  upstream warden_as {
$AS_SERVERS    keepalive 16;
  }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$http_host;
  proxy_buffering off;
  proxy_connect_timeout 1s;
  proxy_next_upstream error timeout;
  server {
    listen 127.0.0.1:$LB_MCP_PORT;
    location / { proxy_pass http://warden_mcp; }
  }
  server {
    listen 127.0.0.1:$LB_AS_PORT;
    location / { proxy_pass http://warden_as; }
  }
}
NGINX
nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/t.err" || die "nginx -t: $(cat "$WORK/nginx/t.err")"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/stdout" 2>&1 </dev/null &
NGINX_PID=$!
# Ready = accepting connections. (No HTTP probe: with no replica up yet, a request would make
# nginx mark every backend failed for fail_timeout, and the replicas' first issuer discovery
# through the balancer would then get 502 and wait for the next JWKS refetch.)
tcp_open() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()' "$1" 2>/dev/null; }
deadline=$((SECONDS + 10))
until tcp_open "$LB_AS_PORT" && tcp_open "$LB_MCP_PORT"; do
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(tail -n 5 "$WORK/nginx/error.log" 2>/dev/null)"
  (( SECONDS < deadline )) || die "nginx not listening within 10 s"
  sleep 0.1
done

# --- the replicas --------------------------------------------------------------------------------------
# Each one's gateway trusts the issuer through the balancer, i.e. any replica's authorization
# server (one key ring in the database), so a replica is ready once some authorization server is.
for i in $(seq 0 $((REPLICAS - 1))); do
  mkdir "$WORK/audit-$i"
  replica_config "$i" >"$WORK/replica-$i.yaml"
  "$WARDEN_BIN" validate -c "$WORK/replica-$i.yaml" >/dev/null 2>"$WORK/validate.err" \
    || die "warden validate replica-$i.yaml: $(cat "$WORK/validate.err")"
  NO_COLOR=1 WARDEN_LOG="${WARDEN_LOG:-info}" "$WARDEN_BIN" serve -c "$WORK/replica-$i.yaml" \
    --data-dir "$WORK/data-$i" >"$WORK/replica-$i.log" 2>&1 </dev/null &
  W_PID[i]=$!
done
for i in $(seq 0 $((REPLICAS - 1))); do
  deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${ADMIN_PORTS[$i]}/readyz"; do
    kill -0 "${W_PID[$i]}" 2>/dev/null || die "replica $i exited before it was ready"
    (( SECONDS < deadline )) || die "replica $i not ready within 60 s: $(curl -s --max-time 2 "http://127.0.0.1:${ADMIN_PORTS[$i]}/readyz")"
    sleep 0.2
  done
  log "replica $i: gateway 127.0.0.1:${GW_PORTS[$i]}, authorization server 127.0.0.1:${AS_PORTS[$i]}, admin 127.0.0.1:${ADMIN_PORTS[$i]}"
done
log "nginx: MCP $MCP_URL, issuer $ISSUER, round-robin over $REPLICAS replicas"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }

# Every replica publishes the same JWKS (the key ring is the database's).
JWKS_SET="$(for i in $(seq 0 $((REPLICAS - 1))); do curl -sf --max-time 5 "http://127.0.0.1:${AS_PORTS[$i]}/jwks" | sha256sum | cut -c1-16; done | sort -u)"
if [[ "$(grep -c . <<<"$JWKS_SET")" -eq 1 ]]; then pass "the $REPLICAS authorization servers publish one JWKS (sha256 $JWKS_SET)"; else fail "the authorization servers publish different JWKS: $(tr '\n' ' ' <<<"$JWKS_SET")"; fi

# --- the clients -----------------------------------------------------------------------------------------
: >"$TOKEN_FILE"
chmod 600 "$TOKEN_FILE"
CLIENTS_OK=0
run_client() { # name cmd... ; the client prints one JSON summary line on stdout
  local name="$1" out="$WORK/$1.json" rc=0 summary
  shift
  log "--- $name"
  (cd "$HERE" && E2E_TOKEN_FILE="$TOKEN_FILE" E2E_PROFILE=echo E2E_USERNAME="$USERNAME" E2E_PASSWORD="$PASSWORD" \
    timeout "$E2E_TIMEOUT" "$@") >"$out" || rc=$?
  summary="$(tail -n 1 "$out" 2>/dev/null || true)"
  printf '%s\n' "$summary"
  if [[ $rc -eq 0 ]] && python3 -c '
import json, sys
s = json.loads(sys.argv[1])
sys.exit(0 if s.get("ok") is True and s.get("issuer") == sys.argv[2] and s.get("echoes") == int(sys.argv[3]) else 1)' "$summary" "$ISSUER" "$CALLS_PER_CLIENT" 2>/dev/null; then
    CLIENTS_OK=$((CLIENTS_OK + 1))
    pass "$name: OAuth sign-in at $ISSUER through the balancer, tools/list, $CALLS_PER_CLIENT x up_echo through $MCP_URL"
  else
    fail "$name (exit $rc)"
  fi
}
run_client ts-dcr-via-balancer node ts-client.mjs dcr "$MCP_URL"
run_client ts-preregistered-via-balancer node ts-client.mjs preregistered "$MCP_URL"
run_client py-dcr-via-balancer .venv/bin/python py-client.py "$MCP_URL" dcr
run_client py-preregistered-via-balancer .venv/bin/python py-client.py "$MCP_URL" preregistered

# --- what nginx spread: both ports reached every replica -----------------------------------------------------
if python3 - "$WORK/nginx/access.log" "$LB_MCP_PORT" "$LB_AS_PORT" "${GW_PORTS[*]}" "${AS_PORTS[*]}" >"$WORK/spread.txt" <<'PY'; then
import re, sys
from collections import Counter
log, mcp, auth, gw, az = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()
per = {mcp: Counter(), auth: Counter()}
paths = Counter()
flow = []  # (path, replica) of the browser steps, in order
for line in open(log):
    m = re.match(r"(\d+) (\d+) (\S+) (\S+) upstream=\[(.*?)\]", line)
    if not m or m.group(1) not in per:
        continue
    last = m.group(5).split(",")[-1].strip().rsplit(":", 1)[-1]
    per[m.group(1)][last] += 1
    if m.group(1) == auth:
        paths[(m.group(4), last)] += 1
        if m.group(4) in ("/authorize", "/login", "/consent"):
            flow.append((m.group(4), last))
# One sign-in = /authorize, /login, /consent; it "hopped" if they were not all on one replica.
signins = [flow[i:i + 3] for i in range(0, len(flow) - 2) if flow[i][0] == "/authorize"]
hopped = sum(1 for s in signins if len({r for _, r in s}) > 1)
ok = all(per[mcp][p] > 0 for p in gw) and all(per[auth][p] > 0 for p in az)
print(f"MCP requests per replica {dict(per[mcp])}; authorization-server requests per replica {dict(per[auth])}; "
      f"{hopped} of {len(signins)} sign-ins (authorize, login, consent) hopped replicas")
print("  authorization server, path -> replica port: " + ", ".join(f"{p}->{r} x{n}" for (p, r), n in sorted(paths.items())))
sys.exit(0 if ok else 1)
PY
  pass "nginx spread both ports over every replica: $(head -n 1 "$WORK/spread.txt")"
else
  fail "nginx did not reach every replica on both ports: $(head -n 1 "$WORK/spread.txt")"
fi
sed -n '2p' "$WORK/spread.txt" >&2

# --- stop the replicas: SIGTERM, exit 0, audit flushed ----------------------------------------------------------
for pid in "${W_PID[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
rcs=""
bad=0
for i in $(seq 0 $((REPLICAS - 1))); do
  rc=0
  wait "${W_PID[$i]}" || rc=$?
  W_PID[i]=""
  rcs+=" $i:$rc"
  (( rc == 0 )) || bad=1
done
if (( bad == 0 )); then pass "every replica exited 0 on SIGTERM (replica:status$rcs)"; else fail "exit statuses on SIGTERM (replica:status$rcs)"; fi

# --- audit: one allowed record per call, over the replicas; each chain verifies -------------------------------
WANT=$((CLIENTS_OK * CALLS_PER_CLIENT))
read -r -a PER_REPLICA < <(python3 - "$WORK" "$REPLICAS" <<'PY'
import glob, json, sys
work, n = sys.argv[1], int(sys.argv[2])
print(*[sum(1 for f in sorted(glob.glob(f"{work}/audit-{i}/audit-*.jsonl")) for l in open(f)
            if l.strip() and (r := json.loads(l))["decision"] == "allow" and r.get("tool") == "up_echo")
        for i in range(n)])
PY
)
SUM=0
for n in "${PER_REPLICA[@]}"; do SUM=$((SUM + n)); done
if (( SUM == WANT && WANT > 0 )); then pass "audit: $SUM allowed up_echo records over the replicas (${PER_REPLICA[*]}) == $WANT calls"; else fail "audit: $SUM allowed up_echo records (${PER_REPLICA[*]}), want $WANT"; fi
for i in $(seq 0 $((REPLICAS - 1))); do
  VRC=0
  "$WARDEN_BIN" audit verify "$WORK/audit-$i" >"$WORK/verify-$i.out" 2>&1 || VRC=$?
  if [[ $VRC -eq 0 ]]; then pass "warden audit verify, replica $i: $(sed "s|$WORK/||" "$WORK/verify-$i.out")"; else fail "warden audit verify, replica $i (exit $VRC): $(cat "$WORK/verify-$i.out")"; fi
done

# --- no access token in the replicas' logs --------------------------------------------------------------------
leaks=0
needles=0
while IFS= read -r t; do
  [[ -n "$t" ]] || continue
  parts=("$t")
  IFS=. read -r _h payload _s <<<"$t"
  if [[ -n "${payload:-}" && "$t" == *.*.* ]]; then parts+=("$payload"); fi
  for n in "${parts[@]}"; do
    needles=$((needles + 1))
    if grep -qF -- "$n" "$WORK"/replica-*.log "$WORK"/audit-*/*; then leaks=$((leaks + 1)); fi
  done
done <"$TOKEN_FILE"
if (( leaks == 0 && needles >= 2 * CLIENTS_OK && CLIENTS_OK > 0 )); then
  pass "no client access token (or its payload) in the replicas' logs or audit files ($needles needles)"
else
  fail "token leak check ($leaks leaks, $needles needles)"
fi
if grep -qE 'panicked|ERROR' "$WORK"/replica-*.log; then
  fail "replica logs have errors: $(grep -hE 'panicked|ERROR' "$WORK"/replica-*.log | head -n 3 | tr '\n' ' ')"
else
  pass "replica logs have no ERROR or panic"
fi

echo "e2e-replicas: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
