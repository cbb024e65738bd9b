#!/usr/bin/env python3
"""Poison events and dead letters in the reference services, against a
real PostgreSQL cluster and a real redis-server started here.

(a) Poison: three entries no handler can ever take, added to order.created
    with XADD: one that is not an event at all (no uuid id, data not
    JSON), one whose payload payment-service's handler refuses (no
    order_id), and one that PostgreSQL refuses with a constraint violation
    (SQLSTATE 23514, a CHECK this test adds to the payments table). Each is
    delivered exactly EVENT_MAX_DELIVERIES times, then moved to
    order.created.dead with its fields, the reason and the original entry
    id, and acknowledged. An order placed just after them settles while
    they are still pending: they do not hold back newer events. The
    dead-letter count is on the service's /metrics.

(b) PostgreSQL stopped for longer than the deliveries would last if they
    counted, while events are added: nothing is dead-lettered, the
    consumers stop reading and probe with backoff, and once PostgreSQL is
    back every event is handled exactly once and nothing stays pending."""

import json
import os
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
import backends as b  # noqa: E402

MAX_DELIVERIES = 4
# the poison's deliveries take at least 0.5 + 1 + 1 s (EVENT_RETRY_MIN_MS
# doubled per delivery, at most EVENT_RETRY_MAX_MS, at least half of that
# after jitter): long enough to see a newer event pass it
RETRY_MIN_MS = 1000
RETRY_MAX_MS = 2000
OUTAGE_S = 10  # longer than MAX_DELIVERIES steps of RETRY_MAX_MS


class Resp:
    """A minimal RESP2 client (the tests need the replies' structure,
    which redis-cli's text output hides)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def close(self):
        self.sock.close()


def entries(r, stream):
    """[(entry id, {field: value})] of a whole stream."""
    return [(eid, dict(zip(fl[0::2], fl[1::2]))) for eid, fl in r("XRANGE", stream, "-", "+")]


def pending_ids(r, stream, group):
    return [e[0] for e in r("XPENDING", stream, group, "-", "+", "1000")]


def metrics(service):
    st, _, text = b.http("GET", service.url + "/metrics")
    return st, h.parse_metrics(text.decode() if isinstance(text, bytes) else (text or ""))


def body(t):
    env = {"EVENT_MAX_DELIVERIES": str(MAX_DELIVERIES), "EVENT_RETRY_MIN_MS": str(RETRY_MIN_MS),
           "EVENT_RETRY_MAX_MS": str(RETRY_MAX_MS)}
    # EVENT_RETRY_MAX_MS is kept under half of CLAIM_IDLE_MS
    S = b.System(claim_idle_ms=3 * RETRY_MAX_MS, extra_env=env).start()
    O, P, N = S["order-service"], S["payment-service"], S["notification-service"]
    r = Resp(S.redis.port)

    st, _, user = b.http("POST", S["user-service"].url + "/users",
                         {"name": "Poison Tester", "email": "poison@example.com"})
    t.eq(st, 201, "a user to place orders for")

    def place(cents):
        st, _, o = b.http("POST", O.url + "/orders", {"user_id": user["id"],
                                                      "total_cents": cents, "currency": "EUR"})
        return o if st == 201 else None

    def settled(order):
        return lambda: (b.http("GET", O.url + "/orders/" + order["id"])[2] or {}).get(
            "status") == "CONFIRMED"

    first = place(100)
    t.ok(first and b.wait_for(settled(first), 15), "the saga runs before any poison")

    # ---- (a) poison events ---------------------------------------------------------------
    # PostgreSQL refuses lower-case currencies from now on; the handler
    # passes them (3 letters), so the INSERT fails with 23514
    S.pg.psql("payments", "ALTER TABLE payments ADD CONSTRAINT currency_upper "
              "CHECK (currency ~ '^[A-Z]{3}$')")
    malformed = r("XADD", "order.created", "*", "id", "not-a-uuid", "type", "order.created",
                  "data", "{broken")
    no_order = r("XADD", "order.created", "*", "id", str(uuid.uuid4()), "type",
                 "order.created", "time", "2026-01-01T00:00:00Z", "data",
                 json.dumps({"user_id": user["id"], "total_cents": 5, "currency": "EUR"}))
    refused_order = str(uuid.uuid4())
    refused = r("XADD", "order.created", "*", "id", str(uuid.uuid4()), "type", "order.created",
                "time", "2026-01-01T00:00:00Z", "data",
                json.dumps({"order_id": refused_order, "user_id": user["id"],
                            "total_cents": 5, "currency": "eur"}))
    poison = {malformed: "not a valid event", no_order: "order_id, user_id, currency",
              refused: "23514"}
    added = time.time()

    newer = place(200)
    t.ok(newer is not None, "an order placed after the poison")
    t.ok(b.wait_for(settled(newer), 10), "... settles within 10 s (took %.2f s): the poison does "
         "not hold back newer events" % (time.time() - added))
    held = pending_ids(r, "order.created", "payment-service")
    t.ok(set(poison) <= set(held) and not r("XLEN", "order.created.dead"),
         "... while the three poison entries are still pending for payment-service, none "
         "dead yet", repr(held))

    def dead_for(group):
        return {f.get("dead_original_id"): (eid, f) for eid, f in
                entries(r, "order.created.dead") if f.get("dead_group") == group}

    t.ok(b.wait_for(lambda: set(poison) <= set(dead_for("payment-service")), 30, 0.2),
         "the three poison entries reach order.created.dead within 30 s",
         repr(entries(r, "order.created.dead")))
    dead = dead_for("payment-service")
    for entry_id, why in poison.items():
        _, f = dead.get(entry_id, (None, {}))
        t.ok(why in f.get("dead_reason", ""), "dead letter of %s: the reason (%r)"
             % (entry_id, f.get("dead_reason")))
        t.eq(f.get("dead_deliveries"), str(MAX_DELIVERIES),
             "dead letter of %s: after exactly EVENT_MAX_DELIVERIES (%d) deliveries"
             % (entry_id, MAX_DELIVERIES))
        t.ok(f.get("dead_consumer", "").startswith("payment-service-"),
             "dead letter of %s: the consumer" % entry_id, repr(f))
    originals = dict(entries(r, "order.created"))
    for entry_id in poison:
        mine = {k: v for k, v in dead.get(entry_id, (None, {}))[1].items()
                if not k.startswith("dead_")}
        t.eq(mine, originals.get(entry_id), "dead letter of %s: the entry's own fields, "
             "unchanged" % entry_id)

    # the deliveries, as the log shows them: the handler ran exactly
    # MAX_DELIVERIES times for each event it could parse
    def received(entry_id):
        return [l.get("deliveries") for l in P.log_lines()
                if l.get("msg") == "event received" and l.get("entry") == entry_id]

    def failed(entry_id):
        return [l.get("deliveries") for l in P.log_lines()
                if l.get("msg") == "event failed; it will be delivered again" and
                l.get("entry") == entry_id]

    for entry_id in (no_order, refused):
        t.eq(received(entry_id), list(range(1, MAX_DELIVERIES + 1)),
             "payment-service's handler got %s exactly %d times (deliveries 1..%d)"
             % (entry_id, MAX_DELIVERIES, MAX_DELIVERIES))
    t.eq(received(malformed), [], "the malformed entry never reached a handler")
    for entry_id in poison:
        t.eq(failed(entry_id), list(range(1, MAX_DELIVERIES)),
             "%s failed deliveries 1..%d, then was dead-lettered" % (entry_id, MAX_DELIVERIES - 1))
    logged = [l for l in P.log_lines() if l.get("msg") == "event dead-lettered"]
    t.ok({l.get("entry") for l in logged} >= set(poison) and
         all(l.get("level") == "error" and l.get("dead_stream") == "order.created.dead" and
             l.get("reason") for l in logged),
         "each dead letter is logged (error, stream, entry, dead_stream, reason)", repr(logged))
    t.ok(b.wait_for(lambda: not pending_ids(r, "order.created", "payment-service"), 5),
         "... and acknowledged: nothing pending for payment-service",
         repr(r("XPENDING", "order.created", "payment-service")))
    t.eq(S.pg.value("payments", "SELECT count(*) FROM payments WHERE order_id = '%s'"
                    % refused_order), "0", "the refused event stored nothing")

    # notification-service consumes order.created too: the malformed entry
    # and the one without order_id are its poison as well, dead-lettered
    # under its own group; the lower-case currency it takes
    t.ok(b.wait_for(lambda: {malformed, no_order} <= set(dead_for("notification-service")),
                    30, 0.2),
         "notification-service dead-letters the two it cannot handle, under its own group",
         repr(dead_for("notification-service").keys()))
    t.ok(refused not in dead_for("notification-service"),
         "... and handled the one only payment-service's database refuses")

    st, m = metrics(P)
    t.eq(st, 200, "payment-service GET /metrics: 200")
    t.eq(h.metric(m, "sluice_service_events_dead_lettered_total", group="payment-service",
                  stream="order.created"), 3.0, "payment-service counts 3 dead letters")
    t.eq(h.metric(m, "sluice_service_event_failures_permanent_total", group="payment-service",
                  stream="order.created"), float(3 * MAX_DELIVERIES),
         "... and %d permanent failures (every delivery of each)" % (3 * MAX_DELIVERIES))
    t.ok((h.metric(m, "sluice_service_events_handled_total", group="payment-service",
                   stream="order.created") or 0) >= 2, "... and the orders it handled")
    h.promtool_check(t, b.http("GET", P.url + "/metrics")[2].decode(),
                     "payment-service's /metrics passes promtool check metrics")
    S.pg.psql("payments", "ALTER TABLE payments DROP CONSTRAINT currency_upper")

    # ---- (b) PostgreSQL down while events come ---------------------------------------------
    dead_before = r("XLEN", "order.created.dead")
    orders = [str(uuid.uuid4()) for _ in range(24)]
    events = {}

    def publish(order_id):
        ev = str(uuid.uuid4())
        events[order_id] = ev
        r("XADD", "order.created", "*", "id", ev, "type", "order.created",
          "time", "2026-01-01T00:00:00Z", "data",
          json.dumps({"order_id": order_id, "user_id": user["id"], "total_cents": 300,
                      "currency": "EUR"}))

    S.pg.stop()
    down = time.time()
    for i, order_id in enumerate(orders[:20]):  # over the whole outage
        publish(order_id)
        time.sleep(OUTAGE_S / 20.0)
    t.ok(b.wait_for(lambda: any(l.get("msg") == "events fail on a dependency; new events "
                                "wait, retrying" for l in P.log_lines()), 5),
         "payment-service notices the outage: new events wait")
    t.eq(r("XLEN", "order.created.dead"), dead_before,
         "after %.0f s of outage (longer than %d deliveries' backoff) nothing is dead-lettered"
         % (time.time() - down, MAX_DELIVERIES))
    st, m = metrics(P)
    t.ok(st == 200 and (h.metric(m, "sluice_service_event_failures_transient_total",
                                 group="payment-service", stream="order.created") or 0) > 0 and
         h.metric(m, "sluice_service_events_outage", group="payment-service") == 1.0,
         "/metrics during the outage: transient failures counted, outage 1")
    probes = len([l for l in P.log_lines() if l.get("msg") == "event failed on a dependency; "
                  "it will be retried"])
    t.ok(probes <= 32 + OUTAGE_S * 1000 // (RETRY_MIN_MS // 2) + 2,
         "the retries back off (%d transient failures in %d s)" % (probes, OUTAGE_S))
    S.pg.restart()
    back = time.time()
    for order_id in orders[20:]:  # and a few after it
        publish(order_id)
    ids = ",".join("'%s'" % o for o in orders)

    def all_paid():
        return S.pg.value("payments", "SELECT count(*) FROM payments WHERE order_id IN (%s)"
                          % ids) == str(len(orders))

    t.ok(b.wait_for(all_paid, 30, 0.5), "PostgreSQL back: all %d events are handled by "
         "payment-service within 30 s (took %.1f s)" % (len(orders), time.time() - back))
    evs = ",".join("'%s'" % e for e in events.values())

    def all_notified():
        return S.pg.value("notifications", "SELECT count(*) FROM notifications WHERE event_id "
                          "IN (%s)" % evs) == str(len(orders))

    t.ok(b.wait_for(all_notified, 30, 0.5), "... and by notification-service")
    t.eq(S.pg.value("payments", "SELECT count(*) - count(DISTINCT order_id) FROM payments"), "0",
         "each charged once")
    t.eq(r("XLEN", "order.created.dead"), dead_before, "nothing was dead-lettered")
    for group in ("payment-service", "notification-service"):
        t.ok(b.wait_for(lambda: not pending_ids(r, "order.created", group), 10),
             "nothing pending for %s" % group)
    t.ok(any(l.get("msg") == "events are handled again; resuming" for l in P.log_lines()),
         "payment-service logged the end of the outage")
    after = b.wait_for(lambda: place(400), 15, 0.5)  # order-service's pool reconnects too
    t.ok(after and b.wait_for(settled(after), 15), "a new order settles after the outage",
         repr(after) + "\n" + O.log_tail(15) + "\n" + P.log_tail(15))
    r.close()
    S.stop_services(t)


if __name__ == "__main__":
    h.main(body, timeout=200)
