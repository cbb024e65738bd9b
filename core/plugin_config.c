/*
 * The plugin API's read-only view of a configuration snapshot
 * (sluice/plugin.h, "the configuration"): accessors over config.h's
 * entities, so that plugins never depend on their layout.
 *
 * Ownership: nothing is allocated here; every pointer returned points into
 * the snapshot and lives as long as it.
 */
#include "sluice/plugin.h"

#include <string.h>

#include "config.h"

const char *sl_plugin_config_source(const struct sl_config *cfg)
{
    return cfg->source_path;
}

const char *sl_plugin_route_id(const struct sl_route *route)
{
    return route ? route->id : NULL;
}

const char *sl_plugin_route_name(const struct sl_route *route)
{
    return route ? route->name : NULL;
}

const char *sl_plugin_service_id(const struct sl_service *service)
{
    return service ? service->id : NULL;
}

const char *sl_plugin_service_name(const struct sl_service *service)
{
    return service ? service->name : NULL;
}

const char *sl_plugin_consumer_id(const struct sl_consumer *consumer)
{
    return consumer ? consumer->id : NULL;
}

const char *sl_plugin_consumer_username(const struct sl_consumer *consumer)
{
    return consumer ? consumer->username : NULL;
}

const char *sl_plugin_consumer_custom_id(const struct sl_consumer *consumer)
{
    return consumer ? consumer->custom_id : NULL;
}

static bool text_is(const char *text, const char *ref, size_t len)
{
    return text != NULL && strlen(text) == len && memcmp(text, ref, len) == 0;
}

const struct sl_consumer *sl_plugin_find_consumer(const struct sl_config *cfg, const char *ref,
                                                  size_t len)
{
    for (size_t i = 0; i < cfg->n_consumers; i++) {
        const struct sl_consumer *c = &cfg->consumers[i];
        if (text_is(c->id, ref, len) || text_is(c->username, ref, len))
            return c;
    }
    return NULL;
}

size_t sl_plugin_jwt_secret_count(const struct sl_config *cfg)
{
    return cfg->n_jwt_secrets;
}

bool sl_plugin_jwt_secret_at(const struct sl_config *cfg, size_t index,
                             struct sl_plugin_jwt_secret *out)
{
    if (index >= cfg->n_jwt_secrets)
        return false;
    const struct sl_jwt_secret *s = &cfg->jwt_secrets[index];
    *out = (struct sl_plugin_jwt_secret){
        .key = s->key,
        .secret = s->secret,
        .rsa_public_key = s->rsa_public_key,
        .algorithm = s->algorithm,
        .consumer = s->consumer,
        .line = s->line,
        .column = s->column,
    };
    return true;
}
