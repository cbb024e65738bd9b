/*
 * The operator endpoints' HTTP server (core/httpd.c) and the status routes
 * of each role (core/status.c), driven over socketpairs on a private
 * event_base: routing, the answers the server gives by itself (404, 405,
 * 411, 413, the codec's 400/414/431/505, 500), HEAD, bodies, a peer that
 * goes away, the deadline, the bound on connections.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "httpd.h"
#include "metrics.h"
#include "server.h"
#include "status.h"
#include "unit.h"
#include "util.h"

/* What the last handler call saw. */
struct seen {
    int calls;
    unsigned method;
    char path[64];
    char query[64];
    char body[128];
    size_t body_len;
    bool body_null;
    char x_test[64];
};

static struct seen seen;

static void copy_text(char *out, size_t out_size, const char *text, size_t len)
{
    snprintf(out, out_size, "%.*s", (int)len, text ? text : "");
}

static void echo(struct sl_httpd_request *req, void *arg)
{
    seen.calls++;
    seen.method = req->method;
    copy_text(seen.path, sizeof seen.path, req->path, req->path_len);
    copy_text(seen.query, sizeof seen.query, req->query, req->query_len);
    copy_text(seen.body, sizeof seen.body, req->body, req->body_len);
    seen.body_len = req->body_len;
    seen.body_null = req->body == NULL;
    for (size_t i = 0; i < req->num_headers; i++)
        if (sl_http_name_equals(req->headers[i].name, req->headers[i].name_len, "X-Test", 6))
            copy_text(seen.x_test, sizeof seen.x_test, req->headers[i].value,
                      req->headers[i].value_len);
    sl_httpd_respond(req, 200, "text/plain", "echoed", 6);
}

static void silent(struct sl_httpd_request *req, void *arg)
{
    seen.calls++;
}

static void twice(struct sl_httpd_request *req, void *arg)
{
    sl_httpd_respond_json(req, 201, "{\"message\":\"first\"}");
    sl_httpd_respond_json(req, 202, "{\"message\":\"second\"}");
}

static void from_buffer(struct sl_httpd_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "line one\nline two\n");
    sl_httpd_respond_buffer(req, 200, "text/plain; version=0.0.4", b);
    ck_assert_uint_eq(evbuffer_get_length(b), 0); /* drained, also for HEAD */
    evbuffer_free(b);
}

#define BIG_BODY (4u * 1024u * 1024u)

static void big(struct sl_httpd_request *req, void *arg)
{
    char *body = malloc(BIG_BODY);
    ck_assert_ptr_nonnull(body);
    memset(body, 'x', BIG_BODY);
    sl_httpd_respond(req, 200, "text/plain", body, BIG_BODY);
    free(body);
}

static const struct sl_httpd_route routes[] = {
    {SL_HTTPD_GET, "/echo", echo, NULL, false},
    {SL_HTTPD_POST | SL_HTTPD_PUT, "/upload", echo, NULL, true},
    {SL_HTTPD_DELETE, "/thing", echo, NULL, false},
    {SL_HTTPD_GET, "/silent", silent, NULL, false},
    {SL_HTTPD_GET, "/twice", twice, NULL, false},
    {SL_HTTPD_GET, "/buffer", from_buffer, NULL, false},
    {SL_HTTPD_GET, "/big", big, NULL, false},
};

static const struct sl_httpd_options test_options = {
    .name = "test",
    .max_head = 1024,
    .max_body = 64,
    .timeout_ms = 5000,
    .max_connections = 16,
};

static struct event_base *base;
static struct sl_httpd *httpd;

static struct sl_httpd *new_server(const struct sl_httpd_options *options)
{
    struct sl_httpd *s = sl_httpd_new(base, options, routes, sizeof routes / sizeof routes[0]);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* The test server again, with other options. */
static void restart_with(const struct sl_httpd_options *options)
{
    sl_httpd_free(httpd);
    httpd = new_server(options);
}

static void setup(void)
{
    memset(&seen, 0, sizeof seen);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    httpd = new_server(&test_options);
}

static void teardown(void)
{
    sl_httpd_free(httpd);
    httpd = NULL;
    event_base_free(base);
    base = NULL;
}

/* A connection served by s; returns the client's end (non-blocking). */
static int connect_to(struct sl_httpd *s)
{
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    evutil_make_socket_nonblocking(fds[0]);
    evutil_make_socket_nonblocking(fds[1]);
    sl_httpd_accept(s, fds[0]);
    return fds[1];
}

static void send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
}

/* Run the loop for about ms milliseconds. */
static void run_for(unsigned ms)
{
    uint64_t end = sl_now_ms() + ms;
    while (sl_now_ms() < end) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
}

struct reply {
    char text[65536];
    size_t len;
    bool closed; /* the server closed the connection */
    uint64_t elapsed_ms;
};

/*
 * Run the loop and read what the server writes to fd until it closes the
 * connection, stop_at bytes have come (0: no such stop) or 5 s pass.
 */
static void read_reply(int fd, size_t stop_at, struct reply *r)
{
    memset(r, 0, sizeof *r);
    uint64_t start = sl_now_ms();
    while (sl_now_ms() - start < 5000 && !(stop_at && r->len >= stop_at)) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0) {
            r->closed = true;
            break;
        }
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "read: %s", strerror(errno));
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 2);
            continue;
        }
        size_t room = sizeof r->text - 1 - r->len;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        memcpy(r->text + r->len, buf, keep);
        r->len += keep;
    }
    r->text[r->len] = '\0';
    r->elapsed_ms = sl_now_ms() - start;
}

/* One request on a new connection, the whole answer back. */
static void exchange(const char *request, struct reply *r)
{
    int fd = connect_to(httpd);
    send_text(fd, request);
    read_reply(fd, 0, r);
    close(fd);
    ck_assert_msg(r->closed, "the server closes after one answer: %s", r->text);
    run_for(5); /* the reaper */
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);
}

static int status_of(const struct reply *r)
{
    int status = 0;
    if (sscanf(r->text, "HTTP/1.1 %d ", &status) != 1)
        return -1;
    return status;
}

static const char *body_of(const struct reply *r)
{
    const char *end = strstr(r->text, "\r\n\r\n");
    return end ? end + 4 : "";
}

static bool has_header(const struct reply *r, const char *line)
{
    const char *end = strstr(r->text, "\r\n\r\n");
    char needle[256];
    snprintf(needle, sizeof needle, "\r\n%s\r\n", line);
    const char *at = strstr(r->text, needle);
    return at != NULL && end != NULL && at < end;
}

static struct reply last; /* the answer of the last expect() */

/* One request on a new connection: its answer must have `status` and, when
 * body is not NULL, exactly that body. The answer stays in `last`. */
static void expect(const char *request, int status, const char *body)
{
    exchange(request, &last);
    ck_assert_msg(status_of(&last) == status, "%s=> %d expected, got: %s", request, status,
                  last.text);
    if (body != NULL)
        ck_assert_msg(strcmp(body_of(&last), body) == 0, "%s=> body %s expected, got: %s", request,
                      body, body_of(&last));
}

/* The client closes fd, its only connection: the server frees it. */
static void client_closes(int fd)
{
    run_for(5);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 1);
    close(fd);
    run_for(20);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);
}

START_TEST(test_route_gets_the_request)
{
    expect("GET /echo?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Test: hello\r\n\r\n", 200, "echoed");
    ck_assert(has_header(&last, "Content-Length: 6"));
    ck_assert(has_header(&last, "Content-Type: text/plain"));
    ck_assert(has_header(&last, "Connection: close"));
    ck_assert(has_header(&last, "Cache-Control: no-store"));
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_uint_eq(seen.method, SL_HTTPD_GET);
    ck_assert_str_eq(seen.path, "/echo");
    ck_assert_str_eq(seen.query, "x=1&y=2");
    ck_assert_str_eq(seen.x_test, "hello");
    ck_assert(seen.body_null);
    ck_assert_uint_eq(seen.body_len, 0);

    /* no query: NULL; a route with another method (DELETE) */
    expect("DELETE /thing HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert_uint_eq(seen.method, SL_HTTPD_DELETE);
    ck_assert_str_eq(seen.path, "/thing");
    ck_assert_str_eq(seen.query, "");
}
END_TEST

START_TEST(test_not_found_and_method_not_allowed)
{
    expect("GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", 404, "{\"message\":\"Not found\"}");
    ck_assert(has_header(&last, "Content-Type: application/json; charset=utf-8"));
    /* exact paths only: no prefix match, no trailing slash */
    expect("GET /echo/ HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    expect("GET /ech HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    /* an unknown path is 404 whatever the method */
    expect("POST /nothing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 404, NULL);

    expect("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405,
           "{\"message\":\"Method not allowed\"}");
    ck_assert(has_header(&last, "Allow: GET, HEAD"));
    expect("GET /upload HTTP/1.1\r\nHost: a\r\n\r\n", 405, NULL);
    ck_assert(has_header(&last, "Allow: POST, PUT"));
    /* a method the server does not know at all */
    expect("BREW /echo HTTP/1.1\r\nHost: a\r\n\r\n", 405, NULL);
    /* methods are case-sensitive */
    expect("get /echo HTTP/1.1\r\nHost: a\r\n\r\n", 405, NULL);
    ck_assert_int_eq(seen.calls, 0);
}
END_TEST

START_TEST(test_head_has_no_body)
{
    expect("HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert(has_header(&last, "Content-Length: 6")); /* the GET's length */
    ck_assert_str_eq(body_of(&last), "");
    ck_assert_uint_eq(seen.method, SL_HTTPD_HEAD);
    expect("HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    ck_assert(has_header(&last, "Content-Length: 23"));
    ck_assert_str_eq(body_of(&last), "");
    expect("HEAD /buffer HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert(has_header(&last, "Content-Length: 18"));
    ck_assert_str_eq(body_of(&last), "");
    /* HEAD is GET's: a route without GET refuses it */
    expect("HEAD /thing HTTP/1.1\r\nHost: a\r\n\r\n", 405, "");
}
END_TEST

START_TEST(test_codec_errors)
{
    /* smuggling shape: both framings */
    expect("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
           "Transfer-Encoding: chunked\r\n\r\n",
           400, "{\"message\":\"Bad request\"}");
    expect("GET /echo HTTP/3.0\r\nHost: a\r\n\r\n", 505, "{\"message\":\"Bad request\"}");

    /* a request line over 4096 bytes, with a head bound above that (status: 8192) */
    struct sl_httpd_options options = test_options;
    options.max_head = 8192;
    struct sl_httpd *small = httpd;
    httpd = new_server(&options);
    char line[5000];
    snprintf(line, sizeof line, "GET /%04200d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    expect(line, 414, "{\"message\":\"Bad request\"}");
    snprintf(line, sizeof line, "GET /%04000d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    expect(line, 404, NULL); /* under the bound: parsed, then routed */
    sl_httpd_free(httpd);
    httpd = small;

    /* a head over max_head (1024), the request line being short */
    char head[2048];
    snprintf(head, sizeof head, "GET /echo HTTP/1.1\r\nHost: a\r\nX-Pad: %01100d\r\n\r\n", 0);
    expect(head, 431, NULL);
    ck_assert_int_eq(seen.calls, 0);

    /* a head just under the bound is served */
    snprintf(head, sizeof head, "GET /echo HTTP/1.1\r\nHost: a\r\nX-Pad: %0950d\r\n\r\n", 0);
    ck_assert_uint_lt(strlen(head), 1024);
    expect(head, 200, NULL);
}
END_TEST

START_TEST(test_head_in_pieces)
{
    int fd = connect_to(httpd);
    const char *parts[] = {"GE", "T /echo HT", "TP/1.1\r\nHo", "st: a\r\n", "\r\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        send_text(fd, parts[i]);
        run_for(5);
        if (i + 1 < sizeof parts / sizeof parts[0])
            ck_assert_int_eq(seen.calls, 0);
    }
    struct reply r;
    read_reply(fd, 0, &r);
    close(fd);
    ck_assert_int_eq(status_of(&r), 200);
    ck_assert_int_eq(seen.calls, 1);
}
END_TEST

START_TEST(test_body_rules)
{
    expect("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411,
           "{\"message\":\"Length required\"}");
    expect("POST /upload HTTP/1.1\r\nHost: a\r\n\r\n", 411, NULL);
    /* 413 on the head alone: the body is never waited for */
    expect("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n", 413,
           "{\"message\":\"Request body too large\"}");
    ck_assert_int_eq(seen.calls, 0);

    /* exactly max_body, the whole body given to the handler */
    char req[256];
    snprintf(req, sizeof req, "PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n%064d",
             7);
    expect(req, 200, NULL);
    ck_assert_uint_eq(seen.method, SL_HTTPD_PUT);
    ck_assert_uint_eq(seen.body_len, 64);
    ck_assert_str_eq(seen.body + 60, "0007");

    /* an empty body is a body */
    expect("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 200, NULL);
    ck_assert_uint_eq(seen.body_len, 0);
    ck_assert(!seen.body_null);

    /* a route without takes_body ignores a body: answered on the head */
    expect("DELETE /thing HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde", 200, NULL);
    ck_assert(seen.body_null);
}
END_TEST

START_TEST(test_body_messages_of_the_caller)
{
    struct sl_httpd_options options = test_options;
    options.length_required_message = "send a Content-Length";
    options.body_too_large_message = "too big";
    restart_with(&options);
    expect("POST /upload HTTP/1.1\r\nHost: a\r\n\r\n", 411,
           "{\"message\":\"send a Content-Length\"}");
    expect("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", 413,
           "{\"message\":\"too big\"}");
}
END_TEST

START_TEST(test_body_in_pieces_and_continue)
{
    int fd = connect_to(httpd);
    send_text(fd, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n"
                  "Expect: 100-continue\r\n\r\n");
    struct reply r;
    const char *interim = "HTTP/1.1 100 Continue\r\n\r\n";
    read_reply(fd, strlen(interim), &r);
    ck_assert_str_eq(r.text, interim);
    ck_assert_int_eq(seen.calls, 0);
    send_text(fd, "hello");
    run_for(10);
    ck_assert_int_eq(seen.calls, 0); /* 5 of 11 bytes */
    send_text(fd, " world");
    read_reply(fd, 0, &r);
    close(fd);
    ck_assert(r.closed);
    ck_assert_int_eq(status_of(&r), 200);
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_str_eq(seen.body, "hello world");
    ck_assert_uint_eq(seen.body_len, 11);

    /* HTTP/1.0 never gets a 100 (RFC 9110 section 10.1.1) */
    fd = connect_to(httpd);
    send_text(fd, "POST /upload HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    run_for(20);
    send_text(fd, "ok");
    read_reply(fd, 0, &r);
    close(fd);
    ck_assert_int_eq(status_of(&r), 200);
    ck_assert_ptr_null(strstr(r.text, "100 Continue"));
    ck_assert_str_eq(seen.body, "ok");
}
END_TEST

START_TEST(test_answer_survives_unread_bytes)
{
    /* refused on its head while the body is still coming: the server
     * reads and drops the rest instead of resetting the connection */
    int fd = connect_to(httpd);
    send_text(fd, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
    char chunk[8192];
    memset(chunk, 'b', sizeof chunk);
    size_t sent = 0;
    while (write(fd, chunk, sizeof chunk) > 0)
        sent += sizeof chunk; /* until the socket buffers are full */
    ck_assert_uint_gt(sent, 0);
    struct reply r;
    read_reply(fd, 0, &r);
    ck_assert(r.closed);
    ck_assert_int_eq(status_of(&r), 413);
    ck_assert_str_eq(body_of(&r), "{\"message\":\"Request body too large\"}");
    /* the client may go on sending: it is read and dropped */
    ck_assert_int_gt(write(fd, chunk, sizeof chunk), 0);
    client_closes(fd);
    ck_assert_int_eq(seen.calls, 0);
}
END_TEST

START_TEST(test_lingering_ends_at_the_deadline)
{
    struct sl_httpd_options options = test_options;
    options.timeout_ms = 300;
    restart_with(&options);
    int fd = connect_to(httpd);
    send_text(fd, "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
    struct reply r;
    read_reply(fd, 0, &r);
    ck_assert_int_eq(status_of(&r), 200);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 1); /* the client has not closed */
    run_for(400);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);
    close(fd);
}
END_TEST

START_TEST(test_handler_answers)
{
    expect("GET /silent HTTP/1.1\r\nHost: a\r\n\r\n", 500,
           "{\"message\":\"An unexpected error occurred\"}");
    ck_assert_int_eq(seen.calls, 1);
    expect("GET /twice HTTP/1.1\r\nHost: a\r\n\r\n", 201, "{\"message\":\"first\"}");
    ck_assert_ptr_null(strstr(last.text, "second"));
    expect("GET /buffer HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert(has_header(&last, "Content-Type: text/plain; version=0.0.4"));
    ck_assert_str_eq(body_of(&last), "line one\nline two\n");
}
END_TEST

START_TEST(test_one_request_per_connection)
{
    /* a second request on the same connection is not read */
    expect("GET /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /twice HTTP/1.1\r\nHost: a\r\n\r\n", 200,
           NULL);
    ck_assert_ptr_null(strstr(last.text, "first"));
    ck_assert_int_eq(seen.calls, 1);
}
END_TEST

START_TEST(test_client_gone_mid_request)
{
    int fd = connect_to(httpd);
    send_text(fd, "GET /ec");
    client_closes(fd);
    /* in the middle of a body too */
    fd = connect_to(httpd);
    send_text(fd, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    client_closes(fd);
    ck_assert_int_eq(seen.calls, 0);
}
END_TEST

START_TEST(test_peer_gone_while_answered)
{
    /* the answer is larger than the socket buffers: it is still being
     * written when the client goes away, so the write fails */
    int fd = connect_to(httpd);
    send_text(fd, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    struct reply r;
    read_reply(fd, 1000, &r);
    ck_assert_int_eq(status_of(&r), 200);
    ck_assert(has_header(&r, "Content-Length: 4194304"));
    ck_assert(!r.closed);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 1);
    close(fd);
    run_for(50);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);

    /* gone before the handler even ran: the request is read, answered,
     * and the write fails at once */
    fd = connect_to(httpd);
    send_text(fd, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    close(fd);
    run_for(50);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);

    /* the server goes on serving */
    expect("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
}
END_TEST

START_TEST(test_deadline)
{
    struct sl_httpd_options options = test_options;
    options.timeout_ms = 200;
    restart_with(&options);
    int fd = connect_to(httpd);
    send_text(fd, "GET /echo HTTP/1.1\r\n"); /* and nothing more */
    struct reply r;
    read_reply(fd, 0, &r);
    close(fd);
    ck_assert(r.closed);
    ck_assert_uint_eq(r.len, 0); /* closed, no answer */
    ck_assert_uint_ge(r.elapsed_ms, 180);
    ck_assert_uint_lt(r.elapsed_ms, 3000);
    run_for(5);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);

    /* the deadline is for the whole connection, not per read: trickling
     * bytes does not keep it open */
    fd = connect_to(httpd);
    uint64_t start = sl_now_ms();
    bool closed = false;
    const char *trickle = "GET /echo HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (size_t i = 0; trickle[i] && !closed; i++) {
        if (write(fd, &trickle[i], 1) != 1)
            closed = true;
        run_for(20);
        char c;
        if (read(fd, &c, 1) == 0)
            closed = true;
    }
    close(fd);
    ck_assert_msg(closed, "the trickling client was cut");
    ck_assert_uint_lt(sl_now_ms() - start, 1000);
    ck_assert_int_eq(seen.calls, 0);
}
END_TEST

START_TEST(test_connection_bound)
{
    struct sl_httpd_options options = test_options;
    options.max_connections = 2;
    restart_with(&options);
    int a = connect_to(httpd), b = connect_to(httpd);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 2);
    int c = connect_to(httpd);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 2);
    struct reply r;
    read_reply(c, 0, &r);
    ck_assert(r.closed); /* closed at once, unanswered */
    ck_assert_uint_eq(r.len, 0);
    close(c);
    /* the two open ones are still served */
    send_text(a, "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
    read_reply(a, 0, &r);
    ck_assert_int_eq(status_of(&r), 200);
    close(a);
    run_for(5);
    /* a slot is free again */
    c = connect_to(httpd);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 2);
    close(b);
    close(c);
}
END_TEST

START_TEST(test_close_all)
{
    int a = connect_to(httpd), b = connect_to(httpd);
    send_text(a, "GET /echo HTTP/1.1\r\n");
    run_for(5);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 2);
    sl_httpd_close_all(httpd);
    ck_assert_uint_eq(sl_httpd_connections(httpd), 0);
    run_for(5); /* libevent closes a freed bufferevent's socket in its loop */
    char c;
    ck_assert_int_eq(read(a, &c, 1), 0);
    ck_assert_int_eq(read(b, &c, 1), 0);
    close(a);
    close(b);
    sl_httpd_close_all(NULL);
    sl_httpd_free(NULL);
}
END_TEST

START_TEST(test_bounds_required)
{
    struct sl_httpd_options options = test_options;
    options.max_connections = 0;
    ck_assert_ptr_null(sl_httpd_new(base, &options, routes, 1));
    options = test_options;
    options.timeout_ms = 0;
    ck_assert_ptr_null(sl_httpd_new(base, &options, routes, 1));
    options = test_options;
    options.max_head = 0;
    ck_assert_ptr_null(sl_httpd_new(base, &options, routes, 1));
}
END_TEST

/* --- the status routes of each role (status.c) ------------------------ */

static struct sl_server srv;
static struct sl_worker worker;
static struct sl_snapshot snap;

static void status_setup(void)
{
    setup();
    sl_httpd_free(httpd); /* the status server replaces it */
    httpd = NULL;
    memset(&srv, 0, sizeof srv);
    memset(&worker, 0, sizeof worker);
    memset(&snap, 0, sizeof snap);
    const char *yaml = "_format_version: \"3.0\"\n";
    struct sl_config_error err;
    snap.cfg = sl_config_load_buffer(yaml, strlen(yaml), "test.yml", "gateway", &err);
    ck_assert_ptr_nonnull(snap.cfg);
    snap.loaded_at_unix_ms = 1700000000123ull;
    worker.server = &srv;
    worker.base = base;
    worker.snapshot = &snap;
    worker.metrics = sl_metrics_new();
    srv.workers = &worker;
    srv.n_workers = 1;
    atomic_store(&srv.ready, true);
}

static void status_teardown(void)
{
    sl_metrics_free(worker.metrics);
    sl_config_unref(snap.cfg);
    teardown();
}

static struct sl_httpd *status_server(const char *role)
{
    char err[128];
    struct sl_httpd *s = sl_status_new(&worker, role, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    return s;
}

START_TEST(test_status_gateway_routes)
{
    httpd = status_server("gateway");
    expect("GET /status HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    char hash[64];
    snprintf(hash, sizeof hash, "\"configuration_hash\":\"%s\"", snap.cfg->hash);
    ck_assert_ptr_nonnull(strstr(body_of(&last), hash));
    ck_assert_ptr_nonnull(strstr(body_of(&last), "\"configuration_loaded_at\":1700000000.123"));
    ck_assert_ptr_nonnull(strstr(body_of(&last), "\"ready\":true"));
    expect("GET /status/ready HTTP/1.1\r\nHost: a\r\n\r\n", 200, "{\"message\":\"ready\"}");
    atomic_store(&srv.ready, false);
    expect("GET /status/ready HTTP/1.1\r\nHost: a\r\n\r\n", 503,
           "{\"message\":\"not ready: starting or draining\"}");
    expect("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert(has_header(&last, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    ck_assert_ptr_nonnull(strstr(body_of(&last), "# TYPE sluice_http_requests_total counter"));
    /* the sidecar's paths are not the gateway's */
    expect("GET /healthz/live HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    expect("POST /status HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405, NULL);
}
END_TEST

START_TEST(test_status_sidecar_routes)
{
    httpd = status_server("sidecar");
    expect("GET /healthz/live HTTP/1.1\r\nHost: a\r\n\r\n", 200, "{\"message\":\"live\"}");
    expect("GET /healthz/ready HTTP/1.1\r\nHost: a\r\n\r\n", 200, "{\"message\":\"ready\"}");
    atomic_store(&srv.ready, false); /* starting or draining */
    expect("GET /healthz/ready HTTP/1.1\r\nHost: a\r\n\r\n", 503,
           "{\"message\":\"not ready: starting or draining\"}");
    /* alive while not ready */
    expect("GET /healthz/live HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    expect("HEAD /healthz/live HTTP/1.1\r\nHost: a\r\n\r\n", 200, "");
    expect("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert_ptr_nonnull(strstr(body_of(&last), "sluice_build_info"));
    expect("GET /status HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    ck_assert_ptr_nonnull(strstr(body_of(&last), "\"ready\":false"));
    expect("GET /status/ready HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
}
END_TEST

START_TEST(test_status_unknown_role)
{
    char err[128] = "";
    ck_assert_ptr_null(sl_status_new(&worker, "mesh", err, sizeof err));
    ck_assert_str_eq(err, "status_listen: unknown role 'mesh'");
}
END_TEST

static Suite *make_suite(void)
{
    /* a write to a socket whose peer is gone must fail, not kill the test */
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("httpd");
    TCase *tc = tcase_create("server");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_route_gets_the_request);
    tcase_add_test(tc, test_not_found_and_method_not_allowed);
    tcase_add_test(tc, test_head_has_no_body);
    tcase_add_test(tc, test_codec_errors);
    tcase_add_test(tc, test_head_in_pieces);
    tcase_add_test(tc, test_body_rules);
    tcase_add_test(tc, test_body_messages_of_the_caller);
    tcase_add_test(tc, test_body_in_pieces_and_continue);
    tcase_add_test(tc, test_answer_survives_unread_bytes);
    tcase_add_test(tc, test_lingering_ends_at_the_deadline);
    tcase_add_test(tc, test_handler_answers);
    tcase_add_test(tc, test_one_request_per_connection);
    tcase_add_test(tc, test_client_gone_mid_request);
    tcase_add_test(tc, test_peer_gone_while_answered);
    tcase_add_test(tc, test_deadline);
    tcase_add_test(tc, test_connection_bound);
    tcase_add_test(tc, test_close_all);
    tcase_add_test(tc, test_bounds_required);
    suite_add_tcase(s, tc);
    TCase *st = tcase_create("status");
    tcase_add_checked_fixture(st, status_setup, status_teardown);
    tcase_set_timeout(st, 30);
    tcase_add_test(st, test_status_gateway_routes);
    tcase_add_test(st, test_status_sidecar_routes);
    tcase_add_test(st, test_status_unknown_role);
    suite_add_tcase(s, st);
    return s;
}

SL_UNIT_MAIN
