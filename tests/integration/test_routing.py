#!/usr/bin/env python3
"""Kong's router through the real proxy: a table of routing cases
(priority between every pair of criteria, wildcard hosts, regex paths and
regex_priority, methods, headers with plain and ~* values, snis), the
upstream path and Host (strip_path, preserve_host, regex strip), and
normalisation attacks. Every service has its own path (/svc-NAME), so the
path the upstream receives tells which route won."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def route(name, **kw):
    r = {"name": name}
    r.update(kw)
    return r


def body(t):
    up = Upstream().start()
    port = h.free_port()

    def svc(name, *routes, path=None):
        return {"name": name, "url": "http://127.0.0.1:%d%s" % (up.port, path or "/svc-" + name),
                "routes": list(routes)}

    services = [
        # (1) more fields beat fewer: methods+paths over paths
        svc("p-only", route("p-only", paths=["/prio1"])),
        svc("p-method", route("p-method", paths=["/prio1"], methods=["POST"])),
        # (2) plain host over wildcard host (same number of fields)
        svc("wild", route("wild", hosts=["*.example.com"], paths=["/prio2"])),
        svc("plain", route("plain", hosts=["api.example.com"], paths=["/prio2"])),
        svc("suffix", route("suffix", hosts=["example.*"], paths=["/prio2"])),
        # (3) more headers first
        svc("h1", route("h1", paths=["/prio3"], headers={"x-a": ["1"]})),
        svc("h2", route("h2", paths=["/prio3"], headers={"x-a": ["1"], "x-b": ["2"]})),
        # (4) regex over prefix, (5) regex_priority, (6) longest prefix
        svc("prefix", route("prefix", paths=["/users"])),
        svc("re-low", route("re-low", paths=["~/users/(?<id>\\d+)$"], regex_priority=1)),
        svc("re-high", route("re-high", paths=["~/users/(?<id>\\d+)(/.*)?$"], regex_priority=5)),
        svc("short", route("short", paths=["/api"])),
        svc("long", route("long", paths=["/api/v1"])),
        # headers: case-insensitive values, ~* regex values
        svc("hdr", route("hdr", paths=["/hdr"], headers={"x-version": ["v1", "~*^beta-\\d+$"]})),
        # snis: never on plain http
        svc("sni", route("sni", paths=["/sni"], snis=["api.example.com"])),
        # strip_path / preserve_host
        svc("strip", route("strip", paths=["/strip"], strip_path=True)),
        svc("keep", route("keep", paths=["/keep"], strip_path=False)),
        svc("host", route("host", paths=["/host"], preserve_host=True)),
        svc("restrip", route("restrip", paths=["~/re/\\d+"], strip_path=True)),
        # normalisation: the users service only ever sees /users paths
        svc("users", route("users", paths=["/api2/v1/users"])),
        svc("orders", route("orders", paths=["/api2/v1/orders"])),
        svc("meth", route("meth", paths=["/meth"], methods=["GET"])),
    ]
    cfg = h.make_config(port, services, worker_processes=1)
    gw = h.Gateway(cfg)
    gw.start()

    def call(path, method="GET", headers=None, host="localhost"):
        up.clear()
        r = h.try_get(port, path, method=method, headers=headers, host=host)
        recs = up.requests()
        return r, (recs[0] if recs else None)

    cases = [
        # (description, request, expected upstream path or status)
        ("more fields win: POST /prio1 -> methods+paths route",
         dict(path="/prio1", method="POST"), "/svc-p-method"),
        ("... GET /prio1 -> the paths-only route", dict(path="/prio1"), "/svc-p-only"),
        ("plain host beats *.example.com", dict(path="/prio2", host="api.example.com"),
         "/svc-plain"),
        ("*.example.com matches another subdomain", dict(path="/prio2", host="x.example.com"),
         "/svc-wild"),
        ("example.com is not *.example.com (a label is needed) but is example.*",
         dict(path="/prio2", host="example.com"), "/svc-suffix"),
        ("example.* matches any suffix", dict(path="/prio2", host="example.org"), "/svc-suffix"),
        ("host compare ignores case and port", dict(path="/prio2", host="API.Example.com:8080"),
         "/svc-plain"),
        ("more headers win", dict(path="/prio3", headers={"X-A": "1", "X-B": "2"}), "/svc-h2"),
        ("... with one header the one-header route", dict(path="/prio3", headers={"X-A": "1"}),
         "/svc-h1"),
        ("header value mismatch: no route", dict(path="/prio3", headers={"X-A": "2"}), 404),
        ("regex beats prefix; regex_priority 5 beats 1 (strip_path strips the whole match)",
         dict(path="/users/42"), "/svc-re-high"),
        ("regex not matching: the prefix route", dict(path="/users/abc"), "/svc-prefix/abc"),
        ("longest prefix wins", dict(path="/api/v1/x"), "/svc-long/x"),
        ("... and the shorter one for the rest", dict(path="/api/v2/x"), "/svc-short/v2/x"),
        ("prefix is a raw string prefix: /apix matches /api", dict(path="/apix"),
         "/svc-short/x"),
        ("header value case-insensitive", dict(path="/hdr", headers={"X-Version": "V1"}),
         "/svc-hdr"),
        ("header ~* regex value", dict(path="/hdr", headers={"X-Version": "BETA-7"}),
         "/svc-hdr"),
        ("header regex anchored as written", dict(path="/hdr", headers={"X-Version": "xbeta-7"}),
         404),
        ("missing header: no route", dict(path="/hdr"), 404),
        ("a route with snis never matches plain http", dict(path="/sni"), 404),
        ("strip_path removes the prefix", dict(path="/strip/a/b?q=1"), "/svc-strip/a/b"),
        ("strip_path false keeps it", dict(path="/keep/a"), "/svc-keep/keep/a"),
        ("strip_path on a regex route strips the whole match", dict(path="/re/123/rest"),
         "/svc-restrip/rest"),
        ("dot segments are resolved before routing", dict(path="/api2/v1/users/../orders"),
         "/svc-orders"),
        ("encoded dots too", dict(path="/api2/v1/users/%2e%2e/orders"), "/svc-orders"),
        ("// is merged", dict(path="//api2//v1//orders"), "/svc-orders"),
        ("%2F stays encoded (not a separator)", dict(path="/api2/v1/users/a%2fb"),
         "/svc-users/a%2Fb"),
        ("climbing above the root stays at the root", dict(path="/../../api2/v1/orders"),
         "/svc-orders"),
        ("method mismatch: no route", dict(path="/meth", method="DELETE"), 404),
    ]
    for desc, req, want in cases:
        r, rec = call(**req)
        if isinstance(want, int):
            t.ok(isinstance(r, h.Response) and r.status == want and rec is None, desc,
                 "status %r, upstream saw %r" % (getattr(r, "status", r), rec and rec.target))
        else:
            got = rec.path if rec is not None else None
            t.ok(isinstance(r, h.Response) and r.status == 200 and got == want, desc,
                 "want %r, upstream got %r (status %r)" % (want, got, getattr(r, "status", r)))

    r, rec = call("/host/x", host="client.example.com:8443")
    t.ok(rec is not None and rec.header("Host") == "client.example.com:8443",
         "preserve_host: the client's Host goes upstream", repr(rec and rec.header("Host")))
    r, rec = call("/strip/x", host="client.example.com")
    t.ok(rec is not None and rec.header("Host") == "127.0.0.1:%d" % up.port,
         "without preserve_host: the service's host:port", repr(rec and rec.header("Host")))
    r, rec = call("/strip/x?a=1&b=%20")
    t.ok(rec is not None and rec.target == "/svc-strip/x?a=1&b=%20",
         "the query string goes upstream untouched", repr(rec and rec.target))

    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=90)
