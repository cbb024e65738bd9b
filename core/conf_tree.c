/*
 * From bytes to a tree of sl_conf_value nodes that keep their line and
 * column, and the typed reads of that tree every entity reader uses. Errors
 * are "file:line:column: message" (1-based); the first one stops the load.
 *
 * libyaml's event parser builds the tree; aliases are refused, depth and
 * node count are bounded, duplicate keys are refused, and plain scalars get
 * their type from the YAML 1.2 core schema.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Loader errors                                                            */
/* ------------------------------------------------------------------------ */

static bool vfail(struct loader *L, const char *prefix_fmt, const char *a, int line, int column,
                  const char *fmt, va_list ap)
{
    if (L->failed)
        return false;
    L->failed = true;
    char *buf = L->err->text;
    size_t size = sizeof L->err->text;
    int n;
    if (line > 0)
        n = snprintf(buf, size, prefix_fmt, a, line, column);
    else
        n = snprintf(buf, size, prefix_fmt, a);
    if (n < 0)
        n = 0;
    if ((size_t)n < size)
        vsnprintf(buf + n, size - (size_t)n, fmt, ap);
    return false;
}

__attribute__((format(printf, 4, 5))) bool conf_fail_at(struct loader *L, int line, int column,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(L, "%s:%d:%d: ", L->source, line, column, fmt, ap);
    va_end(ap);
    return false;
}

/* Error pointing at a node of the file. */
__attribute__((format(printf, 3, 4))) bool
conf_fail(struct loader *L, const struct sl_conf_value *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (at != NULL)
        vfail(L, "%s:%d:%d: ", L->source, at->line, at->column, fmt, ap);
    else
        vfail(L, "%s: ", L->source, 0, 0, fmt, ap);
    va_end(ap);
    return false;
}

__attribute__((format(printf, 3, 4))) bool conf_fail_env(struct loader *L, const char *var,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(L, "env:%s: ", var, 0, 0, fmt, ap);
    va_end(ap);
    return false;
}

bool conf_fail_oom(struct loader *L)
{
    return conf_fail(L, NULL, "out of memory");
}

/* A value quoted into a message: bounded, control characters replaced. */
const char *conf_excerpt(char out[100], const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0' && n < 80; n++)
        out[n] = ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) ? '?' : s[n];
    if (s[n] != '\0') {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

void *conf_alloc(struct loader *L, size_t n)
{
    void *p = conf_arena_alloc(L->arena, n);
    if (p == NULL)
        conf_fail_oom(L);
    return p;
}

char *conf_strndup(struct loader *L, const char *s, size_t n)
{
    char *p = conf_alloc(L, n + 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

char *conf_strdup(struct loader *L, const char *s)
{
    return conf_strndup(L, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* YAML -> tree                                                             */
/* ------------------------------------------------------------------------ */

const char *sl_conf_type_name(enum sl_conf_type type)
{
    switch (type) {
    case SL_CONF_NULL:
        return "null";
    case SL_CONF_BOOL:
        return "a boolean";
    case SL_CONF_INT:
        return "an integer";
    case SL_CONF_FLOAT:
        return "a number";
    case SL_CONF_STRING:
        return "a string";
    case SL_CONF_SEQ:
        return "a sequence";
    case SL_CONF_MAP:
        return "a map";
    }
    return "a value";
}

const struct sl_conf_value *sl_conf_get(const struct sl_conf_value *map, const char *key)
{
    if (map == NULL || map->type != SL_CONF_MAP)
        return NULL;
    for (size_t i = 0; i < map->n_items; i++)
        if (strcmp(map->keys[i]->text, key) == 0)
            return map->items[i];
    return NULL;
}

bool conf_is_digits(const char *s, size_t n, int base)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = base == 8 ? (c >= '0' && c <= '7')
                  : base == 16
                      ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
                      : (c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Integer of the YAML 1.2 core schema: [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
static bool resolve_int(struct sl_conf_value *v)
{
    const char *s = v->text;
    size_t n = v->text_len;
    int base = 10;
    const char *digits = s;
    size_t nd = n;
    bool neg = false;
    if (n > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
        base = s[1] == 'o' ? 8 : 16;
        digits = s + 2;
        nd = n - 2;
    } else if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        digits = s + 1;
        nd = n - 1;
    }
    if (!conf_is_digits(digits, nd, base))
        return false;
    errno = 0;
    unsigned long long u = strtoull(digits, NULL, base);
    if (errno == ERANGE || u > (unsigned long long)LLONG_MAX + (neg ? 1u : 0u)) {
        /* Too big for an integer: keep it as a number so range checks report it. */
        v->type = SL_CONF_FLOAT;
        v->number = strtod(s, NULL);
        if (base != 10)
            v->number = (double)u;
        return true;
    }
    v->type = SL_CONF_INT;
    v->integer = neg ? (long long)(0 - u) : (long long)u;
    v->number = (double)v->integer;
    return true;
}

/* Float of the core schema (including .inf and .nan). */
static bool resolve_float(struct sl_conf_value *v)
{
    const char *s = v->text;
    size_t n = v->text_len, i = 0;
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        i++;
    const char *rest = s + i;
    if (strcmp(rest, ".inf") == 0 || strcmp(rest, ".Inf") == 0 || strcmp(rest, ".INF") == 0) {
        v->type = SL_CONF_FLOAT;
        v->number = s[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (i == 0 && (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0)) {
        v->type = SL_CONF_FLOAT;
        v->number = NAN;
        return true;
    }
    size_t int_digits = 0, frac_digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, int_digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, frac_digits++;
    }
    if (int_digits + frac_digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t exp_digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, exp_digits++;
        if (exp_digits == 0)
            return false;
    }
    if (i != n)
        return false;
    v->type = SL_CONF_FLOAT;
    v->number = strtod(s, NULL);
    return true;
}

static bool resolve_bool(struct sl_conf_value *v)
{
    static const char *const t[] = {"true", "True", "TRUE"};
    static const char *const f[] = {"false", "False", "FALSE"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(v->text, t[i]) == 0 || strcmp(v->text, f[i]) == 0) {
            v->type = SL_CONF_BOOL;
            v->boolean = strcmp(v->text, t[i]) == 0;
            return true;
        }
    }
    return false;
}

static bool resolve_null(struct sl_conf_value *v)
{
    const char *s = v->text;
    if (v->text_len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
        strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0) {
        v->type = SL_CONF_NULL;
        return true;
    }
    return false;
}

/* A plain scalar gets its type from the YAML 1.2 core schema. */
static void resolve_plain(struct sl_conf_value *v)
{
    v->type = SL_CONF_STRING;
    if (resolve_null(v) || resolve_bool(v) || resolve_int(v) || resolve_float(v))
        return;
    v->type = SL_CONF_STRING;
}

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

static struct sl_conf_value *new_node(struct loader *L, enum sl_conf_type type, yaml_mark_t mark)
{
    if (++L->n_nodes > SL_CONFIG_MAX_NODES) {
        conf_fail_at(L, (int)mark.line + 1, (int)mark.column + 1,
                     "too many YAML nodes (the limit is %u)", SL_CONFIG_MAX_NODES);
        return NULL;
    }
    struct sl_conf_value *v = conf_alloc(L, sizeof *v);
    if (v == NULL)
        return NULL;
    v->type = type;
    v->line = mark.line >= INT_MAX ? INT_MAX : (int)mark.line + 1;
    v->column = mark.column >= INT_MAX ? INT_MAX : (int)mark.column + 1;
    return v;
}

static struct sl_conf_value *scalar_node(struct loader *L, const yaml_event_t *ev)
{
    const unsigned char *value = ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    struct sl_conf_value *v = new_node(L, SL_CONF_STRING, ev->start_mark);
    if (v == NULL)
        return NULL;
    if (memchr(value, '\0', len) != NULL) {
        conf_fail(L, v, "NUL characters are not allowed in strings");
        return NULL;
    }
    v->text = conf_strndup(L, (const char *)value, len);
    if (v->text == NULL)
        return NULL;
    v->text_len = len;

    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag == NULL) {
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            v->plain = true;
            resolve_plain(v);
        }
        return v;
    }
    if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_TAG_PREFIX "str") == 0)
        return v;
    bool ok;
    const char *what;
    if (strcmp(tag, YAML_TAG_PREFIX "int") == 0) {
        ok = resolve_int(v) && v->type == SL_CONF_INT;
        what = "an integer";
    } else if (strcmp(tag, YAML_TAG_PREFIX "float") == 0) {
        ok = resolve_int(v) || resolve_float(v);
        if (ok)
            v->type = SL_CONF_FLOAT;
        what = "a number";
    } else if (strcmp(tag, YAML_TAG_PREFIX "bool") == 0) {
        ok = resolve_bool(v);
        what = "a boolean";
    } else if (strcmp(tag, YAML_TAG_PREFIX "null") == 0) {
        ok = resolve_null(v);
        what = "null";
    } else {
        char q[100];
        conf_fail(L, v, "unsupported YAML tag '%s'", conf_excerpt(q, tag));
        return NULL;
    }
    if (!ok) {
        char q[100];
        conf_fail(L, v, "'%s' is not %s", conf_excerpt(q, v->text), what);
        return NULL;
    }
    return v;
}

struct frame {
    struct sl_conf_value *node;
    struct sl_conf_value **keys, **items; /* malloc'd while open */
    size_t n, cap;
    struct sl_conf_value *key; /* map: key waiting for its value */
};

static bool frame_add(struct loader *L, struct frame *f, struct sl_conf_value *v)
{
    bool is_map = f->node->type == SL_CONF_MAP;
    if (is_map && f->key == NULL) {
        if (v->text == NULL)
            return conf_fail(L, v, "map keys must be scalars");
        bool oom = false;
        const struct strmap_entry *dup =
            conf_strmap_put(&L->names, (uintptr_t)f->node, v->text, v, 0, &oom);
        if (oom)
            return conf_fail_oom(L);
        if (dup != NULL) {
            char q[100];
            return conf_fail(L, v, "duplicate key '%s' (first at line %d)",
                             conf_excerpt(q, v->text), dup->node->line);
        }
        f->key = v;
        return true;
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct sl_conf_value **items = realloc(f->items, cap * sizeof *items);
        if (items == NULL)
            return conf_fail_oom(L);
        f->items = items;
        if (is_map) {
            struct sl_conf_value **keys = realloc(f->keys, cap * sizeof *keys);
            if (keys == NULL)
                return conf_fail_oom(L);
            f->keys = keys;
        }
        f->cap = cap;
    }
    if (is_map)
        f->keys[f->n] = f->key;
    f->items[f->n++] = v;
    f->key = NULL;
    return true;
}

static bool frame_close(struct loader *L, struct frame *f)
{
    struct sl_conf_value *v = f->node;
    v->n_items = f->n;
    if (f->n > 0) {
        v->items = conf_alloc(L, f->n * sizeof *v->items);
        if (v->items == NULL)
            return false;
        memcpy(v->items, f->items, f->n * sizeof *v->items);
        if (v->type == SL_CONF_MAP) {
            v->keys = conf_alloc(L, f->n * sizeof *v->keys);
            if (v->keys == NULL)
                return false;
            memcpy(v->keys, f->keys, f->n * sizeof *v->keys);
        }
    }
    free(f->items);
    free(f->keys);
    f->items = f->keys = NULL;
    return true;
}

/* libyaml's problem, at its position. */
static void fail_yaml(struct loader *L, const yaml_parser_t *p)
{
    int line, column;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark. */
        line = 1;
        column = 1;
        for (size_t i = 0; i < p->problem_offset && i < L->len; i++) {
            if (L->data[i] == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
    } else {
        line = (int)p->problem_mark.line + 1;
        column = (int)p->problem_mark.column + 1;
    }
    const char *problem = p->problem ? p->problem : "cannot parse";
    if (p->error == YAML_MEMORY_ERROR) {
        conf_fail_oom(L);
    } else if (p->context != NULL) {
        conf_fail_at(L, line, column, "YAML syntax error: %s (%s at line %d column %d)", problem,
                     p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    } else {
        conf_fail_at(L, line, column, "YAML syntax error: %s", problem);
    }
}

/* Parse the bytes into a tree; NULL with L->failed, or NULL for an empty stream. */
struct sl_conf_value *conf_parse_yaml(struct loader *L)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        conf_fail_oom(L);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)L->data, L->len);

    struct frame stack[SL_CONFIG_MAX_DEPTH];
    int depth = 0;
    int documents = 0;
    struct sl_conf_value *root = NULL;
    bool done = false;

    while (!done && !L->failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            fail_yaml(L, &parser);
            break;
        }
        struct sl_conf_value *complete = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (documents++ > 0)
                conf_fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "only one YAML document is allowed");
            break;
        case YAML_ALIAS_EVENT:
            conf_fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                         "YAML aliases are not supported");
            break;
        case YAML_SCALAR_EVENT:
            complete = scalar_node(L, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            bool seq = ev.type == YAML_SEQUENCE_START_EVENT;
            const char *tag =
                (const char *)(seq ? ev.data.sequence_start.tag : ev.data.mapping_start.tag);
            if (tag != NULL && strcmp(tag, "!") != 0 &&
                strcmp(tag, seq ? YAML_TAG_PREFIX "seq" : YAML_TAG_PREFIX "map") != 0) {
                char q[100];
                conf_fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "unsupported YAML tag '%s'", conf_excerpt(q, tag));
                break;
            }
            if (depth == SL_CONFIG_MAX_DEPTH) {
                conf_fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "nesting is too deep (the limit is %d levels)", SL_CONFIG_MAX_DEPTH);
                break;
            }
            if (depth > 0 && stack[depth - 1].node->type == SL_CONF_MAP &&
                stack[depth - 1].key == NULL) {
                conf_fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "map keys must be scalars");
                break;
            }
            struct sl_conf_value *v = new_node(L, seq ? SL_CONF_SEQ : SL_CONF_MAP, ev.start_mark);
            if (v == NULL)
                break;
            stack[depth++] = (struct frame){.node = v};
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0 && frame_close(L, &stack[depth - 1]))
                complete = stack[--depth].node;
            break;
        default:
            break;
        }
        if (complete != NULL && !L->failed) {
            if (depth > 0)
                frame_add(L, &stack[depth - 1], complete);
            else
                root = complete;
        }
        yaml_event_delete(&ev);
    }
    for (int i = 0; i < depth; i++) {
        free(stack[i].items);
        free(stack[i].keys);
    }
    yaml_parser_delete(&parser);
    return L->failed ? NULL : root;
}

/* ------------------------------------------------------------------------ */
/* Typed reads of tree values                                               */
/* ------------------------------------------------------------------------ */

bool conf_expect_type(struct loader *L, const struct sl_conf_value *v, enum sl_conf_type type)
{
    if (v->type == type)
        return true;
    return conf_fail(L, v, "expected %s, got %s", sl_conf_type_name(type),
                     sl_conf_type_name(v->type));
}

/* A non-empty string (Kong's strings have a minimum length of 1). */
bool conf_read_string(struct loader *L, const struct sl_conf_value *v, const char **out)
{
    if (!conf_expect_type(L, v, SL_CONF_STRING))
        return false;
    if (v->text_len == 0)
        return conf_fail(L, v, "must not be empty");
    *out = v->text;
    return true;
}

bool conf_read_int(struct loader *L, const struct sl_conf_value *v, long long min, long long max,
                   long long *out)
{
    double d = v->number;
    bool integral =
        v->type == SL_CONF_INT || (v->type == SL_CONF_FLOAT && isfinite(d) && d == floor(d));
    if (!integral) {
        if (v->type == SL_CONF_FLOAT)
            return conf_fail(L, v, "expected an integer, got %s", v->text);
        return conf_fail(L, v, "expected an integer, got %s", sl_conf_type_name(v->type));
    }
    if (v->type == SL_CONF_INT ? (v->integer < min || v->integer > max)
                               : (d < (double)min || d > (double)max))
        return conf_fail(L, v, "value %s is out of range (%lld..%lld)", v->text, min, max);
    *out = v->type == SL_CONF_INT ? v->integer : (long long)d;
    return true;
}

bool conf_read_number(struct loader *L, const struct sl_conf_value *v, double min, double max,
                      double *out)
{
    if (v->type != SL_CONF_INT && v->type != SL_CONF_FLOAT)
        return conf_fail(L, v, "expected a number, got %s", sl_conf_type_name(v->type));
    if (!isfinite(v->number) || v->number < min || v->number > max)
        return conf_fail(L, v, "value %s is out of range (%g..%g)", v->text, min, max);
    *out = v->number;
    return true;
}

bool conf_read_bool(struct loader *L, const struct sl_conf_value *v, bool *out)
{
    if (v->type == SL_CONF_BOOL) {
        *out = v->boolean;
        return true;
    }
    /* YAML 1.1 spellings (what lyaml, hence Kong, also reads as booleans). */
    if (v->type == SL_CONF_STRING && v->plain) {
        static const char *const yes[] = {"yes", "Yes", "YES", "on", "On", "ON"};
        static const char *const no[] = {"no", "No", "NO", "off", "Off", "OFF"};
        for (size_t i = 0; i < 6; i++) {
            if (strcmp(v->text, yes[i]) == 0 || strcmp(v->text, no[i]) == 0) {
                *out = strcmp(v->text, yes[i]) == 0;
                return true;
            }
        }
    }
    return conf_expect_type(L, v, SL_CONF_BOOL);
}

bool conf_read_string_list(struct loader *L, const struct sl_conf_value *val, char ***out,
                           size_t *n_out)
{
    if (!conf_expect_type(L, val, SL_CONF_SEQ))
        return false;
    char **list = conf_alloc(L, (val->n_items + 1) * sizeof *list);
    if (list == NULL)
        return false;
    for (size_t i = 0; i < val->n_items; i++) {
        const char *s = NULL; /* set by conf_read_string() */
        if (!conf_read_string(L, val->items[i], &s))
            return false;
        if ((list[i] = conf_strdup(L, s)) == NULL)
            return false;
    }
    *out = list;
    *n_out = val->n_items;
    return true;
}

/* Kong's name type: letters, digits, '.', '-', '_', '~' (UTF-8 letters too). */
bool conf_valid_name(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == '~' || c >= 0x80))
            return false;
    }
    return true;
}

bool conf_valid_uuid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* Tags: any printable text except ',' and '/' (the Admin API's separators). */
bool conf_valid_tag(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == ',' || c == '/')
            return false;
    }
    return true;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * A URI path as Kong accepts it: starts with '/', RFC 3986 pchar or '/'
 * (RFC 3986 section 3.3), valid percent-encoding, no empty segment.
 * Returns NULL when valid, else the reason.
 */
const char *conf_path_problem(const char *p)
{
    if (p[0] != '/')
        return "must start with '/'";
    for (size_t i = 0; p[i]; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            if (!is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2]))
                return "invalid percent-encoding";
            i += 2;
        } else if (c == '/') {
            if (p[i + 1] == '/')
                return "must not have empty segments";
        } else if (!is_unreserved(c) && !strchr("!$&'()*+,;=:@", c)) {
            return "characters outside of RFC 3986 found";
        }
    }
    return NULL;
}

/* Kong 3 reads a pre-3.0 path as a regex when it has any other character. */
bool conf_legacy_regex_path(const char *p)
{
    for (; *p; p++)
        if (!is_unreserved((unsigned char)*p) && *p != '/' && *p != '%')
            return true;
    return false;
}

/* hostname: labels of [A-Za-z0-9_-] separated by dots. */
bool conf_valid_hostname(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0 && !(i == n - 1 && i > 0))
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

bool conf_valid_ipv6(const char *h, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, h, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/*
 * A service host: hostname, IPv4, or IPv6 with or without brackets (stored
 * without). Returns NULL on success and sets *start and *len to the part to keep.
 */
const char *conf_host_problem(const char *h, size_t n, size_t *start, size_t *len)
{
    *start = 0;
    *len = n;
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        if (!conf_valid_ipv6(h + 1, n - 2))
            return "invalid IPv6 address";
        *start = 1;
        *len = n - 2;
        return NULL;
    }
    if (memchr(h, ':', n) != NULL) {
        if (conf_valid_ipv6(h, n))
            return NULL;
        return "must not have a port";
    }
    if (!conf_valid_hostname(h, n))
        return "invalid hostname";
    return NULL;
}

/*
 * An absolute URL, "scheme://host[:port][/path]", in two steps so that the
 * caller can judge the scheme before the rest is looked at.
 */
bool conf_url_scheme(const char *url, struct conf_url *out)
{
    memset(out, 0, sizeof *out);
    out->port = -1;
    out->path = "";
    const char *sep = strstr(url, "://");
    if (sep == NULL) {
        snprintf(out->why, sizeof out->why, "missing scheme");
        return false;
    }
    size_t scheme_len = (size_t)(sep - url);
    if (scheme_len == 0 || scheme_len >= sizeof out->scheme) {
        snprintf(out->why, sizeof out->why, "bad scheme");
        return false;
    }
    for (size_t i = 0; i < scheme_len; i++)
        out->scheme[i] = (char)((url[i] >= 'A' && url[i] <= 'Z') ? url[i] - 'A' + 'a' : url[i]);
    out->authority = sep + 3;
    return true;
}

bool conf_url_rest(struct conf_url *out)
{
    const char *auth = out->authority;
    size_t auth_len = strcspn(auth, "/?#");
    const char *rest = auth + auth_len;
    if (memchr(auth, '@', auth_len) != NULL) {
        snprintf(out->why, sizeof out->why, "credentials in a url are not supported");
        return false;
    }
    if (strpbrk(rest, "?#") != NULL) {
        snprintf(out->why, sizeof out->why, "a query string or fragment is not allowed");
        return false;
    }
    /* host[:port], the host possibly an [IPv6] literal */
    const char *port = NULL;
    size_t host_len = auth_len;
    if (auth_len > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', auth_len);
        if (close == NULL) {
            snprintf(out->why, sizeof out->why, "unterminated IPv6 address");
            return false;
        }
        host_len = (size_t)(close - auth) + 1;
        if (host_len < auth_len) {
            if (auth[host_len] != ':') {
                snprintf(out->why, sizeof out->why, "expected ':' after the IPv6 address");
                return false;
            }
            port = auth + host_len + 1;
        }
    } else {
        const char *colon = memchr(auth, ':', auth_len);
        if (colon != NULL) {
            host_len = (size_t)(colon - auth);
            port = colon + 1;
        }
    }
    if (host_len == 0) {
        snprintf(out->why, sizeof out->why, "missing host");
        return false;
    }
    size_t start, len;
    const char *why = conf_host_problem(auth, host_len, &start, &len);
    if (why != NULL) {
        snprintf(out->why, sizeof out->why, "%s", why);
        return false;
    }
    out->host = auth + start;
    out->host_len = len;
    if (port != NULL) {
        size_t port_len = (size_t)(rest - port);
        unsigned long n = 0;
        if (!conf_is_digits(port, port_len, 10) || port_len > 5 ||
            (n = strtoul(port, NULL, 10)) > 65535) {
            snprintf(out->why, sizeof out->why, "bad port");
            return false;
        }
        out->port = (long)n;
    }
    if (*rest != '\0' && (why = conf_path_problem(rest)) != NULL) {
        snprintf(out->why, sizeof out->why, "path %s", why);
        return false;
    }
    out->path = rest;
    return true;
}
