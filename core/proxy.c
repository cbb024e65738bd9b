/*
 * The proxy: one client connection, one request at a time (pipelined
 * requests wait in the input buffer), bodies streamed both ways.
 *
 *   HEAD -> (route, build upstream head) -> CONNECTING -> PROXYING
 *        -> response done -> flush -> next request, IDLE, or close.
 *
 * Backpressure: while the peer's output holds more than SL_HIGH_WATER bytes
 * the other side's reading is disabled; the write watermark callback turns
 * it back on once the output drained to SL_LOW_WATER.
 *
 * An idle keep-alive client holds no bufferevent and no buffer: only its
 * struct and one read event (see client_go_idle()).
 */
#include "proxy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "balancer.h"
#include "http1.h"
#include "log.h"
#include "metrics.h"
#include "plugin_runtime.h"
#include "reader.h"
#include "router.h"
#include "server.h"
#include "tls.h"
#include "upstream.h"
#include "util.h"

#define SL_HIGH_WATER (256 * 1024)
#define SL_LOW_WATER (64 * 1024)
#define SL_MAX_RESPONSE_HEAD 65536
#define SL_MAX_HEADERS_ARRAY 1024
#define SL_LINGER_MS 2000
/* A keep-alive connection keeps its (empty) bufferevent this long before it
 * goes cold; busy clients then never pay a free/alloc and epoll_ctl churn. */
#define SL_HOT_IDLE_MS 100
#define SL_MAX_PATH 8192
#define SL_MAX_CLIENT_REQUEST_ID 200

static const char MSG_NO_ROUTE[] = "no Route matched with those values";
static const char MSG_BAD_GATEWAY[] = "An invalid response was received from the upstream server";
static const char MSG_TIMEOUT[] = "The upstream server is timing out";
static const char MSG_DNS[] = "name resolution failed";

enum client_state {
    CS_HEAD,       /* waiting for / reading a request head */
    CS_UPSTREAM,   /* head parsed, request being proxied */
    CS_FLUSH,      /* response complete, waiting for the output to drain */
    CS_ERROR_SENT, /* an error response is being flushed, then close */
    CS_LINGER,     /* write side shut, discarding input until EOF or timer */
    CS_KEEPALIVE,  /* keep-alive, recently active: bufferevent kept, buffers empty */
    CS_IDLE,       /* keep-alive, cold: no bufferevent, one read event */
    CS_CLOSED,     /* waiting for the deferred free */
};

enum conn_activity { ACT_NONE, ACT_READING, ACT_WRITING, ACT_WAITING };

struct sl_request {
    struct sl_client *client;
    struct sl_snapshot *snap;
    struct sl_router_match match;
    char request_id[SL_MAX_CLIENT_REQUEST_ID + 1];
    char method[32];
    char log_path[256];
    bool is_head;
    bool client_keep_alive;
    int client_minor;
    bool wants_text_errors;
    bool expect_continue;

    /* request body, client -> upstream */
    enum sl_http_body_kind req_body_kind;
    uint64_t req_remaining;
    struct sl_chunked_scanner req_chunked;
    uint64_t req_body_bytes;
    bool req_body_done;
    bool req_body_started; /* a body byte went upstream: no more retries */
    /* a plugin reads the whole body (sl_plugin_read_body): the bytes stay
     * in the client's input until it is complete, scanned so far */
    bool collecting;
    size_t collect_scanned;
    struct sl_chunked_scanner collect_chunked;
    struct event *collect_ev; /* calls the plugin back from the loop */
    bool collect_too_large;   /* over the plugin's bound: streamed untouched */
    size_t collect_raw_len;   /* input bytes the body takes (framing included) */
    bool body_replaced;       /* the plugin's body goes upstream instead */

    /* upstream */
    struct evbuffer *up_head; /* kept until the response starts, for retries */
    struct sl_upstream_pending *pending;
    struct sl_upstream_conn *up;
    unsigned tries;
    bool up_reused_failed;

    /* response, upstream -> client */
    bool resp_head_sent;
    int status;
    enum sl_http_body_kind resp_body_kind;
    uint64_t resp_remaining;
    struct sl_chunked_scanner resp_chunked;
    struct sl_chunked_scanner resp_filter_chunked; /* body_filter's own walk */
    bool body_filter_done;                         /* its last call was made */
    bool resp_keep_alive;
    bool resp_done;
    bool resp_until_close;
    bool resp_dechunk; /* chunked from upstream, plain to an HTTP/1.0 client */

    uint64_t bytes_in, bytes_out;
    uint64_t start_us, upstream_start_us, upstream_head_us;

    /* the authenticated consumer, set by an auth plugin (issue 4); NULL
     * until then. Owned by the snapshot. */
    const struct sl_consumer *consumer;

    /* the parsed head; see struct request_head */
    struct request_head *head;
    bool head_owned; /* head is a heap copy (else it is on the stack, or NULL) */
    /* head bytes still at the front of the client's input (drained once
     * nothing points into them any more) */
    size_t head_in_input;
    /* plugins (plugin_runtime.h); NULL when the configuration has none */
    struct sl_plugin_ctx *plugins;
    enum { STAGE_REWRITE, STAGE_ACCESS } stage; /* where a suspended plugin resumes */

    /* load balancing (balancer.h), for a service whose host is an upstream:
     * the hash input, the target in use (counted by least-connections until
     * request_free) and the targets tried; all zero otherwise */
    struct sl_lb_state lb;
    /* where the connection goes (the service's host, or the picked target;
     * owned by the snapshot), and where in up_head its Host line belongs
     * (0: up_head has one already) */
    const char *target_host;
    uint16_t target_port;
    size_t up_head_host_at;
    /* hash_on cookie without the cookie: the value made up, set on the
     * response (Kong); empty otherwise */
    char lb_cookie[17];
};

/*
 * What the proxy keeps of a request head. Without plugins it lives on the
 * stack of try_parse_head() and points into the client's input; with
 * plugins (which may suspend the request) it is a heap copy owned by the
 * request, freed with it.
 */
struct request_head {
    struct sl_http_request req; /* headers point into buf (copy) or the input */
    const char *path;           /* normalised, no query */
    size_t path_len;
    const char *query; /* with its '?', or NULL */
    size_t query_len;
    const char *host_name; /* Host without port, or NULL */
    size_t host_name_len;
    const char *authority; /* host[:port] as the client sent it, or NULL */
    size_t authority_len;
    char *buf; /* the copy: head bytes, then the path */
    struct sl_http_header *headers;
};

struct sl_client {
    struct sl_worker *w;
    int fd;
    enum client_state state;
    enum conn_activity activity;
    struct bufferevent *bev; /* NULL while idle; does the writes */
    struct sl_reader rd;     /* reads (reader.h); lives with bev */
    struct event *timer;     /* header / body-total / linger deadline; lives with bev */
    struct event *deferred;  /* runs after-callback work; lives with bev */
    struct event *idle_ev;   /* only while idle */
    struct sl_request *req;
    struct sockaddr_storage peer;
    char peer_ip[46];
    uint16_t listen_port;
    /* TLS (an ssl listener): the session, and until its handshake is done
     * the snapshot whose certificates it uses (the SNI callback reads
     * them); a TLS connection keeps its bufferevent while idle */
    SSL *ssl;
    struct sl_snapshot *tls_snap;
    bool tls_idle_long; /* keep-alive: past the hot idle period */
    bool peer_trusted;
    bool close_after;    /* close once the current response is flushed */
    bool got_head_bytes; /* the current request sent at least one byte */
    bool peer_eof;       /* the client shut its write side */
    uint32_t head_seen;  /* bytes of the current head already parsed as incomplete */
    uint32_t requests_served;
    struct sl_client *next, *prev;
};

static void client_read(struct bufferevent *bev, void *arg);
static void client_write(struct bufferevent *bev, void *arg);
static void client_event(struct bufferevent *bev, short what, void *arg);
static void client_close(struct sl_client *c);
static void client_timer(evutil_socket_t fd, short what, void *arg);
static void client_deferred(evutil_socket_t fd, short what, void *arg);
static bool client_attach(struct sl_client *c);
static void try_parse_head(struct sl_client *c);
static bool request_keep_head(struct sl_request *r, const char *data, size_t head_len);
static void request_head_free(struct sl_request *r);
static void release_head_bytes(struct sl_request *r);
static bool request_plugins_init(struct sl_request *r);
static bool request_run_plugins(struct sl_request *r);
static void request_route(struct sl_request *r);
static void request_proxy(struct sl_request *r);
static void finish_local_response(struct sl_request *r, int status, const char *content_type,
                                  const char *body, size_t body_len);
static void respond_local(struct sl_request *r, int status, const char *message,
                          const char *content_type, const char *body, size_t body_len,
                          const char *extra_headers);
static void request_free(struct sl_request *r);
static void start_upstream(struct sl_request *r, bool allow_reuse);
static void forward_request_body(struct sl_request *r);
static void collect_request_body(struct sl_request *r);
static void forward_response_body(struct sl_request *r);
static void finish_response(struct sl_request *r);
static void abort_request(struct sl_request *r, int status, const char *message);
static void client_linger(struct sl_client *c);
static void client_after_response(struct sl_client *c);
static void add_header_line(struct evbuffer *out, const char *name, size_t name_len,
                            const char *value, size_t value_len);

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static struct timeval ms_to_tv(uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static const struct sl_node_config *node_of(struct sl_client *c)
{
    return &c->w->snapshot->cfg->node;
}

static void set_activity(struct sl_client *c, enum conn_activity a)
{
    struct sl_worker_stats *s = &c->w->stats;
    if (c->activity == a)
        return;
    switch (c->activity) {
    case ACT_READING:
        atomic_fetch_sub_explicit(&s->connections_reading, 1, memory_order_relaxed);
        break;
    case ACT_WRITING:
        atomic_fetch_sub_explicit(&s->connections_writing, 1, memory_order_relaxed);
        break;
    case ACT_WAITING:
        atomic_fetch_sub_explicit(&s->connections_waiting, 1, memory_order_relaxed);
        break;
    case ACT_NONE:
        break;
    }
    switch (a) {
    case ACT_READING:
        atomic_fetch_add_explicit(&s->connections_reading, 1, memory_order_relaxed);
        break;
    case ACT_WRITING:
        atomic_fetch_add_explicit(&s->connections_writing, 1, memory_order_relaxed);
        break;
    case ACT_WAITING:
        atomic_fetch_add_explicit(&s->connections_waiting, 1, memory_order_relaxed);
        break;
    case ACT_NONE:
        break;
    }
    c->activity = a;
}

static void timer_arm(struct sl_client *c, uint32_t ms)
{
    if (!c->timer)
        return;
    struct timeval tv = ms_to_tv(ms);
    evtimer_add(c->timer, &tv);
}

static void timer_stop(struct sl_client *c)
{
    if (c->timer)
        evtimer_del(c->timer);
}

static void defer(struct sl_client *c)
{
    if (c->deferred)
        event_active(c->deferred, EV_TIMEOUT, 0);
}

/*
 * write_now() for a TLS bufferevent. libevent 2.1's OpenSSL bufferevent
 * writes only from its write event: enabling writing costs an epoll_ctl to
 * add the event, a loop iteration, and another epoll_ctl to remove it. So,
 * as nginx does, the response goes out here with SSL_write, in one record
 * when it fits one. This is safe only while libevent has no write of its
 * own in progress: writing is disabled exactly when the output was empty
 * after the last write (write_now enables it otherwise, client_write and
 * up_write disable it when drained), so no retry of a partial SSL_write is
 * pending. Whatever the socket does not take, libevent writes from its
 * event, retrying with the same bytes at the same place (the bytes stay at
 * the front of the output until written).
 */
#define SL_TLS_RECORD 16384
static bool tls_write_now(struct bufferevent *bev, struct evbuffer *out)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (bufferevent_get_enabled(bev) & EV_WRITE)
        return evbuffer_get_length(out) == 0; /* libevent's write is under way */
    while (evbuffer_get_length(out) > 0) {
        size_t len = evbuffer_get_length(out);
        if (len > SL_TLS_RECORD)
            len = SL_TLS_RECORD;
        const void *data = evbuffer_pullup(out, (ev_ssize_t)len);
        if (!data)
            break;
        ERR_clear_error();
        int n = SSL_write(ssl, data, (int)len);
        if (n <= 0) {
            /* blocked (libevent retries the same bytes) or failed (libevent
             * meets the error again and reports it to the event callback) */
            bufferevent_enable(bev, EV_WRITE);
            return false;
        }
        evbuffer_drain(out, (size_t)n);
    }
    /* libevent armed the write event when the bytes were queued (in this
     * loop iteration): disarming it now cancels both in the changelist,
     * no epoll_ctl at all */
    bufferevent_disable(bev, EV_WRITE);
    return true;
}

/*
 * Write queued output now, from the callback that queued it, the way nginx
 * does, instead of arming the write event and writing on the next loop
 * iteration: that saves two epoll_ctl calls per write. Only when the socket
 * cannot take everything does the bufferevent's write event take over; its
 * callback runs once the output drained to the low watermark. A write error
 * is left for that write event to report. True when the output is empty.
 */
static bool write_now(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (bufferevent_openssl_get_ssl(bev) != NULL)
        return tls_write_now(bev, out);
    /* libevent keeps the start of a bufferevent's output frozen outside its
     * own write callback; thaw it for this write, as that callback does */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, bufferevent_getfd(bev));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0) {
        bufferevent_disable(bev, EV_WRITE);
        return true;
    }
    bufferevent_enable(bev, EV_WRITE);
    return false;
}

/*
 * Run the chunked scanner over all of `in` without consuming it. Returns
 * how many bytes belong to the body (all of them, or up to its end), or -1
 * on a framing error.
 */
static long scan_chunked_from(struct sl_chunked_scanner *s, struct evbuffer *in, size_t offset)
{
    size_t total = offset, len = evbuffer_get_length(in);
    while (total < len && !s->done) {
        struct evbuffer_ptr pos;
        if (evbuffer_ptr_set(in, &pos, total, EVBUFFER_PTR_SET) < 0)
            break;
        struct evbuffer_iovec vec[16];
        int n = evbuffer_peek(in, -1, &pos, vec, 16);
        if (n <= 0)
            break;
        for (int i = 0; i < n && i < 16 && !s->done; i++) {
            long used = sl_chunked_scan(s, vec[i].iov_base, vec[i].iov_len);
            if (used < 0)
                return -1;
            total += (size_t)used;
        }
    }
    return (long)(total - offset);
}

static long scan_chunked_input(struct sl_chunked_scanner *s, struct evbuffer *in)
{
    return scan_chunked_from(s, in, 0);
}

static bool header_is_connection_named(const struct sl_http_header *h,
                                       const struct sl_http_header *headers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (headers[i].id != SL_HDR_CONNECTION)
            continue;
        if (sl_http_list_has_token(headers[i].value, headers[i].value_len, h->name, h->name_len))
            return true;
    }
    return false;
}

static bool is_hop_by_hop(enum sl_http_header_id id)
{
    switch (id) {
    case SL_HDR_CONNECTION:
    case SL_HDR_KEEP_ALIVE:
    case SL_HDR_PROXY_CONNECTION:
    case SL_HDR_TE:
    case SL_HDR_TRAILER:
    case SL_HDR_UPGRADE:
    case SL_HDR_TRANSFER_ENCODING:
    case SL_HDR_CONTENT_LENGTH:
        return true;
    default:
        return false;
    }
}

static const struct sl_http_header *find_header(const struct sl_http_header *headers, size_t n,
                                                enum sl_http_header_id id)
{
    for (size_t i = 0; i < n; i++)
        if (headers[i].id == id)
            return &headers[i];
    return NULL;
}

/* Kong picks the error format from Accept; JSON unless only text is wanted. */
static bool accept_wants_text(const struct sl_http_header *accept)
{
    if (!accept)
        return false;
    const char *v = accept->value;
    size_t n = accept->value_len;
    bool json = memmem(v, n, "application/json", 16) || memmem(v, n, "*/*", 3);
    bool text = memmem(v, n, "text/plain", 10) != NULL;
    return text && !json;
}

/* ------------------------------------------------------------------------ */
/* error responses                                                           */

/* Header lines a plugin asked for on the client's response. */
static void add_response_edits(struct evbuffer *out, const struct sl_plugin_ctx *pctx)
{
    for (const struct sl_header_edit *e = pctx ? pctx->response_edits : NULL; e; e = e->next)
        if (e->op != SL_EDIT_REMOVE)
            add_header_line(out, e->name, e->name_len, e->value, e->value_len);
}

/* Does a plugin replace or remove this response/upstream header? */
static bool edit_overrides(const struct sl_header_edit *edits, const char *name, size_t name_len)
{
    for (const struct sl_header_edit *e = edits; e; e = e->next)
        if (e->op != SL_EDIT_ADD && e->name_len == name_len &&
            strncasecmp(e->name, name, name_len) == 0)
            return true;
    return false;
}

/*
 * A response of our own (an error, or a plugin's). content_type NULL: no
 * body. head_only: the answer to a HEAD request carries the length, not
 * the body.
 */
static void write_local_response(struct sl_client *c, const struct sl_plugin_ctx *pctx, int status,
                                 const char *content_type, const char *body, size_t body_len,
                                 const char *request_id, bool close_conn, bool head_only,
                                 const char *extra_headers)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, sl_http_reason(status));
    const struct sl_header_edit *edits = pctx ? pctx->response_edits : NULL;
    if (content_type && !edit_overrides(edits, "Content-Type", 12))
        evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    evbuffer_add_printf(out,
                        "Content-Length: %zu\r\n"
                        "Server: sluice\r\n"
                        "X-Request-Id: %s\r\n",
                        body_len, request_id);
    if (extra_headers)
        evbuffer_add(out, extra_headers, strlen(extra_headers));
    add_response_edits(out, pctx);
    evbuffer_add_printf(out, "%s\r\n", close_conn ? "Connection: close\r\n" : "");
    if (!head_only && body_len)
        evbuffer_add(out, body, body_len);
}

static void write_error_response(struct sl_client *c, const struct sl_plugin_ctx *pctx, int status,
                                 const char *message, const char *request_id, bool text,
                                 bool close_conn, bool head_only, const char *extra_headers)
{
    char body[2048];
    int body_len;
    if (text) {
        body_len = snprintf(body, sizeof body, "%s\nrequest_id: %s\n", message, request_id);
    } else {
        /* the id may be the client's own X-Request-Id: escape it too */
        char esc[256], rid[SL_MAX_CLIENT_REQUEST_ID * 6 + 1];
        if (sl_json_escape(message, strlen(message), esc, sizeof esc) < 0)
            esc[0] = '\0';
        if (sl_json_escape(request_id, strlen(request_id), rid, sizeof rid) < 0)
            rid[0] = '\0';
        body_len =
            snprintf(body, sizeof body, "{\"message\":\"%s\",\"request_id\":\"%s\"}", esc, rid);
    }
    if (body_len < 0 || (size_t)body_len >= sizeof body)
        body_len = 0;
    write_local_response(c, pctx, status,
                         text ? "text/plain; charset=utf-8" : "application/json; charset=utf-8",
                         body, (size_t)body_len, request_id, close_conn, head_only, extra_headers);
}

/* Refuse the request: answer, then close (lingering) after the flush. */
static void client_fail(struct sl_client *c, int status, const char *message)
{
    char rid[SL_REQUEST_ID_LEN + 1];
    const char *request_id = rid;
    bool text = false;
    if (c->req) {
        request_id = c->req->request_id;
        text = c->req->wants_text_errors;
    } else {
        sl_request_id(rid);
    }
    timer_stop(c);
    sl_reader_disable(&c->rd);
    write_error_response(c, NULL, status, message, request_id, text, true,
                         c->req && c->req->is_head, NULL);
    c->state = CS_ERROR_SENT;
    set_activity(c, ACT_WRITING);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (write_now(c->bev))
        client_linger(c);
}

/* ------------------------------------------------------------------------ */
/* lifecycle                                                                 */

void sl_proxy_accept(struct sl_worker *w, int fd, const struct sockaddr *peer, int peer_len,
                     uint16_t listen_port, bool ssl)
{
    struct sl_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->fd = fd;
    memcpy(&c->peer, peer, (size_t)peer_len < sizeof c->peer ? (size_t)peer_len : sizeof c->peer);
    sl_sockaddr_text(peer, c->peer_ip, sizeof c->peer_ip, NULL);
    c->listen_port = listen_port;
    if (ssl)
        c->tls_snap = sl_snapshot_ref(w->snapshot);
    c->peer_trusted = sl_config_ip_trusted(&w->snapshot->cfg->node, peer);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->n_clients++;
    atomic_fetch_add_explicit(&w->stats.connections_accepted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.connections_handled, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.connections_active, 1, memory_order_relaxed);

    if (!client_attach(c)) {
        client_close(c);
        return;
    }
    c->state = CS_HEAD;
    set_activity(c, ACT_READING);
    /* client_header_timeout counts from accept for the first request */
    timer_arm(c, node_of(c)->client_header_timeout_ms);
    sl_reader_enable(&c->rd);
}

/* Give the connection its bufferevent and timers (accept, or waking from idle). */
static bool client_attach(struct sl_client *c)
{
    if (c->tls_snap) {
        if (!c->tls_snap->tls || !(c->ssl = sl_tls_new_ssl(c->tls_snap->tls)))
            return false;
        /* the bufferevent reads and writes through OpenSSL; it never frees
         * the SSL or closes the socket (client_free does) */
        c->bev =
            bufferevent_openssl_socket_new(c->w->base, c->fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING, 0);
    } else {
        c->bev = bufferevent_socket_new(c->w->base, c->fd, 0);
    }
    c->timer = evtimer_new(c->w->base, client_timer, c);
    c->deferred = evtimer_new(c->w->base, client_deferred, c);
    if (!c->bev || !c->timer || !c->deferred)
        return false;
    if (!(c->ssl ? sl_reader_init_bev(&c->rd, c->bev) : sl_reader_init(&c->rd, c->bev)))
        return false;
    sl_reader_setcb_all(&c->rd, client_read, client_write, client_event, c);
    /* output is written by write_now(); the write event only when it must */
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_setwatermark(c->bev, EV_WRITE, SL_LOW_WATER, 0);
    /* a client that stops reading our writes is cut after send_timeout
     * (the write event, and so this timer, runs only while output waits) */
    sl_reader_set_write_timeout(&c->rd, node_of(c)->send_timeout_ms);
    /* reading stays enabled; this bounds what a client can queue up */
    sl_reader_set_high_water(&c->rd, node_of(c)->max_header_bytes + SL_HIGH_WATER);
    return true;
}

static void client_detach(struct sl_client *c)
{
    if (c->bev) {
        sl_reader_free(&c->rd);
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->timer) {
        event_free(c->timer);
        c->timer = NULL;
    }
    if (c->deferred) {
        event_free(c->deferred);
        c->deferred = NULL;
    }
}

static void client_free(struct sl_client *c)
{
    struct sl_worker *w = c->w;
    client_detach(c);
    if (c->idle_ev)
        event_free(c->idle_ev);
    if (c->ssl) {
        /* close_notify, best effort (the socket is non-blocking), unless
         * client_linger sent it already */
        if (SSL_is_init_finished(c->ssl) && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN))
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->tls_snap)
        sl_snapshot_unref(c->tls_snap);
    if (c->fd >= 0)
        close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_clients--;
    set_activity(c, ACT_NONE);
    atomic_fetch_sub_explicit(&w->stats.connections_active, 1, memory_order_relaxed);
    free(c);
    sl_worker_check_drained(w);
}

static void client_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct sl_client *c = arg;
    if (c->state == CS_CLOSED) {
        client_free(c);
        return;
    }
    if (c->state == CS_HEAD)
        try_parse_head(c);
}

/* Close now (from any callback): the memory goes in a deferred callback. */
static void client_close(struct sl_client *c)
{
    if (c->req) {
        request_free(c->req);
        c->req = NULL;
    }
    c->state = CS_CLOSED;
    if (c->bev) {
        sl_reader_disable(&c->rd);
        bufferevent_disable(c->bev, EV_WRITE);
    }
    timer_stop(c);
    if (c->deferred)
        defer(c);
    else
        client_free(c);
}

/* After an error: shut the write side and discard input for a while so the
 * peer reads our answer instead of a reset (nginx's lingering close). */
static void client_linger(struct sl_client *c)
{
    /* TLS: close_notify goes before the FIN (after it, the write fails) */
    if (c->ssl && SSL_is_init_finished(c->ssl) && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(c->ssl);
    if (shutdown(c->fd, SHUT_WR) < 0) {
        client_close(c);
        return;
    }
    c->state = CS_LINGER;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in)); /* else a full input never resumes reading */
    sl_reader_set_timeout(&c->rd, 0);
    sl_reader_enable(&c->rd);
    timer_arm(c, SL_LINGER_MS);
}

static void idle_wake(evutil_socket_t fd, short what, void *arg);

/* Keep-alive, cold: drop the bufferevent and timers, wait with one event. */
static void client_go_idle(struct sl_client *c, uint32_t keepalive_left_ms)
{
    client_detach(c);
    c->state = CS_IDLE;
    set_activity(c, ACT_WAITING);
    if (c->w->draining) {
        client_close(c);
        return;
    }
    c->idle_ev = event_new(c->w->base, c->fd, EV_READ, idle_wake, c);
    if (!c->idle_ev) {
        client_close(c);
        return;
    }
    struct timeval tv = ms_to_tv(keepalive_left_ms);
    event_add(c->idle_ev, &tv);
}

/* Keep-alive, hot: buffers are empty (libevent frees drained chains). */
static void client_keepalive(struct sl_client *c)
{
    uint32_t keepalive = node_of(c)->keepalive_timeout_ms;
    c->tls_idle_long = false;
    c->state = CS_KEEPALIVE;
    set_activity(c, ACT_WAITING);
    timer_arm(c, keepalive < SL_HOT_IDLE_MS ? keepalive : SL_HOT_IDLE_MS);
}

static void idle_wake(evutil_socket_t fd, short what, void *arg)
{
    struct sl_client *c = arg;
    event_free(c->idle_ev);
    c->idle_ev = NULL;
    if (what & EV_TIMEOUT) {
        client_close(c);
        return;
    }
    if (!client_attach(c)) {
        client_close(c);
        return;
    }
    c->state = CS_HEAD;
    c->got_head_bytes = false;
    c->head_seen = 0;
    set_activity(c, ACT_READING);
    timer_arm(c, node_of(c)->client_header_timeout_ms);
    sl_reader_enable(&c->rd);
}

/* The response went out: next request, idle, or close. */
static void client_after_response(struct sl_client *c)
{
    if (c->req) {
        request_free(c->req);
        c->req = NULL;
    }
    c->requests_served++;
    if (c->close_after || c->w->draining || c->requests_served >= node_of(c)->keepalive_requests) {
        client_linger(c);
        return;
    }
    c->got_head_bytes = false;
    c->head_seen = 0;
    sl_reader_set_timeout(&c->rd, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, SL_LOW_WATER, 0);
    bool more = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0;
    if (c->peer_eof && !more) {
        client_close(c);
        return;
    }
    if (!c->peer_eof)
        sl_reader_enable(&c->rd);
    if (more) {
        /* a pipelined request is already here */
        c->state = CS_HEAD;
        set_activity(c, ACT_READING);
        timer_arm(c, node_of(c)->client_header_timeout_ms);
        defer(c);
        return;
    }
    client_keepalive(c);
}

void sl_proxy_drain(struct sl_worker *w)
{
    struct sl_client *c = w->clients;
    while (c) {
        struct sl_client *next = c->next;
        if (c->state == CS_IDLE || c->state == CS_KEEPALIVE ||
            (c->state == CS_HEAD && !c->got_head_bytes &&
             evbuffer_get_length(bufferevent_get_input(c->bev)) == 0))
            client_close(c);
        else
            c->close_after = true;
        c = next;
    }
}

void sl_proxy_close_all(struct sl_worker *w)
{
    struct sl_client *c = w->clients;
    while (c) {
        struct sl_client *next = c->next;
        if (c->state != CS_CLOSED)
            client_close(c);
        c = next;
    }
}

/* ------------------------------------------------------------------------ */
/* client callbacks                                                          */

static void client_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_client *c = arg;
    switch (c->state) {
    case CS_KEEPALIVE: {
        uint32_t keepalive = node_of(c)->keepalive_timeout_ms;
        if (keepalive <= SL_HOT_IDLE_MS)
            client_close(c);
        else if (c->ssl && !c->tls_idle_long) {
            /* the TLS session lives in the bufferevent: no cold idle, the
             * rest of keepalive_timeout on the same timer */
            c->tls_idle_long = true;
            timer_arm(c, keepalive - SL_HOT_IDLE_MS);
        } else if (c->ssl) {
            client_close(c);
        } else
            client_go_idle(c, keepalive - SL_HOT_IDLE_MS);
        break;
    }
    case CS_HEAD:
        if (c->got_head_bytes)
            client_fail(c, 408, "Request timeout");
        else
            client_close(c);
        break;
    case CS_UPSTREAM:
        /* client_body_total_timeout */
        if (c->req && !c->req->resp_head_sent) {
            struct sl_request *r = c->req;
            abort_request(r, 408, "Request timeout");
        } else {
            client_close(c);
        }
        break;
    default:
        client_close(c);
        break;
    }
}

static void client_read(struct bufferevent *bev, void *arg)
{
    struct sl_client *c = arg;
    switch (c->state) {
    case CS_KEEPALIVE:
        c->state = CS_HEAD;
        set_activity(c, ACT_READING);
        timer_stop(c);
        try_parse_head(c);
        break;
    case CS_HEAD:
        try_parse_head(c);
        break;
    case CS_UPSTREAM:
        /* before the upstream is connected, and after the body, bytes wait
         * in the input (bounded by the read watermark) */
        if (c->req && c->req->up && !c->req->req_body_done)
            forward_request_body(c->req);
        else if (c->req && c->req->collecting)
            collect_request_body(c->req);
        break;
    case CS_LINGER:
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        break;
    default:
        break;
    }
}

static void client_write(struct bufferevent *bev, void *arg)
{
    struct sl_client *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* back to writing directly */
    switch (c->state) {
    case CS_UPSTREAM: {
        struct sl_request *r = c->req;
        /* backpressure released: read more of the response */
        if (r && r->up && r->resp_head_sent && !r->resp_done)
            sl_reader_enable(&r->up->rd);
        break;
    }
    case CS_FLUSH:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_after_response(c);
        break;
    case CS_ERROR_SENT:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_linger(c);
        break;
    default:
        break;
    }
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake done: the SNI callback has run, the snapshot it
         * read may go */
        sl_snapshot_unref(c->tls_snap);
        c->tls_snap = NULL;
        return;
    }
    if (c->ssl && (what & BEV_EVENT_ERROR) && !SSL_is_init_finished(c->ssl)) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char why[256] = "connection closed";
        if (e)
            ERR_error_string_n(e, why, sizeof why);
        sl_info("client %s: TLS handshake failed: %s", c->peer_ip, why);
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
        sl_info("client %s: not reading the response for send_timeout; closing", c->peer_ip);
        client_close(c);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && c->state == CS_UPSTREAM && c->req &&
        !c->req->resp_head_sent) {
        /* client_body_timeout: too long between two reads of the body */
        abort_request(c->req, 408, "Request timeout");
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == CS_UPSTREAM && c->req &&
        !c->req->req_body_done) {
        /* the body may be complete in the input already (the upstream is
         * not connected yet): forward_request_body() decides */
        c->peer_eof = true;
        sl_reader_disable(&c->rd);
        if (c->req->up)
            forward_request_body(c->req);
        else if (c->req->collecting)
            collect_request_body(c->req);
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        ((c->state == CS_UPSTREAM && c->req && c->req->req_body_done) || c->state == CS_FLUSH)) {
        /* half-close after complete requests: answer them all, then close */
        c->peer_eof = true;
        sl_reader_disable(&c->rd);
        return;
    }
    client_close(c);
}

/* ------------------------------------------------------------------------ */
/* request head                                                              */

static void split_host_port(const char *host, size_t len, const char **name, size_t *name_len)
{
    *name = host;
    *name_len = len;
    if (len > 0 && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        if (end) {
            *name = host + 1;
            *name_len = (size_t)(end - host - 1);
        }
        return;
    }
    const char *colon = memchr(host, ':', len);
    if (colon)
        *name_len = (size_t)(colon - host);
}

static void add_header_line(struct evbuffer *out, const char *name, size_t name_len,
                            const char *value, size_t value_len)
{
    evbuffer_add(out, name, name_len);
    evbuffer_add(out, ": ", 2);
    evbuffer_add(out, value, value_len);
    evbuffer_add(out, "\r\n", 2);
}

/* Via (RFC 9110 section 7.6.3), on requests and responses alike: our hop
 * is appended to what the message already carried. */
static void add_via(struct evbuffer *out, const struct sl_http_header *via)
{
    if (via)
        evbuffer_add_printf(out, "Via: %.*s, 1.1 sluice\r\n", (int)via->value_len, via->value);
    else
        evbuffer_add(out, "Via: 1.1 sluice\r\n", 17);
}

/*
 * The request head going upstream. Kong's rules: hop-by-hop headers out,
 * X-Forwarded-* from the client only when it is trusted, X-Forwarded-For
 * always appended to.
 */
/* `authority`: the client's host[:port], from an absolute-form target if
 * there is one (RFC 9112 section 3.2.2: it replaces Host), else from Host. */
static bool build_upstream_head(struct sl_request *r, const struct sl_http_request *req,
                                const char *path, size_t path_len, const char *query,
                                size_t query_len, const char *host, size_t host_len,
                                const char *authority, size_t authority_len)
{
    struct sl_client *c = r->client;
    const struct sl_service *svc = r->match.service;
    const struct sl_route *route = r->match.route;
    struct evbuffer *out = r->up_head;
    const struct sl_plugin_ctx *pctx = r->plugins;
    char upath[SL_MAX_PATH + 2];
    if (pctx && pctx->up_method)
        evbuffer_add(out, pctx->up_method, strlen(pctx->up_method));
    else
        evbuffer_add(out, req->method, req->method_len);
    evbuffer_add(out, " ", 1);
    if (pctx && pctx->up_path) {
        evbuffer_add(out, pctx->up_path, pctx->up_path_len); /* a plugin's, as is */
    } else {
        long upath_len = sl_router_upstream_path(&r->match, path, path_len, upath, sizeof upath);
        if (upath_len < 0)
            return false;
        evbuffer_add(out, upath, (size_t)upath_len);
    }
    if (pctx && pctx->up_query) {
        if (pctx->up_query_len) {
            evbuffer_add(out, "?", 1);
            evbuffer_add(out, pctx->up_query, pctx->up_query_len);
        }
    } else if (query_len) {
        evbuffer_add(out, query, query_len);
    }
    /* always HTTP/1.1 upstream, as Kong does: keep-alive works the same for
     * every client, and a chunked answer to an HTTP/1.0 client is de-chunked */
    evbuffer_add(out, " HTTP/1.1\r\n", 11);

    const struct sl_header_edit *up_edits = r->plugins ? r->plugins->upstream_edits : NULL;
    if (edit_overrides(up_edits, "Host", 4))
        ; /* a plugin's Host goes out with the other edits */
    else if (route->preserve_host && authority)
        add_header_line(out, "Host", 4, authority, authority_len);
    else if (svc->upstream)
        /* Kong: the picked target's host (or the upstream's host_header),
         * known only when connecting; upstream_connected() inserts it here */
        r->up_head_host_at = evbuffer_get_length(out);
    else if (svc->port == (strcmp(svc->protocol, "https") == 0 ? 443 : 80))
        evbuffer_add_printf(out, "Host: %s\r\n", svc->host);
    else if (strchr(svc->host, ':'))
        evbuffer_add_printf(out, "Host: [%s]:%u\r\n", svc->host, svc->port);
    else
        evbuffer_add_printf(out, "Host: %s:%u\r\n", svc->host, svc->port);

    bool trusted = c->peer_trusted;
    const struct sl_http_header *xff_values[16];
    size_t n_xff = 0;
    const struct sl_http_header *kept[SL_HDR__COUNT] = {0};
    const struct sl_http_header *via = NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct sl_http_header *h = &req->headers[i];
        switch (h->id) {
        case SL_HDR_HOST:
        case SL_HDR_EXPECT:
        case SL_HDR_X_REQUEST_ID:
            continue;
        case SL_HDR_X_FORWARDED_FOR:
            if (n_xff < sizeof xff_values / sizeof xff_values[0])
                xff_values[n_xff++] = h;
            continue;
        case SL_HDR_X_FORWARDED_PROTO:
        case SL_HDR_X_FORWARDED_HOST:
        case SL_HDR_X_FORWARDED_PORT:
        case SL_HDR_X_FORWARDED_PATH:
        case SL_HDR_X_FORWARDED_PREFIX:
        case SL_HDR_X_REAL_IP:
            if (trusted && !kept[h->id])
                kept[h->id] = h;
            continue;
        case SL_HDR_VIA:
            via = h;
            continue;
        default:
            break;
        }
        if (is_hop_by_hop(h->id) || header_is_connection_named(h, req->headers, req->num_headers))
            continue;
        if (up_edits && edit_overrides(up_edits, h->name, h->name_len))
            continue;
        add_header_line(out, h->name, h->name_len, h->value, h->value_len);
    }
    for (const struct sl_header_edit *e = up_edits; e; e = e->next)
        if (e->op != SL_EDIT_REMOVE)
            add_header_line(out, e->name, e->name_len, e->value, e->value_len);

    evbuffer_add(out, "X-Forwarded-For: ", 17);
    for (size_t i = 0; i < n_xff; i++) {
        evbuffer_add(out, xff_values[i]->value, xff_values[i]->value_len);
        evbuffer_add(out, ", ", 2);
    }
    evbuffer_add_printf(out, "%s\r\n", c->peer_ip);

#define FORWARDED(id, name, ...)                                                                   \
    do {                                                                                           \
        if (kept[id])                                                                              \
            add_header_line(out, name, sizeof name - 1, kept[id]->value, kept[id]->value_len);     \
        else                                                                                       \
            evbuffer_add_printf(out, name ": " __VA_ARGS__);                                       \
    } while (0)
    FORWARDED(SL_HDR_X_FORWARDED_PROTO, "X-Forwarded-Proto", "%s\r\n", c->ssl ? "https" : "http");
    FORWARDED(SL_HDR_X_FORWARDED_HOST, "X-Forwarded-Host", "%.*s\r\n", (int)host_len, host);
    FORWARDED(SL_HDR_X_FORWARDED_PORT, "X-Forwarded-Port", "%u\r\n", c->listen_port);
    FORWARDED(SL_HDR_X_FORWARDED_PATH, "X-Forwarded-Path", "%.*s\r\n", (int)path_len, path);
    FORWARDED(SL_HDR_X_REAL_IP, "X-Real-IP", "%s\r\n", c->peer_ip);
#undef FORWARDED
    if (kept[SL_HDR_X_FORWARDED_PREFIX])
        add_header_line(out, "X-Forwarded-Prefix", 18, kept[SL_HDR_X_FORWARDED_PREFIX]->value,
                        kept[SL_HDR_X_FORWARDED_PREFIX]->value_len);
    else if (route->strip_path && r->match.matched_prefix_len > 1)
        evbuffer_add_printf(out, "X-Forwarded-Prefix: %.*s\r\n", (int)r->match.matched_prefix_len,
                            path);

    add_via(out, via);
    evbuffer_add_printf(out, "X-Request-Id: %s\r\n", r->request_id);

    if (r->body_replaced)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", pctx->up_body_len);
    else if (r->req_body_kind == SL_BODY_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %llu\r\n",
                            (unsigned long long)req->content_length);
    else if (r->req_body_kind == SL_BODY_CHUNKED)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    evbuffer_add(out, "\r\n", 2);
    return true;
}

/* Kong's message when an upstream has no target to offer (503). */
static const char MSG_NO_PEER[] = "failure to get a peer from the ring-balancer";

/*
 * The consistent-hashing input of the request (Kong's get_value_to_hash),
 * computed once, before the first pick; retries keep it. Only for a
 * service whose upstream hashes.
 */
static void request_compute_lb_hash(struct sl_request *r, const struct sl_http_request *req,
                                    const char *path, size_t path_len, const char *query,
                                    size_t query_len)
{
    const struct sl_service *svc = r->match.service;
    if (!svc || !svc->upstream || svc->upstream->hash_on == SL_HASH_NONE)
        return;
    struct sl_lb_hash_input in = {
        .client_ip = r->client->peer_ip,
        .consumer = r->consumer,
        .headers = req->headers,
        .n_headers = req->num_headers,
        .path = path,
        .path_len = path_len,
        .query = query && query_len > 0 ? query + 1 : NULL, /* without its '?' */
        .query_len = query && query_len > 0 ? query_len - 1 : 0,
        .made_up_cookie = r->lb_cookie,
        .match = &r->match,
    };
    r->lb.hash_set = sl_balancer_hash_request(svc->upstream, &in, &r->lb.hash);
}

static void try_parse_head(struct sl_client *c)
{
    const struct sl_node_config *node = node_of(c);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return;
    if (!c->got_head_bytes) {
        c->got_head_bytes = true;
        if (c->requests_served > 0)
            timer_arm(c, node->client_header_timeout_ms);
    }
    size_t limit = node->max_header_bytes + 1;
    size_t want = avail < limit ? avail : limit;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    if (!data) {
        client_close(c);
        return;
    }
    struct sl_http_header headers[SL_MAX_HEADERS_ARRAY];
    struct sl_http_limits limits = {node->max_request_line, node->max_header_bytes,
                                    node->max_headers};
    struct sl_http_request req;
    memset(&req, 0, sizeof req);
    req.headers = headers;
    req.header_capacity =
        node->max_headers < SL_MAX_HEADERS_ARRAY ? node->max_headers + 1 : SL_MAX_HEADERS_ARRAY;
    /* a client trickling bytes without a line end must not make us parse
     * the same head again for each byte */
    int head_len = SL_HTTP_INCOMPLETE;
    if (c->head_seen == 0 || sl_http_head_may_complete(data, c->head_seen, want, &limits))
        head_len = sl_http_parse_request(data, want, &limits, &req);
    if (head_len == SL_HTTP_INCOMPLETE) {
        c->head_seen = (uint32_t)want;
        if (c->peer_eof)
            client_close(c); /* no more bytes will come */
        return;
    }
    c->head_seen = 0;
    atomic_fetch_add_explicit(&c->w->stats.total_requests, 1, memory_order_relaxed);
    if (head_len < 0) {
        sl_info("client %s: request refused (%d): %s", c->peer_ip, -head_len,
                req.error ? req.error : "bad request");
        client_fail(c, -head_len, -head_len == 400 ? "Bad request" : sl_http_reason(-head_len));
        return;
    }
    timer_stop(c);

    struct sl_request *r = calloc(1, sizeof *r);
    if (!r) {
        client_close(c);
        return;
    }
    c->req = r;
    r->client = c;
    r->start_us = sl_now_us();
    r->snap = sl_snapshot_ref(c->w->snapshot);
    r->is_head = req.method_len == 4 && memcmp(req.method, "HEAD", 4) == 0;
    r->client_minor = req.version_minor;
    r->client_keep_alive = req.keep_alive;
    r->expect_continue = req.expect_continue;
    r->req_body_kind = req.body_kind;
    r->req_remaining = req.content_length;
    r->bytes_in = (uint64_t)head_len;
    sl_chunked_init(&r->req_chunked);
    r->wants_text_errors = accept_wants_text(find_header(headers, req.num_headers, SL_HDR_ACCEPT));
    snprintf(r->method, sizeof r->method, "%.*s", (int)req.method_len, req.method);
    const struct sl_http_header *rid = find_header(headers, req.num_headers, SL_HDR_X_REQUEST_ID);
    if (rid && rid->value_len > 0 && rid->value_len <= SL_MAX_CLIENT_REQUEST_ID)
        snprintf(r->request_id, sizeof r->request_id, "%.*s", (int)rid->value_len, rid->value);
    else
        sl_request_id(r->request_id);
    if (!req.keep_alive)
        c->close_after = true;
    if (r->req_body_kind == SL_BODY_LENGTH && r->req_remaining == 0)
        r->req_body_kind = SL_BODY_NONE;
    r->req_body_done = r->req_body_kind == SL_BODY_NONE;

    /* request-target: origin-form, or absolute-form (RFC 9112 section 3.2.2) */
    const char *target = req.target;
    size_t target_len = req.target_len;
    const char *host = req.host;
    size_t host_len = req.host_len;
    if (target_len > 7 && (strncasecmp(target, "http://", 7) == 0 ||
                           (target_len > 8 && strncasecmp(target, "https://", 8) == 0))) {
        size_t skip = target[4] == ':' ? 7 : 8;
        const char *auth = target + skip;
        const char *slash = memchr(auth, '/', target_len - skip);
        host = auth;
        host_len = slash ? (size_t)(slash - auth) : target_len - skip;
        target = slash ? slash : "/";
        target_len = slash ? target_len - (size_t)(slash - req.target) : 1;
    }
    if (target_len == 0 || target[0] != '/') {
        client_fail(c, 400, "Bad request");
        return;
    }
    const char *qmark = memchr(target, '?', target_len);
    size_t raw_path_len = qmark ? (size_t)(qmark - target) : target_len;
    const char *query = qmark;
    size_t query_len = qmark ? target_len - raw_path_len : 0;
    /* Route on the normalised path and send that one upstream, so
     * "/api/v1/users/../orders" can only ever be "/api/v1/orders". */
    char path_buf[SL_MAX_PATH + 1];
    long normalized = sl_router_normalize_path(target, raw_path_len, path_buf, sizeof path_buf);
    if (normalized < 0) {
        client_fail(c, normalized == -2 ? 414 : 400,
                    normalized == -2 ? "URI Too Long" : "Bad request");
        return;
    }
    snprintf(r->log_path, sizeof r->log_path, "%.*s", (int)normalized, path_buf);
    if (node->client_max_body_size && r->req_body_kind == SL_BODY_LENGTH &&
        r->req_remaining > node->client_max_body_size) {
        client_fail(c, 413, "Request size limit exceeded");
        return;
    }
    if (r->req_body_kind == SL_BODY_CHUNKED) {
        /* Check the framing of the body bytes that came with the head before
         * anything goes upstream: a malformed or oversized body seen here
         * never reaches the upstream, not even as a head. */
        struct sl_chunked_scanner probe;
        sl_chunked_init(&probe);
        if (sl_chunked_scan(&probe, data + head_len, want - (size_t)head_len) < 0) {
            sl_info("client %s: bad chunked body: %s", c->peer_ip, probe.error ? probe.error : "?");
            client_fail(c, 400, "Bad request");
            return;
        }
        if (node->client_max_body_size && probe.body_bytes > node->client_max_body_size) {
            client_fail(c, 413, "Request size limit exceeded");
            return;
        }
    }

    struct request_head h = {.req = req,
                             .path = path_buf,
                             .path_len = (size_t)normalized,
                             .query = query,
                             .query_len = query_len,
                             .authority = host,
                             .authority_len = host_len};
    if (host)
        split_host_port(host, host_len, &h.host_name, &h.host_name_len);
    r->head = &h;
    r->head_in_input = (size_t)head_len;
    c->state = CS_UPSTREAM;
    set_activity(c, ACT_WRITING);
    if (sl_plugins_active(r->snap->cfg)) {
        /* plugins may suspend the request: keep a copy of the head, then
         * the input holds only body bytes (and what follows) */
        if (!request_keep_head(r, data, (size_t)head_len) || !request_plugins_init(r)) {
            r->head = NULL;
            client_fail(c, 500, "An unexpected error occurred");
            return;
        }
        release_head_bytes(r);
        r->stage = STAGE_REWRITE;
        if (!request_run_plugins(r))
            return;
    }
    /* without plugins, every path from here drops r->head (on the stack)
     * before returning; r may be gone when this returns */
    request_route(r);
}

/* Copy the head (and the normalised path) into memory owned by r. */
static bool request_keep_head(struct sl_request *r, const char *data, size_t head_len)
{
    struct request_head *h = r->head;
    size_t n = h->req.num_headers;
    struct request_head *copy = calloc(1, sizeof *copy);
    if (!copy)
        return false;
    *copy = *h;
    copy->buf = malloc(head_len + h->path_len + 1);
    copy->headers = malloc((n ? n : 1) * sizeof *copy->headers);
    if (!copy->buf || !copy->headers) {
        free(copy->buf);
        free(copy->headers);
        free(copy);
        return false;
    }
    memcpy(copy->buf, data, head_len);
    memcpy(copy->buf + head_len, h->path, h->path_len);
    copy->buf[head_len + h->path_len] = '\0';
    /* every pointer into the input moves by the same offset into buf */
#define REBASE(p) ((p) ? copy->buf + ((const char *)(p)-data) : NULL)
    for (size_t i = 0; i < n; i++) {
        copy->headers[i] = h->req.headers[i];
        copy->headers[i].name = REBASE(h->req.headers[i].name);
        copy->headers[i].value = REBASE(h->req.headers[i].value);
    }
    copy->req.headers = copy->headers;
    copy->req.method = REBASE(h->req.method);
    copy->req.target = REBASE(h->req.target);
    copy->req.host = REBASE(h->req.host);
    copy->query = REBASE(h->query);
    copy->host_name = REBASE(h->host_name);
    copy->authority = REBASE(h->authority);
#undef REBASE
    copy->path = copy->buf + head_len;
    r->head = copy;
    r->head_owned = true;
    return true;
}

static void request_head_free(struct sl_request *r)
{
    if (r->head_owned) {
        free(r->head->buf);
        free(r->head->headers);
        free(r->head);
        r->head_owned = false;
    }
    r->head = NULL; /* without a copy it was on try_parse_head()'s stack */
}

static void release_head_bytes(struct sl_request *r)
{
    if (r->head_in_input) {
        evbuffer_drain(bufferevent_get_input(r->client->bev), r->head_in_input);
        r->head_in_input = 0;
    }
}

static void plugins_resumed(void *arg);
static void start_collecting(struct sl_request *r);

static bool request_plugins_init(struct sl_request *r)
{
    struct sl_client *c = r->client;
    struct sl_plugin_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return false;
    const struct request_head *h = r->head;
    p->cfg = r->snap->cfg;
    p->base = c->w->base;
    p->worker_data = c->w->plugin_data;
    p->request_id = r->request_id;
    p->client_ip = c->peer_ip;
    p->method = r->method;
    p->scheme = c->ssl ? "https" : "http";
    p->path = h->path;
    p->path_len = h->path_len;
    p->query = h->query ? h->query + 1 : "";
    p->query_len = h->query ? h->query_len - 1 : 0;
    p->headers = h->req.headers;
    p->n_headers = h->req.num_headers;
    p->resume = plugins_resumed;
    p->owner = r;
    r->plugins = p;
    return true;
}

/* A plugin answered: send its response (Kong's header_filter and log
 * phases run for it too). */
static void send_plugin_response(struct sl_request *r)
{
    struct sl_plugin_ctx *p = r->plugins;
    if (p->respond_is_error) {
        abort_request(r, p->respond_status, p->respond_message);
        return;
    }
    finish_local_response(r, p->respond_status, p->respond_content_type, p->respond_body,
                          p->respond_body_len);
}

/*
 * Run the plugins of r->stage. Returns true when the request goes on to the
 * next step now; false when a plugin answered (the response is on its
 * way) or suspended (plugins_resumed() continues).
 */
static bool request_run_plugins(struct sl_request *r)
{
    struct sl_plugin_ctx *p = r->plugins;
    enum sl_plugin_phase_result res =
        r->stage == STAGE_REWRITE ? sl_plugins_rewrite(p) : sl_plugins_access(p);
    r->consumer = p->consumer;
    switch (res) {
    case SL_PHASE_PROXY:
        return true;
    case SL_PHASE_RESPOND:
        send_plugin_response(r);
        return false;
    case SL_PHASE_SUSPENDED:
        set_activity(r->client, ACT_WAITING);
        if (p->body_requested && !r->collecting && !r->collect_ev)
            start_collecting(r);
        return false;
    }
    return false;
}

static void plugins_resumed(void *arg)
{
    struct sl_request *r = arg;
    struct sl_plugin_ctx *p = r->plugins;
    if (p->up_body != NULL && !r->body_replaced) {
        /* the plugin's body replaces the one collected in the input */
        evbuffer_drain(bufferevent_get_input(r->client->bev), r->collect_raw_len);
        r->bytes_in += r->collect_raw_len;
        r->body_replaced = true;
        r->req_body_kind = SL_BODY_LENGTH;
        r->req_remaining = 0;
        r->req_body_done = true;
    }
    set_activity(r->client, ACT_WRITING);
    if (!request_run_plugins(r))
        return;
    if (r->stage == STAGE_REWRITE)
        request_route(r);
    else
        request_proxy(r);
}

/* ------------------------------------------------------------------------ */
/* a plugin reads the whole request body (sl_plugin_read_body)              */

/* Input a body of at most max bytes may fill while it is collected: chunk
 * framing included, and what a pipelining client sends after it. */
static size_t collect_input_bound(size_t max)
{
    return max + max / 2 + SL_HIGH_WATER;
}

static void collect_deliver(evutil_socket_t fd, short what, void *arg);

static void start_collecting(struct sl_request *r)
{
    struct sl_client *c = r->client;
    const struct sl_node_config *node = &r->snap->cfg->node;
    size_t max = r->plugins->body_max;
    r->collect_ev = event_new(c->w->base, -1, 0, collect_deliver, r);
    if (!r->collect_ev) {
        abort_request(r, 500, "An unexpected error occurred");
        return;
    }
    r->collecting = true;
    r->collect_scanned = 0;
    sl_chunked_init(&r->collect_chunked);
    if (r->req_body_kind == SL_BODY_LENGTH && r->req_remaining > max) {
        r->collecting = false;
        r->collect_too_large = true;
        event_active(r->collect_ev, EV_TIMEOUT, 1);
        return;
    }
    if (r->expect_continue && r->req_body_kind != SL_BODY_NONE) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        r->expect_continue = false;
        write_now(c->bev);
    }
    sl_reader_set_high_water(&c->rd, node->max_header_bytes + collect_input_bound(max));
    sl_reader_set_timeout(&c->rd, node->client_body_timeout_ms);
    if (node->client_body_total_timeout_ms)
        timer_arm(c, node->client_body_total_timeout_ms);
    set_activity(c, ACT_READING);
    sl_reader_enable(&c->rd);
    collect_request_body(r);
}

/* New input while collecting: is the body complete (or too large)? The
 * bytes stay in the input; nothing is consumed here. */
static void collect_request_body(struct sl_request *r)
{
    struct sl_client *c = r->client;
    const struct sl_node_config *node = &r->snap->cfg->node;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t max = r->plugins->body_max;
    bool complete = false;
    if (!r->collecting)
        return;
    switch (r->req_body_kind) {
    case SL_BODY_LENGTH:
        complete = evbuffer_get_length(in) >= r->req_remaining;
        r->collect_raw_len = (size_t)r->req_remaining;
        break;
    case SL_BODY_CHUNKED: {
        long used = scan_chunked_from(&r->collect_chunked, in, r->collect_scanned);
        if (used < 0) {
            sl_info("client %s: bad chunked body: %s", c->peer_ip,
                    r->collect_chunked.error ? r->collect_chunked.error : "?");
            c->close_after = true;
            abort_request(r, 400, "Bad request");
            return;
        }
        r->collect_scanned += (size_t)used;
        if (node->client_max_body_size &&
            r->collect_chunked.body_bytes > node->client_max_body_size) {
            c->close_after = true;
            abort_request(r, 413, "Request size limit exceeded");
            return;
        }
        if (r->collect_chunked.body_bytes > max || r->collect_scanned > collect_input_bound(max))
            r->collect_too_large = true;
        complete = r->collect_chunked.done;
        r->collect_raw_len = r->collect_scanned;
        break;
    }
    default:
        complete = true;
        r->collect_raw_len = 0;
        break;
    }
    if (complete || r->collect_too_large) {
        r->collecting = false;
        timer_stop(c);
        sl_reader_set_timeout(&c->rd, 0);
        sl_reader_set_high_water(&c->rd, node->max_header_bytes + SL_HIGH_WATER);
        set_activity(c, ACT_WAITING);
        /* the plugin hears of it from the loop, never from inside the
         * hook that asked */
        event_active(r->collect_ev, EV_TIMEOUT, 1);
        return;
    }
    if (c->peer_eof) {
        sl_info("client %s: closed before the end of the request body", c->peer_ip);
        client_close(c);
    }
}

/* Copy the collected body out of the input: the payload only. */
static char *collected_body(struct sl_request *r, size_t *len)
{
    struct evbuffer *in = bufferevent_get_input(r->client->bev);
    size_t raw = r->collect_raw_len;
    if (r->req_body_kind != SL_BODY_CHUNKED) {
        char *body = malloc(raw ? raw : 1);
        if (body && raw)
            evbuffer_copyout(in, body, raw);
        *len = raw;
        return body;
    }
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)raw);
    char *body = malloc(r->collect_chunked.body_bytes + 1);
    if (!data || !body) {
        free(body);
        return NULL;
    }
    /* a second walk over framing already checked: keep the chunk data */
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    size_t at = 0, out = 0;
    while (at < raw && !s.done) {
        uint64_t ready = sl_chunked_data_ready(&s);
        size_t n = ready ? (ready < raw - at ? (size_t)ready : raw - at) : 1;
        if (sl_chunked_scan(&s, data + at, n) < 0)
            break;
        if (ready) {
            memcpy(body + out, data + at, n);
            out += n;
        }
        at += n;
    }
    *len = out;
    return body;
}

static void collect_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sl_request *r = arg;
    if (r->collect_too_large) {
        sl_plugin_body_collected(r->plugins, NULL, 0);
        return; /* r may be gone */
    }
    size_t len = 0;
    char *body = collected_body(r, &len);
    if (!body) {
        abort_request(r, 500, "An unexpected error occurred");
        return;
    }
    sl_plugin_body_collected(r->plugins, body, len); /* r may be gone */
    free(body);
}

/* The scheme the client used: a trusted proxy in front may say it was
 * https (X-Forwarded-Proto), as Kong reads it. */
static unsigned request_protocol(const struct sl_request *r)
{
    const struct request_head *h = r->head;
    if (r->client->ssl)
        return SL_PROTO_HTTPS;
    if (r->client->peer_trusted) {
        const struct sl_http_header *xfp =
            find_header(h->req.headers, h->req.num_headers, SL_HDR_X_FORWARDED_PROTO);
        if (xfp && xfp->value_len == 5 && strncasecmp(xfp->value, "https", 5) == 0)
            return SL_PROTO_HTTPS;
    }
    return SL_PROTO_HTTP;
}

/* A route for https only, asked over http: Kong's answer per the route's
 * https_redirect_status_code (426 with Upgrade, or a redirect). */
static void redirect_to_https(struct sl_request *r)
{
    const struct request_head *h = r->head;
    int code = r->match.route->https_redirect_status_code;
    if (code == 426) {
        respond_local(r, 426, "Please use HTTPS protocol", NULL, NULL, 0,
                      "Upgrade: TLS/1.2, HTTP/1.1\r\n");
        return;
    }
    char location[SL_MAX_PATH + 600];
    int n = snprintf(location, sizeof location, "Location: https://%.*s%.*s%.*s\r\n",
                     (int)(h->host_name ? h->host_name_len : 0), h->host_name ? h->host_name : "",
                     (int)h->path_len, h->path, (int)(h->query ? h->query_len : 0),
                     h->query ? h->query : "");
    if (n < 0 || (size_t)n >= sizeof location) {
        abort_request(r, 414, "URI Too Long");
        return;
    }
    respond_local(r, code, NULL, NULL, NULL, 0, location);
}

/* After rewrite: find the route, then the access phase. */
static void request_route(struct sl_request *r)
{
    struct sl_client *c = r->client;
    const struct request_head *h = r->head;
    struct sl_router_request rreq = {.method = h->req.method,
                                     .method_len = h->req.method_len,
                                     .host = h->host_name,
                                     .host_len = h->host_name_len,
                                     .path = h->path,
                                     .path_len = h->path_len,
                                     .headers = h->req.headers,
                                     .n_headers = h->req.num_headers};
    const char *sni = c->ssl ? sl_tls_sni(c->ssl) : NULL;
    if (sni) {
        rreq.sni = sni;
        rreq.sni_len = strlen(sni);
    }
    if (!sl_router_find(r->snap->router, &rreq, &r->match)) {
        release_head_bytes(r);
        if (!r->req_body_done)
            c->close_after = true; /* the body is not read: the stream can't be resynced */
        abort_request(r, 404, MSG_NO_ROUTE);
        return;
    }
    unsigned proto = request_protocol(r);
    if (!(r->match.route->protocols & proto)) {
        if (proto == SL_PROTO_HTTPS) { /* an http-only route: not for https (Kong) */
            release_head_bytes(r);
            if (!r->req_body_done)
                c->close_after = true;
            abort_request(r, 404, MSG_NO_ROUTE);
            return;
        }
        redirect_to_https(r);
        return;
    }
    if (r->plugins) {
        r->plugins->route = r->match.route;
        r->plugins->service = r->match.service;
        r->plugins->match = &r->match;
        r->stage = STAGE_ACCESS;
        if (!request_run_plugins(r))
            return;
    }
    request_proxy(r);
}

/* After access: the upstream request's head, then the upstream. */
static void request_proxy(struct sl_request *r)
{
    struct sl_client *c = r->client;
    const struct request_head *h = r->head;
    request_compute_lb_hash(r, &h->req, h->path, h->path_len, h->query, h->query_len);
    r->up_head = evbuffer_new();
    if (!r->up_head ||
        !build_upstream_head(r, &h->req, h->path, h->path_len, h->query, h->query_len,
                             h->host_name ? h->host_name : "", h->host_name ? h->host_name_len : 0,
                             h->authority, h->authority_len)) {
        release_head_bytes(r);
        abort_request(r, r->up_head ? 414 : 500,
                      r->up_head ? "URI Too Long" : "An unexpected error occurred");
        return;
    }
    release_head_bytes(r);
    request_head_free(r);
    /* body bytes that arrive before the upstream is connected wait in the
     * input, bounded by the read watermark */
    (void)c;
    start_upstream(r, true);
}

/* ------------------------------------------------------------------------ */
/* upstream                                                                  */

static void up_read(struct bufferevent *bev, void *arg);
static void up_write(struct bufferevent *bev, void *arg);
static void up_event(struct bufferevent *bev, short what, void *arg);

static void request_free(struct sl_request *r)
{
    sl_balancer_release(&r->lb); /* least-connections: this one is done */
    if (r->plugins) {
        sl_plugin_ctx_release(r->plugins); /* cancels a suspended hook */
        free(r->plugins);
    }
    request_head_free(r);
    if (r->pending)
        sl_upstream_cancel(r->pending);
    if (r->up)
        sl_upstream_release(r->up, false);
    if (r->up_head)
        evbuffer_free(r->up_head);
    if (r->collect_ev)
        event_free(r->collect_ev);
    if (r->snap)
        sl_snapshot_unref(r->snap);
    free(r);
}

/* Log line for the access log (JSON, one line). */
static void access_log(struct sl_request *r)
{
    struct sl_client *c = r->client;
    if (!r->snap->cfg->node.access_log)
        return;
    uint64_t now = sl_now_us();
    char path[512];
    if (sl_json_escape(r->log_path, strlen(r->log_path), path, sizeof path) < 0)
        strcpy(path, "-");
    char method[80];
    if (sl_json_escape(r->method, strlen(r->method), method, sizeof method) < 0)
        strcpy(method, "-");
    char rid[SL_MAX_CLIENT_REQUEST_ID * 6 + 1];
    if (sl_json_escape(r->request_id, strlen(r->request_id), rid, sizeof rid) < 0)
        strcpy(rid, "-");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    double total_ms = (double)(now - r->start_us) / 1000.0;
    double upstream_ms =
        r->upstream_head_us ? (double)(r->upstream_head_us - r->upstream_start_us) / 1000.0 : -1;
    const struct sl_service *svc = r->match.service;
    const struct sl_route *route = r->match.route;
    /* the consumer, when an auth plugin found one: its username, else its
     * custom_id, else its id */
    char consumer[200] = "";
    if (r->consumer) {
        const char *who = r->consumer->username    ? r->consumer->username
                          : r->consumer->custom_id ? r->consumer->custom_id
                                                   : r->consumer->id;
        char esc[160];
        if (who && sl_json_escape(who, strlen(who), esc, sizeof esc) >= 0)
            snprintf(consumer, sizeof consumer, ",\"consumer\":\"%s\"", esc);
    }
    double proxy_ms = upstream_ms >= 0 ? total_ms - upstream_ms : total_ms;
    char line[2048];
    int n =
        snprintf(line, sizeof line,
                 "{\"time\":\"%s.%03ldZ\",\"request_id\":\"%s\",\"client_ip\":\"%s\","
                 "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes_in\":%llu,"
                 "\"bytes_out\":%llu,\"latency_ms\":{\"request\":%.3f,\"upstream\":%.3f,"
                 "\"proxy\":%.3f},\"service\":\"%s\",\"route\":\"%s\",\"upstream\":\"%s\"%s}",
                 when, ts.tv_nsec / 1000000, rid, c->peer_ip, method, path, r->status,
                 (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out, total_ms,
                 upstream_ms, proxy_ms, svc && svc->name ? svc->name : "",
                 route && route->name ? route->name : "", r->up ? r->up->addr_text : "", consumer);
    if (n > 0)
        sl_worker_access_log(c->w, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* The log phase of the plugins, the metrics and the access log: once per
 * request. */
static void request_log(struct sl_request *r)
{
    if (r->plugins) {
        r->plugins->resp_status = r->status;
        sl_plugins_log(r->plugins);
    }
    const struct sl_service *svc = r->match.service;
    const struct sl_route *route = r->match.route;
    uint64_t total_us = sl_now_us() - r->start_us;
    uint64_t upstream_us = r->upstream_head_us ? r->upstream_head_us - r->upstream_start_us : 0;
    sl_metrics_observe(r->client->w->metrics, svc ? (svc->name ? svc->name : svc->host) : NULL,
                       route ? (route->name ? route->name : route->id) : NULL, r->status,
                       r->bytes_in, r->bytes_out, total_us, upstream_us);
    access_log(r);
}

/*
 * Answer the client with a response of our own (before any response byte):
 * drop the upstream side, run the plugins' header_filter, write, log.
 * message != NULL: Kong's error shape; else content_type/body as given.
 */
static void respond_local(struct sl_request *r, int status, const char *message,
                          const char *content_type, const char *body, size_t body_len,
                          const char *extra_headers)
{
    struct sl_client *c = r->client;
    if (r->pending) {
        sl_upstream_cancel(r->pending);
        r->pending = NULL;
    }
    if (r->up) {
        sl_upstream_release(r->up, false);
        r->up = NULL;
    }
    if (r->resp_head_sent) {
        /* the status line is gone already: all we can do is cut the stream */
        client_close(c);
        return;
    }
    release_head_bytes(r);
    r->status = status;
    timer_stop(c);
    if (!r->req_body_done)
        c->close_after = true;
    sl_reader_set_timeout(&c->rd, 0);
    sl_reader_disable(&c->rd);
    if (r->plugins) {
        r->plugins->resp_status = status;
        r->plugins->resp_headers = NULL;
        r->plugins->n_resp_headers = 0;
        sl_plugins_header_filter(r->plugins);
    }
    bool close_conn = c->close_after || c->w->draining;
    size_t before = evbuffer_get_length(bufferevent_get_output(c->bev));
    if (message)
        write_error_response(c, r->plugins, status, message, r->request_id, r->wants_text_errors,
                             close_conn, r->is_head, extra_headers);
    else
        write_local_response(c, r->plugins, status, content_type, body, body_len, r->request_id,
                             close_conn, r->is_head, extra_headers);
    r->bytes_out += evbuffer_get_length(bufferevent_get_output(c->bev)) - before;
    r->resp_head_sent = true;
    r->resp_done = true;
    request_head_free(r);
    request_log(r);
    c->state = CS_FLUSH;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (write_now(c->bev))
        client_after_response(c);
}

/* Answer the client with an error in Kong's shape (before any response byte). */
static void abort_request(struct sl_request *r, int status, const char *message)
{
    respond_local(r, status, message, NULL, NULL, 0, NULL);
}

/* A plugin's own response (content_type NULL: no body). */
static void finish_local_response(struct sl_request *r, int status, const char *content_type,
                                  const char *body, size_t body_len)
{
    respond_local(r, status, NULL, content_type, body, body_len, NULL);
}

static void upstream_connected(struct sl_upstream_conn *conn, enum sl_upstream_error error,
                               void *arg)
{
    struct sl_request *r = arg;
    struct sl_client *c = r->client;
    r->pending = NULL;
    if (error != SL_UPSTREAM_OK) {
        /* passive health checks; a balanced service also moves on to
         * another target when a target's name does not resolve */
        bool balanced = r->match.service->upstream != NULL;
        if (error == SL_UPSTREAM_CONNECT_TIMEOUT)
            sl_balancer_report_timeout(&r->lb);
        else if (error == SL_UPSTREAM_CONNECT_FAILED)
            sl_balancer_report_tcp_failure(&r->lb);
        if ((error != SL_UPSTREAM_DNS_FAILED || balanced) && r->tries < r->match.service->retries &&
            !r->req_body_started) {
            r->tries++;
            start_upstream(r, false);
            return;
        }
        switch (error) {
        case SL_UPSTREAM_DNS_FAILED:
            abort_request(r, 503, MSG_DNS);
            break;
        case SL_UPSTREAM_CONNECT_TIMEOUT:
            abort_request(r, 504, MSG_TIMEOUT);
            break;
        default:
            abort_request(r, 502, MSG_BAD_GATEWAY);
            break;
        }
        return;
    }
    const struct sl_service *svc = r->match.service;
    r->up = conn;
    conn->requests++;
    sl_reader_setcb_all(&conn->rd, up_read, up_write, up_event, r);
    sl_reader_set_write_timeout(&conn->rd, svc->write_timeout_ms);
    bufferevent_setwatermark(conn->bev, EV_WRITE, SL_LOW_WATER, 0);
    /* read_timeout counts from the end of the request, as nginx's
     * proxy_read_timeout: a long upload is bounded by write_timeout */
    sl_reader_set_timeout(&conn->rd, r->req_body_done ? svc->read_timeout_ms : 0);
    sl_reader_set_high_water(&conn->rd, SL_HIGH_WATER);
    /* the head stays in up_head until the response starts (retries) */
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    size_t head_len = evbuffer_get_length(r->up_head);
    const char *head = (const char *)evbuffer_pullup(r->up_head, (ev_ssize_t)head_len);
    if (r->up_head_host_at) {
        /* a balanced service: Host names the target this connection goes to */
        const struct sl_upstream *u = svc->upstream;
        const char *name = u->host_header ? u->host_header : r->target_host;
        bool v6 = strchr(name, ':') != NULL;
        evbuffer_add(out, head, r->up_head_host_at);
        if (r->target_port == (strcmp(svc->protocol, "https") == 0 ? 443 : 80))
            evbuffer_add_printf(out, "Host: %s%s%s\r\n", v6 ? "[" : "", name, v6 ? "]" : "");
        else
            evbuffer_add_printf(out, "Host: %s%s%s:%u\r\n", v6 ? "[" : "", name, v6 ? "]" : "",
                                r->target_port);
        evbuffer_add(out, head + r->up_head_host_at, head_len - r->up_head_host_at);
    } else {
        evbuffer_add(out, head, head_len);
    }
    if (r->body_replaced && r->plugins->up_body_len) {
        evbuffer_add(out, r->plugins->up_body, r->plugins->up_body_len);
        r->req_body_started = true;
    }
    r->upstream_start_us = sl_now_us();
    sl_reader_enable(&conn->rd);
    if (r->req_body_done)
        write_now(conn->bev); /* else the body's first bytes go with it */

    if (!r->req_body_done) {
        const struct sl_node_config *node = &r->snap->cfg->node;
        if (r->expect_continue) {
            evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            r->expect_continue = false;
            write_now(c->bev);
        }
        sl_reader_set_timeout(&c->rd, node->client_body_timeout_ms);
        if (node->client_body_total_timeout_ms)
            timer_arm(c, node->client_body_total_timeout_ms);
        set_activity(c, ACT_READING);
        sl_reader_enable(&c->rd);
        forward_request_body(r);
    }
}

static void start_upstream(struct sl_request *r, bool allow_reuse)
{
    const struct sl_service *svc = r->match.service;
    const char *host = svc->host;
    uint16_t port = svc->port;
    if (svc->upstream) {
        /* Kong's ring-balancer: a healthy target, another one on a retry
         * when there is another */
        const struct sl_target *t = sl_balancer_pick(r->snap->balancer, svc->upstream, &r->lb);
        if (!t) {
            sl_warn("upstream '%s': no healthy target", svc->upstream->name);
            abort_request(r, 503, MSG_NO_PEER);
            return;
        }
        host = t->host;
        port = t->port;
    }
    r->target_host = host;
    r->target_port = port;
    r->pending =
        sl_upstream_acquire(r->client->w->pool, host, port, r->snap->service_tls[svc->index],
                            svc->connect_timeout_ms, allow_reuse, upstream_connected, r);
    if (!r->pending)
        abort_request(r, 500, "An unexpected error occurred");
}

static void request_body_complete(struct sl_request *r)
{
    struct sl_client *c = r->client;
    r->req_body_done = true;
    if (r->up)
        sl_reader_set_timeout(&r->up->rd, r->match.service->read_timeout_ms);
    timer_stop(c);
    sl_reader_set_timeout(&c->rd, 0);
    /* what follows in the input is the next (pipelined) request; it waits
     * there, bounded by the read watermark */
    set_activity(c, ACT_WRITING);
}

static void forward_request_body(struct sl_request *r)
{
    struct sl_client *c = r->client;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(r->up->bev);
    const struct sl_node_config *node = &r->snap->cfg->node;
    size_t avail = evbuffer_get_length(in);
    size_t move = 0;

    if (r->req_body_kind == SL_BODY_LENGTH) {
        move = avail < r->req_remaining ? avail : (size_t)r->req_remaining;
        r->req_remaining -= move;
        r->req_body_bytes += move;
    } else {
        /* validate the chunked framing of the bytes before they go upstream */
        long used = scan_chunked_input(&r->req_chunked, in);
        if (used < 0) {
            sl_info("client %s: bad chunked body: %s", c->peer_ip,
                    r->req_chunked.error ? r->req_chunked.error : "?");
            abort_request(r, 400, "Bad request");
            return;
        }
        move = (size_t)used;
        r->req_body_bytes = r->req_chunked.body_bytes;
    }
    if (node->client_max_body_size && r->req_body_bytes > node->client_max_body_size) {
        abort_request(r, 413, "Request size limit exceeded");
        return;
    }
    if (move > 0) {
        evbuffer_remove_buffer(in, out, move);
        r->bytes_in += move;
        r->req_body_started = true;
    }
    write_now(r->up->bev);
    if ((r->req_body_kind == SL_BODY_LENGTH && r->req_remaining == 0) ||
        (r->req_body_kind == SL_BODY_CHUNKED && r->req_chunked.done)) {
        request_body_complete(r);
        return;
    }
    if (c->peer_eof && evbuffer_get_length(in) == 0) {
        /* the client closed in the middle of its body */
        sl_info("client %s: closed before the end of the request body", c->peer_ip);
        client_close(c);
        return;
    }
    if (evbuffer_get_length(out) > SL_HIGH_WATER)
        sl_reader_disable(&c->rd); /* up_write turns it back on */
}

static void up_write(struct bufferevent *bev, void *arg)
{
    struct sl_request *r = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* back to writing directly */
    if (!r->req_body_done && r->client->state == CS_UPSTREAM)
        sl_reader_enable(&r->client->rd);
}

/* Response head: filter and re-frame it for the client. */
static bool send_response_head(struct sl_request *r, const struct sl_http_response *resp)
{
    struct sl_client *c = r->client;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool client_close_after = c->close_after || c->w->draining || !r->client_keep_alive;
    if (resp->body_kind == SL_BODY_UNTIL_CLOSE)
        client_close_after = true; /* the end of the body is our close */
    if (resp->body_kind == SL_BODY_CHUNKED && r->client_minor == 0) {
        /* HTTP/1.0 has no chunked coding: strip the framing, end with close */
        r->resp_dechunk = true;
        client_close_after = true;
    }
    if (!r->req_body_done)
        client_close_after = true; /* the rest of the body is never read */
    c->close_after = client_close_after;

    const struct sl_header_edit *edits = NULL;
    if (r->plugins) {
        r->plugins->resp_status = resp->status;
        r->plugins->resp_headers = resp->headers;
        r->plugins->n_resp_headers = resp->num_headers;
        sl_plugins_header_filter(r->plugins);
        r->plugins->resp_headers = NULL; /* they live in the upstream's input */
        r->plugins->n_resp_headers = 0;
        edits = r->plugins->response_edits;
    }

    evbuffer_add_printf(out, "HTTP/1.1 %d %.*s\r\n", resp->status, (int)resp->reason_len,
                        resp->reason);
    const struct sl_http_header *via = NULL;
    bool has_cl = false;
    for (size_t i = 0; i < resp->num_headers; i++) {
        const struct sl_http_header *h = &resp->headers[i];
        if (h->id == SL_HDR_VIA) {
            via = h;
            continue;
        }
        if (h->id == SL_HDR_X_REQUEST_ID)
            continue;
        if (h->id == SL_HDR_CONTENT_LENGTH && resp->body_kind == SL_BODY_NONE && !has_cl &&
            resp->status != 204 && (resp->status < 100 || resp->status >= 200)) {
            /* HEAD and 304 keep the length of the representation */
            add_header_line(out, h->name, h->name_len, h->value, h->value_len);
            has_cl = true;
            continue;
        }
        if (is_hop_by_hop(h->id) || header_is_connection_named(h, resp->headers, resp->num_headers))
            continue;
        if (edits && edit_overrides(edits, h->name, h->name_len))
            continue;
        add_header_line(out, h->name, h->name_len, h->value, h->value_len);
    }
    add_response_edits(out, r->plugins);
    if (r->lb_cookie[0]) {
        const struct sl_upstream *u = r->match.service->upstream;
        evbuffer_add_printf(out, "Set-Cookie: %s=%s; Path=%s\r\n", u->hash_on_cookie, r->lb_cookie,
                            u->hash_on_cookie_path ? u->hash_on_cookie_path : "/");
    }
    if (resp->body_kind == SL_BODY_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %llu\r\n",
                            (unsigned long long)resp->content_length);
    else if (resp->body_kind == SL_BODY_CHUNKED && !r->resp_dechunk)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    add_via(out, via);
    evbuffer_add_printf(out, "X-Request-Id: %s\r\n", r->request_id);
    if (client_close_after)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (r->client_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    return true;
}

static void up_read(struct bufferevent *bev, void *arg)
{
    struct sl_request *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!r->resp_head_sent) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return;
        size_t want = avail < SL_MAX_RESPONSE_HEAD ? avail : SL_MAX_RESPONSE_HEAD;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
        struct sl_http_header headers[SL_MAX_HEADERS_ARRAY];
        struct sl_http_response resp;
        memset(&resp, 0, sizeof resp);
        resp.headers = headers;
        resp.header_capacity = SL_MAX_HEADERS_ARRAY;
        struct sl_http_limits limits = {SL_MAX_RESPONSE_HEAD, SL_MAX_RESPONSE_HEAD,
                                        SL_MAX_HEADERS_ARRAY - 1};
        int n = sl_http_parse_response(data, want, r->is_head, &limits, &resp);
        if (n == SL_HTTP_INCOMPLETE) {
            if (want >= SL_MAX_RESPONSE_HEAD) {
                abort_request(r, 502, MSG_BAD_GATEWAY);
            }
            return;
        }
        if (n < 0) {
            sl_warn("upstream %s: invalid response: %s", r->up->addr_text,
                    resp.error ? resp.error : "?");
            abort_request(r, 502, MSG_BAD_GATEWAY);
            return;
        }
        if (resp.status >= 100 && resp.status < 200) {
            /* interim responses are not relayed; 101 needs an Upgrade we never send */
            if (resp.status == 101) {
                abort_request(r, 502, MSG_BAD_GATEWAY);
                return;
            }
            evbuffer_drain(in, (size_t)n);
            continue;
        }
        r->upstream_head_us = sl_now_us();
        r->status = resp.status;
        /* passive health checks and the latency algorithm see every answer */
        sl_balancer_report_status(&r->lb, resp.status);
        sl_balancer_report_latency(&r->lb, r->upstream_head_us - r->upstream_start_us);
        r->resp_body_kind = resp.body_kind;
        r->resp_remaining = resp.content_length;
        r->resp_keep_alive = resp.keep_alive;
        sl_chunked_init(&r->resp_chunked);
        sl_chunked_init(&r->resp_filter_chunked);
        size_t before = evbuffer_get_length(bufferevent_get_output(r->client->bev));
        if (!send_response_head(r, &resp)) {
            abort_request(r, 502, MSG_BAD_GATEWAY);
            return;
        }
        r->bytes_out += evbuffer_get_length(bufferevent_get_output(r->client->bev)) - before;
        evbuffer_drain(in, (size_t)n);
        r->resp_head_sent = true;
        evbuffer_free(r->up_head);
        r->up_head = NULL;
        if (r->resp_body_kind == SL_BODY_LENGTH && r->resp_remaining == 0)
            r->resp_body_kind = SL_BODY_NONE;
    }
    forward_response_body(r);
}

/*
 * For an HTTP/1.0 client: forward only the chunk data. Framing bytes are fed
 * to the scanner (one at a time: they are few) and dropped, trailers too.
 */
static bool dechunk_response_body(struct sl_request *r, struct evbuffer *in, struct evbuffer *out)
{
    while (!r->resp_chunked.done && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        uint64_t ready = sl_chunked_data_ready(&r->resp_chunked);
        size_t n = ready ? (ready < vec.iov_len ? (size_t)ready : vec.iov_len) : 1;
        if (sl_chunked_scan(&r->resp_chunked, vec.iov_base, n) < 0) {
            sl_warn("upstream %s: bad chunked response: %s", r->up->addr_text,
                    r->resp_chunked.error ? r->resp_chunked.error : "?");
            client_close(r->client); /* the head is out: cut the stream */
            return false;
        }
        if (ready) {
            if (r->plugins)
                sl_plugins_body_filter(r->plugins, vec.iov_base, n, false);
            evbuffer_remove_buffer(in, out, n);
            r->bytes_out += n;
        } else {
            evbuffer_drain(in, n);
        }
    }
    return true;
}

/*
 * The plugins' body_filter sees the body bytes about to move to the client:
 * the payload only, so for a chunked response a scanner of its own walks
 * the framing and hands over just the chunk data.
 */
static void filter_response_body(struct sl_request *r, struct evbuffer *in, size_t move, bool last)
{
    struct evbuffer_iovec vec[16];
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
    size_t left = move;
    while (left > 0) {
        int n = evbuffer_peek(in, (ev_ssize_t)left, &pos, vec, 16);
        if (n <= 0)
            break;
        size_t seen = 0;
        for (int i = 0; i < n && left > 0; i++) {
            const char *p = vec[i].iov_base;
            size_t len = vec[i].iov_len < left ? vec[i].iov_len : left;
            left -= len;
            seen += len;
            if (r->resp_body_kind != SL_BODY_CHUNKED || r->resp_dechunk) {
                sl_plugins_body_filter(r->plugins, p, len, false);
                continue;
            }
            while (len > 0) {
                uint64_t ready = sl_chunked_data_ready(&r->resp_filter_chunked);
                size_t k = ready ? (ready < len ? (size_t)ready : len) : 1;
                if (sl_chunked_scan(&r->resp_filter_chunked, p, k) < 0)
                    return; /* the forwarding scanner reports it */
                if (ready)
                    sl_plugins_body_filter(r->plugins, p, k, false);
                p += k;
                len -= k;
            }
        }
        if (evbuffer_ptr_set(in, &pos, seen, EVBUFFER_PTR_ADD) < 0)
            break;
    }
    if (last && !r->body_filter_done) {
        r->body_filter_done = true;
        sl_plugins_body_filter(r->plugins, NULL, 0, true);
    }
}

static void forward_response_body(struct sl_request *r)
{
    struct sl_client *c = r->client;
    struct evbuffer *in = bufferevent_get_input(r->up->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t avail = evbuffer_get_length(in);
    size_t move = 0;
    bool done = false;
    switch (r->resp_body_kind) {
    case SL_BODY_NONE:
        done = true;
        break;
    case SL_BODY_LENGTH:
        move = avail < r->resp_remaining ? avail : (size_t)r->resp_remaining;
        r->resp_remaining -= move;
        done = r->resp_remaining == 0;
        break;
    case SL_BODY_CHUNKED: {
        if (r->resp_dechunk) {
            if (!dechunk_response_body(r, in, out))
                return;
            done = r->resp_chunked.done;
            break;
        }
        long used = scan_chunked_input(&r->resp_chunked, in);
        if (used < 0) {
            sl_warn("upstream %s: bad chunked response: %s", r->up->addr_text,
                    r->resp_chunked.error ? r->resp_chunked.error : "?");
            client_close(c); /* the head is out: cut the stream */
            return;
        }
        move = (size_t)used;
        done = r->resp_chunked.done;
        break;
    }
    case SL_BODY_UNTIL_CLOSE:
        move = avail;
        break;
    }
    if (r->plugins && (move > 0 || done))
        filter_response_body(r, in, move, done);
    if (move > 0) {
        evbuffer_remove_buffer(in, out, move);
        r->bytes_out += move;
    }
    write_now(c->bev); /* the response head too, on the first call */
    if (done) {
        if (evbuffer_get_length(in) != 0)
            r->resp_keep_alive = false; /* bytes after the response: don't trust it */
        finish_response(r);
        return;
    }
    if (evbuffer_get_length(out) > SL_HIGH_WATER)
        sl_reader_disable(&r->up->rd); /* client_write turns it back on */
}

static void finish_response(struct sl_request *r)
{
    struct sl_client *c = r->client;
    r->resp_done = true;
    if (r->plugins && !r->body_filter_done) { /* a body read until close */
        r->body_filter_done = true;
        sl_plugins_body_filter(r->plugins, NULL, 0, true);
    }
    if (r->up) {
        bool reusable = r->resp_keep_alive && r->req_body_done &&
                        evbuffer_get_length(bufferevent_get_output(r->up->bev)) == 0 &&
                        !c->w->draining;
        request_log(r);
        sl_upstream_release(r->up, reusable);
        r->up = NULL;
    } else {
        request_log(r);
    }
    if (!r->req_body_done)
        c->close_after = true;
    c->state = CS_FLUSH;
    timer_stop(c);
    sl_reader_set_timeout(&c->rd, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        client_after_response(c);
}

/*
 * A reused connection that closes without answering may have delivered the
 * request anyway; only a request that is safe to repeat goes again (RFC
 * 9110 section 9.2.2; nginx does the same since 1.9.13).
 */
static bool method_is_idempotent(const struct sl_request *r)
{
    static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (strcmp(r->method, idempotent[i]) == 0)
            return true;
    return false;
}

static void up_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_request *r = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        sl_info("upstream %s: %s timeout", r->up->addr_text,
                (what & BEV_EVENT_READING) ? "read" : "write");
        if (!r->resp_head_sent)
            sl_balancer_report_timeout(&r->lb); /* passive timeouts */
        abort_request(r, 504, MSG_TIMEOUT);
        return;
    }
    /* EOF or error */
    if (r->resp_head_sent) {
        if (r->resp_body_kind == SL_BODY_UNTIL_CLOSE) {
            forward_response_body(r);
            r->resp_keep_alive = false;
            finish_response(r);
        } else {
            sl_warn("upstream %s: closed in the middle of the response body", r->up->addr_text);
            client_close(r->client);
        }
        return;
    }
    bool nothing_received = evbuffer_get_length(bufferevent_get_input(bev)) == 0;
    if (r->up->reused && nothing_received && !r->req_body_started && method_is_idempotent(r)) {
        /* a pooled connection the upstream had closed: try once more on a
         * fresh connection (no byte of the body was consumed yet) */
        sl_debug("upstream %s: reused connection closed, retrying on a new one", r->up->addr_text);
        sl_upstream_release(r->up, false);
        r->up = NULL;
        start_upstream(r, false);
        return;
    }
    if (what & BEV_EVENT_ERROR)
        sl_warn("upstream %s: %s", r->up->addr_text, strerror(EVUTIL_SOCKET_ERROR()));
    else
        sl_warn("upstream %s: closed before a complete response", r->up->addr_text);
    if (r->match.service->upstream) {
        /* a transport failure of this target (passive tcp_failures); a
         * request safe to repeat, none of whose body went out, goes to the
         * next target (service.retries) */
        sl_balancer_report_tcp_failure(&r->lb);
        if (nothing_received && !r->req_body_started && method_is_idempotent(r) &&
            r->tries < r->match.service->retries) {
            r->tries++;
            sl_upstream_release(r->up, false);
            r->up = NULL;
            start_upstream(r, false);
            return;
        }
    }
    abort_request(r, 502, MSG_BAD_GATEWAY);
}
