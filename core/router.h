/*
 * Request router: picks the route for a request and computes the upstream
 * path (Kong's path_handling v0) and Host.
 *
 * Ownership: a router is built from one config snapshot and lives exactly as
 * long as that snapshot (the server frees it when it drops the snapshot). It
 * is immutable after sl_router_build(), so all workers read it without locks.
 */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "http1.h"

/* Capture groups of a regex path reported in a match (beyond: ignored). */
#define SL_ROUTER_MAX_CAPTURES 16

struct sl_router;

struct sl_router_request {
    const char *method;
    size_t method_len;
    const char *host; /* Host header without port (IPv6 without brackets); may be NULL */
    size_t host_len;
    const char *path; /* path only, no query string */
    size_t path_len;
    /* the request's headers (routes with `headers`); NULL/0: none */
    const struct sl_http_header *headers;
    size_t n_headers;
    /* the TLS server name of the connection (routes with `snis`); NULL: none */
    const char *sni;
    size_t sni_len;
};

struct sl_router_capture {
    size_t start; /* offset into the request path; SIZE_MAX: the group did not take part */
    size_t len;
};

struct sl_router_match {
    const struct sl_route *route;
    const struct sl_service *service;
    /* the matched plain prefix, or the length of a regex path's whole
     * match (Kong strips either with strip_path; X-Forwarded-Prefix) */
    size_t matched_prefix_len;
    /* a regex path: its groups 1..n as captures[0..n-1] */
    const void *regex; /* the compiled pattern (sl_router_capture_by_name); NULL: a prefix */
    struct sl_router_capture captures[SL_ROUTER_MAX_CAPTURES];
    size_t n_captures;
};

/* The same answer as sl_router_find() by a plain scan of every route in
 * priority order, without the index (tests check the index against it). */
bool sl_router_find_linear(const struct sl_router *router, const struct sl_router_request *req,
                           struct sl_router_match *match);

/* Index into match->captures of the named group, or -1. */
long sl_router_capture_by_name(const struct sl_router_match *match, const char *name);

/*
 * Normalise a request path before routing (Kong's rule, RFC 3986): percent
 * encodings of unreserved characters are decoded, the others upper-cased;
 * dot segments are removed (section 5.2.4); runs of "/" are merged. The
 * result is never longer than the input. Returns its length, or -1 for an
 * invalid percent encoding or a path that does not start with "/" (400),
 * or -2 when out is too small.
 */
long sl_router_normalize_path(const char *path, size_t len, char *out, size_t out_size);

/* Build a router for cfg. Returns NULL on allocation failure. */
struct sl_router *sl_router_build(const struct sl_config *cfg);
void sl_router_free(struct sl_router *router);

/* Find the route for req; false when nothing matches (404). */
bool sl_router_find(const struct sl_router *router, const struct sl_router_request *req,
                    struct sl_router_match *match);

/*
 * Write the upstream path for `path` (no query string) into out (NUL
 * terminated): Kong v0: service.path joined to the remainder after stripping
 * the matched prefix (strip_path) with a single "/". Returns the length, or
 * -1 when out is too small.
 */
long sl_router_upstream_path(const struct sl_router_match *match, const char *path, size_t path_len,
                             char *out, size_t out_size);

#endif
