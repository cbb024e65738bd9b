/*
 * The status listener (status_listen): Kong's GET /status and
 * GET /status/ready, served by worker 0. Each connection answers one request
 * and closes; it is an operator's endpoint, not a hot path.
 *
 * Ownership: a struct status_conn is owned by its bufferevent callbacks and
 * freed in them (bufferevent_free inside a bufferevent callback is safe:
 * libevent holds a reference during the callback).
 */
#include "status.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http1.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "snapshot.h"

#define STATUS_MAX_HEAD 8192
#define STATUS_TIMEOUT_S 10

struct status_conn {
    struct sl_worker *w;
    struct bufferevent *bev;
    bool answered;
    struct status_conn *next, *prev; /* the worker's list */
};

static void status_free(struct status_conn *sc)
{
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        sc->w->status_conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    bufferevent_free(sc->bev); /* closes the socket */
    free(sc);
}

void sl_status_close_all(struct sl_worker *w)
{
    while (w->status_conns)
        status_free(w->status_conns);
}

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

static void respond(struct status_conn *sc, int status, const char *body, bool head_only)
{
    struct evbuffer *out = bufferevent_get_output(sc->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: application/json; charset=utf-8\r\n"
                        "Content-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n"
                        "Server: sluice\r\n"
                        "Connection: close\r\n\r\n",
                        status, sl_http_reason(status), strlen(body));
    if (!head_only)
        evbuffer_add(out, body, strlen(body));
    sc->answered = true;
    bufferevent_disable(sc->bev, EV_READ);
}

static void answer(struct status_conn *sc, const struct sl_http_request *req)
{
    const struct sl_server *srv = sc->w->server;
    bool head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    bool get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    const char *q = memchr(req->target, '?', req->target_len);
    size_t path_len = q ? (size_t)(q - req->target) : req->target_len;
    char body[1024];
    if (!get && !head) {
        respond(sc, 405, "{\"message\":\"Method not allowed\"}", false);
        return;
    }
    if (path_len == 7 && memcmp(req->target, "/status", 7) == 0) {
        int64_t s[7];
        sum_stats(srv, s);
        /* the worker's own snapshot: reloads swap it on this thread only */
        const struct sl_snapshot *snap = sc->w->snapshot;
        snprintf(body, sizeof body,
                 "{\"database\":{\"reachable\":true},"
                 "\"server\":{\"connections_accepted\":%lld,\"connections_active\":%lld,"
                 "\"connections_handled\":%lld,\"connections_reading\":%lld,"
                 "\"connections_writing\":%lld,\"connections_waiting\":%lld,"
                 "\"total_requests\":%lld},"
                 "\"configuration_hash\":\"%s\",\"configuration_loaded_at\":%.3f,"
                 "\"workers\":%d,\"ready\":%s}",
                 (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3],
                 (long long)s[4], (long long)s[5], (long long)s[6], snap->cfg->hash,
                 (double)snap->loaded_at_unix_ms / 1000.0, srv->n_workers,
                 atomic_load(&srv->ready) ? "true" : "false");
        respond(sc, 200, body, head);
        return;
    }
    if (path_len == 8 && memcmp(req->target, "/metrics", 8) == 0) {
        struct evbuffer *text = evbuffer_new();
        if (text == NULL) {
            respond(sc, 500, "{\"message\":\"An unexpected error occurred\"}", head);
            return;
        }
        sl_metrics_render(srv, sc->w->snapshot, text);
        struct evbuffer *out = bufferevent_get_output(sc->bev);
        evbuffer_add_printf(out,
                            "HTTP/1.1 200 OK\r\n"
                            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                            "Content-Length: %zu\r\n"
                            "Cache-Control: no-store\r\n"
                            "Server: sluice\r\n"
                            "Connection: close\r\n\r\n",
                            evbuffer_get_length(text));
        if (!head)
            evbuffer_add_buffer(out, text);
        evbuffer_free(text);
        sc->answered = true;
        bufferevent_disable(sc->bev, EV_READ);
        return;
    }
    if (path_len == 13 && memcmp(req->target, "/status/ready", 13) == 0) {
        if (atomic_load(&srv->ready))
            respond(sc, 200, "{\"message\":\"ready\"}", head);
        else
            respond(sc, 503, "{\"message\":\"not ready: starting or draining\"}", head);
        return;
    }
    respond(sc, 404, "{\"message\":\"Not found\"}", head);
}

static void status_read(struct bufferevent *bev, void *arg)
{
    struct status_conn *sc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    size_t want = len < STATUS_MAX_HEAD + 1 ? len : STATUS_MAX_HEAD + 1;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    struct sl_http_header headers[64];
    struct sl_http_request req;
    memset(&req, 0, sizeof req);
    req.headers = headers;
    req.header_capacity = 64;
    struct sl_http_limits limits = {4096, STATUS_MAX_HEAD, 63};
    int n = sl_http_parse_request(data, want, &limits, &req);
    if (n == SL_HTTP_INCOMPLETE)
        return;
    if (n < 0) {
        respond(sc, -n, "{\"message\":\"Bad request\"}", false);
        return;
    }
    answer(sc, &req);
}

static void status_write(struct bufferevent *bev, void *arg)
{
    struct status_conn *sc = arg;
    if (sc->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        status_free(sc);
}

static void status_event(struct bufferevent *bev, short what, void *arg)
{
    status_free(arg); /* EOF, error or timeout */
}

void sl_status_accept(struct sl_worker *w, int fd)
{
    struct status_conn *sc = calloc(1, sizeof *sc);
    if (!sc) {
        close(fd);
        return;
    }
    sc->w = w;
    sc->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!sc->bev) {
        close(fd);
        free(sc);
        return;
    }
    sc->next = w->status_conns;
    if (w->status_conns)
        w->status_conns->prev = sc;
    w->status_conns = sc;
    struct timeval tv = {STATUS_TIMEOUT_S, 0};
    bufferevent_setcb(sc->bev, status_read, status_write, status_event, sc);
    bufferevent_set_timeouts(sc->bev, &tv, &tv);
    bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
}
