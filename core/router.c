/*
 * Router: Kong's traditional_compatible router over methods, hosts (with
 * wildcards), headers (plain and ~* regex values), snis and paths (plain
 * prefixes and PCRE2 regexes with captures), and Kong's path_handling v0
 * for the upstream path.
 *
 * sl_router_build() expands every route into one entry per path (Kong
 * splits a route with several paths the same way, so that each path ranks
 * on its own) and sorts the entries by priority once. Priority, highest
 * first (kong/router/traditional.lua and compat.lua):
 *   1. number of fields set among methods, hosts, headers, snis, paths;
 *   2. the route has hosts and none of them is a wildcard;
 *   3. number of headers;
 *   4. a regex path before a plain prefix;
 *   5. regex_priority (regex paths);
 *   6. length of the plain prefix;
 *   7. order in the configuration (Kong orders by created_at; a file has
 *      no such time, so the file's order stands in), then path order.
 *
 * Lookups do not scan every entry: entries sit in a hash table keyed by
 * their plain prefix, or for a regex by the literal text every match starts
 * with ("/users/" for "/users/(\\d+)"), so a request probes one bucket per
 * length of its own path's prefixes; only regexes without a literal start
 * and entries without paths are in one priority-ordered list. Each bucket is in priority order too,
 * and the winner is the matching entry with the lowest position in the global order, so the result
 * is exactly that of a scan of all entries in order (check_router.c compares the two on thousands
 * of generated routes).
 *
 * The router only points into the config snapshot, which outlives it, and
 * is immutable after build: every worker reads it without locks. The only
 * per-thread state is one PCRE2 match block per thread (regex matching).
 */
#include "router.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum host_kind {
    HOST_EXACT,  /* example.com */
    HOST_SUFFIX, /* *.example.com: the request host ends with ".example.com" */
    HOST_PREFIX, /* example.*: the request host starts with "example." */
};

struct rt_host {
    const char *text; /* points into the route's host string */
    size_t len;
    enum host_kind kind;
};

struct rt_method {
    const char *text;
    size_t len;
};

struct rt_header_value {
    const char *text; /* plain value */
    size_t len;
    pcre2_code *re; /* "~*" value: the compiled regex (text unused) */
};

struct rt_header {
    const char *name; /* lower case */
    size_t name_len;
    struct rt_header_value *values;
    size_t n_values;
};

/* What is shared by the entries of one route. */
struct rt_route {
    const struct sl_route *route;
    const struct rt_method *methods;
    size_t n_methods;
    const struct rt_host *hosts;
    size_t n_hosts;
    struct rt_header *headers;
    size_t n_headers;
};

struct rt_entry {
    const struct rt_route *rt;
    const char *path; /* plain prefix; NULL for a regex or no path */
    size_t path_len;
    pcre2_code *re; /* regex path */
    /* index key: the plain prefix, or the literal start every match of the
     * regex has; empty: the entry is on the "others" list */
    const char *key;
    size_t key_len;
    unsigned weight;  /* number of fields set */
    bool plain_hosts; /* has hosts, none with a wildcard */
    int regex_priority;
    size_t order; /* route index, then path index: ties keep config order */
    size_t rank;  /* position in the sorted order */
};

/* prefix -> entries with that exact prefix, by rank */
struct prefix_bucket {
    const char *prefix;
    size_t len;
    uint64_t hash;
    size_t first, count; /* into router->bucket_entries */
};

struct sl_router {
    struct rt_entry *entries; /* sorted by priority */
    size_t n_entries;
    struct rt_route *routes;
    size_t n_routes;
    struct rt_host *hosts;
    struct rt_method *methods;
    /* index */
    struct prefix_bucket *buckets; /* open addressing, n_buckets a power of 2 */
    size_t n_buckets;
    const struct rt_entry **bucket_entries;
    const struct rt_entry **others; /* regex or pathless entries, by rank */
    size_t n_others;
    size_t max_prefix_len;
};

static int entry_cmp(const void *pa, const void *pb)
{
    const struct rt_entry *a = pa, *b = pb;
    if (a->weight != b->weight)
        return a->weight > b->weight ? -1 : 1;
    if (a->plain_hosts != b->plain_hosts)
        return a->plain_hosts ? -1 : 1;
    if (a->rt->n_headers != b->rt->n_headers)
        return a->rt->n_headers > b->rt->n_headers ? -1 : 1;
    bool ar = a->re != NULL, br = b->re != NULL;
    if (ar != br)
        return ar ? -1 : 1;
    if (ar && a->regex_priority != b->regex_priority)
        return a->regex_priority > b->regex_priority ? -1 : 1;
    if (a->path_len != b->path_len)
        return a->path_len > b->path_len ? -1 : 1;
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    return 0;
}

void sl_router_free(struct sl_router *router)
{
    if (router == NULL)
        return;
    for (size_t i = 0; i < router->n_entries; i++)
        pcre2_code_free(router->entries[i].re);
    for (size_t i = 0; i < router->n_routes; i++) {
        struct rt_route *rt = &router->routes[i];
        for (size_t h = 0; h < rt->n_headers; h++) {
            for (size_t v = 0; v < rt->headers[h].n_values; v++)
                pcre2_code_free(rt->headers[h].values[v].re);
            free(rt->headers[h].values);
        }
        free(rt->headers);
    }
    free(router->entries);
    free(router->routes);
    free(router->hosts);
    free(router->methods);
    free(router->buckets);
    free(router->bucket_entries);
    free(router->others);
    free(router);
}

/* Routes whose service is missing or disabled are not routable (as in Kong). */
static bool routable(const struct sl_route *r)
{
    return r->service != NULL && r->service->enabled;
}

static pcre2_code *compile(const char *pattern, uint32_t options)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options | PCRE2_UTF,
                                   &code, &offset, NULL);
    if (re != NULL)
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreted when JIT is missing */
    return re;
}

/*
 * How many leading characters of an anchored pattern every match starts
 * with: up to the first metacharacter, less the last literal when a
 * quantifier follows it ("/ab?c" -> "/a"). Patterns starting with an
 * option ("(?i)...") start with "(", so they get no key.
 */
static size_t literal_prefix_len(const char *pattern)
{
    size_t n = 0;
    while (pattern[n] != '\0' && strchr("\\^$.|?*+()[]{}", pattern[n]) == NULL)
        n++;
    if (n > 0 && pattern[n] != '\0' && strchr("?*{", pattern[n]) != NULL)
        n--;
    return n;
}

static uint64_t hash_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * 1099511628211ULL; /* FNV-1a */
}
#define HASH_INIT 14695981039346656037ULL

static bool build_routes(struct sl_router *router, const struct sl_config *cfg)
{
    size_t ri = 0, hi = 0, mi = 0, ei = 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct sl_route *r = &cfg->routes[i];
        if (!routable(r))
            continue;
        struct rt_route *rt = &router->routes[ri++];
        router->n_routes = ri;
        rt->route = r;

        rt->methods = &router->methods[mi];
        rt->n_methods = r->n_methods;
        for (size_t m = 0; m < r->n_methods; m++)
            router->methods[mi++] = (struct rt_method){r->methods[m], strlen(r->methods[m])};

        bool plain = r->n_hosts > 0;
        rt->hosts = &router->hosts[hi];
        rt->n_hosts = r->n_hosts;
        for (size_t h = 0; h < r->n_hosts; h++) {
            const char *text = r->hosts[h]; /* lower case, validated by the loader */
            size_t len = strlen(text);
            struct rt_host *out = &router->hosts[hi++];
            if (len >= 2 && text[0] == '*') {
                *out = (struct rt_host){text + 1, len - 1, HOST_SUFFIX};
                plain = false;
            } else if (len >= 2 && text[len - 1] == '*') {
                *out = (struct rt_host){text, len - 1, HOST_PREFIX};
                plain = false;
            } else {
                *out = (struct rt_host){text, len, HOST_EXACT};
            }
        }

        if (r->n_headers > 0) {
            rt->headers = calloc(r->n_headers, sizeof *rt->headers);
            if (rt->headers == NULL)
                return false;
            rt->n_headers = r->n_headers;
            for (size_t h = 0; h < r->n_headers; h++) {
                struct rt_header *out = &rt->headers[h];
                out->name = r->headers[h].name;
                out->name_len = strlen(out->name);
                out->values = calloc(r->headers[h].n_values, sizeof *out->values);
                if (out->values == NULL)
                    return false;
                out->n_values = r->headers[h].n_values;
                for (size_t v = 0; v < out->n_values; v++) {
                    const char *text = r->headers[h].values[v];
                    if (strncmp(text, "~*", 2) == 0) {
                        if ((out->values[v].re = compile(text + 2, PCRE2_CASELESS)) == NULL)
                            return false;
                    } else {
                        out->values[v].text = text;
                        out->values[v].len = strlen(text);
                    }
                }
            }
        }

        unsigned weight = (r->n_methods > 0) + (r->n_hosts > 0) + (r->n_paths > 0) +
                          (r->n_headers > 0) + (r->n_snis > 0);
        size_t n_paths = r->n_paths > 0 ? r->n_paths : 1;
        for (size_t p = 0; p < n_paths; p++) {
            struct rt_entry *e = &router->entries[ei++];
            router->n_entries = ei;
            e->rt = rt;
            e->weight = weight;
            e->plain_hosts = plain;
            e->regex_priority = r->regex_priority;
            e->order = ei; /* routes and their paths in config order */
            if (r->n_paths == 0)
                continue;
            const char *path = r->paths[p];
            if (path[0] == '~') {
                /* Kong anchors path regexes at the start only */
                if ((e->re = compile(path + 1, PCRE2_ANCHORED)) == NULL)
                    return false;
                e->key = path + 1;
                e->key_len = literal_prefix_len(path + 1);
            } else {
                e->path = path;
                e->path_len = strlen(path);
                e->key = e->path;
                e->key_len = e->path_len;
            }
        }
    }
    return true;
}

static bool build_index(struct sl_router *router)
{
    size_t n_prefixed = 0;
    for (size_t i = 0; i < router->n_entries; i++)
        n_prefixed += router->entries[i].key_len > 0;
    router->n_buckets = 16;
    while (router->n_buckets < 2 * n_prefixed)
        router->n_buckets *= 2;
    router->buckets = calloc(router->n_buckets, sizeof *router->buckets);
    router->bucket_entries = calloc(n_prefixed ? n_prefixed : 1, sizeof *router->bucket_entries);
    router->others = calloc(router->n_entries ? router->n_entries : 1, sizeof *router->others);
    if (!router->buckets || !router->bucket_entries || !router->others)
        return false;
    /* count per distinct prefix, then place in rank order */
    size_t mask = router->n_buckets - 1;
    for (size_t i = 0; i < router->n_entries; i++) {
        const struct rt_entry *e = &router->entries[i];
        if (e->key_len == 0) {
            router->others[router->n_others++] = e;
            continue;
        }
        if (e->key_len > router->max_prefix_len)
            router->max_prefix_len = e->key_len;
        uint64_t hash = HASH_INIT;
        for (size_t k = 0; k < e->key_len; k++)
            hash = hash_step(hash, (unsigned char)e->key[k]);
        size_t slot = hash & mask;
        while (router->buckets[slot].prefix != NULL &&
               !(router->buckets[slot].len == e->key_len &&
                 memcmp(router->buckets[slot].prefix, e->key, e->key_len) == 0))
            slot = (slot + 1) & mask;
        struct prefix_bucket *b = &router->buckets[slot];
        b->prefix = e->key;
        b->len = e->key_len;
        b->hash = hash;
        b->count++;
    }
    size_t next = 0;
    for (size_t s = 0; s < router->n_buckets; s++) {
        router->buckets[s].first = next;
        next += router->buckets[s].count;
        router->buckets[s].count = 0;
    }
    for (size_t i = 0; i < router->n_entries; i++) { /* entries are in rank order */
        const struct rt_entry *e = &router->entries[i];
        if (e->key_len == 0)
            continue;
        uint64_t hash = HASH_INIT;
        for (size_t k = 0; k < e->key_len; k++)
            hash = hash_step(hash, (unsigned char)e->key[k]);
        size_t slot = hash & mask;
        while (!(router->buckets[slot].len == e->key_len &&
                 memcmp(router->buckets[slot].prefix, e->key, e->key_len) == 0))
            slot = (slot + 1) & mask;
        struct prefix_bucket *b = &router->buckets[slot];
        router->bucket_entries[b->first + b->count++] = e;
    }
    return true;
}

struct sl_router *sl_router_build(const struct sl_config *cfg)
{
    struct sl_router *router = calloc(1, sizeof *router);
    if (router == NULL)
        return NULL;
    if (cfg == NULL)
        return router;

    size_t n_routes = 0, n_entries = 0, n_hosts = 0, n_methods = 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct sl_route *r = &cfg->routes[i];
        if (!routable(r))
            continue;
        n_routes++;
        n_entries += r->n_paths > 0 ? r->n_paths : 1;
        n_hosts += r->n_hosts;
        n_methods += r->n_methods;
    }
    router->routes = calloc(n_routes ? n_routes : 1, sizeof *router->routes);
    router->entries = calloc(n_entries ? n_entries : 1, sizeof *router->entries);
    router->hosts = calloc(n_hosts ? n_hosts : 1, sizeof *router->hosts);
    router->methods = calloc(n_methods ? n_methods : 1, sizeof *router->methods);
    if (!router->routes || !router->entries || !router->hosts || !router->methods ||
        !build_routes(router, cfg)) {
        sl_router_free(router);
        return NULL;
    }
    qsort(router->entries, router->n_entries, sizeof *router->entries, entry_cmp);
    for (size_t i = 0; i < router->n_entries; i++)
        router->entries[i].rank = i;
    if (!build_index(router)) {
        sl_router_free(router);
        return NULL;
    }
    return router;
}

static bool host_matches(const struct rt_host *h, const char *host, size_t len)
{
    switch (h->kind) {
    case HOST_EXACT:
        return len == h->len && strncasecmp(host, h->text, len) == 0;
    case HOST_SUFFIX: /* at least one character before ".example.com" */
        return len > h->len && strncasecmp(host + len - h->len, h->text, h->len) == 0;
    case HOST_PREFIX: /* at least one character after "example." */
        return len > h->len && strncasecmp(host, h->text, h->len) == 0;
    }
    return false;
}

/* sni: exact, or Kong's wildcards as for hosts */
static bool sni_matches(const char *pattern, const char *sni, size_t len)
{
    size_t n = strlen(pattern);
    if (n >= 2 && pattern[0] == '*')
        return len > n - 1 && strncasecmp(sni + len - (n - 1), pattern + 1, n - 1) == 0;
    if (n >= 2 && pattern[n - 1] == '*')
        return len > n - 1 && strncasecmp(sni, pattern, n - 1) == 0;
    return len == n && strncasecmp(sni, pattern, n) == 0;
}

/* One match block per thread, created on first use, freed at thread exit. */
static pthread_key_t match_key;
static pthread_once_t match_once = PTHREAD_ONCE_INIT;
static void match_data_free(void *p)
{
    pcre2_match_data_free(p);
}
static void match_key_init(void)
{
    (void)pthread_key_create(&match_key, match_data_free);
}
static pcre2_match_data *thread_match_data(void)
{
    pthread_once(&match_once, match_key_init);
    pcre2_match_data *md = pthread_getspecific(match_key);
    if (md == NULL) {
        md = pcre2_match_data_create(SL_ROUTER_MAX_CAPTURES + 1, NULL);
        if (md != NULL && pthread_setspecific(match_key, md) != 0) {
            pcre2_match_data_free(md);
            md = NULL;
        }
    }
    return md;
}

static bool regex_matches(const pcre2_code *re, const char *s, size_t len)
{
    pcre2_match_data *md = thread_match_data();
    return md != NULL && pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, md, NULL) >= 0;
}

static bool headers_match(const struct rt_route *rt, const struct sl_router_request *req)
{
    for (size_t h = 0; h < rt->n_headers; h++) {
        const struct rt_header *want = &rt->headers[h];
        bool ok = false;
        for (size_t i = 0; i < req->n_headers && !ok; i++) {
            const struct sl_http_header *got = &req->headers[i];
            if (got->name_len != want->name_len ||
                strncasecmp(got->name, want->name, want->name_len) != 0)
                continue;
            for (size_t v = 0; v < want->n_values && !ok; v++) {
                const struct rt_header_value *val = &want->values[v];
                ok = val->re ? regex_matches(val->re, got->value, got->value_len)
                             : (val->len == got->value_len &&
                                strncasecmp(val->text, got->value, val->len) == 0);
            }
        }
        if (!ok)
            return false;
    }
    return true;
}

static bool route_matches(const struct rt_route *rt, const struct sl_router_request *req,
                          const char *host, size_t host_len)
{
    if (rt->n_methods > 0) {
        bool ok = false;
        for (size_t i = 0; i < rt->n_methods && !ok; i++)
            ok = rt->methods[i].len == req->method_len && req->method != NULL &&
                 memcmp(rt->methods[i].text, req->method, req->method_len) == 0;
        if (!ok)
            return false;
    }
    if (rt->n_hosts > 0) {
        if (host == NULL)
            return false;
        bool ok = false;
        for (size_t i = 0; i < rt->n_hosts && !ok; i++)
            ok = host_matches(&rt->hosts[i], host, host_len);
        if (!ok)
            return false;
    }
    const struct sl_route *r = rt->route;
    if (r->n_snis > 0) {
        if (req->sni == NULL || req->sni_len == 0)
            return false;
        bool ok = false;
        for (size_t i = 0; i < r->n_snis && !ok; i++)
            ok = sni_matches(r->snis[i], req->sni, req->sni_len);
        if (!ok)
            return false;
    }
    return rt->n_headers == 0 || headers_match(rt, req);
}

/* Does entry e match? For a regex path, fill the captures of m. */
static bool entry_matches(const struct rt_entry *e, const struct sl_router_request *req,
                          const char *path, size_t path_len, const char *host, size_t host_len,
                          struct sl_router_match *m)
{
    if (!route_matches(e->rt, req, host, host_len))
        return false;
    if (e->re == NULL)
        return true;
    pcre2_match_data *md = thread_match_data();
    if (md == NULL)
        return false;
    int rc = pcre2_match(e->re, (PCRE2_SPTR)path, path_len, 0, 0, md, NULL);
    if (rc < 0)
        return false;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t groups = 0;
    (void)pcre2_pattern_info(e->re, PCRE2_INFO_CAPTURECOUNT, &groups);
    if (groups > SL_ROUTER_MAX_CAPTURES)
        groups = SL_ROUTER_MAX_CAPTURES;
    /* groups past rc - 1, and those that did not take part, are unset */
    for (uint32_t i = 1; i <= groups; i++) {
        bool set = i < (uint32_t)rc && ov[2 * i] != PCRE2_UNSET;
        m->captures[i - 1].start = set ? ov[2 * i] : SIZE_MAX;
        m->captures[i - 1].len = set ? ov[2 * i + 1] - ov[2 * i] : 0;
    }
    m->n_captures = groups;
    m->matched_prefix_len = ov[1]; /* Kong strips the whole match */
    return true;
}

/* The path and host a lookup compares ("example.com." names the same host
 * as "example.com"). */
static void request_parts(const struct sl_router_request *req, const char **path, size_t *path_len,
                          const char **host, size_t *host_len)
{
    *path = req->path != NULL ? req->path : "";
    *path_len = req->path != NULL ? req->path_len : 0;
    *host = req->host;
    *host_len = req->host != NULL ? req->host_len : 0;
    if (*host != NULL && *host_len > 1 && (*host)[*host_len - 1] == '.')
        (*host_len)--;
}

bool sl_router_find(const struct sl_router *router, const struct sl_router_request *req,
                    struct sl_router_match *match)
{
    if (router == NULL || req == NULL)
        return false;
    const char *path, *host;
    size_t path_len, host_len;
    request_parts(req, &path, &path_len, &host, &host_len);

    struct sl_router_match tmp, best;
    const struct rt_entry *winner = NULL;
    memset(&best, 0, sizeof best);

    /* plain prefixes: one bucket per prefix length of the request path */
    size_t max = path_len < router->max_prefix_len ? path_len : router->max_prefix_len;
    uint64_t hash = HASH_INIT;
    size_t mask = router->n_buckets - 1;
    for (size_t len = 1; len <= max && router->n_buckets > 0; len++) {
        hash = hash_step(hash, (unsigned char)path[len - 1]);
        size_t slot = hash & mask;
        const struct prefix_bucket *b = NULL;
        while (router->buckets[slot].prefix != NULL) {
            const struct prefix_bucket *c = &router->buckets[slot];
            if (c->hash == hash && c->len == len && memcmp(c->prefix, path, len) == 0) {
                b = c;
                break;
            }
            slot = (slot + 1) & mask;
        }
        if (b == NULL)
            continue;
        for (size_t k = 0; k < b->count; k++) {
            const struct rt_entry *e = router->bucket_entries[b->first + k];
            if (winner != NULL && e->rank >= winner->rank)
                break; /* the rest of this bucket ranks lower still */
            memset(&tmp, 0, sizeof tmp);
            if (entry_matches(e, req, path, path_len, host, host_len, &tmp)) {
                winner = e;
                if (e->re == NULL)
                    tmp.matched_prefix_len = e->path_len;
                best = tmp;
                break;
            }
        }
    }
    /* regex paths and routes without paths */
    for (size_t k = 0; k < router->n_others; k++) {
        const struct rt_entry *e = router->others[k];
        if (winner != NULL && e->rank >= winner->rank)
            break;
        memset(&tmp, 0, sizeof tmp);
        if (entry_matches(e, req, path, path_len, host, host_len, &tmp)) {
            winner = e;
            best = tmp;
            break;
        }
    }
    if (winner == NULL)
        return false;
    if (match != NULL) {
        *match = best;
        match->route = winner->rt->route;
        match->service = winner->rt->route->service;
        match->regex = winner->re;
    }
    return true;
}

bool sl_router_find_linear(const struct sl_router *router, const struct sl_router_request *req,
                           struct sl_router_match *match)
{
    if (router == NULL || req == NULL)
        return false;
    const char *path, *host;
    size_t path_len, host_len;
    request_parts(req, &path, &path_len, &host, &host_len);
    for (size_t i = 0; i < router->n_entries; i++) {
        const struct rt_entry *e = &router->entries[i];
        if (e->path != NULL && (path_len < e->path_len || memcmp(path, e->path, e->path_len) != 0))
            continue;
        struct sl_router_match m;
        memset(&m, 0, sizeof m);
        if (!entry_matches(e, req, path, path_len, host, host_len, &m))
            continue;
        if (e->path != NULL)
            m.matched_prefix_len = e->path_len;
        m.route = e->rt->route;
        m.service = e->rt->route->service;
        m.regex = e->re;
        if (match != NULL)
            *match = m;
        return true;
    }
    return false;
}

long sl_router_capture_by_name(const struct sl_router_match *match, const char *name)
{
    if (match == NULL || match->regex == NULL)
        return -1;
    int n = pcre2_substring_number_from_name((const pcre2_code *)match->regex, (PCRE2_SPTR)name);
    if (n <= 0 || (size_t)n > match->n_captures)
        return -1;
    return n - 1;
}

struct out_buf {
    char *p;
    size_t size, len;
    bool overflow;
};

static void put(struct out_buf *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->size - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

/*
 * Kong's path_handling v0 (kong/router/utils.lua, get_upstream_uri, with the
 * postfix computed as in kong/router/atc.lua).
 */
long sl_router_upstream_path(const struct sl_router_match *match, const char *path, size_t path_len,
                             char *out, size_t out_size)
{
    if (out == NULL || out_size == 0)
        return -1;
    if (path == NULL || path_len == 0) {
        path = "/";
        path_len = 1;
    }
    const struct sl_service *svc = match != NULL ? match->service : NULL;
    const char *base = svc != NULL && svc->path != NULL ? svc->path : "/";
    size_t base_len = strlen(base);
    bool strip = match != NULL && match->route != NULL && match->route->strip_path;

    /* The part after the matched prefix (strip_path), else after the first "/". */
    const char *post = path;
    size_t post_len = path_len;
    size_t prefix = match != NULL ? match->matched_prefix_len : 0;
    if (strip && prefix > 0 && prefix <= path_len) {
        post += prefix;
        post_len -= prefix;
    } else if (path[0] == '/') {
        post++;
        post_len--;
    }
    /* A postfix that starts with dot segments must not climb out of base. */
    if ((post_len == 1 && post[0] == '.') || (post_len == 2 && memcmp(post, "..", 2) == 0)) {
        post_len = 0;
    } else if (post_len >= 2 && memcmp(post, "./", 2) == 0) {
        post += 2;
        post_len -= 2;
    } else if (post_len >= 3 && memcmp(post, "../", 3) == 0) {
        post += 3;
        post_len -= 3;
    }

    struct out_buf o = {out, out_size, 0, false};
    bool base_slash = base[base_len - 1] == '/';
    bool req_slash = path[path_len - 1] == '/';
    if (base_slash) {
        if (!strip) {
            put(&o, base, base_len);
            put(&o, path + 1, path_len - 1);
        } else if (post_len == 0) {
            if (base_len == 1 || req_slash)
                put(&o, base, base_len);
            else
                put(&o, base, base_len - 1);
        } else if (post[0] == '/') {
            put(&o, base, base_len - 1);
            put(&o, post, post_len);
        } else {
            put(&o, base, base_len);
            put(&o, post, post_len);
        }
    } else {
        if (!strip) {
            put(&o, base, base_len);
            if (!(path_len == 1 && path[0] == '/'))
                put(&o, path, path_len);
        } else if (post_len == 0) {
            put(&o, base, base_len);
            if (path_len > 1 && req_slash)
                put(&o, "/", 1);
        } else if (post[0] == '/') {
            put(&o, base, base_len);
            put(&o, post, post_len);
        } else {
            put(&o, base, base_len);
            put(&o, "/", 1);
            put(&o, post, post_len);
        }
    }
    if (o.overflow)
        return -1;
    out[o.len] = '\0';
    return (long)o.len;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool is_unreserved(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

long sl_router_normalize_path(const char *path, size_t len, char *out, size_t out_size)
{
    if (len == 0 || path[0] != '/')
        return -1;
    if (out_size < len + 1)
        return -2;
    /* pass 1: percent-decoding of unreserved characters, into out */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '%') {
            out[n++] = path[i];
            continue;
        }
        if (i + 2 >= len)
            return -1; /* truncated "%X" */
        int hi = hex_value(path[i + 1]), lo = hex_value(path[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        unsigned char decoded = (unsigned char)(hi * 16 + lo);
        if (is_unreserved(decoded)) {
            out[n++] = (char)decoded;
        } else {
            static const char digits[] = "0123456789ABCDEF";
            out[n++] = '%';
            out[n++] = digits[hi];
            out[n++] = digits[lo];
        }
        i += 2;
    }
    /* pass 2, in place: merge "//" and remove dot segments (RFC 3986
     * 5.2.4). Each kept segment is written as "/seg", so the write index
     * never passes the read index. */
    size_t o = 0, r = 0;
    while (r < n) {
        while (r + 1 < n && out[r + 1] == '/')
            r++; /* out[r] is the "/" that starts a segment */
        size_t seg = r + 1, end = seg;
        while (end < n && out[end] != '/')
            end++;
        size_t seg_len = end - seg;
        bool last = end >= n;
        if (seg_len == 1 && out[seg] == '.') {
            if (last)
                out[o++] = '/'; /* "/a/." -> "/a/" */
        } else if (seg_len == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--; /* drop the previous segment ... */
            if (o > 0)
                o--; /* ... and its "/" */
            if (last)
                out[o++] = '/'; /* "/a/b/.." -> "/a/" */
        } else {
            out[o++] = '/';
            memmove(out + o, out + seg, seg_len);
            o += seg_len;
        }
        r = end;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return (long)o;
}
