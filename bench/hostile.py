#!/usr/bin/env python3
"""Hostile clients for bench/slow: what slowhttptest does not do.

  idle      open --conns connections and send nothing
  drip      open --conns connections and send a request head one byte every
            --interval seconds (never finishing it within --seconds)
  pipeline  open --conns connections, write --requests GET requests on each
            as fast as the server takes them, and never read a byte

Every connection is watched until the server closes it (FIN or reset) or
until --seconds have passed. The pipeliner never reads: a close is seen with
poll(POLLRDHUP) and the bytes the server wrote are counted with SIOCINQ
(what waits unread in our receive buffer), not by reading them.

Output on stdout, for bench/slow to parse, one line each:
    STATUS <n> open=<n> closed=<n> failed=<n>          (every second)
    SUMMARY conns=<n> connected=<n> closed=<n> open=<n> failed=<n>
            first_close=<s> median_close=<s> last_close=<s> answers=<text>
            sent_requests=<n> unread_bytes=<n>
(SUMMARY is one line.) Close times are seconds from each connection's
connect to the server's close, "-" when none closed. answers: the status
lines the server sent before closing (idle and drip read them), e.g.
"408x1000". Details go to stderr. Python 3 standard library only.
"""

import argparse
import errno
import fcntl
import resource
import select
import signal
import socket
import statistics
import struct
import sys
import termios
import time

POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
SIOCINQ = getattr(termios, "FIONREAD", 0x541B)


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass


class Conn:
    __slots__ = ("sock", "fd", "t_start", "t_closed", "connected", "out", "sent", "answer",
                 "next_drip", "failed")

    def __init__(self, sock, t):
        self.sock = sock
        self.fd = sock.fileno()
        self.t_start = t
        self.t_closed = None
        self.connected = False
        self.out = b""
        self.sent = 0
        self.answer = b""
        self.next_drip = 0.0
        self.failed = False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("idle", "drip", "pipeline"), required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host-header", default="localhost")
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=1000, help="connects per second")
    ap.add_argument("--seconds", type=float, default=60, help="watch this long at most")
    ap.add_argument("--interval", type=float, default=5, help="drip: seconds between bytes")
    ap.add_argument("--requests", type=int, default=10000, help="pipeline: requests per connection")
    ap.add_argument("--rcvbuf", type=int, default=0,
                    help="SO_RCVBUF of each connection (0: the system's); a small one makes "
                    "the server's writes block sooner")
    a = ap.parse_args()

    raise_nofile(a.conns + 64)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hostile\r\n\r\n"
               % (a.path, a.host_header)).encode()
    # drip: a head that never ends within the test (a long header value)
    drip_head = ("GET %s HTTP/1.1\r\nHost: %s\r\nX-Drip: " % (a.path, a.host_header)).encode() \
        + b"d" * 100000

    poller = select.poll()
    conns = {}
    t0 = time.monotonic()
    opened = 0
    next_status = t0 + 1

    def events_for(c):
        ev = POLLRDHUP
        if not c.connected or (a.mode == "pipeline" and c.out):
            ev |= select.POLLOUT
        if a.mode != "pipeline":
            ev |= select.POLLIN
        return ev

    def close_conn(c, now, failed=False):
        if c.t_closed is not None:
            return
        c.t_closed = now
        c.failed = failed
        try:
            poller.unregister(c.fd)
        except KeyError:
            pass
        c.sock.close()

    def open_some(now):
        nonlocal opened
        due = min(a.conns, int((now - t0) * a.rate) + 1)
        while opened < due:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
            c = Conn(s, now)
            try:
                s.connect((a.host, a.port))
            except BlockingIOError:
                pass
            except OSError as e:
                print("connect: %s" % e, file=sys.stderr)
                c.failed = True
                c.t_closed = now
                s.close()
                conns[id(c)] = c
                opened += 1
                continue
            if a.mode == "pipeline":
                c.out = request * a.requests
            elif a.mode == "drip":
                c.out = drip_head
            conns[c.fd] = c
            poller.register(c.fd, events_for(c))
            opened += 1

    def by_fd(fd):
        c = conns.get(fd)
        return c if c is not None and c.t_closed is None else None

    while not stop:
        now = time.monotonic()
        if now - t0 >= a.seconds:
            break
        if opened < a.conns:
            open_some(now)
        live = [c for c in conns.values() if c.t_closed is None]
        if opened >= a.conns and not live:
            break
        for fd, ev in poller.poll(100):
            c = by_fd(fd)
            if c is None:
                continue
            now = time.monotonic()
            if ev & select.POLLOUT and not c.connected:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    print("connect: %s" % errno.errorcode.get(err, err), file=sys.stderr)
                    close_conn(c, now, failed=True)
                    continue
                c.connected = True
                c.next_drip = now
            if ev & select.POLLIN and a.mode != "pipeline":
                try:
                    data = c.sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    c.answer += data[:64 - len(c.answer)] if len(c.answer) < 64 else b""
                    continue
                close_conn(c, now)
                continue
            if ev & (POLLRDHUP | select.POLLHUP | select.POLLERR):
                close_conn(c, now)
                continue
            if ev & select.POLLOUT and a.mode == "pipeline" and c.out:
                try:
                    n = c.sock.send(c.out[:262144])
                    c.out = c.out[n:]
                    c.sent += n
                except BlockingIOError:
                    pass
                except OSError:
                    close_conn(c, now)
                    continue
            poller.modify(fd, events_for(c))
        now = time.monotonic()
        if a.mode == "drip":
            for c in conns.values():
                if c.t_closed is None and c.connected and now >= c.next_drip and c.out:
                    try:
                        c.sock.send(c.out[:1])
                        c.out = c.out[1:]
                    except OSError:
                        close_conn(c, now)
                        continue
                    c.next_drip = now + a.interval
        if now >= next_status:
            next_status += 1
            live = sum(1 for c in conns.values() if c.t_closed is None)
            closed = sum(1 for c in conns.values() if c.t_closed is not None and not c.failed)
            failed = sum(1 for c in conns.values() if c.failed)
            print("STATUS %d open=%d closed=%d failed=%d" % (round(now - t0), live, closed, failed),
                  flush=True)

    now = time.monotonic()
    closes = sorted(c.t_closed - c.t_start for c in conns.values()
                    if c.t_closed is not None and not c.failed)
    answers = {}
    unread = 0
    for c in conns.values():
        if c.answer:
            line = c.answer.split(b"\r\n", 1)[0].decode("latin-1")
            code = line.split(" ")[1] if line.startswith("HTTP/") and " " in line else "other"
            answers[code] = answers.get(code, 0) + 1
        if c.t_closed is None:
            try:
                buf = fcntl.ioctl(c.fd, SIOCINQ, b"\0\0\0\0")
                unread += struct.unpack("i", buf)[0]
            except OSError:
                pass
    sent_requests = sum(c.sent for c in conns.values()) // len(request) if a.mode == "pipeline" else 0

    def f(v):
        return "-" if v is None else "%.1f" % v
    print("SUMMARY conns=%d connected=%d closed=%d open=%d failed=%d first_close=%s "
          "median_close=%s last_close=%s answers=%s sent_requests=%d unread_bytes=%d" % (
              len(conns), sum(1 for c in conns.values() if c.connected), len(closes),
              sum(1 for c in conns.values() if c.t_closed is None),
              sum(1 for c in conns.values() if c.failed),
              f(closes[0] if closes else None), f(statistics.median(closes) if closes else None),
              f(closes[-1] if closes else None),
              ",".join("%sx%d" % kv for kv in sorted(answers.items())) or "-",
              sent_requests, unread), flush=True)
    for c in conns.values():
        if c.t_closed is None:
            c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
