/*
 * The status listener (status_listen, see status.h): the endpoints of each
 * role on the operator's HTTP server (httpd.h), one request per connection.
 */
#include "status.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "httpd.h"
#include "metrics.h"
#include "server.h"
#include "snapshot.h"

#define STATUS_MAX_HEAD 8192
#define STATUS_TIMEOUT_MS 10000
/* probes and scrapes come one at a time; this only bounds a flood */
#define STATUS_MAX_CONNECTIONS 128

static void sum_stats(const struct sl_server *srv, int64_t out[7])
{
    memset(out, 0, 7 * sizeof out[0]);
    for (int i = 0; i < srv->n_workers; i++) {
        const struct sl_worker_stats *s = &srv->workers[i].stats;
        out[0] += (int64_t)atomic_load_explicit(&s->connections_accepted, memory_order_relaxed);
        out[1] += atomic_load_explicit(&s->connections_active, memory_order_relaxed);
        out[2] += (int64_t)atomic_load_explicit(&s->connections_handled, memory_order_relaxed);
        out[3] += atomic_load_explicit(&s->connections_reading, memory_order_relaxed);
        out[4] += atomic_load_explicit(&s->connections_writing, memory_order_relaxed);
        out[5] += atomic_load_explicit(&s->connections_waiting, memory_order_relaxed);
        out[6] += (int64_t)atomic_load_explicit(&s->total_requests, memory_order_relaxed);
    }
}

/* Kong's GET /status: the server's counters summed over the workers. */
static void serve_status(struct sl_httpd_request *req, void *arg)
{
    const struct sl_worker *w = arg;
    const struct sl_server *srv = w->server;
    int64_t s[7];
    sum_stats(srv, s);
    /* the worker's own snapshot: reloads swap it on this thread only */
    const struct sl_snapshot *snap = w->snapshot;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"database\":{\"reachable\":true},"
             "\"server\":{\"connections_accepted\":%lld,\"connections_active\":%lld,"
             "\"connections_handled\":%lld,\"connections_reading\":%lld,"
             "\"connections_writing\":%lld,\"connections_waiting\":%lld,"
             "\"total_requests\":%lld},"
             "\"configuration_hash\":\"%s\",\"configuration_loaded_at\":%.3f,"
             "\"workers\":%d,\"ready\":%s}",
             (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3], (long long)s[4],
             (long long)s[5], (long long)s[6], snap->cfg->hash,
             (double)snap->loaded_at_unix_ms / 1000.0, srv->n_workers,
             atomic_load(&srv->ready) ? "true" : "false");
    sl_httpd_respond_json(req, 200, body);
}

/* Ready while serving; 503 before the workers run and once a drain starts. */
static void serve_ready(struct sl_httpd_request *req, void *arg)
{
    const struct sl_worker *w = arg;
    if (atomic_load(&w->server->ready))
        sl_httpd_respond_json(req, 200, "{\"message\":\"ready\"}");
    else
        sl_httpd_respond_json(req, 503, "{\"message\":\"not ready: starting or draining\"}");
}

/* Liveness: answering at all is the proof. */
static void serve_live(struct sl_httpd_request *req, void *arg)
{
    sl_httpd_respond_json(req, 200, "{\"message\":\"live\"}");
}

static void serve_metrics(struct sl_httpd_request *req, void *arg)
{
    const struct sl_worker *w = arg;
    struct evbuffer *text = evbuffer_new();
    if (text == NULL) {
        sl_httpd_respond_json(req, 500, "{\"message\":\"An unexpected error occurred\"}");
        return;
    }
    sl_metrics_render(w->server, w->snapshot, text);
    sl_httpd_respond_buffer(req, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    evbuffer_free(text);
}

struct sl_httpd *sl_status_new(struct sl_worker *w, const char *role, char *err, size_t err_size)
{
    const struct sl_httpd_route gateway[] = {
        {SL_HTTPD_GET, "/status", serve_status, w, false},
        {SL_HTTPD_GET, "/status/ready", serve_ready, w, false},
        {SL_HTTPD_GET, "/metrics", serve_metrics, w, false},
    };
    const struct sl_httpd_route sidecar[] = {
        {SL_HTTPD_GET, "/healthz/live", serve_live, w, false},
        {SL_HTTPD_GET, "/healthz/ready", serve_ready, w, false},
        {SL_HTTPD_GET, "/metrics", serve_metrics, w, false},
        {SL_HTTPD_GET, "/status", serve_status, w, false},
    };
    const struct sl_httpd_route *routes;
    size_t n_routes;
    if (strcmp(role, "gateway") == 0) {
        routes = gateway;
        n_routes = sizeof gateway / sizeof gateway[0];
    } else if (strcmp(role, "sidecar") == 0) {
        routes = sidecar;
        n_routes = sizeof sidecar / sizeof sidecar[0];
    } else {
        snprintf(err, err_size, "status_listen: unknown role '%s'", role);
        return NULL;
    }
    const struct sl_httpd_options options = {
        .name = "status_listen",
        .max_head = STATUS_MAX_HEAD,
        .timeout_ms = STATUS_TIMEOUT_MS,
        .max_connections = STATUS_MAX_CONNECTIONS,
    };
    struct sl_httpd *httpd = sl_httpd_new(w->base, &options, routes, n_routes);
    if (httpd == NULL)
        snprintf(err, err_size, "status_listen: out of memory");
    return httpd;
}
