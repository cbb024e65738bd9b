/*
 * rate-limiting (Kong's, PRIORITY 910): limit how many requests an
 * identifier (consumer, credential, ip, service, header or path) may make
 * per second, minute, hour, day, month and year.
 *
 * Kong's config, headers, 429 body and UTC calendar windows; two policies:
 *
 *  local  Counters in one table shared by every worker of the process:
 *         64-bit words [window 16 | tag 16 | count 32] changed only by
 *         compare-and-swap, so a request is admitted only while the count is
 *         below the limit: N concurrent requests against a limit L admit
 *         min(N, L) (with several periods, a request refused by one period
 *         gives back what it took from the others). The table has a fixed
 *         size; a slot of a past window is taken over by the next key.
 *  redis  One round trip per request: one Lua script (EVALSHA, NOSCRIPT
 *         answered with EVAL) checks every period and counts only an
 *         admitted request, atomically, for all gateway replicas. hiredis'
 *         asynchronous API on the worker's event loop, one connection per
 *         worker, AUTH/SELECT on connect, reconnect with backoff,
 *         redis.timeout per request. Redis down or slow: fault_tolerant
 *         passes the request without headers, else 500.
 *
 * `algorithm: sliding` (ours) counts a sliding window: the previous
 * window's count weighted by how much of it is still inside the window,
 * plus the current one, so no burst of twice the limit around a boundary.
 */
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "plugins.h"

enum period { P_SECOND, P_MINUTE, P_HOUR, P_DAY, P_MONTH, P_YEAR, N_PERIODS };
static const char *const period_keys[N_PERIODS] = {"second", "minute", "hour",
                                                   "day",    "month",  "year"};
static const char *const period_names[N_PERIODS] = {"Second", "Minute", "Hour",
                                                    "Day",    "Month",  "Year"};

enum limit_by { BY_CONSUMER, BY_CREDENTIAL, BY_IP, BY_SERVICE, BY_HEADER, BY_PATH };

struct rl_conf {
    /* Kong's key scope: the route and service the instance is attached to
     * (not the request's), so a service-wide limit is shared by its routes */
    char scope[256];
    long long limits[N_PERIODS]; /* 0: not limited */
    enum limit_by limit_by;
    const char *header_name, *path;
    bool redis, sliding;
    bool fault_tolerant, hide_client_headers;
    int error_code;
    const char *error_message;
    /* redis */
    const char *redis_host, *redis_username, *redis_password;
    int redis_port, redis_database;
    long long redis_timeout_ms;
    double sync_rate; /* -1: one round trip per request; else seconds between syncs */
};

/* process-wide counters for /metrics */
static atomic_uint_fast64_t limited_total, redis_errors_total, redis_fault_passed_total;
#define RL_LAT_BUCKETS 10
static const double lat_bounds[RL_LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                  0.025,  0.05,  0.1,    0.25,  0.5};
static atomic_uint_fast64_t lat_counts[RL_LAT_BUCKETS + 1], lat_sum_us, lat_n;

/* ------------------------------------------------------------------------ */
/* configuration                                                             */

/* A route or service as the counters name it: its id, else its name (NULL
 * when it has neither, or for no entity). */
static const char *route_ref(const struct sl_route *route)
{
    const char *id = sl_plugin_route_id(route);
    return id ? id : sl_plugin_route_name(route);
}

static const char *service_ref(const struct sl_service *service)
{
    const char *id = sl_plugin_service_id(service);
    return id ? id : sl_plugin_service_name(service);
}

static bool rl_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                     struct sl_config_error *err)
{
    static const char *const known[] = {"second",
                                        "minute",
                                        "hour",
                                        "day",
                                        "month",
                                        "year",
                                        "limit_by",
                                        "header_name",
                                        "path",
                                        "policy",
                                        "fault_tolerant",
                                        "hide_client_headers",
                                        "error_code",
                                        "error_message",
                                        "sync_rate",
                                        "redis",
                                        "redis_host",
                                        "redis_port",
                                        "redis_password",
                                        "redis_username",
                                        "redis_database",
                                        "redis_timeout",
                                        "redis_ssl",
                                        "redis_ssl_verify",
                                        "redis_server_name",
                                        "algorithm",
                                        NULL};
    if (!sl_plugin_config_known_keys(pc, cfg, known, err))
        return false;
    struct rl_conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    c->fault_tolerant = true;
    const char *route = route_ref(pc->route), *service = service_ref(pc->service);
    snprintf(c->scope, sizeof c->scope, "%s:%s", route ? route : "", service ? service : "");
    long long error_code = 429, port = 6379, database = 0, timeout = 2000;
    c->error_message = "API rate limit exceeded";
    const char *limit_by = "consumer", *policy = "local", *algorithm = "fixed";
    const struct sl_conf_value *cv = pc->config;
    bool ssl = false, ssl_verify = false;
    const char *server_name = NULL;
    bool ok = true;
    for (int p = 0; p < N_PERIODS && ok; p++)
        ok = sl_plugin_config_int(pc, cfg, period_keys[p], 1, (long long)UINT32_MAX - 1,
                                  &c->limits[p], err);
    ok = ok && sl_plugin_config_string(pc, cfg, "limit_by", &limit_by, NULL, err) &&
         sl_plugin_config_string(pc, cfg, "header_name", &c->header_name, NULL, err) &&
         sl_plugin_config_string(pc, cfg, "path", &c->path, NULL, err) &&
         sl_plugin_config_string(pc, cfg, "policy", &policy, NULL, err) &&
         sl_plugin_config_bool(pc, cfg, "fault_tolerant", &c->fault_tolerant, err) &&
         sl_plugin_config_bool(pc, cfg, "hide_client_headers", &c->hide_client_headers, err) &&
         sl_plugin_config_int(pc, cfg, "error_code", 0, 999, &error_code, err) &&
         sl_plugin_config_string(pc, cfg, "error_message", &c->error_message, NULL, err) &&
         sl_plugin_config_string(pc, cfg, "algorithm", &algorithm, NULL, err) &&
         /* the flat names Kong still reads */
         sl_plugin_config_string(pc, cfg, "redis_host", &c->redis_host, NULL, err) &&
         sl_plugin_config_int(pc, cfg, "redis_port", 0, 65535, &port, err) &&
         sl_plugin_config_string(pc, cfg, "redis_password", &c->redis_password, NULL, err) &&
         sl_plugin_config_string(pc, cfg, "redis_username", &c->redis_username, NULL, err) &&
         sl_plugin_config_int(pc, cfg, "redis_database", 0, 1000000, &database, err) &&
         sl_plugin_config_int(pc, cfg, "redis_timeout", 0, 2147483646, &timeout, err) &&
         sl_plugin_config_bool(pc, cfg, "redis_ssl", &ssl, err) &&
         sl_plugin_config_bool(pc, cfg, "redis_ssl_verify", &ssl_verify, err) &&
         sl_plugin_config_string(pc, cfg, "redis_server_name", &server_name, NULL, err);
    if (!ok)
        goto fail;
    const struct sl_conf_value *redis = cv ? sl_conf_get(cv, "redis") : NULL;
    if (redis && redis->type == SL_CONF_MAP) {
        /* the `redis` record (Kong 3.6+) over the flat names */
        for (size_t i = 0; i < redis->n_items; i++) {
            const char *k = redis->keys[i]->text;
            const struct sl_conf_value *v = redis->items[i];
            if (v->type == SL_CONF_NULL)
                continue;
            bool is_str = v->type == SL_CONF_STRING, is_int = v->type == SL_CONF_INT;
            bool is_bool = v->type == SL_CONF_BOOL;
            if (strcmp(k, "host") == 0 && is_str)
                c->redis_host = v->text;
            else if (strcmp(k, "port") == 0 && is_int && v->integer >= 0 && v->integer <= 65535)
                port = v->integer;
            else if (strcmp(k, "password") == 0 && is_str)
                c->redis_password = v->text;
            else if (strcmp(k, "username") == 0 && is_str)
                c->redis_username = v->text;
            else if (strcmp(k, "database") == 0 && is_int && v->integer >= 0)
                database = v->integer;
            else if (strcmp(k, "timeout") == 0 && is_int && v->integer >= 0)
                timeout = v->integer;
            else if (strcmp(k, "ssl") == 0 && is_bool)
                ssl = v->boolean;
            else if (strcmp(k, "ssl_verify") == 0 && is_bool)
                ssl_verify = v->boolean;
            else if (strcmp(k, "server_name") == 0 && is_str)
                server_name = v->text;
            else {
                sl_plugin_config_error(err, cfg, pc, v,
                                       "config.redis.%s: unknown field or "
                                       "wrong type",
                                       k);
                goto fail;
            }
        }
    } else if (redis && redis->type != SL_CONF_NULL) {
        sl_plugin_config_error(err, cfg, pc, redis, "config.redis: expected a map");
        goto fail;
    }
    (void)ssl_verify;
    (void)server_name;
    bool any = false;
    for (int p = 0; p < N_PERIODS; p++) {
        any = any || c->limits[p] > 0;
        for (int q = p + 1; q < N_PERIODS; q++)
            if (c->limits[p] > 0 && c->limits[q] > 0 && c->limits[q] < c->limits[p]) {
                /* Kong's check and words */
                sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, period_keys[q]),
                                       "The limit for %s(%.1f) cannot be lower than the limit "
                                       "for %s(%.1f)",
                                       period_keys[q], (double)c->limits[q], period_keys[p],
                                       (double)c->limits[p]);
                goto fail;
            }
    }
    if (!any) {
        sl_plugin_config_error(err, cfg, pc, NULL,
                               "at least one of these fields must be non-empty: 'config.second', "
                               "'config.minute', 'config.hour', 'config.day', 'config.month', "
                               "'config.year'");
        goto fail;
    }
    static const struct {
        const char *name;
        enum limit_by by;
    } bys[] = {{"consumer", BY_CONSUMER}, {"credential", BY_CREDENTIAL}, {"ip", BY_IP},
               {"service", BY_SERVICE},   {"header", BY_HEADER},         {"path", BY_PATH}};
    bool found = false;
    for (size_t i = 0; i < sizeof bys / sizeof bys[0]; i++)
        if (strcmp(limit_by, bys[i].name) == 0) {
            c->limit_by = bys[i].by;
            found = true;
        }
    if (!found) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "limit_by"),
                               "config.limit_by: expected one of: consumer, credential, ip, "
                               "service, header, path");
        goto fail;
    }
    if (c->limit_by == BY_HEADER && (c->header_name == NULL || *c->header_name == '\0')) {
        sl_plugin_config_error(err, cfg, pc, NULL, "config.header_name: required field missing");
        goto fail;
    }
    if (c->limit_by == BY_PATH && (c->path == NULL || c->path[0] != '/')) {
        sl_plugin_config_error(err, cfg, pc, NULL,
                               "config.path: required field missing (a path starting with /)");
        goto fail;
    }
    if (strcmp(policy, "redis") == 0) {
        c->redis = true;
        if (c->redis_host == NULL || *c->redis_host == '\0') {
            sl_plugin_config_error(err, cfg, pc, NULL,
                                   "config.redis.host: required field missing (policy redis)");
            goto fail;
        }
        if (ssl) {
            sl_plugin_config_error(err, cfg, pc, NULL,
                                   "config.redis.ssl is not supported yet (hiredis 0.14)");
            goto fail;
        }
    } else if (strcmp(policy, "cluster") == 0) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "policy"),
                               "config.policy: 'cluster' needs Kong's database; sluice is "
                               "DB-less: use 'local' or 'redis'");
        goto fail;
    } else if (strcmp(policy, "local") != 0) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "policy"),
                               "config.policy: expected one of: local, cluster, redis");
        goto fail;
    }
    const struct sl_conf_value *sr = cv ? sl_conf_get(cv, "sync_rate") : NULL;
    c->sync_rate = -1;
    if (sr && sr->type != SL_CONF_NULL) {
        if (sr->type != SL_CONF_INT && sr->type != SL_CONF_FLOAT) {
            sl_plugin_config_error(err, cfg, pc, sr, "config.sync_rate: expected a number");
            goto fail;
        }
        c->sync_rate = sr->number;
        /* Kong: -1 (synchronous), or at least 0.02 s, and only with a
         * central store (redis here) */
        if (c->sync_rate != -1 && (c->sync_rate < 0.02 || c->sync_rate > 3600)) {
            sl_plugin_config_error(err, cfg, pc, sr,
                                   "config.sync_rate: -1, or between 0.02 and 3600 seconds");
            goto fail;
        }
        if (c->sync_rate != -1 && !c->redis) {
            sl_plugin_config_error(err, cfg, pc, sr,
                                   "config.sync_rate: only with policy redis (local counts are "
                                   "exact already)");
            goto fail;
        }
    }
    if (strcmp(algorithm, "sliding") == 0) {
        c->sliding = true;
    } else if (strcmp(algorithm, "fixed") != 0) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "algorithm"),
                               "config.algorithm: expected one of: fixed, sliding");
        goto fail;
    }
    if (error_code < 100 || error_code > 599) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "error_code"),
                               "config.error_code: value should be between 100 and 599");
        goto fail;
    }
    c->error_code = (int)error_code;
    c->redis_port = (int)port;
    c->redis_database = (int)database;
    c->redis_timeout_ms = timeout;
    *out = c;
    return true;
fail:
    free(c);
    return false;
}

/* ------------------------------------------------------------------------ */
/* windows (UTC calendar, as Kong)                                           */

/* Start of the window of period p that holds `now`, and the next one's. */
static void window_of(enum period p, time_t now, time_t *start, time_t *end)
{
    static const time_t fixed[] = {1, 60, 3600, 86400};
    if (p <= P_DAY) {
        *start = now - now % fixed[p];
        *end = *start + fixed[p];
        return;
    }
    struct tm tm;
    gmtime_r(&now, &tm);
    tm.tm_sec = tm.tm_min = tm.tm_hour = 0;
    tm.tm_mday = 1;
    if (p == P_YEAR)
        tm.tm_mon = 0;
    *start = timegm(&tm);
    if (p == P_YEAR)
        tm.tm_year++;
    else
        tm.tm_mon++;
    *end = timegm(&tm);
}

/* ------------------------------------------------------------------------ */
/* the identifier                                                            */

static const char *identifier(struct sl_plugin_ctx *ctx, const struct rl_conf *c, size_t *len)
{
    const char *id = NULL;
    switch (c->limit_by) {
    case BY_SERVICE:
        id = service_ref(sl_plugin_service(ctx));
        break;
    case BY_CONSUMER: {
        const struct sl_consumer *consumer = sl_plugin_consumer(ctx);
        id = consumer ? sl_plugin_consumer_id(consumer) : sl_plugin_credential_id(ctx);
        break;
    }
    case BY_CREDENTIAL:
        id = sl_plugin_credential_id(ctx);
        break;
    case BY_HEADER:
        id = sl_plugin_header(ctx, c->header_name, 0, len);
        if (id != NULL)
            return id;
        break;
    case BY_PATH: {
        size_t plen;
        const char *path = sl_plugin_path(ctx, &plen);
        if (plen == strlen(c->path) && memcmp(path, c->path, plen) == 0)
            id = c->path;
        break;
    }
    case BY_IP:
        break;
    }
    if (id == NULL)
        id = sl_plugin_client_ip(ctx); /* Kong: the forwarded ip as the last resort */
    *len = strlen(id);
    return id;
}

/* ------------------------------------------------------------------------ */
/* local policy: one table for every worker of the process                   */

#define LOCAL_SLOTS (1u << 17) /* 128 Ki x 8 bytes = 1 MiB */
#define LOCAL_PROBES 8
static _Atomic uint64_t local_table[LOCAL_SLOTS];
static atomic_uint_fast64_t local_full_total;

/* FNV-1a over (scope, period, identifier). The scope is the route and
 * service (as Kong's keys), not the parsed instance: counts survive a
 * reload that keeps the route. */
static uint64_t hash64(const char *scope, int period, const char *id, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = scope; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ (unsigned)period) * 1099511628211ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static uint64_t window_index(enum period p, time_t start)
{
    static const time_t fixed[] = {1, 60, 3600, 86400};
    if (p <= P_DAY)
        return (uint64_t)(start / fixed[p]);
    struct tm tm;
    gmtime_r(&start, &tm);
    return p == P_YEAR ? (uint64_t)tm.tm_year : (uint64_t)tm.tm_year * 12 + (uint64_t)tm.tm_mon;
}

/* The slot of (key, window); created when absent and create is set. NULL
 * when the table has no room along the probe sequence. */
static _Atomic uint64_t *local_slot(uint64_t h, uint64_t window, bool create)
{
    uint64_t tag = ((window & 0xffff) << 48) | (((h >> 32) & 0xffff) << 32);
    uint64_t prev_window = (window - 1) & 0xffff;
    for (unsigned i = 0; i < LOCAL_PROBES; i++) {
        _Atomic uint64_t *slot = &local_table[(h + i) & (LOCAL_SLOTS - 1)];
        uint64_t word = atomic_load_explicit(slot, memory_order_acquire);
        for (;;) {
            if ((word & 0xffffffff00000000ULL) == tag)
                return slot;
            uint64_t w = word >> 48;
            /* empty, or a window that no sliding count still needs */
            bool free_slot = word == 0 || (w != (window & 0xffff) && w != prev_window);
            if (!create || !free_slot)
                break;
            if (atomic_compare_exchange_weak_explicit(slot, &word, tag, memory_order_acq_rel,
                                                      memory_order_acquire))
                return slot;
        }
    }
    return NULL;
}

static uint32_t slot_count(_Atomic uint64_t *slot)
{
    return slot ? (uint32_t)(atomic_load_explicit(slot, memory_order_acquire) & 0xffffffffu) : 0;
}

struct usage {
    bool limited[N_PERIODS];
    long long limit[N_PERIODS];
    long long used[N_PERIODS]; /* counted before this request */
    time_t end[N_PERIODS];
    int stop; /* the period that refused, or -1 */
};

/* Weight of the previous window still inside a sliding window ending now. */
static double prev_weight(const struct timeval *tv, time_t start, time_t end)
{
    double elapsed = (double)(tv->tv_sec - start) + tv->tv_usec / 1e6;
    double len = (double)(end - start);
    double w = 1.0 - elapsed / len;
    return w < 0 ? 0 : w > 1 ? 1 : w;
}

/* Period p's window around now: the start, and the end noted for the
 * headers. */
static time_t usage_window(struct usage *u, int p, const struct timeval *tv, time_t *end)
{
    time_t start;
    window_of((enum period)p, tv->tv_sec, &start, end);
    u->end[p] = *end;
    return start;
}

/* Notes period p's count before this request; true when the request may be
 * counted in it, false when this period (the first one over its limit,
 * noted in stop) or an earlier one refuses it. */
static bool usage_admit(struct usage *u, int p, long long used)
{
    u->used[p] = used;
    if (u->stop < 0 && used < u->limit[p])
        return true;
    if (u->stop < 0)
        u->stop = p;
    return false;
}

static void local_take(const struct rl_conf *c, const char *scope, const char *id, size_t id_len,
                       const struct timeval *tv, struct usage *u)
{
    _Atomic uint64_t *taken[N_PERIODS] = {0};
    u->stop = -1;
    for (int p = 0; p < N_PERIODS; p++) {
        if (!u->limited[p])
            continue;
        time_t end, start = usage_window(u, p, tv, &end);
        uint64_t h = hash64(scope, p, id, id_len);
        uint64_t win = window_index((enum period)p, start);
        long long prev = 0;
        if (c->sliding) {
            time_t pstart, pend;
            window_of((enum period)p, start - 1, &pstart, &pend);
            prev =
                (long long)(slot_count(local_slot(h, window_index((enum period)p, pstart), false)) *
                            prev_weight(tv, start, end));
        }
        _Atomic uint64_t *slot = local_slot(h, win, true);
        if (slot == NULL) {
            /* no room: count nothing, limit nothing (logged in /metrics) */
            atomic_fetch_add_explicit(&local_full_total, 1, memory_order_relaxed);
            u->used[p] = prev;
            continue;
        }
        uint64_t word = atomic_load_explicit(slot, memory_order_acquire);
        for (;;) {
            if ((word >> 32) != (atomic_load(slot) >> 32))
                word = atomic_load(slot);
            long long count = (long long)(word & 0xffffffffu);
            if (!usage_admit(u, p, prev + count))
                break;
            if (atomic_compare_exchange_weak_explicit(slot, &word, word + 1, memory_order_acq_rel,
                                                      memory_order_acquire)) {
                taken[p] = slot;
                break;
            }
        }
    }
    if (u->stop >= 0) /* refused: give back what the other periods took */
        for (int p = 0; p < N_PERIODS; p++)
            if (taken[p])
                atomic_fetch_sub_explicit(taken[p], 1, memory_order_acq_rel);
}

/* ------------------------------------------------------------------------ */
/* headers and the answer                                                    */

static void set_int_header(struct sl_plugin_ctx *ctx, const char *name, long long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", v);
    sl_plugin_response_header_set(ctx, name, buf, (size_t)n);
}

/* Kong's headers; false when the request must be refused (answered here). */
static bool finish(struct sl_plugin_ctx *ctx, const struct rl_conf *c, const struct usage *u,
                   time_t now)
{
    long long limit = -1, remaining = 0, window = 0, reset = 1;
    for (int p = 0; p < N_PERIODS && !c->hide_client_headers; p++) {
        if (!u->limited[p])
            continue;
        long long left = u->limit[p] - u->used[p];
        if (u->stop < 0 || u->stop == p)
            left--;
        if (left < 0)
            left = 0;
        long long win = (long long)(u->end[p] - now);
        if (limit < 0 || left < remaining || (left == remaining && win > window)) {
            limit = u->limit[p];
            remaining = left;
            window = win;
            reset = win < 1 ? 1 : win;
        }
        char name[64];
        snprintf(name, sizeof name, "X-RateLimit-Limit-%s", period_names[p]);
        set_int_header(ctx, name, u->limit[p]);
        snprintf(name, sizeof name, "X-RateLimit-Remaining-%s", period_names[p]);
        set_int_header(ctx, name, left);
    }
    if (!c->hide_client_headers && limit >= 0) {
        set_int_header(ctx, "RateLimit-Limit", limit);
        set_int_header(ctx, "RateLimit-Remaining", remaining);
        set_int_header(ctx, "RateLimit-Reset", reset);
    }
    if (u->stop < 0)
        return true;
    if (c->hide_client_headers) {
        long long w = (long long)(u->end[u->stop] - now);
        reset = w < 1 ? 1 : w;
    }
    set_int_header(ctx, "Retry-After", reset);
    atomic_fetch_add_explicit(&limited_total, 1, memory_order_relaxed);
    sl_plugin_respond_error(ctx, c->error_code, c->error_message);
    return false;
}

static void usage_init(const struct rl_conf *c, struct usage *u)
{
    memset(u, 0, sizeof *u);
    u->stop = -1;
    for (int p = 0; p < N_PERIODS; p++) {
        u->limited[p] = c->limits[p] > 0;
        u->limit[p] = c->limits[p];
    }
}

/* ------------------------------------------------------------------------ */
/* redis policy                                                              */

/*
 * KEYS: per period, the current window's key and the previous one's.
 * ARGV: per period, limit, seconds to keep the key, weight of the previous
 * window (0 for fixed windows). Returns {admitted, refusing period (1-based,
 * 0 when admitted), used before this request per period...}.
 */
static const char RL_SCRIPT[] =
    "local n = #ARGV / 3\n"
    "local used = {}\n"
    "local stop = 0\n"
    "for i = 1, n do\n"
    "  local cur = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')\n"
    "  local w = tonumber(ARGV[3*i])\n"
    "  local prev = 0\n"
    "  if w > 0 then prev = math.floor(tonumber(redis.call('GET', KEYS[2*i]) or '0') * w) end\n"
    "  used[i] = cur + prev\n"
    "  if stop == 0 and used[i] >= tonumber(ARGV[3*i-2]) then stop = i end\n"
    "end\n"
    "if stop == 0 then\n"
    "  for i = 1, n do\n"
    "    if redis.call('INCR', KEYS[2*i-1]) == 1 then\n"
    "      redis.call('EXPIRE', KEYS[2*i-1], ARGV[3*i-1])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local out = {stop == 0 and 1 or 0, stop}\n"
    "for i = 1, n do out[#out+1] = used[i] end\n"
    "return out\n";

enum conn_state { RC_DOWN, RC_CONNECTING, RC_READY };

struct rl_call;

struct rl_worker {
    struct event_base *base;
    redisAsyncContext *ac;
    enum conn_state state;
    const struct rl_conf *conf; /* the settings it connected with (by id) */
    uint64_t conf_id;
    char host[256];
    int port, database;
    char *username, *password;
    struct event *retry;
    uint32_t backoff_ms;
    time_t last_error_log;
    bool closing; /* being freed: no reconnect */
    char script_sha[41];
    struct rl_call *calls; /* in flight, to be told when the connection dies */
    /* sync_rate > 0: counts kept here, synced to Redis by a timer */
    struct sync_entry **sync;
    size_t n_sync;
    struct event *sync_timer;
    double sync_interval;
};

/* A window's count under sync_rate: what Redis said at the last sync, what
 * this worker sent and Redis has not confirmed, and what it counted since. */
struct sync_entry {
    char *key;
    size_t key_len;
    long long remote, inflight, delta;
    time_t end;
    long long ttl;
    double rate, last_sync;
    bool sending;
};
#define SYNC_MAX_ENTRIES 4096

struct rl_call {
    struct rl_worker *w;
    struct sl_plugin_ctx *ctx; /* NULL once cancelled or answered */
    const struct rl_conf *conf;
    struct usage usage;
    struct timeval started;
    struct event *timer;
    bool retried_eval; /* NOSCRIPT answered with EVAL */
    int argc;
    char **argv;
    size_t *argvlen;
    struct rl_call *next, *prev;
    bool done;
    bool linked;
};

static void redis_connect(struct rl_worker *w);

static void worker_log_error(struct rl_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void worker_log_error(struct rl_worker *w, const char *fmt, ...)
{
    atomic_fetch_add_explicit(&redis_errors_total, 1, memory_order_relaxed);
    time_t now = time(NULL);
    if (now - w->last_error_log < 10)
        return; /* at most one line per 10 s per worker */
    w->last_error_log = now;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_plugin_log(SL_PLUGIN_LOG_WARN, "rate-limiting: redis %s:%d: %s", w->host, w->port, msg);
}

static void call_unlink(struct rl_call *call)
{
    if (!call->linked)
        return;
    if (call->prev)
        call->prev->next = call->next;
    else
        call->w->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->linked = false;
}

static void call_free(struct rl_call *call)
{
    call_unlink(call);
    if (call->timer)
        event_free(call->timer);
    for (int i = 0; i < call->argc; i++)
        free(call->argv[i]);
    free(call->argv);
    free(call->argvlen);
    free(call);
}

static void observe_latency(const struct timeval *start)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    uint64_t us = (uint64_t)(now.tv_sec - start->tv_sec) * 1000000u +
                  (uint64_t)(now.tv_usec - start->tv_usec);
    double s = us / 1e6;
    int b = 0;
    while (b < RL_LAT_BUCKETS && s > lat_bounds[b])
        b++;
    atomic_fetch_add_explicit(&lat_counts[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lat_sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&lat_n, 1, memory_order_relaxed);
}

/* The datastore failed for this request: Kong's fault_tolerant. */
static void call_failed(struct rl_call *call)
{
    struct sl_plugin_ctx *ctx = call->ctx;
    call->ctx = NULL;
    if (ctx == NULL)
        return;
    if (call->conf->fault_tolerant) {
        atomic_fetch_add_explicit(&redis_fault_passed_total, 1, memory_order_relaxed);
    } else {
        sl_plugin_respond_error(ctx, 500, NULL);
    }
    sl_plugin_resume(ctx);
}

static void call_cancel(void *arg)
{
    struct rl_call *call = arg;
    call->ctx = NULL; /* the reply, when it comes, is dropped */
    if (call->timer)
        event_del(call->timer);
    if (call->done)
        call_free(call);
}

static void call_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rl_call *call = arg;
    worker_log_error(call->w, "no answer within %lld ms", call->conf->redis_timeout_ms);
    call_failed(call); /* the late reply is dropped */
}

static bool send_script(struct rl_call *call, bool eval);

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct rl_call *call = privdata;
    redisReply *reply = r;
    struct rl_worker *w = call->w;
    if (reply && reply->type == REDIS_REPLY_ERROR && !call->retried_eval &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && call->ctx) {
        call->retried_eval = true; /* the script is not cached there (yet): EVAL loads it */
        if (send_script(call, true))
            return;
    }
    call->done = true;
    if (call->timer)
        event_del(call->timer);
    if (call->ctx != NULL) {
        struct sl_plugin_ctx *ctx = call->ctx;
        observe_latency(&call->started);
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
            worker_log_error(w, "bad reply to the rate-limiting script: %s",
                             reply == NULL                      ? "connection lost"
                             : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                : "not an array");
            call_failed(call);
        } else {
            struct usage *u = &call->usage;
            u->stop = -1;
            long long stop_index = reply->element[1]->integer; /* 1-based over limited periods */
            size_t k = 2;
            int nth = 0;
            for (int p = 0; p < N_PERIODS; p++) {
                if (!u->limited[p])
                    continue;
                nth++;
                if (k < reply->elements && reply->element[k]->type == REDIS_REPLY_INTEGER)
                    u->used[p] = reply->element[k]->integer;
                k++;
                if (stop_index == nth)
                    u->stop = p;
            }
            call->ctx = NULL;
            finish(ctx, call->conf, u, call->started.tv_sec);
            sl_plugin_resume(ctx);
        }
    }
    call_free(call);
}

static bool send_script(struct rl_call *call, bool eval)
{
    struct rl_worker *w = call->w;
    if (w->ac == NULL || w->state == RC_DOWN)
        return false;
    free(call->argv[0]);
    free(call->argv[1]);
    call->argv[0] = strdup(eval ? "EVAL" : "EVALSHA");
    call->argv[1] = strdup(eval ? RL_SCRIPT : w->script_sha);
    if (!call->argv[0] || !call->argv[1])
        return false;
    call->argvlen[0] = strlen(call->argv[0]);
    call->argvlen[1] = strlen(call->argv[1]);
    return redisAsyncCommandArgv(w->ac, on_reply, call, call->argc, (const char **)call->argv,
                                 call->argvlen) == REDIS_OK;
}

static void on_auth_or_select(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rl_worker *w = ac->data;
    redisReply *reply = r;
    const char *what = privdata;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        /* wrong password or database: said clearly, then reconnect later */
        worker_log_error(w, "%s failed: %s", what, reply->str);
        w->state = RC_DOWN;
        redisAsyncDisconnect(ac);
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_connect(arg);
}

static void schedule_retry(struct rl_worker *w)
{
    if (w->closing)
        return;
    if (w->retry == NULL)
        w->retry = evtimer_new(w->base, retry_cb, w);
    if (w->retry == NULL)
        return;
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : 100;
    if (w->backoff_ms > 5000)
        w->backoff_ms = 5000;
    struct timeval tv = {w->backoff_ms / 1000, (w->backoff_ms % 1000) * 1000};
    evtimer_add(w->retry, &tv);
}

static void fail_all_calls(struct rl_worker *w)
{
    while (w->calls) {
        struct rl_call *call = w->calls;
        call_unlink(call);
        call_failed(call);
        /* hiredis still owns the callback: it runs with a NULL reply and frees */
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rl_worker *w = ac->data;
    if (status != REDIS_OK) {
        worker_log_error(w, "cannot connect: %s", ac->errstr);
        w->ac = NULL; /* hiredis frees the context after this callback */
        w->state = RC_DOWN;
        fail_all_calls(w);
        schedule_retry(w);
        return;
    }
    if (w->state == RC_CONNECTING)
        w->state = RC_READY;
    w->backoff_ms = 0;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rl_worker *w = ac->data;
    if (status != REDIS_OK || w->state != RC_DOWN)
        worker_log_error(w, "connection lost: %s", status != REDIS_OK ? ac->errstr : "closed");
    w->ac = NULL;
    w->state = RC_DOWN;
    fail_all_calls(w);
    schedule_retry(w);
}

static void redis_connect(struct rl_worker *w)
{
    if (w->ac != NULL)
        return;
    redisAsyncContext *ac = redisAsyncConnect(w->host, w->port);
    if (ac == NULL || ac->err) {
        worker_log_error(w, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(w);
        return;
    }
    ac->data = w;
    if (redisLibeventAttach(ac, w->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(w);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    w->ac = ac;
    w->state = RC_CONNECTING;
    /* queued before any request: AUTH, SELECT */
    if (w->password) {
        if (w->username)
            redisAsyncCommand(ac, on_auth_or_select, "AUTH", "AUTH %s %s", w->username,
                              w->password);
        else
            redisAsyncCommand(ac, on_auth_or_select, "AUTH", "AUTH %s", w->password);
    }
    if (w->database)
        redisAsyncCommand(ac, on_auth_or_select, "SELECT", "SELECT %d", w->database);
    /* the script into Redis' cache, so EVALSHA finds it; NOSCRIPT (a
     * restarted or flushed Redis) is still answered with EVAL */
    redisAsyncCommand(ac, on_auth_or_select, "SCRIPT LOAD", "SCRIPT LOAD %s", RL_SCRIPT);
}

static void worker_free(void *arg)
{
    struct rl_worker *w = arg;
    if (w == NULL)
        return;
    w->closing = true;
    if (w->ac) {
        redisAsyncContext *ac = w->ac;
        w->ac = NULL;
        w->state = RC_DOWN;
        ac->data = w;
        redisAsyncFree(ac); /* runs the pending callbacks with NULL replies */
    }
    if (w->retry)
        event_free(w->retry);
    if (w->sync_timer)
        event_free(w->sync_timer);
    for (size_t i = 0; i < w->n_sync; i++) {
        free(w->sync[i]->key);
        free(w->sync[i]);
    }
    free(w->sync);
    free(w->username);
    free(w->password);
    free(w);
}

/* A worker's Redis connections: one per (server, database, credentials),
 * so instances pointing at different servers do not share one. */
struct rl_connections {
    struct rl_worker **conns;
    size_t n;
};

static void connections_free(void *arg)
{
    struct rl_connections *cs = arg;
    if (cs == NULL)
        return;
    for (size_t i = 0; i < cs->n; i++)
        worker_free(cs->conns[i]);
    free(cs->conns);
    free(cs);
}

static bool same_text(const char *a, const char *b)
{
    return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

static struct rl_worker *worker_for(struct sl_plugin_ctx *ctx, const struct rl_conf *c)
{
    void **slot = sl_plugin_worker_data(ctx);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        *slot = calloc(1, sizeof(struct rl_connections));
    struct rl_connections *cs = *slot;
    if (cs == NULL)
        return NULL;
    struct rl_worker *w = NULL;
    for (size_t i = 0; i < cs->n && !w; i++) {
        struct rl_worker *x = cs->conns[i];
        if (strcmp(x->host, c->redis_host) == 0 && x->port == c->redis_port &&
            x->database == c->redis_database && same_text(x->password, c->redis_password) &&
            same_text(x->username, c->redis_username))
            w = x;
    }
    if (w == NULL) {
        if (cs->n == 64)
            return NULL; /* a bound: 64 different Redis settings per worker */
        struct rl_worker **grown = realloc(cs->conns, (cs->n + 1) * sizeof *grown);
        if (grown == NULL)
            return NULL;
        cs->conns = grown;
        w = calloc(1, sizeof *w);
        if (w == NULL)
            return NULL;
        w->base = sl_plugin_event_base(ctx);
        snprintf(w->host, sizeof w->host, "%s", c->redis_host);
        w->port = c->redis_port;
        w->database = c->redis_database;
        w->password = c->redis_password ? strdup(c->redis_password) : NULL;
        w->username = c->redis_username ? strdup(c->redis_username) : NULL;
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)RL_SCRIPT, strlen(RL_SCRIPT), md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
            snprintf(w->script_sha + 2 * i, 3, "%02x", md[i]);
        cs->conns[cs->n++] = w;
        redis_connect(w);
    }
    return w;
}

static char *key_for(const struct rl_conf *c, const char *id, size_t id_len, int p, time_t start,
                     size_t *len)
{
    size_t size = strlen(c->scope) + id_len + 64;
    char *k = malloc(size);
    if (k == NULL)
        return NULL;
    int n = snprintf(k, size, "ratelimit:%s:%lld:%s:", c->scope, (long long)start, period_keys[p]);
    memcpy(k + n, id, id_len); /* binary-safe: the identifier may be any header value */
    *len = (size_t)n + id_len;
    return k;
}

static enum sl_plugin_result redis_take(struct sl_plugin_ctx *ctx, const struct rl_conf *c,
                                        const char *id, size_t id_len, const struct timeval *tv)
{
    struct rl_worker *w = worker_for(ctx, c);
    if (w == NULL || w->state == RC_DOWN) {
        if (w)
            worker_log_error(w, "not connected");
        if (!c->fault_tolerant)
            sl_plugin_respond_error(ctx, 500, NULL);
        else
            atomic_fetch_add_explicit(&redis_fault_passed_total, 1, memory_order_relaxed);
        return SL_PLUGIN_CONTINUE;
    }
    struct rl_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        goto failed;
    call->w = w;
    call->ctx = ctx;
    call->conf = c;
    call->started = *tv;
    usage_init(c, &call->usage);
    int n = 0;
    for (int p = 0; p < N_PERIODS; p++)
        n += call->usage.limited[p];
    call->argc = 3 + 2 * n + 3 * n;
    call->argv = calloc((size_t)call->argc, sizeof *call->argv);
    call->argvlen = calloc((size_t)call->argc, sizeof *call->argvlen);
    if (!call->argv || !call->argvlen)
        goto failed;
    char buf[64];
    snprintf(buf, sizeof buf, "%d", 2 * n);
    call->argv[2] = strdup(buf);
    call->argvlen[2] = strlen(buf);
    int k = 3, a = 3 + 2 * n;
    for (int p = 0; p < N_PERIODS; p++) {
        if (!call->usage.limited[p])
            continue;
        time_t end, pstart, pend, start = usage_window(&call->usage, p, tv, &end);
        window_of((enum period)p, start - 1, &pstart, &pend);
        call->argv[k] = key_for(c, id, id_len, p, start, &call->argvlen[k]);
        k++;
        call->argv[k] = key_for(c, id, id_len, p, pstart, &call->argvlen[k]);
        k++;
        double weight = c->sliding ? prev_weight(tv, start, end) : 0;
        /* kept while a sliding count may still read it: two windows */
        long long ttl = (long long)(end - start) * (c->sliding ? 2 : 1) + 1;
        snprintf(buf, sizeof buf, "%lld", c->limits[p]);
        call->argv[a] = strdup(buf);
        call->argvlen[a] = strlen(buf);
        snprintf(buf, sizeof buf, "%lld", ttl);
        call->argv[a + 1] = strdup(buf);
        call->argvlen[a + 1] = strlen(buf);
        snprintf(buf, sizeof buf, "%.6f", weight);
        call->argv[a + 2] = strdup(buf);
        call->argvlen[a + 2] = strlen(buf);
        a += 3;
    }
    for (int i = 2; i < call->argc; i++)
        if (call->argv[i] == NULL)
            goto failed;
    call->argv[0] = strdup("EVALSHA");
    call->argv[1] = strdup(w->script_sha);
    if (!send_script(call, false))
        goto failed;
    call->next = w->calls;
    if (w->calls)
        w->calls->prev = call;
    w->calls = call;
    call->linked = true;
    if (c->redis_timeout_ms > 0) {
        call->timer = evtimer_new(w->base, call_timeout, call);
        struct timeval to = {c->redis_timeout_ms / 1000, (c->redis_timeout_ms % 1000) * 1000};
        if (call->timer)
            evtimer_add(call->timer, &to);
    }
    sl_plugin_on_cancel(ctx, call_cancel, call);
    return SL_PLUGIN_SUSPEND;
failed:
    if (call)
        call_free(call);
    worker_log_error(w, "cannot send the rate-limiting script");
    if (!c->fault_tolerant)
        sl_plugin_respond_error(ctx, 500, NULL);
    return SL_PLUGIN_CONTINUE;
}

/* ------------------------------------------------------------------------ */
/* redis with sync_rate: local counting, deltas synced in the background     */

static const char SYNC_SCRIPT[] =
    "if ARGV[1] == '0' then return tonumber(redis.call('GET', KEYS[1]) or '0') end\n"
    "local v = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
    "if v == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end\n"
    "return v\n";

static double now_seconds(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void on_sync_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rl_worker *w = ac->data;
    struct sync_entry *e = privdata;
    redisReply *reply = r;
    e->sending = false;
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        e->remote = reply->integer; /* includes what was in flight */
        e->inflight = 0;
        return;
    }
    /* not counted there: counted again at the next sync */
    e->delta += e->inflight;
    e->inflight = 0;
    if (w && !w->closing)
        worker_log_error(w, "sync failed: %s",
                         reply == NULL                      ? "connection lost"
                         : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                            : "unexpected reply");
}

static void sync_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rl_worker *w = arg;
    double now = now_seconds();
    for (size_t i = 0; i < w->n_sync;) {
        struct sync_entry *e = w->sync[i];
        if (e->end <= (time_t)now && e->delta == 0 && !e->sending) {
            free(e->key);
            free(e);
            w->sync[i] = w->sync[--w->n_sync]; /* the window is over */
            continue;
        }
        i++;
        if (e->sending || now - e->last_sync < e->rate || w->ac == NULL || w->state == RC_DOWN)
            continue;
        char delta[32], ttl[32];
        snprintf(delta, sizeof delta, "%lld", e->delta);
        snprintf(ttl, sizeof ttl, "%lld", e->ttl); /* seconds (Kong gives EXPIREAT ms) */
        const char *argv[] = {"EVAL", SYNC_SCRIPT, "1", e->key, delta, ttl};
        size_t argvlen[] = {4, strlen(SYNC_SCRIPT), 1, e->key_len, strlen(delta), strlen(ttl)};
        if (redisAsyncCommandArgv(w->ac, on_sync_reply, e, 6, argv, argvlen) != REDIS_OK)
            continue;
        e->inflight = e->delta;
        e->delta = 0;
        e->sending = true;
        e->last_sync = now;
    }
}

static struct sync_entry *sync_get(struct rl_worker *w, char *key, size_t key_len, time_t end,
                                   long long ttl, double rate)
{
    for (size_t i = 0; i < w->n_sync; i++)
        if (w->sync[i]->key_len == key_len && memcmp(w->sync[i]->key, key, key_len) == 0) {
            free(key);
            return w->sync[i];
        }
    if (w->n_sync == SYNC_MAX_ENTRIES) {
        free(key);
        return NULL;
    }
    if (w->n_sync % 64 == 0) {
        struct sync_entry **grown = realloc(w->sync, (w->n_sync + 64) * sizeof *grown);
        if (grown == NULL) {
            free(key);
            return NULL;
        }
        w->sync = grown;
    }
    struct sync_entry *e = calloc(1, sizeof *e);
    if (e == NULL) {
        free(key);
        return NULL;
    }
    e->key = key;
    e->key_len = key_len;
    e->end = end;
    e->ttl = ttl;
    e->rate = rate;
    e->last_sync = 0; /* a new key is read from Redis at the next tick */
    w->sync[w->n_sync++] = e;
    if (w->sync_timer == NULL)
        w->sync_timer = event_new(w->base, -1, EV_PERSIST, sync_tick, w);
    if (w->sync_timer && (w->sync_interval == 0 || rate < w->sync_interval)) {
        w->sync_interval = rate;
        struct timeval tv = {(time_t)rate, (suseconds_t)((rate - (time_t)rate) * 1e6)};
        event_add(w->sync_timer, &tv);
    }
    return e;
}

static void sync_take(struct rl_worker *w, const struct rl_conf *c, const char *id, size_t id_len,
                      const struct timeval *tv, struct usage *u)
{
    struct sync_entry *taken[N_PERIODS] = {0};
    u->stop = -1;
    for (int p = 0; p < N_PERIODS; p++) {
        if (!u->limited[p])
            continue;
        time_t end, start = usage_window(u, p, tv, &end);
        size_t key_len;
        char *key = key_for(c, id, id_len, p, start, &key_len);
        struct sync_entry *e =
            key ? sync_get(w, key, key_len, end, (long long)(end - start) + 1, c->sync_rate) : NULL;
        if (e == NULL) {
            atomic_fetch_add_explicit(&local_full_total, 1, memory_order_relaxed);
            continue;
        }
        if (!usage_admit(u, p, e->remote + e->inflight + e->delta))
            continue;
        e->delta++;
        taken[p] = e;
    }
    if (u->stop >= 0)
        for (int p = 0; p < N_PERIODS; p++)
            if (taken[p])
                taken[p]->delta--;
}

/* ------------------------------------------------------------------------ */
/* access                                                                    */

static enum sl_plugin_result rl_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct rl_conf *c = arg;
    size_t id_len;
    const char *id = identifier(ctx, c, &id_len);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (c->redis && c->sync_rate > 0) {
        struct rl_worker *w = worker_for(ctx, c);
        struct usage u;
        usage_init(c, &u);
        if (w != NULL)
            sync_take(w, c, id, id_len, &tv, &u);
        finish(ctx, c, &u, tv.tv_sec);
        return SL_PLUGIN_CONTINUE;
    }
    if (c->redis)
        return redis_take(ctx, c, id, id_len, &tv);
    struct usage u;
    usage_init(c, &u);
    local_take(c, c->scope, id, id_len, &tv, &u);
    finish(ctx, c, &u, tv.tv_sec);
    return SL_PLUGIN_CONTINUE;
}

static void rl_metrics(struct sl_plugin_metrics *m)
{
    sl_plugin_metrics_printf(
        m,
        "# HELP sluice_rate_limiting_limited_total Requests refused by rate-limiting.\n"
        "# TYPE sluice_rate_limiting_limited_total counter\n"
        "sluice_rate_limiting_limited_total %llu\n"
        "# HELP sluice_rate_limiting_redis_errors_total Redis failures seen by rate-limiting "
        "(connect, timeout, error reply).\n"
        "# TYPE sluice_rate_limiting_redis_errors_total counter\n"
        "sluice_rate_limiting_redis_errors_total %llu\n"
        "# HELP sluice_rate_limiting_fault_tolerant_passed_total Requests let through "
        "unlimited because Redis failed (fault_tolerant).\n"
        "# TYPE sluice_rate_limiting_fault_tolerant_passed_total counter\n"
        "sluice_rate_limiting_fault_tolerant_passed_total %llu\n"
        "# HELP sluice_rate_limiting_local_table_full_total Counts the local table had no room "
        "for.\n"
        "# TYPE sluice_rate_limiting_local_table_full_total counter\n"
        "sluice_rate_limiting_local_table_full_total %llu\n"
        "# HELP sluice_rate_limiting_redis_latency_seconds Round trip of the rate-limiting "
        "script.\n"
        "# TYPE sluice_rate_limiting_redis_latency_seconds histogram\n",
        (unsigned long long)atomic_load(&limited_total),
        (unsigned long long)atomic_load(&redis_errors_total),
        (unsigned long long)atomic_load(&redis_fault_passed_total),
        (unsigned long long)atomic_load(&local_full_total));
    unsigned long long cum = 0;
    for (int b = 0; b <= RL_LAT_BUCKETS; b++) {
        cum += atomic_load(&lat_counts[b]);
        if (b < RL_LAT_BUCKETS)
            sl_plugin_metrics_printf(m,
                                     "sluice_rate_limiting_redis_latency_seconds_bucket{le=\"%g\"} "
                                     "%llu\n",
                                     lat_bounds[b], cum);
        else
            sl_plugin_metrics_printf(
                m,
                "sluice_rate_limiting_redis_latency_seconds_bucket{le=\"+Inf\"}"
                " %llu\n",
                cum);
    }
    sl_plugin_metrics_printf(m,
                             "sluice_rate_limiting_redis_latency_seconds_sum %.6f\n"
                             "sluice_rate_limiting_redis_latency_seconds_count %llu\n",
                             atomic_load(&lat_sum_us) / 1e6,
                             (unsigned long long)atomic_load(&lat_n));
}

const struct sl_plugin_ops sl_plugin_rate_limiting = {
    .name = "rate-limiting",
    .priority = 910,
    .parse_config = rl_parse,
    .free_config = free,
    .access = rl_access,
    .free_worker_data = connections_free,
    .metrics = rl_metrics,
};
