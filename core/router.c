/*
 * Router: Kong's traditional_compatible priority over methods, hosts and
 * plain path prefixes, and Kong's path_handling v0 for the upstream path.
 *
 * sl_router_build() expands every route into one entry per path (Kong splits
 * a route with several paths the same way, so that each prefix ranks by its
 * own length), sorts the entries by priority once, and sl_router_find() is a
 * single scan in that order that stops at the first match. Nothing is
 * allocated while routing; the router only points into the config snapshot,
 * which outlives it.
 *
 * Priority, highest first (kong/router/transform.lua, get_priority):
 *   1. number of fields set among methods, hosts, paths;
 *   2. the route has hosts and none of them is a wildcard;
 *   3. length of the plain path prefix;
 *   4. order in the configuration (then order of the path in the route).
 */
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* What is shared by the entries of one route. */
struct rt_route {
    const struct sl_route *route;
    const struct rt_method *methods;
    size_t n_methods;
    const struct rt_host *hosts;
    size_t n_hosts;
};

struct rt_entry {
    const struct rt_route *rt;
    const char *path; /* NULL: the route has no paths */
    size_t path_len;
    unsigned weight;  /* number of fields set */
    bool plain_hosts; /* has hosts, none with a wildcard */
    size_t order;     /* route index, then path index: ties keep config order */
};

struct sl_router {
    struct rt_entry *entries;
    size_t n_entries;
    struct rt_route *routes;
    struct rt_host *hosts;
    struct rt_method *methods;
};

static int entry_cmp(const void *pa, const void *pb)
{
    const struct rt_entry *a = pa, *b = pb;
    if (a->weight != b->weight)
        return a->weight > b->weight ? -1 : 1;
    if (a->plain_hosts != b->plain_hosts)
        return a->plain_hosts ? -1 : 1;
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
    free(router->entries);
    free(router->routes);
    free(router->hosts);
    free(router->methods);
    free(router);
}

/* Routes whose service is missing or disabled are not routable (as in Kong). */
static bool routable(const struct sl_route *r)
{
    return r->service != NULL && r->service->enabled;
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
    if (!router->routes || !router->entries || !router->hosts || !router->methods) {
        sl_router_free(router);
        return NULL;
    }

    size_t ri = 0, hi = 0, mi = 0, ei = 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct sl_route *r = &cfg->routes[i];
        if (!routable(r))
            continue;
        struct rt_route *rt = &router->routes[ri++];
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

        unsigned weight = (r->n_methods > 0) + (r->n_hosts > 0) + (r->n_paths > 0);
        size_t n_paths = r->n_paths > 0 ? r->n_paths : 1;
        for (size_t p = 0; p < n_paths; p++) {
            struct rt_entry *e = &router->entries[ei++];
            e->rt = rt;
            e->weight = weight;
            e->plain_hosts = plain;
            e->order = ei; /* routes and their paths in config order */
            if (r->n_paths > 0) {
                e->path = r->paths[p];
                e->path_len = strlen(e->path);
            }
        }
    }
    router->n_entries = ei;
    qsort(router->entries, router->n_entries, sizeof *router->entries, entry_cmp);
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
    return true;
}

bool sl_router_find(const struct sl_router *router, const struct sl_router_request *req,
                    struct sl_router_match *match)
{
    if (router == NULL || req == NULL)
        return false;
    const char *path = req->path != NULL ? req->path : "";
    size_t path_len = req->path != NULL ? req->path_len : 0;
    const char *host = req->host;
    size_t host_len = req->host != NULL ? req->host_len : 0;
    /* "example.com." names the same host as "example.com" */
    if (host != NULL && host_len > 1 && host[host_len - 1] == '.')
        host_len--;

    for (size_t i = 0; i < router->n_entries; i++) {
        const struct rt_entry *e = &router->entries[i];
        /* Raw prefix, as Kong: "/foo" matches "/foobar". */
        if (e->path != NULL && (path_len < e->path_len || memcmp(path, e->path, e->path_len) != 0))
            continue;
        if (!route_matches(e->rt, req, host, host_len))
            continue;
        if (match != NULL) {
            match->route = e->rt->route;
            match->service = e->rt->route->service;
            match->matched_prefix_len = e->path_len;
        }
        return true;
    }
    return false;
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
