#!/usr/bin/env python3
"""Running out of file descriptors: with a small RLIMIT_NOFILE and more
clients than it allows, the gateway pauses accepting instead of spinning on
EMFILE (bounded CPU, a bounded number of log lines), keeps serving the
connections it has, and accepts again once descriptors are free."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(t):
    up = Upstream().start()
    port = h.free_port()
    cfg = h.make_config(port, [h.service("echo", up.port, routes=[{"name": "r", "paths": ["/"]}])],
                        worker_processes=1, access_log=False)
    gw = h.Gateway(cfg, port=port, nofile=48)
    gw.start()

    def t_flood():
        first = h.Conn(port)  # accepted before the flood: must keep working
        r = first.request("GET", "/before")
        t.ok(isinstance(r, h.Response) and r.status == 200, "request before the flood", repr(r))
        flood = []
        for _ in range(80):
            try:
                flood.append(socket.create_connection((h.LOOPBACK, port), timeout=1))
            except OSError:
                break
        cpu0 = cpu_seconds(gw.proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(gw.proc.pid) - cpu0
        t.ok(used < 0.5, "out of descriptors, the gateway does not spin (%.2f s CPU in 2 s)" % used)
        r = first.request("GET", "/during")
        t.ok(isinstance(r, h.Response) and r.status == 200,
             "a connection accepted earlier is still served", repr(r))
        first.close()
        for s in flood:
            s.close()
        time.sleep(0.5)
        r = h.try_get(port, "/after", timeout=5)
        t.ok(isinstance(r, h.Response) and r.status == 200,
             "once descriptors are free, new connections are accepted", repr(r))
        lines = sum(1 for line in gw.stderr().splitlines() if "accept on port" in line)
        t.ok(1 <= lines <= 50, "the condition is logged, but not once per attempt (%d lines)" % lines)

    t.run(t_flood)
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body)
