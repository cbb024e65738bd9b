#!/usr/bin/env python3
"""The plugin runtime through the real proxy: request-termination (Kong's
fields, messages and checks), Kong's scoping precedence over global,
service, route, consumer and their combinations, priorities, disabled
instances, and a hook that suspends the request and resumes it later (or is
cancelled when the client goes away).

Runs against tests/plugins/sluice-gateway-test: the gateway linked with two
test-only plugins (tests/plugins/test_plugins.c): test-consumer sets the
consumer named by X-Test-Consumer (priority 1450, like jwt), test-suspend
suspends the request on a timer, adds X-Test-Suspended upstream, adds
X-Test-Status to the response and logs the body bytes it saw."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def termination(status, **cfg):
    cfg = dict(cfg)
    cfg["status_code"] = status
    cfg.setdefault("trigger", "X-Term")
    return {"name": "request-termination", "config": cfg}


def scoped_config(port, up_port):
    url = "http://127.0.0.1:%d" % up_port
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 2},
        "consumers": [
            {"username": "alice", "plugins": [termination(418)]},
            {"username": "bob"},
        ],
        "services": [
            {"name": "A", "url": url, "plugins": [termination(411)],
             "routes": [
                 {"name": "A1", "paths": ["/a1"], "plugins": [termination(412)]},
                 {"name": "A2", "paths": ["/a2"]},
             ]},
            {"name": "B", "url": url,
             "routes": [
                 {"name": "B1", "paths": ["/b1"]},
                 {"name": "B2", "paths": ["/b2"],
                  "plugins": [dict(termination(403), enabled=False)]},
             ]},
            {"name": "T", "url": url,
             "routes": [
                 {"name": "blocked", "paths": ["/blocked"],
                  "plugins": [{"name": "request-termination",
                               "config": {"status_code": 403, "message": "So long"}}]},
                 {"name": "default", "paths": ["/default"],
                  "plugins": [{"name": "request-termination"}]},
                 {"name": "raw", "paths": ["/raw"],
                  "plugins": [{"name": "request-termination",
                               "config": {"status_code": 200, "body": "<h1>maintenance</h1>",
                                          "content_type": "text/html"}}]},
                 {"name": "teapot", "paths": ["/teapot"],
                  "plugins": [{"name": "request-termination",
                               "config": {"status_code": 418}}]},
                 {"name": "trigger", "paths": ["/trigger"],
                  "plugins": [{"name": "request-termination",
                               "config": {"status_code": 429, "trigger": "X-Stop"}}]},
                 {"name": "suspend", "paths": ["/suspend"],
                  "plugins": [{"name": "test-suspend", "config": {"delay_ms": 150}}]},
                 {"name": "suspend-term", "paths": ["/suspterm"],
                  "plugins": [{"name": "test-suspend", "config": {"delay_ms": 150}},
                              termination(409)]},
             ]},
        ],
        "plugins": [
            {"name": "test-consumer"},
            termination(410),
            # route + consumer, at the top level with references
            dict(termination(421), route="A1", consumer="bob"),
        ],
    }


def body(t):
    if not h.use_test_gateway(t):
        return
    up = Upstream().start()
    port = h.free_port()
    gw = h.Gateway(scoped_config(port, up.port), port=port)
    gw.start()

    def req(path, headers=None, method="GET"):
        r = h.try_get(port, path, headers=headers, method=method)
        return r if isinstance(r, h.Response) else None

    def t_termination_fields():
        up.clear()
        r = req("/blocked/x")
        t.ok(r is not None and r.status == 403, "message: 403 from request-termination",
             repr(r))
        if r:
            t.eq(r.body, b'{"message":"So long"}', "message: Kong's {\"message\": ...} body")
            t.eq(r.header("Content-Type"), "application/json; charset=utf-8",
                 "message: JSON content type")
        r = req("/default")
        t.ok(r is not None and r.status == 503 and r.body == b'{"message":"Service unavailable"}',
             "no config: 503 with Kong's default message", repr(r and r.body))
        r = req("/raw")
        t.ok(r is not None and r.status == 200 and r.body == b"<h1>maintenance</h1>" and
             r.header("Content-Type") == "text/html",
             "body + content_type: the raw body with its type", repr(r and (r.status, r.body)))
        r = req("/teapot")
        t.ok(r is not None and r.status == 418 and r.body == b"" and
             r.header("Content-Length") == "0",
             "a status without a default message: empty body", repr(r and (r.status, r.body)))
        r = req("/blocked", method="HEAD")
        t.ok(r is not None and r.status == 403 and r.body == b"" and
             r.header("Content-Length") == "21",
             "HEAD: the length of the message, no body", repr(r and r.headers))
        t.eq(len(up.requests()), 0, "no terminated request reached the upstream")

    def t_trigger():
        up.clear()
        r = req("/trigger/x")
        t.ok(r is not None and r.status == 200, "trigger absent: proxied", repr(r))
        r = req("/trigger/x", headers={"x-stop": "1"})
        t.ok(r is not None and r.status == 429, "trigger header (any case): terminated",
             repr(r))
        r = req("/trigger/x?X-Stop")
        t.ok(r is not None and r.status == 429, "trigger query argument: terminated", repr(r))
        r = req("/trigger/x?x-stop=1")
        t.ok(r is not None and r.status == 200,
             "query argument names are case-sensitive (Kong): proxied", repr(r))
        t.eq(len(up.requests()), 2, "only the two untriggered requests reached the upstream")

    def t_scoping():
        # with X-Term every request-termination instance fires; the status
        # tells which instance Kong's precedence picked
        want = {
            ("/a1", None): 412,     # route beats service and global
            ("/a1", "alice"): 418,  # consumer beats route
            ("/a1", "bob"): 421,    # route+consumer beats consumer-less ones
            ("/a2", None): 411,     # service beats global
            ("/a2", "alice"): 418,
            ("/a2", "bob"): 411,
            ("/b1", None): 410,     # global
            ("/b1", "alice"): 418,
            ("/b1", "bob"): 410,
            ("/b2", None): 410,     # a disabled route instance does not hide the global one
        }
        for (path, who), status in want.items():
            hs = {"X-Term": "1"}
            if who:
                hs["X-Test-Consumer"] = who
            r = req(path, headers=hs)
            t.ok(r is not None and r.status == status,
                 "scoping: %s as %s -> %d" % (path, who or "anonymous", status),
                 repr(r and r.status))
        up.clear()
        r = req("/b2")
        t.ok(r is not None and r.status == 200 and len(up.requests()) == 1,
             "disabled instance: the request is proxied", repr(r))
        r = req("/b1/log-me", headers={"X-Test-Consumer": "bob"})
        deadline = time.time() + 3
        while time.time() < deadline and '"path":"/b1/log-me"' not in gw.stdout():
            time.sleep(0.05)
        lines = [ln for ln in gw.stdout().splitlines() if '"path":"/b1/log-me"' in ln]
        t.ok(r is not None and len(lines) == 1 and '"consumer":"bob"' in lines[0],
             "the access log names the consumer an auth plugin found", repr(lines))
        r = req("/a1", headers={"X-Test-Consumer": "mallory"})
        t.ok(r is not None and r.status == 401,
             "test-consumer (priority 1450) runs before request-termination (2)", repr(r))

    def t_suspend():
        up.clear()
        t0 = time.monotonic()
        r = req("/suspend/echo")
        took = time.monotonic() - t0
        t.ok(r is not None and r.status == 200, "suspended request completes", repr(r))
        t.ok(took >= 0.14, "it waited for the plugin's timer (%.3f s)" % took)
        recs = up.requests()
        t.ok(len(recs) == 1 and recs[0].header("X-Test-Suspended") == "yes",
             "the header the plugin set after resuming reached the upstream",
             repr(recs and recs[0].headers))
        t.ok(r is not None and r.header("X-Test-Status") == "200",
             "header_filter added a response header", repr(r and r.headers))
        r = req("/suspend/chunked/5?size=1000")
        n = len(r.body) if r else -1
        t.ok(r is not None and r.status == 200 and n > 0, "chunked response through a plugin")
        deadline = time.time() + 5
        line = "test-suspend log: status=200 body_bytes=%d consumer=-" % n
        while time.time() < deadline and line not in gw.stderr():
            time.sleep(0.05)
        t.ok(line in gw.stderr(), "log phase ran; body_filter saw exactly the payload bytes "
             "(no chunk framing)", gw.stderr_tail())
        t0 = time.monotonic()
        r = req("/suspterm", headers={"X-Term": "1", "X-Test-Consumer": "bob"})
        took = time.monotonic() - t0
        t.ok(r is not None and r.status == 409 and took >= 0.14,
             "after resuming, the next plugin (lower priority) still runs", repr(r))
        t.ok(r is not None and r.header("X-Test-Status") == "409",
             "header_filter runs on a plugin's own response too", repr(r and r.headers))

    def t_suspend_pipelined():
        # while the first request is suspended, the next ones wait in the
        # input; they must come out in order, bodies intact
        up.clear()
        with h.Conn(port, timeout=10) as c:
            c.send(h.build_request("GET", "/suspend/p1") +
                   h.build_request("POST", "/suspend/p2", body=b"hello") +
                   h.build_request("GET", "/suspend/p3"))
            got = []
            for _ in range(3):
                r = c.read_response(timeout=10)
                got.append(r.json().get("target") if r is not None and r.status == 200 else r)
        recs = {rec.target: rec for rec in up.requests()}
        t.eq(got, ["/p1", "/p2", "/p3"],
             "pipelined requests behind a suspended one: answered in order")
        t.ok("/p2" in recs and recs["/p2"].header("Content-Length") == "5",
             "the pipelined POST's body went upstream intact", repr(recs.keys()))

    def t_suspend_concurrent():
        up.clear()
        results = []
        lock = threading.Lock()

        def one(i):
            r = req("/suspend/n%d" % i)
            with lock:
                results.append(r.status if r else None)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(15)
        took = time.monotonic() - t0
        t.ok(results.count(200) == 40, "40 concurrent suspended requests all complete",
             repr(results))
        t.ok(took < 3.0, "they wait side by side, not one after another (%.2f s)" % took)

    def t_cancel():
        before = gw.stderr().count("test-suspend cancelled")
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(b"GET /suspend/gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.03)
        # a reset, not a half-close (a client that only shuts its write side
        # still gets its answer)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        deadline = time.time() + 3
        while time.time() < deadline and gw.stderr().count("test-suspend cancelled") == before:
            time.sleep(0.05)
        t.ok(gw.stderr().count("test-suspend cancelled") == before + 1,
             "client gone while suspended: the plugin's cancel callback ran",
             gw.stderr_tail())
        time.sleep(0.3)  # past the timer the cancel removed
        r = req("/suspend/after")
        t.ok(r is not None and r.status == 200 and gw.alive(),
             "the gateway goes on serving", repr(r))

    def t_reload():
        cfg = scoped_config(port, up.port)
        cfg["services"][2]["routes"][0]["plugins"][0]["config"]["status_code"] = 451
        with open(gw.conf_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        gw.send_signal(1)  # SIGHUP
        deadline = time.time() + 5
        r = None
        while time.time() < deadline:
            r = req("/blocked")
            if r is not None and r.status == 451:
                break
            time.sleep(0.1)
        t.ok(r is not None and r.status == 451, "SIGHUP: the new plugin config applies",
             repr(r and r.status))

    t.run(t_termination_fields)
    t.run(t_trigger)
    t.run(t_scoping)
    t.run(t_suspend)
    t.run(t_suspend_pipelined)
    t.run(t_suspend_concurrent)
    t.run(t_cancel)
    t.run(t_reload)
    gw.stop()
    gw.check_clean(t)
    up.stop()

    # configuration errors: file:line:column and exit 1 from -t
    bad = [
        ("status_code: 600", "plugins:\n  - name: request-termination\n    config:\n"
         "      status_code: 600\n", 4, 20, "config.status_code: value should be between 100 and 599"),
        ("message with body", "plugins:\n  - name: request-termination\n    config:\n"
         "      message: a\n      body: b\n", 4, 7, "message cannot be used with content_type or body"),
        ("content_type without body", "plugins:\n  - name: request-termination\n    config:\n"
         "      content_type: text/plain\n", 4, 7, "content_type requires a body"),
        ("unknown config field", "plugins:\n  - name: request-termination\n    config:\n"
         "      status: 403\n", 4, 7, "config.status: unknown field"),
        ("wrong type", "plugins:\n  - name: request-termination\n    config:\n"
         "      status_code: \"403\"\n", 4, 20, "config.status_code: expected an integer"),
        ("unknown plugin", "plugins:\n  - name: no-such-plugin\n", 2, 5,
         "plugin 'no-such-plugin' is not supported yet"),
    ]
    tmp = gw.dir
    for desc, text, line, col, msg in bad:
        path = os.path.join(tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write('_format_version: "3.0"\n' + text)
        p = subprocess.run([h.sluice_bin(), "-t", "-c", path], capture_output=True, text=True, timeout=10)
        want = "%s:%d:%d:" % (path, line + 1, col)
        t.ok(p.returncode == 1 and want in p.stderr and msg in p.stderr,
             "-t refuses %s with %s ... %s" % (desc, want, msg), p.stderr)


if __name__ == "__main__":
    h.main(body, timeout=90)
