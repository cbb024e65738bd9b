#!/usr/bin/env python3
"""Name resolution: upstream names resolved through a real (tiny) DNS server
on loopback with evdns, answers cached for their TTL and re-resolved after
it; the hosts file (dns_hostsfile) wins over DNS; an unknown name gives
Kong's 503 "name resolution failed"."""

import os
import socket
import struct
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402

NAME = "svc.sluice.test"
HOSTS_ONLY = "hosts-only.sluice.test"
MISSING = "nowhere.sluice.test"


class TinyDNS:
    """Answers A queries for NAME with self.address (TTL 1), no data for
    AAAA, NXDOMAIN for anything else. Records every question it gets."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.2"
        self.questions = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            try:
                self.sock.sendto(self._answer(data), peer)
            except (ValueError, IndexError, struct.error, OSError):
                continue

    def _answer(self, q):
        qid, flags = struct.unpack("!HH", q[:4])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii"))
            i += 1 + q[i]
        qtype, qclass = struct.unpack("!HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        with self.lock:
            self.questions.append((name, qtype))
            address = self.address
        rd = flags & 0x0100
        if name != NAME:
            return struct.pack("!HHHHHH", qid, 0x8180 | rd | 3, 1, 0, 0, 0) + question
        if qtype != 1:  # no AAAA: empty NOERROR answer
            return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 0, 0, 0) + question
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(address)
        return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 1, 0, 0) + question + answer

    def set_address(self, address):
        with self.lock:
            self.address = address

    def asked(self, name):
        with self.lock:
            return sum(1 for n, _ in self.questions if n == name)

    def stop(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


def named_upstream(ip, port, label):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = label.encode()
            self.send_response(200)
            self.send_header("X-Served-By", label)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer((ip, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    h.register_cleanup(server.shutdown)
    return server


def body(t):
    dns = TinyDNS()
    h.register_cleanup(dns.stop)
    # the same port on two loopback addresses: only DNS tells them apart
    probe = socket.socket()
    probe.bind(("127.0.0.2", 0))
    up_port = probe.getsockname()[1]
    probe.close()
    named_upstream("127.0.0.2", up_port, "first")
    named_upstream("127.0.0.3", up_port, "second")
    hosts_port = h.free_port()
    named_upstream("127.0.0.1", hosts_port, "from-hosts-file")

    hosts = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)
    hosts.write("127.0.0.1 localhost\n127.0.0.1 %s\n" % HOSTS_ONLY)
    hosts.close()
    h.register_cleanup(lambda: os.unlink(hosts.name))

    port = h.free_port()
    cfg = h.make_config(port, [
        {"name": "dns", "url": "http://%s:%d" % (NAME, up_port),
         "routes": [{"name": "r1", "paths": ["/dns"]}]},
        {"name": "hosts", "url": "http://%s:%d" % (HOSTS_ONLY, hosts_port),
         "routes": [{"name": "r2", "paths": ["/hosts"]}]},
        {"name": "missing", "url": "http://%s:%d" % (MISSING, up_port), "retries": 0,
         "routes": [{"name": "r3", "paths": ["/missing"]}]},
    ], worker_processes=1, dns_resolver="127.0.0.1:%d" % dns.port,
        dns_hostsfile=hosts.name)
    gw = h.Gateway(cfg)
    gw.start()

    def served_by(path):
        r = h.try_get(port, path, timeout=5)
        if isinstance(r, h.Response) and r.status == 200:
            return r.header("X-Served-By")
        return repr(r)

    def t_resolve_and_ttl():
        got = served_by("/dns/a")
        t.eq(got, "first", "the name resolves through the configured DNS server")
        dns.set_address("127.0.0.3")
        got = served_by("/dns/b")
        t.eq(got, "first", "within the TTL the cached answer is used")
        asked_before = dns.asked(NAME)
        time.sleep(1.6)  # TTL 1 s
        got = served_by("/dns/c")
        t.eq(got, "second", "after the TTL the name is resolved again and the new address used")
        t.ok(dns.asked(NAME) > asked_before, "a new DNS query was made after the TTL",
             "queries for %s: %d before, %d after" % (NAME, asked_before, dns.asked(NAME)))
        got = served_by("/dns/d")
        t.eq(got, "second", "pooled connections to the old address are not reused")

    def t_hosts_file():
        got = served_by("/hosts/x")
        t.eq(got, "from-hosts-file", "a name in dns_hostsfile is used")
        t.eq(dns.asked(HOSTS_ONLY), 0, "no DNS query for a name the hosts file has")

    def t_missing():
        r = h.try_get(port, "/missing/x", timeout=10)
        h.check_kong_error(t, r, 503, "name resolution failed",
                           "an unknown name -> 503 name resolution failed")

    t.run(t_resolve_and_ttl)
    t.run(t_hosts_file)
    t.run(t_missing)
    gw.stop()
    gw.check_clean(t)


if __name__ == "__main__":
    h.main(body)
