/*
 * Balancer: the pickers (round-robin, least-connections, consistent-hashing,
 * latency), Kong's hash input with its fallback, and the passive/active
 * health state machine. Configurations are built by hand: the tests do not
 * depend on the loader.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "config.h"
#include "numeric.h"
#include "server.h"
#include "unit.h"

#define MAX_TARGETS 16

static uint16_t passive_healthy[] = {200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                     300, 301, 302, 303, 304, 305, 306, 307, 308};
static uint16_t passive_unhealthy[] = {429, 500, 503};
static uint16_t active_healthy[] = {200, 302};
static uint16_t active_unhealthy[] = {429, 404, 500, 501, 502, 503, 504, 505};

struct fixture {
    struct sl_config cfg;
    struct sl_upstream up;
    struct sl_target targets[MAX_TARGETS];
    char hosts[MAX_TARGETS][32];
};

/* An upstream `name` with n targets 10.0.0.<i+1>:8000 of the given weights
 * and Kong's default health checks (all counters 0). */
static void fixture_init(struct fixture *f, const char *name, enum sl_lb_algorithm alg,
                         const uint32_t *weights, size_t n)
{
    memset(f, 0, sizeof *f);
    f->up.name = (char *)name;
    f->up.algorithm = alg;
    f->up.slots = 10000;
    struct sl_healthchecks *hc = &f->up.healthchecks;
    hc->active.timeout_ms = 1000;
    hc->active.concurrency = 10;
    hc->active.http_path = "/";
    hc->active.healthy.http_statuses = active_healthy;
    hc->active.healthy.n_http_statuses = sizeof active_healthy / sizeof active_healthy[0];
    hc->active.unhealthy.http_statuses = active_unhealthy;
    hc->active.unhealthy.n_http_statuses = sizeof active_unhealthy / sizeof active_unhealthy[0];
    hc->passive.healthy.http_statuses = passive_healthy;
    hc->passive.healthy.n_http_statuses = sizeof passive_healthy / sizeof passive_healthy[0];
    hc->passive.unhealthy.http_statuses = passive_unhealthy;
    hc->passive.unhealthy.n_http_statuses = sizeof passive_unhealthy / sizeof passive_unhealthy[0];
    ck_assert_uint_le(n, MAX_TARGETS);
    for (size_t i = 0; i < n; i++) {
        snprintf(f->hosts[i], sizeof f->hosts[i], "10.0.0.%zu", i + 1);
        f->targets[i].host = f->hosts[i];
        f->targets[i].port = 8000;
        f->targets[i].weight = weights[i];
        f->targets[i].upstream = &f->up;
        f->targets[i].index = i;
    }
    f->up.targets = f->targets;
    f->up.n_targets = n;
    f->cfg.upstreams = &f->up;
    f->cfg.n_upstreams = 1;
}

static struct sl_balancer *build(struct fixture *f)
{
    char err[256] = "";
    struct sl_balancer *b = sl_balancer_new(&f->cfg, err, sizeof err);
    ck_assert_msg(b != NULL, "%s", err);
    return b;
}

/* Index of the picked target, -1 when none; the pick is released. */
static int pick_once(struct sl_balancer *b, struct fixture *f, struct sl_lb_state *st)
{
    const struct sl_target *t = sl_balancer_pick(b, &f->up, st, NULL);
    sl_balancer_release(st);
    return t ? (int)(t - f->targets) : -1;
}

static int pick_fresh(struct sl_balancer *b, struct fixture *f)
{
    struct sl_lb_state st;
    memset(&st, 0, sizeof st);
    return pick_once(b, f, &st);
}

static int pick_hashed(struct sl_balancer *b, struct fixture *f, uint64_t hash)
{
    struct sl_lb_state st;
    memset(&st, 0, sizeof st);
    st.hash = hash;
    st.hash_set = true;
    return pick_once(b, f, &st);
}

/* Report `status` passively for target `index` (as the proxy would after a
 * pick of that target). */
static void report_status_for(struct sl_balancer *b, struct fixture *f, int index, int status)
{
    for (int tries = 0; tries < 1000; tries++) {
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        st.hash = sl_lb_hash_bytes(&tries, sizeof tries); /* spreads consistent-hashing */
        st.hash_set = true;
        const struct sl_target *t = sl_balancer_pick(b, &f->up, &st, NULL);
        if (t && t - f->targets == index) {
            sl_balancer_report_status(&st, status);
            sl_balancer_release(&st);
            return;
        }
        sl_balancer_release(&st);
    }
    ck_abort_msg("target %d was never picked", index);
}

static void teardown(void)
{
    sl_balancer_registry_sweep();
}

/* ---- round-robin ------------------------------------------------------- */

START_TEST(rr_distribution_follows_weights)
{
    struct fixture f;
    uint32_t w[] = {100, 50, 25};
    fixture_init(&f, "rr", SL_LB_ROUND_ROBIN, w, 3);
    struct sl_balancer *b = build(&f);
    int counts[3] = {0};
    for (int i = 0; i < 7000; i++) {
        int k = pick_fresh(b, &f);
        ck_assert_int_ge(k, 0);
        counts[k]++;
    }
    /* full periods: exactly 4:2:1 */
    ck_assert_int_eq(counts[0], 4000);
    ck_assert_int_eq(counts[1], 2000);
    ck_assert_int_eq(counts[2], 1000);
    /* smooth: any 7 consecutive picks hold each target per its weight,
     * never a burst of one target */
    int window[3] = {0};
    for (int i = 0; i < 7; i++)
        window[pick_fresh(b, &f)]++;
    ck_assert_int_eq(window[0], 4);
    ck_assert_int_eq(window[1], 2);
    ck_assert_int_eq(window[2], 1);
    sl_balancer_free(b);
}
END_TEST

START_TEST(rr_weight_zero_never_picked)
{
    struct fixture f;
    uint32_t w[] = {100, 0, 100};
    fixture_init(&f, "rr0", SL_LB_ROUND_ROBIN, w, 3);
    struct sl_balancer *b = build(&f);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_ne(pick_fresh(b, &f), 1);
    sl_balancer_free(b);

    uint32_t zero[] = {0, 0};
    fixture_init(&f, "rr00", SL_LB_ROUND_ROBIN, zero, 2);
    b = build(&f);
    ck_assert_int_eq(pick_fresh(b, &f), -1);
    sl_balancer_free(b);
}
END_TEST

START_TEST(retry_goes_to_another_target)
{
    enum sl_lb_algorithm algs[] = {SL_LB_ROUND_ROBIN, SL_LB_LEAST_CONNECTIONS,
                                   SL_LB_CONSISTENT_HASHING, SL_LB_LATENCY};
    for (size_t a = 0; a < 4; a++) {
        struct fixture f;
        uint32_t w[] = {100, 100, 100};
        fixture_init(&f, "retry", algs[a], w, 3);
        struct sl_balancer *b = build(&f);
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        st.hash = 42;
        st.hash_set = true;
        int seen[3] = {0};
        for (int i = 0; i < 3; i++) {
            const struct sl_target *t = sl_balancer_pick(b, &f.up, &st, NULL);
            ck_assert_ptr_nonnull(t);
            seen[t - f.targets]++;
        }
        /* three tries, three different targets */
        ck_assert_msg(seen[0] == 1 && seen[1] == 1 && seen[2] == 1, "algorithm %zu: %d %d %d", a,
                      seen[0], seen[1], seen[2]);
        /* all tried: a fourth try still gets one */
        ck_assert_ptr_nonnull(sl_balancer_pick(b, &f.up, &st, NULL));
        sl_balancer_release(&st);
        for (size_t i = 0; i < 3; i++)
            ck_assert_int_eq(sl_balancer_target_active(b, &f.up, i), 0);
        sl_balancer_free(b);
    }
}
END_TEST

/* ---- least-connections --------------------------------------------------- */

START_TEST(lc_prefers_least_loaded)
{
    struct fixture f;
    uint32_t w[] = {100, 100, 100};
    fixture_init(&f, "lc", SL_LB_LEAST_CONNECTIONS, w, 3);
    struct sl_balancer *b = build(&f);
    struct sl_lb_state held[3];
    memset(held, 0, sizeof held);
    int seen[3] = {0};
    for (int i = 0; i < 3; i++) {
        const struct sl_target *t = sl_balancer_pick(b, &f.up, &held[i], NULL);
        ck_assert_ptr_nonnull(t);
        seen[t - f.targets]++;
    }
    ck_assert(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
    /* one finishes: the next request goes where it left */
    int freed = (int)(held[1].current ? sl_lb_target_conf(held[1].current) - f.targets : -1);
    sl_balancer_release(&held[1]);
    for (int i = 0; i < 5; i++) {
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        const struct sl_target *t = sl_balancer_pick(b, &f.up, &st, NULL);
        ck_assert_int_eq((int)(t - f.targets), freed);
        sl_balancer_release(&st);
    }
    sl_balancer_release(&held[0]);
    sl_balancer_release(&held[2]);
    sl_balancer_free(b);
}
END_TEST

START_TEST(lc_weighted)
{
    struct fixture f;
    uint32_t w[] = {200, 100};
    fixture_init(&f, "lcw", SL_LB_LEAST_CONNECTIONS, w, 2);
    struct sl_balancer *b = build(&f);
    struct sl_lb_state held[30];
    memset(held, 0, sizeof held);
    for (int i = 0; i < 30; i++)
        ck_assert_ptr_nonnull(sl_balancer_pick(b, &f.up, &held[i], NULL));
    /* connections spread as the weights: 20 and 10 */
    ck_assert_int_eq(sl_balancer_target_active(b, &f.up, 0), 20);
    ck_assert_int_eq(sl_balancer_target_active(b, &f.up, 1), 10);
    for (int i = 0; i < 30; i++)
        sl_balancer_release(&held[i]);
    ck_assert_int_eq(sl_balancer_target_active(b, &f.up, 0), 0);
    sl_balancer_free(b);
}
END_TEST

/* ---- consistent-hashing ---------------------------------------------------- */

static uint64_t key_hash(int i)
{
    char key[32];
    int n = snprintf(key, sizeof key, "user-%d", i);
    return sl_lb_hash_bytes(key, (size_t)n);
}

START_TEST(ch_same_key_same_target)
{
    struct fixture f;
    uint32_t w[] = {100, 100, 100, 100};
    fixture_init(&f, "ch", SL_LB_CONSISTENT_HASHING, w, 4);
    struct sl_balancer *b = build(&f);
    int counts[4] = {0};
    for (int k = 0; k < 200; k++) {
        int first = pick_hashed(b, &f, key_hash(k));
        ck_assert_int_ge(first, 0);
        counts[first]++;
        for (int i = 0; i < 20; i++)
            ck_assert_int_eq(pick_hashed(b, &f, key_hash(k)), first);
    }
    /* and different keys do spread */
    for (int i = 0; i < 4; i++)
        ck_assert_int_gt(counts[i], 20);
    /* a rebuilt balancer (a reload) maps keys the same way */
    struct sl_balancer *b2 = build(&f);
    for (int k = 0; k < 200; k++)
        ck_assert_int_eq(pick_hashed(b2, &f, key_hash(k)), pick_hashed(b, &f, key_hash(k)));
    sl_balancer_free(b2);
    sl_balancer_free(b);
}
END_TEST

START_TEST(ch_removing_a_target_moves_about_one_nth)
{
    enum { N = 5, KEYS = 20000 };
    struct fixture f5, f4;
    uint32_t w[] = {100, 100, 100, 100, 100};
    fixture_init(&f5, "chm", SL_LB_CONSISTENT_HASHING, w, N);
    /* the same targets without the third one */
    fixture_init(&f4, "chm", SL_LB_CONSISTENT_HASHING, w, N - 1);
    strcpy(f4.hosts[2], "10.0.0.4");
    strcpy(f4.hosts[3], "10.0.0.5");
    struct sl_balancer *b5 = build(&f5), *b4 = build(&f4);
    int moved = 0, owned_by_removed = 0, share[N] = {0};
    for (int k = 0; k < KEYS; k++) {
        int before = pick_hashed(b5, &f5, key_hash(k));
        const char *host_before = f5.hosts[before];
        const char *host_after = f4.hosts[pick_hashed(b4, &f4, key_hash(k))];
        share[before]++;
        if (before == 2)
            owned_by_removed++;
        if (strcmp(host_before, host_after) != 0) {
            moved++;
            /* only the keys of the removed target move */
            ck_assert_int_eq(before, 2);
        }
    }
    ck_assert_int_eq(moved, owned_by_removed);
    /* about 1/5 of the keys */
    ck_assert_int_gt(moved, KEYS / N * 7 / 10);
    ck_assert_int_lt(moved, KEYS / N * 13 / 10);
    for (int i = 0; i < N; i++)
        ck_assert_msg(share[i] > KEYS / N * 7 / 10 && share[i] < KEYS / N * 13 / 10,
                      "target %d has %d keys", i, share[i]);
    sl_balancer_free(b5);
    sl_balancer_free(b4);
}
END_TEST

START_TEST(ch_weights_and_unhealthy_walk)
{
    struct fixture f;
    uint32_t w[] = {300, 100, 100, 0};
    fixture_init(&f, "chw", SL_LB_CONSISTENT_HASHING, w, 4);
    f.up.healthchecks.passive.unhealthy.http_failures = 1;
    struct sl_balancer *b = build(&f);
    enum { KEYS = 10000 };
    static int before[KEYS];
    int counts[4] = {0};
    for (int k = 0; k < KEYS; k++)
        counts[before[k] = pick_hashed(b, &f, key_hash(k))]++;
    ck_assert_int_eq(counts[3], 0); /* weight 0 */
    ck_assert_msg(counts[0] > 5400 && counts[0] < 6600, "weight 300 of 500: %d / 10000", counts[0]);
    /* target 0 unhealthy: its keys move to the others, theirs stay put */
    report_status_for(b, &f, 0, 500);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_UNHEALTHY);
    int to[4] = {0};
    for (int k = 0; k < KEYS; k++) {
        int now = pick_hashed(b, &f, key_hash(k));
        if (before[k] != 0)
            ck_assert_int_eq(now, before[k]);
        else
            to[now]++;
    }
    ck_assert_int_eq(to[0], 0);
    ck_assert_int_eq(to[3], 0);
    ck_assert_int_gt(to[1], 0);
    ck_assert_int_gt(to[2], 0);
    sl_balancer_free(b);
}
END_TEST

/* ---- latency --------------------------------------------------------------- */

START_TEST(latency_prefers_the_fast_target)
{
    struct fixture f;
    uint32_t w[] = {100, 100};
    fixture_init(&f, "lat", SL_LB_LATENCY, w, 2);
    struct sl_balancer *b = build(&f);
    /* feed the EWMA: target 0 answers in 200 ms, target 1 in 2 ms */
    for (int i = 0; i < 40; i++) {
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        const struct sl_target *t = sl_balancer_pick(b, &f.up, &st, NULL);
        ck_assert_ptr_nonnull(t);
        sl_balancer_report_latency(&st, t == &f.targets[0] ? 200000 : 2000);
        sl_balancer_release(&st);
    }
    int fast = 0;
    for (int i = 0; i < 100; i++)
        fast += pick_fresh(b, &f) == 1;
    ck_assert_int_ge(fast, 95);
    sl_balancer_free(b);
}
END_TEST

/* ---- the value to hash ------------------------------------------------------- */

static struct sl_http_header hdr(const char *name, const char *value)
{
    struct sl_http_header h = {name, strlen(name), value, strlen(value), SL_HDR_OTHER};
    return h;
}

START_TEST(hash_input_and_fallback)
{
    struct sl_upstream up;
    memset(&up, 0, sizeof up);
    up.hash_on = SL_HASH_HEADER;
    up.hash_on_header = "x-user";
    up.hash_fallback = SL_HASH_IP;
    struct sl_http_header with[] = {hdr("Host", "a"), hdr("X-User", "bob")};
    struct sl_lb_hash_input in = {
        .client_ip = "192.0.2.7", .headers = with, .n_headers = 2, .path = "/p", .path_len = 2};
    uint64_t h = 0;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("bob", 3));
    /* header absent: the fallback (the client address) */
    in.n_headers = 1;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("192.0.2.7", 9));
    /* no fallback: nothing to hash */
    up.hash_fallback = SL_HASH_NONE;
    ck_assert(!sl_balancer_hash_request(&up, &in, &h));
    /* two values of the header are one value, joined */
    struct sl_http_header twice[] = {hdr("x-user", "a"), hdr("X-USER", "b")};
    in.headers = twice;
    in.n_headers = 2;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("a, b", 4));
    up.hash_on = SL_HASH_NONE;
    ck_assert(!sl_balancer_hash_request(&up, &in, &h));
}
END_TEST

START_TEST(hash_input_kinds)
{
    struct sl_upstream up;
    memset(&up, 0, sizeof up);
    struct sl_http_header cookies[] = {hdr("Cookie", "a=1; sess=abc; z=9")};
    struct sl_consumer consumer = {.id = "c-1", .username = "alice"};
    struct sl_lb_hash_input in = {.client_ip = "192.0.2.7",
                                  .consumer = &consumer,
                                  .headers = cookies,
                                  .n_headers = 1,
                                  .path = "/orders/7",
                                  .path_len = 9,
                                  .query = "b=x&a=2&a=1&c",
                                  .query_len = 13};
    uint64_t h = 0;
    up.hash_on = SL_HASH_COOKIE;
    up.hash_on_cookie = "sess";
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("abc", 3));
    up.hash_on = SL_HASH_PATH;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("/orders/7", 9));
    up.hash_on = SL_HASH_CONSUMER;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("c-1", 3));
    in.consumer = NULL; /* no consumer, no fallback: nothing */
    ck_assert(!sl_balancer_hash_request(&up, &in, &h));
    /* query args: the values sorted, joined with "," (Kong) */
    up.hash_on = SL_HASH_QUERY_ARG;
    up.hash_on_query_arg = "a";
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("1,2", 3));
    up.hash_on_query_arg = "c"; /* present without a value: Lua's true */
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("true", 4));
    up.hash_on_query_arg = "missing";
    up.hash_fallback = SL_HASH_PATH;
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("/orders/7", 9));
    /* uri_capture is not available yet: the fallback */
    up.hash_on = SL_HASH_URI_CAPTURE;
    up.hash_on_uri_capture = "id";
    ck_assert(sl_balancer_hash_request(&up, &in, &h));
    ck_assert_uint_eq(h, sl_lb_hash_bytes("/orders/7", 9));
}
END_TEST

/* ---- health -------------------------------------------------------------------- */

START_TEST(passive_http_failures_mark_unhealthy)
{
    struct fixture f;
    uint32_t w[] = {100, 100};
    fixture_init(&f, "ph", SL_LB_ROUND_ROBIN, w, 2);
    f.up.healthchecks.passive.unhealthy.http_failures = 3;
    struct sl_balancer *b = build(&f);
    report_status_for(b, &f, 0, 500);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_MOSTLY_HEALTHY);
    report_status_for(b, &f, 0, 503);
    /* a success does not reset the failures while healthy.successes is 0 (Kong) */
    report_status_for(b, &f, 0, 200);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_MOSTLY_HEALTHY);
    /* 404 is in neither list */
    report_status_for(b, &f, 0, 404);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_MOSTLY_HEALTHY);
    report_status_for(b, &f, 0, 429);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_UNHEALTHY);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(pick_fresh(b, &f), 1);
    /* the other one fails too: no peer at all */
    for (int i = 0; i < 3; i++)
        report_status_for(b, &f, 1, 500);
    ck_assert_int_eq(pick_fresh(b, &f), -1);
    sl_balancer_free(b);
}
END_TEST

START_TEST(passive_successes_reset_failures)
{
    struct fixture f;
    uint32_t w[] = {100};
    fixture_init(&f, "ps", SL_LB_ROUND_ROBIN, w, 1);
    f.up.healthchecks.passive.unhealthy.http_failures = 2;
    f.up.healthchecks.passive.healthy.successes = 1;
    struct sl_balancer *b = build(&f);
    for (int i = 0; i < 10; i++) {
        report_status_for(b, &f, 0, 500);
        report_status_for(b, &f, 0, 200); /* resets: never two failures in a row */
    }
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_HEALTHY);
    sl_balancer_free(b);
}
END_TEST

START_TEST(passive_tcp_and_timeouts)
{
    struct fixture f;
    uint32_t w[] = {100, 100};
    fixture_init(&f, "pt", SL_LB_ROUND_ROBIN, w, 2);
    f.up.healthchecks.passive.unhealthy.tcp_failures = 2;
    struct sl_balancer *b = build(&f);
    /* timeouts 0: that check is off */
    for (int i = 0; i < 20; i++) {
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        ck_assert_ptr_nonnull(sl_balancer_pick(b, &f.up, &st, NULL));
        sl_balancer_report_timeout(&st);
        sl_balancer_release(&st);
    }
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 0), SL_LB_HEALTHY);
    ck_assert_int_eq(sl_balancer_target_health(b, &f.up, 1), SL_LB_HEALTHY);
    for (int i = 0; i < 4; i++) {
        struct sl_lb_state st;
        memset(&st, 0, sizeof st);
        ck_assert_ptr_nonnull(sl_balancer_pick(b, &f.up, &st, NULL));
        sl_balancer_report_tcp_failure(&st);
        sl_balancer_release(&st);
    }
    ck_assert_int_eq(pick_fresh(b, &f), -1);
    sl_balancer_free(b);
}
END_TEST

START_TEST(active_checks_state_machine)
{
    struct fixture f;
    uint32_t w[] = {100};
    fixture_init(&f, "ac", SL_LB_ROUND_ROBIN, w, 1);
    f.up.healthchecks.active.unhealthy.http_failures = 2;
    f.up.healthchecks.active.unhealthy.tcp_failures = 1;
    f.up.healthchecks.active.healthy.successes = 2;
    struct sl_balancer *b = build(&f);
    struct sl_lb_target *t = sl_lb_upstream_target(sl_balancer_upstream_at(b, 0), 0);
    sl_lb_target_active_status(t, 500);
    ck_assert_int_eq(sl_lb_target_health(t), SL_LB_MOSTLY_HEALTHY);
    sl_lb_target_active_status(t, 0); /* an unreadable answer counts as an http failure */
    ck_assert_int_eq(sl_lb_target_health(t), SL_LB_UNHEALTHY);
    ck_assert_int_eq(pick_fresh(b, &f), -1);
    sl_lb_target_active_status(t, 200);
    ck_assert_int_eq(sl_lb_target_health(t), SL_LB_MOSTLY_UNHEALTHY);
    ck_assert_int_eq(pick_fresh(b, &f), -1); /* not yet */
    sl_lb_target_active_status(t, 302);
    ck_assert_int_eq(sl_lb_target_health(t), SL_LB_HEALTHY);
    ck_assert_int_eq(pick_fresh(b, &f), 0);
    sl_lb_target_active_tcp_failure(t);
    ck_assert_int_eq(sl_lb_target_health(t), SL_LB_UNHEALTHY);
    sl_balancer_free(b);
}
END_TEST

START_TEST(health_survives_rebuild_of_same_upstream)
{
    struct fixture f;
    uint32_t w[] = {100, 100};
    fixture_init(&f, "keep", SL_LB_ROUND_ROBIN, w, 2);
    f.up.healthchecks.passive.unhealthy.http_failures = 1;
    struct sl_balancer *b = build(&f);
    report_status_for(b, &f, 1, 500);
    struct sl_balancer *b2 = build(&f); /* a reload while b still serves */
    sl_balancer_free(b);
    sl_balancer_registry_sweep();
    ck_assert_int_eq(sl_balancer_target_health(b2, &f.up, 1), SL_LB_UNHEALTHY);
    sl_balancer_free(b2);
    /* other health checks: a fresh start */
    f.up.healthchecks.passive.unhealthy.http_failures = 2;
    struct sl_balancer *b3 = build(&f);
    ck_assert_int_eq(sl_balancer_target_health(b3, &f.up, 1), SL_LB_HEALTHY);
    sl_balancer_free(b3);
}
END_TEST

START_TEST(threshold_takes_the_upstream_down)
{
    struct fixture f;
    uint32_t w[] = {100, 100};
    fixture_init(&f, "thr", SL_LB_ROUND_ROBIN, w, 2);
    f.up.healthchecks.passive.unhealthy.http_failures = 1;
    f.up.healthchecks.threshold = 60;
    struct sl_balancer *b = build(&f);
    ck_assert_int_ge(pick_fresh(b, &f), 0);
    report_status_for(b, &f, 0, 500); /* 50% healthy < 60% */
    ck_assert_int_eq(pick_fresh(b, &f), -1);
    sl_balancer_free(b);
}
END_TEST

struct seen_targets {
    int n, healthy;
    char last_upstream[32];
};

static void count_target(const char *upstream, const char *target, const char *address,
                         bool healthy, void *arg)
{
    struct seen_targets *s = arg;
    s->n++;
    s->healthy += healthy;
    snprintf(s->last_upstream, sizeof s->last_upstream, "%s", upstream);
    ck_assert_str_eq(target, address);
    ck_assert_int_eq(strncmp(target, "10.0.0.", 7), 0);
}

START_TEST(foreach_target_for_metrics)
{
    struct fixture f;
    uint32_t w[] = {100, 100, 100};
    fixture_init(&f, "metrics", SL_LB_ROUND_ROBIN, w, 3);
    f.up.healthchecks.passive.unhealthy.http_failures = 1;
    struct sl_balancer *b = build(&f);
    report_status_for(b, &f, 2, 503);
    struct sl_snapshot snap;
    memset(&snap, 0, sizeof snap);
    snap.balancer = b;
    struct seen_targets s = {0};
    sl_balancer_foreach_target(&snap, count_target, &s);
    ck_assert_int_eq(s.n, 3);
    ck_assert_int_eq(s.healthy, 2);
    ck_assert_str_eq(s.last_upstream, "metrics");
    sl_balancer_free(b);
}
END_TEST

/* Distance in units in the last place between two doubles of the same sign. */
static int64_t ulp_distance(double a, double b)
{
    int64_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    if ((x < 0) != (y < 0))
        return a == b ? 0 : INT64_MAX;
    return x > y ? x - y : y - x;
}

/* The balancer's exp and log (numeric.c, no libm) against libm's. */
START_TEST(sl_exp_matches_libm)
{
    int64_t worst = 0;
    double worst_x = 0;
    for (long i = 0; i <= 1000000; i++) {
        double x = -745.13 + (709.78 + 745.13) * (double)i / 1000000.0;
        int64_t d = ulp_distance(sl_exp(x), exp(x));
        if (d > worst) {
            worst = d;
            worst_x = x;
        }
    }
    ck_assert_msg(worst <= 4, "sl_exp is %lld ulp off at %.17g", (long long)worst, worst_x);
    ck_assert(sl_exp(0.0) == 1.0);
    ck_assert(sl_exp(710.0) == INFINITY && exp(710.0) == INFINITY);
    ck_assert(sl_exp(-746.0) == 0.0 && exp(-746.0) == 0.0);
    ck_assert(sl_exp(-745.0) > 0.0); /* subnormal, as libm's */
    ck_assert(ulp_distance(sl_exp(-745.0), exp(-745.0)) <= 1);
    ck_assert(isnan(sl_exp(NAN)));
    ck_assert(sl_exp(INFINITY) == INFINITY);
    ck_assert(sl_exp(-INFINITY) == 0.0);
}
END_TEST

START_TEST(sl_ln_matches_libm)
{
    int64_t worst = 0;
    double worst_x = 0;
    uint64_t state = 88172645463325252ull; /* xorshift64: any finite positive double */
    for (long i = 0; i < 1000000; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        uint64_t bits = state & 0x7fefffffffffffffull;
        double x;
        memcpy(&x, &bits, sizeof x);
        if (x == 0)
            continue;
        int64_t d = ulp_distance(sl_ln(x), log(x));
        if (d > worst) {
            worst = d;
            worst_x = x;
        }
    }
    for (long i = -100000; i <= 100000; i++) { /* around 1, where ln x is small */
        double x = 1.0 + (double)i * 1e-12;
        int64_t d = ulp_distance(sl_ln(x), log(x));
        if (d > worst) {
            worst = d;
            worst_x = x;
        }
    }
    ck_assert_msg(worst <= 4, "sl_ln is %lld ulp off at %.17g", (long long)worst, worst_x);
    ck_assert(sl_ln(1.0) == 0.0);
    ck_assert(ulp_distance(sl_ln(4.9e-324), log(4.9e-324)) <= 1); /* subnormal */
    ck_assert(sl_ln(0.0) == -INFINITY);
    ck_assert(isnan(sl_ln(-1.0)));
    ck_assert(isnan(sl_ln(NAN)));
    ck_assert(sl_ln(INFINITY) == INFINITY);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("balancer");
    TCase *tc = tcase_create("pickers");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, rr_distribution_follows_weights);
    tcase_add_test(tc, rr_weight_zero_never_picked);
    tcase_add_test(tc, retry_goes_to_another_target);
    tcase_add_test(tc, lc_prefers_least_loaded);
    tcase_add_test(tc, lc_weighted);
    tcase_add_test(tc, ch_same_key_same_target);
    tcase_add_test(tc, ch_removing_a_target_moves_about_one_nth);
    tcase_add_test(tc, ch_weights_and_unhealthy_walk);
    tcase_add_test(tc, latency_prefers_the_fast_target);
    suite_add_tcase(s, tc);
    TCase *th = tcase_create("hash");
    tcase_add_test(th, hash_input_and_fallback);
    tcase_add_test(th, hash_input_kinds);
    suite_add_tcase(s, th);
    TCase *hc = tcase_create("health");
    tcase_add_checked_fixture(hc, NULL, teardown);
    tcase_add_test(hc, passive_http_failures_mark_unhealthy);
    tcase_add_test(hc, passive_successes_reset_failures);
    tcase_add_test(hc, passive_tcp_and_timeouts);
    tcase_add_test(hc, active_checks_state_machine);
    tcase_add_test(hc, health_survives_rebuild_of_same_upstream);
    tcase_add_test(hc, threshold_takes_the_upstream_down);
    tcase_add_test(hc, foreach_target_for_metrics);
    suite_add_tcase(s, hc);
    TCase *tn = tcase_create("numeric");
    tcase_add_test(tn, sl_exp_matches_libm);
    tcase_add_test(tn, sl_ln_matches_libm);
    suite_add_tcase(s, tn);
    return s;
}

SL_UNIT_MAIN
