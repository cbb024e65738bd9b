#!/usr/bin/env python3
"""Codec: malformed / smuggling-prone requests get 400 and a closed
connection, limits get 414/431/413, and nothing of a rejected request
reaches the upstream."""

import concurrent.futures
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

MAX_BODY = 1024


def req(path, headers, body=b"", version="HTTP/1.1", host=True):
    """Raw request bytes; headers is a list of raw header lines (bytes/str)."""
    lines = [("POST %s %s" % (path, version)).encode()]
    if host:
        lines.append(b"Host: localhost")
    for hl in headers:
        lines.append(hl if isinstance(hl, bytes) else hl.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SMUGGLE = b"GET /api/SMUGGLED HTTP/1.1\r\nHost: localhost\r\n\r\n"


def cases():
    """(name, builder(path) -> bytes, expected status)."""
    C = []

    def add(name, fn, status=400):
        C.append((name, fn, status))

    add("Content-Length + Transfer-Encoding",
        lambda p: req(p, ["Content-Length: 5", "Transfer-Encoding: chunked"],
                      b"0\r\n\r\n" + SMUGGLE))
    add("Transfer-Encoding + Content-Length",
        lambda p: req(p, ["Transfer-Encoding: chunked", "Content-Length: 40"],
                      b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLE))
    add("duplicate Content-Length (same value)",
        lambda p: req(p, ["Content-Length: 5", "Content-Length: 5"], b"hello"))
    add("duplicate Content-Length (different values)",
        lambda p: req(p, ["Content-Length: 5", "Content-Length: 6"], b"hello!"))
    add("empty Content-Length", lambda p: req(p, ["Content-Length: "], b"hello"))
    add("signed Content-Length +5", lambda p: req(p, ["Content-Length: +5"], b"hello"))
    add("negative Content-Length -1", lambda p: req(p, ["Content-Length: -1"], b"hello"))
    add("non-digit Content-Length 5a", lambda p: req(p, ["Content-Length: 5a"], b"hello"))
    add("hex Content-Length 0x5", lambda p: req(p, ["Content-Length: 0x5"], b"hello"))
    add("Transfer-Encoding: xchunked",
        lambda p: req(p, ["Transfer-Encoding: xchunked"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("Transfer-Encoding: chunked, x",
        lambda p: req(p, ["Transfer-Encoding: chunked, x"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("Transfer-Encoding: identity",
        lambda p: req(p, ["Transfer-Encoding: identity"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("Transfer-Encoding with leading tab",
        lambda p: req(p, [b"Transfer-Encoding:\tchunked"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("Transfer-Encoding padded with vertical tab",
        lambda p: req(p, [b"Transfer-Encoding: \x0bchunked"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("whitespace before the colon (Content-Length : 5)",
        lambda p: req(p, ["Content-Length : 5"], b"hello"))
    add("Transfer_Encoding: chunked (underscore)",
        lambda p: req(p, ["Transfer_Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n"))
    add("Content_Length: 5 (underscore)",
        lambda p: req(p, ["Content_Length: 5"], b"hello"))
    add("bare CR inside a header value",
        lambda p: req(p, [b"X-Test: a\rb", "Content-Length: 0"]))
    add("NUL inside a header value",
        lambda p: req(p, [b"X-Test: a\x00b", "Content-Length: 0"]))
    add("control byte 0x01 inside a header value",
        lambda p: req(p, [b"X-Test: a\x01b", "Content-Length: 0"]))
    add("obs-fold (continuation line starting with SP)",
        lambda p: req(p, ["X-Test: a", " folded", "Content-Length: 0"]))
    add("obs-fold (continuation line starting with HTAB)",
        lambda p: req(p, ["X-Test: a", "\tfolded", "Content-Length: 0"]))
    add("invalid field name Fo(o", lambda p: req(p, ["Fo(o: x", "Content-Length: 0"]))
    add("invalid field name with space (Fo o)", lambda p: req(p, ["Fo o: x", "Content-Length: 0"]))
    for size in ("+5", "0x5", "5_0", " 5", "5 ", "10000000000000005"):
        add("chunk size %r" % size,
            lambda p, s=size: req(p, ["Transfer-Encoding: chunked"],
                                  s.encode() + b"\r\nhello\r\n0\r\n\r\n"))
    add("chunk data not followed by CRLF",
        lambda p: req(p, ["Transfer-Encoding: chunked"], b"5\r\nhelloXX0\r\n\r\n"))
    add("Transfer-Encoding: chunked twice (two fields)",
        lambda p: req(p, ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                      b"5\r\nhello\r\n0\r\n\r\n"))
    add("header line without a colon", lambda p: req(p, ["X-No-Colon", "Content-Length: 0"]))
    add("empty field name", lambda p: req(p, [": x", "Content-Length: 0"]))
    add("bare LF in chunk framing",
        lambda p: req(p, ["Transfer-Encoding: chunked"], b"5\nhello\r\n0\r\n\r\n"))
    add("HTTP/0.9 request line", lambda p: ("GET %s\r\n" % p).encode())
    add("fragment in the request-target (/x#.png)",
        lambda p: ("GET %s#.png HTTP/1.1\r\nHost: localhost\r\n\r\n" % p).encode())
    add("Transfer-Encoding on an HTTP/1.0 request",
        lambda p: req(p, ["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n",
                      version="HTTP/1.0"))
    add("two Host headers (different)",
        lambda p: req(p, ["Host: other.example", "Content-Length: 0"]))
    add("two Host headers (identical)",
        lambda p: req(p, ["Host: localhost", "Content-Length: 0"]))
    add("HTTP/1.1 without Host", lambda p: req(p, ["Content-Length: 0"], host=False))
    # chunk-ext, RFC 9112 7.1.1: *( BWS ";" BWS name [ BWS "=" BWS token / quoted-string ] )
    for ext in (b";", b";;a", b";=v", b"; =v", b";a=", b";a=;b", b";a(b", b";a/b=1", b";a=b/c",
                b";a=b c", b";a ", b";a=b ", b" ", b" a", b";a=\"open", b";a=\"b\"c",
                b";a=\"\\\x01\"", b";a=\"\x01\"", b";a=\x01", b";\xc3\xa9", b",a"):
        add("chunk extension %r" % ext,
            lambda p, e=ext: req(p, ["Transfer-Encoding: chunked"],
                                 b"5" + e + b"\r\nhello\r\n0\r\n\r\n" + SMUGGLE))
    add("chunk extension on the last chunk: bare ';'",
        lambda p: req(p, ["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0;\r\n\r\n"))
    add("chunk extensions over 4096 bytes on one size line",
        lambda p: req(p, ["Transfer-Encoding: chunked"],
                      b"5" + b";a=b" * 1100 + b"\r\nhello\r\n0\r\n\r\n"))
    # Host: uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2)
    for bad in ("", ":80", "a:8o", "a:80:80", "u@localhost", "u:p@localhost", "a%zz", "a\"b",
                "a{b}", "::1", "[::1", "[1::2::3]", "[::1%25eth0]", "[1.2.3.4]", "[v1]",
                "[::1]x", "localhost:-1"):
        add("Host %r" % bad, lambda p, b=bad: req(p, ["Host: " + b, "Content-Length: 0"],
                                                  host=False))
    add("empty Host in HTTP/1.0",
        lambda p: req(p, ["Host:", "Content-Length: 0"], version="HTTP/1.0", host=False))
    # absolute-form (RFC 9112 3.2.2): valid authority, no userinfo, agreeing with Host
    def absreq(target, host):
        return ("GET %s HTTP/1.1\r\n%sContent-Length: 0\r\n\r\n"
                % (target, "" if host is None else "Host: %s\r\n" % host)).encode()
    add("absolute-form with userinfo",
        lambda p: absreq("http://user:pw@localhost" + p, "localhost"))
    add("absolute-form authority differs from Host",
        lambda p: absreq("http://other.example" + p, "localhost"))
    add("absolute-form port differs from Host",
        lambda p: absreq("http://localhost:8080" + p, "localhost"))
    add("absolute-form with an empty host", lambda p: absreq("http://" + p, "localhost"))
    add("absolute-form with a non-digit port", lambda p: absreq("http://localhost:x" + p, "localhost"))
    add("absolute-form without an authority", lambda p: absreq("http:" + p, "localhost"))
    # limits
    add("request line longer than max_request_line -> 414",
        lambda p: req(p + "?" + "a" * 9000, ["Content-Length: 0"]), 414)
    add("header section bigger than max_header_bytes -> 431",
        lambda p: req(p, ["X-Big-%d: %s" % (i, "b" * 4000) for i in range(10)]
                      + ["Content-Length: 0"]), 431)
    add("more than max_headers fields -> 431",
        lambda p: req(p, ["X-H-%d: v" % i for i in range(120)] + ["Content-Length: 0"]), 431)
    add("Content-Length over client_max_body_size -> 413",
        lambda p: req(p, ["Content-Length: %d" % (MAX_BODY * 2)], b"x" * (MAX_BODY * 2)), 413)
    add("chunked body over client_max_body_size -> 413",
        lambda p: req(p, ["Transfer-Encoding: chunked"],
                      h.chunked(b"y" * (MAX_BODY * 3), [200])), 413)
    return C


def body(t):
    up = Upstream().start()
    port = h.free_port()
    cfg = h.make_config(port, [h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]}])],
                        client_max_body_size=MAX_BODY, max_request_line=8192,
                        max_header_bytes=32768, max_headers=100,
                        client_header_timeout=3000, client_body_timeout=3000)
    gw = h.Gateway(cfg)
    gw.start()

    # --- positive controls: the same shapes, well-formed, are accepted ------------------
    def t_controls():
        r = h.send_raw(port, req("/api/ctl-cl", ["Content-Length: 5", "Connection: close"], b"hello"),
                       close_wait=0)
        rec = up.wait_for("/ctl-cl")
        t.ok(r.status == 200 and rec is not None and rec.body == b"hello",
             "control: POST with Content-Length is proxied", r.describe() + "\n%r" % rec)
        r = h.send_raw(port, req("/api/ctl-te", ["Transfer-Encoding: chunked", "Connection: close"],
                                 b"5\r\nhello\r\n0\r\n\r\n"), close_wait=0)
        rec = up.wait_for("/ctl-te")
        t.ok(r.status == 200 and rec is not None and rec.body == b"hello",
             "control: POST with chunked body is proxied", r.describe() + "\n%r" % rec)
        r = h.send_raw(port, req("/api/ctl-lower", ["content-length: 5", "transfer-ENCODING-x: y",
                                                    "connection: close"], b"hello"), close_wait=0)
        rec = up.wait_for("/ctl-lower")
        t.ok(r.status == 200 and rec is not None and rec.body == b"hello",
             "control: lower-case content-length accepted (field names are case-insensitive)",
             r.describe() + "\n%r" % rec)
        r = h.send_raw(port, req("/api/ctl-ext", ["Transfer-Encoding: chunked", "Connection: close"],
                                 b"5;name=value\r\nhello\r\n0\r\n\r\n"), close_wait=0)
        rec = up.wait_for("/ctl-ext")
        t.ok(r.status == 200 and rec is not None and rec.body == b"hello",
             "control: chunk extension accepted (RFC 9112 7.1.1)", r.describe() + "\n%r" % rec)
        ext = b';a;b=c ; d = "q \\" \xe9" ;e\t=\tf'
        r = h.send_raw(port, req("/api/ctl-ext2", ["Transfer-Encoding: chunked", "Connection: close"],
                                 b"5" + ext + b"\r\nhello\r\n0" + ext + b"\r\n\r\n"), close_wait=0)
        rec = up.wait_for("/ctl-ext2")
        t.ok(r.status == 200 and rec is not None and rec.body == b"hello",
             "control: every production of the chunk-ext grammar is accepted",
             r.describe() + "\n%r" % rec)
        for host in ("localhost:%d" % port, "127.0.0.1", "[::1]:8", "a.example.", "x%41y"):
            r = h.send_raw(port, req("/api/ctl-host", ["Host: " + host, "Content-Length: 0",
                                                       "Connection: close"], host=False),
                           close_wait=0)
            t.ok(r.status == 200, "control: Host %r accepted" % host, r.describe())
        r = h.send_raw(port, ("GET http://LOCALHOST:80/api/ctl-abs HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n").encode(), close_wait=0)
        rec = up.wait_for("/ctl-abs")
        t.ok(r.status == 200 and rec is not None and len(rec.headers_all("host")) == 1,
             "control: absolute-form with an agreeing Host (default port) proxied, one Host upstream",
             r.describe() + "\n%r" % rec)
        r = h.send_raw(port, b"GET http://localhost/api/ctl-abs10 HTTP/1.0\r\n\r\n", close_wait=0)
        rec = up.wait_for("/ctl-abs10")
        t.ok(r.status == 200 and rec is not None and len(rec.headers_all("host")) == 1,
             "control: HTTP/1.0 absolute-form without Host proxied", r.describe() + "\n%r" % rec)
        r = h.send_raw(port, req("/api/ctl-hdrs", ["X-H-%d: v" % i for i in range(90)]
                                 + ["Content-Length: 0", "Connection: close"]), close_wait=0)
        t.ok(r.status == 200, "control: 90 header fields (under max_headers) are accepted",
             r.describe())
        big = ["X-Big-%d: %s" % (i, chr(97 + i) * 2900) for i in range(10)]   # ~29.5 KB
        r = h.send_raw(port, req("/api/ctl-bighead", big + ["Content-Length: 0", "Connection: close"]),
                       close_wait=0)
        rec = up.wait_for("/ctl-bighead")
        t.ok(r.status == 200 and rec is not None
             and all(rec.header("X-Big-%d" % i) == chr(97 + i) * 2900 for i in range(10)),
             "control: ~29.5 KB header section (under max_header_bytes) proxied intact",
             r.describe())
        longq = "q=" + "x" * 8000
        r = h.send_raw(port, req("/api/ctl-longline?" + longq, ["Content-Length: 0",
                                                                "Connection: close"]), close_wait=0)
        rec = up.wait_for("/ctl-longline")
        t.ok(r.status == 200 and rec is not None and rec.target.endswith(longq),
             "control: ~8 KB request line (under max_request_line) proxied intact", r.describe())
        # max_headers: 100 -> exactly 100 fields (Host, Content-Length, Connection + 97) pass
        r = h.send_raw(port, req("/api/ctl-h100", ["X-H-%d: v" % i for i in range(97)]
                                 + ["Content-Length: 0", "Connection: close"]), close_wait=0)
        t.ok(r.status == 200, "control: exactly max_headers (100) header fields are accepted",
             r.describe())
        r = h.send_raw(port, req("/api/ctl-h101", ["X-H-%d: v" % i for i in range(98)]
                                 + ["Content-Length: 0", "Connection: close"]), close_wait=0)
        t.ok(r.status == 431 and not up.find("ctl-h101"), "101 header fields (max_headers + 1) -> 431",
             r.describe())
        r = h.send_raw(port, req("/api/ctl-size", ["Content-Length: %d" % MAX_BODY, "Connection: close"],
                                 b"z" * MAX_BODY), close_wait=0)
        t.ok(r.status == 200, "control: body of exactly client_max_body_size is accepted",
             r.describe())

    t.run(t_controls)

    # --- the rejections, run concurrently (bounded time even if the gateway hangs) -------
    C = cases()

    def one(i, name, build, status):
        marker = "codec-%03d" % i
        data = build("/api/" + marker)
        return h.send_raw(port, data, timeout=5.0, close_wait=3.0)

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as ex:
        futs = [ex.submit(one, i, name, b, s) for i, (name, b, s) in enumerate(C)]
        results = [f.result() for f in futs]
    time.sleep(0.5)  # let anything the gateway might have forwarded arrive

    for i, ((name, _, status), res) in enumerate(zip(C, results)):
        marker = "codec-%03d" % i
        problems = []
        if res.status != status:
            problems.append("status %r, want %d" % (res.status, status))
        if status == 400 and not res.closed:
            problems.append("connection not closed after the 400")
        if res.response is not None and res.response.is_json():
            try:
                j = res.response.json()
                if "message" not in j:
                    problems.append("JSON body without 'message': %r" % j)
            except ValueError:
                problems.append("Content-Type JSON but body is not JSON: %r" % res.response.body[:200])
        leaked = up.find(marker)
        if leaked:
            full = [r for r in leaked if r.complete]
            problems.append("reached the upstream (%s): %r" % (
                "a COMPLETE request was forwarded" if full else
                "the head was forwarded, then the body aborted", leaked))
        t.ok(not problems, "%s%s, nothing upstream" % (name, " -> 400 + close" if status == 400 else ""),
             "\n".join(problems + [res.describe()]) if problems else None)

    def t_pipelined_then_bad():
        # a valid request followed on the same connection by a malformed one
        data = (req("/api/pipe-good", ["Content-Length: 2"], b"ok")
                + req("/api/pipe-bad", ["Content-Length: 1", "Content-Length: 2"], b"xy"))
        with h.Conn(port) as c:
            c.send(data)
            r1 = c.read_response()
            try:
                r2 = c.read_response()
            except (h.Timeout, h.ProtocolError) as e:
                r2 = e
            closed = c.wait_closed(3)
        time.sleep(0.2)
        t.ok(isinstance(r1, h.Response) and r1.status == 200 and isinstance(r2, h.Response)
             and r2.status == 400 and closed and not up.find("pipe-bad"),
             "pipelined valid + malformed request: 200, then 400 + close, bad one not forwarded",
             "%r\n%r\nclosed=%r upstream=%r" % (r1, r2, closed, up.find("pipe-")))
    t.run(t_pipelined_then_bad)

    smuggled = up.find("SMUGGLED")
    t.ok(not smuggled, "no smuggled request reached the upstream", repr(smuggled))

    def t_still_alive():
        r = h.get(port, "/api/after-codec")
        t.ok(r is not None and r.status == 200 and gw.alive(),
             "gateway still serves normal requests after the malformed ones", repr(r))
    t.run(t_still_alive)

    def t_codec_error_shape():
        # 400 body shape on one representative case (JSON, Kong-like)
        res = h.send_raw(port, req("/api/shape", ["Content-Length: 5", "Content-Length: 6"], b"hello!"))
        r = res.response
        if r is not None and r.is_json():
            try:
                j = json.loads(r.body)
                ok = j.get("message") == "Bad request"
            except ValueError:
                ok = False
            t.ok(ok, "codec 400 JSON body says {\"message\":\"Bad request\"}", repr(r))
        else:
            t.ok(r is not None and r.status == 400, "codec 400 answered (non-JSON body)", res.describe())
    t.run(t_codec_error_shape)

    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
