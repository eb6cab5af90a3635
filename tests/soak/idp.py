#!/usr/bin/env python3
"""The soak's token issuer: OAuth metadata and a JWKS whose behaviour the fault schedule
changes at run time, and the load's access tokens (Ed25519, typ at+jwt), written to a file.

  idp.py --port P --aud URL --tokens FILE --users alice:mcp:tools,bob:mcp:tools admin ...

Two keys: `k1` is published from the start, `k2` only after POST /_fault {"jwks":"rotate"}.
The tokens file holds one JSON object: {"k1": {user: token}, "k2": {user: token},
"bad": [tokens that must never verify: wrong key, expired, wrong audience, alg none]}.
POST /_fault {"jwks": "normal"|"rotate"|"unavailable"|"garbage"} changes what /jwks serves
(rotate publishes k2 beside k1 and stays; unavailable = 503; garbage = 200 with junk).
Prints one JSON line {"issuer": ...} on stdout when listening. Standard library plus
`cryptography`; binds 127.0.0.1 only.
"""

import argparse
import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Key:
    def __init__(self, kid: str):
        self.kid = kid
        self.sk = Ed25519PrivateKey.generate()
        raw = self.sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": b64u(raw)}

    def sign(self, claims: dict, alg: str = "EdDSA") -> str:
        head = b64u(json.dumps({"alg": alg, "typ": "at+jwt", "kid": self.kid}).encode())
        body = b64u(json.dumps(claims).encode())
        sig = self.sk.sign(f"{head}.{body}".encode())
        return f"{head}.{body}.{b64u(sig)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aud", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--users", required=True, help="user:scope scope,user:scope ... (comma-separated)")
    ap.add_argument("--lifetime", type=int, default=7200)
    a = ap.parse_args()
    issuer = f"http://127.0.0.1:{a.port}"
    k1, k2, stranger = Key("k1"), Key("k2"), Key("k1")  # the stranger reuses kid k1: a forged signature
    state = {"jwks": "normal", "published": [k1]}
    lock = threading.Lock()
    now = int(time.time())

    def claims(user: str, scope: str, client: str, **over) -> dict:
        c = {"iss": issuer, "sub": user, "aud": a.aud, "scope": scope, "client_id": client,
             "iat": now, "nbf": now, "exp": now + a.lifetime, "jti": b64u(f"{user}-{client}-{time.time_ns()}".encode())}
        c.update(over)
        return c

    tokens = {"k1": {}, "k2": {}, "bad": []}
    for i, spec in enumerate(a.users.split(",")):
        user, scope = spec.split(":", 1)
        client = f"soak-client-{i % 2}"
        tokens["k1"][user] = k1.sign(claims(user, scope, client))
        tokens["k2"][user] = k2.sign(claims(user, scope, client))
    first = a.users.split(",")[0].split(":", 1)
    tokens["bad"] = [
        stranger.sign(claims(first[0], first[1], "soak-client-0")),  # forged (unknown key, known kid)
        k1.sign(claims(first[0], first[1], "soak-client-0", exp=now - 3600, iat=now - 7200, nbf=now - 7200)),  # expired
        k1.sign(claims(first[0], first[1], "soak-client-0", aud="https://elsewhere.example/mcp")),  # wrong audience
        b64u(b'{"alg":"none","typ":"at+jwt"}') + "." + b64u(json.dumps(claims(first[0], first[1], "x")).encode()) + ".",
        "not-a-jwt",
    ]
    with open(a.tokens, "w") as f:
        json.dump(tokens, f)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/.well-known/"):
                meta = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks", "token_endpoint": f"{issuer}/token"}
                return self.send(200, json.dumps(meta).encode())
            if self.path == "/jwks":
                with lock:
                    mode, keys = state["jwks"], list(state["published"])
                if mode == "unavailable":
                    return self.send(503, b'{"error":"unavailable"}')
                if mode == "garbage":
                    return self.send(200, b'{"keys": [{"kty": 17, "x": null}], <<garbage')
                return self.send(200, json.dumps({"keys": [k.jwk for k in keys]}).encode())
            self.send(404, b"{}")

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/_fault":
                with lock:
                    mode = body.get("jwks", "normal")
                    if mode == "rotate":
                        state["published"] = [k2, k1]
                        mode = "normal"
                    state["jwks"] = mode
                return self.send(200, json.dumps({"jwks": state["jwks"], "kids": [k.kid for k in state["published"]]}).encode())
            self.send(404, b"{}")

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    srv.daemon_threads = True
    print(json.dumps({"issuer": issuer}), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
