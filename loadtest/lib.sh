# shellcheck shell=bash disable=SC2034  # (sourced: the callers use the ports and settings)
# Shared by loadtest/run.sh and loadtest/memory.sh (sourced, not run): tools, ports, the work
# dir and its cleanup, the upstreams, and Warden with the *full* configuration of issue 12:
# embedded authorization server (user token by the password grant, `resource` = the public
# URL), that issuer trusted, embedded delegation (one 5 s token per call for the tool, served
# from the shard's cache), policy `default: allow` plus three rules, audit to a file sink with
# default settings, the admin port, WARDEN_LOG=info.
#
# The caller sets HERE, ROOT and BASE_PORT before sourcing, and may set MODE (echo | fastmcp).

MODE=${MODE:-echo}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warden-target}
BIN="$CARGO_TARGET_DIR/release"
# The echo upstream's binary (another build of it may be given; Warden is what is measured).
ECHO_UPSTREAM=${ECHO_UPSTREAM:-$BIN/echo-upstream}
# FastMCP mode: the `mcp` package from PyPI in a venv outside the tree. 1.x is the release line
# that has `mcp.server.fastmcp.FastMCP` (2.x renamed it MCPServer).
MCP_VERSION=${MCP_VERSION:-1.30.0}
VENV=${VENV:-/var/tmp/warden-loadtest-venv}
PROTOCOL=2025-06-18

UPSTREAM_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
WARDEN_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
AS_PORT=$((BASE_PORT + 4))
PUBLIC_URL="http://127.0.0.1:$WARDEN_PORT/mcp"
ISSUER="http://127.0.0.1:$AS_PORT"
LT_USER=loadtest-user

log() { printf '[%s] %s\n' "${LOG_TAG:-loadtest}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() { # tool...
    local t
    for t in "$@"; do command -v "$t" >/dev/null || die "$t is required"; done
}

# Debian packages by name when missing (the machine is root; see /work/.library/env/README.md).
apt_install() { # command package
    command -v "$1" >/dev/null && return 0
    log "installing $2 (apt-get)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2"; } >/dev/null \
        || die "apt-get install $2 failed"
}

build() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building warden and testkit (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        (cd "$ROOT" && cargo build --release -q -p controlplane -p testkit) || die "build failed"
    fi
    local b
    for b in "$BIN/warden" "$ECHO_UPSTREAM"; do [ -x "$b" ] || die "missing $b"; done
}

fastmcp_venv() {
    if ! "$VENV/bin/python" -c "import mcp.server.fastmcp" 2>/dev/null \
        || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')" != "$MCP_VERSION" ]; then
        log "installing mcp==$MCP_VERSION from PyPI into $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_VERSION" >&2 \
            || die "pip install mcp==$MCP_VERSION failed"
    fi
}

# A leftover SO_REUSEPORT server would silently take connections: refuse to start instead.
refuse_busy_ports() { # port...
    local busy p
    busy=$(ss -Hltn | awk '{print $4}' | sed 's/.*://' | sort -u)
    for p in "$@"; do
        if grep -qx "$p" <<<"$busy"; then
            die "port $p is already in use; stop whatever listens there or set BASE_PORT"
        fi
    done
}

# Work dir and cleanup: every process started goes into PIDS and is stopped on exit; the work
# dir (logs, audit trail, token) is kept only when the run failed.
make_work() {
    WORK=$(mktemp -d /tmp/warden-loadtest.XXXXXX)
    chmod 755 "$WORK"
    PIDS=()
    trap cleanup EXIT INT TERM
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f "$WORK/token"
    if [ "$rc" -ne 0 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}

# Wait until $1 (a file) has a first line, or the process $2 died.
first_line() {
    local f=$1 pid=$2 i
    for i in $(seq 1 200); do
        if [ -s "$f" ] && head -n1 "$f" | grep -q .; then head -n1 "$f"; return 0; fi
        kill -0 "$pid" 2>/dev/null || die "process $pid exited; see $WORK"
        sleep 0.05
    done
    die "timed out waiting for $f"
}
wait_http() { # url pid [tries]: any HTTP answer to a POST counts (GET /mcp would open an SSE stream)
    local i
    for i in $(seq 1 "${3:-200}"); do
        if curl -s -o /dev/null --max-time 1 -X POST -d '{}' "$1"; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "process $2 exited; see $WORK"
        sleep 0.1
    done
    die "timed out waiting for $1"
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# The upstream on core SERVER_CPU: sets UP_PID and UP_URL.
start_upstream() {
    case "$MODE" in
        echo)
            taskset -c "$SERVER_CPU" "$ECHO_UPSTREAM" --port "$UPSTREAM_PORT" \
                >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
            UP_PID=$!; PIDS+=("$UP_PID")
            UP_URL=$(jget "$(first_line "$WORK/upstream.out" "$UP_PID")" url)
            ;;
        fastmcp)
            local flag=()
            [ "${FASTMCP_STATELESS:-0}" = 1 ] && flag=(--stateless)
            taskset -c "$SERVER_CPU" "$VENV/bin/python" "$HERE/fastmcp_upstream.py" --port "$UPSTREAM_PORT" "${flag[@]}" \
                >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
            UP_PID=$!; PIDS+=("$UP_PID")
            UP_URL="http://127.0.0.1:$UPSTREAM_PORT/mcp"
            wait_http "$UP_URL" "$UP_PID" 600 # imports take seconds on a busy machine
            ;;
        *) die "MODE must be echo or fastmcp, not $MODE" ;;
    esac
}

# Warden's full configuration (issue 12), pinned to SERVER_CPU, WARDEN_SHARDS shards (1): sets
# WARDEN_PID. WARDEN_WRAP (a command prefix, e.g. valgrind's) runs it under another program;
# READY_TRIES (300) tenths of a second are waited for /readyz. AUDIT_QUEUE sets
# audit.queue_capacity and IO_DRIVER gateway.io_driver (auto | epoll; default: Warden's).
start_warden() {
    local password hash
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    hash=$(printf '%s\n' "$password" | "$BIN/warden" hash-password) || die "warden hash-password failed"
    printf '%s' "$password" >"$WORK/password"
    cat >"$WORK/warden.yaml" <<YAML
gateway:
  listen: 127.0.0.1:$WARDEN_PORT
  public_url: $PUBLIC_URL
  shards: ${WARDEN_SHARDS:-1}
${IO_DRIVER:+  io_driver: $IO_DRIVER}
  scopes_supported: [mcp:tools]
admin:
  listen: 127.0.0.1:$ADMIN_PORT
# The embedded authorization server: the load test's user gets a token by the password grant.
authorization_server:
  listen: 127.0.0.1:$AS_PORT
  issuer: $ISSUER
  resources: [$PUBLIC_URL]
  users:
    - username: $LT_USER
      email: loadtest@example.test
      password_hash: '$hash'
      groups: [loadtest]
  scopes:
    - name: mcp:tools
    - name: pii:read
      groups: [compliance]
  clients:
    - client_id: loadtest
      public: true
      grant_types: [password]
issuers:
  - issuer: $ISSUER
delegation:
  client_id: warden-loadtest
  mode: embedded
# default allow plus three rules: a forbid-unless-scope on the whole upstream (the measured
# tool passes it), one on another tool, one deny.
policy:
  default: allow
  rules:
    - upstream: bench
      require_scopes: [mcp:tools]
      reason: "Tools of bench need mcp:tools."
    - tools: [bench_whoami]
      require_scopes: [pii:read]
      reason: "whoami needs pii:read."
    - tools: [bench_slow]
      deny: true
      reason: "slow is switched off."
audit:
  sink: file
  dir: $WORK/audit
${AUDIT_QUEUE:+  queue_capacity: $AUDIT_QUEUE}
${AUDIT_EXTRA:-}
upstreams:
  - name: bench
    url: $UP_URL
    namespace: bench_
    token_exchange:
      type: delegation
      audience: http://127.0.0.1:$UPSTREAM_PORT/
      tools:
        - name: echo
          ttl: 5s
          scopes: [bench:echo]
        - name: whoami
          ttl: 5s
          scopes: [bench:whoami]
YAML
    "$BIN/warden" validate -c "$WORK/warden.yaml" 2>"$WORK/validate.err" || die "warden validate: $(cat "$WORK/validate.err")"
    local wrap
    read -r -a wrap <<<"${WARDEN_WRAP:-}"
    # As the Dockerfile and the Helm chart run it: mimalloc's arena committed as it is used.
    MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT-0} \
    WARDEN_LOG=info taskset -c "$SERVER_CPU" "${wrap[@]}" "$BIN/warden" serve -c "$WORK/warden.yaml" \
        --data-dir "$WORK/data" --shards "${WARDEN_SHARDS:-1}" >"$WORK/warden.out" 2>"$WORK/warden.err" &
    WARDEN_PID=$!; PIDS+=("$WARDEN_PID")
    local _
    for _ in $(seq 1 "${READY_TRIES:-300}"); do
        if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz"; then return 0; fi
        kill -0 "$WARDEN_PID" 2>/dev/null || die "warden exited; see $WORK/warden.err"
        sleep 0.1
    done
    die "warden not ready after $((${READY_TRIES:-300} / 10)) s; see $WORK/warden.err"
}

# The user's token: password grant at the embedded authorization server, resource = public URL.
# Written to $WORK/token (never printed, deleted at exit); sets TOKEN.
user_token() {
    local out
    out=$(curl -fsS "$ISSUER/token" -d grant_type=password -d client_id=loadtest \
        -d "username=$LT_USER" --data-urlencode "password@$WORK/password" \
        -d scope=mcp:tools --data-urlencode "resource=$PUBLIC_URL") || die "password grant failed"
    TOKEN=$(jget "$out" access_token) || die "no access_token in the token response"
    (umask 077; printf '%s' "$TOKEN" >"$WORK/token")
}

# One MCP session (initialize + notifications/initialized) at $1: the id on stdout.
mcp_session() {
    local url=$1 sid
    local init='{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"'$PROTOCOL'","capabilities":{},"clientInfo":{"name":"loadtest","version":"1"}}}'
    sid=$(curl -fsS -D - -o /dev/null -H "content-type: application/json" -H "accept: application/json, text/event-stream" \
        -H "authorization: Bearer $TOKEN" -d "$init" "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
    if [ -z "$sid" ]; then
        # A stateless upstream (FASTMCP_STATELESS=1) answers without a session: none to send.
        [ "${FASTMCP_STATELESS:-0}" = 1 ] || die "no Mcp-Session-Id from $url"
        return 0
    fi
    curl -fsS -o /dev/null -H "content-type: application/json" -H "accept: application/json, text/event-stream" \
        -H "authorization: Bearer $TOKEN" -H "mcp-session-id: $sid" -H "mcp-protocol-version: $PROTOCOL" \
        -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$url" || die "notifications/initialized failed at $url"
    echo "$sid"
}

# One tools/call: the response body on stdout.
mcp_call() { # url session tool arguments-json
    local sess=()
    [ -n "$2" ] && sess=(-H "mcp-session-id: $2")
    curl -sS -H "content-type: application/json" -H "accept: application/json, text/event-stream" \
        -H "authorization: Bearer $TOKEN" "${sess[@]}" -H "mcp-protocol-version: $PROTOCOL" \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'"$3"'","arguments":'"$4"'}}' "$1"
}
