#!/usr/bin/env python3
"""Errors in Kong's shape: 404 no route, 502/503 upstream down, 502 garbage
from the upstream, 504 upstream timing out; JSON and plain text forms."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

MSG_404 = "no Route matched with those values"
MSG_502 = "An invalid response was received from the upstream server"
MSG_503 = "The upstream server is currently unavailable"
MSG_504 = "The upstream server is timing out"


def body(t):
    up = Upstream().start()
    garbage = Upstream(mode="garbage", name="garbage").start()
    hang = Upstream(mode="hang", name="hang").start()
    closed_port = h.free_port()  # nothing listens there
    port = h.free_port()
    cfg = h.make_config(port, [
        h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]}]),
        h.service("down", closed_port, routes=[{"name": "r2", "paths": ["/down"]}],
                  retries=1, connect_timeout=2000),
        h.service("garbage", garbage.port, routes=[{"name": "r3", "paths": ["/garbage"]}],
                  retries=0),
        h.service("hang", hang.port, routes=[{"name": "r4", "paths": ["/hang"]}],
                  read_timeout=500, retries=0),
        h.service("slowsvc", up.port, routes=[{"name": "r5", "paths": ["/slowsvc"]}],
                  read_timeout=500, retries=0),
        h.service("secure", up.port, routes=[
            {"name": "tls426", "paths": ["/tls426"], "protocols": ["https"]},
            {"name": "tls301", "paths": ["/tls301"], "protocols": ["https"],
             "https_redirect_status_code": 301},
            {"name": "tls308", "paths": ["/tls308"], "protocols": ["https"],
             "https_redirect_status_code": 308}]),
    ])
    gw = h.Gateway(cfg)
    gw.start()

    def t_404():
        r = h.try_get(port, "/nothing/here")
        h.check_kong_error(t, r, 404, MSG_404, "unrouted path -> 404 Kong JSON error")
        r = h.try_get(port, "/nothing/here", headers=[("Accept", "text/plain")])
        h.check_kong_error(t, r, 404, MSG_404, "unrouted path with Accept: text/plain -> plain text",
                           plain=True)
        t.ok(isinstance(r, h.Response) and bool(r.header("X-Request-Id")),
             "error response carries X-Request-Id", repr(r))
        # keep-alive after a 404: the connection stays usable
        with h.Conn(port) as c:
            r1 = c.request("GET", "/nothing")
            r2 = c.request("GET", "/api/after404")
        t.ok(isinstance(r1, h.Response) and r1.status == 404
             and isinstance(r2, h.Response) and r2.status == 200,
             "connection usable after a 404", "%r\n%r" % (r1, r2))

    def t_404_head():
        with h.Conn(port) as c:
            c.send(h.build_request("HEAD", "/nothing/head"))
            r1 = c.read_response(method="HEAD")
            time.sleep(0.2)
            stray = c.buf
            if not stray:
                try:
                    c.sock.settimeout(0.3)
                    stray = c.sock.recv(65536)
                except OSError:
                    stray = b""
        t.ok(isinstance(r1, h.Response) and r1.status == 404 and not stray,
             "HEAD on an unrouted path: 404 without a body", "%r\nbytes after the head: %r"
             % (r1, stray[:200]))

    def t_upstream_down():
        t0 = time.monotonic()
        r = h.try_get(port, "/down/x", timeout=10)
        el = time.monotonic() - t0
        if isinstance(r, h.Response) and r.status == 503:
            h.check_kong_error(t, r, 503, MSG_503, "upstream port closed -> 503 Kong error")
        else:
            h.check_kong_error(t, r, 502, MSG_502, "upstream port closed -> 502 Kong error")
        t.ok(el < 3, "connection refused answered quickly (%.2f s)" % el)
        r = h.try_get(port, "/down/x", headers=[("Accept", "text/plain")], timeout=10)
        msg = MSG_503 if (isinstance(r, h.Response) and r.status == 503) else MSG_502
        h.check_kong_error(t, r, (502, 503), msg, "upstream down, Accept: text/plain -> plain text",
                           plain=True)

    def t_garbage():
        r = h.try_get(port, "/garbage/x", timeout=10)
        h.check_kong_error(t, r, 502, MSG_502, "upstream answering garbage -> 502 Kong error")
        t.ok(bool(garbage.requests()) and all(rec.target.startswith("/base") for rec in garbage.requests()),
             "garbage upstream received the request", repr(garbage.requests()))

    def t_timeout():
        t0 = time.monotonic()
        r = h.try_get(port, "/hang/x", timeout=10)
        el = time.monotonic() - t0
        h.check_kong_error(t, r, 504, MSG_504, "silent upstream with read_timeout 500 -> 504 Kong error")
        t.ok(0.4 <= el <= 3.0, "504 after about read_timeout (%.2f s, want 0.5-3)" % el)

    def t_timeout_slow_head():
        t0 = time.monotonic()
        r = h.try_get(port, "/slowsvc/slow/2000", timeout=10)
        el = time.monotonic() - t0
        h.check_kong_error(t, r, 504, MSG_504, "upstream slower than read_timeout (500 ms) -> 504")
        t.ok(el < 1.9, "504 before the slow upstream answered (%.2f s)" % el)

    def t_timeout_mid_body():
        # headers and half the body, then the upstream stalls longer than read_timeout
        t0 = time.monotonic()
        try:
            with h.Conn(port, timeout=10) as c:
                r = c.request("GET", "/slowsvc/stream?first=1000&rest=1000&pause=4000", timeout=10)
            outcome = r
        except (h.Timeout, h.ProtocolError, OSError) as e:
            outcome = e
        el = time.monotonic() - t0
        t.ok(isinstance(outcome, h.ProtocolError) and el < 3.5,
             "upstream stalls mid-body longer than read_timeout: client connection closed "
             "early, response incomplete", "after %.2f s: %r" % (el, outcome))

    def t_truncated_upstream_body():
        # upstream promises 100000 bytes, sends half and closes: the client
        # must not receive a response that looks complete
        try:
            with h.Conn(port, timeout=10) as c:
                r = c.request("GET", "/api/truncate/100000", timeout=10)
            outcome = r
        except (h.Timeout, h.ProtocolError, OSError) as e:
            outcome = e
        complete = isinstance(outcome, h.Response) and outcome.status == 200
        t.ok(not complete, "upstream body truncated mid-way: client connection closed, no "
             "complete-looking 200 (no silent truncation)",
             "got %r (%s)" % (outcome, len(outcome.body) if complete else ""))
        r = h.try_get(port, "/api/after-trunc")
        t.ok(isinstance(r, h.Response) and r.status == 200, "request after a truncated upstream "
             "response succeeds", repr(r))

    def t_bad_upstream_framing():
        r = h.try_get(port, "/api/badcl", timeout=10)
        h.check_kong_error(t, r, 502, MSG_502, "upstream invalid Content-Length -> 502 Kong error")

    def t_https_only_routes():
        up.clear()
        r = h.try_get(port, "/tls426/x")
        h.check_kong_error(t, r, 426, "Please use HTTPS protocol",
                           "https-only route over http -> 426 Kong error")
        t.ok(isinstance(r, h.Response) and r.header("Upgrade") == "TLS/1.2, HTTP/1.1",
             "426 carries Upgrade: TLS/1.2, HTTP/1.1", repr(r))
        r = h.try_get(port, "/tls301/a/../b?q=1", host="api.example.com:8080")
        t.ok(isinstance(r, h.Response) and r.status == 301 and
             r.header("Location") == "https://api.example.com/tls301/b?q=1",
             "https_redirect_status_code 301: Location with the host and the normalised URI",
             repr(r))
        r = h.try_get(port, "/tls308")
        t.ok(isinstance(r, h.Response) and r.status == 308, "308 as configured", repr(r))
        t.eq(len(up.requests()), 0, "none of them reached the upstream")

    def t_still_ok():
        r = h.try_get(port, "/api/final")
        t.ok(isinstance(r, h.Response) and r.status == 200, "gateway still proxies after the errors", repr(r))

    for fn in (t_404, t_404_head, t_upstream_down, t_garbage, t_timeout, t_timeout_slow_head,
               t_timeout_mid_body, t_truncated_upstream_body,
               t_bad_upstream_framing, t_https_only_routes, t_still_ok):
        t.run(fn)

    gw.stop()
    gw.check_clean(t)
    for u in (up, garbage, hang):
        u.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
