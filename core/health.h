/*
 * Active health checks (Kong's healthchecks.active): a dedicated thread
 * with its own event_base probes the targets of every upstream that has
 * active.healthy.interval or active.unhealthy.interval > 0 and feeds the
 * results into the shared health state (balancer.h).
 *
 * Why a thread of its own rather than worker 0's loop: a probe round can
 * hold up to `concurrency` connections per upstream plus DNS lookups and
 * timers; on its own loop none of that ever delays a client request of any
 * worker, and the checker runs the same whether there is one worker or 32.
 *
 * Ownership: one checker per process, started and stopped by the server
 * (sl_server_start / sl_server_join), told about each new snapshot by
 * sl_server_reload. The thread keeps one snapshot reference of its own;
 * everything else it allocates is its own and is freed by sl_health_stop().
 * The functions below are called from the main thread only.
 */
#ifndef SL_HEALTH_H
#define SL_HEALTH_H

#include <stddef.h>

struct sl_snapshot;

/* Start the checker on snap (a reference is taken). SL_OK or SL_ERR + err. */
int sl_health_start(struct sl_snapshot *snap, char *err, size_t err_size);

/* Probe the upstreams of snap from now on (a reference is taken); probes
 * in flight on the old snapshot are dropped without a report. */
void sl_health_update(struct sl_snapshot *snap);

/* Stop the thread, wait for it and free everything (idempotent). */
void sl_health_stop(void);

#endif
