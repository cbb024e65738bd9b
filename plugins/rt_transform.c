/*
 * request-transformer's configuration, templates and transforms, with no
 * request in sight (see rt_transform.h). Kong's semantics are those of its
 * kong/plugins/request-transformer/access.lua; where sluice differs it says
 * so here and in docs/plugins.md.
 */
#include "rt_transform.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const rt_op_names[RT_N_OPS] = {"remove", "rename", "replace", "add", "append"};
const char *const rt_target_names[RT_N_TARGETS] = {"headers", "querystring", "body"};

enum part_kind {
    PART_TEXT,
    PART_HEADER,
    PART_QUERY,
    PART_CAPTURE,
    PART_CONSUMER_ID,
    PART_CONSUMER_USERNAME,
    PART_CONSUMER_CUSTOM_ID,
    PART_CREDENTIAL_KEY,
};

struct part {
    enum part_kind kind;
    char *text; /* literal text, or the header/argument/capture name */
    size_t len;
};

struct rt_template {
    struct part *parts;
    size_t n;
};

struct pair {
    char *name;                /* as configured */
    char *new_name;            /* rename only */
    struct rt_template *value; /* replace, add, append */
};

struct list {
    struct pair *items;
    size_t n;
};

struct rt_conf {
    char *http_method;
    struct rt_template *uri;
    struct list ops[RT_N_OPS][RT_N_TARGETS];
};

/* ------------------------------------------------------------------------ */
/* growing strings                                                           */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* The string, or NULL (freed) when out of memory. */
static char *buf_take(struct buf *b, size_t *len)
{
    buf_add(b, "", 0); /* never NULL for an empty result */
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    if (len)
        *len = b->len;
    return b->p;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* ------------------------------------------------------------------------ */
/* templates                                                                 */

void rt_template_free(struct rt_template *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->parts[i].text);
    free(t->parts);
    free(t);
}

static bool add_part(struct rt_template *t, enum part_kind kind, const char *text, size_t len)
{
    struct part *p = realloc(t->parts, (t->n + 1) * sizeof *p);
    if (p == NULL)
        return false;
    t->parts = p;
    p[t->n].kind = kind;
    p[t->n].text = text ? dup_n(text, len) : NULL;
    p[t->n].len = len;
    if (text && p[t->n].text == NULL)
        return false;
    t->n++;
    return true;
}

/* The key of `.name`, `["name"]`, `['name']` or `[1]` at s; its end in *end. */
static bool parse_key(const char *s, const char *stop, const char **key, size_t *key_len,
                      const char **end)
{
    if (s < stop && *s == '.') {
        const char *k = ++s;
        while (s < stop && (isalnum((unsigned char)*s) || *s == '_'))
            s++;
        *key = k;
        *key_len = (size_t)(s - k);
        *end = s;
        return *key_len > 0;
    }
    if (s < stop && *s == '[') {
        s++;
        char quote = s < stop && (*s == '"' || *s == '\'') ? *s : 0;
        if (quote)
            s++;
        const char *k = s;
        while (s < stop && *s != (quote ? quote : ']'))
            s++;
        if (s >= stop || s == k)
            return false;
        *key = k;
        *key_len = (size_t)(s - k);
        if (quote)
            s++;
        if (s >= stop || *s != ']')
            return false;
        if (!quote) /* unquoted: a number */
            for (size_t i = 0; i < *key_len; i++)
                if (!isdigit((unsigned char)k[i]))
                    return false;
        *end = s + 1;
        return true;
    }
    return false;
}

static bool compile_into(const char *src, size_t len, struct rt_template *t, const char **why)
{
    static const struct {
        const char *expr;
        enum part_kind kind;
    } fixed[] = {{"consumer.id", PART_CONSUMER_ID},
                 {"consumer.username", PART_CONSUMER_USERNAME},
                 {"consumer.custom_id", PART_CONSUMER_CUSTOM_ID},
                 {"credential.key", PART_CREDENTIAL_KEY}},
      keyed[] = {
          {"headers", PART_HEADER}, {"query_params", PART_QUERY}, {"uri_captures", PART_CAPTURE}};
    const char *p = src, *stop = src + len;
    *why = "out of memory";
    while (p < stop) {
        const char *open = NULL;
        for (const char *q = p; q + 1 < stop; q++)
            if (q[0] == '$' && q[1] == '(') {
                open = q;
                break;
            }
        if (open == NULL)
            return add_part(t, PART_TEXT, p, (size_t)(stop - p));
        if (open > p && !add_part(t, PART_TEXT, p, (size_t)(open - p)))
            return false;
        const char *close = memchr(open, ')', (size_t)(stop - open));
        if (close == NULL) {
            *why = "a template '$(' is not closed";
            return false;
        }
        const char *e = open + 2, *ee = close;
        while (e < ee && *e == ' ')
            e++;
        while (ee > e && ee[-1] == ' ')
            ee--;
        size_t elen = (size_t)(ee - e);
        bool done = false;
        for (size_t i = 0; !done && i < sizeof fixed / sizeof fixed[0]; i++)
            if (elen == strlen(fixed[i].expr) && memcmp(e, fixed[i].expr, elen) == 0) {
                if (!add_part(t, fixed[i].kind, NULL, 0))
                    return false;
                done = true;
            }
        for (size_t i = 0; !done && i < sizeof keyed / sizeof keyed[0]; i++) {
            size_t pl = strlen(keyed[i].expr);
            const char *key, *end;
            size_t key_len;
            if (elen > pl && memcmp(e, keyed[i].expr, pl) == 0 &&
                parse_key(e + pl, ee, &key, &key_len, &end) && end == ee) {
                if (!add_part(t, keyed[i].kind, key, key_len))
                    return false;
                done = true;
            }
        }
        if (!done) {
            *why = "unsupported template (headers.x, headers[\"x\"], query_params.x, "
                   "uri_captures.x, uri_captures[1], consumer.id, consumer.username, "
                   "consumer.custom_id, credential.key)";
            return false;
        }
        p = close + 1;
    }
    return true;
}

struct rt_template *rt_template_compile(const char *src, size_t len, const char **why)
{
    struct rt_template *t = calloc(1, sizeof *t);
    if (t == NULL) {
        *why = "out of memory";
        return NULL;
    }
    if (!compile_into(src, len, t, why)) {
        rt_template_free(t);
        return NULL;
    }
    return t;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* x-www-form-urlencoded decoding of one name or value */
static void unescape_into(struct buf *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            char ch = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            buf_add(b, &ch, 1);
            i += 2;
        } else {
            char ch = s[i] == '+' ? ' ' : s[i];
            buf_add(b, &ch, 1);
        }
    }
}

/* RFC 3986 unreserved characters stay, everything else is %XX */
static void escape_into(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            buf_add(b, (const char *)&ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_add(b, e, 3);
        }
    }
}

/* The first argument `name` of a query string, decoded, into out. */
static bool query_value(const char *q, size_t qlen, const char *name, size_t name_len,
                        struct buf *out)
{
    const char *end = q ? q + qlen : q;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        struct buf n = {0};
        unescape_into(&n, q, (size_t)((eq ? eq : stop) - q));
        bool match =
            !n.oom && n.len == name_len && (name_len == 0 || memcmp(n.p, name, name_len) == 0);
        free(n.p);
        if (match) {
            if (eq)
                unescape_into(out, eq + 1, (size_t)(stop - eq - 1));
            return true;
        }
        q = stop + 1;
    }
    return false;
}

static void render_into(const struct rt_template *t, const struct rt_env *env, struct buf *out)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct part *p = &t->parts[i];
        const char *v = NULL;
        size_t len = 0;
        switch (p->kind) {
        case PART_TEXT:
            buf_add(out, p->text, p->len);
            break;
        case PART_HEADER:
            if (env->header) {
                v = env->header(env->arg, p->text, &len);
                if (v == NULL && strchr(p->text, '_')) { /* headers.x_y is X-Y (nginx) */
                    char *dashed = dup_n(p->text, p->len);
                    for (char *c = dashed; c && *c; c++)
                        if (*c == '_')
                            *c = '-';
                    if (dashed)
                        v = env->header(env->arg, dashed, &len);
                    free(dashed);
                }
            }
            if (v)
                buf_add(out, v, len);
            break;
        case PART_QUERY:
            query_value(env->query, env->query_len, p->text, p->len, out);
            break;
        case PART_CAPTURE:
            if (env->capture && (v = env->capture(env->arg, p->text, &len)) != NULL)
                buf_add(out, v, len);
            break;
        case PART_CONSUMER_ID:
            buf_str(out, env->consumer_id ? env->consumer_id : "");
            break;
        case PART_CONSUMER_USERNAME:
            buf_str(out, env->consumer_username ? env->consumer_username : "");
            break;
        case PART_CONSUMER_CUSTOM_ID:
            buf_str(out, env->consumer_custom_id ? env->consumer_custom_id : "");
            break;
        case PART_CREDENTIAL_KEY:
            buf_str(out, env->credential_key ? env->credential_key : "");
            break;
        }
    }
}

char *rt_template_render(const struct rt_template *t, const struct rt_env *env, size_t *len)
{
    struct buf b = {0};
    render_into(t, env, &b);
    return buf_take(&b, len);
}

bool rt_value_is_safe(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return false;
    return true;
}

/* Render for an edit: NULL when out of memory or when the value could
 * smuggle a line into the request (then env->refused hears of it). */
static char *render_edit(const struct rt_template *t, const struct rt_env *env, const char *what,
                         const char *name, size_t *len)
{
    char *v = rt_template_render(t, env, len);
    if (v && !rt_value_is_safe(v, *len)) {
        if (env->refused)
            env->refused(env->arg, what, name);
        free(v);
        return NULL;
    }
    return v;
}

char *rt_render_uri(const struct rt_conf *c, const struct rt_env *env, size_t *len)
{
    if (c->uri == NULL)
        return NULL;
    char *v = render_edit(c->uri, env, "uri", "replace.uri", len);
    if (v && *len == 0) {
        free(v);
        return NULL;
    }
    return v;
}

/* ------------------------------------------------------------------------ */
/* configuration                                                             */

struct rt_conf *rt_conf_new(void)
{
    return calloc(1, sizeof(struct rt_conf));
}

void rt_conf_free(struct rt_conf *c)
{
    if (c == NULL)
        return;
    free(c->http_method);
    rt_template_free(c->uri);
    for (int o = 0; o < RT_N_OPS; o++)
        for (int t = 0; t < RT_N_TARGETS; t++) {
            struct list *l = &c->ops[o][t];
            for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].name);
                free(l->items[i].new_name);
                rt_template_free(l->items[i].value);
            }
            free(l->items);
        }
    free(c);
}

/* RFC 9110 section 5.6.2 token */
static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && !strchr("!#$%&'*+-.^_`|~", ch))
            return false;
        if (ch == 0)
            return false;
    }
    return true;
}

bool rt_conf_set_method(struct rt_conf *c, const char *method, const char **why)
{
    size_t n = strlen(method);
    bool ok = n > 0 && n < 32;
    for (size_t i = 0; ok && i < n; i++)
        ok = method[i] >= 'A' && method[i] <= 'Z';
    if (!ok) {
        *why = "upper-case letters only";
        return false;
    }
    free(c->http_method);
    c->http_method = dup_n(method, n);
    *why = "out of memory";
    return c->http_method != NULL;
}

bool rt_conf_set_uri(struct rt_conf *c, const char *uri, size_t len, const char **why)
{
    if (len == 0) {
        *why = "must not be empty";
        return false;
    }
    struct rt_template *t = rt_template_compile(uri, len, why);
    if (t == NULL)
        return false;
    rt_template_free(c->uri);
    c->uri = t;
    return true;
}

bool rt_conf_add(struct rt_conf *c, enum rt_op op, enum rt_target target, const char *entry,
                 size_t len, const char **why)
{
    const char *colon = memchr(entry, ':', len);
    size_t name_len = colon ? (size_t)(colon - entry) : len;
    const char *value = NULL;
    size_t value_len = 0;
    if (colon) { /* Kong: "^([^:]+):*(.-)$" */
        value = colon;
        while (value < entry + len && *value == ':')
            value++;
        value_len = (size_t)(entry + len - value);
    }
    if (name_len == 0 || memchr(entry, '\0', len)) {
        *why = "bad name";
        return false;
    }
    if (target == RT_HEADERS && !is_token(entry, name_len)) {
        *why = "bad name: a header name is a token";
        return false;
    }
    if (op != RT_REMOVE && value_len == 0) {
        *why = op == RT_RENAME ? "has no new name (old:new)" : "has no value (name:value)";
        return false;
    }
    if (op == RT_RENAME && target == RT_HEADERS && !is_token(value, value_len)) {
        *why = "bad new name: a header name is a token";
        return false;
    }
    struct list *l = &c->ops[op][target];
    struct pair *grown = realloc(l->items, (l->n + 1) * sizeof *grown);
    *why = "out of memory";
    if (grown == NULL)
        return false;
    l->items = grown;
    struct pair *pr = &l->items[l->n];
    memset(pr, 0, sizeof *pr);
    pr->name = dup_n(entry, name_len);
    bool ok = pr->name != NULL;
    if (ok && op == RT_RENAME)
        ok = (pr->new_name = dup_n(value, value_len)) != NULL;
    else if (ok && op != RT_REMOVE)
        ok = (pr->value = rt_template_compile(value, value_len, why)) != NULL;
    if (!ok) {
        free(pr->name);
        free(pr->new_name);
        return false;
    }
    l->n++;
    return true;
}

const char *rt_conf_method(const struct rt_conf *c)
{
    return c->http_method;
}

bool rt_conf_has_uri(const struct rt_conf *c)
{
    return c->uri != NULL;
}

bool rt_conf_has_edits(const struct rt_conf *c, enum rt_target target)
{
    for (int o = 0; o < RT_N_OPS; o++)
        if (c->ops[o][target].n > 0)
            return true;
    return false;
}

bool rt_conf_method_takes_form(const struct rt_conf *c)
{
    const char *m = c->http_method;
    return m && (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "TRACE") == 0);
}

/* ------------------------------------------------------------------------ */
/* headers                                                                   */

struct hstate {
    char *name; /* as it will be sent */
    char **values;
    size_t n_values;
    bool present;
    bool touched; /* changed here: goes upstream as an edit */
};

struct hset {
    struct hstate *h;
    size_t n;
    const struct rt_env *env;
};

static struct hstate *hfind(struct hset *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->h[i].name, name) == 0)
            return &s->h[i];
    return NULL;
}

static void hclear(struct hstate *h)
{
    for (size_t i = 0; i < h->n_values; i++)
        free(h->values[i]);
    free(h->values);
    h->values = NULL;
    h->n_values = 0;
}

/* The header as it would go upstream now: after the edits of the plugins
 * that ran before (jwt's X-Consumer-ID, say), never the client's copies
 * those replaced. The pointer is valid until the next hget. */
static struct hstate *hget(struct hset *s, const char *name)
{
    struct hstate *h = hfind(s, name);
    if (h)
        return h;
    char *copy = dup_n(name, strlen(name));
    struct hstate *grown = copy ? realloc(s->h, (s->n + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(copy);
        return NULL;
    }
    s->h = grown;
    h = &s->h[s->n++];
    memset(h, 0, sizeof *h);
    h->name = copy;
    const struct rt_env *env = s->env;
    size_t n = env->upstream_count ? env->upstream_count(env->arg, name) : 0;
    h->values = calloc(n ? n : 1, sizeof *h->values);
    for (size_t i = 0; h->values && i < n; i++) {
        size_t len = 0;
        const char *v = env->upstream_get ? env->upstream_get(env->arg, name, i, &len) : NULL;
        char *d = v ? dup_n(v, len) : NULL;
        if (d)
            h->values[h->n_values++] = d;
    }
    h->present = h->n_values > 0;
    return h;
}

static void hpush(struct hstate *h, char *value /* taken */)
{
    char **grown = realloc(h->values, (h->n_values + 1) * sizeof *grown);
    if (grown == NULL) {
        free(value);
        return;
    }
    h->values = grown;
    h->values[h->n_values++] = value;
    h->present = true;
    h->touched = true;
}

void rt_transform_headers(const struct rt_conf *c, const struct rt_env *env)
{
    struct hset s = {.env = env};
    const struct list *l;
    size_t len;

    l = &c->ops[RT_REMOVE][RT_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        struct hstate *h = hget(&s, l->items[i].name);
        if (h && h->present) {
            hclear(h);
            h->present = false;
            h->touched = true;
        }
    }
    l = &c->ops[RT_RENAME][RT_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        const char *old_name = l->items[i].name, *new_name = l->items[i].new_name;
        struct hstate *old = hget(&s, old_name);
        if (old == NULL || !old->present || strcasecmp(old_name, new_name) == 0)
            continue;
        struct hstate *nw = hget(&s, new_name);
        old = hfind(&s, old_name); /* hget may have moved it */
        if (nw == NULL || old == NULL)
            continue;
        hclear(nw);
        free(nw->name);
        nw->name = dup_n(new_name, strlen(new_name)); /* the configured case */
        nw->values = old->values;
        nw->n_values = old->n_values;
        nw->present = true;
        nw->touched = true;
        old->values = NULL;
        old->n_values = 0;
        old->present = false;
        old->touched = true;
    }
    l = &c->ops[RT_REPLACE][RT_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->items[i].name;
        struct hstate *h = hget(&s, name);
        /* Kong: Host is always "present" (it sets the upstream Host) */
        if (h == NULL || (!h->present && strcasecmp(name, "host") != 0))
            continue;
        char *v = render_edit(l->items[i].value, env, "header", name, &len);
        if (v == NULL)
            continue;
        hclear(h);
        hpush(h, v);
    }
    l = &c->ops[RT_ADD][RT_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->items[i].name;
        if (strcasecmp(name, "host") == 0)
            continue; /* Kong: never added */
        struct hstate *h = hget(&s, name);
        if (h == NULL || h->present)
            continue;
        char *v = render_edit(l->items[i].value, env, "header", name, &len);
        if (v == NULL)
            continue;
        free(h->name);
        h->name = dup_n(name, strlen(name)); /* the configured case */
        hpush(h, v);
    }
    l = &c->ops[RT_APPEND][RT_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->items[i].name;
        if (strcasecmp(name, "host") == 0)
            continue;
        struct hstate *h = hget(&s, name);
        if (h == NULL)
            continue;
        char *v = render_edit(l->items[i].value, env, "header", name, &len);
        if (v)
            hpush(h, v);
    }
    /* what changed goes upstream as edits */
    for (size_t i = 0; i < s.n; i++) {
        struct hstate *h = &s.h[i];
        if (h->touched && h->name) {
            if (h->n_values == 0) {
                if (env->upstream_remove)
                    env->upstream_remove(env->arg, h->name);
            } else {
                for (size_t k = 0; k < h->n_values; k++) {
                    void (*edit)(void *, const char *, const char *, size_t) =
                        k == 0 ? env->upstream_set : env->upstream_add;
                    if (edit)
                        edit(env->arg, h->name, h->values[k], strlen(h->values[k]));
                }
            }
        }
        hclear(h);
        free(h->name);
    }
    free(s.h);
}

/* ------------------------------------------------------------------------ */
/* query strings and form bodies: a list of raw (encoded) name=value pairs   */

struct arg {
    char *name; /* decoded */
    char *raw;  /* "name=value" as it goes out (encoded) */
};

struct args {
    struct arg *a;
    size_t n;
    bool oom;
};

static void args_free(struct args *as)
{
    for (size_t i = 0; i < as->n; i++) {
        free(as->a[i].name);
        free(as->a[i].raw);
    }
    free(as->a);
    as->a = NULL;
    as->n = 0;
}

static bool args_push(struct args *as, char *name, char *raw)
{
    struct arg *grown = name && raw ? realloc(as->a, (as->n + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(name);
        free(raw);
        as->oom = true;
        return false;
    }
    as->a = grown;
    as->a[as->n].name = name;
    as->a[as->n].raw = raw;
    as->n++;
    return true;
}

static void args_parse(struct args *as, const char *s, size_t len)
{
    const char *end = s ? s + len : s;
    while (s && s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *stop = amp ? amp : end;
        if (stop > s) {
            const char *eq = memchr(s, '=', (size_t)(stop - s));
            struct buf n = {0};
            unescape_into(&n, s, (size_t)((eq ? eq : stop) - s));
            args_push(as, buf_take(&n, NULL), dup_n(s, (size_t)(stop - s)));
        }
        s = stop + 1;
    }
}

static char *encode_pair(const char *name, const char *value, size_t value_len)
{
    struct buf b = {0};
    escape_into(&b, name, strlen(name));
    buf_add(&b, "=", 1);
    escape_into(&b, value, value_len);
    return buf_take(&b, NULL);
}

static bool args_has(const struct args *as, const char *name)
{
    for (size_t i = 0; i < as->n; i++)
        if (strcmp(as->a[i].name, name) == 0)
            return true;
    return false;
}

static void args_remove(struct args *as, const char *name)
{
    size_t w = 0;
    for (size_t i = 0; i < as->n; i++) {
        if (strcmp(as->a[i].name, name) == 0) {
            free(as->a[i].name);
            free(as->a[i].raw);
        } else {
            as->a[w++] = as->a[i];
        }
    }
    as->n = w;
}

/* Kong's ops on an argument table; true when anything changed. */
static bool transform_args(const struct rt_conf *c, const struct rt_env *env, enum rt_target target,
                           struct args *as)
{
    bool changed = false;
    const char *what = target == RT_QUERY ? "query argument" : "body field";
    const struct list *l = &c->ops[RT_REMOVE][target];
    for (size_t i = 0; i < l->n; i++)
        if (args_has(as, l->items[i].name)) {
            args_remove(as, l->items[i].name);
            changed = true;
        }
    l = &c->ops[RT_RENAME][target];
    for (size_t i = 0; i < l->n; i++) {
        const char *new_name = l->items[i].new_name;
        if (!args_has(as, l->items[i].name))
            continue;
        args_remove(as, new_name); /* Kong: the old values overwrite the new name's */
        for (size_t k = 0; k < as->n; k++) {
            if (strcmp(as->a[k].name, l->items[i].name) != 0)
                continue;
            const char *eq = strchr(as->a[k].raw, '=');
            struct buf b = {0};
            escape_into(&b, new_name, strlen(new_name));
            if (eq)
                buf_str(&b, eq);
            char *raw = buf_take(&b, NULL), *name = dup_n(new_name, strlen(new_name));
            if (raw == NULL || name == NULL) {
                free(raw);
                free(name);
                as->oom = true;
                continue;
            }
            free(as->a[k].raw);
            as->a[k].raw = raw;
            free(as->a[k].name);
            as->a[k].name = name;
            changed = true;
        }
    }
    for (int op = RT_REPLACE; op <= RT_APPEND; op++) {
        l = &c->ops[op][target];
        for (size_t i = 0; i < l->n; i++) {
            const char *name = l->items[i].name;
            bool has = args_has(as, name);
            if ((op == RT_REPLACE && !has) || (op == RT_ADD && has))
                continue;
            size_t len;
            char *v = render_edit(l->items[i].value, env, what, name, &len);
            if (v == NULL)
                continue;
            if (op == RT_REPLACE)
                args_remove(as, name); /* one value instead of all */
            if (args_push(as, dup_n(name, strlen(name)), encode_pair(name, v, len)))
                changed = true;
            free(v);
        }
    }
    return changed;
}

static char *args_join(const struct args *as, size_t *len)
{
    struct buf b = {0};
    for (size_t i = 0; i < as->n; i++) {
        if (i)
            buf_add(&b, "&", 1);
        buf_str(&b, as->a[i].raw);
    }
    return buf_take(&b, len);
}

char *rt_transform_query(const struct rt_conf *c, const struct rt_env *env, const char *query,
                         size_t len, size_t *out_len)
{
    if (!rt_conf_has_edits(c, RT_QUERY))
        return NULL;
    struct args as = {0};
    args_parse(&as, query, len);
    char *out = NULL;
    if (transform_args(c, env, RT_QUERY, &as) && !as.oom)
        out = args_join(&as, out_len);
    args_free(&as);
    return out;
}

char *rt_form_into_query(const char *query, size_t qlen, const char *body, size_t blen,
                         size_t *out_len)
{
    struct args as = {0};
    args_parse(&as, body, blen);
    size_t n = as.n;
    if (n == 0 || as.oom) {
        args_free(&as);
        return NULL;
    }
    struct buf b = {0};
    buf_add(&b, query, qlen);
    for (size_t i = 0; i < as.n; i++) {
        if (b.len > 0)
            buf_add(&b, "&", 1);
        buf_str(&b, as.a[i].raw);
    }
    args_free(&as);
    return buf_take(&b, out_len);
}

/* ------------------------------------------------------------------------ */
/* bodies                                                                    */

static bool media_type_is(const char *ct, size_t len, const char *type)
{
    size_t tl = strlen(type);
    while (len > 0 && (*ct == ' ' || *ct == '\t'))
        ct++, len--;
    return len >= tl && strncasecmp(ct, type, tl) == 0 &&
           (len == tl || ct[tl] == ';' || ct[tl] == ' ' || ct[tl] == '\t');
}

enum rt_body_type rt_body_type(const char *content_type, size_t len)
{
    if (content_type == NULL)
        return RT_BODY_OTHER;
    if (media_type_is(content_type, len, "application/json"))
        return RT_BODY_JSON;
    if (media_type_is(content_type, len, "application/x-www-form-urlencoded"))
        return RT_BODY_FORM;
    return RT_BODY_OTHER;
}

static char *transform_json(const struct rt_conf *c, const struct rt_env *env, const char *body,
                            size_t len, size_t *out_len)
{
    json_t *root;
    if (len == 0) {
        root = json_object();
    } else {
        json_error_t error;
        root = json_loadb(body, len, 0, &error);
    }
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return NULL; /* not a JSON object: untouched (Kong) */
    }
    bool changed = false;
    const struct list *l = &c->ops[RT_REMOVE][RT_BODY];
    for (size_t i = 0; i < l->n; i++)
        changed |= json_object_del(root, l->items[i].name) == 0;
    l = &c->ops[RT_RENAME][RT_BODY];
    for (size_t i = 0; i < l->n; i++) {
        json_t *old = json_object_get(root, l->items[i].name);
        if (old && strcmp(l->items[i].name, l->items[i].new_name) != 0) {
            json_object_set(root, l->items[i].new_name, old);
            json_object_del(root, l->items[i].name);
            changed = true;
        }
    }
    for (int op = RT_REPLACE; op <= RT_APPEND; op++) {
        l = &c->ops[op][RT_BODY];
        for (size_t i = 0; i < l->n; i++) {
            const char *name = l->items[i].name;
            json_t *cur = json_object_get(root, name);
            if ((op == RT_REPLACE && !cur) || (op == RT_ADD && cur))
                continue;
            size_t vlen;
            char *v = render_edit(l->items[i].value, env, "body field", name, &vlen);
            json_t *s = v ? json_stringn(v, vlen) : NULL; /* NULL: not UTF-8 */
            free(v);
            if (s == NULL)
                continue;
            if (op == RT_APPEND) { /* Kong's append_value: always an array */
                if (cur == NULL || !json_is_array(cur)) {
                    json_t *arr = json_array();
                    if (arr && cur)
                        json_array_append(arr, cur);
                    json_object_set_new(root, name, arr);
                    cur = arr;
                }
                json_array_append_new(cur, s);
            } else {
                json_object_set_new(root, name, s);
            }
            changed = true;
        }
    }
    char *dumped = changed ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (dumped)
        *out_len = strlen(dumped);
    return dumped;
}

static char *transform_form(const struct rt_conf *c, const struct rt_env *env, const char *body,
                            size_t len, size_t *out_len)
{
    struct args as = {0};
    args_parse(&as, body, len);
    char *out = NULL;
    if (transform_args(c, env, RT_BODY, &as) && !as.oom)
        out = args_join(&as, out_len);
    args_free(&as);
    return out;
}

char *rt_transform_body(const struct rt_conf *c, const struct rt_env *env, enum rt_body_type type,
                        const char *body, size_t len, size_t *out_len)
{
    if (!rt_conf_has_edits(c, RT_BODY))
        return NULL;
    if (type == RT_BODY_JSON)
        return transform_json(c, env, body, len, out_len);
    if (type == RT_BODY_FORM)
        return transform_form(c, env, body, len, out_len);
    return NULL;
}
