"""JWKS for the soak's own verifiers (upstream.py, sts.py): Ed25519 keys by kid, fetched from one
or more URLs, refetched at most every 0.5 s on an unknown kid. A JWKS that does not answer or
answers junk leaves the known keys as they were."""

import base64
import json
import threading
import time
import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Keys:
    """One issuer's JWKS by kid, from the first of `urls` that knows it (replicas' admin ports)."""

    def __init__(self, urls):
        self.urls, self.keys, self.lock, self.fetched = urls, {}, threading.Lock(), 0.0

    def get(self, kid):
        with self.lock:
            if kid not in self.keys and time.monotonic() - self.fetched > 0.5:
                self.fetched = time.monotonic()
                for u in self.urls:
                    try:
                        with urllib.request.urlopen(u, timeout=2) as r:
                            for k in json.load(r).get("keys", []):
                                if k.get("kty") == "OKP" and k.get("crv") == "Ed25519":
                                    self.keys[k["kid"]] = Ed25519PublicKey.from_public_bytes(b64d(k["x"]))
                    except Exception:  # the next replica's admin port
                        continue
                    if kid in self.keys:
                        break
            return self.keys.get(kid)
