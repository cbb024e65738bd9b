/*
 * Resilience per service, shared by every worker: circuit breakers
 * (concurrency limits), Linkerd's retry budget, Envoy's outlier detection
 * per target, and the counters /metrics shows of them. The retry policy
 * that uses them is in attempt.c; facts and defaults are in
 * docs/configuration.md.
 *
 * Ownership: the state lives in two process-wide registries: one struct
 * sl_svc_state per service (keyed by its name, or host:port for a service
 * without one) and one outlier entry per (scope, target), where the scope is
 * the upstream's name for a balanced service and the service otherwise. A
 * snapshot's struct sl_resilience holds a reference to the entries of its
 * services, so a reload that keeps a service (or a target) keeps its state:
 * requests in flight, the budget's window, ejections. An upstream
 * connection holds a reference to the state that counted it. Entries are
 * freed by sl_resilience_sweep() once nothing refers to them. On the
 * request path only atomics are touched; the registries' lock is taken only
 * while a snapshot is built or swept (never by a request).
 */
#ifndef SL_RESILIENCE_H
#define SL_RESILIENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct evbuffer;
struct sl_snapshot;
struct sl_svc_state;
struct sl_outlier_entry;

/* What a circuit breaker limits (Envoy's four thresholds). */
enum sl_breaker {
    SL_BREAKER_CONNECTIONS, /* upstream connections open */
    SL_BREAKER_PENDING,     /* requests waiting for a connection */
    SL_BREAKER_REQUESTS,    /* requests in flight to the service */
    SL_BREAKER_RETRIES,     /* retries in flight */
    SL_BREAKER__COUNT
};
const char *sl_breaker_to_str(enum sl_breaker b);

/* Why a retry was made (the `reason` label of the retries counter). */
enum sl_retry_reason {
    SL_RETRY_REASON_CONNECT, /* connect-failure: refused, timed out, no name */
    SL_RETRY_REASON_RESET,   /* reset: broke before a response head */
    SL_RETRY_REASON_TIMEOUT, /* per-try-timeout */
    SL_RETRY_REASON_STATUS,  /* retriable-status: a status the policy retries */
    SL_RETRY_REASON__COUNT
};
const char *sl_retry_reason_to_str(enum sl_retry_reason r);

/* One service's view in a snapshot. */
struct sl_svc_resilience {
    const struct sl_service *service;
    struct sl_svc_state *state;
    struct sl_outlier_entry **targets; /* the upstream's targets in order, or the one host */
    size_t n_targets;
    bool inbound; /* the sidecar's local app (direction="inbound" in metrics) */
};

struct sl_resilience;

/* Built with a snapshot (snapshot.c); app is cfg->app_service or NULL. */
struct sl_resilience *sl_resilience_new(const struct sl_config *cfg, const struct sl_service *app,
                                        char *err, size_t err_size);
void sl_resilience_free(struct sl_resilience *res);
/* The view of one of the snapshot's services (never NULL for its services). */
const struct sl_svc_resilience *sl_resilience_of(const struct sl_resilience *res,
                                                 const struct sl_service *svc);

/* Free the entries no snapshot and no connection uses any more. */
void sl_resilience_sweep(void);

/* ---- circuit breakers ------------------------------------------------------ */

/*
 * Count one more of `kind` unless `limit` (non-zero) is reached; at the
 * limit nothing is counted, the overflow is, and the answer is false.
 * limit 0: counted, never refused.
 */
bool sl_breaker_enter(struct sl_svc_state *s, enum sl_breaker kind, uint32_t limit);
void sl_breaker_leave(struct sl_svc_state *s, enum sl_breaker kind);
void sl_svc_state_hold(struct sl_svc_state *s);
void sl_svc_state_put(struct sl_svc_state *s);

/* ---- retry budget (Linkerd) ------------------------------------------------ */

/* A request to the service started (its first try): the budget grows. */
void sl_budget_deposit(struct sl_svc_state *s, uint64_t now_ms);
/*
 * May one more retry go? Retries of the last `ttl` may be at most
 * `ratio` x the requests of that window plus min_retries_per_second x its
 * seconds. True reserves the retry; false counts a refusal.
 */
bool sl_budget_withdraw(struct sl_svc_state *s, const struct sl_retry_policy *p, uint64_t now_ms);

void sl_resilience_count_retry(struct sl_svc_state *s, enum sl_retry_reason reason);

/* ---- outlier detection (Envoy) --------------------------------------------- */

/* One pick's view of the service's targets: computed once per pick. */
struct sl_outlier_pick {
    const struct sl_svc_resilience *res;
    uint64_t now_ms;
    bool panic; /* fewer than half the targets left: balance over all of them */
};
void sl_outlier_pick_begin(struct sl_outlier_pick *pick, const struct sl_svc_resilience *res,
                           uint64_t now_ms);
/* May the pick use target i? (The balancer's filter.) */
bool sl_outlier_usable(void *pick, size_t i);
/*
 * The pick chose target i: claim it. A target whose ejection just ended
 * takes one probe request: *probe is set when this request is it. False
 * when another request got the probe first (pick again).
 */
bool sl_outlier_claim(const struct sl_outlier_pick *pick, size_t i, bool *probe);
/*
 * The result of a try on target i: an upstream status (0 for a failure of
 * our own: connect, reset, timeout). `probe`: this try was the probe.
 */
void sl_outlier_report(const struct sl_svc_resilience *res, size_t i, int status, bool probe,
                       uint64_t now_ms);
/* A probe that ends without a result (the request went away): the next
 * request may probe instead. */
void sl_outlier_abandon(const struct sl_svc_resilience *res, size_t i);
/* Is target i ejected now (tests, status)? */
bool sl_outlier_ejected(const struct sl_svc_resilience *res, size_t i, uint64_t now_ms);

/* ---- metrics ---------------------------------------------------------------- */

/* The families of retries, budget refusals, overflows and ejections for the
 * services of snap; `directions`: label them inbound/outbound (sidecar). */
void sl_resilience_render(const struct sl_snapshot *snap, bool directions, struct evbuffer *out);

#endif
