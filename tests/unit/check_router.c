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
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
