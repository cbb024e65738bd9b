/*
 * The memory of a load. Every byte of a snapshot (strings, arrays, the tree)
 * lives in one arena owned by it, so sl_config_unref() frees it in one
 * sweep. The vectors and the string map are the loader's scaffolding: they
 * live during one load and are freed at its end.
 */
#include <stdlib.h>
#include <string.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Arena                                                                    */
/* ------------------------------------------------------------------------ */

#define ARENA_CHUNK_BYTES 65536u

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    max_align_t data[];
};

/* Owned by its snapshot (sl_config.arena); conf_arena_free() with it. */
struct sl_arena {
    struct arena_chunk *chunks;
};

struct sl_arena *conf_arena_new(void)
{
    return calloc(1, sizeof(struct sl_arena));
}

/* Zeroed memory aligned for any type; NULL when out of memory. */
void *conf_arena_alloc(struct sl_arena *a, size_t n)
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

void conf_arena_free(struct sl_arena *a)
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
/* Growable vectors and a string map, both temporary (live during a load)   */
/* ------------------------------------------------------------------------ */

void *conf_vec_push(struct vec *v)
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

void *conf_vec_at(const struct vec *v, size_t i)
{
    return (char *)v->data + i * v->elem;
}

static uint64_t strmap_hash(uintptr_t ns, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)ns; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

const struct strmap_entry *conf_strmap_get(const struct strmap *m, uintptr_t ns, const char *key)
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
const struct strmap_entry *conf_strmap_put(struct strmap *m, uintptr_t ns, const char *key,
                                           const struct sl_conf_value *node, size_t index,
                                           bool *oom)
{
    const struct strmap_entry *old = conf_strmap_get(m, ns, key);
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
