/*
 * request-transformer (Kong's, PRIORITY 801): change the request before it
 * goes upstream.
 *
 * Config: http_method; remove / rename / replace / add / append, each with
 * headers, querystring and body ("name" for remove, "old:new" for rename,
 * "name:value" otherwise); replace.uri. Kong's order (its access.lua):
 * replace.uri, http_method, headers, body, querystring; within each:
 * remove, rename, replace (only what is present), add (only what is
 * absent), append (always).
 *
 * Values are templates: $(headers.x), $(headers["x-y"]), $(query_params.x),
 * $(query_params["x"]), $(uri_captures.name), $(uri_captures[1]), and,
 * beyond Kong, $(consumer.id), $(consumer.username), $(consumer.custom_id)
 * and $(credential.key) for the consumer an auth plugin (jwt) set. A
 * missing value renders as the empty string. A rendered value with CR, LF
 * or NUL is never sent: that one edit is skipped and logged.
 *
 * Bodies: application/json (an object) and
 * application/x-www-form-urlencoded, read whole up to 8 MiB (larger ones
 * and other types go upstream untouched; multipart is not transformed).
 * Changing the method to GET, HEAD or TRACE appends a form body's
 * arguments to the query string (Kong's transform_method).
 *
 * This file is the glue to the plugin API; the transforms themselves are
 * pure functions in rt_transform.c.
 */
#include <stdlib.h>
#include <string.h>

#include "plugins.h"
#include "rt_transform.h"

#define RT_MAX_BODY (8u << 20)

/* ------------------------------------------------------------------------ */
/* configuration                                                             */

static void rt_free(void *conf)
{
    rt_conf_free(conf);
}

static bool read_list(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                      const struct sl_conf_value *section, enum rt_op op, enum rt_target target,
                      struct rt_conf *c, struct sl_config_error *err)
{
    const struct sl_conf_value *seq = sl_conf_get(section, rt_target_names[target]);
    if (seq == NULL || seq->type == SL_CONF_NULL)
        return true;
    if (seq->type != SL_CONF_SEQ)
        return sl_plugin_config_error(err, cfg, pc, seq, "config.%s.%s: expected a sequence",
                                      rt_op_names[op], rt_target_names[target]);
    for (size_t i = 0; i < seq->n_items; i++) {
        const struct sl_conf_value *v = seq->items[i];
        if (v->type != SL_CONF_STRING)
            return sl_plugin_config_error(err, cfg, pc, v, "config.%s.%s: expected a string",
                                          rt_op_names[op], rt_target_names[target]);
        const char *why;
        if (op != RT_REMOVE && strchr(v->text, ':') == NULL)
            return sl_plugin_config_error(
                err, cfg, pc, v, "config.%s.%s: '%s' is not of the form %s", rt_op_names[op],
                rt_target_names[target], v->text, op == RT_RENAME ? "old:new" : "name:value");
        if (!rt_conf_add(c, op, target, v->text, v->text_len, &why))
            return sl_plugin_config_error(err, cfg, pc, v, "config.%s.%s: '%s': %s",
                                          rt_op_names[op], rt_target_names[target], v->text, why);
    }
    return true;
}

static bool read_section(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                         enum rt_op op, struct rt_conf *c, struct sl_config_error *err)
{
    const struct sl_conf_value *section =
        pc->config ? sl_conf_get(pc->config, rt_op_names[op]) : NULL;
    if (section == NULL || section->type == SL_CONF_NULL)
        return true;
    if (section->type != SL_CONF_MAP)
        return sl_plugin_config_error(err, cfg, pc, section, "config.%s: expected a map",
                                      rt_op_names[op]);
    for (size_t k = 0; k < section->n_items; k++) {
        const char *key = section->keys[k]->text;
        bool known = strcmp(key, "headers") == 0 || strcmp(key, "querystring") == 0 ||
                     strcmp(key, "body") == 0 || (op == RT_REPLACE && strcmp(key, "uri") == 0);
        bool json_types = op >= RT_REPLACE && strcmp(key, "json_types") == 0;
        if (json_types) { /* Kong's default, [], is accepted: it changes nothing */
            const struct sl_conf_value *jt = section->items[k];
            if (jt->type == SL_CONF_NULL || (jt->type == SL_CONF_SEQ && jt->n_items == 0))
                continue;
            return sl_plugin_config_error(err, cfg, pc, jt,
                                          "config.%s.json_types is not supported (body values "
                                          "are strings)",
                                          rt_op_names[op]);
        }
        if (!known)
            return sl_plugin_config_error(err, cfg, pc, section->keys[k],
                                          "config.%s.%s: unknown field", rt_op_names[op], key);
    }
    for (int t = 0; t < RT_N_TARGETS; t++)
        if (!read_list(pc, cfg, section, op, (enum rt_target)t, c, err))
            return false;
    if (op == RT_REPLACE) {
        const struct sl_conf_value *uri = sl_conf_get(section, "uri");
        if (uri && uri->type != SL_CONF_NULL) {
            const char *why = "expected a string";
            if (uri->type != SL_CONF_STRING || !rt_conf_set_uri(c, uri->text, uri->text_len, &why))
                return sl_plugin_config_error(err, cfg, pc, uri, "config.replace.uri: %s", why);
        }
    }
    return true;
}

static bool rt_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                     struct sl_config_error *err)
{
    static const char *const known[] = {"http_method", "remove", "rename", "replace",
                                        "add",         "append", NULL};
    if (!sl_plugin_config_known_keys(pc, cfg, known, err))
        return false;
    struct rt_conf *c = rt_conf_new();
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    const char *method = NULL, *why;
    if (!sl_plugin_config_string(pc, cfg, "http_method", &method, NULL, err))
        goto fail;
    if (method && !rt_conf_set_method(c, method, &why)) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(pc->config, "http_method"),
                               "config.http_method: invalid value: %s (%s)", method, why);
        goto fail;
    }
    for (int o = 0; o < RT_N_OPS; o++)
        if (!read_section(pc, cfg, (enum rt_op)o, c, err))
            goto fail;
    *out = c;
    return true;
fail:
    rt_conf_free(c);
    return false;
}

/* ------------------------------------------------------------------------ */
/* the plugin API behind struct rt_env                                       */

static const char *env_header(void *arg, const char *name, size_t *len)
{
    return sl_plugin_header(arg, name, 0, len);
}

static const char *env_capture(void *arg, const char *name, size_t *len)
{
    return sl_plugin_uri_capture(arg, name, len);
}

static size_t env_upstream_count(void *arg, const char *name)
{
    return sl_plugin_upstream_header_count(arg, name);
}

static const char *env_upstream_get(void *arg, const char *name, size_t index, size_t *len)
{
    return sl_plugin_upstream_header(arg, name, index, len);
}

static void env_upstream_set(void *arg, const char *name, const char *value, size_t len)
{
    sl_plugin_upstream_header_set(arg, name, value, len);
}

static void env_upstream_add(void *arg, const char *name, const char *value, size_t len)
{
    sl_plugin_upstream_header_add(arg, name, value, len);
}

static void env_upstream_remove(void *arg, const char *name)
{
    sl_plugin_upstream_header_remove(arg, name);
}

static void env_refused(void *arg, const char *what, const char *name)
{
    sl_plugin_log(SL_PLUGIN_LOG_WARN,
                  "request-transformer: request %s: %s '%s' would contain CR, LF or NUL: not sent",
                  sl_plugin_request_id(arg), what, name);
}

static void env_init(struct rt_env *env, struct sl_plugin_ctx *ctx)
{
    const struct sl_consumer *consumer = sl_plugin_consumer(ctx);
    *env = (struct rt_env){
        .arg = ctx,
        .header = env_header,
        .capture = env_capture,
        .consumer_id = sl_plugin_consumer_id(consumer),
        .consumer_username = sl_plugin_consumer_username(consumer),
        .consumer_custom_id = sl_plugin_consumer_custom_id(consumer),
        .credential_key = sl_plugin_credential_id(ctx),
        .upstream_count = env_upstream_count,
        .upstream_get = env_upstream_get,
        .upstream_set = env_upstream_set,
        .upstream_add = env_upstream_add,
        .upstream_remove = env_upstream_remove,
        .refused = env_refused,
    };
    env->query = sl_plugin_query(ctx, &env->query_len);
}

static enum rt_body_type request_body_type(struct sl_plugin_ctx *ctx)
{
    size_t len = 0;
    const char *ct = sl_plugin_header(ctx, "Content-Type", 0, &len);
    return rt_body_type(ct, len);
}

/* ------------------------------------------------------------------------ */
/* access                                                                    */

/* The query string last (Kong's order): `base` is the client's, or the one
 * the GET conversion made (then it goes out even when no edit applies). */
static void finish_query(struct sl_plugin_ctx *ctx, const struct rt_conf *c,
                         const struct rt_env *env, char *base, size_t base_len)
{
    size_t qlen = 0, len = 0;
    const char *q = base ? base : sl_plugin_query(ctx, &qlen);
    char *out = rt_transform_query(c, env, q, base ? base_len : qlen, &len);
    const char *send = out ? out : base;
    if (out == NULL)
        len = base_len;
    if (send && !sl_plugin_upstream_set_query(ctx, send, len))
        sl_plugin_log(SL_PLUGIN_LOG_WARN,
                      "request-transformer: request %s: the new query string was refused",
                      sl_plugin_request_id(ctx));
    free(out);
    free(base);
}

static void body_ready(struct sl_plugin_ctx *ctx, const char *body, size_t len, void *arg)
{
    const struct rt_conf *c = arg;
    struct rt_env env;
    env_init(&env, ctx);
    enum rt_body_type type = request_body_type(ctx);
    char *query = NULL;
    size_t query_len = 0;
    if (body != NULL) {
        if (rt_conf_method_takes_form(c) && type == RT_BODY_FORM) {
            size_t qlen;
            const char *q = sl_plugin_query(ctx, &qlen);
            query = rt_form_into_query(q, qlen, body, len, &query_len);
        }
        size_t out_len = 0;
        char *out = rt_transform_body(c, &env, type, body, len, &out_len);
        if (out)
            sl_plugin_upstream_set_body(ctx, out, out_len);
        free(out);
    }
    finish_query(ctx, c, &env, query, query_len);
    sl_plugin_resume(ctx);
}

static void body_cancel(void *arg)
{
    (void)arg; /* nothing of ours is pending: the engine stopped reading */
}

static enum sl_plugin_result rt_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct rt_conf *c = arg;
    struct rt_env env;
    env_init(&env, ctx);
    if (rt_conf_has_uri(c)) {
        size_t len;
        char *uri = rt_render_uri(c, &env, &len);
        if (uri == NULL || !sl_plugin_upstream_set_path(ctx, uri, len))
            sl_plugin_log(SL_PLUGIN_LOG_WARN,
                          "request-transformer: request %s: replace.uri rendered an unusable path: "
                          "not applied",
                          sl_plugin_request_id(ctx));
        free(uri);
    }
    if (rt_conf_method(c) && !sl_plugin_upstream_set_method(ctx, rt_conf_method(c)))
        sl_plugin_log(SL_PLUGIN_LOG_WARN, "request-transformer: http_method '%s' refused",
                      rt_conf_method(c));
    rt_transform_headers(c, &env);
    enum rt_body_type type = request_body_type(ctx);
    bool need_body = (rt_conf_has_edits(c, RT_BODY) && type != RT_BODY_OTHER) ||
                     (rt_conf_method_takes_form(c) && type == RT_BODY_FORM);
    if (need_body && sl_plugin_read_body(ctx, RT_MAX_BODY, body_ready, (void *)c)) {
        sl_plugin_on_cancel(ctx, body_cancel, NULL);
        return SL_PLUGIN_SUSPEND; /* the query string follows the body (Kong's order) */
    }
    finish_query(ctx, c, &env, NULL, 0);
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_request_transformer = {
    .name = "request-transformer",
    .priority = 801,
    .parse_config = rt_parse,
    .free_config = rt_free,
    .access = rt_access,
};
