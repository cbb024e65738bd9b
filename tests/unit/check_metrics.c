/*
 * Metrics (core/metrics.c): label escaping, histogram buckets, and the
 * bound on series (a flood of distinct labels lands in one overflow series).
 */
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "server.h"
#include "unit.h"

START_TEST(test_escape)
{
    char out[64];
    ck_assert_int_eq(sl_metrics_escape_label("plain", out, sizeof out), 5);
    ck_assert_str_eq(out, "plain");
    ck_assert_int_gt(sl_metrics_escape_label("a\"b\\c\nd", out, sizeof out), 0);
    ck_assert_str_eq(out, "a\\\"b\\\\c\\nd");
    ck_assert_int_eq(sl_metrics_escape_label("toolong", out, 4), -1);
}
END_TEST

START_TEST(test_histogram_buckets)
{
    struct sl_histogram hist;
    memset(&hist, 0, sizeof hist);
    sl_histogram_observe(&hist, 500);       /* 0.0005 s -> le 0.001 */
    sl_histogram_observe(&hist, 1000);      /* exactly 0.001: le 0.001 (upper bound inclusive) */
    sl_histogram_observe(&hist, 70000);     /* 0.07 -> le 0.1 */
    sl_histogram_observe(&hist, 120000000); /* 120 s -> +Inf */
    ck_assert_uint_eq(atomic_load(&hist.counts[0]), 2);
    ck_assert_uint_eq(atomic_load(&hist.counts[5]), 1);
    ck_assert_uint_eq(atomic_load(&hist.counts[SL_METRICS_N_BUCKETS]), 1);
    ck_assert_uint_eq(atomic_load(&hist.sum_us), 500 + 1000 + 70000 + 120000000);
}
END_TEST

/* Render a fake server's metrics with one worker table. */
static char *render(struct sl_metrics *m)
{
    struct sl_worker worker;
    memset(&worker, 0, sizeof worker);
    worker.metrics = m;
    struct sl_server srv;
    memset(&srv, 0, sizeof srv);
    srv.workers = &worker;
    srv.n_workers = 1;
    struct evbuffer *out = evbuffer_new();
    sl_metrics_render(&srv, NULL, out);
    size_t n = evbuffer_get_length(out);
    char *text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    return text;
}

START_TEST(test_series_and_overflow)
{
    struct sl_metrics *m = sl_metrics_new();
    ck_assert_ptr_nonnull(m);
    sl_metrics_observe(m, NULL, "svc", "r1", 200, 10, 100, 2000, 1500);
    sl_metrics_observe(m, NULL, "svc", "r1", 200, 10, 100, 2000, 1500);
    sl_metrics_observe(m, NULL, NULL, NULL, 404, 10, 50, 100, 0);
    char *text = render(m);
    ck_assert_ptr_nonnull(strstr(text, "sluice_http_requests_total{service=\"svc\",route=\"r1\","
                                       "code=\"200\"} 2\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "sluice_http_requests_total{service=\"\",route=\"\",code=\"404\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "sluice_upstream_latency_seconds_count{service=\"svc\","
                                       "route=\"r1\"} 2\n"));
    /* no upstream answer: no upstream latency sample */
    ck_assert_ptr_nonnull(
        strstr(text, "sluice_upstream_latency_seconds_count{service=\"\",route=\"\"} 0\n"));
    free(text);
    /* thousands of distinct routes: the table stays bounded */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "r-%d", i);
        sl_metrics_observe(m, NULL, "svc", name, 200, 1, 1, 10, 5);
    }
    text = render(m);
    ck_assert_ptr_nonnull(strstr(text, "sluice_http_requests_total{service=\"_other\","
                                       "route=\"_other\",code=\"_other\"}"));
    size_t series = 0;
    for (const char *p = text; (p = strstr(p, "sluice_http_requests_total{")) != NULL; p++)
        series++;
    ck_assert_uint_le(series, 513); /* the table's slots + the overflow series */
    free(text);
    sl_metrics_free(m);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_escape);
    tcase_add_test(tc, test_histogram_buckets);
    tcase_add_test(tc, test_series_and_overflow);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
