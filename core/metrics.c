/*
 * Prometheus metrics (see metrics.h for the threading rules).
 */
#include "metrics.h"
#include "plugin_runtime.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autoconfig.h"
#include "balancer.h"
#include "resilience.h"
#include "server.h"

const double sl_metrics_buckets[SL_METRICS_N_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,     2.5,  5,     10,   30,  60};

#define NAME_MAX_LEN 64
#define SERIES_SLOTS 512 /* a power of 2 */

struct series {
    atomic_int used;    /* published after the key is written */
    char direction[12]; /* "" (gateway), "inbound", "outbound" (sidecar) */
    char service[NAME_MAX_LEN];
    char route[NAME_MAX_LEN];
    int code;
    atomic_uint_fast64_t requests, bytes_in, bytes_out;
    struct sl_histogram request, upstream, proxy;
};

struct sl_metrics {
    struct series slots[SERIES_SLOTS];
    struct series overflow; /* every label set that did not fit */
};

static atomic_uint_fast64_t reloads_ok, reloads_failed;
static _Atomic double last_reload_ok;

struct sl_metrics *sl_metrics_new(void)
{
    struct sl_metrics *m = calloc(1, sizeof *m);
    if (m != NULL) {
        snprintf(m->overflow.service, NAME_MAX_LEN, "_other");
        snprintf(m->overflow.route, NAME_MAX_LEN, "_other");
        m->overflow.code = -1; /* shown as code="_other" */
        atomic_store(&m->overflow.used, 1);
    }
    return m;
}

void sl_metrics_free(struct sl_metrics *m)
{
    free(m);
}

void sl_metrics_reload_result(bool success)
{
    if (success) {
        atomic_fetch_add_explicit(&reloads_ok, 1, memory_order_relaxed);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        atomic_store(&last_reload_ok, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    } else {
        atomic_fetch_add_explicit(&reloads_failed, 1, memory_order_relaxed);
    }
}

void sl_histogram_observe(struct sl_histogram *h, uint64_t us)
{
    double s = (double)us / 1e6;
    size_t b = 0;
    while (b < SL_METRICS_N_BUCKETS && s > sl_metrics_buckets[b])
        b++;
    atomic_fetch_add_explicit(&h->counts[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

static uint64_t key_hash(const char *direction, const char *service, const char *route, int code)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = direction; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xfe) * 1099511628211ULL;
    for (const char *p = service; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = route; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (h ^ (uint64_t)code) * 1099511628211ULL;
}

static struct series *series_for(struct sl_metrics *m, const char *direction, const char *service,
                                 const char *route, int code)
{
    if (strlen(service) >= NAME_MAX_LEN || strlen(route) >= NAME_MAX_LEN)
        return &m->overflow;
    size_t slot = key_hash(direction, service, route, code) & (SERIES_SLOTS - 1);
    for (size_t probe = 0; probe < SERIES_SLOTS; probe++) {
        struct series *s = &m->slots[(slot + probe) & (SERIES_SLOTS - 1)];
        /* only this thread writes: a relaxed read of its own flag suffices */
        if (!atomic_load_explicit(&s->used, memory_order_relaxed)) {
            snprintf(s->direction, sizeof s->direction, "%s", direction);
            snprintf(s->service, NAME_MAX_LEN, "%s", service);
            snprintf(s->route, NAME_MAX_LEN, "%s", route);
            s->code = code;
            atomic_store_explicit(&s->used, 1, memory_order_release);
            return s;
        }
        if (s->code == code && strcmp(s->service, service) == 0 && strcmp(s->route, route) == 0 &&
            strcmp(s->direction, direction) == 0)
            return s;
    }
    return &m->overflow;
}

void sl_metrics_observe(struct sl_metrics *m, const char *direction, const char *service,
                        const char *route, int status, uint64_t bytes_in, uint64_t bytes_out,
                        uint64_t total_us, uint64_t upstream_us)
{
    if (m == NULL)
        return;
    struct series *s = series_for(m, direction ? direction : "", service ? service : "",
                                  route ? route : "", status);
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes_in, bytes_in, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes_out, bytes_out, memory_order_relaxed);
    sl_histogram_observe(&s->request, total_us);
    if (upstream_us > 0) {
        sl_histogram_observe(&s->upstream, upstream_us);
        sl_histogram_observe(&s->proxy, total_us > upstream_us ? total_us - upstream_us : 0);
    } else {
        sl_histogram_observe(&s->proxy, total_us);
    }
}

long sl_metrics_escape_label(const char *in, char *out, size_t out_size)
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        const char *rep = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        size_t len = rep ? 2 : 1;
        if (n + len >= out_size)
            return -1;
        if (rep)
            memcpy(out + n, rep, 2);
        else
            out[n] = *p;
        n += len;
    }
    if (n >= out_size)
        return -1;
    out[n] = '\0';
    return (long)n;
}

/* ---- scrape -------------------------------------------------------------- */

struct agg {
    /* the labels before code/le: `direction="..",` (sidecar) service, route */
    char labels[NAME_MAX_LEN * 4 + 64];
    char direction[12];
    int code;
    uint64_t requests, bytes_in, bytes_out;
    uint64_t hist[3][SL_METRICS_N_BUCKETS + 1], hist_sum[3];
};

struct agg_set {
    struct agg *items;
    size_t n, cap;
};

static struct agg *agg_find(struct agg_set *set, const char *labels, const char *direction,
                            int code)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i].code == code && strcmp(set->items[i].labels, labels) == 0)
            return &set->items[i];
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        struct agg *items = realloc(set->items, cap * sizeof *items);
        if (items == NULL)
            return NULL;
        set->items = items;
        set->cap = cap;
    }
    struct agg *a = &set->items[set->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->labels, sizeof a->labels, "%s", labels);
    snprintf(a->direction, sizeof a->direction, "%s", direction);
    a->code = code;
    return a;
}

static void add_series(struct agg_set *by_code, struct agg_set *by_route, const struct series *s)
{
    char service[NAME_MAX_LEN * 2 + 1], route[NAME_MAX_LEN * 2 + 1], labels[NAME_MAX_LEN * 4 + 64];
    if (sl_metrics_escape_label(s->service, service, sizeof service) < 0 ||
        sl_metrics_escape_label(s->route, route, sizeof route) < 0)
        return;
    if (s->direction[0])
        snprintf(labels, sizeof labels, "direction=\"%s\",service=\"%s\",route=\"%s\"",
                 s->direction, service, route);
    else
        snprintf(labels, sizeof labels, "service=\"%s\",route=\"%s\"", service, route);
    struct agg *a = agg_find(by_code, labels, s->direction, s->code);
    struct agg *b = agg_find(by_route, labels, s->direction, 0);
    if (a == NULL || b == NULL)
        return;
    a->requests += atomic_load_explicit(&s->requests, memory_order_relaxed);
    b->bytes_in += atomic_load_explicit(&s->bytes_in, memory_order_relaxed);
    b->bytes_out += atomic_load_explicit(&s->bytes_out, memory_order_relaxed);
    const struct sl_histogram *h[3] = {&s->request, &s->upstream, &s->proxy};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i <= SL_METRICS_N_BUCKETS; i++)
            b->hist[k][i] += atomic_load_explicit(&h[k]->counts[i], memory_order_relaxed);
        b->hist_sum[k] += atomic_load_explicit(&h[k]->sum_us, memory_order_relaxed);
    }
}

struct target_ctx {
    struct evbuffer *out;
};

static void target_line(const char *upstream, const char *target, const char *address, bool healthy,
                        void *arg)
{
    struct target_ctx *ctx = arg;
    char u[256], t[256], a[256];
    if (sl_metrics_escape_label(upstream, u, sizeof u) < 0 ||
        sl_metrics_escape_label(target, t, sizeof t) < 0 ||
        sl_metrics_escape_label(address, a, sizeof a) < 0)
        return;
    for (int st = 0; st < 2; st++)
        evbuffer_add_printf(ctx->out,
                            "sluice_upstream_target_health{upstream=\"%s\",target=\"%s\","
                            "address=\"%s\",state=\"%s\"} %d\n",
                            u, t, a, st == 0 ? "healthy" : "unhealthy",
                            st == 0 ? healthy : !healthy);
}

void sl_metrics_render(const struct sl_server *srv, const struct sl_snapshot *snap,
                       struct evbuffer *out)
{
    struct agg_set by_code = {0}, by_route = {0};
    for (int w = 0; w < srv->n_workers; w++) {
        const struct sl_metrics *m = srv->workers[w].metrics;
        if (m == NULL)
            continue;
        for (size_t i = 0; i < SERIES_SLOTS; i++)
            if (atomic_load_explicit(&m->slots[i].used, memory_order_acquire))
                add_series(&by_code, &by_route, &m->slots[i]);
        if (atomic_load_explicit(&m->overflow.requests, memory_order_relaxed) > 0)
            add_series(&by_code, &by_route, &m->overflow);
    }

    evbuffer_add_printf(out, "# HELP sluice_http_requests_total Requests by service, route and "
                             "status code.\n# TYPE sluice_http_requests_total counter\n");
    for (size_t i = 0; i < by_code.n; i++) {
        const struct agg *a = &by_code.items[i];
        char code[16];
        if (a->code < 0)
            snprintf(code, sizeof code, "_other");
        else
            snprintf(code, sizeof code, "%d", a->code);
        evbuffer_add_printf(out, "sluice_http_requests_total{%s,code=\"%s\"} %llu\n", a->labels,
                            code, (unsigned long long)a->requests);
    }
    static const char *const hist_names[3] = {"sluice_request_latency_seconds",
                                              "sluice_upstream_latency_seconds",
                                              "sluice_proxy_latency_seconds"};
    static const char *const hist_help[3] = {
        "Time from the first byte of the request to the end of the response.",
        "Time from sending the request upstream to the upstream's response head.",
        "The gateway's own share: request latency minus upstream latency."};
    for (int k = 0; k < 3; k++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hist_names[k], hist_help[k],
                            hist_names[k]);
        for (size_t i = 0; i < by_route.n; i++) {
            const struct agg *a = &by_route.items[i];
            uint64_t cum = 0;
            for (int b = 0; b <= SL_METRICS_N_BUCKETS; b++) {
                cum += a->hist[k][b];
                if (b < SL_METRICS_N_BUCKETS)
                    evbuffer_add_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", hist_names[k],
                                        a->labels, sl_metrics_buckets[b], (unsigned long long)cum);
                else
                    evbuffer_add_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", hist_names[k],
                                        a->labels, (unsigned long long)cum);
            }
            evbuffer_add_printf(out, "%s_sum{%s} %.6f\n", hist_names[k], a->labels,
                                (double)a->hist_sum[k] / 1e6);
            evbuffer_add_printf(out, "%s_count{%s} %llu\n", hist_names[k], a->labels,
                                (unsigned long long)cum);
        }
    }
    evbuffer_add_printf(out, "# HELP sluice_bandwidth_bytes_total Bytes received from clients "
                             "(ingress) and sent to them (egress).\n"
                             "# TYPE sluice_bandwidth_bytes_total counter\n");
    for (size_t i = 0; i < by_route.n; i++) {
        const struct agg *a = &by_route.items[i];
        /* the sidecar's series have a direction (inbound/outbound) already:
         * ingress/egress is their `flow` */
        const char *flow = a->direction[0] ? "flow" : "direction";
        evbuffer_add_printf(out,
                            "sluice_bandwidth_bytes_total{%s,%s=\"ingress\"} %llu\n"
                            "sluice_bandwidth_bytes_total{%s,%s=\"egress\"} %llu\n",
                            a->labels, flow, (unsigned long long)a->bytes_in, a->labels, flow,
                            (unsigned long long)a->bytes_out);
    }
    free(by_code.items);
    free(by_route.items);

    int64_t active = 0, reading = 0, writing = 0, waiting = 0;
    uint64_t accepted = 0, handled = 0;
    for (int w = 0; w < srv->n_workers; w++) {
        const struct sl_worker_stats *s = &srv->workers[w].stats;
        accepted += atomic_load_explicit(&s->connections_accepted, memory_order_relaxed);
        handled += atomic_load_explicit(&s->connections_handled, memory_order_relaxed);
        active += atomic_load_explicit(&s->connections_active, memory_order_relaxed);
        reading += atomic_load_explicit(&s->connections_reading, memory_order_relaxed);
        writing += atomic_load_explicit(&s->connections_writing, memory_order_relaxed);
        waiting += atomic_load_explicit(&s->connections_waiting, memory_order_relaxed);
    }
    evbuffer_add_printf(out,
                        "# HELP sluice_connections Client connections by state.\n"
                        "# TYPE sluice_connections gauge\n"
                        "sluice_connections{state=\"active\"} %lld\n"
                        "sluice_connections{state=\"reading\"} %lld\n"
                        "sluice_connections{state=\"writing\"} %lld\n"
                        "sluice_connections{state=\"waiting\"} %lld\n"
                        "# HELP sluice_connections_accepted_total Client connections accepted.\n"
                        "# TYPE sluice_connections_accepted_total counter\n"
                        "sluice_connections_accepted_total %llu\n"
                        "# HELP sluice_connections_handled_total Client connections handled.\n"
                        "# TYPE sluice_connections_handled_total counter\n"
                        "sluice_connections_handled_total %llu\n",
                        (long long)active, (long long)reading, (long long)writing,
                        (long long)waiting, (unsigned long long)accepted,
                        (unsigned long long)handled);

    evbuffer_add_printf(out, "# HELP sluice_upstream_target_health Health of each upstream "
                             "target (1 in its current state).\n"
                             "# TYPE sluice_upstream_target_health gauge\n");
    struct target_ctx tctx = {out};
    if (snap != NULL) {
        sl_balancer_foreach_target(snap, target_line, &tctx);
        sl_resilience_render(snap, sl_snapshot_is_sidecar(snap), out);
    }

    evbuffer_add_printf(
        out,
        "# HELP sluice_config_reloads_total Configuration reloads (SIGHUP, POST /config) by "
        "result.\n"
        "# TYPE sluice_config_reloads_total counter\n"
        "sluice_config_reloads_total{result=\"success\"} %llu\n"
        "sluice_config_reloads_total{result=\"failure\"} %llu\n"
        "# HELP sluice_config_last_reload_success_timestamp_seconds When the configuration was "
        "last reloaded (0: never).\n"
        "# TYPE sluice_config_last_reload_success_timestamp_seconds gauge\n"
        "sluice_config_last_reload_success_timestamp_seconds %.3f\n"
        "# HELP sluice_build_info The running version.\n"
        "# TYPE sluice_build_info gauge\n"
        "sluice_build_info{version=\"%s\"} 1\n",
        (unsigned long long)atomic_load_explicit(&reloads_ok, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&reloads_failed, memory_order_relaxed),
        atomic_load(&last_reload_ok), PACKAGE_VERSION);
    sl_plugins_render_metrics(out); /* the plugins' own families */
}
