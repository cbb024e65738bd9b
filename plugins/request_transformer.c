/*
 * request-transformer (Kong's, PRIORITY 801): change the request before it
 * goes upstream.
 *
 * Config: http_method; remove / rename / replace / add / append, each with
 * headers, querystring and body ("name" for remove, "old:new" for rename,
 * "name:value" otherwise); replace.uri. Kong's order (its access.lua):
 * replace.uri, http_method, headers, body, querystring; within each:
 * remove, rename, replace (only what is present), add (only what is
 * absent), append (always).
 *
 * Values are templates: $(headers.x), $(headers["x-y"]), $(query_params.x),
 * $(query_params["x"]), $(uri_captures.name), $(uri_captures[1]), and,
 * beyond Kong, $(consumer.id), $(consumer.username), $(consumer.custom_id)
 * and $(credential.key) for the consumer an auth plugin (jwt) set. A
 * missing value renders as the empty string. A rendered value with CR, LF
 * or NUL is never sent: that one edit is skipped and logged.
 *
 * Bodies: application/json (an object) and
 * application/x-www-form-urlencoded, read whole up to 8 MiB (larger ones
 * and other types go upstream untouched; multipart is not transformed).
 * Query strings keep the client's order and encoding; new or changed
 * values are percent-encoded.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "plugins.h"

#define RT_MAX_BODY (8u << 20)

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

struct template
{
    struct part *parts;
    size_t n;
};

struct pair {
    char *name; /* as configured */
    struct template value;
};

struct list {
    struct pair *items;
    size_t n;
};

enum target { T_HEADERS, T_QUERY, T_BODY, N_TARGETS };
enum op { OP_REMOVE, OP_RENAME, OP_REPLACE, OP_ADD, OP_APPEND, N_OPS };
static const char *const op_names[N_OPS] = {"remove", "rename", "replace", "add", "append"};
static const char *const target_names[N_TARGETS] = {"headers", "querystring", "body"};

struct rt_conf {
    char *http_method;
    struct template uri;
    bool has_uri;
    struct list ops[N_OPS][N_TARGETS];
    bool body_edits;
};

/* ------------------------------------------------------------------------ */
/* configuration                                                             */

static void template_free(struct template *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->parts[i].text);
    free(t->parts);
}

static void rt_free(void *arg)
{
    struct rt_conf *c = arg;
    if (c == NULL)
        return;
    free(c->http_method);
    template_free(&c->uri);
    for (int o = 0; o < N_OPS; o++)
        for (int t = 0; t < N_TARGETS; t++) {
            for (size_t i = 0; i < c->ops[o][t].n; i++) {
                free(c->ops[o][t].items[i].name);
                template_free(&c->ops[o][t].items[i].value);
            }
            free(c->ops[o][t].items);
        }
    free(c);
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

static bool add_part(struct template *t, enum part_kind kind, const char *text, size_t len)
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

/* Compile "text $(expr) text"; false with why on an unknown expression. */
static bool compile(const char *src, size_t len, struct template *t, const char **why)
{
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
        const char *e = open + 2;
        while (e < close && *e == ' ')
            e++;
        const char *ee = close;
        while (ee > e && ee[-1] == ' ')
            ee--;
        static const struct {
            const char *prefix;
            enum part_kind kind;
        } fixed[] = {{"consumer.id", PART_CONSUMER_ID},
                     {"consumer.username", PART_CONSUMER_USERNAME},
                     {"consumer.custom_id", PART_CONSUMER_CUSTOM_ID},
                     {"credential.key", PART_CREDENTIAL_KEY}},
          keyed[] = {{"headers", PART_HEADER},
                     {"query_params", PART_QUERY},
                     {"uri_captures", PART_CAPTURE}};
        bool done = false;
        for (size_t i = 0; !done && i < sizeof fixed / sizeof fixed[0]; i++)
            if ((size_t)(ee - e) == strlen(fixed[i].prefix) &&
                memcmp(e, fixed[i].prefix, (size_t)(ee - e)) == 0) {
                if (!add_part(t, fixed[i].kind, NULL, 0))
                    return false;
                done = true;
            }
        for (size_t i = 0; !done && i < sizeof keyed / sizeof keyed[0]; i++) {
            size_t pl = strlen(keyed[i].prefix);
            const char *key, *end;
            size_t key_len;
            if ((size_t)(ee - e) > pl && memcmp(e, keyed[i].prefix, pl) == 0 &&
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

static bool read_list(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                      const struct sl_conf_value *section, int op, int target, struct list *out,
                      struct sl_config_error *err)
{
    const struct sl_conf_value *seq = sl_conf_get(section, target_names[target]);
    if (seq == NULL || seq->type == SL_CONF_NULL)
        return true;
    if (seq->type != SL_CONF_SEQ)
        return sl_plugin_config_error(err, cfg, pc, seq, "config.%s.%s: expected a sequence",
                                      op_names[op], target_names[target]);
    out->items = calloc(seq->n_items ? seq->n_items : 1, sizeof *out->items);
    if (out->items == NULL)
        return sl_plugin_config_error(err, cfg, pc, seq, "out of memory");
    for (size_t i = 0; i < seq->n_items; i++) {
        const struct sl_conf_value *v = seq->items[i];
        if (v->type != SL_CONF_STRING)
            return sl_plugin_config_error(err, cfg, pc, v, "config.%s.%s: expected a string",
                                          op_names[op], target_names[target]);
        const char *colon = op == OP_REMOVE ? NULL : strchr(v->text, ':');
        if (op != OP_REMOVE && colon == NULL)
            return sl_plugin_config_error(
                err, cfg, pc, v, "config.%s.%s: '%s' is not of the form %s", op_names[op],
                target_names[target], v->text, op == OP_RENAME ? "old:new" : "name:value");
        size_t name_len = colon ? (size_t)(colon - v->text) : v->text_len;
        struct pair *pr = &out->items[out->n++];
        pr->name = dup_n(v->text, name_len);
        if (pr->name == NULL)
            return sl_plugin_config_error(err, cfg, pc, v, "out of memory");
        bool name_ok = name_len > 0 && (target != T_HEADERS || sl_plugin_is_header_name(pr->name));
        if (op == OP_RENAME)
            name_ok = name_ok && colon[1] != '\0' &&
                      (target != T_HEADERS || sl_plugin_is_header_name(colon + 1));
        if (!name_ok)
            return sl_plugin_config_error(err, cfg, pc, v, "config.%s.%s: '%s': bad name",
                                          op_names[op], target_names[target], v->text);
        if (colon) {
            const char *why;
            const char *value = colon + 1;
            size_t value_len = v->text_len - name_len - 1;
            if (op == OP_RENAME) {
                if (!add_part(&pr->value, PART_TEXT, value, value_len))
                    return sl_plugin_config_error(err, cfg, pc, v, "out of memory");
            } else if (!compile(value, value_len, &pr->value, &why)) {
                return sl_plugin_config_error(err, cfg, pc, v, "config.%s.%s: '%s': %s",
                                              op_names[op], target_names[target], v->text, why);
            }
        }
    }
    return true;
}

static bool rt_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                     struct sl_config_error *err)
{
    static const char *const known[] = {"http_method", "remove", "rename", "replace",
                                        "add",         "append", NULL};
    if (!sl_plugin_config_known_keys(pc, cfg, known, err))
        return false;
    struct rt_conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    const char *method = NULL;
    if (!sl_plugin_config_string(pc, cfg, "http_method", &method, NULL, err))
        goto fail;
    if (method) {
        bool ok = *method != '\0' && strlen(method) < 32;
        for (const char *p = method; *p; p++)
            ok = ok && *p >= 'A' && *p <= 'Z';
        if (!ok) {
            sl_plugin_config_error(err, cfg, pc, sl_conf_get(pc->config, "http_method"),
                                   "config.http_method: invalid value: %s (upper-case letters)",
                                   method);
            goto fail;
        }
        c->http_method = dup_n(method, strlen(method));
    }
    for (int o = 0; o < N_OPS; o++) {
        const struct sl_conf_value *section =
            pc->config ? sl_conf_get(pc->config, op_names[o]) : NULL;
        if (section == NULL || section->type == SL_CONF_NULL)
            continue;
        if (section->type != SL_CONF_MAP) {
            sl_plugin_config_error(err, cfg, pc, section, "config.%s: expected a map", op_names[o]);
            goto fail;
        }
        for (size_t k = 0; k < section->n_items; k++) {
            const char *key = section->keys[k]->text;
            bool ok = strcmp(key, "headers") == 0 || strcmp(key, "querystring") == 0 ||
                      strcmp(key, "body") == 0 || (o == OP_REPLACE && strcmp(key, "uri") == 0) ||
                      strcmp(key, "json_types") == 0;
            if (!ok || strcmp(key, "json_types") == 0) {
                sl_plugin_config_error(err, cfg, pc, section->keys[k],
                                       ok ? "config.%s.%s is not supported yet"
                                          : "config.%s.%s: unknown field",
                                       op_names[o], key);
                goto fail;
            }
        }
        for (int t = 0; t < N_TARGETS; t++)
            if (!read_list(pc, cfg, section, o, t, &c->ops[o][t], err))
                goto fail;
        if (o == OP_REPLACE) {
            const struct sl_conf_value *uri = sl_conf_get(section, "uri");
            if (uri && uri->type != SL_CONF_NULL) {
                const char *why;
                if (uri->type != SL_CONF_STRING ||
                    !compile(uri->text, uri->text_len, &c->uri, &why)) {
                    sl_plugin_config_error(err, cfg, pc, uri, "config.replace.uri: %s",
                                           uri->type != SL_CONF_STRING ? "expected a string" : why);
                    goto fail;
                }
                c->has_uri = true;
            }
        }
    }
    for (int o = 0; o < N_OPS; o++)
        c->body_edits = c->body_edits || c->ops[o][T_BODY].n > 0;
    *out = c;
    return true;
fail:
    rt_free(c);
    return false;
}

/* ------------------------------------------------------------------------ */
/* rendering                                                                 */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
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
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
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

/* The first query argument `name` (decoded), or NULL. */
static bool query_value(struct sl_plugin_ctx *ctx, const char *name, size_t name_len,
                        struct buf *out)
{
    size_t qlen;
    const char *q = sl_plugin_query(ctx, &qlen), *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *nend = eq ? eq : stop;
        struct buf n = {0};
        unescape_into(&n, q, (size_t)(nend - q));
        bool match = n.len == name_len && n.p && memcmp(n.p, name, name_len) == 0;
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

static void render(struct sl_plugin_ctx *ctx, const struct template *t, struct buf *out)
{
    const struct sl_consumer *consumer = sl_plugin_consumer(ctx);
    for (size_t i = 0; i < t->n; i++) {
        const struct part *p = &t->parts[i];
        const char *v = NULL;
        size_t len = 0;
        switch (p->kind) {
        case PART_TEXT:
            buf_add(out, p->text, p->len);
            break;
        case PART_HEADER: {
            char name[256];
            snprintf(name, sizeof name, "%s", p->text);
            for (char *c = name; *c; c++)
                if (*c == '_')
                    *c = '-'; /* headers.x_y is X-Y (nginx/Kong) */
            v = sl_plugin_header(ctx, p->text, 0, &len);
            if (v == NULL)
                v = sl_plugin_header(ctx, name, 0, &len);
            buf_add(out, v, v ? len : 0);
            break;
        }
        case PART_QUERY:
            query_value(ctx, p->text, p->len, out);
            break;
        case PART_CAPTURE:
            v = sl_plugin_uri_capture(ctx, p->text, &len);
            buf_add(out, v, v ? len : 0);
            break;
        case PART_CONSUMER_ID:
            buf_str(out, consumer && consumer->id ? consumer->id : "");
            break;
        case PART_CONSUMER_USERNAME:
            buf_str(out, consumer && consumer->username ? consumer->username : "");
            break;
        case PART_CONSUMER_CUSTOM_ID:
            buf_str(out, consumer && consumer->custom_id ? consumer->custom_id : "");
            break;
        case PART_CREDENTIAL_KEY:
            v = sl_plugin_credential_id(ctx);
            buf_str(out, v ? v : "");
            break;
        }
    }
}

/* Render; false (logged) when the value could smuggle a line into the request. */
static bool render_safe(struct sl_plugin_ctx *ctx, const struct template *t, const char *what,
                        const char *name, struct buf *out)
{
    out->len = 0;
    buf_add(out, "", 0);
    render(ctx, t, out);
    if (out->oom)
        return false;
    for (size_t i = 0; i < out->len; i++)
        if (out->p[i] == '\r' || out->p[i] == '\n' || out->p[i] == '\0') {
            sl_warn("request-transformer: request %s: %s '%s' would contain CR, LF or NUL: "
                    "not sent",
                    sl_plugin_request_id(ctx), what, name);
            return false;
        }
    return true;
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

/* The header's state as it would go upstream now: after the edits of the
 * plugins that ran before (jwt's X-Consumer-ID, say), never the client's
 * copies those replaced. */
static struct hstate *hget(struct sl_plugin_ctx *ctx, struct hset *s, const char *name)
{
    struct hstate *h = hfind(s, name);
    if (h)
        return h;
    struct hstate *grown = realloc(s->h, (s->n + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    s->h = grown;
    h = &s->h[s->n++];
    memset(h, 0, sizeof *h);
    h->name = dup_n(name, strlen(name));
    size_t n = sl_plugin_upstream_header_count(ctx, name);
    h->values = calloc(n ? n : 1, sizeof *h->values);
    for (size_t i = 0; h->values && i < n; i++) {
        size_t len;
        const char *v = sl_plugin_upstream_header(ctx, name, i, &len);
        h->values[h->n_values++] = dup_n(v, len);
    }
    h->present = n > 0;
    return h;
}

static void hpush(struct hstate *h, const char *value)
{
    char **grown = realloc(h->values, (h->n_values + 1) * sizeof *grown);
    if (grown == NULL)
        return;
    h->values = grown;
    h->values[h->n_values++] = dup_n(value, strlen(value));
    h->present = true;
    h->touched = true;
}

static void transform_headers(struct sl_plugin_ctx *ctx, const struct rt_conf *c)
{
    struct hset s = {0};
    struct buf v = {0};
    const struct list *l;
    l = &c->ops[OP_REMOVE][T_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        struct hstate *h = hget(ctx, &s, l->items[i].name);
        if (h && h->present) {
            hclear(h);
            h->present = false;
            h->touched = true;
        }
    }
    l = &c->ops[OP_RENAME][T_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        const char *new_name = l->items[i].value.parts[0].text;
        struct hstate *old = hget(ctx, &s, l->items[i].name);
        if (old == NULL || !old->present || strcasecmp(l->items[i].name, new_name) == 0)
            continue;
        struct hstate *nw = hget(ctx, &s, new_name);
        old = hfind(&s, l->items[i].name); /* hget may have moved it */
        if (nw == NULL || old == NULL)
            continue;
        hclear(nw);
        nw->values = old->values;
        nw->n_values = old->n_values;
        nw->present = true;
        nw->touched = true;
        old->values = NULL;
        old->n_values = 0;
        old->present = false;
        old->touched = true;
    }
    l = &c->ops[OP_REPLACE][T_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        struct hstate *h = hget(ctx, &s, l->items[i].name);
        bool host = strcasecmp(l->items[i].name, "host") == 0;
        if (h == NULL || (!h->present && !host))
            continue;
        if (!render_safe(ctx, &l->items[i].value, "header", l->items[i].name, &v))
            continue;
        hclear(h);
        hpush(h, v.p);
    }
    l = &c->ops[OP_ADD][T_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        if (strcasecmp(l->items[i].name, "host") == 0)
            continue;
        struct hstate *h = hget(ctx, &s, l->items[i].name);
        if (h == NULL || h->present)
            continue;
        if (!render_safe(ctx, &l->items[i].value, "header", l->items[i].name, &v))
            continue;
        free(h->name);
        h->name = dup_n(l->items[i].name, strlen(l->items[i].name)); /* the configured case */
        hpush(h, v.p);
    }
    l = &c->ops[OP_APPEND][T_HEADERS];
    for (size_t i = 0; i < l->n; i++) {
        if (strcasecmp(l->items[i].name, "host") == 0)
            continue;
        struct hstate *h = hget(ctx, &s, l->items[i].name);
        if (h == NULL || !render_safe(ctx, &l->items[i].value, "header", l->items[i].name, &v))
            continue;
        hpush(h, v.p);
    }
    /* what changed goes upstream as edits */
    for (size_t i = 0; i < s.n; i++) {
        struct hstate *h = &s.h[i];
        if (h->name == NULL || !h->touched) {
            hclear(h);
            free(h->name);
            continue;
        }
        if (!h->present || h->n_values == 0) {
            sl_plugin_upstream_header_remove(ctx, h->name);
        } else {
            for (size_t k = 0; k < h->n_values; k++)
                if (h->values[k])
                    (k == 0 ? sl_plugin_upstream_header_set : sl_plugin_upstream_header_add)(
                        ctx, h->name, h->values[k], strlen(h->values[k]));
        }
        hclear(h);
        free(h->name);
    }
    free(s.h);
    free(v.p);
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
    struct arg *grown = realloc(as->a, (as->n + 1) * sizeof *grown);
    if (grown == NULL || name == NULL || raw == NULL) {
        free(name);
        free(raw);
        if (grown)
            as->a = grown;
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
    const char *end = s + len;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *stop = amp ? amp : end;
        if (stop > s) {
            const char *eq = memchr(s, '=', (size_t)(stop - s));
            struct buf n = {0};
            unescape_into(&n, s, (size_t)((eq ? eq : stop) - s));
            args_push(as, n.p ? n.p : dup_n("", 0), dup_n(s, (size_t)(stop - s)));
        }
        s = stop + 1;
    }
}

static char *encode_pair(const char *name, const char *value)
{
    struct buf b = {0};
    escape_into(&b, name, strlen(name));
    buf_add(&b, "=", 1);
    escape_into(&b, value, strlen(value));
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
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
static bool transform_args(struct sl_plugin_ctx *ctx, const struct rt_conf *c, int target,
                           struct args *as)
{
    bool changed = false;
    struct buf v = {0};
    const char *what = target == T_QUERY ? "query argument" : "body field";
    const struct list *l = &c->ops[OP_REMOVE][target];
    for (size_t i = 0; i < l->n; i++)
        if (args_has(as, l->items[i].name)) {
            args_remove(as, l->items[i].name);
            changed = true;
        }
    l = &c->ops[OP_RENAME][target];
    for (size_t i = 0; i < l->n; i++) {
        const char *new_name = l->items[i].value.parts[0].text;
        for (size_t k = 0; k < as->n; k++) {
            if (strcmp(as->a[k].name, l->items[i].name) != 0)
                continue;
            const char *eq = strchr(as->a[k].raw, '=');
            struct buf b = {0};
            escape_into(&b, new_name, strlen(new_name));
            if (eq)
                buf_str(&b, eq);
            if (b.oom || b.p == NULL) {
                free(b.p);
                continue;
            }
            free(as->a[k].raw);
            as->a[k].raw = b.p;
            free(as->a[k].name);
            as->a[k].name = dup_n(new_name, strlen(new_name));
            changed = true;
        }
    }
    for (int op = OP_REPLACE; op <= OP_APPEND; op++) {
        l = &c->ops[op][target];
        for (size_t i = 0; i < l->n; i++) {
            const char *name = l->items[i].name;
            bool has = args_has(as, name);
            if ((op == OP_REPLACE && !has) || (op == OP_ADD && has))
                continue;
            if (!render_safe(ctx, &l->items[i].value, what, name, &v))
                continue;
            if (op == OP_REPLACE)
                args_remove(as, name); /* one value instead of all */
            if (args_push(as, dup_n(name, strlen(name)), encode_pair(name, v.p)))
                changed = true;
        }
    }
    free(v.p);
    return changed;
}

static char *args_join(const struct args *as, size_t *len)
{
    struct buf b = {0};
    buf_add(&b, "", 0);
    for (size_t i = 0; i < as->n; i++) {
        if (i)
            buf_add(&b, "&", 1);
        buf_str(&b, as->a[i].raw);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

static void transform_query(struct sl_plugin_ctx *ctx, const struct rt_conf *c)
{
    bool any = false;
    for (int o = 0; o < N_OPS; o++)
        any = any || c->ops[o][T_QUERY].n > 0;
    if (!any)
        return;
    size_t qlen;
    const char *q = sl_plugin_query(ctx, &qlen);
    struct args as = {0};
    args_parse(&as, q, qlen);
    if (transform_args(ctx, c, T_QUERY, &as)) {
        size_t len;
        char *joined = args_join(&as, &len);
        if (joined && !sl_plugin_upstream_set_query(ctx, joined, len))
            sl_warn("request-transformer: request %s: the new query string was refused",
                    sl_plugin_request_id(ctx));
        free(joined);
    }
    args_free(&as);
}

/* ------------------------------------------------------------------------ */
/* bodies                                                                    */

enum body_type { BODY_OTHER, BODY_JSON, BODY_FORM };

static enum body_type body_type(struct sl_plugin_ctx *ctx)
{
    size_t len;
    const char *ct = sl_plugin_header(ctx, "Content-Type", 0, &len);
    if (ct == NULL)
        return BODY_OTHER;
    while (len > 0 && (*ct == ' ' || *ct == '\t'))
        ct++, len--;
    if (len >= 16 && strncasecmp(ct, "application/json", 16) == 0 &&
        (len == 16 || ct[16] == ';' || ct[16] == ' '))
        return BODY_JSON;
    if (len >= 33 && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0 &&
        (len == 33 || ct[33] == ';' || ct[33] == ' '))
        return BODY_FORM;
    return BODY_OTHER;
}

static bool transform_json(struct sl_plugin_ctx *ctx, const struct rt_conf *c, const char *body,
                           size_t len, struct buf *out)
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
        return false; /* not a JSON object: untouched (Kong) */
    }
    struct buf v = {0};
    const struct list *l = &c->ops[OP_REMOVE][T_BODY];
    for (size_t i = 0; i < l->n; i++)
        json_object_del(root, l->items[i].name);
    l = &c->ops[OP_RENAME][T_BODY];
    for (size_t i = 0; i < l->n; i++) {
        json_t *old = json_object_get(root, l->items[i].name);
        if (old) {
            json_object_set(root, l->items[i].value.parts[0].text, old);
            json_object_del(root, l->items[i].name);
        }
    }
    for (int op = OP_REPLACE; op <= OP_APPEND; op++) {
        l = &c->ops[op][T_BODY];
        for (size_t i = 0; i < l->n; i++) {
            const char *name = l->items[i].name;
            json_t *cur = json_object_get(root, name);
            if ((op == OP_REPLACE && !cur) || (op == OP_ADD && cur))
                continue;
            /* JSON escapes control characters: only NUL could not pass */
            v.len = 0;
            buf_add(&v, "", 0);
            render(ctx, &l->items[i].value, &v);
            if (v.oom)
                continue;
            json_t *s = json_stringn(v.p, v.len);
            if (s == NULL)
                continue;
            if (op == OP_APPEND && cur) {
                if (!json_is_array(cur)) { /* Kong: a second value makes an array */
                    json_t *arr = json_array();
                    json_array_append(arr, cur);
                    json_object_set_new(root, name, arr);
                    cur = arr;
                }
                json_array_append_new(cur, s);
            } else {
                json_object_set_new(root, name, s);
            }
        }
    }
    free(v.p);
    char *dumped = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (dumped == NULL)
        return false;
    buf_str(out, dumped);
    free(dumped);
    return !out->oom;
}

static void transform_form(struct sl_plugin_ctx *ctx, const struct rt_conf *c, const char *body,
                           size_t len, struct buf *out)
{
    struct args as = {0};
    args_parse(&as, body, len);
    transform_args(ctx, c, T_BODY, &as);
    size_t n;
    char *joined = args_join(&as, &n);
    if (joined)
        buf_add(out, joined, n);
    free(joined);
    args_free(&as);
}

static void body_ready(struct sl_plugin_ctx *ctx, const char *body, size_t len, void *arg)
{
    const struct rt_conf *c = arg;
    if (body != NULL) {
        struct buf out = {0};
        buf_add(&out, "", 0);
        bool ok = true;
        if (body_type(ctx) == BODY_JSON)
            ok = transform_json(ctx, c, body, len, &out);
        else
            transform_form(ctx, c, body, len, &out);
        if (ok && !out.oom)
            sl_plugin_upstream_set_body(ctx, out.p, out.len);
        free(out.p);
    }
    transform_query(ctx, c);
    sl_plugin_resume(ctx);
}

static void body_cancel(void *arg)
{
    (void)arg; /* nothing of ours is pending: the engine stopped reading */
}

/* ------------------------------------------------------------------------ */
/* access                                                                    */

static enum sl_plugin_result rt_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct rt_conf *c = arg;
    struct buf v = {0};
    if (c->has_uri) {
        render(ctx, &c->uri, &v);
        if (v.oom || v.len == 0 || !sl_plugin_upstream_set_path(ctx, v.p, v.len))
            sl_warn("request-transformer: request %s: replace.uri rendered an unusable path: "
                    "not applied",
                    sl_plugin_request_id(ctx));
    }
    free(v.p);
    if (c->http_method && !sl_plugin_upstream_set_method(ctx, c->http_method))
        sl_warn("request-transformer: http_method '%s' refused", c->http_method);
    transform_headers(ctx, c);
    if (c->body_edits && body_type(ctx) != BODY_OTHER &&
        sl_plugin_read_body(ctx, RT_MAX_BODY, body_ready, (void *)c)) {
        sl_plugin_on_cancel(ctx, body_cancel, NULL);
        return SL_PLUGIN_SUSPEND; /* the query string follows the body (Kong's order) */
    }
    transform_query(ctx, c);
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_request_transformer = {
    .name = "request-transformer",
    .priority = 801,
    .parse_config = rt_parse,
    .free_config = rt_free,
    .access = rt_access,
};
