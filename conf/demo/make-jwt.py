#!/usr/bin/env python3
"""Prints an HS256 JWT for the demo consumer of conf/demo/gateway.yaml.

    python3 conf/demo/make-jwt.py [hours-valid]   (default 24)

The key and secret are the demo file's; the token carries iss (the
jwt_secrets key the gateway looks up) and exp (the demo checks it)."""

import base64
import hashlib
import hmac
import json
import sys
import time

KEY = "demo-issuer"
SECRET = b"sluice-demo-secret-change-me"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(hours=24.0, key=KEY, secret=SECRET, sub="demo-user"):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": key, "sub": sub, "exp": int(time.time() + hours * 3600)}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing = header + "." + payload
    signature = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(signature)


if __name__ == "__main__":
    print(make_token(float(sys.argv[1]) if len(sys.argv) > 1 else 24.0))
