#!/usr/bin/env bash
# Memory probe of issue 12: Warden with the same full configuration as loadtest/run.sh (one
# shard, pinned to core 0), its VmRSS / VmHWM / RssAnon from /proc/<pid>/status right after
# /readyz answers, after the password grant and after LOGINS of them (a login's argon2 memory
# must not stay resident: the script fails when the logins leave RssAnon more than
# MAX_LOGIN_MIB above the reading at start), then after opening N MCP sessions (initialize with the user's token +
# notifications/initialized; the ids are kept, so every session stays live), and the growth
# per session, then the resident mappings from /proc/<pid>/smaps (what holds the memory).
#
#   loadtest/memory.sh                      # N=10000
#   N=2000 SKIP_BUILD=1 loadtest/memory.sh
#
# Settings: N, LOGINS (5), MAX_LOGIN_MIB (8), CONNECTIONS (4: keep-alive connections the sessions are opened over), MODE
# (echo | fastmcp: the upstream behind Warden; Warden answers initialize itself), BASE_PORT
# (18181), SERVER_CPU (0), LOAD_CPU (1), SKIP_BUILD=1, and loadtest/lib.sh's AUDIT_QUEUE,
# IO_DRIVER and ECHO_UPSTREAM.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_PORT=${BASE_PORT:-18181}
LOG_TAG=memory
# shellcheck source=loadtest/lib.sh
. "$HERE/lib.sh"
N=${N:-10000}
CONNECTIONS=${CONNECTIONS:-4}
LOGINS=${LOGINS:-5}
MAX_LOGIN_MIB=${MAX_LOGIN_MIB:-8}

need_tools curl python3 taskset ss
[ "$MODE" = fastmcp ] && fastmcp_venv
build
refuse_busy_ports "$UPSTREAM_PORT" "$WARDEN_PORT" "$ADMIN_PORT" "$AS_PORT"
make_work
log "work dir $WORK; mode $MODE; Warden on cpu $SERVER_CPU; $N sessions over $CONNECTIONS connections"

start_upstream
start_warden
STATUS="/proc/$WARDEN_PID/status"
cp "$STATUS" "$WORK/status-ready"
cp "/proc/$WARDEN_PID/smaps" "$WORK/smaps-ready"
user_token
cp "$STATUS" "$WORK/status-login"
for _ in $(seq 2 "$LOGINS"); do user_token; done
cp "$STATUS" "$WORK/status-logins"

taskset -c "$LOAD_CPU" python3 - "$PUBLIC_URL" "$WORK/token" "$N" "$CONNECTIONS" "$PROTOCOL" "$WORK/sessions.txt" <<'PY'
# Opens N sessions over a few keep-alive connections; every answer is checked.
import http.client, sys, threading, urllib.parse
url, token_file, n, conns, proto, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
token = open(token_file).read().strip()
u = urllib.parse.urlsplit(url)
init = ('{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"%s",'
        '"capabilities":{},"clientInfo":{"name":"memory-probe","version":"1"}}}' % proto).encode()
note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
base = {"content-type": "application/json", "accept": "application/json, text/event-stream",
        "authorization": "Bearer " + token}
ids, errors = [], []

def worker(count):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    for _ in range(count):
        c.request("POST", u.path, init, base)
        r = c.getresponse(); body = r.read()
        sid = r.getheader("mcp-session-id")
        if r.status != 200 or not sid or b'"result"' not in body:
            errors.append(f"initialize: {r.status} {body[:200]!r}"); return
        c.request("POST", u.path, note, dict(base, **{"mcp-session-id": sid, "mcp-protocol-version": proto}))
        r = c.getresponse(); r.read()
        if r.status != 202:
            errors.append(f"notifications/initialized: {r.status}"); return
        ids.append(sid)

per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
ts = [threading.Thread(target=worker, args=(k,)) for k in per]
for t in ts: t.start()
for t in ts: t.join()
open(out, "w").write("\n".join(ids) + "\n")
if errors or len(ids) != n:
    sys.exit(f"opened {len(ids)} of {n} sessions; first error: {errors[:1]}")
print(f"[memory] opened {len(ids)} sessions ({len(set(ids))} distinct ids)", file=sys.stderr)
PY
sleep 1 # let allocator and background tasks settle before reading
cp "$STATUS" "$WORK/status-sessions"
cp "/proc/$WARDEN_PID/smaps" "$WORK/smaps-sessions"
kill -0 "$WARDEN_PID" 2>/dev/null || die "warden died; see $WORK/warden.err"

login_ok=1
python3 - "$WORK/status-ready" "$WORK/status-login" "$WORK/status-sessions" "$N" "$MODE" "$WORK/status-logins" "$LOGINS" "$MAX_LOGIN_MIB" <<'PY' || login_ok=0
import sys
def read(p):
    v = {}
    for line in open(p):
        k, _, rest = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            v[k] = int(rest.split()[0])
    return v
r, a, b, n, mode = read(sys.argv[1]), read(sys.argv[2]), read(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ls, logins, max_login = read(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
print(f"\nWarden memory (one shard, full configuration, upstream {mode}; /proc/<pid>/status)\n")
print("| | VmRSS MiB | VmHWM MiB | RssAnon MiB | RssFile MiB | threads |")
print("|---|---:|---:|---:|---:|---:|")
for label, v in (("right after ready", r), ("after the login (password grant)", a), (f"after {logins} logins", ls), (f"with {n} sessions", b)):
    print(f"| {label} | {v['VmRSS']/1024:.1f} | {v['VmHWM']/1024:.1f} | {v['RssAnon']/1024:.1f} | {v['RssFile']/1024:.1f} | {v['Threads']} |")
print(f"\nper held session: VmRSS {(b['VmRSS']-a['VmRSS'])/n:.2f} KiB, RssAnon {(b['RssAnon']-a['RssAnon'])/n:.2f} KiB "
      f"({n} sessions, counted from the reading after the login)")
grown = (max(a['RssAnon'], ls['RssAnon']) - r['RssAnon']) / 1024
print(f"\nlogins: RssAnon {grown:+.1f} MiB over the reading at start after {logins} password grants (at most {max_login:g})")
print("\nTSV\nmode\tsessions\trss_start_kib\trss_login_kib\thwm_login_kib\tanon_login_kib\trss_kib\thwm_kib\tanon_kib\trss_per_session_kib\tanon_per_session_kib")
print(f"{mode}\t{n}\t{r['VmRSS']}\t{a['VmRSS']}\t{a['VmHWM']}\t{a['RssAnon']}\t{b['VmRSS']}\t{b['VmHWM']}\t{b['RssAnon']}"
      f"\t{(b['VmRSS']-a['VmRSS'])/n:.3f}\t{(b['RssAnon']-a['RssAnon'])/n:.3f}")
if grown > max_login:
    sys.exit(f"FAIL: the logins left {grown:.1f} MiB of RssAnon resident (argon2's memory kept?)")
PY

# What holds the memory: the resident mappings, largest first (/proc/<pid>/smaps), at start and
# with the sessions. Anonymous mappings have no name; the thread stacks are the 8 MiB ones
# (VmStk is the main thread's), the allocator's arenas and the large allocations the rest.
python3 - "$WORK/smaps-ready" "$WORK/smaps-sessions" <<'PY'
import re, sys
def maps(path):
    out, cur = [], None
    for line in open(path):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
        if m:
            cur = {"size": (int(m[2], 16) - int(m[1], 16)) // 1024, "perm": m[3], "name": m[4] or "[anon]"}
            out.append(cur)
        elif cur is not None and line.startswith(("Rss:", "Anonymous:")):
            cur[line.split(":")[0]] = int(line.split()[1])
    return out
for label, path in (("right after ready", sys.argv[1]), ("with the sessions", sys.argv[2])):
    ms = maps(path)
    total = sum(m.get("Rss", 0) for m in ms)
    by = {}
    for m in ms:
        name = m["name"]
        if name == "[anon]":
            name = f"[anon {m['perm']}, {m['size'] // 1024} MiB mapping]" if m["size"] >= 1024 else f"[anon {m['perm']}, < 1 MiB]"
        elif "/" in name:
            name = name.rsplit("/", 1)[1]
        by[name] = by.get(name, [0, 0])
        by[name][0] += m.get("Rss", 0); by[name][1] += 1
    print(f"\nResident mappings, {label} (smaps; total Rss {total / 1024:.1f} MiB)\n")
    print("| mapping | Rss MiB | count |")
    print("|---|---:|---:|")
    for name, (rss, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[:12]:
        if rss >= 256:
            print(f"| {name} | {rss / 1024:.1f} | {n} |")
PY
[ "$login_ok" = 1 ] || die "the logins left argon2 memory resident (above)"
