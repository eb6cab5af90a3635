#!/usr/bin/env bash
# Load test of issue 12: the same authenticated MCP `tools/call` against the upstream directly,
# through nginx (plain reverse proxy, no auth) and through Warden with its FULL configuration
# (embedded authorization server, password-grant user token, delegation per call, policy rules,
# file audit, admin port, WARDEN_LOG=info), in ONE run with interleaved rounds. Servers are
# pinned to core 0, wrk (-t2 -c32, Lua script checking every response) to core 1. For each
# window: req/s, p50/p99, CPU per call of the proxy and of the upstream (utime+stime from
# /proc over the window ÷ completed requests), wrk's own CPU; then medians, the Warden/nginx
# ratios and audit records ÷ Warden requests (must be 1).
#
#   loadtest/run.sh                         # MODE=echo DURATION=10 WARMUP=2 ROUNDS=3
#   DURATION=3 ROUNDS=1 loadtest/run.sh     # a quick check that everything works
#   MODE=fastmcp loadtest/run.sh            # a Python FastMCP upstream (mcp from PyPI) instead
#   BASELINE_BIN=/var/tmp/warden-before loadtest/run.sh
#   BASELINE_BIN=<same warden> BASELINE_AUDIT='  answer_wait: 0s' loadtest/run.sh
#                                           # the baseline with extra `audit:` lines (a setting's cost)
#   BASELINE_BIN=<same warden> BASELINE_IO_DRIVER=epoll loadtest/run.sh
#                                           # the baseline on the other I/O driver (auto | epoll)
#                                           # a fourth target: an earlier `warden` binary with the
#                                           # same configuration, so a change's before/after ratio
#                                           # comes from one run with interleaved rounds
#
# Settings: MODE (echo | fastmcp), DURATION, WARMUP, ROUNDS, THREADS (2), CONNECTIONS (32),
# BASE_PORT (18081: upstream, +1 nginx, +2 Warden, +3 admin, +4 authorization server),
# SERVER_CPU (0), LOAD_CPU (1), SKIP_BUILD=1, SUMMARY (the JSON summary's path),
# FASTMCP_STATELESS=1 (stateless_http upstream), MCP_VERSION, VENV.
# Needs: curl, python3, taskset, ss; nginx and wrk (apt-get installs them when missing);
# cargo unless SKIP_BUILD=1. Exit status 0 only if every check passed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_PORT=${BASE_PORT:-18081}
# shellcheck source=loadtest/lib.sh
. "$HERE/lib.sh"
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
SUMMARY=${SUMMARY:-/tmp/warden-loadtest-$MODE-$(date -u +%Y%m%dT%H%M%SZ).json}

# --- tools -------------------------------------------------------------------------------------
need_tools curl python3 taskset ss
apt_install nginx nginx
apt_install wrk wrk
[ "$MODE" = fastmcp ] && fastmcp_venv
build
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (servers on $SERVER_CPU, load on $LOAD_CPU)"
refuse_busy_ports "$UPSTREAM_PORT" "$NGINX_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$AS_PORT"

make_work
log "work dir $WORK; mode $MODE; servers on cpu $SERVER_CPU, wrk on cpu $LOAD_CPU"

# --- servers -----------------------------------------------------------------------------------
start_upstream

sed -e "s#@PREFIX@#$WORK#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" \
    "$HERE/nginx.conf.template" >"$WORK/nginx.conf"
mkdir -p "$WORK/client_body" "$WORK/proxy" "$WORK/fastcgi" "$WORK/uwsgi" "$WORK/scgi"
nginx -t -q -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" || die "nginx config test failed"
taskset -c "$SERVER_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
    >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")

start_warden
# The baseline: the same configuration served by another binary, on ports +5..+7, with its own
# work dir, authorization server and token.
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
    refuse_busy_ports $((BASE_PORT + 5)) $((BASE_PORT + 6)) $((BASE_PORT + 7))
    saved=("$BIN" "$WORK" "$WARDEN_PORT" "$ADMIN_PORT" "$AS_PORT" "$PUBLIC_URL" "$ISSUER" "$WARDEN_PID")
    mkdir -p "$WORK/baseline/bin"
    ln -s "$(readlink -f "$BASELINE_BIN")" "$WORK/baseline/bin/warden"
    BIN=$WORK/baseline/bin WORK=$WORK/baseline
    WARDEN_PORT=$((BASE_PORT + 5)) ADMIN_PORT=$((BASE_PORT + 6)) AS_PORT=$((BASE_PORT + 7))
    PUBLIC_URL="http://127.0.0.1:$WARDEN_PORT/mcp" ISSUER="http://127.0.0.1:$AS_PORT"
    AUDIT_EXTRA=${BASELINE_AUDIT:-} IO_DRIVER=${BASELINE_IO_DRIVER:-${IO_DRIVER:-}} start_warden
    user_token
    B_PID=$WARDEN_PID B_URL=$PUBLIC_URL B_WORK=$WORK B_ADMIN="http://127.0.0.1:$ADMIN_PORT"
    B_SID=$(mcp_session "$B_URL")
    out=$(mcp_call "$B_URL" "$B_SID" bench_echo '{"text":"hello from the load test","n":42}')
    grep -q '"result"' <<<"$out" || die "baseline: tools/call did not return a result: $out"
    BIN=${saved[0]} WORK=${saved[1]} WARDEN_PORT=${saved[2]} ADMIN_PORT=${saved[3]} AS_PORT=${saved[4]}
    PUBLIC_URL=${saved[5]} ISSUER=${saved[6]} WARDEN_PID=${saved[7]}
fi
wait_http "http://127.0.0.1:$NGINX_PORT/mcp" "$NGINX_PID"
user_token

# --- one session per target, and checked calls before the load ---------------------------------
TARGETS=(direct nginx warden)
declare -A URL=([direct]="http://127.0.0.1:$UPSTREAM_PORT/mcp" [nginx]="http://127.0.0.1:$NGINX_PORT/mcp" [warden]="$PUBLIC_URL")
declare -A TOOL=([direct]=echo [nginx]=echo [warden]=bench_echo)
declare -A SID
ARGS='{"text":"hello from the load test","n":42}'
for t in "${TARGETS[@]}"; do
    SID[$t]=$(mcp_session "${URL[$t]}")
    out=$(mcp_call "${URL[$t]}" "${SID[$t]}" "${TOOL[$t]}" "$ARGS")
    if ! grep -q '"result"' <<<"$out" || grep -Eq '"isError": ?true' <<<"$out"; then
        die "$t: tools/call did not return a result: $out"
    fi
done
# The policy is live: the deny rule and the other tool's scope rule refuse.
for tool in bench_slow bench_whoami; do
    out=$(mcp_call "$PUBLIC_URL" "${SID[warden]}" "$tool" '{}')
    grep -Eq '"isError": ?true|"error"' <<<"$out" || die "warden: $tool was not refused by policy: $out"
done

# --- the rounds ----------------------------------------------------------------------------------
body() { printf '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":%s}}' "$1" "$ARGS"; }
python3 - "$WORK/plan.json" <<PY
import json, sys
def target(name, url, sid, tool, proxy_pid, children=False, **extra):
    return dict(name=name, url=url, session=sid, body='$(body TOOL)'.replace("TOOL", tool),
                proxy_pid=proxy_pid, proxy_children=children, upstream_pid=$UP_PID, **extra)
plan = dict(
    mode="$MODE", duration=$DURATION, warmup=$WARMUP, rounds=$ROUNDS, threads=$THREADS,
    connections=$CONNECTIONS, load_cpu=$LOAD_CPU, server_cpu=$SERVER_CPU, protocol="$PROTOCOL",
    lua="$HERE/mcp-call.lua", token_file="$WORK/token", summary="$SUMMARY",
    env=dict(date="$(date -u +%FT%TZ)", head="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
             nproc=$(nproc), loadavg="$(cut -d' ' -f1-3 /proc/loadavg)", wrk="$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)",
             nginx="$(nginx -v 2>&1 | sed 's/.*: //')", upstream="$MODE"),
    targets=[
        target("direct", "${URL[direct]}", "${SID[direct]}", "echo", None),
        target("nginx", "${URL[nginx]}", "${SID[nginx]}", "echo", $NGINX_PID, children=True),
        target("warden", "${URL[warden]}", "${SID[warden]}", "bench_echo", $WARDEN_PID,
               audit_dir="$WORK/audit", admin="http://127.0.0.1:$ADMIN_PORT"),
    ] + ([target("baseline", "${B_URL:-}", "${B_SID:-}", "bench_echo", ${B_PID:-0},
                 audit_dir="${B_WORK:-}/audit", admin="${B_ADMIN:-}", token_file="${B_WORK:-}/token")]
         if "${BASELINE_BIN:-}" else []))
json.dump(plan, open(sys.argv[1], "w"), indent=1)
PY
log "warm-up ${WARMUP}s per target, then $ROUNDS rounds of ${DURATION}s windows: ${TARGETS[*]}"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$HERE/measure.py" "$WORK/plan.json"
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for pid in "$UP_PID" "$NGINX_PID" "$WARDEN_PID"; do
    kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) died during the run; see $WORK"
done
log "Warden wrote $(wc -l <"$WORK/warden.err") log lines at WARDEN_LOG=info (start-up included)"
if grep -Eq ' (WARN|ERROR) ' "$WORK/warden.err"; then
    log "Warden's warnings and errors:"
    grep -E ' (WARN|ERROR) ' "$WORK/warden.err" | head -n 20 >&2
fi
