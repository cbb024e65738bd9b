#!/usr/bin/env python3
"""The status listener (status_listen): Kong's GET /status shape with live
counters and the configuration hash, GET /status/ready that turns 503 as
soon as SIGTERM starts a drain (while requests in flight still finish), and
a new hash after a SIGHUP reload."""

import json
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def body(t):
    up = Upstream().start()
    port, sport = h.free_port(), h.free_port()
    routes = [{"name": "r", "paths": ["/api"]}]
    cfg = h.make_config(port, [h.service("echo", up.port, routes=routes)],
                        status_listen="127.0.0.1:%d" % sport, worker_processes=1)
    gw = h.Gateway(cfg, port=port)
    gw.start()

    def status():
        r = h.try_get(sport, "/status", timeout=5)
        if not isinstance(r, h.Response) or r.status != 200:
            return None, r
        return json.loads(r.body), r

    def t_status_shape():
        s, r = status()
        t.ok(s is not None, "GET /status answers 200 with JSON", repr(r))
        if s is None:
            return
        keys = {"connections_accepted", "connections_active", "connections_handled",
                "connections_reading", "connections_writing", "connections_waiting",
                "total_requests"}
        t.ok(keys <= set(s.get("server", {})), "Kong's server counters are all there",
             json.dumps(s))
        t.ok(s.get("database") == {"reachable": True}, "Kong's database block (DB-less)")
        t.ok(re.fullmatch(r"[0-9a-f]{32}", s.get("configuration_hash", "")) is not None,
             "configuration_hash is 32 hex digits", json.dumps(s))
        t.ok(abs(s.get("configuration_loaded_at", 0) - time.time()) < 300,
             "configuration_loaded_at is a recent Unix time", json.dumps(s))
        before = s["server"]["total_requests"]
        for i in range(5):
            h.try_get(port, "/api/count%d" % i)
        s2, _ = status()
        t.ok(s2 is not None and s2["server"]["total_requests"] >= before + 5,
             "total_requests counts proxied requests",
             "%r -> %r" % (before, s2 and s2["server"]["total_requests"]))
        t.ok(s2 is not None and s2["server"]["connections_accepted"] >= 5,
             "connections_accepted counts proxy connections", json.dumps(s2))

    def t_other_paths():
        r = h.try_get(sport, "/status/ready")
        t.ok(isinstance(r, h.Response) and r.status == 200, "/status/ready is 200 while serving",
             repr(r))
        r = h.try_get(sport, "/nothing")
        t.ok(isinstance(r, h.Response) and r.status == 404, "unknown status path -> 404", repr(r))
        r = h.try_get(sport, "/status", method="POST")
        t.ok(isinstance(r, h.Response) and r.status == 405, "POST /status -> 405", repr(r))

    def t_reload_hash():
        s, _ = status()
        routes.append({"name": "r2", "paths": ["/other"]})
        with open(gw.conf_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        gw.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        s2 = s
        while time.monotonic() < deadline:
            s2, _ = status()
            if s and s2 and s2["configuration_hash"] != s["configuration_hash"]:
                break
            time.sleep(0.1)
        t.ok(s and s2 and s2["configuration_hash"] != s["configuration_hash"],
             "after SIGHUP with a new file the configuration hash changes",
             "%r -> %r" % (s and s["configuration_hash"], s2 and s2["configuration_hash"]))

    def t_ready_during_drain():
        result = {}

        def slow():
            result["r"] = h.try_get(port, "/api/slow/1500", timeout=10)

        th = threading.Thread(target=slow)
        th.start()
        up.wait_for("/slow/1500", timeout=5)
        gw.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        r = h.try_get(sport, "/status/ready", timeout=3)
        t.ok(isinstance(r, h.Response) and r.status == 503,
             "/status/ready is 503 while draining", repr(r))
        th.join(10)
        rr = result.get("r")
        t.ok(isinstance(rr, h.Response) and rr.status == 200,
             "the request in flight still completes", repr(rr))

    t.run(t_status_shape)
    t.run(t_other_paths)
    t.run(t_reload_hash)
    t.run(t_ready_during_drain)
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body)
