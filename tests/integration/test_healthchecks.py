#!/usr/bin/env python3
"""Health checks of an upstream's targets (Kong's healthchecks block):
a killed target is retried elsewhere and taken out by passive tcp_failures;
a target answering 500 is taken out by passive http_failures; active
probes take a failing target out and bring it back once it recovers; with
every target down the client gets Kong's 503."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

NO_PEER = "failure to get a peer from the ring-balancer"


class Switchable(Upstream):
    """The echo upstream; while fail_status is set, every request (probes
    included) gets that status instead."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.fail_status = None

    def _respond(self, c, rd, rec):
        status = self.fail_status
        if status is None:
            return super()._respond(c, rd, rec)
        body = b'{"failing":true}'
        c.sendall(b"HTTP/1.1 %d Failing\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
        return rec.version == "HTTP/1.1" and "close" not in (rec.header("connection") or "")


def target(up, weight=100):
    return {"target": "%s:%d" % (h.LOOPBACK, up.port), "weight": weight}


def balanced_service(name, upstream_name, prefix, **kw):
    s = {"name": name, "host": upstream_name, "port": 80, "path": "/base"}
    s.update(kw)
    s["routes"] = [{"name": name + "-route", "paths": [prefix]}]
    return s


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def body(t):
    # passive tcp_failures
    dead = Upstream(name="tcp-dead").start()
    alive = Upstream(name="tcp-alive").start()
    # passive http_failures
    bad = Switchable(name="http-bad").start()
    good = Upstream(name="http-good").start()
    # active checks
    act_a = Switchable(name="active-a").start()
    act_b = Upstream(name="active-b").start()
    # every target down
    down = [Upstream(name="down-%d" % i).start() for i in range(2)]
    port = h.free_port()
    cfg = h.make_config(port, [
        balanced_service("tcp", "tcp-up", "/tcp", retries=3),
        balanced_service("http", "http-up", "/http"),
        balanced_service("active", "active-up", "/active"),
        balanced_service("down", "down-up", "/down", retries=1),
    ], worker_processes=2)
    cfg["upstreams"] = [
        {"name": "tcp-up", "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 2}}},
         "targets": [target(dead), target(alive)]},
        {"name": "http-up", "healthchecks": {"passive": {"unhealthy": {"http_failures": 3}}},
         "targets": [target(bad), target(good)]},
        {"name": "active-up", "healthchecks": {"active": {
            "http_path": "/health", "timeout": 1, "concurrency": 2,
            "healthy": {"interval": 0.2, "successes": 2},
            "unhealthy": {"interval": 0.2, "http_failures": 2, "tcp_failures": 2,
                          "timeouts": 2}}},
         "targets": [target(act_a), target(act_b)]},
        {"name": "down-up", "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 1}}},
         "targets": [target(down[0]), target(down[1])]},
    ]
    gw = h.Gateway(cfg)
    gw.start()
    dead_port = dead.port

    def t_killed_target():
        dead.stop()
        statuses = [h.get(port, "/tcp/k-%d" % i).status for i in range(20)]
        t.eq(statuses, [200] * 20, "a killed target: connection failures are retried on the "
             "other target, the client sees no error")
        t.ok(wait_until(lambda: "target %s:%d is now unhealthy" % (h.LOOPBACK, dead_port)
                        in gw.stderr(), 3),
             "the killed target is marked unhealthy by passive tcp_failures",
             gw.stderr_tail())
        # something listens there again: with passive checks only, an
        # unhealthy target gets no traffic (Kong)
        revived = Upstream(name="tcp-revived", port=dead_port).start()
        for i in range(20):
            h.get(port, "/tcp/after-%d" % i)
        t.eq(len(revived.requests()), 0, "no request goes to the unhealthy target any more")
        t.eq(len(alive.find("/after-")), 20, "the healthy target takes all of them")
        # a reload of the same file keeps the health of unchanged targets
        gw.send_signal(signal.SIGHUP)
        t.ok(wait_until(lambda: "configuration reloaded" in gw.stderr(), 5),
             "SIGHUP reloads the configuration", gw.stderr_tail())
        for i in range(10):
            h.get(port, "/tcp/reloaded-%d" % i)
        t.ok(len(revived.requests()) == 0 and len(alive.find("/reloaded-")) == 10,
             "after the reload the target is still unhealthy: still no traffic",
             "revived got %d" % len(revived.requests()))

    def t_http_failures():
        bad.fail_status = 500
        statuses = [h.get(port, "/http/f-%d" % i).status for i in range(30)]
        t.eq(statuses.count(500), 3, "a target answering 500: exactly http_failures (3) of "
             "its answers reach clients (5xx is not retried)", repr(statuses))
        t.ok(all(s == 200 for s in statuses[-20:]),
             "then it is unhealthy: the next requests all go to the other target",
             repr(statuses))
        t.ok("target %s:%d is now unhealthy (passive http_failures 3/3)"
             % (h.LOOPBACK, bad.port) in gw.stderr(), "the error log says why")

    def spread(prefix, n):
        before = (len(act_a.find(prefix)), len(act_b.find(prefix)))
        for i in range(n):
            h.get(port, "/active%s%d" % (prefix, i))
        return (len(act_a.find(prefix)) - before[0], len(act_b.find(prefix)) - before[1])

    def t_active_checks():
        probes = act_b.wait_requests(2, timeout=3, pred=lambda r: r.path == "/health")
        t.ok(len(probes) >= 2 and probes[0].method == "GET" and probes[0].version == "HTTP/1.0",
             "active probes: GET /health HTTP/1.0 every 0.2 s", repr(probes[:1]))
        a, b = spread("/before-", 20)
        t.ok(a > 0 and b > 0, "both targets healthy: both get traffic", "a=%d b=%d" % (a, b))
        act_a.fail_status = 503
        gone = wait_until(lambda: "target %s:%d is now unhealthy (active http_failures"
                          % (h.LOOPBACK, act_a.port) in gw.stderr(), 5)
        t.ok(gone, "a target whose probes answer 503 is taken out by the active checks",
             gw.stderr_tail())
        a, b = spread("/during-", 20)
        t.eq((a, b), (0, 20), "while unhealthy it gets no traffic")
        act_a.fail_status = None
        back = wait_until(lambda: "target %s:%d is now healthy (active successes"
                          % (h.LOOPBACK, act_a.port) in gw.stderr(), 5)
        t.ok(back, "it recovers: active probes bring it back", gw.stderr_tail())
        a, b = spread("/after-", 20)
        t.ok(a > 0 and b > 0, "after recovery both targets get traffic again",
             "a=%d b=%d" % (a, b))

    def t_all_down():
        for u in down:
            u.stop()
        first = h.try_get(port, "/down/first")
        t.ok(isinstance(first, h.Response) and first.status in (502, 503),
             "every target refuses: the first request fails (502/503)", repr(first))
        r = h.try_get(port, "/down/second")
        h.check_kong_error(t, r, 503, NO_PEER,
                           "every target unhealthy: 503 '%s' in Kong's JSON shape" % NO_PEER)
        r = h.try_get(port, "/down/text", headers={"Accept": "text/plain"})
        h.check_kong_error(t, r, 503, NO_PEER, "the same in plain text when asked for",
                           plain=True)

    t.run(t_killed_target)
    t.run(t_http_failures)
    t.run(t_active_checks)
    t.run(t_all_down)


if __name__ == "__main__":
    h.main(body, timeout=90)
