#!/usr/bin/env python3
"""sluice-sidecar: the outbound listener routes by authority (Host, an
absolute-form target, a route's hosts) and answers Kong's 404 for anything
else; the inbound listener sends everything to app_url, never retries, and
sheds load with inbound_circuit_breakers; two sidecars in a row make a mesh
hop with retries on the calling side only; /healthz/live and /healthz/ready
across start, SIGHUP, a bad reload, POST /config and SIGTERM with
drain_delay; metrics with a direction label; -t and environment overrides."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

NO_ROUTE = "no Route matched with those values"


def echo(r):
    """The test upstream's echo of the request it got."""
    return r.json()


def header_of(echoed, name):
    for k, v in echoed["headers"]:
        if k.lower() == name:
            return v
    return None


def refused(port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((h.LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def body(t):
    app = Upstream(name="app").start()
    users = [Upstream(name="users-%d" % i).start() for i in range(2)]
    orders = Upstream(name="orders").start()
    failing_app = Upstream(mode="status:503", name="failing-app").start()
    resetting_app = Upstream(mode="reset", name="resetting-app").start()
    slow_app = Upstream(name="slow-app").start()

    # --- one sidecar: outbound routing and its inbound app ------------------
    inbound, outbound, status, admin = (h.free_port() for _ in range(4))
    cfg = h.make_sidecar_config(
        "order-service", inbound, app.port, outbound_port=outbound, status_port=status,
        admin_listen="%s:%d" % (h.LOOPBACK, admin), drain_delay=1000,
        services=[
            {"name": "user-service", "host": "user-service.upstream", "port": 80,
             "retry_policy": {"retry_on": ["connect-failure", "gateway-error"]}},
            {"name": "orders-api", "url": "http://%s:%d" % (h.LOOPBACK, orders.port),
             "routes": [{"name": "orders-by-host", "hosts": ["orders.internal"]}]},
        ])
    cfg["upstreams"] = [h.upstream_entity("user-service.upstream", [(u, 100) for u in users])]
    sc = h.Sidecar(cfg)
    sc.start()

    def t_outbound_by_host():
        r = h.get(outbound, "/users/1", host="user-service:8081")
        ok = r.status == 200 and sum(len(u.find("/users/1")) for u in users) == 1
        e = echo(r) if ok else {}
        t.ok(ok and e.get("path") == "/users/1", "outbound: Host user-service:8081 goes to the "
             "service user-service (port ignored), path as sent", repr(r))
        t.eq(header_of(e, "host"), "user-service:8081", "outbound: the client's Host is kept "
             "(a transparent hop)")
        t.ok(header_of(e, "x-forwarded-for") is None and "sluice" in (header_of(e, "via") or ""),
             "outbound: no X-Forwarded-For added, Via names the hop",
             repr(e.get("headers")))
        for i in range(10):
            h.get(outbound, "/users/rr", host="user-service")
        spread = [len(u.find("/users/rr")) for u in users]
        t.eq(spread, [5, 5], "outbound: the service's upstream balances over its targets")

    def t_outbound_absolute_form():
        with h.Conn(outbound) as c:
            c.send(b"GET http://user-service/users/2 HTTP/1.1\r\nHost: user-service\r\n"
                   b"Connection: close\r\n\r\n")
            r = c.read_response()
        t.ok(r.status == 200 and echo(r)["path"] == "/users/2", "outbound: an absolute-form "
             "target (a client with http_proxy) is routed by its authority", repr(r))
        env = dict(os.environ, http_proxy="http://%s:%d" % (h.LOOPBACK, outbound))
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "http://user-service/users/3"], env=env, capture_output=True,
                           text=True, timeout=10)
        t.eq(p.stdout, "200", "outbound: curl with http_proxy=the outbound listener reaches "
             "user-service")

    def t_outbound_route_hosts():
        r = h.get(outbound, "/o/9", host="orders.internal")
        t.ok(r.status == 200 and len(orders.find("/o/9")) == 1, "outbound: a route's hosts "
             "route too (the gateway's router)", repr(r))

    def t_outbound_unknown():
        r = h.try_get(outbound, "/x", host="nobody")
        h.check_kong_error(t, r, 404, NO_ROUTE, "outbound: an unknown authority gets Kong's 404")
        r = h.try_get(outbound, "/x", host="order-service")
        h.check_kong_error(t, r, 404, NO_ROUTE, "outbound: the sidecar's own service_name is "
                           "not a service to call out to")

    def t_inbound():
        r = h.get(inbound, "/anything/at/all?q=1", host="order-service:8082")
        e = echo(r)
        t.ok(r.status == 200 and e["path"] == "/anything/at/all" and e["query"] == "q=1",
             "inbound: every request goes to app_url, path and query as sent", repr(r))
        t.eq(header_of(e, "host"), "order-service:8082", "inbound: Host is kept")
        t.ok(r.header("x-request-id") and header_of(e, "x-request-id") == r.header("x-request-id"),
             "inbound: one X-Request-Id, the same at the app and in the answer")

    def t_healthz():
        r = h.get(status, "/healthz/live")
        t.ok(r.status == 200 and r.json().get("message") == "live", "/healthz/live: 200",
             repr(r))
        r = h.get(status, "/healthz/ready")
        t.ok(r.status == 200 and r.json().get("message") == "ready", "/healthz/ready: 200 once "
             "started", repr(r))
        r = h.get(status, "/status")
        t.ok(r.status == 200 and r.is_json(), "/status answers", repr(r))

    def t_metrics():
        text = h.scrape(status)
        m = h.parse_metrics(text)
        t.ok(h.metric_sum(m, "sluice_http_requests_total", direction="outbound",
                          service="user-service") >= 12 and
             h.metric_sum(m, "sluice_http_requests_total", direction="inbound",
                          service="order-service") >= 1,
             "/metrics: requests by direction, service and code",
             "\n".join(l for l in text.splitlines() if "requests_total" in l))
        t.ok(h.metric(m, "sluice_upstream_retries_total", service="user-service",
                      direction="outbound", reason="connect-failure") is not None,
             "/metrics: the resilience families carry the direction too")
        h.promtool_check(t, text, "promtool check metrics accepts the sidecar's scrape")

    def t_reloads():
        good = json.loads(json.dumps(cfg))
        good["services"].append({"name": "added-later",
                                 "url": "http://%s:%d" % (h.LOOPBACK, orders.port)})
        sc.write_config(good)
        sc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        r = None
        while time.monotonic() < deadline:
            r = h.try_get(outbound, "/later", host="added-later")
            if getattr(r, "status", None) == 200:
                break
            time.sleep(0.05)
        t.ok(getattr(r, "status", None) == 200, "SIGHUP: a new service is routed", repr(r))
        t.eq(h.get(status, "/healthz/ready").status, 200, "SIGHUP: still ready")
        with open(sc.conf_path, "w") as f:
            f.write("_format_version: \"3.0\"\nsidecar:\n  service_name: x\n  bogus_key: 1\n")
        sc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        t.eq(h.get(status, "/healthz/ready").status, 200, "a bad reload: still ready")
        t.eq(getattr(h.try_get(outbound, "/later", host="added-later"), "status", None), 200,
             "a bad reload: the running configuration stays")
        t.ok("bogus_key" in sc.stderr() and ":4:3:" in sc.stderr(), "a bad reload is refused "
             "with file:line:column", sc.stderr_tail(5))
        text = h.to_yaml(cfg) + "\n"
        r = h.get(admin, "/config", method="POST", body=text.encode())
        t.eq(r.status, 201, "POST /config with a sidecar file: loaded")
        r = h.get(admin, "/config", method="POST",
                  body=b"_format_version: \"3.0\"\ngateway:\n  proxy_listen: 127.0.0.1:1\n")
        t.ok(r.status == 400 and b"gateway" in r.body, "POST /config: a gateway: block is "
             "refused by the sidecar", repr(r))
        t.eq(h.get(status, "/healthz/ready").status, 200, "still ready after the refused POST")

    t.run(t_outbound_by_host)
    t.run(t_outbound_absolute_form)
    t.run(t_outbound_route_hosts)
    t.run(t_outbound_unknown)
    t.run(t_inbound)
    t.run(t_healthz)
    t.run(t_metrics)
    t.run(t_reloads)

    # --- SIGTERM with drain_delay --------------------------------------------
    def t_drain_delay():
        t0 = time.monotonic()
        sc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        r = h.try_get(status, "/healthz/ready")
        t.ok(getattr(r, "status", None) == 503, "SIGTERM: /healthz/ready fails at once",
             repr(r))
        r = h.try_get(inbound, "/during-delay")
        r2 = h.try_get(outbound, "/users/delay", host="user-service")
        t.ok(getattr(r, "status", None) == 200 and getattr(r2, "status", None) == 200 and
             time.monotonic() - t0 < 0.9, "during drain_delay both listeners keep serving",
             "%r %r" % (r, r2))
        while time.monotonic() - t0 < 1.4:
            time.sleep(0.05)
        t.ok(refused(inbound) or not sc.alive(), "after drain_delay the listeners are closed")
        rc = sc.wait(10)
        t.eq(rc, 0, "the sidecar exits 0 after the drain")

    t.run(t_drain_delay)
    sc.check_clean(t)

    # --- inbound never retries; breakers shed load ---------------------------
    def t_inbound_no_retry():
        port = h.free_port()
        s = h.Sidecar(h.make_sidecar_config("failing", port, failing_app.port))
        s.start()
        r = h.get(port, "/x")
        t.ok(r.status == 503 and len(failing_app.requests()) == 1, "inbound never retries: an "
             "app answering 503 gets one request", "%r, %d requests" % (r,
                                                                       len(failing_app.requests())))
        s.stop()
        s.check_clean(t)
        port = h.free_port()
        s = h.Sidecar(h.make_sidecar_config("resetting", port, resetting_app.port))
        s.start()
        resetting_app.mode = None
        with h.Conn(port) as c:
            first = c.request("GET", "/first")  # the sidecar's connection to the app is pooled
            resetting_app.mode = "reset"
            resetting_app.clear()
        r = h.try_get(port, "/x")
        t.ok(first.status == 200 and getattr(r, "status", None) == 502 and
             len(resetting_app.requests()) == 1,
             "inbound never retries: an app that takes the request on a pooled connection and "
             "resets gets it once (502), not again on a fresh connection",
             "%r, %d requests" % (r, len(resetting_app.requests())))
        s.stop()
        s.check_clean(t)

    def t_inbound_breakers():
        port = h.free_port()
        s = h.Sidecar(h.make_sidecar_config("slow", port, slow_app.port,
                                            inbound_circuit_breakers={"max_requests": 1}))
        s.start()
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def client(k):
            barrier.wait()
            r = h.try_get(port, "/slow/800/%d" % k, timeout=10)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(15)
        codes = sorted(getattr(r, "status", None) for r in results)
        over = [r for r in results if getattr(r, "status", None) == 503]
        t.ok(codes == [200, 503, 503, 503] and
             all(r.header("x-sluice-overloaded") == "true" for r in over),
             "inbound_circuit_breakers max_requests 1: the app gets one request at a time, the "
             "overflow is shed with 503", repr(codes))
        s.stop()
        s.check_clean(t)

    t.run(t_inbound_no_retry)
    t.run(t_inbound_breakers)

    # --- two sidecars in a row: the mesh hop ----------------------------------
    def t_mesh():
        mesh_app = Upstream(mode="status:503", name="mesh-app").start()
        b_in, a_out = h.free_port(), h.free_port()
        b = h.Sidecar(h.make_sidecar_config("user-service", b_in, mesh_app.port), name="sidecar-b")
        b.start()
        a = h.Sidecar(h.make_sidecar_config(
            "order-service", h.free_port(), app.port, outbound_port=a_out,
            services=[{"name": "user-service", "url": "http://%s:%d" % (h.LOOPBACK, b_in),
                       "retry_policy": {"retry_on": ["gateway-error"], "num_retries": 2,
                                        "backoff": {"base_interval": 1, "max_interval": 2}}}]),
            port=a_out, name="sidecar-a")
        a.start()
        r = h.get(a_out, "/users/7", host="user-service", headers=[("X-Request-Id", "mesh-1")])
        reqs = mesh_app.requests()
        t.ok(r.status == 503 and len(reqs) == 3, "mesh: retries happen on the calling side "
             "only: 1 + num_retries tries reach the app, not more",
             "%r, %d requests at the app" % (r, len(reqs)))
        mesh_app.mode = None
        mesh_app.clear()
        r = h.get(a_out, "/users/8", host="user-service:8081",
                  headers=[("X-Request-Id", "mesh-2")])
        e = echo(r)
        t.ok(r.status == 200 and header_of(e, "host") == "user-service:8081" and
             header_of(e, "x-request-id") == "mesh-2" and
             (header_of(e, "via") or "").count("sluice") == 2,
             "mesh: the app sees the caller's Host and request id, and two hops in Via",
             repr(e.get("headers")))
        for s in (a, b):
            s.stop()
            s.check_clean(t)

    t.run(t_mesh)

    # --- the command line ------------------------------------------------------
    def check(text, env=None):
        d = h.Gateway("").dir  # a scratch directory the harness removes
        path = os.path.join(d, "sc.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([h.sidecar_bin(), "-t", "-c", path], capture_output=True, text=True,
                           timeout=10, env=dict(os.environ, **(env or {})))
        return p.returncode, p.stdout + p.stderr, path

    def t_cli():
        rc, out, _ = check("_format_version: \"3.0\"\nsidecar:\n  service_name: a\n")
        t.ok(rc == 0 and "valid" in out, "-t: a minimal sidecar file is valid", out)
        rc, out, path = check("_format_version: \"3.0\"\ngateway:\n  proxy_listen: 127.0.0.1:1\n")
        t.ok(rc == 1 and out.startswith(path + ":2:1:"), "-t: a gateway: block in a sidecar "
             "file is refused at its line:column", out)
        rc, out, path = check("_format_version: \"3.0\"\nsidecar:\n  service_name: a\n"
                              "plugins:\n  - name: request-termination\n")
        t.ok(rc == 1 and path + ":5:5:" in out and "sidecar" in out, "-t: plugins are refused "
             "in the sidecar role, at their line:column", out)
        rc, out, _ = check("_format_version: \"3.0\"\nsidecar:\n  drain_delay: 10\n")
        t.ok(rc == 1 and "service_name" in out, "-t: service_name is required", out)
        rc, out, _ = check("_format_version: \"3.0\"\n", env={"SLUICE_SERVICE_NAME": "envsvc"})
        t.eq(rc, 0, "-t: SLUICE_SERVICE_NAME provides the service name")
        example = os.path.join(os.environ.get("SLUICE_SRCDIR", os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")), "conf", "sidecar.yml")
        p = subprocess.run([h.sidecar_bin(), "-t", "-c", example], capture_output=True,
                           text=True, timeout=10)
        t.eq(p.returncode, 0, "-t: the example conf/sidecar.yml is valid", p.stdout + p.stderr)
        p = subprocess.run([h.sidecar_bin(), "-V"], capture_output=True, text=True, timeout=5)
        t.ok(p.returncode == 0 and p.stdout.startswith("sluice-sidecar "), "-V prints the "
             "version", p.stdout)

    def t_env_overrides():
        port, app_port = h.free_port(), app.port
        s = h.Sidecar("_format_version: \"3.0\"\nsidecar:\n  service_name: envtest\n"
                      "  status_listen: \"off\"\n  outbound_listen: \"off\"\n",
                      env={"SLUICE_INBOUND_LISTEN": "%s:%d" % (h.LOOPBACK, port),
                           "SLUICE_APP_URL": "http://%s:%d" % (h.LOOPBACK, app_port),
                           "SLUICE_DRAIN_DELAY": "0"}, port=port, name="sidecar-env")
        s.start()
        r = h.get(port, "/from-env")
        t.ok(r.status == 200 and echo(r)["path"] == "/from-env", "SLUICE_INBOUND_LISTEN and "
             "SLUICE_APP_URL override the file", repr(r))
        t0 = time.monotonic()
        s.stop()
        t.ok(s.stop_elapsed is not None and s.stop_elapsed < 0.9 and time.monotonic() - t0 < 3,
             "SLUICE_DRAIN_DELAY=0: SIGTERM drains at once", repr(s.stop_elapsed))
        s.check_clean(t)

    t.run(t_cli)
    t.run(t_env_overrides)


if __name__ == "__main__":
    h.main(body, timeout=180)
