#!/usr/bin/env python3
"""Client timeouts: slowloris (client_header_timeout), slow POST
(client_body_timeout / client_body_total_timeout), idle keep-alive
(keepalive_timeout), and normal traffic while slow clients are held."""

import os
import re
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402


def trickle(port, prefix, data, gap, max_time):
    """Send `prefix` at once, then `data` one byte every `gap` s, watching for
    the server to answer/close. Returns (seconds from connect until the
    server closed, or None if it did not within max_time; bytes received)."""
    s = socket.create_connection((h.LOOPBACK, port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got = b""
    t0 = time.monotonic()
    try:
        if prefix:
            s.sendall(prefix)
        i = 0
        while time.monotonic() - t0 < max_time:
            if i < len(data):
                try:
                    s.sendall(data[i:i + 1])
                except OSError:
                    return time.monotonic() - t0, got
                i += 1
            r, _, _ = select.select([s], [], [], gap)
            if r:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    return time.monotonic() - t0, got
                if not chunk:
                    return time.monotonic() - t0, got
                got += chunk
        return None, got
    finally:
        s.close()


def status_of(raw):
    m = re.match(rb"^HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def body(t):
    up = Upstream().start()
    port = h.free_port()
    routes = [{"name": "r1", "paths": ["/api"]}]
    cfg = h.make_config(port, [h.service("echo", up.port, routes=routes)],
                        client_header_timeout=1000, client_body_timeout=1000,
                        client_body_total_timeout=5000, keepalive_timeout=2000)
    gw = h.Gateway(cfg)
    gw.start()

    def check_closed(el, got, lo, hi, desc, want_status=408):
        st = status_of(got)
        ok = el is not None and lo <= el <= hi and (not got or st == want_status)
        t.ok(ok, desc, "closed after %r s (want %.1f-%.1f), received %r"
             % (None if el is None else round(el, 2), lo, hi, got[:300]))

    def t_slowloris():
        head = b"GET /api/slowloris HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
        el, got = trickle(port, b"", head, 0.3, 8)
        check_closed(el, got, 0.8, 3.0, "slowloris (1 header byte / 300 ms): closed (408 or plain) "
                     "within 1-3 s")
        t.ok(not up.find("slowloris"), "slowloris request never reached the upstream")

    def t_slowloris_second_request():
        # first request fine, then the next head trickles in on the same connection
        s = socket.create_connection((h.LOOPBACK, port), timeout=3)
        try:
            s.sendall(h.build_request("GET", "/api/first-ok"))
            c = h.Conn.from_socket(s, port, timeout=3)
            r = c.read_response()
            t0 = time.monotonic()
            head = b"GET /api/slow2 HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"p" * 100
            got, el = b"", None
            for i in range(len(head)):
                try:
                    s.sendall(head[i:i + 1])
                except OSError:
                    el = time.monotonic() - t0
                    break
                rr, _, _ = select.select([s], [], [], 0.3)
                if rr:
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        el = time.monotonic() - t0
                        break
                    got += chunk
                if time.monotonic() - t0 > 8:
                    break
        finally:
            s.close()
        t.ok(r is not None and r.status == 200 and el is not None and el <= 3.5
             and (not got or status_of(got) == 408),
             "slowloris on the 2nd request of a keep-alive connection: closed within 1-3.5 s",
             "first=%r closed after %r s, received %r" % (r, el, got[:200]))

    def t_idle_new_connection():
        s = socket.create_connection((h.LOOPBACK, port), timeout=3)
        t0 = time.monotonic()
        try:
            r, _, _ = select.select([s], [], [], 6)
            data = s.recv(65536) if r else None
            el = time.monotonic() - t0
            while data:
                r, _, _ = select.select([s], [], [], 2)
                more = s.recv(65536) if r else b""
                if not more:
                    break
                data += more
        except OSError:
            data, el = b"", time.monotonic() - t0
        finally:
            s.close()
        t.ok(data is not None and 0.8 <= el <= 3.5 and (not data or status_of(data) == 408),
             "connection that sends nothing is closed after the header/keep-alive timeout",
             "after %.2f s, got %r" % (el, data))

    def t_slow_body_gap():
        prefix = (b"POST /api/slowbody HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
                  + b"a" * 10)
        # nothing more is sent: the gap exceeds client_body_timeout (1000 ms)
        el, got = trickle(port, prefix, b"", 0.3, 6)
        check_closed(el, got, 0.8, 3.0, "slow POST, gap > client_body_timeout: closed (408) in 1-3 s")

    def t_slow_body_gap_between_bytes():
        prefix = b"POST /api/slowbody2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
        # one body byte every 1.5 s: each gap exceeds client_body_timeout (1000 ms)
        el, got = trickle(port, prefix, b"abcdef", 1.5, 6)
        check_closed(el, got, 0.8, 3.0, "slow POST, 1 body byte / 1.5 s: closed (408) in 1-3 s")

    def t_slow_body_total():
        prefix = b"POST /api/slowtotal HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
        el, got = trickle(port, prefix, b"b" * 1000, 0.3, 10)
        check_closed(el, got, 4.5, 7.5, "slow POST, small gaps but total > client_body_total_timeout "
                     "(5 s): closed")

    def t_keepalive_idle():
        with h.Conn(port) as c:
            r = c.request("GET", "/api/ka")
            t0 = time.monotonic()
            closed = c.wait_closed(6)
            el = time.monotonic() - t0
        t.ok(r is not None and r.status == 200 and closed and 1.5 <= el <= 3.5,
             "idle keep-alive connection closed after keepalive_timeout (2 s)",
             "closed=%r after %.2f s, response %r" % (closed, el, r))

    def t_active_keepalive_not_cut():
        # requests every 0.5 s for 3 s: longer than client_header_timeout and
        # keepalive_timeout in total, but never idle that long
        ok = True
        with h.Conn(port) as c:
            for i in range(7):
                r = c.request("GET", "/api/active-%d" % i)
                if r is None or r.status != 200:
                    ok = False
                    break
                time.sleep(0.5)
        t.ok(ok, "a keep-alive connection used every 0.5 s for 3.5 s is not cut", repr(r))

    for fn in (t_slowloris, t_slowloris_second_request, t_idle_new_connection, t_slow_body_gap,
               t_slow_body_gap_between_bytes,
               t_slow_body_total, t_keepalive_idle, t_active_keepalive_not_cut):
        t.run(fn)

    gw.stop()
    gw.check_clean(t)

    # --- many slow clients held while normal clients are served -----------------------------
    port2 = h.free_port()
    cfg2 = h.make_config(port2, [h.service("echo", up.port, routes=routes)],
                         client_header_timeout=10000, keepalive_timeout=10000)
    gw2 = h.Gateway(cfg2, name="gateway (50 slowloris)")
    gw2.start()

    def t_held_slowloris():
        stop = threading.Event()
        socks = []
        for _ in range(50):
            s = socket.create_connection((h.LOOPBACK, port2), timeout=3)
            s.sendall(b"GET /api/held HTTP/1.1\r\nHost: localhost\r\n")
            socks.append(s)

        def drip():
            while not stop.wait(0.3):
                for s in socks:
                    try:
                        s.sendall(b"X")
                    except OSError:
                        pass
            return

        th = threading.Thread(target=drip, daemon=True)
        th.start()
        try:
            time.sleep(0.5)
            slow = []
            for i in range(10):
                t0 = time.monotonic()
                try:
                    r = h.get(port2, "/api/normal-%d" % i, timeout=3)
                    st = r.status if r else None
                except (OSError, h.Timeout, h.ProtocolError) as e:
                    st = repr(e)
                el = time.monotonic() - t0
                if st != 200 or el >= 1.0:
                    slow.append((i, st, round(el, 2)))
                time.sleep(0.1)
            t.ok(not slow, "with 50 slowloris connections held, 10 normal requests succeed in < 1 s",
                 repr(slow))
            alive = 0
            for s in socks:
                r, _, _ = select.select([s], [], [], 0)
                if not r:
                    alive += 1
            t.ok(alive >= 45, "the slowloris connections were really held open meanwhile (%d/50)" % alive)
        finally:
            stop.set()
            th.join(2)
            for s in socks:
                s.close()

    t.run(t_held_slowloris)
    gw2.stop()
    gw2.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=100)
