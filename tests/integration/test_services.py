#!/usr/bin/env python3
"""The reference services (services-demo/) against a real PostgreSQL
cluster and a real redis-server, both started here: each service's contract
(status codes, bodies, RFC 9457 problems, Location, Allow), the saga
(CONFIRMED, CANCELLED), W3C trace context from a request through HTTP calls
and events, idempotent handlers (a repeated event changes nothing), an
invalid event dead-lettered and acknowledged, XAUTOCLAIM of what a dead consumer left
pending, the transactional outbox (Redis down, order-service killed, nothing
lost), user-service down (503), readiness, JSON logs, SIGTERM drains;
order-service's user check through an HTTP proxy (http_proxy: the
absolute-form target; no_proxy; bad proxy URLs refused). Every recorded
response is then checked against its service's OpenAPI document."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
import backends as b  # noqa: E402

SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(__file__), "..", "..")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNKNOWN = "5d1d3bd0-0000-4000-8000-0000000000ff"
LIMIT = 5000


def is_problem(t, resp, status, slug, desc):
    st, hd, body = resp
    ok = (st == status and hd.get("content-type") == "application/problem+json" and
          isinstance(body, dict) and body.get("status") == status and
          body.get("type") == "https://sluice.dev/problems/" + slug and
          isinstance(body.get("title"), str) and isinstance(body.get("detail"), str))
    t.ok(ok, desc, repr(resp))
    return ok


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class FakeProxy:
    """An HTTP proxy that forwards nothing: it records each request's head
    and answers it itself, 200 with a user for GET .../users/<known id>,
    404 otherwise, one request per connection."""

    def __init__(self, known_user):
        self.known = known_user
        self.heads = []  # (request line, {header name lowercased: value})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        h.register_cleanup(self.sock.close)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    continue
                lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.heads.append((lines[0], headers))
                if lines[0].split(" ")[1:2] == [self.known["url"]]:
                    status, body = "200 OK", json.dumps(self.known["user"]).encode()
                else:
                    status, body = "404 Not Found", b'{"status":404}'
                try:
                    conn.sendall(("HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                                  "Content-Length: %d\r\nConnection: close\r\n\r\n"
                                  % (status, len(body))).encode() + body)
                except OSError:
                    pass


def error_fields(resp):
    body = resp[2]
    if not isinstance(body, dict):
        return set()
    return {e.get("field") for e in body.get("errors", [])}


def body(t):
    S = b.System(payment_limit=LIMIT, claim_idle_ms=1500).start()
    X = b.Exchanges()
    U, O, P, N = (S[n] for n in ("user-service", "order-service", "payment-service",
                                 "notification-service"))

    def users(method, path, body=None, headers=None):
        return X.call("user-service", U.url, method, path, body, headers)

    def orders(method, path, body=None, headers=None):
        return X.call("order-service", O.url, method, path, body, headers)

    def payments(method, path):
        return X.call("payment-service", P.url, method, path)

    def notes(method, path):
        return X.call("notification-service", N.url, method, path)

    # ---- user-service ----------------------------------------------------------
    st, hd, ada = users("POST", "/users", {"name": "Ada Lovelace", "email": "ada@example.com"})
    t.ok(st == 201 and isinstance(ada, dict) and ada.get("role") == "user" and
         b.svc_uuid_ok(ada.get("id")) and ada.get("email") == "ada@example.com",
         "POST /users: 201 with the user, role defaults to user", repr((st, ada)))
    t.eq(hd.get("location"), "/users/%s" % (ada or {}).get("id"), "POST /users: Location")
    st, _, grace = users("POST", "/users", {"name": "Grace", "email": "grace@example.com",
                                            "role": "admin"})
    t.ok(st == 201 and grace["role"] == "admin", "POST /users with role admin: 201")
    users("POST", "/users", {"name": "Edsger", "email": "edsger@example.com"})
    is_problem(t, users("POST", "/users", {"name": "Ada 2", "email": "ADA@example.com"}), 409,
               "conflict", "POST /users with a taken email (other case): 409")
    for bad, field, what in [
            ({"email": "x@example.com"}, "name", "name missing"),
            ({"name": "n" * 201, "email": "x@example.com"}, "name", "name over 200 characters"),
            ({"name": "", "email": "x@example.com"}, "name", "empty name"),
            ({"name": 7, "email": "x@example.com"}, "name", "name not a string"),
            ({"name": "X", "email": "not-an-email"}, "email", "email without @"),
            ({"name": "X", "email": "a@localhost"}, "email", "email without a dotted domain"),
            ({"name": "X", "email": "a b@example.com"}, "email", "email with a space"),
            ({"name": "X", "email": "x@example.com", "role": "root"}, "role", "unknown role"),
            ({"name": "X", "email": "x@example.com", "admin": True}, "admin", "unknown field")]:
        r = users("POST", "/users", bad)
        is_problem(t, r, 400, "validation-error", "POST /users, %s: 400" % what)
        t.ok(field in error_fields(r), "POST /users, %s: errors name the field" % what, repr(r[2]))
    is_problem(t, users("POST", "/users", b"{\"name\": "), 400, "validation-error",
               "POST /users with broken JSON: 400")
    is_problem(t, users("POST", "/users", b"[1,2]"), 400, "validation-error",
               "POST /users with an array: 400")
    is_problem(t, users("POST", "/users", b'{"name":"a","name":"b","email":"d@example.com"}'),
               400, "validation-error", "POST /users with a duplicate key: 400")
    is_problem(t, users("POST", "/users", b"{}", {"Content-Type": "text/plain"}), 415,
               "unsupported-media-type", "POST /users as text/plain: 415")
    st = b.http("POST", U.url + "/users", b"{" + b" " * 70000 + b"}")[0]
    t.eq(st, 413, "POST /users with a 70 kB body: 413")

    st, _, got = users("GET", "/users/" + ada["id"])
    t.ok(st == 200 and got == ada, "GET /users/{id}: 200, the same user", repr(got))
    # the seed's contract, unchanged (../shared/fixtures/seed/user-service-openapi.yaml)
    X.call("seed", U.url, "GET", "/users/" + ada["id"])
    st, _, got = users("GET", "/users/" + ada["id"].upper())
    t.ok(st == 200 and got.get("id") == ada["id"], "GET /users/{ID} in capitals: the same user")
    is_problem(t, users("GET", "/users/" + UNKNOWN), 404, "not-found", "GET unknown user: 404")
    is_problem(t, users("GET", "/users/42"), 400, "validation-error", "GET /users/42: 400")
    st, _, page = users("GET", "/users?limit=2")
    t.ok(st == 200 and len(page["items"]) == 2 and page["total"] == 3 and page["limit"] == 2 and
         page["offset"] == 0 and page["items"][0]["id"] == ada["id"],
         "GET /users?limit=2: first page, oldest first, total 3", repr(page))
    st, _, page2 = users("GET", "/users?limit=2&offset=2")
    t.ok(st == 200 and len(page2["items"]) == 1 and page2["offset"] == 2,
         "GET /users?limit=2&offset=2: the last user", repr(page2))
    st, _, dflt = users("GET", "/users")
    t.ok(st == 200 and dflt["limit"] == 20 and len(dflt["items"]) == 3, "GET /users: limit 20")
    for q in ("limit=0", "limit=101", "limit=abc", "offset=-1", "limit=1.5"):
        is_problem(t, users("GET", "/users?" + q), 400, "validation-error",
                   "GET /users?%s: 400" % q)

    st, _, upd = users("PUT", "/users/" + ada["id"], {"name": "Ada King", "email":
                                                      "ada@example.com", "role": "admin"})
    t.ok(st == 200 and upd["name"] == "Ada King" and upd["role"] == "admin" and
         upd["created_at"] == ada["created_at"] and upd["updated_at"] != ada["updated_at"],
         "PUT /users/{id}: 200, replaced, updated_at moves", repr(upd))
    r = users("PUT", "/users/" + ada["id"], {"name": "Ada", "email": "ada@example.com"})
    is_problem(t, r, 400, "validation-error", "PUT without role (full replacement): 400")
    is_problem(t, users("PUT", "/users/" + ada["id"], {"name": "Ada", "email":
                                                       "grace@example.com", "role": "user"}),
               409, "conflict", "PUT to another user's email: 409")
    is_problem(t, users("PUT", "/users/" + UNKNOWN, {"name": "N", "email": "n@example.com",
                                                     "role": "user"}),
               404, "not-found", "PUT unknown user: 404")
    st, _, tmp = users("POST", "/users", {"name": "Temp", "email": "temp@example.com"})
    st, hd, raw = users("DELETE", "/users/" + tmp["id"])
    t.ok(st == 204 and raw is None, "DELETE /users/{id}: 204, no body")
    is_problem(t, users("DELETE", "/users/" + tmp["id"]), 404, "not-found", "DELETE again: 404")
    r = users("PATCH", "/users/" + ada["id"])
    is_problem(t, r, 405, "method-not-allowed", "PATCH /users/{id}: 405")
    t.eq(r[1].get("allow"), "GET, PUT, DELETE", "405 lists Allow")
    # not recorded: no OpenAPI document describes a path that does not exist
    is_problem(t, b.http("GET", U.url + "/nothing-here"), 404, "not-found", "unknown path: 404")
    is_problem(t, b.http("GET", U.url + "/users/" + UNKNOWN[:-1] + "%00"), 404, "not-found",
               "a %00 in the path is no resource: 404")
    is_problem(t, b.http("GET", U.url + "/a/b/c/d/e/f/g/h/i/j"), 404, "not-found",
               "ten path segments: 404")

    # ---- order-service and the saga ------------------------------------------------
    tp = "00-%s-00f067aa0ba902b7-01" % TRACE
    st, hd, o1 = orders("POST", "/orders", {"user_id": ada["id"], "total_cents": 1234,
                                            "currency": "EUR"}, {"traceparent": tp})
    t.ok(st == 201 and o1["status"] == "PENDING_PAYMENT" and o1["total_cents"] == 1234 and
         o1["cancel_reason"] is None and o1["user_id"] == ada["id"],
         "POST /orders: 201 PENDING_PAYMENT", repr((st, o1)))
    t.eq(hd.get("location"), "/orders/" + o1["id"], "POST /orders: Location")
    st, _, o2 = orders("POST", "/orders", {"user_id": ada["id"], "total_cents": LIMIT + 1,
                                           "currency": "USD"})
    t.eq(st, 201, "POST /orders over the payment limit: 201 (payment decides later)")

    def status_of(order):  # polls, not recorded
        return lambda: (b.http("GET", O.url + "/orders/" + order["id"])[2] or {}).get(
            "status") not in (None, "PENDING_PAYMENT")

    t.ok(b.wait_for(status_of(o1), 10), "order 1 settles within 10 s")
    got = orders("GET", "/orders/" + o1["id"])[2]
    t.eq(got["status"], "CONFIRMED", "order within the limit: CONFIRMED")
    t.ok(b.wait_for(status_of(o2), 10), "order 2 settles within 10 s")
    got = orders("GET", "/orders/" + o2["id"])[2]
    t.ok(got["status"] == "CANCELLED" and got["cancel_reason"] == "amount_over_limit",
         "order over the limit: CANCELLED, reason amount_over_limit", repr(got))

    r = orders("POST", "/orders", {"user_id": UNKNOWN, "total_cents": 10, "currency": "EUR"})
    is_problem(t, r, 422, "unknown-user", "POST /orders for an unknown user: 422")
    for bad, field, what in [
            ({"user_id": "nope", "total_cents": 10, "currency": "EUR"}, "user_id", "bad user_id"),
            ({"user_id": ada["id"], "total_cents": 0, "currency": "EUR"}, "total_cents", "0 cents"),
            ({"user_id": ada["id"], "total_cents": 1.5, "currency": "EUR"}, "total_cents",
             "fractional cents"),
            ({"user_id": ada["id"], "total_cents": "10", "currency": "EUR"}, "total_cents",
             "cents as a string"),
            ({"user_id": ada["id"], "total_cents": 10 ** 12, "currency": "EUR"}, "total_cents",
             "too many cents"),
            ({"user_id": ada["id"], "total_cents": 10, "currency": "eur"}, "currency",
             "lowercase currency"),
            ({"user_id": ada["id"], "total_cents": 10}, "currency", "no currency"),
            ({"user_id": ada["id"], "total_cents": 10, "currency": "EUR", "status": "CONFIRMED"},
             "status", "a status of its own")]:
        r = orders("POST", "/orders", bad)
        is_problem(t, r, 400, "validation-error", "POST /orders, %s: 400" % what)
        t.ok(field in error_fields(r), "POST /orders, %s: errors name the field" % what,
             repr(r[2]))

    key = {"Idempotency-Key": "checkout-42"}
    req = {"user_id": grace["id"], "total_cents": 300, "currency": "EUR"}
    st1, _, k1 = orders("POST", "/orders", req, key)
    st2, hd2, k2 = orders("POST", "/orders", req, key)
    t.ok(st1 == 201 and st2 == 200 and k1["id"] == k2["id"] and
         hd2.get("location") == "/orders/" + k1["id"],
         "a repeated Idempotency-Key with the same body: 200, the same order", repr((k1, k2)))
    is_problem(t, orders("POST", "/orders", dict(req, total_cents=301), key), 409, "conflict",
               "the same Idempotency-Key with another body: 409")
    is_problem(t, orders("POST", "/orders", req, {"Idempotency-Key": "x" * 201}), 400,
               "validation-error", "an Idempotency-Key over 200 characters: 400")
    st, _, lst = orders("GET", "/orders?user_id=" + grace["id"])
    t.ok(st == 200 and [o["id"] for o in lst["items"]] == [k1["id"]],
         "GET /orders?user_id: the one order the key made", repr(lst))
    st, _, lst = orders("GET", "/orders?user_id=" + ada["id"])
    t.ok(st == 200 and [o["id"] for o in lst["items"]] == [o1["id"], o2["id"]],
         "GET /orders?user_id: oldest first", repr(lst))
    is_problem(t, orders("GET", "/orders"), 400, "validation-error", "GET /orders without user_id")
    is_problem(t, orders("GET", "/orders/" + UNKNOWN), 404, "not-found", "GET unknown order: 404")
    is_problem(t, orders("GET", "/orders/zzz"), 400, "validation-error", "GET /orders/zzz: 400")
    is_problem(t, orders("DELETE", "/orders/" + o1["id"]), 405, "method-not-allowed",
               "DELETE /orders/{id}: 405")

    # ---- order-service through an HTTP proxy (http_proxy, no_proxy) ---------------------
    # as in the demo: user-service is a name only the proxy (a sidecar's
    # outbound listener) knows; order-service connects to the proxy and
    # sends the absolute-form target with the name in it
    st, _, barbara = users("POST", "/users", {"name": "Barbara", "email": "barbara@example.com"})
    proxy = FakeProxy({"url": "http://user-service:8081/users/" + barbara["id"], "user": barbara})
    OP = b.Service("order-service", dict(S.env_for("order-service"),
                                         USER_SERVICE_URL="http://user-service:8081",
                                         http_proxy="http://127.0.0.1:%d" % proxy.port)).start()
    tp_proxy = "00-%s-00f067aa0ba902b7-01" % TRACE
    st, _, po = X.call("order-service", OP.url, "POST", "/orders",
                       {"user_id": barbara["id"], "total_cents": 150, "currency": "EUR"},
                       {"traceparent": tp_proxy})
    t.ok(st == 201 and po.get("user_id") == barbara["id"],
         "http_proxy: POST /orders with the user check answered by the proxy: 201", repr((st, po)))
    line, heads = proxy.heads[0] if proxy.heads else ("", {})
    t.eq(line, "GET http://user-service:8081/users/%s HTTP/1.1" % barbara["id"],
         "http_proxy: the proxy got the absolute-form target with user-service's authority")
    t.eq(heads.get("host"), "user-service:8081", "http_proxy: Host is user-service's authority")
    t.ok(TRACE in heads.get("traceparent", "") and heads.get("accept") == "application/json",
         "http_proxy: traceparent and Accept go to the proxy too", repr(heads))
    is_problem(t, X.call("order-service", OP.url, "POST", "/orders",
                         {"user_id": UNKNOWN, "total_cents": 150, "currency": "EUR"}),
               422, "unknown-user", "http_proxy: the proxy's 404 for the user: 422")
    t.eq(len(proxy.heads), 2, "http_proxy: one proxied request per user check")
    t.eq(OP.stop(), 0, "the proxied order-service drains and exits 0", OP.log_tail())
    # no_proxy names the host: the check goes straight to user-service; the
    # proxy is written as curl allows, host:port without a scheme
    ON = b.Service("order-service", dict(S.env_for("order-service"), USER_SERVICE_URL=U.url,
                                         http_proxy="127.0.0.1:%d" % proxy.port,
                                         no_proxy="example.com, .127.0.0.1")).start()
    st, _, _ = X.call("order-service", ON.url, "POST", "/orders",
                      {"user_id": barbara["id"], "total_cents": 160, "currency": "EUR"})
    t.ok(st == 201 and len(proxy.heads) == 2, "no_proxy: a host it names is called directly "
         "(201, nothing more at the proxy)", repr((st, proxy.heads[2:])))
    t.eq(ON.stop(), 0, "the no_proxy order-service drains and exits 0", ON.log_tail())
    for bad in ("https://127.0.0.1:3128", "http://user:secret@127.0.0.1:3128",
                "socks5://127.0.0.1:1080", "http://127.0.0.1:3128/path"):
        env = dict(os.environ, **S.env_for("order-service"))
        env.update(http_proxy=bad, PORT=str(h.free_port()))
        env.pop("no_proxy", None)
        env.pop("NO_PROXY", None)
        p = subprocess.run([b.service_bin("order-service")], env=env, capture_output=True,
                           text=True, timeout=10)
        t.ok(p.returncode == 2 and "http_proxy must be" in p.stderr and bad in p.stderr,
             "http_proxy=%s is refused at start (exit 2, a message naming it)" % bad,
             "rc %r, stderr %r" % (p.returncode, p.stderr[-300:]))

    # ---- payment-service, notification-service ----------------------------------------
    st, _, pay = payments("GET", "/payments?order_id=" + o1["id"])
    t.ok(st == 200 and len(pay["items"]) == 1 and pay["items"][0]["status"] == "SUCCEEDED" and
         pay["items"][0]["amount_cents"] == 1234 and pay["items"][0]["reason"] is None,
         "GET /payments?order_id: one SUCCEEDED payment", repr(pay))
    pid = pay["items"][0]["id"]
    st, _, one = payments("GET", "/payments/" + pid)
    t.ok(st == 200 and one == pay["items"][0], "GET /payments/{id}: the same payment")
    st, _, pay2 = payments("GET", "/payments?order_id=" + o2["id"])
    t.ok(pay2["items"][0]["status"] == "FAILED" and
         pay2["items"][0]["reason"] == "amount_over_limit", "the failed payment is recorded")
    is_problem(t, payments("GET", "/payments/" + UNKNOWN), 404, "not-found",
               "GET unknown payment: 404")
    is_problem(t, payments("GET", "/payments"), 400, "validation-error",
               "GET /payments without order_id: 400")
    is_problem(t, payments("POST", "/payments"), 405, "method-not-allowed", "POST /payments: 405")

    def notified(user, n):
        return lambda: len((b.http("GET", N.url + "/notifications?user_id=" + user)[2] or
                            {}).get("items", [])) >= n

    t.ok(b.wait_for(notified(ada["id"], 4), 10), "4 notifications for 2 orders within 10 s")
    st, _, ns = notes("GET", "/notifications?user_id=" + ada["id"])
    kinds = sorted((n["order_id"], n["event"]) for n in ns["items"])
    t.eq(kinds, sorted([(o1["id"], "order.created"), (o1["id"], "payment.succeeded"),
                        (o2["id"], "order.created"), (o2["id"], "payment.failed")]),
         "one notification per event")
    is_problem(t, notes("GET", "/notifications"), 400, "validation-error",
               "GET /notifications without user_id: 400")
    is_problem(t, notes("GET", "/notifications?user_id=abc"), 400, "validation-error",
               "GET /notifications?user_id=abc: 400")

    for s in (U, O, P, N):
        st, _, rd = X.call(s.name, s.url, "GET", "/ready")
        t.ok(st == 200 and rd["status"] == "ready", "%s /ready: 200" % s.name, repr(rd))
        st, _, hl = X.call(s.name, s.url, "GET", "/health")
        t.ok(st == 200 and hl == {"status": "ok"}, "%s /health: 200" % s.name)
    for s in (O, P, N):
        st, hd, text = X.call(s.name, s.url, "GET", "/metrics")
        t.ok(st == 200 and hd.get("content-type", "").startswith("text/plain") and
             b"sluice_service_events_handled_total{group=\"%s\"" % s.name.encode() in
             (text or b""), "%s /metrics: 200, the consumer's counters" % s.name, repr(text))
    st, _, _ = b.http("GET", U.url + "/metrics")  # not recorded: not in its document
    t.eq(st, 404, "user-service consumes no events: no /metrics")

    # ---- trace context --------------------------------------------------------------
    def traced(service, msg):
        return [l for l in service.log_lines() if l.get("trace_id") == TRACE and
                l.get("msg") == msg]

    t.ok(traced(U, "request"), "user-service logged the user check in the caller's trace")
    t.ok(traced(O, "order created"), "order-service logged the order in the caller's trace")
    t.ok(traced(P, "payment stored"), "payment-service charged in the caller's trace (event)")
    t.ok(traced(O, "order settled"), "the saga's end is in the same trace (second event)")
    t.ok(traced(N, "notification recorded"), "notification-service too")
    entries = S.redis.cli("XRANGE", "order.created", "-", "+")
    t.ok(("00-" + TRACE) in entries, "the order.created entry carries the traceparent",
         entries[-1500:])

    # ---- idempotent handlers, invalid events, XAUTOCLAIM --------------------------------
    pay_before = S.pg.value("payments", "SELECT count(*) FROM payments")
    notes_before = S.pg.value("notifications", "SELECT count(*) FROM notifications")
    first = S.pg.value("orders", "SELECT payload::text FROM outbox WHERE payload->>'order_id' = "
                       "'%s'" % o1["id"])
    ev_id = S.pg.value("orders", "SELECT id FROM outbox WHERE payload->>'order_id' = '%s'" %
                       o1["id"])
    S.redis.cli("XADD", "order.created", "*", "id", ev_id, "type", "order.created",
                "time", "2026-01-01T00:00:00Z", "traceparent", tp, "data", first)
    t.ok(b.wait_for(lambda: any(l.get("msg") == "order already charged; nothing to do"
                              for l in P.log_lines()), 10),
         "a repeated order.created: payment-service charges nothing")
    t.ok(b.wait_for(lambda: any(l.get("msg") == "event already notified; nothing to do"
                              for l in N.log_lines()), 10),
         "a repeated order.created: notification-service records nothing")
    t.eq(S.pg.value("payments", "SELECT count(*) FROM payments"), pay_before,
         "still one payment per order")
    t.eq(S.pg.value("notifications", "SELECT count(*) FROM notifications"), notes_before,
         "still one notification per event")

    bad = S.redis.cli("XADD", "order.created", "*", "id", "not-a-uuid", "type", "order.created",
                      "data", "{broken").strip().strip('"')
    t.ok(b.wait_for(lambda: any(l.get("msg") == "event failed; it will be delivered again" and
                              l.get("entry") == bad for l in P.log_lines()), 10),
         "an invalid event is logged")
    # EVENT_MAX_DELIVERIES (5) deliveries with the default backoff: about 4-8 s
    t.ok(b.wait_for(lambda: bad in S.redis.cli("XRANGE", "order.created.dead", "-", "+"), 20),
         "... moved to order.created.dead after its deliveries (test_services_poison.py "
         "checks the details)", P.log_tail(30))
    t.ok(b.wait_for(lambda: S.redis.cli("XPENDING", "order.created", "payment-service")
                  .splitlines()[0].strip() == "1) (integer) 0", 10),
         "... and acknowledged (nothing pending for payment-service)",
         S.redis.cli("XPENDING", "order.created", "payment-service"))

    # a consumer that took an event and died: payment-service claims it
    t.eq(P.stop(), 0, "payment-service drains on SIGTERM")
    st, _, o3 = orders("POST", "/orders", {"user_id": grace["id"], "total_cents": 77,
                                           "currency": "EUR"})
    taken = b.wait_for(lambda: o3["id"] in S.redis.cli(
        "XREADGROUP", "GROUP", "payment-service", "ghost", "COUNT", "10", "STREAMS",
        "order.created", ">"), 5)
    t.ok(taken, "a ghost consumer took the order.created entry and never acknowledged it")
    P.start()
    t.ok(b.wait_for(status_of(o3), 15), "payment-service claims the ghost's entry (XAUTOCLAIM) "
         "and the order settles")
    t.ok(any(l.get("msg") == "claimed events another consumer left pending"
             for l in P.log_lines()), "payment-service logged the claim")
    t.eq(S.pg.value("payments", "SELECT count(*) FROM payments WHERE order_id = '%s'" % o3["id"]),
         "1", "the claimed order was charged once")

    # ---- the outbox: Redis down, order-service killed, nothing lost -------------------
    S.redis.stop()
    st, _, o4 = orders("POST", "/orders", {"user_id": grace["id"], "total_cents": 88,
                                           "currency": "EUR"})
    t.eq(st, 201, "with Redis down an order is still taken (stored with its event)")
    t.eq(S.pg.value("orders", "SELECT count(*) FROM outbox WHERE published_at IS NULL AND "
                    "payload->>'order_id' = '%s'" % o4["id"]), "1",
         "its order.created waits in the outbox")
    r = X.call("order-service", O.url, "GET", "/ready")
    t.ok(r[0] == 503 and r[2]["checks"]["redis"] == "fail" and
         r[2]["checks"]["database"] == "ok", "/ready with Redis down: 503, redis fail", repr(r))
    O.kill()  # a crash: no drain
    S.redis.start()  # an empty Redis: no streams, no groups
    O.start()
    t.ok(b.wait_for(status_of(o4), 20), "after the crash and Redis' restart the event is relayed "
         "and the order settles")
    t.eq(S.pg.value("orders", "SELECT count(*) FROM outbox WHERE published_at IS NULL"), "0",
         "the outbox is empty")

    # ---- user-service down ---------------------------------------------------------------
    t.eq(U.stop(), 0, "user-service drains on SIGTERM")
    is_problem(t, orders("POST", "/orders", {"user_id": ada["id"], "total_cents": 5,
                                             "currency": "EUR"}),
               503, "dependency-unavailable", "POST /orders with user-service down: 503")
    U.start()
    st, _, _ = orders("POST", "/orders", {"user_id": ada["id"], "total_cents": 5,
                                          "currency": "EUR"})
    t.eq(st, 201, "user-service back: orders are taken again")

    # ---- backpressure: a bounded statement queue ----------------------------------------
    # one connection, two waiting statements; the users table locked for 3 s:
    # the first request waits on the lock, two wait in the queue, the rest
    # are refused at once with 503 overloaded
    small = b.Service("user-service", dict(S.env_for("user-service"), DB_POOL="1",
                                           DB_QUEUE="2")).start()
    locker = subprocess.Popen(["psql", "-X", "-q", "-d", S.pg.url("users"), "-c",
                               "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; "
                               "SELECT pg_sleep(3); COMMIT;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_for(lambda: S.pg.value("postgres", "SELECT count(*) FROM pg_locks WHERE mode = "
                                  "'AccessExclusiveLock' AND granted") != "0", 5)
    results = []

    def get_one():
        begun = time.time()
        r = b.http("GET", small.url + "/users/" + ada["id"], timeout=15)
        results.append((r[0], (r[2] or {}).get("type") if isinstance(r[2], dict) else None,
                        time.time() - begun))

    workers = [threading.Thread(target=get_one) for _ in range(8)]
    for w in workers:
        w.start()
        time.sleep(0.05)
    for w in workers:
        w.join(20)
    locker.wait(10)
    ok200 = [x for x in results if x[0] == 200]
    refused = [x for x in results if x[0] == 503]
    t.ok(len(ok200) == 3 and len(refused) == 5, "8 requests on 1 connection + a queue of 2 "
         "while the table is locked: 3 answered after the lock, 5 refused", repr(results))
    t.ok(refused and all(x[1] == "https://sluice.dev/problems/overloaded" and x[2] < 1.0
                         for x in refused),
         "the refused ones are 503 overloaded, at once", repr(refused))
    t.eq(small.stop(), 0, "the small-pool user-service drains and exits 0")
    t.ok(small.sanitizer_report() is None, "the small-pool user-service: no sanitizer report",
         small.sanitizer_report())

    # ---- PostgreSQL down and back -------------------------------------------------------
    S.pg.stop()
    started = time.time()
    r = users("POST", "/users", {"name": "Down", "email": "down@example.com"})
    is_problem(t, r, 503, "dependency-unavailable", "POST /users with PostgreSQL down: 503")
    t.ok(time.time() - started < 3, "... answered at once, not after a hang (%.2f s)"
         % (time.time() - started))
    r = X.call("order-service", O.url, "GET", "/ready")
    t.ok(r[0] == 503 and r[2]["checks"]["database"] == "fail",
         "/ready with PostgreSQL down: 503, database fail", repr(r))
    S.pg.restart()
    t.ok(b.wait_for(lambda: b.http("POST", U.url + "/users", {"name": "Back", "email":
                                                             "back@example.com"})[0] == 201, 15),
         "PostgreSQL back: user-service reconnects and creates users again")
    st, _, o5 = orders("POST", "/orders", {"user_id": grace["id"], "total_cents": 99,
                                           "currency": "EUR"})
    t.ok(st == 201 and b.wait_for(status_of(o5), 15),
         "... and the saga runs again (order settled)", repr((st, o5)))

    # ---- drain with a request in flight ------------------------------------------------
    # user-service frozen: POST /orders waits on its user check while
    # order-service is told to stop; the request still gets its answer
    U.proc.send_signal(signal.SIGSTOP)
    answer = {}

    def post():
        answer["r"] = orders("POST", "/orders", {"user_id": ada["id"], "total_cents": 6,
                                                "currency": "EUR"})

    th = threading.Thread(target=post)
    th.start()
    time.sleep(0.5)
    O.proc.send_signal(signal.SIGTERM)
    refused = b.wait_for(lambda: not _accepts(O.port), 3)
    t.ok(refused, "draining order-service no longer accepts connections")
    U.proc.send_signal(signal.SIGCONT)
    th.join(10)
    t.eq(answer.get("r", (None,))[0], 201, "the request in flight at SIGTERM is answered (201)")
    rc = O.stop()
    t.eq(rc, 0, "order-service exits 0 after the drain", O.log_tail())
    O.start()
    late = answer.get("r", (None, None, None))[2] or {}
    t.ok("id" in late and b.wait_for(status_of(late), 15),
         "the order taken during the drain settles (its event was not lost)", repr(late))

    # ---- logs, drain, OpenAPI -------------------------------------------------------------
    for s in (U, O, P, N):
        lines = [l for l in s.logs().splitlines() if l.strip()]
        bad = []
        for l in lines:
            try:
                v = json.loads(l)
                if not all(k in v for k in ("time", "level", "service", "msg")):
                    bad.append(l)
            except ValueError:
                bad.append(l)
        t.ok(lines and not bad, "%s: every log line is JSON with time, level, service, msg"
             % s.name, "\n".join(bad[:5]))
    S.stop_services(t)
    for s in (U, O, P, N):
        t.ok(any(l.get("msg") == "drained; exiting" for l in s.log_lines()),
             "%s logged its drain" % s.name)
    X.validate(t, {"seed": os.path.join(SRCDIR, "tests", "services",
                                        "seed-user-service-openapi.yaml")})


if __name__ == "__main__":
    h.main(body, timeout=240)
