/*
 * Resilience state per service (see resilience.h for ownership).
 *
 * Circuit breakers are counters of what is in flight, raised with one
 * atomic add and lowered again at once when that went past the limit, so
 * workers never wait on each other and a limit is never exceeded by more
 * than the racing requests' own brief increments.
 *
 * The retry budget keeps one-second buckets of requests and retries in a
 * ring of SL_BUDGET_BUCKETS; the window is the policy's ttl (whole seconds,
 * at most the ring). A bucket is reclaimed by the first thread that sees
 * it stale (compare-and-swap of its second): a count that races with the
 * reclaim may be lost, which only makes the budget a little more generous
 * for one second.
 *
 * Outlier detection (Envoy's consecutive_5xx and consecutive_gateway_failure):
 * a target's state is one atomic word (ACTIVE, EJECTED, PROBING) plus the
 * time its ejection ends. An ejection lasts base_ejection_time x the times
 * the target was ejected (capped at max_ejection_time); that multiplier
 * drops by one for every `interval` the target then stays in service. When
 * an ejection ends, exactly one request (the probe) may use the target; its
 * result decides between full traffic and another ejection.
 */
#include "resilience.h"

#include <event2/buffer.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "snapshot.h"
#include "util.h"

#define SL_BUDGET_BUCKETS 64

/* ------------------------------------------------------------------------ */
/* registries                                                                */

struct budget_bucket {
    _Atomic uint64_t second; /* which second it counts (0: none yet) */
    atomic_uint_fast64_t requests, retries;
};

struct sl_svc_state {
    struct sl_registry_entry entry; /* first: the registry's (registry.h) */
    atomic_long active[SL_BREAKER__COUNT];
    atomic_uint_fast64_t overflows[SL_BREAKER__COUNT];
    atomic_uint_fast64_t retries[SL_RETRY_REASON__COUNT];
    atomic_uint_fast64_t budget_refused;
    struct budget_bucket buckets[SL_BUDGET_BUCKETS];
};

enum { OD_ACTIVE = 0, OD_EJECTED = 1, OD_PROBING = 2 };

struct sl_outlier_entry {
    struct sl_registry_entry entry; /* first: the registry's (registry.h) */
    char target[300];               /* "host:port" for metrics */
    atomic_int state;
    _Atomic uint64_t ejected_until_ms;
    atomic_uint consecutive_5xx, consecutive_gateway;
    atomic_uint times_ejected;            /* the multiplier (decays) */
    _Atomic uint64_t back_in_service_ms;  /* when it last returned (decay) */
    atomic_uint_fast64_t ejections_total; /* for /metrics */
};

static struct sl_registry services = SL_REGISTRY_INITIALIZER(struct sl_svc_state, NULL);
static struct sl_registry outliers = SL_REGISTRY_INITIALIZER(struct sl_outlier_entry, NULL);

void sl_svc_state_hold(struct sl_svc_state *s)
{
    sl_registry_hold(&s->entry);
}

void sl_svc_state_put(struct sl_svc_state *s)
{
    if (s)
        sl_registry_put(&s->entry);
}

static struct sl_outlier_entry *outlier_get(const char *scope, const char *target)
{
    char key[800];
    snprintf(key, sizeof key, "%s\x1f%s", scope, target);
    struct sl_outlier_entry *e = sl_registry_get(&outliers, key);
    if (e && !e->target[0]) /* made just now (only the main thread builds views) */
        snprintf(e->target, sizeof e->target, "%s", target);
    return e;
}

void sl_resilience_sweep(void)
{
    sl_registry_sweep(&services);
    sl_registry_sweep(&outliers);
}

/* ------------------------------------------------------------------------ */
/* a snapshot's view                                                         */

struct sl_resilience {
    struct sl_svc_resilience *svcs; /* by service index; the app last */
    size_t n;
    bool has_app;
};

static void target_text(char *out, size_t size, const char *host, uint16_t port)
{
    snprintf(out, size, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

static bool view_build(struct sl_svc_resilience *v, const struct sl_service *svc, bool inbound)
{
    char key[400], scope[420], target[300];
    target_text(target, sizeof target, svc->host, svc->port);
    snprintf(key, sizeof key, "%s%s", inbound ? "inbound:" : "",
             svc->name ? svc->name
             : svc->id ? svc->id
                       : target);
    v->service = svc;
    v->inbound = inbound;
    if ((v->state = sl_registry_get(&services, key)) == NULL)
        return false;
    const struct sl_upstream *u = svc->upstream;
    v->n_targets = u ? u->n_targets : 1;
    v->targets = calloc(v->n_targets ? v->n_targets : 1, sizeof *v->targets);
    if (!v->targets)
        return false;
    if (u)
        snprintf(scope, sizeof scope, "upstream:%s", u->name);
    else
        snprintf(scope, sizeof scope, "service:%s", key);
    for (size_t i = 0; i < v->n_targets; i++) {
        if (u)
            target_text(target, sizeof target, u->targets[i].host, u->targets[i].port);
        if ((v->targets[i] = outlier_get(scope, target)) == NULL)
            return false;
    }
    return true;
}

static void view_free(struct sl_svc_resilience *v)
{
    sl_svc_state_put(v->state);
    for (size_t i = 0; v->targets && i < v->n_targets; i++)
        if (v->targets[i])
            sl_registry_put(&v->targets[i]->entry);
    free(v->targets);
}

struct sl_resilience *sl_resilience_new(const struct sl_config *cfg, const struct sl_service *app,
                                        char *err, size_t err_size)
{
    struct sl_resilience *res = calloc(1, sizeof *res);
    size_t n = cfg->n_services + (app ? 1 : 0);
    if (res)
        res->svcs = calloc(n ? n : 1, sizeof *res->svcs);
    if (!res || !res->svcs) {
        free(res);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    res->has_app = app != NULL;
    for (size_t i = 0; i < n; i++) {
        res->n = i + 1; /* what to free if this one fails */
        const struct sl_service *svc = i < cfg->n_services ? &cfg->services[i] : app;
        if (!view_build(&res->svcs[i], svc, i == cfg->n_services)) {
            sl_resilience_free(res);
            snprintf(err, err_size, "out of memory");
            return NULL;
        }
    }
    res->n = n;
    return res;
}

void sl_resilience_free(struct sl_resilience *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->n; i++)
        view_free(&res->svcs[i]);
    free(res->svcs);
    free(res);
}

const struct sl_svc_resilience *sl_resilience_of(const struct sl_resilience *res,
                                                 const struct sl_service *svc)
{
    if (!res)
        return NULL;
    if (svc->index < res->n && res->svcs[svc->index].service == svc)
        return &res->svcs[svc->index];
    if (res->has_app && res->svcs[res->n - 1].service == svc)
        return &res->svcs[res->n - 1];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* circuit breakers and counters                                             */

const char *sl_breaker_to_str(enum sl_breaker b)
{
    static const char *const names[SL_BREAKER__COUNT] = {"connections", "pending_requests",
                                                         "requests", "retries"};
    return b < SL_BREAKER__COUNT ? names[b] : "?";
}

const char *sl_retry_reason_to_str(enum sl_retry_reason r)
{
    static const char *const names[SL_RETRY_REASON__COUNT] = {
        "connect-failure", "reset", "per-try-timeout", "retriable-status"};
    return r < SL_RETRY_REASON__COUNT ? names[r] : "?";
}

bool sl_breaker_enter(struct sl_svc_state *s, enum sl_breaker kind, uint32_t limit)
{
    long before = atomic_fetch_add_explicit(&s->active[kind], 1, memory_order_relaxed);
    if (limit == 0 || before < (long)limit)
        return true;
    atomic_fetch_sub_explicit(&s->active[kind], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->overflows[kind], 1, memory_order_relaxed);
    return false;
}

void sl_breaker_leave(struct sl_svc_state *s, enum sl_breaker kind)
{
    atomic_fetch_sub_explicit(&s->active[kind], 1, memory_order_relaxed);
}

void sl_resilience_count_retry(struct sl_svc_state *s, enum sl_retry_reason reason)
{
    atomic_fetch_add_explicit(&s->retries[reason], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* retry budget                                                              */

static struct budget_bucket *bucket_of(struct sl_svc_state *s, uint64_t second)
{
    struct budget_bucket *b = &s->buckets[second % SL_BUDGET_BUCKETS];
    uint64_t seen = atomic_load_explicit(&b->second, memory_order_acquire);
    if (seen != second &&
        atomic_compare_exchange_strong_explicit(&b->second, &seen, second, memory_order_acq_rel,
                                                memory_order_acquire)) {
        atomic_store_explicit(&b->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&b->retries, 0, memory_order_relaxed);
    }
    return b;
}

/* the window in whole seconds (ttl rounded up, within the ring) */
static uint64_t window_seconds(const struct sl_retry_policy *p)
{
    uint64_t w = (p->budget_ttl_ms + 999) / 1000;
    if (w < 1)
        w = 1;
    return w > SL_BUDGET_BUCKETS - 1 ? SL_BUDGET_BUCKETS - 1 : w;
}

void sl_budget_deposit(struct sl_svc_state *s, uint64_t now_ms)
{
    /* +1: second 0 marks a bucket never used */
    atomic_fetch_add_explicit(&bucket_of(s, now_ms / 1000 + 1)->requests, 1, memory_order_relaxed);
}

bool sl_budget_withdraw(struct sl_svc_state *s, const struct sl_retry_policy *p, uint64_t now_ms)
{
    uint64_t now = now_ms / 1000 + 1, window = window_seconds(p);
    uint64_t requests = 0, retries = 0;
    for (uint64_t sec = now - window + 1; sec <= now; sec++) {
        const struct budget_bucket *b = &s->buckets[sec % SL_BUDGET_BUCKETS];
        if (atomic_load_explicit(&b->second, memory_order_acquire) != sec)
            continue;
        requests += atomic_load_explicit(&b->requests, memory_order_relaxed);
        retries += atomic_load_explicit(&b->retries, memory_order_relaxed);
    }
    double allowed = p->budget_ratio * (double)requests +
                     (double)p->budget_min_retries_per_second * (double)window;
    if ((double)retries + 1.0 > allowed) {
        atomic_fetch_add_explicit(&s->budget_refused, 1, memory_order_relaxed);
        return false;
    }
    atomic_fetch_add_explicit(&bucket_of(s, now)->retries, 1, memory_order_relaxed);
    return true;
}

/* ------------------------------------------------------------------------ */
/* outlier detection                                                         */

static bool entry_out(const struct sl_outlier_entry *e, uint64_t now_ms, bool *probe_ready)
{
    int st = atomic_load_explicit(&e->state, memory_order_acquire);
    *probe_ready = false;
    if (st == OD_ACTIVE)
        return false;
    if (st == OD_EJECTED &&
        now_ms >= atomic_load_explicit(&e->ejected_until_ms, memory_order_relaxed)) {
        *probe_ready = true; /* the ejection is over: one probe may go */
        return false;
    }
    return true; /* ejected, or its probe is in flight */
}

bool sl_outlier_ejected(const struct sl_svc_resilience *res, size_t i, uint64_t now_ms)
{
    bool probe_ready;
    return i < res->n_targets && entry_out(res->targets[i], now_ms, &probe_ready);
}

void sl_outlier_pick_begin(struct sl_outlier_pick *pick, const struct sl_svc_resilience *res,
                           uint64_t now_ms)
{
    pick->res = res;
    pick->now_ms = now_ms;
    pick->panic = false;
    if (!res || !res->service->outlier_detection.set)
        return;
    size_t left = 0;
    for (size_t i = 0; i < res->n_targets; i++)
        left += !sl_outlier_ejected(res, i, now_ms);
    /* Envoy's panic threshold (50%): below it, ejection is ignored */
    pick->panic = left * 2 < res->n_targets;
}

bool sl_outlier_usable(void *arg, size_t i)
{
    const struct sl_outlier_pick *pick = arg;
    if (!pick->res || !pick->res->service->outlier_detection.set || pick->panic ||
        i >= pick->res->n_targets)
        return true;
    return !sl_outlier_ejected(pick->res, i, pick->now_ms);
}

bool sl_outlier_claim(const struct sl_outlier_pick *pick, size_t i, bool *probe)
{
    *probe = false;
    if (!pick->res || !pick->res->service->outlier_detection.set || i >= pick->res->n_targets)
        return true;
    struct sl_outlier_entry *e = pick->res->targets[i];
    bool probe_ready;
    if (entry_out(e, pick->now_ms, &probe_ready))
        return pick->panic; /* in panic every target takes traffic */
    if (!probe_ready)
        return true;
    int expected = OD_EJECTED;
    if (atomic_compare_exchange_strong(&e->state, &expected, OD_PROBING)) {
        *probe = true;
        return true;
    }
    return pick->panic;
}

void sl_outlier_abandon(const struct sl_svc_resilience *res, size_t i)
{
    if (!res || i >= res->n_targets)
        return;
    int expected = OD_PROBING;
    atomic_compare_exchange_strong(&res->targets[i]->state, &expected, OD_EJECTED);
}

/* Eject e if the service may lose one more target now. */
static void eject(const struct sl_svc_resilience *res, struct sl_outlier_entry *e, uint64_t now_ms,
                  bool again)
{
    const struct sl_outlier_detection *od = &res->service->outlier_detection;
    if (!again) {
        size_t out = 0;
        for (size_t k = 0; k < res->n_targets; k++)
            out += atomic_load(&res->targets[k]->state) != OD_ACTIVE;
        size_t allowed = res->n_targets * od->max_ejection_percent / 100;
        if (allowed < 1)
            allowed = 1; /* Envoy: one may always go */
        if (out >= allowed)
            return;
        int expected = OD_ACTIVE;
        if (!atomic_compare_exchange_strong(&e->state, &expected, OD_EJECTED))
            return; /* another worker was first */
    } else {
        atomic_store(&e->state, OD_EJECTED);
    }
    /* the multiplier fell by one per interval spent back in service */
    unsigned times = atomic_load(&e->times_ejected);
    uint64_t back = atomic_load(&e->back_in_service_ms);
    if (!again && od->interval_ms && back && now_ms > back) {
        uint64_t decay = (now_ms - back) / od->interval_ms;
        times = decay >= times ? 0 : times - (unsigned)decay;
    }
    times++;
    atomic_store(&e->times_ejected, times);
    uint64_t ms = (uint64_t)od->base_ejection_time_ms * times;
    if (ms > od->max_ejection_time_ms)
        ms = od->max_ejection_time_ms;
    atomic_store_explicit(&e->ejected_until_ms, now_ms + ms, memory_order_relaxed);
    atomic_store(&e->consecutive_5xx, 0);
    atomic_store(&e->consecutive_gateway, 0);
    atomic_fetch_add_explicit(&e->ejections_total, 1, memory_order_relaxed);
    sl_warn("outlier detection: %s of service '%s' ejected for %llu ms (%u time(s))", e->target,
            res->service->name ? res->service->name : res->service->host, (unsigned long long)ms,
            times);
}

void sl_outlier_report(const struct sl_svc_resilience *res, size_t i, int status, bool probe,
                       uint64_t now_ms)
{
    if (!res || !res->service->outlier_detection.set || i >= res->n_targets)
        return;
    const struct sl_outlier_detection *od = &res->service->outlier_detection;
    struct sl_outlier_entry *e = res->targets[i];
    bool failure_5xx = status == 0 || status >= 500;
    bool failure_gateway = status == 0 || status == 502 || status == 503 || status == 504;
    if (probe) {
        if (failure_5xx) {
            eject(res, e, now_ms, true);
            return;
        }
        atomic_store(&e->consecutive_5xx, 0);
        atomic_store(&e->consecutive_gateway, 0);
        atomic_store(&e->back_in_service_ms, now_ms);
        atomic_store(&e->state, OD_ACTIVE);
        sl_notice("outlier detection: %s of service '%s' is back after a good probe", e->target,
                  res->service->name ? res->service->name : res->service->host);
        return;
    }
    if (atomic_load_explicit(&e->state, memory_order_relaxed) != OD_ACTIVE)
        return; /* traffic in panic mode: the ejection runs its course */
    if (!failure_5xx) {
        if (atomic_load_explicit(&e->consecutive_5xx, memory_order_relaxed))
            atomic_store(&e->consecutive_5xx, 0);
        if (atomic_load_explicit(&e->consecutive_gateway, memory_order_relaxed))
            atomic_store(&e->consecutive_gateway, 0);
        return;
    }
    unsigned c5 = atomic_fetch_add(&e->consecutive_5xx, 1) + 1;
    unsigned cg = failure_gateway ? atomic_fetch_add(&e->consecutive_gateway, 1) + 1 : 0;
    if (!failure_gateway)
        atomic_store(&e->consecutive_gateway, 0);
    if ((od->consecutive_5xx && c5 >= od->consecutive_5xx) ||
        (od->consecutive_gateway_failure && cg >= od->consecutive_gateway_failure))
        eject(res, e, now_ms, false);
}

/* ------------------------------------------------------------------------ */
/* metrics                                                                   */

static void service_labels(const struct sl_svc_resilience *v, bool directions, char *out,
                           size_t size)
{
    char name[300];
    const struct sl_service *svc = v->service;
    if (sl_metrics_escape_label(svc->name ? svc->name : svc->host, name, sizeof name) < 0)
        snprintf(name, sizeof name, "_other");
    if (directions)
        snprintf(out, size, "service=\"%s\",direction=\"%s\"", name,
                 v->inbound ? "inbound" : "outbound");
    else
        snprintf(out, size, "service=\"%s\"", name);
}

static long long v_retries(const struct sl_svc_resilience *v, size_t k, uint64_t now)
{
    return (long long)atomic_load(&v->state->retries[k]);
}

static long long v_budget(const struct sl_svc_resilience *v, size_t k, uint64_t now)
{
    return (long long)atomic_load(&v->state->budget_refused);
}

static long long v_overflows(const struct sl_svc_resilience *v, size_t k, uint64_t now)
{
    return (long long)atomic_load(&v->state->overflows[k]);
}

static long long v_in_flight(const struct sl_svc_resilience *v, size_t k, uint64_t now)
{
    return atomic_load(&v->state->active[k]);
}

static long long v_ejected(const struct sl_svc_resilience *v, size_t t, uint64_t now)
{
    return sl_outlier_ejected(v, t, now);
}

static long long v_ejections(const struct sl_svc_resilience *v, size_t t, uint64_t now)
{
    return (long long)atomic_load(&v->targets[t]->ejections_total);
}

static const char *reason_label(size_t k)
{
    return sl_retry_reason_to_str((enum sl_retry_reason)k);
}

static const char *breaker_label(size_t k)
{
    return sl_breaker_to_str((enum sl_breaker)k);
}

/* A family of series per service: one per value of `label` (a reason, a
 * breaker), per target (services with outlier detection), or just one. */
struct family {
    const char *name, *type, *help;
    const char *label;                 /* the series' own label, or NULL */
    size_t n_values;                   /* label values (per_target: the targets) */
    const char *(*value_of)(size_t k); /* the k-th label value */
    long long (*read)(const struct sl_svc_resilience *v, size_t k, uint64_t now);
    bool per_target;
};

static const struct family families[] = {
    {"sluice_upstream_retries_total", "counter", "Retries made, by reason.", "reason",
     SL_RETRY_REASON__COUNT, reason_label, v_retries, false},
    {"sluice_upstream_retry_budget_exhausted_total", "counter", "Retries the retry budget refused.",
     NULL, 1, NULL, v_budget, false},
    {"sluice_upstream_overflow_total", "counter", "Requests a circuit breaker refused, by breaker.",
     "breaker", SL_BREAKER__COUNT, breaker_label, v_overflows, false},
    {"sluice_upstream_in_flight", "gauge", "What the circuit breakers count now, by breaker.",
     "breaker", SL_BREAKER__COUNT, breaker_label, v_in_flight, false},
    {"sluice_upstream_ejections_active", "gauge",
     "Targets ejected by outlier detection now (1 when ejected).", "target", 0, NULL, v_ejected,
     true},
    {"sluice_upstream_ejections_total", "counter", "Ejections by outlier detection.", "target", 0,
     NULL, v_ejections, true},
};

void sl_resilience_render(const struct sl_snapshot *snap, bool directions, struct evbuffer *out)
{
    const struct sl_resilience *res = snap ? snap->resilience : NULL;
    uint64_t now = sl_now_ms();
    char labels[400], value[700];
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        const struct family *fam = &families[f];
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
                            fam->type);
        for (size_t i = 0; res && i < res->n; i++) {
            const struct sl_svc_resilience *v = &res->svcs[i];
            if (fam->per_target && !v->service->outlier_detection.set)
                continue;
            service_labels(v, directions, labels, sizeof labels);
            size_t n = fam->per_target ? v->n_targets : fam->n_values;
            for (size_t k = 0; k < n; k++) {
                const char *raw = fam->per_target ? v->targets[k]->target
                                  : fam->value_of ? fam->value_of(k)
                                                  : NULL;
                if (raw && sl_metrics_escape_label(raw, value, sizeof value) < 0)
                    continue;
                if (raw)
                    evbuffer_add_printf(out, "%s{%s,%s=\"%s\"} %lld\n", fam->name, labels,
                                        fam->label, value, fam->read(v, k, now));
                else
                    evbuffer_add_printf(out, "%s{%s} %lld\n", fam->name, labels,
                                        fam->read(v, k, now));
            }
        }
    }
}
