"""The measuring half of loadtest/run.sh: warm-up, interleaved rounds of wrk windows, CPU per
call from /proc, the report, and the machine-readable summary.

    python3 measure.py PLAN.json

PLAN.json (written by run.sh) names the targets in window order, each with its URL, session
id, request body, the pid of its proxy (none for direct; nginx's master, whose workers are
found as its children) and of the upstream behind it, plus wrk's settings and Warden's audit
dir and admin URL. The bearer token is read from the file `token_file`, never printed.

Per window: utime+stime (clock ticks, /proc/<pid>/stat fields 14 and 15, all threads) of the
proxy and of the upstream are read right before wrk starts and right after it exits; wrk's own
CPU is its rusage (os.wait4). CPU per call = delta ticks / CLK_TCK / completed requests.
Exit status 1 if any response was not a 2xx JSON-RPC result, any socket error, or the audit
trail does not hold one record per Warden request.
"""

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    # rest[0] is field 3 (state): field 14 (utime) is rest[11], field 15 (stime) rest[12].
    return int(rest[11]) + int(rest[12])


def children(pid):
    """Direct children of pid (nginx's workers under its master)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:
            kids.append(int(d))
    return kids


def group_ticks(pids):
    return sum(ticks(p) for p in pids)


def proxy_pids(t):
    if not t.get("proxy_pid"):
        return []
    p = t["proxy_pid"]
    return [p] + (children(p) if t.get("proxy_children") else [])


class AuditCounter:
    """Counts lines in the audit dir's files incrementally (only bytes not yet read)."""

    def __init__(self, d):
        self.dir = d
        self.seen = {}  # file -> (offset, lines)

    def lines(self):
        total = 0
        for name in sorted(os.listdir(self.dir)):
            if not (name.startswith("audit-") and name.endswith(".jsonl")):
                continue
            path = os.path.join(self.dir, name)
            off, n = self.seen.get(path, (0, 0))
            with open(path, "rb") as f:
                f.seek(off)
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    n += chunk.count(b"\n")
                    off += len(chunk)
            self.seen[path] = (off, n)
            total += n
        return total

    def settled(self, timeout=10.0):
        """The line count once the writer has flushed: unchanged over 0.3 s."""
        last = self.lines()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.lines()
            if now == last:
                return now
            last = now
        return last


def run_window(plan, t, duration, token):
    if "token_file" in t:  # the baseline Warden's own authorization server issued its token
        with open(t["token_file"]) as f:
            token = f.read().strip()
    env = dict(os.environ, WRK_BODY=t["body"], WRK_TOKEN=token, WRK_SESSION=t["session"],
               WRK_PROTOCOL=plan["protocol"])
    cmd = ["taskset", "-c", str(plan["load_cpu"]), "wrk", f"-t{plan['threads']}",
           f"-c{plan['connections']}", f"-d{duration}s", "--timeout", "5s", "--latency", "-s", plan["lua"], t["url"]]
    pp, up = proxy_pids(t), [t["upstream_pid"]]
    p0, u0, w0 = group_ticks(pp), group_ticks(up), time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - w0
    p1, u1 = group_ticks(pp), group_ticks(up)
    if status != 0:
        sys.exit(f"wrk failed for {t['name']} (status {status}):\n{out}")
    line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        sys.exit(f"wrk printed no WRKJSON line for {t['name']}:\n{out}")
    w = json.loads(line[len("WRKJSON "):])
    bad = [l[len("WRKBAD "):] for l in out.splitlines() if l.startswith("WRKBAD ")]
    n = w["requests"]
    sock = w["connect"] + w["read"] + w["write"] + w["timeout"]
    per_call = lambda d: (d / CLK_TCK / n * 1e6) if n else float("nan")  # noqa: E731
    return {
        "target": t["name"],
        "requests": n,
        "rps": n / (w["duration_us"] / 1e6),
        "p50_ms": w["p50_us"] / 1e3,
        "p90_ms": w["p90_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "max_ms": w["max_us"] / 1e3,
        "proxy_us": per_call(p1 - p0) if pp else None,
        "upstream_us": per_call(u1 - u0),
        "proxy_cpu_s": (p1 - p0) / CLK_TCK if pp else None,
        "upstream_cpu_s": (u1 - u0) / CLK_TCK,
        "wrk_cpu_s": ru.ru_utime + ru.ru_stime,
        "wall_s": wall,
        "wrk_cpu_pct": (ru.ru_utime + ru.ru_stime) / wall * 100,
        "server_core_pct": ((p1 - p0) + (u1 - u0)) / CLK_TCK / wall * 100,
        "non2xx": w["non2xx"],
        "rpc_errors": w["rpc_errors"],
        "socket_errors": sock,
        "bad_samples": bad[:2],
    }


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


COLS = [("req/s", "rps", ".0f"), ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
        ("proxy µs/call", "proxy_us", ".1f"), ("upstream µs/call", "upstream_us", ".1f"),
        ("core0 %", "server_core_pct", ".0f"), ("wrk CPU %", "wrk_cpu_pct", ".0f"),
        ("requests", "requests", "d"), ("bad", "bad", "d")]


def table(rows, first):
    head = f"| {first} | target | " + " | ".join(c[0] for c in COLS) + " |"
    print(head)
    print("|---|---|" + "---:|" * len(COLS))
    for label, r in rows:
        print(f"| {label} | {r['target']} | " + " | ".join(fmt(r.get(k), s) for _, k, s in COLS) + " |")


def median_row(rs):
    m = {"target": rs[0]["target"]}
    for _, k, _ in COLS:
        vals = [r[k] for r in rs if r.get(k) is not None]
        m[k] = statistics.median(vals) if vals else None
    m["requests"] = sum(r["requests"] for r in rs)
    m["bad"] = sum(r["bad"] for r in rs)
    return m


def metric_sum(text, name):
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else 0.0


def fetch_metrics(admin):
    return urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()


def main():
    plan = json.load(open(sys.argv[1]))
    with open(plan["token_file"]) as f:
        token = f.read().strip()
    targets = plan["targets"]
    warden = next(t for t in targets if t["name"] == "warden")
    audit = AuditCounter(warden["audit_dir"])
    failures = []

    def served():
        return metric_sum(fetch_metrics(warden["admin"]), "warden_http_requests_total")

    def window(t, duration, label):
        if t is warden:
            before, served0 = audit.settled(), served()
        r = run_window(plan, t, duration, token)
        if t is warden:
            r["audit_records"] = audit.settled() - before
            r["warden_served"] = served() - served0
        r["bad"] = r["non2xx"] + r["rpc_errors"] + r["socket_errors"]
        if r["bad"]:
            failures.append(f"{label} {t['name']}: {r['non2xx']} non-2xx, {r['rpc_errors']} JSON-RPC errors, "
                            f"{r['socket_errors']} socket errors; first: {r['bad_samples']}")
        print(f"[measure] {label:>8} {t['name']:<6} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:6.2f} ms  "
              f"proxy {fmt(r['proxy_us'], '6.1f')} µs  upstream {r['upstream_us']:6.1f} µs  "
              f"wrk {r['wrk_cpu_pct']:3.0f}%  bad {r['bad']}", file=sys.stderr, flush=True)
        return r

    for t in targets:
        window(t, plan["warmup"], "warm-up")
    rounds = []
    for i in range(1, plan["rounds"] + 1):
        rounds.append([window(t, plan["duration"], f"round {i}") for t in targets])

    names = [t["name"] for t in targets]
    by_target = {n: [rw[j] for rw in rounds] for j, n in enumerate(names)}
    med = {n: median_row(rs) for n, rs in by_target.items()}

    print(f"\n## Per round ({plan['duration']} s windows, wrk -t{plan['threads']} -c{plan['connections']} "
          f"on cpu {plan['load_cpu']}, servers on cpu {plan['server_cpu']}, mode {plan['mode']})\n")
    table([(str(i + 1), r) for i, rw in enumerate(rounds) for r in rw], "round")
    print(f"\n## Median of {len(rounds)} rounds (requests and bad: sums)\n")
    table([("median", med[n]) for n in names], "")

    w, g = med["warden"], med["nginx"]
    ratios = {
        "rps": w["rps"] / g["rps"],
        "p99": w["p99_ms"] / g["p99_ms"],
        "proxy_cpu_per_call": w["proxy_us"] / g["proxy_us"] if g["proxy_us"] else float("nan"),
    }
    # Each round's Warden and nginx windows are seconds apart, so per-round ratios share most of
    # the machine's drift; their median is printed beside the ratio of the medians.
    per_round = [(rw[names.index("warden")], rw[names.index("nginx")]) for rw in rounds]
    ratio_rounds = {
        "rps": [a["rps"] / b["rps"] for a, b in per_round],
        "p99": [a["p99_ms"] / b["p99_ms"] for a, b in per_round],
        "proxy_cpu_per_call": [a["proxy_us"] / b["proxy_us"] for a, b in per_round if b["proxy_us"]],
    }
    base = next((t for t in targets if t["name"] == "baseline"), None)
    if base is not None:
        # The same configuration on an earlier binary: this run's before/after of a change.
        per = [(rw[names.index("warden")], rw[names.index("baseline")]) for rw in rounds]
        print("\n## Warden / baseline (an earlier binary, same configuration; < 1 is cheaper)\n")
        print("| ratio | of the medians | per round |")
        print("|---|---:|---|")
        for key, label in (("rps", "req/s"), ("p99_ms", "p99"), ("proxy_us", "proxy CPU per call")):
            b = med["baseline"][key]
            print(f"| {label} | {w[key] / b:.3f} | " + ", ".join(f"{a[key] / c[key]:.3f}" for a, c in per) + " |")
        ratios["vs_baseline_proxy_cpu_per_call"] = w["proxy_us"] / med["baseline"]["proxy_us"]
        ratios["vs_baseline_rps"] = w["rps"] / med["baseline"]["rps"]
    print("\n## Warden / nginx\n")
    print("| ratio | of the medians | median of per-round | per round |")
    print("|---|---:|---:|---|")
    for key, label in (("rps", "req/s"), ("p99", "p99"), ("proxy_cpu_per_call", "proxy CPU per call")):
        rs = ratio_rounds[key]
        print(f"| {label} | {ratios[key]:.3f} | {statistics.median(rs):.3f} | " + ", ".join(f"{x:.3f}" for x in rs) + " |")

    # Audit: one record per Warden request. wrk stops with up to -c requests in flight; Warden
    # finishes (and audits) them but wrk does not count them, so each window may hold up to
    # `connections` records more than wrk's count, never fewer.
    # Warden's own count of answered requests (warden_http_requests_total) is the exact check.
    wins = [r for rw in rounds for r in rw if r["target"] == "warden"]
    recs = sum(r["audit_records"] for r in wins)
    reqs = sum(r["requests"] for r in wins)
    served_n = sum(r["warden_served"] for r in wins)
    excess = [r["audit_records"] - r["requests"] for r in wins]
    audit_ratio = recs / reqs if reqs else float("nan")
    served_ratio = recs / served_n if served_n else float("nan")
    print(f"\n## Audit\n\naudit records ÷ Warden requests (all rounds): {served_ratio:.4f} "
          f"({recs} records, {served_n:.0f} requests answered by Warden, warden_http_requests_total)")
    print(f"audit records ÷ requests wrk completed: {audit_ratio:.4f} ({reqs} completed; records beyond "
          f"wrk's count per window: {excess}, at most {plan['connections']} allowed: requests in flight "
          f"when wrk stopped are answered and audited but not counted by wrk)")
    if any(e < 0 or e > plan["connections"] for e in excess):
        failures.append(f"audit records beyond wrk's count per window {excess}: outside [0, {plan['connections']}]")
    if recs != served_n:
        failures.append(f"audit records ({recs}) ≠ requests Warden answered ({served_n:.0f})")

    # Warden's own counters: every measured call took a delegation token, none was refused.
    metrics = fetch_metrics(warden["admin"])
    delegated = metric_sum(metrics, "warden_delegation_tokens_total")
    cached = 0.0
    for line in metrics.splitlines():
        if line.startswith("warden_delegation_tokens_total{") and 'source="cache"' in line:
            cached += float(line.rsplit(" ", 1)[1])
    mints = metric_sum(metrics, "warden_delegation_mints_total")
    refusals = metric_sum(metrics, "warden_refusals_total")
    audit_refusals = metric_sum(metrics, "warden_audit_refusals_total")
    print(f"\nWarden counters (whole run, incl. warm-up and the checks): delegation tokens {delegated:.0f} "
          f"({cached:.0f} from the shard cache), mints {mints:.0f}, refusals {refusals:.0f} "
          f"(the setup's 2 policy checks are refusals), audit refusals {audit_refusals:.0f}")
    if delegated < reqs:
        failures.append(f"fewer delegation tokens ({delegated:.0f}) than measured Warden requests ({reqs})")
    if audit_refusals:
        failures.append(f"{audit_refusals:.0f} calls refused for want of an audit slot")

    sat = [f"{r['target']} ({r['wrk_cpu_pct']:.0f}%)" for rw in rounds for r in rw if r["wrk_cpu_pct"] >= 90]
    if sat:
        print(f"\nnote: wrk used ≥ 90% of its core in: {', '.join(sat)}: the generator may limit those windows")

    summary = {"plan": {k: v for k, v in plan.items() if k not in ("targets", "token_file")},
               "env": plan.get("env", {}),
               "rounds": [[{k: v for k, v in r.items() if k != "bad_samples"} for r in rw] for rw in rounds],
               "median": med, "ratios_warden_over_nginx": ratios, "ratios_per_round": ratio_rounds,
               "audit": {"records": recs, "warden_answered": served_n, "ratio": served_ratio,
                         "wrk_completed": reqs, "ratio_to_wrk_completed": audit_ratio,
                         "excess_per_window": excess},
               "warden_counters": {"delegation_tokens": delegated, "delegation_from_cache": cached,
                                   "mints": mints, "refusals": refusals, "audit_refusals": audit_refusals},
               "failures": failures}
    with open(plan["summary"], "w") as f:
        json.dump(summary, f, indent=1)
    print("\n## Summary (TSV)\n")
    print("\t".join(["mode", "target", "rps", "p50_ms", "p99_ms", "proxy_us_per_call", "upstream_us_per_call",
                     "wrk_cpu_pct", "requests", "bad"]))
    for n in names:
        m = med[n]
        print("\t".join([plan["mode"], n, f"{m['rps']:.0f}", f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}",
                         fmt(m["proxy_us"], ".2f"), f"{m['upstream_us']:.2f}", f"{m['wrk_cpu_pct']:.0f}",
                         str(m["requests"]), str(m["bad"])]))
    print("\t".join([plan["mode"], "ratio_warden_nginx", f"{ratios['rps']:.3f}", "", f"{ratios['p99']:.3f}",
                     f"{ratios['proxy_cpu_per_call']:.3f}", "", "", "", ""]))
    rm = {k: statistics.median(v) if v else float("nan") for k, v in ratio_rounds.items()}
    print("\t".join([plan["mode"], "ratio_warden_nginx_median_of_rounds", f"{rm['rps']:.3f}", "", f"{rm['p99']:.3f}",
                     f"{rm['proxy_cpu_per_call']:.3f}", "", "", "", ""]))
    print("\t".join([plan["mode"], "audit_records_per_request", f"{served_ratio:.4f}", "", "", "", "", "", f"{served_n:.0f}", ""]))
    print("\t".join([plan["mode"], "audit_records_per_wrk_completed", f"{audit_ratio:.4f}", "", "", "", "", "", str(reqs), ""]))
    print(f"\nsummary written to {plan['summary']}")
    if failures:
        print("\nFAILED:\n- " + "\n- ".join(failures))
        sys.exit(1)
    print("\nall checks passed: every response a 2xx JSON-RPC result, no socket errors, one audit record per Warden request")


if __name__ == "__main__":
    main()
