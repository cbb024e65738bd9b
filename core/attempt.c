#include "proxy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy_internal.h"
#include "resilience.h"
#include "util.h"

/*
 * The upstream attempt (see proxy_internal.h for how the proxy's files
 * divide the work). One try:
 *
 *   pick a target -> connect, or reuse a pooled connection -> send the head
 *   and the body (a copy of the body kept in the replay buffer, when the
 *   retry policy may send it again) -> read the response head -> decide.
 *
 * Every way a try can fail goes through attempt_failed(), and the only
 * place that decides whether to try again is retry_decide(). The decision
 * point for an answer is after its head is parsed and before a byte of it
 * goes to the client, so a status the policy retries (a 503, say) never
 * reaches the client while another try is possible.
 *
 * Resilience (resilience.h): the request counts in its service's circuit
 * breakers (requests for the whole request, pending while it waits for a
 * connection, retries while a retry is in flight), deposits in the retry
 * budget, and each try's outcome feeds outlier detection.
 */

static const char MSG_OVERLOADED[] = "upstream overloaded";

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

/* The time a try may wait for its response head once the request is sent:
 * the policy's per_try_timeout, else the service's read_timeout. */
static uint32_t try_timeout_ms(const struct sl_request *r)
{
    const struct sl_service *svc = r->match.service;
    if (svc->retry_policy.set && svc->retry_policy.per_try_timeout_ms)
        return svc->retry_policy.per_try_timeout_ms;
    return svc->read_timeout_ms;
}

/* ------------------------------------------------------------------------ */
/* the retry policy                                                          */

/* What retry_decide() decided. */
enum retry_verdict {
    RETRY_NO,
    RETRY_YES,         /* a retry: counted against the policy's limits */
    RETRY_TRANSPARENT, /* a stale pooled connection: the same try again, fresh */
};

static enum sl_retry_reason reason_of(enum sl_attempt_failure why)
{
    switch (why) {
    case SL_FAIL_CONNECT:
    case SL_FAIL_CONNECT_TIMEOUT:
    case SL_FAIL_DNS:
        return SL_RETRY_REASON_CONNECT;
    case SL_FAIL_TIMEOUT:
    case SL_FAIL_WRITE_TIMEOUT:
        return SL_RETRY_REASON_TIMEOUT;
    case SL_FAIL_STATUS:
        return SL_RETRY_REASON_STATUS;
    default:
        return SL_RETRY_REASON_RESET;
    }
}

static bool status_listed(const struct sl_retry_policy *p, int status)
{
    for (size_t i = 0; i < p->n_retriable_status_codes; i++)
        if (p->retriable_status_codes[i] == status)
            return true;
    return false;
}

/* Does retry_on cover this failure (Envoy's meanings)? */
static bool policy_covers(const struct sl_retry_policy *p, enum sl_attempt_failure why, int status)
{
    unsigned on = p->retry_on;
    switch (why) {
    case SL_FAIL_CONNECT:
    case SL_FAIL_CONNECT_TIMEOUT:
    case SL_FAIL_DNS:
        return on & (SL_RETRY_CONNECT_FAILURE | SL_RETRY_5XX);
    case SL_FAIL_RESET:
        return on & (SL_RETRY_RESET | SL_RETRY_5XX);
    case SL_FAIL_TIMEOUT: /* the per-try timeout */
    case SL_FAIL_WRITE_TIMEOUT:
    case SL_FAIL_INVALID: /* we would answer 502 */
        return on & (SL_RETRY_GATEWAY_ERROR | SL_RETRY_5XX);
    case SL_FAIL_STATUS:
        return ((on & SL_RETRY_5XX) && status >= 500 && status <= 599) ||
               ((on & SL_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504) ||
               ((on & SL_RETRY_RETRIABLE_4XX) && status == 409) ||
               ((on & SL_RETRY_STATUS_CODES) && status_listed(p, status));
    case SL_FAIL__COUNT:
        break;
    }
    return false;
}

/* Did a byte of this try's request reach the upstream (the kernel took it)? */
static bool request_reached_upstream(const struct sl_attempt *a)
{
    if (!a->up || a->queued == 0)
        return false;
    return a->queued > evbuffer_get_length(bufferevent_get_output(a->up->bev));
}

/* Envoy's fully jittered exponential backoff: retry n waits a random time
 * in [0, (2^n - 1) x base_interval), the bound capped at max_interval. */
static uint32_t backoff_ms(const struct sl_retry_policy *p, unsigned n)
{
    uint64_t factor = n >= 32 ? UINT32_MAX : (1ull << n) - 1;
    uint64_t bound = (uint64_t)p->backoff_base_interval_ms * factor;
    if (bound > p->backoff_max_interval_ms)
        bound = p->backoff_max_interval_ms;
    return bound ? (uint32_t)(sl_random64() % bound) : 0;
}

/*
 * The one place that decides whether a failed try goes again. `status`:
 * the answer's status for SL_FAIL_STATUS. `nothing_received`: not a byte of
 * a response came on this try. On RETRY_YES, *delay_ms is the backoff.
 *
 * Always, whatever the policy: a pooled connection that the upstream had
 * closed (it broke at once, nothing received, a request safe to repeat, no
 * body byte consumed) is replaced once by a fresh one; that is connection
 * reuse, not a retry. Inbound (the sidecar's local app) never retries, not
 * even that: retries belong to the calling side, so that tries do not
 * multiply across hops.
 *
 * Kong's policy (a service without retry_policy): a try that could not
 * connect goes again, up to service.retries, while no body byte went out
 * (a name that does not resolve only for a balanced service, which then
 * moves on to another target); a balanced service also retries a
 * connection that broke before any answer, for a request safe to repeat.
 * No backoff.
 *
 * retry_policy (Envoy's semantics, Linkerd's budget): the failure must be
 * one retry_on names; at most num_retries; a method that is not idempotent
 * goes again only if no byte of it reached the upstream; a body that
 * outgrew max_body_bytes cannot go again; the overall timeout must leave
 * time for the backoff; then circuit_breakers.max_retries and the retry
 * budget must allow it (both are taken here when the answer is yes: the
 * retries slot is the next try's, released when that try ends).
 */
static enum retry_verdict retry_decide(struct sl_request *r, enum sl_attempt_failure why,
                                       int status, bool nothing_received, uint32_t *delay_ms)
{
    struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    const struct sl_retry_policy *p = &svc->retry_policy;
    *delay_ms = 0;
    if (r->resp_head_sent || r->client->kind == SL_LISTENER_INBOUND)
        return RETRY_NO;
    if (why == SL_FAIL_RESET && a->up && a->up->reused && nothing_received &&
        !r->req_body_started && method_is_idempotent(r))
        return RETRY_TRANSPARENT;
    if (!p->set) {
        bool balanced = svc->upstream != NULL;
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
    if (a->tries >= p->num_retries || !policy_covers(p, why, status))
        return RETRY_NO;
    if (!method_is_idempotent(r) && request_reached_upstream(a))
        return RETRY_NO;
    if (r->req_body_started && !r->body_replaced && (a->replay_overflow || !a->replay))
        return RETRY_NO;
    *delay_ms = backoff_ms(p, a->tries + 1);
    if (a->deadline_us && sl_now_us() + (uint64_t)*delay_ms * 1000 >= a->deadline_us)
        return RETRY_NO;
    const struct sl_circuit_breakers *cb = &svc->circuit_breakers;
    if (!sl_breaker_enter(a->res->state, SL_BREAKER_RETRIES, cb->set ? cb->max_retries : 0))
        return RETRY_NO;
    if (!sl_budget_withdraw(a->res->state, p, sl_now_ms())) {
        sl_breaker_leave(a->res->state, SL_BREAKER_RETRIES);
        return RETRY_NO;
    }
    return RETRY_YES; /* the caller owns the retries slot taken here */
}

/* ------------------------------------------------------------------------ */
/* the end of a try                                                          */

/* The answer when no other try will be made (for a status: the caller
 * forwards that answer instead). */
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

/* A circuit breaker refused the request: Envoy's answer, at once. */
static void respond_overloaded(struct sl_request *r)
{
    sl_respond_local(r, 503, MSG_OVERLOADED, NULL, NULL, 0, "x-sluice-overloaded: true\r\n");
}

/*
 * What one try came to, for the passive health checks (Kong's) and outlier
 * detection: an upstream status, or a failure of our own (status 0).
 * Called once per try that got that far.
 */
static void attempt_outcome(struct sl_request *r, enum sl_attempt_failure why, int status)
{
    struct sl_attempt *a = &r->attempt;
    if (status == 0) {
        switch (why) {
        case SL_FAIL_CONNECT:
        case SL_FAIL_RESET:
            sl_balancer_report_tcp_failure(&a->lb);
            break;
        case SL_FAIL_CONNECT_TIMEOUT:
        case SL_FAIL_TIMEOUT:
        case SL_FAIL_WRITE_TIMEOUT:
            sl_balancer_report_timeout(&a->lb);
            break;
        default:
            break;
        }
    }
    /* a name that did not resolve says nothing about the target's health */
    if (why != SL_FAIL_DNS && r->match.service->outlier_detection.set)
        sl_outlier_report(a->res, a->target_index, why == SL_FAIL_INVALID ? 502 : status, a->probe,
                          sl_now_ms());
    a->probe = false;
    if (a->counted_retry) { /* this retry is over */
        sl_breaker_leave(a->res->state, SL_BREAKER_RETRIES);
        a->counted_retry = false;
    }
}

/* Drop the try's connection (it is in an unknown state) or its connect. */
static void attempt_drop_connection(struct sl_attempt *a)
{
    if (a->pending) {
        sl_upstream_cancel(a->pending);
        a->pending = NULL;
    }
    if (a->counted_pending) {
        sl_breaker_leave(a->res->state, SL_BREAKER_PENDING);
        a->counted_pending = false;
    }
    if (a->up) {
        sl_upstream_release(a->up, false);
        a->up = NULL;
    }
}

static void backoff_over(evutil_socket_t fd, short what, void *arg)
{
    attempt_try(arg, true);
}

/*
 * Every failed try comes here: report it, then another try or the answer.
 * For SL_FAIL_STATUS the answer is the caller's (it forwards the response
 * when this returns false); every other failure is answered here, and the
 * return value is true.
 */
static bool attempt_failed(struct sl_request *r, enum sl_attempt_failure why, int status)
{
    struct sl_attempt *a = &r->attempt;
    bool nothing_received = !a->up || evbuffer_get_length(bufferevent_get_input(a->up->bev)) == 0;
    uint32_t delay_ms = 0;
    enum retry_verdict verdict = retry_decide(r, why, status, nothing_received, &delay_ms);
    if (verdict == RETRY_TRANSPARENT) {
        sl_debug("upstream %s: reused connection closed, retrying on a new one", a->up->addr_text);
        attempt_drop_connection(a);
        a->reused_retried = true;
        attempt_try(r, false);
        return true;
    }
    if (why == SL_FAIL_RESET && a->reset_errno)
        sl_warn("upstream %s: %s", a->up->addr_text, strerror(a->reset_errno));
    else if (why == SL_FAIL_RESET)
        sl_warn("upstream %s: closed before a complete response", a->up->addr_text);
    attempt_outcome(r, why, status); /* ends this try's own retries slot */
    if (verdict != RETRY_YES) {
        if (why == SL_FAIL_STATUS)
            return false;
        attempt_drop_connection(a);
        attempt_give_up(r, why);
        return true;
    }
    attempt_drop_connection(a);
    a->tries++;
    sl_resilience_count_retry(a->res->state, reason_of(why));
    if (!r->match.service->retry_policy.set) {
        attempt_try(r, false); /* Kong's retries: at once, on a new connection */
        return true;
    }
    a->counted_retry = true; /* the slot retry_decide took */
    if (why == SL_FAIL_STATUS)
        sl_info("upstream %s: retry %u of %s %s after status %d, in %u ms", a->target_host,
                a->tries, r->method, r->log_path, status, delay_ms);
    else
        sl_info("upstream %s: retry %u of %s %s after %s, in %u ms", a->target_host, a->tries,
                r->method, r->log_path, sl_attempt_failure_to_str(why), delay_ms);
    /* the body waits in the client's input until the next try is connected */
    if (!r->req_body_done)
        sl_reader_disable(&r->client->rd);
    if (delay_ms == 0) {
        attempt_try(r, true);
        return true;
    }
    if (!a->backoff_ev)
        a->backoff_ev = evtimer_new(r->client->w->base, backoff_over, r);
    struct timeval tv = {delay_ms / 1000, (suseconds_t)(delay_ms % 1000) * 1000};
    if (!a->backoff_ev || evtimer_add(a->backoff_ev, &tv) != 0)
        attempt_try(r, true);
    return true;
}

/* ------------------------------------------------------------------------ */
/* one try                                                                   */

static void request_body_complete(struct sl_request *r)
{
    struct sl_client *c = r->client;
    r->req_body_done = true;
    if (r->attempt.up)
        sl_reader_set_timeout(&r->attempt.up->rd, try_timeout_ms(r));
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
    if (a->counted_pending) {
        sl_breaker_leave(a->res->state, SL_BREAKER_PENDING);
        a->counted_pending = false;
    }
    if (error == SL_UPSTREAM_OVERFLOW) {
        if (a->probe)
            sl_outlier_abandon(a->res, a->target_index);
        a->probe = false;
        respond_overloaded(r);
        return;
    }
    if (error != SL_UPSTREAM_OK) {
        attempt_failed(r, failure_of(error), 0);
        return;
    }
    const struct sl_service *svc = r->match.service;
    a->up = conn;
    conn->requests++;
    sl_reader_setcb_all(&conn->rd, up_read, up_write, up_event, r);
    sl_reader_set_write_timeout(&conn->rd, svc->write_timeout_ms);
    bufferevent_setwatermark(conn->bev, EV_WRITE, SL_LOW_WATER, 0);
    /* the wait for the answer counts from the end of the request, as
     * nginx's proxy_read_timeout: a long upload is bounded by write_timeout */
    sl_reader_set_timeout(&conn->rd, r->req_body_done ? try_timeout_ms(r) : 0);
    sl_reader_set_high_water(&conn->rd, SL_HIGH_WATER);
    /* the head stays in up_head until the response starts (retries) */
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    write_upstream_head(r, out);
    if (r->body_replaced && r->plugins->up_body_len) {
        evbuffer_add(out, r->plugins->up_body, r->plugins->up_body_len);
        r->req_body_started = true;
    } else if (a->replay && evbuffer_get_length(a->replay) > 0) {
        sl_evbuffer_copy(out, a->replay, SIZE_MAX); /* what earlier tries sent of the body */
    }
    a->queued = evbuffer_get_length(out);
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
    if (node->client_body_total_timeout_ms && a->tries == 0)
        sl_client_timer_arm(c, node->client_body_total_timeout_ms);
    sl_client_set_activity(c, ACT_READING);
    sl_reader_enable(&c->rd);
    sl_attempt_forward_body(r);
}

/* Pick the try's target (balancer and outlier detection); false when none
 * is left. */
static bool attempt_pick(struct sl_request *r)
{
    struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    struct sl_outlier_pick pick;
    sl_outlier_pick_begin(&pick, a->res, svc->outlier_detection.set ? sl_now_ms() : 0);
    if (!svc->upstream) {
        a->target_host = svc->host;
        a->target_port = svc->port;
        a->target_index = 0;
        /* one host: always it (ejected, it is in panic), maybe as the probe */
        sl_outlier_claim(&pick, 0, &a->probe);
        return true;
    }
    struct sl_lb_filter filter = {sl_outlier_usable, &pick};
    /* a target whose probe another request took between the filter and
     * the claim is skipped: pick again (it is out of the filter now) */
    for (int round = 0; round < 4; round++) {
        const struct sl_target *t = sl_balancer_pick(r->snap->balancer, svc->upstream, &a->lb,
                                                     svc->outlier_detection.set ? &filter : NULL);
        if (!t)
            return false;
        if (!sl_outlier_claim(&pick, t->index, &a->probe))
            continue;
        a->target_host = t->host;
        a->target_port = t->port;
        a->target_index = t->index;
        return true;
    }
    return false;
}

static void attempt_try(struct sl_request *r, bool allow_reuse)
{
    struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    a->start_us = sl_now_us();
    a->head_us = 0;
    a->queued = 0;
    a->reset_errno = 0;
    if (!attempt_pick(r)) {
        sl_warn("upstream '%s': no healthy target", svc->upstream->name);
        sl_respond_error(r, 503, SL_MSG_NO_PEER);
        return;
    }
    const struct sl_circuit_breakers *cb = &svc->circuit_breakers;
    if (cb->set) {
        if (!sl_breaker_enter(a->res->state, SL_BREAKER_PENDING, cb->max_pending_requests)) {
            if (a->probe)
                sl_outlier_abandon(a->res, a->target_index);
            a->probe = false;
            respond_overloaded(r);
            return;
        }
        a->counted_pending = true;
    }
    struct sl_upstream_want want = {
        .host = a->target_host,
        .port = a->target_port,
        .tls = svc->index < r->snap->cfg->n_services ? r->snap->service_tls[svc->index] : NULL,
        .connect_timeout_ms = svc->connect_timeout_ms,
        .allow_reuse = allow_reuse,
        .state = cb->set ? a->res->state : NULL,
        .max_connections = cb->set ? cb->max_connections : 0,
    };
    a->pending = sl_upstream_acquire(r->client->w->pool, &want, attempt_connected, r);
    if (!a->pending)
        sl_respond_error(r, 500, SL_MSG_INTERNAL);
}

static void deadline_over(evutil_socket_t fd, short what, void *arg)
{
    struct sl_request *r = arg;
    if (r->resp_head_sent)
        return;
    sl_info("upstream: retry_policy.timeout (%u ms) over after %u retr%s",
            r->match.service->retry_policy.timeout_ms, r->attempt.tries,
            r->attempt.tries == 1 ? "y" : "ies");
    sl_respond_error(r, 504, SL_MSG_TIMEOUT);
}

void sl_attempt_start(struct sl_request *r)
{
    struct sl_attempt *a = &r->attempt;
    const struct sl_service *svc = r->match.service;
    const struct sl_retry_policy *p = &svc->retry_policy;
    a->res = sl_resilience_of(r->snap->resilience, svc);
    if (svc->circuit_breakers.set) {
        if (!sl_breaker_enter(a->res->state, SL_BREAKER_REQUESTS,
                              svc->circuit_breakers.max_requests)) {
            respond_overloaded(r);
            return;
        }
        a->counted_request = true;
    }
    if (p->set && r->client->kind != SL_LISTENER_INBOUND) {
        sl_budget_deposit(a->res->state, sl_now_ms());
        /* keep the body for another try, unless it is known to be too big */
        if (r->req_body_kind == SL_BODY_LENGTH && r->req_remaining > p->max_body_bytes)
            a->replay_overflow = true;
        else if (!r->req_body_done && !r->body_replaced && !(a->replay = evbuffer_new()))
            a->replay_overflow = true;
        if (p->timeout_ms) {
            a->deadline_us = sl_now_us() + (uint64_t)p->timeout_ms * 1000;
            a->deadline_ev = evtimer_new(r->client->w->base, deadline_over, r);
            struct timeval tv = {p->timeout_ms / 1000, (suseconds_t)(p->timeout_ms % 1000) * 1000};
            if (a->deadline_ev)
                evtimer_add(a->deadline_ev, &tv);
        }
    }
    attempt_try(r, true);
}

void sl_attempt_cancel(struct sl_request *r)
{
    struct sl_attempt *a = &r->attempt;
    attempt_drop_connection(a);
    if (a->backoff_ev)
        evtimer_del(a->backoff_ev);
    if (a->deadline_ev)
        evtimer_del(a->deadline_ev);
    if (a->probe) {
        sl_outlier_abandon(a->res, a->target_index);
        a->probe = false;
    }
    if (a->counted_retry) {
        sl_breaker_leave(a->res->state, SL_BREAKER_RETRIES);
        a->counted_retry = false;
    }
}

void sl_attempt_done(struct sl_request *r)
{
    struct sl_attempt *a = &r->attempt;
    sl_balancer_release(&a->lb); /* least-connections: this one is done */
    sl_attempt_cancel(r);
    if (a->counted_request) {
        sl_breaker_leave(a->res->state, SL_BREAKER_REQUESTS);
        a->counted_request = false;
    }
    if (a->backoff_ev)
        event_free(a->backoff_ev);
    if (a->deadline_ev)
        event_free(a->deadline_ev);
    if (a->replay)
        evbuffer_free(a->replay);
    a->backoff_ev = a->deadline_ev = NULL;
    a->replay = NULL;
}

/* ------------------------------------------------------------------------ */
/* the request body, client -> upstream                                      */

/* Keep a copy of the body bytes about to go upstream, within the bound. */
static void replay_keep(struct sl_request *r, struct evbuffer *in, size_t move)
{
    struct sl_attempt *a = &r->attempt;
    if (!a->replay || a->replay_overflow || move == 0)
        return;
    if (evbuffer_get_length(a->replay) + move > r->match.service->retry_policy.max_body_bytes) {
        a->replay_overflow = true; /* this body can go only once */
        evbuffer_free(a->replay);
        a->replay = NULL;
        return;
    }
    sl_evbuffer_copy(a->replay, in, move);
}

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
        replay_keep(r, in, move);
        evbuffer_remove_buffer(in, out, move);
        r->bytes_in += move;
        r->attempt.queued += move;
        r->req_body_started = true;
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

/* A complete response head: another try, or this answer for the client. */
static void attempt_answered(struct sl_request *r, const struct sl_http_response *resp,
                             size_t head_len)
{
    struct sl_attempt *a = &r->attempt;
    a->head_us = sl_now_us();
    /* passive health checks and the latency algorithm see every answer */
    sl_balancer_report_status(&a->lb, resp->status);
    sl_balancer_report_latency(&a->lb, a->head_us - r->upstream_start_us);
    if (r->match.service->retry_policy.set && resp->status >= 400 &&
        attempt_failed(r, SL_FAIL_STATUS, resp->status))
        return; /* another try is on its way */
    if (!r->match.service->retry_policy.set || resp->status < 400)
        attempt_outcome(r, SL_FAIL_STATUS, resp->status);
    if (a->deadline_ev)
        evtimer_del(a->deadline_ev);
    r->upstream_head_us = a->head_us;
    /* the body is bounded by read_timeout between reads, not the try's */
    if (try_timeout_ms(r) != r->match.service->read_timeout_ms)
        sl_reader_set_timeout(&a->up->rd, r->match.service->read_timeout_ms);
    sl_response_begin(r, resp, head_len);
}

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
                attempt_failed(r, SL_FAIL_INVALID, 0);
            }
            return;
        }
        if (n < 0) {
            sl_warn("upstream %s: invalid response: %s", a->up->addr_text,
                    resp.error ? resp.error : "?");
            attempt_failed(r, SL_FAIL_INVALID, 0);
            return;
        }
        if (resp.status >= 100 && resp.status < 200) {
            /* interim responses are not relayed; 101 needs an Upgrade we never send */
            if (resp.status == 101) {
                attempt_failed(r, SL_FAIL_INVALID, 0);
                return;
            }
            evbuffer_drain(in, (size_t)n);
            continue;
        }
        if (resp.transfer_coded && r->client_minor == 0) {
            /* RFC 9112 section 6.1: no Transfer-Encoding to an HTTP/1.0
             * client, and sluice decodes no coding but chunked */
            sl_warn("upstream %s: transfer-coded response for an HTTP/1.0 client",
                    a->up->addr_text);
            attempt_failed(r, SL_FAIL_INVALID, 0);
            return;
        }
        attempt_answered(r, &resp, (size_t)n);
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
        attempt_failed(r, (what & BEV_EVENT_READING) ? SL_FAIL_TIMEOUT : SL_FAIL_WRITE_TIMEOUT, 0);
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
    attempt_failed(r, SL_FAIL_RESET, 0);
}
