#!/usr/bin/env python3
"""The rate-limiting plugin through real gateways and a real redis-server
(started here on a free loopback port, stopped by pid): Kong's headers and
429 body, each limit_by, the local policy exact under concurrency across
workers, the redis policy exact across three gateway processes, the sliding
window at a boundary, Redis stopped (fault_tolerant passes, otherwise 500)
and restarted (limiting resumes), a wrong password or database logged
clearly, and the /metrics families."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402
from backends import Redis  # noqa: E402


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(iss, key):
    signing = b64(b'{"alg":"HS256"}') + "." + b64(json.dumps({"iss": iss}).encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


def rl(**cfg):
    return {"name": "rate-limiting", "config": cfg}


def get(port, path, headers=None, source=None):
    """One request; source binds the client to another loopback address."""
    try:
        if source:
            s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                         source_address=(source, 0))
            c = h.Conn.from_socket(s, port)
            hs = list((headers or {}).items()) + [("Connection", "close")]
            try:
                return c.request("GET", path, hs)
            finally:
                c.close()
        return h.get(port, path, headers=headers)
    except (h.Timeout, h.ProtocolError, OSError) as e:
        return e


def statuses(port, path, n, headers=None, parallel=False):
    out = [None] * n

    def one(i):
        r = get(port, path, headers)
        out[i] = r.status if isinstance(r, h.Response) else repr(r)
    if not parallel:
        for i in range(n):
            one(i)
        return out
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    return out


def wait_second_fraction(lo, hi):
    """Sleep until the current second's fraction is in [lo, hi)."""
    while True:
        f = time.time() % 1
        if lo <= f < hi:
            return
        time.sleep(0.002)


def around_boundary(before, after, attempts=3):
    """Run before() late in one second and after() early in the next; their
    results, or None when no attempt kept to that timing (a loaded machine
    can stretch a batch over the boundary, which says nothing about the
    limiter). Between attempts, 2.5 s let the windows involved expire."""
    for i in range(attempts):
        if i:
            time.sleep(2.5)
        wait_second_fraction(0.80, 0.85)
        start = time.time()
        first = before()
        if int(time.time()) != int(start):
            continue
        wait_second_fraction(0.03, 0.10)
        second = after()
        if time.time() - start < 1.15:
            return first, second
    return None


def local_config(port, up_port):
    url = "http://127.0.0.1:%d" % up_port
    route = lambda name, *plugins, **kw: dict({"name": name, "paths": ["/" + name],  # noqa
                                               "plugins": list(plugins)}, **kw)
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 2},
        "consumers": [{"username": "alice", "jwt_secrets": [{"key": "a", "secret": "sa"}]},
                      {"username": "bob", "jwt_secrets": [{"key": "b", "secret": "sb"}]}],
        "services": [
            {"name": "s", "url": url, "routes": [
                route("kong", rl(hour=5)),
                route("hidden", rl(hour=2, hide_client_headers=True, error_code=503,
                                   error_message="slow down")),
                route("byip", rl(hour=2, limit_by="ip")),
                route("byheader", rl(hour=2, limit_by="header", header_name="X-Api-Key")),
                route("bypath", rl(hour=2, limit_by="path", path="/bypath/one")),
                route("byconsumer", {"name": "jwt"}, rl(hour=2)),
                route("bycredential", {"name": "jwt"}, rl(hour=2, limit_by="credential")),
                route("exact", rl(hour=50)),
                route("fixed", rl(second=10)),
                route("sliding", rl(second=10, algorithm="sliding")),
            ]},
            {"name": "svc", "url": url, "plugins": [rl(hour=3, limit_by="service")],
             "routes": [{"name": "svc-a", "paths": ["/svc-a"]},
                        {"name": "svc-b", "paths": ["/svc-b"]}]},
        ],
    }


def body(t):
    if not shutil.which("redis-server"):
        t.ok(False, "redis-server is installed (./dev test installs it)")
        return
    up = Upstream().start()
    port = h.free_port()
    gw = h.Gateway(local_config(port, up.port), port=port)
    gw.start()

    def t_kong_headers():
        rs = [get(port, "/kong/x") for _ in range(6)]
        t.eq([r.status for r in rs], [200] * 5 + [429], "hour=5: five pass, the sixth is 429")
        t.eq([r.header("X-RateLimit-Remaining-Hour") for r in rs], ["4", "3", "2", "1", "0", "0"],
             "X-RateLimit-Remaining-Hour counts down to 0")
        t.ok(all(r.header("X-RateLimit-Limit-Hour") == "5" and r.header("RateLimit-Limit") == "5"
                 for r in rs), "X-RateLimit-Limit-Hour and RateLimit-Limit")
        reset = int(rs[5].header("RateLimit-Reset", "0"))
        t.ok(1 <= reset <= 3600 and rs[5].header("Retry-After") == str(reset),
             "RateLimit-Reset: seconds to the end of the UTC hour; Retry-After the same",
             repr((reset, rs[5].header("Retry-After"))))
        body_ = rs[5].json() if rs[5].is_json() else {}
        t.ok(body_.get("message") == "API rate limit exceeded" and "request_id" in body_,
             "429 body: Kong's message and the request id", repr(rs[5].body))
        t.ok(rs[0].header("Retry-After") is None, "no Retry-After while admitted")
        rs = [get(port, "/hidden/x") for _ in range(3)]
        t.ok([r.status for r in rs] == [200, 200, 503] and
             rs[0].header("X-RateLimit-Limit-Hour") is None and
             rs[2].header("RateLimit-Remaining") is None and rs[2].header("Retry-After"),
             "hide_client_headers, error_code and error_message", repr([r.status for r in rs]))
        t.ok(b"slow down" in rs[2].body, "the configured error_message", repr(rs[2].body))

    def t_limit_by():
        t.eq([get(port, "/byip/x", source=src).status
              for src in ("127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3")],
             [200, 200, 429, 200], "limit_by ip: each client address has its own count")
        got = [get(port, "/byheader/x", {"X-Api-Key": k}).status
               for k in ("k1", "k1", "k1", "k2")]
        t.eq(got, [200, 200, 429, 200], "limit_by header: per X-Api-Key value")
        got = [get(port, p).status for p in ("/bypath/one", "/bypath/one", "/bypath/one")]
        t.eq(got, [200, 200, 429], "limit_by path: the configured path is counted")
        got = [get(port, "/bypath/two", source="127.0.0.4").status for _ in range(3)]
        t.eq(got, [200, 200, 429], "limit_by path: another path falls back to the client ip")
        alice = {"Authorization": "Bearer " + hs256("a", b"sa")}
        bob = {"Authorization": "Bearer " + hs256("b", b"sb")}
        got = [get(port, "/byconsumer/x", hd).status for hd in (alice, alice, alice, bob)]
        t.eq(got, [200, 200, 429, 200], "limit_by consumer (after jwt): per consumer")
        got = [get(port, "/bycredential/x", hd).status for hd in (bob, bob, bob, alice)]
        t.eq(got, [200, 200, 429, 200], "limit_by credential: per credential")
        got = [get(port, p).status for p in ("/svc-a/x", "/svc-b/x", "/svc-a/x", "/svc-b/x")]
        t.eq(got, [200, 200, 200, 429], "limit_by service: the service's routes share a count")

    def t_local_exact():
        got = statuses(port, "/exact/x", 200, parallel=True)
        t.ok(got.count(200) == 50 and got.count(429) == 150,
             "local, 200 concurrent requests over 2 workers against 50: exactly 50 admitted",
             "200: %d, 429: %d, other: %r" % (got.count(200), got.count(429),
                                              [s for s in got if s not in (200, 429)]))

    def t_sliding():
        both = lambda: (statuses(port, "/fixed/x", 10, parallel=True),  # noqa: E731
                        statuses(port, "/sliding/x", 10, parallel=True))
        got = around_boundary(both, both)
        t.ok(got is not None, "three tries to send one batch just before a second's end and one "
             "just after (the machine is too loaded otherwise)")
        if got is None:
            return
        (fixed, sliding), (fixed2, sliding2) = got
        fixed += fixed2
        sliding += sliding2
        t.eq(fixed.count(200), 20,
             "fixed window: 10 before and 10 after the boundary all pass (2x the limit)")
        t.ok(sliding.count(200) <= 12,
             "sliding window: at most the limit (+ the rounding of one) around the boundary",
             "admitted %d" % sliding.count(200))

    t.run(t_kong_headers)
    t.run(t_limit_by)
    t.run(t_local_exact)
    t.run(t_sliding)
    gw.stop()
    gw.check_clean(t)

    # ---- redis -------------------------------------------------------------
    redis = Redis().start()
    bad_pw = Redis(password="right").start()
    url = "http://127.0.0.1:%d" % up.port

    def redis_cfg(p, **extra):
        base = {"policy": "redis", "redis": {"host": "127.0.0.1", "port": redis.port,
                                             "timeout": 500}}
        base.update(extra)
        return rl(**base)

    def gw_config(p):
        return {
            "_format_version": "3.0",
            "gateway": {"proxy_listen": ["127.0.0.1:%d" % p], "status_listen": "off",
                        "worker_processes": 2},
            "services": [{"name": "s", "url": url, "routes": [
                {"name": "shared", "paths": ["/shared"], "plugins": [redis_cfg(p, hour=30)]},
                {"name": "headers", "paths": ["/headers"], "plugins": [redis_cfg(p, hour=3)]},
                {"name": "tolerant", "paths": ["/tolerant"],
                 "plugins": [redis_cfg(p, hour=1000)]},
                {"name": "strict", "paths": ["/strict"],
                 "plugins": [redis_cfg(p, hour=1000, fault_tolerant=False)]},
                {"name": "sliding", "paths": ["/rsliding"],
                 "plugins": [redis_cfg(p, second=10, algorithm="sliding")]},
                {"name": "badpw", "paths": ["/badpw"], "plugins": [rl(
                    hour=10, policy="redis", redis_host="127.0.0.1", redis_port=bad_pw.port,
                    redis_password="wrong")]},
                {"name": "synced", "paths": ["/synced"],
                 "plugins": [redis_cfg(p, hour=20, sync_rate=0.5)]},
                {"name": "baddb", "paths": ["/baddb"], "plugins": [rl(
                    hour=10, policy="redis", redis={"host": "127.0.0.1", "port": redis.port,
                                                    "database": 999})]},
            ]}],
        }
    ports = [h.free_port() for _ in range(3)]
    gws = []
    for i, p in enumerate(ports):
        g = h.Gateway(gw_config(p), port=p, name="gateway-%d" % i)
        g.start()
        gws.append(g)

    def t_redis_headers():
        rs = [get(ports[0], "/headers/x") for _ in range(4)]
        t.ok([r.status for r in rs] == [200, 200, 200, 429] and
             [r.header("X-RateLimit-Remaining-Hour") for r in rs] == ["2", "1", "0", "0"] and
             rs[3].header("Retry-After") is not None,
             "redis: Kong's headers and 429", repr([(r.status, r.headers) for r in rs[-1:]]))

    def t_replicas():
        results = []
        lock = threading.Lock()

        def one(i):
            r = get(ports[i % 3], "/shared/x")
            with lock:
                results.append(r.status if isinstance(r, h.Response) else repr(r))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(120)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        t.ok(results.count(200) == 30 and results.count(429) == 90,
             "redis, three gateways, 120 concurrent requests against 30: exactly 30 admitted",
             "200: %d, 429: %d, other: %r" % (results.count(200), results.count(429),
                                              [s for s in results if s not in (200, 429)]))

    def t_redis_sliding():
        batches = around_boundary(lambda: statuses(ports[1], "/rsliding/x", 10, parallel=True),
                                  lambda: statuses(ports[2], "/rsliding/x", 10, parallel=True))
        t.ok(batches is not None, "redis: three tries to send the two batches around a boundary")
        if batches is None:
            return
        got = batches[0] + batches[1]
        t.ok(got.count(200) <= 12, "redis sliding window: no 2x burst around the boundary",
             "admitted %d" % got.count(200))

    def t_redis_down_and_back():
        redis.stop()
        time.sleep(0.3)
        r = get(ports[0], "/tolerant/x")
        t.ok(isinstance(r, h.Response) and r.status == 200 and
             r.header("X-RateLimit-Limit-Hour") is None,
             "Redis down, fault_tolerant: passes without rate-limit headers", repr(r))
        r = get(ports[0], "/strict/x")
        t.ok(isinstance(r, h.Response) and r.status == 500,
             "Redis down, fault_tolerant false: 500", repr(r))
        redis.start()  # the same port
        deadline = time.time() + 12
        ok = False
        while time.time() < deadline and not ok:
            r = get(ports[0], "/tolerant/x")
            ok = isinstance(r, h.Response) and r.header("X-RateLimit-Limit-Hour") == "1000"
            time.sleep(0.2)
        t.ok(ok, "Redis back: limiting resumes by itself")
        t.ok("rate-limiting: redis" in gws[0].stderr(),
             "the Redis error is in the log", gws[0].stderr_tail(5))

    def t_bad_credentials():
        r = get(ports[1], "/badpw/x")
        time.sleep(0.5)
        r = get(ports[1], "/badpw/x")
        t.ok(isinstance(r, h.Response) and r.status == 200,
             "wrong Redis password: requests still served (fault_tolerant)", repr(r))
        deadline = time.time() + 3
        while time.time() < deadline and "AUTH failed" not in gws[1].stderr():
            time.sleep(0.1)
        t.ok("AUTH failed" in gws[1].stderr(), "wrong password: 'AUTH failed' in the log",
             gws[1].stderr_tail(5))
        get(ports[2], "/baddb/x")
        deadline = time.time() + 3
        while time.time() < deadline and "SELECT failed" not in gws[2].stderr():
            time.sleep(0.1)
            get(ports[2], "/baddb/x")
        t.ok("SELECT failed" in gws[2].stderr(), "wrong database: 'SELECT failed' in the log",
             gws[2].stderr_tail(5))

    def t_sync_rate():
        # two single-worker gateways: each counts locally and syncs every 0.5 s
        sp = [h.free_port() for _ in range(2)]
        sg = []
        for i, p in enumerate(sp):
            cfg = gw_config(p)
            cfg["gateway"]["worker_processes"] = 1
            g = h.Gateway(cfg, port=p, name="gateway-sync-%d" % i)
            g.start()
            sg.append(g)
        a = statuses(sp[0], "/synced/x", 12)
        t.eq(a.count(200), 12, "sync_rate: counted locally, no round trip per request")
        b1 = statuses(sp[1], "/synced/x", 1)
        time.sleep(1.5)  # both synced: Redis has 13, each gateway has read it back
        b = statuses(sp[1], "/synced/x", 12)
        t.ok(b1 == [200] and b.count(200) == 7 and b.count(429) == 5,
             "sync_rate: another gateway sees the synced count (13 of 20 used: 7 more pass)",
             repr(b))
        time.sleep(1.5)
        keys = subprocess.run(["redis-cli", "-p", str(redis.port), "--scan", "--pattern",
                               "ratelimit:synced:*"], capture_output=True, text=True).stdout.split()
        vals = [int(subprocess.run(["redis-cli", "-p", str(redis.port), "GET", k],
                                   capture_output=True, text=True).stdout or 0) for k in keys]
        ttls = [int(subprocess.run(["redis-cli", "-p", str(redis.port), "TTL", k],
                                   capture_output=True, text=True).stdout) for k in keys]
        t.eq(vals, [20], "sync_rate: Redis holds every admitted request (12 + 1 + 7)")
        t.ok(keys and all(0 < x <= 3601 for x in ttls),
             "sync_rate: keys expire in seconds (Kong's bug gives milliseconds)", repr(ttls))
        for g in sg:
            g.stop()
            g.check_clean(t)

    t.run(t_redis_headers)
    t.run(t_sync_rate)
    t.run(t_replicas)
    t.run(t_redis_sliding)
    t.run(t_redis_down_and_back)
    t.run(t_bad_credentials)
    for g in gws:
        g.stop()
        g.check_clean(t)

    # metrics
    mport, sport = h.free_port(), h.free_port()
    cfg = gw_config(mport)
    cfg["gateway"]["status_listen"] = "127.0.0.1:%d" % sport
    g = h.Gateway(cfg, port=mport, name="gateway-metrics")
    g.start()
    for _ in range(4):
        get(mport, "/headers/x")
    m = h.get(sport, "/metrics").body.decode()
    t.ok("sluice_rate_limiting_limited_total" in m and
         "sluice_rate_limiting_redis_latency_seconds_count" in m and
         "sluice_rate_limiting_redis_errors_total" in m,
         "/metrics: limited, Redis errors, Redis latency histogram")
    count = [ln for ln in m.splitlines()
             if ln.startswith("sluice_rate_limiting_redis_latency_seconds_count")]
    t.ok(count and int(count[0].split()[1]) >= 4, "the latency histogram counted the calls",
         repr(count))
    limited = [ln for ln in m.splitlines() if ln.startswith("sluice_rate_limiting_limited_total")]
    t.ok(limited and int(limited[0].split()[1]) >= 1, "a limited request is counted",
         repr(limited))
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True,
                           text=True, timeout=30)
        t.ok(p.returncode == 0 or "rate_limiting" not in (p.stdout + p.stderr),
             "promtool accepts the rate-limiting families", p.stdout + p.stderr)
    g.stop()
    g.check_clean(t)
    redis.stop()
    bad_pw.stop()
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=115)
