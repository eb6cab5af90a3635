#!/usr/bin/env python3
"""The MCP conformance suite's `authorization` scenarios (@modelcontextprotocol/conformance,
pinned in package-lock.json) against Warden's authorization server, this script being the
browser: when the suite prints the authorization URL it signs in on Warden's login form and
approves, then follows the redirect to the suite's callback.

    conformance-as.py ISSUER RESOURCE LABEL [CLIENT_ID PORT]

Without CLIENT_ID only the metadata scenario has checks. Every check must be SUCCESS (no
WARNING, no FAILURE, no SKIPPED unless no client id was given). Prints one line per check;
exit status 0 only if all passed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

HERE = os.path.dirname(os.path.abspath(__file__))
USER = os.environ.get("CONF_USERNAME", "john.mcclane@orchestrator.lab")
PASSWORD = os.environ.get("CONF_PASSWORD", "yippiekayay")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):  # noqa: ANN002, ANN003
        return None


def hidden(html: str, marker: str) -> dict[str, str]:
    form = next(f for f in re.findall(r"<form\b.*?</form>", html, re.S) if marker in f)
    return {m[0]: m[1].replace("&amp;", "&") for m in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)}


def browse(url: str) -> None:
    jar = CookieJar()
    ua = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def req(u: str, data: dict[str, str] | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            return ua.open(urllib.request.Request(u, data=body))
        except urllib.error.HTTPError as e:  # 3xx arrive here with NoRedirect
            return e

    base = url.split("/authorize")[0]
    r = req(url)
    html = r.read().decode()
    f = hidden(html, 'action="/login"')
    r = req(base + "/login", {**f, "username": USER, "password": PASSWORD})
    html = r.read().decode()
    f = hidden(html, 'action="/consent"')
    r = req(base + "/consent", {**f, "decision": "approve"})
    loc = r.headers["location"]
    print(f"[conformance-as] browser: consent approved, redirect to {loc.split('?')[0]}", file=sys.stderr)
    req(loc).read()


def main() -> int:
    issuer, resource, label = sys.argv[1:4]
    client_id, port = (sys.argv[4], sys.argv[5]) if len(sys.argv) == 6 else (None, "0")
    out = tempfile.mkdtemp(prefix="warden-conf-as.")
    node = os.path.join(HERE, "node_modules", ".bin", "node")
    cmd = [node, os.path.join(HERE, "node_modules", ".bin", "conformance"), "authorization",
           "--url", issuer, "--resource", resource, "--spec-version", "2026-07-28", "-o", out]
    if client_id:
        cmd += ["--client-id", client_id, "-p", port]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    browsed: list[threading.Thread] = []
    for line in p.stdout:  # type: ignore[union-attr]
        line = line.strip()
        if line.startswith("http") and "/authorize?" in line:
            t = threading.Thread(target=browse, args=(line,), daemon=True)
            t.start()
            browsed.append(t)
    p.wait(timeout=120)
    checks = []
    for f in sorted(glob.glob(os.path.join(out, "*", "checks.json"))):
        checks += json.load(open(f))
    bad = 0
    for c in checks:
        ok = c["status"] == "SUCCESS" or (c["status"] == "SKIPPED" and not client_id)
        bad += not ok
        print(f"{'PASS' if ok else 'FAIL'}  conformance-{label}: {c['id']} {c['status']} {c.get('errorMessage') or ''}".rstrip())
    if not checks:
        print(f"FAIL  conformance-{label}: no checks ran")
        bad = 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
