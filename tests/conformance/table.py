#!/usr/bin/env python3
"""Compare conformance runs direct vs through Warden (written by through-warden.sh).

For each --run LABEL (``<suite version>@<revision>``) it reads OUT/LABEL.direct{,.log} and
OUT/LABEL.warden{,.log}: the suite's per-scenario ``checks.json`` and its summary. A scenario
passes when none of its checks is a FAILURE (warnings do not fail it). Verdicts:

  REGRESSION   passes directly, fails through Warden, not listed as a known gap
  STALE-GAP    listed in warden-known-gaps-<suite>-<revision>.txt but passes through Warden
               (or no longer passes directly): take it off the list
  FIXTURE-FAIL a scenario the fixture must pass (all but extensions) fails directly

Any of them makes the exit status 1. Writes OUT/table.md and OUT/gaps.md (every scenario
failing through Warden with its failing checks), and with --docs splices the table into that
file between the conformance-table markers.
"""
import argparse
import glob
import json
import os
import re
import sys

BEGIN = "<!-- conformance-table:begin (written by tests/conformance/table.py) -->"
END = "<!-- conformance-table:end -->"
SUMMARY = re.compile(r"^[✓✗] ([^:\s]+): (\d+) passed, (\d+) failed")
NOT_SCORED = re.compile(r"^\s+[✓✗] (\S+) \(([^)]+)\)")
# 0.1.16 has no requirement sets; these are its "pending" suite.
PENDING_0_1 = {"json-schema-2020-12", "server-sse-polling"}


def read_run(base):
    """scenario -> {status, counts, failures}; and scenario -> set name from the log."""
    res, sets = {}, {}
    for path in glob.glob(os.path.join(base, "server-*", "checks.json")):
        m = re.match(r"server-(.+)-\d{4}-\d\d-\d\dT", os.path.basename(os.path.dirname(path)))
        if not m:
            continue
        try:
            checks = json.load(open(path))
        except (OSError, ValueError):
            checks = [{"status": "FAILURE", "id": "checks.json", "errorMessage": "unreadable"}]
        fails = [c for c in checks if c.get("status") == "FAILURE"]
        warns = [c for c in checks if c.get("status") == "WARNING"]
        ok = len([c for c in checks if c.get("status") == "SUCCESS"])
        res[m.group(1)] = {
            "passed_ids": {c.get("id") for c in checks if c.get("status") == "SUCCESS"},
            "skipped": [(c.get("id", "?"), "SKIPPED") for c in checks if c.get("status") == "SKIPPED"],
            "status": "FAIL" if fails else "PASS",
            "counts": f"{ok}/{len(fails)}/{len(warns)}",
            "failures": [(c.get("id", "?"), (c.get("errorMessage") or "").strip()) for c in fails],
        }
    log = base + ".log"
    in_not_scored = False
    for line in open(log, encoding="utf-8", errors="replace") if os.path.exists(log) else []:
        if line.startswith("Not scored for"):
            in_not_scored = True
            continue
        m = NOT_SCORED.match(line)
        if in_not_scored and m:
            sets[m.group(1)] = m.group(2)
            continue
        m = SUMMARY.match(line)
        if m and m.group(1) not in res:
            # A summary line without checks.json: trust its sign only for a failure.
            res[m.group(1)] = {"status": "FAIL", "counts": "no checks.json", "failures": [("no checks.json", line.strip())]}
    return res, sets


def read_gaps(path):
    gaps = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition("\t") if "\t" in line else line.partition(" ")
            gaps[name.strip()] = reason.strip()
    return gaps


def one(md, out_dir, gaps_dir, label):
    suite, _, rest = label.partition("@")
    revision, _, variant = rest.partition(":")
    direct, sets = read_run(os.path.join(out_dir, label + ".direct"))
    warden, _ = read_run(os.path.join(out_dir, label + ".warden"))
    if not direct:
        print(f"{label}: no direct results (see {out_dir}/{label}.direct.log)", file=sys.stderr)
        return None
    gap_file = os.path.join(gaps_dir, f"warden-known-gaps-{suite}-{revision}{'-' + variant if variant else ''}.txt")
    gaps = read_gaps(gap_file)
    if suite.startswith("0.1."):
        sets = {s: "pending" for s in PENDING_0_1}
    problems, gap_rows = [], []
    names = sorted(set(direct) | set(warden), key=lambda s: (sets.get(s, "") != "", sets.get(s, ""), s))
    npass = {"direct": 0, "warden": 0}
    nrequired = 0
    bridge = {"to-modern": ", through Warden to the 2026-07-28 (modern) upstream",
              "to-legacy": ", through Warden to the 2025-11-25 (legacy) upstream"}.get(variant, "")
    md.append(f"\n### `@modelcontextprotocol/conformance` {suite}, revision {revision}{bridge}\n")
    md.append("| scenario | set | direct | through Warden | known gap |")
    md.append("|---|---|---|---|---|")
    for s in names:
        d = direct.get(s, {"status": "FAIL", "counts": "not run", "failures": []})
        w = warden.get(s, {"status": "FAIL", "counts": "not run", "failures": [("not run", "")]})
        kind = sets.get(s, "required")
        extension = kind == "extension"
        npass["direct"] += d["status"] == "PASS"
        npass["warden"] += w["status"] == "PASS"
        nrequired += kind == "required"
        if not extension and d["status"] != "PASS":
            problems.append(f"FIXTURE-FAIL {label} {s}: fails directly ({d['counts']}): {d['failures'][:1]}")
        if s in gaps and (w["status"] == "PASS" or d["status"] != "PASS"):
            problems.append(f"STALE-GAP {label} {s}: listed in {os.path.basename(gap_file)} but "
                            f"direct={d['status']} warden={w['status']}; remove it from the list")
        if d["status"] == "PASS" and w["status"] != "PASS" and s not in gaps:
            problems.append(f"REGRESSION {label} {s}: passes directly, fails through Warden: {w['failures'][:2]}")
        # Checks that pass directly but are skipped through Warden hide a gap behind a PASS.
        skipped = [x for x in w.get("skipped", []) if x[0] in d.get("passed_ids", set())]
        if (w["status"] != "PASS" and d["status"] == "PASS") or skipped:
            gap_rows.append((s, w["failures"] + [(i, "skipped through Warden, passes directly") for i, _ in skipped]))
        md.append(f"| {s} | {kind} | {d['status']} ({d['counts']}) | {w['status']} ({w['counts']}) | "
                  f"{gaps.get(s, '').replace('|', '/')} |")
    for s in gaps:
        if s not in names:
            problems.append(f"STALE-GAP {label} {s}: listed but the suite has no such scenario")
    md.append(f"\n{len(names)} scenarios ({nrequired} required); pass directly: {npass['direct']}, "
              f"through Warden: {npass['warden']}. Checks are passed/failed/warnings.")
    return problems, gap_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--gaps-dir", required=True)
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--docs")
    a = ap.parse_args()
    md, gaps_md, problems, broken = [], ["# Checks failing (or skipped) through Warden that pass directly\n"], [], False
    for label in a.run:
        r = one(md, a.out, a.gaps_dir, label)
        if r is None:
            broken = True
            continue
        problems += r[0]
        for s, fails in r[1]:
            gaps_md.append(f"## {label} {s}")
            gaps_md += [f"- `{cid}`: {msg[:600]}" for cid, msg in fails] or ["- (no failing check recorded)"]
    table = "\n".join(md).strip() + "\n"
    open(os.path.join(a.out, "table.md"), "w").write(table)
    open(os.path.join(a.out, "gaps.md"), "w").write("\n".join(gaps_md) + "\n")
    print(table)
    if a.docs:
        doc = open(a.docs, encoding="utf-8").read()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            doc = head + BEGIN + "\n" + table + END + rest.split(END, 1)[1]
        else:
            doc = doc.rstrip("\n") + "\n\n" + BEGIN + "\n" + table + END + "\n"
        open(a.docs, "w", encoding="utf-8").write(doc)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"conformance verdict: {len(problems)} problem(s); details of Warden's failures in {a.out}/gaps.md",
          file=sys.stderr)
    if broken:
        sys.exit(2)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
