#!/usr/bin/env python3
"""Edge cases found in review, each a regression test that failed before
its fix: a client that never reads (send_timeout), a half-closed POST
whose body is already buffered, a slow upload longer than read_timeout, an
absolute-form target with preserve_host (and one whose Host disagrees:
400), and a POST on a pooled connection
that the upstream closes without answering (never replayed)."""

import contextlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402


class RawUpstream:
    """A listening socket whose connections are handled by `serve(conn)`."""

    def __init__(self, serve):
        self.sock = socket.socket()
        self.sock.bind((h.LOOPBACK, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()
        h.register_cleanup(self.stop)

    def _loop(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            c.settimeout(10)
            self.serve(c)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.running = False
        self.sock.close()


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def first_line(sock):
    try:
        data = sock.recv(4096)
    except OSError as e:
        return "error: %r" % e
    return data.split(b"\r\n")[0].decode("latin-1") if data else "closed without a response"


def body(t):
    @contextlib.contextmanager
    def gateway_for(up, name, routes=None, service_kw=None, **node):
        """A one-worker gateway in front of `up`; yields its port, stops and
        checks it afterwards."""
        port = h.free_port()
        svc = h.service("s", up.port, routes=routes or [{"name": "r", "paths": ["/"]}],
                        **(service_kw or {}))
        gw = h.Gateway(h.make_config(port, [svc], worker_processes=1, **node), port=port,
                       name=name)
        gw.start()
        try:
            yield port
        finally:
            gw.stop()
            gw.check_clean(t)

    def t_slow_reader():
        closed = threading.Event()

        def serve(c):
            read_head(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n")
            chunk = b"x" * 65536
            try:
                for _ in range(20000000 // 65536 + 1):
                    c.sendall(chunk)
            except OSError:
                closed.set()  # the gateway gave up on this response

        up = RawUpstream(serve)
        with gateway_for(up, "gateway (send_timeout)", send_timeout=1000) as port:
            s = socket.create_connection((h.LOOPBACK, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
            t.ok(closed.wait(8), "a client that stops reading is cut after send_timeout, "
                 "and the upstream connection with it")
            s.close()

    def t_half_closed_post():
        def serve(c):
            head, rest = read_head(c)
            if head and head.startswith("POST"):
                while len(rest) < 5:
                    data = c.recv(65536)
                    if not data:
                        return
                    rest += data
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        up = RawUpstream(serve)
        with gateway_for(up, "gateway (half-close)") as port:
            answers = []
            for _ in range(20):
                s = socket.create_connection((h.LOOPBACK, port))
                s.settimeout(5)
                s.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                s.shutdown(socket.SHUT_WR)
                answers.append(first_line(s))
                s.close()
            good = sum(1 for a in answers if a.startswith("HTTP/1.1 200"))
            t.ok(good == 20, "a complete POST followed by a half-close is answered (%d/20)" % good,
                 repr(sorted(set(answers))))

    def t_slow_upload():
        got = {}

        def serve(c):
            head, rest = read_head(c)
            while len(rest) < 24:
                data = c.recv(65536)
                if not data:
                    return
                rest += data
            got["body"] = rest
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        up = RawUpstream(serve)
        with gateway_for(up, "gateway (slow upload)", service_kw={"read_timeout": 1000}) as port:
            s = socket.create_connection((h.LOOPBACK, port))
            s.settimeout(8)
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\n")
            for i in range(8):  # 2.4 s of upload, longer than read_timeout
                time.sleep(0.3)
                s.sendall(b"abc")
            line = first_line(s)
            s.close()
            t.ok(line.startswith("HTTP/1.1 200") and got.get("body") == b"abc" * 8,
                 "an upload longer than read_timeout is not cut (read_timeout starts after it)",
                 "%s, upstream got %r" % (line, got.get("body")))

    def t_absolute_form_host():
        hosts = []

        def serve(c):
            head, _ = read_head(c)
            for line in (head or "").split("\r\n")[1:]:
                if line.lower().startswith("host:"):
                    hosts.append(line.split(":", 1)[1].strip())
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        up = RawUpstream(serve)
        routes = [{"name": "r", "paths": ["/"], "hosts": ["public.example"], "preserve_host": True}]
        with gateway_for(up, "gateway (absolute-form)", routes=routes) as port:
            # Host must agree with the target's authority (RFC 9112 3.2: a client MUST
            # send the same one); the target's is the one routed and sent upstream
            s = socket.create_connection((h.LOOPBACK, port))
            s.settimeout(5)
            s.sendall(b"GET http://PUBLIC.example:80/x HTTP/1.1\r\nHost: public.example\r\n\r\n")
            line = first_line(s)
            s.close()
            t.ok(line.startswith("HTTP/1.1 200") and hosts == ["PUBLIC.example:80"],
                 "absolute-form target: the routed authority is the Host sent upstream, once",
                 "%s, upstream saw Host %r" % (line, hosts))
            # two authorities that disagree are refused, not resolved either way
            del hosts[:]
            s = socket.create_connection((h.LOOPBACK, port))
            s.settimeout(5)
            s.sendall(b"GET http://public.example/x HTTP/1.1\r\nHost: admin.example\r\n\r\n")
            line = first_line(s)
            s.close()
            time.sleep(0.2)
            t.ok(line.startswith("HTTP/1.1 400") and hosts == [],
                 "absolute-form target whose Host names another host: 400, nothing upstream",
                 "%s, upstream saw Host %r" % (line, hosts))

    def t_post_not_replayed():
        seen = []

        def serve(c):
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(4096)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n")[0].decode()
                seen.append(line)
                if line.startswith("POST"):
                    time.sleep(0.2)
                    return  # processed it, then the connection dies unanswered
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        up = RawUpstream(serve)
        with gateway_for(up, "gateway (no POST replay)") as port:
            s = socket.create_connection((h.LOOPBACK, port))
            s.settimeout(5)
            s.sendall(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
            first_line(s)
            s.sendall(b"POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            line = first_line(s)
            s.close()
            posts = [x for x in seen if x.startswith("POST")]
            t.ok(len(posts) == 1 and line.startswith("HTTP/1.1 502"),
                 "a POST on a pooled connection that dies unanswered is not sent twice (502)",
                 "client got %r, upstream saw %r" % (line, seen))

    def t_transfer_coded_until_close():
        # RFC 9112 6.1/6.3: a response whose last coding is not chunked is read
        # until close and is still coded; the coding must reach the client with
        # it (an HTTP/1.1 client), and an HTTP/1.0 client can receive no
        # Transfer-Encoding at all, so it gets a 502
        coded = b"\x1f\x8b not really gzip, but coded all the same"

        def serve(c):
            read_head(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-A: 1\r\n\r\n" + coded)

        up = RawUpstream(serve)
        with gateway_for(up, "gateway (transfer-coded response)") as port:
            got = {}
            for version in ("1.1", "1.0"):
                s = socket.create_connection((h.LOOPBACK, port))
                s.settimeout(5)
                s.sendall(("GET /c HTTP/%s\r\nHost: x\r\n\r\n" % version).encode())
                data = b""
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                s.close()
                got[version] = data
            head, _, rest = got["1.1"].partition(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            t.ok(lines[0].startswith("http/1.1 200") and "transfer-encoding: gzip" in lines
                 and rest == coded,
                 "a gzip-coded response read until close keeps its Transfer-Encoding (HTTP/1.1)",
                 repr(got["1.1"]))
            t.ok(got["1.0"].startswith(b"HTTP/1.1 502") and b"ransfer-" not in got["1.0"]
                 and coded not in got["1.0"],
                 "the same response for an HTTP/1.0 client: 502, no Transfer-Encoding",
                 repr(got["1.0"]))

    for fn in (t_slow_reader, t_half_closed_post, t_slow_upload, t_absolute_form_host,
               t_post_not_replayed, t_transfer_coded_until_close):
        t.run(fn)


if __name__ == "__main__":
    h.main(body)
