/*
 * Prometheus metrics: per-worker request series, written without locks on
 * the request path, and the text exposition (format 0.0.4) that the status
 * listener serves on GET /metrics.
 *
 * Ownership: each worker owns one struct sl_metrics (created with the
 * worker, freed after its thread stopped). Only the worker's thread writes
 * it; the scrape (another worker's thread) reads it: a series' key is
 * written before its "used" flag is published (release), and every number
 * is a relaxed atomic, so a scrape sees each series either not at all or
 * with a valid key. The table has a fixed size: when it is full, new
 * label sets count in one overflow series (route="_other"), so distinct
 * labels cannot grow memory.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct sl_server;

/* Latency buckets in seconds (upper bounds; +Inf is implicit). */
#define SL_METRICS_N_BUCKETS 14
extern const double sl_metrics_buckets[SL_METRICS_N_BUCKETS];

struct sl_histogram {
    atomic_uint_fast64_t counts[SL_METRICS_N_BUCKETS + 1]; /* per bucket, not cumulative */
    atomic_uint_fast64_t sum_us;
};

struct sl_metrics;

struct sl_metrics *sl_metrics_new(void);
void sl_metrics_free(struct sl_metrics *m);

/*
 * One finished request. service/route may be NULL (no route matched:
 * empty labels). direction: "inbound"/"outbound" for the sidecar's
 * listeners (a `direction` label), NULL for the gateway's (no label).
 * upstream_us: 0 when no upstream answered (no upstream histogram sample
 * then). Worker thread only.
 */
void sl_metrics_observe(struct sl_metrics *m, const char *direction, const char *service,
                        const char *route, int status, uint64_t bytes_in, uint64_t bytes_out,
                        uint64_t total_us, uint64_t upstream_us);

/* Add v to h (the histogram's owner thread only). */
void sl_histogram_observe(struct sl_histogram *h, uint64_t us);

/*
 * Process-wide counters of config reloads (any thread; atomics).
 */
void sl_metrics_reload_result(bool success);

/* Escape a label value for the text format (\\, \", \n). Returns the length
 * written, or -1 when out is too small. */
long sl_metrics_escape_label(const char *in, char *out, size_t out_size);

/* Append the whole exposition for srv to out (scrape time, any thread
 * holding a reference to `snap_for_targets`' snapshot). */
struct sl_snapshot;
void sl_metrics_render(const struct sl_server *srv, const struct sl_snapshot *snap,
                       struct evbuffer *out);

#endif
