/*
 * The proxy's private types, shared by its four files and nothing else:
 *
 *   client.c    the client connection: accept, reads and writes, keep-alive
 *               (hot and cold idle), lingering close, timers, drain
 *   request.c   the request pipeline: head, the pipeline of the listener's
 *               kind (plugins and router, the local app, or the authority),
 *               the upstream head, the request's log line
 *   attempt.c   the upstream attempt: pick a target, connect or reuse, send
 *               the head and the body (kept in a replay buffer when it may be
 *               sent again), read the response head, then decide through
 *               one retry policy: answer or try again
 *   response.c  the response to the client: our own answers (errors,
 *               plugins'), and the upstream's, re-framed and streamed
 *
 * Ownership:
 *  - struct sl_client is owned by its worker (kept in the worker's list)
 *    from accept until it is closed; it is freed only from its deferred
 *    event, never from inside one of its own bufferevent callbacks.
 *  - struct sl_request is owned by its client (c->req) and freed by
 *    sl_request_free() when the response is done or the client goes; it
 *    holds a snapshot reference for its whole life.
 *  - struct sl_attempt is embedded in its request: one per request, reused
 *    by every try. The upstream connection it holds (up) is the request's
 *    between the pool's callback and sl_upstream_release().
 */
#ifndef SL_PROXY_INTERNAL_H
#define SL_PROXY_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "balancer.h"
#include "http1.h"
#include "plugin_runtime.h"
#include "reader.h"
#include "router.h"
#include "server.h"
#include "upstream.h"

#define SL_HIGH_WATER (256 * 1024)
#define SL_LOW_WATER (64 * 1024)
/* Response bytes queued for a client beyond which the upstream is no longer
 * read, and the level at which reading resumes. The kernel's send buffer
 * (megabytes on loopback) does the buffering for a client that reads; this
 * bound is what a stalled or slow reader (slowhttptest -X) can make us hold
 * in memory per connection: 32 KiB plus one 16 KiB read, as nginx's
 * proxy_buffers (8 x 4 KiB) or HAProxy's 2 x 16 KiB. With SL_HIGH_WATER,
 * 1,000 slow readers held 300 MB (bench/slow). */
#define SL_RESP_HIGH_WATER (32 * 1024)
#define SL_RESP_LOW_WATER (8 * 1024)
#define SL_MAX_RESPONSE_HEAD 65536
#define SL_MAX_HEADERS_ARRAY 1024
#define SL_MAX_PATH 8192
#define SL_MAX_CLIENT_REQUEST_ID 200

extern const char SL_MSG_NO_ROUTE[];
extern const char SL_MSG_BAD_GATEWAY[];
extern const char SL_MSG_TIMEOUT[];
extern const char SL_MSG_DNS[];
extern const char SL_MSG_NO_PEER[];
extern const char SL_MSG_INTERNAL[];

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

/* Why an attempt did not give an answer the client can have as it is. */
enum sl_attempt_failure {
    SL_FAIL_CONNECT,         /* refused, unreachable, TLS handshake failed */
    SL_FAIL_CONNECT_TIMEOUT, /* connect_timeout */
    SL_FAIL_DNS,             /* the name did not resolve */
    SL_FAIL_RESET,           /* closed or reset before a complete response head */
    SL_FAIL_TIMEOUT,         /* no response head within the per-try (read) timeout */
    SL_FAIL_WRITE_TIMEOUT,   /* the upstream did not take the request (write_timeout) */
    SL_FAIL_INVALID,         /* the response head was malformed or too large */
    SL_FAIL_STATUS,          /* a response head whose status the policy retries */
    SL_FAIL__COUNT
};
const char *sl_attempt_failure_to_str(enum sl_attempt_failure f);

/*
 * The upstream side of one request: the try in progress and what the
 * retry policy needs to know of the tries before it.
 */
struct sl_attempt {
    unsigned tries;      /* tries after the first one (retries) started so far */
    bool reused_retried; /* a stale pooled connection was replaced once */
    uint64_t start_us;   /* when the current try started */
    uint64_t head_us;    /* when its response head arrived (0: not yet) */
    /* balancing (balancer.h), for a service whose host is an upstream: the
     * hash input, the target in use (counted by least-connections until
     * the request is done) and the targets tried; all zero otherwise */
    struct sl_lb_state lb;
    /* where the connection goes (the service's host, or the picked target;
     * owned by the snapshot), and its index for outlier detection */
    const char *target_host;
    uint16_t target_port;
    size_t target_index;
    bool probe; /* this try is the probe of a target whose ejection ended */
    struct sl_upstream_pending *pending; /* connecting */
    struct sl_upstream_conn *up;         /* connected */
    uint64_t queued; /* bytes put in this try's output (reached = queued - still there) */
    int reset_errno; /* SL_FAIL_RESET: the socket error, 0 for a plain close */

    /* resilience (resilience.h): the service's shared state, and what this
     * request counts in its circuit breakers */
    const struct sl_svc_resilience *res;
    bool counted_request, counted_pending, counted_retry;
    /* the request body as sent, so that another try can send it again
     * (retry_policy.max_body_bytes at most); NULL when not kept */
    struct evbuffer *replay;
    bool replay_overflow;      /* the body outgrew the bound: it cannot go again */
    struct event *backoff_ev;  /* the wait before the next try */
    struct event *deadline_ev; /* retry_policy.timeout over all tries */
    uint64_t deadline_us;      /* when it fires (0: no such timeout) */
};

/*
 * What the proxy keeps of a request head. Without plugins it lives on the
 * stack of sl_request_parse_head() and points into the client's input;
 * with plugins (which may suspend the request) it is a heap copy owned by
 * the request, freed with it.
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
    bool req_body_started; /* a body byte went upstream (on any try) */
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
    /* where in up_head the Host line of a balanced service goes (0: up_head
     * has one already) */
    size_t up_head_host_at;
    struct sl_attempt attempt;

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
    bool resp_dechunk; /* chunked from upstream, plain to an HTTP/1.0 client */

    uint64_t bytes_in, bytes_out;
    uint64_t start_us, upstream_start_us, upstream_head_us;

    /* the authenticated consumer, set by an auth plugin; NULL until then.
     * Owned by the snapshot. */
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

    /* hash_on cookie without the cookie: the value made up, set on the
     * response (Kong); empty otherwise */
    char lb_cookie[17];
};

struct sl_client {
    struct sl_worker *w;
    int fd;
    enum client_state state;
    enum conn_activity activity;
    enum sl_listener_kind kind; /* the listener it came from: its pipeline */
    struct bufferevent *bev;    /* NULL while idle; does the writes */
    struct sl_reader rd;        /* reads (reader.h); lives with bev */
    struct event *timer;        /* header / body-total / linger deadline; lives with bev */
    struct event *deferred;     /* runs after-callback work; lives with bev */
    struct event *idle_ev;      /* only while idle */
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

/* ---- client.c ------------------------------------------------------------ */

const struct sl_node_config *sl_client_node(const struct sl_client *c);
void sl_client_set_activity(struct sl_client *c, enum conn_activity a);
void sl_client_timer_arm(struct sl_client *c, uint32_t ms);
void sl_client_timer_stop(struct sl_client *c);
/* Close now (from any callback): the memory goes in a deferred callback. */
void sl_client_close(struct sl_client *c);
/* Refuse the request: answer, then close (lingering) after the flush. */
void sl_client_fail(struct sl_client *c, int status, const char *message);
/* The response went out: next request, idle, or close. */
void sl_client_after_response(struct sl_client *c);

/* ---- request.c ----------------------------------------------------------- */

/* Parse what the client sent so far; a complete head starts its request. */
void sl_request_parse_head(struct sl_client *c);
void sl_request_free(struct sl_request *r);
/* The plugins' log phase, the metrics and the access log: once per request. */
void sl_request_log(struct sl_request *r);
/* A plugin's body collection: new input arrived. */
void sl_request_collect_body(struct sl_request *r);
/* Drop the head bytes still at the front of the client's input. */
void sl_request_release_head_bytes(struct sl_request *r);
void sl_request_head_free(struct sl_request *r);

/* ---- attempt.c ----------------------------------------------------------- */

/* The upstream head is built: the first try. */
void sl_attempt_start(struct sl_request *r);
/* Move the request body that waits in the client's input upstream. */
void sl_attempt_forward_body(struct sl_request *r);
/* Drop the upstream side (connection or pending connect) of the request. */
void sl_attempt_cancel(struct sl_request *r);
/* The request is over: release what balancing counted. */
void sl_attempt_done(struct sl_request *r);

/* ---- response.c ---------------------------------------------------------- */

/* Our own answer (before any response byte): message != NULL is Kong's
 * error shape; else content_type/body as given. */
void sl_respond_local(struct sl_request *r, int status, const char *message,
                      const char *content_type, const char *body, size_t body_len,
                      const char *extra_headers);
void sl_respond_error(struct sl_request *r, int status, const char *message);
/* An error in Kong's shape on a client with no request (or before it got
 * one): status line, headers, body into the client's output. */
void sl_write_error_response(struct sl_client *c, const struct sl_plugin_ctx *pctx, int status,
                             const char *message, const char *request_id, bool text,
                             bool close_conn, bool head_only, const char *extra_headers);
/* The attempt's answer goes to the client: its head (head_len bytes at the
 * front of the upstream's input, which resp points into), re-framed, then
 * the body as it comes. */
void sl_response_begin(struct sl_request *r, const struct sl_http_response *resp, size_t head_len);
/* Move what the upstream sent of the body to the client. */
void sl_response_forward_body(struct sl_request *r);
void sl_response_finish(struct sl_request *r);
/* Backpressure released on the client side: read more of the response. */
void sl_response_resume(struct sl_request *r);

/* ---- shared helpers (header lines) -------------------------------------- */

static inline void sl_add_header_line(struct evbuffer *out, const char *name, size_t name_len,
                                      const char *value, size_t value_len)
{
    evbuffer_add(out, name, name_len);
    evbuffer_add(out, ": ", 2);
    evbuffer_add(out, value, value_len);
    evbuffer_add(out, "\r\n", 2);
}

/* Via (RFC 9110 section 7.6.3), on requests and responses alike: our hop
 * is appended to what the message already carried. */
static inline void sl_add_via(struct evbuffer *out, const struct sl_http_header *via)
{
    if (via)
        evbuffer_add_printf(out, "Via: %.*s, 1.1 sluice\r\n", (int)via->value_len, via->value);
    else
        evbuffer_add(out, "Via: 1.1 sluice\r\n", 17);
}

static inline bool sl_header_is_connection_named(const struct sl_http_header *h,
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

/* Hop-by-hop (RFC 9110 section 7.6.1), and the framing we always redo. */
static inline bool sl_header_is_hop_by_hop(enum sl_http_header_id id)
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

static inline const struct sl_http_header *sl_find_header(const struct sl_http_header *headers,
                                                          size_t n, enum sl_http_header_id id)
{
    for (size_t i = 0; i < n; i++)
        if (headers[i].id == id)
            return &headers[i];
    return NULL;
}

/* Does a plugin replace or remove this response/upstream header? */
static inline bool sl_edit_overrides(const struct sl_header_edit *edits, const char *name,
                                     size_t name_len)
{
    for (const struct sl_header_edit *e = edits; e; e = e->next)
        if (e->op != SL_EDIT_ADD && e->name_len == name_len &&
            strncasecmp(e->name, name, name_len) == 0)
            return true;
    return false;
}

#endif
