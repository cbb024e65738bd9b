/*
 * Router: Kong's route priority (traditional_compatible) over methods, hosts
 * and plain prefixes, and the upstream path of path_handling v0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "router.h"
#include "unit.h"

static struct sl_config *load(const char *yaml)
{
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load_buffer(yaml, strlen(yaml), "r.yml", "gateway", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    return cfg;
}

/* Name of the route for (method, host, path), or NULL when none matches. */
static const char *route_for(const struct sl_router *rt, const char *method, const char *host,
                             const char *path, size_t *prefix_len)
{
    struct sl_router_request req = {
        .method = method,
        .method_len = method ? strlen(method) : 0,
        .host = host,
        .host_len = host ? strlen(host) : 0,
        .path = path,
        .path_len = path ? strlen(path) : 0,
    };
    struct sl_router_match m;
    memset(&m, 0xa5, sizeof m);
    if (!sl_router_find(rt, &req, &m))
        return NULL;
    ck_assert_ptr_eq(m.service, m.route->service);
    if (prefix_len != NULL)
        *prefix_len = m.matched_prefix_len;
    return m.route->name;
}

static const char *const catalog_yaml = "_format_version: \"3.0\"\n"
                                        "services:\n"
                                        "  - name: s\n"
                                        "    url: http://127.0.0.1:9001\n"
                                        "    routes:\n"
                                        "      - name: root\n"
                                        "        paths: [/]\n"
                                        "      - name: api\n"
                                        "        paths: [/api]\n"
                                        "      - name: api-v1\n"
                                        "        paths: [/api/v1]\n"
                                        "      - name: api-get\n"
                                        "        methods: [GET]\n"
                                        "        paths: [/api]\n"
                                        "      - name: host-plain\n"
                                        "        hosts: [example.com]\n"
                                        "        paths: [/]\n"
                                        "      - name: host-wild\n"
                                        "        hosts: [\"*.example.com\"]\n"
                                        "        paths: [/]\n"
                                        "      - name: multi\n"
                                        "        paths: [/a, /abc/def]\n"
                                        "      - name: full\n"
                                        "        methods: [PUT]\n"
                                        "        hosts: [\"*.example.com\"]\n"
                                        "        paths: [/x]\n"
                                        "  - name: off\n"
                                        "    url: http://127.0.0.1:9002\n"
                                        "    enabled: false\n"
                                        "    routes:\n"
                                        "      - name: disabled\n"
                                        "        methods: [GET]\n"
                                        "        paths: [/disabled]\n";

static const char *const hosts_yaml = "_format_version: \"3.0\"\n"
                                      "services:\n"
                                      "  - name: s\n"
                                      "    url: http://127.0.0.1:9001\n"
                                      "    routes:\n"
                                      "      - name: wild-left\n"
                                      "        hosts: [\"*.example.com\"]\n"
                                      "      - name: plain\n"
                                      "        hosts: [api.example.com, other.test]\n"
                                      "      - name: wild-right\n"
                                      "        hosts: [\"example.*\"]\n"
                                      "      - name: mixed\n"
                                      "        hosts: [mixed.test, \"*.mixed.test\"]\n"
                                      "      - name: methods-only\n"
                                      "        methods: [DELETE, PURGE]\n"
                                      "      - name: tie-a\n"
                                      "        paths: [/tie]\n"
                                      "      - name: tie-b\n"
                                      "        paths: [/tie]\n"
                                      "      - name: hosts-and-paths\n"
                                      "        hosts: [\"*.example.com\"]\n"
                                      "        paths: [/deep]\n"
                                      "      - name: v6\n"
                                      "        hosts: [\"[::1]\", \"2001:DB8::2\"]\n";

static const struct route_case {
    const char *yaml_name; /* "catalog" or "hosts" */
    const char *method, *host, *path;
    const char *want; /* NULL: 404 */
    size_t prefix_len;
} route_cases[] = {
    /* more fields beat fewer: methods+paths over paths only, whatever the lengths */
    {"catalog", "GET", NULL, "/api/v1/users", "api-get", 4},
    {"catalog", "POST", NULL, "/api/v1/users", "api-v1", 7},
    /* longest plain prefix among equals */
    {"catalog", "POST", NULL, "/api/v2", "api", 4},
    {"catalog", "POST", NULL, "/api", "api", 4},
    /* raw prefix: /api matches /apix (Kong) */
    {"catalog", "POST", NULL, "/apix", "api", 4},
    {"catalog", "POST", NULL, "/ap", "multi", 2}, /* "/a" of route multi */
    {"catalog", "GET", NULL, "/", "root", 1},
    {"catalog", "GET", NULL, "/zzz/else", "root", 1},
    /* hosts+paths beat paths; plain host beats wildcard host */
    {"catalog", "GET", "example.com", "/api/v1", "host-plain", 1},
    {"catalog", "GET", "EXAMPLE.com", "/", "host-plain", 1},
    {"catalog", "GET", "www.example.com", "/", "host-wild", 1},
    {"catalog", "GET", "a.b.example.com", "/", "host-wild", 1},
    {"catalog", "GET", "example.org", "/", "root", 1},
    /* three fields win over everything */
    {"catalog", "PUT", "www.example.com", "/x/y", "full", 2},
    {"catalog", "put", "www.example.com", "/x/y", "host-wild", 1}, /* methods are case-sensitive */
    /* every path of a route ranks by its own length */
    {"catalog", "GET", NULL, "/abc/def/g", "multi", 8},
    {"catalog", "GET", NULL, "/abc", "multi", 2},
    {"catalog", "GET", NULL, "/b", "root", 1},
    /* routes of a disabled service are not routable */
    {"catalog", "GET", NULL, "/disabled", "root", 1},

    /* hosts only */
    {"hosts", "GET", "api.example.com", "/", "plain", 0},
    {"hosts", "GET", "other.test", "/", "plain", 0},
    {"hosts", "GET", "x.api.example.com", "/", "wild-left", 0},
    {"hosts", "GET", "example.com", "/", "wild-right", 0}, /* "*.example.com" needs a label */
    {"hosts", "GET", "example.co.uk", "/", "wild-right", 0},
    {"hosts", "GET", "example.com.", "/", "wild-right", 0}, /* trailing dot of an FQDN */
    {"hosts", "GET", "example", "/", NULL, 0},
    {"hosts", "GET", "notexample.com", "/", NULL, 0},
    {"hosts", "GET", "Api.Example.COM", "/", "plain", 0},
    /* a route with one wildcard host is not "plain hosts only" */
    {"hosts", "GET", "mixed.test", "/", "mixed", 0},
    {"hosts", "GET", "a.mixed.test", "/", "mixed", 0},
    /* hosts+paths (2 fields) beat hosts (1) */
    {"hosts", "GET", "api.example.com", "/deeper", "hosts-and-paths", 5},
    {"hosts", "GET", "api.example.com", "/dee", "plain", 0},
    /* IPv6 literals, as the proxy passes them: no brackets */
    {"hosts", "GET", "::1", "/", "v6", 0},
    {"hosts", "GET", "2001:db8::2", "/", "v6", 0},
    {"hosts", "GET", "[::1]", "/", NULL, 0},
    /* methods only */
    {"hosts", "DELETE", NULL, "/whatever", "methods-only", 0},
    {"hosts", "PURGE", "unknown.host", "/", "methods-only", 0},
    {"hosts", "DELET", NULL, "/", NULL, 0},
    {"hosts", "DELETES", NULL, "/", NULL, 0},
    /* equal priority: configuration order */
    {"hosts", "GET", NULL, "/tie/1", "tie-a", 4},
    /* no match at all */
    {"hosts", "GET", NULL, "/", NULL, 0},
    {"hosts", "GET", "", "/", NULL, 0},
    {"hosts", NULL, NULL, "/", NULL, 0},
};

START_TEST(test_route_table)
{
    const struct route_case *c = &route_cases[_i];
    struct sl_config *cfg = load(strcmp(c->yaml_name, "catalog") == 0 ? catalog_yaml : hosts_yaml);
    struct sl_router *rt = sl_router_build(cfg);
    ck_assert_ptr_nonnull(rt);
    size_t prefix = 12345;
    const char *got = route_for(rt, c->method, c->host, c->path, &prefix);
    if (c->want == NULL) {
        ck_assert_msg(got == NULL, "case %d: %s %s%s matched %s", _i, c->method,
                      c->host ? c->host : "", c->path, got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, c->want) == 0, "case %d: %s %s%s: got %s, want %s",
                      _i, c->method, c->host ? c->host : "", c->path, got ? got : "(none)",
                      c->want);
        ck_assert_uint_eq(prefix, c->prefix_len);
    }
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_router_edges)
{
    /* An empty config routes nothing. */
    struct sl_config *cfg = load("_format_version: \"3.0\"\n");
    struct sl_router *rt = sl_router_build(cfg);
    ck_assert_ptr_nonnull(rt);
    ck_assert_ptr_null(route_for(rt, "GET", "h", "/", NULL));
    sl_router_free(rt);
    sl_config_unref(cfg);

    rt = sl_router_build(NULL);
    ck_assert_ptr_nonnull(rt);
    sl_router_free(rt);
    sl_router_free(NULL);
    ck_assert(!sl_router_find(NULL, NULL, NULL));

    /* The match argument is optional; a NULL path only matches path-less routes. */
    cfg = load(catalog_yaml);
    rt = sl_router_build(cfg);
    struct sl_router_request req = {.method = "GET", .method_len = 3, .path = "/", .path_len = 1};
    ck_assert(sl_router_find(rt, &req, NULL));
    req.path = NULL;
    req.path_len = 0;
    ck_assert(!sl_router_find(rt, &req, NULL));
    /* Lengths are honoured: the strings need not be NUL terminated. */
    struct sl_router_request sliced = {.method = "GETX",
                                       .method_len = 3,
                                       .path = "/api/v1XYZ",
                                       .path_len = 4,
                                       .host = "example.comz",
                                       .host_len = 11};
    struct sl_router_match m;
    ck_assert(sl_router_find(rt, &sliced, &m));
    ck_assert_str_eq(m.route->name, "host-plain");
    sliced.host = NULL;
    sliced.host_len = 0;
    ck_assert(sl_router_find(rt, &sliced, &m));
    ck_assert_str_eq(m.route->name, "api-get");
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

/* Thousands of routes: the ordered scan still finds the right one. */
START_TEST(test_many_routes)
{
    enum { N = 2000 };
    size_t cap = (size_t)N * 96 + 256;
    char *yaml = malloc(cap);
    size_t len = (size_t)snprintf(yaml, cap,
                                  "_format_version: \"3.0\"\nservices:\n  - name: s\n"
                                  "    host: h\n    routes:\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(yaml + len, cap - len,
                                "      - name: r%d\n        paths: [/svc%d/x]\n", i, i);
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load_buffer(yaml, len, "r.yml", "gateway", &err);
    free(yaml);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_router *rt = sl_router_build(cfg);
    ck_assert_ptr_eq(route_for(rt, "GET", NULL, "/svc1999/x/y", NULL), cfg->routes[1999].name);
    /* /svc1/x is not a prefix of /svc10/x: exact prefixes only */
    ck_assert_str_eq(route_for(rt, "GET", NULL, "/svc10/x", NULL), "r10");
    ck_assert_str_eq(route_for(rt, "GET", NULL, "/svc1/x", NULL), "r1");
    ck_assert_ptr_null(route_for(rt, "GET", NULL, "/svc2000/x", NULL));
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Upstream path (Kong path_handling v0)                                      */
/* ------------------------------------------------------------------------ */

static const struct path_case {
    const char *service_path; /* NULL: not set */
    bool strip;
    const char *prefix; /* the matched route path; "" for a route without paths */
    const char *request;
    const char *want;
} path_cases[] = {
    /* the Kong documentation's table */
    {"/s", true, "/p", "/p", "/s"},
    {"/s", true, "/p", "/p/", "/s/"},
    {"/s", true, "/p", "/p/x", "/s/x"},
    {"/s/", true, "/p", "/p/x", "/s/x"},
    {NULL, true, "/p", "/p/x", "/x"},
    {NULL, true, "/p", "/p", "/"},
    {"/s", false, "/p", "/p/x", "/s/p/x"},
    {NULL, false, "/p", "/p/x", "/p/x"},
    /* more of v0 */
    {"/s/", true, "/p", "/p", "/s"}, /* trailing slash kept only if the request had one */
    {"/s/", true, "/p", "/p/", "/s/"},
    {"/s/", false, "/p", "/p/x", "/s/p/x"},
    {"/s/", false, "/p", "/p/x/", "/s/p/x/"},
    {"/s", false, "/p", "/p", "/s/p"},
    {"/s", false, "/", "/", "/s"},
    {"/s/", false, "/", "/", "/s/"},
    {NULL, false, "/", "/", "/"},
    {NULL, true, "/", "/", "/"},
    {NULL, true, "/", "/x/y", "/x/y"},
    {"/s", true, "/", "/x", "/s/x"},
    {"/s", true, "/p", "/pfoo", "/s/foo"}, /* raw prefix: the rest is joined with "/" */
    {NULL, true, "/p", "/pfoo", "/foo"},
    {"/s/", true, "/p", "/pfoo", "/s/foo"},
    {"/s", true, "/p/", "/p/x", "/s/x"},
    {"/s", true, "/p/", "/p/", "/s/"},
    {"/", true, "/p", "/p/x", "/x"},
    /* a route without paths: strip_path strips nothing but the leading "/" */
    {"/s", true, "", "/x", "/s/x"},
    {"/s", true, "", "/", "/s"},
    {"/s", false, "", "/x", "/s/x"},
    {NULL, true, "", "/x/", "/x/"},
    /* dot segments at the start of the rest never climb out of the service path */
    {"/s", true, "/p", "/p..", "/s"},
    {"/s", true, "/p", "/p.", "/s"},
    {"/s", true, "/p", "/p../x", "/s/x"},
    {"/s", true, "/p", "/p./x", "/s/x"},
};

START_TEST(test_upstream_path)
{
    const struct path_case *c = &path_cases[_i];
    struct sl_service svc = {.path = (char *)c->service_path, .enabled = true};
    struct sl_route route = {.strip_path = c->strip, .service = &svc};
    struct sl_router_match m = {
        .route = &route, .service = &svc, .matched_prefix_len = strlen(c->prefix)};
    char out[256];
    long n = sl_router_upstream_path(&m, c->request, strlen(c->request), out, sizeof out);
    ck_assert_msg(n >= 0, "case %d: overflow", _i);
    ck_assert_msg(strcmp(out, c->want) == 0,
                  "case %d: service %s strip %d route %s request %s: got %s, want %s", _i,
                  c->service_path ? c->service_path : "(none)", c->strip, c->prefix, c->request,
                  out, c->want);
    ck_assert_int_eq(n, (long)strlen(c->want));
}
END_TEST

START_TEST(test_upstream_path_limits)
{
    struct sl_service svc = {.path = "/service"};
    struct sl_route route = {.strip_path = true, .service = &svc};
    struct sl_router_match m = {.route = &route, .service = &svc, .matched_prefix_len = 2};
    char out[16];
    /* "/service/abcdef" is 15 bytes + NUL: fits exactly */
    ck_assert_int_eq(sl_router_upstream_path(&m, "/p/abcdef", 9, out, sizeof out), 15);
    ck_assert_str_eq(out, "/service/abcdef");
    ck_assert_int_eq(sl_router_upstream_path(&m, "/p/abcdefg", 10, out, sizeof out), -1);
    ck_assert_int_eq(sl_router_upstream_path(&m, "/p/x", 4, out, 0), -1);
    ck_assert_int_eq(sl_router_upstream_path(&m, "/p/x", 4, NULL, 10), -1);
    /* an empty path is "/" */
    ck_assert_int_eq(sl_router_upstream_path(&m, "", 0, out, sizeof out), 8);
    ck_assert_str_eq(out, "/service");
    /* the path need not be NUL terminated */
    ck_assert_int_eq(sl_router_upstream_path(&m, "/p/x?q=1", 4, out, sizeof out), 10);
    ck_assert_str_eq(out, "/service/x");
}
END_TEST

/* End to end: config -> router -> upstream path, as the proxy will do it. */
START_TEST(test_demo_flow)
{
    struct sl_config *cfg = load("_format_version: \"3.0\"\n"
                                 "services:\n"
                                 "  - name: demo\n"
                                 "    url: http://127.0.0.1:9001\n"
                                 "    routes:\n"
                                 "      - name: root\n"
                                 "        paths: [/]\n"
                                 "        strip_path: false\n"
                                 "      - name: api\n"
                                 "        paths: [/api]\n");
    struct sl_router *rt = sl_router_build(cfg);
    static const struct {
        const char *path, *route, *upstream;
    } cases[] = {
        {"/hello", "root", "/hello"}, {"/", "root", "/"},    {"/api/users", "api", "/users"},
        {"/api", "api", "/"},         {"/api/", "api", "/"}, {"/apix", "api", "/x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sl_router_request req = {.method = "GET",
                                        .method_len = 3,
                                        .path = cases[i].path,
                                        .path_len = strlen(cases[i].path)};
        struct sl_router_match m;
        ck_assert(sl_router_find(rt, &req, &m));
        ck_assert_str_eq(m.route->name, cases[i].route);
        ck_assert_str_eq(m.service->name, "demo");
        char out[64];
        ck_assert_int_ge(sl_router_upstream_path(&m, req.path, req.path_len, out, sizeof out), 0);
        ck_assert_msg(strcmp(out, cases[i].upstream) == 0, "%s: got %s want %s", cases[i].path, out,
                      cases[i].upstream);
    }
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Kong's full priority, headers, snis, regex paths and captures              */
/* ------------------------------------------------------------------------ */

static const char *find_full(const struct sl_router *rt, const char *method, const char *host,
                             const char *path, const struct sl_http_header *hs, size_t n_hs,
                             const char *sni, struct sl_router_match *out)
{
    struct sl_router_request req = {.method = method,
                                    .method_len = strlen(method),
                                    .host = host,
                                    .host_len = host ? strlen(host) : 0,
                                    .path = path,
                                    .path_len = strlen(path),
                                    .headers = hs,
                                    .n_headers = n_hs,
                                    .sni = sni,
                                    .sni_len = sni ? strlen(sni) : 0};
    struct sl_router_match m, lin;
    bool found = sl_router_find(rt, &req, &m);
    bool found_lin = sl_router_find_linear(rt, &req, &lin);
    ck_assert_int_eq(found, found_lin);
    if (!found)
        return NULL;
    ck_assert_ptr_eq(m.route, lin.route);
    if (out)
        *out = m;
    return m.route->name;
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        n, sizeof n - 1, v, sizeof v - 1, 0                                                        \
    }

START_TEST(test_kong_priority_fields)
{
    struct sl_config *cfg =
        load("_format_version: \"3.0\"\n"
             "services:\n  - name: s\n    url: http://127.0.0.1:1\n    routes:\n"
             "      - {name: prefix, paths: [/users]}\n"
             "      - {name: re-low, paths: [\"~/users/\\\\d+$\"], regex_priority: 1}\n"
             "      - {name: re-high, paths: [\"~/users/(?<id>\\\\d+)(?<rest>/.*)?$\"], "
             "regex_priority: 9}\n"
             "      - {name: h1, paths: [/h], headers: {x-a: [\"1\"]}}\n"
             "      - {name: h2, paths: [/h], headers: {x-a: [\"1\"], x-b: [\"~*^b\\\\d$\"]}}\n"
             "      - {name: hm, paths: [/h], headers: {x-a: [\"1\"]}, methods: [PUT]}\n"
             "      - {name: sni, paths: [/s], snis: [\"*.example.com\"]}\n"
             "      - {name: s-plain, paths: [/s]}\n");
    struct sl_router *rt = sl_router_build(cfg);
    ck_assert_ptr_nonnull(rt);
    struct sl_router_match m;
    /* regex beats prefix; then regex_priority */
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/users/42/orders", NULL, 0, NULL, &m), "re-high");
    ck_assert_uint_eq(m.n_captures, 2);
    ck_assert_uint_eq(m.captures[0].start, 7);
    ck_assert_uint_eq(m.captures[0].len, 2);
    ck_assert_uint_eq(m.captures[1].start, 9);
    ck_assert_uint_eq(m.captures[1].len, 7);
    ck_assert_int_eq(sl_router_capture_by_name(&m, "id"), 0);
    ck_assert_int_eq(sl_router_capture_by_name(&m, "rest"), 1);
    ck_assert_int_eq(sl_router_capture_by_name(&m, "nope"), -1);
    ck_assert_uint_eq(m.matched_prefix_len, 16); /* the whole match is stripped */
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/users/42", NULL, 0, NULL, &m), "re-high");
    ck_assert_uint_eq(m.captures[1].start, SIZE_MAX); /* (?<rest>...) did not take part */
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/users/x", NULL, 0, NULL, &m), "prefix");
    ck_assert_ptr_null(m.regex);
    ck_assert_uint_eq(m.n_captures, 0);
    /* more headers first; a ~* value is a case-insensitive regex */
    struct sl_http_header both[] = {HDR("X-A", "1"), HDR("X-B", "B7")};
    struct sl_http_header wrong[] = {HDR("X-A", "1"), HDR("X-B", "xb7")};
    struct sl_http_header one[] = {HDR("x-a", "1")};
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/h", both, 2, NULL, NULL), "h2");
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/h", wrong, 2, NULL, NULL), "h1");
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/h", one, 1, NULL, NULL), "h1");
    ck_assert_ptr_null(find_full(rt, "GET", NULL, "/h", NULL, 0, NULL, NULL));
    /* methods + headers + paths (3 fields) beat headers + paths (2) */
    ck_assert_str_eq(find_full(rt, "PUT", NULL, "/h", both, 2, NULL, NULL), "hm");
    /* snis: a route with snis needs the connection's SNI */
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/s", NULL, 0, NULL, NULL), "s-plain");
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/s", NULL, 0, "api.example.com", NULL), "sni");
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/s", NULL, 0, "example.com", NULL), "s-plain");
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_regex_strip_path)
{
    struct sl_config *cfg =
        load("_format_version: \"3.0\"\n"
             "services:\n  - name: s\n    url: http://127.0.0.1:1/base\n    routes:\n"
             "      - {name: re, paths: [\"~/v\\\\d+/items\"]}\n");
    struct sl_router *rt = sl_router_build(cfg);
    struct sl_router_match m;
    ck_assert_str_eq(find_full(rt, "GET", NULL, "/v12/items/7", NULL, 0, NULL, &m), "re");
    char out[64];
    ck_assert_int_gt(sl_router_upstream_path(&m, "/v12/items/7", 12, out, sizeof out), 0);
    ck_assert_str_eq(out, "/base/7");
    ck_assert_ptr_null(find_full(rt, "GET", NULL, "/x/v12/items", NULL, 0, NULL, NULL));
    sl_router_free(rt);
    sl_config_unref(cfg);
}
END_TEST

/* The index answers exactly as a scan of every entry in priority order. */
START_TEST(test_index_equals_linear_scan)
{
    static const char *const segs[] = {"api", "v1", "v2", "users", "orders", "a", "ab", "abc"};
    static const char *const hosts[] = {"a.example.com", "*.example.com", "example.*", "b.test"};
    static const char *const methods[] = {"GET", "POST", "PUT"};
    unsigned seed = 12345;
#define RND(n) ((seed = seed * 1103515245u + 12345u) >> 16) % (n)
    size_t cap = 1 << 20, len = 0;
    char *yaml = malloc(cap);
    ck_assert_ptr_nonnull(yaml);
    len += (size_t)snprintf(yaml + len, cap - len,
                            "_format_version: \"3.0\"\nservices:\n  - name: s\n"
                            "    url: http://127.0.0.1:1\n    routes:\n");
    for (int i = 0; i < 3000; i++) {
        len += (size_t)snprintf(yaml + len, cap - len, "      - name: r%d\n", i);
        int depth = 1 + (int)RND(3);
        char path[128] = "";
        size_t pl = 0;
        for (int d = 0; d < depth; d++)
            pl += (size_t)snprintf(path + pl, sizeof path - pl, "/%s", segs[RND(8)]);
        bool pathless = false;
        if (RND(10) == 0)
            len += (size_t)snprintf(yaml + len, cap - len,
                                    "        paths: [\"~%s/\\\\d+\"]\n"
                                    "        regex_priority: %u\n",
                                    path, RND(3));
        else if (RND(15) != 0)
            len += (size_t)snprintf(yaml + len, cap - len, "        paths: [\"%s\"]\n", path);
        else
            pathless = true;
        if (RND(3) == 0)
            len +=
                (size_t)snprintf(yaml + len, cap - len, "        hosts: [\"%s\"]\n", hosts[RND(4)]);
        if (pathless || RND(3) == 0)
            len +=
                (size_t)snprintf(yaml + len, cap - len, "        methods: [%s]\n", methods[RND(3)]);
        if (RND(5) == 0)
            len += (size_t)snprintf(yaml + len, cap - len, "        headers: {x-v: [\"%u\"]}\n",
                                    RND(3));
        ck_assert_uint_lt(len, cap - 512);
    }
    struct sl_config *cfg = load(yaml);
    free(yaml);
    struct sl_router *rt = sl_router_build(cfg);
    ck_assert_ptr_nonnull(rt);
    int found = 0;
    for (int i = 0; i < 20000; i++) {
        char path[160] = "";
        size_t pl = 0;
        int depth = 1 + (int)RND(4);
        for (int d = 0; d < depth; d++)
            pl += (size_t)snprintf(path + pl, sizeof path - pl, "/%s", segs[RND(8)]);
        if (RND(3) == 0)
            pl += (size_t)snprintf(path + pl, sizeof path - pl, "/%u", RND(100));
        char v[2] = {(char)('0' + RND(3)), 0};
        struct sl_http_header hs[] = {{"X-V", 3, v, 1, 0}};
        const char *host = RND(4) == 0 ? NULL : RND(2) ? "a.example.com" : "example.org";
        struct sl_router_request req = {.method = methods[RND(3)],
                                        .method_len = 3,
                                        .host = host,
                                        .host_len = host ? strlen(host) : 0,
                                        .path = path,
                                        .path_len = pl,
                                        .headers = hs,
                                        .n_headers = RND(2)};
        req.method_len = strlen(req.method);
        struct sl_router_match a, b;
        bool fa = sl_router_find(rt, &req, &a), fb = sl_router_find_linear(rt, &req, &b);
        ck_assert_msg(fa == fb, "%s %s: index %d, scan %d", req.method, path, fa, fb);
        if (fa) {
            ck_assert_msg(a.route == b.route, "%s %s: index %s, scan %s", req.method, path,
                          a.route->name, b.route->name);
            ck_assert_uint_eq(a.matched_prefix_len, b.matched_prefix_len);
            found++;
        }
    }
    ck_assert_int_gt(found, 5000); /* the comparison covered many matches */
    sl_router_free(rt);
    sl_config_unref(cfg);
#undef RND
}
END_TEST

/* Normalisation (Kong's rule, RFC 3986): the path that is routed and sent. */
static const struct norm_case {
    const char *in, *out; /* out NULL: refused (-1) */
} norm_cases[] = {
    {"/", "/"},
    {"/api/v1/users/../orders", "/api/v1/orders"},
    {"/api/v1/users/%2e%2e/orders", "/api/v1/orders"},
    {"/api/v1/users/%2E%2E/orders", "/api/v1/orders"},
    {"//api//v1///orders", "/api/v1/orders"},
    {"/a/./b/.", "/a/b/"},
    {"/a/b/..", "/a/"},
    {"/../../etc/passwd", "/etc/passwd"},
    {"/a%2fb", "/a%2Fb"},   /* an encoded slash stays encoded (upper-cased) */
    {"/%7euser", "/~user"}, /* unreserved: decoded */
    {"/%41%42", "/AB"},
    {"/a%20b", "/a%20b"},
    {"/a%zz", NULL},
    {"/a%4", NULL},
    {"relative", NULL},
};

START_TEST(test_normalize)
{
    const struct norm_case *c = &norm_cases[_i];
    char out[256];
    long n = sl_router_normalize_path(c->in, strlen(c->in), out, sizeof out);
    if (c->out == NULL) {
        ck_assert_msg(n == -1, "%s: accepted as %s", c->in, n >= 0 ? out : "?");
        return;
    }
    ck_assert_msg(n >= 0, "%s: refused (%ld)", c->in, n);
    ck_assert_str_eq(out, c->out);
    ck_assert_int_eq(n, (long)strlen(c->out));
    /* too small an output buffer is said so, not overrun */
    ck_assert_int_eq(sl_router_normalize_path(c->in, strlen(c->in), out, strlen(c->in)), -2);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("router");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_route_table, 0, (int)(sizeof route_cases / sizeof route_cases[0]));
    tcase_add_test(tc, test_router_edges);
    tcase_add_test(tc, test_many_routes);
    tcase_add_loop_test(tc, test_upstream_path, 0, (int)(sizeof path_cases / sizeof path_cases[0]));
    tcase_add_test(tc, test_upstream_path_limits);
    tcase_add_test(tc, test_demo_flow);
    tcase_add_test(tc, test_kong_priority_fields);
    tcase_add_test(tc, test_regex_strip_path);
    tcase_add_test(tc, test_index_equals_linear_scan);
    tcase_add_loop_test(tc, test_normalize, 0, (int)(sizeof norm_cases / sizeof norm_cases[0]));
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
