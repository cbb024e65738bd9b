#include "proxy.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy_internal.h"
#include "util.h"

/*
 * The response to the client (see proxy_internal.h for how the proxy's
 * files divide the work): answers of our own (errors in Kong's shape, a
 * plugin's response) and the upstream's, whose head is re-framed here and
 * whose body is streamed with backpressure.
 */

const char SL_MSG_NO_ROUTE[] = "no Route matched with those values";
const char SL_MSG_BAD_GATEWAY[] = "An invalid response was received from the upstream server";
const char SL_MSG_TIMEOUT[] = "The upstream server is timing out";
const char SL_MSG_DNS[] = "name resolution failed";
/* Kong's message when an upstream has no target to offer (503). */
const char SL_MSG_NO_PEER[] = "failure to get a peer from the ring-balancer";
const char SL_MSG_INTERNAL[] = "An unexpected error occurred";

/* ------------------------------------------------------------------------ */
/* our own answers                                                           */

/* Header lines a plugin asked for on the client's response. */
static void add_response_edits(struct evbuffer *out, const struct sl_plugin_ctx *pctx)
{
    for (const struct sl_header_edit *e = pctx ? pctx->response_edits : NULL; e; e = e->next)
        if (e->op != SL_EDIT_REMOVE)
            sl_add_header_line(out, e->name, e->name_len, e->value, e->value_len);
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
    if (content_type && !sl_edit_overrides(edits, "Content-Type", 12))
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

void sl_write_error_response(struct sl_client *c, const struct sl_plugin_ctx *pctx, int status,
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

/*
 * Answer the client with a response of our own (before any response byte):
 * drop the upstream side, run the plugins' header_filter, write, log.
 * message != NULL: Kong's error shape; else content_type/body as given.
 */
void sl_respond_local(struct sl_request *r, int status, const char *message,
                      const char *content_type, const char *body, size_t body_len,
                      const char *extra_headers)
{
    struct sl_client *c = r->client;
    sl_attempt_cancel(r);
    if (r->resp_head_sent) {
        /* the status line is gone already: all we can do is cut the stream */
        sl_client_close(c);
        return;
    }
    sl_request_release_head_bytes(r);
    r->status = status;
    sl_client_timer_stop(c);
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
        sl_write_error_response(c, r->plugins, status, message, r->request_id, r->wants_text_errors,
                                close_conn, r->is_head, extra_headers);
    else
        write_local_response(c, r->plugins, status, content_type, body, body_len, r->request_id,
                             close_conn, r->is_head, extra_headers);
    r->bytes_out += evbuffer_get_length(bufferevent_get_output(c->bev)) - before;
    r->resp_head_sent = true;
    r->resp_done = true;
    sl_request_head_free(r);
    sl_request_log(r);
    c->state = CS_FLUSH;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (sl_bev_write_now(c->bev))
        sl_client_after_response(c);
}

void sl_respond_error(struct sl_request *r, int status, const char *message)
{
    sl_respond_local(r, status, message, NULL, NULL, 0, NULL);
}

/* ------------------------------------------------------------------------ */
/* the upstream's answer                                                     */

/* The upstream's response head, filtered and re-framed for the client. */
static void write_response_head(struct sl_request *r, const struct sl_http_response *resp)
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
            sl_add_header_line(out, h->name, h->name_len, h->value, h->value_len);
            has_cl = true;
            continue;
        }
        if (h->id == SL_HDR_TRANSFER_ENCODING && resp->transfer_coded) {
            /* the body goes through still coded (RFC 9112 section 6.1: a
             * recipient that keeps a coding keeps its field); never for an
             * HTTP/1.0 client, which attempt.c answers with a 502 instead */
            sl_add_header_line(out, h->name, h->name_len, h->value, h->value_len);
            continue;
        }
        if (sl_header_is_hop_by_hop(h->id) ||
            sl_header_is_connection_named(h, resp->headers, resp->num_headers))
            continue;
        if (edits && sl_edit_overrides(edits, h->name, h->name_len))
            continue;
        sl_add_header_line(out, h->name, h->name_len, h->value, h->value_len);
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
    sl_add_via(out, via);
    evbuffer_add_printf(out, "X-Request-Id: %s\r\n", r->request_id);
    if (client_close_after)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (r->client_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}

void sl_response_begin(struct sl_request *r, const struct sl_http_response *resp, size_t head_len)
{
    struct evbuffer *client_out = bufferevent_get_output(r->client->bev);
    r->status = resp->status;
    r->resp_body_kind = resp->body_kind;
    r->resp_remaining = resp->content_length;
    r->resp_keep_alive = resp->keep_alive;
    sl_chunked_init(&r->resp_chunked);
    sl_chunked_init(&r->resp_filter_chunked);
    size_t before = evbuffer_get_length(client_out);
    write_response_head(r, resp);
    r->bytes_out += evbuffer_get_length(client_out) - before;
    /* the head's bytes (resp points into them) are no longer needed */
    evbuffer_drain(bufferevent_get_input(r->attempt.up->bev), head_len);
    r->resp_head_sent = true;
    evbuffer_free(r->up_head);
    r->up_head = NULL;
    if (r->resp_body_kind == SL_BODY_LENGTH && r->resp_remaining == 0)
        r->resp_body_kind = SL_BODY_NONE;
    sl_response_forward_body(r);
}

void sl_response_resume(struct sl_request *r)
{
    if (r->attempt.up && r->resp_head_sent && !r->resp_done)
        sl_reader_enable(&r->attempt.up->rd);
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
            sl_warn("upstream %s: bad chunked response: %s", r->attempt.up->addr_text,
                    r->resp_chunked.error ? r->resp_chunked.error : "?");
            sl_client_close(r->client); /* the head is out: cut the stream */
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

void sl_response_forward_body(struct sl_request *r)
{
    struct sl_client *c = r->client;
    struct evbuffer *in = bufferevent_get_input(r->attempt.up->bev);
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
        long used = sl_scan_chunked_evbuffer(&r->resp_chunked, in, 0);
        if (used < 0) {
            sl_warn("upstream %s: bad chunked response: %s", r->attempt.up->addr_text,
                    r->resp_chunked.error ? r->resp_chunked.error : "?");
            sl_client_close(c); /* the head is out: cut the stream */
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
    sl_bev_write_now(c->bev); /* the response head too, on the first call */
    if (done) {
        if (evbuffer_get_length(in) != 0)
            r->resp_keep_alive = false; /* bytes after the response: don't trust it */
        sl_response_finish(r);
        return;
    }
    if (evbuffer_get_length(out) > SL_RESP_HIGH_WATER)
        sl_reader_disable(&r->attempt.up->rd); /* sl_response_resume turns it back on */
}

void sl_response_finish(struct sl_request *r)
{
    struct sl_client *c = r->client;
    r->resp_done = true;
    if (r->plugins && !r->body_filter_done) { /* a body read until close */
        r->body_filter_done = true;
        sl_plugins_body_filter(r->plugins, NULL, 0, true);
    }
    if (r->attempt.up) {
        bool reusable = r->resp_keep_alive && r->req_body_done &&
                        evbuffer_get_length(bufferevent_get_output(r->attempt.up->bev)) == 0 &&
                        !c->w->draining;
        sl_request_log(r);
        sl_upstream_release(r->attempt.up, reusable);
        r->attempt.up = NULL;
    } else {
        sl_request_log(r);
    }
    if (!r->req_body_done)
        c->close_after = true;
    c->state = CS_FLUSH;
    sl_client_timer_stop(c);
    sl_reader_set_timeout(&c->rd, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        sl_client_after_response(c);
}
