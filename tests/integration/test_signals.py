#!/usr/bin/env python3
"""Signals: SIGTERM drains in-flight requests and exits 0 within
graceful_shutdown_timeout, refusing new connections; SIGINT stops fast."""

import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def start_gateway(up, name, **node):
    port = h.free_port()
    cfg = h.make_config(port, [
        h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]}]),
        h.service("hang", up.hang_port, routes=[{"name": "r2", "paths": ["/hang"]}], retries=0),
    ], **node)
    return h.Gateway(cfg, name=name).start()


def in_flight(port, path, n, timeout=15):
    """Start n requests on n connections; returns (threads, results list)."""
    results = [None] * n

    def one(i):
        try:
            with h.Conn(port, timeout=timeout) as c:
                results[i] = c.request("GET", path % i if "%d" in path else path, timeout=timeout)
        except Exception as e:  # noqa: BLE001
            results[i] = e
    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for th in ths:
        th.start()
    return ths, results


def try_new_connection(port, timeout=5):
    """'refused', 'closed' (EOF/RST without response), 'timeout' or the Response."""
    try:
        c = h.Conn(port, timeout=timeout, connect_timeout=2)
    except OSError:
        return "refused"
    try:
        try:
            c.send(h.build_request("GET", "/api/after-sigterm", [("Connection", "close")]))
        except OSError:
            return "closed"
        try:
            r = c.read_response(timeout=timeout)
        except h.Timeout:
            return "timeout"
        except (h.ProtocolError, OSError):
            return "closed"
        return r if r is not None else "closed"
    finally:
        c.close()


def body(t):
    up = Upstream().start()
    hang = Upstream(mode="hang", name="hang").start()
    up.hang_port = hang.port

    def t_sigterm_drain():
        gw = start_gateway(up, "gateway (SIGTERM drain)", graceful_shutdown_timeout=10000)
        try:
            ths, results = in_flight(gw.port, "/api/slow/1500?i=%d", 10)
            recs = up.wait_requests(10, timeout=5, pred=lambda r: "/slow/" in r.target)
            t.ok(len(recs) == 10, "10 slow requests in flight at the upstream", "got %d" % len(recs))
            t0 = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            newc = try_new_connection(gw.port)
            for th in ths:
                th.join(15)
            rc = gw.wait(max(0.1, 12 - (time.monotonic() - t0)))
            el = time.monotonic() - t0
            good = [r for r in results if isinstance(r, h.Response) and r.status == 200
                    and r.json().get("path", "").startswith("/base/slow/")]
            t.ok(len(good) == 10, "SIGTERM: all 10 in-flight requests get complete 200 responses",
                 "\n".join(repr(r) for r in results))
            t.ok(newc in ("refused", "closed"),
                 "SIGTERM: a new connection after the signal is refused or closed", "got %r" % (newc,))
            t.ok(rc == 0 and el <= 10.5, "SIGTERM: exit status 0 within graceful_shutdown_timeout",
                 "rc=%r after %.2f s\n%s" % (rc, el, gw.stderr_tail()))
            t.ok(rc is not None and el >= 1.0,
                 "SIGTERM: the gateway did not exit before the in-flight requests were done "
                 "(%.2f s)" % el)
        finally:
            gw.stop(signal.SIGTERM, timeout=5)
            gw.check_clean(t)

    def t_sigterm_idle_keepalive():
        gw = start_gateway(up, "gateway (SIGTERM with idle keep-alive)",
                           graceful_shutdown_timeout=10000, keepalive_timeout=60000)
        try:
            c = h.Conn(gw.port, timeout=5)
            r = c.request("GET", "/api/idle-ka")
            t.ok(r is not None and r.status == 200, "keep-alive request before SIGTERM", repr(r))
            t0 = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            rc = gw.wait(5)
            el = time.monotonic() - t0
            closed = c.wait_closed(1)
            c.close()
            t.ok(rc == 0 and el < 2.0,
                 "SIGTERM with only an idle keep-alive client: exit 0 promptly (not after the grace)",
                 "rc=%r after %.2f s" % (rc, el))
            t.ok(closed, "the idle keep-alive client connection is closed")
        finally:
            gw.stop(signal.SIGTERM, timeout=5)
            gw.check_clean(t)

    def t_sigterm_grace_expires():
        gw = start_gateway(up, "gateway (SIGTERM grace expiry)", graceful_shutdown_timeout=1000)
        try:
            ths, results = in_flight(gw.port, "/hang/forever", 2, timeout=10)
            hang.wait_requests(2, timeout=5)
            t0 = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            rc = gw.wait(6)
            el = time.monotonic() - t0
            t.ok(rc == 0 and 0.8 <= el <= 3.0,
                 "SIGTERM with requests that never finish: exit 0 when graceful_shutdown_timeout "
                 "(1 s) expires", "rc=%r after %.2f s" % (rc, el))
            for th in ths:
                th.join(5)
        finally:
            gw.stop(signal.SIGTERM, timeout=5)
            gw.check_clean(t)

    def t_sigint():
        gw = start_gateway(up, "gateway (SIGINT)", graceful_shutdown_timeout=10000)
        try:
            r = h.get(gw.port, "/api/before-sigint")
            t.ok(r is not None and r.status == 200, "request before SIGINT", repr(r))
            ths, results = in_flight(gw.port, "/hang/int", 1, timeout=10)
            hang.wait_requests(1, timeout=5, pred=lambda r: "/int" in r.target)
            t0 = time.monotonic()
            gw.send_signal(signal.SIGINT)
            rc = gw.wait(5)
            el = time.monotonic() - t0
            t.ok(rc is not None and el < 2.0, "SIGINT with a request in flight: exits in < 2 s",
                 "rc=%r after %.2f s" % (rc, el))
            try:
                socket.create_connection((h.LOOPBACK, gw.port), timeout=1).close()
                refused = False
            except OSError:
                refused = True
            t.ok(refused, "port closed after SIGINT")
        finally:
            gw.stop(signal.SIGINT, timeout=5, ok_codes=(0, 130, -signal.SIGINT))
            gw.check_clean(t)

    def t_sighup_reload():
        # DESIGN.md: SIGHUP builds a new snapshot, validates, swaps; in-flight
        # requests finish on the old one; an invalid file is refused
        # (file:line:column) and the old config stays.
        port = h.free_port()
        svc_a = [h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]}])]
        gw = h.Gateway(h.make_config(port, svc_a), name="gateway (SIGHUP reload)").start()
        try:
            r = h.try_get(port, "/v2/before")
            t.ok(isinstance(r, h.Response) and r.status == 404, "before reload: /v2 is not routed",
                 repr(r))
            ths, results = in_flight(port, "/api/slow/1000?hup=%d", 2)
            up.wait_requests(2, timeout=5, pred=lambda rec: "hup=" in rec.target)
            svc_b = [h.service("echo", up.port, routes=[{"name": "r1", "paths": ["/api"]},
                                                        {"name": "r2", "paths": ["/v2"]}])]
            with open(gw.conf_path, "w") as f:
                f.write(h.to_yaml(h.make_config(port, svc_b)) + "\n")
            gw.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            r = None
            while time.monotonic() < deadline and gw.alive():
                r = h.try_get(port, "/v2/after")
                if isinstance(r, h.Response) and r.status == 200:
                    break
                time.sleep(0.1)
            t.ok(isinstance(r, h.Response) and r.status == 200 and gw.alive(),
                 "SIGHUP with a new valid config: the new route is served", repr(r))
            for th in ths:
                th.join(10)
            t.ok(all(isinstance(x, h.Response) and x.status == 200 for x in results),
                 "requests in flight during the reload complete with 200", repr(results))
            with open(gw.conf_path, "w") as f:
                f.write('_format_version: "3.0"\nservices:\n  - name: bad\n    no_such_field: 1\n')
            gw.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            reloaded = isinstance(r, h.Response) and r.status == 200
            r = h.try_get(port, "/api/still")
            r2 = h.try_get(port, "/v2/still") if reloaded else None
            t.ok(gw.alive() and isinstance(r, h.Response) and r.status == 200
                 and (not reloaded or (isinstance(r2, h.Response) and r2.status == 200)),
                 "SIGHUP with an invalid config: the gateway keeps running the old config",
                 "%r\n%r" % (r, r2))
            t.ok(re.search(r"%s:\d+:\d+: " % re.escape(gw.conf_path), gw.stderr()) is not None,
                 "invalid config on reload is reported as FILE:LINE:COLUMN on stderr",
                 gw.stderr_tail())
        finally:
            gw.stop(signal.SIGTERM, timeout=5)
            gw.check_clean(t)

    for fn in (t_sigterm_drain, t_sigterm_idle_keepalive, t_sigterm_grace_expires, t_sigint,
               t_sighup_reload):
        t.run(fn)
    up.stop()
    hang.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
