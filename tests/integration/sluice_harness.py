"""Integration-test harness for sluice (Python 3 standard library only).

Pieces:
  TAP          -- a tiny TAP producer: t.ok(cond, desc, diag), t.run(fn), t.done()
  main(body)   -- runs a whole script: watchdog, crash reporting, cleanup, plan
  free_port()  -- a free TCP port on 127.0.0.1
  Gateway      -- writes a YAML config, runs $SLUICE_BIN -c FILE, waits for the
                  proxy port, stops it (by pid) and scans stderr for sanitizer
                  reports
  Conn         -- a raw client connection with a strict HTTP/1.1 response reader
                  (Content-Length, chunked, until-close, HEAD/1xx/204/304)
  send_raw()   -- one-shot: send bytes, read one response, see if the gateway
                  closes the connection

Everything targets 127.0.0.1 only. Every process started here is recorded and
killed at exit (atexit + the watchdog), and every socket operation is bounded
by a timeout.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

LOOPBACK = "127.0.0.1"
SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                      "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")

_print_lock = threading.RLock()
_gateways = []      # every Gateway ever started (for cleanup)
_cleanups = []      # callables run at exit (upstream.stop, ...)


# ---------------------------------------------------------------------------
# TAP
# ---------------------------------------------------------------------------
class TAP:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.finished = False

    def _emit(self, line):
        with _print_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def diag(self, text):
        if text is None:
            return
        with _print_lock:
            for line in str(text).splitlines() or [""]:
                self._emit("# " + line)

    def ok(self, cond, desc, diag=None):
        with _print_lock:
            if self.finished:
                return bool(cond)
            self.n += 1
            desc = desc.replace("#", "\\#").replace("\n", " ")
            if cond:
                self._emit("ok %d - %s" % (self.n, desc))
            else:
                self.failed += 1
                self._emit("not ok %d - %s" % (self.n, desc))
                if diag is not None:
                    self.diag(diag)
        return bool(cond)

    def skip(self, desc, reason):
        with _print_lock:
            if not self.finished:
                self.n += 1
                self._emit("ok %d - %s # SKIP %s" % (self.n, desc.replace("#", "\\#"), reason))

    def eq(self, got, want, desc, diag=None):
        d = "got:  %r\nwant: %r" % (got, want)
        if diag:
            d += "\n" + str(diag)
        return self.ok(got == want, desc, d)

    def run(self, fn, *args, **kw):
        """Run one test function; an exception becomes a failing point."""
        name = getattr(fn, "__name__", "test")
        try:
            return fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - report everything
            self.ok(False, "%s completed without exception (%s: %s)"
                    % (name, type(exc).__name__, str(exc)[:200]),
                    traceback.format_exc())
            return None

    def done(self):
        with _print_lock:
            if not self.finished:
                self.finished = True
                self._emit("1..%d" % self.n)


def main(body, timeout=100):
    """Run body(t) as a whole TAP script, bounded by `timeout` seconds.

    Whatever happens (exception, hang, gateway crash) the script prints a
    valid TAP stream, stops every process it started and exits 0. The
    watchdog fires at `timeout` and only SIGKILLs what is left, so the whole
    script ends a few seconds after that at the latest.
    """
    t = TAP()
    main_ident = threading.get_ident()

    def watchdog():
        with _print_lock:
            frame = sys._current_frames().get(main_ident)
            t.ok(False, "script finished within %d s (watchdog fired)" % timeout,
                 "stack of the main thread:\n" + "".join(traceback.format_stack(frame)))
            for gw in list(_gateways):
                if not gw.reported:
                    gw.kill()
                    gw.check_clean(t)
            _cleanup_all()
            t.done()
            sys.stdout.flush()
            os._exit(0)

    def on_term(signum, frame):
        # killed from outside (make interrupted): still stop what we started
        with _print_lock:
            t._emit("Bail out! test script got signal %d" % signum)
            for gw in list(_gateways):
                gw.kill()
            _cleanup_all()
            sys.stdout.flush()
            os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        t.run(body, t)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit...
        t.ok(False, "script body completed (%s)" % type(exc).__name__,
             traceback.format_exc())
    finally:
        try:
            _report_gateways(t)
        except Exception:  # noqa: BLE001
            t.ok(False, "gateway shutdown check", traceback.format_exc())
        timer.cancel()
        _cleanup_all()
        t.done()
    sys.stdout.flush()
    os._exit(0)


def _report_gateways(t):
    for gw in list(_gateways):
        if not gw.reported:
            gw.stop(timeout=8)
            gw.check_clean(t)


def _cleanup_all():
    for gw in list(_gateways):
        gw.kill()
    for fn in list(_cleanups):
        try:
            fn()
        except Exception:  # noqa: BLE001
            pass
    del _cleanups[:]


def register_cleanup(fn):
    _cleanups.append(fn)


atexit.register(_cleanup_all)


# ---------------------------------------------------------------------------
# Ports, binaries, YAML
# ---------------------------------------------------------------------------
def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def test_gateway_bin():
    """tests/plugins/sluice-gateway-test: the gateway with the test-only
    plugins (built by make check next to the real one)."""
    build = os.environ.get("SLUICE_BUILDDIR")
    if not build:
        build = os.path.join(os.path.dirname(sluice_bin()), "..")
    return os.path.join(build, "tests", "plugins", "sluice-gateway-test")


def use_test_gateway(t):
    """Point SLUICE_BIN (and so sluice_bin()) at the test gateway for this
    script. When it is not built, report a failed point and return False."""
    binary = test_gateway_bin()
    if not os.path.exists(binary):
        t.ok(False, "the test gateway exists at %s (make check builds it)" % binary)
        return False
    os.environ["SLUICE_BIN"] = binary
    return True


def sluice_bin():
    b = os.environ.get("SLUICE_BIN")
    if not b:
        here = os.path.dirname(os.path.abspath(__file__))
        for cand in (os.path.join(here, "..", "..", "build", "gateway", "sluice-gateway"),
                     os.path.join(here, "..", "..", "gateway", "sluice-gateway")):
            if os.path.exists(cand):
                b = os.path.abspath(cand)
                break
    if not b:
        raise RuntimeError("SLUICE_BIN is not set and no sluice-gateway binary was found")
    return b


def _yaml_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts/lists/scalars (keys emitted in order)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v and any(isinstance(i, (dict, list)) for i in v):
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                out.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(i) for i in v)))
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 2).split("\n")
                out.append("%s- %s" % (pad, sub[0].lstrip()))
                out.extend(sub[1:])
            else:
                out.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        out.append(pad + _yaml_scalar(obj))
    return "\n".join(out)


def make_config(port, services, **node):
    """A declarative config dict: the gateway node block + services."""
    gw = {
        "proxy_listen": ["%s:%d" % (LOOPBACK, port)],
        "status_listen": "off",
        "worker_processes": 2,
    }
    gw.update(node)
    return {"_format_version": "3.0", "gateway": gw, "services": services}


def upstream_entity(name, targets, **kw):
    """A Kong upstream entity; targets: [(Upstream or port, weight)]."""
    u = {"name": name}
    u.update(kw)
    u["targets"] = [{"target": "%s:%d" % (LOOPBACK, up if isinstance(up, int) else up.port),
                     "weight": w} for up, w in targets]
    return u


def service(name, upstream_port, path="/base", routes=None, **kw):
    s = {"name": name, "url": "http://%s:%d%s" % (LOOPBACK, upstream_port, path or "")}
    s.update(kw)
    s["routes"] = routes or []
    return s


# ---------------------------------------------------------------------------
# Gateway process
# ---------------------------------------------------------------------------
class GatewayError(Exception):
    pass


def _die_with_parent():
    """In the child before exec: get SIGKILL if the test process dies, even
    by SIGKILL (Linux prctl PR_SET_PDEATHSIG; ignored elsewhere). Gateways
    are started from the main thread, which lives as long as the script."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001
        pass


class Gateway:
    """One sluice-gateway process.

    Gateway(config_dict_or_yaml_text, env={...}, port=N).start()
    `port` defaults to the first proxy_listen entry of the config dict.
    """

    role = "gateway"
    listen_key = "proxy_listen"

    def binary(self):
        return sluice_bin()

    def __init__(self, config, env=None, port=None, name=None, args=None, nofile=None):
        name = name or self.role
        self.nofile = nofile  # RLIMIT_NOFILE for the gateway process, when set
        self.config = config
        self.env_over = dict(env or {})
        self.name = name
        self.args = list(args or [])
        self.proc = None
        self.rc = None
        self.killed = False
        self.reported = False
        self.ok_codes = (0,)
        self.stop_sig = None
        self.stop_elapsed = None
        self.dir = tempfile.mkdtemp(prefix="sluice-it-")
        register_cleanup(lambda d=self.dir: shutil.rmtree(d, ignore_errors=True))
        self.conf_path = os.path.join(self.dir, "sluice.yaml")
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        if port is None and isinstance(config, dict):
            listen = config.get(self.role, {}).get(self.listen_key, [])
            if isinstance(listen, str):
                listen = [listen]
            if listen:
                port = int(str(listen[0]).split()[0].rsplit(":", 1)[1])
        self.port = port

    # -- lifecycle ---------------------------------------------------------
    def write_config(self, config):
        """Replace the config file (for a reload): a dict or YAML text."""
        self.config = config
        text = config if isinstance(config, str) else to_yaml(config) + "\n"
        with open(self.conf_path, "w") as f:
            f.write(text)

    def start(self, wait=10.0):
        text = self.config if isinstance(self.config, str) else to_yaml(self.config) + "\n"
        with open(self.conf_path, "w") as f:
            f.write(text)
        env = dict(os.environ)
        env.update(self.env_over)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([self.binary()] + self.args + ["-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=env, close_fds=True,
                                     preexec_fn=self._preexec)
        _gateways.append(self)
        if self.port is None:
            return self
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.rc = self.proc.returncode
                raise GatewayError("%s exited (rc=%s) before listening on %d\n%s"
                                   % (self.name, self.rc, self.port, self.stderr_tail()))
            try:
                s = socket.create_connection((LOOPBACK, self.port), timeout=0.5)
                s.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise GatewayError("%s did not listen on %d within %.0f s\n%s"
                           % (self.name, self.port, wait, self.stderr_tail()))

    def _preexec(self):
        _die_with_parent()
        if self.nofile:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Wait for exit; returns rc or None on timeout."""
        if self.proc is None:
            return None
        try:
            self.rc = self.proc.wait(timeout=timeout)
            return self.rc
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=15.0, ok_codes=(0,)):
        """Signal the gateway and wait for it; SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.stop_sig is None:
            self.stop_sig = sig
            self.ok_codes = ok_codes
        if self.proc.poll() is None:
            t0 = time.monotonic()
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            rc = self.wait(timeout)
            self.stop_elapsed = time.monotonic() - t0
            if rc is None:
                self.kill()
        self.rc = self.proc.returncode
        self._close_files()
        return self.rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            try:
                if f:
                    f.close()
            except OSError:
                pass

    # -- output ----------------------------------------------------------------
    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=25):
        lines = self.stderr().splitlines()
        return "stderr of %s (last %d lines):\n%s" % (self.name, min(n, len(lines)),
                                                       "\n".join(lines[-n:]))

    def sanitizer_reports(self):
        found = []
        for line in self.stderr().splitlines():
            if any(p in line for p in SANITIZER_PATTERNS):
                found.append(line)
        return found

    def check_clean(self, t):
        """One test point: exit status acceptable and no sanitizer report."""
        self.reported = True
        if self.proc is None:
            return
        reports = self.sanitizer_reports()
        rc = self.proc.returncode
        good = (not self.killed) and rc in self.ok_codes and not reports
        why = []
        if self.killed:
            why.append("had to be SIGKILLed (did not exit after %s)"
                       % (signal.Signals(self.stop_sig).name if self.stop_sig else "signal"))
        if rc not in self.ok_codes:
            why.append("exit status %r, expected one of %r" % (rc, self.ok_codes))
        if reports:
            why.append("sanitizer reports:\n" + "\n".join(reports[:20]))
        t.ok(good, "%s exited cleanly without sanitizer reports" % self.name,
             "\n".join(why) + "\n" + self.stderr_tail() if not good else None)


def sidecar_bin():
    b = os.environ.get("SLUICE_SIDECAR_BIN")
    if b:
        return b
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sluice_bin()))),
                        "sidecar", "sluice-sidecar")


class Sidecar(Gateway):
    """One sluice-sidecar process; `port` defaults to inbound_listen."""
    role = "sidecar"
    listen_key = "inbound_listen"

    def binary(self):
        return sidecar_bin()


def make_sidecar_config(service_name, inbound_port, app_port, services=(), outbound_port=None,
                        status_port=None, **node):
    """A declarative config dict with a sidecar node block."""
    sc = {
        "service_name": service_name,
        "inbound_listen": "%s:%d" % (LOOPBACK, inbound_port),
        "app_url": "http://%s:%d" % (LOOPBACK, app_port),
        "outbound_listen": "%s:%d" % (LOOPBACK, outbound_port) if outbound_port else "off",
        "status_listen": "%s:%d" % (LOOPBACK, status_port) if status_port else "off",
    }
    sc.update(node)
    return {"_format_version": "3.0", "sidecar": sc, "services": list(services)}


def scrape(port, path="/metrics"):
    """The text of GET /metrics on a status port."""
    r = get(port, path)
    if r.status != 200:
        raise ProtocolError("GET %s answered %s" % (path, r.status))
    return r.body.decode()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a Prometheus text scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def metric(parsed, name, **labels):
    """The value of the series `name` with exactly these labels (None when absent)."""
    return parsed.get((name, frozenset(labels.items())))


def metric_sum(parsed, name, **labels):
    """The sum of every series of `name` whose labels include these."""
    want = set(labels.items())
    return sum(v for (n, ls), v in parsed.items() if n == name and want <= set(ls))


def promtool_check(t, text, desc):
    """One test point: `promtool check metrics` accepts the scrape."""
    promtool = shutil.which("promtool")
    if promtool is None:
        t.ok(False, desc, "promtool is not installed (Debian package prometheus; ./dev test "
             "installs it)")
        return
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    t.ok(p.returncode == 0, desc, p.stdout + p.stderr)


# ---------------------------------------------------------------------------
# Raw HTTP client
# ---------------------------------------------------------------------------
class ProtocolError(Exception):
    pass


class Timeout(Exception):
    pass


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []
        self.trailers = []
        self.body = b""
        self.framing = None   # "cl", "chunked", "close", "none"
        self.raw_head = b""

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def headers_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def is_json(self):
        ct = (self.header("content-type") or "").lower()
        return ct.startswith("application/json")

    def __repr__(self):
        return "<Response %s %s framing=%s body=%d bytes headers=%r>" % (
            self.status, self.reason, self.framing, len(self.body), self.headers)


class Conn:
    """A client connection to 127.0.0.1:port with a buffered reader."""

    def __init__(self, port, timeout=5.0, connect_timeout=3.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((LOOPBACK, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.reset = False
        self.deadline = None

    @classmethod
    def from_socket(cls, sock, port, timeout=5.0):
        """Wrap an already connected socket (e.g. one with special options)."""
        c = cls.__new__(cls)
        c.port, c.timeout, c.sock = port, timeout, sock
        c.buf, c.eof, c.reset, c.deadline = b"", False, False, None
        return c

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """send; returns False when the peer already closed/reset."""
        try:
            self.send(data)
            return True
        except OSError:
            return False

    # -- low-level reading -----------------------------------------------------
    def _fill(self):
        if self.eof:
            return False
        remaining = (self.deadline - time.monotonic()) if self.deadline else self.timeout
        if remaining <= 0:
            raise Timeout("timed out reading from port %d" % self.port)
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise Timeout("timed out reading from port %d" % self.port)
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, limit=65536, strict=True):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[:i + 1]
                self.buf = self.buf[i + 1:]
                if not line.endswith(b"\r\n"):
                    if strict:
                        raise ProtocolError("line not terminated by CRLF: %r" % line[:200])
                    return line[:-1]
                return line[:-2]
            if len(self.buf) > limit:
                raise ProtocolError("line longer than %d bytes" % limit)
            if not self._fill():
                raise ProtocolError("connection closed in the middle of a line (got %r)"
                                    % self.buf[:200])

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ProtocolError("connection closed after %d of %d bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    # -- responses ---------------------------------------------------------------
    def read_head(self, timeout=None):
        """Read a status line + headers. Returns None if the peer closed first."""
        self.deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.buf:
            if not self._fill():
                return None
        r = Response()
        line = self._read_line()
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            raise ProtocolError("bad status line: %r" % line[:200])
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        raw = [line]
        while True:
            line = self._read_line()
            raw.append(line)
            if line == b"":
                break
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError("obs-fold in response header: %r" % line)
            k, sep, v = line.partition(b":")
            if not sep or not re.match(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", k):
                raise ProtocolError("bad response header line: %r" % line)
            r.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        r.raw_head = b"\r\n".join(raw) + b"\r\n"
        return r

    def iter_body(self, r, method="GET", timeout=None):
        """Yield the decoded body of `r` piece by piece as it arrives."""
        if timeout is not None:
            self.deadline = time.monotonic() + timeout
        te = r.header("transfer-encoding")
        cl = r.headers_all("content-length")
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            r.framing = "none"
            return
        if te is not None:
            if te.strip().lower() != "chunked":
                raise ProtocolError("response Transfer-Encoding %r" % te)
            if cl:
                raise ProtocolError("response has both Content-Length and Transfer-Encoding")
            r.framing = "chunked"
            while True:
                line = self._read_line()
                size_s = line.split(b";", 1)[0]
                if not re.match(rb"^[0-9A-Fa-f]{1,16}$", size_s):
                    raise ProtocolError("bad chunk size line %r" % line)
                size = int(size_s, 16)
                if size == 0:
                    while True:
                        tl = self._read_line()
                        if tl == b"":
                            return
                        k, _, v = tl.partition(b":")
                        r.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                remaining = size
                while remaining:
                    if not self.buf and not self._fill():
                        raise ProtocolError("connection closed inside a chunk")
                    piece = self.buf[:remaining]
                    self.buf = self.buf[len(piece):]
                    remaining -= len(piece)
                    yield piece
                if self._read_exact(2) != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
        elif cl:
            if len(set(cl)) != 1 or not re.match(r"^\d+$", cl[0]):
                raise ProtocolError("bad response Content-Length %r" % cl)
            remaining = int(cl[0])
            r.framing = "cl"
            while remaining:
                if not self.buf and not self._fill():
                    raise ProtocolError("connection closed with %d body bytes missing" % remaining)
                piece = self.buf[:remaining]
                self.buf = self.buf[len(piece):]
                remaining -= len(piece)
                yield piece
        else:
            r.framing = "close"
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    yield piece
                if not self._fill():
                    return

    def read_response(self, method="GET", timeout=None, skip_interim=True):
        """Read one full response (interim 1xx skipped unless asked).

        Returns None if the connection was closed before any byte arrived.
        Raises Timeout / ProtocolError otherwise."""
        t = timeout if timeout is not None else self.timeout
        while True:
            r = self.read_head(timeout=t)
            if r is None:
                return None
            if skip_interim and 100 <= r.status < 200 and r.status != 101:
                continue
            r.body = b"".join(self.iter_body(r, method=method))
            return r

    def wait_closed(self, timeout=2.0):
        """True if the peer closes (EOF or RST) within timeout. Extra bytes
        received meanwhile are kept in self.buf."""
        self.deadline = time.monotonic() + timeout
        try:
            while self._fill():
                pass
            return True
        except Timeout:
            return False
        except OSError:
            return True

    def request(self, method, path, headers=None, body=b"", host="localhost", version="HTTP/1.1",
                timeout=None):
        """Send a simple request (Content-Length framing when body) and read the response."""
        self.send(build_request(method, path, headers, body, host, version))
        return self.read_response(method=method, timeout=timeout)


def build_request(method, path, headers=None, body=b"", host="localhost", version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s %s" % (method, path, version)]
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hs}
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    lines.extend("%s: %s" % (k, v) for k, v in hs)
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body, sizes=None, trailers=None):
    """Encode body as chunked; sizes: iterable of chunk sizes (cycled)."""
    out = []
    i = 0
    sizes = list(sizes or [max(1, len(body))])
    k = 0
    while i < len(body):
        n = max(1, sizes[k % len(sizes)])
        k += 1
        piece = body[i:i + n]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += n
    out.append(b"0\r\n")
    for name, value in (trailers or []):
        out.append(("%s: %s\r\n" % (name, value)).encode("latin-1"))
    out.append(b"\r\n")
    return b"".join(out)


class Result:
    """Outcome of send_raw()."""

    def __init__(self):
        self.response = None
        self.closed = False
        self.error = None
        self.elapsed = 0.0
        self.extra = b""

    @property
    def status(self):
        return self.response.status if self.response else None

    def __iter__(self):  # status, headers, body, closed
        r = self.response
        return iter((self.status, r.headers if r else [], r.body if r else b"", self.closed))

    def describe(self):
        return "status=%r closed=%r error=%r response=%r extra=%r" % (
            self.status, self.closed, self.error, self.response, self.extra[:200])


def send_raw(port, data, timeout=5.0, close_wait=2.0, method="GET", shut_wr=False):
    """Send raw bytes on a new connection, read one response, then wait up to
    close_wait for the server to close. Returns a Result (iterable as
    (status, headers, body, closed))."""
    res = Result()
    t0 = time.monotonic()
    try:
        c = Conn(port, timeout=timeout)
    except OSError as e:
        res.error = "connect: %s" % e
        res.closed = True
        return res
    try:
        try:
            c.send(data)
            if shut_wr:
                c.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            res.error = "send: %s" % e
        try:
            res.response = c.read_response(method=method, timeout=timeout)
        except (Timeout, ProtocolError, OSError) as e:
            res.error = "%s: %s" % (type(e).__name__, e)
        if res.response is None and c.eof:
            res.closed = True
        elif close_wait:
            res.closed = c.wait_closed(close_wait)
        res.extra = c.buf
    finally:
        c.close()
        res.elapsed = time.monotonic() - t0
    return res


def get(port, path, headers=None, host="localhost", timeout=5.0, method="GET", body=b""):
    """One request on a new connection (Connection: close); returns Response."""
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if not any(k.lower() == "connection" for k, _ in hs):
        hs.append(("Connection", "close"))
    with Conn(port, timeout=timeout) as c:
        return c.request(method, path, hs, body=body, host=host, timeout=timeout)


def try_get(*a, **kw):
    """get() that returns the exception (Timeout, ProtocolError, OSError)
    instead of raising it, for tests that assert on the outcome."""
    try:
        return get(*a, **kw)
    except (Timeout, ProtocolError, OSError) as e:
        return e


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


REQUEST_ID_RE = re.compile(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                           r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
VIA_RE = re.compile(r"^1\.1 sluice(/[^\s,]+)?$")


def check_kong_error(t, r, status, message, desc, plain=False):
    """Assert a Kong-shaped error response: status, content-type, JSON body
    {"message": message, "request_id": non-empty} (or the plain-text form)."""
    if not isinstance(r, Response):
        t.ok(False, desc, "no valid response: %r" % (r if r is not None else "connection closed",))
        return False
    problems = []
    if isinstance(status, (tuple, list)):
        if r.status not in status:
            problems.append("status %r not in %r" % (r.status, status))
    elif r.status != status:
        problems.append("status %r != %r" % (r.status, status))
    ct = (r.header("content-type") or "")
    if plain:
        if ct.lower().startswith("application/json"):
            problems.append("Content-Type is JSON despite Accept: text/plain: %r" % ct)
        text = r.body.decode("utf-8", "replace")
        if message not in text:
            problems.append("message %r not in body %r" % (message, text))
        try:
            json.loads(text)
            problems.append("plain-text body parses as JSON: %r" % text)
        except ValueError:
            pass
        if "request_id" not in text:
            problems.append("no request_id in plain body %r" % text)
    else:
        if ct.replace(" ", "").lower() != "application/json;charset=utf-8":
            problems.append("Content-Type %r != 'application/json; charset=utf-8'" % ct)
        try:
            j = r.json()
            if j.get("message") != message:
                problems.append("message %r != %r" % (j.get("message"), message))
            if not isinstance(j.get("request_id"), str) or not j.get("request_id"):
                problems.append("request_id missing/empty: %r" % (j,))
            elif r.header("x-request-id") and r.header("x-request-id") != j["request_id"]:
                problems.append("request_id %r != X-Request-Id header %r"
                                % (j["request_id"], r.header("x-request-id")))
        except (ValueError, AttributeError) as e:
            problems.append("body is not a JSON object: %r (%s)" % (r.body[:300], e))
    return t.ok(not problems, desc, "\n".join(problems + [repr(r)]) if problems else None)
