#!/usr/bin/env python3
"""The jwt plugin through the real gateway: HS256, RS256 and ES256 tokens
(made here: hmac, and `openssl dgst -sign`), Kong's order of checks with its
messages, status and WWW-Authenticate, the consumer headers upstream (and a
client's own copies removed), anonymous, realm, run_on_preflight, token
sources (query, cookie, custom header), several tokens, claims_to_verify and
maximum_expiration, the attack tokens, and the verified-token cache."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.path.join(SRCDIR, "tests", "unit", "data", "tls")
ALICE_ID = "6f1c4b2e-2a55-4a1e-9d7b-1a2b3c4d5e01"
ANON_ID = "6f1c4b2e-2a55-4a1e-9d7b-1a2b3c4d5e09"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der, size):
    # SEQUENCE { INTEGER r, INTEGER s }
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(size, b"\x00")
        i += 2 + n
    return out


def token(claims, alg="HS256", key=b"s3cret", header=None):
    hd = header if header is not None else {"typ": "JWT", "alg": alg}
    signing = b64(json.dumps(hd).encode()) + "." + b64(json.dumps(claims).encode())
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
                  "HS512": hashlib.sha512}[alg]
        sig = hmac.new(key, signing.encode(), digest).digest()
    else:
        sig = subprocess.run(["openssl", "dgst", "-sha" + alg[2:], "-sign", key],
                             input=signing.encode(), capture_output=True, check=True).stdout
        if alg.startswith("ES"):
            sig = der_to_raw(sig, 32)
    return signing + "." + b64(sig)


def pem(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def rsa_jwk(kid):
    out = subprocess.run(["openssl", "rsa", "-pubin", "-in", os.path.join(DATA, "rsa.pub"),
                          "-noout", "-modulus"], capture_output=True, text=True, check=True).stdout
    n = bytes.fromhex(out.strip().split("=", 1)[1])
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(n),
            "e": b64((65537).to_bytes(3, "big"))}


class JwksServer:
    """Serves .doc (a dict) as /jwks.json; counts the fetches."""

    def __init__(self):
        self.doc = {"keys": []}
        self.fetches = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body_ = json.dumps(outer.doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body_)))
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *a):
                pass
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        h.register_cleanup(self.srv.shutdown)


def config(port, up_port, jwks_port=None):
    url = "http://127.0.0.1:%d" % up_port

    def route(name, cfg=None, plugin=True):
        r = {"name": name, "paths": ["/" + name]}
        if plugin:
            r["plugins"] = [{"name": "jwt", "config": cfg} if cfg else {"name": "jwt"}]
        return r
    return {
        "_format_version": "3.0",
        "gateway": {"proxy_listen": ["127.0.0.1:%d" % port], "status_listen": "off",
                    "worker_processes": 2},
        "consumers": [
            {"id": ALICE_ID, "username": "alice", "custom_id": "A-1",
             "jwt_secrets": [{"key": "alice-iss", "secret": "s3cret"}]},
            {"username": "bob",
             "jwt_secrets": [{"key": "bob-iss", "algorithm": "RS256",
                              "rsa_public_key": pem("rsa.pub")}]},
            {"username": "carol",
             "jwt_secrets": [{"key": "carol-iss", "algorithm": "ES256",
                              "rsa_public_key": pem("ec.pub")}]},
            {"id": ANON_ID, "username": "nobody"},
            {"username": "carl",
             "jwt_secrets": [{"key": "jwks-iss", "algorithm": "RS256"}]},
        ],
        "services": [{"name": "s", "url": url, "routes": [
            route("hs"),
            route("claims", {"claims_to_verify": ["exp", "nbf"], "maximum_expiration": 3600}),
            route("anon", {"anonymous": "nobody"}),
            route("realm", {"realm": "sluice", "run_on_preflight": False}),
            route("sources", {"cookie_names": ["jwt_cookie"], "uri_param_names": ["token"],
                              "header_names": ["x-token"]}),
            route("open", plugin=False),
            route("jwks", {"jwks_url": "http://127.0.0.1:%d/jwks.json" % (jwks_port or 1),
                           "jwks_refresh_interval": 1}),
        ]}],
    }


def body(t):
    up = Upstream().start()
    jwks = JwksServer()
    jwks.doc = {"keys": [rsa_jwk("r1")]}
    port = h.free_port()
    gw = h.Gateway(config(port, up.port, jwks.port), port=port)
    gw.start()
    now = int(time.time())

    def call(path, tok=None, headers=None, method="GET"):
        up.clear()
        hs = dict(headers or {})
        if tok is not None:
            hs["Authorization"] = "Bearer " + tok
        r = h.get(port, path, headers=hs, method=method)
        recs = up.requests()
        return r, (recs[-1] if recs else None)

    def refused(desc, path, tok, message, www='Bearer error="invalid_token"', headers=None):
        r, rec = call(path, tok, headers)
        got = r.body.decode(errors="replace")
        want = message if message.startswith("{") else json.dumps({"message": message},
                                                                  separators=(",", ":"))
        t.ok(r.status == 401 and got == want and r.header("WWW-Authenticate") == www and
             r.header("Content-Type") == "application/json; charset=utf-8" and rec is None,
             "%s: 401 %s" % (desc, want),
             "got %d %s www=%r ct=%r upstream=%r" % (r.status, got, r.header("WWW-Authenticate"),
                                                     r.header("Content-Type"), rec))

    alice = token({"iss": "alice-iss", "sub": "1"})

    def t_success():
        r, rec = call("/hs/x", alice, {"X-Consumer-ID": "evil", "X-Anonymous-Consumer": "true",
                                       "X-Credential-Identifier": "forged"})
        t.eq(r.status, 200, "HS256 token: proxied")
        if rec:
            t.eq(rec.headers_all("X-Consumer-ID"), [ALICE_ID],
                 "X-Consumer-ID is the consumer's id (the client's copy is gone)")
            t.eq(rec.header("X-Consumer-Username"), "alice", "X-Consumer-Username")
            t.eq(rec.header("X-Consumer-Custom-ID"), "A-1", "X-Consumer-Custom-ID")
            t.eq(rec.headers_all("X-Credential-Identifier"), ["alice-iss"],
                 "X-Credential-Identifier is the jwt key")
            t.eq(rec.header("X-Anonymous-Consumer"), None, "no X-Anonymous-Consumer")
            t.ok(rec.header("Authorization", "").startswith("Bearer "),
                 "the token itself goes upstream (Kong)")
        r, rec = call("/hs/x", token({"iss": "bob-iss"}, "RS256", os.path.join(DATA, "rsa.key")))
        t.eq(r.status, 200, "RS256 token: proxied")
        gen = rec.header("X-Consumer-ID") if rec else None
        t.ok(gen and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                  r"[0-9a-f]{12}", gen),
             "a consumer without id gets a generated (v5) UUID", repr(gen))
        t.eq(rec and rec.header("X-Consumer-Custom-ID"), None,
             "X-Consumer-Custom-ID absent when the consumer has none")
        r, rec = call("/hs/x", token({"iss": "carol-iss"}, "ES256", os.path.join(DATA, "ec.key")))
        t.ok(r.status == 200 and rec and rec.header("X-Consumer-Username") == "carol",
             "ES256 token: proxied as carol")

    def t_kong_messages():
        refused("no token", "/hs/x", None, "Unauthorized", www="Bearer")
        refused("not base64/JSON", "/hs/x", "abc.def.ghi", "Bad token; invalid JSON")
        refused("alg none", "/hs/x", token({"iss": "alice-iss"}, header={"alg": "none"}),
                "Bad token; invalid alg")
        for alg in ("None", "NONE", "nOnE", "hs256"):
            refused("alg %s" % alg, "/hs/x", token({"iss": "alice-iss"}, header={"alg": alg}),
                    "Bad token; invalid alg")
        # RFC 7515 4.1.11: sluice implements no extension, so any crit is
        # refused, correctly signed or not, whatever its shape
        for desc, hd in (
                ("crit naming an extension present", {"alg": "HS256", "crit": ["x"], "x": 1}),
                ("crit naming a registered parameter", {"alg": "HS256", "crit": ["exp"],
                                                        "exp": 1}),
                ("crit empty", {"alg": "HS256", "crit": []}),
                ("crit not an array", {"alg": "HS256", "crit": "x", "x": 1}),
                ("crit naming an absent parameter", {"alg": "HS256", "crit": ["y"]})):
            refused(desc, "/hs/x", token({"iss": "alice-iss"}, header=hd),
                    "Bad token; invalid crit")
        nosig = alice.rsplit(".", 1)[0] + "."
        refused("empty signature", "/hs/x", nosig, "Bad token; invalid signature")
        refused("padded signature", "/hs/x", alice + "=", "Bad token; invalid signature")
        refused("no iss", "/hs/x", token({"sub": "x"}), "No mandatory 'iss' in claims")
        refused("empty iss", "/hs/x", token({"iss": ""}), "Invalid 'iss' in claims")
        refused("unknown iss", "/hs/x", token({"iss": "mallory"}),
                "No credentials found for given 'iss'")
        refused("RS256 credential, HS256 token signed with the public key (confusion)", "/hs/x",
                token({"iss": "bob-iss"}, "HS256", pem("rsa.pub").encode()), "Invalid algorithm")
        refused("wrong secret", "/hs/x", token({"iss": "alice-iss"}, key=b"guess"),
                "Invalid signature")
        for kid in ("../../../../etc/passwd", "' OR '1'='1"):
            refused("kid %r changes nothing" % kid, "/hs/x",
                    token({"iss": "alice-iss"}, key=b"guess",
                          header={"alg": "HS256", "kid": kid}), "Invalid signature")
        big = token({"iss": "alice-iss", "pad": "x" * 20000})
        refused("a 20 KB token", "/hs/x", big, "Bad token; invalid JSON")
        r, rec = call("/hs/x?jwt=" + alice, token({"iss": "alice-iss", "n": 2}))
        t.ok(r.status == 401 and b"Multiple tokens provided" in r.body,
             "two different tokens: Multiple tokens provided", repr(r.body))
        r, rec = call("/hs/x?jwt=" + alice, alice)
        t.eq(r.status, 200, "the same token twice (query and header): one token")

    def t_claims():
        nbf = now - 100
        refused("expired", "/claims/x", token({"iss": "alice-iss", "exp": now - 10, "nbf": nbf}),
                '{"exp":"token expired"}')
        refused("exp as a string", "/claims/x",
                token({"iss": "alice-iss", "exp": str(now + 60), "nbf": nbf}),
                '{"exp":"must be a number"}')
        refused("exp as a float", "/claims/x",
                token({"iss": "alice-iss", "exp": now + 60.5, "nbf": nbf}),
                '{"exp":"must be a number"}')
        refused("exp 1e300", "/claims/x",
                _raw_token('{"iss":"alice-iss","exp":1e300,"nbf":%d}' % nbf),
                '{"exp":"must be a number"}')
        refused("nbf in the future", "/claims/x",
                token({"iss": "alice-iss", "exp": now + 60, "nbf": now + 600}),
                '{"nbf":"token not valid yet"}')
        refused("no nbf while nbf is verified", "/claims/x",
                token({"iss": "alice-iss", "exp": now + 60}), '{"nbf":"must be a number"}')
        refused("exp beyond maximum_expiration", "/claims/x",
                token({"iss": "alice-iss", "exp": now + 7200, "nbf": nbf}),
                '{"exp":"exceeds maximum allowed expiration"}')
        r, _ = call("/claims/x", token({"iss": "alice-iss", "exp": now + 600, "nbf": nbf}))
        t.eq(r.status, 200, "exp and nbf within bounds: proxied")
        r, _ = call("/hs/x", token({"iss": "alice-iss", "exp": now - 10}))
        t.eq(r.status, 200, "exp not in claims_to_verify: not checked (Kong)")

    def _raw_token(claims_json):
        signing = b64(b'{"alg":"HS256"}') + "." + b64(claims_json.encode())
        return signing + "." + b64(hmac.new(b"s3cret", signing.encode(),
                                            hashlib.sha256).digest())

    def t_anonymous_realm_preflight():
        r, rec = call("/anon/x", None, {"X-Credential-Identifier": "forged"})
        t.ok(r.status == 200 and rec and rec.header("X-Anonymous-Consumer") == "true" and
             rec.header("X-Consumer-ID") == ANON_ID and
             rec.header("X-Credential-Identifier") is None,
             "anonymous: no token proxies as the anonymous consumer", repr(rec))
        r, rec = call("/anon/x", token({"iss": "alice-iss"}, key=b"bad"))
        t.ok(r.status == 200 and rec and rec.header("X-Anonymous-Consumer") == "true",
             "anonymous: a bad token also falls back to anonymous")
        r, rec = call("/anon/x", alice)
        t.ok(rec and rec.header("X-Consumer-ID") == ALICE_ID and
             rec.header("X-Anonymous-Consumer") is None, "anonymous: a good token is alice")
        refused("realm, no token", "/realm/x", None, "Unauthorized", www='Bearer realm="sluice"')
        refused("realm, bad token", "/realm/x", "x.y.z", "Bad token; invalid JSON",
                www='Bearer realm="sluice" error="invalid_token"')
        r, rec = call("/realm/x", None, {"X-Consumer-ID": "evil"}, method="OPTIONS")
        t.ok(r.status == 200 and rec and rec.header("X-Consumer-ID") is None,
             "run_on_preflight false: OPTIONS passes without a token, forged headers removed")
        r, _ = call("/hs/x", None, method="OPTIONS")
        t.eq(r.status, 401, "run_on_preflight true (default): OPTIONS needs a token")

    def t_sources():
        r, _ = call("/sources/x", None, {"Cookie": "a=1; jwt_cookie=" + alice + "; b=2"})
        t.eq(r.status, 200, "token from a cookie (cookie_names)")
        r, _ = call("/sources/x?token=" + alice)
        t.eq(r.status, 200, "token from a query parameter (uri_param_names)")
        r, _ = call("/sources/x", None, {"X-Token": "bearer " + alice})
        t.eq(r.status, 200, "token from a custom header (header_names), lower-case bearer")
        r, _ = call("/sources/x", alice)
        t.eq(r.status, 401, "Authorization is not among this instance's header_names")
        r, _ = call("/sources/x?jwt=" + alice)
        t.eq(r.status, 401, "nor is the default 'jwt' query parameter")

    def t_scope():
        r, rec = call("/open/x", None, {"X-Consumer-ID": "client-set"})
        t.ok(r.status == 200 and rec and rec.header("X-Consumer-ID") == "client-set",
             "a route without an auth plugin passes headers untouched")

    def t_cache():
        rs = token({"iss": "bob-iss", "exp": now + 300}, "RS256", os.path.join(DATA, "rsa.key"))
        statuses = [call("/hs/x", rs)[0].status for _ in range(6)]
        t.eq(statuses, [200] * 6, "a repeated RS256 token (verified once, then cached)")
        forged = rs.rsplit(".", 1)[0] + "." + b64(b"\x00" * 256)
        r, _ = call("/hs/x", forged)
        t.eq(r.status, 401, "the cache keys on the whole token: a forged signature is checked")
        tampered = token({"iss": "bob-iss", "exp": now + 300, "admin": True}, "RS256",
                         os.path.join(DATA, "rsa.key")).rsplit(".", 1)[0] + "." + \
            rs.rsplit(".", 1)[1]
        r, _ = call("/hs/x", tampered)
        t.eq(r.status, 401, "other claims under a cached token's signature: refused")

    def t_jwks():
        key = os.path.join(DATA, "rsa.key")
        r, rec = call("/jwks/x", token({"iss": "jwks-iss"}, "RS256", key,
                                       header={"alg": "RS256", "kid": "r1"}))
        t.ok(r.status == 200 and rec and rec.header("X-Consumer-Username") == "carl",
             "jwks_url: an RS256 token verified with the JWKS key its kid names",
             repr((r.status, r.body)))
        refused("jwks_url: an unknown kid (the credential has no key of its own)", "/jwks/x",
                token({"iss": "jwks-iss"}, "RS256", key, header={"alg": "RS256", "kid": "zz"}),
                "Invalid key/secret")
        refused("a keyless credential on an instance without jwks_url", "/hs/x",
                token({"iss": "jwks-iss"}, "RS256", key, header={"alg": "RS256", "kid": "r1"}),
                "Invalid key/secret")
        # rotation: the set now names the key r2; the fetcher picks it up
        jwks.doc = {"keys": [rsa_jwk("r2")]}
        deadline = time.time() + 8
        ok = False
        while time.time() < deadline and not ok:
            time.sleep(0.3)
            r, _ = call("/jwks/x", token({"iss": "jwks-iss", "n": time.time()}, "RS256", key,
                                         header={"alg": "RS256", "kid": "r2"}))
            ok = r.status == 200
        t.ok(ok, "jwks_url: a rotated key is picked up by the refresh (every 1 s here)")
        refused("jwks_url: the key that left the set no longer verifies", "/jwks/x",
                token({"iss": "jwks-iss", "n": "fresh"}, "RS256", key,
                      header={"alg": "RS256", "kid": "r1"}), "Invalid key/secret")
        t.ok(jwks.fetches >= 2, "fetched at load and refreshed (%d fetches)" % jwks.fetches)

    t.run(t_success)
    t.run(t_jwks)
    t.run(t_kong_messages)
    t.run(t_claims)
    t.run(t_anonymous_realm_preflight)
    t.run(t_sources)
    t.run(t_scope)
    t.run(t_cache)

    # a credential whose key cannot verify anything is a configuration error
    bad = config(h.free_port(), up.port)
    bad["consumers"][0]["jwt_secrets"][0]["secret"] = "not base64 !"
    bad["services"][0]["routes"][0]["plugins"][0] = {"name": "jwt",
                                                    "config": {"secret_is_base64": True}}
    d = tempfile.mkdtemp(prefix="sluice-jwt-")
    path = os.path.join(d, "bad.yaml")
    with open(path, "w") as f:
        f.write(h.to_yaml(bad))
    p = subprocess.run([h.sluice_bin(), "-t", "-c", path], capture_output=True, text=True,
                       timeout=20)
    t.ok(p.returncode != 0 and "jwt_secret 'alice-iss'" in p.stderr and
         re.search(r"bad\.yaml:\d+:\d+: plugin 'jwt'", p.stderr),
         "-t: an unusable secret is refused with file:line:column", p.stderr)
    gw.stop()
    gw.check_clean(t)
    up.stop()


if __name__ == "__main__":
    h.main(body, timeout=110)
