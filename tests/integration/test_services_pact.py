#!/usr/bin/env python3
"""A consumer-driven contract from order-service to user-service (Pact):
tests/services/js/pact-consumer.js runs the real order-service binary
against the Pact mock server (a user that exists: 201; one that does not:
422) and writes the pact; pact-provider.js then verifies that pact against
the real user-service running on a real PostgreSQL database."""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
import backends as b  # noqa: E402


def body(t):
    pg = b.Postgres().start(["users", "orders"])
    redis = b.Redis().start()
    pacts = tempfile.mkdtemp(prefix="sluice-pacts-")
    h.register_cleanup(lambda: shutil.rmtree(pacts, ignore_errors=True))

    consumer_ok = b.run_node_tap(t, "pact-consumer.js", {
        "ORDER_SERVICE_BIN": b.service_bin("order-service"),
        "ORDERS_DB_URL": pg.url("orders"),
        "REDIS_URL": redis.url,
        "PACT_DIR": pacts,
    }, "Pact consumer (order-service)")
    pact_file = os.path.join(pacts, "order-service-user-service.json")
    t.ok(os.path.exists(pact_file), "the pact file was written", os.listdir(pacts))
    if not consumer_ok:
        return

    users = b.Service("user-service", {"DB_URL": pg.url("users")}).start()
    b.run_node_tap(t, "pact-provider.js", {
        "USER_SERVICE_URL": users.url,
        "USERS_DB_URL": pg.url("users"),
        "PACT_DIR": pacts,
    }, "Pact provider (user-service)")
    # the verifier can fail: a provider that knows no user breaks the pact
    import http.server
    import threading

    class NoUsers(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoUsers)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    h.register_cleanup(srv.shutdown)
    fake = h.TAP()  # its points are expected to fail: count them, do not report them
    fake._emit = lambda line: None
    b.run_node_tap(fake, "pact-provider.js", {
        "USER_SERVICE_URL": "http://127.0.0.1:%d" % srv.server_address[1],
        "USERS_DB_URL": pg.url("users"),
        "PACT_DIR": pacts,
    }, "control")
    t.ok(fake.failed > 0, "control: the verifier fails against a provider without the user",
         "failed points: %d" % fake.failed)
    t.eq(users.stop(), 0, "user-service drains and exits 0")
    rep = users.sanitizer_report()
    t.ok(rep is None, "user-service: no sanitizer report", rep)


if __name__ == "__main__":
    h.main(body, timeout=400)
