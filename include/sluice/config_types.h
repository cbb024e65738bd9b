/*
 * The configuration types the loader (core/config.h) and the plugin API
 * (sluice/plugin.h) share: the YAML tree a plugin's `config` is kept as, a
 * plugin instance as declared, and the error of a load. Public: a plugin
 * may read every field defined here; the entities these point to
 * (struct sl_service, sl_route, sl_consumer, sl_config) stay opaque, read
 * through plugin.h's accessors.
 *
 * Ownership: everything here belongs to the configuration snapshot that
 * holds it (struct sl_config) and dies with it; a plugin never frees any
 * of it. struct sl_config_error belongs to the caller that passes it.
 */
#ifndef SLUICE_CONFIG_TYPES_H
#define SLUICE_CONFIG_TYPES_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A YAML value as written in the file, with its position. Kept for the parts
 * the loader does not interpret itself (a plugin's `config`), so that the
 * code that does can still report "file:line:column: message".
 */
enum sl_conf_type {
    SL_CONF_NULL,
    SL_CONF_BOOL,
    SL_CONF_INT,
    SL_CONF_FLOAT,
    SL_CONF_STRING,
    SL_CONF_SEQ,
    SL_CONF_MAP,
};

struct sl_conf_value {
    enum sl_conf_type type;
    int line, column; /* 1-based */
    bool plain;       /* scalar written without quotes and without a tag */
    char *text;       /* scalars: the text as written (NUL terminated); NULL otherwise */
    size_t text_len;
    bool boolean;                 /* SL_CONF_BOOL */
    long long integer;            /* SL_CONF_INT */
    double number;                /* SL_CONF_INT and SL_CONF_FLOAT */
    struct sl_conf_value **keys;  /* SL_CONF_MAP: keys[i] (scalars) map to items[i] */
    struct sl_conf_value **items; /* SL_CONF_SEQ elements, SL_CONF_MAP values */
    size_t n_items;
};

/* Value of `key` in a SL_CONF_MAP (NULL when absent or not a map). */
const struct sl_conf_value *sl_conf_get(const struct sl_conf_value *map, const char *key);
/* "a string", "an integer", "a sequence", ... for messages. */
const char *sl_conf_type_name(enum sl_conf_type type);

/* Protocol bits (route and plugin `protocols`). */
#define SL_PROTO_HTTP 0x1u
#define SL_PROTO_HTTPS 0x2u
#define SL_PROTO_GRPC 0x4u  /* accepted in plugin protocols only */
#define SL_PROTO_GRPCS 0x8u /* accepted in plugin protocols only */

struct sl_service;
struct sl_route;
struct sl_consumer;

/*
 * A plugin instance as declared (global, or scoped by nesting or by a
 * service/route/consumer reference). The loader checks only the envelope;
 * `config` is checked by the plugin itself (see sl_config_check_plugins).
 */
struct sl_plugin_conf {
    char *name;
    char *id;            /* may be NULL */
    char *instance_name; /* may be NULL */
    bool enabled;        /* default true */
    unsigned protocols;  /* SL_PROTO_* bits; default http|https|grpc|grpcs */
    int line, column;
    const struct sl_service *service;   /* NULL: not scoped to a service */
    const struct sl_route *route;       /* NULL: not scoped to a route */
    const struct sl_consumer *consumer; /* NULL: not scoped to a consumer */
    const struct sl_conf_value *config; /* the `config` map; NULL when absent */
    size_t index;
};

/* Error of a load: "file:line:column: message". */
struct sl_config_error {
    char text[512];
};

#endif
