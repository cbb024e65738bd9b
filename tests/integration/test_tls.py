#!/usr/bin/env python3
"""TLS termination and upstream TLS through the real gateway.

Certificates come from conf/make-certs.sh (a local CA, an ECDSA and an RSA
leaf for localhost/127.0.0.1/*.sluice.test, an ECDSA leaf for
other.sluice.test). Shown here: the handshake with curl-like clients
(Python's ssl) and `openssl s_client`; SNI selection with exact names,
wildcards and the default; ECDSA and RSA side by side picked by the
client's capability; TLS 1.0/1.1 and weak ciphers refused (and sslscan
agrees); ALPN http/1.1; session resumption with tickets (1.2 and 1.3);
keep-alive and 1 MiB bodies both ways; https-only and http-only routes;
route snis; garbage and stalled handshakes that block no one; a reload
that swaps certificates while a connection stays open; an ssl listener
without certificates refused by -t; https services with SNI, tls_verify,
ca_certificates and a pooled connection."""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(__file__), "..", "..")
CA_ID = "0b6e4a1e-6a7c-4a8e-9a41-5c1d2e3f4a01"


def make_certs():
    d = tempfile.mkdtemp(prefix="sluice-tls-")
    h.register_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    subprocess.run(["bash", os.path.join(SRCDIR, "conf", "make-certs.sh"), d], check=True,
                   stdout=subprocess.DEVNULL)
    return d


def pem(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def der(d, name):
    return ssl.PEM_cert_to_DER_cert(pem(d, name))


def gateway_config(d, tls_port, http_port, up_port, rsa_only=False, timeout_ms=60000):
    main = {"cert": pem(d, "server-ec.crt"), "key": pem(d, "server-ec.key"),
            "cert_alt": pem(d, "server-rsa.crt"), "key_alt": pem(d, "server-rsa.key"),
            "snis": [{"name": "localhost"}, {"name": "*.sluice.test"}]}
    if rsa_only:
        main = {"cert": pem(d, "server-rsa.crt"), "key": pem(d, "server-rsa.key"),
                "snis": [{"name": "localhost"}, {"name": "*.sluice.test"}]}
    url = "http://127.0.0.1:%d" % up_port
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d ssl" % tls_port, "127.0.0.1:%d" % http_port],
                    "status_listen": "off", "worker_processes": 2, "log_level": "info",
                    "client_header_timeout": "%dms" % timeout_ms},
        "certificates": [
            main,
            {"cert": pem(d, "other-ec.crt"), "key": pem(d, "other-ec.key"),
             "snis": [{"name": "other.sluice.test"}]},
        ],
        "services": [
            {"name": "s", "url": url, "routes": [
                {"name": "any", "paths": ["/any"]},
                {"name": "secure", "paths": ["/secure"], "protocols": ["https"]},
                {"name": "moved", "paths": ["/moved"], "protocols": ["https"],
                 "https_redirect_status_code": 301},
                {"name": "plain", "paths": ["/plain"], "protocols": ["http"]},
                {"name": "by-sni", "paths": ["/sni"], "snis": ["other.sluice.test"]},
            ]},
        ],
    }


def client_ctx(d, verify=True, **kw):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, sni="localhost", session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname=sni, session=session)


def read_response(s):
    c = h.Conn.from_socket(s, 0)
    return c


def https_get(port, ctx, path, sni="localhost", headers=None, body=b"", method="GET"):
    s = tls_connect(port, ctx, sni)
    c = h.Conn.from_socket(s, port)
    hs = list((headers or {}).items()) + [("Connection", "close")]
    try:
        return c.request(method, path, hs, body=body, host=sni or "localhost"), s
    finally:
        c.close()


def body(t):
    d = make_certs()
    up = Upstream().start()
    tls_port, http_port = h.free_port(), h.free_port()
    gw = h.Gateway(gateway_config(d, tls_port, http_port, up.port), port=tls_port)
    gw.start()
    ctx = client_ctx(d)

    def t_basic():
        up.clear()
        s = tls_connect(tls_port, ctx)
        t.eq(s.selected_alpn_protocol(), "http/1.1", "ALPN: http/1.1 chosen from h2,http/1.1")
        t.ok(s.version() in ("TLSv1.3", "TLSv1.2"), "handshake verified against the local CA",
             s.version())
        c = h.Conn.from_socket(s, tls_port)
        r = c.request("GET", "/any/x?q=1", [("Connection", "close")])
        c.close()
        rec = up.requests()[-1] if up.requests() else None
        t.ok(r.status == 200 and rec and rec.target == "/x?q=1", "GET over TLS proxied",
             repr(rec))
        t.eq(rec and rec.header("X-Forwarded-Proto"), "https", "X-Forwarded-Proto: https")
        t.eq(rec and rec.header("X-Forwarded-Port"), str(tls_port), "X-Forwarded-Port: the TLS port")

    def t_sni():
        for sni, want, desc in (("localhost", "server-ec.crt", "exact SNI"),
                                ("api.sluice.test", "server-ec.crt", "wildcard *.sluice.test"),
                                ("other.sluice.test", "other-ec.crt", "the other certificate"),
                                ("unknown.example", "server-ec.crt", "unknown SNI: default"),
                                (None, "server-ec.crt", "no SNI: default")):
            s = tls_connect(tls_port, client_ctx(d, verify=False), sni)
            got = s.getpeercert(binary_form=True)
            s.close()
            t.ok(got == der(d, want), "SNI: %s gets %s" % (desc, want))

    def t_key_types():
        for cipher, want in (("ECDHE-RSA-AES128-GCM-SHA256", "server-rsa.crt"),
                             ("ECDHE-ECDSA-AES128-GCM-SHA256", "server-ec.crt")):
            cctx = client_ctx(d, maximum_version=ssl.TLSVersion.TLSv1_2)
            cctx.set_ciphers(cipher)
            s = tls_connect(tls_port, cctx)
            got = s.getpeercert(binary_form=True)
            s.close()
            t.ok(got == der(d, want), "a client that can only do %s gets %s" % (cipher, want))

    def refused(cctx, sni="localhost"):
        try:
            s = tls_connect(tls_port, cctx, sni)
            s.close()
            return False
        except (ssl.SSLError, OSError):
            return True

    def t_policy():
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            cctx = client_ctx(d, verify=False, minimum_version=version, maximum_version=version)
            cctx.set_ciphers("ALL:@SECLEVEL=0")
            t.ok(refused(cctx), "%s refused" % version.name)
        for cipher in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES256-GCM-SHA384",
                       "ECDHE-RSA-AES256-SHA384", "DES-CBC3-SHA"):
            cctx = client_ctx(d, verify=False, maximum_version=ssl.TLSVersion.TLSv1_2)
            try:
                cctx.set_ciphers(cipher + ":@SECLEVEL=0")
            except ssl.SSLError:
                t.ok(True, "weak cipher %s: not even offered by this OpenSSL" % cipher)
                continue
            t.ok(refused(cctx), "weak cipher %s refused" % cipher)

    def t_sslscan():
        if not shutil.which("sslscan"):
            t.ok(False, "sslscan is installed (./dev test installs it)")
            return
        out = subprocess.run(["sslscan", "--no-colour", "127.0.0.1:%d" % tls_port],
                             capture_output=True, text=True, timeout=60).stdout
        for proto in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
            t.ok(("%s     disabled" % proto) in out or ("%s   disabled" % proto) in out,
                 "sslscan: %s disabled" % proto)
        t.ok("TLSv1.2   enabled" in out and "TLSv1.3   enabled" in out,
             "sslscan: TLS 1.2 and 1.3 enabled")
        # "Accepted  TLSv1.2  256 bits  ECDHE-RSA-AES256-GCM-SHA384  Curve 25519 DHE 253"
        accepted = [ln.split()[4] for ln in out.splitlines()
                    if ln.startswith(("Accepted", "Preferred"))]
        allowed = set(("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                       "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                       "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                       "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
                       "DHE-RSA-CHACHA20-POLY1305:TLS_AES_128_GCM_SHA256:"
                       "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256").split(":"))
        weak = [c for c in accepted if c not in allowed]
        t.ok(accepted and not weak, "sslscan: only Mozilla intermediate ciphers (%d seen)"
             % len(accepted), "not allowed: %r" % weak)

    def t_s_client():
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % tls_port,
                            "-servername", "localhost", "-alpn", "http/1.1", "-CAfile",
                            os.path.join(d, "ca.crt"), "-verify_return_error", "-brief", "-ign_eof"],
                           input=b"GET /any/s HTTP/1.1\r\nHost: localhost\r\n"
                                 b"Connection: close\r\n\r\n",
                           capture_output=True, timeout=20)
        both = p.stdout + p.stderr
        t.ok(b"Verification: OK" in both and b"HTTP/1.1 200" in both,
             "openssl s_client: verified handshake and an HTTP answer", both[-400:])

    def t_curl():
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                            "--cacert", os.path.join(d, "ca.crt"),
                            "https://localhost:%d/any/curl" % tls_port],
                           capture_output=True, text=True, timeout=20)
        t.eq(p.stdout, "200 1.1", "curl with the local CA: 200 over HTTP/1.1 (ALPN)")
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--tlsv1.1",
                            "--tls-max", "1.1", "-k", "https://localhost:%d/any/curl" % tls_port],
                           capture_output=True, text=True, timeout=20)
        t.ok(p.returncode != 0, "curl --tls-max 1.1: refused", p.stdout + p.stderr)

    def t_resumption():
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            cctx = client_ctx(d, minimum_version=version, maximum_version=version)
            s = tls_connect(tls_port, cctx)
            c = h.Conn.from_socket(s, tls_port)
            c.request("GET", "/any/r", [])  # 1.3 tickets come after the handshake
            sess = s.session
            c.close()
            s2 = tls_connect(tls_port, cctx, session=sess)
            reused = s2.session_reused
            c2 = h.Conn.from_socket(s2, tls_port)
            r = c2.request("GET", "/any/r2", [("Connection", "close")])
            c2.close()
            t.ok(reused and r.status == 200, "%s: session resumed from a ticket" % version.name)

    def t_keepalive_bodies():
        up.clear()
        s = tls_connect(tls_port, ctx)
        c = h.Conn.from_socket(s, tls_port)
        statuses = [c.request("GET", "/any/k%d" % i, []).status for i in range(20)]
        t.ok(statuses == [200] * 20, "20 requests on one TLS connection", repr(statuses))
        payload = os.urandom(1 << 20)
        r = c.request("POST", "/any/upload", [("Content-Type", "application/octet-stream")],
                      body=payload)
        rec = up.requests()[-1]
        t.ok(r.status == 200 and rec.body_sha256 == hashlib.sha256(payload).hexdigest(),
             "1 MiB request body over TLS arrives intact", repr(rec))
        r = c.request("GET", "/any/bytes/%d" % (1 << 20), [])
        t.ok(r.status == 200 and len(r.body) == 1 << 20, "1 MiB response body over TLS",
             repr(len(r.body)))
        conns = {x.conn_id for x in up.requests()}
        c.close()
        t.ok(len(conns) <= 2, "upstream connections reused behind it", repr(conns))

    def t_protocol_routes():
        r = h.get(http_port, "/secure/x")
        t.ok(r.status == 426 and b"Please use HTTPS protocol" in r.body,
             "https-only route over http: 426 Please use HTTPS protocol", repr(r))
        r = h.get(http_port, "/moved/x?a=1", host="localhost")
        t.ok(r.status == 301 and r.header("Location") == "https://localhost/moved/x?a=1",
             "https-only route with 301: redirect to https", repr(r.headers))
        r, _ = https_get(tls_port, ctx, "/secure/x")
        t.eq(r.status, 200, "https-only route over https: proxied")
        r, _ = https_get(tls_port, ctx, "/plain/x")
        t.eq(r.status, 404, "http-only route over https: no route")
        r = h.get(http_port, "/plain/x")
        t.eq(r.status, 200, "http-only route over http: proxied")
        r, _ = https_get(tls_port, client_ctx(d), "/sni/x", sni="other.sluice.test")
        t.eq(r.status, 200, "route snis: matched by the TLS SNI")
        r, _ = https_get(tls_port, ctx, "/sni/x", sni="localhost")
        t.eq(r.status, 404, "route snis: another SNI does not match")
        r = h.get(http_port, "/sni/x", host="other.sluice.test")
        t.eq(r.status, 404, "route snis: never over plain http")

    def t_bad_clients():
        s = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        s.sendall(b"GET /any/x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        s.close()
        t.ok(b"HTTP/1.1 200" not in data, "plain HTTP to the TLS port: refused, closed")
        stalled = [socket.create_connection(("127.0.0.1", tls_port), timeout=5)
                   for _ in range(20)]
        stalled[0].sendall(b"\x16\x03\x01\x00\xff\x01")  # a ClientHello cut short
        t0 = time.monotonic()
        r, _ = https_get(tls_port, ctx, "/any/while-stalled")
        took = time.monotonic() - t0
        t.ok(r.status == 200 and took < 2.0,
             "20 stalled handshakes block no one (%.3f s)" % took)
        for s in stalled:
            s.close()
        t.ok("TLS handshake failed" in gw.stderr(), "the failed handshake is logged")

    t.run(t_basic)
    t.run(t_sni)
    t.run(t_key_types)
    t.run(t_policy)
    t.run(t_sslscan)
    t.run(t_s_client)
    t.run(t_curl)
    t.run(t_resumption)
    t.run(t_keepalive_bodies)
    t.run(t_protocol_routes)
    t.run(t_bad_clients)

    def t_reload_swaps_certificates():
        s = tls_connect(tls_port, ctx)
        c = h.Conn.from_socket(s, tls_port)
        before = s.getpeercert(binary_form=True)
        r1 = c.request("GET", "/any/before", [])
        gw.write_config(gateway_config(d, tls_port, http_port, up.port, rsa_only=True))
        gw.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        got = before
        while time.monotonic() < deadline and got == before:
            time.sleep(0.1)
            s2 = tls_connect(tls_port, client_ctx(d))
            got = s2.getpeercert(binary_form=True)
            s2.close()
        t.ok(before == der(d, "server-ec.crt") and got == der(d, "server-rsa.crt"),
             "reload: new handshakes get the new certificate")
        r2 = c.request("GET", "/any/after", [("Connection", "close")])
        c.close()
        t.ok(r1.status == 200 and r2.status == 200,
             "reload: the connection opened before it keeps working")

    t.run(t_reload_swaps_certificates)
    gw.stop()
    gw.check_clean(t)

    # a short client_header_timeout also bounds the handshake
    gw2_port = h.free_port()
    gw2 = h.Gateway(gateway_config(d, gw2_port, h.free_port(), up.port, timeout_ms=500),
                    port=gw2_port, name="gateway-timeout")
    gw2.start()
    s = socket.create_connection(("127.0.0.1", gw2_port), timeout=5)
    t0 = time.monotonic()
    try:
        closed = s.recv(1) == b""
    except OSError:
        closed = True
    t.ok(closed and time.monotonic() - t0 < 3,
         "a client that never starts its handshake is closed after client_header_timeout")
    s.close()
    gw2.stop()
    gw2.check_clean(t)

    # -t: an ssl listener needs certificates
    cfg = gateway_config(d, h.free_port(), h.free_port(), up.port)
    del cfg["certificates"]
    path = os.path.join(d, "nocert.yaml")
    with open(path, "w") as f:
        f.write(h.to_yaml(cfg))
    p = subprocess.run([h.sluice_bin(), "-t", "-c", path], capture_output=True, text=True,
                       timeout=20)
    t.ok(p.returncode != 0 and "needs at least one entry in 'certificates'" in p.stderr,
         "-t: an ssl listener without certificates is refused", p.stderr)

    # upstream TLS
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(os.path.join(d, "server-ec.crt"), os.path.join(d, "server-ec.key"))
    octx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    octx.load_cert_chain(os.path.join(d, "other-ec.crt"), os.path.join(d, "other-ec.key"))
    sup = Upstream(tls=sctx, name="tls-upstream").start()
    oup = Upstream(tls=octx, name="other-upstream").start()
    port = h.free_port()
    cas = [CA_ID]

    def svc(name, url, **kw):
        d_ = {"name": name, "url": url, "routes": [{"paths": ["/" + name]}], "retries": 0}
        d_.update(kw)
        return d_
    ucfg = {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 1},
        "ca_certificates": [{"id": CA_ID, "cert": pem(d, "ca.crt")}],
        "services": [
            svc("verified", "https://localhost:%d/base" % sup.port, tls_verify=True,
                ca_certificates=cas),
            svc("noverify", "https://localhost:%d" % sup.port),
            svc("system", "https://localhost:%d" % sup.port, tls_verify=True),
            svc("byip", "https://127.0.0.1:%d" % sup.port, tls_verify=True, ca_certificates=cas),
            svc("mismatch", "https://localhost:%d" % oup.port, tls_verify=True,
                ca_certificates=cas),
        ],
    }
    gw3 = h.Gateway(ucfg, port=port, name="gateway-upstream-tls")
    gw3.start()

    def st(path):
        r = h.try_get(port, path)
        return r.status if isinstance(r, h.Response) else repr(r)
    sup.clear()
    t.eq(st("/verified/x"), 200, "https service, tls_verify with its CA: 200")
    rec = sup.requests()[-1] if sup.requests() else None
    t.ok(rec and rec.target == "/base/x", "the upstream got the request over TLS", repr(rec))
    t.ok("localhost" in sup.snis, "SNI sent: the service host", repr(sup.snis))
    t.eq(st("/noverify/x"), 200, "https service without tls_verify: 200")
    t.eq(st("/system/x"), 502, "tls_verify with the system store (local CA unknown): 502")
    t.ok("unable to get local issuer certificate" in gw3.stderr(),
         "the verification error is logged")
    n = len(sup.snis)
    t.eq(st("/byip/x"), 200, "an IP host is checked against the IP in the certificate")
    t.eq(len(sup.snis) - n, 1 if None in sup.snis[n:] else 0,
         "no SNI is sent for an IP host")
    t.eq(st("/mismatch/x"), 502, "a certificate for another name: 502")
    sup.clear()
    for i in range(5):
        with h.Conn(port) as c:
            c.request("GET", "/verified/pool%d" % i, [])
    conns = {r.conn_id for r in sup.requests()}
    t.ok(len(sup.requests()) == 5 and len(conns) == 1,
         "TLS upstream connections are pooled and reused", repr(conns))
    gw3.stop()
    gw3.check_clean(t)
    sup.stop()
    oup.stop()
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=110)
