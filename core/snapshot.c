#include "snapshot.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "balancer.h"
#include "plugin_runtime.h"
#include "resilience.h"
#include "router.h"
#include "tls.h"

static bool has_ssl_listener(const struct sl_node_config *node)
{
    for (size_t i = 0; i < node->n_proxy_listen; i++)
        if (node->proxy_listen[i].ssl)
            return true;
    return false;
}

static struct sl_snapshot *fail(struct sl_snapshot *snap, struct sl_config_error *err,
                                const char *message)
{
    if (message)
        snprintf(err->text, sizeof err->text, "%s", message);
    sl_snapshot_unref(snap);
    return NULL;
}

bool sl_snapshot_is_sidecar(const struct sl_snapshot *snap)
{
    return snap->cfg->role && strcmp(snap->cfg->role, "sidecar") == 0;
}

/* The sidecar's local application as a service: what the inbound listener
 * proxies to. Kong's service defaults, no retries (inbound never retries),
 * inbound_circuit_breakers as its circuit breakers. */
static struct sl_service *app_service_new(const struct sl_config *cfg)
{
    const struct sl_node_config *node = &cfg->node;
    struct sl_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return NULL;
    svc->name = (char *)node->service_name;
    svc->protocol = (char *)"http";
    svc->host = (char *)node->app_host;
    svc->port = node->app_port;
    svc->connect_timeout_ms = 60000;
    svc->read_timeout_ms = 60000;
    svc->write_timeout_ms = 60000;
    svc->retries = 0;
    svc->enabled = true;
    svc->tls_verify_depth = -1;
    svc->index = SIZE_MAX; /* not one of cfg->services */
    svc->circuit_breakers = node->inbound_circuit_breakers;
    return svc;
}

static uint64_t name_hash(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the lower-cased name */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)tolower((unsigned char)name[i])) * 0x100000001b3ull;
    return h;
}

static bool build_name_index(struct sl_snapshot *snap)
{
    const struct sl_config *cfg = snap->cfg;
    size_t slots = 16;
    while (slots < cfg->n_services * 2)
        slots *= 2;
    snap->by_name = calloc(slots, sizeof *snap->by_name);
    if (!snap->by_name)
        return false;
    snap->by_name_slots = slots;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct sl_service *svc = &cfg->services[i];
        if (!svc->name || !svc->enabled)
            continue;
        size_t len = strlen(svc->name);
        size_t at = name_hash(svc->name, len) & (slots - 1);
        while (snap->by_name[at]) /* names are unique (the loader checks) */
            at = (at + 1) & (slots - 1);
        snap->by_name[at] = svc;
    }
    return true;
}

const struct sl_service *sl_snapshot_service_by_name(const struct sl_snapshot *snap,
                                                     const char *name, size_t len)
{
    size_t mask = snap->by_name_slots - 1;
    for (size_t at = name_hash(name, len) & mask;; at = (at + 1) & mask) {
        const struct sl_service *svc = snap->by_name[at];
        if (!svc)
            return NULL;
        if (strlen(svc->name) == len && strncasecmp(svc->name, name, len) == 0)
            return svc;
    }
}

struct sl_snapshot *sl_snapshot_new(struct sl_config *cfg, struct sl_config_error *err)
{
    struct sl_snapshot *snap = calloc(1, sizeof *snap);
    if (!snap) {
        snprintf(err->text, sizeof err->text, "out of memory");
        sl_config_unref(cfg);
        return NULL;
    }
    snap->cfg = cfg;
    atomic_init(&snap->refcount, 1);
    /* every plugin instance: a known plugin with a valid config (a config
     * loaded by the caller may not have been checked yet) */
    if (sl_snapshot_is_sidecar(snap) && cfg->n_plugins > 0) {
        const struct sl_plugin_conf *p = &cfg->plugins[0];
        snprintf(err->text, sizeof err->text,
                 "%s:%d:%d: plugin '%s': plugins are not supported in the sidecar role yet",
                 cfg->source_path, p->line, p->column, p->name);
        return fail(snap, err, NULL);
    }
    if (!sl_plugins_attach(cfg, err))
        return fail(snap, err, NULL);
    if (has_ssl_listener(&cfg->node)) {
        snap->tls = sl_tls_new(cfg, err->text, sizeof err->text);
        if (!snap->tls)
            return fail(snap, err, NULL);
    }
    snap->service_tls = calloc(cfg->n_services ? cfg->n_services : 1, sizeof *snap->service_tls);
    if (!snap->service_tls)
        return fail(snap, err, "out of memory");
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct sl_service *svc = &cfg->services[i];
        if (strcmp(svc->protocol, "https") != 0)
            continue;
        char why[400];
        snap->service_tls[i] = sl_tls_client_ctx(cfg, svc, why, sizeof why);
        if (!snap->service_tls[i]) {
            snprintf(err->text, sizeof err->text, "%s:%d:%d: %s", cfg->source_path, svc->line,
                     svc->column, why);
            return fail(snap, err, NULL);
        }
    }
    snap->router = sl_router_build(cfg);
    if (!snap->router || !build_name_index(snap))
        return fail(snap, err, "out of memory");
    snap->balancer = sl_balancer_new(cfg, err->text, sizeof err->text);
    if (!snap->balancer)
        return fail(snap, err, NULL);
    if (sl_snapshot_is_sidecar(snap) && !(snap->app_service = app_service_new(cfg)))
        return fail(snap, err, "out of memory");
    snap->resilience = sl_resilience_new(cfg, snap->app_service, err->text, sizeof err->text);
    if (!snap->resilience)
        return fail(snap, err, NULL);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snap->loaded_at_unix_ms = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
    return snap;
}

struct sl_snapshot *sl_snapshot_load(const char *path, const char *role,
                                     struct sl_config_error *err)
{
    struct sl_config *cfg = sl_config_load(path, role, err);
    return cfg ? sl_snapshot_new(cfg, err) : NULL;
}

struct sl_snapshot *sl_snapshot_load_buffer(const char *data, size_t len, const char *source_name,
                                            const char *role, struct sl_config_error *err)
{
    struct sl_config *cfg = sl_config_load_buffer(data, len, source_name, role, err);
    return cfg ? sl_snapshot_new(cfg, err) : NULL;
}

struct sl_snapshot *sl_snapshot_ref(struct sl_snapshot *snap)
{
    atomic_fetch_add_explicit(&snap->refcount, 1, memory_order_relaxed);
    return snap;
}

void sl_snapshot_unref(struct sl_snapshot *snap)
{
    if (!snap || atomic_fetch_sub_explicit(&snap->refcount, 1, memory_order_acq_rel) != 1)
        return;
    if (snap->router)
        sl_router_free(snap->router);
    if (snap->balancer)
        sl_balancer_free(snap->balancer);
    sl_tls_free(snap->tls);
    free(snap->service_tls);
    sl_resilience_free(snap->resilience);
    free(snap->app_service);
    free(snap->by_name);
    sl_config_unref(snap->cfg);
    free(snap);
}
