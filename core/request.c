#include "proxy.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "proxy_internal.h"
#include "tls.h"
#include "util.h"

/*
 * The request pipeline (see proxy_internal.h for how the proxy's files
 * divide the work): the head is parsed and checked, the plugins' rewrite
 * phase runs, the router picks a route, the access phase runs (it may
 * read the whole body), and the upstream head is built for the attempt.
 */

static bool request_keep_head(struct sl_request *r, const char *data, size_t head_len);
static bool request_plugins_init(struct sl_request *r);
static bool request_run_plugins(struct sl_request *r);
static void request_route(struct sl_request *r);
static void request_proxy(struct sl_request *r);

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

/* Kong's X-Forwarded-* and X-Real-IP: `xff` the client's X-Forwarded-For
 * values, `kept` the other ones a trusted client sent (by header id). */
static void add_forwarded(const struct sl_request *r, struct evbuffer *out,
                          const struct sl_http_header *const *xff_values, size_t n_xff,
                          const struct sl_http_header *const *kept, const char *path,
                          size_t path_len, const char *host, size_t host_len)
{
    const struct sl_client *c = r->client;
    const struct sl_route *route = r->match.route;
    evbuffer_add(out, "X-Forwarded-For: ", 17);
    for (size_t i = 0; i < n_xff; i++) {
        evbuffer_add(out, xff_values[i]->value, xff_values[i]->value_len);
        evbuffer_add(out, ", ", 2);
    }
    evbuffer_add_printf(out, "%s\r\n", c->peer_ip);

#define FORWARDED(id, name, ...)                                                                   \
    do {                                                                                           \
        if (kept[id])                                                                              \
            sl_add_header_line(out, name, sizeof name - 1, kept[id]->value, kept[id]->value_len);  \
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
        sl_add_header_line(out, "X-Forwarded-Prefix", 18, kept[SL_HDR_X_FORWARDED_PREFIX]->value,
                           kept[SL_HDR_X_FORWARDED_PREFIX]->value_len);
    else if (route && route->strip_path && r->match.matched_prefix_len > 1)
        evbuffer_add_printf(out, "X-Forwarded-Prefix: %.*s\r\n", (int)r->match.matched_prefix_len,
                            path);
}

/*
 * The request head going upstream. Kong's rules: hop-by-hop headers out,
 * X-Forwarded-* from the client only when it is trusted, X-Forwarded-For
 * always appended to. `authority`: the client's host[:port], from an
 * absolute-form target if there is one (RFC 9112 section 3.2.2: it replaces
 * Host), else from Host.
 *
 * A sidecar's hop (inbound, outbound) is transparent instead, as Envoy's
 * and Linkerd's are: Host stays the client's, and X-Forwarded-* are
 * neither added nor filtered; Via and X-Request-Id are still ours.
 */
static bool build_upstream_head(struct sl_request *r, const struct sl_http_request *req,
                                const char *path, size_t path_len, const char *query,
                                size_t query_len, const char *host, size_t host_len,
                                const char *authority, size_t authority_len)
{
    struct sl_client *c = r->client;
    const struct sl_service *svc = r->match.service;
    const struct sl_route *route = r->match.route; /* NULL: a sidecar's service by name */
    bool mesh = c->kind != SL_LISTENER_PROXY;
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
    if (sl_edit_overrides(up_edits, "Host", 4))
        ; /* a plugin's Host goes out with the other edits */
    else if ((mesh || route->preserve_host) && authority)
        sl_add_header_line(out, "Host", 4, authority, authority_len);
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
            if (mesh)
                break;
            if (n_xff < sizeof xff_values / sizeof xff_values[0])
                xff_values[n_xff++] = h;
            continue;
        case SL_HDR_X_FORWARDED_PROTO:
        case SL_HDR_X_FORWARDED_HOST:
        case SL_HDR_X_FORWARDED_PORT:
        case SL_HDR_X_FORWARDED_PATH:
        case SL_HDR_X_FORWARDED_PREFIX:
        case SL_HDR_X_REAL_IP:
            if (mesh)
                break;
            if (trusted && !kept[h->id])
                kept[h->id] = h;
            continue;
        case SL_HDR_VIA:
            via = h;
            continue;
        default:
            break;
        }
        if (sl_header_is_hop_by_hop(h->id) ||
            sl_header_is_connection_named(h, req->headers, req->num_headers))
            continue;
        if (up_edits && sl_edit_overrides(up_edits, h->name, h->name_len))
            continue;
        sl_add_header_line(out, h->name, h->name_len, h->value, h->value_len);
    }
    for (const struct sl_header_edit *e = up_edits; e; e = e->next)
        if (e->op != SL_EDIT_REMOVE)
            sl_add_header_line(out, e->name, e->name_len, e->value, e->value_len);
    if (!mesh)
        add_forwarded(r, out, xff_values, n_xff, kept, path, path_len, host, host_len);
    sl_add_via(out, via);
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
    r->attempt.lb.hash_set = sl_balancer_hash_request(svc->upstream, &in, &r->attempt.lb.hash);
}

void sl_request_parse_head(struct sl_client *c)
{
    const struct sl_node_config *node = sl_client_node(c);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return;
    if (!c->got_head_bytes) {
        c->got_head_bytes = true;
        if (c->requests_served > 0)
            sl_client_timer_arm(c, node->client_header_timeout_ms);
    }
    size_t limit = node->max_header_bytes + 1;
    size_t want = avail < limit ? avail : limit;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    if (!data) {
        sl_client_close(c);
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
            sl_client_close(c); /* no more bytes will come */
        return;
    }
    c->head_seen = 0;
    atomic_fetch_add_explicit(&c->w->stats.total_requests, 1, memory_order_relaxed);
    if (head_len < 0) {
        sl_info("client %s: request refused (%d): %s", c->peer_ip, -head_len,
                req.error ? req.error : "bad request");
        sl_client_fail(c, -head_len, -head_len == 400 ? "Bad request" : sl_http_reason(-head_len));
        return;
    }
    sl_client_timer_stop(c);

    struct sl_request *r = calloc(1, sizeof *r);
    if (!r) {
        sl_client_close(c);
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
    r->wants_text_errors =
        accept_wants_text(sl_find_header(headers, req.num_headers, SL_HDR_ACCEPT));
    snprintf(r->method, sizeof r->method, "%.*s", (int)req.method_len, req.method);
    const struct sl_http_header *rid =
        sl_find_header(headers, req.num_headers, SL_HDR_X_REQUEST_ID);
    if (rid && rid->value_len > 0 && rid->value_len <= SL_MAX_CLIENT_REQUEST_ID)
        snprintf(r->request_id, sizeof r->request_id, "%.*s", (int)rid->value_len, rid->value);
    else
        sl_request_id(r->request_id);
    if (!req.keep_alive)
        c->close_after = true;
    if (r->req_body_kind == SL_BODY_LENGTH && r->req_remaining == 0)
        r->req_body_kind = SL_BODY_NONE;
    r->req_body_done = r->req_body_kind == SL_BODY_NONE;

    /* request-target: origin-form, or absolute-form (RFC 9112 section 3.2.2),
     * which the codec split and whose authority replaces Host */
    const char *target = req.origin;
    size_t target_len = req.origin_len;
    const char *host = req.authority;
    size_t host_len = req.authority_len;
    if (!req.absolute_form && (target_len == 0 || target[0] != '/')) {
        sl_client_fail(c, 400, "Bad request");
        return;
    }
    const char *qmark = memchr(target, '?', target_len);
    size_t raw_path_len = qmark ? (size_t)(qmark - target) : target_len;
    const char *query = qmark;
    size_t query_len = qmark ? target_len - raw_path_len : 0;
    const char *raw_path = target;
    if (raw_path_len == 0) { /* "http://a.example" or "http://a.example?q" */
        raw_path = "/";
        raw_path_len = 1;
    }
    /* Route on the normalised path and send that one upstream, so
     * "/api/v1/users/../orders" can only ever be "/api/v1/orders". */
    char path_buf[SL_MAX_PATH + 1];
    long normalized = sl_router_normalize_path(raw_path, raw_path_len, path_buf, sizeof path_buf);
    if (normalized < 0) {
        sl_client_fail(c, normalized == -2 ? 414 : 400,
                       normalized == -2 ? "URI Too Long" : "Bad request");
        return;
    }
    snprintf(r->log_path, sizeof r->log_path, "%.*s", (int)normalized, path_buf);
    if (node->client_max_body_size && r->req_body_kind == SL_BODY_LENGTH &&
        r->req_remaining > node->client_max_body_size) {
        sl_client_fail(c, 413, "Request size limit exceeded");
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
            sl_client_fail(c, 400, "Bad request");
            return;
        }
        if (node->client_max_body_size && probe.body_bytes > node->client_max_body_size) {
            sl_client_fail(c, 413, "Request size limit exceeded");
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
    sl_client_set_activity(c, ACT_WRITING);
    if (sl_plugins_active(r->snap->cfg)) {
        /* plugins may suspend the request: keep a copy of the head, then
         * the input holds only body bytes (and what follows) */
        if (!request_keep_head(r, data, (size_t)head_len) || !request_plugins_init(r)) {
            r->head = NULL;
            sl_client_fail(c, 500, SL_MSG_INTERNAL);
            return;
        }
        sl_request_release_head_bytes(r);
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
    copy->req.authority = REBASE(h->req.authority);
    copy->req.origin = REBASE(h->req.origin);
    copy->query = REBASE(h->query);
    copy->host_name = REBASE(h->host_name);
    copy->authority = REBASE(h->authority);
#undef REBASE
    copy->path = copy->buf + head_len;
    r->head = copy;
    r->head_owned = true;
    return true;
}

void sl_request_head_free(struct sl_request *r)
{
    if (r->head_owned) {
        free(r->head->buf);
        free(r->head->headers);
        free(r->head);
        r->head_owned = false;
    }
    r->head = NULL; /* without a copy it was on sl_request_parse_head()'s stack */
}

void sl_request_release_head_bytes(struct sl_request *r)
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
        sl_respond_error(r, p->respond_status, p->respond_message);
        return;
    }
    sl_respond_local(r, p->respond_status, NULL, p->respond_content_type, p->respond_body,
                     p->respond_body_len, NULL);
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
        sl_client_set_activity(r->client, ACT_WAITING);
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
    sl_client_set_activity(r->client, ACT_WRITING);
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
        sl_respond_error(r, 500, SL_MSG_INTERNAL);
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
        sl_bev_write_now(c->bev);
    }
    sl_reader_set_high_water(&c->rd, node->max_header_bytes + collect_input_bound(max));
    sl_reader_set_timeout(&c->rd, node->client_body_timeout_ms);
    if (node->client_body_total_timeout_ms)
        sl_client_timer_arm(c, node->client_body_total_timeout_ms);
    sl_client_set_activity(c, ACT_READING);
    sl_reader_enable(&c->rd);
    sl_request_collect_body(r);
}

/* New input while collecting: is the body complete (or too large)? The
 * bytes stay in the input; nothing is consumed here. */
void sl_request_collect_body(struct sl_request *r)
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
        long used = sl_scan_chunked_evbuffer(&r->collect_chunked, in, r->collect_scanned);
        if (used < 0) {
            sl_info("client %s: bad chunked body: %s", c->peer_ip,
                    r->collect_chunked.error ? r->collect_chunked.error : "?");
            c->close_after = true;
            sl_respond_error(r, 400, "Bad request");
            return;
        }
        r->collect_scanned += (size_t)used;
        if (node->client_max_body_size &&
            r->collect_chunked.body_bytes > node->client_max_body_size) {
            c->close_after = true;
            sl_respond_error(r, 413, "Request size limit exceeded");
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
        sl_client_timer_stop(c);
        sl_reader_set_timeout(&c->rd, 0);
        sl_reader_set_high_water(&c->rd, node->max_header_bytes + SL_HIGH_WATER);
        sl_client_set_activity(c, ACT_WAITING);
        /* the plugin hears of it from the loop, never from inside the
         * hook that asked */
        event_active(r->collect_ev, EV_TIMEOUT, 1);
        return;
    }
    if (c->peer_eof) {
        sl_info("client %s: closed before the end of the request body", c->peer_ip);
        sl_client_close(c);
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
        sl_respond_error(r, 500, SL_MSG_INTERNAL);
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
            sl_find_header(h->req.headers, h->req.num_headers, SL_HDR_X_FORWARDED_PROTO);
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
        sl_respond_local(r, 426, "Please use HTTPS protocol", NULL, NULL, 0,
                         "Upgrade: TLS/1.2, HTTP/1.1\r\n");
        return;
    }
    char location[SL_MAX_PATH + 600];
    int n = snprintf(location, sizeof location, "Location: https://%.*s%.*s%.*s\r\n",
                     (int)(h->host_name ? h->host_name_len : 0), h->host_name ? h->host_name : "",
                     (int)h->path_len, h->path, (int)(h->query ? h->query_len : 0),
                     h->query ? h->query : "");
    if (n < 0 || (size_t)n >= sizeof location) {
        sl_respond_error(r, 414, "URI Too Long");
        return;
    }
    sl_respond_local(r, code, NULL, NULL, NULL, 0, location);
}

/* Nothing matched: Kong's 404 (the body is not read, so the connection
 * cannot be resynced and closes after the answer). */
static void answer_no_route(struct sl_request *r)
{
    sl_request_release_head_bytes(r);
    if (!r->req_body_done)
        r->client->close_after = true;
    sl_respond_error(r, 404, SL_MSG_NO_ROUTE);
}

/* The gateway's pipeline: Kong's router, then the route's protocols. True
 * when r->match is set; false when the request was answered. */
static bool route_by_router(struct sl_request *r)
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
        answer_no_route(r);
        return false;
    }
    unsigned proto = request_protocol(r);
    if (!(r->match.route->protocols & proto)) {
        if (proto == SL_PROTO_HTTPS) /* an http-only route: not for https (Kong) */
            answer_no_route(r);
        else
            redirect_to_https(r);
        return false;
    }
    return true;
}

/* The sidecar's inbound pipeline: every request goes to the local app. */
static bool route_to_app(struct sl_request *r)
{
    memset(&r->match, 0, sizeof r->match);
    r->match.service = r->snap->app_service;
    return true;
}

/* The sidecar's outbound pipeline: the authority (Host without its port,
 * or an absolute-form target's) names a service; else a route's hosts
 * may match it, with the gateway's router; else Kong's 404. */
static bool route_by_authority(struct sl_request *r)
{
    const struct request_head *h = r->head;
    const struct sl_service *svc =
        h->host_name ? sl_snapshot_service_by_name(r->snap, h->host_name, h->host_name_len) : NULL;
    if (!svc)
        return route_by_router(r);
    memset(&r->match, 0, sizeof r->match);
    r->match.service = svc;
    return true;
}

/* Each kind of listener is a pipeline over the same pieces; they differ in
 * how a request finds its service. */
static bool (*const route_of_kind[])(struct sl_request *r) = {
    [SL_LISTENER_PROXY] = route_by_router,
    [SL_LISTENER_INBOUND] = route_to_app,
    [SL_LISTENER_OUTBOUND] = route_by_authority,
};

/* After rewrite: find the service (and route), then the access phase. */
static void request_route(struct sl_request *r)
{
    if (!route_of_kind[r->client->kind](r))
        return;
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
        sl_request_release_head_bytes(r);
        sl_respond_error(r, r->up_head ? 414 : 500, r->up_head ? "URI Too Long" : SL_MSG_INTERNAL);
        return;
    }
    sl_request_release_head_bytes(r);
    sl_request_head_free(r);
    /* body bytes that arrive before the upstream is connected wait in the
     * input, bounded by the read watermark */
    (void)c;
    sl_attempt_start(r);
}

/* ------------------------------------------------------------------------ */
/* the end of a request                                                      */

void sl_request_free(struct sl_request *r)
{
    sl_attempt_done(r); /* the upstream side: connection, balancing, counters */
    if (r->plugins) {
        sl_plugin_ctx_release(r->plugins); /* cancels a suspended hook */
        free(r->plugins);
    }
    sl_request_head_free(r);
    if (r->up_head)
        evbuffer_free(r->up_head);
    if (r->collect_ev)
        event_free(r->collect_ev);
    if (r->snap)
        sl_snapshot_unref(r->snap);
    free(r);
}

/* The access log line (JSON, one line). */
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
    /* the sidecar's listener, and the retries a request took */
    char extra[64] = "";
    int at = 0;
    if (c->kind != SL_LISTENER_PROXY)
        at = snprintf(extra, sizeof extra, ",\"direction\":\"%s\"",
                      sl_listener_kind_to_str(c->kind));
    if (r->attempt.tries && at >= 0 && (size_t)at < sizeof extra)
        snprintf(extra + at, sizeof extra - (size_t)at, ",\"retries\":%u", r->attempt.tries);
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "{\"time\":\"%s.%03ldZ\",\"request_id\":\"%s\",\"client_ip\":\"%s\","
                     "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes_in\":%llu,"
                     "\"bytes_out\":%llu,\"latency_ms\":{\"request\":%.3f,\"upstream\":%.3f,"
                     "\"proxy\":%.3f},\"service\":\"%s\",\"route\":\"%s\",\"upstream\":\"%s\"%s%s}",
                     when, ts.tv_nsec / 1000000, rid, c->peer_ip, method, path, r->status,
                     (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out, total_ms,
                     upstream_ms, proxy_ms, svc && svc->name ? svc->name : "",
                     route && route->name ? route->name : "",
                     r->attempt.up ? r->attempt.up->addr_text : "", consumer, extra);
    if (n > 0)
        sl_worker_access_log(c->w, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void sl_request_log(struct sl_request *r)
{
    if (r->plugins) {
        r->plugins->resp_status = r->status;
        sl_plugins_log(r->plugins);
    }
    const struct sl_service *svc = r->match.service;
    const struct sl_route *route = r->match.route;
    uint64_t total_us = sl_now_us() - r->start_us;
    uint64_t upstream_us = r->upstream_head_us ? r->upstream_head_us - r->upstream_start_us : 0;
    const char *direction =
        r->client->kind == SL_LISTENER_PROXY ? NULL : sl_listener_kind_to_str(r->client->kind);
    sl_metrics_observe(r->client->w->metrics, direction,
                       svc ? (svc->name ? svc->name : svc->host) : NULL,
                       route ? (route->name ? route->name : route->id) : NULL, r->status,
                       r->bytes_in, r->bytes_out, total_us, upstream_us);
    access_log(r);
}
