/*
 * The admin listener: POST /config (see admin.h). One request per
 * connection, answered then closed; it is an operator's endpoint.
 *
 * Ownership: struct admin_conn is owned by its bufferevent callbacks and
 * freed in them (libevent keeps the bufferevent alive during a callback).
 * The admin thread owns its event_base, listener and connections; another
 * thread only writes to its stop pipe.
 */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http1.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "snapshot.h"
#include "util.h"

#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_BODY (16u * 1024u * 1024u) /* the loader's own file limit */
#define ADMIN_TIMEOUT_S 30

struct sl_admin {
    struct sl_server *srv;
    const char *role;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *stop_event;
    int stop_pipe[2];
    pthread_t thread;
    struct admin_conn *conns;
};

struct admin_conn {
    struct sl_admin *admin;
    struct bufferevent *bev;
    bool answered;
    struct admin_conn *next, *prev;
};

static void conn_free(struct admin_conn *ac)
{
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        ac->admin->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    bufferevent_free(ac->bev);
    free(ac);
}

static void respond(struct admin_conn *ac, int status, const char *body)
{
    struct evbuffer *out = bufferevent_get_output(ac->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: application/json; charset=utf-8\r\n"
                        "Content-Length: %zu\r\n"
                        "Server: sluice\r\n"
                        "Connection: close\r\n\r\n%s",
                        status, sl_http_reason(status), strlen(body), body);
    ac->answered = true;
    bufferevent_disable(ac->bev, EV_READ);
}

/* Load, check and apply a configuration sent as the request body. */
static void post_config(struct admin_conn *ac, const char *data, size_t len)
{
    struct sl_config_error err;
    char body[1400];
    struct sl_snapshot *snap =
        sl_snapshot_load_buffer(data, len, "POST /config", ac->admin->role, &err);
    sl_metrics_reload_result(snap != NULL);
    if (!snap) {
        char esc[1100];
        if (sl_json_escape(err.text, strlen(err.text), esc, sizeof esc) < 0)
            snprintf(esc, sizeof esc, "(message too long)");
        /* Kong's shape for a refused declarative configuration */
        snprintf(body, sizeof body,
                 "{\"code\":14,\"name\":\"invalid declarative configuration\","
                 "\"message\":\"declarative config is invalid: %s\",\"fields\":{}}",
                 esc);
        sl_error("POST /config refused: %s; the current configuration stays", err.text);
        respond(ac, 400, body);
        return;
    }
    char hash[sizeof snap->cfg->hash];
    memcpy(hash, snap->cfg->hash, sizeof hash); /* snap is the server's after the call */
    sl_server_reload(ac->admin->srv, snap);
    sl_notice("POST /config: configuration reloaded (%s)", hash);
    snprintf(body, sizeof body,
             "{\"message\":\"configuration loaded\",\"configuration_hash\":\"%s\"}", hash);
    respond(ac, 201, body);
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct admin_conn *ac = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t avail = evbuffer_get_length(in);
    size_t want = avail < ADMIN_MAX_HEAD ? avail : ADMIN_MAX_HEAD;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    struct sl_http_header headers[64];
    struct sl_http_request req;
    memset(&req, 0, sizeof req);
    req.headers = headers;
    req.header_capacity = 64;
    struct sl_http_limits limits = {4096, ADMIN_MAX_HEAD, 63};
    int n = sl_http_parse_request(data, want, &limits, &req);
    if (n == SL_HTTP_INCOMPLETE)
        return;
    if (n < 0) {
        respond(ac, -n, "{\"message\":\"Bad request\"}");
        return;
    }
    const char *q = memchr(req.target, '?', req.target_len);
    size_t path_len = q ? (size_t)(q - req.target) : req.target_len;
    bool is_config = path_len == 7 && memcmp(req.target, "/config", 7) == 0;
    if (!is_config) {
        respond(ac, 404, "{\"message\":\"Not found\"}");
        return;
    }
    if (!(req.method_len == 4 && memcmp(req.method, "POST", 4) == 0)) {
        respond(ac, 405, "{\"message\":\"Method not allowed\"}");
        return;
    }
    if (req.body_kind != SL_BODY_LENGTH) {
        respond(ac, 411, "{\"message\":\"the configuration must come with a Content-Length\"}");
        return;
    }
    if (req.content_length > ADMIN_MAX_BODY) {
        respond(ac, 413, "{\"message\":\"configuration too large (the limit is 16 MiB)\"}");
        return;
    }
    size_t total = (size_t)n + (size_t)req.content_length;
    if (avail < total)
        return; /* the rest of the body is on its way */
    const char *all = (const char *)evbuffer_pullup(in, (ev_ssize_t)total);
    post_config(ac, all + n, (size_t)req.content_length);
}

static void conn_write(struct bufferevent *bev, void *arg)
{
    struct admin_conn *ac = arg;
    if (ac->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(ac);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg); /* EOF, error or timeout */
}

static void admin_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                         int len, void *arg)
{
    struct sl_admin *admin = arg;
    struct admin_conn *ac = calloc(1, sizeof *ac);
    if (!ac) {
        close(fd);
        return;
    }
    ac->admin = admin;
    ac->bev = bufferevent_socket_new(admin->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!ac->bev) {
        close(fd);
        free(ac);
        return;
    }
    ac->next = admin->conns;
    if (admin->conns)
        admin->conns->prev = ac;
    admin->conns = ac;
    struct timeval tv = {ADMIN_TIMEOUT_S, 0};
    /* the body is bounded: stop reading beyond head + the largest body */
    bufferevent_setwatermark(ac->bev, EV_READ, 0, ADMIN_MAX_HEAD + ADMIN_MAX_BODY);
    bufferevent_setcb(ac->bev, conn_read, conn_write, conn_event, ac);
    bufferevent_set_timeouts(ac->bev, &tv, &tv);
    bufferevent_enable(ac->bev, EV_READ | EV_WRITE);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sl_admin *admin = arg;
    event_base_loopbreak(admin->base);
}

static void *admin_main(void *arg)
{
    struct sl_admin *admin = arg;
    event_base_dispatch(admin->base);
    return NULL;
}

static void admin_free(struct sl_admin *admin)
{
    while (admin->conns)
        conn_free(admin->conns);
    if (admin->listener)
        evconnlistener_free(admin->listener);
    if (admin->stop_event)
        event_free(admin->stop_event);
    if (admin->base)
        event_base_free(admin->base);
    if (admin->stop_pipe[0] >= 0)
        close(admin->stop_pipe[0]);
    if (admin->stop_pipe[1] >= 0)
        close(admin->stop_pipe[1]);
    free(admin);
}

struct sl_admin *sl_admin_start(struct sl_server *srv, int fd, const char *role, char *err,
                                size_t err_size)
{
    struct sl_admin *admin = calloc(1, sizeof *admin);
    if (!admin) {
        close(fd);
        snprintf(err, err_size, "admin_listen: out of memory");
        return NULL;
    }
    admin->srv = srv;
    admin->role = role;
    admin->stop_pipe[0] = admin->stop_pipe[1] = -1;
    admin->base = event_base_new();
    if (admin->base)
        admin->listener =
            evconnlistener_new(admin->base, admin_accept, admin, LEV_OPT_CLOSE_ON_FREE, 0, fd);
    else
        close(fd);
    if (!admin->listener || pipe(admin->stop_pipe) != 0 ||
        !(admin->stop_event =
              event_new(admin->base, admin->stop_pipe[0], EV_READ, stop_cb, admin)) ||
        event_add(admin->stop_event, NULL) != 0 ||
        pthread_create(&admin->thread, NULL, admin_main, admin) != 0) {
        snprintf(err, err_size, "admin_listen: cannot start the admin thread");
        admin_free(admin);
        return NULL;
    }
    return admin;
}

void sl_admin_stop(struct sl_admin *admin)
{
    if (!admin)
        return;
    ssize_t w = write(admin->stop_pipe[1], "s", 1);
    (void)w;
    pthread_join(admin->thread, NULL);
    admin_free(admin);
}
