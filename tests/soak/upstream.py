#!/usr/bin/env python3
"""The soak's MCP upstream (2025-06-18, Streamable HTTP, JSON answers) and independent observer.

Every POST is verified before anything else: its bearer token must be a delegation token of
a trusted token service — the gateway's embedded STS (--sts-issuer, its JWKS fetched from the
replicas' admin ports) or the external one (--trust ISSUER=JWKS_URL: sts.py, which mints for
the replica in `delegation.mode: external`). The unverified `iss` picks the service, then:
signature against that service's JWKS only (refetched on an unknown kid), `aud` = this
upstream, unexpired now (`exp`), and, for a `tools/call`, `sub` = the user named in the call's
arguments, `act.sub` = the gateway and the tool's scope; any other request carries the
gateway's own service token (`sub` = the gateway). Each request is appended to --log as one
JSON line, flushed before it is answered (or dropped): {"t", "method", "tool", "call_id",
"user", "verdict": "ok" | why not, "iss" (of a verified token), "mode", "executed"}. So the
log lists what reached the upstream, including what a fault then dropped (`executed`: the call
ran, in a known session — a drop counts as run); nothing in it is Warden's own account. A call
whose token does not verify is answered 401 and not executed; one in an unknown session 404.

POST /_mode {"mode": "normal"|"slow"|"garbage"|"drop"} (unauthenticated, the soak's control):
slow answers tool calls after --slow seconds, garbage answers 200 with a non-JSON body, drop
reads the request, logs it and closes the connection without answering. Sessions live in
memory: a restarted upstream answers 404 to the old ones (the gateway must reopen).
Tools: `echo` (returns its arguments) and `secret`. Standard library plus `cryptography`.
"""

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature

from jwks import Keys, b64d

SCOPES = {"echo": "up:echo", "secret": "up:secret"}


def verify(token, keys, a, method, args):
    """'ok', or why the token is not a valid delegation token for this request."""
    try:
        h, p, s = token.split(".")
        head, claims = json.loads(b64d(h)), json.loads(b64d(p))
    except Exception:
        return "not a JWS"
    if head.get("alg") != "EdDSA":
        return f"alg {head.get('alg')}"
    iss = claims.get("iss") if isinstance(claims, dict) else None
    ring = keys.get(iss) if isinstance(iss, str) else None
    if ring is None:
        return f"iss {iss}"
    k = ring.get(head.get("kid"))
    if k is None:
        return f"unknown kid {head.get('kid')}"
    try:
        k.verify(b64d(s), f"{h}.{p}".encode())
    except InvalidSignature:
        return "bad signature"
    now = time.time()
    if claims.get("aud") != a.aud:
        return f"aud {claims.get('aud')}"
    if not isinstance(claims.get("exp"), int) or now >= claims["exp"]:
        return f"expired (exp {claims.get('exp')}, now {now:.3f})"
    if method == "tools/call":
        tool = args.get("tool")
        if claims.get("sub") != args.get("user"):
            return f"sub {claims.get('sub')} is not the caller {args.get('user')}"
        if (claims.get("act") or {}).get("sub") != a.gateway:
            return f"act {claims.get('act')}"
        if SCOPES.get(tool) not in (claims.get("scope") or "").split():
            return f"scope {claims.get('scope')} lacks {SCOPES.get(tool)}"
    elif claims.get("sub") != a.gateway:
        return f"service token sub {claims.get('sub')}"
    return "ok"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--jwks", required=True, help="STS JWKS URLs, comma-separated (tried in order)")
    ap.add_argument("--sts-issuer", required=True)
    ap.add_argument("--aud", required=True)
    ap.add_argument("--gateway", required=True, help="the gateway's delegation client id")
    ap.add_argument("--trust", action="append", default=[], help="ISSUER=JWKS_URL: another token service's tokens")
    ap.add_argument("--slow", type=float, default=1.5)
    a = ap.parse_args()
    keys = {a.sts_issuer: Keys(a.jwks.split(","))}
    for t in a.trust:
        iss, _, url = t.partition("=")
        keys[iss] = Keys([url])
    sessions, mode, lock = set(), {"mode": "normal"}, threading.Lock()
    log = open(a.log, "a", buffering=1)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, body, headers=()):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self):
            sessions.discard(self.headers.get("mcp-session-id"))
            self.send(200, b"{}")

        def do_GET(self):
            self.send(405, b"{}")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/_mode":
                mode["mode"] = json.loads(body)["mode"]
                return self.send(200, json.dumps(mode).encode())
            try:
                msg = json.loads(body)
            except ValueError:
                return self.send(400, b'{"error":"not json"}')
            method = msg.get("method", "")
            params = msg.get("params") or {}
            args = dict(params.get("arguments") or {}) if method == "tools/call" else {}
            if method == "tools/call":
                args["tool"] = params.get("name")
            auth = self.headers.get("authorization") or ""
            verdict = verify(auth[7:], keys, a, method, args) if auth.startswith("Bearer ") else "no bearer token"
            m = mode["mode"] if method == "tools/call" else "normal"
            sid = self.headers.get("mcp-session-id")
            with lock:
                known = method == "initialize" or sid in sessions
            iss = None
            if verdict == "ok":  # verified: which token service issued it
                iss = json.loads(b64d(auth[7:].split(".")[1])).get("iss")
            log.write(json.dumps({"t": time.time(), "method": method, "tool": args.get("tool"), "call_id": args.get("call_id"),
                                  "user": args.get("user"), "verdict": verdict, "iss": iss, "mode": m,
                                  "executed": verdict == "ok" and known}) + "\n")
            if verdict != "ok":
                return self.send(401, b'{"error":"invalid_token"}', [("www-authenticate", "Bearer error=\"invalid_token\"")])
            if method == "initialize":
                sid = uuid.uuid4().hex
                with lock:
                    sessions.add(sid)
                res = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "soak-upstream", "version": "1"}}
                return self.send(200, json.dumps({"jsonrpc": "2.0", "id": msg.get("id"), "result": res}).encode(), [("mcp-session-id", sid)])
            if not known:
                return self.send(404, b'{"error":"unknown session"}')
            if "id" not in msg:
                return self.send(202, b"")
            if m == "drop":
                self.close_connection = True
                return
            if m == "slow":
                time.sleep(a.slow)
            if m == "garbage":
                return self.send(200, b"<<garbage>> not json")
            if method == "tools/list":
                tools = [{"name": n, "description": n, "inputSchema": {"type": "object"}} for n in SCOPES]
                res = {"tools": tools}
            elif method == "tools/call":
                res = {"content": [{"type": "text", "text": json.dumps(params.get("arguments"))}], "isError": False}
            else:
                res = {}
            self.send(200, json.dumps({"jsonrpc": "2.0", "id": msg.get("id"), "result": res}).encode())

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    srv.daemon_threads = True
    print(json.dumps({"url": f"http://127.0.0.1:{a.port}/mcp"}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
