/*
 * Configuration loader: Kong's declarative YAML (the subset sluice supports
 * so far) plus the node block `gateway:` / `sidecar:`.
 *
 * How it works, in four passes over one file:
 *   1. libyaml's event parser builds a small tree of sl_conf_value nodes that
 *      keep their line and column (aliases are refused, depth and node count
 *      are bounded, duplicate keys are refused);
 *   2. the top-level map is walked in file order; every entity (service,
 *      route, consumer, plugin, upstream, target, certificate, sni,
 *      ca_certificate, jwt_secret) is read through a table of field
 *      descriptors (`service_fields`, ...), so adding a field is adding a
 *      row; PEM values are checked with OpenSSL and regexes with PCRE2 here,
 *      so that nothing after the loader meets a value it cannot use;
 *   3. SLUICE_<KEY> environment variables override node keys;
 *   4. references (route -> service, plugin -> service/route/consumer,
 *      target -> upstream, sni -> certificate, jwt_secret -> consumer,
 *      service -> ca_certificates) are resolved, cross-entity rules checked
 *      (plugin scopes, duplicate targets), and the snapshot is laid out.
 *
 * Every byte of a snapshot (strings, arrays, the tree) lives in one arena
 * owned by it, so sl_config_unref() frees it in one sweep. The first error
 * stops the load; messages are "file:line:column: message" (1-based), or
 * "env:SLUICE_KEY: message" for an environment override.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pcre2.h>
#include <yaml.h>

#include "http1.h"
#include "log.h"

#define SL_CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)
#define SL_CONFIG_MAX_DEPTH 64
#define SL_CONFIG_MAX_NODES 1000000u
#define SL_CONFIG_MAX_LISTEN 64
#define SL_CONFIG_MAX_TRUSTED_IPS 4096
#define SL_CONFIG_MAX_TIMEOUT_MS 2147483646LL /* Kong's timeout range: 2^31 - 2 */

#define NONE SIZE_MAX /* "no index" */

/* ------------------------------------------------------------------------ */
/* Arena                                                                      */
/* ------------------------------------------------------------------------ */

#define ARENA_CHUNK_BYTES 65536u

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct sl_arena {
    struct arena_chunk *chunks;
};

/* Zeroed memory aligned for any type; NULL when out of memory. */
static void *arena_alloc(struct sl_arena *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) & ~(align - 1);
    struct arena_chunk *c = a->chunks;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > ARENA_CHUNK_BYTES / 4 ? n : ARENA_CHUNK_BYTES;
        struct arena_chunk *fresh = malloc(sizeof *fresh + size);
        if (fresh == NULL)
            return NULL;
        fresh->used = 0;
        fresh->size = size;
        if (c != NULL && size == n) {
            /* A big block gets a chunk of its own; keep filling the current one. */
            fresh->next = c->next;
            c->next = fresh;
        } else {
            fresh->next = c;
            a->chunks = fresh;
        }
        c = fresh;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(struct sl_arena *a)
{
    if (a == NULL)
        return;
    struct arena_chunk *c = a->chunks;
    while (c != NULL) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

/* ------------------------------------------------------------------------ */
/* Growable vectors and a string map, both temporary (live during a load)     */
/* ------------------------------------------------------------------------ */

struct vec {
    void *data;
    size_t n, cap, elem;
};

static void *vec_push(struct vec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        void *data = realloc(v->data, cap * v->elem);
        if (data == NULL)
            return NULL;
        v->data = data;
        v->cap = cap;
    }
    void *p = (char *)v->data + v->n * v->elem;
    memset(p, 0, v->elem);
    v->n++;
    return p;
}

static void *vec_at(const struct vec *v, size_t i)
{
    return (char *)v->data + i * v->elem;
}

/* Namespaces of the string map. Map keys use the map node's address. */
enum {
    NS_SERVICE_NAME = 1,
    NS_SERVICE_ID,
    NS_ROUTE_NAME,
    NS_ROUTE_ID,
    NS_CONSUMER_USERNAME,
    NS_CONSUMER_CUSTOM_ID,
    NS_CONSUMER_ID,
    NS_PLUGIN_ID,
    NS_PLUGIN_INSTANCE_NAME,
    NS_PLUGIN_SCOPE,
    NS_UPSTREAM_NAME,
    NS_UPSTREAM_ID,
    NS_TARGET, /* "upstream index|host:port" */
    NS_CERTIFICATE_ID,
    NS_SNI_NAME,
    NS_CA_ID,
    NS_JWT_KEY,
    NS_JWT_ID,
};

struct strmap_entry {
    uintptr_t ns; /* 0 = empty slot */
    const char *key;
    size_t len;
    uint64_t hash;
    const struct sl_conf_value *node; /* where it was first seen */
    size_t index;
};

struct strmap {
    struct strmap_entry *slots;
    size_t n, cap; /* cap is a power of two */
};

static uint64_t strmap_hash(uintptr_t ns, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)ns; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static const struct strmap_entry *strmap_get(const struct strmap *m, uintptr_t ns, const char *key)
{
    if (m->cap == 0)
        return NULL;
    size_t len = strlen(key);
    uint64_t h = strmap_hash(ns, key, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct strmap_entry *e = &m->slots[i];
        if (e->ns == 0)
            return NULL;
        if (e->ns == ns && e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
}

/*
 * Insert (ns, key). Returns the existing entry when the key is already there,
 * NULL when inserted; sets *oom on allocation failure. `key` must outlive the
 * map (arena strings do).
 */
static const struct strmap_entry *strmap_put(struct strmap *m, uintptr_t ns, const char *key,
                                             const struct sl_conf_value *node, size_t index,
                                             bool *oom)
{
    const struct strmap_entry *old = strmap_get(m, ns, key);
    if (old != NULL)
        return old;
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct strmap_entry *slots = calloc(cap, sizeof *slots);
        if (slots == NULL) {
            *oom = true;
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].ns == 0)
                continue;
            size_t j = m->slots[i].hash & (cap - 1);
            while (slots[j].ns != 0)
                j = (j + 1) & (cap - 1);
            slots[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    size_t len = strlen(key);
    uint64_t h = strmap_hash(ns, key, len);
    size_t i = h & (m->cap - 1);
    while (m->slots[i].ns != 0)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = (struct strmap_entry){ns, key, len, h, node, index};
    m->n++;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Loader state and errors                                                    */
/* ------------------------------------------------------------------------ */

/* Entities as read, with the indices that become pointers at the end. */
struct service_rec {
    struct sl_service s;
    bool port_set;
};

struct route_rec {
    struct sl_route r;
    size_t service;
};

struct plugin_rec {
    struct sl_plugin_conf p;
    size_t service, route, consumer;
    const struct sl_conf_value *consumer_at; /* the `consumer:` value; NULL when nested */
};

struct target_rec {
    struct sl_target t;
    size_t upstream;
    const struct sl_conf_value *node, *target_node;
};

struct sni_rec {
    struct sl_sni s;
    size_t certificate;
};

struct jwt_rec {
    struct sl_jwt_secret j;
    size_t consumer;
};

enum ref_target { REF_SERVICE, REF_ROUTE, REF_CONSUMER, REF_UPSTREAM, REF_CERTIFICATE, REF_CA };
/* who holds a reference (pending_ref.owner_kind) */
enum { OWNER_ROUTE, OWNER_PLUGIN, OWNER_TARGET, OWNER_SNI, OWNER_JWT, OWNER_SERVICE };
enum ref_mode { REF_NAME_OR_ID, REF_NAME, REF_ID };

/* A reference by name or id, resolved once every entity is known. */
struct pending_ref {
    enum ref_target target;
    enum ref_mode mode;
    const char *key;
    const struct sl_conf_value *node;
    int owner_kind; /* OWNER_* */
    size_t owner_index;
};

struct node_source {
    const struct sl_conf_value *node; /* set from the file */
    const char *env;                  /* set from the environment (wins) */
};

#define N_NODE_FIELDS 25

struct loader {
    const char *source;
    const char *role;
    struct sl_config_error *err;
    bool failed;
    struct sl_arena *arena;
    struct sl_config *cfg;
    const char *data;
    size_t len;
    size_t n_nodes;
    bool legacy_paths; /* _format_version < 3.0: Kong's regex path heuristic */

    struct vec services;        /* struct service_rec */
    struct vec routes;          /* struct route_rec */
    struct vec consumers;       /* struct sl_consumer */
    struct vec plugins;         /* struct plugin_rec */
    struct vec upstreams;       /* struct sl_upstream */
    struct vec targets;         /* struct target_rec */
    struct vec certificates;    /* struct sl_certificate */
    struct vec snis;            /* struct sni_rec */
    struct vec ca_certificates; /* struct sl_ca_certificate */
    struct vec jwt_secrets;     /* struct jwt_rec */
    struct vec refs;            /* struct pending_ref */
    struct strmap names;
    struct node_source node_src[N_NODE_FIELDS];
};

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

__attribute__((format(printf, 4, 5))) static bool fail_at(struct loader *L, int line, int column,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(L, "%s:%d:%d: ", L->source, line, column, fmt, ap);
    va_end(ap);
    return false;
}

/* Error pointing at a node of the file. */
__attribute__((format(printf, 3, 4))) static bool
fail(struct loader *L, const struct sl_conf_value *at, const char *fmt, ...)
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

__attribute__((format(printf, 3, 4))) static bool fail_env(struct loader *L, const char *var,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(L, "env:%s: ", var, 0, 0, fmt, ap);
    va_end(ap);
    return false;
}

static bool fail_oom(struct loader *L)
{
    return fail(L, NULL, "out of memory");
}

/* A value quoted into a message: bounded, control characters replaced. */
static const char *excerpt(char out[100], const char *s)
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

static void *lalloc(struct loader *L, size_t n)
{
    void *p = arena_alloc(L->arena, n);
    if (p == NULL)
        fail_oom(L);
    return p;
}

static char *lstrndup(struct loader *L, const char *s, size_t n)
{
    char *p = lalloc(L, n + 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

static char *lstrdup(struct loader *L, const char *s)
{
    return lstrndup(L, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* YAML -> tree                                                               */
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

static bool is_digits(const char *s, size_t n, int base)
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
    if (!is_digits(digits, nd, base))
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
        fail_at(L, (int)mark.line + 1, (int)mark.column + 1,
                "too many YAML nodes (the limit is %u)", SL_CONFIG_MAX_NODES);
        return NULL;
    }
    struct sl_conf_value *v = lalloc(L, sizeof *v);
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
        fail(L, v, "NUL characters are not allowed in strings");
        return NULL;
    }
    v->text = lstrndup(L, (const char *)value, len);
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
        fail(L, v, "unsupported YAML tag '%s'", excerpt(q, tag));
        return NULL;
    }
    if (!ok) {
        char q[100];
        fail(L, v, "'%s' is not %s", excerpt(q, v->text), what);
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
            return fail(L, v, "map keys must be scalars");
        bool oom = false;
        const struct strmap_entry *dup =
            strmap_put(&L->names, (uintptr_t)f->node, v->text, v, 0, &oom);
        if (oom)
            return fail_oom(L);
        if (dup != NULL) {
            char q[100];
            return fail(L, v, "duplicate key '%s' (first at line %d)", excerpt(q, v->text),
                        dup->node->line);
        }
        f->key = v;
        return true;
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct sl_conf_value **items = realloc(f->items, cap * sizeof *items);
        if (items == NULL)
            return fail_oom(L);
        f->items = items;
        if (is_map) {
            struct sl_conf_value **keys = realloc(f->keys, cap * sizeof *keys);
            if (keys == NULL)
                return fail_oom(L);
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
        v->items = lalloc(L, f->n * sizeof *v->items);
        if (v->items == NULL)
            return false;
        memcpy(v->items, f->items, f->n * sizeof *v->items);
        if (v->type == SL_CONF_MAP) {
            v->keys = lalloc(L, f->n * sizeof *v->keys);
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
        fail_oom(L);
    } else if (p->context != NULL) {
        fail_at(L, line, column, "YAML syntax error: %s (%s at line %d column %d)", problem,
                p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    } else {
        fail_at(L, line, column, "YAML syntax error: %s", problem);
    }
}

/* Parse the bytes into a tree; NULL with L->failed, or NULL for an empty stream. */
static struct sl_conf_value *parse_yaml(struct loader *L)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fail_oom(L);
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
                fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                        "only one YAML document is allowed");
            break;
        case YAML_ALIAS_EVENT:
            fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
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
                fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                        "unsupported YAML tag '%s'", excerpt(q, tag));
                break;
            }
            if (depth == SL_CONFIG_MAX_DEPTH) {
                fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                        "nesting is too deep (the limit is %d levels)", SL_CONFIG_MAX_DEPTH);
                break;
            }
            if (depth > 0 && stack[depth - 1].node->type == SL_CONF_MAP &&
                stack[depth - 1].key == NULL) {
                fail_at(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
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
/* Typed reads of tree values                                                 */
/* ------------------------------------------------------------------------ */

static bool expect_type(struct loader *L, const struct sl_conf_value *v, enum sl_conf_type type)
{
    if (v->type == type)
        return true;
    return fail(L, v, "expected %s, got %s", sl_conf_type_name(type), sl_conf_type_name(v->type));
}

/* A non-empty string (Kong's strings have a minimum length of 1). */
static bool read_string(struct loader *L, const struct sl_conf_value *v, const char **out)
{
    if (!expect_type(L, v, SL_CONF_STRING))
        return false;
    if (v->text_len == 0)
        return fail(L, v, "must not be empty");
    *out = v->text;
    return true;
}

static bool read_int(struct loader *L, const struct sl_conf_value *v, long long min, long long max,
                     long long *out)
{
    double d = v->number;
    bool integral =
        v->type == SL_CONF_INT || (v->type == SL_CONF_FLOAT && isfinite(d) && d == floor(d));
    if (!integral) {
        if (v->type == SL_CONF_FLOAT)
            return fail(L, v, "expected an integer, got %s", v->text);
        return fail(L, v, "expected an integer, got %s", sl_conf_type_name(v->type));
    }
    if (v->type == SL_CONF_INT ? (v->integer < min || v->integer > max)
                               : (d < (double)min || d > (double)max))
        return fail(L, v, "value %s is out of range (%lld..%lld)", v->text, min, max);
    *out = v->type == SL_CONF_INT ? v->integer : (long long)d;
    return true;
}

static bool read_bool(struct loader *L, const struct sl_conf_value *v, bool *out)
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
    return expect_type(L, v, SL_CONF_BOOL);
}

/* Kong's name type: letters, digits, '.', '-', '_', '~' (UTF-8 letters too). */
static bool valid_name(const char *s)
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

static bool valid_uuid(const char *s)
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
static bool valid_tag(const char *s)
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
static const char *path_problem(const char *p)
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
static bool legacy_regex_path(const char *p)
{
    for (; *p; p++)
        if (!is_unreserved((unsigned char)*p) && *p != '/' && *p != '%')
            return true;
    return false;
}

/* hostname: labels of [A-Za-z0-9_-] separated by dots. */
static bool valid_hostname(const char *h, size_t n)
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

static bool valid_ipv6(const char *h, size_t n)
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
static const char *host_problem(const char *h, size_t n, size_t *start, size_t *len)
{
    *start = 0;
    *len = n;
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        if (!valid_ipv6(h + 1, n - 2))
            return "invalid IPv6 address";
        *start = 1;
        *len = n - 2;
        return NULL;
    }
    if (memchr(h, ':', n) != NULL) {
        if (valid_ipv6(h, n))
            return NULL;
        return "must not have a port";
    }
    if (!valid_hostname(h, n))
        return "invalid hostname";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Entities: descriptor tables and a generic reader                           */
/* ------------------------------------------------------------------------ */

struct entity;

typedef bool (*field_fn)(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val);

enum field_kind {
    FK_CUSTOM,      /* parse(): anything else */
    FK_STRING,      /* char * at offset, non-empty */
    FK_NAME,        /* char * at offset, Kong name characters */
    FK_UUID,        /* char * at offset */
    FK_U16,         /* uint16_t at offset, [min, max] */
    FK_U32,         /* uint32_t at offset, [min, max] */
    FK_INT,         /* integer in [min, max], checked and not stored */
    FK_BOOL,        /* bool at offset (NONE: checked and not stored) */
    FK_TAGS,        /* list of tags, checked and not stored */
    FK_COMMENT,     /* _comment: a string */
    FK_IGNORE,      /* _ignore: a sequence of anything */
    FK_UNSUPPORTED, /* a Kong field sluice does not implement yet: must be unset */
};

struct field {
    const char *name;
    enum field_kind kind;
    size_t offset;
    long long min, max;
    field_fn parse;
};

#define MAX_FIELDS 32

struct entity {
    const char *kind; /* "service", "route", ... for messages */
    void *obj;        /* the sl_* struct being filled */
    size_t index;
    size_t parent_service, parent_route, parent_consumer; /* nesting; NONE at top level */
    const struct sl_conf_value *node;                     /* the entity's map */
    const struct field *fields;
    size_t n_fields;
    const struct sl_conf_value *seen[MAX_FIELDS]; /* key node of each field that was set */
};

/* An entity read from a map: its kind, object, index, field table and
 * the parents it is nested under (NONE at the top level). */
#define ENTITY(kind_, obj_, index_, fields_, service_, route_, consumer_)                          \
    ((struct entity){.kind = (kind_),                                                              \
                     .obj = (obj_),                                                                \
                     .index = (index_),                                                            \
                     .parent_service = (service_),                                                 \
                     .parent_route = (route_),                                                     \
                     .parent_consumer = (consumer_),                                               \
                     .fields = (fields_),                                                          \
                     .n_fields = sizeof(fields_) / sizeof(fields_)[0]})

static const struct sl_conf_value *seen(const struct entity *e, const char *name)
{
    for (size_t i = 0; i < e->n_fields; i++)
        if (strcmp(e->fields[i].name, name) == 0)
            return e->seen[i];
    return NULL;
}

static bool is_empty_value(const struct sl_conf_value *v)
{
    return v->type == SL_CONF_NULL ||
           ((v->type == SL_CONF_SEQ || v->type == SL_CONF_MAP) && v->n_items == 0);
}

static bool read_field(struct loader *L, struct entity *e, const struct field *f,
                       const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    char *base = e->obj;
    const char *s = NULL; /* set by read_string() */
    long long n;
    bool b;
    switch (f->kind) {
    case FK_CUSTOM:
        return f->parse(L, e, key, val);
    case FK_STRING:
    case FK_NAME:
    case FK_UUID: {
        if (!read_string(L, val, &s))
            return false;
        char q[100];
        if (f->kind == FK_NAME && !valid_name(s))
            return fail(L, val,
                        "invalid %s '%s': only letters, digits, '.', '-', '_' and '~' "
                        "are allowed",
                        f->name, excerpt(q, s));
        if (f->kind == FK_UUID && !valid_uuid(s))
            return fail(L, val, "invalid %s '%s': expected a UUID", f->name, excerpt(q, s));
        char *copy = lstrdup(L, s);
        if (copy == NULL)
            return false;
        memcpy(base + f->offset, &copy, sizeof copy);
        return true;
    }
    case FK_U16:
    case FK_U32:
    case FK_INT:
        if (!read_int(L, val, f->min, f->max, &n))
            return false;
        if (f->kind == FK_U16) {
            uint16_t u = (uint16_t)n;
            memcpy(base + f->offset, &u, sizeof u);
        } else if (f->kind == FK_U32) {
            uint32_t u = (uint32_t)n;
            memcpy(base + f->offset, &u, sizeof u);
        }
        return true;
    case FK_BOOL:
        if (!read_bool(L, val, &b))
            return false;
        if (f->offset != NONE)
            memcpy(base + f->offset, &b, sizeof b);
        return true;
    case FK_TAGS:
        if (!expect_type(L, val, SL_CONF_SEQ))
            return false;
        for (size_t i = 0; i < val->n_items; i++) {
            const struct sl_conf_value *t = val->items[i];
            char q[100];
            if (!read_string(L, t, &s))
                return false;
            if (!valid_tag(s))
                return fail(L, t,
                            "invalid tag '%s': ',', '/' and control characters are not "
                            "allowed",
                            excerpt(q, s));
        }
        return true;
    case FK_COMMENT:
        return expect_type(L, val, SL_CONF_STRING);
    case FK_IGNORE:
        return expect_type(L, val, SL_CONF_SEQ);
    case FK_UNSUPPORTED:
        if (is_empty_value(val))
            return true;
        return fail(L, key, "%s field '%s' is not supported yet", e->kind, f->name);
    }
    return true;
}

/* Read the map of one entity through its descriptor table. */
static bool read_entity(struct loader *L, struct entity *e, const struct sl_conf_value *map)
{
    e->node = map;
    if (!expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *key = map->keys[i], *val = map->items[i];
        size_t fi = 0;
        while (fi < e->n_fields && strcmp(e->fields[fi].name, key->text) != 0)
            fi++;
        if (fi == e->n_fields) {
            char q[100];
            return fail(L, key, "unknown field '%s'", excerpt(q, key->text));
        }
        if (val->type == SL_CONF_NULL) /* Kong: null means "not set" */
            continue;
        e->seen[fi] = key;
        if (!read_field(L, e, &e->fields[fi], key, val))
            return false;
    }
    return true;
}

/*
 * Read one entity's map into tmp, then copy tmp into its slot of v (index
 * e->index). tmp, not the slot: entities nested in it are pushed to
 * vectors meanwhile, and the slot's vector may be one of them and move.
 * Returns the slot, or NULL when the map was refused (after the copy, so
 * what was read is freed with the rest).
 */
static void *read_entity_into(struct loader *L, struct entity *e, const struct sl_conf_value *map,
                              struct vec *v, const void *tmp, size_t size)
{
    bool ok = read_entity(L, e, map);
    void *slot = vec_at(v, e->index);
    memcpy(slot, tmp, size);
    return ok ? slot : NULL;
}

/* Register a unique value (name, id, ...) of an entity; error on a duplicate. */
static bool unique(struct loader *L, uintptr_t ns, const char *what, const char *value,
                   const struct sl_conf_value *at, size_t index)
{
    if (value == NULL)
        return true;
    bool oom = false;
    const struct strmap_entry *dup = strmap_put(&L->names, ns, value, at, index, &oom);
    if (oom)
        return fail_oom(L);
    if (dup != NULL) {
        char q[100];
        return fail(L, at, "duplicate %s '%s' (first at line %d)", what, excerpt(q, value),
                    dup->node->line);
    }
    return true;
}

/* The value node of a field that was set (for error positions). */
static const struct sl_conf_value *value_of(const struct entity *e, const char *name)
{
    const struct sl_conf_value *k = seen(e, name);
    if (k == NULL)
        return e->node;
    for (size_t i = 0; i < e->node->n_items; i++)
        if (e->node->keys[i] == k)
            return e->node->items[i];
    return k;
}

/* A reference: "name-or-id", {name: x} or {id: x}. */
static bool read_ref(struct loader *L, struct entity *e, enum ref_target target,
                     const struct sl_conf_value *val, int owner_kind)
{
    struct pending_ref ref = {.target = target,
                              .mode = REF_NAME_OR_ID,
                              .node = val,
                              .owner_kind = owner_kind,
                              .owner_index = e->index};
    if (val->type == SL_CONF_STRING) {
        if (!read_string(L, val, &ref.key))
            return false;
    } else if (val->type == SL_CONF_MAP) {
        for (size_t i = 0; i < val->n_items; i++) {
            const struct sl_conf_value *k = val->keys[i];
            char q[100];
            if (strcmp(k->text, "name") == 0 || strcmp(k->text, "id") == 0) {
                if (ref.key != NULL)
                    return fail(L, k, "conflicting values: give either 'name' or 'id'");
                if (!read_string(L, val->items[i], &ref.key))
                    return false;
                ref.mode = k->text[0] == 'n' ? REF_NAME : REF_ID;
                ref.node = val->items[i];
            } else {
                return fail(L, k, "unknown field '%s'", excerpt(q, k->text));
            }
        }
        if (ref.key == NULL)
            return fail(L, val, "a reference needs 'name' or 'id'");
    } else {
        return fail(L, val, "expected a string or a map, got %s", sl_conf_type_name(val->type));
    }
    struct pending_ref *slot = vec_push(&L->refs);
    if (slot == NULL)
        return fail_oom(L);
    *slot = ref;
    return true;
}

/* Protocol names Kong knows but sluice does not serve (yet). */
static bool kong_protocol(const char *p)
{
    static const char *const names[] = {"grpc", "grpcs", "tcp", "tls",
                                        "udp",  "ws",    "wss", "tls_passthrough"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(p, names[i]) == 0)
            return true;
    return false;
}

/* A `protocols` set; grpc/grpcs only when `allow_grpc` (plugins). */
static bool read_protocols(struct loader *L, const struct sl_conf_value *val, bool allow_grpc,
                           unsigned *out)
{
    if (!expect_type(L, val, SL_CONF_SEQ))
        return false;
    if (val->n_items == 0)
        return fail(L, val, "protocols must not be empty");
    unsigned bits = 0;
    for (size_t i = 0; i < val->n_items; i++) {
        const struct sl_conf_value *p = val->items[i];
        const char *s = NULL; /* set by read_string() */
        char q[100];
        if (!read_string(L, p, &s))
            return false;
        if (strcmp(s, "http") == 0)
            bits |= SL_PROTO_HTTP;
        else if (strcmp(s, "https") == 0)
            bits |= SL_PROTO_HTTPS;
        else if (allow_grpc && strcmp(s, "grpc") == 0)
            bits |= SL_PROTO_GRPC;
        else if (allow_grpc && strcmp(s, "grpcs") == 0)
            bits |= SL_PROTO_GRPCS;
        else if (kong_protocol(s))
            return fail(L, p, "protocol '%s' is not supported yet", s);
        else
            return fail(L, p, "invalid protocol '%s': expected http or https", excerpt(q, s));
    }
    *out = bits;
    return true;
}

/* ----- plugins ----- */

static bool plugin_ref(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                       const struct sl_conf_value *val, enum ref_target target, size_t parent)
{
    if (parent != NONE)
        return fail(L, key, "conflicting values: this plugin is nested under a %s already",
                    key->text);
    return read_ref(L, e, target, val, OWNER_PLUGIN);
}

static bool plugin_service(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                           const struct sl_conf_value *val)
{
    return plugin_ref(L, e, key, val, REF_SERVICE, e->parent_service);
}

static bool plugin_route(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    return plugin_ref(L, e, key, val, REF_ROUTE, e->parent_route);
}

static bool plugin_consumer(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    return plugin_ref(L, e, key, val, REF_CONSUMER, e->parent_consumer);
}

static bool plugin_name(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by read_string() */
    if (!read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_')) {
            char q[100];
            return fail(L, val, "invalid plugin name '%s'", excerpt(q, s));
        }
    }
    struct sl_plugin_conf *p = e->obj;
    p->name = lstrdup(L, s);
    return p->name != NULL;
}

static bool plugin_config(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    if (!expect_type(L, val, SL_CONF_MAP))
        return false;
    ((struct sl_plugin_conf *)e->obj)->config = val;
    return true;
}

static bool plugin_protocols(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return read_protocols(L, val, true, &((struct sl_plugin_conf *)e->obj)->protocols);
}

#define PLUGIN_FIELD(n, k, m)                                                                      \
    {                                                                                              \
        n, k, offsetof(struct sl_plugin_conf, m), 0, 0, NULL                                       \
    }
static const struct field plugin_fields[] = {
    {"name", FK_CUSTOM, 0, 0, 0, plugin_name},
    PLUGIN_FIELD("id", FK_UUID, id),
    PLUGIN_FIELD("instance_name", FK_NAME, instance_name),
    {"config", FK_CUSTOM, 0, 0, 0, plugin_config},
    PLUGIN_FIELD("enabled", FK_BOOL, enabled),
    {"protocols", FK_CUSTOM, 0, 0, 0, plugin_protocols},
    {"service", FK_CUSTOM, 0, 0, 0, plugin_service},
    {"route", FK_CUSTOM, 0, 0, 0, plugin_route},
    {"consumer", FK_CUSTOM, 0, 0, 0, plugin_consumer},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"ordering", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof plugin_fields / sizeof plugin_fields[0] <= MAX_FIELDS, "raise MAX_FIELDS");

static bool read_plugins(struct loader *L, const struct sl_conf_value *seq, size_t service,
                         size_t route, size_t consumer)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct plugin_rec *rec = vec_push(&L->plugins);
        if (rec == NULL)
            return fail_oom(L);
        size_t index = L->plugins.n - 1;
        rec->service = service;
        rec->route = route;
        rec->consumer = consumer;
        rec->p.enabled = true;
        rec->p.protocols = SL_PROTO_HTTP | SL_PROTO_HTTPS | SL_PROTO_GRPC | SL_PROTO_GRPCS;
        rec->p.index = index;
        rec->p.line = seq->items[i]->line;
        rec->p.column = seq->items[i]->column;
        struct entity e = ENTITY("plugin", &rec->p, index, plugin_fields, service, route, consumer);
        if (!read_entity(L, &e, seq->items[i]))
            return false;
        if (rec->p.name == NULL)
            return fail(L, e.node, "plugin needs a 'name'");
        if (seen(&e, "consumer") != NULL)
            rec->consumer_at = value_of(&e, "consumer");
        if (!unique(L, NS_PLUGIN_ID, "plugin id", rec->p.id, value_of(&e, "id"), index) ||
            !unique(L, NS_PLUGIN_INSTANCE_NAME, "plugin instance_name", rec->p.instance_name,
                    value_of(&e, "instance_name"), index))
            return false;
    }
    return true;
}

/* ----- routes ----- */

static bool read_string_list(struct loader *L, const struct sl_conf_value *val, char ***out,
                             size_t *n_out)
{
    if (!expect_type(L, val, SL_CONF_SEQ))
        return false;
    char **list = lalloc(L, (val->n_items + 1) * sizeof *list);
    if (list == NULL)
        return false;
    for (size_t i = 0; i < val->n_items; i++) {
        const char *s = NULL; /* set by read_string() */
        if (!read_string(L, val->items[i], &s))
            return false;
        if ((list[i] = lstrdup(L, s)) == NULL)
            return false;
    }
    *out = list;
    *n_out = val->n_items;
    return true;
}

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
    return fail(L, at, "invalid regex %s '%s': %s at offset %zu", what, excerpt(q, pattern), msg,
                (size_t)offset);
}

static bool route_paths(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!read_string_list(L, val, &r->paths, &r->n_paths))
        return false;
    for (size_t i = 0; i < r->n_paths; i++) {
        const char *p = r->paths[i];
        const struct sl_conf_value *at = val->items[i];
        char q[100];
        if (p[0] == '~' || (L->legacy_paths && p[0] == '/' && legacy_regex_path(p))) {
            /* Kong anchors a path regex at the start only */
            const char *pattern = p[0] == '~' ? p + 1 : p;
            if (pattern[0] != '/')
                return fail(L, at,
                            "invalid path '%s': should start with: / (fixed path) or ~/ "
                            "(regex path)",
                            excerpt(q, p));
            if (!check_regex(L, at, "path", pattern, PCRE2_ANCHORED))
                return false;
            if (p[0] != '~') {
                /* pre-3.0 file: store it the 3.0 way, so nothing after the
                 * loader needs Kong's legacy heuristic */
                size_t n = strlen(p);
                char *tilde = lalloc(L, n + 2);
                if (tilde == NULL)
                    return false;
                tilde[0] = '~';
                memcpy(tilde + 1, p, n + 1);
                r->paths[i] = tilde;
            }
            continue;
        }
        const char *why = path_problem(p);
        if (why != NULL)
            return fail(L, at, "invalid path '%s': %s", excerpt(q, p), why);
    }
    return true;
}

/* headers: {name: [values]} (or one string); Kong: no "host" (that is
 * what hosts are for), a value "~*re" is a case-insensitive regex. */
static bool route_headers(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!expect_type(L, val, SL_CONF_MAP))
        return false;
    r->headers = lalloc(L, (val->n_items + 1) * sizeof *r->headers);
    if (r->headers == NULL)
        return false;
    for (size_t i = 0; i < val->n_items; i++) {
        const struct sl_conf_value *k = val->keys[i], *v = val->items[i];
        struct sl_route_header *h = &r->headers[i];
        char q[100];
        if (k->text_len == 0)
            return fail(L, k, "invalid header name ''");
        for (size_t j = 0; j < k->text_len; j++)
            if (!sl_http_is_tchar((unsigned char)k->text[j]))
                return fail(L, k, "invalid header name '%s'", excerpt(q, k->text));
        if ((h->name = lstrdup(L, k->text)) == NULL)
            return false;
        for (char *c = h->name; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        if (strcmp(h->name, "host") == 0)
            return fail(L, k,
                        "cannot contain 'host' header, which must be specified in the 'hosts' "
                        "attribute");
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->headers[j].name, h->name) == 0)
                return fail(L, k, "duplicate header '%s'", excerpt(q, h->name));
        if (v->type == SL_CONF_STRING) {
            h->values = lalloc(L, 2 * sizeof *h->values);
            if (h->values == NULL || (h->values[0] = lstrdup(L, v->text)) == NULL)
                return false;
            h->n_values = 1;
        } else if (!read_string_list(L, v, &h->values, &h->n_values)) {
            return false;
        }
        if (h->n_values == 0)
            return fail(L, v, "header '%s' needs at least one value", excerpt(q, h->name));
        for (size_t j = 0; j < h->n_values; j++) {
            const char *hv = h->values[j];
            const struct sl_conf_value *at = v->type == SL_CONF_SEQ ? v->items[j] : v;
            for (const char *c = hv; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\t')
                    return fail(L, at,
                                "invalid value for header '%s': control characters are "
                                "not allowed",
                                excerpt(q, h->name));
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
    if (!read_string_list(L, val, &r->snis, &r->n_snis))
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
        if (!valid_hostname(name, name_len) || memchr(name, '*', name_len) != NULL)
            return fail(L, val->items[i], "invalid SNI '%s'", excerpt(q, h));
        struct in_addr v4;
        if (inet_pton(AF_INET, h, &v4) == 1) /* Kong's typedefs.sni; RFC 6066 section 3 */
            return fail(L, val->items[i], "invalid SNI '%s': must not be an IP", excerpt(q, h));
    }
    return true;
}

static bool route_regex_priority(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    long long n;
    if (!read_int(L, val, INT_MIN, INT_MAX, &n))
        return false;
    ((struct sl_route *)e->obj)->regex_priority = (int)n;
    return true;
}

static bool route_hosts(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!read_string_list(L, val, &r->hosts, &r->n_hosts))
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
                return fail(L, at, "invalid host '%s': only one wildcard is allowed",
                            excerpt(q, h));
            bool leading = n > 2 && h[0] == '*' && h[1] == '.';
            bool trailing = n > 2 && h[n - 1] == '*' && h[n - 2] == '.';
            if (!leading && !trailing)
                return fail(L, at,
                            "invalid host '%s': the wildcard must be the leftmost or the "
                            "rightmost label",
                            excerpt(q, h));
            if (!valid_hostname(leading ? h + 2 : h, n - 2))
                return fail(L, at, "invalid host '%s'", excerpt(q, h));
            continue;
        }
        if (h[0] == '[') {
            /* IPv6 literal: stored without brackets, as the proxy passes the
             * request host (the Host header's port and brackets removed). */
            if (n > 2 && h[n - 1] == ']' && valid_ipv6(h + 1, n - 2)) {
                memmove(h, h + 1, n - 2);
                h[n - 2] = '\0';
                continue;
            }
            if (strstr(h, "]:") != NULL)
                return fail(L, at, "hosts with a port are not supported yet");
            return fail(L, at, "invalid host '%s'", excerpt(q, h));
        }
        if (valid_ipv6(h, n))
            continue;
        if (strchr(h, ':') != NULL)
            return fail(L, at, "hosts with a port are not supported yet");
        if (!valid_hostname(h, n))
            return fail(L, at, "invalid host '%s'", excerpt(q, h));
    }
    return true;
}

static bool route_methods(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_route *r = e->obj;
    if (!read_string_list(L, val, &r->methods, &r->n_methods))
        return false;
    for (size_t i = 0; i < r->n_methods; i++) {
        char *m = r->methods[i];
        char q[100];
        for (char *c = m; *c; c++) {
            if (!sl_http_is_tchar((unsigned char)*c))
                return fail(L, val->items[i], "invalid method '%s'", excerpt(q, m));
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
        }
    }
    return true;
}

static bool route_protocols(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    return read_protocols(L, val, false, &((struct sl_route *)e->obj)->protocols);
}

static bool route_service(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    if (e->parent_service != NONE)
        return fail(L, key, "conflicting values: this route is nested under a service already");
    return read_ref(L, e, REF_SERVICE, val, OWNER_ROUTE);
}

static bool route_path_handling(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                                const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by read_string() */
    if (!read_string(L, val, &s))
        return false;
    if (strcmp(s, "v0") == 0)
        return true;
    if (strcmp(s, "v1") == 0)
        return fail(L, val, "path_handling 'v1' is not supported yet");
    char q[100];
    return fail(L, val, "invalid path_handling '%s': expected v0 or v1", excerpt(q, s));
}

static bool route_redirect_code(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                                const struct sl_conf_value *val)
{
    long long code;
    if (!read_int(L, val, 0, 999, &code))
        return false;
    if (code != 426 && code != 301 && code != 302 && code != 307 && code != 308)
        return fail(L, val,
                    "invalid https_redirect_status_code %lld: expected 426, 301, 302, "
                    "307 or 308",
                    code);
    ((struct sl_route *)e->obj)->https_redirect_status_code = (int)code;
    return true;
}

static bool route_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    return read_plugins(L, val, NONE, e->index, NONE);
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

static bool read_routes(struct loader *L, const struct sl_conf_value *seq, size_t service)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct route_rec *rec = vec_push(&L->routes);
        if (rec == NULL)
            return fail_oom(L);
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
         * so read_entity() works on a stable copy that is written back. */
        struct sl_route tmp = *r;
        e.obj = &tmp;
        bool ok = read_entity(L, &e, seq->items[i]);
        rec = vec_at(&L->routes, index);
        rec->r = tmp;
        if (!ok)
            return false;
        r = &rec->r;
        if (service == NONE && seen(&e, "service") == NULL)
            return fail(L, e.node,
                        "route needs a 'service' (routes without a service are not "
                        "supported yet)");
        /* Kong's entity checks */
        if (r->n_snis > 0 && !(r->protocols & SL_PROTO_HTTPS))
            return fail(L, value_of(&e, "snis"),
                        "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or "
                        "'tls_passthrough'");
        /* Kong's http subschema (routes_subschemas.lua): with https among
         * the protocols, snis count too (a plain-http request never matches
         * a route that has snis: it carries no SNI) */
        if (r->n_paths == 0 && r->n_hosts == 0 && r->n_methods == 0 && r->n_headers == 0 &&
            (r->n_snis == 0 || !(r->protocols & SL_PROTO_HTTPS)))
            return fail(L, e.node,
                        (r->protocols & SL_PROTO_HTTPS)
                            ? "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' "
                              "when 'protocols' is 'https'"
                            : "must set one of 'methods', 'hosts', 'headers', 'paths' when "
                              "'protocols' is 'http'");
        if (!unique(L, NS_ROUTE_NAME, "route name", r->name, value_of(&e, "name"), index) ||
            !unique(L, NS_ROUTE_ID, "route id", r->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

/* ----- services ----- */

static bool service_url(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct service_rec *rec = e->obj;
    struct sl_service *s = &rec->s;
    const char *url = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &url))
        return false;
    const char *sep = strstr(url, "://");
    if (sep == NULL)
        return fail(L, val, "invalid url '%s': missing scheme", excerpt(q, url));
    size_t scheme_len = (size_t)(sep - url);
    char scheme[16];
    if (scheme_len == 0 || scheme_len >= sizeof scheme)
        return fail(L, val, "invalid url '%s': bad scheme", excerpt(q, url));
    for (size_t i = 0; i < scheme_len; i++)
        scheme[i] = (char)((url[i] >= 'A' && url[i] <= 'Z') ? url[i] - 'A' + 'a' : url[i]);
    scheme[scheme_len] = '\0';
    uint16_t default_port;
    if (strcmp(scheme, "http") == 0)
        default_port = 80;
    else if (strcmp(scheme, "https") == 0)
        default_port = 443;
    else if (kong_protocol(scheme))
        return fail(L, val, "protocol '%s' is not supported yet", scheme);
    else
        return fail(L, val, "invalid url '%s': the scheme must be http or https", excerpt(q, url));

    const char *auth = sep + 3;
    size_t auth_len = strcspn(auth, "/?#");
    const char *rest = auth + auth_len;
    if (memchr(auth, '@', auth_len) != NULL)
        return fail(L, val, "invalid url '%s': credentials in a url are not supported",
                    excerpt(q, url));
    if (*rest == '?' || *rest == '#' || strpbrk(rest, "?#") != NULL)
        return fail(L, val, "invalid url '%s': a query string or fragment is not allowed",
                    excerpt(q, url));

    /* host[:port], the host possibly an [IPv6] literal */
    const char *host = auth, *port = NULL;
    size_t host_len = auth_len;
    if (auth_len > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', auth_len);
        if (close == NULL)
            return fail(L, val, "invalid url '%s': unterminated IPv6 address", excerpt(q, url));
        host_len = (size_t)(close - auth) + 1;
        if (host_len < auth_len) {
            if (auth[host_len] != ':')
                return fail(L, val, "invalid url '%s'", excerpt(q, url));
            port = auth + host_len + 1;
        }
    } else {
        const char *colon = memchr(auth, ':', auth_len);
        if (colon != NULL) {
            host_len = (size_t)(colon - auth);
            port = colon + 1;
        }
    }
    if (host_len == 0)
        return fail(L, val, "invalid url '%s': missing host", excerpt(q, url));
    size_t hs, hl;
    const char *why = host_problem(host, host_len, &hs, &hl);
    if (why != NULL)
        return fail(L, val, "invalid url '%s': %s", excerpt(q, url), why);
    unsigned long port_num = default_port;
    if (port != NULL) {
        size_t port_len = (size_t)(rest - port);
        if (!is_digits(port, port_len, 10) || port_len > 5 ||
            (port_num = strtoul(port, NULL, 10)) > 65535)
            return fail(L, val, "invalid url '%s': bad port", excerpt(q, url));
    }
    if (*rest != '\0') {
        why = path_problem(rest);
        if (why != NULL)
            return fail(L, val, "invalid url '%s': path %s", excerpt(q, url), why);
    }
    if ((s->protocol = lstrdup(L, scheme)) == NULL ||
        (s->host = lstrndup(L, host + hs, hl)) == NULL)
        return false;
    s->port = (uint16_t)port_num;
    rec->port_set = true;
    s->path = NULL;
    if (*rest != '\0' && (s->path = lstrdup(L, rest)) == NULL)
        return false;
    return true;
}

static bool service_protocol(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *p = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &p))
        return false;
    if (strcmp(p, "http") != 0 && strcmp(p, "https") != 0) {
        if (kong_protocol(p))
            return fail(L, val, "protocol '%s' is not supported yet", p);
        return fail(L, val, "invalid protocol '%s': expected http or https", excerpt(q, p));
    }
    s->protocol = lstrdup(L, p);
    return s->protocol != NULL;
}

static bool service_host(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *h = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &h))
        return false;
    size_t start, len;
    const char *why = host_problem(h, strlen(h), &start, &len);
    if (why != NULL)
        return fail(L, val, "invalid host '%s': %s", excerpt(q, h), why);
    s->host = lstrndup(L, h + start, len);
    return s->host != NULL;
}

static bool service_port(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct service_rec *rec = e->obj;
    long long port;
    if (!read_int(L, val, 0, 65535, &port))
        return false;
    rec->s.port = (uint16_t)port;
    rec->port_set = true;
    return true;
}

static bool service_path(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *p = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &p))
        return false;
    const char *why = path_problem(p);
    if (why != NULL)
        return fail(L, val, "invalid path '%s': %s", excerpt(q, p), why);
    s->path = lstrdup(L, p);
    return s->path != NULL;
}

static bool service_routes(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                           const struct sl_conf_value *val)
{
    return read_routes(L, val, e->index);
}

static bool service_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    return read_plugins(L, val, e->index, NONE, NONE);
}

static bool service_tls_verify(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                               const struct sl_conf_value *val)
{
    return read_bool(L, val, &((struct service_rec *)e->obj)->s.tls_verify);
}

static bool service_tls_verify_depth(struct loader *L, struct entity *e,
                                     const struct sl_conf_value *key,
                                     const struct sl_conf_value *val)
{
    long long n;
    if (!read_int(L, val, 0, 64, &n))
        return false;
    ((struct service_rec *)e->obj)->s.tls_verify_depth = (int)n;
    return true;
}

/* ca_certificates: ids of ca_certificates entities (checked once all are read). */
static bool service_ca_certificates(struct loader *L, struct entity *e,
                                    const struct sl_conf_value *key,
                                    const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    if (!read_string_list(L, val, &s->ca_certificates, &s->n_ca_certificates))
        return false;
    for (size_t i = 0; i < s->n_ca_certificates; i++) {
        struct pending_ref ref = {.target = REF_CA,
                                  .mode = REF_ID,
                                  .key = s->ca_certificates[i],
                                  .node = val->items[i],
                                  .owner_kind = OWNER_SERVICE,
                                  .owner_index = e->index};
        struct pending_ref *slot = vec_push(&L->refs);
        if (slot == NULL)
            return fail_oom(L);
        *slot = ref;
    }
    return true;
}

#define SERVICE_FIELD(n, k, m, lo, hi)                                                             \
    {                                                                                              \
        n, k, offsetof(struct service_rec, s) + offsetof(struct sl_service, m), lo, hi, NULL       \
    }
static const struct field service_fields[] = {
    SERVICE_FIELD("name", FK_NAME, name, 0, 0),
    SERVICE_FIELD("id", FK_UUID, id, 0, 0),
    {"url", FK_CUSTOM, 0, 0, 0, service_url},
    {"protocol", FK_CUSTOM, 0, 0, 0, service_protocol},
    {"host", FK_CUSTOM, 0, 0, 0, service_host},
    {"port", FK_CUSTOM, 0, 0, 0, service_port},
    {"path", FK_CUSTOM, 0, 0, 0, service_path},
    SERVICE_FIELD("connect_timeout", FK_U32, connect_timeout_ms, 1, SL_CONFIG_MAX_TIMEOUT_MS),
    SERVICE_FIELD("read_timeout", FK_U32, read_timeout_ms, 1, SL_CONFIG_MAX_TIMEOUT_MS),
    SERVICE_FIELD("write_timeout", FK_U32, write_timeout_ms, 1, SL_CONFIG_MAX_TIMEOUT_MS),
    SERVICE_FIELD("retries", FK_U32, retries, 0, 32767),
    SERVICE_FIELD("enabled", FK_BOOL, enabled, 0, 0),
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"routes", FK_CUSTOM, 0, 0, 0, service_routes},
    {"plugins", FK_CUSTOM, 0, 0, 0, service_plugins},
    {"tls_verify", FK_CUSTOM, 0, 0, 0, service_tls_verify},
    {"tls_verify_depth", FK_CUSTOM, 0, 0, 0, service_tls_verify_depth},
    {"ca_certificates", FK_CUSTOM, 0, 0, 0, service_ca_certificates},
    {"client_certificate", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof service_fields / sizeof service_fields[0] <= MAX_FIELDS, "raise MAX_FIELDS");

static bool read_services(struct loader *L, const struct sl_conf_value *seq)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct service_rec *rec = vec_push(&L->services);
        if (rec == NULL)
            return fail_oom(L);
        size_t index = L->services.n - 1;
        struct sl_service *s = &rec->s;
        s->connect_timeout_ms = s->read_timeout_ms = s->write_timeout_ms = 60000;
        s->retries = 5;
        s->enabled = true;
        s->tls_verify_depth = -1;
        s->index = index;
        s->line = seq->items[i]->line;
        s->column = seq->items[i]->column;
        struct entity e = {.kind = "service",
                           .index = index,
                           .parent_service = NONE,
                           .parent_route = NONE,
                           .parent_consumer = NONE,
                           .fields = service_fields,
                           .n_fields = sizeof service_fields / sizeof service_fields[0]};
        /* Work on a copy: nested entities may grow other vectors, never this
         * one, but keep the pattern uniform with routes. */
        struct service_rec tmp = *rec;
        e.obj = &tmp;
        if ((rec = read_entity_into(L, &e, seq->items[i], &L->services, &tmp, sizeof tmp)) == NULL)
            return false;
        s = &rec->s;

        const struct sl_conf_value *url = seen(&e, "url");
        static const char *const parts[] = {"protocol", "host", "port", "path"};
        for (size_t p = 0; url != NULL && p < 4; p++) {
            const struct sl_conf_value *other = seen(&e, parts[p]);
            if (other == NULL)
                continue;
            bool url_last = url->line > other->line ||
                            (url->line == other->line && url->column > other->column);
            return fail(L, url_last ? url : other,
                        "conflicting values: 'url' and '%s' cannot both be set", parts[p]);
        }
        if (s->host == NULL)
            return fail(L, e.node, "service needs 'host' or 'url'");
        if (s->protocol == NULL && (s->protocol = lstrdup(L, "http")) == NULL)
            return false;
        if (!rec->port_set)
            s->port = strcmp(s->protocol, "https") == 0 ? 443 : 80;
        if (!unique(L, NS_SERVICE_NAME, "service name", s->name, value_of(&e, "name"), index) ||
            !unique(L, NS_SERVICE_ID, "service id", s->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

/* ----- consumers ----- */

static bool consumer_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return read_plugins(L, val, NONE, NONE, e->index);
}

static bool read_jwt_secrets(struct loader *L, const struct sl_conf_value *seq, size_t consumer);

static bool consumer_jwt_secrets(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    return read_jwt_secrets(L, val, e->index);
}

#define CONSUMER_FIELD(n, k, m)                                                                    \
    {                                                                                              \
        n, k, offsetof(struct sl_consumer, m), 0, 0, NULL                                          \
    }
static const struct field consumer_fields[] = {
    CONSUMER_FIELD("username", FK_STRING, username),
    CONSUMER_FIELD("custom_id", FK_STRING, custom_id),
    CONSUMER_FIELD("id", FK_UUID, id),
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"plugins", FK_CUSTOM, 0, 0, 0, consumer_plugins},
    {"jwt_secrets", FK_CUSTOM, 0, 0, 0, consumer_jwt_secrets},
    {"keyauth_credentials", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"basicauth_credentials", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"hmacauth_credentials", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"oauth2_credentials", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"mtls_auth_credentials", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"acls", FK_UNSUPPORTED, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof consumer_fields / sizeof consumer_fields[0] <= MAX_FIELDS,
               "raise MAX_FIELDS");

/*
 * Kong gives a declarative consumer without an id a name-based UUID (v5),
 * so X-Consumer-ID and $(consumer.id) always have a value that stays the
 * same across reloads. The same here: SHA-1 over a namespace of ours and
 * "username:<u>" (or "custom_id:<c>"), formatted as RFC 4122 version 5.
 */
static char *consumer_generated_id(struct loader *L, const struct sl_consumer *c)
{
    char name[600];
    snprintf(name, sizeof name, "sluice consumer %s:%s", c->username ? "username" : "custom_id",
             c->username    ? c->username
             : c->custom_id ? c->custom_id
                            : "");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(name, strlen(name), md, &md_len, EVP_sha1(), NULL) || md_len < 16)
        return NULL;
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50); /* version 5 */
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char text[37];
    snprintf(text, sizeof text,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
             md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
             md[14], md[15]);
    return lstrdup(L, text);
}

static bool read_consumers(struct loader *L, const struct sl_conf_value *seq)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_consumer *c = vec_push(&L->consumers);
        if (c == NULL)
            return fail_oom(L);
        size_t index = L->consumers.n - 1;
        struct sl_consumer tmp = {
            .index = index, .line = seq->items[i]->line, .column = seq->items[i]->column};
        struct entity e = ENTITY("consumer", &tmp, index, consumer_fields, NONE, NONE, NONE);
        if ((c = read_entity_into(L, &e, seq->items[i], &L->consumers, &tmp, sizeof tmp)) == NULL)
            return false;
        if (c->username == NULL && c->custom_id == NULL)
            return fail(L, e.node, "consumer needs 'username' or 'custom_id'");
        if (!unique(L, NS_CONSUMER_USERNAME, "consumer username", c->username,
                    value_of(&e, "username"), index) ||
            !unique(L, NS_CONSUMER_CUSTOM_ID, "consumer custom_id", c->custom_id,
                    value_of(&e, "custom_id"), index) ||
            !unique(L, NS_CONSUMER_ID, "consumer id", c->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Upstreams, targets, health checks                                          */
/* ------------------------------------------------------------------------ */

/* A number of seconds (Kong writes them as numbers, may be fractional). */
static bool read_seconds_ms(struct loader *L, const struct sl_conf_value *v, double max_s,
                            uint32_t *out_ms)
{
    if (v->type != SL_CONF_INT && v->type != SL_CONF_FLOAT)
        return fail(L, v, "expected a number of seconds, got %s", sl_conf_type_name(v->type));
    if (!isfinite(v->number) || v->number < 0 || v->number > max_s)
        return fail(L, v, "value %s is out of range (0..%g seconds)", v->text, max_s);
    *out_ms = (uint32_t)llround(v->number * 1000.0);
    return true;
}

static bool read_statuses(struct loader *L, const struct sl_conf_value *v,
                          struct sl_healthcheck_counters *c)
{
    if (!expect_type(L, v, SL_CONF_SEQ))
        return false;
    c->http_statuses = lalloc(L, (v->n_items + 1) * sizeof *c->http_statuses);
    if (c->http_statuses == NULL)
        return false;
    for (size_t i = 0; i < v->n_items; i++) {
        long long n;
        if (!read_int(L, v->items[i], 100, 999, &n))
            return false;
        c->http_statuses[i] = (uint16_t)n;
    }
    c->n_http_statuses = v->n_items;
    return true;
}

static bool set_statuses(struct loader *L, struct sl_healthcheck_counters *c, const uint16_t *codes,
                         size_t n)
{
    c->http_statuses = lalloc(L, n * sizeof *c->http_statuses);
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
    if (!expect_type(L, map, SL_CONF_MAP))
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
            if (!read_int(L, v, 0, 255, &n))
                return false;
            c->successes = (uint32_t)n;
        } else if (!healthy && strcmp(name, "tcp_failures") == 0) {
            if (!read_int(L, v, 0, 255, &n))
                return false;
            c->tcp_failures = (uint32_t)n;
        } else if (!healthy && strcmp(name, "timeouts") == 0) {
            if (!read_int(L, v, 0, 255, &n))
                return false;
            c->timeouts = (uint32_t)n;
        } else if (!healthy && strcmp(name, "http_failures") == 0) {
            if (!read_int(L, v, 0, 255, &n))
                return false;
            c->http_failures = (uint32_t)n;
        } else {
            return fail(L, k, "unknown field '%s'", excerpt(q, name));
        }
    }
    return true;
}

static bool read_hc_type(struct loader *L, const struct sl_conf_value *v, char **out)
{
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, v, &s))
        return false;
    if (strcmp(s, "grpc") == 0 || strcmp(s, "grpcs") == 0)
        return fail(L, v, "health check type '%s' is not supported yet", s);
    if (strcmp(s, "http") != 0 && strcmp(s, "https") != 0 && strcmp(s, "tcp") != 0)
        return fail(L, v, "invalid type '%s': expected http, https or tcp", excerpt(q, s));
    return (*out = lstrdup(L, s)) != NULL;
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
    hc->active.type = lstrdup(L, "http");
    hc->active.timeout_ms = 1000;
    hc->active.concurrency = 10;
    hc->active.http_path = lstrdup(L, "/");
    hc->active.https_verify_certificate = true;
    hc->passive.type = lstrdup(L, "http");
    return hc->active.type != NULL && hc->active.http_path != NULL && hc->passive.type != NULL &&
           set_statuses(L, &hc->active.healthy, active_ok, 2) &&
           set_statuses(L, &hc->active.unhealthy, active_bad, 8) &&
           set_statuses(L, &hc->passive.healthy, passive_ok, 19) &&
           set_statuses(L, &hc->passive.unhealthy, passive_bad, 3);
}

static bool read_hc_headers(struct loader *L, const struct sl_conf_value *v,
                            struct sl_healthchecks *hc)
{
    if (!expect_type(L, v, SL_CONF_MAP))
        return false;
    hc->active.headers = lalloc(L, (v->n_items + 1) * sizeof *hc->active.headers);
    if (hc->active.headers == NULL)
        return false;
    for (size_t i = 0; i < v->n_items; i++) {
        struct sl_route_header *h = &hc->active.headers[i];
        char q[100];
        for (size_t j = 0; j < v->keys[i]->text_len; j++)
            if (!sl_http_is_tchar((unsigned char)v->keys[i]->text[j]))
                return fail(L, v->keys[i], "invalid header name '%s'",
                            excerpt(q, v->keys[i]->text));
        if ((h->name = lstrdup(L, v->keys[i]->text)) == NULL ||
            !read_string_list(L, v->items[i], &h->values, &h->n_values))
            return false;
        for (size_t j = 0; j < h->n_values; j++)
            for (const char *c = h->values[j]; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\t')
                    return fail(L, v->items[i]->items[j],
                                "invalid header value: control characters are not allowed");
    }
    hc->active.n_headers = v->n_items;
    return true;
}

static bool read_healthchecks(struct loader *L, const struct sl_conf_value *map,
                              struct sl_healthchecks *hc)
{
    if (!expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *k = map->keys[i], *v = map->items[i];
        char q[100];
        if (v->type == SL_CONF_NULL)
            continue;
        if (strcmp(k->text, "threshold") == 0) {
            if ((v->type != SL_CONF_INT && v->type != SL_CONF_FLOAT) || v->number < 0 ||
                v->number > 100)
                return fail(L, v, "expected a percentage between 0 and 100");
            hc->threshold = v->number;
        } else if (strcmp(k->text, "active") == 0 || strcmp(k->text, "passive") == 0) {
            bool active = k->text[0] == 'a';
            if (!expect_type(L, v, SL_CONF_MAP))
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
                    if (!read_int(L, v2, 1, 2147483648LL, &num))
                        return false;
                    hc->active.concurrency = (uint32_t)num;
                } else if (active && strcmp(n, "http_path") == 0) {
                    const char *s = NULL; /* set by read_string() */
                    if (!read_string(L, v2, &s))
                        return false;
                    if (s[0] != '/' || path_problem(s) != NULL)
                        return fail(L, v2, "invalid http_path '%s': should start with /",
                                    excerpt(q, s));
                    if ((hc->active.http_path = lstrdup(L, s)) == NULL)
                        return false;
                } else if (active && strcmp(n, "https_sni") == 0) {
                    const char *s = NULL; /* set by read_string() */
                    if (!read_string(L, v2, &s))
                        return false;
                    if (!valid_hostname(s, strlen(s)))
                        return fail(L, v2, "invalid https_sni '%s'", excerpt(q, s));
                    if ((hc->active.https_sni = lstrdup(L, s)) == NULL)
                        return false;
                } else if (active && strcmp(n, "https_verify_certificate") == 0) {
                    if (!read_bool(L, v2, &b))
                        return false;
                    hc->active.https_verify_certificate = b;
                } else if (active && strcmp(n, "headers") == 0) {
                    if (!read_hc_headers(L, v2, hc))
                        return false;
                } else {
                    return fail(L, k2, "unknown field '%s'", excerpt(q, n));
                }
            }
        } else {
            return fail(L, k, "unknown field '%s'", excerpt(q, k->text));
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
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            ((struct sl_upstream *)e->obj)->algorithm = names[i].a;
            return true;
        }
    return fail(L, val,
                "invalid algorithm '%s': expected round-robin, least-connections, "
                "consistent-hashing or latency",
                excerpt(q, s));
}

static bool read_hash_on(struct loader *L, const struct sl_conf_value *val, enum sl_hash_on *out)
{
    static const char *const names[] = {"none",   "consumer", "ip",        "header",
                                        "cookie", "path",     "query_arg", "uri_capture"};
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum sl_hash_on)i;
            return true;
        }
    return fail(L, val,
                "invalid value '%s': expected none, consumer, ip, header, cookie, path, "
                "query_arg or uri_capture",
                excerpt(q, s));
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
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++)
        if (!sl_http_is_tchar((unsigned char)*c))
            return fail(L, val, "invalid header name '%s'", excerpt(q, s));
    char *copy = lstrdup(L, s);
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
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    if (!valid_hostname(s, strlen(s)))
        return fail(L, val, "invalid host_header '%s': expected a hostname", excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->host_header = lstrdup(L, s)) != NULL;
}

static bool upstream_cookie_path(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    if (s[0] != '/' || path_problem(s) != NULL)
        return fail(L, val, "invalid hash_on_cookie_path '%s': should start with /", excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->hash_on_cookie_path = lstrdup(L, s)) != NULL;
}

/* hash_on_cookie: RFC 6265 section 4.1.1, a cookie-name is a token. */
static bool upstream_cookie_name(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++)
        if (!sl_http_is_tchar((unsigned char)*c))
            return fail(L, val, "invalid cookie name '%s'", excerpt(q, s));
    return (((struct sl_upstream *)e->obj)->hash_on_cookie = lstrdup(L, s)) != NULL;
}

/* use_srv_name: only Kong's default (false); true changes the SNI and Host
 * sent to SRV-resolved targets, which sluice does not do. */
static bool upstream_use_srv_name(struct loader *L, struct entity *e,
                                  const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    bool b;
    if (!read_bool(L, val, &b))
        return false;
    if (b)
        return fail(L, key, "upstream field 'use_srv_name' is not supported yet");
    return true;
}

static bool read_targets(struct loader *L, const struct sl_conf_value *seq, size_t upstream);

static bool upstream_targets(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return read_targets(L, val, e->index);
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
    const struct sl_conf_value *fb = value_of(e, "hash_fallback");
    if (u->hash_on == SL_HASH_HEADER && u->hash_on_header == NULL)
        return fail(L, value_of(e, "hash_on"), "hash_on 'header' needs 'hash_on_header'");
    if (u->hash_fallback == SL_HASH_HEADER && u->hash_fallback_header == NULL)
        return fail(L, fb, "hash_fallback 'header' needs 'hash_fallback_header'");
    if ((u->hash_on == SL_HASH_COOKIE || u->hash_fallback == SL_HASH_COOKIE) &&
        u->hash_on_cookie == NULL)
        return fail(L, value_of(e, "hash_on"), "hashing on a cookie needs 'hash_on_cookie'");
    if (u->hash_on == SL_HASH_QUERY_ARG && u->hash_on_query_arg == NULL)
        return fail(L, value_of(e, "hash_on"), "hash_on 'query_arg' needs 'hash_on_query_arg'");
    if (u->hash_fallback == SL_HASH_QUERY_ARG && u->hash_fallback_query_arg == NULL)
        return fail(L, fb, "hash_fallback 'query_arg' needs 'hash_fallback_query_arg'");
    if (u->hash_on == SL_HASH_URI_CAPTURE && u->hash_on_uri_capture == NULL)
        return fail(L, value_of(e, "hash_on"), "hash_on 'uri_capture' needs 'hash_on_uri_capture'");
    if (u->hash_fallback == SL_HASH_URI_CAPTURE && u->hash_fallback_uri_capture == NULL)
        return fail(L, fb, "hash_fallback 'uri_capture' needs 'hash_fallback_uri_capture'");
    if ((u->hash_on == SL_HASH_NONE || u->hash_on == SL_HASH_COOKIE) &&
        u->hash_fallback != SL_HASH_NONE)
        return fail(L, fb, "hash_fallback must be 'none' when hash_on is '%s'", names[u->hash_on]);
    if (u->hash_fallback != SL_HASH_NONE && u->hash_fallback == u->hash_on) {
        /* the same kind twice is fine only with different names */
        bool differ = (u->hash_on == SL_HASH_HEADER &&
                       strcmp(u->hash_on_header, u->hash_fallback_header) != 0) ||
                      (u->hash_on == SL_HASH_QUERY_ARG &&
                       strcmp(u->hash_on_query_arg, u->hash_fallback_query_arg) != 0) ||
                      (u->hash_on == SL_HASH_URI_CAPTURE &&
                       strcmp(u->hash_on_uri_capture, u->hash_fallback_uri_capture) != 0);
        if (!differ)
            return fail(L, fb, "hash_fallback must differ from hash_on");
    }
    return true;
}

static bool read_upstreams(struct loader *L, const struct sl_conf_value *seq)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_upstream *u = vec_push(&L->upstreams);
        if (u == NULL)
            return fail_oom(L);
        size_t index = L->upstreams.n - 1;
        struct sl_upstream tmp = {.slots = 10000,
                                  .index = index,
                                  .line = seq->items[i]->line,
                                  .column = seq->items[i]->column};
        if (!healthcheck_defaults(L, &tmp.healthchecks))
            return false;
        struct entity e = ENTITY("upstream", &tmp, index, upstream_fields, NONE, NONE, NONE);
        /* nested targets refer to this upstream by index: read into a copy */
        if ((u = read_entity_into(L, &e, seq->items[i], &L->upstreams, &tmp, sizeof tmp)) == NULL)
            return false;
        char q[100];
        if (u->name == NULL)
            return fail(L, e.node, "upstream needs a 'name'");
        if (!valid_hostname(u->name, strlen(u->name)))
            return fail(L, value_of(&e, "name"),
                        "invalid upstream name '%s': it must be a valid hostname (services "
                        "refer to it by their host)",
                        excerpt(q, u->name));
        struct in_addr v4;
        if (inet_pton(AF_INET, u->name, &v4) == 1) /* Kong's validate_name */
            return fail(L, value_of(&e, "name"),
                        "invalid upstream name '%s': no ip addresses allowed", excerpt(q, u->name));
        if (u->hash_on_cookie_path == NULL && (u->hash_on_cookie_path = lstrdup(L, "/")) == NULL)
            return false;
        if (!check_upstream_hashing(L, &e, u))
            return false;
        if (!unique(L, NS_UPSTREAM_NAME, "upstream name", u->name, value_of(&e, "name"), index) ||
            !unique(L, NS_UPSTREAM_ID, "upstream id", u->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

static bool target_target(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_target *t = e->obj;
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    size_t n = strlen(s);
    const char *host = s, *port = NULL;
    size_t host_len = n;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || !valid_ipv6(s + 1, (size_t)(close - s - 1)))
            return fail(L, val, "invalid target '%s': not a valid hostname or ip address",
                        excerpt(q, s));
        host = s + 1;
        host_len = (size_t)(close - s - 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return fail(L, val, "invalid target '%s'", excerpt(q, s));
    } else if (valid_ipv6(s, n)) {
        /* a bare IPv6 address: no port */
    } else {
        const char *colon = strrchr(s, ':');
        if (colon != NULL) {
            host_len = (size_t)(colon - s);
            port = colon + 1;
        }
        if (!valid_hostname(host, host_len))
            return fail(L, val, "invalid target '%s': not a valid hostname or ip address",
                        excerpt(q, s));
    }
    t->port = 8000; /* Kong's default */
    if (port != NULL) {
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535 || errno != 0)
            return fail(L, val, "invalid target '%s': bad port", excerpt(q, s));
        t->port = (uint16_t)p;
    }
    if ((t->host = lstrndup(L, host, host_len)) == NULL)
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
        return fail(L, key, "conflicting values: this target is nested under an upstream already");
    return read_ref(L, e, REF_UPSTREAM, val, OWNER_TARGET);
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

static bool read_targets(struct loader *L, const struct sl_conf_value *seq, size_t upstream)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct target_rec *rec = vec_push(&L->targets);
        if (rec == NULL)
            return fail_oom(L);
        size_t index = L->targets.n - 1;
        struct target_rec tmp = {
            .t = {.weight = 100, .line = seq->items[i]->line, .column = seq->items[i]->column},
            .upstream = upstream,
            .node = seq->items[i]};
        struct entity e = ENTITY("target", &tmp.t, index, target_fields, upstream, NONE, NONE);
        if ((rec = read_entity_into(L, &e, seq->items[i], &L->targets, &tmp, sizeof tmp)) == NULL)
            return false;
        if (rec->t.host == NULL)
            return fail(L, e.node, "target needs a 'target' (\"host:port\")");
        if (upstream == NONE && seen(&e, "upstream") == NULL)
            return fail(L, e.node, "target needs an 'upstream'");
        rec->target_node = value_of(&e, "target");
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Certificates, SNIs, CA certificates, jwt secrets                          */
/* ------------------------------------------------------------------------ */

/* The key type of a PEM certificate or key: EVP_PKEY_RSA, EVP_PKEY_EC, or
 * -1 when it does not parse. */
static int pem_key_type(const char *pem, bool is_cert, bool is_private, EVP_PKEY **keep)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio == NULL)
        return -1;
    EVP_PKEY *key = NULL;
    if (is_cert) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x != NULL) {
            key = X509_get_pubkey(x);
            X509_free(x);
        }
    } else if (is_private) {
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    } else {
        key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    if (key == NULL)
        return -1;
    int type = EVP_PKEY_base_id(key);
    if (keep != NULL)
        *keep = key;
    else
        EVP_PKEY_free(key);
    return type;
}

static const char *key_type_name(int type)
{
    return type == EVP_PKEY_RSA ? "RSA" : type == EVP_PKEY_EC ? "ECDSA" : "other";
}

/* cert + key: both parse and belong together; returns the key type. */
static int check_cert_pair(struct loader *L, const struct entity *e, const char *cert_field,
                           const char *cert, const char *key_field, const char *key)
{
    EVP_PKEY *pub = NULL, *priv = NULL;
    int t1 = pem_key_type(cert, true, false, &pub);
    if (t1 < 0) {
        fail(L, value_of(e, cert_field), "%s: not a PEM certificate", cert_field);
        return -1;
    }
    int t2 = pem_key_type(key, false, true, &priv);
    if (t2 < 0) {
        EVP_PKEY_free(pub);
        fail(L, value_of(e, key_field), "%s: not a PEM private key", key_field);
        return -1;
    }
    bool match = EVP_PKEY_eq(pub, priv) == 1;
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    if (!match) {
        fail(L, value_of(e, key_field), "%s does not match %s", key_field, cert_field);
        return -1;
    }
    if (t1 != EVP_PKEY_RSA && t1 != EVP_PKEY_EC) {
        fail(L, value_of(e, cert_field), "%s: only RSA and ECDSA keys are supported", cert_field);
        return -1;
    }
    return t1;
}

static bool read_snis(struct loader *L, const struct sl_conf_value *seq, size_t certificate);

static bool certificate_snis(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return read_snis(L, val, e->index);
}

static const struct field certificate_fields[] = {
    {"id", FK_UUID, offsetof(struct sl_certificate, id), 0, 0, NULL},
    {"cert", FK_STRING, offsetof(struct sl_certificate, cert), 0, 0, NULL},
    {"key", FK_STRING, offsetof(struct sl_certificate, key), 0, 0, NULL},
    {"cert_alt", FK_STRING, offsetof(struct sl_certificate, cert_alt), 0, 0, NULL},
    {"key_alt", FK_STRING, offsetof(struct sl_certificate, key_alt), 0, 0, NULL},
    {"snis", FK_CUSTOM, 0, 0, 0, certificate_snis},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

static bool read_certificates(struct loader *L, const struct sl_conf_value *seq)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_certificate *c = vec_push(&L->certificates);
        if (c == NULL)
            return fail_oom(L);
        size_t index = L->certificates.n - 1;
        struct sl_certificate tmp = {
            .index = index, .line = seq->items[i]->line, .column = seq->items[i]->column};
        struct entity e = ENTITY("certificate", &tmp, index, certificate_fields, NONE, NONE, NONE);
        if ((c = read_entity_into(L, &e, seq->items[i], &L->certificates, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        if (c->cert == NULL || c->key == NULL)
            return fail(L, e.node, "certificate needs 'cert' and 'key'");
        if ((c->cert_alt == NULL) != (c->key_alt == NULL))
            return fail(L, value_of(&e, c->cert_alt ? "cert_alt" : "key_alt"),
                        "'cert_alt' and 'key_alt' go together");
        int type = check_cert_pair(L, &e, "cert", c->cert, "key", c->key);
        if (type < 0)
            return false;
        if (c->cert_alt != NULL) {
            int alt = check_cert_pair(L, &e, "cert_alt", c->cert_alt, "key_alt", c->key_alt);
            if (alt < 0)
                return false;
            if (alt == type)
                return fail(L, value_of(&e, "cert_alt"),
                            "cert_alt must be of the other key type than cert (both are %s)",
                            key_type_name(type));
        }
        if (!unique(L, NS_CERTIFICATE_ID, "certificate id", c->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

static bool sni_name(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                     const struct sl_conf_value *val)
{
    struct sl_sni *s = e->obj;
    const char *text = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &text))
        return false;
    char *h = lstrdup(L, text);
    if (h == NULL)
        return false;
    for (char *c = h; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    size_t n = strlen(h);
    if (strcmp(h, "*") == 0) { /* Kong: the certificate for any other name */
        s->name = h;
        return true;
    }
    bool leading = n > 2 && h[0] == '*' && h[1] == '.';
    bool trailing = n > 2 && h[n - 1] == '*' && h[n - 2] == '.';
    const char *name = leading ? h + 2 : h;
    size_t name_len = leading || trailing ? n - 2 : n;
    if (memchr(name, '*', name_len) != NULL)
        return fail(L, val,
                    "invalid SNI '%s': the wildcard must be the leftmost or the rightmost label",
                    excerpt(q, text));
    if (!valid_hostname(name, name_len))
        return fail(L, val, "invalid SNI '%s'", excerpt(q, text));
    s->name = h;
    return true;
}

static bool sni_certificate(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    if (e->parent_service != NONE) /* parent_service carries the certificate here */
        return fail(L, key, "conflicting values: this SNI is nested under a certificate already");
    return read_ref(L, e, REF_CERTIFICATE, val, OWNER_SNI);
}

static const struct field sni_fields[] = {
    {"name", FK_CUSTOM, 0, 0, 0, sni_name},
    {"id", FK_UUID, NONE, 0, 0, NULL},
    {"certificate", FK_CUSTOM, 0, 0, 0, sni_certificate},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

static bool read_snis(struct loader *L, const struct sl_conf_value *seq, size_t certificate)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sni_rec *rec = vec_push(&L->snis);
        if (rec == NULL)
            return fail_oom(L);
        size_t index = L->snis.n - 1;
        const struct sl_conf_value *item = seq->items[i];
        struct sni_rec tmp = {.s = {.line = item->line, .column = item->column},
                              .certificate = certificate};
        struct entity e = ENTITY("sni", &tmp.s, index, sni_fields, certificate, NONE, NONE);
        bool ok;
        if (item->type == SL_CONF_STRING && certificate != NONE) /* snis: [a.example.com] */
            ok = sni_name(L, &e, item, item);
        else
            ok = read_entity(L, &e, item);
        rec = vec_at(&L->snis, index);
        *rec = tmp;
        if (!ok)
            return false;
        const struct sl_conf_value *at = item->type == SL_CONF_STRING ? item : value_of(&e, "name");
        if (rec->s.name == NULL)
            return fail(L, e.node, "sni needs a 'name'");
        if (certificate == NONE && seen(&e, "certificate") == NULL)
            return fail(L, e.node, "sni needs a 'certificate'");
        if (!unique(L, NS_SNI_NAME, "SNI", rec->s.name, at, index))
            return false;
    }
    return true;
}

static bool read_ca_certificates(struct loader *L, const struct sl_conf_value *seq)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    static const struct field ca_fields[] = {
        {"id", FK_UUID, offsetof(struct sl_ca_certificate, id), 0, 0, NULL},
        {"cert", FK_STRING, offsetof(struct sl_ca_certificate, cert), 0, 0, NULL},
        {"cert_digest", FK_STRING, NONE, 0, 0, NULL},
        {"tags", FK_TAGS, NONE, 0, 0, NULL},
        {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
        {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
    };
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_ca_certificate *c = vec_push(&L->ca_certificates);
        if (c == NULL)
            return fail_oom(L);
        size_t index = L->ca_certificates.n - 1;
        struct sl_ca_certificate tmp = {.line = seq->items[i]->line,
                                        .column = seq->items[i]->column};
        struct entity e = ENTITY("ca_certificate", &tmp, index, ca_fields, NONE, NONE, NONE);
        if ((c = read_entity_into(L, &e, seq->items[i], &L->ca_certificates, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        if (c->cert == NULL)
            return fail(L, e.node, "ca_certificate needs a 'cert'");
        int is_ca = -1;
        BIO *bio = BIO_new_mem_buf(c->cert, -1);
        X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        if (x != NULL)
            is_ca = X509_check_ca(x) >= 1;
        X509_free(x);
        BIO_free(bio);
        if (is_ca < 0)
            return fail(L, value_of(&e, "cert"), "cert: not a PEM certificate");
        if (!is_ca) /* Kong's ca_certificates schema, same words */
            return fail(L, value_of(&e, "cert"),
                        "cert: certificate does not appear to be a CA because it is missing the "
                        "\"CA\" basic constraint");
        if (!unique(L, NS_CA_ID, "ca_certificate id", c->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

static bool jwt_algorithm(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    static const char *const names[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                        "RS512", "ES256", "ES384", "ES512"};
    /* Kong 3 knows these too; the jwt plugin here does not verify them */
    static const char *const later[] = {"PS256", "PS384", "PS512", "EdDSA"};
    const char *s = NULL; /* set by read_string() */
    char q[100];
    if (!read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0)
            return (((struct sl_jwt_secret *)e->obj)->algorithm = lstrdup(L, s)) != NULL;
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
        if (strcmp(s, later[i]) == 0)
            return fail(L, val, "algorithm '%s' is not supported yet", s);
    return fail(L, val,
                "invalid algorithm '%s': expected one of HS256, HS384, HS512, RS256, RS384, "
                "RS512, ES256, ES384, ES512",
                excerpt(q, s));
}

static bool jwt_consumer(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    if (e->parent_consumer != NONE)
        return fail(L, key,
                    "conflicting values: this jwt_secret is nested under a consumer already");
    return read_ref(L, e, REF_CONSUMER, val, OWNER_JWT);
}

static const struct field jwt_fields[] = {
    {"id", FK_UUID, offsetof(struct sl_jwt_secret, id), 0, 0, NULL},
    {"key", FK_STRING, offsetof(struct sl_jwt_secret, key), 0, 0, NULL},
    {"secret", FK_STRING, offsetof(struct sl_jwt_secret, secret), 0, 0, NULL},
    {"rsa_public_key", FK_STRING, offsetof(struct sl_jwt_secret, rsa_public_key), 0, 0, NULL},
    {"algorithm", FK_CUSTOM, 0, 0, 0, jwt_algorithm},
    {"consumer", FK_CUSTOM, 0, 0, 0, jwt_consumer},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

/* Kong makes up key and secret when they are absent: 32 random hex digits. */
static char *random_hex(struct loader *L, const struct sl_conf_value *at)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        fail(L, at, "cannot generate a random key or secret");
        return NULL;
    }
    char *out = lalloc(L, 33);
    if (out != NULL)
        for (size_t i = 0; i < 16; i++)
            snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return out;
}

static bool read_jwt_secrets(struct loader *L, const struct sl_conf_value *seq, size_t consumer)
{
    if (!expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct jwt_rec *rec = vec_push(&L->jwt_secrets);
        if (rec == NULL)
            return fail_oom(L);
        size_t index = L->jwt_secrets.n - 1;
        struct jwt_rec tmp = {
            .j = {.index = index, .line = seq->items[i]->line, .column = seq->items[i]->column},
            .consumer = consumer};
        struct entity e = ENTITY("jwt_secret", &tmp.j, index, jwt_fields, NONE, NONE, consumer);
        if ((rec = read_entity_into(L, &e, seq->items[i], &L->jwt_secrets, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        struct sl_jwt_secret *j = &rec->j;
        if (consumer == NONE && seen(&e, "consumer") == NULL)
            return fail(L, e.node, "jwt_secret needs a 'consumer'");
        if (j->algorithm == NULL && (j->algorithm = lstrdup(L, "HS256")) == NULL)
            return false;
        if ((j->key == NULL && (j->key = random_hex(L, e.node)) == NULL))
            return false;
        if (j->algorithm[0] == 'H') {
            /* an empty secret would make libjwt skip verification: never */
            if (j->secret == NULL && (j->secret = random_hex(L, e.node)) == NULL)
                return false;
        } else if (j->rsa_public_key != NULL) {
            /* without one (unlike Kong), the key must come from the jwt
             * plugin's jwks_url: an instance without it refuses the token */
            int want = j->algorithm[0] == 'R' ? EVP_PKEY_RSA : EVP_PKEY_EC;
            EVP_PKEY *pub = NULL;
            int type = pem_key_type(j->rsa_public_key, false, false, &pub);
            if (type < 0)
                return fail(L, value_of(&e, "rsa_public_key"),
                            "rsa_public_key: not a PEM public key");
            /* RFC 7518 section 3.4: ES256 is P-256, ES384 P-384, ES512 P-521;
             * a key on another curve could never verify a token */
            const char *curve = strcmp(j->algorithm, "ES256") == 0   ? "prime256v1"
                                : strcmp(j->algorithm, "ES384") == 0 ? "secp384r1"
                                                                     : "secp521r1";
            char group[64] = "";
            size_t group_len = 0;
            if (type == EVP_PKEY_EC &&
                EVP_PKEY_get_group_name(pub, group, sizeof group, &group_len) != 1)
                group[0] = '\0';
            EVP_PKEY_free(pub);
            if (type != want)
                return fail(L, value_of(&e, "rsa_public_key"),
                            "rsa_public_key: a %s key cannot verify %s", key_type_name(type),
                            j->algorithm);
            if (want == EVP_PKEY_EC && strcmp(group, curve) != 0)
                return fail(L, value_of(&e, "rsa_public_key"),
                            "rsa_public_key: %s needs a key on curve %s, got %s", j->algorithm,
                            curve, group[0] ? group : "an unknown curve");
        }
        if (!unique(L, NS_JWT_KEY, "jwt_secret key", j->key, value_of(&e, "key"), index) ||
            !unique(L, NS_JWT_ID, "jwt_secret id", j->id, value_of(&e, "id"), index))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Node block (gateway: / sidecar:) and SLUICE_<KEY> overrides                */
/* ------------------------------------------------------------------------ */

enum node_kind {
    NK_LISTEN_LIST, /* proxy_listen */
    NK_LISTEN_ONE,  /* status_listen, admin_listen: one entry or "off" */
    NK_WORKERS,     /* integer >= 1 or "auto" */
    NK_CIDRS,       /* trusted_ips */
    NK_MS,          /* duration: integer ms or "500ms" / "60s" / "2m" / "1h" */
    NK_U32,         /* integer */
    NK_BYTES,       /* size: integer bytes or "8k" / "10m" / "1g" */
    NK_ONOFF,       /* boolean or on/off */
    NK_LOG_LEVEL,
    NK_DNS_SERVERS, /* "ip[:port]" list, comma-separated (kong.conf dns_resolver) */
    NK_PATH,        /* a file path */
};

struct node_field {
    const char *name;
    enum node_kind kind;
    size_t offset;
    unsigned long long min, max;
};

#define NODE_FIELD(n, k, lo, hi)                                                                   \
    {                                                                                              \
#n, k, offsetof(struct sl_node_config, n), lo, hi                                          \
    }
#define NODE_MS(n, lo)                                                                             \
    {                                                                                              \
#n, NK_MS, offsetof(struct sl_node_config, n##_ms), lo, 2147483646ULL                      \
    }
static const struct node_field node_fields[] = {
    NODE_FIELD(proxy_listen, NK_LISTEN_LIST, 0, 0),
    NODE_FIELD(status_listen, NK_LISTEN_ONE, 0, 0),
    NODE_FIELD(admin_listen, NK_LISTEN_ONE, 0, 0),
    NODE_FIELD(worker_processes, NK_WORKERS, 1, 1024),
    NODE_FIELD(trusted_ips, NK_CIDRS, 0, 0),
    NODE_MS(client_header_timeout, 1),
    NODE_MS(client_body_timeout, 1),
    NODE_MS(client_body_total_timeout, 0),
    NODE_MS(send_timeout, 1),
    NODE_MS(keepalive_timeout, 1),
    NODE_MS(upstream_keepalive_idle_timeout, 1),
    NODE_MS(graceful_shutdown_timeout, 0),
    NODE_FIELD(keepalive_requests, NK_U32, 1, UINT32_MAX),
    NODE_FIELD(max_request_line, NK_U32, 64, 1048576),
    NODE_FIELD(max_header_bytes, NK_U32, 64, 16777216),
    NODE_FIELD(max_headers, NK_U32, 1, 10000),
    NODE_FIELD(upstream_keepalive_pool_size, NK_U32, 0, 1000000),
    NODE_FIELD(upstream_keepalive_max_requests, NK_U32, 1, UINT32_MAX),
    NODE_FIELD(client_max_body_size, NK_BYTES, 0, UINT64_MAX),
    NODE_FIELD(access_log, NK_ONOFF, 0, 0),
    NODE_FIELD(log_level, NK_LOG_LEVEL, 0, 0),
    NODE_FIELD(dns_resolver, NK_DNS_SERVERS, 0, 0),
    NODE_FIELD(dns_hostsfile, NK_PATH, 0, 0),
};
#define N_NODE_FIELDS_USED (sizeof node_fields / sizeof node_fields[0])
_Static_assert(N_NODE_FIELDS_USED <= N_NODE_FIELDS, "raise N_NODE_FIELDS");

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 1024 ? 1024 : (int)n;
}

static void node_defaults(struct sl_node_config *n)
{
    memset(n, 0, sizeof *n);
    snprintf(n->status_listen.host, sizeof n->status_listen.host, "127.0.0.1");
    n->status_listen.port = 8100;
    n->worker_processes = online_cpus(); /* "auto", as DESIGN.md and Kong */
    n->client_header_timeout_ms = 60000;
    n->client_body_timeout_ms = 60000;
    n->client_body_total_timeout_ms = 300000;
    n->send_timeout_ms = 60000; /* nginx's send_timeout */
    n->keepalive_timeout_ms = 75000;
    n->keepalive_requests = 10000;
    n->max_request_line = 8192;
    n->max_header_bytes = 32768;
    n->max_headers = 100;
    n->client_max_body_size = 0;
    n->upstream_keepalive_pool_size = 512;
    n->upstream_keepalive_max_requests = 10000;
    n->upstream_keepalive_idle_timeout_ms = 60000;
    n->graceful_shutdown_timeout_ms = 10000;
    n->access_log = true;
    snprintf(n->log_level, sizeof n->log_level, "notice");
    snprintf(n->dns_hostsfile, sizeof n->dns_hostsfile, "/etc/hosts");
}

/* One dns_resolver entry: "1.2.3.4", "1.2.3.4:53", "[::1]:53" or "::1". */
static bool valid_nameserver(const char *s, size_t n)
{
    char host[64];
    const char *port = NULL;
    size_t port_len = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || (size_t)(close - s - 1) >= sizeof host)
            return false;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return false;
            port = close + 2;
            port_len = (size_t)(s + n - port);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        const char *last = colon ? memrchr(s, ':', n) : NULL;
        size_t host_len = (colon && colon == last) ? (size_t)(colon - s) : n;
        if (host_len >= sizeof host)
            return false;
        memcpy(host, s, host_len);
        host[host_len] = '\0';
        if (colon && colon == last) {
            port = colon + 1;
            port_len = (size_t)(s + n - port);
        }
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
        return false;
    if (port) {
        if (port_len == 0 || port_len > 5 || !is_digits(port, port_len, 5))
            return false;
        unsigned long v = strtoul(port, NULL, 10);
        if (v == 0 || v > 65535)
            return false;
    }
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* "host:port [ssl] [reuseport]"; why gets the reason on failure. */
static bool parse_listen(const char *text, size_t len, struct sl_listen *out, char *why,
                         size_t why_size)
{
    memset(out, 0, sizeof *out);
    trim(&text, &len);
    size_t addr_len = 0;
    while (addr_len < len && text[addr_len] != ' ' && text[addr_len] != '\t')
        addr_len++;
    if (addr_len == 0) {
        snprintf(why, why_size, "expected host:port");
        return false;
    }
    const char *host = text, *port;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = memchr(text, ']', addr_len);
        if (close == NULL || close + 1 >= text + addr_len || close[1] != ':') {
            snprintf(why, why_size, "expected [IPv6]:port");
            return false;
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = NULL;
        for (size_t i = 0; i < addr_len; i++)
            if (text[i] == ':')
                colon = text + i;
        if (colon == NULL) {
            snprintf(why, why_size, "expected host:port");
            return false;
        }
        host_len = (size_t)(colon - text);
        port = colon + 1;
        if (memchr(text, ':', host_len) != NULL) {
            snprintf(why, why_size, "an IPv6 address must be written in brackets: [::1]:8000");
            return false;
        }
    }
    size_t port_len = (size_t)(text + addr_len - port);
    unsigned long p = 0;
    if (!is_digits(port, port_len, 10) || port_len > 5 || (p = strtoul(port, NULL, 10)) == 0 ||
        p > 65535) {
        snprintf(why, why_size, "invalid port");
        return false;
    }
    char h[INET6_ADDRSTRLEN + 1];
    if (host_len == 1 && host[0] == '*') {
        snprintf(h, sizeof h, "0.0.0.0");
    } else {
        if (host_len == 0 || host_len >= sizeof h) {
            snprintf(why, why_size, "expected an IP address");
            return false;
        }
        memcpy(h, host, host_len);
        h[host_len] = '\0';
        unsigned char buf[sizeof(struct in6_addr)];
        int family = text[0] == '[' ? AF_INET6 : AF_INET;
        if (inet_pton(family, h, buf) != 1) {
            snprintf(why, why_size, "expected an IP address (hostnames are not supported)");
            return false;
        }
    }
    snprintf(out->host, sizeof out->host, "%s", h);
    out->port = (uint16_t)p;

    const char *flags = text + addr_len;
    size_t flags_len = len - addr_len;
    while (flags_len > 0) {
        trim(&flags, &flags_len);
        size_t n = 0;
        while (n < flags_len && flags[n] != ' ' && flags[n] != '\t')
            n++;
        if (n == 0)
            break;
        if (n == 3 && memcmp(flags, "ssl", 3) == 0) {
            out->ssl = true;
        } else if (n == 9 && memcmp(flags, "reuseport", 9) == 0) {
            /* sluice always listens with SO_REUSEPORT (one socket per worker) */
        } else {
            static const char *const kong_flags[] = {
                "http2",    "proxy_protocol", "deferred",     "bind",
                "backlog=", "ipv6only=",      "so_keepalive="};
            bool known = false;
            for (size_t i = 0; i < sizeof kong_flags / sizeof kong_flags[0]; i++) {
                size_t kl = strlen(kong_flags[i]);
                if ((kong_flags[i][kl - 1] == '=' && n >= kl &&
                     memcmp(flags, kong_flags[i], kl) == 0) ||
                    (n == kl && memcmp(flags, kong_flags[i], kl) == 0))
                    known = true;
            }
            snprintf(why, why_size,
                     known ? "listen flag '%.*s' is not supported yet"
                           : "unknown listen flag '%.*s'",
                     (int)(n > 40 ? 40 : n), flags);
            return false;
        }
        flags += n;
        flags_len -= n;
    }
    return true;
}

bool sl_config_parse_listen(const char *text, struct sl_listen *out)
{
    char why[128];
    if (text == NULL || out == NULL)
        return false;
    return parse_listen(text, strlen(text), out, why, sizeof why);
}

static bool parse_cidr(const char *text, size_t len, struct sl_cidr *out, char *why,
                       size_t why_size)
{
    trim(&text, &len);
    char buf[INET6_ADDRSTRLEN + 8];
    if (len == 0 || len >= sizeof buf) {
        snprintf(why, why_size, "expected an IP address or a CIDR range");
        return false;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix_len = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix_len = 128;
    } else {
        snprintf(why, why_size, "expected an IP address or a CIDR range");
        return false;
    }
    if (slash != NULL) {
        const char *bits = slash + 1;
        size_t n = strlen(bits);
        unsigned long b = 0;
        if (!is_digits(bits, n, 10) || n > 3 || (b = strtoul(bits, NULL, 10)) > out->prefix_len) {
            snprintf(why, why_size, "invalid prefix length");
            return false;
        }
        out->prefix_len = (unsigned)b;
    }
    return true;
}

/* "60000", "500ms", "60s", "2m", "1h" -> ms. */
static bool parse_duration_ms(const char *s, unsigned long long *out)
{
    size_t n = strlen(s), d = 0;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    if (d == 0 || d > 12)
        return false;
    unsigned long long v = strtoull(s, NULL, 10), mul;
    const char *unit = s + d;
    if (*unit == '\0' || strcmp(unit, "ms") == 0)
        mul = 1;
    else if (strcmp(unit, "s") == 0)
        mul = 1000;
    else if (strcmp(unit, "m") == 0)
        mul = 60000;
    else if (strcmp(unit, "h") == 0)
        mul = 3600000;
    else
        return false;
    *out = v * mul; /* at most 10^12 * 3.6 * 10^6: fits in 64 bits */
    return true;
}

/* "1048576", "8k", "10m", "1g" (powers of 1024, like nginx) -> bytes. */
static bool parse_size(const char *s, unsigned long long *out)
{
    size_t n = strlen(s), d = 0;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    if (d == 0 || d > 19)
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE)
        return false;
    unsigned shift = 0;
    const char *unit = s + d;
    if (*unit == '\0')
        shift = 0;
    else if (strcmp(unit, "k") == 0 || strcmp(unit, "K") == 0)
        shift = 10;
    else if (strcmp(unit, "m") == 0 || strcmp(unit, "M") == 0)
        shift = 20;
    else if (strcmp(unit, "g") == 0 || strcmp(unit, "G") == 0)
        shift = 30;
    else
        return false;
    if (shift > 0 && v > (UINT64_MAX >> shift))
        return false;
    *out = v << shift;
    return true;
}

/* One place for both sources of an error: a node of the file, or a variable. */
struct node_origin {
    const char *key;                  /* field name */
    const struct sl_conf_value *node; /* file */
    const char *env;                  /* environment variable name */
};

__attribute__((format(printf, 3, 4))) static bool
fail_node(struct loader *L, const struct node_origin *o, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->env != NULL)
        return fail_env(L, o->env, "%s", msg);
    return fail(L, o->node, "%s: %s", o->key, msg);
}

static bool bad_value(struct loader *L, const struct node_origin *o, const char *value,
                      const char *why)
{
    char q[100];
    return fail_node(L, o, "invalid value '%s': %s", excerpt(q, value), why);
}

/* Parse a comma-separated list (kong.conf style) into items[]. */
static bool node_list_text(struct loader *L, const struct node_field *f,
                           const struct node_origin *o, const char *text, void *items, size_t *n,
                           size_t max)
{
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *entry = p;
        size_t elen = len;
        trim(&entry, &elen);
        char why[160];
        char copy[300];
        snprintf(copy, sizeof copy, "%.*s", (int)(elen > 200 ? 200 : elen), entry);
        if (elen == 0) {
            if (*text != '\0') /* "" is an empty list; "a,,b" is a mistake */
                return bad_value(L, o, text, "empty entry in the list");
        } else if (*n == max) {
            return bad_value(L, o, copy, "too many entries");
        } else if (f->kind == NK_CIDRS) {
            if (!parse_cidr(entry, elen, (struct sl_cidr *)items + *n, why, sizeof why))
                return bad_value(L, o, copy, why);
            (*n)++;
        } else {
            if (!parse_listen(entry, elen, (struct sl_listen *)items + *n, why, sizeof why))
                return bad_value(L, o, copy, why);
            (*n)++;
        }
        if (p[len] == '\0')
            return true;
        p += len + 1;
    }
}

static bool store_list(struct loader *L, const struct node_field *f, void *items, size_t n,
                       const struct node_origin *o)
{
    struct sl_node_config *node = &L->cfg->node;
    if (f->kind == NK_CIDRS) {
        struct sl_cidr *a = n ? lalloc(L, n * sizeof *a) : NULL;
        if (n && a == NULL)
            return false;
        if (n)
            memcpy(a, items, n * sizeof *a);
        node->trusted_ips = a;
        node->n_trusted_ips = n;
        return true;
    }
    if (n == 0)
        return fail_node(L, o, "at least one address is needed");
    struct sl_listen *a = lalloc(L, n * sizeof *a);
    if (a == NULL)
        return false;
    memcpy(a, items, n * sizeof *a);
    node->proxy_listen = a;
    node->n_proxy_listen = n;
    return true;
}

/* A scalar node value given as text (from the file or the environment). */
static bool node_set_text(struct loader *L, const struct node_field *f, const struct node_origin *o,
                          const char *text)
{
    char *base = (char *)&L->cfg->node;
    char why[160];
    unsigned long long v = 0;

    switch (f->kind) {
    case NK_LISTEN_LIST:
    case NK_CIDRS: {
        size_t max = f->kind == NK_CIDRS ? SL_CONFIG_MAX_TRUSTED_IPS : SL_CONFIG_MAX_LISTEN;
        size_t elem = f->kind == NK_CIDRS ? sizeof(struct sl_cidr) : sizeof(struct sl_listen);
        void *items = calloc(max, elem);
        size_t n = 0;
        if (items == NULL)
            return fail_oom(L);
        bool ok = node_list_text(L, f, o, text, items, &n, max) && store_list(L, f, items, n, o);
        free(items);
        return ok;
    }
    case NK_LISTEN_ONE: {
        struct sl_listen *out = (struct sl_listen *)(base + f->offset);
        if (strcmp(text, "off") == 0) {
            memset(out, 0, sizeof *out);
            return true;
        }
        struct sl_listen l;
        if (!parse_listen(text, strlen(text), &l, why, sizeof why))
            return bad_value(L, o, text, why);
        if (l.ssl)
            return bad_value(L, o, text, "ssl on this listener is not supported yet");
        *out = l;
        return true;
    }
    case NK_WORKERS: {
        int *out = (int *)(base + f->offset);
        if (strcmp(text, "auto") == 0) {
            *out = online_cpus();
            return true;
        }
        if (!is_digits(text, strlen(text), 10) || strlen(text) > 6 ||
            (v = strtoull(text, NULL, 10)) < f->min || v > f->max) {
            snprintf(why, sizeof why, "expected 'auto' or an integer between %llu and %llu", f->min,
                     f->max);
            return bad_value(L, o, text, why);
        }
        *out = (int)v;
        return true;
    }
    case NK_MS:
    case NK_U32:
    case NK_BYTES: {
        bool ok;
        if (f->kind == NK_MS)
            ok = parse_duration_ms(text, &v);
        else if (f->kind == NK_BYTES)
            ok = parse_size(text, &v);
        else if ((ok = is_digits(text, strlen(text), 10) && strlen(text) <= 12))
            v = strtoull(text, NULL, 10);
        if (!ok) {
            const char *expect = f->kind == NK_MS ? "expected milliseconds, or a number with "
                                                    "a unit: ms, s, m, h (\"60s\")"
                                 : f->kind == NK_BYTES
                                     ? "expected bytes, or a number with a unit: k, m, g (\"8m\")"
                                     : "expected a non-negative integer";
            return bad_value(L, o, text, expect);
        }
        if (v < f->min || v > f->max) {
            snprintf(why, sizeof why, "out of range (%llu..%llu%s)", f->min, f->max,
                     f->kind == NK_MS ? " ms" : "");
            return bad_value(L, o, text, why);
        }
        if (f->kind == NK_BYTES)
            memcpy(base + f->offset, &(uint64_t){v}, sizeof(uint64_t));
        else
            memcpy(base + f->offset, &(uint32_t){(uint32_t)v}, sizeof(uint32_t));
        return true;
    }
    case NK_ONOFF: {
        bool b;
        if (strcasecmp(text, "on") == 0 || strcasecmp(text, "true") == 0)
            b = true;
        else if (strcasecmp(text, "off") == 0 || strcasecmp(text, "false") == 0)
            b = false;
        else
            return bad_value(L, o, text, "expected on, off, true or false");
        memcpy(base + f->offset, &b, sizeof b);
        return true;
    }
    case NK_DNS_SERVERS: {
        if (strlen(text) >= sizeof L->cfg->node.dns_resolver)
            return bad_value(L, o, text, "too long");
        const char *p = text;
        while (*p) {
            size_t len = strcspn(p, ",");
            const char *entry = p;
            size_t elen = len;
            trim(&entry, &elen);
            if (!valid_nameserver(entry, elen))
                return bad_value(L, o, text, "expected a comma-separated list of ip[:port]");
            p += len + (p[len] == ',');
        }
        snprintf(base + f->offset, sizeof L->cfg->node.dns_resolver, "%s", text);
        return true;
    }
    case NK_PATH:
        if (text[0] == '\0' || strlen(text) >= sizeof L->cfg->node.dns_hostsfile)
            return bad_value(L, o, text, "expected a file path shorter than 256 bytes");
        snprintf(base + f->offset, sizeof L->cfg->node.dns_hostsfile, "%s", text);
        return true;
    case NK_LOG_LEVEL:
        if (sl_log_level_from_name(text) < 0)
            return bad_value(L, o, text, "expected debug, info, notice, warn or error");
        snprintf(base + f->offset, sizeof L->cfg->node.log_level, "%s", text);
        return true;
    }
    return true;
}

/* A node key from the file: a scalar, or for lists also a YAML sequence. */
static bool node_set_yaml(struct loader *L, const struct node_field *f,
                          const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    struct node_origin o = {.key = f->name, .node = val};
    bool is_list = f->kind == NK_LISTEN_LIST || f->kind == NK_CIDRS;
    if (val->type == SL_CONF_SEQ && is_list) {
        size_t max = f->kind == NK_CIDRS ? SL_CONFIG_MAX_TRUSTED_IPS : SL_CONFIG_MAX_LISTEN;
        if (val->n_items > max)
            return fail(L, val, "%s: too many entries (the limit is %zu)", f->name, max);
        size_t elem = f->kind == NK_CIDRS ? sizeof(struct sl_cidr) : sizeof(struct sl_listen);
        void *items = calloc(val->n_items + 1, elem);
        if (items == NULL)
            return fail_oom(L);
        bool ok = true;
        for (size_t i = 0; ok && i < val->n_items; i++) {
            const struct sl_conf_value *it = val->items[i];
            struct node_origin io = {.key = f->name, .node = it};
            char why[160];
            if (it->type != SL_CONF_STRING) {
                ok = fail(L, it, "%s: expected a string, got %s", f->name,
                          sl_conf_type_name(it->type));
            } else if (f->kind == NK_CIDRS) {
                if (!parse_cidr(it->text, it->text_len, (struct sl_cidr *)items + i, why,
                                sizeof why))
                    ok = bad_value(L, &io, it->text, why);
            } else if (!parse_listen(it->text, it->text_len, (struct sl_listen *)items + i, why,
                                     sizeof why)) {
                ok = bad_value(L, &io, it->text, why);
            }
        }
        ok = ok && store_list(L, f, items, val->n_items, &o);
        free(items);
        return ok;
    }
    if (val->text == NULL)
        return fail(L, val, "%s: expected %s, got %s", f->name,
                    is_list ? "a string or a sequence" : "a scalar", sl_conf_type_name(val->type));
    if (f->kind == NK_ONOFF && val->type != SL_CONF_BOOL && val->type != SL_CONF_STRING)
        return bad_value(L, &o, val->text, "expected on, off, true or false");
    if ((f->kind == NK_U32 || f->kind == NK_MS || f->kind == NK_BYTES || f->kind == NK_WORKERS) &&
        val->type != SL_CONF_INT && val->type != SL_CONF_STRING)
        return bad_value(L, &o, val->text, "expected an integer");
    return node_set_text(L, f, &o, val->text);
}

static bool read_node_block(struct loader *L, const struct sl_conf_value *map)
{
    if (!expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *key = map->keys[i], *val = map->items[i];
        if (strcmp(key->text, "_comment") == 0) {
            if (!expect_type(L, val, SL_CONF_STRING))
                return false;
            continue;
        }
        size_t fi = 0;
        while (fi < N_NODE_FIELDS_USED && strcmp(node_fields[fi].name, key->text) != 0)
            fi++;
        if (fi == N_NODE_FIELDS_USED) {
            char q[100];
            return fail(L, key, "unknown field '%s'", excerpt(q, key->text));
        }
        if (val->type == SL_CONF_NULL)
            continue;
        if (!node_set_yaml(L, &node_fields[fi], key, val))
            return false;
        L->node_src[fi].node = val;
    }
    return true;
}

/* SLUICE_<KEY> wins over the file. */
static bool apply_env(struct loader *L)
{
    for (size_t fi = 0; fi < N_NODE_FIELDS_USED; fi++) {
        const struct node_field *f = &node_fields[fi];
        char var[64] = "SLUICE_";
        size_t n = strlen(var);
        for (const char *c = f->name; *c && n + 1 < sizeof var; c++)
            var[n++] = (char)((*c >= 'a' && *c <= 'z') ? *c - 'a' + 'A' : *c);
        var[n] = '\0';
        const char *value = getenv(var);
        if (value == NULL)
            continue;
        char *name = lstrdup(L, var); /* kept for later messages */
        if (name == NULL)
            return false;
        struct node_origin o = {.key = f->name, .env = name};
        const char *text = value;
        size_t len = strlen(text);
        trim(&text, &len);
        char *copy = lstrndup(L, text, len);
        if (copy == NULL || !node_set_text(L, f, &o, copy))
            return false;
        L->node_src[fi].env = name;
    }
    return true;
}

static struct node_origin origin_of(const struct loader *L, const char *name)
{
    for (size_t fi = 0; fi < N_NODE_FIELDS_USED; fi++)
        if (strcmp(node_fields[fi].name, name) == 0)
            return (struct node_origin){name, L->node_src[fi].node, L->node_src[fi].env};
    return (struct node_origin){name, NULL, NULL};
}

static bool origin_set(const struct node_origin *o)
{
    return o->node != NULL || o->env != NULL;
}

/* Every listener: the proxy_listen entries, then status_listen, admin_listen. */
static const struct sl_listen *listen_at(const struct sl_node_config *n, size_t i)
{
    if (i < n->n_proxy_listen)
        return &n->proxy_listen[i];
    return i == n->n_proxy_listen ? &n->status_listen : &n->admin_listen;
}

static const char *listen_name(const struct sl_node_config *n, size_t i)
{
    return i < n->n_proxy_listen    ? "proxy_listen"
           : i == n->n_proxy_listen ? "status_listen"
                                    : "admin_listen";
}

/* Rules that involve several node keys, checked after the overrides. */
static bool check_node(struct loader *L)
{
    struct sl_node_config *n = &L->cfg->node;
    if (n->proxy_listen == NULL) {
        n->proxy_listen = lalloc(L, sizeof *n->proxy_listen);
        if (n->proxy_listen == NULL)
            return false;
        snprintf(n->proxy_listen->host, sizeof n->proxy_listen->host, "0.0.0.0");
        n->proxy_listen->port = 8000;
        n->n_proxy_listen = 1;
    }
    if (n->max_header_bytes < n->max_request_line) {
        struct node_origin o = origin_of(L, "max_header_bytes");
        if (origin_set(&o))
            return fail_node(L, &o, "%u is less than max_request_line (%u)", n->max_header_bytes,
                             n->max_request_line);
        o = origin_of(L, "max_request_line");
        return fail_node(L, &o, "%u is more than max_header_bytes (%u)", n->max_request_line,
                         n->max_header_bytes);
    }
    /* Two sockets on one address would split its traffic (SO_REUSEPORT) or
     * fail to bind; a wildcard address covers every address of its family. */
    size_t n_all = n->n_proxy_listen + 2;
    for (size_t i = 0; i < n_all; i++) {
        const struct sl_listen *a = listen_at(n, i);
        for (size_t j = i + 1; j < n_all; j++) {
            const struct sl_listen *b = listen_at(n, j);
            if (b->port != a->port || b->port == 0)
                continue;
            bool a6 = strchr(a->host, ':') != NULL, b6 = strchr(b->host, ':') != NULL;
            if (a6 != b6)
                continue;
            const char *any = a6 ? "::" : "0.0.0.0";
            bool same = strcmp(a->host, b->host) == 0;
            if (!same && strcmp(a->host, any) != 0 && strcmp(b->host, any) != 0)
                continue;
            struct node_origin o = origin_of(L, listen_name(n, j));
            if (!origin_set(&o))
                o = origin_of(L, listen_name(n, i));
            if (same)
                return fail_node(L, &o, "address %s%s%s:%u is used twice", a6 ? "[" : "", a->host,
                                 a6 ? "]" : "", a->port);
            return fail_node(L, &o, "address %s%s%s:%u overlaps %s%s%s:%u", a6 ? "[" : "", b->host,
                             a6 ? "]" : "", b->port, a6 ? "[" : "", a->host, a6 ? "]" : "",
                             a->port);
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Top level, references, layout                                             */
/* ------------------------------------------------------------------------ */

/* Kong top-level keys that are valid but not implemented yet. */
static const char *const unsupported_top[] = {
    "vaults",
    "keys",
    "key_sets",
    "keyauth_credentials",
    "basicauth_credentials",
    "hmacauth_credentials",
    "oauth2_credentials",
    "mtls_auth_credentials",
    "acls",
    "filter_chains",
    "parameters",
    "_workspace",
};

static bool read_top(struct loader *L, const struct sl_conf_value *root)
{
    if (root->type != SL_CONF_MAP)
        return fail(L, root, "expected a map at the top level, got %s",
                    sl_conf_type_name(root->type));

    /* The version first: it changes how paths are read. */
    const struct sl_conf_value *version = sl_conf_get(root, "_format_version");
    if (version == NULL)
        return fail(L, root, "missing '_format_version' (expected \"3.0\")");
    if (version->type != SL_CONF_STRING)
        return fail(L, version, "_format_version: expected a string, got %s (write \"3.0\")",
                    sl_conf_type_name(version->type));
    if (strcmp(version->text, "3.0") != 0 && strcmp(version->text, "2.1") != 0 &&
        strcmp(version->text, "1.1") != 0) {
        char q[100];
        return fail(L, version,
                    "unsupported _format_version '%s' (expected \"3.0\", \"2.1\" or \"1.1\")",
                    excerpt(q, version->text));
    }
    snprintf(L->cfg->format_version, sizeof L->cfg->format_version, "%s", version->text);
    L->legacy_paths = strcmp(version->text, "3.0") != 0;

    const char *other_role = strcmp(L->role, "gateway") == 0 ? "sidecar" : "gateway";
    for (size_t i = 0; i < root->n_items; i++) {
        const struct sl_conf_value *key = root->keys[i], *val = root->items[i];
        const char *k = key->text;
        bool b;
        if (strcmp(k, "_format_version") == 0)
            continue;
        if (strcmp(k, "_comment") == 0) {
            if (!expect_type(L, val, SL_CONF_STRING))
                return false;
            continue;
        }
        if (strcmp(k, "_transform") == 0) {
            if (!read_bool(L, val, &b))
                return false;
            continue;
        }
        if (strcmp(k, "_ignore") == 0) {
            if (!expect_type(L, val, SL_CONF_SEQ))
                return false;
            continue;
        }
        if (strcmp(k, L->role) == 0) {
            if (val->type != SL_CONF_NULL && !read_node_block(L, val))
                return false;
            continue;
        }
        if (strcmp(k, other_role) == 0)
            return fail(L, key, "the '%s' block is for sluice-%s", k, k);
        if (val->type == SL_CONF_NULL)
            continue;
        if (strcmp(k, "services") == 0) {
            if (!read_services(L, val))
                return false;
            continue;
        }
        if (strcmp(k, "routes") == 0) {
            if (!read_routes(L, val, NONE))
                return false;
            continue;
        }
        if (strcmp(k, "consumers") == 0) {
            if (!read_consumers(L, val))
                return false;
            continue;
        }
        if (strcmp(k, "plugins") == 0) {
            if (!read_plugins(L, val, NONE, NONE, NONE))
                return false;
            continue;
        }
        bool ok = true, known = true;
        if (strcmp(k, "upstreams") == 0)
            ok = read_upstreams(L, val);
        else if (strcmp(k, "targets") == 0)
            ok = read_targets(L, val, NONE);
        else if (strcmp(k, "certificates") == 0)
            ok = read_certificates(L, val);
        else if (strcmp(k, "snis") == 0)
            ok = read_snis(L, val, NONE);
        else if (strcmp(k, "ca_certificates") == 0)
            ok = read_ca_certificates(L, val);
        else if (strcmp(k, "jwt_secrets") == 0)
            ok = read_jwt_secrets(L, val, NONE);
        else
            known = false;
        if (!ok)
            return false;
        if (known)
            continue;
        for (size_t u = 0; u < sizeof unsupported_top / sizeof unsupported_top[0]; u++)
            if (strcmp(k, unsupported_top[u]) == 0)
                return fail(L, key, "'%s' is not supported yet", k);
        char q[100];
        return fail(L, key, "unknown field '%s'", excerpt(q, k));
    }
    return true;
}

static bool resolve_refs(struct loader *L)
{
    static const struct {
        const char *what;
        uintptr_t by_name, by_id;
    } targets[] = {
        [REF_SERVICE] = {"service", NS_SERVICE_NAME, NS_SERVICE_ID},
        [REF_ROUTE] = {"route", NS_ROUTE_NAME, NS_ROUTE_ID},
        [REF_CONSUMER] = {"consumer", NS_CONSUMER_USERNAME, NS_CONSUMER_ID},
        [REF_UPSTREAM] = {"upstream", NS_UPSTREAM_NAME, NS_UPSTREAM_ID},
        [REF_CERTIFICATE] = {"certificate", NS_CERTIFICATE_ID, NS_CERTIFICATE_ID},
        [REF_CA] = {"ca_certificate", NS_CA_ID, NS_CA_ID},
    };
    static const char *const owners[] = {
        [OWNER_ROUTE] = "route", [OWNER_PLUGIN] = "plugin",  [OWNER_TARGET] = "target",
        [OWNER_SNI] = "sni",     [OWNER_JWT] = "jwt_secret", [OWNER_SERVICE] = "service",
    };
    for (size_t i = 0; i < L->refs.n; i++) {
        const struct pending_ref *ref = vec_at(&L->refs, i);
        const struct strmap_entry *hit = NULL;
        if (ref->mode != REF_ID)
            hit = strmap_get(&L->names, targets[ref->target].by_name, ref->key);
        if (hit == NULL && ref->mode != REF_NAME)
            hit = strmap_get(&L->names, targets[ref->target].by_id, ref->key);
        if (hit == NULL) {
            char q[100];
            return fail(L, ref->node, "%s refers to unknown %s '%s'", owners[ref->owner_kind],
                        targets[ref->target].what, excerpt(q, ref->key));
        }
        switch (ref->owner_kind) {
        case OWNER_ROUTE:
            ((struct route_rec *)vec_at(&L->routes, ref->owner_index))->service = hit->index;
            break;
        case OWNER_PLUGIN: {
            struct plugin_rec *p = vec_at(&L->plugins, ref->owner_index);
            if (ref->target == REF_SERVICE)
                p->service = hit->index;
            else if (ref->target == REF_ROUTE)
                p->route = hit->index;
            else
                p->consumer = hit->index;
            break;
        }
        case OWNER_TARGET:
            ((struct target_rec *)vec_at(&L->targets, ref->owner_index))->upstream = hit->index;
            break;
        case OWNER_SNI:
            ((struct sni_rec *)vec_at(&L->snis, ref->owner_index))->certificate = hit->index;
            break;
        case OWNER_JWT:
            ((struct jwt_rec *)vec_at(&L->jwt_secrets, ref->owner_index))->consumer = hit->index;
            break;
        case OWNER_SERVICE: /* ca_certificates: only checked */
            break;
        }
    }
    return true;
}

/* Kong plugins whose schema says `consumer = typedefs.no_consumer`: the
 * ones that find the consumer (authentication) or run before it is known. */
static bool no_consumer_plugin(const char *name)
{
    static const char *const names[] = {"jwt",    "key-auth",  "basic-auth", "hmac-auth",
                                        "oauth2", "ldap-auth", "acl",        "cors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Kong keeps one plugin of a name per scope (its cache key). */
static bool check_plugin_scopes(struct loader *L)
{
    for (size_t i = 0; i < L->plugins.n; i++) {
        const struct plugin_rec *p = vec_at(&L->plugins, i);
        if (p->consumer != NONE && no_consumer_plugin(p->p.name)) {
            /* at the `consumer:` reference, or at the plugin nested under one */
            struct sl_conf_value nested = {.line = p->p.line, .column = p->p.column};
            return fail(L, p->consumer_at != NULL ? p->consumer_at : &nested,
                        "plugin '%s' cannot be configured on a consumer (Kong: 'consumer: "
                        "value must be null')",
                        p->p.name);
        }
        char key[160];
        snprintf(key, sizeof key, "%s|%zu|%zu|%zu", p->p.name, p->service, p->route, p->consumer);
        char *k = lstrdup(L, key);
        if (k == NULL)
            return false;
        bool oom = false;
        struct sl_conf_value at = {.line = p->p.line, .column = p->p.column};
        const struct strmap_entry *dup = strmap_put(&L->names, NS_PLUGIN_SCOPE, k, NULL, i, &oom);
        if (oom)
            return fail_oom(L);
        if (dup != NULL) {
            const struct plugin_rec *first = vec_at(&L->plugins, dup->index);
            return fail(L, &at,
                        "plugin '%s' is configured twice for the same scope (first at "
                        "line %d)",
                        p->p.name, first->p.line);
        }
    }
    return true;
}

/* Upstreams with their targets (nested ones and top-level ones, in file
 * order), and services whose host names an upstream. */
static bool layout_upstreams(struct loader *L)
{
    struct sl_config *cfg = L->cfg;
    cfg->n_upstreams = L->upstreams.n;
    if ((cfg->upstreams = lalloc(L, (cfg->n_upstreams + 1) * sizeof *cfg->upstreams)) == NULL)
        return false;
    /* count, allocate, then fill in one pass over the targets (file order
     * kept within each upstream): linear in upstreams + targets */
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        cfg->upstreams[i] = *(struct sl_upstream *)vec_at(&L->upstreams, i);
        cfg->upstreams[i].n_targets = 0;
    }
    for (size_t t = 0; t < L->targets.n; t++)
        cfg->upstreams[((struct target_rec *)vec_at(&L->targets, t))->upstream].n_targets++;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        struct sl_upstream *u = &cfg->upstreams[i];
        if ((u->targets = lalloc(L, (u->n_targets + 1) * sizeof *u->targets)) == NULL)
            return false;
        u->n_targets = 0;
    }
    for (size_t t = 0; t < L->targets.n; t++) {
        const struct target_rec *rec = vec_at(&L->targets, t);
        size_t i = rec->upstream;
        struct sl_upstream *u = &cfg->upstreams[i];
        /* Kong: one target per host:port in an upstream */
        char key[320];
        snprintf(key, sizeof key, "%zu|%s|%u", i, rec->t.host, rec->t.port);
        char *k = lstrdup(L, key);
        if (k == NULL)
            return false;
        bool oom = false;
        const struct strmap_entry *dup =
            strmap_put(&L->names, NS_TARGET, k, rec->target_node, t, &oom);
        if (oom)
            return fail_oom(L);
        if (dup != NULL)
            return fail(L, rec->target_node, "target '%s:%u' is already in upstream '%s' (line %d)",
                        rec->t.host, rec->t.port, u->name, dup->node->line);
        struct sl_target *out = &u->targets[u->n_targets];
        *out = rec->t;
        out->upstream = u;
        out->index = u->n_targets++;
    }
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct strmap_entry *hit =
            strmap_get(&L->names, NS_UPSTREAM_NAME, cfg->services[i].host);
        cfg->services[i].upstream = hit ? &cfg->upstreams[hit->index] : NULL;
    }
    return true;
}

static bool layout_tls(struct loader *L)
{
    struct sl_config *cfg = L->cfg;
    cfg->n_certificates = L->certificates.n;
    cfg->n_snis = L->snis.n;
    cfg->n_ca_certificates = L->ca_certificates.n;
    cfg->n_jwt_secrets = L->jwt_secrets.n;
    if ((cfg->certificates = lalloc(L, (cfg->n_certificates + 1) * sizeof *cfg->certificates)) ==
            NULL ||
        (cfg->snis = lalloc(L, (cfg->n_snis + 1) * sizeof *cfg->snis)) == NULL ||
        (cfg->ca_certificates =
             lalloc(L, (cfg->n_ca_certificates + 1) * sizeof *cfg->ca_certificates)) == NULL ||
        (cfg->jwt_secrets = lalloc(L, (cfg->n_jwt_secrets + 1) * sizeof *cfg->jwt_secrets)) == NULL)
        return false;
    for (size_t i = 0; i < cfg->n_certificates; i++)
        cfg->certificates[i] = *(struct sl_certificate *)vec_at(&L->certificates, i);
    for (size_t i = 0; i < cfg->n_ca_certificates; i++)
        cfg->ca_certificates[i] = *(struct sl_ca_certificate *)vec_at(&L->ca_certificates, i);
    for (size_t i = 0; i < cfg->n_snis; i++) {
        const struct sni_rec *rec = vec_at(&L->snis, i);
        cfg->snis[i] = rec->s;
        cfg->snis[i].certificate = &cfg->certificates[rec->certificate];
    }
    for (size_t i = 0; i < cfg->n_jwt_secrets; i++) {
        const struct jwt_rec *rec = vec_at(&L->jwt_secrets, i);
        cfg->jwt_secrets[i] = rec->j;
        cfg->jwt_secrets[i].consumer = &cfg->consumers[rec->consumer];
    }
    return true;
}

/* Copy the entities into the arena and turn indices into pointers. */
static bool layout(struct loader *L)
{
    struct sl_config *cfg = L->cfg;
    cfg->n_services = L->services.n;
    cfg->n_routes = L->routes.n;
    cfg->n_consumers = L->consumers.n;
    cfg->n_plugins = L->plugins.n;
    if ((cfg->services = lalloc(L, cfg->n_services * sizeof *cfg->services)) == NULL ||
        (cfg->routes = lalloc(L, cfg->n_routes * sizeof *cfg->routes)) == NULL ||
        (cfg->consumers = lalloc(L, cfg->n_consumers * sizeof *cfg->consumers)) == NULL ||
        (cfg->plugins = lalloc(L, cfg->n_plugins * sizeof *cfg->plugins)) == NULL)
        return false;
    for (size_t i = 0; i < cfg->n_services; i++)
        cfg->services[i] = ((struct service_rec *)vec_at(&L->services, i))->s;
    for (size_t i = 0; i < cfg->n_consumers; i++) {
        cfg->consumers[i] = *(struct sl_consumer *)vec_at(&L->consumers, i);
        if (cfg->consumers[i].id == NULL &&
            (cfg->consumers[i].id = consumer_generated_id(L, &cfg->consumers[i])) == NULL)
            return false;
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct route_rec *r = vec_at(&L->routes, i);
        cfg->routes[i] = r->r;
        cfg->routes[i].service = r->service == NONE ? NULL : &cfg->services[r->service];
    }
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const struct plugin_rec *p = vec_at(&L->plugins, i);
        struct sl_plugin_conf *out = &cfg->plugins[i];
        *out = p->p;
        out->service = p->service == NONE ? NULL : &cfg->services[p->service];
        out->route = p->route == NONE ? NULL : &cfg->routes[p->route];
        out->consumer = p->consumer == NONE ? NULL : &cfg->consumers[p->consumer];
    }
    return layout_upstreams(L) && layout_tls(L);
}

static void hash_bytes(const char *data, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    static const char hex[] = "0123456789abcdef";
    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) || md_len < 16) {
        memset(out, '0', 32);
        out[32] = '\0';
        return;
    }
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[32] = '\0';
}

static void loader_release(struct loader *L)
{
    free(L->services.data);
    free(L->routes.data);
    free(L->consumers.data);
    free(L->plugins.data);
    free(L->upstreams.data);
    free(L->targets.data);
    free(L->certificates.data);
    free(L->snis.data);
    free(L->ca_certificates.data);
    free(L->jwt_secrets.data);
    free(L->refs.data);
    free(L->names.slots);
}

static void config_free(struct sl_config *cfg)
{
    if (cfg == NULL)
        return;
    arena_free(cfg->arena);
    free(cfg);
}

struct sl_config *sl_config_load_buffer(const char *data, size_t len, const char *source_name,
                                        const char *role, struct sl_config_error *err)
{
    struct sl_config_error scratch;
    if (err == NULL)
        err = &scratch;
    err->text[0] = '\0';
    if (source_name == NULL)
        source_name = "<config>";
    if (role == NULL)
        role = "gateway";

    struct loader L = {
        .source = source_name,
        .role = role,
        .err = err,
        .data = data,
        .len = len,
        .services = {.elem = sizeof(struct service_rec)},
        .routes = {.elem = sizeof(struct route_rec)},
        .consumers = {.elem = sizeof(struct sl_consumer)},
        .plugins = {.elem = sizeof(struct plugin_rec)},
        .upstreams = {.elem = sizeof(struct sl_upstream)},
        .targets = {.elem = sizeof(struct target_rec)},
        .certificates = {.elem = sizeof(struct sl_certificate)},
        .snis = {.elem = sizeof(struct sni_rec)},
        .ca_certificates = {.elem = sizeof(struct sl_ca_certificate)},
        .jwt_secrets = {.elem = sizeof(struct jwt_rec)},
        .refs = {.elem = sizeof(struct pending_ref)},
    };
    struct sl_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL || (cfg->arena = calloc(1, sizeof *cfg->arena)) == NULL) {
        free(cfg);
        snprintf(err->text, sizeof err->text, "%s: out of memory", source_name);
        return NULL;
    }
    atomic_init(&cfg->refcount, 1);
    L.cfg = cfg;
    L.arena = cfg->arena;
    node_defaults(&cfg->node);

    bool ok = false;
    if (strcmp(role, "gateway") != 0 && strcmp(role, "sidecar") != 0) {
        fail(&L, NULL, "invalid role '%s' (expected gateway or sidecar)", role);
        goto out;
    }
    if (data == NULL && len > 0) {
        fail(&L, NULL, "no data");
        goto out;
    }
    if (len > SL_CONFIG_MAX_FILE_BYTES) {
        fail(&L, NULL, "file is too large (%zu bytes; the limit is %u MiB)", len,
             SL_CONFIG_MAX_FILE_BYTES >> 20);
        goto out;
    }
    if ((cfg->source_path = lstrdup(&L, source_name)) == NULL)
        goto out;
    hash_bytes(data ? data : "", len, cfg->hash);
    if (data == NULL)
        L.data = "";

    struct sl_conf_value *root = parse_yaml(&L);
    if (L.failed)
        goto out;
    if (root == NULL || root->type == SL_CONF_NULL) {
        fail_at(&L, 1, 1, "empty file: expected a map with '_format_version'");
        goto out;
    }
    ok = read_top(&L, root) && apply_env(&L) && check_node(&L) && resolve_refs(&L) &&
         check_plugin_scopes(&L) && layout(&L);
out:
    loader_release(&L);
    if (!ok || L.failed) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct sl_config *sl_config_load(const char *path, const char *role, struct sl_config_error *err)
{
    struct sl_config_error scratch;
    if (err == NULL)
        err = &scratch;
    err->text[0] = '\0';
    if (path == NULL) {
        snprintf(err->text, sizeof err->text, "(null): no configuration file");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err->text, sizeof err->text, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err->text, sizeof err->text, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err->text, sizeof err->text, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((unsigned long long)st.st_size > SL_CONFIG_MAX_FILE_BYTES) {
        snprintf(err->text, sizeof err->text,
                 "%s: file is too large (%lld bytes; the limit is %u MiB)", path,
                 (long long)st.st_size, SL_CONFIG_MAX_FILE_BYTES >> 20);
        close(fd);
        return NULL;
    }
    /* Read up to one byte past the limit: the file may grow while we read. */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *data = malloc(cap);
    if (data == NULL) {
        snprintf(err->text, sizeof err->text, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if (cap > SL_CONFIG_MAX_FILE_BYTES)
                break;
            size_t ncap =
                cap * 2 > SL_CONFIG_MAX_FILE_BYTES + 1 ? SL_CONFIG_MAX_FILE_BYTES + 1 : cap * 2;
            char *bigger = realloc(data, ncap);
            if (bigger == NULL) {
                snprintf(err->text, sizeof err->text, "%s: out of memory", path);
                free(data);
                close(fd);
                return NULL;
            }
            data = bigger;
            cap = ncap;
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err->text, sizeof err->text, "%s: cannot read: %s", path, strerror(errno));
            free(data);
            close(fd);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    struct sl_config *cfg = sl_config_load_buffer(data, len, path, role, err);
    free(data);
    return cfg;
}

struct sl_config *sl_config_ref(struct sl_config *cfg)
{
    if (cfg != NULL)
        atomic_fetch_add_explicit(&cfg->refcount, 1, memory_order_relaxed);
    return cfg;
}

void sl_config_unref(struct sl_config *cfg)
{
    if (cfg == NULL)
        return;
    if (atomic_fetch_sub_explicit(&cfg->refcount, 1, memory_order_acq_rel) == 1) {
        if (cfg->plugin_runtime_free != NULL)
            cfg->plugin_runtime_free(cfg->plugin_runtime);
        config_free(cfg);
    }
}

bool sl_config_check_plugins(const struct sl_config *cfg, const char *const *supported,
                             struct sl_config_error *err)
{
    for (size_t i = 0; cfg != NULL && i < cfg->n_plugins; i++) {
        const struct sl_plugin_conf *p = &cfg->plugins[i];
        bool found = false;
        for (size_t s = 0; supported != NULL && supported[s] != NULL && !found; s++)
            found = strcmp(supported[s], p->name) == 0;
        if (!found) {
            if (err != NULL)
                snprintf(err->text, sizeof err->text, "%s:%d:%d: plugin '%s' is not supported yet",
                         cfg->source_path, p->line, p->column, p->name);
            return false;
        }
    }
    return true;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool sl_config_ip_trusted(const struct sl_node_config *node, const struct sockaddr *addr)
{
    if (node == NULL || addr == NULL)
        return false;
    uint8_t v4[4], v6[16];
    bool has_v4 = false, has_v6 = false;
    if (addr->sa_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        has_v4 = true;
    } else if (addr->sa_family == AF_INET6) {
        memcpy(v6, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
        has_v6 = true;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(v6, mapped, 12) == 0) { /* ::ffff:a.b.c.d is an IPv4 peer */
            memcpy(v4, v6 + 12, 4);
            has_v4 = true;
        }
    }
    for (size_t i = 0; i < node->n_trusted_ips; i++) {
        const struct sl_cidr *c = &node->trusted_ips[i];
        if (c->family == AF_INET && has_v4 && prefix_match(c->addr, v4, c->prefix_len))
            return true;
        if (c->family == AF_INET6 && has_v6 && prefix_match(c->addr, v6, c->prefix_len))
            return true;
    }
    return false;
}
