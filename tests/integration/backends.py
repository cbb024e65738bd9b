"""Real servers for the integration tests, started on free loopback ports
and stopped by pid: redis-server, a throwaway PostgreSQL cluster (run as
the postgres user when we are root: PostgreSQL refuses to run as root), and
the reference services of services-demo/."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import sluice_harness as h


def _wait_tcp(port, timeout, proc=None, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d within %d s" % (what, port, timeout))


def _stop_proc(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


class Redis:
    def __init__(self, port=None, password=None):
        self.port = port or h.free_port()
        self.password = password
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="sluice-redis-")
        h.register_cleanup(self.stop)
        h.register_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_tcp(self.port, 5, self.proc, "redis-server")
        return self

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--no-raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout

    def stop(self):
        _stop_proc(self.proc, 5)


def postgres_bindir():
    """The newest PostgreSQL server on the machine (Debian: postgresql-NN)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    exe = shutil.which("postgres")
    return os.path.dirname(exe) if exe else None


class Postgres:
    """A throwaway cluster: trust authentication on 127.0.0.1 only, no fsync
    (it is thrown away), its socket in its own data directory."""

    def __init__(self, port=None):
        self.port = port or h.free_port()
        self.bindir = postgres_bindir()
        self.dir = tempfile.mkdtemp(prefix="sluice-pg-")
        self.data = os.path.join(self.dir, "data")
        self.proc = None
        self.uid = self.gid = None
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, self.uid, self.gid)
        h.register_cleanup(self.stop)
        h.register_cleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))

    def _as_owner(self):
        if self.uid is not None:
            os.setgid(self.gid)
            os.setuid(self.uid)
        os.setsid()

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def start(self, databases=()):
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       preexec_fn=self._as_owner, check=True, capture_output=True, timeout=120)
        self._launch()
        for db in databases:
            self.psql("postgres", "CREATE DATABASE %s" % db)
        return self

    def restart(self):
        """Stops the server and starts it again on the same port and data."""
        self.stop()
        self._launch()
        return self

    def _launch(self):
        self.log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
             "-k", self.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            preexec_fn=self._as_owner, stdout=self.log, stderr=subprocess.STDOUT)
        _wait_tcp(self.port, 30, self.proc, "postgres")
        for _ in range(100):  # listening is not yet accepting sessions
            if self.psql("postgres", "SELECT 1", check=False).returncode == 0:
                break
            time.sleep(0.1)

    def psql(self, db, sql, check=True):
        return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", self.url(db), "-c", sql],
                              capture_output=True, text=True, timeout=30, check=check)

    def value(self, db, sql):
        return self.psql(db, sql).stdout.strip()

    def stop(self):
        # SIGINT: PostgreSQL's "fast" shutdown (SIGTERM waits for sessions)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


SERVICE_DB = {"user-service": "users", "order-service": "orders",
              "payment-service": "payments", "notification-service": "notifications"}

_SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def service_bin(name):
    return os.path.join(os.environ.get("SLUICE_BUILDDIR", "build"), "services-demo", name, name)


class Service:
    """One reference service process with its environment."""

    def __init__(self, name, env, port=None):
        self.name = name
        self.port = port or h.free_port()
        self.env = dict(os.environ)
        # order-service honours http_proxy and no_proxy: only a test's own
        # settings count, never the shell's
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
            self.env.pop(name, None)
        self.env.update({"PORT": str(self.port), "LOG_LEVEL": "debug"})
        self.env.update(env)
        self.proc = None
        self.logpath = tempfile.mktemp(prefix="sluice-%s-" % name, suffix=".log")
        self.reported = False
        self.runs = []  # logs of earlier runs, for the sanitizer check
        h.register_cleanup(self.kill)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wait=30):
        self.log = open(self.logpath, "ab")
        argv = [service_bin(self.name)]
        if os.environ.get("SLUICE_SERVICES_VALGRIND"):
            # ./dev test runs one script so: memory errors and leaks make the
            # SIGTERM exit status 99, which the drain checks report
            argv = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
                    "--errors-for-leak-kinds=definite,indirect"] + argv
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=os.setsid)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.name, self.proc.returncode,
                                                                self.log_tail()))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError("%s did not answer /health:\n%s" % (self.name, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM (drain) and the exit status."""
        rc = _stop_proc(self.proc, timeout)
        self.log.close()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self):
        """The JSON log lines (other lines, e.g. sanitizer reports, skipped)."""
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def log_tail(self, n=20):
        return "\n".join(self.logs().splitlines()[-n:])

    def sanitizer_report(self):
        text = self.logs()
        for mark in _SANITIZER_MARKS:
            i = text.find(mark)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None


class System:
    """PostgreSQL with the four databases, Redis, and the four services."""

    def __init__(self, payment_limit=100000, claim_idle_ms=1500, extra_env=None,
                 service_env=None):
        self.pg = Postgres()
        self.redis = Redis()
        self.payment_limit = payment_limit
        self.claim_idle_ms = claim_idle_ms
        self.extra_env = extra_env or {}
        self.service_env = service_env or {}  # {service name: env of that service only}
        self.services = {}

    def start(self):
        self.pg.start(SERVICE_DB.values())
        self.redis.start()
        for name in ("user-service", "order-service", "payment-service", "notification-service"):
            self.services[name] = Service(name, self.env_for(name))
        self.services["order-service"].env["USER_SERVICE_URL"] = self.services["user-service"].url
        for name, env in self.service_env.items():
            self.services[name].env.update(env)
        for s in self.services.values():
            s.start()
        return self

    def env_for(self, name):
        env = {"DB_URL": self.pg.url(SERVICE_DB[name]), "REDIS_URL": self.redis.url,
               "PAYMENT_LIMIT_CENTS": str(self.payment_limit),
               "CLAIM_IDLE_MS": str(self.claim_idle_ms)}
        env.update(self.extra_env)
        return env

    def __getitem__(self, name):
        return self.services[name]

    # every consumer group of the saga, by stream
    SAGA_GROUPS = (("order.created", "payment-service"),
                   ("order.created", "notification-service"),
                   ("payment.succeeded", "order-service"),
                   ("payment.failed", "order-service"),
                   ("payment.succeeded", "notification-service"),
                   ("payment.failed", "notification-service"))

    def nothing_pending(self):
        """No entry is pending (delivered, not acknowledged) in any saga group."""
        for stream, group in self.SAGA_GROUPS:
            first = self.redis.cli("XPENDING", stream, group).splitlines()[0].strip()
            if first != "1) (integer) 0":
                return False
        return True

    def stop_services(self, t):
        """SIGTERM every service: each must drain and exit 0 with no
        sanitizer report."""
        for s in self.services.values():
            if not s.alive():
                continue
            rc = s.stop()
            t.eq(rc, 0, "%s drains and exits 0 on SIGTERM" % s.name, s.log_tail())
            rep = s.sanitizer_report()
            t.ok(rep is None, "%s: no sanitizer report" % s.name, rep)


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, headers dict lowercased, parsed JSON or raw bytes)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, rh, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, rh, raw = e.code, e.headers, e.read()
    headers_out = {k.lower(): v for k, v in rh.items()}
    ctype = headers_out.get("content-type", "")
    parsed = raw
    if raw and "json" in ctype:
        parsed = json.loads(raw)
    elif not raw:
        parsed = None
    return status, headers_out, parsed


# ---------------------------------------------------------------------------
# The npm tools of tests/services/js (OpenAPI validation, Pact)
# ---------------------------------------------------------------------------
def js_tools():
    """A build-tree copy of tests/services/js with `npm ci` done once (the
    source tree may be read-only, as in make distcheck). Returns
    (directory, None) or (None, why)."""
    import fcntl
    src = os.path.join(os.environ.get("SLUICE_SRCDIR", "."), "tests", "services", "js")
    dst = os.path.join(os.environ.get("SLUICE_BUILDDIR", "build"), "services-js")
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node and npm are not installed (./dev test installs them)"
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test scripts run in parallel
        for name in os.listdir(src):
            if name.endswith((".js", ".json", ".mjs", ".cjs")):
                shutil.copy(os.path.join(src, name), os.path.join(dst, name))
        stamp = os.path.join(dst, "node_modules", ".sluice-lock")
        with open(os.path.join(src, "package-lock.json"), "rb") as f:
            want = f.read()
        try:
            with open(stamp, "rb") as f:
                have = f.read()
        except OSError:
            have = None
        if have != want:
            out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                 cwd=dst, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                return None, "npm ci failed:\n" + out.stdout[-2000:] + out.stderr[-2000:]
            with open(stamp, "wb") as f:
                f.write(want)
    return dst, None


def run_node_tap(t, script, env, desc, args=(), timeout=300):
    """Runs a node script of js_tools() that prints TAP and reports each of
    its points as ours."""
    tools, why = js_tools()
    if tools is None:
        t.ok(False, desc + ": npm tools available", why)
        return False
    full_env = dict(os.environ)
    full_env.update(env)
    try:
        out = subprocess.run(["node", os.path.join(tools, script)] + list(args), cwd=tools,
                             env=full_env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        t.ok(False, "%s finished within %d s" % (desc, timeout), str(e.stdout)[-3000:])
        return False
    points = 0
    lines = out.stdout.splitlines()
    for i, line in enumerate(lines):
        ok = line.startswith("ok ")
        if ok or line.startswith("not ok "):
            points += 1
            text = line.split(" - ", 1)[1] if " - " in line else line
            diag = []
            for follow in lines[i + 1:]:
                if not follow.startswith("#"):
                    break
                diag.append(follow)
            t.ok(ok, "%s: %s" % (desc, text), "\n".join(diag) or None)
    t.ok(out.returncode == 0 and points > 0, "%s: exits 0 with test points" % desc,
         "exit %s\nstdout tail:\n%s\nstderr tail:\n%s" % (out.returncode, out.stdout[-1500:],
                                                          out.stderr[-3000:]))
    return out.returncode == 0


class Exchanges:
    """Records requests and responses for validate-openapi.js."""

    def __init__(self):
        self.path = tempfile.mktemp(prefix="sluice-exchanges-", suffix=".jsonl")
        self.f = open(self.path, "w")
        h.register_cleanup(lambda: os.path.exists(self.path) and os.unlink(self.path))

    def call(self, service, base, method, path, body=None, headers=None):
        status, hdrs, parsed = http(method, base + path, body, headers)
        self.f.write(json.dumps({
            "service": service, "method": method, "path": path, "status": status,
            "content_type": hdrs.get("content-type", ""),
            "headers": hdrs,
            "body": parsed if not isinstance(parsed, bytes) else parsed.decode("latin-1")}) + "\n")
        self.f.flush()
        return status, hdrs, parsed

    def validate(self, t, extra_docs=None):
        """One test point per recorded exchange (and per document).
        extra_docs: {service name: path of another OpenAPI document}."""
        self.f.close()
        env = {"OPENAPI_EXTRA_DOCS": ",".join("%s=%s" % kv for kv in (extra_docs or {}).items())}
        run_node_tap(t, "validate-openapi.js", env, "OpenAPI", args=[self.path], timeout=120)


def svc_uuid_ok(value):
    import re
    return isinstance(value, str) and re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value) is not None


def wait_for(fn, timeout=10.0, every=0.1):
    """fn's first true value within `timeout` seconds, else its last value."""
    deadline = time.time() + timeout
    value = fn()
    while not value and time.time() < deadline:
        time.sleep(every)
        value = fn()
    return value
