#!/usr/bin/env python3
"""Proxying: upstream path (Kong path_handling v0), method, body, the
X-Forwarded-* / X-Real-IP / Via / X-Request-Id headers, trusted_ips, Host,
hop-by-hop header removal both ways."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def routes():
    return [{"name": "r1", "paths": ["/api"]},
            {"name": "keep", "paths": ["/keep"], "strip_path": False},
            {"name": "ph", "paths": ["/ph"], "preserve_host": True},
            {"name": "m", "paths": ["/onlyget"], "methods": ["GET"]},
            {"name": "hosted", "paths": ["/hosted"], "hosts": ["example.com"]}]


def body(t):
    up = Upstream().start()
    port = h.free_port()
    extra = [
        # protocol/host/port/path instead of url
        {"name": "split", "protocol": "http", "host": "127.0.0.1", "port": up.port,
         "path": "/splitbase", "routes": [{"name": "rs", "paths": ["/split"]}]},
        # no service path
        {"name": "nopath", "url": "http://127.0.0.1:%d" % up.port,
         "routes": [{"name": "rn", "paths": ["/nopath"]}]},
    ]
    gw = h.Gateway(h.make_config(port, [h.service("echo", up.port, routes=routes())] + extra))
    gw.start()

    tport = h.free_port()
    gwt = h.Gateway(h.make_config(tport, [h.service("echo", up.port, routes=routes())],
                                  trusted_ips=["127.0.0.1"]), name="gateway (trusted_ips)")
    gwt.start()

    def fetch(p, path, headers=None, method="GET", body=b"", host="localhost"):
        """Request via the gateway; returns (response, upstream record)."""
        r = h.get(p, path, headers=headers, method=method, body=body, host=host)
        marker = [s for s in path.split("?")[0].split("/") if s][-1]
        rec = up.wait_for(marker)
        return r, rec

    def one_header(rec, name):
        vals = rec.headers_all(name) if rec else []
        return vals[0] if len(vals) == 1 else ("<%d values: %r>" % (len(vals), vals))

    # --- path handling ------------------------------------------------------------
    def t_paths():
        for client, want in (("/api/p1?q=1&r=a%20b", "/base/p1?q=1&r=a%20b"),
                             ("/api/deep/er/p2", "/base/deep/er/p2"),
                             ("/api/p3/", "/base/p3/"),
                             ("/keep/p4?x=y", "/base/keep/p4?x=y")):
            r, rec = fetch(port, client)
            t.ok(r is not None and r.status == 200 and rec is not None and rec.target == want,
                 "path %s reaches the upstream as %s" % (client, want),
                 "response=%r\nrecord=%r" % (r, rec))
        up.clear()
        r = h.get(port, "/api")
        recs = up.wait_requests(1, timeout=3)
        t.ok(r is not None and r.status == 200 and len(recs) == 1 and recs[0].target == "/base",
             "path /api (route prefix only) reaches the upstream as /base",
             "response=%r records=%r" % (r, recs))
        up.clear()
        r = h.get(port, "/api?only=query")
        recs = up.wait_requests(1, timeout=3)
        t.ok(r is not None and r.status == 200 and len(recs) == 1
             and recs[0].target == "/base?only=query",
             "path /api?only=query reaches the upstream as /base?only=query",
             "response=%r records=%r" % (r, recs))

    def t_service_forms():
        for client, want in (("/split/s1?z=1", "/splitbase/s1?z=1"),
                             ("/nopath/n1", "/n1"),
                             ("/nopath/n2/", "/n2/")):
            r, rec = fetch(port, client)
            t.ok(r is not None and r.status == 200 and rec is not None and rec.target == want,
                 "path %s reaches the upstream as %s" % (client, want),
                 "response=%r\nrecord=%r" % (r, rec))
        up.clear()
        r = h.get(port, "/nopath")
        recs = up.wait_requests(1, timeout=3)
        t.ok(r is not None and r.status == 200 and len(recs) == 1 and recs[0].target == "/",
             "path /nopath (service without path) reaches the upstream as /",
             "response=%r records=%r" % (r, recs))

    def t_method_body():
        r, rec = fetch(port, "/api/mb1", method="POST", body=b"some-body-bytes")
        t.ok(r is not None and r.status == 200 and rec is not None and rec.method == "POST"
             and rec.body == b"some-body-bytes", "POST method and body reach the upstream",
             "response=%r record=%r" % (r, rec))
        r, rec = fetch(port, "/api/mb2", method="DELETE")
        t.ok(r is not None and r.status == 200 and rec is not None and rec.method == "DELETE",
             "DELETE method reaches the upstream", "response=%r record=%r" % (r, rec))
        r = h.get(port, "/onlyget/mb3", method="POST", body=b"x")
        t.ok(r is not None and r.status == 404 and not up.find("mb3"),
             "methods: [GET] route does not match POST (404)", repr(r))
        r = h.get(port, "/hosted/mb4", host="example.com")
        t.ok(r is not None and r.status == 200 and up.wait_for("mb4") is not None,
             "hosts route matches its Host", repr(r))
        r = h.get(port, "/hosted/mb4b", host="example.com:8080")
        t.ok(r is not None and r.status == 200 and up.wait_for("mb4b") is not None,
             "hosts route matches its Host with a port (example.com:8080)", repr(r))
        r = h.get(port, "/hosted/mb5", host="other.example")
        t.ok(r is not None and r.status == 404 and not up.find("mb5"),
             "hosts route does not match another Host (404)", repr(r))

    # --- X-Forwarded-* -------------------------------------------------------------------
    def t_forwarded_default():
        r, rec = fetch(port, "/api/xf1?a=b", host="example.com:8080")
        if not t.ok(r is not None and r.status == 200 and rec is not None,
                    "request for header checks proxied", "response=%r record=%r" % (r, rec)):
            return
        t.eq(one_header(rec, "X-Forwarded-For"), "127.0.0.1", "X-Forwarded-For = peer ip when none sent")
        t.eq(one_header(rec, "X-Forwarded-Proto"), "http", "X-Forwarded-Proto: http")
        t.eq(one_header(rec, "X-Forwarded-Host"), "example.com", "X-Forwarded-Host = Host without port")
        t.eq(one_header(rec, "X-Forwarded-Port"), str(port), "X-Forwarded-Port = listener port")
        t.eq(one_header(rec, "X-Forwarded-Path"), "/api/xf1", "X-Forwarded-Path = request path without query")
        t.eq(one_header(rec, "X-Real-IP"), "127.0.0.1", "X-Real-IP = peer ip")
        via = one_header(rec, "Via")
        t.ok(h.VIA_RE.match(via or "") is not None, "Via: 1.1 sluice on the upstream request",
             "Via=%r" % via)
        t.eq(one_header(rec, "Host"), "127.0.0.1:%d" % up.port,
             "upstream Host = service host:port (preserve_host false)")

    def t_forwarded_spoofed():
        spoof = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
                 ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Port", "1234"),
                 ("X-Forwarded-Path", "/evil"), ("X-Real-IP", "6.6.6.6")]
        r, rec = fetch(port, "/api/xf2", headers=spoof, host="good.example")
        if not t.ok(r is not None and r.status == 200 and rec is not None,
                    "request with client X-Forwarded-* proxied", "response=%r record=%r" % (r, rec)):
            return
        t.eq(one_header(rec, "X-Forwarded-For"), "1.2.3.4, 127.0.0.1",
             "X-Forwarded-For = client value + ', ' + peer ip")
        t.eq(one_header(rec, "X-Forwarded-Proto"), "http", "untrusted peer: X-Forwarded-Proto replaced")
        t.eq(one_header(rec, "X-Forwarded-Host"), "good.example", "untrusted peer: X-Forwarded-Host replaced")
        t.eq(one_header(rec, "X-Forwarded-Port"), str(port), "untrusted peer: X-Forwarded-Port replaced")
        t.eq(one_header(rec, "X-Forwarded-Path"), "/api/xf2", "untrusted peer: X-Forwarded-Path replaced")
        t.eq(one_header(rec, "X-Real-IP"), "127.0.0.1", "untrusted peer: X-Real-IP replaced")
        r, rec = fetch(port, "/api/xf2b", headers=[("X-Forwarded-Prefix", "/evil")])
        t.eq(one_header(rec, "X-Forwarded-Prefix") if rec else None, "/api",
             "X-Forwarded-Prefix = matched prefix (strip_path), client value replaced")

    def t_forwarded_for_multiple():
        r, rec = fetch(port, "/api/xf5", headers=[("X-Forwarded-For", "1.1.1.1"),
                                                  ("X-Forwarded-For", "2.2.2.2, 3.3.3.3")])
        t.eq(one_header(rec, "X-Forwarded-For") if rec else None,
             "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1",
             "two client X-Forwarded-For fields: combined, then peer ip appended (one field)")

    def t_absolute_form_and_dot_segments():
        # RFC 9112 3.2.2: a server MUST accept the absolute-form
        with h.Conn(port) as c:
            c.send(b"GET http://localhost/api/absform?x=1 HTTP/1.1\r\nHost: localhost\r\n"
                   b"Connection: close\r\n\r\n")
            r = c.read_response()
        rec = up.wait_for("absform")
        t.ok(r is not None and r.status == 200 and rec is not None
             and rec.target == "/base/absform?x=1",
             "absolute-form request target is accepted and routed by its path",
             "response=%r record=%r" % (r, rec))
        # dot segments must never reach the upstream (no escaping the route prefix)
        # (Kong normalises the URI before matching and sends the normalised one upstream)
        for marker, path in (("dotseg-a", "/api/../dotseg-a"), ("dotseg-b", "/api/x/../../dotseg-b"),
                             ("dotseg-c", "/api/%2e%2e/dotseg-c")):
            r = h.try_get(port, path)
            time.sleep(0.1)
            bad = [rec for rec in up.find(marker) if ".." in rec.path
                   or "%2e%2e" in rec.path.lower()]
            t.ok(isinstance(r, h.Response) and not bad,
                 "dot segments in %s do not reach the upstream (status %s)"
                 % (path, r.status if isinstance(r, h.Response) else r), repr(bad))

    def t_forwarded_trusted():
        spoof = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
                 ("X-Forwarded-Host", "front.example"), ("X-Forwarded-Port", "443"),
                 ("X-Forwarded-Path", "/front/path"), ("X-Real-IP", "9.9.9.9")]
        r, rec = fetch(tport, "/api/xf3", headers=spoof, host="good.example")
        if not t.ok(r is not None and r.status == 200 and rec is not None,
                    "request via trusted_ips gateway proxied", "response=%r record=%r" % (r, rec)):
            return
        t.eq(one_header(rec, "X-Forwarded-For"), "1.2.3.4, 127.0.0.1",
             "trusted peer: X-Forwarded-For still appended")
        t.eq(one_header(rec, "X-Forwarded-Proto"), "https", "trusted peer: X-Forwarded-Proto kept")
        t.eq(one_header(rec, "X-Forwarded-Host"), "front.example", "trusted peer: X-Forwarded-Host kept")
        t.eq(one_header(rec, "X-Forwarded-Port"), "443", "trusted peer: X-Forwarded-Port kept")
        t.eq(one_header(rec, "X-Forwarded-Path"), "/front/path", "trusted peer: X-Forwarded-Path kept")
        t.eq(one_header(rec, "X-Real-IP"), "9.9.9.9", "trusted peer: X-Real-IP kept")
        # and without client values the trusted gateway generates them
        r, rec = fetch(tport, "/api/xf4", host="gen.example:81")
        t.ok(rec is not None and one_header(rec, "X-Forwarded-Host") == "gen.example"
             and one_header(rec, "X-Forwarded-Port") == str(tport)
             and one_header(rec, "X-Forwarded-Proto") == "http",
             "trusted peer without client values: X-Forwarded-* generated", repr(rec))

    # --- Host ------------------------------------------------------------------------------
    def t_preserve_host():
        r, rec = fetch(port, "/ph/host1", host="client.example:8081")
        t.ok(rec is not None and one_header(rec, "Host") == "client.example:8081",
             "preserve_host: true sends the client's Host upstream", repr(rec))

    def t_host_default_port():
        # a service on port 80: upstream Host is the bare host (no ":80")
        try:
            up80 = Upstream(port=80, name="upstream80").start()
        except OSError as e:
            t.skip("upstream Host without :80 for a port-80 service", "cannot bind 127.0.0.1:80 (%s)" % e)
            return
        p80 = h.free_port()
        g80 = h.Gateway(h.make_config(p80, [
            {"name": "s80", "url": "http://127.0.0.1/base80",
             "routes": [{"name": "r80", "paths": ["/p80"]}]}]), name="gateway (port-80 service)")
        try:
            g80.start()
            r = h.try_get(p80, "/p80/x")
            rec = up80.wait_for("/base80/x")
            t.ok(rec is not None and one_header(rec, "Host") == "127.0.0.1",
                 "upstream Host without :80 for a port-80 service", "response=%r record=%r" % (r, rec))
        finally:
            g80.stop()
            g80.check_clean(t)
            up80.stop()

    # --- X-Request-Id -----------------------------------------------------------------------
    def t_request_id():
        r, rec = fetch(port, "/api/rid1")
        up_id = one_header(rec, "X-Request-Id") if rec else None
        t.ok(up_id is not None and h.REQUEST_ID_RE.match(up_id) is not None,
             "X-Request-Id generated (32 hex or UUID) when absent", "upstream saw %r" % up_id)
        t.ok(r is not None and r.header("X-Request-Id") == up_id and up_id,
             "generated X-Request-Id echoed on the response",
             "response id %r, upstream id %r" % (r and r.header("X-Request-Id"), up_id))
        r2, rec2 = fetch(port, "/api/rid2")
        id2 = one_header(rec2, "X-Request-Id") if rec2 else None
        t.ok(id2 and up_id and id2 != up_id, "X-Request-Id differs between requests",
             "%r vs %r" % (up_id, id2))
        r, rec = fetch(port, "/api/rid3", headers=[("X-Request-Id", "client-chosen-id-42")])
        t.eq(one_header(rec, "X-Request-Id") if rec else None, "client-chosen-id-42",
             "client X-Request-Id kept as-is upstream")
        t.eq(r.header("X-Request-Id") if r else None, "client-chosen-id-42",
             "client X-Request-Id echoed on the response")

    def t_response_via():
        r = h.get(port, "/api/via1")
        vias = r.headers_all("Via") if r else []
        t.ok(len(vias) == 1 and h.VIA_RE.match(vias[0]) is not None,
             "response carries Via: 1.1 sluice", repr(r))

    # --- hop-by-hop ----------------------------------------------------------------------------
    def t_hop_by_hop_request():
        hs = [("Connection", "keep-alive, X-Secret, X-Other"), ("Keep-Alive", "timeout=5"),
              ("Proxy-Connection", "keep-alive"), ("TE", "deflate"), ("Trailer", "X-Trail"),
              ("Upgrade", "foo/1"), ("X-Secret", "s3cret"), ("X-Other", "o"),
              ("X-Normal", "n")]
        with h.Conn(port) as c:
            r = c.request("GET", "/api/hop1", hs)
        rec = up.wait_for("hop1")
        if not t.ok(r is not None and r.status == 200 and rec is not None,
                    "request with hop-by-hop headers proxied", "response=%r record=%r" % (r, rec)):
            return
        for name in ("Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade",
                     "X-Secret", "X-Other"):
            t.ok(rec.header(name) is None, "hop-by-hop %s not forwarded upstream" % name,
                 "upstream got %s: %r" % (name, rec.headers_all(name)))
        conn = ",".join(rec.headers_all("Connection")).lower()
        t.ok("x-secret" not in conn and "x-other" not in conn,
             "client Connection tokens not forwarded upstream", "Connection upstream: %r" % conn)
        t.eq(rec.header("X-Normal"), "n", "end-to-end header X-Normal forwarded")

        with h.Conn(port) as c:
            c.send(h.build_request("GET", "/api/hop2", [("Connection", "close, X-Secret"),
                                                        ("X-Secret", "s")]))
            r = c.read_response()
            closed = c.wait_closed(3)
        rec = up.wait_for("hop2")
        t.ok(rec is not None and rec.header("X-Secret") is None,
             "Connection: close, X-Secret -> X-Secret not forwarded", repr(rec))
        t.ok(r is not None and r.status == 200 and closed,
             "Connection: close from the client: response then close", "closed=%r %r" % (closed, r))

    def t_hop_by_hop_response():
        r = h.get(port, "/api/hop")
        if not t.ok(r is not None and r.status == 200, "upstream response with hop-by-hop headers",
                    repr(r)):
            return
        t.ok(r.header("Keep-Alive") is None, "upstream Keep-Alive not passed to the client", repr(r))
        t.ok(r.header("X-Foo") is None, "header named in upstream Connection (X-Foo) removed",
             repr(r))
        t.ok("x-foo" not in ",".join(r.headers_all("Connection")).lower(),
             "upstream Connection tokens not passed to the client", repr(r))
        t.eq(r.header("X-Bar"), "2", "end-to-end upstream header X-Bar passed")
        t.eq(r.headers_all("Set-Cookie"), ["a=1; Path=/", "b=2; Path=/"],
             "two upstream Set-Cookie fields both reach the client, in order")

    def t_duplicate_request_headers():
        r, rec = fetch(port, "/api/dup1", headers=[("X-Dup", "one"), ("X-Dup", "two"),
                                                   ("Cookie", "c=1"), ("Cookie", "d=2")])
        vals = rec.headers_all("X-Dup") if rec else []
        joined = ", ".join(vals)
        t.ok(joined == "one, two", "repeated request header X-Dup forwarded with both values in order",
             "upstream got %r" % vals)

    for fn in (t_paths, t_service_forms, t_method_body, t_forwarded_default, t_forwarded_spoofed,
               t_forwarded_for_multiple, t_absolute_form_and_dot_segments,
               t_forwarded_trusted, t_preserve_host, t_host_default_port, t_request_id, t_response_via,
               t_hop_by_hop_request, t_hop_by_hop_response, t_duplicate_request_headers):
        t.run(fn)

    gw.stop()
    gw.check_clean(t)
    gwt.stop()
    gwt.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
