/*
 * The plugin runtime: the registry, per-configuration plans (which plugins
 * may run for which route, in which order), Kong's scoping, the phase
 * runner with suspend/resume, and the helpers of sluice/plugin.h (its view
 * of the configuration is in plugin_config.c).
 *
 * Ownership: the runtime (struct runtime) is attached to a config snapshot
 * by sl_plugins_attach() and freed with it; it is immutable afterwards and
 * read by every worker without locks. Everything per request lives in the
 * request's struct sl_plugin_ctx.
 */
#include "sluice/plugin.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "plugin_runtime.h"
#include "util.h"

enum { PHASE_NONE, PHASE_REWRITE, PHASE_ACCESS, PHASE_DONE };

/* A path or query a plugin sets: as long as the codec accepts a target. */
#define SL_PLUGIN_MAX_TARGET_PART 8192

/* ------------------------------------------------------------------------ */
/* registry                                                                  */

static const struct sl_plugin_ops *const *registry;
static size_t registry_n;

void sl_plugin_registry_set(const struct sl_plugin_ops *const *table)
{
    registry = table;
    registry_n = 0;
    while (table != NULL && table[registry_n] != NULL)
        registry_n++;
}

size_t sl_plugin_registry_size(void)
{
    return registry_n;
}

static long registry_index(const char *name)
{
    for (size_t i = 0; i < registry_n; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return (long)i;
    return -1;
}

const struct sl_plugin_ops *sl_plugin_registry_find(const char *name)
{
    long i = registry_index(name);
    return i < 0 ? NULL : registry[i];
}

/* ------------------------------------------------------------------------ */
/* plans                                                                     */

/*
 * One plugin (by name) that may run for a route: its instances that fit the
 * route and service, most specific first. The consumer decides, at run
 * time, which of them applies.
 */
struct slot {
    const struct sl_plugin_ops *ops;
    size_t reg_index;
    size_t n;
    size_t *instances; /* indices into cfg->plugins, by falling specificity */
};

struct plan {
    size_t n;
    struct slot *slots; /* by falling priority, then name */
};

struct runtime {
    const struct sl_config *cfg;
    void **confs;        /* parsed config per cfg->plugins[i] (NULL when disabled) */
    struct plan global;  /* instances with no route, service or consumer */
    struct plan *routes; /* per cfg->routes[i] */
};

/* Kong's precedence: route+service+consumer > route+consumer >
 * service+consumer > route+service > consumer > route > service > global. */
static int specificity(const struct sl_plugin_conf *p)
{
    int r = p->route != NULL, s = p->service != NULL, c = p->consumer != NULL;
    static const int rank[2][2][2] = {
        /* [route][service][consumer] */
        {{0, 3}, {1, 5}},
        {{2, 6}, {4, 7}},
    };
    return rank[r][s][c];
}

static int slot_order(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    if (x->ops->priority != y->ops->priority)
        return x->ops->priority > y->ops->priority ? -1 : 1;
    return strcmp(x->ops->name, y->ops->name);
}

static void plan_free(struct plan *plan)
{
    for (size_t i = 0; i < plan->n; i++)
        free(plan->slots[i].instances);
    free(plan->slots);
    plan->slots = NULL;
    plan->n = 0;
}

/* Does instance p fit a request on route (may be NULL: before routing)? */
static bool fits_route(const struct sl_plugin_conf *p, const struct sl_route *route)
{
    if (route == NULL)
        return p->route == NULL && p->service == NULL && p->consumer == NULL;
    if (p->route != NULL && p->route != route)
        return false;
    if (p->service != NULL && p->service != route->service)
        return false;
    return true;
}

static bool plan_build(struct runtime *rt, const struct sl_route *route, struct plan *plan)
{
    const struct sl_config *cfg = rt->cfg;
    plan->n = 0;
    plan->slots = calloc(registry_n ? registry_n : 1, sizeof *plan->slots);
    if (plan->slots == NULL)
        return false;
    for (size_t g = 0; g < registry_n; g++) {
        size_t count = 0;
        for (size_t i = 0; i < cfg->n_plugins; i++)
            count += rt->confs[i] != NULL && strcmp(cfg->plugins[i].name, registry[g]->name) == 0 &&
                     fits_route(&cfg->plugins[i], route);
        if (count == 0)
            continue;
        struct slot *slot = &plan->slots[plan->n++];
        slot->ops = registry[g];
        slot->reg_index = g;
        slot->instances = malloc(count * sizeof *slot->instances);
        if (slot->instances == NULL)
            return false;
        for (size_t i = 0; i < cfg->n_plugins; i++)
            if (rt->confs[i] != NULL && strcmp(cfg->plugins[i].name, registry[g]->name) == 0 &&
                fits_route(&cfg->plugins[i], route))
                slot->instances[slot->n++] = i;
        /* most specific first (insertion sort: a handful of instances) */
        for (size_t a = 1; a < slot->n; a++)
            for (size_t b = a; b > 0 && specificity(&cfg->plugins[slot->instances[b]]) >
                                            specificity(&cfg->plugins[slot->instances[b - 1]]);
                 b--) {
                size_t t = slot->instances[b];
                slot->instances[b] = slot->instances[b - 1];
                slot->instances[b - 1] = t;
            }
    }
    qsort(plan->slots, plan->n, sizeof *plan->slots, slot_order);
    return true;
}

/* confs[i] of an enabled instance whose plugin keeps no parsed config:
 * non-NULL, so "enabled" and "has a config" stay one test. */
static char no_config_marker;

static void runtime_free(void *arg)
{
    struct runtime *rt = arg;
    if (rt == NULL)
        return;
    for (size_t i = 0; rt->confs != NULL && i < rt->cfg->n_plugins; i++) {
        const struct sl_plugin_ops *ops = sl_plugin_registry_find(rt->cfg->plugins[i].name);
        if (rt->confs[i] != NULL && rt->confs[i] != &no_config_marker && ops != NULL &&
            ops->free_config != NULL)
            ops->free_config(rt->confs[i]);
    }
    free(rt->confs);
    plan_free(&rt->global);
    for (size_t i = 0; rt->routes != NULL && i < rt->cfg->n_routes; i++)
        plan_free(&rt->routes[i]);
    free(rt->routes);
    free(rt);
}

bool sl_plugins_attach(struct sl_config *cfg, struct sl_config_error *err)
{
    if (cfg->plugin_runtime != NULL)
        return true;
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const struct sl_plugin_conf *p = &cfg->plugins[i];
        if (sl_plugin_registry_find(p->name) == NULL) {
            snprintf(err->text, sizeof err->text, "%s:%d:%d: plugin '%s' is not supported yet",
                     cfg->source_path, p->line, p->column, p->name);
            return false;
        }
    }
    struct runtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        goto oom;
    rt->cfg = cfg;
    rt->confs = calloc(cfg->n_plugins ? cfg->n_plugins : 1, sizeof *rt->confs);
    rt->routes = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *rt->routes);
    if (rt->confs == NULL || rt->routes == NULL)
        goto oom_rt;
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const struct sl_plugin_conf *p = &cfg->plugins[i];
        const struct sl_plugin_ops *ops = sl_plugin_registry_find(p->name);
        void *conf = NULL;
        /* Kong validates disabled instances too */
        if (ops->parse_config != NULL && !ops->parse_config(p, cfg, &conf, err)) {
            runtime_free(rt);
            return false;
        }
        if (!p->enabled) {
            if (conf != NULL && ops->free_config != NULL)
                ops->free_config(conf);
            continue; /* confs[i] stays NULL: never runs */
        }
        rt->confs[i] = conf != NULL ? conf : &no_config_marker;
    }
    if (!plan_build(rt, NULL, &rt->global))
        goto oom_rt;
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (!plan_build(rt, &cfg->routes[i], &rt->routes[i]))
            goto oom_rt;
    cfg->plugin_runtime = rt;
    cfg->plugin_runtime_free = runtime_free;
    return true;
oom_rt:
    runtime_free(rt);
oom:
    snprintf(err->text, sizeof err->text, "%s: out of memory", cfg->source_path);
    return false;
}

bool sl_plugins_active(const struct sl_config *cfg)
{
    return cfg->n_plugins > 0 && cfg->plugin_runtime != NULL;
}

/* ------------------------------------------------------------------------ */
/* the runner                                                                */

static const void *conf_of(const struct runtime *rt, size_t instance)
{
    const void *conf = rt->confs[instance];
    return conf == &no_config_marker ? NULL : conf;
}

/* The instance of `slot` that applies to this request now, or -1. */
static long choose(const struct sl_plugin_ctx *ctx, const struct slot *slot)
{
    const struct runtime *rt = ctx->cfg->plugin_runtime;
    unsigned proto = strcmp(ctx->scheme, "https") == 0 ? SL_PROTO_HTTPS : SL_PROTO_HTTP;
    for (size_t k = 0; k < slot->n; k++) {
        const struct sl_plugin_conf *p = &ctx->cfg->plugins[slot->instances[k]];
        if (p->consumer != NULL && p->consumer != ctx->consumer)
            continue;
        if (!(p->protocols & proto))
            continue;
        if (rt->confs[slot->instances[k]] == NULL)
            continue;
        return (long)slot->instances[k];
    }
    return -1;
}

static void remember(struct sl_plugin_ctx *ctx, const struct sl_plugin_ops *ops, const void *conf)
{
    for (size_t i = 0; i < ctx->n_ran; i++)
        if (ctx->ran_ops[i] == ops) {
            ctx->ran_conf[i] = conf; /* access chose again (consumer known now) */
            return;
        }
    if (ctx->n_ran < SL_PLUGIN_MAX_PER_REQUEST) {
        ctx->ran_ops[ctx->n_ran] = ops;
        ctx->ran_conf[ctx->n_ran] = conf;
        ctx->n_ran++;
    }
}

static enum sl_plugin_phase_result run_phase(struct sl_plugin_ctx *ctx, const struct plan *plan,
                                             bool rewrite)
{
    const struct runtime *rt = ctx->cfg->plugin_runtime;
    if (ctx->responded) /* a suspended hook answered before it resumed */
        return SL_PHASE_RESPOND;
    while (ctx->next_slot < plan->n) {
        const struct slot *slot = &plan->slots[ctx->next_slot++];
        enum sl_plugin_result (*hook)(struct sl_plugin_ctx *, const void *) =
            rewrite ? slot->ops->rewrite : slot->ops->access;
        long inst = choose(ctx, slot);
        if (inst < 0)
            continue;
        const void *conf = conf_of(rt, (size_t)inst);
        remember(ctx, slot->ops, conf);
        if (hook == NULL)
            continue;
        ctx->current = slot->ops;
        enum sl_plugin_result res = hook(ctx, conf);
        if (ctx->responded)
            return SL_PHASE_RESPOND;
        if (res == SL_PLUGIN_SUSPEND) {
            ctx->suspended = true;
            return SL_PHASE_SUSPENDED;
        }
    }
    return SL_PHASE_PROXY;
}

enum sl_plugin_phase_result sl_plugins_rewrite(struct sl_plugin_ctx *ctx)
{
    const struct runtime *rt = ctx->cfg->plugin_runtime;
    if (rt == NULL)
        return SL_PHASE_PROXY;
    if (ctx->phase != PHASE_REWRITE) {
        ctx->phase = PHASE_REWRITE;
        ctx->next_slot = 0;
    }
    return run_phase(ctx, &rt->global, true);
}

enum sl_plugin_phase_result sl_plugins_access(struct sl_plugin_ctx *ctx)
{
    const struct runtime *rt = ctx->cfg->plugin_runtime;
    if (rt == NULL || ctx->route == NULL)
        return SL_PHASE_PROXY;
    if (ctx->phase != PHASE_ACCESS) {
        ctx->phase = PHASE_ACCESS;
        ctx->next_slot = 0;
    }
    enum sl_plugin_phase_result res = run_phase(ctx, &rt->routes[ctx->route->index], false);
    if (res == SL_PHASE_PROXY)
        ctx->phase = PHASE_DONE;
    return res;
}

void sl_plugins_header_filter(struct sl_plugin_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_ran; i++)
        if (ctx->ran_ops[i]->header_filter != NULL) {
            ctx->current = ctx->ran_ops[i];
            ctx->ran_ops[i]->header_filter(ctx, ctx->ran_conf[i]);
        }
}

void sl_plugins_body_filter(struct sl_plugin_ctx *ctx, const char *data, size_t len, bool last)
{
    for (size_t i = 0; i < ctx->n_ran; i++)
        if (ctx->ran_ops[i]->body_filter != NULL) {
            ctx->current = ctx->ran_ops[i];
            ctx->ran_ops[i]->body_filter(ctx, ctx->ran_conf[i], data, len, last);
        }
}

void sl_plugins_log(struct sl_plugin_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_ran; i++)
        if (ctx->ran_ops[i]->log != NULL) {
            ctx->current = ctx->ran_ops[i];
            ctx->ran_ops[i]->log(ctx, ctx->ran_conf[i]);
        }
}

/* ------------------------------------------------------------------------ */
/* request memory, suspension                                                */

/* Request memory: chunks carved from the front (a header edit is three
 * small allocations; a request with an auth and a rate-limiting plugin
 * makes dozens: one malloc per chunk instead of one each). */
#define SL_PLUGIN_MEM_CHUNK 4096

struct sl_plugin_mem {
    struct sl_plugin_mem *next;
    size_t used, cap;
    max_align_t data[];
};

void *sl_plugin_alloc(struct sl_plugin_ctx *ctx, size_t size)
{
    size_t align = sizeof(max_align_t);
    size = (size + align - 1) / align * align;
    struct sl_plugin_mem *m = ctx->mem;
    if (m != NULL && m->cap - m->used >= size) {
        void *p = (char *)m->data + m->used;
        m->used += size;
        return p;
    }
    size_t cap = size > SL_PLUGIN_MEM_CHUNK ? size : SL_PLUGIN_MEM_CHUNK;
    m = malloc(sizeof *m + cap);
    if (m == NULL)
        return NULL;
    m->used = size;
    m->cap = cap;
    m->next = ctx->mem;
    ctx->mem = m;
    return m->data;
}

static char *ctx_strdup(struct sl_plugin_ctx *ctx, const char *s, size_t len)
{
    char *copy = sl_plugin_alloc(ctx, len + 1);
    if (copy != NULL) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

void sl_plugin_ctx_release(struct sl_plugin_ctx *ctx)
{
    if (ctx->suspended && ctx->cancel != NULL)
        ctx->cancel(ctx->cancel_arg);
    ctx->suspended = false;
    ctx->cancel = NULL;
    while (ctx->mem != NULL) {
        struct sl_plugin_mem *next = ctx->mem->next;
        free(ctx->mem);
        ctx->mem = next;
    }
    ctx->request_data = NULL;
}

void **sl_plugins_new_worker_data(void)
{
    return calloc(registry_n ? registry_n : 1, sizeof(void *));
}

void sl_plugins_free_worker_data(void **data)
{
    for (size_t i = 0; data != NULL && i < registry_n; i++)
        if (data[i] != NULL && registry[i]->free_worker_data != NULL)
            registry[i]->free_worker_data(data[i]);
    free(data);
}

struct event_base *sl_plugin_event_base(const struct sl_plugin_ctx *ctx)
{
    return ctx->base;
}

void **sl_plugin_worker_data(struct sl_plugin_ctx *ctx)
{
    long i = ctx->current ? registry_index(ctx->current->name) : -1;
    return i < 0 || ctx->worker_data == NULL ? NULL : &ctx->worker_data[i];
}

void **sl_plugin_request_data(struct sl_plugin_ctx *ctx)
{
    long i = ctx->current ? registry_index(ctx->current->name) : -1;
    if (i < 0)
        return NULL;
    if (ctx->request_data == NULL) {
        ctx->request_data = sl_plugin_alloc(ctx, registry_n * sizeof(void *));
        if (ctx->request_data == NULL)
            return NULL;
        memset(ctx->request_data, 0, registry_n * sizeof(void *));
    }
    return &ctx->request_data[i];
}

void sl_plugin_on_cancel(struct sl_plugin_ctx *ctx, void (*cancel)(void *arg), void *arg)
{
    ctx->cancel = cancel;
    ctx->cancel_arg = arg;
}

void sl_plugin_resume(struct sl_plugin_ctx *ctx)
{
    if (!ctx->suspended)
        return;
    ctx->suspended = false;
    ctx->cancel = NULL;
    ctx->body_in_ready = false;
    ctx->resume(ctx->owner);
}

/* ------------------------------------------------------------------------ */
/* request accessors                                                         */

const char *sl_plugin_request_id(const struct sl_plugin_ctx *ctx)
{
    return ctx->request_id;
}
const char *sl_plugin_client_ip(const struct sl_plugin_ctx *ctx)
{
    return ctx->client_ip;
}
const char *sl_plugin_method(const struct sl_plugin_ctx *ctx)
{
    return ctx->method;
}
const char *sl_plugin_scheme(const struct sl_plugin_ctx *ctx)
{
    return ctx->scheme;
}
const char *sl_plugin_path(const struct sl_plugin_ctx *ctx, size_t *len)
{
    *len = ctx->path_len;
    return ctx->path;
}
const char *sl_plugin_query(const struct sl_plugin_ctx *ctx, size_t *len)
{
    *len = ctx->query_len;
    return ctx->query;
}
const struct sl_route *sl_plugin_route(const struct sl_plugin_ctx *ctx)
{
    return ctx->route;
}
const struct sl_service *sl_plugin_service(const struct sl_plugin_ctx *ctx)
{
    return ctx->service;
}
const struct sl_consumer *sl_plugin_consumer(const struct sl_plugin_ctx *ctx)
{
    return ctx->consumer;
}
const struct sl_config *sl_plugin_config(const struct sl_plugin_ctx *ctx)
{
    return ctx->cfg;
}
const char *sl_plugin_credential_id(const struct sl_plugin_ctx *ctx)
{
    return ctx->credential_id;
}

void sl_plugin_set_consumer(struct sl_plugin_ctx *ctx, const struct sl_consumer *consumer,
                            const char *credential_id)
{
    ctx->consumer = consumer;
    ctx->credential_id =
        credential_id ? ctx_strdup(ctx, credential_id, strlen(credential_id)) : NULL;
}

static bool name_is(const struct sl_http_header *h, const char *name, size_t name_len)
{
    return h->name_len == name_len && strncasecmp(h->name, name, name_len) == 0;
}

const char *sl_plugin_header(const struct sl_plugin_ctx *ctx, const char *name, size_t index,
                             size_t *len)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < ctx->n_headers; i++)
        if (name_is(&ctx->headers[i], name, name_len) && index-- == 0) {
            *len = ctx->headers[i].value_len;
            return ctx->headers[i].value;
        }
    return NULL;
}

/* Does an edit replace or remove the client's copies of the header? */
static bool edits_hide_client(const struct sl_plugin_ctx *ctx, const char *name)
{
    for (const struct sl_header_edit *e = ctx->upstream_edits; e; e = e->next)
        if (e->op != SL_EDIT_ADD && strcasecmp(e->name, name) == 0)
            return true;
    return false;
}

const char *sl_plugin_upstream_header(const struct sl_plugin_ctx *ctx, const char *name,
                                      size_t index, size_t *len)
{
    if (!edits_hide_client(ctx, name)) {
        size_t n = sl_plugin_header_count(ctx, name);
        if (index < n)
            return sl_plugin_header(ctx, name, index, len);
        index -= n;
    }
    for (const struct sl_header_edit *e = ctx->upstream_edits; e; e = e->next)
        if (e->op != SL_EDIT_REMOVE && strcasecmp(e->name, name) == 0 && index-- == 0) {
            *len = e->value_len;
            return e->value;
        }
    return NULL;
}

size_t sl_plugin_upstream_header_count(const struct sl_plugin_ctx *ctx, const char *name)
{
    size_t n = edits_hide_client(ctx, name) ? 0 : sl_plugin_header_count(ctx, name);
    for (const struct sl_header_edit *e = ctx->upstream_edits; e; e = e->next)
        n += e->op != SL_EDIT_REMOVE && strcasecmp(e->name, name) == 0;
    return n;
}

size_t sl_plugin_header_count(const struct sl_plugin_ctx *ctx, const char *name)
{
    size_t name_len = strlen(name), n = 0;
    for (size_t i = 0; i < ctx->n_headers; i++)
        n += name_is(&ctx->headers[i], name, name_len);
    return n;
}

const char *sl_plugin_query_arg(const struct sl_plugin_ctx *ctx, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    const char *p = ctx->query, *end = ctx->query + ctx->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *key_end = eq ? eq : stop;
        if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            const char *v = eq ? eq + 1 : stop;
            *len = (size_t)(stop - v);
            return v;
        }
        p = stop + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* edits                                                                     */

static bool value_is_safe(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return false;
    return true;
}

/* RFC 9110 section 5.1: a field name is a token. */
static bool name_is_token(const char *name)
{
    if (*name == '\0')
        return false;
    for (const char *p = name; *p; p++)
        if (!sl_http_is_tchar((unsigned char)*p))
            return false;
    return true;
}

bool sl_plugin_is_header_name(const char *name)
{
    return name_is_token(name);
}

static bool add_edit(struct sl_plugin_ctx *ctx, bool upstream, enum sl_header_edit_op op,
                     const char *name, const char *value, size_t len)
{
    if (!name_is_token(name) || (value != NULL && !value_is_safe(value, len)))
        return false;
    struct sl_header_edit *e = sl_plugin_alloc(ctx, sizeof *e);
    if (e == NULL)
        return false;
    e->op = op;
    e->name_len = strlen(name);
    e->name = ctx_strdup(ctx, name, e->name_len);
    e->value = value ? ctx_strdup(ctx, value, len) : NULL;
    e->value_len = value ? len : 0;
    e->next = NULL;
    if (e->name == NULL || (value != NULL && e->value == NULL))
        return false;
    struct sl_header_edit **head = upstream ? &ctx->upstream_edits : &ctx->response_edits;
    struct sl_header_edit **tail = upstream ? &ctx->upstream_edits_tail : &ctx->response_edits_tail;
    if (op != SL_EDIT_ADD)
        /* set and remove undo what earlier edits of the name did: they stay
         * in the list only as removals (which add nothing, and hide the
         * client's copies) */
        for (struct sl_header_edit *old = *head; old; old = old->next)
            if (old->name_len == e->name_len && strcasecmp(old->name, e->name) == 0)
                old->op = SL_EDIT_REMOVE;
    if (*tail)
        (*tail)->next = e;
    else
        *head = e;
    *tail = e;
    return true;
}

bool sl_plugin_upstream_header_set(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len)
{
    return add_edit(ctx, true, SL_EDIT_SET, name, value, len);
}
bool sl_plugin_upstream_header_add(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len)
{
    return add_edit(ctx, true, SL_EDIT_ADD, name, value, len);
}
bool sl_plugin_upstream_header_remove(struct sl_plugin_ctx *ctx, const char *name)
{
    return add_edit(ctx, true, SL_EDIT_REMOVE, name, NULL, 0);
}
bool sl_plugin_response_header_set(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len)
{
    return add_edit(ctx, false, SL_EDIT_SET, name, value, len);
}
bool sl_plugin_response_header_add(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len)
{
    return add_edit(ctx, false, SL_EDIT_ADD, name, value, len);
}
bool sl_plugin_response_header_remove(struct sl_plugin_ctx *ctx, const char *name)
{
    return add_edit(ctx, false, SL_EDIT_REMOVE, name, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* the upstream request line, captures, body                                */

static bool in_request_phase(const struct sl_plugin_ctx *ctx)
{
    return ctx->phase == PHASE_REWRITE || ctx->phase == PHASE_ACCESS;
}

bool sl_plugin_upstream_set_method(struct sl_plugin_ctx *ctx, const char *method)
{
    size_t len = strlen(method);
    if (!in_request_phase(ctx) || len == 0 || len > 31)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!sl_http_is_tchar((unsigned char)method[i]))
            return false;
    const char *copy = ctx_strdup(ctx, method, len);
    if (copy == NULL)
        return false;
    ctx->up_method = copy;
    return true;
}

/* Bytes that never go into a request target: controls, space, DEL, and
 * the delimiters the caller names ('?' and '#', or just '#'). */
static bool target_part_is_safe(const char *s, size_t len, const char *delimiters)
{
    if (len > SL_PLUGIN_MAX_TARGET_PART)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || strchr(delimiters, ch) != NULL)
            return false;
    }
    return true;
}

bool sl_plugin_upstream_set_path(struct sl_plugin_ctx *ctx, const char *path, size_t len)
{
    if (!in_request_phase(ctx) || len == 0 || path[0] != '/' ||
        !target_part_is_safe(path, len, "?#"))
        return false;
    const char *copy = ctx_strdup(ctx, path, len);
    if (copy == NULL)
        return false;
    ctx->up_path = copy;
    ctx->up_path_len = len;
    return true;
}

bool sl_plugin_upstream_set_query(struct sl_plugin_ctx *ctx, const char *query, size_t len)
{
    if (!in_request_phase(ctx) || !target_part_is_safe(query, len, "#"))
        return false;
    const char *copy = ctx_strdup(ctx, query, len);
    if (copy == NULL)
        return false;
    ctx->up_query = copy;
    ctx->up_query_len = len;
    return true;
}

const char *sl_plugin_uri_capture(const struct sl_plugin_ctx *ctx, const char *name, size_t *len)
{
    const struct sl_router_match *m = ctx->match;
    if (m == NULL || m->regex == NULL || name == NULL || *name == '\0')
        return NULL;
    long index;
    if (strspn(name, "0123456789") == strlen(name)) {
        char *end;
        unsigned long n = strtoul(name, &end, 10);
        if (n == 0) {
            *len = m->matched_prefix_len; /* the whole match starts the path */
            return ctx->path;
        }
        if (n > m->n_captures)
            return NULL;
        index = (long)n - 1;
    } else {
        index = sl_router_capture_by_name(m, name);
        if (index < 0)
            return NULL;
    }
    const struct sl_router_capture *cap = &m->captures[index];
    if (cap->start == SIZE_MAX || cap->start + cap->len > ctx->path_len)
        return NULL;
    *len = cap->len;
    return ctx->path + cap->start;
}

bool sl_plugin_read_body(struct sl_plugin_ctx *ctx, size_t max_bytes, sl_plugin_body_ready ready,
                         void *arg)
{
    if (ctx->phase != PHASE_ACCESS || ctx->body_requested || ready == NULL)
        return false;
    ctx->body_requested = true;
    ctx->body_max = max_bytes;
    ctx->body_ready = ready;
    ctx->body_arg = arg;
    return true;
}

void sl_plugin_body_collected(struct sl_plugin_ctx *ctx, const char *body, size_t len)
{
    ctx->body_in_ready = true; /* sl_plugin_resume() clears it */
    /* ready() ends with sl_plugin_resume(), after which the request (and
     * ctx) may be gone: nothing here may touch ctx afterwards */
    ctx->body_ready(ctx, body, len, ctx->body_arg);
}

bool sl_plugin_upstream_set_body(struct sl_plugin_ctx *ctx, const char *body, size_t len)
{
    if (!ctx->body_in_ready)
        return false;
    char *copy = sl_plugin_alloc(ctx, len ? len : 1);
    if (copy == NULL)
        return false;
    if (len)
        memcpy(copy, body, len);
    ctx->up_body = copy;
    ctx->up_body_len = len;
    return true;
}

/* ------------------------------------------------------------------------ */
/* responses                                                                 */

const char *sl_plugin_default_message(int status)
{
    /* kong.response.error's defaults (kong/pdk/response.lua) */
    switch (status) {
    case 400:
        return "Bad request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not found";
    case 405:
        return "Method not allowed";
    case 406:
        return "Not acceptable";
    case 407:
        return "Proxy authentication required";
    case 408:
        return "Request timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length required";
    case 412:
        return "Precondition failed";
    case 413:
        return "Payload too large";
    case 414:
        return "URI too long";
    case 415:
        return "Unsupported media type";
    case 416:
        return "Range not satisfiable";
    case 417:
        return "Expectation failed";
    case 418:
        return "I'm a teapot";
    case 421:
        return "Misdirected request";
    case 422:
        return "Unprocessable entity";
    case 423:
        return "Locked";
    case 424:
        return "Failed dependency";
    case 425:
        return "Too early";
    case 426:
        return "Upgrade required";
    case 428:
        return "Precondition required";
    case 429:
        return "Too many requests";
    case 431:
        return "Request header fields too large";
    case 451:
        return "Unavailable for legal reasons";
    case 494:
        return "Request header or cookie too large";
    case 500:
        return "An unexpected error occurred";
    case 501:
        return "Not implemented";
    case 502:
        return "An invalid response was received from the upstream server";
    case 503:
        return "The upstream server is currently unavailable";
    case 504:
        return "The upstream server is timing out";
    case 505:
        return "HTTP version not supported";
    case 506:
        return "Variant also negotiates";
    case 507:
        return "Insufficient storage";
    case 508:
        return "Loop detected";
    case 510:
        return "Not extended";
    case 511:
        return "Network authentication required";
    default:
        return NULL;
    }
}

void sl_plugin_respond(struct sl_plugin_ctx *ctx, int status, const char *content_type,
                       const char *body, size_t len)
{
    ctx->responded = true;
    ctx->respond_status = status;
    ctx->respond_is_error = false;
    ctx->respond_content_type =
        content_type ? ctx_strdup(ctx, content_type, strlen(content_type)) : NULL;
    ctx->respond_body = body ? ctx_strdup(ctx, body, len) : NULL;
    ctx->respond_body_len = ctx->respond_body ? len : 0;
}

void sl_plugin_respond_error(struct sl_plugin_ctx *ctx, int status, const char *message)
{
    ctx->responded = true;
    ctx->respond_status = status;
    ctx->respond_is_error = true;
    if (message == NULL)
        message = sl_plugin_default_message(status);
    if (message == NULL) {
        char generic[64];
        snprintf(generic, sizeof generic, "The upstream server responded with %d", status);
        ctx->respond_message = ctx_strdup(ctx, generic, strlen(generic));
    } else {
        ctx->respond_message = ctx_strdup(ctx, message, strlen(message));
    }
}

int sl_plugin_response_status(const struct sl_plugin_ctx *ctx)
{
    return ctx->resp_status;
}

const char *sl_plugin_response_header(const struct sl_plugin_ctx *ctx, const char *name,
                                      size_t *len)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < ctx->n_resp_headers; i++)
        if (name_is(&ctx->resp_headers[i], name, name_len)) {
            *len = ctx->resp_headers[i].value_len;
            return ctx->resp_headers[i].value;
        }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* parse_config helpers                                                      */

bool sl_plugin_config_error(struct sl_config_error *err, const struct sl_config *cfg,
                            const struct sl_plugin_conf *pc, const struct sl_conf_value *at,
                            const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = at ? at->line : pc->line, column = at ? at->column : pc->column;
    snprintf(err->text, sizeof err->text, "%s:%d:%d: plugin '%s': %s", cfg->source_path, line,
             column, pc->name, msg);
    return false;
}

bool sl_plugin_config_known_keys(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                                 const char *const *known, struct sl_config_error *err)
{
    const struct sl_conf_value *c = pc->config;
    if (c == NULL || c->type == SL_CONF_NULL)
        return true;
    if (c->type != SL_CONF_MAP)
        return sl_plugin_config_error(err, cfg, pc, c, "config: expected a map, got %s",
                                      sl_conf_type_name(c->type));
    for (size_t i = 0; i < c->n_items; i++) {
        bool found = false;
        for (size_t k = 0; known[k] != NULL && !found; k++)
            found = strcmp(known[k], c->keys[i]->text) == 0;
        if (!found)
            return sl_plugin_config_error(err, cfg, pc, c->keys[i], "config.%s: unknown field",
                                          c->keys[i]->text);
    }
    return true;
}

/* config.<key>, or NULL when absent or null */
static const struct sl_conf_value *config_value(const struct sl_plugin_conf *pc, const char *key)
{
    if (pc->config == NULL || pc->config->type != SL_CONF_MAP)
        return NULL;
    const struct sl_conf_value *v = sl_conf_get(pc->config, key);
    return v == NULL || v->type == SL_CONF_NULL ? NULL : v;
}

bool sl_plugin_config_int(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                          const char *key, long long min, long long max, long long *out,
                          struct sl_config_error *err)
{
    const struct sl_conf_value *v = config_value(pc, key);
    if (v == NULL)
        return true;
    if (v->type != SL_CONF_INT)
        return sl_plugin_config_error(err, cfg, pc, v, "config.%s: expected an integer, got %s",
                                      key, sl_conf_type_name(v->type));
    if (v->integer < min || v->integer > max)
        return sl_plugin_config_error(
            err, cfg, pc, v, "config.%s: value should be between %lld and %lld", key, min, max);
    *out = v->integer;
    return true;
}

bool sl_plugin_config_bool(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                           const char *key, bool *out, struct sl_config_error *err)
{
    const struct sl_conf_value *v = config_value(pc, key);
    if (v == NULL)
        return true;
    if (v->type != SL_CONF_BOOL)
        return sl_plugin_config_error(err, cfg, pc, v, "config.%s: expected a boolean, got %s", key,
                                      sl_conf_type_name(v->type));
    *out = v->boolean;
    return true;
}

bool sl_plugin_config_strings(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                              const char *key, const char ***out, size_t *n,
                              struct sl_config_error *err)
{
    const struct sl_conf_value *v = config_value(pc, key);
    if (v == NULL)
        return true;
    if (v->type != SL_CONF_SEQ)
        return sl_plugin_config_error(err, cfg, pc, v, "config.%s: expected a sequence, got %s",
                                      key, sl_conf_type_name(v->type));
    const char **list = calloc(v->n_items ? v->n_items : 1, sizeof *list);
    if (list == NULL)
        return sl_plugin_config_error(err, cfg, pc, v, "out of memory");
    for (size_t i = 0; i < v->n_items; i++) {
        if (v->items[i]->type != SL_CONF_STRING) {
            free(list);
            return sl_plugin_config_error(err, cfg, pc, v->items[i],
                                          "config.%s: expected a string, got %s", key,
                                          sl_conf_type_name(v->items[i]->type));
        }
        list[i] = v->items[i]->text;
    }
    *out = list;
    *n = v->n_items;
    return true;
}

bool sl_plugin_config_string(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                             const char *key, const char **out, size_t *len,
                             struct sl_config_error *err)
{
    const struct sl_conf_value *v = config_value(pc, key);
    if (v == NULL)
        return true;
    if (v->type != SL_CONF_STRING)
        return sl_plugin_config_error(err, cfg, pc, v, "config.%s: expected a string, got %s", key,
                                      sl_conf_type_name(v->type));
    *out = v->text;
    if (len)
        *len = v->text_len;
    return true;
}

/* ------------------------------------------------------------------------ */
/* metrics                                                                   */

struct sl_plugin_metrics {
    struct evbuffer *out;
};

void sl_plugin_metrics_printf(struct sl_plugin_metrics *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(m->out, fmt, ap);
    va_end(ap);
}

void sl_plugins_render_metrics(struct evbuffer *out)
{
    struct sl_plugin_metrics m = {out};
    for (size_t i = 0; i < registry_n; i++)
        if (registry[i]->metrics != NULL)
            registry[i]->metrics(&m);
}

/* ------------------------------------------------------------------------ */
/* services of the engine                                                    */

static enum sl_log_level engine_log_level(enum sl_plugin_log_level level)
{
    switch (level) {
    case SL_PLUGIN_LOG_DEBUG:
        return SL_LOG_DEBUG;
    case SL_PLUGIN_LOG_INFO:
        return SL_LOG_INFO;
    case SL_PLUGIN_LOG_NOTICE:
        return SL_LOG_NOTICE;
    case SL_PLUGIN_LOG_WARN:
        return SL_LOG_WARN;
    case SL_PLUGIN_LOG_ERROR:
        break;
    }
    return SL_LOG_ERROR; /* and a level out of range, as sl_log does */
}

void sl_plugin_log(enum sl_plugin_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_vlog(engine_log_level(level), fmt, ap);
    va_end(ap);
}

long sl_plugin_json_escape(const char *in, size_t in_len, char *out, size_t out_size)
{
    return sl_json_escape(in, in_len, out, out_size);
}

void sl_plugins_shutdown(void)
{
    for (size_t i = 0; i < registry_n; i++)
        if (registry[i]->shutdown != NULL)
            registry[i]->shutdown();
}
