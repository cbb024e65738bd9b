/*
 * Routes: Kong's matching fields (paths, hosts, methods, headers, snis),
 * checked here so that the router never meets a value it cannot use
 * (regexes are compiled once with PCRE2 to be refused at their position).
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "http1.h"

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Routes                                                                   */
/* ------------------------------------------------------------------------ */

/* A regular expression the router will compile (PCRE2): refuse it here,
 * at its position, when it does not compile. */
static bool check_regex(struct loader *L, const struct sl_conf_value *at, const char *what,
                        const char *pattern, uint32_t options)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options | PCRE2_UTF,
                                   &code, &offset, NULL);
    if (re != NULL) {
        pcre2_code_free(re);
        return true;
    }
    char msg[160], q[100];
    if (pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg) < 0)
        snprintf(msg, sizeof msg, "error %d", code);
    return conf_fail(L, at, "invalid regex %s '%s': %s at offset %zu", what,
                     conf_excerpt(q, pattern), msg, (size_t)offset);
}

static bool route_paths(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!conf_read_string_list(L, val, &r->paths, &r->n_paths))
        return false;
    for (size_t i = 0; i < r->n_paths; i++) {
        const char *p = r->paths[i];
        const struct sl_conf_value *at = val->items[i];
        char q[100];
        if (p[0] == '~' || (L->legacy_paths && p[0] == '/' && conf_legacy_regex_path(p))) {
            /* Kong anchors a path regex at the start only */
            const char *pattern = p[0] == '~' ? p + 1 : p;
            if (pattern[0] != '/')
                return conf_fail(L, at,
                                 "invalid path '%s': should start with: / (fixed path) or ~/ "
                                 "(regex path)",
                                 conf_excerpt(q, p));
            if (!check_regex(L, at, "path", pattern, PCRE2_ANCHORED))
                return false;
            if (p[0] != '~') {
                /* pre-3.0 file: store it the 3.0 way, so nothing after the
                 * loader needs Kong's legacy heuristic */
                size_t n = strlen(p);
                char *tilde = conf_alloc(L, n + 2);
                if (tilde == NULL)
                    return false;
                tilde[0] = '~';
                memcpy(tilde + 1, p, n + 1);
                r->paths[i] = tilde;
            }
            continue;
        }
        const char *why = conf_path_problem(p);
        if (why != NULL)
            return conf_fail(L, at, "invalid path '%s': %s", conf_excerpt(q, p), why);
    }
    return true;
}

/* headers: {name: [values]} (or one string); Kong: no "host" (that is
 * what hosts are for), a value "~*re" is a case-insensitive regex. */
static bool route_headers(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!conf_expect_type(L, val, SL_CONF_MAP))
        return false;
    r->headers = conf_alloc(L, (val->n_items + 1) * sizeof *r->headers);
    if (r->headers == NULL)
        return false;
    for (size_t i = 0; i < val->n_items; i++) {
        const struct sl_conf_value *k = val->keys[i], *v = val->items[i];
        struct sl_route_header *h = &r->headers[i];
        char q[100];
        if (k->text_len == 0)
            return conf_fail(L, k, "invalid header name ''");
        for (size_t j = 0; j < k->text_len; j++)
            if (!sl_http_is_tchar((unsigned char)k->text[j]))
                return conf_fail(L, k, "invalid header name '%s'", conf_excerpt(q, k->text));
        if ((h->name = conf_strdup(L, k->text)) == NULL)
            return false;
        for (char *c = h->name; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        if (strcmp(h->name, "host") == 0)
            return conf_fail(L, k,
                             "cannot contain 'host' header, which must be specified in the 'hosts' "
                             "attribute");
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->headers[j].name, h->name) == 0)
                return conf_fail(L, k, "duplicate header '%s'", conf_excerpt(q, h->name));
        if (v->type == SL_CONF_STRING) {
            h->values = conf_alloc(L, 2 * sizeof *h->values);
            if (h->values == NULL || (h->values[0] = conf_strdup(L, v->text)) == NULL)
                return false;
            h->n_values = 1;
        } else if (!conf_read_string_list(L, v, &h->values, &h->n_values)) {
            return false;
        }
        if (h->n_values == 0)
            return conf_fail(L, v, "header '%s' needs at least one value",
                             conf_excerpt(q, h->name));
        for (size_t j = 0; j < h->n_values; j++) {
            const char *hv = h->values[j];
            const struct sl_conf_value *at = v->type == SL_CONF_SEQ ? v->items[j] : v;
            for (const char *c = hv; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\t')
                    return conf_fail(L, at,
                                     "invalid value for header '%s': control characters are "
                                     "not allowed",
                                     conf_excerpt(q, h->name));
            if (strncmp(hv, "~*", 2) == 0 &&
                !check_regex(L, at, "header value", hv + 2, PCRE2_CASELESS))
                return false;
        }
    }
    r->n_headers = val->n_items;
    return true;
}

static bool route_snis(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                       const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!conf_read_string_list(L, val, &r->snis, &r->n_snis))
        return false;
    for (size_t i = 0; i < r->n_snis; i++) {
        char *h = r->snis[i];
        char q[100];
        for (char *c = h; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        size_t n = strlen(h);
        bool leading = n > 2 && h[0] == '*' && h[1] == '.';
        bool trailing = n > 2 && h[n - 1] == '*' && h[n - 2] == '.';
        const char *name = leading ? h + 2 : h;
        size_t name_len = leading || trailing ? n - 2 : n;
        if (!conf_valid_hostname(name, name_len) || memchr(name, '*', name_len) != NULL)
            return conf_fail(L, val->items[i], "invalid SNI '%s'", conf_excerpt(q, h));
        struct in_addr v4;
        if (inet_pton(AF_INET, h, &v4) == 1) /* Kong's typedefs.sni; RFC 6066 section 3 */
            return conf_fail(L, val->items[i], "invalid SNI '%s': must not be an IP",
                             conf_excerpt(q, h));
    }
    return true;
}

static bool route_regex_priority(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    long long n;
    if (!conf_read_int(L, val, INT_MIN, INT_MAX, &n))
        return false;
    ((struct sl_route *)e->obj)->regex_priority = (int)n;
    return true;
}

static bool route_hosts(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!conf_read_string_list(L, val, &r->hosts, &r->n_hosts))
        return false;
    for (size_t i = 0; i < r->n_hosts; i++) {
        char *h = r->hosts[i];
        const struct sl_conf_value *at = val->items[i];
        size_t n = strlen(h);
        char q[100];
        for (size_t j = 0; j < n; j++)
            if (h[j] >= 'A' && h[j] <= 'Z')
                h[j] = (char)(h[j] - 'A' + 'a');
        const char *star = strchr(h, '*');
        if (star != NULL) {
            if (strchr(star + 1, '*') != NULL)
                return conf_fail(L, at, "invalid host '%s': only one wildcard is allowed",
                                 conf_excerpt(q, h));
            bool leading = n > 2 && h[0] == '*' && h[1] == '.';
            bool trailing = n > 2 && h[n - 1] == '*' && h[n - 2] == '.';
            if (!leading && !trailing)
                return conf_fail(L, at,
                                 "invalid host '%s': the wildcard must be the leftmost or the "
                                 "rightmost label",
                                 conf_excerpt(q, h));
            if (!conf_valid_hostname(leading ? h + 2 : h, n - 2))
                return conf_fail(L, at, "invalid host '%s'", conf_excerpt(q, h));
            continue;
        }
        if (h[0] == '[') {
            /* IPv6 literal: stored without brackets, as the proxy passes the
             * request host (the Host header's port and brackets removed). */
            if (n > 2 && h[n - 1] == ']' && conf_valid_ipv6(h + 1, n - 2)) {
                memmove(h, h + 1, n - 2);
                h[n - 2] = '\0';
                continue;
            }
            if (strstr(h, "]:") != NULL)
                return conf_fail(L, at, "hosts with a port are not supported yet");
            return conf_fail(L, at, "invalid host '%s'", conf_excerpt(q, h));
        }
        if (conf_valid_ipv6(h, n))
            continue;
        if (strchr(h, ':') != NULL)
            return conf_fail(L, at, "hosts with a port are not supported yet");
        if (!conf_valid_hostname(h, n))
            return conf_fail(L, at, "invalid host '%s'", conf_excerpt(q, h));
    }
    return true;
}

static bool route_methods(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!conf_read_string_list(L, val, &r->methods, &r->n_methods))
        return false;
    for (size_t i = 0; i < r->n_methods; i++) {
        char *m = r->methods[i];
        char q[100];
        for (char *c = m; *c; c++) {
            if (!sl_http_is_tchar((unsigned char)*c))
                return conf_fail(L, val->items[i], "invalid method '%s'", conf_excerpt(q, m));
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
        }
    }
    return true;
}

static bool route_protocols(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    return conf_read_protocols(L, val, false, &((struct sl_route *)e->obj)->protocols);
}

static bool route_service(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    if (e->parent_service != NONE)
        return conf_fail(L, key,
                         "conflicting values: this route is nested under a service already");
    return conf_read_ref(L, e, REF_SERVICE, val, OWNER_ROUTE);
}

static bool route_path_handling(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                                const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by conf_read_string() */
    if (!conf_read_string(L, val, &s))
        return false;
    if (strcmp(s, "v0") == 0)
        return true;
    if (strcmp(s, "v1") == 0)
        return conf_fail(L, val, "path_handling 'v1' is not supported yet");
    char q[100];
    return conf_fail(L, val, "invalid path_handling '%s': expected v0 or v1", conf_excerpt(q, s));
}

static bool route_redirect_code(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                                const struct sl_conf_value *val)
{
    long long code;
    if (!conf_read_int(L, val, 0, 999, &code))
        return false;
    if (code != 426 && code != 301 && code != 302 && code != 307 && code != 308)
        return conf_fail(L, val,
                         "invalid https_redirect_status_code %lld: expected 426, 301, 302, "
                         "307 or 308",
                         code);
    ((struct sl_route *)e->obj)->https_redirect_status_code = (int)code;
    return true;
}

static bool route_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    return conf_read_plugins(L, val, NONE, e->index, NONE);
}

#define ROUTE_FIELD(n, k, m)                                                                       \
    {                                                                                              \
        n, k, offsetof(struct sl_route, m), 0, 0, NULL                                             \
    }
static const struct field route_fields[] = {
    ROUTE_FIELD("name", FK_NAME, name),
    ROUTE_FIELD("id", FK_UUID, id),
    {"paths", FK_CUSTOM, 0, 0, 0, route_paths},
    {"hosts", FK_CUSTOM, 0, 0, 0, route_hosts},
    {"methods", FK_CUSTOM, 0, 0, 0, route_methods},
    ROUTE_FIELD("strip_path", FK_BOOL, strip_path),
    ROUTE_FIELD("preserve_host", FK_BOOL, preserve_host),
    {"protocols", FK_CUSTOM, 0, 0, 0, route_protocols},
    {"service", FK_CUSTOM, 0, 0, 0, route_service},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"regex_priority", FK_CUSTOM, 0, 0, 0, route_regex_priority},
    {"path_handling", FK_CUSTOM, 0, 0, 0, route_path_handling},
    {"https_redirect_status_code", FK_CUSTOM, 0, 0, 0, route_redirect_code},
    /* sluice always streams; Kong's buffering flags change no semantics. */
    {"request_buffering", FK_BOOL, NONE, 0, 0, NULL},
    {"response_buffering", FK_BOOL, NONE, 0, 0, NULL},
    {"headers", FK_CUSTOM, 0, 0, 0, route_headers},
    {"snis", FK_CUSTOM, 0, 0, 0, route_snis},
    {"sources", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"destinations", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"expression", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"priority", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"plugins", FK_CUSTOM, 0, 0, 0, route_plugins},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof route_fields / sizeof route_fields[0] <= MAX_FIELDS, "raise MAX_FIELDS");

bool conf_read_routes(struct loader *L, const struct sl_conf_value *seq, size_t service)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct route_rec *rec = conf_vec_push(&L->routes);
        if (rec == NULL)
            return conf_fail_oom(L);
        size_t index = L->routes.n - 1;
        rec->service = service;
        struct sl_route *r = &rec->r;
        r->strip_path = true;
        r->preserve_host = false;
        r->protocols = SL_PROTO_HTTP | SL_PROTO_HTTPS;
        r->https_redirect_status_code = 426;
        r->index = index;
        r->line = seq->items[i]->line;
        r->column = seq->items[i]->column;
        struct entity e = ENTITY("route", r, index, route_fields, service, NONE, NONE);
        /* Nested plugins refer to this route by index: the vector may move,
         * so conf_read_entity() works on a stable copy that is written back. */
        struct sl_route tmp = *r;
        e.obj = &tmp;
        bool ok = conf_read_entity(L, &e, seq->items[i]);
        rec = conf_vec_at(&L->routes, index);
        rec->r = tmp;
        if (!ok)
            return false;
        r = &rec->r;
        if (service == NONE && conf_seen(&e, "service") == NULL)
            return conf_fail(L, e.node,
                             "route needs a 'service' (routes without a service are not "
                             "supported yet)");
        /* Kong's entity checks */
        if (r->n_snis > 0 && !(r->protocols & SL_PROTO_HTTPS))
            return conf_fail(
                L, conf_value_of(&e, "snis"),
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or "
                "'tls_passthrough'");
        /* Kong's http subschema (routes_subschemas.lua): with https among
         * the protocols, snis count too (a plain-http request never matches
         * a route that has snis: it carries no SNI) */
        if (r->n_paths == 0 && r->n_hosts == 0 && r->n_methods == 0 && r->n_headers == 0 &&
            (r->n_snis == 0 || !(r->protocols & SL_PROTO_HTTPS)))
            return conf_fail(L, e.node,
                             (r->protocols & SL_PROTO_HTTPS)
                                 ? "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' "
                                   "when 'protocols' is 'https'"
                                 : "must set one of 'methods', 'hosts', 'headers', 'paths' when "
                                   "'protocols' is 'http'");
        if (!conf_unique(L, NS_ROUTE_NAME, "route name", r->name, conf_value_of(&e, "name"),
                         index) ||
            !conf_unique(L, NS_ROUTE_ID, "route id", r->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}
