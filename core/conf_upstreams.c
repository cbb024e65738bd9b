/*
 * Upstreams (load balancing over targets, hashing, Kong's health checks)
 * and their targets, nested or at the top level.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Upstreams, targets, health checks                                        */
/* ------------------------------------------------------------------------ */

/* A number of seconds (Kong writes them as numbers, may be fractional). */
static bool read_seconds_ms(struct loader *L, const struct sl_conf_value *v, double max_s,
                            uint32_t *out_ms)
{
    if (v->type != SL_CONF_INT && v->type != SL_CONF_FLOAT)
        return conf_fail(L, v, "expected a number of seconds, got %s", sl_conf_type_name(v->type));
    if (!isfinite(v->number) || v->number < 0 || v->number > max_s)
        return conf_fail(L, v, "value %s is out of range (0..%g seconds)", v->text, max_s);
    /* rounded half up (not llround: see numeric.h on libm) */
    *out_ms = (uint32_t)(v->number * 1000.0 + 0.5);
    return true;
}

static bool read_statuses(struct loader *L, const struct sl_conf_value *v,
                          struct sl_healthcheck_counters *c)
{
    if (!conf_expect_type(L, v, SL_CONF_SEQ))
        return false;
    c->http_statuses = conf_alloc(L, (v->n_items + 1) * sizeof *c->http_statuses);
    if (c->http_statuses == NULL)
        return false;
    for (size_t i = 0; i < v->n_items; i++) {
        long long n;
        if (!conf_read_int(L, v->items[i], 100, 999, &n))
            return false;
        c->http_statuses[i] = (uint16_t)n;
    }
    c->n_http_statuses = v->n_items;
    return true;
}

static bool set_statuses(struct loader *L, struct sl_healthcheck_counters *c, const uint16_t *codes,
                         size_t n)
{
    c->http_statuses = conf_alloc(L, n * sizeof *c->http_statuses);
    if (c->http_statuses == NULL)
        return false;
    memcpy(c->http_statuses, codes, n * sizeof *codes);
    c->n_http_statuses = n;
    return true;
}

/* One of healthchecks.{active,passive}.{healthy,unhealthy}. */
static bool read_hc_counters(struct loader *L, const struct sl_conf_value *map, bool active,
                             bool healthy, struct sl_healthcheck_counters *c)
{
    if (!conf_expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *k = map->keys[i], *v = map->items[i];
        const char *name = k->text;
        long long n;
        char q[100];
        if (v->type == SL_CONF_NULL)
            continue;
        if (strcmp(name, "http_statuses") == 0) {
            if (!read_statuses(L, v, c))
                return false;
        } else if (active && strcmp(name, "interval") == 0) {
            if (!read_seconds_ms(L, v, 65535, &c->interval_ms))
                return false;
        } else if (healthy && strcmp(name, "successes") == 0) {
            if (!conf_read_int(L, v, 0, 255, &n))
                return false;
            c->successes = (uint32_t)n;
        } else if (!healthy && strcmp(name, "tcp_failures") == 0) {
            if (!conf_read_int(L, v, 0, 255, &n))
                return false;
            c->tcp_failures = (uint32_t)n;
        } else if (!healthy && strcmp(name, "timeouts") == 0) {
            if (!conf_read_int(L, v, 0, 255, &n))
                return false;
            c->timeouts = (uint32_t)n;
        } else if (!healthy && strcmp(name, "http_failures") == 0) {
            if (!conf_read_int(L, v, 0, 255, &n))
                return false;
            c->http_failures = (uint32_t)n;
        } else {
            return conf_fail(L, k, "unknown field '%s'", conf_excerpt(q, name));
        }
    }
    return true;
}

static bool read_hc_type(struct loader *L, const struct sl_conf_value *v, char **out)
{
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, v, &s))
        return false;
    if (strcmp(s, "grpc") == 0 || strcmp(s, "grpcs") == 0)
        return conf_fail(L, v, "health check type '%s' is not supported yet", s);
    if (strcmp(s, "http") != 0 && strcmp(s, "https") != 0 && strcmp(s, "tcp") != 0)
        return conf_fail(L, v, "invalid type '%s': expected http, https or tcp",
                         conf_excerpt(q, s));
    return (*out = conf_strdup(L, s)) != NULL;
}

/* Kong's defaults (kong/db/schema/entities/upstreams.lua). */
static bool healthcheck_defaults(struct loader *L, struct sl_healthchecks *hc)
{
    static const uint16_t active_ok[] = {200, 302};
    static const uint16_t active_bad[] = {429, 404, 500, 501, 502, 503, 504, 505};
    static const uint16_t passive_ok[] = {200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308};
    static const uint16_t passive_bad[] = {429, 500, 503};
    hc->threshold = 0;
    hc->active.type = conf_strdup(L, "http");
    hc->active.timeout_ms = 1000;
    hc->active.concurrency = 10;
    hc->active.http_path = conf_strdup(L, "/");
    hc->active.https_verify_certificate = true;
    hc->passive.type = conf_strdup(L, "http");
    return hc->active.type != NULL && hc->active.http_path != NULL && hc->passive.type != NULL &&
           set_statuses(L, &hc->active.healthy, active_ok, 2) &&
           set_statuses(L, &hc->active.unhealthy, active_bad, 8) &&
           set_statuses(L, &hc->passive.healthy, passive_ok, 19) &&
           set_statuses(L, &hc->passive.unhealthy, passive_bad, 3);
}

static bool read_hc_headers(struct loader *L, const struct sl_conf_value *v,
                            struct sl_healthchecks *hc)
{
    if (!conf_expect_type(L, v, SL_CONF_MAP))
        return false;
    hc->active.headers = conf_alloc(L, (v->n_items + 1) * sizeof *hc->active.headers);
    if (hc->active.headers == NULL)
        return false;
    for (size_t i = 0; i < v->n_items; i++) {
        struct sl_route_header *h = &hc->active.headers[i];
        char q[100];
        for (size_t j = 0; j < v->keys[i]->text_len; j++)
            if (!sl_http_is_tchar((unsigned char)v->keys[i]->text[j]))
                return conf_fail(L, v->keys[i], "invalid header name '%s'",
                                 conf_excerpt(q, v->keys[i]->text));
        if ((h->name = conf_strdup(L, v->keys[i]->text)) == NULL ||
            !conf_read_string_list(L, v->items[i], &h->values, &h->n_values))
            return false;
        for (size_t j = 0; j < h->n_values; j++)
            for (const char *c = h->values[j]; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\t')
                    return conf_fail(L, v->items[i]->items[j],
                                     "invalid header value: control characters are not allowed");
    }
    hc->active.n_headers = v->n_items;
    return true;
}

static bool read_healthchecks(struct loader *L, const struct sl_conf_value *map,
                              struct sl_healthchecks *hc)
{
    if (!conf_expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *k = map->keys[i], *v = map->items[i];
        char q[100];
        if (v->type == SL_CONF_NULL)
            continue;
        if (strcmp(k->text, "threshold") == 0) {
            if ((v->type != SL_CONF_INT && v->type != SL_CONF_FLOAT) || v->number < 0 ||
                v->number > 100)
                return conf_fail(L, v, "expected a percentage between 0 and 100");
            hc->threshold = v->number;
        } else if (strcmp(k->text, "active") == 0 || strcmp(k->text, "passive") == 0) {
            bool active = k->text[0] == 'a';
            if (!conf_expect_type(L, v, SL_CONF_MAP))
                return false;
            for (size_t j = 0; j < v->n_items; j++) {
                const struct sl_conf_value *k2 = v->keys[j], *v2 = v->items[j];
                const char *n = k2->text;
                long long num;
                bool b;
                if (v2->type == SL_CONF_NULL)
                    continue;
                if (strcmp(n, "healthy") == 0 || strcmp(n, "unhealthy") == 0) {
                    bool healthy = n[0] == 'h';
                    struct sl_healthcheck_counters *c =
                        active ? (healthy ? &hc->active.healthy : &hc->active.unhealthy)
                               : (healthy ? &hc->passive.healthy : &hc->passive.unhealthy);
                    if (!read_hc_counters(L, v2, active, healthy, c))
                        return false;
                } else if (strcmp(n, "type") == 0) {
                    if (!read_hc_type(L, v2, active ? &hc->active.type : &hc->passive.type))
                        return false;
                } else if (active && strcmp(n, "timeout") == 0) {
                    if (!read_seconds_ms(L, v2, 65535, &hc->active.timeout_ms))
                        return false;
                } else if (active && strcmp(n, "concurrency") == 0) {
                    if (!conf_read_int(L, v2, 1, 2147483648LL, &num))
                        return false;
                    hc->active.concurrency = (uint32_t)num;
                } else if (active && strcmp(n, "http_path") == 0) {
                    const char *s = NULL; /* set by conf_read_string() */
                    if (!conf_read_string(L, v2, &s))
                        return false;
                    if (s[0] != '/' || conf_path_problem(s) != NULL)
                        return conf_fail(L, v2, "invalid http_path '%s': should start with /",
                                         conf_excerpt(q, s));
                    if ((hc->active.http_path = conf_strdup(L, s)) == NULL)
                        return false;
                } else if (active && strcmp(n, "https_sni") == 0) {
                    const char *s = NULL; /* set by conf_read_string() */
                    if (!conf_read_string(L, v2, &s))
                        return false;
                    if (!conf_valid_hostname(s, strlen(s)))
                        return conf_fail(L, v2, "invalid https_sni '%s'", conf_excerpt(q, s));
                    if ((hc->active.https_sni = conf_strdup(L, s)) == NULL)
                        return false;
                } else if (active && strcmp(n, "https_verify_certificate") == 0) {
                    if (!conf_read_bool(L, v2, &b))
                        return false;
                    hc->active.https_verify_certificate = b;
                } else if (active && strcmp(n, "headers") == 0) {
                    if (!read_hc_headers(L, v2, hc))
                        return false;
                } else {
                    return conf_fail(L, k2, "unknown field '%s'", conf_excerpt(q, n));
                }
            }
        } else {
            return conf_fail(L, k, "unknown field '%s'", conf_excerpt(q, k->text));
        }
    }
    return true;
}

static bool upstream_healthchecks(struct loader *L, struct entity *e,
                                  const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    return read_healthchecks(L, val, &((struct sl_upstream *)e->obj)->healthchecks);
}

static bool upstream_algorithm(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                               const struct sl_conf_value *val)
{
    static const struct {
        const char *name;
        enum sl_lb_algorithm a;
    } names[] = {{"round-robin", SL_LB_ROUND_ROBIN},
                 {"least-connections", SL_LB_LEAST_CONNECTIONS},
                 {"consistent-hashing", SL_LB_CONSISTENT_HASHING},
                 {"latency", SL_LB_LATENCY}};
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            ((struct sl_upstream *)e->obj)->algorithm = names[i].a;
            return true;
        }
    return conf_fail(L, val,
                     "invalid algorithm '%s': expected round-robin, least-connections, "
                     "consistent-hashing or latency",
                     conf_excerpt(q, s));
}

static bool read_hash_on(struct loader *L, const struct sl_conf_value *val, enum sl_hash_on *out)
{
    static const char *const names[] = {"none",   "consumer", "ip",        "header",
                                        "cookie", "path",     "query_arg", "uri_capture"};
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum sl_hash_on)i;
            return true;
        }
    return conf_fail(L, val,
                     "invalid value '%s': expected none, consumer, ip, header, cookie, path, "
                     "query_arg or uri_capture",
                     conf_excerpt(q, s));
}

static bool upstream_hash_on(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return read_hash_on(L, val, &((struct sl_upstream *)e->obj)->hash_on);
}

static bool upstream_hash_fallback(struct loader *L, struct entity *e,
                                   const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    return read_hash_on(L, val, &((struct sl_upstream *)e->obj)->hash_fallback);
}

/* A header name (hash_on_header ...): a token, stored lower case. */
static bool upstream_header_name(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    struct sl_upstream *u = e->obj;
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++)
        if (!sl_http_is_tchar((unsigned char)*c))
            return conf_fail(L, val, "invalid header name '%s'", conf_excerpt(q, s));
    char *copy = conf_strdup(L, s);
    if (copy == NULL)
        return false;
    for (char *c = copy; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    if (strcmp(key->text, "hash_on_header") == 0)
        u->hash_on_header = copy;
    else
        u->hash_fallback_header = copy;
    return true;
}

static bool upstream_host_header(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    if (!conf_valid_hostname(s, strlen(s)))
        return conf_fail(L, val, "invalid host_header '%s': expected a hostname",
                         conf_excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->host_header = conf_strdup(L, s)) != NULL;
}

static bool upstream_cookie_path(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    if (s[0] != '/' || conf_path_problem(s) != NULL)
        return conf_fail(L, val, "invalid hash_on_cookie_path '%s': should start with /",
                         conf_excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->hash_on_cookie_path = conf_strdup(L, s)) != NULL;
}

/* hash_on_cookie: RFC 6265 section 4.1.1, a cookie-name is a token. */
static bool upstream_cookie_name(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++)
        if (!sl_http_is_tchar((unsigned char)*c))
            return conf_fail(L, val, "invalid cookie name '%s'", conf_excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->hash_on_cookie = conf_strdup(L, s)) != NULL;
}

/* use_srv_name: only Kong's default (false); true changes the SNI and Host
 * sent to SRV-resolved targets, which sluice does not do. */
static bool upstream_use_srv_name(struct loader *L, struct entity *e,
                                  const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    bool b;
    if (!conf_read_bool(L, val, &b))
        return false;
    if (b)
        return conf_fail(L, key, "upstream field 'use_srv_name' is not supported yet");
    return true;
}

static bool upstream_targets(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return conf_read_targets(L, val, e->index);
}

#define UPSTREAM_FIELD(n, k, m)                                                                    \
    {                                                                                              \
        n, k, offsetof(struct sl_upstream, m), 0, 0, NULL                                          \
    }
static const struct field upstream_fields[] = {
    UPSTREAM_FIELD("name", FK_STRING, name),
    UPSTREAM_FIELD("id", FK_UUID, id),
    {"algorithm", FK_CUSTOM, 0, 0, 0, upstream_algorithm},
    {"hash_on", FK_CUSTOM, 0, 0, 0, upstream_hash_on},
    {"hash_fallback", FK_CUSTOM, 0, 0, 0, upstream_hash_fallback},
    {"hash_on_header", FK_CUSTOM, 0, 0, 0, upstream_header_name},
    {"hash_fallback_header", FK_CUSTOM, 0, 0, 0, upstream_header_name},
    {"hash_on_cookie", FK_CUSTOM, 0, 0, 0, upstream_cookie_name},
    {"hash_on_cookie_path", FK_CUSTOM, 0, 0, 0, upstream_cookie_path},
    UPSTREAM_FIELD("hash_on_query_arg", FK_STRING, hash_on_query_arg),
    UPSTREAM_FIELD("hash_fallback_query_arg", FK_STRING, hash_fallback_query_arg),
    UPSTREAM_FIELD("hash_on_uri_capture", FK_STRING, hash_on_uri_capture),
    UPSTREAM_FIELD("hash_fallback_uri_capture", FK_STRING, hash_fallback_uri_capture),
    {"slots", FK_U32, offsetof(struct sl_upstream, slots), 10, 65536, NULL},
    {"healthchecks", FK_CUSTOM, 0, 0, 0, upstream_healthchecks},
    {"host_header", FK_CUSTOM, 0, 0, 0, upstream_host_header},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"targets", FK_CUSTOM, 0, 0, 0, upstream_targets},
    {"client_certificate", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"use_srv_name", FK_CUSTOM, 0, 0, 0, upstream_use_srv_name},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof upstream_fields / sizeof upstream_fields[0] <= MAX_FIELDS,
               "raise MAX_FIELDS");

/* Kong's entity checks between hash_on, hash_fallback and their companions. */
static bool check_upstream_hashing(struct loader *L, const struct entity *e,
                                   const struct sl_upstream *u)
{
    static const char *const names[] = {"none",   "consumer", "ip",        "header",
                                        "cookie", "path",     "query_arg", "uri_capture"};
    const struct sl_conf_value *fb = conf_value_of(e, "hash_fallback");
    if (u->hash_on == SL_HASH_HEADER && u->hash_on_header == NULL)
        return conf_fail(L, conf_value_of(e, "hash_on"), "hash_on 'header' needs 'hash_on_header'");
    if (u->hash_fallback == SL_HASH_HEADER && u->hash_fallback_header == NULL)
        return conf_fail(L, fb, "hash_fallback 'header' needs 'hash_fallback_header'");
    if ((u->hash_on == SL_HASH_COOKIE || u->hash_fallback == SL_HASH_COOKIE) &&
        u->hash_on_cookie == NULL)
        return conf_fail(L, conf_value_of(e, "hash_on"),
                         "hashing on a cookie needs 'hash_on_cookie'");
    if (u->hash_on == SL_HASH_QUERY_ARG && u->hash_on_query_arg == NULL)
        return conf_fail(L, conf_value_of(e, "hash_on"),
                         "hash_on 'query_arg' needs 'hash_on_query_arg'");
    if (u->hash_fallback == SL_HASH_QUERY_ARG && u->hash_fallback_query_arg == NULL)
        return conf_fail(L, fb, "hash_fallback 'query_arg' needs 'hash_fallback_query_arg'");
    if (u->hash_on == SL_HASH_URI_CAPTURE && u->hash_on_uri_capture == NULL)
        return conf_fail(L, conf_value_of(e, "hash_on"),
                         "hash_on 'uri_capture' needs 'hash_on_uri_capture'");
    if (u->hash_fallback == SL_HASH_URI_CAPTURE && u->hash_fallback_uri_capture == NULL)
        return conf_fail(L, fb, "hash_fallback 'uri_capture' needs 'hash_fallback_uri_capture'");
    if ((u->hash_on == SL_HASH_NONE || u->hash_on == SL_HASH_COOKIE) &&
        u->hash_fallback != SL_HASH_NONE)
        return conf_fail(L, fb, "hash_fallback must be 'none' when hash_on is '%s'",
                         names[u->hash_on]);
    if (u->hash_fallback != SL_HASH_NONE && u->hash_fallback == u->hash_on) {
        /* the same kind twice is fine only with different names */
        bool differ = (u->hash_on == SL_HASH_HEADER &&
                       strcmp(u->hash_on_header, u->hash_fallback_header) != 0) ||
                      (u->hash_on == SL_HASH_QUERY_ARG &&
                       strcmp(u->hash_on_query_arg, u->hash_fallback_query_arg) != 0) ||
                      (u->hash_on == SL_HASH_URI_CAPTURE &&
                       strcmp(u->hash_on_uri_capture, u->hash_fallback_uri_capture) != 0);
        if (!differ)
            return conf_fail(L, fb, "hash_fallback must differ from hash_on");
    }
    return true;
}

bool conf_read_upstreams(struct loader *L, const struct sl_conf_value *seq)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_upstream *u = conf_vec_push(&L->upstreams);
        if (u == NULL)
            return conf_fail_oom(L);
        size_t index = L->upstreams.n - 1;
        struct sl_upstream tmp = {.slots = 10000,
                                  .index = index,
                                  .line = seq->items[i]->line,
                                  .column = seq->items[i]->column};
        if (!healthcheck_defaults(L, &tmp.healthchecks))
            return false;
        struct entity e = ENTITY("upstream", &tmp, index, upstream_fields, NONE, NONE, NONE);
        /* nested targets refer to this upstream by index: read into a copy */
        if ((u = conf_read_entity_into(L, &e, seq->items[i], &L->upstreams, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        char q[100];
        if (u->name == NULL)
            return conf_fail(L, e.node, "upstream needs a 'name'");
        if (!conf_valid_hostname(u->name, strlen(u->name)))
            return conf_fail(L, conf_value_of(&e, "name"),
                             "invalid upstream name '%s': it must be a valid hostname (services "
                             "refer to it by their host)",
                             conf_excerpt(q, u->name));
        struct in_addr v4;
        if (inet_pton(AF_INET, u->name, &v4) == 1) /* Kong's validate_name */
            return conf_fail(L, conf_value_of(&e, "name"),
                             "invalid upstream name '%s': no ip addresses allowed",
                             conf_excerpt(q, u->name));
        if (u->hash_on_cookie_path == NULL &&
            (u->hash_on_cookie_path = conf_strdup(L, "/")) == NULL)
            return false;
        if (!check_upstream_hashing(L, &e, u))
            return false;
        if (!conf_unique(L, NS_UPSTREAM_NAME, "upstream name", u->name, conf_value_of(&e, "name"),
                         index) ||
            !conf_unique(L, NS_UPSTREAM_ID, "upstream id", u->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}

static bool target_target(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_target *t = e->obj;
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    size_t n = strlen(s);
    const char *host = s, *port = NULL;
    size_t host_len = n;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || !conf_valid_ipv6(s + 1, (size_t)(close - s - 1)))
            return conf_fail(L, val, "invalid target '%s': not a valid hostname or ip address",
                             conf_excerpt(q, s));
        host = s + 1;
        host_len = (size_t)(close - s - 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return conf_fail(L, val, "invalid target '%s'", conf_excerpt(q, s));
    } else if (conf_valid_ipv6(s, n)) {
        /* a bare IPv6 address: no port */
    } else {
        const char *colon = strrchr(s, ':');
        if (colon != NULL) {
            host_len = (size_t)(colon - s);
            port = colon + 1;
        }
        if (!conf_valid_hostname(host, host_len))
            return conf_fail(L, val, "invalid target '%s': not a valid hostname or ip address",
                             conf_excerpt(q, s));
    }
    t->port = 8000; /* Kong's default */
    if (port != NULL) {
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535 || errno != 0)
            return conf_fail(L, val, "invalid target '%s': bad port", conf_excerpt(q, s));
        t->port = (uint16_t)p;
    }
    if ((t->host = conf_strndup(L, host, host_len)) == NULL)
        return false;
    for (char *c = t->host; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return true;
}

static bool target_upstream(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    if (e->parent_service != NONE) /* parent_service carries the upstream here */
        return conf_fail(L, key,
                         "conflicting values: this target is nested under an upstream already");
    return conf_read_ref(L, e, REF_UPSTREAM, val, OWNER_TARGET);
}

static const struct field target_fields[] = {
    {"target", FK_CUSTOM, 0, 0, 0, target_target},
    {"id", FK_UUID, offsetof(struct sl_target, id), 0, 0, NULL},
    {"weight", FK_U32, offsetof(struct sl_target, weight), 0, 65535, NULL},
    {"upstream", FK_CUSTOM, 0, 0, 0, target_upstream},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

bool conf_read_targets(struct loader *L, const struct sl_conf_value *seq, size_t upstream)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct target_rec *rec = conf_vec_push(&L->targets);
        if (rec == NULL)
            return conf_fail_oom(L);
        size_t index = L->targets.n - 1;
        struct target_rec tmp = {
            .t = {.weight = 100, .line = seq->items[i]->line, .column = seq->items[i]->column},
            .upstream = upstream,
            .node = seq->items[i]};
        struct entity e = ENTITY("target", &tmp.t, index, target_fields, upstream, NONE, NONE);
        if ((rec = conf_read_entity_into(L, &e, seq->items[i], &L->targets, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        if (rec->t.host == NULL)
            return conf_fail(L, e.node, "target needs a 'target' (\"host:port\")");
        if (upstream == NONE && conf_seen(&e, "upstream") == NULL)
            return conf_fail(L, e.node, "target needs an 'upstream'");
        rec->target_node = conf_value_of(&e, "target");
    }
    return true;
}
