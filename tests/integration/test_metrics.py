#!/usr/bin/env python3
"""GET /metrics on the status listener: exact request counters by service,
route and code after known traffic (2 workers), histogram buckets that only
grow and end in _count, bandwidth, connection gauges, upstream target
health, config reload counters, and `promtool check metrics` on the
scrape."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, frozenset(labels)): value}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("bad line: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def body(t):
    up = Upstream().start()
    port, sport = h.free_port(), h.free_port()
    cfg = h.make_config(port, [
        h.service("alpha", up.port, routes=[{"name": "a-route", "paths": ["/a"]}]),
        {"name": "beta", "host": "beta-up", "port": 80,
         "routes": [{"name": "b-route", "paths": ["/b"]}]},
    ], status_listen="127.0.0.1:%d" % sport, worker_processes=2)
    cfg["upstreams"] = [{"name": "beta-up",
                         "targets": [{"target": "127.0.0.1:%d" % up.port}]}]
    gw = h.Gateway(cfg)
    gw.start()

    def scrape(check=True):
        r = h.try_get(sport, "/metrics")
        if check:
            t.ok(isinstance(r, h.Response) and r.status == 200, "GET /metrics answers 200",
                 repr(r))
        return r.body.decode() if isinstance(r, h.Response) else ""

    for i in range(7):
        h.get(port, "/a/ok-%d" % i)
    for i in range(3):
        h.get(port, "/a/status/503")
    for i in range(4):
        h.get(port, "/b/x-%d" % i)
    for i in range(2):
        h.get(port, "/nowhere")
    text = scrape()
    r = h.try_get(sport, "/metrics")
    t.ok(isinstance(r, h.Response) and
         r.header("Content-Type", "").startswith("text/plain; version=0.0.4"),
         "Prometheus text format content type", repr(r and r.headers))
    m = parse(text)

    def val(name, **labels):
        return m.get((name, frozenset(labels.items())))

    t.eq(val("sluice_http_requests_total", service="alpha", route="a-route", code="200"), 7.0,
         "requests_total counts the 200s of route a-route")
    t.eq(val("sluice_http_requests_total", service="alpha", route="a-route", code="503"), 3.0,
         "... and its 503s separately")
    t.eq(val("sluice_http_requests_total", service="beta", route="b-route", code="200"), 4.0,
         "a balanced service counts the same way")
    t.eq(val("sluice_http_requests_total", service="", route="", code="404"), 2.0,
         "unrouted requests: empty service and route labels, code 404")
    for hist in ("sluice_request_latency_seconds", "sluice_proxy_latency_seconds",
                 "sluice_upstream_latency_seconds"):
        buckets = sorted(((float(dict(k[1])["le"].replace("+Inf", "inf")), v)
                          for k, v in m.items()
                          if k[0] == hist + "_bucket" and
                          dict(k[1]).get("route") == "a-route"))
        counts = [v for _, v in buckets]
        t.ok(len(counts) == 15 and counts == sorted(counts),
             "%s buckets are cumulative (never decrease)" % hist, repr(counts))
        t.eq(counts[-1] if counts else None,
             val(hist + "_count", service="alpha", route="a-route"),
             "%s: the +Inf bucket equals _count" % hist)
    t.eq(val("sluice_request_latency_seconds_count", service="alpha", route="a-route"), 10.0,
         "request latency: one sample per request of the route")
    ingress = val("sluice_bandwidth_bytes_total", service="alpha", route="a-route",
                  direction="ingress")
    egress = val("sluice_bandwidth_bytes_total", service="alpha", route="a-route",
                 direction="egress")
    t.ok(ingress and egress and ingress > 10 * 30 and egress > ingress,
         "bandwidth by direction", "%r %r" % (ingress, egress))
    acc = val("sluice_connections_accepted_total")
    t.ok(acc is not None and 16 <= acc <= 17,
         "connections_accepted_total: one per request above (+1: the start-up probe)", repr(acc))
    t.ok(val("sluice_connections", state="active") is not None,
         "sluice_connections{state=...} gauges are there")
    t.eq(val("sluice_upstream_target_health", upstream="beta-up",
             target="127.0.0.1:%d" % up.port, address="127.0.0.1:%d" % up.port,
             state="healthy"), 1.0, "upstream target health")

    promtool = shutil.which("promtool")
    if promtool is None:
        t.skip("promtool check metrics", "promtool is not installed (Debian package prometheus)")
    else:
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        t.ok(p.returncode == 0, "promtool check metrics accepts the scrape",
             p.stdout + p.stderr)

    # reloads: one good, one bad
    gw.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    with open(gw.conf_path, "a") as f:
        f.write("nonsense: [\n")
    gw.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while time.time() < deadline:
        m = parse(scrape(check=False))
        if val("sluice_config_reloads_total", result="failure") == 1.0:
            break
        time.sleep(0.1)
    t.eq(val("sluice_config_reloads_total", result="success"), 1.0, "a good reload is counted")
    t.eq(val("sluice_config_reloads_total", result="failure"), 1.0, "a refused one too")
    ts = val("sluice_config_last_reload_success_timestamp_seconds")
    t.ok(ts is not None and abs(ts - time.time()) < 60, "last successful reload time", repr(ts))
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=60)
