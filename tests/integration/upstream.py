"""A configurable HTTP/1.1 test upstream (raw sockets, one thread per
connection, standard library only). It runs inside the test process so the
test can read what it received.

    up = Upstream().start()        # listens on 127.0.0.1:up.port
    ...
    up.requests()                  # list of Record (thread-safe copy)
    up.conn_count                  # accepted connections
    up.stop()

Every request is recorded as soon as its head is parsed (Record.complete
turns True once the whole body has been read), so a request whose head
reached the upstream is visible even if its body never completes.

Behaviour is chosen by the first path segment that is one of the keywords
below (so /base/bytes/10 and /bytes/10 are the same), or for the whole
server by `mode`:

  (default)              200, JSON echo of the request
  status/<code>          that status (204/304/1xx without body, others small JSON)
  bytes/<n>              n deterministic bytes, Content-Length
  chunked/<count>        count chunks (?size=max chunk size, ?delay=ms between
                         chunks, ?seed=); Transfer-Encoding: chunked
  close/<n>              n bytes, no Content-Length / Transfer-Encoding, then close
  stream?first=&rest=&pause=ms
                         Content-Length first+rest; sends `first` bytes, sleeps
                         `pause` ms, then the rest
  slow/<ms>              sleeps, then the JSON echo
  hang                   reads the request and never answers
  garbage                answers b"HELLO\\r\\n\\r\\n" and closes
  hop                    JSON echo plus Keep-Alive: timeout=5, Connection: X-Foo, X-Foo: 1,
                         X-Bar: 2 and two Set-Cookie fields
  truncate/<n>           Content-Length n, sends n/2 bytes and closes
  badcl                  Content-Length: abc (invalid response framing)
  interim                HTTP/1.1 100 Continue, then the JSON echo
  connclose              JSON echo with Connection: close, then closes
  dribble                JSON echo written one byte at a time (1 ms apart), head and body
  HEAD (any path)        200 with Content-Length: 100 and no body

Generated bodies carry X-Body-Len and X-Body-Sha256 headers. The echo body
is JSON: method, target, path, query, version, headers ([name, value]
pairs), body_len, body_sha256, trailers, conn_id.

A request whose target contains "slowread" has its (Content-Length) body
read slowly, 16 KiB per read with 5 ms between reads, to exercise request backpressure.

Options: mode for every request ("hang", "garbage"; "reset": read the
request, then reset the connection without answering; "status:<code>":
answer that status; may be changed while running), close_idle_ms (close a
connection that stays idle that long after a response).
"""

import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.parse

LOOPBACK = "127.0.0.1"
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
KEYWORDS = ("status", "bytes", "chunked", "close", "stream", "slow", "hang", "garbage", "hop",
            "truncate", "badcl", "interim", "connclose", "dribble")


def gen_bytes(n, seed=None):
    return random.Random(n if seed is None else seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class BadRequest(Exception):
    pass


class Record:
    def __init__(self, conn_id, method, target, version, headers):
        self.conn_id = conn_id
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers          # [(name, value)] in order, names as sent
        self.body_len = None
        self.body_sha256 = None
        self.body = b""                 # kept only up to 64 KiB
        self.trailers = []
        self.complete = False
        self.error = None
        self.time = time.monotonic()

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def headers_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def to_json(self):
        return {"method": self.method, "target": self.target, "path": self.path,
                "query": self.target.split("?", 1)[1] if "?" in self.target else "",
                "version": self.version, "headers": [list(h) for h in self.headers],
                "body_len": self.body_len, "body_sha256": self.body_sha256,
                "trailers": [list(h) for h in self.trailers], "conn_id": self.conn_id}

    def __repr__(self):
        return "<Record %s %s conn=%d body=%r complete=%r err=%r headers=%r>" % (
            self.method, self.target, self.conn_id, self.body_len, self.complete, self.error,
            self.headers)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self, timeout, maxn=262144):
        self.sock.settimeout(timeout)
        data = self.sock.recv(maxn)
        if not data:
            raise EOFError()
        self.buf += data

    def line(self, timeout, limit=131072):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                if not line.endswith(b"\r\n"):
                    raise BadRequest("bare LF line ending: %r" % line[:100])
                if b"\r" in line[:-2]:
                    raise BadRequest("bare CR: %r" % line[:100])
                return line[:-2]
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self.fill(timeout)

    def exact(self, n, timeout):
        while len(self.buf) < n:
            self.fill(timeout)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class Upstream:
    def __init__(self, mode=None, close_idle_ms=None, io_timeout=30.0, name="upstream", port=0,
                 tls=None, host=LOOPBACK):
        """tls: an ssl.SSLContext for the server side (HTTPS upstream); the
        SNI of each handshake is recorded in .snis."""
        self.mode = mode
        self.host = host
        self.tls = tls
        self.snis = []
        self.tls_failures = 0
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.snis.append(name)
        self.close_idle_ms = close_idle_ms
        self.io_timeout = io_timeout
        self.name = name
        self.port = port
        self._lock = threading.Lock()
        self._records = []
        self._conns = set()
        self.conn_count = 0
        self.closed_by_peer = 0         # connections the client (gateway) closed
        self.errors = []
        self._stop = threading.Event()
        self._lsock = None
        self._thread = None

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port or 0))
        except OSError:
            s.close()
            raise
        s.listen(256)
        s.settimeout(0.2)
        self._lsock = s
        self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=self.name + "-accept",
                                        daemon=True)
        self._thread.start()
        try:  # register with the harness cleanup when available
            import sluice_harness
            sluice_harness.register_cleanup(self.stop)
        except ImportError:
            pass
        return self

    def stop(self):
        self._stop.set()
        try:
            self._lsock.close()
        except (OSError, AttributeError):
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)

    # -- records -----------------------------------------------------------------
    def requests(self):
        with self._lock:
            return list(self._records)

    def clear(self):
        with self._lock:
            self._records = []
            self.errors = []

    def reset_conn_count(self):
        with self._lock:
            self.conn_count = 0

    def find(self, needle):
        """Records whose target contains `needle`."""
        return [r for r in self.requests() if needle in r.target]

    def wait_requests(self, n, timeout=5.0, pred=None):
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.requests() if pred is None or pred(r)]
            if len(recs) >= n or time.monotonic() >= deadline:
                return recs
            time.sleep(0.01)

    def wait_for(self, needle, timeout=5.0, complete=True):
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.find(needle) if r.complete or not complete]
            if recs or time.monotonic() >= deadline:
                return recs[-1] if recs else None
            time.sleep(0.01)

    # -- server --------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.conn_count += 1
                cid = self.conn_count
                self._conns.add(c)
            threading.Thread(target=self._serve, args=(c, cid), daemon=True,
                             name="%s-conn%d" % (self.name, cid)).start()

    def _serve(self, c, cid):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                c.settimeout(self.io_timeout)
                tc = self.tls.wrap_socket(c, server_side=True)
            except (OSError, ValueError):
                with self._lock:
                    self.tls_failures += 1
                    self._conns.discard(c)
                c.close()
                return
            with self._lock:
                self._conns.discard(c)
                self._conns.add(tc)
            c = tc
        rd = _Reader(c)
        served = 0
        try:
            while not self._stop.is_set():
                # wait for the first byte of the next request
                if not rd.buf:
                    idle = self.io_timeout
                    if served and self.close_idle_ms is not None:
                        idle = self.close_idle_ms / 1000.0
                    try:
                        rd.fill(idle)
                    except socket.timeout:
                        return  # idle too long: close
                rec = None
                try:
                    rec = self._read_request(rd, cid)
                except BadRequest as e:
                    with self._lock:
                        self.errors.append("conn %d: %s" % (cid, e))
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                              b"Connection: close\r\n\r\n")
                    return
                keep = self._respond(c, rd, rec)
                served += 1
                if not keep:
                    return
        except EOFError:
            with self._lock:
                self.closed_by_peer += 1
            return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _read_request(self, rd, cid):
        t = self.io_timeout
        line = rd.line(t)
        m = re.match(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP/1\.[01])$", line)
        if not m:
            raise BadRequest("bad request line %r" % line[:200])
        headers = []
        while True:
            hl = rd.line(t)
            if hl == b"":
                break
            if hl[:1] in (b" ", b"\t"):
                raise BadRequest("obs-fold %r" % hl)
            k, sep, v = hl.partition(b":")
            if not sep or not TOKEN_RE.match(k):
                raise BadRequest("bad header line %r" % hl)
            v = v.strip(b" \t")
            if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", v):
                raise BadRequest("control byte in header value %r" % hl)
            headers.append((k.decode("latin-1"), v.decode("latin-1")))
        rec = Record(cid, m.group(1).decode(), m.group(2).decode("latin-1"),
                     m.group(3).decode(), headers)
        with self._lock:
            self._records.append(rec)
        # framing (strict)
        te = rec.headers_all("transfer-encoding")
        cl = rec.headers_all("content-length")
        h = hashlib.sha256()
        n = 0
        kept = []
        if te and cl:
            rec.error = "both Content-Length and Transfer-Encoding"
            raise BadRequest(rec.error)
        if te:
            if len(te) != 1 or te[0] != "chunked":
                rec.error = "Transfer-Encoding %r" % te
                raise BadRequest(rec.error)
            while True:
                sl = rd.line(t)
                size_s = sl.split(b";", 1)[0]
                if not re.match(rb"^[0-9A-Fa-f]{1,15}$", size_s):
                    rec.error = "bad chunk size %r" % sl
                    raise BadRequest(rec.error)
                size = int(size_s, 16)
                if size == 0:
                    while True:
                        tl = rd.line(t)
                        if tl == b"":
                            break
                        k, _, v = tl.partition(b":")
                        rec.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                    break
                remaining = size
                while remaining:
                    if not rd.buf:
                        rd.fill(t)
                    piece = rd.buf[:remaining]
                    rd.buf = rd.buf[len(piece):]
                    remaining -= len(piece)
                    h.update(piece)
                    n += len(piece)
                    if sum(map(len, kept)) < 65536:
                        kept.append(piece)
                if rd.exact(2, t) != b"\r\n":
                    rec.error = "chunk not followed by CRLF"
                    raise BadRequest(rec.error)
        elif cl:
            if len(set(cl)) != 1 or not re.match(r"^\d+$", cl[0]):
                rec.error = "bad Content-Length %r" % cl
                raise BadRequest(rec.error)
            remaining = int(cl[0])
            slow = "slowread" in rec.target   # read the body slowly: backpressure
            while remaining:
                if not rd.buf:
                    if slow:
                        time.sleep(0.005)
                    rd.fill(t, 16384 if slow else 262144)
                piece = rd.buf[:remaining]
                rd.buf = rd.buf[len(piece):]
                remaining -= len(piece)
                h.update(piece)
                n += len(piece)
                if sum(map(len, kept)) < 65536:
                    kept.append(piece)
        rec.body = b"".join(kept)[:65536]
        rec.body_len = n
        rec.body_sha256 = h.hexdigest()
        rec.complete = True
        return rec

    # -- responses -------------------------------------------------------------------
    def _respond(self, c, rd, rec):
        """Send the response for rec; return True to keep the connection."""
        path = rec.path
        query = urllib.parse.parse_qs(rec.target.split("?", 1)[1] if "?" in rec.target else "")

        def q(name, default):
            return int(query.get(name, [default])[0])

        segs = [s for s in path.split("/") if s]
        kw, args = None, []
        for i, s in enumerate(segs):
            if s in KEYWORDS:
                kw, args = s, segs[i + 1:]
                break
        if self.mode in ("hang", "garbage", "reset"):
            kw = self.mode
        elif self.mode and self.mode.startswith("status:"):
            kw, args = "status", [self.mode.split(":", 1)[1]]
        client_close = "close" in (rec.header("connection") or "").lower() or \
            rec.version == "HTTP/1.0"

        def send_head(status, headers, reason=None, body=b""):
            """The head, and `body` in the same write (as a real server does,
            so that a kill between two writes cannot cut a small answer)."""
            reason = reason or {200: "OK", 204: "No Content", 304: "Not Modified",
                                400: "Bad Request", 404: "Not Found",
                                500: "Internal Server Error"}.get(status, "Status")
            lines = ["HTTP/1.1 %d %s" % (status, reason)] + ["%s: %s" % kv for kv in headers]
            c.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

        if kw == "hang":
            self._stop.wait(self.io_timeout * 4)
            return False
        if kw == "garbage":
            c.sendall(b"HELLO\r\n\r\n")
            return False
        if kw == "reset":
            # the request was read: reset the connection without a byte
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if rec.method == "HEAD":
            send_head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", "100")])
            return not client_close
        if kw == "slow":
            time.sleep(int(args[0]) / 1000.0 if args else 1.0)
            kw = None
        if kw == "status":
            code = int(args[0]) if args else 200
            if code in (204, 304) or code < 200:
                hs = [("X-Upstream", "yes")]
                if code == 304:
                    hs.append(("ETag", '"abc"'))
                send_head(code, hs)
            else:
                body = json.dumps({"status": code}).encode()
                send_head(code, [("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body)))], body=body)
            return not client_close
        if kw == "bytes":
            n = int(args[0]) if args else 0
            body = gen_bytes(n)
            send_head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(n)), ("X-Body-Len", str(n)),
                            ("X-Body-Sha256", sha256(body))])
            c.sendall(body)
            return not client_close
        if kw == "chunked":
            count = int(args[0]) if args else 10
            maxsize = q("size", 1000)
            delay = q("delay", 0) / 1000.0
            rnd = random.Random(q("seed", count))
            pieces = [gen_bytes(rnd.randint(1, maxsize), seed=i * 7919 + count) for i in range(count)]
            whole = b"".join(pieces)
            http10 = rec.version == "HTTP/1.0"  # no chunked to 1.0: close-delimit instead
            send_head(200, [("Content-Type", "application/octet-stream")]
                      + ([] if http10 else [("Transfer-Encoding", "chunked")])
                      + [("X-Body-Len", str(len(whole))), ("X-Body-Sha256", sha256(whole))])
            for i, p in enumerate(pieces):
                c.sendall(p if http10 else b"%x\r\n%s\r\n" % (len(p), p))
                if delay and i + 1 < count:
                    time.sleep(delay)
            if http10:
                return False
            c.sendall(b"0\r\n\r\n")
            return not client_close
        if kw == "close":
            n = int(args[0]) if args else 0
            body = gen_bytes(n)
            send_head(200, [("Content-Type", "application/octet-stream"), ("X-Body-Len", str(n)),
                            ("X-Body-Sha256", sha256(body))])
            c.sendall(body)
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return False
        if kw == "truncate":
            n = int(args[0]) if args else 1000
            body = gen_bytes(n)
            send_head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(n))])
            c.sendall(body[:n // 2])
            time.sleep(0.05)
            return False
        if kw == "badcl":
            send_head(200, [("Content-Type", "text/plain"), ("Content-Length", "abc")])
            c.sendall(b"hello")
            return False
        if kw == "interim":
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.05)
            kw = None
        if kw == "stream":
            first, rest, pause = q("first", 65536), q("rest", 65536), q("pause", 1000)
            body = gen_bytes(first + rest)
            send_head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(len(body))), ("X-Body-Len", str(len(body))),
                            ("X-Body-Sha256", sha256(body))])
            c.sendall(body[:first])
            time.sleep(pause / 1000.0)
            c.sendall(body[first:])
            return not client_close
        # echo (default, slow, hop)
        body = json.dumps(rec.to_json()).encode()
        hs = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if kw == "connclose":
            hs.append(("Connection", "close"))
            send_head(200, hs)
            c.sendall(body)
            return False
        if kw == "dribble":
            raw = ("HTTP/1.1 200 OK\r\n" + "".join("%s: %s\r\n" % kv for kv in hs)
                   + "\r\n").encode("latin-1") + body
            for i in range(len(raw)):
                c.sendall(raw[i:i + 1])
                time.sleep(0.001)
            return not client_close
        if kw == "hop":
            hs += [("Keep-Alive", "timeout=5"), ("Connection", "X-Foo"), ("X-Foo", "1"),
                   ("X-Bar", "2"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
        send_head(200, hs, body=body)
        return not client_close
