#!/usr/bin/env python3
"""The seed's Kong declarative file (tests/unit/data/seed-kong-declarative.yml,
a copy of ../shared/fixtures/seed/kong-declarative.yml) end to end: the file
unchanged, with consumers and jwt_secrets appended, its hosts user-service
and order-service pointed at local upstreams through a hosts file, node
settings from SLUICE_* variables. /api/v1/users needs a token and is rate
limited; /api/v1/orders receives X-Consumer-ID equal to the consumer's id;
a client's own X-Consumer-ID never reaches an upstream."""

import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(__file__), "..", "..")
SEED = os.path.join(SRCDIR, "tests", "unit", "data", "seed-kong-declarative.yml")
CONSUMER_ID = "9b2e6f0a-3c1d-4e5f-8a7b-0c1d2e3f4a5b"
CONSUMERS = """
consumers:
  - id: %s
    username: web-app
    jwt_secrets:
      - key: web-app-issuer
        secret: seed-secret
""" % CONSUMER_ID


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token():
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + \
        b64(json.dumps({"iss": "web-app-issuer", "sub": "u1"}).encode())
    return signing + "." + b64(hmac.new(b"seed-secret", signing.encode(),
                                        hashlib.sha256).digest())


def body(t):
    with open(SEED) as f:
        seed = f.read()
    users = Upstream(host="127.0.0.21", port=8080, name="user-service").start()
    orders = Upstream(host="127.0.0.22", port=8080, name="order-service").start()
    d = tempfile.mkdtemp(prefix="sluice-seed-")
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.21 user-service\n127.0.0.22 order-service\n")
    port = h.free_port()
    env = {"SLUICE_PROXY_LISTEN": "127.0.0.1:%d" % port, "SLUICE_STATUS_LISTEN": "off",
           "SLUICE_WORKER_PROCESSES": "2", "SLUICE_DNS_HOSTSFILE": hosts}
    gw = h.Gateway(seed + CONSUMERS, env=env, port=port)
    gw.start()
    auth = {"Authorization": "Bearer " + token()}

    r = h.get(port, "/api/v1/users/1")
    t.ok(r.status == 401 and r.json().get("message") == "Unauthorized" and
         not users.requests(), "/api/v1/users without a token: 401, nothing upstream")
    r = h.get(port, "/api/v1/users/1", headers=dict(auth, **{"X-Consumer-ID": "forged"}))
    rec = users.requests()[-1] if users.requests() else None
    t.ok(r.status == 200 and rec and rec.path == "/1", "/api/v1/users with a token: proxied",
         repr(rec))
    t.eq(rec and rec.headers_all("X-Consumer-ID"), [CONSUMER_ID],
         "users: X-Consumer-ID is the consumer's, the forged one is gone")
    t.ok(r.header("X-RateLimit-Limit-Minute") == "100" and
         r.header("X-RateLimit-Remaining-Minute") is not None,
         "users: rate-limited at 100 a minute (Kong's headers)", repr(r.headers))

    r = h.get(port, "/api/v1/orders")
    t.ok(r.status == 401 and not orders.requests(), "/api/v1/orders without a token: 401")
    r = h.get(port, "/api/v1/orders", headers=dict(auth, **{"X-Consumer-ID": "forged"}))
    rec = orders.requests()[-1] if orders.requests() else None
    t.ok(r.status == 200 and rec, "/api/v1/orders with a token: proxied", repr(rec))
    t.eq(rec and rec.headers_all("X-Consumer-ID"), [CONSUMER_ID],
         "orders: X-Consumer-ID equals the consumer's id (jwt, and request-transformer's "
         "add keeps it), the client's copy never passed on")
    t.eq(rec and rec.header("X-Consumer-Username"), "web-app", "orders: X-Consumer-Username")
    gw.stop()
    gw.check_clean(t)
    users.stop()
    orders.stop()


if __name__ == "__main__":
    h.main(body, timeout=60)
