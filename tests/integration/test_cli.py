#!/usr/bin/env python3
"""Command line: -t (config check), -V, -h, unknown options, env overrides."""

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

VALID = """\
_format_version: "3.0"
gateway:
  proxy_listen: ["127.0.0.1:%(port)d"]
  status_listen: "off"
  worker_processes: 1
services:
  - name: echo
    url: http://127.0.0.1:%(uport)d/base
    routes:
      - name: r1
        paths: ["/api"]
"""

# the unknown field is on line 8, column 5 ("colour")
UNKNOWN_FIELD = """\
_format_version: "3.0"
gateway:
  proxy_listen: ["127.0.0.1:%(port)d"]
  status_listen: "off"
services:
  - name: echo
    url: http://127.0.0.1:%(uport)d/base
    colour: blue
    routes:
      - name: r1
        paths: ["/api"]
"""

UNKNOWN_NODE_KEY = """\
_format_version: "3.0"
gateway:
  proxy_listen: ["127.0.0.1:%(port)d"]
  no_such_setting: 12
services: []
"""

BROKEN_YAML = """\
_format_version: "3.0"
services:
  - name: echo
    url: [unclosed
"""


def run(args, timeout=5, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([h.sluice_bin()] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=e)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write(dirname, name, text):
    path = os.path.join(dirname, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def body(t):
    d = tempfile.mkdtemp(prefix="sluice-cli-")
    h.register_cleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
    vals = {"port": h.free_port(), "uport": h.free_port()}

    def t_version():
        rc, out, err = run(["-V"])
        t.ok(rc == 0 and "sluice" in out.lower(), "-V exits 0 and prints a version with 'sluice'",
             "rc=%r stdout=%r stderr=%r" % (rc, out[:300], err[:300]))

    def t_help():
        rc, out, err = run(["-h"])
        t.ok(rc == 0 and (out.strip() != ""), "-h exits 0 and prints usage on stdout",
             "rc=%r stdout=%r stderr=%r" % (rc, out[:300], err[:300]))
        t.ok("-c" in out and "-t" in out, "-h usage mentions -c and -t", "stdout=%r" % out[:500])

    def t_unknown_option():
        rc, out, err = run(["--no-such-option"])
        t.ok(rc == 2 and err.strip() != "", "unknown long option: exit 2 with usage on stderr",
             "rc=%r stdout=%r stderr=%r" % (rc, out[:300], err[:300]))
        rc, out, err = run(["-Z"])
        t.ok(rc == 2 and err.strip() != "", "unknown short option -Z: exit 2 with usage on stderr",
             "rc=%r stdout=%r stderr=%r" % (rc, out[:300], err[:300]))

    def t_check_valid():
        path = write(d, "valid.yaml", VALID % vals)
        rc, out, err = run(["-t", "-c", path])
        t.ok(rc == 0, "-t on a valid file exits 0", "rc=%r stdout=%r stderr=%r" % (rc, out, err))

    def t_check_unknown_field():
        path = write(d, "unknown.yaml", UNKNOWN_FIELD % vals)
        rc, out, err = run(["-t", "-c", path])
        t.ok(rc == 1, "-t on a file with an unknown service field exits 1",
             "rc=%r stderr=%r" % (rc, err))
        m = re.search(r"^%s:(\d+):(\d+): \S" % re.escape(path), err, re.M)
        t.ok(m is not None, "-t error is 'FILE:LINE:COLUMN: message' on stderr", "stderr=%r" % err)
        t.ok(m is not None and m.group(1) == "8", "-t error points at the line of the unknown key (8)",
             "stderr=%r" % err)
        t.ok("colour" in err, "-t error names the unknown key", "stderr=%r" % err)

    def t_check_unknown_node_key():
        path = write(d, "node.yaml", UNKNOWN_NODE_KEY % vals)
        rc, out, err = run(["-t", "-c", path])
        ok = rc == 1 and re.search(r"^%s:\d+:\d+: " % re.escape(path), err, re.M)
        t.ok(bool(ok), "-t on an unknown gateway: key exits 1 with FILE:LINE:COLUMN",
             "rc=%r stderr=%r" % (rc, err))

    def t_check_broken_yaml():
        path = write(d, "broken.yaml", BROKEN_YAML)
        rc, out, err = run(["-t", "-c", path])
        ok = rc == 1 and re.search(r"^%s:\d+:\d+: " % re.escape(path), err, re.M)
        t.ok(bool(ok), "-t on malformed YAML exits 1 with FILE:LINE:COLUMN",
             "rc=%r stderr=%r" % (rc, err))

    def t_check_missing_file():
        rc, out, err = run(["-t", "-c", os.path.join(d, "does-not-exist.yaml")])
        t.ok(rc == 1 and err.strip() != "", "-t on a missing file exits 1 with a message",
             "rc=%r stderr=%r" % (rc, err))

    def t_run_invalid_config():
        path = write(d, "unknown2.yaml", UNKNOWN_FIELD % vals)
        try:
            rc, out, err = run(["-c", path], timeout=10)
        except subprocess.TimeoutExpired:
            t.ok(False, "starting with an invalid config fails (exit != 0)",
                 "still running after 10 s")
            return
        t.ok(rc != 0, "starting with an invalid config fails (exit != 0)", "rc=%r stderr=%r" % (rc, err))

    def t_env_override():
        up = Upstream().start()
        cfg_port, env_port = h.free_port(), h.free_port()
        text = VALID % {"port": cfg_port, "uport": up.port}
        gw = h.Gateway(text, port=env_port, name="gateway (env overrides)",
                       env={"SLUICE_PROXY_LISTEN": "127.0.0.1:%d" % env_port,
                            "SLUICE_WORKER_PROCESSES": "1",
                            "SLUICE_CLIENT_MAX_BODY_SIZE": "10"})
        try:
            gw.start()
            t.ok(True, "SLUICE_PROXY_LISTEN overrides proxy_listen (listening on the env port)")
        except h.GatewayError as e:
            t.ok(False, "SLUICE_PROXY_LISTEN overrides proxy_listen (listening on the env port)", str(e))
            gw.stop()
            gw.check_clean(t)
            return
        r = h.get(env_port, "/api/hello")
        rec = up.wait_for("/base/hello")
        t.ok(r is not None and r.status == 200 and rec is not None,
             "request through the env-overridden listener reaches the upstream",
             "response=%r record=%r" % (r, rec))
        r = h.try_get(env_port, "/api/bodylimit", method="POST", body=b"x" * 11)
        t.ok(isinstance(r, h.Response) and r.status == 413 and not up.find("bodylimit"),
             "SLUICE_CLIENT_MAX_BODY_SIZE=10 overrides the default (11-byte body -> 413)", repr(r))
        r = h.try_get(env_port, "/api/bodyok", method="POST", body=b"x" * 10)
        t.ok(isinstance(r, h.Response) and r.status == 200,
             "SLUICE_CLIENT_MAX_BODY_SIZE=10: a 10-byte body passes", repr(r))
        try:
            h.Conn(cfg_port, connect_timeout=1).close()
            listening = True
        except OSError:
            listening = False
        t.ok(not listening, "the port from the file is not used when SLUICE_PROXY_LISTEN is set")
        gw.stop()
        gw.check_clean(t)
        up.stop()

    def t_two_listeners():
        up = Upstream().start()
        p1, p2 = h.free_port(), h.free_port()
        cfg = h.make_config(p1, [h.service("echo", up.port, routes=[{"name": "r", "paths": ["/api"]}])])
        cfg["gateway"]["proxy_listen"] = ["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2]
        gw = h.Gateway(cfg, name="gateway (two listeners)")
        try:
            gw.start()
            ok = h.wait_port(p2, 5)
            r1 = h.try_get(p1, "/api/l1")
            r2 = h.try_get(p2, "/api/l2") if ok else None
            rec2 = up.wait_for("/l2")
            t.ok(isinstance(r1, h.Response) and r1.status == 200 and isinstance(r2, h.Response)
                 and r2.status == 200, "two proxy_listen entries: both ports serve",
                 "%r\n%r" % (r1, r2))
            t.ok(rec2 is not None and rec2.header("X-Forwarded-Port") == str(p2),
                 "X-Forwarded-Port is the port of the listener that accepted",
                 repr(rec2))
        finally:
            gw.stop()
            gw.check_clean(t)
            up.stop()

    def t_port_in_use():
        # SO_REUSEPORT must not let a second gateway (a stale one, say)
        # silently share the port with the first
        up = Upstream().start()
        port = h.free_port()
        cfg = h.make_config(port, [h.service("echo", up.port, routes=[{"name": "r", "paths": ["/"]}])])
        gw = h.Gateway(cfg, name="gateway (port owner)")
        try:
            gw.start()
            path = write(d, "same-port.yaml", h.to_yaml(cfg))
            try:
                rc, out, err = run(["-c", path], timeout=10)
            except subprocess.TimeoutExpired:
                rc, err = None, "still running after 10 s: it shares the port"
            t.ok(rc == 1 and "Address already in use" in err,
                 "a second gateway on a port in use exits 1 with 'Address already in use'",
                 "rc=%r stderr=%r" % (rc, err))
        finally:
            gw.stop()
            gw.check_clean(t)
            up.stop()

    for fn in (t_version, t_help, t_unknown_option, t_check_valid, t_check_unknown_field,
               t_check_unknown_node_key, t_check_broken_yaml, t_check_missing_file,
               t_run_invalid_config, t_env_override, t_two_listeners, t_port_in_use):
        t.run(fn)


if __name__ == "__main__":
    h.main(body, timeout=100)
