#!/usr/bin/env python3
"""The soak's external token service: an RFC 8693 token-exchange endpoint (and the gateway's
client_credentials grant) for the replica configured with `delegation.mode: external`, with a
fault control the schedule drives (tests/soak/run.sh, fault `sts_failing`).

  sts.py --port P --issuer URL --client-id ID --secret-file F --idp-jwks URL --idp-issuer URL
         --aud-prefix https://upstream.soak.test/ --ttl 4 --log FILE

POST /token authenticates the gateway with client_secret_basic (RFC 6749 §2.3.1, the secret
read from --secret-file, compared in constant time), then:
  token-exchange      verifies the subject token itself (EdDSA against the users' issuer's JWKS,
                      fetched from --idp-jwks and refetched on an unknown kid; `iss`, unexpired)
                      and mints a delegation token: sub = the user, act.sub = the client,
                      aud = the requested audience, scope = the requested scope, exp = iat + --ttl
  client_credentials  the gateway's own service token: sub = the client, aud = `resource`, 60 s
Tokens are Ed25519 JWS (typ at+jwt) under this service's own key, published at GET /jwks
(which the faults never touch: the upstream keeps verifying tokens issued before them).
POST /_fault {"token": "normal"|"503"|"garbage"|"hang"}: /token answers 503 with an OAuth
error, 200 with a non-JSON body, or reads the request and never answers (the connection is
held until the mode changes back, then closed without a response).
Each /token request is one line in --log: {"t", "grant", "mode", "status"} (never a token).
Prints one JSON line {"issuer": ...} on stdout when listening. Standard library plus
`cryptography`; binds 127.0.0.1 only.
"""

import argparse
import base64
import hmac
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from jwks import Keys, b64d

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def subject_claims(token, keys, issuer):
    """The subject token's claims, or a string saying why it is not acceptable."""
    try:
        h, p, s = token.split(".")
        head, claims = json.loads(b64d(h)), json.loads(b64d(p))
    except Exception:
        return "not a JWS"
    if head.get("alg") != "EdDSA":
        return "alg"
    k = keys.get(head.get("kid"))
    if k is None:
        return "unknown kid"
    try:
        k.verify(b64d(s), f"{h}.{p}".encode())
    except InvalidSignature:
        return "bad signature"
    if claims.get("iss") != issuer:
        return "iss"
    if not isinstance(claims.get("exp"), int) or time.time() >= claims["exp"]:
        return "expired"
    if not isinstance(claims.get("sub"), str):
        return "no sub"
    return claims


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--idp-jwks", required=True)
    ap.add_argument("--idp-issuer", required=True)
    ap.add_argument("--aud-prefix", required=True, help="the only audiences tokens are issued for start with it")
    ap.add_argument("--ttl", type=int, default=4, help="lifetime of delegation tokens, s (the tools' ttl)")
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    secret = open(a.secret_file, "rb").read().strip()
    sk = Ed25519PrivateKey.generate()
    raw = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = "ext-" + b64u(raw)[:8]
    jwks = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": b64u(raw)}]}).encode()
    idp = Keys([a.idp_jwks])
    state = {"token": "normal"}
    changed = threading.Condition()
    log = open(a.log, "a", buffering=1)
    log_lock = threading.Lock()

    def sign(claims: dict) -> str:
        head = b64u(json.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).encode())
        body = b64u(json.dumps(claims).encode())
        return f"{head}.{body}.{b64u(sk.sign(f'{head}.{body}'.encode()))}"

    def client_ok(header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            return False
        user, pw = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
        return hmac.compare_digest(user.encode(), a.client_id.encode()) & hmac.compare_digest(pw.encode(), secret)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status: int, body: bytes, ctype: str = "application/json", extra=()) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def oauth_error(self, status: int, error: str, grant: str, mode: str) -> None:
            self.note(grant, mode, status)
            extra = [("www-authenticate", 'Basic realm="soak-sts"')] if status == 401 else ()
            self.send(status, json.dumps({"error": error}).encode(), extra=extra)

        def note(self, grant: str, mode: str, status) -> None:
            with log_lock:
                log.write(json.dumps({"t": time.time(), "grant": grant, "mode": mode, "status": status}) + "\n")

        def do_GET(self):
            if self.path == "/jwks":
                return self.send(200, jwks)
            self.send(404, b"{}")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/_fault":
                with changed:
                    state["token"] = json.loads(body).get("token", "normal")
                    changed.notify_all()
                return self.send(200, json.dumps(state).encode())
            if self.path != "/token":
                return self.send(404, b"{}")
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
            grant = form.get("grant_type", "")
            grant = "token-exchange" if grant == TOKEN_EXCHANGE else grant
            mode = state["token"]
            if mode == "hang":
                # Read, never answer: hold the connection until the fault is over, then close it.
                self.note(grant, mode, None)
                with changed:
                    changed.wait_for(lambda: state["token"] != "hang", timeout=300)
                self.close_connection = True
                return
            if mode == "503":
                return self.oauth_error(503, "temporarily_unavailable", grant, mode)
            if mode == "garbage":
                self.note(grant, mode, 200)
                return self.send(200, b"<<garbage>> {\"access_token\": ", "application/json")
            if not client_ok(self.headers.get("authorization") or ""):
                return self.oauth_error(401, "invalid_client", grant, mode)
            now = int(time.time())
            jti = b64u(f"{time.time_ns()}-{threading.get_ident()}".encode())
            if grant == "client_credentials":
                aud = form.get("resource", "")
                if not aud.startswith(a.aud_prefix):
                    return self.oauth_error(400, "invalid_target", grant, mode)
                claims = {"iss": a.issuer, "sub": a.client_id, "aud": aud, "client_id": a.client_id,
                          "iat": now, "nbf": now, "exp": now + 60, "jti": jti}
                life = 60
            elif grant == "token-exchange":
                aud = form.get("audience", "")
                if not aud.startswith(a.aud_prefix):
                    return self.oauth_error(400, "invalid_target", grant, mode)
                if form.get("subject_token_type") != ACCESS_TOKEN:
                    return self.oauth_error(400, "invalid_request", grant, mode)
                c = subject_claims(form.get("subject_token", ""), idp, a.idp_issuer)
                if isinstance(c, str):
                    return self.oauth_error(400, "invalid_grant", grant, mode)
                claims = {"iss": a.issuer, "sub": c["sub"], "aud": aud, "scope": form.get("scope", ""),
                          "act": {"sub": a.client_id}, "client_id": a.client_id,
                          "iat": now, "nbf": now, "exp": now + a.ttl, "jti": jti}
                life = a.ttl
            else:
                return self.oauth_error(400, "unsupported_grant_type", grant, mode)
            self.note(grant, mode, 200)
            out = {"access_token": sign(claims), "token_type": "Bearer", "issued_token_type": ACCESS_TOKEN,
                   "expires_in": life}
            if "scope" in claims:
                out["scope"] = claims["scope"]
            self.send(200, json.dumps(out).encode())

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    srv.daemon_threads = True
    print(json.dumps({"issuer": a.issuer, "jwks": f"http://127.0.0.1:{a.port}/jwks"}), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
