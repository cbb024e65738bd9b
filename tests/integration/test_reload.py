#!/usr/bin/env python3
"""Reload under load: client threads (keep-alive and new connections) send
requests without a pause while the configuration is reloaded 24 times,
alternately by SIGHUP and by POST /config on admin_listen, between two
configurations that send /r to two different upstreams. Not one request may
fail. A request in flight on a slow upstream finishes on the configuration
it started with; bad configurations (a syntax error by SIGHUP, a dangling
reference by POST /config) are refused and the running one keeps serving;
sluice_config_reloads_total counts both results."""

import os
import re
import signal
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def body(t):
    ups = {"A": Upstream(name="A").start(), "B": Upstream(name="B").start()}
    port, aport, sport = h.free_port(), h.free_port(), h.free_port()

    def config(which):
        cfg = h.make_config(port, [h.service("svc", ups[which].port, path="/" + which,
                                             routes=[{"name": "r", "paths": ["/r"]}])],
                            admin_listen="127.0.0.1:%d" % aport,
                            status_listen="127.0.0.1:%d" % sport, worker_processes=2,
                            access_log=False)
        return h.to_yaml(cfg) + "\n"

    gw = h.Gateway(config("A"), port=port)
    gw.start()

    def post_config(text):
        req = urllib.request.Request("http://127.0.0.1:%d/config" % aport, data=text.encode(),
                                     method="POST", headers={"Content-Type": "text/yaml"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def sighup(text):
        with open(gw.conf_path, "w") as f:
            f.write(text)
        gw.send_signal(signal.SIGHUP)

    stop = threading.Event()
    lock = threading.Lock()
    failures, done = [], [0]

    def keepalive_client(k):
        i = 0
        while not stop.is_set():
            try:
                with h.Conn(port, timeout=10) as c:
                    for _ in range(50):
                        if stop.is_set():
                            break
                        i += 1
                        r = c.request("GET", "/r/ka-%d-%d" % (k, i), timeout=10)
                        with lock:
                            done[0] += 1
                            if r.status != 200:
                                failures.append(("keep-alive", r.status))
            except Exception as e:  # noqa: BLE001
                with lock:
                    failures.append(("keep-alive", repr(e)))

    def fresh_client(k):
        i = 0
        while not stop.is_set():
            i += 1
            r = h.try_get(port, "/r/new-%d-%d" % (k, i), timeout=10)
            with lock:
                done[0] += 1
                if not isinstance(r, h.Response) or r.status != 200:
                    failures.append(("new connection", repr(r)))

    threads = [threading.Thread(target=keepalive_client, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=fresh_client, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()

    posts = []
    try:
        for n in range(24):
            text = config("B" if n % 2 == 0 else "A")
            if n % 4 < 2:
                sighup(text)
            else:
                posts.append(post_config(text))
            time.sleep(0.25)
    finally:
        time.sleep(0.3)
        stop.set()
        for th in threads:
            th.join(20)
    t.ok(done[0] > 200, "the clients kept the gateway busy (%d requests)" % done[0])
    t.eq(failures, [], "not one request failed across 24 reloads under load")
    t.ok(all(p[0] == 201 for p in posts) and len(posts) == 12,
         "12 reloads by POST /config answered 201", repr(posts[:3]))
    a_n, b_n = len(ups["A"].find("/A/")), len(ups["B"].find("/B/"))
    t.ok(a_n > 20 and b_n > 20, "both configurations served traffic (A %d, B %d)" % (a_n, b_n))
    # the last reload (n = 23) was to A: new requests go there
    time.sleep(0.3)
    r = h.get(port, "/r/after")
    t.ok(r.status == 200 and len(ups["A"].find("/A/after")) == 1,
         "after the last reload, requests follow the last configuration")

    # a request in flight finishes on its own configuration
    result = {}

    def slow():
        result["r"] = h.try_get(port, "/r/slow/1500", timeout=10)
    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.4)
    code, _ = post_config(config("B"))
    time.sleep(0.2)
    r = h.get(port, "/r/new-after-switch")
    th.join(10)
    t.ok(code == 201 and len(ups["B"].find("/B/new-after-switch")) == 1,
         "a new request uses the new configuration at once")
    t.ok(isinstance(result.get("r"), h.Response) and result["r"].status == 200 and
         len(ups["A"].find("/A/slow/1500")) == 1,
         "the request in flight finished on the old configuration (upstream A)",
         repr(result.get("r")))

    # bad configurations are refused, the running one stays
    with open(gw.conf_path, "w") as f:
        f.write(config("A") + "services: [\n")
    gw.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while time.time() < deadline and "refused" not in gw.stderr():
        time.sleep(0.05)
    t.ok(re.search(re.escape(gw.conf_path) + r":\d+:\d+: ", gw.stderr()) is not None,
         "SIGHUP with a broken file: file:line:column in the error log", gw.stderr_tail())
    bad = config("A").replace("paths", "service: nowhere\n        paths", 1)
    code, text = post_config(bad)
    t.ok(code == 400 and "declarative config is invalid" in text and "POST /config:" in text,
         "POST /config with a bad configuration: 400 with file:line:column", text)
    r = h.get(port, "/r/still")
    t.ok(r.status == 200 and len(ups["B"].find("/B/still")) == 1,
         "after both refusals the last good configuration (B) keeps serving")

    m = h.try_get(sport, "/metrics")
    text = m.body.decode() if isinstance(m, h.Response) else ""
    ok = re.search(r'sluice_config_reloads_total\{result="success"\} (\d+)', text)
    bad_n = re.search(r'sluice_config_reloads_total\{result="failure"\} (\d+)', text)
    t.eq((int(ok.group(1)) if ok else None, int(bad_n.group(1)) if bad_n else None), (25, 2),
         "sluice_config_reloads_total counts 25 good and 2 refused reloads")
    gw.stop()
    gw.check_clean(t)
    for u in ups.values():
        u.stop()


if __name__ == "__main__":
    h.main(body, timeout=90)
