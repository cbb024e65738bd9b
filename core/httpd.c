/*
 * The operator endpoints' HTTP/1.1 server (see httpd.h).
 *
 * A connection goes through four phases: reading the head, reading the
 * body (routes that take one), answering, lingering. Once it is answered
 * it stops reading; when the answer has left, the server shuts its side
 * down and reads and drops what the client still sends until the client
 * closes (at most HTTPD_LINGER_MS): closing with unread bytes would send
 * a TCP reset that can destroy the answer before the client reads it (a
 * 413 to a client still sending its body), as nginx's lingering_close
 * avoids. Then the connection is closed: marked, moved to the server's
 * list of closed connections and freed by the reaper, an event activated
 * for that, so no connection is freed inside one of its own callbacks.
 * The deadline timer bounds the whole connection, lingering included.
 *
 * Memory is bounded per connection (the read high-watermark is the
 * largest head plus the largest body; lingering keeps nothing it reads)
 * and per server (max_connections).
 */
#include "httpd.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define HTTPD_MAX_REQUEST_LINE 4096
#define HTTPD_MAX_HEADERS 63
#define HTTPD_LINGER_MS 2000

struct sl_httpd_conn {
    struct sl_httpd *httpd;
    struct bufferevent *bev;
    struct event *deadline;
    uint64_t deadline_at_ms; /* sl_now_ms() */
    /* set when the head asked for a body that is not all here yet */
    const struct sl_httpd_route *body_route;
    size_t head_len;
    size_t body_len;
    size_t scanned; /* head bytes seen by the last sl_http_head_may_complete() */
    unsigned method;
    bool continue_sent;
    bool answered;
    bool closed; /* on the server's closed list, waiting for the reaper */
    struct sl_httpd_conn *prev, *next;
};

struct sl_httpd {
    struct event_base *base;
    struct sl_httpd_options options;
    struct sl_httpd_route *routes; /* owned copy */
    size_t n_routes;
    struct sl_httpd_conn *open; /* being served */
    size_t n_open;
    struct sl_httpd_conn *closed; /* closed, freed by the reaper */
    struct event *reaper;
    uint64_t refused; /* connections closed at once: max_connections were open */
};

static void list_push(struct sl_httpd_conn **head, struct sl_httpd_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void list_unlink(struct sl_httpd_conn **head, struct sl_httpd_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_free(struct sl_httpd_conn *c)
{
    struct sl_httpd *httpd = c->httpd;
    if (c->closed) {
        list_unlink(&httpd->closed, c);
    } else {
        list_unlink(&httpd->open, c);
        httpd->n_open--;
    }
    bufferevent_free(c->bev); /* closes the socket */
    event_free(c->deadline);
    free(c);
}

/* The deferred close: nothing of c runs again, the reaper frees it. */
static void conn_close_later(struct sl_httpd_conn *c)
{
    if (c->closed)
        return;
    struct sl_httpd *httpd = c->httpd;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    event_del(c->deadline);
    list_unlink(&httpd->open, c);
    httpd->n_open--;
    c->closed = true;
    list_push(&httpd->closed, c);
    event_active(httpd->reaper, EV_TIMEOUT, 0);
}

static void reap(evutil_socket_t fd, short what, void *arg)
{
    struct sl_httpd *httpd = arg;
    while (httpd->closed)
        conn_free(httpd->closed);
}

/*
 * The status line and headers of the one answer to c. False when c was
 * answered already. Reading stops (one request per connection) until the
 * answer has left and lingering drops the rest.
 */
static bool start_answer(struct sl_httpd_conn *c, int status, const char *content_type,
                         size_t body_len, const char *allow)
{
    if (c->answered)
        return false;
    c->answered = true;
    bufferevent_disable(c->bev, EV_READ);
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: %s\r\n"
                        "Content-Length: %zu\r\n"
                        "%s%s%s"
                        "Cache-Control: no-store\r\n"
                        "Server: sluice\r\n"
                        "Connection: close\r\n\r\n",
                        status, sl_http_reason(status), content_type, body_len,
                        allow ? "Allow: " : "", allow ? allow : "", allow ? "\r\n" : "");
    return true;
}

static bool answers_without_body(const struct sl_httpd_conn *c)
{
    return c->method == SL_HTTPD_HEAD;
}

/* {"message": message} (JSON-escaped already by the caller). */
static void answer_message(struct sl_httpd_conn *c, int status, const char *message,
                           const char *allow)
{
    size_t len = strlen("{\"message\":\"\"}") + strlen(message);
    if (start_answer(c, status, SL_HTTPD_JSON, len, allow) && !answers_without_body(c))
        evbuffer_add_printf(bufferevent_get_output(c->bev), "{\"message\":\"%s\"}", message);
}

void sl_httpd_respond(struct sl_httpd_request *req, int status, const char *content_type,
                      const void *body, size_t len)
{
    struct sl_httpd_conn *c = req->conn;
    if (start_answer(c, status, content_type, len, NULL) && !answers_without_body(c))
        evbuffer_add(bufferevent_get_output(c->bev), body, len);
}

void sl_httpd_respond_json(struct sl_httpd_request *req, int status, const char *json)
{
    sl_httpd_respond(req, status, SL_HTTPD_JSON, json, strlen(json));
}

void sl_httpd_respond_buffer(struct sl_httpd_request *req, int status, const char *content_type,
                             struct evbuffer *body)
{
    struct sl_httpd_conn *c = req->conn;
    size_t len = evbuffer_get_length(body);
    if (start_answer(c, status, content_type, len, NULL) && !answers_without_body(c))
        evbuffer_add_buffer(bufferevent_get_output(c->bev), body);
    else
        evbuffer_drain(body, len);
}

static const struct {
    unsigned bit;
    const char *name;
} method_names[] = {
    {SL_HTTPD_GET, "GET"}, {SL_HTTPD_HEAD, "HEAD"},     {SL_HTTPD_POST, "POST"},
    {SL_HTTPD_PUT, "PUT"}, {SL_HTTPD_DELETE, "DELETE"}, {SL_HTTPD_PATCH, "PATCH"},
};

#define N_METHODS (sizeof method_names / sizeof method_names[0])

/* Methods are case-sensitive (RFC 9110 section 9.1); 0 for any other. */
static unsigned method_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < N_METHODS; i++)
        if (strlen(method_names[i].name) == len && memcmp(method_names[i].name, name, len) == 0)
            return method_names[i].bit;
    return 0;
}

/* "GET, HEAD" for an Allow header; out holds every name. */
static void allow_list(unsigned methods, char *out, size_t out_size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < N_METHODS; i++)
        if (methods & method_names[i].bit)
            used += (size_t)snprintf(out + used, out_size - used, "%s%s", used ? ", " : "",
                                     method_names[i].name);
}

static struct sl_http_limits head_limits(const struct sl_httpd *httpd)
{
    struct sl_http_limits limits = {HTTPD_MAX_REQUEST_LINE, httpd->options.max_head,
                                    HTTPD_MAX_HEADERS};
    return limits;
}

static int parse_head(const struct sl_httpd *httpd, const char *data, size_t len,
                      struct sl_http_header *headers, struct sl_http_request *hr)
{
    memset(hr, 0, sizeof *hr);
    hr->headers = headers;
    hr->header_capacity = HTTPD_MAX_HEADERS + 1;
    struct sl_http_limits limits = head_limits(httpd);
    return sl_http_parse_request(data, len, &limits, hr);
}

static const struct sl_httpd_route *find_route(const struct sl_httpd *httpd, const char *path,
                                               size_t path_len)
{
    for (size_t i = 0; i < httpd->n_routes; i++) {
        const char *p = httpd->routes[i].path;
        if (strlen(p) == path_len && memcmp(p, path, path_len) == 0)
            return &httpd->routes[i];
    }
    return NULL;
}

/* Call the route's handler; it must answer before it returns. */
static void serve(struct sl_httpd_conn *c, const struct sl_httpd_route *route,
                  const struct sl_http_request *hr, const char *body, size_t body_len)
{
    const char *query = memchr(hr->target, '?', hr->target_len);
    struct sl_httpd_request req = {
        .method = c->method,
        .path = hr->target,
        .path_len = query ? (size_t)(query - hr->target) : hr->target_len,
        .query = query ? query + 1 : NULL,
        .query_len = query ? hr->target_len - (size_t)(query + 1 - hr->target) : 0,
        .headers = hr->headers,
        .num_headers = hr->num_headers,
        .body = body,
        .body_len = body_len,
        .conn = c,
    };
    route->handler(&req, route->arg);
    if (!c->answered) {
        sl_error("%s: the handler of %s did not answer", c->httpd->options.name, route->path);
        answer_message(c, 500, "An unexpected error occurred", NULL);
    }
}

/* The whole body is in the input: parse the head again where it now lies. */
static void serve_with_body(struct sl_httpd_conn *c, struct evbuffer *in)
{
    size_t total = c->head_len + c->body_len;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)total);
    struct sl_http_header headers[HTTPD_MAX_HEADERS + 1];
    struct sl_http_request hr;
    /* a verdict never changes with more bytes (http1.h), so this is the same head */
    if (data == NULL || parse_head(c->httpd, data, c->head_len, headers, &hr) != (int)c->head_len) {
        answer_message(c, 500, "An unexpected error occurred", NULL);
        return;
    }
    serve(c, c->body_route, &hr, data + c->head_len, c->body_len);
}

/* Content-Length: 0 is a body of no bytes, which the codec calls none. */
static bool has_content_length(const struct sl_http_request *hr)
{
    if (hr->body_kind != SL_BODY_NONE)
        return false; /* chunked */
    for (size_t i = 0; i < hr->num_headers; i++)
        if (hr->headers[i].id == SL_HDR_CONTENT_LENGTH)
            return true;
    return false;
}

/* A complete head of head_len bytes at the start of `in`: route it. */
static void dispatch(struct sl_httpd_conn *c, const struct sl_http_request *hr, size_t head_len,
                     struct evbuffer *in)
{
    const struct sl_httpd *httpd = c->httpd;
    c->method = method_bit(hr->method, hr->method_len);
    const char *query = memchr(hr->target, '?', hr->target_len);
    size_t path_len = query ? (size_t)(query - hr->target) : hr->target_len;
    const struct sl_httpd_route *route = find_route(httpd, hr->target, path_len);
    if (route == NULL) {
        answer_message(c, 404, "Not found", NULL);
        return;
    }
    unsigned allowed = route->methods;
    if (allowed & SL_HTTPD_GET)
        allowed |= SL_HTTPD_HEAD;
    if (!(allowed & c->method)) {
        char allow[64];
        allow_list(allowed, allow, sizeof allow);
        answer_message(c, 405, "Method not allowed", allow);
        return;
    }
    if (!route->takes_body || c->method == SL_HTTPD_GET || c->method == SL_HTTPD_HEAD) {
        serve(c, route, hr, NULL, 0);
        return;
    }
    if (hr->body_kind != SL_BODY_LENGTH && !has_content_length(hr)) {
        answer_message(c, 411,
                       httpd->options.length_required_message
                           ? httpd->options.length_required_message
                           : "Length required",
                       NULL);
        return;
    }
    uint64_t body_len = hr->body_kind == SL_BODY_LENGTH ? hr->content_length : 0;
    if (body_len > httpd->options.max_body) {
        answer_message(c, 413,
                       httpd->options.body_too_large_message ? httpd->options.body_too_large_message
                                                             : "Request body too large",
                       NULL);
        return;
    }
    c->body_route = route;
    c->head_len = head_len;
    c->body_len = (size_t)body_len;
    if (evbuffer_get_length(in) >= head_len + c->body_len) {
        serve_with_body(c, in);
        return;
    }
    /* RFC 9110 section 10.1.1: ask for the body now rather than let the
     * client wait (curl waits a second); an HTTP/1.0 client never expects it */
    if (hr->expect_continue && hr->version_minor >= 1 && !c->continue_sent) {
        c->continue_sent = true;
        evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
    }
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct sl_httpd_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t avail = evbuffer_get_length(in);
    if (c->body_route != NULL) {
        if (avail >= c->head_len + c->body_len)
            serve_with_body(c, in);
        return;
    }
    /* one byte over the bound, so the codec can tell "too long" (431) */
    size_t len = avail < c->httpd->options.max_head + 1 ? avail : c->httpd->options.max_head + 1;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    if (data == NULL) {
        conn_close_later(c);
        return;
    }
    struct sl_http_limits limits = head_limits(c->httpd);
    bool worth_parsing = sl_http_head_may_complete(data, c->scanned, len, &limits);
    c->scanned = len;
    if (!worth_parsing)
        return;
    struct sl_http_header headers[HTTPD_MAX_HEADERS + 1];
    struct sl_http_request hr;
    int n = parse_head(c->httpd, data, len, headers, &hr);
    if (n == SL_HTTP_INCOMPLETE)
        return;
    if (n < 0) {
        answer_message(c, -n, "Bad request", NULL);
        return;
    }
    dispatch(c, &hr, (size_t)n, in);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    conn_close_later(arg); /* EOF or an error */
}

/* Lingering: what the client still sends is dropped until it closes. */
static void linger_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void start_lingering(struct sl_httpd_conn *c)
{
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0) {
        conn_close_later(c); /* the peer is gone already */
        return;
    }
    uint64_t now = sl_now_ms();
    uint64_t left = c->deadline_at_ms > now ? c->deadline_at_ms - now : 0;
    if (left > HTTPD_LINGER_MS)
        left = HTTPD_LINGER_MS;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    bufferevent_setcb(c->bev, linger_read, NULL, conn_event, c);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
}

static void conn_write(struct bufferevent *bev, void *arg)
{
    struct sl_httpd_conn *c = arg;
    if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        start_lingering(c); /* the answer has left */
}

static void conn_deadline(evutil_socket_t fd, short what, void *arg)
{
    conn_close_later(arg);
}

void sl_httpd_accept(struct sl_httpd *httpd, int fd)
{
    if (httpd->n_open >= httpd->options.max_connections) {
        close(fd);
        if (httpd->refused++ % 100 == 0)
            sl_warn("%s: %zu connections open already, a new one is closed (%llu so far)",
                    httpd->options.name, httpd->n_open, (unsigned long long)httpd->refused);
        return;
    }
    struct sl_httpd_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return;
    }
    c->httpd = httpd;
    c->bev = bufferevent_socket_new(httpd->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline = c->bev ? evtimer_new(httpd->base, conn_deadline, c) : NULL;
    if (c->deadline == NULL) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        free(c);
        return;
    }
    list_push(&httpd->open, c);
    httpd->n_open++;
    c->deadline_at_ms = sl_now_ms() + httpd->options.timeout_ms;
    struct timeval tv = {httpd->options.timeout_ms / 1000,
                         (suseconds_t)(httpd->options.timeout_ms % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
    /* the largest head (one byte more, to see it is too large) and body */
    bufferevent_setwatermark(c->bev, EV_READ, 0,
                             httpd->options.max_head + 1 + httpd->options.max_body);
    bufferevent_setcb(c->bev, conn_read, conn_write, conn_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

size_t sl_httpd_connections(const struct sl_httpd *httpd)
{
    return httpd->n_open;
}

struct sl_httpd *sl_httpd_new(struct event_base *base, const struct sl_httpd_options *options,
                              const struct sl_httpd_route *routes, size_t n_routes)
{
    if (options->max_head == 0 || options->timeout_ms == 0 || options->max_connections == 0)
        return NULL; /* every bound is the caller's choice */
    struct sl_httpd *httpd = calloc(1, sizeof *httpd);
    if (httpd == NULL)
        return NULL;
    httpd->base = base;
    httpd->options = *options;
    if (httpd->options.name == NULL)
        httpd->options.name = "httpd";
    httpd->routes = calloc(n_routes ? n_routes : 1, sizeof *httpd->routes);
    httpd->reaper = event_new(base, -1, 0, reap, httpd);
    if (httpd->routes == NULL || httpd->reaper == NULL) {
        sl_httpd_free(httpd);
        return NULL;
    }
    if (n_routes > 0)
        memcpy(httpd->routes, routes, n_routes * sizeof *routes);
    httpd->n_routes = n_routes;
    return httpd;
}

void sl_httpd_close_all(struct sl_httpd *httpd)
{
    if (httpd == NULL)
        return;
    while (httpd->open)
        conn_free(httpd->open);
    while (httpd->closed)
        conn_free(httpd->closed);
}

void sl_httpd_free(struct sl_httpd *httpd)
{
    if (httpd == NULL)
        return;
    sl_httpd_close_all(httpd);
    if (httpd->reaper)
        event_free(httpd->reaper);
    free(httpd->routes);
    free(httpd);
}
