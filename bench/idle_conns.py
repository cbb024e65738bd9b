#!/usr/bin/env python3
"""Open many keep-alive connections, do one request on each, keep them idle.

Used by bench/run to measure the memory a server spends per idle keep-alive
connection: bench/run reads the server's RSS, starts this client, waits for
its "READY" line, waits a little, reads the RSS again and then closes our
stdin (or kills us), which closes every connection.

Every connection performs one full HTTP/1.1 request/response (the response
is read completely: head plus Content-Length body, or a chunked body up to
its last chunk), then the socket stays open and untouched. Connects are
issued in batches (--inflight) so the server's accept backlog never
overflows. Everything is bounded by --timeout (setup) and --hold (idle).

Output on stdout, one line each, for the caller to parse:
    READY ok=<n> failed=<n> seconds=<setup time>
    DONE alive=<n>          (after the hold: connections still open)
The hold ends when stdin closes, on SIGTERM/SIGINT/SIGUSR1, or after --hold.
Details and errors go to stderr. Exit status 0 when every connection
completed its request, 1 otherwise.
"""

import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time

CONNECTING, SENDING, RECEIVING, IDLE, FAILED = range(5)


class Conn:
    __slots__ = ("sock", "state", "out", "buf", "need")

    def __init__(self, sock, request):
        self.sock = sock
        self.state = CONNECTING
        self.out = request
        self.buf = b""
        self.need = None  # bytes of body still expected, or "chunked"


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        # root may lift the hard limit too, when it is allowed to
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            target = needed
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def response_complete(c):
    """Return True once a whole response sits in c.buf (head + body)."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = c.buf[:end].decode("latin-1")
        c.buf = c.buf[end + 4 :]
        status_line, _, rest = head.partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line %r" % status_line)
        c.need = 0
        for line in rest.split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            if name == "content-length":
                c.need = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                c.need = "chunked"
            elif name == "connection" and value.lower() == "close":
                raise ValueError("server answered Connection: close")
        if not parts[1].startswith("2"):
            raise ValueError("status %s" % parts[1])
    if c.need == "chunked":
        return c.buf.endswith(b"0\r\n\r\n")
    return len(c.buf) >= c.need


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", "--conns", type=int, default=10000)
    ap.add_argument("--inflight", type=int, default=256,
                    help="connections being set up at once (default 256)")
    ap.add_argument("--path", default="/")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds allowed to set up all connections")
    ap.add_argument("--hold", type=float, default=60.0,
                    help="seconds to keep them idle unless stdin closes first")
    args = ap.parse_args()

    limit = raise_nofile(args.conns + 64)
    if limit < args.conns + 16:
        print("idle_conns: RLIMIT_NOFILE is %d, need %d" % (limit, args.conns + 16),
              file=sys.stderr)
        return 2

    request = ("GET %s HTTP/1.1\r\nHost: bench\r\nUser-Agent: sluice-bench-idle\r\n"
               "Accept: */*\r\n\r\n" % args.path).encode()
    sel = selectors.DefaultSelector()
    started = ok = failed = 0
    active = 0
    errors = {}
    conns = []
    t0 = time.monotonic()
    deadline = t0 + args.timeout

    def fail(c, why):
        nonlocal failed, active
        if c.state == FAILED:
            return
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.state = FAILED
        failed += 1
        active -= 1
        errors[why] = errors.get(why, 0) + 1

    while ok + failed < args.conns:
        now = time.monotonic()
        if now > deadline:
            break
        while active < args.inflight and started < args.conns:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(s, request)
            conns.append(c)
            started += 1
            active += 1
            rc = s.connect_ex((args.host, args.port))
            if rc not in (0, errno.EINPROGRESS):
                fail(c, "connect: " + os.strerror(rc))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=min(0.5, max(0.0, deadline - now))):
            c = key.data
            try:
                if c.state == CONNECTING:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, "connect: " + os.strerror(err))
                        continue
                    c.state = SENDING
                if c.state == SENDING:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                    if not c.out:
                        c.state = RECEIVING
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                if c.state == RECEIVING:
                    data = c.sock.recv(65536)
                    if not data:
                        fail(c, "closed before the response ended")
                        continue
                    c.buf += data
                    if response_complete(c):
                        sel.unregister(c.sock)
                        c.state = IDLE
                        c.buf = b""
                        ok += 1
                        active -= 1
            except (BlockingIOError, InterruptedError):
                pass
            except (OSError, ValueError) as e:
                fail(c, type(e).__name__ + ": " + str(e).split(":")[0])

    for c in conns:
        if c.state not in (IDLE, FAILED):
            fail(c, "timed out during setup")
    setup = time.monotonic() - t0
    for why, n in sorted(errors.items(), key=lambda kv: -kv[1]):
        print("idle_conns: %d x %s" % (n, why), file=sys.stderr)
    print("READY ok=%d failed=%d seconds=%.1f" % (ok, failed, setup), flush=True)

    # Hold the idle connections until the caller closes our stdin, sends
    # SIGTERM/SIGINT/SIGUSR1, or the hold time runs out; watch them so a server-side close is noticed.
    idle = [c for c in conns if c.state == IDLE]
    for c in idle:
        sel.register(c.sock, selectors.EVENT_READ, c)
    try:
        sel.register(sys.stdin, selectors.EVENT_READ, None)
    except (ValueError, OSError, PermissionError):
        pass  # stdin is not pollable (a file, /dev/null): just use --hold
    alive = len(idle)
    end = time.monotonic() + args.hold
    stop = False
    stopped = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, lambda *_: stopped.append(1))
    while not stop and not stopped and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                if not os.read(sys.stdin.fileno(), 4096):
                    stop = True
                continue
            c = key.data
            try:
                data = c.sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the server while idle
                sel.unregister(c.sock)
                c.sock.close()
                c.state = FAILED
                alive -= 1
    print("DONE alive=%d" % alive, flush=True)
    for c in idle:
        if c.state == IDLE:
            c.sock.close()
    return 0 if failed == 0 and alive == ok else 1


if __name__ == "__main__":
    sys.exit(main())
