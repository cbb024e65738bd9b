#!/usr/bin/env python3
"""Load balancing over an upstream's targets (Kong's ring-balancer):
round-robin by weight, weight 0, least-connections with a slow target,
consistent-hashing by header, and the 503 of an upstream with no target."""

import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

NO_PEER = "failure to get a peer from the ring-balancer"


class SlowUpstream(Upstream):
    """The echo upstream, answering every request after `delay` seconds."""

    def __init__(self, delay, **kw):
        super().__init__(**kw)
        self.delay = delay

    def _respond(self, c, rd, rec):
        time.sleep(self.delay)
        return super()._respond(c, rd, rec)


def balanced_service(name, upstream_name, prefix, **kw):
    s = {"name": name, "host": upstream_name, "port": 80, "path": "/base"}
    s.update(kw)
    s["routes"] = [{"name": name + "-route", "paths": [prefix]}]
    return s


def counts(ups, needle):
    return [len(u.find(needle)) for u in ups]


def body(t):
    rr = [Upstream(name="rr-%d" % i).start() for i in range(3)]
    zero = [Upstream(name="zero-%d" % i).start() for i in range(2)]
    fast = Upstream(name="lc-fast").start()
    slow = SlowUpstream(0.3, name="lc-slow").start()
    ch = [Upstream(name="ch-%d" % i).start() for i in range(3)]
    ck = [Upstream(name="ck-%d" % i).start() for i in range(3)]
    port = h.free_port()
    cfg = h.make_config(port, [
        balanced_service("rr", "rr-up", "/rr"),
        balanced_service("zero", "zero-up", "/zero"),
        balanced_service("none", "none-up", "/none"),
        balanced_service("lc", "lc-up", "/lc"),
        balanced_service("ch", "ch-up", "/ch"),
        balanced_service("hh", "hh-up", "/hh"),
        balanced_service("ck", "ck-up", "/ck"),
        dict(balanced_service("cap", "cap-up", "/cap"),
             routes=[{"name": "cap-route", "paths": ["~/cap/(?<user>[a-z0-9]+)"],
                      "strip_path": False}]),
    ], worker_processes=2)
    cfg["upstreams"] = [
        h.upstream_entity("rr-up", [(rr[0], 300), (rr[1], 200), (rr[2], 100)]),
        h.upstream_entity("zero-up", [(zero[0], 100), (zero[1], 0)]),
        h.upstream_entity("none-up", [(zero[0], 0)]),
        h.upstream_entity("lc-up", [(fast, 100), (slow, 100)], algorithm="least-connections"),
        h.upstream_entity("ch-up", [(u, 100) for u in ch], algorithm="consistent-hashing",
                        hash_on="header", hash_on_header="x-user"),
        h.upstream_entity("hh-up", [(rr[0], 100)], host_header="api.internal"),
        h.upstream_entity("cap-up", [(u, 100) for u in ch], algorithm="consistent-hashing",
                        hash_on="uri_capture", hash_on_uri_capture="user"),
        h.upstream_entity("ck-up", [(u, 100) for u in ck], algorithm="consistent-hashing",
                        hash_on="cookie", hash_on_cookie="sid", hash_on_cookie_path="/ck"),
    ]
    gw = h.Gateway(cfg)
    gw.start()

    def t_round_robin_weights():
        statuses = []
        with h.Conn(port) as c:
            for i in range(600):
                r = c.request("GET", "/rr/w-%d" % i)
                statuses.append(r.status if r is not None else None)
        t.eq(statuses.count(200), 600, "600 requests to a round-robin upstream all answered 200")
        got = counts(rr, "/w-")
        # 600 picks are 100 whole periods of 3:2:1; allow a couple of extra
        # picks (a pooled connection found closed is picked again)
        ok = all(abs(g - want) <= 3 for g, want in zip(got, (300, 200, 100)))
        t.ok(ok, "round-robin follows the weights 300/200/100 across 2 workers",
             "requests per target: %r" % got)

    def t_weight_zero():
        for i in range(40):
            h.get(port, "/zero/z-%d" % i)
        t.eq(counts(zero, "/z-"), [40, 0], "a target of weight 0 never gets a request")

    def t_no_target_at_all():
        r = h.try_get(port, "/none/x")
        h.check_kong_error(t, r, 503, NO_PEER,
                           "an upstream whose only target has weight 0: 503 '%s'" % NO_PEER)

    def t_least_connections():
        errors = []

        def client(k):
            try:
                with h.Conn(port, timeout=10) as c:
                    for i in range(6):
                        r = c.request("GET", "/lc/lcreq-%d-%d" % (k, i), timeout=10)
                        if r is None or r.status != 200:
                            errors.append(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        n_fast, n_slow = len(fast.find("/lcreq-")), len(slow.find("/lcreq-"))
        t.ok(not errors and n_fast + n_slow == 36, "36 concurrent requests to a "
             "least-connections upstream all answered", "errors %r, counts %d/%d"
             % (errors[:3], n_fast, n_slow))
        # round-robin would give 18/18; the slow target holds its
        # connections 300 ms, so it is the busier one most of the time
        t.ok(n_fast >= 2 * n_slow and n_slow >= 1,
             "least-connections sends most requests to the fast target",
             "fast %d, slow %d" % (n_fast, n_slow))

    def t_consistent_hashing():
        placement = {}
        sticky = True
        for user in range(24):
            seen = set()
            for i in range(5):
                before = counts(ch, "/u%d-" % user)
                r = h.get(port, "/ch/u%d-%d" % (user, i), headers={"X-User": "user-%d" % user})
                if r.status != 200:
                    sticky = False
                after = counts(ch, "/u%d-" % user)
                seen.add(tuple(a - b for a, b in zip(after, before)).index(1))
            if len(seen) != 1:
                sticky = False
            placement[user] = seen.pop()
        t.ok(sticky, "consistent-hashing on X-User: every request of a user reaches the same "
             "target", repr(placement))
        used = sorted(set(placement.values()))
        t.ok(len(used) >= 2, "different users spread over several targets", repr(placement))
        # the same users again, on other connections and the other worker
        again = {}
        for user in range(24):
            before = counts(ch, "/again%d-" % user)
            h.get(port, "/ch/again%d-x" % user, headers={"X-User": "user-%d" % user})
            after = counts(ch, "/again%d-" % user)
            again[user] = tuple(a - b for a, b in zip(after, before)).index(1)
        t.eq(again, placement, "a second round maps every user to the same target again")

    def t_host_header():
        for u in rr:
            u.clear()
        for i in range(6):
            h.get(port, "/rr/host-%d" % i)
        hosts = [sorted({rec.header("Host") for rec in u.find("/host-")}) for u in rr]
        t.eq(hosts, [["127.0.0.1:%d" % u.port] for u in rr],
             "Host upstream: the picked target's host:port (Kong)")
        rr[0].clear()
        h.get(port, "/hh/x")
        recs = rr[0].find("/x")
        t.ok(len(recs) == 1 and recs[0].header("Host") == "api.internal:%d" % rr[0].port,
             "Host upstream: the upstream's host_header, with the target's port",
             repr(recs and recs[0].header("Host")))

    def t_hash_cookie():
        r = h.get(port, "/ck/first")
        cookie = r.header("Set-Cookie") or ""
        m = re.fullmatch(r"sid=([0-9a-f]{16}); Path=/ck", cookie)
        t.ok(r.status == 200 and m is not None,
             "hash_on cookie without the cookie: the response sets it (Kong)", repr(cookie))
        if not m:
            return
        for u in ck:
            u.clear()
        set_again = []
        for i in range(10):
            r = h.get(port, "/ck/again-%d" % i, headers={"Cookie": "sid=" + m.group(1)})
            set_again.append(r.header("Set-Cookie"))
        t.eq(set_again, [None] * 10, "no new cookie once the client sends it")
        got = counts(ck, "/again-")
        t.ok(sorted(got) == [0, 0, 10], "every request with the cookie reaches one target",
             repr(got))

    def t_hash_uri_capture():
        placement, sticky = {}, True
        for user in range(12):
            seen = set()
            for i in range(4):
                before = counts(ch, "/cap/user%d/" % user)
                h.get(port, "/cap/user%d/req-%d" % (user, i))
                after = counts(ch, "/cap/user%d/" % user)
                seen.add(tuple(a - b for a, b in zip(after, before)).index(1))
            sticky = sticky and len(seen) == 1
            placement[user] = seen.pop()
        t.ok(sticky and len(set(placement.values())) >= 2,
             "hash_on uri_capture: the regex route's (?<user>) group picks the target",
             repr(placement))

    t.run(t_round_robin_weights)
    t.run(t_weight_zero)
    t.run(t_no_target_at_all)
    t.run(t_least_connections)
    t.run(t_consistent_hashing)
    t.run(t_host_header)
    t.run(t_hash_cookie)
    t.run(t_hash_uri_capture)


if __name__ == "__main__":
    h.main(body, timeout=90)
