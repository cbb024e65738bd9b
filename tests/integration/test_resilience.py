#!/usr/bin/env python3
"""Resilience per service, through the gateway (the sidecar has the same
engine): retry_policy (Envoy's retry_on, num_retries, per-try and overall
timeouts, jittered backoff, previous-host avoidance, the replay buffer and
its bound, non-idempotent requests), Linkerd's retry budget, circuit
breakers, and outlier detection (ejection, the probe when it ends, the
ejection doubling), with their metrics checked by promtool."""

import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream, gen_bytes, sha256  # noqa: E402

# retries should not wait or be refused unless a test says so
QUICK = {"backoff": {"base_interval": 1, "max_interval": 2},
         "budget": {"ratio": 1.0, "min_retries_per_second": 100000}}


def policy(**kw):
    p = dict(QUICK)
    p.update(kw)
    return p


def balanced(name, prefix, **kw):
    s = {"name": name, "host": name + "-up", "port": 80, "path": "/base"}
    s.update(kw)
    s["routes"] = [{"name": name, "paths": [prefix]}]
    return s


def rid(prefix, i):
    return "%s-%04d" % (prefix, i)


def ids_at(up, prefix):
    return [r.header("x-request-id") for r in up.requests()
            if (r.header("x-request-id") or "").startswith(prefix)]


def body(t):
    od_bad = Upstream(mode="status:503", name="od-bad").start()
    od_good = Upstream(name="od-good").start()
    pr_bad = Upstream(mode="status:503", name="pr-bad").start()
    pr_good = Upstream(name="pr-good").start()
    kill = [Upstream(name="kill-%d" % i).start() for i in range(2)]
    dead = [Upstream(mode="status:503", name="dead-%d" % i).start() for i in range(2)]
    slow = Upstream(name="cb-slow").start()
    closed_port = h.free_port()  # nothing listens there
    post_good = Upstream(name="post-good").start()
    resetter = Upstream(mode="reset", name="resetter").start()
    reset_good = Upstream(name="reset-good").start()
    body_bad = Upstream(mode="status:503", name="body-bad").start()
    body_good = Upstream(name="body-good").start()
    hang = [Upstream(mode="hang", name="hang-%d" % i, io_timeout=5).start() for i in range(2)]
    backoff_up = Upstream(mode="status:503", name="backoff").start()
    avoid = [Upstream(mode="status:503", name="avoid-bad-%d" % i).start() for i in range(2)]
    avoid.append(Upstream(name="avoid-good").start())

    port, status_port = h.free_port(), h.free_port()
    outlier = {"consecutive_5xx": 3, "base_ejection_time": 30000, "max_ejection_time": 300000,
               "max_ejection_percent": 50}
    services = [
        balanced("od", "/od", retry_policy=policy(retry_on=["gateway-error"], num_retries=2),
                 outlier_detection=outlier),
        balanced("pr", "/pr", retry_policy=policy(retry_on=["gateway-error"], num_retries=2),
                 outlier_detection=dict(outlier, base_ejection_time=600)),
        balanced("kill", "/kill",
                 retry_policy=policy(retry_on=["connect-failure", "reset", "gateway-error"],
                                     num_retries=2)),
        balanced("dead", "/dead",
                 retry_policy={"retry_on": ["gateway-error"], "num_retries": 3,
                               "backoff": {"base_interval": 1, "max_interval": 2},
                               "budget": {"ratio": 0.2, "min_retries_per_second": 1,
                                          "ttl": 10000}}),
        h.service("cb", slow.port, path="/slow/1500", routes=[{"name": "cb", "paths": ["/cb"]}],
                  circuit_breakers={"max_requests": 2}),
        balanced("post", "/post", retry_policy=policy(retry_on=["connect-failure"],
                                                      num_retries=1)),
        balanced("reset", "/reset", retry_policy=policy(retry_on=["reset"], num_retries=2)),
        balanced("body", "/body", retry_policy=policy(retry_on=["gateway-error"], num_retries=1,
                                                      max_body_bytes=1024)),
        balanced("pertry", "/pertry", retry_policy=policy(retry_on=["gateway-error"],
                                                          num_retries=2, per_try_timeout=300)),
        balanced("overall", "/overall",
                 retry_policy=policy(retry_on=["gateway-error"], num_retries=5,
                                     per_try_timeout=300, timeout=700)),
        h.service("backoff", backoff_up.port, routes=[{"name": "backoff", "paths": ["/backoff"]}],
                  retry_policy={"retry_on": ["gateway-error"], "num_retries": 3,
                                "backoff": {"base_interval": 100, "max_interval": 1000},
                                "budget": {"ratio": 1.0, "min_retries_per_second": 100000}}),
        balanced("avoid", "/avoid", retry_policy=policy(retry_on=["gateway-error"],
                                                        num_retries=2)),
    ]
    cfg = h.make_config(port, services, worker_processes=2,
                        status_listen="%s:%d" % (h.LOOPBACK, status_port))
    cfg["upstreams"] = [
        h.upstream_entity("od-up", [(od_bad, 100), (od_good, 100)]),
        h.upstream_entity("pr-up", [(pr_bad, 100), (pr_good, 100)]),
        h.upstream_entity("kill-up", [(u, 100) for u in kill]),
        h.upstream_entity("dead-up", [(u, 100) for u in dead]),
        h.upstream_entity("post-up", [(closed_port, 100), (post_good, 100)]),
        h.upstream_entity("reset-up", [(resetter, 100), (reset_good, 100)]),
        h.upstream_entity("body-up", [(body_bad, 100), (body_good, 100)]),
        h.upstream_entity("pertry-up", [(u, 100) for u in hang]),
        h.upstream_entity("overall-up", [(u, 100) for u in hang]),
        h.upstream_entity("avoid-up", [(u, 100) for u in avoid], algorithm="consistent-hashing",
                          hash_on="header", hash_on_header="x-user"),
    ]
    gw = h.Gateway(cfg)
    gw.start()

    def metrics():
        return h.parse_metrics(h.scrape(status_port))

    def t_ejection():
        statuses = []
        with h.Conn(port) as c:
            for i in range(200):
                r = c.request("GET", "/od/x", [("X-Request-Id", rid("od", i))])
                statuses.append(r.status)
        t.eq(statuses.count(200), 200, "one replica answering 503, one 200: 200 sequential "
             "requests all succeed (retried on the other replica)")
        t.eq(len(od_bad.requests()), 3, "after 3 consecutive 5xx the broken replica is ejected "
             "and receives no more requests (30 s ejection)")
        m = metrics()
        target = "%s:%d" % (h.LOOPBACK, od_bad.port)
        t.eq(h.metric(m, "sluice_upstream_ejections_active", service="od", target=target), 1.0,
             "/metrics: the broken replica is ejected now")
        t.eq(h.metric(m, "sluice_upstream_ejections_total", service="od", target=target), 1.0,
             "/metrics: one ejection")
        t.eq(h.metric(m, "sluice_upstream_retries_total", service="od",
                      reason="retriable-status"), 3.0, "/metrics: three retries after a 503")

    def t_probe():
        n = 0
        while len(pr_bad.requests()) < 3 and n < 50:
            h.get(port, "/pr/warm")
            n += 1
        t.eq(len(pr_bad.requests()), 3, "probe: the broken replica is ejected after 3 failures")
        time.sleep(0.8)  # the 600 ms ejection is over
        before = len(pr_bad.requests())
        for i in range(20):
            h.get(port, "/pr/after-1")
        t.eq(len(pr_bad.requests()) - before, 1, "when the ejection ends exactly one probe "
             "goes to the target; it fails, so it is ejected again")
        pr_bad.mode = None  # healthy from now on
        time.sleep(0.5)  # the second ejection (2 x 600 ms) is not over yet
        before = len(pr_bad.requests())
        for i in range(10):
            h.get(port, "/pr/during")
        t.eq(len(pr_bad.requests()) - before, 0, "the second ejection lasts twice the first "
             "(still out after 0.5 s of 1.2 s)")
        time.sleep(0.9)
        before = len(pr_bad.requests())
        statuses = [h.get(port, "/pr/back").status for _ in range(20)]
        got = len(pr_bad.requests()) - before
        t.ok(statuses.count(200) == 20 and got >= 8, "after a good probe the target takes full "
             "traffic again", "statuses %r, %d of 20 to the recovered target" % (statuses, got))
        t.eq(h.metric(metrics(), "sluice_upstream_ejections_total", service="pr",
                      target="%s:%d" % (h.LOOPBACK, pr_bad.port)), 2.0,
             "/metrics: two ejections (the first, and after the failed probe)")

    def t_replica_killed():
        errors, done = [], [0]
        lock = threading.Lock()

        def client(k):
            try:
                with h.Conn(port, timeout=10) as c:
                    for i in range(60):
                        r = c.request("GET", "/kill/k%d-%d" % (k, i), timeout=10)
                        with lock:
                            done[0] += 1
                            if r is None or r.status != 200:
                                errors.append(r.status if r is not None else None)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 20
        while done[0] < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        kill[0].stop()  # its connections are cut and its port refuses from now on
        for th in threads:
            th.join(30)
        t.ok(not errors and done[0] == 600, "a replica killed under load (10 clients): no "
             "client error", "done %d, errors %r" % (done[0], errors[:10]))
        m = metrics()
        retried = h.metric_sum(m, "sluice_upstream_retries_total", service="kill")
        t.ok(retried >= 1, "the killed replica's requests were retried", "retries %r" % retried)

    def t_budget():
        lock = threading.Lock()
        statuses = []

        def client(k):
            with h.Conn(port, timeout=10) as c:
                for i in range(30):
                    r = c.request("GET", "/dead/d%d-%d" % (k, i), timeout=10)
                    with lock:
                        statuses.append(r.status)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        upstream = sum(len(u.requests()) for u in dead)
        ratio = upstream / 300.0
        # ratio 0.2, plus the floor: 1 retry/s over the 10 s window
        bound = 1 + 0.2 + 10 / 300.0 + 0.03
        t.ok(len(statuses) == 300 and set(statuses) == {503}, "every target answers 503: the "
             "client gets the last upstream answer, 503", repr(sorted(set(statuses))))
        t.ok(1.1 <= ratio <= bound, "retry budget: upstream requests / client requests is "
             "%.3f, within 1 + ratio + floor (%.3f), not 1 + num_retries (4)" % (ratio, bound),
             "%d upstream requests for 300" % upstream)
        refused = h.metric(metrics(), "sluice_upstream_retry_budget_exhausted_total",
                           service="dead")
        t.ok(refused and refused >= 100, "/metrics: retries refused by the budget",
             "refused %r" % refused)

    def t_max_requests():
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(10)

        def client(k):
            barrier.wait()
            t0 = time.monotonic()
            r = h.try_get(port, "/cb/c%d" % k, timeout=10)
            with lock:
                results.append((r, time.monotonic() - t0))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        ok = [(r, d) for r, d in results if isinstance(r, h.Response) and r.status == 200]
        over = [(r, d) for r, d in results if isinstance(r, h.Response) and r.status == 503]
        t.eq((len(ok), len(over)), (2, 8), "max_requests 2, 10 concurrent clients of a slow "
             "upstream: 2 succeed, 8 are refused",
             repr([(getattr(r, "status", r), round(d, 3)) for r, d in results]))
        t.ok(all(d < 1.0 for _, d in over), "the overflow is answered at once (well before the "
             "1.5 s upstream)", repr([round(d, 3) for _, d in over]))
        t.ok(all(r.header("x-sluice-overloaded") == "true" and r.is_json() and
                 r.json().get("message") == "upstream overloaded" for r, _ in over),
             "the overflow is 503 with x-sluice-overloaded: true and "
             '{"message":"upstream overloaded"}', repr(over[0][0]) if over else "none")
        t.eq(h.metric(metrics(), "sluice_upstream_overflow_total", service="cb",
                      breaker="requests"), 8.0, "/metrics: 8 overflows of max_requests")

    def t_post_not_sent():
        statuses = []
        for i in range(10):
            r = h.get(port, "/post/p", method="POST", body=b"payload-%d" % i,
                      headers=[("X-Request-Id", rid("post", i))])
            statuses.append(r.status)
        got = ids_at(post_good, "post-")
        t.ok(statuses.count(200) == 10 and len(got) == 10, "POST whose connect failed (no byte "
             "sent) is retried on another target: 10 of 10 succeed", repr(statuses))

    def t_post_sent():
        statuses = {}
        for i in range(10):
            r = h.try_get(port, "/reset/p", method="POST", body=b"payload",
                          headers=[("X-Request-Id", rid("rpost", i))])
            statuses[rid("rpost", i)] = getattr(r, "status", None)
        at_reset = set(ids_at(resetter, "rpost-"))
        at_good = set(ids_at(reset_good, "rpost-"))
        t.ok(at_reset and not (at_reset & at_good) and
             all(statuses[i] == 502 for i in at_reset),
             "POST that reached an upstream which then reset is not retried (502)",
             "statuses %r; at the resetter %r; at the good one %r" % (statuses, at_reset,
                                                                      at_good))
        gets = [h.get(port, "/reset/g", headers=[("X-Request-Id", rid("rget", i))]).status
                for i in range(10)]
        t.eq(gets.count(200), 10, "GET on the same targets is retried after the reset: 10 of "
             "10 succeed")

    def t_replay_bounds():
        small = gen_bytes(512, seed=1)
        big = gen_bytes(4096, seed=2)
        smalls = [h.get(port, "/body/s", method="PUT", body=small,
                        headers=[("X-Request-Id", rid("small", i))]).status for i in range(8)]
        good_small = [r for r in body_good.requests()
                      if (r.header("x-request-id") or "").startswith("small-")]
        retried = [r for r in good_small if r.header("x-request-id") in ids_at(body_bad,
                                                                                  "small-")]
        t.ok(smalls.count(200) == 8 and retried and
             all(r.body_len == 512 and r.body_sha256 == sha256(small) for r in good_small),
             "a body under max_body_bytes is sent again whole on the retry",
             "statuses %r, %d retried" % (smalls, len(retried)))
        chunked = h.chunked(small, sizes=[100, 200, 212])
        cstat = []
        for i in range(6):
            with h.Conn(port) as c:
                c.send(h.build_request("PUT", "/body/c", [("Transfer-Encoding", "chunked"),
                                                          ("X-Request-Id", rid("chunk", i))]) +
                       chunked)
                cstat.append(c.read_response(method="PUT").status)
        good_chunk = [r for r in body_good.requests()
                      if (r.header("x-request-id") or "").startswith("chunk-")]
        t.ok(cstat.count(200) == 6 and
             all(r.body_len == 512 and r.body_sha256 == sha256(small) for r in good_chunk),
             "a chunked body is replayed intact", repr(cstat))
        bigs = {}
        for i in range(8):
            bigs[rid("big", i)] = h.get(port, "/body/b", method="PUT", body=big,
                                        headers=[("X-Request-Id", rid("big", i))]).status
        first_bad = set(ids_at(body_bad, "big-"))
        t.ok(first_bad and all(bigs[i] == 503 for i in first_bad) and
             not (first_bad & set(ids_at(body_good, "big-"))),
             "a body over max_body_bytes is not retried: the client gets the upstream's 503",
             "statuses %r, first at the 503 target %r" % (bigs, first_bad))

    def t_timeouts():
        t0 = time.monotonic()
        r = h.try_get(port, "/pertry/x", timeout=10, headers=[("X-Request-Id", "pertry-1")])
        took = time.monotonic() - t0
        tries = sum(len(ids_at(u, "pertry-")) for u in hang)
        t.ok(getattr(r, "status", None) == 504 and tries == 3 and 0.85 <= took <= 4.0,
             "per_try_timeout 300 ms, 2 retries, hanging targets: 3 tries, then 504 after "
             "about 0.9 s", "status %r, %d tries, %.3f s" % (getattr(r, "status", r), tries,
                                                               took))
        t0 = time.monotonic()
        r = h.try_get(port, "/overall/x", timeout=10, headers=[("X-Request-Id", "overall-1")])
        took = time.monotonic() - t0
        tries = sum(len(ids_at(u, "overall-")) for u in hang)
        t.ok(getattr(r, "status", None) == 504 and tries == 3 and 0.65 <= took <= 2.0,
             "timeout 700 ms over all tries cuts the retries short: 504 after about 0.7 s, "
             "3 tries of the 6 allowed", "status %r, %d tries, %.3f s"
             % (getattr(r, "status", r), tries, took))

    def t_backoff():
        gaps = {1: [], 2: [], 3: []}
        for i in range(8):
            r = h.get(port, "/backoff/x", headers=[("X-Request-Id", rid("bo", i))], timeout=10)
            if r.status != 503:
                t.ok(False, "backoff: the last answer (503) reaches the client", repr(r))
                return
        for i in range(8):
            times = sorted(rec.time for rec in backoff_up.requests()
                           if rec.header("x-request-id") == rid("bo", i))
            if len(times) != 4:
                t.ok(False, "backoff: 4 tries per request", "%d tries" % len(times))
                return
            for n in (1, 2, 3):
                gaps[n].append(times[n] - times[n - 1])
        slack = 0.08
        within = all(g < (2 ** n - 1) * 0.100 + slack for n in (1, 2, 3) for g in gaps[n])
        t.ok(within, "backoff: retry n waits less than (2^n - 1) x 100 ms (+%d ms)"
             % (slack * 1000), repr({n: [round(g, 3) for g in gaps[n]] for n in gaps}))
        spread = max(gaps[3]) - min(gaps[3])
        t.ok(statistics.mean(gaps[3]) > 0.08 and spread > 0.05, "backoff is jittered: the "
             "third wait varies and averages well above 0 (uniform in [0, 700) ms)",
             "third waits %r" % [round(g, 3) for g in gaps[3]])

    def t_avoidance():
        statuses = []
        for i in range(30):
            r = h.get(port, "/avoid/x", headers=[("X-User", "user-%d" % i),
                                                ("X-Request-Id", rid("av", i))])
            statuses.append(r.status)
        repeats = 0
        for u in avoid:
            ids = ids_at(u, "av-")
            repeats += len(ids) - len(set(ids))
        t.ok(statuses.count(200) == 30 and repeats == 0, "a retry goes to another target than "
             "the one that failed (consistent hashing would pick it again): 30 of 30 succeed, "
             "no target sees a request twice", "statuses %r, repeats %d" % (statuses, repeats))

    t.run(t_ejection)
    t.run(t_probe)
    t.run(t_replica_killed)
    t.run(t_budget)
    t.run(t_max_requests)
    t.run(t_post_not_sent)
    t.run(t_post_sent)
    t.run(t_replay_bounds)
    t.run(t_timeouts)
    t.run(t_backoff)
    t.run(t_avoidance)
    text = h.scrape(status_port)
    h.promtool_check(t, text, "promtool check metrics accepts the scrape with the resilience "
                     "families")


if __name__ == "__main__":
    h.main(body, timeout=240)
