#!/usr/bin/env python3
"""The admin listener (admin_listen): Kong's DB-less POST /config with a
YAML or a JSON body, Kong's error shape for a refused configuration (with
file:line:column), and the edges: other paths and methods, no
Content-Length, a body over 16 MiB (also when sent whole without waiting
for the answer), Expect: 100-continue."""

import json
import os
import socket
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def body(t):
    up = Upstream().start()
    port, aport = h.free_port(), h.free_port()
    node = {"admin_listen": "127.0.0.1:%d" % aport, "worker_processes": 1}
    cfg = h.make_config(port, [h.service("one", up.port, path="/one",
                                         routes=[{"name": "r", "paths": ["/x"]}])], **node)
    gw = h.Gateway(cfg)
    gw.start()

    def post(data, ctype="text/yaml"):
        req = urllib.request.Request("http://127.0.0.1:%d/config" % aport, data=data,
                                     method="POST", headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    # JSON is YAML too: Kong's clients send either
    new = h.make_config(port, [h.service("two", up.port, path="/two",
                                         routes=[{"name": "r", "paths": ["/x"]}])], **node)
    code, resp = post(json.dumps(new).encode(), "application/json")
    t.ok(code == 201 and len(resp.get("configuration_hash", "")) == 32,
         "POST /config with a JSON body: 201 and the new configuration's hash", repr(resp))
    up.clear()
    h.get(port, "/x/a")
    t.ok(len(up.find("/two/a")) == 1, "the posted configuration serves at once")

    bad = ('_format_version: "3.0"\nservices:\n  - name: s\n    host: h\n'
           '    retries: many\n')
    code, resp = post(bad.encode())
    t.ok(code == 400 and resp.get("code") == 14 and
         resp.get("name") == "invalid declarative configuration" and
         resp.get("message", "").startswith("declarative config is invalid: POST /config:5:14: "),
         "a bad configuration: 400 in Kong's shape with file:line:column", repr(resp))
    code, resp = post(b'_format_version: "3.0"\nplugins:\n  - name: jwt-ish\n')
    t.ok(code == 400 and "plugin 'jwt-ish' is not supported yet" in resp.get("message", ""),
         "an unknown plugin is refused the same way", repr(resp))
    up.clear()
    h.get(port, "/x/b")
    t.ok(len(up.find("/two/b")) == 1, "after the refusals the last good configuration serves")

    r = h.send_raw(aport, b"GET /config HTTP/1.1\r\nHost: a\r\n\r\n")
    t.eq(r.status, 405, "GET /config: 405 (the configuration is only posted)")
    r = h.send_raw(aport, b"GET /routes HTTP/1.1\r\nHost: a\r\n\r\n")
    t.eq(r.status, 404, "other admin paths: 404 (DB-less: only /config)")
    r = h.send_raw(aport, b"POST /config HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"0\r\n\r\n")
    t.eq(r.status, 411, "a chunked body: 411 Length Required")
    r = h.send_raw(aport, b"POST /config HTTP/1.1\r\nHost: a\r\nContent-Length: 17825792\r\n\r\n")
    t.eq(r.status, 413, "a body over 16 MiB: 413 before it is read")

    # the same 413 to a client that sends the whole body without waiting:
    # the gateway drops the rest instead of resetting the connection
    s = socket.create_connection(("127.0.0.1", aport), timeout=10)
    size = 17 * 1024 * 1024
    s.sendall(b"POST /config HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    sent, error, answer = 0, None, b""
    try:
        chunk = b"x" * 65536
        while sent < size:
            sent += s.send(chunk)
        while True:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    except OSError as e:
        error = e
    s.close()
    t.ok(error is None and answer.startswith(b"HTTP/1.1 413 ") and
         answer.endswith(b'{"message":"configuration too large (the limit is 16 MiB)"}'),
         "a body over 16 MiB sent whole: the 413 arrives, not a reset",
         "sent %d, %r, %r" % (sent, error, answer[:80]))

    # Expect: 100-continue is answered at once (curl would wait a second)
    text = json.dumps(new).encode()
    s = socket.create_connection(("127.0.0.1", aport), timeout=10)
    s.sendall(b"POST /config HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(text))
    s.settimeout(3)
    interim, answer = b"", b""
    try:
        interim = s.recv(100)  # before any body byte is sent
        s.sendall(text)
        while True:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass  # no 100 in time: reported below
    s.close()
    t.ok(interim == b"HTTP/1.1 100 Continue\r\n\r\n" and answer.startswith(b"HTTP/1.1 201 "),
         "Expect: 100-continue: 100 Continue, then the body is read and loaded",
         "%r %r" % (interim, answer[:60]))
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=60)
