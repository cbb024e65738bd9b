#include "registry.h"

#include <stdlib.h>
#include <string.h>

void *sl_registry_get(struct sl_registry *reg, const char *key)
{
    pthread_mutex_lock(&reg->lock);
    struct sl_registry_entry *e = reg->head;
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (!e && (e = calloc(1, reg->entry_size)) != NULL) {
        if ((e->key = strdup(key)) == NULL) {
            free(e);
            e = NULL;
        } else {
            atomic_init(&e->refs, 0);
            if (reg->init)
                reg->init(e);
            e->next = reg->head;
            reg->head = e;
        }
    }
    if (e)
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&reg->lock);
    return e;
}

void sl_registry_hold(struct sl_registry_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void sl_registry_put(struct sl_registry_entry *e)
{
    if (e)
        atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel);
}

void sl_registry_sweep(struct sl_registry *reg)
{
    pthread_mutex_lock(&reg->lock);
    for (struct sl_registry_entry **pp = &reg->head; *pp;) {
        struct sl_registry_entry *e = *pp;
        if (atomic_load(&e->refs) == 0) {
            *pp = e->next;
            free(e->key);
            free(e);
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&reg->lock);
}
