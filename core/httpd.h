/*
 * A small HTTP/1.1 server for the operator's endpoints (status, health,
 * admin): a table of exact paths, one request per connection, answered and
 * then closed. It is not the proxy: no keep-alive, no streaming, no
 * plugins; requests are parsed by our own codec (http1.h), so the same
 * strictness applies.
 *
 * What it answers by itself, in Kong's JSON shape {"message": ...}:
 *  - a request the codec refuses: the codec's status (400, 414, 431, 505)
 *    with {"message":"Bad request"};
 *  - an unknown path: 404 {"message":"Not found"};
 *  - a known path with another method: 405 {"message":"Method not allowed"}
 *    and an Allow header (RFC 9110 section 15.5.6);
 *  - a route that takes a body, without a Content-Length (chunked or none):
 *    411; with one over max_body: 413, before any body byte is read;
 *  - a handler that returns without answering: 500.
 * A GET route answers HEAD too; every answer to HEAD has its headers
 * (Content-Length included) and no body (RFC 9110 section 9.3.2).
 * After the answer the server shuts its side of the connection down and
 * drops what the client still sends until it closes (lingering close, at
 * most 2 s and within the timeout), so a client still sending a refused
 * body reads the answer rather than a reset.
 *
 * Ownership:
 *  - struct sl_httpd is owned by its creator. It lives on one event_base
 *    and is touched only from the thread that runs that base. Free it with
 *    sl_httpd_free() before the base, never from one of its handlers.
 *  - Connections belong to the server (a list). One is closed by marking it
 *    and is freed from the server's reaper event in the next loop
 *    iteration, never inside one of its own callbacks.
 *  - struct sl_httpd_request belongs to its connection: it and every
 *    pointer in it are valid only during the handler's call, so a handler
 *    answers before it returns.
 */
#ifndef SL_HTTPD_H
#define SL_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

struct event_base;
struct evbuffer;
struct sl_httpd;
struct sl_httpd_conn;

/* Methods, as bits of a route's `methods`. */
enum sl_httpd_method {
    SL_HTTPD_GET = 1u << 0,
    SL_HTTPD_HEAD = 1u << 1, /* implied by GET */
    SL_HTTPD_POST = 1u << 2,
    SL_HTTPD_PUT = 1u << 3,
    SL_HTTPD_DELETE = 1u << 4,
    SL_HTTPD_PATCH = 1u << 5,
};

#define SL_HTTPD_JSON "application/json; charset=utf-8"

struct sl_httpd_request {
    unsigned method; /* one SL_HTTPD_* bit */
    const char *path;
    size_t path_len;
    const char *query; /* after the '?', NULL without one */
    size_t query_len;
    const struct sl_http_header *headers;
    size_t num_headers;
    const char *body; /* routes that take a body only; else NULL and 0 */
    size_t body_len;

    struct sl_httpd_conn *conn; /* private: the connection it came on */
};

typedef void (*sl_httpd_handler)(struct sl_httpd_request *req, void *arg);

struct sl_httpd_route {
    unsigned methods; /* SL_HTTPD_* bits */
    const char *path; /* matched exactly, without the query */
    sl_httpd_handler handler;
    void *arg;
    /* Requests with another method than GET or HEAD carry a body with a
     * Content-Length, which the handler gets whole (411 and 413 above). */
    bool takes_body;
};

struct sl_httpd_options {
    const char *name;       /* for log lines: "status_listen" */
    size_t max_head;        /* request line and headers, in bytes: 431 beyond */
    size_t max_body;        /* the largest body a route takes: 413 beyond */
    unsigned timeout_ms;    /* a connection's whole life, from accept to close */
    size_t max_connections; /* connections open at once; one more is closed at once */
    /* the messages of 411 and 413 (JSON-escaped already); NULL for
     * "Length required" and "Request body too large" */
    const char *length_required_message;
    const char *body_too_large_message;
};

/*
 * A server on `base` with a copy of the options and of the routes (the
 * strings they point to must outlive it). NULL when out of memory.
 */
struct sl_httpd *sl_httpd_new(struct event_base *base, const struct sl_httpd_options *options,
                              const struct sl_httpd_route *routes, size_t n_routes);

/* Serve one accepted, non-blocking connection; fd is taken (closed on error). */
void sl_httpd_accept(struct sl_httpd *httpd, int fd);

/* Connections open now (those closed and waiting for the reaper excluded). */
size_t sl_httpd_connections(const struct sl_httpd *httpd);

/*
 * Close and free every connection now (the loop is stopping). Not from a
 * handler or a callback of one of the server's connections. NULL is a no-op.
 */
void sl_httpd_close_all(struct sl_httpd *httpd);

/* sl_httpd_close_all(), then the server itself. NULL is a no-op. */
void sl_httpd_free(struct sl_httpd *httpd);

/*
 * Answer req with `status` and len bytes of body (none for HEAD), then close.
 * Only the first answer to a request counts.
 */
void sl_httpd_respond(struct sl_httpd_request *req, int status, const char *content_type,
                      const void *body, size_t len);

/* The same with a NUL-terminated JSON body. */
void sl_httpd_respond_json(struct sl_httpd_request *req, int status, const char *json);

/* The same with a body in an evbuffer, which is drained (/metrics). */
void sl_httpd_respond_buffer(struct sl_httpd_request *req, int status, const char *content_type,
                             struct evbuffer *body);

#endif
