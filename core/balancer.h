/*
 * Load balancing over an upstream's targets (Kong's ring-balancer) and the
 * health state of those targets (Kong's passive checks; active checks are
 * in health.h).
 *
 * Ownership:
 *  - struct sl_balancer is built with a configuration snapshot
 *    (sl_snapshot_new) and freed with it. Its layout is immutable after
 *    sl_balancer_new(); what changes at run time (round-robin cursors, the
 *    counters below) is atomic, so every worker reads and updates it
 *    without locks.
 *  - The health of a target lives in a process-wide registry, one entry per
 *    (upstream name, healthchecks block, target host:port). A new snapshot
 *    whose upstream and target are unchanged shares the entry of the old
 *    one, so health (and the least-connections count) survive a reload.
 *    Entries are reference counted by the balancers using them; the
 *    registry list itself is only touched while a balancer is built or by
 *    sl_balancer_registry_sweep(), under a mutex that no request takes.
 *  - struct sl_lb_state is embedded in a request and owned by it; it points
 *    into the request's snapshot, which the request keeps alive.
 */
#ifndef SL_BALANCER_H
#define SL_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http1.h"

struct sl_balancer;
struct sl_lb_upstream;
struct sl_lb_target;
struct sl_snapshot;
struct sl_router_match;

/* Kong's internal health states; the two "mostly" ones are steps on the way. */
enum sl_lb_health {
    SL_LB_HEALTHY = 0,
    SL_LB_MOSTLY_HEALTHY,   /* failures counted, below the threshold: still picked */
    SL_LB_MOSTLY_UNHEALTHY, /* successes counted, below the threshold: not picked */
    SL_LB_UNHEALTHY,
};
const char *sl_lb_health_to_str(enum sl_lb_health h);

/* What a request keeps of its balancing. Zero-initialised = nothing picked. */
struct sl_lb_state {
    uint64_t hash; /* consistent-hashing input, when hash_set */
    bool hash_set;
    const struct sl_lb_upstream *up; /* set by the first pick */
    struct sl_lb_target *current;    /* counted as an active connection while set */
    uint64_t tried;                  /* bit (index % 64) of every target tried */
};

/*
 * Build the balancer of every upstream of cfg (rings, schedules, registry
 * entries). Returns NULL with a message in err on failure.
 */
struct sl_balancer *sl_balancer_new(const struct sl_config *cfg, char *err, size_t err_size);
void sl_balancer_free(struct sl_balancer *b);

/* Targets a pick may use besides health: usable(arg, index of the target
 * in its upstream). */
struct sl_lb_filter {
    bool (*usable)(void *arg, size_t target_index);
    void *arg;
};

/*
 * Pick a target of `up` for a request: per the algorithm, among healthy
 * targets of weight > 0 that `filter` (may be NULL) lets through,
 * preferring one not tried yet by this request (a retry goes elsewhere
 * when it can). Counts the target as an active connection until
 * sl_balancer_release() or the next pick. Returns NULL when no target can
 * be used (Kong: 503 "failure to get a peer from the ring-balancer").
 */
const struct sl_target *sl_balancer_pick(const struct sl_balancer *b, const struct sl_upstream *up,
                                         struct sl_lb_state *st, const struct sl_lb_filter *filter);

/* The request is done with its current target (idempotent). */
void sl_balancer_release(struct sl_lb_state *st);

/* Passive health checks: what happened with the current target. */
void sl_balancer_report_tcp_failure(struct sl_lb_state *st);
void sl_balancer_report_timeout(struct sl_lb_state *st);
void sl_balancer_report_status(struct sl_lb_state *st, int status);
/* Response time of the current target (the latency algorithm's EWMA). */
void sl_balancer_report_latency(struct sl_lb_state *st, uint64_t us);

/* The input of the hash, as the proxy sees the request. */
struct sl_lb_hash_input {
    const char *client_ip;
    const struct sl_consumer *consumer; /* NULL when none */
    const struct sl_http_header *headers;
    size_t n_headers;
    const char *path; /* normalised, no query */
    size_t path_len;
    const char *query; /* without the '?'; may be NULL */
    size_t query_len;
    /* hash_on cookie and the request has none: the value made up for it is
     * written here (16 hex digits, NUL terminated) so that the proxy can
     * set the cookie on the response, as Kong does; may be NULL */
    char *made_up_cookie;
    /* the route match (regex captures, for hash_on uri_capture); may be NULL */
    const struct sl_router_match *match;
};

/*
 * Kong's get_value_to_hash: the value named by hash_on, else the one named
 * by hash_fallback, hashed. False when the upstream does not hash or
 * neither value is present (the request then hashes as Kong's "": all such
 * requests go to one target). uri_capture reads a named group of the
 * route's regex path from `match`.
 */
bool sl_balancer_hash_request(const struct sl_upstream *up, const struct sl_lb_hash_input *in,
                              uint64_t *hash);

/* 64-bit hash used for keys and the ring (FNV-1a, then a 64-bit finaliser). */
uint64_t sl_lb_hash_bytes(const void *data, size_t len);

/* Health of target `index` of `up` (tests, status). */
enum sl_lb_health sl_balancer_target_health(const struct sl_balancer *b,
                                            const struct sl_upstream *up, size_t index);
/* Active connections counted on target `index` of `up` (all workers). */
long sl_balancer_target_active(const struct sl_balancer *b, const struct sl_upstream *up,
                               size_t index);

/*
 * Read-only walk over every target of every upstream of a snapshot (the
 * metrics endpoint): upstream name, target "host:port", address (the same
 * "host:port": names are resolved per worker, not here), and whether it
 * can be picked now. Safe from any thread holding a snapshot reference.
 */
void sl_balancer_foreach_target(const struct sl_snapshot *snap,
                                void (*cb)(const char *upstream, const char *target,
                                           const char *address, bool healthy, void *arg),
                                void *arg);

/* ---- for the active checker (health.c) ---------------------------------- */

size_t sl_balancer_n_upstreams(const struct sl_balancer *b);
const struct sl_lb_upstream *sl_balancer_upstream_at(const struct sl_balancer *b, size_t i);
const struct sl_upstream *sl_lb_upstream_conf(const struct sl_lb_upstream *u);
size_t sl_lb_upstream_n_targets(const struct sl_lb_upstream *u);
struct sl_lb_target *sl_lb_upstream_target(const struct sl_lb_upstream *u, size_t i);
const struct sl_target *sl_lb_target_conf(const struct sl_lb_target *t);
enum sl_lb_health sl_lb_target_health(const struct sl_lb_target *t);
/* Active probe results, counted against the active thresholds. */
void sl_lb_target_active_tcp_failure(struct sl_lb_target *t);
void sl_lb_target_active_timeout(struct sl_lb_target *t);
void sl_lb_target_active_status(struct sl_lb_target *t, int status); /* 0: unreadable answer */
void sl_lb_target_active_success(struct sl_lb_target *t);            /* type tcp */

/* Free registry entries no balancer uses any more (main thread; at exit). */
void sl_balancer_registry_sweep(void);

#endif
