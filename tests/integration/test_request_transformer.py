#!/usr/bin/env python3
"""The request-transformer plugin through the real gateway, checked on what
the recording upstream receives: remove / rename / replace / add / append on
headers, query strings, JSON and form bodies (Content-Length right, chunked
bodies too, multipart and bodies over 8 MiB untouched), http_method (with
Kong's GET conversion of form bodies), replace.uri with regex captures, the
order of operations, templates from headers, query arguments, captures and
the jwt consumer, and values that would inject CR/LF or extra arguments
refused."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

ALICE_ID = "0d6c1e0e-43c1-4c55-8b53-6a0f5c0e7a11"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims, key=b"s3cret"):
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


def rt(**cfg):
    return {"name": "request-transformer", "config": cfg}


def config(port, up_port):
    url = "http://127.0.0.1:%d" % up_port
    ops = lambda **kw: kw  # noqa: E731
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 1},
        "consumers": [{"id": ALICE_ID, "username": "alice",
                       "jwt_secrets": [{"key": "alice-iss", "secret": "s3cret"}]}],
        "services": [{"name": "s", "url": url, "routes": [
            {"name": "h", "paths": ["/h"], "plugins": [rt(
                remove=ops(headers=["x-remove"]),
                rename=ops(headers=["x-old:x-new"]),
                replace=ops(headers=["x-replace:replaced", "x-absent:never"]),
                add=ops(headers=["x-add:added", "x-present:not-used"]),
                append=ops(headers=["x-append:second"]))]},
            {"name": "q", "paths": ["/q"], "plugins": [rt(
                remove=ops(querystring=["drop"]),
                rename=ops(querystring=["old:new"]),
                replace=ops(querystring=["rep:R", "absent:never"]),
                add=ops(querystring=["add:A", "keep:nope"]),
                append=ops(querystring=["multi:2"]))]},
            {"name": "b", "paths": ["/b"], "plugins": [rt(
                remove=ops(body=["secret"]),
                rename=ops(body=["a:b"]),
                replace=ops(body=["r:R"]),
                add=ops(body=["n:new", "keep:nope"]),
                append=ops(body=["list:2"]))]},
            {"name": "m", "paths": ["/m"], "plugins": [rt(http_method="POST")]},
            {"name": "uri", "paths": [r"~/users/(?<uid>\d+)/items/(\d+)$"], "plugins": [rt(
                replace={"uri": "/u/$(uri_captures.uid)/i/$(uri_captures[2])"})]},
            {"name": "t", "paths": ["/t"], "plugins": [rt(add=ops(
                headers=["X-From-Header:$(headers.x_src)",
                         "X-From-Bracket:$(headers[\"x-src\"])",
                         "X-From-Query:<$(query_params.q)>",
                         "X-Missing:[$(headers.nope)]",
                         "X-Inject:$(query_params.evil)"],
                querystring=["copy:$(headers[\"x-amp\"])"]))]},
            {"name": "get", "paths": ["/get"], "plugins": [rt(
                http_method="GET", append=ops(querystring=["after:1"]))]},
            {"name": "order", "paths": ["/order"], "plugins": [rt(
                append=ops(headers=["X-O:appended"]), add=ops(headers=["X-O:added"]),
                replace=ops(headers=["X-O:replaced"]), rename=ops(headers=["X-R:X-O"]),
                remove=ops(headers=["X-O"]))]},
            {"name": "evil-uri", "paths": ["/evil-uri"], "plugins": [rt(
                replace={"uri": "/safe/$(query_params.p)"})]},
            {"name": "c", "paths": ["/c"], "plugins": [
                {"name": "jwt"},
                rt(add=ops(headers=["X-Consumer-ID:$(consumer.id)",
                                    "X-User:$(consumer.username)",
                                    "X-Key:$(credential.key)"]))]},
        ]}],
    }


def body(t):
    up = Upstream().start()
    port = h.free_port()
    gw = h.Gateway(config(port, up.port), port=port)
    gw.start()

    def call(path, headers=None, method="GET", data=b""):
        up.clear()
        r = h.get(port, path, headers=headers, method=method, body=data)
        recs = up.requests()
        return r, (recs[-1] if recs else None)

    def t_headers():
        r, rec = call("/h/x", [("X-Remove", "1"), ("X-Old", "v"), ("X-Replace", "orig"),
                               ("X-Present", "p"), ("X-Append", "first")])
        t.eq(r.status, 200, "headers: proxied")
        if not rec:
            return
        t.eq(rec.header("X-Remove"), None, "remove: gone")
        t.ok(rec.header("X-New") == "v" and rec.header("X-Old") is None, "rename: x-old -> x-new")
        t.eq(rec.headers_all("X-Replace"), ["replaced"], "replace: the present header replaced")
        t.eq(rec.header("X-Absent"), None, "replace: an absent header is not added")
        t.eq(rec.header("X-Add"), "added", "add: an absent header added")
        t.eq(rec.headers_all("X-Present"), ["p"], "add: a present header kept as is")
        t.eq(rec.headers_all("X-Append"), ["first", "second"], "append: one more value")

    def t_query():
        r, rec = call("/q/x?drop=1&old=o&rep=r&keep=k&multi=1&other=%20z")
        args = urllib.parse.parse_qsl(rec.target.split("?", 1)[1], keep_blank_values=True) \
            if rec and "?" in rec.target else []
        got = sorted(args)
        want = sorted([("new", "o"), ("rep", "R"), ("keep", "k"), ("multi", "1"),
                       ("multi", "2"), ("other", " z"), ("add", "A")])
        t.eq(got, want, "querystring: remove, rename, replace, add, append (Kong's semantics)")
        t.ok(rec and "other=%20z" in rec.target, "untouched arguments keep their encoding",
             rec and rec.target)

    def t_json_body():
        doc = {"secret": "s", "a": 1, "r": "x", "keep": "k", "list": "1"}
        data = json.dumps(doc).encode()
        r, rec = call("/b/x", {"Content-Type": "application/json"}, "POST", data)
        out = json.loads(rec.body) if rec and rec.body else None
        t.eq(out, {"b": 1, "r": "R", "keep": "k", "list": ["1", "2"], "n": "new"},
             "JSON body: remove, rename, replace, add, append")
        t.eq(rec and rec.header("Content-Length"), str(len(rec.body)) if rec else None,
             "JSON body: Content-Length is the new length")
        # chunked in, Content-Length out
        chunked = b""
        for i in range(0, len(data), 10):
            part = data[i:i + 10]
            chunked += b"%x\r\n" % len(part) + part + b"\r\n"
        chunked += b"0\r\n\r\n"
        up.clear()
        with h.Conn(port) as c:
            c.send(b"POST /b/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
            resp = c.read_response()
        rec = up.requests()[-1] if up.requests() else None
        t.ok(resp.status == 200 and rec and json.loads(rec.body)["n"] == "new" and
             rec.header("Transfer-Encoding") is None, "chunked JSON body transformed", repr(rec))
        r, rec = call("/b/x", {"Content-Type": "application/json"}, "POST", b"[1,2]")
        t.eq(rec and rec.body, b"[1,2]", "a JSON array is left untouched (Kong)")
        r, rec = call("/b/x", {"Content-Type": "text/plain"}, "POST", b"secret=1")
        t.eq(rec and rec.body, b"secret=1", "another content type is left untouched")
        r, rec = call("/b/x", {"Content-Type": "application/json"}, "POST")
        t.eq(rec and json.loads(rec.body or b"null"), {"n": "new", "keep": "nope", "list": ["2"]},
             "an empty JSON body gets the added fields; append makes an array (Kong)")

    def t_form_body():
        data = b"secret=s&a=1&r=x&keep=k&list=1"
        r, rec = call("/b/x", {"Content-Type": "application/x-www-form-urlencoded"}, "POST", data)
        got = sorted(urllib.parse.parse_qsl(rec.body.decode())) if rec else None
        t.eq(got, sorted([("b", "1"), ("r", "R"), ("keep", "k"), ("list", "1"), ("list", "2"),
                          ("n", "new")]), "form body: remove, rename, replace, add, append")
        t.eq(rec and rec.header("Content-Length"), str(len(rec.body)) if rec else None,
             "form body: Content-Length is the new length")
        up.clear()
        with h.Conn(port) as c:
            c.send(b"POST /b/x HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   b"9\r\nsecret=s&\r\n3\r\na=1\r\n0\r\n\r\n")
            resp = c.read_response()
        rec = up.requests()[-1] if up.requests() else None
        t.ok(resp.status == 200 and rec and rec.body == b"b=1&n=new&keep=nope&list=2" and
             rec.header("Content-Length") == str(len(rec.body)) and
             rec.header("Transfer-Encoding") is None,
             "chunked form body transformed, sent with its Content-Length", repr(rec))
        mp = (b"--XyZ\r\nContent-Disposition: form-data; name=\"secret\"\r\n\r\ns\r\n"
              b"--XyZ--\r\n")
        r, rec = call("/b/x", {"Content-Type": "multipart/form-data; boundary=XyZ"}, "POST", mp)
        t.eq(rec and rec.body, mp, "a multipart body is left untouched (documented)")
        big = b'{"secret":"' + b"x" * (8 << 20) + b'"}'
        r, rec = call("/b/x", {"Content-Type": "application/json"}, "POST", big)
        t.ok(r.status == 200 and rec and rec.body_len == len(big) and
             rec.body_sha256 == hashlib.sha256(big).hexdigest(),
             "a body over 8 MiB goes upstream untouched", rec and rec.body_len)

    def t_method_uri():
        r, rec = call("/m/x")
        t.eq(rec and rec.method, "POST", "http_method: GET becomes POST")
        r, rec = call("/get/x?a=1", {"Content-Type": "application/x-www-form-urlencoded"},
                      "POST", b"b=2&a=3&sp=x%20y")
        t.eq(rec and rec.method, "GET", "http_method: POST becomes GET")
        t.eq(rec and rec.target, "/x?a=1&b=2&a=3&sp=x%20y&after=1",
             "GET conversion: the form body's arguments join the query (Kong), "
             "before the querystring edits")
        chunked = b"7\r\nb=2&c=3\r\n0\r\n\r\n"
        up.clear()
        with h.Conn(port) as c:
            c.send(b"POST /get/x HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
            resp = c.read_response()
        rec = up.requests()[-1] if up.requests() else None
        t.ok(resp.status == 200 and rec and rec.target == "/x?b=2&c=3&after=1",
             "GET conversion of a chunked form body", rec and rec.target)
        r, rec = call("/get/x?a=1", {"Content-Type": "application/json"}, "POST", b'{"b":2}')
        t.ok(rec and rec.target == "/x?a=1&after=1" and rec.body == b'{"b":2}',
             "GET conversion: a JSON body is not moved", rec and (rec.target, rec.body))
        r, rec = call("/users/42/items/7?z=1")
        t.eq(rec and rec.target, "/u/42/i/7?z=1", "replace.uri with named and numbered captures")

    def t_templates():
        r, rec = call("/t/x?q=from%20query&evil=a%0d%0aX-Evil:%201",
                      {"X-Src": "hv", "X-Amp": "a&admin=1"})
        if not rec:
            t.ok(False, "templates: proxied")
            return
        t.eq(rec.header("X-From-Header"), "hv", "$(headers.x_src), underscores read as dashes")
        t.eq(rec.header("X-From-Bracket"), "hv", '$(headers["x-src"])')
        t.eq(rec.header("X-From-Query"), "<from query>", "$(query_params.q), decoded")
        t.eq(rec.header("X-Missing"), "[]", "a missing value renders empty")
        t.ok(rec.header("X-Inject") is None and rec.header("X-Evil") is None,
             "a value with CR/LF is not sent, and injects nothing")
        t.ok("request-transformer" in gw.stderr() and "CR, LF or NUL" in gw.stderr(),
             "and it is logged")
        q = urllib.parse.parse_qs(rec.target.split("?", 1)[1])
        t.ok(q.get("copy") == ["a&admin=1"] and "admin" not in q,
             "a templated query value is encoded: no argument injection", rec.target)

    def t_order():
        r, rec = call("/order/x", [("X-O", "client"), ("X-R", "renamed")])
        t.eq(rec and rec.headers_all("X-O"), ["replaced", "appended"],
             "order within headers: remove, rename, replace, add (skipped), append")
        t.eq(rec and rec.header("X-R"), None, "the renamed header is gone")

    def t_uri_injection():
        r, rec = call("/evil-uri/x?p=a%0d%0aX-Evil:%201")
        t.ok(r.status == 200 and rec and rec.header("X-Evil") is None and
             rec.path == "/x",
             "replace.uri rendering CR/LF is not applied", rec and rec.target)
        r, rec = call("/evil-uri/x?p=ok")
        t.eq(rec and rec.path, "/safe/ok", "replace.uri from a query argument")

    def t_consumer():
        tok = hs256({"iss": "alice-iss"})
        r, rec = call("/c/x", {"Authorization": "Bearer " + tok, "X-Consumer-ID": "forged"})
        t.ok(r.status == 200 and rec and rec.headers_all("X-Consumer-ID") == [ALICE_ID] and
             rec.header("X-User") == "alice" and rec.header("X-Key") == "alice-iss",
             "$(consumer.id), $(consumer.username), $(credential.key) after jwt", repr(rec))

    t.run(t_headers)
    t.run(t_query)
    t.run(t_json_body)
    t.run(t_form_body)
    t.run(t_method_uri)
    t.run(t_templates)
    t.run(t_consumer)
    t.run(t_order)
    t.run(t_uri_injection)
    gw.stop()
    gw.check_clean(t)

    d = tempfile.mkdtemp(prefix="sluice-rt-")
    for desc, cfg, want in (
            ("a pair without ':'", {"add": {"headers": ["nocolon"]}}, "is not of the form"),
            ("an unknown template", {"add": {"headers": ["x:$(os.exit)"]}},
             "unsupported template"),
            ("an unclosed template", {"add": {"headers": ["x:$(headers.a"]}}, "not closed"),
            ("a bad header name", {"add": {"headers": ["x y:1"]}}, "bad name"),
            ("a lower-case method", {"http_method": "post"}, "upper-case"),
            ("an unknown key", {"add": {"cookies": ["a:b"]}}, "unknown field"),
            ("an empty value", {"add": {"querystring": ["a:"]}}, "has no value"),
            ("json_types", {"add": {"body": ["a:1"], "json_types": ["number"]}},
             "json_types is not supported")):
        c = config(h.free_port(), up.port)
        c["services"][0]["routes"][0]["plugins"] = [rt(**cfg)]
        path = os.path.join(d, "bad.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(c))
        p = subprocess.run([h.sluice_bin(), "-t", "-c", path], capture_output=True, text=True,
                           timeout=20)
        t.ok(p.returncode != 0 and "bad.yaml:" in p.stderr and want in p.stderr,
             "-t refuses %s" % desc, p.stderr)
    c = config(h.free_port(), up.port)
    c["services"][0]["routes"][0]["plugins"] = [rt(add={"body": ["a:1"], "json_types": []})]
    path = os.path.join(d, "ok.yaml")
    with open(path, "w") as f:
        f.write(h.to_yaml(c))
    p = subprocess.run([h.sluice_bin(), "-t", "-c", path], capture_output=True, text=True,
                       timeout=20)
    t.ok(p.returncode == 0, "-t accepts Kong's default json_types: []", p.stderr)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
