#!/usr/bin/env python3
"""The soak's invariant checker (tests/soak/run.sh): reads what the independent observers
wrote into the work dir and judges, request by request, then writes the per-fault report.

Observers: the load generator's own line per request (k6-requests.log), the verifying
upstream's line per request received (upstream.jsonl), the external token service's line per
/token request (sts.jsonl), the audit files of every replica (replica 1's written by relay.py),
`warden audit verify` (exit codes), /proc samples (samples.jsonl), the replicas' logs, and
run.sh's end-of-run figures (stuck connections, exit statuses). Warden's own counters are not used.

Invariants (each violation is attributed to the time it happened, so to a fault or to calm):
  upstream_token_valid      every request the upstream received carried a valid, unexpired
                            delegation token for that upstream and tool (upstream.py verified,
                            against the issuing service's own JWKS: embedded STS or sts.py)
  nothing_unauthorised_sent no call the load sent as denied / unauthenticated / malformed /
                            oversize reached the upstream; no call unknown to the load did
  refusals_hold             a denied call was never answered with a result; an invalid token never was
  executed_at_most_once     no call_id executed twice
  refused_not_sent          a call refused as "token exchange failed, not sent" (-32004 / -31004)
                            or "audit trail unavailable" (-32003 / -31003) never reached the upstream
  external_sts_used         the replica in external delegation mode had tool calls executed with
                            sts.py's tokens (else the external path was never exercised)
  one_audit_record          each request answered by a replica (x-request-id) has exactly one
                            record over all replicas, or none if it was refused as audit
                            unavailable (-32003 / -31003: the client was told); 413s answered before the
                            body was read: records == answers
                            A request answered with no record is a violation even when its
                            replica was SIGKILLed just after: an answer leaves only once its
                            record is written (docs/operations.md); the detail says how long
                            before a kill of its replica it was answered, if one followed
  chain_verifies            `warden audit verify` accepts every replica's chain
  rss_fds_bounded           after warm-up: RSS <= 1.5 x warm-up + 64 MiB, fds <= warm-up + 64
  no_panic                  no `panicked` in a replica log
  clean_end                 no connection to a replica left open 15 s after the balancer stopped;
                            every replica exits 0 on SIGTERM, the audit relay 0 at its end; k6 exited 0
  no_token_in_logs          no client token (nor the gateway's client secret at sts.py) in a log,
                            audit file or the load's lines
"""

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict

FORBIDDEN = {"deny", "unauth", "malformed", "oversize"}
# "The audit trail is unavailable, so the call was refused": -32003 (2025 era), -31003 (2026-07-28).
AUDIT_UNAVAILABLE = {"error:-32003", "error:-31003"}
# "Token exchange for upstream ... failed ... The call was not sent": -32004, -31004.
EXCHANGE_FAILED = {"error:-32004", "error:-31004"}
# A request answered this shortly before its replica's SIGKILL is named so in a violation.
KILL_WINDOW_MS = 250


def jsonl(path):
    out = []
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def k6_lines(path):
    out = []
    for line in open(path, errors="replace"):
        m = re.search(r'msg="(.*)"\s*$', line.rstrip("\n"))
        if not m:
            continue
        try:
            out.append(json.loads(json.loads('"' + m.group(1) + '"')))
        except ValueError:
            continue
    return out


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def outcome(r):
    s, rpc, cat = r["status"], r["rpc"], r["cat"]
    if s == 0:
        return "no_answer"
    if r.get("rid") is None and s in (502, 503, 504):
        return "balancer_5xx"
    if s == 200 and rpc == "result":
        return "ok"
    if s == 200 and rpc == "isError" and cat == "deny":
        return "denied"
    if rpc in AUDIT_UNAVAILABLE:
        return "audit_refused"
    if rpc in EXCHANGE_FAILED:
        return "exchange_refused"
    if s in (401, 400, 413):
        return str(s)
    if s == 200 and rpc in ("isError",) or rpc.startswith("error:"):
        return "call_failed"
    return f"other_{s}"


def t_before(kills, rep, answered):
    """Milliseconds from `answered` to the first SIGKILL of replica `rep` at or after it."""
    return min(t - answered for t, k in kills if k == rep and t >= answered)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--stuck", type=int, default=0)
    ap.add_argument("--exits", default="")
    ap.add_argument("--verify", default="")
    ap.add_argument("--k6-rc", type=int, default=0)
    ap.add_argument("--tokens", default="")
    ap.add_argument("--sts-secret", default="")
    ap.add_argument("--external-issuer", default="")
    a = ap.parse_args()
    w = a.work
    reqs = k6_lines(f"{w}/k6-requests.log")
    ups = jsonl(f"{w}/upstream.jsonl")
    sts = jsonl(f"{w}/sts.jsonl")
    sched = jsonl(f"{w}/schedule.jsonl")
    samples = jsonl(f"{w}/samples.jsonl")
    load = json.load(open(f"{w}/load.json"))
    warm_end = load["load_start_ms"] + load["warmup_ms"]
    recs = []
    # Which replica a request id's process prefix (its first 8 hex digits) belongs to.
    replica_of_prefix = {}
    for d in sorted(glob.glob(f"{w}/audit-*")):
        for f in sorted(glob.glob(f"{d}/audit-*.jsonl")):
            got = jsonl(f)
            recs.extend(got)
            rep = os.path.basename(d).split("-", 1)[1]
            for x in got:
                replica_of_prefix.setdefault((x.get("request_id") or "")[:8], rep)
    kills = []  # (t_ms, replica) of every SIGKILL of a replica
    if os.path.exists(f"{w}/events.log"):
        for line in open(f"{w}/events.log"):
            m = re.match(r"(\d+) replica (\d+) SIGKILL", line)
            if m:
                kills.append((int(m.group(1)), m.group(2)))
    violations = []  # (invariant, t_ms or None, detail)

    def v(inv, t, detail):
        violations.append((inv, t, detail))

    by_id = {r["id"]: r for r in reqs}
    # upstream_token_valid, nothing_unauthorised_sent, executed_at_most_once
    runs = Counter()
    for u in ups:
        t = int(u["t"] * 1000)
        if u["verdict"] != "ok":
            v("upstream_token_valid", t, f"{u['method']} {u.get('tool')} call {u.get('call_id')}: {u['verdict']}")
        if u["method"] != "tools/call":
            continue
        cid = u.get("call_id")
        if u.get("executed"):
            runs[cid] += 1
        r = by_id.get(cid)
        if r is None:
            v("nothing_unauthorised_sent", t, f"call {cid} reached the upstream but the load never sent it")
        elif r["cat"] in FORBIDDEN:
            v("nothing_unauthorised_sent", t, f"{r['cat']} call {cid} ({r['user']}, {r['tool']}) reached the upstream")
    for cid, n in runs.items():
        if n > 1:
            t = next(int(u["t"] * 1000) for u in ups if u.get("call_id") == cid)
            v("executed_at_most_once", t, f"call {cid} executed by the upstream {n} times")
    # refused_not_sent: the client was told the call was not sent, so it must not have been
    reached = {u.get("call_id") for u in ups if u["method"] == "tools/call"}
    for r in reqs:
        if r["rpc"] in EXCHANGE_FAILED | AUDIT_UNAVAILABLE and r["id"] in reached:
            v("refused_not_sent", r["t0"], f"{r['cat']} call {r['id']} answered {r['rpc']} (not sent) reached the upstream")
    # external_sts_used
    external = sum(1 for u in ups if u["method"] == "tools/call" and u.get("executed") and u.get("iss") == a.external_issuer)
    if a.external_issuer and external == 0:
        v("external_sts_used", None, f"no tool call executed with a token of {a.external_issuer}")
    sts_modes = Counter(f"{x['grant']} {x['mode']} {x['status']}" for x in sts)
    # refusals_hold
    for r in reqs:
        if r["cat"] in ("deny", "unauth", "malformed", "oversize") and r["status"] == 200 and r["rpc"] == "result":
            v("refusals_hold", r["t0"], f"{r['cat']} call {r['id']} was answered with a result")
    # one_audit_record
    per_rid = Counter(x.get("request_id") for x in recs)
    unread = sum(1 for x in recs if x.get("reason") == "request body refused unread")
    answered_413 = 0
    for r in reqs:
        rid = r.get("rid")
        if rid is None:
            if r["status"] == 413:
                answered_413 += 1
            continue
        n = per_rid.get(rid, 0)
        if n == 1 or (n == 0 and r["rpc"] in AUDIT_UNAVAILABLE):
            continue
        answered = r["t0"] + r["ms"]
        rep = replica_of_prefix.get(rid[:8])
        near_kill = ""
        if n == 0 and any(rep == k and t - KILL_WINDOW_MS <= answered <= t for t, k in kills):
            near_kill = f", answered {t_before(kills, rep, answered):.0f} ms before replica {rep}'s SIGKILL"
        v("one_audit_record", r["t0"], f"{r['cat']} request {r['id']} (status {r['status']}, {r['rpc']}): {n} records{near_kill}")
    if unread != answered_413:
        v("one_audit_record", None, f"{answered_413} requests answered 413 before their body, {unread} records of them")
    # chain_verifies, clean_end
    for kv in a.verify.split():
        i, rc = kv.split(":")
        if rc != "0":
            out = open(f"{w}/verify-{i}.out").read().strip()
            v("chain_verifies", None, f"replica {i}: warden audit verify exit {rc}: {out[:300]}")
    for kv in a.exits.split():
        i, rc = kv.split(":")
        if rc != "0":
            who = "the audit relay" if i == "relay" else f"replica {i}"
            v("clean_end", None, f"{who} exited {rc} at the end")
    if a.stuck:
        v("clean_end", None, f"{a.stuck} connections to the replicas still open 15 s after the balancer stopped")
    if a.k6_rc:
        v("clean_end", None, f"k6 exited {a.k6_rc}")
    # no_panic
    for f in sorted(glob.glob(f"{w}/replica-*.log")):
        for line in open(f, errors="replace"):
            if "panicked" in line:
                v("no_panic", None, f"{os.path.basename(f)}: {line.strip()[:200]}")
    # rss_fds_bounded, per process
    per_pid = defaultdict(list)
    for s in samples:
        per_pid[(s["replica"], s["pid"])].append(s)
    bounds = []
    for (rep, pid), ss in sorted(per_pid.items()):
        start = max(warm_end, ss[0]["t"] + load["warmup_ms"])
        base = [s for s in ss if s["t"] <= start]
        after = [s for s in ss if s["t"] > start]
        if not base or not after:
            continue
        rss0, fd0 = max(s["rss_kb"] for s in base), max(s["fds"] for s in base)
        rss1, fd1 = max(s["rss_kb"] for s in after), max(s["fds"] for s in after)
        bounds.append(f"replica {rep} (pid {pid}): RSS {rss0 // 1024} -> max {rss1 // 1024} MiB, fds {fd0} -> max {fd1}")
        if rss1 > 1.5 * rss0 + 64 * 1024:
            v("rss_fds_bounded", None, f"replica {rep} pid {pid}: RSS {rss1} kB after warm-up {rss0} kB")
        if fd1 > fd0 + 64:
            v("rss_fds_bounded", None, f"replica {rep} pid {pid}: {fd1} fds after warm-up {fd0}")
    # no token in any log or audit file: a JWT is found by itself or by its payload alone
    if a.tokens and os.path.exists(a.tokens):
        toks = json.load(open(a.tokens))
        jwts = [t for s in ("k1", "k2") for t in toks[s].values()] + [t for t in toks["bad"] if len(t) > 20]
        needles = [("a client token", x) for t in jwts for x in (t, t.split(".")[1])]
        if a.sts_secret and os.path.exists(a.sts_secret):
            needles.append(("the gateway's client secret", open(a.sts_secret).read().strip()))
        hay = glob.glob(f"{w}/replica-*.log") + glob.glob(f"{w}/audit-*/*") + [
            f"{w}/upstream.jsonl", f"{w}/k6-requests.log", f"{w}/sts.jsonl", f"{w}/sts.err"]
        for f in hay:
            if not os.path.isfile(f):
                continue
            data = open(f, errors="replace").read()
            for what, x in needles:
                if x in data:
                    v("no_token_in_logs", None, f"{what} in {os.path.basename(f)}")
                    break

    # --- the table ----------------------------------------------------------------------------
    windows = [(s["fault"], s["start_ms"], s["end_ms"]) for s in sched]

    def window_of(t):
        if t is None:
            return None
        for name, s, e in windows:
            if s <= t < e:
                return name
        return "(no fault)"

    cols = ["ok", "denied", "401", "400", "413", "call_failed", "exchange_refused", "audit_refused", "balancer_5xx", "no_answer"]
    rows = defaultdict(lambda: {"n": 0, "out": Counter(), "ms": [], "viol": 0})
    for r in reqs:
        key = window_of(r["t0"]) if r["t0"] >= warm_end else "(warm-up)"
        row = rows[key]
        row["n"] += 1
        row["out"][outcome(r)] += 1
        row["ms"].append(r["ms"])
    for inv, t, _ in violations:
        rows[window_of(t) if t is not None else "(end of run)"]["viol"] += 1
    outside = rows["(no fault)"]["ms"]
    o50, o99 = pct(outside, 50), pct(outside, 99)
    fmt = lambda x: "-" if x is None else f"{x:.0f}"
    lines = ["| fault | requests | " + " | ".join(cols) + " | other | violations | p50 ms (fault / outside) | p99 ms (fault / outside) |",
             "|---|" + "---:|" * (len(cols) + 5)]
    order = ["(warm-up)"] + [n for n, _, _ in windows] + ["(no fault)", "(end of run)"]
    seen = set()
    for name in order:
        if name in seen or name not in rows:
            continue
        seen.add(name)
        row = rows[name]
        other = row["n"] - sum(row["out"][c] for c in cols)
        lines.append(f"| {name} | {row['n']} | " + " | ".join(str(row["out"][c]) for c in cols)
                     + f" | {other} | {row['viol']} | {fmt(pct(row['ms'], 50))} / {fmt(o50)} | {fmt(pct(row['ms'], 99))} / {fmt(o99)} |")
    inv_names = ["upstream_token_valid", "nothing_unauthorised_sent", "refusals_hold", "executed_at_most_once", "refused_not_sent",
                 "external_sts_used", "one_audit_record",
                 "chain_verifies", "rss_fds_bounded", "no_panic", "clean_end", "no_token_in_logs"]
    per_inv = Counter(i for i, _, _ in violations)
    cats = Counter(r["cat"] for r in reqs)
    eras = Counter(r["era"] for r in reqs)
    report = [
        f"# Soak report ({len(reqs)} requests, {len(windows)} faults, {len(ups)} upstream requests, {len(recs)} audit records)",
        "",
        f"Load: {dict(cats)}; eras {dict(eras)}; {sum(runs.values())} tool calls executed upstream, "
        f"{external} of them with the external token service's tokens.",
        "",
        f"External token service (/token requests by grant, mode, status): {dict(sorted(sts_modes.items()))}.",
        "",
        "\n".join(lines),
        "",
        "Invariants: " + ", ".join(f"{i} {per_inv.get(i, 0)}" for i in inv_names) + ".",
        "",
        "Resources: " + "; ".join(bounds) + ".",
        "",
    ]
    for inv, t, d in violations[:40]:
        report.append(f"- VIOLATION {inv} [{window_of(t) if t else 'end'}]: {d}")
    report.append(f"\nsoak: {len(violations)} violations")
    os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
    with open(a.report, "w") as f:
        f.write("\n".join(report) + "\n")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
