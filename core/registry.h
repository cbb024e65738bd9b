/*
 * A process-wide table of shared entries found by key: state that must be
 * the same object for every worker and must outlive a configuration
 * snapshot when the thing it describes is unchanged (a target's health, a
 * service's circuit-breaker counts, a target's ejection). An entry type
 * embeds struct sl_registry_entry as its first member.
 *
 * Ownership: the registry owns its entries. A holder takes a reference with
 * sl_registry_get() or sl_registry_hold() and drops it with
 * sl_registry_put(), which never frees and never locks (a worker may drop
 * the last one on the request path). sl_registry_sweep() frees the entries
 * nobody holds; it and sl_registry_get() take the registry's lock, which no
 * request ever takes.
 */
#ifndef SL_REGISTRY_H
#define SL_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

struct sl_registry_entry {
    struct sl_registry_entry *next; /* under the registry's lock */
    atomic_int refs;
    char *key;
};

struct sl_registry {
    pthread_mutex_t lock;
    struct sl_registry_entry *head;
    size_t entry_size;                         /* of the type that embeds the entry */
    void (*init)(struct sl_registry_entry *e); /* a new entry, zeroed; may be NULL */
};

#define SL_REGISTRY_INITIALIZER(type, init_fn)                                                     \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, NULL, sizeof(type), init_fn                                     \
    }

/* The entry of `key` (made when there is none), with one more reference;
 * NULL when out of memory. */
void *sl_registry_get(struct sl_registry *reg, const char *key);
void sl_registry_hold(struct sl_registry_entry *e);
void sl_registry_put(struct sl_registry_entry *e); /* NULL-safe */
/* Free every entry nobody holds. */
void sl_registry_sweep(struct sl_registry *reg);

#endif
