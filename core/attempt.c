#include "proxy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy_internal.h"
#include "util.h"

/*
 * The upstream attempt (see proxy_internal.h for how the proxy's files
 * divide the work). One try:
 *
 *   pick a target -> connect, or reuse a pooled connection -> send the head
 *   and the body -> read the response head -> decide.
 *
 * Every way a try can fail goes through attempt_failed(), and the only
 * place that decides whether to try again is retry_decide(). The decision
 * point for an answer is after its head is parsed and before a byte of it
 * goes to the client, so a status the policy retries (a 503, say) never
 * reaches the client while another try is possible.
 */

const char *sl_attempt_failure_to_str(enum sl_attempt_failure f)
{
    switch (f) {
    case SL_FAIL_CONNECT:
        return "connect-failure";
    case SL_FAIL_CONNECT_TIMEOUT:
        return "connect-timeout";
    case SL_FAIL_DNS:
        return "dns-failure";
    case SL_FAIL_RESET:
        return "reset";
    case SL_FAIL_TIMEOUT:
        return "timeout";
    case SL_FAIL_WRITE_TIMEOUT:
        return "write-timeout";
    case SL_FAIL_INVALID:
        return "invalid-response";
    case SL_FAIL_STATUS:
        return "status";
    case SL_FAIL__COUNT:
        break;
    }
    return "?";
}

static void attempt_try(struct sl_request *r, bool allow_reuse);
static void up_read(struct bufferevent *bev, void *arg);
static void up_write(struct bufferevent *bev, void *arg);
static void up_event(struct bufferevent *bev, short what, void *arg);

/*
 * A request safe to repeat (RFC 9110 section 9.2.2): only these may go
 * again once their bytes may have reached the upstream (nginx does the
 * same since 1.9.13).
 */
static bool method_is_idempotent(const struct sl_request *r)
{
    static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (strcmp(r->method, idempotent[i]) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* the retry policy                                                          */

/* What retry_decide() decided. */
enum retry_verdict {
    RETRY_NO,
    RETRY_YES,         /* a retry: counted against the policy's limit */
    RETRY_TRANSPARENT, /* a stale pooled connection: the same try again, fresh */
};

/*
 * The one place that decides whether a failed try goes again.
 * `nothing_received`: not a byte of a response came on this try.
 *
 * Kong's policy (a service without retry_policy): a try that could not
 * connect goes again, up to service.retries, while no body byte went out
 * (a name that does not resolve only for a balanced service, which then
 * moves on to another target); a balanced service also retries a
 * connection that broke before any answer, for a request safe to repeat.
 *
 * Always, whatever the policy: a pooled connection that the upstream had
 * closed (it broke at once, nothing received, a request safe to repeat,
 * no body byte consumed) is replaced once by a fresh one; that is
 * connection reuse, not a retry.
 */
static enum retry_verdict retry_decide(struct sl_request *r, enum sl_attempt_failure why,
                                       bool nothing_received)
{
    const struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    bool balanced = svc->upstream != NULL;
    if (r->resp_head_sent)
        return RETRY_NO;
    if (why == SL_FAIL_RESET && a->up && a->up->reused && nothing_received &&
        !r->req_body_started && method_is_idempotent(r))
        return RETRY_TRANSPARENT;
    if (a->tries >= svc->retries || r->req_body_started)
        return RETRY_NO;
    switch (why) {
    case SL_FAIL_CONNECT:
    case SL_FAIL_CONNECT_TIMEOUT:
        return RETRY_YES;
    case SL_FAIL_DNS:
        return balanced ? RETRY_YES : RETRY_NO;
    case SL_FAIL_RESET:
        return balanced && nothing_received && method_is_idempotent(r) ? RETRY_YES : RETRY_NO;
    default:
        return RETRY_NO;
    }
}

/* The answer when no other try will be made. */
static void attempt_give_up(struct sl_request *r, enum sl_attempt_failure why)
{
    switch (why) {
    case SL_FAIL_DNS:
        sl_respond_error(r, 503, SL_MSG_DNS);
        break;
    case SL_FAIL_CONNECT_TIMEOUT:
    case SL_FAIL_TIMEOUT:
    case SL_FAIL_WRITE_TIMEOUT:
        sl_respond_error(r, 504, SL_MSG_TIMEOUT);
        break;
    default:
        sl_respond_error(r, 502, SL_MSG_BAD_GATEWAY);
        break;
    }
}

/* Passive health checks see every failed try of a balanced service. */
static void report_failure(struct sl_request *r, enum sl_attempt_failure why)
{
    switch (why) {
    case SL_FAIL_CONNECT:
    case SL_FAIL_RESET:
        sl_balancer_report_tcp_failure(&r->attempt.lb);
        break;
    case SL_FAIL_CONNECT_TIMEOUT:
    case SL_FAIL_TIMEOUT:
    case SL_FAIL_WRITE_TIMEOUT:
        sl_balancer_report_timeout(&r->attempt.lb);
        break;
    default:
        break;
    }
}

/* Drop the try's connection (it is in an unknown state) or its connect. */
static void attempt_drop_connection(struct sl_attempt *a)
{
    if (a->pending) {
        sl_upstream_cancel(a->pending);
        a->pending = NULL;
    }
    if (a->up) {
        sl_upstream_release(a->up, false);
        a->up = NULL;
    }
}

/* Every failed try comes here: report it, then another try or the answer. */
static void attempt_failed(struct sl_request *r, enum sl_attempt_failure why)
{
    struct sl_attempt *a = &r->attempt;
    bool nothing_received = !a->up || evbuffer_get_length(bufferevent_get_input(a->up->bev)) == 0;
    enum retry_verdict verdict = retry_decide(r, why, nothing_received);
    if (verdict == RETRY_TRANSPARENT) {
        sl_debug("upstream %s: reused connection closed, retrying on a new one", a->up->addr_text);
        attempt_drop_connection(a);
        a->reused_retried = true;
        attempt_try(r, false);
        return;
    }
    if (why == SL_FAIL_RESET && a->reset_errno)
        sl_warn("upstream %s: %s", a->up->addr_text, strerror(a->reset_errno));
    else if (why == SL_FAIL_RESET)
        sl_warn("upstream %s: closed before a complete response", a->up->addr_text);
    report_failure(r, why);
    attempt_drop_connection(a);
    if (verdict == RETRY_YES) {
        a->tries++;
        attempt_try(r, false);
        return;
    }
    attempt_give_up(r, why);
}

/* ------------------------------------------------------------------------ */
/* one try                                                                   */

static void request_body_complete(struct sl_request *r)
{
    struct sl_client *c = r->client;
    r->req_body_done = true;
    if (r->attempt.up)
        sl_reader_set_timeout(&r->attempt.up->rd, r->match.service->read_timeout_ms);
    sl_client_timer_stop(c);
    sl_reader_set_timeout(&c->rd, 0);
    /* what follows in the input is the next (pipelined) request; it waits
     * there, bounded by the read watermark */
    sl_client_set_activity(c, ACT_WRITING);
}

/* The head goes out; for a balanced service Host names the target this
 * connection goes to (Kong), or the upstream's host_header. */
static void write_upstream_head(struct sl_request *r, struct evbuffer *out)
{
    const struct sl_service *svc = r->match.service;
    size_t head_len = evbuffer_get_length(r->up_head);
    const char *head = (const char *)evbuffer_pullup(r->up_head, (ev_ssize_t)head_len);
    if (!r->up_head_host_at) {
        evbuffer_add(out, head, head_len);
        return;
    }
    const struct sl_upstream *u = svc->upstream;
    const char *name = u->host_header ? u->host_header : r->attempt.target_host;
    bool v6 = strchr(name, ':') != NULL;
    evbuffer_add(out, head, r->up_head_host_at);
    if (r->attempt.target_port == (strcmp(svc->protocol, "https") == 0 ? 443 : 80))
        evbuffer_add_printf(out, "Host: %s%s%s\r\n", v6 ? "[" : "", name, v6 ? "]" : "");
    else
        evbuffer_add_printf(out, "Host: %s%s%s:%u\r\n", v6 ? "[" : "", name, v6 ? "]" : "",
                            r->attempt.target_port);
    evbuffer_add(out, head + r->up_head_host_at, head_len - r->up_head_host_at);
}

static enum sl_attempt_failure failure_of(enum sl_upstream_error error)
{
    switch (error) {
    case SL_UPSTREAM_DNS_FAILED:
        return SL_FAIL_DNS;
    case SL_UPSTREAM_CONNECT_TIMEOUT:
        return SL_FAIL_CONNECT_TIMEOUT;
    default:
        return SL_FAIL_CONNECT;
    }
}

static void attempt_connected(struct sl_upstream_conn *conn, enum sl_upstream_error error,
                              void *arg)
{
    struct sl_request *r = arg;
    struct sl_client *c = r->client;
    struct sl_attempt *a = &r->attempt;
    a->pending = NULL;
    if (error != SL_UPSTREAM_OK) {
        attempt_failed(r, failure_of(error));
        return;
    }
    const struct sl_service *svc = r->match.service;
    a->up = conn;
    a->body_started = false;
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
    write_upstream_head(r, out);
    if (r->body_replaced && r->plugins->up_body_len) {
        evbuffer_add(out, r->plugins->up_body, r->plugins->up_body_len);
        r->req_body_started = true;
        a->body_started = true;
    }
    r->upstream_start_us = sl_now_us();
    sl_reader_enable(&conn->rd);
    if (r->req_body_done) {
        sl_bev_write_now(conn->bev);
        return;
    }
    /* the body's first bytes go out with the head */
    const struct sl_node_config *node = &r->snap->cfg->node;
    if (r->expect_continue) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        r->expect_continue = false;
        sl_bev_write_now(c->bev);
    }
    sl_reader_set_timeout(&c->rd, node->client_body_timeout_ms);
    if (node->client_body_total_timeout_ms)
        sl_client_timer_arm(c, node->client_body_total_timeout_ms);
    sl_client_set_activity(c, ACT_READING);
    sl_reader_enable(&c->rd);
    sl_attempt_forward_body(r);
}

static void attempt_try(struct sl_request *r, bool allow_reuse)
{
    struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    const char *host = svc->host;
    uint16_t port = svc->port;
    a->start_us = sl_now_us();
    a->head_us = 0;
    if (svc->upstream) {
        /* Kong's ring-balancer: a healthy target, another one on a retry
         * when there is another */
        const struct sl_target *t = sl_balancer_pick(r->snap->balancer, svc->upstream, &a->lb);
        if (!t) {
            sl_warn("upstream '%s': no healthy target", svc->upstream->name);
            sl_respond_error(r, 503, SL_MSG_NO_PEER);
            return;
        }
        host = t->host;
        port = t->port;
    }
    a->target_host = host;
    a->target_port = port;
    a->pending =
        sl_upstream_acquire(r->client->w->pool, host, port, r->snap->service_tls[svc->index],
                            svc->connect_timeout_ms, allow_reuse, attempt_connected, r);
    if (!a->pending)
        sl_respond_error(r, 500, SL_MSG_INTERNAL);
}

void sl_attempt_start(struct sl_request *r)
{
    attempt_try(r, true);
}

void sl_attempt_cancel(struct sl_request *r)
{
    attempt_drop_connection(&r->attempt);
}

void sl_attempt_done(struct sl_request *r)
{
    sl_balancer_release(&r->attempt.lb); /* least-connections: this one is done */
    attempt_drop_connection(&r->attempt);
}

/* ------------------------------------------------------------------------ */
/* the request body, client -> upstream                                      */

void sl_attempt_forward_body(struct sl_request *r)
{
    struct sl_client *c = r->client;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(r->attempt.up->bev);
    const struct sl_node_config *node = &r->snap->cfg->node;
    size_t avail = evbuffer_get_length(in);
    size_t move = 0;

    if (r->req_body_kind == SL_BODY_LENGTH) {
        move = avail < r->req_remaining ? avail : (size_t)r->req_remaining;
        r->req_remaining -= move;
        r->req_body_bytes += move;
    } else {
        /* validate the chunked framing of the bytes before they go upstream */
        long used = sl_scan_chunked_evbuffer(&r->req_chunked, in, 0);
        if (used < 0) {
            sl_info("client %s: bad chunked body: %s", c->peer_ip,
                    r->req_chunked.error ? r->req_chunked.error : "?");
            sl_respond_error(r, 400, "Bad request");
            return;
        }
        move = (size_t)used;
        r->req_body_bytes = r->req_chunked.body_bytes;
    }
    if (node->client_max_body_size && r->req_body_bytes > node->client_max_body_size) {
        sl_respond_error(r, 413, "Request size limit exceeded");
        return;
    }
    if (move > 0) {
        evbuffer_remove_buffer(in, out, move);
        r->bytes_in += move;
        r->req_body_started = true;
        r->attempt.body_started = true;
    }
    sl_bev_write_now(r->attempt.up->bev);
    if ((r->req_body_kind == SL_BODY_LENGTH && r->req_remaining == 0) ||
        (r->req_body_kind == SL_BODY_CHUNKED && r->req_chunked.done)) {
        request_body_complete(r);
        return;
    }
    if (c->peer_eof && evbuffer_get_length(in) == 0) {
        /* the client closed in the middle of its body */
        sl_info("client %s: closed before the end of the request body", c->peer_ip);
        sl_client_close(c);
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

/* ------------------------------------------------------------------------ */
/* the response head: the decision point                                     */

static void up_read(struct bufferevent *bev, void *arg)
{
    struct sl_request *r = arg;
    struct sl_attempt *a = &r->attempt;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (r->resp_head_sent) {
        sl_response_forward_body(r);
        return;
    }
    for (;;) {
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
                sl_warn("upstream %s: response head larger than %d bytes", a->up->addr_text,
                        SL_MAX_RESPONSE_HEAD);
                attempt_failed(r, SL_FAIL_INVALID);
            }
            return;
        }
        if (n < 0) {
            sl_warn("upstream %s: invalid response: %s", a->up->addr_text,
                    resp.error ? resp.error : "?");
            attempt_failed(r, SL_FAIL_INVALID);
            return;
        }
        if (resp.status >= 100 && resp.status < 200) {
            /* interim responses are not relayed; 101 needs an Upgrade we never send */
            if (resp.status == 101) {
                attempt_failed(r, SL_FAIL_INVALID);
                return;
            }
            evbuffer_drain(in, (size_t)n);
            continue;
        }
        a->head_us = sl_now_us();
        r->upstream_head_us = a->head_us;
        /* passive health checks and the latency algorithm see every answer */
        sl_balancer_report_status(&a->lb, resp.status);
        sl_balancer_report_latency(&a->lb, a->head_us - r->upstream_start_us);
        sl_response_begin(r, &resp, (size_t)n);
        return;
    }
}

static void up_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_request *r = arg;
    struct sl_attempt *a = &r->attempt;
    if (what & BEV_EVENT_TIMEOUT) {
        sl_info("upstream %s: %s timeout", a->up->addr_text,
                (what & BEV_EVENT_READING) ? "read" : "write");
        if (r->resp_head_sent) {
            sl_respond_error(r, 504, SL_MSG_TIMEOUT); /* cuts the stream */
            return;
        }
        attempt_failed(r, (what & BEV_EVENT_READING) ? SL_FAIL_TIMEOUT : SL_FAIL_WRITE_TIMEOUT);
        return;
    }
    /* EOF or error */
    if (r->resp_head_sent) {
        if (r->resp_body_kind == SL_BODY_UNTIL_CLOSE) {
            sl_response_forward_body(r);
            r->resp_keep_alive = false;
            sl_response_finish(r);
        } else {
            sl_warn("upstream %s: closed in the middle of the response body", a->up->addr_text);
            sl_client_close(r->client);
        }
        return;
    }
    a->reset_errno = (what & BEV_EVENT_ERROR) ? EVUTIL_SOCKET_ERROR() : 0;
    attempt_failed(r, SL_FAIL_RESET);
}
