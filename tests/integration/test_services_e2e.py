#!/usr/bin/env python3
"""The whole system end to end as ./dev demo runs it, on ports of the
kernel's instead of the demo's: PostgreSQL, Redis, the four reference
services (user-service twice) started here, a sluice-sidecar beside each
with the demo's file (conf/demo/sidecar-<service>.yaml; the instance's
ports by SLUICE_*), and sluice-gateway in front with conf/demo/gateway.yaml
(only the loopback ports changed), calling the sidecars' inbound
listeners; order-service calls user-service through its outbound sidecar
(http_proxy). A user created and an order
placed with a JWT end CONFIRMED and notified within seconds; an order over
the payment limit ends CANCELLED; payment-service killed (SIGKILL) while
orders are being created and restarted later: every order still ends
CONFIRMED or CANCELLED, each charged exactly once, each event notified
exactly once, nothing left pending in any consumer group. A user-service
replica killed: orders still succeed, and order-service's outbound sidecar
shows the retries and the ejection. Then a second order-service and a
second payment-service: two relays on one outbox, two consumers in one
group, still exactly once."""

import importlib.util
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
import backends as b  # noqa: E402

SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(__file__), "..", "..")
LIMIT = 100000  # the demo's PAYMENT_LIMIT_CENTS


def load_make_jwt():
    spec = importlib.util.spec_from_file_location(
        "make_jwt", os.path.join(SRCDIR, "conf", "demo", "make-jwt.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def demo_file(name):
    with open(os.path.join(SRCDIR, "conf", "demo", name)) as f:
        return f.read()


def with_ports(text, demo_ports, ports):
    """The demo's file with each instance's inbound port replaced."""
    for instance, demo_port in demo_ports.items():
        text = text.replace("127.0.0.1:%d" % demo_port, "127.0.0.1:%d" % ports[instance])
    return text


# the inbound port of each instance's sidecar in the demo's files
DEMO_INBOUND = {"user-service-1": 15001, "order-service": 15002, "payment-service": 15003,
                "notification-service": 15004, "user-service-2": 15005}
SIDECAR_PORT_RE = r"^[^#]*127\.0\.0\.1:150\d\d\b"
SERVICE_PORT_RE = r"^[^#]*127\.0\.0\.1:(150\d\d|808\d)\b"


def body(t):
    outbound = h.free_port()  # order-service's outbound sidecar
    S = b.System(payment_limit=LIMIT, claim_idle_ms=1500, service_env={"order-service": {
        "USER_SERVICE_URL": "http://user-service:8081",
        "http_proxy": "http://127.0.0.1:%d" % outbound}}).start()
    U2 = b.Service("user-service", S.env_for("user-service")).start()
    apps = {"user-service-1": S["user-service"], "user-service-2": U2,
            "order-service": S["order-service"], "payment-service": S["payment-service"],
            "notification-service": S["notification-service"]}
    inbound = {i: h.free_port() for i in apps}
    status_ports = {i: h.free_port() for i in apps}
    users_only = {i: p for i, p in DEMO_INBOUND.items() if i.startswith("user-service")}
    sidecars = {}
    for instance, app in apps.items():
        text = demo_file("sidecar-%s.yaml" % app.name)
        if app.name == "order-service":  # its upstream: the replicas' sidecars
            text = with_ports(text, users_only, inbound)
            t.ok(not re.search(SIDECAR_PORT_RE, text, re.M),
                 "order-service's sidecar file: every demo sidecar port was replaced")
        env = {"SLUICE_INBOUND_LISTEN": "127.0.0.1:%d" % inbound[instance],
               "SLUICE_STATUS_LISTEN": "127.0.0.1:%d" % status_ports[instance],
               "SLUICE_APP_URL": app.url}
        if app.name == "order-service":
            env["SLUICE_OUTBOUND_LISTEN"] = "127.0.0.1:%d" % outbound
        sidecars[instance] = h.Sidecar(text, env=env, port=inbound[instance],
                                       name="sidecar-" + instance).start()
    config = with_ports(demo_file("gateway.yaml"), DEMO_INBOUND, inbound)
    t.ok(not re.search(SERVICE_PORT_RE, config, re.M), "the gateway file: every demo port was "
         "replaced (and none is a service's own)")
    port = h.free_port()
    gw = h.Gateway(config, port=port, env={"SLUICE_PROXY_LISTEN": "127.0.0.1:%d" % port,
                                           "SLUICE_STATUS_LISTEN": "off"})
    gw.start()
    api = "http://127.0.0.1:%d/api/v1" % port
    token = load_make_jwt().make_token(1)
    auth = {"Authorization": "Bearer " + token}

    st, _, _ = b.http("POST", api + "/users", {"name": "Ada", "email": "ada@example.com"})
    t.eq(st, 401, "POST /api/v1/users without a JWT: 401 from the gateway")
    expired = load_make_jwt().make_token(-1)
    st, _, _ = b.http("GET", api + "/orders?user_id=5d1d3bd0-0000-4000-8000-000000000001",
                      headers={"Authorization": "Bearer " + expired})
    t.eq(st, 401, "an expired JWT: 401 (the demo checks exp)")

    st, hd, user = b.http("POST", api + "/users", {"name": "Ada Lovelace",
                                                   "email": "ada@example.com"}, auth)
    t.ok(st == 201 and b.svc_uuid_ok((user or {}).get("id")), "create a user through the gateway",
         repr((st, user)))
    t.eq(hd.get("x-ratelimit-limit-minute"), "100", "the users route is rate limited (seed)")
    st, _, got = b.http("GET", api + "/users/" + user["id"], headers=auth)
    t.ok(st == 200 and got == user, "GET /api/v1/users/{id}: the same user")

    def order(cents, currency="EUR"):
        return b.http("POST", api + "/orders", {"user_id": user["id"], "total_cents": cents,
                                               "currency": currency}, auth)

    def status(order_id):
        return (b.http("GET", api + "/orders/" + order_id, headers=auth)[2] or {}).get("status")

    def statuses():  # one request for all of the user's orders (the route is rate limited)
        items = (b.http("GET", api + "/orders?user_id=" + user["id"], headers=auth)[2] or
                 {}).get("items", [])
        return {o["id"]: o["status"] for o in items}

    def notifications():
        return (b.http("GET", api + "/notifications?user_id=" + user["id"],
                       headers=auth)[2] or {}).get("items", [])

    st, _, o1 = order(4200)
    t.ok(st == 201 and o1["status"] == "PENDING_PAYMENT", "create an order with a JWT: 201",
         repr((st, o1)))
    started = time.time()
    t.ok(b.wait_for(lambda: status(o1["id"]) == "CONFIRMED", 5),
         "the order is CONFIRMED within 5 s (took %.2f s)" % (time.time() - started))
    t.ok(b.wait_for(lambda: {(n["order_id"], n["event"]) for n in notifications()} >=
                  {(o1["id"], "order.created"), (o1["id"], "payment.succeeded")}, 5),
         "... and notified (order.created, payment.succeeded) within 5 s", repr(notifications()))
    st, _, pays = b.http("GET", api + "/payments?order_id=" + o1["id"], headers=auth)
    t.ok(st == 200 and len(pays["items"]) == 1 and pays["items"][0]["status"] == "SUCCEEDED",
         "GET /api/v1/payments?order_id: one payment", repr(pays))

    st, _, o2 = order(LIMIT + 1)
    t.ok(b.wait_for(lambda: status(o2["id"]) == "CANCELLED", 5),
         "an order over the payment limit ends CANCELLED")
    got = b.http("GET", api + "/orders/" + o2["id"], headers=auth)[2]
    t.eq(got.get("cancel_reason"), "amount_over_limit", "... with the payment's reason")

    # ---- payment-service killed while orders are created ----------------------------
    P = S["payment-service"]
    created, errors = [], []
    lock = threading.Lock()

    def place(i):
        cents = LIMIT + 50 + i if i % 4 == 0 else 1000 + i
        st, _, o = order(cents)
        with lock:
            (created if st == 201 else errors).append((o if st == 201 else (st, o), cents))

    threads = []
    for i in range(60):
        # stopped first: its blocked XREADGROUP is still served, so events are
        # delivered to it and left pending when it is killed
        if i == 10:
            P.proc.send_signal(signal.SIGSTOP)
        if i == 20:
            P.proc.send_signal(signal.SIGKILL)
        th = threading.Thread(target=place, args=(i,))
        th.start()
        threads.append(th)
        time.sleep(0.02)
    for th in threads:
        th.join(30)
    t.ok(not errors and len(created) == 60, "60 orders created while payment-service died",
         repr(errors[:3]))
    P.proc.wait(5)
    time.sleep(1)
    held = S.redis.cli("XPENDING", "order.created", "payment-service")
    t.ok(not held.startswith("1) (integer) 0"),
         "the killed payment-service left events pending (delivered, never acknowledged)", held)
    now = statuses()
    pending = [o for o, _ in created if now.get(o["id"]) == "PENDING_PAYMENT"]
    t.ok(pending, "with payment-service dead, orders wait in PENDING_PAYMENT (%d)" % len(pending))
    P.start()  # a new process: a new consumer name; it claims what the dead one held

    def all_settled():
        now = statuses()
        return all(now.get(o["id"]) in ("CONFIRMED", "CANCELLED") for o, _ in created)

    t.ok(b.wait_for(all_settled, 30, 0.5), "after the restart every order ends CONFIRMED or "
         "CANCELLED within 30 s")
    now = statuses()
    wrong = [(o["id"], cents, now.get(o["id"])) for o, cents in created
             if now.get(o["id"]) != ("CONFIRMED" if cents <= LIMIT else "CANCELLED")]
    t.ok(not wrong, "each order's end matches its amount", repr(wrong[:5]))

    n_orders = len(created) + 2
    ids = ",".join("'%s'" % o["id"] for o, _ in created + [(o1, 0), (o2, 0)])
    t.eq(S.pg.value("payments", "SELECT count(*) FROM payments WHERE order_id IN (%s)" % ids),
         str(n_orders), "one payment per order")
    t.eq(S.pg.value("payments", "SELECT count(*) FROM (SELECT order_id FROM payments GROUP BY "
                    "order_id HAVING count(*) > 1) d"), "0", "no order charged twice")
    t.ok(b.wait_for(lambda: S.pg.value("notifications", "SELECT count(*) FROM notifications") ==
                  str(2 * n_orders), 15),
         "two notifications per order (order.created and its payment event)",
         S.pg.value("notifications", "SELECT event, count(*) FROM notifications GROUP BY event"))
    t.eq(S.pg.value("notifications", "SELECT count(*) FROM (SELECT order_id, event FROM "
                    "notifications GROUP BY order_id, event HAVING count(*) > 1) d"), "0",
         "no event notified twice")
    # a relay killed between XADD and marking its rows published leaves
    # them claimed for 30 s (claimed_until); the restarted relay publishes
    # them again after that (at least once; consumers drop the duplicate)
    def outbox_relayed(db):
        return lambda: S.pg.value(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == "0"
    t.ok(b.wait_for(outbox_relayed("orders"), 40, 0.5), "order-service's outbox is fully relayed")
    t.ok(b.wait_for(outbox_relayed("payments"), 40, 0.5),
         "payment-service's outbox is fully relayed")
    xlen = int(S.redis.cli("XLEN", "order.created").split()[-1])
    t.eq(xlen, n_orders, "one order.created entry per order (none lost, none duplicated)")


    t.ok(b.wait_for(S.nothing_pending, 10), "no entry is left pending in any consumer group")

    # ---- a user-service replica killed -------------------------------------------------
    # order-service's outbound sidecar retries a user check that met the
    # dead replica (its sidecar answers 502) on the other one, and ejects
    # the dead one after 5 errors in a row
    U2.kill()
    codes = [order(300 + i)[0] for i in range(12)]
    t.eq(codes, [201] * 12, "user-service-2 killed: 12 orders through the gateway, all 201")
    m = h.parse_metrics(h.scrape(status_ports["order-service"]))
    retried = h.metric_sum(m, "sluice_upstream_retries_total", service="user-service",
                           direction="outbound")
    t.ok(retried >= 5, "order-service's outbound sidecar retried the checks that met the dead "
         "replica (%d)" % retried)
    t.eq(h.metric(m, "sluice_upstream_ejections_active", service="user-service",
                  direction="outbound", target="127.0.0.1:%d" % inbound["user-service-2"]), 1.0,
         "its /metrics: the dead replica is ejected")
    t.eq(h.metric(m, "sluice_upstream_ejections_active", service="user-service",
                  direction="outbound", target="127.0.0.1:%d" % inbound["user-service-1"]), 0.0,
         "its /metrics: the live replica is not")
    inbound_201 = h.metric(h.parse_metrics(h.scrape(status_ports["order-service"])),
                           "sluice_http_requests_total", direction="inbound",
                           service="order-service", route="", code="201")
    t.ok(inbound_201 and inbound_201 >= 12 + 62, "every order went through order-service's "
         "inbound sidecar (%d answered 201)" % (inbound_201 or 0))

    # ---- two instances of order-service and payment-service ----------------------------
    # both order-services relay one outbox (claims with SKIP LOCKED), both
    # payment-services share one consumer group: still one event per order,
    # one payment per order, and both payment-services do part of the work
    O2 = b.Service("order-service", dict(S.env_for("order-service"),
                                         USER_SERVICE_URL=S["user-service"].url))
    P2 = b.Service("payment-service", S.env_for("payment-service"))
    O2.start()
    P2.start()
    before = int(S.redis.cli("XLEN", "order.created").split()[-1])
    twins = []
    for i in range(40):
        base = (S["order-service"] if i % 2 else O2).url
        st, _, o = b.http("POST", base + "/orders", {"user_id": user["id"], "total_cents": 500 + i,
                                                    "currency": "EUR"})
        if st == 201:
            twins.append(o["id"])
    t.eq(len(twins), 40, "40 orders created, alternating between two order-services")

    def twins_settled():
        now = statuses()
        return all(now.get(i) == "CONFIRMED" for i in twins)

    t.ok(b.wait_for(twins_settled, 20, 0.5), "all 40 end CONFIRMED")
    after = int(S.redis.cli("XLEN", "order.created").split()[-1])
    t.eq(after - before, 40, "the two relays published each order.created once")
    ids = ",".join("'%s'" % i for i in twins)
    t.eq(S.pg.value("payments", "SELECT count(*) FROM payments WHERE order_id IN (%s)" % ids),
         "40", "one payment per order with two payment-services in one group")
    stored = [sum(1 for l in svc.log_lines() if l.get("msg") == "payment stored" and
                  l.get("order_id") in twins) for svc in (P, P2)]
    t.ok(sum(stored) == 40 and all(n > 0 for n in stored),
         "both payment-services charged part of them (%d + %d)" % tuple(stored))
    t.ok(b.wait_for(S.nothing_pending, 10), "nothing left pending")
    for extra in (O2, P2):
        t.eq(extra.stop(), 0, "the second %s drains and exits 0" % extra.name, extra.log_tail())
        t.ok(extra.sanitizer_report() is None, "the second %s: no sanitizer report" % extra.name,
             extra.sanitizer_report())
    gw.stop()
    gw.check_clean(t)
    # as ./dev stop: every sidecar and service at once (a sidecar serves
    # drain_delay longer while its service drains)
    for sc in sidecars.values():
        sc.send_signal(signal.SIGTERM)
    S.stop_services(t)
    for sc in sidecars.values():
        sc.stop()
        sc.check_clean(t)


if __name__ == "__main__":
    h.main(body, timeout=240)
