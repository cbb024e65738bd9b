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
 *
 * The loader is split by concern over core/conf_*.c (conf_internal.h lists
 * them); this file walks the top level, resolves the references, lays out
 * the snapshot, and holds load, ref and unref.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"
#include "sha256.h"
#include "sha256.h"

/* ------------------------------------------------------------------------ */
/* Top level, references, layout                                            */
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
        return conf_fail(L, root, "expected a map at the top level, got %s",
                         sl_conf_type_name(root->type));

    /* The version first: it changes how paths are read. */
    const struct sl_conf_value *version = sl_conf_get(root, "_format_version");
    if (version == NULL)
        return conf_fail(L, root, "missing '_format_version' (expected \"3.0\")");
    if (version->type != SL_CONF_STRING)
        return conf_fail(L, version, "_format_version: expected a string, got %s (write \"3.0\")",
                         sl_conf_type_name(version->type));
    if (strcmp(version->text, "3.0") != 0 && strcmp(version->text, "2.1") != 0 &&
        strcmp(version->text, "1.1") != 0) {
        char q[100];
        return conf_fail(L, version,
                         "unsupported _format_version '%s' (expected \"3.0\", \"2.1\" or \"1.1\")",
                         conf_excerpt(q, version->text));
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
            if (!conf_expect_type(L, val, SL_CONF_STRING))
                return false;
            continue;
        }
        if (strcmp(k, "_transform") == 0) {
            if (!conf_read_bool(L, val, &b))
                return false;
            continue;
        }
        if (strcmp(k, "_ignore") == 0) {
            if (!conf_expect_type(L, val, SL_CONF_SEQ))
                return false;
            continue;
        }
        if (strcmp(k, L->role) == 0) {
            L->node_block = key;
            if (val->type != SL_CONF_NULL && !conf_read_node_block(L, val))
                return false;
            continue;
        }
        if (strcmp(k, other_role) == 0)
            return conf_fail(L, key, "the '%s' block is for sluice-%s", k, k);
        if (val->type == SL_CONF_NULL)
            continue;
        if (strcmp(k, "services") == 0) {
            if (!conf_read_services(L, val))
                return false;
            continue;
        }
        if (strcmp(k, "routes") == 0) {
            if (!conf_read_routes(L, val, NONE))
                return false;
            continue;
        }
        if (strcmp(k, "consumers") == 0) {
            if (!conf_read_consumers(L, val))
                return false;
            continue;
        }
        if (strcmp(k, "plugins") == 0) {
            if (!conf_read_plugins(L, val, NONE, NONE, NONE))
                return false;
            continue;
        }
        bool ok = true, known = true;
        if (strcmp(k, "upstreams") == 0)
            ok = conf_read_upstreams(L, val);
        else if (strcmp(k, "targets") == 0)
            ok = conf_read_targets(L, val, NONE);
        else if (strcmp(k, "certificates") == 0)
            ok = conf_read_certificates(L, val);
        else if (strcmp(k, "snis") == 0)
            ok = conf_read_snis(L, val, NONE);
        else if (strcmp(k, "ca_certificates") == 0)
            ok = conf_read_ca_certificates(L, val);
        else if (strcmp(k, "jwt_secrets") == 0)
            ok = conf_read_jwt_secrets(L, val, NONE);
        else
            known = false;
        if (!ok)
            return false;
        if (known)
            continue;
        for (size_t u = 0; u < sizeof unsupported_top / sizeof unsupported_top[0]; u++)
            if (strcmp(k, unsupported_top[u]) == 0)
                return conf_fail(L, key, "'%s' is not supported yet", k);
        char q[100];
        return conf_fail(L, key, "unknown field '%s'", conf_excerpt(q, k));
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
        const struct pending_ref *ref = conf_vec_at(&L->refs, i);
        const struct strmap_entry *hit = NULL;
        if (ref->mode != REF_ID)
            hit = conf_strmap_get(&L->names, targets[ref->target].by_name, ref->key);
        if (hit == NULL && ref->mode != REF_NAME)
            hit = conf_strmap_get(&L->names, targets[ref->target].by_id, ref->key);
        if (hit == NULL) {
            char q[100];
            return conf_fail(L, ref->node, "%s refers to unknown %s '%s'", owners[ref->owner_kind],
                             targets[ref->target].what, conf_excerpt(q, ref->key));
        }
        switch (ref->owner_kind) {
        case OWNER_ROUTE:
            ((struct route_rec *)conf_vec_at(&L->routes, ref->owner_index))->service = hit->index;
            break;
        case OWNER_PLUGIN: {
            struct plugin_rec *p = conf_vec_at(&L->plugins, ref->owner_index);
            if (ref->target == REF_SERVICE)
                p->service = hit->index;
            else if (ref->target == REF_ROUTE)
                p->route = hit->index;
            else
                p->consumer = hit->index;
            break;
        }
        case OWNER_TARGET:
            ((struct target_rec *)conf_vec_at(&L->targets, ref->owner_index))->upstream =
                hit->index;
            break;
        case OWNER_SNI:
            ((struct sni_rec *)conf_vec_at(&L->snis, ref->owner_index))->certificate = hit->index;
            break;
        case OWNER_JWT:
            ((struct jwt_rec *)conf_vec_at(&L->jwt_secrets, ref->owner_index))->consumer =
                hit->index;
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
        const struct plugin_rec *p = conf_vec_at(&L->plugins, i);
        if (p->consumer != NONE && no_consumer_plugin(p->p.name)) {
            /* at the `consumer:` reference, or at the plugin nested under one */
            struct sl_conf_value nested = {.line = p->p.line, .column = p->p.column};
            return conf_fail(L, p->consumer_at != NULL ? p->consumer_at : &nested,
                             "plugin '%s' cannot be configured on a consumer (Kong: 'consumer: "
                             "value must be null')",
                             p->p.name);
        }
        char key[160];
        snprintf(key, sizeof key, "%s|%zu|%zu|%zu", p->p.name, p->service, p->route, p->consumer);
        char *k = conf_strdup(L, key);
        if (k == NULL)
            return false;
        bool oom = false;
        struct sl_conf_value at = {.line = p->p.line, .column = p->p.column};
        const struct strmap_entry *dup =
            conf_strmap_put(&L->names, NS_PLUGIN_SCOPE, k, NULL, i, &oom);
        if (oom)
            return conf_fail_oom(L);
        if (dup != NULL) {
            const struct plugin_rec *first = conf_vec_at(&L->plugins, dup->index);
            return conf_fail(L, &at,
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
    if ((cfg->upstreams = conf_alloc(L, (cfg->n_upstreams + 1) * sizeof *cfg->upstreams)) == NULL)
        return false;
    /* count, allocate, then fill in one pass over the targets (file order
     * kept within each upstream): linear in upstreams + targets */
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        cfg->upstreams[i] = *(struct sl_upstream *)conf_vec_at(&L->upstreams, i);
        cfg->upstreams[i].n_targets = 0;
    }
    for (size_t t = 0; t < L->targets.n; t++)
        cfg->upstreams[((struct target_rec *)conf_vec_at(&L->targets, t))->upstream].n_targets++;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        struct sl_upstream *u = &cfg->upstreams[i];
        if ((u->targets = conf_alloc(L, (u->n_targets + 1) * sizeof *u->targets)) == NULL)
            return false;
        u->n_targets = 0;
    }
    for (size_t t = 0; t < L->targets.n; t++) {
        const struct target_rec *rec = conf_vec_at(&L->targets, t);
        size_t i = rec->upstream;
        struct sl_upstream *u = &cfg->upstreams[i];
        /* Kong: one target per host:port in an upstream */
        char key[320];
        snprintf(key, sizeof key, "%zu|%s|%u", i, rec->t.host, rec->t.port);
        char *k = conf_strdup(L, key);
        if (k == NULL)
            return false;
        bool oom = false;
        const struct strmap_entry *dup =
            conf_strmap_put(&L->names, NS_TARGET, k, rec->target_node, t, &oom);
        if (oom)
            return conf_fail_oom(L);
        if (dup != NULL)
            return conf_fail(L, rec->target_node,
                             "target '%s:%u' is already in upstream '%s' (line %d)", rec->t.host,
                             rec->t.port, u->name, dup->node->line);
        struct sl_target *out = &u->targets[u->n_targets];
        *out = rec->t;
        out->upstream = u;
        out->index = u->n_targets++;
    }
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct strmap_entry *hit =
            conf_strmap_get(&L->names, NS_UPSTREAM_NAME, cfg->services[i].host);
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
    if ((cfg->certificates =
             conf_alloc(L, (cfg->n_certificates + 1) * sizeof *cfg->certificates)) == NULL ||
        (cfg->snis = conf_alloc(L, (cfg->n_snis + 1) * sizeof *cfg->snis)) == NULL ||
        (cfg->ca_certificates =
             conf_alloc(L, (cfg->n_ca_certificates + 1) * sizeof *cfg->ca_certificates)) == NULL ||
        (cfg->jwt_secrets = conf_alloc(L, (cfg->n_jwt_secrets + 1) * sizeof *cfg->jwt_secrets)) ==
            NULL)
        return false;
    for (size_t i = 0; i < cfg->n_certificates; i++)
        cfg->certificates[i] = *(struct sl_certificate *)conf_vec_at(&L->certificates, i);
    for (size_t i = 0; i < cfg->n_ca_certificates; i++)
        cfg->ca_certificates[i] = *(struct sl_ca_certificate *)conf_vec_at(&L->ca_certificates, i);
    for (size_t i = 0; i < cfg->n_snis; i++) {
        const struct sni_rec *rec = conf_vec_at(&L->snis, i);
        cfg->snis[i] = rec->s;
        cfg->snis[i].certificate = &cfg->certificates[rec->certificate];
    }
    for (size_t i = 0; i < cfg->n_jwt_secrets; i++) {
        const struct jwt_rec *rec = conf_vec_at(&L->jwt_secrets, i);
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
    if ((cfg->services = conf_alloc(L, cfg->n_services * sizeof *cfg->services)) == NULL ||
        (cfg->routes = conf_alloc(L, cfg->n_routes * sizeof *cfg->routes)) == NULL ||
        (cfg->consumers = conf_alloc(L, cfg->n_consumers * sizeof *cfg->consumers)) == NULL ||
        (cfg->plugins = conf_alloc(L, cfg->n_plugins * sizeof *cfg->plugins)) == NULL)
        return false;
    for (size_t i = 0; i < cfg->n_services; i++)
        cfg->services[i] = ((struct service_rec *)conf_vec_at(&L->services, i))->s;
    for (size_t i = 0; i < cfg->n_consumers; i++) {
        cfg->consumers[i] = *(struct sl_consumer *)conf_vec_at(&L->consumers, i);
        if (cfg->consumers[i].id == NULL &&
            (cfg->consumers[i].id = conf_consumer_generated_id(L, &cfg->consumers[i])) == NULL)
            return false;
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct route_rec *r = conf_vec_at(&L->routes, i);
        cfg->routes[i] = r->r;
        cfg->routes[i].service = r->service == NONE ? NULL : &cfg->services[r->service];
    }
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const struct plugin_rec *p = conf_vec_at(&L->plugins, i);
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
    unsigned char md[32];
    static const char hex[] = "0123456789abcdef";
    sl_sha256(data, len, md); /* not OpenSSL's: see sha256.h */
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
    conf_arena_free(cfg->arena);
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
    if (cfg == NULL || (cfg->arena = conf_arena_new()) == NULL) {
        free(cfg);
        snprintf(err->text, sizeof err->text, "%s: out of memory", source_name);
        return NULL;
    }
    atomic_init(&cfg->refcount, 1);
    L.cfg = cfg;
    L.arena = cfg->arena;
    cfg->role = strcmp(role, "sidecar") == 0 ? "sidecar" : "gateway";
    conf_node_defaults(&cfg->node, cfg->role);

    bool ok = false;
    if (strcmp(role, "gateway") != 0 && strcmp(role, "sidecar") != 0) {
        conf_fail(&L, NULL, "invalid role '%s' (expected gateway or sidecar)", role);
        goto out;
    }
    if (data == NULL && len > 0) {
        conf_fail(&L, NULL, "no data");
        goto out;
    }
    if (len > SL_CONFIG_MAX_FILE_BYTES) {
        conf_fail(&L, NULL, "file is too large (%zu bytes; the limit is %u MiB)", len,
                  SL_CONFIG_MAX_FILE_BYTES >> 20);
        goto out;
    }
    if ((cfg->source_path = conf_strdup(&L, source_name)) == NULL)
        goto out;
    hash_bytes(data ? data : "", len, cfg->hash);
    if (data == NULL)
        L.data = "";

    struct sl_conf_value *root = conf_parse_yaml(&L);
    if (L.failed)
        goto out;
    if (root == NULL || root->type == SL_CONF_NULL) {
        conf_fail_at(&L, 1, 1, "empty file: expected a map with '_format_version'");
        goto out;
    }
    ok = read_top(&L, root) && conf_apply_env(&L) && conf_check_node(&L) && resolve_refs(&L) &&
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
