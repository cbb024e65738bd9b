/*
 * Upstream connections: per-worker keep-alive pools keyed by target,
 * asynchronous name resolution (evdns, /etc/hosts honoured, TTL kept), and
 * non-blocking connects with a timeout.
 *
 * Ownership: a pool belongs to one worker and is used only from its thread.
 * A connection is owned by the pool while idle in it and by the request
 * between sl_upstream_acquire()'s callback and sl_upstream_release().
 * A pending acquisition is owned by the pool until its callback runs or the
 * requester cancels it; after either, the requester must not touch it.
 */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "reader.h"

struct event_base;
struct evdns_base;
struct bufferevent;
struct sl_upstream_pool;
struct sl_upstream_pending;
struct ssl_ctx_st; /* SSL_CTX */

struct sl_upstream_conn {
    struct bufferevent *bev; /* writes (and the connect) */
    struct sl_reader rd;     /* reads: see reader.h */
    bool broken;             /* closed or talked while handed over from the pool */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char addr_text[64]; /* "ip:port" for logs */
    bool reused;        /* came from the pool */
    bool tls;           /* bev is a TLS bufferevent (handshake done once acquired) */
    uint32_t requests;  /* requests sent on it so far */
    /* the service state that counts it (circuit_breakers.max_connections);
     * held while the connection lives; NULL when not counted */
    struct sl_svc_state *counted_by;
    /* pool bookkeeping */
    struct sl_upstream_target *target;
    struct sl_upstream_conn *next_idle;
    struct sl_upstream_conn *prev_idle;
    uint64_t idle_since_ms;
    struct sl_upstream_pool *pool;
};

enum sl_upstream_error {
    SL_UPSTREAM_OK = 0,
    SL_UPSTREAM_DNS_FAILED,      /* 503 name resolution failed */
    SL_UPSTREAM_CONNECT_FAILED,  /* refused, unreachable: 502 */
    SL_UPSTREAM_CONNECT_TIMEOUT, /* 504 */
    SL_UPSTREAM_OVERFLOW,        /* a new connection would pass max_connections */
};

/* conn is NULL when error != SL_UPSTREAM_OK. */
typedef void (*sl_upstream_cb)(struct sl_upstream_conn *conn, enum sl_upstream_error error,
                               void *arg);

struct sl_upstream_pool *sl_upstream_pool_new(struct event_base *base, struct evdns_base *dns);
void sl_upstream_pool_free(struct sl_upstream_pool *pool);

/* Limits from the node config (applied to connections released later). */
void sl_upstream_pool_configure(struct sl_upstream_pool *pool, const struct sl_node_config *node);

/* What a request wants a connection to. */
struct sl_upstream_want {
    const char *host;
    uint16_t port;
    struct ssl_ctx_st *tls; /* a client context from sl_tls_client_ctx, or NULL */
    uint32_t connect_timeout_ms;
    bool allow_reuse;
    /* circuit_breakers.max_connections: a new connection is counted in
     * `state` (held while it lives) and refused with SL_UPSTREAM_OVERFLOW
     * when `max_connections` are open already; state NULL: not counted */
    struct sl_svc_state *state;
    uint32_t max_connections; /* 0: no limit */
};

/*
 * Get a connection to host:port: an idle pooled one when allow_reuse, else a
 * new connect (after resolving host). With tls the connection speaks TLS to
 * host (SNI, and the name checked when the context verifies) and the
 * callback runs after the handshake; a failed handshake is
 * SL_UPSTREAM_CONNECT_FAILED. Pooled connections are kept apart per (host,
 * port, tls). The callback always runs later from the event loop, never
 * inside this call.
 */
struct sl_upstream_pending *sl_upstream_acquire(struct sl_upstream_pool *pool,
                                                const struct sl_upstream_want *want,
                                                sl_upstream_cb cb, void *arg);
void sl_upstream_cancel(struct sl_upstream_pending *pending);

/* Give a connection back: kept idle when reusable and room, else closed. */
void sl_upstream_release(struct sl_upstream_conn *conn, bool reusable);

/* Close every idle connection (drain). */
void sl_upstream_pool_close_idle(struct sl_upstream_pool *pool);

#endif
