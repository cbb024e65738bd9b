/*
 * Configuration snapshots: a loaded and validated configuration together
 * with everything built from it that requests use (router, balancer, TLS
 * contexts), and the one call that loads and validates a file.
 *
 * Ownership: struct sl_snapshot is reference counted (atomic). The server
 * holds one reference to the current snapshot, each worker one, and each
 * request in flight one, so a request always finishes on the snapshot it
 * started on. The last unref frees the snapshot and the configuration
 * reference it owns. A snapshot is immutable once built; what changes at
 * run time inside it (balancer cursors, health counters) is atomic.
 */
#ifndef SL_SNAPSHOT_H
#define SL_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct sl_router;
struct sl_balancer;
struct sl_tls;
struct sl_resilience;
struct ssl_ctx_st;

struct sl_snapshot {
    atomic_int refcount;
    struct sl_config *cfg;    /* owned: one config reference */
    struct sl_router *router; /* owned */
    uint64_t loaded_at_unix_ms;
    struct sl_balancer *balancer; /* owned: per-upstream balancing (balancer.h) */
    struct sl_tls *tls;           /* owned: certificates (tls.h); NULL without ssl listeners */
    /* per service (by index): the client TLS context of an https service,
     * else NULL; the contexts are tls.c's (process lifetime) */
    struct ssl_ctx_st **service_tls;
    /* owned: retry budgets, circuit breakers and outlier state per service
     * (resilience.h); the state itself is process-wide and outlives it */
    struct sl_resilience *resilience;
    /* the sidecar role: the local application (node app_url), as a service
     * of its own for the inbound listener; NULL for the gateway. Owned. */
    struct sl_service *app_service;
    /* enabled services by name, case-insensitive (the sidecar's outbound
     * routing): open addressing, a power-of-two number of slots. Owned. */
    const struct sl_service **by_name;
    size_t by_name_slots;
};

/* The enabled service called name[0..len) (case-insensitive), or NULL. */
const struct sl_service *sl_snapshot_service_by_name(const struct sl_snapshot *snap,
                                                     const char *name, size_t len);

/* Is this the sidecar's configuration? */
bool sl_snapshot_is_sidecar(const struct sl_snapshot *snap);

/*
 * Load `path` for `role` ("gateway" or "sidecar") and validate all of it:
 * the loader's checks, every plugin instance (sl_plugins_attach), the
 * certificates of ssl listeners and the TLS settings of https services,
 * then build the snapshot. This is what `-t`, a start, SIGHUP and
 * POST /config all go through. NULL with err filled ("file:line:column:
 * message") when anything is refused.
 */
struct sl_snapshot *sl_snapshot_load(const char *path, const char *role,
                                     struct sl_config_error *err);

/* The same, from bytes in memory (POST /config); `source_name` names them
 * in messages. */
struct sl_snapshot *sl_snapshot_load_buffer(const char *data, size_t len, const char *source_name,
                                            const char *role, struct sl_config_error *err);

/* Build a snapshot from a configuration already loaded (tests). Takes cfg's
 * reference, also on failure, when it is dropped. */
struct sl_snapshot *sl_snapshot_new(struct sl_config *cfg, struct sl_config_error *err);

struct sl_snapshot *sl_snapshot_ref(struct sl_snapshot *snap);
void sl_snapshot_unref(struct sl_snapshot *snap);

#endif
