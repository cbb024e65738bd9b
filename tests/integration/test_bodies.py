#!/usr/bin/env python3
"""Bodies both ways, byte for byte: Content-Length and chunked requests,
CL / chunked / until-close responses, streaming without whole-body
buffering, HEAD / 204 / 304 without body, Expect: 100-continue."""

import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

MAX_BODY = 4 * 1024 * 1024


def sha(b):
    return hashlib.sha256(b).hexdigest()


def body(t):
    up = Upstream().start()
    port = h.free_port()
    gw = h.Gateway(h.make_config(port, [h.service("echo", up.port,
                                                  routes=[{"name": "r1", "paths": ["/api"]}])],
                                 client_max_body_size=MAX_BODY))
    gw.start()

    # --- request bodies ---------------------------------------------------------------------
    def check_echo(r, payload, desc, marker):
        rec = up.wait_for(marker)
        problems = []
        if r is None or r.status != 200:
            problems.append("response %r" % (r,))
        else:
            try:
                j = r.json()
                if j.get("body_len") != len(payload) or j.get("body_sha256") != sha(payload):
                    problems.append("upstream echoed len=%r sha=%r" % (j.get("body_len"),
                                                                      j.get("body_sha256")))
            except ValueError:
                problems.append("echo body not JSON: %r" % r.body[:200])
        if rec is None:
            problems.append("no complete upstream record")
        elif rec.body_len != len(payload) or rec.body_sha256 != sha(payload):
            problems.append("upstream record len=%r" % rec.body_len)
        t.ok(not problems, desc, "\n".join(problems) if problems else None)

    def t_request_cl():
        for n, name in ((0, "0 bytes"), (1, "1 byte"), (1024 * 1024, "1 MiB")):
            payload = random.Random(n).randbytes(n)
            marker = "reqcl-%d" % n
            with h.Conn(port, timeout=15) as c:
                c.send(h.build_request("POST", "/api/" + marker,
                                       [("Content-Length", str(n)), ("Connection", "close")], payload))
                r = c.read_response(timeout=15)
            check_echo(r, payload, "request body %s (Content-Length) arrives intact" % name, marker)

    def t_request_slow_upstream_reader():
        n = 3 * 1024 * 1024
        payload = random.Random(99).randbytes(n)
        t0 = time.monotonic()
        with h.Conn(port, timeout=30) as c:
            c.send(h.build_request("POST", "/api/slowread", [("Connection", "close")], payload))
            r = c.read_response(timeout=30)
        check_echo(r, payload, "3 MiB request body to an upstream that reads slowly arrives intact "
                   "(%.1f s)" % (time.monotonic() - t0), "slowread")

    def t_request_chunked():
        rnd = random.Random(7)
        sizes = [rnd.randint(1, 9000) for _ in range(100)]
        payload = rnd.randbytes(sum(sizes))
        data = h.chunked(payload, sizes, trailers=[("X-Checksum", "abc")])
        with h.Conn(port, timeout=15) as c:
            c.send(h.build_request("POST", "/api/reqchunked", [("Transfer-Encoding", "chunked"),
                                                               ("Trailer", "X-Checksum"),
                                                               ("Connection", "close")]))
            # send in uneven slices so chunk framing is split across reads
            pos = 0
            while pos < len(data):
                step = rnd.randint(1, 70000)
                c.send(data[pos:pos + step])
                pos += step
                if rnd.random() < 0.1:
                    time.sleep(0.005)
            r = c.read_response(timeout=15)
        check_echo(r, payload, "request body chunked (100 chunks + trailer) arrives intact",
                   "reqchunked")
        payload = b""
        with h.Conn(port) as c:
            c.send(h.build_request("POST", "/api/reqchunked0", [("Transfer-Encoding", "chunked"),
                                                                ("Connection", "close")]) + b"0\r\n\r\n")
            r = c.read_response()
        check_echo(r, payload, "empty chunked request body arrives as 0 bytes", "reqchunked0")

    def t_request_get_no_body():
        with h.Conn(port) as c:
            r = c.request("GET", "/api/getnobody", [("Connection", "close")])
        check_echo(r, b"", "GET without body: upstream receives no body", "getnobody")

    # --- response bodies -------------------------------------------------------------------------
    def check_generated(r, desc, closed_ok=True):
        problems = []
        if r is None or r.status != 200:
            problems.append("response %r" % (r,))
        else:
            want_len = int(r.header("X-Body-Len", "-1"))
            if len(r.body) != want_len or sha(r.body) != r.header("X-Body-Sha256"):
                problems.append("got %d bytes (want %d), sha256 match=%r, framing %s"
                                % (len(r.body), want_len, sha(r.body) == r.header("X-Body-Sha256"),
                                   r.framing))
        return t.ok(not problems, desc, "\n".join(problems) if problems else None)

    def t_response_cl():
        with h.Conn(port, timeout=15) as c:
            for n, name in ((0, "0 bytes"), (1, "1 byte"), (1024 * 1024, "1 MiB")):
                r = c.request("GET", "/api/bytes/%d" % n, timeout=15)
                check_generated(r, "response body %s (Content-Length) intact on a keep-alive "
                                   "connection" % name)

    def t_response_chunked():
        with h.Conn(port, timeout=20) as c:
            t0 = time.monotonic()
            r = c.request("GET", "/api/chunked/200?size=6000&delay=5", timeout=20)
            el = time.monotonic() - t0
            check_generated(r, "chunked response (200 chunks, sent slowly) intact")
            t.ok(el > 0.5, "chunked response took as long as the upstream (%.2f s)" % el)
            r = c.request("GET", "/api/bytes/10")
            check_generated(r, "connection reusable after a chunked response")

    def t_response_until_close():
        with h.Conn(port, timeout=15) as c:
            c.send(h.build_request("GET", "/api/close/300000"))
            r = c.read_response(timeout=15)
            if r is None:
                t.ok(False, "until-close response delivered", "connection closed without response")
                return
            check_generated(r, "until-close upstream response: body complete (framing %s)" % r.framing)
            if r.framing == "close":
                t.ok(True, "until-close response delimited by closing the client connection")
            else:
                # re-framed: the connection must stay usable
                r2 = c.request("GET", "/api/bytes/5")
                check_generated(r2, "until-close response re-framed (%s): connection reusable"
                                % r.framing)

    def t_streaming():
        first, rest = 64 * 1024, 64 * 1024
        with h.Conn(port, timeout=10) as c:
            t0 = time.monotonic()
            c.send(h.build_request("GET", "/api/stream?first=%d&rest=%d&pause=1000" % (first, rest)))
            r = c.read_head(timeout=10)
            got = b""
            t_first = None
            for piece in c.iter_body(r, timeout=10):
                got += piece
                if t_first is None and len(got) >= first:
                    t_first = time.monotonic() - t0
            total = time.monotonic() - t0
            r.body = got
        check_generated(r, "streamed response complete")
        t.ok(t_first is not None and t_first < 0.7,
             "first half of the response arrives before the upstream pause ends (no whole-body "
             "buffering)", "first half after %r s, whole body after %.2f s" % (t_first, total))
        t.ok(total >= 0.9, "whole streamed body arrives after the pause (%.2f s)" % total)

    def t_head():
        with h.Conn(port) as c:
            r = c.request("HEAD", "/api/headtest")
            t.ok(r is not None and r.status == 200 and r.body == b"",
                 "HEAD: headers only, no body", repr(r))
            r2 = c.request("GET", "/api/bytes/33")
            check_generated(r2, "connection reusable after HEAD (upstream sent Content-Length: 100)")
            t.ok(not c.buf, "no stray bytes after HEAD + GET", repr(c.buf[:100]))

    def t_204_304():
        for code in (204, 304):
            with h.Conn(port) as c:
                r = c.request("GET", "/api/status/%d" % code)
                t.ok(r is not None and r.status == code and r.body == b"",
                     "%d: no body" % code, repr(r))
                if code == 204:
                    t.ok(r is not None and r.header("Content-Length") in (None, "0")
                         and r.header("Transfer-Encoding") is None,
                         "204: no Content-Length (or 0) and no Transfer-Encoding", repr(r))
                r2 = c.request("GET", "/api/bytes/17")
                check_generated(r2, "connection reusable after %d" % code)

    def t_expect_continue():
        payload = b"expect-body-123"
        with h.Conn(port, timeout=5) as c:
            c.send(h.build_request("POST", "/api/expect1", [("Content-Length", str(len(payload))),
                                                            ("Expect", "100-continue")]))
            try:
                r = c.read_head(timeout=3)
            except h.Timeout:
                r = None
            t.ok(r is not None and r.status == 100, "Expect: 100-continue -> HTTP/1.1 100 Continue first",
                 repr(r))
            c.send(payload)
            r = c.read_response(timeout=5)
        check_echo(r, payload, "Expect: 100-continue: body proxied, final 200", "expect1")

        with h.Conn(port, timeout=5) as c:
            c.send(h.build_request("POST", "/api/expect2", [("Content-Length", str(MAX_BODY + 1)),
                                                            ("Expect", "100-continue")]))
            try:
                r = c.read_head(timeout=3)
            except h.Timeout:
                r = None
            t.ok(r is not None and r.status == 413,
                 "Expect: 100-continue with Content-Length over client_max_body_size -> 413, no 100",
                 repr(r))
        t.ok(not up.find("expect2"), "oversized Expect request not forwarded upstream")

    def t_upstream_interim():
        with h.Conn(port) as c:
            c.send(h.build_request("GET", "/api/interim"))
            first = c.read_head(timeout=5)
            r = first
            while r is not None and 100 <= r.status < 200:
                r = c.read_head(timeout=5)
            if r is not None:
                r.body = b"".join(c.iter_body(r))
            r2 = c.request("GET", "/api/bytes/9")
        t.ok(r is not None and r.status == 200 and r.json().get("path") == "/base/interim",
             "upstream 100 Continue before its 200: client gets the final 200 and body",
             "first=%r final=%r" % (first, r))
        check_generated(r2, "connection reusable after an upstream interim response")

    def t_http10_client_chunked_upstream():
        # RFC 9112 6.1: no Transfer-Encoding in a response to an HTTP/1.0 request
        with h.Conn(port, timeout=10) as c:
            c.send(h.build_request("GET", "/api/chunked/20?size=3000", version="HTTP/1.0"))
            r = c.read_response(timeout=10)
        t.ok(r is not None and r.status == 200 and r.header("Transfer-Encoding") is None,
             "HTTP/1.0 client, chunked upstream response: 200 without Transfer-Encoding",
             repr(r))
        check_generated(r, "HTTP/1.0 client, chunked upstream response: body complete (%s)"
                        % (r.framing if r is not None else None))
        rec = up.wait_for("/chunked/20")
        t.ok(rec is not None and rec.version == "HTTP/1.1",
             "HTTP/1.0 client: the request goes upstream as HTTP/1.1",
             "upstream saw %r" % (rec.version if rec else None))

    def t_slow_reader():
        # the client stops reading for 1 s (all buffers on the way fill up, the
        # gateway must pause the upstream and resume later), then reads slowly
        n = 16 * 1024 * 1024
        with h.Conn(port, timeout=10) as c:
            c.send(h.build_request("GET", "/api/bytes/%d" % n))
            r = c.read_head(timeout=10)
            time.sleep(1.0)
            got = []
            total = 0
            t0 = time.monotonic()
            for piece in c.iter_body(r, timeout=30):
                got.append(piece)
                total += len(piece)
                if total < 4 * 1024 * 1024:
                    time.sleep(0.002)
            r.body = b"".join(got)
            el = time.monotonic() - t0
        check_generated(r, "16 MiB response to a client that pauses then reads slowly arrives "
                           "intact (%.1f s)" % el)

    def t_client_aborts():
        # client goes away in the middle of a big response, and while the upstream is slow
        for i in range(3):
            with h.Conn(port, timeout=5) as c:
                c.send(h.build_request("GET", "/api/bytes/%d" % (8 * 1024 * 1024)))
                r = c.read_head()
                it = c.iter_body(r)
                next(it)
        for i in range(3):
            with h.Conn(port, timeout=5) as c:
                c.send(h.build_request("GET", "/api/slow/300?abort=%d" % i))
                time.sleep(0.05)
        with h.Conn(port, timeout=5) as c:
            c.send(h.build_request("POST", "/api/abort-upload", [("Content-Length", "1000000")])
                   + b"x" * 1000)
            time.sleep(0.05)
        time.sleep(0.5)
        r = h.get(port, "/api/bytes/1000")
        check_generated(r, "gateway serves normally after clients aborted mid-response / "
                           "mid-upload / while waiting")
        t.ok(gw.alive(), "gateway process still alive after client aborts")

    for fn in (t_request_cl, t_request_slow_upstream_reader, t_request_chunked,
               t_request_get_no_body, t_response_cl,
               t_response_chunked, t_response_until_close, t_streaming, t_head, t_204_304,
               t_expect_continue, t_upstream_interim, t_http10_client_chunked_upstream,
               t_slow_reader, t_client_aborts):
        t.run(fn)

    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
