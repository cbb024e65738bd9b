/*
 * Router benchmark: lookups per second with 10, 1,000 and 10,000 routes.
 *
 *   make -C build bench/router_bench && build/bench/router_bench [rounds]
 *
 * The routes are a mix like a real gateway's: mostly plain prefixes
 * (/svc-N/api), a tenth with an exact host, a tenth with a method, one in
 * twenty a regex path with a capture, one in twenty with a header. The
 * requests hit a random route (hit) or no route at all (miss). Each figure
 * is the median of the rounds; the machine is shared and noisy, so compare
 * figures of one run, not across runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "router.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static struct sl_config *make_config(int n)
{
    size_t cap = (size_t)n * 200 + 4096, len = 0;
    char *yaml = malloc(cap);
    if (yaml == NULL)
        return NULL;
    len += (size_t)snprintf(yaml + len, cap - len,
                            "_format_version: \"3.0\"\nservices:\n  - name: s\n"
                            "    url: http://127.0.0.1:1\n    routes:\n");
    for (int i = 0; i < n; i++) {
        if (i % 20 == 7)
            len += (size_t)snprintf(yaml + len, cap - len,
                                    "      - paths: [\"~/re-%d/(?<id>\\\\d+)$\"]\n", i);
        else
            len += (size_t)snprintf(yaml + len, cap - len, "      - paths: [/svc-%d/api]\n", i);
        if (i % 10 == 3)
            len += (size_t)snprintf(yaml + len, cap - len, "        hosts: [h%d.example.com]\n", i);
        if (i % 10 == 5)
            len += (size_t)snprintf(yaml + len, cap - len, "        methods: [GET]\n");
        if (i % 20 == 9)
            len +=
                (size_t)snprintf(yaml + len, cap - len, "        headers: {x-tenant: [t%d]}\n", i);
    }
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load_buffer(yaml, len, "bench.yml", "gateway", &err);
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err.text);
    free(yaml);
    return cfg;
}

struct req {
    char path[64], host[64], tenant[16];
    struct sl_http_header header;
};

static void make_request(struct req *q, int n, int i, bool hit)
{
    q->host[0] = '\0';
    snprintf(q->tenant, sizeof q->tenant, "t%d", i);
    q->header = (struct sl_http_header){"X-Tenant", 8, q->tenant, strlen(q->tenant), 0};
    if (!hit) {
        snprintf(q->path, sizeof q->path, "/nothing-%d/here", i);
        return;
    }
    i %= n;
    if (i % 20 == 7)
        snprintf(q->path, sizeof q->path, "/re-%d/%d", i, i * 7);
    else
        snprintf(q->path, sizeof q->path, "/svc-%d/api/users/%d", i, i);
    if (i % 10 == 3)
        snprintf(q->host, sizeof q->host, "h%d.example.com", i);
}

/* Lookups per second over `count` requests; checks every hit matched. */
static double measure(const struct sl_router *rt, const struct req *reqs, int count, bool hit)
{
    double t0 = now_s();
    int matched = 0;
    for (int i = 0; i < count; i++) {
        const struct req *q = &reqs[i];
        struct sl_router_request r = {.method = "GET",
                                      .method_len = 3,
                                      .host = q->host[0] ? q->host : NULL,
                                      .host_len = strlen(q->host),
                                      .path = q->path,
                                      .path_len = strlen(q->path),
                                      .headers = &q->header,
                                      .n_headers = 1};
        struct sl_router_match m;
        matched += sl_router_find(rt, &r, &m);
    }
    double dt = now_s() - t0;
    if ((hit && matched != count) || (!hit && matched != 0))
        fprintf(stderr, "router_bench: %d of %d %s matched\n", matched, count,
                hit ? "hits" : "misses");
    return count / dt;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1)
        rounds = 1;
    static const int sizes[] = {10, 1000, 10000};
    enum { COUNT = 200000 };
    struct req *reqs = malloc(COUNT * sizeof *reqs);
    if (reqs == NULL)
        return 1;
    printf("%8s %12s %16s %16s\n", "routes", "build ms", "hits/s (median)", "misses/s");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        struct sl_config *cfg = make_config(n);
        if (cfg == NULL)
            return 1;
        double t0 = now_s();
        struct sl_router *rt = sl_router_build(cfg);
        double build_ms = (now_s() - t0) * 1000;
        if (rt == NULL)
            return 1;
        double *hits = calloc((size_t)rounds, sizeof *hits);
        double *misses = calloc((size_t)rounds, sizeof *misses);
        unsigned seed = 42;
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < COUNT; i++) {
                seed = seed * 1103515245u + 12345u;
                make_request(&reqs[i], n, (int)((seed >> 8) % (unsigned)n), true);
            }
            hits[r] = measure(rt, reqs, COUNT, true);
            for (int i = 0; i < COUNT; i++)
                make_request(&reqs[i], n, i, false);
            misses[r] = measure(rt, reqs, COUNT, false);
        }
        qsort(hits, (size_t)rounds, sizeof *hits, cmp_double);
        qsort(misses, (size_t)rounds, sizeof *misses, cmp_double);
        printf("%8d %12.1f %16.0f %16.0f\n", n, build_ms, hits[rounds / 2], misses[rounds / 2]);
        free(hits);
        free(misses);
        sl_router_free(rt);
        sl_config_unref(cfg);
    }
    free(reqs);
    return 0;
}
