#!/usr/bin/env python3
"""The plugin API for changing the upstream request, through the real proxy:
method, path and query set by a plugin (and unsafe values refused), uri
captures of a regex route, header edits that undo each other, and the
request body read whole by a plugin (Content-Length, chunked, empty, over
the plugin's bound, pipelined after it, client gone while it is read).

Runs against tests/plugins/sluice-gateway-test, whose test-rewrite plugin
(tests/plugins/test_plugins.c) drives the API from request headers."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def config(port, up_port):
    url = "http://127.0.0.1:%d/base" % up_port
    plugin = [{"name": "test-rewrite", "config": {"max_body": 4096}}]
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 1},
        "services": [
            {"name": "s", "url": url,
             "routes": [
                 {"name": "plain", "paths": ["/p"], "plugins": plugin},
                 {"name": "regex", "paths": [r"~/users/(?<uid>\d+)/(\w+)$"],
                  "plugins": plugin},
             ]},
        ],
    }


def chunked(body, size=7):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def body(t):
    if not h.use_test_gateway(t):
        return
    up = Upstream().start()
    port = h.free_port()
    gw = h.Gateway(config(port, up.port), port=port)
    gw.start()

    def req(path, headers=None, method="GET", data=b""):
        up.clear()
        r = h.try_get(port, path, headers=headers, method=method, body=data)
        rec = up.requests()[-1] if up.requests() else None
        return (r if isinstance(r, h.Response) else None), rec

    def t_request_line():
        r, rec = req("/p/x?a=1", {"X-Test-Method": "PATCH"})
        t.ok(r and r.status == 200 and rec and rec.method == "PATCH" and
             rec.target == "/base/x?a=1", "set_method: the upstream gets PATCH, path and query kept",
             repr(rec))
        r, rec = req("/p/x?a=1", {"X-Test-Path": "/elsewhere/y"})
        t.ok(rec and rec.target == "/elsewhere/y?a=1",
             "set_path: the plugin's path replaces the route mapping, query kept", repr(rec))
        r, rec = req("/p/x?a=1", {"X-Test-Query": "b=2&c"})
        t.ok(rec and rec.target == "/base/x?b=2&c", "set_query: the new query string", repr(rec))
        r, rec = req("/p/x?a=1", {"X-Test-Query": ""})
        t.ok(rec and rec.target == "/base/x", "set_query(\"\"): no query at all", repr(rec))
        for hdr, value, what in (("X-Test-Method", "GE T", "method"),
                                 ("X-Test-Method", "G(ET", "method"),
                                 ("X-Test-Path", "no-slash", "path"),
                                 ("X-Test-Path", "/a?b", "path"),
                                 ("X-Test-Path", "/a#b", "path"),
                                 ("X-Test-Query", "a=1#frag", "query"),
                                 ("X-Test-Query", "a=1 b", "query")):
            r, rec = req("/p/x?a=1", {hdr: value})
            t.ok(rec and rec.header("X-Test-Refused") == what and rec.method == "GET" and
                 rec.target == "/base/x?a=1",
                 "refused %s %r: nothing changes upstream" % (what, value), repr(rec))

    def t_captures():
        r, rec = req("/users/42/profile", {"X-Test-Capture": "uid"})
        t.eq(rec and rec.header("X-Test-Capture-Value"), "42", "uri capture by name")
        r, rec = req("/users/42/profile", {"X-Test-Capture": "2"})
        t.eq(rec and rec.header("X-Test-Capture-Value"), "profile", "uri capture by number")
        r, rec = req("/users/42/profile", {"X-Test-Capture": "0"})
        t.eq(rec and rec.header("X-Test-Capture-Value"), "/users/42/profile",
             "uri capture 0: the whole match")
        r, rec = req("/users/42/profile", {"X-Test-Capture": "3"})
        t.eq(rec and rec.header("X-Test-Capture-Value"), "none", "no group 3: none")
        r, rec = req("/p/x", {"X-Test-Capture": "1"})
        t.eq(rec and rec.header("X-Test-Capture-Value"), "none", "a prefix route has no captures")

    def t_edits():
        r, rec = req("/p/x", [("X-Test-Set-Then-Remove", "X-Gone"), ("X-Gone", "client")])
        t.ok(rec and rec.header("X-Gone") is None,
             "set then remove: neither the plugin's nor the client's copy goes upstream",
             repr(rec))

    def t_body():
        data = b"hello, body"
        r, rec = req("/p/x", {"X-Test-Body": "upper", "Content-Type": "text/plain"},
                     method="POST", data=data)
        t.ok(r and r.status == 200 and rec and rec.body == data.upper() and
             rec.header("Content-Length") == str(len(data)) and
             rec.header("X-Test-Body-Seen") == str(len(data)),
             "Content-Length body read whole and replaced", repr(rec))
        r, rec = req("/p/x", {"X-Test-Body": "keep"}, method="POST", data=data)
        t.ok(rec and rec.body == data and rec.header("X-Test-Body-Seen") == str(len(data)),
             "read but not replaced: the original body goes upstream", repr(rec))
        r, rec = req("/p/x", {"X-Test-Body": "upper"}, method="POST")
        t.ok(r and r.status == 200 and rec and rec.body == b"" and
             rec.header("X-Test-Body-Seen") == "0", "no body: the plugin sees length 0",
             repr(rec))
        big = bytes(range(97, 123)) * 200  # 5200 > max_body 4096
        r, rec = req("/p/x", {"X-Test-Body": "upper"}, method="POST", data=big)
        t.ok(rec and rec.body == big,
             "over the bound (Content-Length): streamed untouched", repr(rec))
        t.eq(rec and rec.header("X-Test-Body-Seen"), "too-large", "over the bound: told so")

        # chunked, in several writes, with a pipelined request after it
        up.clear()
        payload = b"chunked body of some length " * 20
        raw = (b"POST /p/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"X-Test-Body: upper\r\n\r\n" + chunked(payload) +
               b"GET /p/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with h.Conn(port) as c:
            c.send(raw[:70])
            time.sleep(0.1)
            c.send(raw[70:200])
            time.sleep(0.1)
            c.send(raw[200:])
            r1 = c.read_response()
            r2 = c.read_response()
        recs = up.requests()
        t.ok(r1.status == 200 and r2.status == 200 and len(recs) == 2,
             "chunked body read whole, then the pipelined request", repr(recs))
        if len(recs) == 2:
            t.ok(recs[0].body == payload.upper() and
                 recs[0].header("Content-Length") == str(len(payload)) and
                 recs[0].header("Transfer-Encoding") is None,
                 "chunked body replaced: sent with Content-Length, no Transfer-Encoding",
                 repr(recs[0]))
            t.eq(recs[1].path, "/base/next", "the pipelined request after it is intact")

        bigc = b"z" * 6000
        up.clear()
        raw = (b"POST /p/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"X-Test-Body: upper\r\nConnection: close\r\n\r\n" + chunked(bigc, 1000))
        with h.Conn(port) as c:
            c.send(raw)
            r1 = c.read_response()
        recs = up.requests()
        t.ok(r1.status == 200 and len(recs) == 1 and recs[0].body == bigc and
             recs[0].header("X-Test-Body-Seen") == "too-large",
             "chunked over the bound: streamed untouched (still chunked)", repr(recs))

        raw = (b"POST /p/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"X-Test-Body: upper\r\n\r\n5\r\nabcde")
        with h.Conn(port) as c:
            c.send(raw + b"XX\r\n")  # "XX" where CRLF must follow the chunk data
            r1 = c.read_response()
        t.eq(r1.status, 400, "bad chunk framing while the plugin reads the body: 400")

        r, rec = req("/p/x", {"X-Test-Body": "deny"}, method="POST", data=b"abc")
        t.ok(r and r.status == 403 and b"denied after suspension" in r.body and rec is None,
             "a hook answers after its suspension: the answer goes out, nothing upstream "
             "(failed before the fix: the request was proxied)", repr(r))

        # Expect: 100-continue is answered so the client sends the body
        up.clear()
        with h.Conn(port) as c:
            c.send(b"POST /p/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                   b"Expect: 100-continue\r\nX-Test-Body: upper\r\nConnection: close\r\n\r\n")
            interim = c.read_response(skip_interim=False)
            c.send(b"abcd")
            final = c.read_response()
        t.ok(interim.status == 100 and final.status == 200 and up.requests() and
             up.requests()[-1].body == b"ABCD", "Expect: 100-continue, then the body is read",
             repr((interim.status, final.status)))

        # the client goes away in the middle of the body: the plugin is
        # cancelled, nothing goes upstream, the gateway keeps serving
        up.clear()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /p/gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"X-Test-Body: upper\r\n\r\nonly part")
        time.sleep(0.2)
        s.close()
        deadline = time.time() + 5
        while time.time() < deadline and "test-rewrite body read cancelled" not in gw.stderr():
            time.sleep(0.05)
        t.ok("test-rewrite body read cancelled" in gw.stderr(),
             "client gone while the body is read: the plugin's cancel runs")
        t.eq(len(up.requests()), 0, "and nothing went upstream")
        r, rec = req("/p/x")
        t.ok(r and r.status == 200, "the gateway keeps serving")

    t.run(t_request_line)
    t.run(t_captures)
    t.run(t_edits)
    t.run(t_body)
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=90)
