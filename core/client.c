#include "proxy.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "proxy_internal.h"
#include "tls.h"
#include "util.h"

/*
 * The client connection (see proxy_internal.h for how the proxy's files
 * divide the work): one request at a time, pipelined requests wait in the
 * input buffer.
 *
 *   HEAD -> (request pipeline) -> UPSTREAM -> response done -> FLUSH
 *        -> next request, KEEPALIVE (hot) -> IDLE (cold), or close.
 *
 * Backpressure: while the peer's output holds more than its high-water mark
 * (the upstream's SL_HIGH_WATER, the client's SL_RESP_HIGH_WATER) the other
 * side's reading is disabled; the write watermark callback turns it back on
 * once the output drained to the low-water mark.
 *
 * An idle keep-alive client holds no bufferevent and no buffer: only its
 * struct and one read event (see client_go_idle()).
 */

#define SL_LINGER_MS 2000
/* A keep-alive connection keeps its (empty) bufferevent this long before it
 * goes cold; busy clients then never pay a free/alloc and epoll_ctl churn. */
#define SL_HOT_IDLE_MS 100

static void client_read(struct bufferevent *bev, void *arg);
static void client_write(struct bufferevent *bev, void *arg);
static void client_event(struct bufferevent *bev, short what, void *arg);
static void client_timer(evutil_socket_t fd, short what, void *arg);
static void client_deferred(evutil_socket_t fd, short what, void *arg);
static bool client_attach(struct sl_client *c);
static void client_linger(struct sl_client *c);

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static struct timeval ms_to_tv(uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

const struct sl_node_config *sl_client_node(const struct sl_client *c)
{
    return &c->w->snapshot->cfg->node;
}

void sl_client_set_activity(struct sl_client *c, enum conn_activity a)
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

void sl_client_timer_arm(struct sl_client *c, uint32_t ms)
{
    if (!c->timer)
        return;
    struct timeval tv = ms_to_tv(ms);
    evtimer_add(c->timer, &tv);
}

void sl_client_timer_stop(struct sl_client *c)
{
    if (c->timer)
        evtimer_del(c->timer);
}

static void defer(struct sl_client *c)
{
    if (c->deferred)
        event_active(c->deferred, EV_TIMEOUT, 0);
}

void sl_client_fail(struct sl_client *c, int status, const char *message)
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
    sl_client_timer_stop(c);
    sl_reader_disable(&c->rd);
    sl_write_error_response(c, NULL, status, message, request_id, text, true,
                            c->req && c->req->is_head, NULL);
    c->state = CS_ERROR_SENT;
    sl_client_set_activity(c, ACT_WRITING);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (sl_bev_write_now(c->bev))
        client_linger(c);
}

/* ------------------------------------------------------------------------ */
/* lifecycle                                                                 */

void sl_proxy_accept(struct sl_worker *w, int fd, const struct sockaddr *peer, int peer_len,
                     enum sl_listener_kind kind, uint16_t listen_port, bool ssl)
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
    c->kind = kind;
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
        sl_client_close(c);
        return;
    }
    c->state = CS_HEAD;
    sl_client_set_activity(c, ACT_READING);
    /* client_header_timeout counts from accept for the first request */
    sl_client_timer_arm(c, sl_client_node(c)->client_header_timeout_ms);
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
    /* output is written by sl_bev_write_now(); the write event only when it must */
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_setwatermark(c->bev, EV_WRITE, SL_RESP_LOW_WATER, 0);
    /* a client that stops reading our writes is cut after send_timeout
     * (the write event, and so this timer, runs only while output waits) */
    sl_reader_set_write_timeout(&c->rd, sl_client_node(c)->send_timeout_ms);
    /* reading stays enabled; this bounds what a client can queue up */
    sl_reader_set_high_water(&c->rd, sl_client_node(c)->max_header_bytes + SL_HIGH_WATER);
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
    sl_client_set_activity(c, ACT_NONE);
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
        sl_request_parse_head(c);
}

void sl_client_close(struct sl_client *c)
{
    if (c->req) {
        sl_request_free(c->req);
        c->req = NULL;
    }
    c->state = CS_CLOSED;
    if (c->bev) {
        sl_reader_disable(&c->rd);
        bufferevent_disable(c->bev, EV_WRITE);
    }
    sl_client_timer_stop(c);
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
        sl_client_close(c);
        return;
    }
    c->state = CS_LINGER;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in)); /* else a full input never resumes reading */
    sl_reader_set_timeout(&c->rd, 0);
    sl_reader_enable(&c->rd);
    sl_client_timer_arm(c, SL_LINGER_MS);
}

static void idle_wake(evutil_socket_t fd, short what, void *arg);

/* Keep-alive, cold: drop the bufferevent and timers, wait with one event. */
static void client_go_idle(struct sl_client *c, uint32_t keepalive_left_ms)
{
    client_detach(c);
    c->state = CS_IDLE;
    sl_client_set_activity(c, ACT_WAITING);
    if (c->w->draining) {
        sl_client_close(c);
        return;
    }
    c->idle_ev = event_new(c->w->base, c->fd, EV_READ, idle_wake, c);
    if (!c->idle_ev) {
        sl_client_close(c);
        return;
    }
    struct timeval tv = ms_to_tv(keepalive_left_ms);
    event_add(c->idle_ev, &tv);
}

/* Keep-alive, hot: buffers are empty (libevent frees drained chains). */
static void client_keepalive(struct sl_client *c)
{
    uint32_t keepalive = sl_client_node(c)->keepalive_timeout_ms;
    c->tls_idle_long = false;
    c->state = CS_KEEPALIVE;
    sl_client_set_activity(c, ACT_WAITING);
    sl_client_timer_arm(c, keepalive < SL_HOT_IDLE_MS ? keepalive : SL_HOT_IDLE_MS);
}

static void idle_wake(evutil_socket_t fd, short what, void *arg)
{
    struct sl_client *c = arg;
    event_free(c->idle_ev);
    c->idle_ev = NULL;
    if (what & EV_TIMEOUT) {
        sl_client_close(c);
        return;
    }
    if (!client_attach(c)) {
        sl_client_close(c);
        return;
    }
    c->state = CS_HEAD;
    c->got_head_bytes = false;
    c->head_seen = 0;
    sl_client_set_activity(c, ACT_READING);
    sl_client_timer_arm(c, sl_client_node(c)->client_header_timeout_ms);
    sl_reader_enable(&c->rd);
}

void sl_client_after_response(struct sl_client *c)
{
    if (c->req) {
        sl_request_free(c->req);
        c->req = NULL;
    }
    c->requests_served++;
    if (c->close_after || c->w->draining ||
        c->requests_served >= sl_client_node(c)->keepalive_requests) {
        client_linger(c);
        return;
    }
    c->got_head_bytes = false;
    c->head_seen = 0;
    sl_reader_set_timeout(&c->rd, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, SL_RESP_LOW_WATER, 0);
    bool more = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0;
    if (c->peer_eof && !more) {
        sl_client_close(c);
        return;
    }
    if (!c->peer_eof)
        sl_reader_enable(&c->rd);
    if (more) {
        /* a pipelined request is already here */
        c->state = CS_HEAD;
        sl_client_set_activity(c, ACT_READING);
        sl_client_timer_arm(c, sl_client_node(c)->client_header_timeout_ms);
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
            sl_client_close(c);
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
            sl_client_close(c);
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
        uint32_t keepalive = sl_client_node(c)->keepalive_timeout_ms;
        if (keepalive <= SL_HOT_IDLE_MS)
            sl_client_close(c);
        else if (c->ssl && !c->tls_idle_long) {
            /* the TLS session lives in the bufferevent: no cold idle, the
             * rest of keepalive_timeout on the same timer */
            c->tls_idle_long = true;
            sl_client_timer_arm(c, keepalive - SL_HOT_IDLE_MS);
        } else if (c->ssl) {
            sl_client_close(c);
        } else
            client_go_idle(c, keepalive - SL_HOT_IDLE_MS);
        break;
    }
    case CS_HEAD:
        if (c->got_head_bytes)
            sl_client_fail(c, 408, "Request timeout");
        else
            sl_client_close(c);
        break;
    case CS_UPSTREAM:
        /* client_body_total_timeout */
        if (c->req && !c->req->resp_head_sent) {
            struct sl_request *r = c->req;
            sl_respond_error(r, 408, "Request timeout");
        } else {
            sl_client_close(c);
        }
        break;
    default:
        sl_client_close(c);
        break;
    }
}

static void client_read(struct bufferevent *bev, void *arg)
{
    struct sl_client *c = arg;
    switch (c->state) {
    case CS_KEEPALIVE:
        c->state = CS_HEAD;
        sl_client_set_activity(c, ACT_READING);
        sl_client_timer_stop(c);
        sl_request_parse_head(c);
        break;
    case CS_HEAD:
        sl_request_parse_head(c);
        break;
    case CS_UPSTREAM:
        /* before the upstream is connected, and after the body, bytes wait
         * in the input (bounded by the read watermark) */
        if (c->req && c->req->attempt.up && !c->req->req_body_done)
            sl_attempt_forward_body(c->req);
        else if (c->req && c->req->collecting)
            sl_request_collect_body(c->req);
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
        if (r)
            sl_response_resume(r);
        break;
    }
    case CS_FLUSH:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            sl_client_after_response(c);
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
        sl_client_close(c);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && c->state == CS_UPSTREAM && c->req &&
        !c->req->resp_head_sent) {
        /* client_body_timeout: too long between two reads of the body */
        sl_respond_error(c->req, 408, "Request timeout");
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == CS_UPSTREAM && c->req &&
        !c->req->req_body_done) {
        /* the body may be complete in the input already (the upstream is
         * not connected yet): sl_attempt_forward_body() decides */
        c->peer_eof = true;
        sl_reader_disable(&c->rd);
        if (c->req->attempt.up)
            sl_attempt_forward_body(c->req);
        else if (c->req->collecting)
            sl_request_collect_body(c->req);
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        ((c->state == CS_UPSTREAM && c->req && c->req->req_body_done) || c->state == CS_FLUSH)) {
        /* half-close after complete requests: answer them all, then close */
        c->peer_eof = true;
        sl_reader_disable(&c->rd);
        return;
    }
    sl_client_close(c);
}

/* ------------------------------------------------------------------------ */
/* request head                                                              */
