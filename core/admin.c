/*
 * The admin listener: POST /config (see admin.h), on the operator's HTTP
 * server (httpd.h), one request per connection.
 *
 * Ownership: the admin thread owns its event_base, listener and HTTP
 * server (with its connections); another thread only writes to its stop
 * pipe.
 */
#include "admin.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "snapshot.h"
#include "util.h"

#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_BODY (16u * 1024u * 1024u) /* the loader's own file limit */
#define ADMIN_TIMEOUT_MS 30000
/* each may hold a whole body: this bounds the admin thread's memory */
#define ADMIN_MAX_CONNECTIONS 8

struct sl_admin {
    struct sl_server *srv;
    const char *role;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *stop_event;
    int stop_pipe[2];
    pthread_t thread;
    struct sl_httpd *httpd;
};

/* Load, check and apply a configuration sent as the request body. */
static void post_config(struct sl_httpd_request *req, void *arg)
{
    struct sl_admin *admin = arg;
    struct sl_config_error err;
    char body[1400];
    struct sl_snapshot *snap =
        sl_snapshot_load_buffer(req->body, req->body_len, "POST /config", admin->role, &err);
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
        sl_httpd_respond_json(req, 400, body);
        return;
    }
    char hash[sizeof snap->cfg->hash];
    memcpy(hash, snap->cfg->hash, sizeof hash); /* snap is the server's after the call */
    sl_server_reload(admin->srv, snap);
    sl_notice("POST /config: configuration reloaded (%s)", hash);
    snprintf(body, sizeof body,
             "{\"message\":\"configuration loaded\",\"configuration_hash\":\"%s\"}", hash);
    sl_httpd_respond_json(req, 201, body);
}

static void admin_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                         int len, void *arg)
{
    struct sl_admin *admin = arg;
    sl_httpd_accept(admin->httpd, fd);
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
    sl_httpd_free(admin->httpd);
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
    const struct sl_httpd_route routes[] = {
        {SL_HTTPD_POST, "/config", post_config, admin, true},
    };
    const struct sl_httpd_options options = {
        .name = "admin_listen",
        .max_head = ADMIN_MAX_HEAD,
        .max_body = ADMIN_MAX_BODY,
        .timeout_ms = ADMIN_TIMEOUT_MS,
        .max_connections = ADMIN_MAX_CONNECTIONS,
        .length_required_message = "the configuration must come with a Content-Length",
        .body_too_large_message = "configuration too large (the limit is 16 MiB)",
    };
    if (admin->base)
        admin->httpd = sl_httpd_new(admin->base, &options, routes, 1);
    if (admin->httpd)
        admin->listener =
            evconnlistener_new(admin->base, admin_accept, admin, LEV_OPT_CLOSE_ON_FREE, 0, fd);
    if (!admin->listener)
        close(fd); /* no listener took it */
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
