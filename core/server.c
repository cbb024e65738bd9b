#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netdb.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "balancer.h"
#include "health.h"
#include "admin.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "plugin_runtime.h"
#include "httpd.h"
#include "snapshot.h"
#include "status.h"
#include "upstream.h"
#include "util.h"

#define SL_LISTEN_BACKLOG 511
#define SL_ACCESS_LOG_FLUSH_MS 100
#define SL_ACCESS_LOG_FLUSH_BYTES (64 * 1024)
#define SL_ACCESS_LOG_MAX_BUFFER (4 * 1024 * 1024)

/* ------------------------------------------------------------------------ */
/* listeners                                                                 */

const char *sl_listener_kind_to_str(enum sl_listener_kind kind)
{
    switch (kind) {
    case SL_LISTENER_PROXY:
        return "proxy";
    case SL_LISTENER_INBOUND:
        return "inbound";
    case SL_LISTENER_OUTBOUND:
        return "outbound";
    }
    return "?";
}

/* One listen entry of the node block and what its connections are for. */
struct listener_spec {
    const struct sl_listen *listen;
    enum sl_listener_kind kind;
};

#define SL_MAX_LISTENERS 66 /* the loader's 64 proxy_listen entries, inbound, outbound */

/* The traffic listeners of a configuration, in a fixed order (a reload
 * compares them): the gateway's proxy_listen entries, or the sidecar's
 * inbound_listen and outbound_listen (when not off). */
static size_t listener_specs(const struct sl_config *cfg, struct listener_spec *out)
{
    const struct sl_node_config *node = &cfg->node;
    size_t n = 0;
    if (cfg->role && strcmp(cfg->role, "sidecar") == 0) {
        out[n++] = (struct listener_spec){&node->inbound_listen, SL_LISTENER_INBOUND};
        if (node->outbound_listen.port != 0)
            out[n++] = (struct listener_spec){&node->outbound_listen, SL_LISTENER_OUTBOUND};
        return n;
    }
    for (size_t i = 0; i < node->n_proxy_listen && n < SL_MAX_LISTENERS; i++)
        out[n++] = (struct listener_spec){&node->proxy_listen[i], SL_LISTENER_PROXY};
    return n;
}

/* A socket bound to ai; -1 with errno set on failure. */
static int bind_socket(const struct addrinfo *ai, bool reuseport)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) /* one socket per worker: the kernel spreads connections */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int open_listener(const struct sl_listen *l, bool probe_in_use, char *err, size_t err_size)
{
    char port[8];
    snprintf(port, sizeof port, "%u", l->port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(l->host[0] ? l->host : NULL, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, err_size, "listen %s:%u: %s", l->host, l->port, gai_strerror(rc));
        return -1;
    }
    /* SO_REUSEPORT would let us share the port with another process (a
     * stale sluice, say) without a word: the first bind goes without it */
    bool port_free = true;
    if (probe_in_use) {
        int probe = bind_socket(ai, false);
        port_free = probe >= 0;
        if (port_free)
            close(probe);
    }
    int fd = port_free ? bind_socket(ai, true) : -1;
    if (fd < 0 || listen(fd, SL_LISTEN_BACKLOG) < 0) {
        snprintf(err, err_size, "cannot listen on %s:%u: %s", l->host, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* ------------------------------------------------------------------------ */
/* workers                                                                   */

struct accept_ctx {
    struct sl_worker *w;
    struct sl_listener_socket *ls;
};

static void worker_accept(struct evconnlistener *listener, evutil_socket_t fd,
                          struct sockaddr *peer, int peer_len, void *arg)
{
    struct accept_ctx *ctx = arg;
    (void)listener;
    sl_proxy_accept(ctx->w, fd, peer, peer_len, ctx->ls->kind, ctx->ls->port, ctx->ls->ssl);
}

#define SL_ACCEPT_PAUSE_MS 100

static void accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct sl_listener_socket *ls = arg;
    if (ls->listener)
        evconnlistener_enable(ls->listener);
}

/*
 * Out of descriptors (or memory): the pending connection stays in the
 * backlog and the listening socket stays readable, so retrying at once
 * would spin the worker. Stop accepting for a moment instead, as nginx
 * does; connections already open go on being served and free descriptors.
 */
static void accept_error(struct evconnlistener *listener, void *arg)
{
    struct accept_ctx *ctx = arg;
    struct sl_listener_socket *ls = ctx->ls;
    int err = EVUTIL_SOCKET_ERROR();
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        sl_error("accept on port %u: %s", ls->port, strerror(err));
        return;
    }
    evconnlistener_disable(listener);
    struct timeval tv = {0, SL_ACCEPT_PAUSE_MS * 1000};
    evtimer_add(ls->resume_timer, &tv);
    if (ls->accept_pauses++ % 100 == 0)
        sl_error("accept on port %u: %s; pausing accepts for %d ms (%llu pause(s) so far)",
                 ls->port, strerror(err), SL_ACCEPT_PAUSE_MS,
                 (unsigned long long)ls->accept_pauses);
}

static void status_accept(struct evconnlistener *listener, evutil_socket_t fd,
                          struct sockaddr *peer, int peer_len, void *arg)
{
    struct sl_worker *w = arg;
    sl_httpd_accept(w->status, fd);
}

static void close_status_listener(struct sl_worker *w)
{
    if (w->status_listener) {
        evconnlistener_free(w->status_listener);
        w->status_listener = NULL;
    }
}

static void close_listeners(struct sl_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i].listener) {
            evconnlistener_free(w->listeners[i].listener); /* closes the fd */
            w->listeners[i].listener = NULL;
            w->listeners[i].fd = -1;
        } else if (w->listeners[i].fd >= 0) {
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
        if (w->listeners[i].resume_timer) {
            event_free(w->listeners[i].resume_timer);
            w->listeners[i].resume_timer = NULL;
        }
    }
}

/*
 * Write what stdout can take now, never blocking the worker: poll() says
 * POLLOUT only when a pipe has room for PIPE_BUF bytes, and no write here
 * is larger. What cannot be written stays for the next tick, up to
 * SL_ACCESS_LOG_MAX_BUFFER; beyond that lines are dropped, not buffered.
 */
static void flush_access_log(struct sl_worker *w)
{
    while (evbuffer_get_length(w->access_log) > 0) {
        struct pollfd out = {.fd = STDOUT_FILENO, .events = POLLOUT};
        if (poll(&out, 1, 0) != 1 || !(out.revents & POLLOUT))
            break;
        int n = evbuffer_write_atmost(w->access_log, STDOUT_FILENO, PIPE_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                break;
            /* stdout is gone: drop rather than grow without bound */
            evbuffer_drain(w->access_log, evbuffer_get_length(w->access_log));
            break;
        }
    }
    size_t len = evbuffer_get_length(w->access_log);
    if (len > SL_ACCESS_LOG_MAX_BUFFER) {
        w->access_log_dropped += len;
        evbuffer_drain(w->access_log, len);
    }
}

/* The flush timer runs only while lines wait, so an idle worker sleeps. */
static void arm_access_log_timer(struct sl_worker *w)
{
    if (evbuffer_get_length(w->access_log) > 0 && !evtimer_pending(w->access_log_timer, NULL)) {
        struct timeval flush = {0, SL_ACCESS_LOG_FLUSH_MS * 1000};
        evtimer_add(w->access_log_timer, &flush);
    }
}

static void access_log_tick(evutil_socket_t fd, short what, void *arg)
{
    flush_access_log(arg);
    arm_access_log_timer(arg);
}

void sl_worker_access_log(struct sl_worker *w, const char *line, size_t len)
{
    evbuffer_add(w->access_log, line, len);
    evbuffer_add(w->access_log, "\n", 1);
    if (evbuffer_get_length(w->access_log) >= SL_ACCESS_LOG_FLUSH_BYTES)
        flush_access_log(w);
    arm_access_log_timer(w);
}

void sl_worker_check_drained(struct sl_worker *w)
{
    if (w->draining && w->n_clients == 0)
        event_base_loopexit(w->base, NULL);
}

static void drain_expired(evutil_socket_t fd, short what, void *arg)
{
    struct sl_worker *w = arg;
    sl_warn("worker %d: grace period over, closing %zu connection(s)", w->index, w->n_clients);
    sl_proxy_close_all(w);
    event_base_loopexit(w->base, NULL);
}

static void worker_start_drain(struct sl_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    close_listeners(w);
    sl_upstream_pool_close_idle(w->pool);
    sl_proxy_drain(w);
    uint32_t grace = w->snapshot->cfg->node.graceful_shutdown_timeout_ms;
    struct timeval tv = {grace / 1000, (suseconds_t)(grace % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
    sl_worker_check_drained(w);
}

/* One message on a worker's control pipe; smaller than PIPE_BUF, so each
 * write(2) of one arrives whole. */
struct control_msg {
    char cmd;                     /* 'd' drain, 's' stop, 'r' new snapshot */
    struct sl_snapshot *snapshot; /* 'r': a reference that becomes the worker's */
};

static void worker_swap_snapshot(struct sl_worker *w, struct sl_snapshot *snap)
{
    struct sl_snapshot *old = w->snapshot;
    w->snapshot = snap; /* new requests use it; requests in flight hold the old one */
    sl_upstream_pool_configure(w->pool, &snap->cfg->node);
    sl_snapshot_unref(old);
}

static void control_read(evutil_socket_t fd, short what, void *arg)
{
    struct sl_worker *w = arg;
    struct control_msg msgs[8];
    ssize_t n = read(fd, msgs, sizeof msgs);
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof msgs[0]; i++) {
        switch (msgs[i].cmd) {
        case 'd':
            worker_start_drain(w);
            break;
        case 's':
            w->draining = true;
            close_listeners(w);
            close_status_listener(w);
            sl_proxy_close_all(w);
            event_base_loopexit(w->base, NULL);
            break;
        case 'r':
            worker_swap_snapshot(w, msgs[i].snapshot);
            break;
        default:
            break;
        }
    }
}

static void *worker_main(void *arg)
{
    struct sl_worker *w = arg;
    event_base_dispatch(w->base);

    /* cut whatever is left and let the deferred frees run */
    close_listeners(w);
    close_status_listener(w);
    sl_httpd_close_all(w->status);
    sl_proxy_close_all(w);
    for (int i = 0; i < 100 && w->n_clients > 0; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    /* the loop is over: now a blocking write of what is left is fine */
    while (evbuffer_get_length(w->access_log) > 0)
        if (evbuffer_write(w->access_log, STDOUT_FILENO) <= 0 && errno != EINTR)
            break;
    if (w->access_log_dropped)
        sl_warn("worker %d: %llu bytes of access log dropped (stdout too slow)", w->index,
                (unsigned long long)w->access_log_dropped);
    atomic_fetch_sub(&w->server->workers_running, 1);
    return NULL;
}

/* evdns with the configured nameservers, or those of /etc/resolv.conf. */
static bool worker_init_dns(struct sl_worker *w, const struct sl_node_config *node, char *err,
                            size_t err_size)
{
    if (node->dns_resolver[0] == '\0') {
        w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!w->dns) /* no usable resolv.conf: names come from the hosts file only */
            w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!w->dns)
            snprintf(err, err_size, "worker %d: cannot create the DNS resolver", w->index);
        return w->dns != NULL;
    }
    w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!w->dns) {
        snprintf(err, err_size, "worker %d: cannot create the DNS resolver", w->index);
        return false;
    }
    char list[sizeof node->dns_resolver];
    snprintf(list, sizeof list, "%s", node->dns_resolver);
    char *save = NULL;
    for (char *ns = strtok_r(list, ", \t", &save); ns; ns = strtok_r(NULL, ", \t", &save)) {
        if (evdns_base_nameserver_ip_add(w->dns, ns) != 0) {
            snprintf(err, err_size, "dns_resolver: cannot use nameserver '%s'", ns);
            return false;
        }
    }
    return true;
}

static int worker_init(struct sl_server *srv, struct sl_worker *w, int index, char *err,
                       size_t err_size)
{
    const struct sl_node_config *node = &srv->snapshot->cfg->node;
    w->index = index;
    w->server = srv;
    w->control_pipe[0] = w->control_pipe[1] = -1;

    struct event_config *ec = event_config_new();
    /* a worker's base is touched only by its own thread */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    /* coalesce the add/del pairs of one loop iteration into one epoll_ctl */
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base) {
        snprintf(err, err_size, "worker %d: cannot create event base", index);
        return SL_ERR;
    }
    if (!worker_init_dns(w, node, err, err_size))
        return SL_ERR;
    w->pool = sl_upstream_pool_new(w->base, w->dns);
    w->plugin_data = sl_plugins_new_worker_data();
    w->metrics = sl_metrics_new();
    w->access_log = evbuffer_new();
    w->drain_timer = evtimer_new(w->base, drain_expired, w);
    w->access_log_timer = evtimer_new(w->base, access_log_tick, w);
    if (!w->dns || !w->pool || !w->access_log || !w->drain_timer || !w->access_log_timer ||
        pipe2(w->control_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        snprintf(err, err_size, "worker %d: out of resources", index);
        return SL_ERR;
    }
    sl_upstream_pool_configure(w->pool, node);
    w->control_event =
        event_new(w->base, w->control_pipe[0], EV_READ | EV_PERSIST, control_read, w);
    if (!w->control_event || event_add(w->control_event, NULL) < 0) {
        snprintf(err, err_size, "worker %d: out of resources", index);
        return SL_ERR;
    }
    w->snapshot = sl_snapshot_ref(srv->snapshot);

    struct listener_spec specs[SL_MAX_LISTENERS];
    w->n_listeners = listener_specs(srv->snapshot->cfg, specs);
    w->listeners = calloc(w->n_listeners ? w->n_listeners : 1, sizeof *w->listeners);
    struct accept_ctx *ctxs = calloc(w->n_listeners, sizeof *ctxs);
    if (!w->listeners || !ctxs) {
        free(ctxs);
        snprintf(err, err_size, "worker %d: out of memory", index);
        return SL_ERR;
    }
    for (size_t i = 0; i < w->n_listeners; i++)
        w->listeners[i].fd = -1;
    for (size_t i = 0; i < w->n_listeners; i++) {
        const struct sl_listen *l = specs[i].listen;
        int fd = open_listener(l, index == 0, err, err_size);
        if (fd < 0) {
            free(ctxs);
            return SL_ERR;
        }
        w->listeners[i].fd = fd;
        w->listeners[i].kind = specs[i].kind;
        w->listeners[i].port = l->port;
        w->listeners[i].ssl = l->ssl;
        ctxs[i].w = w;
        ctxs[i].ls = &w->listeners[i];
        /* backlog 0: listen() was called already, with SL_LISTEN_BACKLOG */
        w->listeners[i].listener =
            evconnlistener_new(w->base, worker_accept, &ctxs[i], LEV_OPT_CLOSE_ON_FREE, 0, fd);
        if (!w->listeners[i].listener) {
            free(ctxs);
            snprintf(err, err_size, "listen %s:%u: cannot watch the socket", l->host, l->port);
            return SL_ERR;
        }
        evconnlistener_set_error_cb(w->listeners[i].listener, accept_error);
        w->listeners[i].resume_timer = evtimer_new(w->base, accept_resume, &w->listeners[i]);
        if (!w->listeners[i].resume_timer) {
            snprintf(err, err_size, "worker %d: out of resources", index);
            return SL_ERR;
        }
    }
    /* the accept contexts live as long as the worker: keep them with it */
    w->accept_ctx = ctxs;
    if (index == 0 && node->status_listen.port != 0) {
        int fd = open_listener(&node->status_listen, true, err, err_size);
        if (fd < 0)
            return SL_ERR;
        const char *role = srv->snapshot->cfg->role ? srv->snapshot->cfg->role : "gateway";
        w->status = sl_status_new(w, role, err, err_size);
        if (!w->status) {
            close(fd);
            return SL_ERR;
        }
        w->status_listener =
            evconnlistener_new(w->base, status_accept, w, LEV_OPT_CLOSE_ON_FREE, 0, fd);
        if (!w->status_listener) {
            close(fd);
            snprintf(err, err_size, "status_listen: cannot watch the socket");
            return SL_ERR;
        }
    }
    return SL_OK;
}

/* A reload can reach a worker after its loop ended: its snapshot
 * reference is still in the pipe and must be dropped. */
static void drop_pending_messages(struct sl_worker *w)
{
    struct control_msg msg;
    while (w->control_pipe[0] >= 0 && read(w->control_pipe[0], &msg, sizeof msg) == sizeof msg)
        if (msg.cmd == 'r' && msg.snapshot)
            sl_snapshot_unref(msg.snapshot);
}

static void worker_free(struct sl_worker *w)
{
    drop_pending_messages(w);
    close_listeners(w);
    close_status_listener(w);
    sl_httpd_free(w->status);
    w->status = NULL;
    free(w->listeners);
    free(w->accept_ctx);
    sl_plugins_free_worker_data(w->plugin_data);
    w->plugin_data = NULL;
    sl_metrics_free(w->metrics);
    w->metrics = NULL;
    if (w->pool)
        sl_upstream_pool_free(w->pool);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->control_event)
        event_free(w->control_event);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->access_log_timer)
        event_free(w->access_log_timer);
    if (w->access_log)
        evbuffer_free(w->access_log);
    if (w->control_pipe[0] >= 0)
        close(w->control_pipe[0]);
    if (w->control_pipe[1] >= 0)
        close(w->control_pipe[1]);
    if (w->snapshot)
        sl_snapshot_unref(w->snapshot);
    if (w->base)
        event_base_free(w->base);
}

static bool send_one(struct sl_worker *w, char cmd, struct sl_snapshot *snap);

/* Undo a start that failed: the first n_threads workers' threads are
 * running, the first n_init workers are initialised. */
static int start_failed(struct sl_server *srv, int n_init, int n_threads)
{
    for (int j = 0; j < n_threads; j++)
        send_one(&srv->workers[j], 's', NULL);
    for (int j = 0; j < n_threads; j++)
        pthread_join(srv->workers[j].thread, NULL);
    for (int j = 0; j < n_init; j++)
        worker_free(&srv->workers[j]);
    free(srv->workers);
    srv->workers = NULL;
    srv->n_workers = 0;
    sl_snapshot_unref(srv->snapshot);
    srv->snapshot = NULL;
    return SL_ERR;
}

int sl_server_start(struct sl_server *srv, struct sl_snapshot *snap, char *err, size_t err_size)
{
    pthread_mutex_init(&srv->reload_lock, NULL);
    /* glibc gives freed memory back to the kernel as soon as the top of a
     * worker's heap passes the trim threshold; with TLS record buffers
     * (16 KiB, taken and released per request) that means madvise and
     * page faults on every request: measured, a quarter of a TLS
     * keep-alive request's CPU. Fixed thresholds keep it in the heap. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    srv->snapshot = snap;
    const struct sl_config *cfg = snap->cfg;
    int n = cfg->node.worker_processes > 0 ? cfg->node.worker_processes : 1;
    srv->workers = calloc((size_t)n, sizeof *srv->workers);
    if (!srv->workers) {
        snprintf(err, err_size, "out of memory");
        return start_failed(srv, 0, 0);
    }
    srv->n_workers = n;
    /* bind everything before any thread starts, so a bad address fails fast */
    for (int i = 0; i < n; i++)
        if (worker_init(srv, &srv->workers[i], i, err, err_size) != SL_OK)
            return start_failed(srv, i + 1, 0);
    int admin_fd = -1;
    if (cfg->node.admin_listen.port != 0 &&
        (admin_fd = open_listener(&cfg->node.admin_listen, true, err, err_size)) < 0) {
        char why[256];
        snprintf(why, sizeof why, "admin_listen: %s", err);
        snprintf(err, err_size, "%s", why);
        return start_failed(srv, n, 0);
    }
    for (int i = 0; i < n; i++) {
        atomic_fetch_add(&srv->workers_running, 1);
        if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]) != 0) {
            snprintf(err, err_size, "cannot start worker thread %d", i);
            atomic_fetch_sub(&srv->workers_running, 1);
            if (admin_fd >= 0)
                close(admin_fd);
            return start_failed(srv, n, i);
        }
        srv->workers[i].started = true;
    }
    /* active health checks run on a thread of their own (health.h); without
     * it the proxy still works, on passive checks only */
    char hc_err[256];
    if (sl_health_start(srv->snapshot, hc_err, sizeof hc_err) != SL_OK)
        sl_error("%s; active health checks are off", hc_err);
    if (admin_fd >= 0) {
        char admin_err[256];
        srv->admin = sl_admin_start(srv, admin_fd, cfg->role ? cfg->role : "gateway", admin_err,
                                    sizeof admin_err);
        if (!srv->admin)
            sl_error("%s; POST /config is off", admin_err);
    }
    atomic_store(&srv->ready, true);
    return SL_OK;
}

static bool send_one(struct sl_worker *w, char cmd, struct sl_snapshot *snap)
{
    struct control_msg msg;
    memset(&msg, 0, sizeof msg); /* no uninitialised padding goes through the pipe */
    msg.cmd = cmd;
    msg.snapshot = snap;
    if (write(w->control_pipe[1], &msg, sizeof msg) != (ssize_t)sizeof msg) {
        sl_error("worker %d: control pipe: %s", w->index, strerror(errno));
        return false;
    }
    return true;
}

static void send_all(struct sl_server *srv, char cmd)
{
    for (int i = 0; i < srv->n_workers; i++)
        send_one(&srv->workers[i], cmd, NULL);
}

static bool same_listeners(const struct sl_config *a, const struct sl_config *b)
{
    struct listener_spec la[SL_MAX_LISTENERS], lb[SL_MAX_LISTENERS];
    size_t na = listener_specs(a, la), nb = listener_specs(b, lb);
    if (na != nb || a->node.worker_processes != b->node.worker_processes)
        return false;
    for (size_t i = 0; i < na; i++)
        if (la[i].kind != lb[i].kind || la[i].listen->port != lb[i].listen->port ||
            la[i].listen->ssl != lb[i].listen->ssl ||
            strcmp(la[i].listen->host, lb[i].listen->host) != 0)
            return false;
    return true;
}

void sl_server_reload(struct sl_server *srv, struct sl_snapshot *snap)
{
    pthread_mutex_lock(&srv->reload_lock);
    if (!same_listeners(srv->snapshot->cfg, snap->cfg))
        sl_warn("reload: listener and worker_processes changes take effect on restart");
    for (int i = 0; i < srv->n_workers; i++) {
        sl_snapshot_ref(snap);
        if (!send_one(&srv->workers[i], 'r', snap))
            sl_snapshot_unref(snap);
    }
    sl_health_update(snap);
    struct sl_snapshot *old = srv->snapshot;
    srv->snapshot = snap;
    sl_snapshot_unref(old);
    pthread_mutex_unlock(&srv->reload_lock);
}

void sl_server_drain(struct sl_server *srv)
{
    atomic_store(&srv->ready, false);
    send_all(srv, 'd');
}

void sl_server_stop(struct sl_server *srv)
{
    atomic_store(&srv->ready, false);
    send_all(srv, 's');
}

void sl_server_join(struct sl_server *srv)
{
    sl_admin_stop(srv->admin); /* no reload may start from now on */
    srv->admin = NULL;
    for (int i = 0; i < srv->n_workers; i++)
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].thread, NULL);
    for (int i = 0; i < srv->n_workers; i++)
        worker_free(&srv->workers[i]);
    free(srv->workers);
    srv->workers = NULL;
    srv->n_workers = 0;
    sl_health_stop();
    sl_snapshot_unref(srv->snapshot);
    srv->snapshot = NULL;
    sl_balancer_registry_sweep(); /* every balancer is gone: free the health entries */
}
