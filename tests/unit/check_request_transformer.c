/*
 * request-transformer's pure parts (plugins/rt_transform.c): configuration
 * entries, templates (with injection attempts), Kong's remove / rename /
 * replace / add / append on headers, query strings, JSON and form bodies,
 * their order, and the GET conversion of form bodies. The request is a
 * table here (struct fake), seen through struct rt_env.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rt_transform.h"
#include "unit.h"

/* ---- a fake request ------------------------------------------------------ */

#define MAX_H 32

struct hdr {
    char name[64];
    char value[256];
};

struct fake {
    struct hdr client[MAX_H]; /* the client's headers (templates) */
    size_t n_client;
    struct hdr up[MAX_H]; /* the headers as they will go upstream */
    size_t n_up;
    const char *captures[4][2]; /* name, value */
    int refused;
    char refused_name[64];
};

static void hdr_push(struct hdr *h, size_t *n, const char *name, const char *value, size_t len)
{
    ck_assert_uint_lt(*n, MAX_H);
    snprintf(h[*n].name, sizeof h[*n].name, "%s", name);
    snprintf(h[*n].value, sizeof h[*n].value, "%.*s", (int)len, value);
    (*n)++;
}

static const char *hdr_get(const struct hdr *h, size_t n, const char *name, size_t index,
                           size_t *len)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0 && index-- == 0) {
            *len = strlen(h[i].value);
            return h[i].value;
        }
    return NULL;
}

static size_t hdr_count(const struct hdr *h, size_t n, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += strcasecmp(h[i].name, name) == 0;
    return c;
}

static void hdr_remove(struct hdr *h, size_t *n, const char *name)
{
    size_t w = 0;
    for (size_t i = 0; i < *n; i++)
        if (strcasecmp(h[i].name, name) != 0)
            h[w++] = h[i];
    *n = w;
}

static const char *f_header(void *arg, const char *name, size_t *len)
{
    struct fake *f = arg;
    return hdr_get(f->client, f->n_client, name, 0, len);
}

static const char *f_capture(void *arg, const char *name, size_t *len)
{
    struct fake *f = arg;
    for (int i = 0; i < 4 && f->captures[i][0]; i++)
        if (strcmp(f->captures[i][0], name) == 0) {
            *len = strlen(f->captures[i][1]);
            return f->captures[i][1];
        }
    return NULL;
}

static size_t f_up_count(void *arg, const char *name)
{
    struct fake *f = arg;
    return hdr_count(f->up, f->n_up, name);
}

static const char *f_up_get(void *arg, const char *name, size_t index, size_t *len)
{
    struct fake *f = arg;
    return hdr_get(f->up, f->n_up, name, index, len);
}

static void f_up_set(void *arg, const char *name, const char *value, size_t len)
{
    struct fake *f = arg;
    ck_assert(rt_value_is_safe(value, len));
    hdr_remove(f->up, &f->n_up, name);
    hdr_push(f->up, &f->n_up, name, value, len);
}

static void f_up_add(void *arg, const char *name, const char *value, size_t len)
{
    struct fake *f = arg;
    ck_assert(rt_value_is_safe(value, len));
    hdr_push(f->up, &f->n_up, name, value, len);
}

static void f_up_remove(void *arg, const char *name)
{
    struct fake *f = arg;
    hdr_remove(f->up, &f->n_up, name);
}

static void f_refused(void *arg, const char *what, const char *name)
{
    struct fake *f = arg;
    (void)what;
    f->refused++;
    snprintf(f->refused_name, sizeof f->refused_name, "%s", name);
}

static struct fake F;
static struct rt_env ENV;

/* A request with these client headers ("Name: value" strings, NULL-ended),
 * which are also what goes upstream, and this query. */
static void request(const char *const *headers, const char *query)
{
    memset(&F, 0, sizeof F);
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *colon = strchr(headers[i], ':');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(colon - headers[i]), headers[i]);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        hdr_push(F.client, &F.n_client, name, v, strlen(v));
    }
    memcpy(F.up, F.client, sizeof F.up);
    F.n_up = F.n_client;
    ENV = (struct rt_env){
        .arg = &F,
        .header = f_header,
        .query = query,
        .query_len = query ? strlen(query) : 0,
        .capture = f_capture,
        .upstream_count = f_up_count,
        .upstream_get = f_up_get,
        .upstream_set = f_up_set,
        .upstream_add = f_up_add,
        .upstream_remove = f_up_remove,
        .refused = f_refused,
    };
}

/* All upstream values of a header joined with "|", or "(none)". */
static const char *up(const char *name)
{
    static char out[1024];
    out[0] = '\0';
    size_t n = hdr_count(F.up, F.n_up, name);
    if (n == 0)
        return "(none)";
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *v = hdr_get(F.up, F.n_up, name, i, &len);
        if (i)
            strcat(out, "|");
        strncat(out, v, sizeof out - strlen(out) - 1);
    }
    return out;
}

/* A configuration from entries "op.target=entry" (NULL-ended). */
static struct rt_conf *conf(const char *const *entries)
{
    struct rt_conf *c = rt_conf_new();
    ck_assert_ptr_nonnull(c);
    for (size_t i = 0; entries && entries[i]; i++) {
        const char *e = entries[i], *dot = strchr(e, '.'), *eq = strchr(e, '=');
        ck_assert(dot && eq);
        int op = -1, target = -1;
        for (int o = 0; o < RT_N_OPS; o++)
            if (strlen(rt_op_names[o]) == (size_t)(dot - e) &&
                strncmp(e, rt_op_names[o], (size_t)(dot - e)) == 0)
                op = o;
        for (int t = 0; t < RT_N_TARGETS; t++)
            if (strlen(rt_target_names[t]) == (size_t)(eq - dot - 1) &&
                strncmp(dot + 1, rt_target_names[t], (size_t)(eq - dot - 1)) == 0)
                target = t;
        ck_assert_msg(op >= 0 && target >= 0, "bad test entry %s", e);
        const char *why = NULL;
        ck_assert_msg(rt_conf_add(c, op, target, eq + 1, strlen(eq + 1), &why), "%s: %s", e, why);
    }
    return c;
}

static char *render(const char *tmpl)
{
    const char *why = NULL;
    struct rt_template *t = rt_template_compile(tmpl, strlen(tmpl), &why);
    ck_assert_msg(t != NULL, "%s: %s", tmpl, why);
    size_t len;
    char *out = rt_template_render(t, &ENV, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_ge(len, strlen(out));
    rt_template_free(t);
    return out;
}

#define ck_render(tmpl, want)                                                                      \
    do {                                                                                           \
        char *got_ = render(tmpl);                                                                 \
        ck_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

/* ---- configuration ------------------------------------------------------- */

START_TEST(test_conf_entries)
{
    struct rt_conf *c = rt_conf_new();
    const char *why;
    /* Kong's "^([^:]+):*(.-)$": every colon right after the name separates */
    ck_assert(rt_conf_add(c, RT_ADD, RT_HEADERS, "X-Url::http://a:1/", 18, &why));
    ck_assert(rt_conf_add(c, RT_REMOVE, RT_HEADERS, "X-Gone", 6, &why));
    ck_assert(rt_conf_add(c, RT_RENAME, RT_QUERY, "a:b", 3, &why));
    ck_assert(rt_conf_add(c, RT_REPLACE, RT_BODY, "f:$(headers.x)", 14, &why));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_HEADERS, "X y:1", 5, &why));
    ck_assert_ptr_nonnull(strstr(why, "bad name"));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_HEADERS, ":v", 2, &why));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_QUERY, "k:", 2, &why));
    ck_assert_ptr_nonnull(strstr(why, "no value"));
    ck_assert(!rt_conf_add(c, RT_RENAME, RT_HEADERS, "a:b c", 5, &why));
    ck_assert(!rt_conf_add(c, RT_RENAME, RT_BODY, "a", 1, &why));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_HEADERS, "X\r\nY:1", 6, &why));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_HEADERS, "X:$(os.exit())", 14, &why));
    ck_assert_ptr_nonnull(strstr(why, "unsupported template"));
    ck_assert(!rt_conf_add(c, RT_ADD, RT_HEADERS, "X:$(headers.a", 13, &why));
    ck_assert_ptr_nonnull(strstr(why, "not closed"));
    ck_assert(rt_conf_has_edits(c, RT_HEADERS) && rt_conf_has_edits(c, RT_BODY));

    ck_assert(!rt_conf_set_method(c, "post", &why));
    ck_assert(!rt_conf_set_method(c, "", &why));
    ck_assert(!rt_conf_set_method(c, "PO ST", &why));
    ck_assert(rt_conf_set_method(c, "POST", &why));
    ck_assert_str_eq(rt_conf_method(c), "POST");
    ck_assert(!rt_conf_method_takes_form(c));
    ck_assert(rt_conf_set_method(c, "GET", &why));
    ck_assert(rt_conf_method_takes_form(c));
    ck_assert(!rt_conf_set_uri(c, "", 0, &why));
    ck_assert(!rt_conf_set_uri(c, "/$(nope)", 8, &why));
    ck_assert(!rt_conf_has_uri(c));
    ck_assert(rt_conf_set_uri(c, "/x", 2, &why));
    ck_assert(rt_conf_has_uri(c));
    rt_conf_free(c);

    c = conf((const char *[]){"add.headers=X-Url::http://a:1/", NULL});
    request(NULL, NULL);
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("X-Url"), "http://a:1/");
    rt_conf_free(c);
}
END_TEST

/* ---- templates ----------------------------------------------------------- */

START_TEST(test_templates)
{
    request((const char *[]){"X-Src: hv", "X-A-B: dash", "Authorization: Bearer t", NULL},
            "q=from%20query&plus=a+b&empty=&bare&q=second");
    F.captures[0][0] = "uid";
    F.captures[0][1] = "42";
    F.captures[1][0] = "1";
    F.captures[1][1] = "42";
    F.captures[2][0] = "0";
    F.captures[2][1] = "/users/42";
    ENV.consumer_id = "cid";
    ENV.consumer_username = "alice";
    ENV.credential_key = "alice-iss";

    ck_render("plain", "plain");
    ck_render("", "");
    ck_render("$(headers.x_src)", "hv");
    ck_render("$(headers.X_Src)", "hv");
    ck_render("$(headers[\"x-a-b\"])", "dash");
    ck_render("$(headers['x-a-b'])", "dash");
    ck_render("$(headers.x_a_b)", "dash");
    ck_render("<$( headers.x_src )>", "<hv>");
    ck_render("$(query_params.q)", "from query"); /* decoded, the first one */
    ck_render("$(query_params[\"plus\"])", "a b");
    ck_render("[$(query_params.empty)][$(query_params.bare)]", "[][]");
    ck_render("/u/$(uri_captures.uid)/$(uri_captures[1])$(uri_captures[0])", "/u/42/42/users/42");
    ck_render("$(consumer.id):$(consumer.username):$(consumer.custom_id):$(credential.key)",
              "cid:alice::alice-iss");
    /* a missing value renders as the empty string (documented) */
    ck_render("a$(headers.nope)b$(query_params.nope)c$(uri_captures.nope)d$(uri_captures[9])",
              "abcd");
    /* text around and between templates, '$' alone, a ')' after */
    ck_render("$x $(headers.x_src)$(headers.x_src) $) ($)", "$x hvhv $) ($)");

    const char *why;
    const char *bad[] = {"$(headers)",
                         "$(headers.)",
                         "$(headers[x])",
                         "$(headers[\"x)",
                         "$(shared.x)",
                         "$(type(1))",
                         "$(headers.a..b)",
                         "$(uri_captures[])",
                         "$(consumer)",
                         "$(query_params.x y)",
                         "$(",
                         NULL};
    for (size_t i = 0; bad[i]; i++)
        ck_assert_msg(rt_template_compile(bad[i], strlen(bad[i]), &why) == NULL, "%s", bad[i]);
}
END_TEST

START_TEST(test_injection)
{
    /* query values decode to CR, LF, NUL: the rendered value is unsafe */
    request((const char *[]){"X-Ok: fine", NULL},
            "crlf=a%0d%0aX-Evil:%201&lf=%0a&nul=a%00b&ok=x%20y");
    char *v = render("$(query_params.crlf)");
    ck_assert(!rt_value_is_safe(v, strlen(v)));
    free(v);
    size_t len;
    const char *why;
    struct rt_template *t = rt_template_compile("$(query_params.nul)", 19, &why);
    v = rt_template_render(t, &ENV, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(!rt_value_is_safe(v, len));
    free(v);
    rt_template_free(t);

    struct rt_conf *c = conf((const char *[]){
        "add.headers=X-Inject:$(query_params.crlf)", "add.headers=X-Lf:pre$(query_params.lf)",
        "append.headers=X-Ok:$(query_params.nul)", "replace.headers=X-Ok:$(query_params.lf)",
        "add.headers=X-Fine:$(query_params.ok)", "add.querystring=q:$(query_params.crlf)",
        "add.body=b:$(query_params.nul)", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("X-Inject"), "(none)");
    ck_assert_str_eq(up("X-Evil"), "(none)");
    ck_assert_str_eq(up("X-Lf"), "(none)");
    ck_assert_str_eq(up("X-Ok"), "fine"); /* neither replaced nor appended */
    ck_assert_str_eq(up("X-Fine"), "x y");
    ck_assert_int_eq(F.refused, 4);

    /* query and body edits refuse them too, even though encoding would hold */
    F.refused = 0;
    ck_assert_ptr_null(rt_transform_query(c, &ENV, "a=1", 3, &len));
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_JSON, "{}", 2, &len));
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_FORM, "a=1", 3, &len));
    ck_assert_int_eq(F.refused, 3);
    rt_conf_free(c);

    /* replace.uri: an unsafe or empty rendering is not used */
    c = rt_conf_new();
    ck_assert(rt_conf_set_uri(c, "/x/$(query_params.crlf)", 23, &why));
    ck_assert_ptr_null(rt_render_uri(c, &ENV, &len));
    rt_conf_free(c);
    c = rt_conf_new();
    ck_assert(rt_conf_set_uri(c, "$(headers.nope)", 15, &why));
    ck_assert_ptr_null(rt_render_uri(c, &ENV, &len));
    rt_conf_free(c);

    /* an argument value cannot add arguments: it is percent-encoded */
    request((const char *[]){"X-Amp: a&admin=1#frag", NULL}, "");
    c = conf((const char *[]){"add.querystring=copy:$(headers.x_amp)", NULL});
    char *q = rt_transform_query(c, &ENV, "", 0, &len);
    ck_assert_str_eq(q, "copy=a%26admin%3D1%23frag");
    free(q);
    rt_conf_free(c);
}
END_TEST

/* ---- headers ------------------------------------------------------------- */

START_TEST(test_headers_ops)
{
    request((const char *[]){"X-Remove: 1", "X-Old: v", "X-Old: w", "X-Replace: orig",
                             "X-Replace: orig2", "X-Present: p", "X-Append: first",
                             "X-New: clobbered", NULL},
            NULL);
    struct rt_conf *c = conf((const char *[]){
        "remove.headers=x-remove", "remove.headers=x-never-there", "rename.headers=X-Old:X-New",
        "rename.headers=X-Absent:X-Whatever", "replace.headers=x-replace:replaced",
        "replace.headers=x-absent:no", "add.headers=X-Add:added", "add.headers=X-Present:not-used",
        "append.headers=X-Append:second", "append.headers=X-Fresh:one", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("X-Remove"), "(none)");
    ck_assert_str_eq(up("X-Old"), "(none)");
    ck_assert_str_eq(up("X-New"), "v|w"); /* every value, over the old X-New */
    ck_assert_str_eq(up("X-Whatever"), "(none)");
    ck_assert_str_eq(up("X-Replace"), "replaced"); /* one value instead of all */
    ck_assert_str_eq(up("X-Absent"), "(none)");
    ck_assert_str_eq(up("X-Add"), "added");
    ck_assert_str_eq(up("X-Present"), "p");
    ck_assert_str_eq(up("X-Append"), "first|second");
    ck_assert_str_eq(up("X-Fresh"), "one");
    ck_assert_int_eq(F.refused, 0);
    rt_conf_free(c);
}
END_TEST

START_TEST(test_headers_order)
{
    /* within headers: remove, rename, replace, add, append, whatever the
     * order of the configuration */
    request((const char *[]){"A: client", "B: b", NULL}, NULL);
    struct rt_conf *c = conf((const char *[]){"append.headers=A:appended", "add.headers=A:added",
                                              "replace.headers=A:replaced", "rename.headers=B:A",
                                              "remove.headers=A", NULL});
    rt_transform_headers(c, &ENV);
    /* remove drops A; rename B->A; replace A; add skipped (present); append */
    ck_assert_str_eq(up("A"), "replaced|appended");
    ck_assert_str_eq(up("B"), "(none)");
    rt_conf_free(c);

    /* add after remove of the same header: it is absent by then */
    request((const char *[]){"X: 1", NULL}, NULL);
    c = conf((const char *[]){"add.headers=X:2", "remove.headers=X", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("X"), "2");
    rt_conf_free(c);

    /* replace acts only if present, so replace-then-add gives the added one */
    request(NULL, NULL);
    c = conf(
        (const char *[]){"replace.headers=Y:r", "add.headers=Y:a", "append.headers=Y:p", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("Y"), "a|p");
    rt_conf_free(c);
}
END_TEST

START_TEST(test_headers_upstream_state)
{
    /* "present" is judged on the upstream headers: an earlier plugin removed
     * X-Consumer-ID and set X-Set; templates still read the client's */
    request((const char *[]){"X-Consumer-ID: forged", "X-Src: client", NULL}, NULL);
    hdr_remove(F.up, &F.n_up, "X-Consumer-ID");
    hdr_push(F.up, &F.n_up, "X-Set", "by-jwt", 6);
    hdr_remove(F.up, &F.n_up, "X-Src");
    hdr_push(F.up, &F.n_up, "X-Src", "edited", 6);
    struct rt_conf *c =
        conf((const char *[]){"replace.headers=X-Consumer-ID:no", "add.headers=X-Set:no",
                              "add.headers=X-Copy:$(headers.x_src)", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("X-Consumer-ID"), "(none)");
    ck_assert_str_eq(up("X-Set"), "by-jwt");
    ck_assert_str_eq(up("X-Copy"), "client");
    rt_conf_free(c);

    /* Host: replace always applies (Kong), add and append never */
    request(NULL, NULL);
    c = conf((const char *[]){"replace.headers=Host:h.example", "add.headers=host:no",
                              "append.headers=HOST:no", NULL});
    rt_transform_headers(c, &ENV);
    ck_assert_str_eq(up("Host"), "h.example");
    rt_conf_free(c);
}
END_TEST

/* ---- query strings ------------------------------------------------------- */

START_TEST(test_query)
{
    request(NULL, "drop=1&old=o&rep=r&rep=r2&keep=k&multi=1&other=%20z&new=clobbered&x");
    struct rt_conf *c = conf((const char *[]){
        "remove.querystring=drop", "rename.querystring=old:new", "replace.querystring=rep:R 1",
        "replace.querystring=absent:never", "add.querystring=add:A&B", "add.querystring=keep:nope",
        "append.querystring=multi:2", "append.querystring=fresh:f", NULL});
    size_t len;
    char *q = rt_transform_query(c, &ENV, ENV.query, ENV.query_len, &len);
    ck_assert_str_eq(q, "new=o&keep=k&multi=1&other=%20z&x&rep=R%201&add=A%26B&multi=2&fresh=f");
    ck_assert_uint_eq(len, strlen(q));
    free(q);

    rt_conf_free(c);

    /* nothing applies: NULL (the query goes out as the client sent it) */
    c = conf((const char *[]){"remove.querystring=drop", "rename.querystring=old:new",
                              "replace.querystring=rep:R", "add.querystring=a:2", NULL});
    ck_assert_ptr_null(rt_transform_query(c, &ENV, "a=1&b=%2", 8, &len));
    rt_conf_free(c);

    /* no query edits at all */
    c = conf((const char *[]){"add.headers=X:1", NULL});
    ck_assert_ptr_null(rt_transform_query(c, &ENV, "a=1", 3, &len));
    rt_conf_free(c);

    /* names are compared decoded; empty query; remove of every argument */
    c = conf((const char *[]){"remove.querystring=a b", "add.querystring=n:v", NULL});
    q = rt_transform_query(c, &ENV, "a%20b=1&a+b=2", 13, &len);
    ck_assert_str_eq(q, "n=v");
    free(q);
    q = rt_transform_query(c, &ENV, "", 0, &len);
    ck_assert_str_eq(q, "n=v");
    free(q);
    rt_conf_free(c);
    c = conf((const char *[]){"remove.querystring=a", NULL});
    q = rt_transform_query(c, &ENV, "a=1&a=2", 7, &len);
    ck_assert_str_eq(q, "");
    ck_assert_uint_eq(len, 0);
    free(q);
    rt_conf_free(c);
}
END_TEST

/* ---- bodies -------------------------------------------------------------- */

static json_t *json_of(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    ck_assert_msg(j != NULL, "%s: %s", s, e.text);
    return j;
}

#define ck_json_eq(got, want)                                                                      \
    do {                                                                                           \
        json_t *g_ = json_of(got), *w_ = json_of(want);                                            \
        ck_assert_msg(json_equal(g_, w_), "got %s, want %s", got, want);                           \
        json_decref(g_);                                                                           \
        json_decref(w_);                                                                           \
    } while (0)

START_TEST(test_body_type)
{
    ck_assert_int_eq(rt_body_type(NULL, 0), RT_BODY_OTHER);
    ck_assert_int_eq(rt_body_type("application/json", 16), RT_BODY_JSON);
    ck_assert_int_eq(rt_body_type(" Application/JSON; charset=utf-8", 32), RT_BODY_JSON);
    ck_assert_int_eq(rt_body_type("application/jsonx", 17), RT_BODY_OTHER);
    ck_assert_int_eq(rt_body_type("application/x-www-form-urlencoded", 33), RT_BODY_FORM);
    ck_assert_int_eq(rt_body_type("application/x-www-form-urlencoded;charset=utf-8", 47),
                     RT_BODY_FORM);
    ck_assert_int_eq(rt_body_type("multipart/form-data; boundary=x", 31), RT_BODY_OTHER);
    ck_assert_int_eq(rt_body_type("text/plain", 10), RT_BODY_OTHER);
}
END_TEST

static const char *const BODY_OPS[] = {
    "remove.body=secret",        "rename.body=a:b",     "replace.body=r:R",
    "replace.body=absent:never", "add.body=n:new",      "add.body=keep:nope",
    "append.body=list:2",        "append.body=fresh:f", NULL};

START_TEST(test_json_body)
{
    request((const char *[]){"X-Src: hv", NULL}, NULL);
    struct rt_conf *c = conf(BODY_OPS);
    size_t len;
    const char *in = "{\"secret\":\"s\",\"a\":{\"deep\":[1,2]},\"r\":1,\"keep\":\"k\","
                     "\"list\":\"1\",\"b\":\"clobbered\"}";
    char *out = rt_transform_body(c, &ENV, RT_BODY_JSON, in, strlen(in), &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(out));
    ck_json_eq(out, "{\"b\":{\"deep\":[1,2]},\"r\":\"R\",\"keep\":\"k\",\"list\":[\"1\",\"2\"],"
                    "\"n\":\"new\",\"fresh\":[\"f\"]}");
    free(out);

    /* append onto an array extends it */
    in = "{\"list\":[\"1\",3]}";
    out = rt_transform_body(c, &ENV, RT_BODY_JSON, in, strlen(in), &len);
    ck_json_eq(out, "{\"list\":[\"1\",3,\"2\"],\"n\":\"new\",\"keep\":\"nope\",\"fresh\":[\"f\"]}");
    free(out);

    /* an empty body is {} (Kong) */
    out = rt_transform_body(c, &ENV, RT_BODY_JSON, "", 0, &len);
    ck_json_eq(out, "{\"n\":\"new\",\"keep\":\"nope\",\"list\":[\"2\"],\"fresh\":[\"f\"]}");
    free(out);

    /* not an object, or not JSON: untouched */
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_JSON, "[1,2]", 5, &len));
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_JSON, "\"s\"", 3, &len));
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_JSON, "{\"a\":", 5, &len));
    /* another type: untouched */
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_OTHER, "secret=1", 8, &len));
    rt_conf_free(c);

    /* nothing changes: NULL (the body goes out byte for byte) */
    c = conf((const char *[]){"remove.body=zzz", "replace.body=zzz:1", NULL});
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_JSON, "{ \"a\" : 1 }", 11, &len));
    rt_conf_free(c);

    /* templates and JSON escaping: quotes, backslashes and control bytes in
     * a value stay inside the string */
    request((const char *[]){"X-Q: a\"b\\c\t", NULL}, "u=%C3%A9");
    c = conf((const char *[]){"add.body=q:$(headers.x_q)", "add.body=u:$(query_params.u)", NULL});
    out = rt_transform_body(c, &ENV, RT_BODY_JSON, "{}", 2, &len);
    ck_json_eq(out, "{\"q\":\"a\\\"b\\\\c\\t\",\"u\":\"\\u00e9\"}");
    free(out);
    rt_conf_free(c);

    /* a value that is not UTF-8 cannot be a JSON string: that edit is skipped */
    request(NULL, "bin=%FF");
    c = conf((const char *[]){"add.body=bin:$(query_params.bin)", "add.body=ok:1", NULL});
    out = rt_transform_body(c, &ENV, RT_BODY_JSON, "{}", 2, &len);
    ck_json_eq(out, "{\"ok\":\"1\"}");
    free(out);
    rt_conf_free(c);
}
END_TEST

START_TEST(test_form_body)
{
    request(NULL, NULL);
    struct rt_conf *c = conf(BODY_OPS);
    size_t len;
    const char *in = "secret=s&a=1&r=x&keep=k&list=1&enc=%2F+x";
    char *out = rt_transform_body(c, &ENV, RT_BODY_FORM, in, strlen(in), &len);
    ck_assert_str_eq(out, "b=1&keep=k&list=1&enc=%2F+x&r=R&n=new&list=2&fresh=f");
    ck_assert_uint_eq(len, strlen(out));
    free(out);
    out = rt_transform_body(c, &ENV, RT_BODY_FORM, "", 0, &len);
    ck_assert_str_eq(out, "n=new&keep=nope&list=2&fresh=f");
    free(out);
    rt_conf_free(c);
    c = conf((const char *[]){"remove.body=zzz", NULL});
    ck_assert_ptr_null(rt_transform_body(c, &ENV, RT_BODY_FORM, "a=1", 3, &len));
    rt_conf_free(c);
}
END_TEST

START_TEST(test_form_into_query)
{
    size_t len;
    char *q = rt_form_into_query("a=1", 3, "b=2&a=3&&c", 10, &len);
    ck_assert_str_eq(q, "a=1&b=2&a=3&c");
    ck_assert_uint_eq(len, strlen(q));
    free(q);
    q = rt_form_into_query("", 0, "x=%20y", 6, &len);
    ck_assert_str_eq(q, "x=%20y");
    free(q);
    ck_assert_ptr_null(rt_form_into_query("a=1", 3, "", 0, &len));
    ck_assert_ptr_null(rt_form_into_query("a=1", 3, "&&", 2, &len));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("request_transformer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_conf_entries);
    tcase_add_test(tc, test_templates);
    tcase_add_test(tc, test_injection);
    tcase_add_test(tc, test_headers_ops);
    tcase_add_test(tc, test_headers_order);
    tcase_add_test(tc, test_headers_upstream_state);
    tcase_add_test(tc, test_query);
    tcase_add_test(tc, test_body_type);
    tcase_add_test(tc, test_json_body);
    tcase_add_test(tc, test_form_body);
    tcase_add_test(tc, test_form_into_query);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
