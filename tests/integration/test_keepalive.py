#!/usr/bin/env python3
"""Keep-alive: client connection reuse, upstream connection pooling,
pipelining, pooled connections closed by the upstream while idle."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def body(t):
    up = Upstream().start()
    up_idle = Upstream(close_idle_ms=200, name="upstream-closes-idle").start()
    up_probe = Upstream(name="upstream-idle-probe").start()
    port = h.free_port()
    cfg = h.make_config(port, [
        h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]}]),
        h.service("idle", up_idle.port, routes=[{"name": "r2", "paths": ["/idle"]}]),
        h.service("probe", up_probe.port, routes=[{"name": "r3", "paths": ["/probe"]}]),
    ], worker_processes=1, keepalive_timeout=5000, upstream_keepalive_idle_timeout=1000)
    gw = h.Gateway(cfg)
    gw.start()

    def t_fifty_on_one_connection():
        failures = []
        with h.Conn(port) as c:
            for i in range(50):
                r = c.request("GET", "/api/seq-%d" % i)
                if r is None or r.status != 200 or r.json().get("target") != "/base/seq-%d" % i:
                    failures.append((i, r))
                    break
        t.ok(not failures, "50 sequential requests on one client connection all succeed",
             repr(failures))

    def t_upstream_reuse():
        up.clear()
        up.reset_conn_count()
        failures = []
        for i in range(50):
            try:
                r = h.get(port, "/api/sep-%d" % i)  # new client connection each time
            except OSError as e:
                r = e
            if not isinstance(r, h.Response) or r.status != 200:
                failures.append((i, r))
        t.ok(not failures, "50 requests over 50 client connections succeed", repr(failures[:3]))
        ids = sorted({r.conn_id for r in up.find("/sep-")})
        t.ok(len(ids) == 1 and up.conn_count <= 1,
             "worker_processes 1: the 50 requests reuse ONE upstream connection",
             "upstream connection ids used: %r; new connections: %d" % (ids, up.conn_count))
        with h.Conn(port) as c:
            for i in range(20):
                c.request("POST", "/api/post-%d" % i, body=b"x" * (i * 100))
        pids = sorted({r.conn_id for r in up.find("/post-")})
        t.ok(pids == ids and len(up.find("/post-")) == 20,
             "20 POSTs with bodies reuse the same pooled upstream connection",
             "connection ids: %r (before: %r)" % (pids, ids))

    def t_pipelined():
        with h.Conn(port) as c:
            c.send(b"".join(h.build_request("GET", "/api/pipe-%d" % i) for i in range(3)))
            got = []
            for i in range(3):
                r = c.read_response()
                got.append(r.json().get("target") if r is not None and r.status == 200 else r)
        t.eq(got, ["/base/pipe-0", "/base/pipe-1", "/base/pipe-2"],
             "3 pipelined requests -> 3 responses in order")
        with h.Conn(port) as c:
            c.send(h.build_request("GET", "/api/slow/500?pipe=slow")
                   + h.build_request("GET", "/api/pipe-fast"))
            r1 = c.read_response()
            r2 = c.read_response()
        t.ok(r1 is not None and r1.json().get("target") == "/base/slow/500?pipe=slow"
             and r2 is not None and r2.json().get("target") == "/base/pipe-fast",
             "pipelined slow request then fast request: responses in request order",
             "%r\n%r" % (r1 and r1.body[:80], r2 and r2.body[:80]))
        with h.Conn(port) as c:
            c.send(h.build_request("POST", "/api/pipe-post", body=b"abc")
                   + h.build_request("GET", "/api/pipe-after"))
            r1 = c.read_response()
            r2 = c.read_response()
        t.ok(r1 is not None and r1.json().get("body_len") == 3 and r2 is not None
             and r2.json().get("target") == "/base/pipe-after",
             "pipelined POST with body then GET: both answered in order", "%r\n%r" % (r1, r2))

    def t_idle_pooled_closed():
        results = []
        for i in range(5):
            with h.Conn(port) as c:
                r = c.request("GET", "/idle/ic-%d" % i)
            results.append(r.status if r is not None else None)
            time.sleep(0.5)  # the upstream closes its side after 200 ms idle
        t.eq(results, [200] * 5, "pooled connection closed by the upstream while idle: next "
             "requests still succeed (no 502)")
        t.ok(up_idle.conn_count >= 4, "the gateway opened new upstream connections (%d)"
             % up_idle.conn_count)
        results = []
        for i in range(4):
            with h.Conn(port) as c:
                r = c.request("POST", "/idle/icp-%d" % i, body=b"p" * 1000)
            results.append(r.status if r is not None else None)
            time.sleep(0.5)
        recs = [r for r in up_idle.find("/icp-") if r.complete and r.body_len == 1000]
        t.ok(results == [200] * 4 and len(recs) == 4,
             "POST after the upstream closed the pooled connection while idle: 200 (stale "
             "connection detected before reuse)", "statuses %r, complete upstream records %d"
             % (results, len(recs)))

    def t_client_close_semantics():
        with h.Conn(port) as c:
            c.send(h.build_request("GET", "/api/http10", [], host="localhost", version="HTTP/1.0"))
            r = c.read_response()
            closed = c.wait_closed(3)
        t.ok(r is not None and r.status == 200 and closed,
             "HTTP/1.0 request without keep-alive: response then close", "closed=%r %r" % (closed, r))
        with h.Conn(port) as c:
            c.send(h.build_request("GET", "/api/http10ka", [("Connection", "keep-alive")],
                                   version="HTTP/1.0"))
            r = c.read_response()
            ka = r is not None and r.status == 200 and r.framing in ("cl", "none")
            if ka:
                r2 = c.request("GET", "/api/http10ka2", [("Connection", "keep-alive")],
                               version="HTTP/1.0")
                ka = r2 is not None and r2.status == 200
        t.ok(ka, "HTTP/1.0 with Connection: keep-alive: connection reusable", repr(r))
        with h.Conn(port) as c:
            r = c.request("GET", "/api/cc", [("Connection", "close")])
            closed = c.wait_closed(3)
        t.ok(r is not None and r.status == 200 and closed,
             "HTTP/1.1 Connection: close: response then close", "closed=%r %r" % (closed, r))

    def t_after_upstream_close_response():
        # upstream answers without framing and closes: the pool must not reuse that one
        with h.Conn(port, timeout=10) as c:
            r = c.request("GET", "/api/close/1000")
        ok = r is not None and r.status == 200 and len(r.body) == 1000
        r2 = h.get(port, "/api/after-close")
        t.ok(ok and r2 is not None and r2.status == 200,
             "request after an until-close upstream response succeeds", "%r\n%r" % (r, r2))

    def t_upstream_connection_close():
        statuses = []
        with h.Conn(port) as c:
            for i in range(10):
                path = "/api/connclose/%d" % i if i % 2 == 0 else "/api/after-cc-%d" % i
                try:
                    r = c.request("GET", path)
                    statuses.append(r.status if r is not None else "closed")
                except (h.Timeout, h.ProtocolError, OSError) as e:
                    statuses.append(repr(e))
                    break
        t.eq(statuses, [200] * 10, "upstream answering with Connection: close: pooled connection "
             "not reused, client keep-alive connection unaffected")

    def t_upstream_idle_timeout():
        r = h.get(port, "/probe/one")
        before = up_probe.closed_by_peer
        time.sleep(1.8)
        after = up_probe.closed_by_peer
        t.ok(r is not None and r.status == 200 and before == 0 and after >= 1,
             "idle pooled upstream connection closed by the gateway after "
             "upstream_keepalive_idle_timeout (1 s)",
             "closed by gateway: right after the request %d, 1.8 s later %d" % (before, after))

    def t_pipelined_many():
        # 20 mixed requests in one send: GET, POST with bodies (CL and chunked), HEAD, 204
        reqs, expect = [], []
        for i in range(20):
            kind = i % 5
            if kind == 0:
                reqs.append(h.build_request("GET", "/api/pm-%d" % i))
                expect.append(("GET", 200, "/base/pm-%d" % i))
            elif kind == 1:
                reqs.append(h.build_request("POST", "/api/pm-%d" % i, body=b"b" * (i * 37)))
                expect.append(("POST", 200, "/base/pm-%d" % i))
            elif kind == 2:
                reqs.append(h.build_request("POST", "/api/pm-%d" % i,
                                            [("Transfer-Encoding", "chunked")])
                            + h.chunked(b"c" * (i * 11), [7]))
                expect.append(("POST", 200, "/base/pm-%d" % i))
            elif kind == 3:
                reqs.append(h.build_request("HEAD", "/api/pm-%d" % i))
                expect.append(("HEAD", 200, None))
            else:
                reqs.append(h.build_request("GET", "/api/status/204?pm=%d" % i))
                expect.append(("GET", 204, None))
        got = []
        with h.Conn(port, timeout=10) as c:
            c.send(b"".join(reqs))
            for method, status, target in expect:
                try:
                    r = c.read_response(method=method)
                except (h.Timeout, h.ProtocolError) as e:
                    got.append(repr(e))
                    break
                if r is None:
                    got.append("closed")
                    break
                got.append((r.status, r.json().get("target") if target else None))
        want = [(s, tg) for _, s, tg in expect]
        t.eq(got, want, "20 pipelined mixed requests (GET/POST CL/POST chunked/HEAD/204): "
             "responses complete and in order")

    def t_byte_by_byte():
        payload = b"0123456789" * 5
        data = (h.build_request("POST", "/api/bbb", [("Transfer-Encoding", "chunked"),
                                                     ("X-Long", "v" * 50)])
                + h.chunked(payload, [7, 13]))
        with h.Conn(port, timeout=10) as c:
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(0.001)
            r = c.read_response()
        rec = up.wait_for("/bbb")
        t.ok(r is not None and r.status == 200 and rec is not None and rec.body == payload,
             "request sent one byte at a time (head and chunked body) is proxied intact",
             "%r\n%r" % (r, rec))
        with h.Conn(port, timeout=10) as c:
            r = c.request("GET", "/api/dribble")
            r2 = c.request("GET", "/api/after-dribble")
        t.ok(r is not None and r.status == 200 and r.json().get("path") == "/base/dribble"
             and r2 is not None and r2.status == 200,
             "upstream response written one byte at a time is relayed intact", "%r\n%r" % (r, r2))

    def t_concurrent_clients():
        # 40 clients x 10 keep-alive requests with bodies, all at once: every
        # response must be the one for its own request
        import hashlib
        import random
        import threading
        errors = []

        def client(k):
            rnd = random.Random(k)
            try:
                with h.Conn(port, timeout=10) as c:
                    for i in range(10):
                        body = rnd.randbytes(rnd.choice((0, 1, 100, 5000, 70000)))
                        r = c.request("POST", "/api/cc-%d-%d" % (k, i), body=body, timeout=10)
                        j = r.json() if r is not None and r.status == 200 else {}
                        if (j.get("target") != "/base/cc-%d-%d" % (k, i)
                                or j.get("body_sha256") != hashlib.sha256(body).hexdigest()):
                            errors.append((k, i, r, j.get("target")))
                            return
            except Exception as e:  # noqa: BLE001
                errors.append((k, repr(e)))

        ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(40)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        t.ok(not errors and not any(th.is_alive() for th in ths),
             "40 concurrent keep-alive clients x 10 POSTs: every response matches its request",
             repr(errors[:5]))

    for fn in (t_fifty_on_one_connection, t_upstream_reuse, t_pipelined, t_idle_pooled_closed,
               t_client_close_semantics, t_after_upstream_close_response, t_concurrent_clients,
               t_upstream_connection_close, t_upstream_idle_timeout, t_pipelined_many,
               t_byte_by_byte):
        t.run(fn)

    gw.stop()
    gw.check_clean(t)
    up.stop()
    up_idle.stop()
    up_probe.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
