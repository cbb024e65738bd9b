/*
 * Load balancing (Kong's ring-balancer) and passive health checks.
 *
 * Algorithms, all over the targets of weight > 0 that are healthy:
 *  - round-robin: a smooth weighted schedule (nginx's algorithm) computed
 *    when the snapshot is built; one atomic cursor per upstream walks it,
 *    so all workers together follow the weights exactly.
 *  - least-connections: the lowest (active + 1) / weight, with the active
 *    count of each target shared by all workers (atomics in the registry).
 *  - consistent-hashing: a table of `slots` entries (at least 1000, as
 *    Kong's continuum) where each entry belongs to the target with the
 *    highest weighted rendezvous score for it. Removing a target moves only
 *    the entries it owned (about 1/n of the keys); a key whose target is
 *    unhealthy walks back to the previous entry with a usable one, as
 *    Kong's continuum walk does.
 *  - latency: Kong's peak EWMA (decay time 10 s) of the upstream response
 *    time divided by the weight, power of two random choices.
 *
 * Health: Kong's lua-resty-healthcheck state machine. Each target has one
 * success counter and three failure counters (http, tcp, timeout); a
 * failure resets the success counter, a success resets the failure
 * counters; reaching a limit flips the state. A limit of 0 disables that
 * report. All of it is packed in one 64-bit word updated by CAS, so
 * workers and the health thread report concurrently without a lock.
 */
#include "balancer.h"
#include "router.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "numeric.h"
#include "registry.h"
#include "snapshot.h"
#include "util.h"

#define SL_RR_MAX_SCHEDULE 65536u
#define SL_CH_MIN_SLOTS 1000u
#define SL_EWMA_DECAY_MS 10000.0
#define SL_HASH_MAX_VALUES 100
#define SL_HASH_VALUE_BUF 4096

/* ------------------------------------------------------------------------ */
/* hashing                                                                   */

struct hash_state {
    uint64_t h;
};

static void hash_init(struct hash_state *s)
{
    s->h = 0xcbf29ce484222325ull; /* FNV-1a offset basis */
}

static void hash_update(struct hash_state *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        s->h ^= p[i];
        s->h *= 0x100000001b3ull;
    }
}

/* FNV-1a alone mixes its high bits poorly; a 64-bit finaliser fixes that. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_final(const struct hash_state *s)
{
    return mix64(s->h);
}

uint64_t sl_lb_hash_bytes(const void *data, size_t len)
{
    struct hash_state s;
    hash_init(&s);
    hash_update(&s, data, len);
    return hash_final(&s);
}

/* Per-thread generator for the random choices (never locks, never blocks). */
static uint64_t lb_random(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)&state) | 1;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* ------------------------------------------------------------------------ */
/* health registry                                                           */

enum { CTR_SUCCESS = 0, CTR_HTTP = 1, CTR_TCP = 2, CTR_TIMEOUT = 3 };
static const char *const ctr_names[] = {"successes", "http_failures", "tcp_failures", "timeouts"};

/* word: bits 0-7 health, then one byte per counter (success, http, tcp, timeout). */
#define WORD_HEALTH(w) ((enum sl_lb_health)((w)&0xffu))
#define WORD_CTR(w, c) ((unsigned)(((w) >> (8 * ((c) + 1))) & 0xffu))
#define WORD_FAILURES_MASK 0xffffff0000ull
#define WORD_SUCCESS_MASK 0xff00ull

struct health_entry {
    struct sl_registry_entry entry; /* first: the registry's (registry.h) */
    _Atomic uint64_t word;
    atomic_long active;          /* connections in use, all workers */
    _Atomic uint64_t ewma_ns;    /* latency EWMA (ns) */
    _Atomic uint64_t ewma_at_ms; /* when it was last updated */
};

static void health_entry_init(struct sl_registry_entry *re)
{
    struct health_entry *e = (struct health_entry *)re;
    atomic_init(&e->word, SL_LB_HEALTHY);
    atomic_init(&e->active, 0);
    atomic_init(&e->ewma_ns, 0);
    atomic_init(&e->ewma_at_ms, 0);
}

static struct sl_registry registry =
    SL_REGISTRY_INITIALIZER(struct health_entry, health_entry_init);

void sl_balancer_registry_sweep(void)
{
    sl_registry_sweep(&registry);
}

/* ------------------------------------------------------------------------ */
/* balancer structures                                                       */

struct sl_lb_target {
    const struct sl_target *conf;
    const struct sl_lb_upstream *up;
    struct health_entry *health;
    size_t index;
    char name[300]; /* "host:port" ("[v6]:port") */
};

struct sl_lb_upstream {
    const struct sl_upstream *conf;
    struct sl_lb_target *targets;
    size_t n_targets;
    uint64_t total_weight;
    uint32_t *schedule; /* round-robin: target indexes */
    size_t schedule_len;
    uint32_t *ring; /* consistent-hashing: target index per slot */
    size_t ring_len;
    atomic_uint_fast64_t cursor; /* round-robin position / least-connections rotation */
};

struct sl_balancer {
    struct sl_lb_upstream *ups;
    size_t n_ups;
};

const char *sl_lb_health_to_str(enum sl_lb_health h)
{
    switch (h) {
    case SL_LB_HEALTHY:
        return "healthy";
    case SL_LB_MOSTLY_HEALTHY:
        return "mostly_healthy";
    case SL_LB_MOSTLY_UNHEALTHY:
        return "mostly_unhealthy";
    case SL_LB_UNHEALTHY:
        return "unhealthy";
    }
    return "?";
}

static enum sl_lb_health target_health(const struct sl_lb_target *t)
{
    return WORD_HEALTH(atomic_load_explicit(&t->health->word, memory_order_relaxed));
}

static bool target_usable(const struct sl_lb_target *t)
{
    enum sl_lb_health h = target_health(t);
    return t->conf->weight > 0 && (h == SL_LB_HEALTHY || h == SL_LB_MOSTLY_HEALTHY);
}

static uint64_t tried_bit(const struct sl_lb_target *t)
{
    return 1ull << (t->index % 64);
}

/* ------------------------------------------------------------------------ */
/* the state machine (lua-resty-healthcheck's incr_counter)                  */

static void incr_counter(struct sl_lb_target *t, bool healthy_report, uint32_t limit, int ctr,
                         const char *check)
{
    if (limit == 0 || !t)
        return; /* that check is off */
    _Atomic uint64_t *word = &t->health->word;
    uint64_t old = atomic_load_explicit(word, memory_order_relaxed);
    uint64_t next;
    enum sl_lb_health cur, nh;
    unsigned count;
    do {
        cur = WORD_HEALTH(old);
        /* nothing to count towards a state the target is fully in */
        if ((healthy_report && cur == SL_LB_HEALTHY) || (!healthy_report && cur == SL_LB_UNHEALTHY))
            return;
        count = WORD_CTR(old, ctr) + 1;
        if (count > 255)
            count = 255;
        next = old & ~(0xffull << (8 * (ctr + 1)));
        next |= (uint64_t)count << (8 * (ctr + 1));
        /* a success clears the failures, a failure the successes */
        next &= ctr == CTR_SUCCESS ? ~WORD_FAILURES_MASK : ~WORD_SUCCESS_MASK;
        nh = cur;
        if (count >= limit)
            nh = healthy_report ? SL_LB_HEALTHY : SL_LB_UNHEALTHY;
        else if (cur == SL_LB_HEALTHY && (next & WORD_FAILURES_MASK))
            nh = SL_LB_MOSTLY_HEALTHY;
        else if (cur == SL_LB_UNHEALTHY && (next & WORD_SUCCESS_MASK))
            nh = SL_LB_MOSTLY_UNHEALTHY;
        next = (next & ~0xffull) | (uint64_t)nh;
    } while (!atomic_compare_exchange_weak_explicit(word, &old, next, memory_order_acq_rel,
                                                    memory_order_relaxed));
    bool was_usable = cur == SL_LB_HEALTHY || cur == SL_LB_MOSTLY_HEALTHY;
    bool is_usable = nh == SL_LB_HEALTHY || nh == SL_LB_MOSTLY_HEALTHY;
    if (was_usable != is_usable)
        sl_warn("upstream '%s': target %s is now %s (%s %s %u/%u)", t->up->conf->name, t->name,
                sl_lb_health_to_str(nh), check, ctr_names[ctr], count, limit);
}

static bool status_in(const struct sl_healthcheck_counters *c, int status)
{
    for (size_t i = 0; i < c->n_http_statuses; i++)
        if (c->http_statuses[i] == status)
            return true;
    return false;
}

void sl_balancer_report_tcp_failure(struct sl_lb_state *st)
{
    if (st->current)
        incr_counter(st->current, false,
                     st->current->up->conf->healthchecks.passive.unhealthy.tcp_failures, CTR_TCP,
                     "passive");
}

void sl_balancer_report_timeout(struct sl_lb_state *st)
{
    if (st->current)
        incr_counter(st->current, false,
                     st->current->up->conf->healthchecks.passive.unhealthy.timeouts, CTR_TIMEOUT,
                     "passive");
}

void sl_balancer_report_status(struct sl_lb_state *st, int status)
{
    struct sl_lb_target *t = st->current;
    if (!t)
        return;
    const struct sl_healthchecks *hc = &t->up->conf->healthchecks;
    if (status_in(&hc->passive.healthy, status))
        incr_counter(t, true, hc->passive.healthy.successes, CTR_SUCCESS, "passive");
    else if (status_in(&hc->passive.unhealthy, status))
        incr_counter(t, false, hc->passive.unhealthy.http_failures, CTR_HTTP, "passive");
}

void sl_lb_target_active_tcp_failure(struct sl_lb_target *t)
{
    incr_counter(t, false, t->up->conf->healthchecks.active.unhealthy.tcp_failures, CTR_TCP,
                 "active");
}

void sl_lb_target_active_timeout(struct sl_lb_target *t)
{
    incr_counter(t, false, t->up->conf->healthchecks.active.unhealthy.timeouts, CTR_TIMEOUT,
                 "active");
}

void sl_lb_target_active_success(struct sl_lb_target *t)
{
    incr_counter(t, true, t->up->conf->healthchecks.active.healthy.successes, CTR_SUCCESS,
                 "active");
}

void sl_lb_target_active_status(struct sl_lb_target *t, int status)
{
    const struct sl_healthchecks *hc = &t->up->conf->healthchecks;
    if (status != 0 && status_in(&hc->active.healthy, status))
        incr_counter(t, true, hc->active.healthy.successes, CTR_SUCCESS, "active");
    else if (status == 0 || status_in(&hc->active.unhealthy, status))
        incr_counter(t, false, hc->active.unhealthy.http_failures, CTR_HTTP, "active");
    /* a status in neither list says nothing (Kong) */
}

/* ------------------------------------------------------------------------ */
/* latency (peak EWMA, Kong's latency.lua)                                   */

static double ewma_now(const struct health_entry *e, uint64_t now_ms, double sample_ns)
{
    uint64_t at = atomic_load_explicit(&e->ewma_at_ms, memory_order_relaxed);
    double ewma = (double)atomic_load_explicit(&e->ewma_ns, memory_order_relaxed);
    double td = now_ms > at ? (double)(now_ms - at) : 0.0;
    double w = sl_exp(-td / SL_EWMA_DECAY_MS);
    return ewma * w + sample_ns * (1.0 - w);
}

void sl_balancer_report_latency(struct sl_lb_state *st, uint64_t us)
{
    struct sl_lb_target *t = st->current;
    if (!t || t->up->conf->algorithm != SL_LB_LATENCY)
        return;
    uint64_t now = sl_now_ms();
    double v = ewma_now(t->health, now, (double)us * 1000.0);
    /* two workers may update at once: one sample is lost, which the
     * average does not notice */
    atomic_store_explicit(&t->health->ewma_ns, (uint64_t)v, memory_order_relaxed);
    atomic_store_explicit(&t->health->ewma_at_ms, now, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* building                                                                  */

static void hash_counters(struct hash_state *s, const struct sl_healthcheck_counters *c)
{
    uint32_t v[5] = {c->interval_ms, c->successes, c->tcp_failures, c->timeouts, c->http_failures};
    hash_update(s, v, sizeof v);
    for (size_t i = 0; i < c->n_http_statuses; i++)
        hash_update(s, &c->http_statuses[i], sizeof c->http_statuses[i]);
    hash_update(s, "|", 1);
}

static void hash_str(struct hash_state *s, const char *str)
{
    if (str)
        hash_update(s, str, strlen(str) + 1);
    else
        hash_update(s, "\xff", 1);
}

/* Health state is kept across a reload only while the checks that
 * produced it are configured the same way. */
static uint64_t healthchecks_fingerprint(const struct sl_healthchecks *hc)
{
    struct hash_state s;
    hash_init(&s);
    hash_update(&s, &hc->threshold, sizeof hc->threshold);
    hash_str(&s, hc->active.type);
    uint32_t a[2] = {hc->active.timeout_ms, hc->active.concurrency};
    hash_update(&s, a, sizeof a);
    hash_str(&s, hc->active.http_path);
    hash_counters(&s, &hc->active.healthy);
    hash_counters(&s, &hc->active.unhealthy);
    hash_str(&s, hc->passive.type);
    hash_counters(&s, &hc->passive.healthy);
    hash_counters(&s, &hc->passive.unhealthy);
    return hash_final(&s);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* nginx's smooth weighted round-robin, unrolled into one period. */
static bool build_schedule(struct sl_lb_upstream *u)
{
    size_t n = u->n_targets;
    uint64_t g = 0, total = 0;
    for (size_t i = 0; i < n; i++)
        if (u->targets[i].conf->weight)
            g = gcd64(u->targets[i].conf->weight, g);
    if (g == 0)
        return true; /* no target can be picked: empty schedule */
    uint64_t *w = calloc(n, sizeof *w);
    int64_t *current = calloc(n, sizeof *current);
    if (!w || !current) {
        free(w);
        free(current);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        total += w[i] = u->targets[i].conf->weight / g;
    if (total > SL_RR_MAX_SCHEDULE) {
        /* keep the period bounded: scale down, every target keeps a turn */
        uint64_t scaled = 0;
        for (size_t i = 0; i < n; i++) {
            if (w[i]) {
                w[i] = w[i] * SL_RR_MAX_SCHEDULE / total;
                if (w[i] == 0)
                    w[i] = 1;
            }
            scaled += w[i];
        }
        total = scaled;
    }
    u->schedule = malloc(total * sizeof *u->schedule);
    if (!u->schedule) {
        free(w);
        free(current);
        return false;
    }
    for (size_t k = 0; k < total; k++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
            if (!w[i])
                continue;
            current[i] += (int64_t)w[i];
            if (best == SIZE_MAX || current[i] > current[best])
                best = i;
        }
        current[best] -= (int64_t)total;
        u->schedule[k] = (uint32_t)best;
    }
    u->schedule_len = total;
    free(w);
    free(current);
    return true;
}

/* Weighted rendezvous score of target t for slot s: -w / ln(u), u in (0,1). */
static double slot_score(uint64_t target_hash, uint32_t weight, size_t s)
{
    uint64_t h = mix64(target_hash ^ ((uint64_t)s * 0x9e3779b97f4a7c15ull));
    double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0; /* 2^53 */
    return -(double)weight / sl_ln(u);
}

static bool build_ring(struct sl_lb_upstream *u)
{
    size_t slots = u->conf->slots >= SL_CH_MIN_SLOTS ? u->conf->slots : SL_CH_MIN_SLOTS;
    u->ring = malloc(slots * sizeof *u->ring);
    uint64_t *th = calloc(u->n_targets ? u->n_targets : 1, sizeof *th);
    if (!u->ring || !th) {
        free(th);
        return false;
    }
    for (size_t i = 0; i < u->n_targets; i++)
        th[i] = sl_lb_hash_bytes(u->targets[i].name, strlen(u->targets[i].name));
    for (size_t s = 0; s < slots; s++) {
        uint32_t best = UINT32_MAX;
        double best_score = 0;
        for (size_t i = 0; i < u->n_targets; i++) {
            uint32_t w = u->targets[i].conf->weight;
            if (!w)
                continue;
            double score = slot_score(th[i], w, s);
            if (best == UINT32_MAX || score > best_score) {
                best = (uint32_t)i;
                best_score = score;
            }
        }
        u->ring[s] = best;
    }
    u->ring_len = slots;
    free(th);
    return true;
}

static void upstream_free(struct sl_lb_upstream *u)
{
    for (size_t i = 0; i < u->n_targets; i++)
        sl_registry_put(&u->targets[i].health->entry);
    free(u->targets);
    free(u->schedule);
    free(u->ring);
}

static bool upstream_build(struct sl_lb_upstream *u, const struct sl_upstream *conf, char *err,
                           size_t err_size)
{
    u->conf = conf;
    atomic_init(&u->cursor, 0);
    u->n_targets = conf->n_targets;
    u->targets = calloc(conf->n_targets ? conf->n_targets : 1, sizeof *u->targets);
    if (!u->targets) {
        snprintf(err, err_size, "out of memory");
        return false;
    }
    uint64_t fp = healthchecks_fingerprint(&conf->healthchecks);
    for (size_t i = 0; i < conf->n_targets; i++) {
        struct sl_lb_target *t = &u->targets[i];
        t->conf = &conf->targets[i];
        t->up = u;
        t->index = i;
        snprintf(t->name, sizeof t->name, strchr(t->conf->host, ':') ? "[%s]:%u" : "%s:%u",
                 t->conf->host, t->conf->port);
        u->total_weight += t->conf->weight;
        char key[700];
        snprintf(key, sizeof key, "%s\x1f%016llx\x1f%s", conf->name ? conf->name : "",
                 (unsigned long long)fp, t->name);
        t->health = sl_registry_get(&registry, key);
        if (!t->health) {
            snprintf(err, err_size, "out of memory");
            return false;
        }
    }
    bool ok = true;
    if (conf->algorithm == SL_LB_ROUND_ROBIN)
        ok = build_schedule(u);
    else if (conf->algorithm == SL_LB_CONSISTENT_HASHING)
        ok = build_ring(u);
    if (!ok)
        snprintf(err, err_size, "out of memory");
    return ok;
}

struct sl_balancer *sl_balancer_new(const struct sl_config *cfg, char *err, size_t err_size)
{
    struct sl_balancer *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    b->ups = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *b->ups);
    if (!b->ups) {
        free(b);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        b->n_ups = i + 1; /* what to free if this one fails */
        if (!upstream_build(&b->ups[i], &cfg->upstreams[i], err, err_size)) {
            sl_balancer_free(b);
            return NULL;
        }
    }
    b->n_ups = cfg->n_upstreams;
    return b;
}

void sl_balancer_free(struct sl_balancer *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_ups; i++)
        upstream_free(&b->ups[i]);
    free(b->ups);
    free(b);
}

static const struct sl_lb_upstream *find_upstream(const struct sl_balancer *b,
                                                  const struct sl_upstream *up)
{
    if (!b || !up)
        return NULL;
    if (up->index < b->n_ups && b->ups[up->index].conf == up)
        return &b->ups[up->index];
    for (size_t i = 0; i < b->n_ups; i++)
        if (b->ups[i].conf == up)
            return &b->ups[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* picking                                                                   */

/* What one pick may choose from: the request's tried set and the
 * caller's filter (outlier ejection). */
struct pick_ctx {
    uint64_t tried;
    const struct sl_lb_filter *filter;
};

/* A candidate: usable, let through by the filter, and (first pass) not
 * tried by this request yet. */
static bool candidate(const struct sl_lb_target *t, const struct pick_ctx *pc, bool allow_tried)
{
    return target_usable(t) && (allow_tried || !(pc->tried & tried_bit(t))) &&
           (!pc->filter || pc->filter->usable(pc->filter->arg, t->index));
}

static struct sl_lb_target *pick_round_robin(struct sl_lb_upstream *u, const struct pick_ctx *pc)
{
    if (u->schedule_len == 0)
        return NULL;
    uint64_t start = atomic_fetch_add_explicit(&u->cursor, 1, memory_order_relaxed);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < u->schedule_len; k++) {
            struct sl_lb_target *t = &u->targets[u->schedule[(start + k) % u->schedule_len]];
            if (candidate(t, pc, pass == 1))
                return t;
        }
    }
    return NULL;
}

static struct sl_lb_target *pick_least_connections(struct sl_lb_upstream *u,
                                                   const struct pick_ctx *pc)
{
    size_t n = u->n_targets;
    if (n == 0)
        return NULL;
    /* equal loads: start at a rotating position so they share the work */
    uint64_t start = atomic_fetch_add_explicit(&u->cursor, 1, memory_order_relaxed);
    for (int pass = 0; pass < 2; pass++) {
        struct sl_lb_target *best = NULL;
        uint64_t best_load = 0;
        for (size_t k = 0; k < n; k++) {
            struct sl_lb_target *t = &u->targets[(start + k) % n];
            if (!candidate(t, pc, pass == 1))
                continue;
            long a = atomic_load_explicit(&t->health->active, memory_order_relaxed);
            uint64_t load = (uint64_t)(a > 0 ? a : 0) + 1;
            /* (a+1)/w < (b+1)/v  <=>  (a+1)*v < (b+1)*w */
            if (!best || load * best->conf->weight < best_load * t->conf->weight) {
                best = t;
                best_load = load;
            }
        }
        if (best)
            return best;
    }
    return NULL;
}

static struct sl_lb_target *pick_consistent_hashing(struct sl_lb_upstream *u,
                                                    const struct pick_ctx *pc, uint64_t hash)
{
    if (u->ring_len == 0)
        return NULL;
    size_t start = (size_t)(hash % u->ring_len);
    for (int pass = 0; pass < 2; pass++) {
        size_t idx = start;
        for (size_t k = 0; k < u->ring_len; k++) {
            uint32_t ti = u->ring[idx];
            if (ti != UINT32_MAX && candidate(&u->targets[ti], pc, pass == 1))
                return &u->targets[ti];
            idx = idx == 0 ? u->ring_len - 1 : idx - 1; /* Kong walks counter-clockwise */
        }
    }
    return NULL;
}

static double latency_score(const struct sl_lb_target *t, uint64_t now_ms)
{
    return ewma_now(t->health, now_ms, 0.0) / (double)t->conf->weight;
}

static struct sl_lb_target *pick_latency(struct sl_lb_upstream *u, const struct pick_ctx *pc)
{
    size_t n = u->n_targets;
    uint64_t now = sl_now_ms();
    for (int pass = 0; pass < 2; pass++) {
        size_t count = 0;
        for (size_t i = 0; i < n; i++)
            count += candidate(&u->targets[i], pc, pass == 1);
        if (count == 0)
            continue;
        /* the power of two random choices among the candidates */
        size_t a = (size_t)(lb_random() % count), b = a;
        if (count > 1) {
            b = (size_t)(lb_random() % (count - 1));
            if (b >= a)
                b++;
        }
        struct sl_lb_target *ta = NULL, *tb = NULL;
        for (size_t i = 0, k = 0; i < n; i++) {
            if (!candidate(&u->targets[i], pc, pass == 1))
                continue;
            if (k == a)
                ta = &u->targets[i];
            if (k == b)
                tb = &u->targets[i];
            k++;
        }
        return latency_score(tb, now) < latency_score(ta, now) ? tb : ta;
    }
    return NULL;
}

/* healthchecks.threshold: below that percentage of healthy weight the
 * whole upstream counts as down (Kong's "Balancer is unhealthy"). */
static bool upstream_above_threshold(const struct sl_lb_upstream *u)
{
    double threshold = u->conf->healthchecks.threshold;
    if (threshold <= 0 || u->total_weight == 0)
        return true;
    uint64_t healthy = 0;
    for (size_t i = 0; i < u->n_targets; i++)
        if (target_usable(&u->targets[i]))
            healthy += u->targets[i].conf->weight;
    return (double)healthy * 100.0 >= threshold * (double)u->total_weight;
}

const struct sl_target *sl_balancer_pick(const struct sl_balancer *b, const struct sl_upstream *up,
                                         struct sl_lb_state *st, const struct sl_lb_filter *filter)
{
    sl_balancer_release(st);
    const struct sl_lb_upstream *cu = find_upstream(b, up);
    if (!cu)
        return NULL;
    /* the counters inside are atomics: picking changes no layout */
    struct sl_lb_upstream *u = (struct sl_lb_upstream *)cu;
    st->up = u;
    if (!upstream_above_threshold(u))
        return NULL;
    struct sl_lb_target *t = NULL;
    struct pick_ctx pc = {st->tried, filter};
    switch (up->algorithm) {
    case SL_LB_ROUND_ROBIN:
        t = pick_round_robin(u, &pc);
        break;
    case SL_LB_LEAST_CONNECTIONS:
        t = pick_least_connections(u, &pc);
        break;
    case SL_LB_CONSISTENT_HASHING:
        /* no value to hash: Kong hashes "" (all such requests, one target) */
        t = pick_consistent_hashing(u, &pc, st->hash_set ? st->hash : sl_lb_hash_bytes("", 0));
        break;
    case SL_LB_LATENCY:
        t = pick_latency(u, &pc);
        break;
    }
    if (!t)
        return NULL;
    st->current = t;
    st->tried |= tried_bit(t);
    atomic_fetch_add_explicit(&t->health->active, 1, memory_order_relaxed);
    return t->conf;
}

void sl_balancer_release(struct sl_lb_state *st)
{
    if (st->current) {
        atomic_fetch_sub_explicit(&st->current->health->active, 1, memory_order_relaxed);
        st->current = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* the value to hash (Kong's get_value_to_hash)                              */

/* Bytes gathered for the hash, bounded. */
struct value_buf {
    char data[SL_HASH_VALUE_BUF];
    size_t len;
};

static void vb_add(struct value_buf *vb, const char *p, size_t n)
{
    size_t room = sizeof vb->data - vb->len;
    if (n > room)
        n = room;
    memcpy(vb->data + vb->len, p, n);
    vb->len += n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* application/x-www-form-urlencoded decoding, as ngx.req.get_uri_args(). */
static size_t url_decode(const char *in, size_t len, char *out, size_t out_size)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < out_size; i++) {
        if (in[i] == '+') {
            out[o++] = ' ';
        } else if (in[i] == '%' && i + 2 < len && hexval(in[i + 1]) >= 0 &&
                   hexval(in[i + 2]) >= 0) {
            out[o++] = (char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

/* Every value of a header, joined with ", " (nginx's $http_name). */
static bool value_header(const struct sl_lb_hash_input *in, const char *name, struct value_buf *vb)
{
    bool found = false;
    size_t name_len = name ? strlen(name) : 0;
    for (size_t i = 0; name && i < in->n_headers; i++) {
        const struct sl_http_header *h = &in->headers[i];
        if (h->name_len != name_len || strncasecmp(h->name, name, name_len) != 0)
            continue;
        if (found)
            vb_add(vb, ", ", 2);
        vb_add(vb, h->value, h->value_len);
        found = true;
    }
    return found;
}

static bool value_cookie(const struct sl_lb_hash_input *in, const char *name, struct value_buf *vb)
{
    size_t name_len = name ? strlen(name) : 0;
    for (size_t i = 0; name && i < in->n_headers; i++) {
        const struct sl_http_header *h = &in->headers[i];
        if (h->name_len != 6 || strncasecmp(h->name, "cookie", 6) != 0)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *pair_end = memchr(p, ';', (size_t)(end - p));
            if (!pair_end)
                pair_end = end;
            const char *eq = memchr(p, '=', (size_t)(pair_end - p));
            if (eq && (size_t)(eq - p) == name_len && memcmp(p, name, name_len) == 0) {
                vb_add(vb, eq + 1, (size_t)(pair_end - eq - 1));
                return true;
            }
            p = pair_end;
        }
    }
    return false;
}

static int compare_values(const void *a, const void *b)
{
    const struct value_buf *x = *(const struct value_buf *const *)a;
    const struct value_buf *y = *(const struct value_buf *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The values of one query argument, sorted and joined with "," (Kong);
 * an argument without "=" counts as "true", as Lua's tostring(true). */
static bool value_query_arg(const struct sl_lb_hash_input *in, const char *name,
                            struct value_buf *vb)
{
    if (!name || !in->query)
        return false;
    size_t name_len = strlen(name);
    struct value_buf *values[SL_HASH_MAX_VALUES];
    size_t n = 0;
    const char *p = in->query, *end = in->query + in->query_len;
    bool ok = true;
    while (p < end && n < SL_HASH_MAX_VALUES) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *arg_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(arg_end - p));
        const char *key_end = eq ? eq : arg_end;
        char key[256];
        size_t key_len = url_decode(p, (size_t)(key_end - p), key, sizeof key);
        if (key_len == name_len && memcmp(key, name, name_len) == 0) {
            struct value_buf *v = malloc(sizeof *v);
            if (!v) {
                ok = false;
                break;
            }
            if (eq)
                v->len = url_decode(eq + 1, (size_t)(arg_end - eq - 1), v->data, sizeof v->data);
            else
                v->len = (size_t)snprintf(v->data, sizeof v->data, "true");
            values[n++] = v;
        }
        p = amp ? amp + 1 : end;
    }
    if (ok && n > 1)
        qsort(values, n, sizeof values[0], compare_values);
    for (size_t i = 0; ok && i < n; i++) {
        if (i)
            vb_add(vb, ",", 1);
        vb_add(vb, values[i]->data, values[i]->len);
    }
    for (size_t i = 0; i < n; i++)
        free(values[i]);
    return ok && n > 0;
}

static bool value_to_hash(enum sl_hash_on on, const char *header, const char *cookie,
                          const char *query_arg, const char *capture,
                          const struct sl_lb_hash_input *in, struct value_buf *vb)
{
    switch (on) {
    case SL_HASH_NONE:
        return false;
    case SL_HASH_CONSUMER: {
        const struct sl_consumer *c = in->consumer;
        const char *id = !c ? NULL : c->id ? c->id : c->username ? c->username : c->custom_id;
        if (!id)
            return false;
        vb_add(vb, id, strlen(id));
        return true;
    }
    case SL_HASH_IP:
        if (!in->client_ip)
            return false;
        vb_add(vb, in->client_ip, strlen(in->client_ip));
        return true;
    case SL_HASH_HEADER:
        return value_header(in, header, vb);
    case SL_HASH_COOKIE:
        if (value_cookie(in, cookie, vb))
            return true;
        /* Kong makes up a value and sets it as a cookie on the response
         * (the proxy does, from made_up_cookie), so the client sticks */
        {
            char rnd[17];
            snprintf(rnd, sizeof rnd, "%016llx", (unsigned long long)lb_random());
            vb_add(vb, rnd, 16);
            if (in->made_up_cookie)
                memcpy(in->made_up_cookie, rnd, sizeof rnd);
        }
        return true;
    case SL_HASH_PATH:
        vb_add(vb, in->path, in->path_len);
        return true;
    case SL_HASH_QUERY_ARG:
        return value_query_arg(in, query_arg, vb);
    case SL_HASH_URI_CAPTURE: {
        /* a named group of the route's regex path (Kong: uri_captures) */
        long i = in->match ? sl_router_capture_by_name(in->match, capture) : -1;
        if (i < 0 || in->match->captures[i].start == SIZE_MAX ||
            in->match->captures[i].start + in->match->captures[i].len > in->path_len)
            return false;
        vb_add(vb, in->path + in->match->captures[i].start, in->match->captures[i].len);
        return true;
    }
    }
    return false;
}

bool sl_balancer_hash_request(const struct sl_upstream *up, const struct sl_lb_hash_input *in,
                              uint64_t *hash)
{
    if (!up || up->hash_on == SL_HASH_NONE)
        return false;
    struct value_buf *vb = malloc(sizeof *vb);
    if (!vb)
        return false;
    vb->len = 0;
    bool found = value_to_hash(up->hash_on, up->hash_on_header, up->hash_on_cookie,
                               up->hash_on_query_arg, up->hash_on_uri_capture, in, vb);
    if (!found) {
        vb->len = 0;
        found = value_to_hash(up->hash_fallback, up->hash_fallback_header, up->hash_on_cookie,
                              up->hash_fallback_query_arg, up->hash_fallback_uri_capture, in, vb);
    }
    if (found)
        *hash = sl_lb_hash_bytes(vb->data, vb->len);
    free(vb);
    return found;
}

/* ------------------------------------------------------------------------ */
/* inspection                                                                */

enum sl_lb_health sl_balancer_target_health(const struct sl_balancer *b,
                                            const struct sl_upstream *up, size_t index)
{
    const struct sl_lb_upstream *u = find_upstream(b, up);
    if (!u || index >= u->n_targets)
        return SL_LB_UNHEALTHY;
    return target_health(&u->targets[index]);
}

long sl_balancer_target_active(const struct sl_balancer *b, const struct sl_upstream *up,
                               size_t index)
{
    const struct sl_lb_upstream *u = find_upstream(b, up);
    if (!u || index >= u->n_targets)
        return -1;
    return atomic_load(&u->targets[index].health->active);
}

void sl_balancer_foreach_target(const struct sl_snapshot *snap,
                                void (*cb)(const char *upstream, const char *target,
                                           const char *address, bool healthy, void *arg),
                                void *arg)
{
    const struct sl_balancer *b = snap ? snap->balancer : NULL;
    for (size_t i = 0; b && i < b->n_ups; i++) {
        const struct sl_lb_upstream *u = &b->ups[i];
        for (size_t k = 0; k < u->n_targets; k++) {
            const struct sl_lb_target *t = &u->targets[k];
            enum sl_lb_health h = target_health(t);
            cb(u->conf->name, t->name, t->name, h == SL_LB_HEALTHY || h == SL_LB_MOSTLY_HEALTHY,
               arg);
        }
    }
}

size_t sl_balancer_n_upstreams(const struct sl_balancer *b)
{
    return b ? b->n_ups : 0;
}

const struct sl_lb_upstream *sl_balancer_upstream_at(const struct sl_balancer *b, size_t i)
{
    return &b->ups[i];
}

const struct sl_upstream *sl_lb_upstream_conf(const struct sl_lb_upstream *u)
{
    return u->conf;
}

size_t sl_lb_upstream_n_targets(const struct sl_lb_upstream *u)
{
    return u->n_targets;
}

struct sl_lb_target *sl_lb_upstream_target(const struct sl_lb_upstream *u, size_t i)
{
    return &u->targets[i];
}

const struct sl_target *sl_lb_target_conf(const struct sl_lb_target *t)
{
    return t->conf;
}

enum sl_lb_health sl_lb_target_health(const struct sl_lb_target *t)
{
    return target_health(t);
}
