/*
 * Entities are read through tables of field descriptors (`plugin_fields`,
 * `route_fields`, ...): a row names a field, its kind, where it is stored
 * and its range, so adding a field is adding a row. This file holds the
 * generic reader, references by name or id (resolved once every entity is
 * known), protocol sets, and the two small entities: plugins (their
 * envelope; `config` is the plugin's own) and consumers.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Entities: descriptor tables and a generic reader                         */
/* ------------------------------------------------------------------------ */

const struct sl_conf_value *conf_seen(const struct entity *e, const char *name)
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
    const char *s = NULL; /* set by conf_read_string() */
    long long n;
    bool b;
    switch (f->kind) {
    case FK_CUSTOM:
        return f->parse(L, e, key, val);
    case FK_STRING:
    case FK_NAME:
    case FK_UUID: {
        if (!conf_read_string(L, val, &s))
            return false;
        char q[100];
        if (f->kind == FK_NAME && !conf_valid_name(s))
            return conf_fail(L, val,
                             "invalid %s '%s': only letters, digits, '.', '-', '_' and '~' "
                             "are allowed",
                             f->name, conf_excerpt(q, s));
        if (f->kind == FK_UUID && !conf_valid_uuid(s))
            return conf_fail(L, val, "invalid %s '%s': expected a UUID", f->name,
                             conf_excerpt(q, s));
        char *copy = conf_strdup(L, s);
        if (copy == NULL)
            return false;
        memcpy(base + f->offset, &copy, sizeof copy);
        return true;
    }
    case FK_U16:
    case FK_U32:
    case FK_U64:
    case FK_INT:
        if (!conf_read_int(L, val, f->min, f->max, &n))
            return false;
        if (f->kind == FK_U16) {
            uint16_t u = (uint16_t)n;
            memcpy(base + f->offset, &u, sizeof u);
        } else if (f->kind == FK_U32) {
            uint32_t u = (uint32_t)n;
            memcpy(base + f->offset, &u, sizeof u);
        } else if (f->kind == FK_U64) {
            uint64_t u = (uint64_t)n;
            memcpy(base + f->offset, &u, sizeof u);
        }
        return true;
    case FK_NUMBER: {
        double d;
        if (!conf_read_number(L, val, (double)f->min, (double)f->max, &d))
            return false;
        memcpy(base + f->offset, &d, sizeof d);
        return true;
    }
    case FK_BOOL:
        if (!conf_read_bool(L, val, &b))
            return false;
        if (f->offset != NONE)
            memcpy(base + f->offset, &b, sizeof b);
        return true;
    case FK_TAGS:
        if (!conf_expect_type(L, val, SL_CONF_SEQ))
            return false;
        for (size_t i = 0; i < val->n_items; i++) {
            const struct sl_conf_value *t = val->items[i];
            char q[100];
            if (!conf_read_string(L, t, &s))
                return false;
            if (!conf_valid_tag(s))
                return conf_fail(L, t,
                                 "invalid tag '%s': ',', '/' and control characters are not "
                                 "allowed",
                                 conf_excerpt(q, s));
        }
        return true;
    case FK_COMMENT:
        return conf_expect_type(L, val, SL_CONF_STRING);
    case FK_IGNORE:
        return conf_expect_type(L, val, SL_CONF_SEQ);
    case FK_UNSUPPORTED:
        if (is_empty_value(val))
            return true;
        return conf_fail(L, key, "%s field '%s' is not supported yet", e->kind, f->name);
    }
    return true;
}

/* Read the map of one entity through its descriptor table. */
bool conf_read_entity(struct loader *L, struct entity *e, const struct sl_conf_value *map)
{
    e->node = map;
    if (!conf_expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *key = map->keys[i], *val = map->items[i];
        size_t fi = 0;
        while (fi < e->n_fields && strcmp(e->fields[fi].name, key->text) != 0)
            fi++;
        if (fi == e->n_fields) {
            char q[100];
            return conf_fail(L, key, "unknown field '%s'", conf_excerpt(q, key->text));
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
void *conf_read_entity_into(struct loader *L, struct entity *e, const struct sl_conf_value *map,
                            struct vec *v, const void *tmp, size_t size)
{
    bool ok = conf_read_entity(L, e, map);
    void *slot = conf_vec_at(v, e->index);
    memcpy(slot, tmp, size);
    return ok ? slot : NULL;
}

/* Register a unique value (name, id, ...) of an entity; error on a duplicate. */
bool conf_unique(struct loader *L, uintptr_t ns, const char *what, const char *value,
                 const struct sl_conf_value *at, size_t index)
{
    if (value == NULL)
        return true;
    bool oom = false;
    const struct strmap_entry *dup = conf_strmap_put(&L->names, ns, value, at, index, &oom);
    if (oom)
        return conf_fail_oom(L);
    if (dup != NULL) {
        char q[100];
        return conf_fail(L, at, "duplicate %s '%s' (first at line %d)", what,
                         conf_excerpt(q, value), dup->node->line);
    }
    return true;
}

/* The value node of a field that was set (for error positions). */
const struct sl_conf_value *conf_value_of(const struct entity *e, const char *name)
{
    const struct sl_conf_value *k = conf_seen(e, name);
    if (k == NULL)
        return e->node;
    for (size_t i = 0; i < e->node->n_items; i++)
        if (e->node->keys[i] == k)
            return e->node->items[i];
    return k;
}

/* A reference: "name-or-id", {name: x} or {id: x}. */
bool conf_read_ref(struct loader *L, struct entity *e, enum ref_target target,
                   const struct sl_conf_value *val, int owner_kind)
{
    struct pending_ref ref = {.target = target,
                              .mode = REF_NAME_OR_ID,
                              .node = val,
                              .owner_kind = owner_kind,
                              .owner_index = e->index};
    if (val->type == SL_CONF_STRING) {
        if (!conf_read_string(L, val, &ref.key))
            return false;
    } else if (val->type == SL_CONF_MAP) {
        for (size_t i = 0; i < val->n_items; i++) {
            const struct sl_conf_value *k = val->keys[i];
            char q[100];
            if (strcmp(k->text, "name") == 0 || strcmp(k->text, "id") == 0) {
                if (ref.key != NULL)
                    return conf_fail(L, k, "conflicting values: give either 'name' or 'id'");
                if (!conf_read_string(L, val->items[i], &ref.key))
                    return false;
                ref.mode = k->text[0] == 'n' ? REF_NAME : REF_ID;
                ref.node = val->items[i];
            } else {
                return conf_fail(L, k, "unknown field '%s'", conf_excerpt(q, k->text));
            }
        }
        if (ref.key == NULL)
            return conf_fail(L, val, "a reference needs 'name' or 'id'");
    } else {
        return conf_fail(L, val, "expected a string or a map, got %s",
                         sl_conf_type_name(val->type));
    }
    struct pending_ref *slot = conf_vec_push(&L->refs);
    if (slot == NULL)
        return conf_fail_oom(L);
    *slot = ref;
    return true;
}

/* Protocol names Kong knows but sluice does not serve (yet). */
bool conf_kong_protocol(const char *p)
{
    static const char *const names[] = {"grpc", "grpcs", "tcp", "tls",
                                        "udp",  "ws",    "wss", "tls_passthrough"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(p, names[i]) == 0)
            return true;
    return false;
}

/* A `protocols` set; grpc/grpcs only when `allow_grpc` (plugins). */
bool conf_read_protocols(struct loader *L, const struct sl_conf_value *val, bool allow_grpc,
                         unsigned *out)
{
    if (!conf_expect_type(L, val, SL_CONF_SEQ))
        return false;
    if (val->n_items == 0)
        return conf_fail(L, val, "protocols must not be empty");
    unsigned bits = 0;
    for (size_t i = 0; i < val->n_items; i++) {
        const struct sl_conf_value *p = val->items[i];
        const char *s = NULL; /* set by conf_read_string() */
        char q[100];
        if (!conf_read_string(L, p, &s))
            return false;
        if (strcmp(s, "http") == 0)
            bits |= SL_PROTO_HTTP;
        else if (strcmp(s, "https") == 0)
            bits |= SL_PROTO_HTTPS;
        else if (allow_grpc && strcmp(s, "grpc") == 0)
            bits |= SL_PROTO_GRPC;
        else if (allow_grpc && strcmp(s, "grpcs") == 0)
            bits |= SL_PROTO_GRPCS;
        else if (conf_kong_protocol(s))
            return conf_fail(L, p, "protocol '%s' is not supported yet", s);
        else
            return conf_fail(L, p, "invalid protocol '%s': expected http or https",
                             conf_excerpt(q, s));
    }
    *out = bits;
    return true;
}

/* ----- plugins ----- */

static bool plugin_ref(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                       const struct sl_conf_value *val, enum ref_target target, size_t parent)
{
    if (parent != NONE)
        return conf_fail(L, key, "conflicting values: this plugin is nested under a %s already",
                         key->text);
    return conf_read_ref(L, e, target, val, OWNER_PLUGIN);
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
    const char *s = NULL; /* set by conf_read_string() */
    if (!conf_read_string(L, val, &s))
        return false;
    for (const char *c = s; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_')) {
            char q[100];
            return conf_fail(L, val, "invalid plugin name '%s'", conf_excerpt(q, s));
        }
    }
    struct sl_plugin_conf *p = e->obj;
    p->name = conf_strdup(L, s);
    return p->name != NULL;
}

static bool plugin_config(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    if (!conf_expect_type(L, val, SL_CONF_MAP))
        return false;
    ((struct sl_plugin_conf *)e->obj)->config = val;
    return true;
}

static bool plugin_protocols(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return conf_read_protocols(L, val, true, &((struct sl_plugin_conf *)e->obj)->protocols);
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

bool conf_read_plugins(struct loader *L, const struct sl_conf_value *seq, size_t service,
                       size_t route, size_t consumer)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct plugin_rec *rec = conf_vec_push(&L->plugins);
        if (rec == NULL)
            return conf_fail_oom(L);
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
        if (!conf_read_entity(L, &e, seq->items[i]))
            return false;
        if (rec->p.name == NULL)
            return conf_fail(L, e.node, "plugin needs a 'name'");
        if (conf_seen(&e, "consumer") != NULL)
            rec->consumer_at = conf_value_of(&e, "consumer");
        if (!conf_unique(L, NS_PLUGIN_ID, "plugin id", rec->p.id, conf_value_of(&e, "id"), index) ||
            !conf_unique(L, NS_PLUGIN_INSTANCE_NAME, "plugin instance_name", rec->p.instance_name,
                         conf_value_of(&e, "instance_name"), index))
            return false;
    }
    return true;
}

/* ----- consumers ----- */

static bool consumer_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return conf_read_plugins(L, val, NONE, NONE, e->index);
}

static bool consumer_jwt_secrets(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    return conf_read_jwt_secrets(L, val, e->index);
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
char *conf_consumer_generated_id(struct loader *L, const struct sl_consumer *c)
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
    return conf_strdup(L, text);
}

bool conf_read_consumers(struct loader *L, const struct sl_conf_value *seq)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_consumer *c = conf_vec_push(&L->consumers);
        if (c == NULL)
            return conf_fail_oom(L);
        size_t index = L->consumers.n - 1;
        struct sl_consumer tmp = {
            .index = index, .line = seq->items[i]->line, .column = seq->items[i]->column};
        struct entity e = ENTITY("consumer", &tmp, index, consumer_fields, NONE, NONE, NONE);
        if ((c = conf_read_entity_into(L, &e, seq->items[i], &L->consumers, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        if (c->username == NULL && c->custom_id == NULL)
            return conf_fail(L, e.node, "consumer needs 'username' or 'custom_id'");
        if (!conf_unique(L, NS_CONSUMER_USERNAME, "consumer username", c->username,
                         conf_value_of(&e, "username"), index) ||
            !conf_unique(L, NS_CONSUMER_CUSTOM_ID, "consumer custom_id", c->custom_id,
                         conf_value_of(&e, "custom_id"), index) ||
            !conf_unique(L, NS_CONSUMER_ID, "consumer id", c->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}
