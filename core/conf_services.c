/*
 * Services: where a route sends its requests (url or protocol/host/port/
 * path), the timeouts and retries of the upstream side, upstream TLS, and
 * the resilience blocks (read in conf_resilience.c).
 */
#include <stdlib.h>
#include <string.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Services                                                                 */
/* ------------------------------------------------------------------------ */

static bool service_url(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                        const struct sl_conf_value *val)
{
    struct service_rec *rec = e->obj;
    struct sl_service *s = &rec->s;
    const char *url = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &url))
        return false;
    struct conf_url u;
    if (!conf_url_scheme(url, &u))
        return conf_fail(L, val, "invalid url '%s': %s", conf_excerpt(q, url), u.why);
    uint16_t default_port;
    if (strcmp(u.scheme, "http") == 0)
        default_port = 80;
    else if (strcmp(u.scheme, "https") == 0)
        default_port = 443;
    else if (conf_kong_protocol(u.scheme))
        return conf_fail(L, val, "protocol '%s' is not supported yet", u.scheme);
    else
        return conf_fail(L, val, "invalid url '%s': the scheme must be http or https",
                         conf_excerpt(q, url));
    if (!conf_url_rest(&u))
        return conf_fail(L, val, "invalid url '%s': %s", conf_excerpt(q, url), u.why);
    if ((s->protocol = conf_strdup(L, u.scheme)) == NULL ||
        (s->host = conf_strndup(L, u.host, u.host_len)) == NULL)
        return false;
    s->port = u.port >= 0 ? (uint16_t)u.port : default_port;
    rec->port_set = true;
    s->path = NULL;
    if (*u.path != '\0' && (s->path = conf_strdup(L, u.path)) == NULL)
        return false;
    return true;
}

static bool service_protocol(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *p = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &p))
        return false;
    if (strcmp(p, "http") != 0 && strcmp(p, "https") != 0) {
        if (conf_kong_protocol(p))
            return conf_fail(L, val, "protocol '%s' is not supported yet", p);
        return conf_fail(L, val, "invalid protocol '%s': expected http or https",
                         conf_excerpt(q, p));
    }
    s->protocol = conf_strdup(L, p);
    return s->protocol != NULL;
}

static bool service_host(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *h = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &h))
        return false;
    size_t start, len;
    const char *why = conf_host_problem(h, strlen(h), &start, &len);
    if (why != NULL)
        return conf_fail(L, val, "invalid host '%s': %s", conf_excerpt(q, h), why);
    s->host = conf_strndup(L, h + start, len);
    return s->host != NULL;
}

static bool service_port(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct service_rec *rec = e->obj;
    long long port;
    if (!conf_read_int(L, val, 0, 65535, &port))
        return false;
    rec->s.port = (uint16_t)port;
    rec->port_set = true;
    return true;
}

static bool service_path(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct sl_service *s = &((struct service_rec *)e->obj)->s;
    const char *p = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &p))
        return false;
    const char *why = conf_path_problem(p);
    if (why != NULL)
        return conf_fail(L, val, "invalid path '%s': %s", conf_excerpt(q, p), why);
    s->path = conf_strdup(L, p);
    return s->path != NULL;
}

static bool service_routes(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                           const struct sl_conf_value *val)
{
    return conf_read_routes(L, val, e->index);
}

static bool service_plugins(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    return conf_read_plugins(L, val, e->index, NONE, NONE);
}

static bool service_tls_verify(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                               const struct sl_conf_value *val)
{
    return conf_read_bool(L, val, &((struct service_rec *)e->obj)->s.tls_verify);
}

static bool service_tls_verify_depth(struct loader *L, struct entity *e,
                                     const struct sl_conf_value *key,
                                     const struct sl_conf_value *val)
{
    long long n;
    if (!conf_read_int(L, val, 0, 64, &n))
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
    if (!conf_read_string_list(L, val, &s->ca_certificates, &s->n_ca_certificates))
        return false;
    for (size_t i = 0; i < s->n_ca_certificates; i++) {
        struct pending_ref ref = {.target = REF_CA,
                                  .mode = REF_ID,
                                  .key = s->ca_certificates[i],
                                  .node = val->items[i],
                                  .owner_kind = OWNER_SERVICE,
                                  .owner_index = e->index};
        struct pending_ref *slot = conf_vec_push(&L->refs);
        if (slot == NULL)
            return conf_fail_oom(L);
        *slot = ref;
    }
    return true;
}

static bool service_retry_policy(struct loader *L, struct entity *e,
                                 const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    return conf_read_retry_policy(L, val, &((struct service_rec *)e->obj)->s.retry_policy);
}

static bool service_circuit_breakers(struct loader *L, struct entity *e,
                                     const struct sl_conf_value *key,
                                     const struct sl_conf_value *val)
{
    return conf_read_circuit_breakers(L, val, &((struct service_rec *)e->obj)->s.circuit_breakers);
}

static bool service_outlier_detection(struct loader *L, struct entity *e,
                                      const struct sl_conf_value *key,
                                      const struct sl_conf_value *val)
{
    return conf_read_outlier_detection(L, val,
                                       &((struct service_rec *)e->obj)->s.outlier_detection);
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
    /* sluice's own (Envoy's names): a null block is an absent one */
    {"retry_policy", FK_CUSTOM, 0, 0, 0, service_retry_policy},
    {"circuit_breakers", FK_CUSTOM, 0, 0, 0, service_circuit_breakers},
    {"outlier_detection", FK_CUSTOM, 0, 0, 0, service_outlier_detection},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};
_Static_assert(sizeof service_fields / sizeof service_fields[0] <= MAX_FIELDS, "raise MAX_FIELDS");

bool conf_read_services(struct loader *L, const struct sl_conf_value *seq)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct service_rec *rec = conf_vec_push(&L->services);
        if (rec == NULL)
            return conf_fail_oom(L);
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
        if ((rec = conf_read_entity_into(L, &e, seq->items[i], &L->services, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        s = &rec->s;

        const struct sl_conf_value *url = conf_seen(&e, "url");
        static const char *const parts[] = {"protocol", "host", "port", "path"};
        for (size_t p = 0; url != NULL && p < 4; p++) {
            const struct sl_conf_value *other = conf_seen(&e, parts[p]);
            if (other == NULL)
                continue;
            bool url_last = url->line > other->line ||
                            (url->line == other->line && url->column > other->column);
            return conf_fail(L, url_last ? url : other,
                             "conflicting values: 'url' and '%s' cannot both be set", parts[p]);
        }
        if (s->host == NULL)
            return conf_fail(L, e.node, "service needs 'host' or 'url'");
        if (s->protocol == NULL && (s->protocol = conf_strdup(L, "http")) == NULL)
            return false;
        if (!rec->port_set)
            s->port = strcmp(s->protocol, "https") == 0 ? 443 : 80;
        if (!conf_unique(L, NS_SERVICE_NAME, "service name", s->name, conf_value_of(&e, "name"),
                         index) ||
            !conf_unique(L, NS_SERVICE_ID, "service id", s->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}
