/*
 * request-termination (Kong's, PRIORITY 2): answer every request of its
 * scope with a fixed response instead of proxying it, optionally only when
 * a trigger header or query argument is present.
 *
 * Config: status_code (503; 100-599), message, body, content_type, trigger.
 * Kong's checks: message excludes body and content_type; content_type needs
 * a body. Without a body the answer is {"message": message or Kong's default
 * for the status}, or empty when the status has no default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins.h"

struct termination_conf {
    int status;
    char *body; /* the raw body, or the JSON {"message":...} */
    size_t body_len;
    char *content_type; /* NULL: no body */
    char *trigger;      /* NULL: always */
};

static void termination_free(void *arg)
{
    struct termination_conf *c = arg;
    if (c == NULL)
        return;
    free(c->body);
    free(c->content_type);
    free(c->trigger);
    free(c);
}

static char *dup_text(const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

/* Kong's DEFAULT_RESPONSE table of the plugin. */
static const char *default_message(int status)
{
    switch (status) {
    case 401:
        return "Unauthorized";
    case 404:
        return "Not found";
    case 405:
        return "Method not allowed";
    case 500:
        return "An unexpected error occurred";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service unavailable";
    default:
        return NULL;
    }
}

static bool termination_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                              void **out, struct sl_config_error *err)
{
    static const char *const known[] = {"status_code", "message", "body", "content_type",
                                        "trigger",     "echo",    NULL};
    if (!sl_plugin_config_known_keys(pc, cfg, known, err))
        return false;
    long long status = 503;
    const char *message = NULL, *body = NULL, *content_type = NULL, *trigger = NULL;
    size_t message_len = 0, body_len = 0, content_type_len = 0, trigger_len = 0;
    bool echo = false;
    if (!sl_plugin_config_int(pc, cfg, "status_code", 100, 599, &status, err) ||
        !sl_plugin_config_string(pc, cfg, "message", &message, &message_len, err) ||
        !sl_plugin_config_string(pc, cfg, "body", &body, &body_len, err) ||
        !sl_plugin_config_string(pc, cfg, "content_type", &content_type, &content_type_len, err) ||
        !sl_plugin_config_string(pc, cfg, "trigger", &trigger, &trigger_len, err) ||
        !sl_plugin_config_bool(pc, cfg, "echo", &echo, err))
        return false;
    const struct sl_conf_value *at = pc->config;
    if (echo)
        return sl_plugin_config_error(err, cfg, pc, sl_conf_get(at, "echo"),
                                      "config.echo is not supported yet");
    if (message_len > 0 && (content_type_len > 0 || body_len > 0))
        return sl_plugin_config_error(err, cfg, pc, at,
                                      "message cannot be used with content_type or body");
    if (content_type_len > 0 && body_len == 0)
        return sl_plugin_config_error(err, cfg, pc, at, "content_type requires a body");
    for (size_t i = 0; i < content_type_len; i++)
        if (content_type[i] == '\r' || content_type[i] == '\n')
            return sl_plugin_config_error(err, cfg, pc, sl_conf_get(at, "content_type"),
                                          "config.content_type: control characters are not "
                                          "allowed");
    if (trigger != NULL) {
        for (size_t i = 0; i < trigger_len; i++)
            if (!((trigger[i] >= 'a' && trigger[i] <= 'z') ||
                  (trigger[i] >= 'A' && trigger[i] <= 'Z') ||
                  (trigger[i] >= '0' && trigger[i] <= '9') || trigger[i] == '-' ||
                  trigger[i] == '_'))
                return sl_plugin_config_error(err, cfg, pc, sl_conf_get(at, "trigger"),
                                              "config.trigger: bad header name '%s', allowed "
                                              "characters are A-Z, a-z, 0-9, '_', and '-'",
                                              trigger);
    }

    struct termination_conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto oom;
    c->status = (int)status;
    if (body_len > 0) {
        c->body = dup_text(body, body_len);
        c->body_len = body_len;
        c->content_type =
            dup_text(content_type_len ? content_type : "application/json; charset=utf-8",
                     content_type_len ? content_type_len : 31);
    } else {
        const char *msg = message_len > 0 ? message : default_message(c->status);
        if (msg != NULL) {
            size_t esc_size = strlen(msg) * 6 + 1;
            char *esc = malloc(esc_size);
            c->body = malloc(esc_size + 16);
            if (esc == NULL || c->body == NULL ||
                sl_plugin_json_escape(msg, strlen(msg), esc, esc_size) < 0) {
                free(esc);
                goto oom;
            }
            c->body_len = (size_t)snprintf(c->body, esc_size + 16, "{\"message\":\"%s\"}", esc);
            free(esc);
            c->content_type = dup_text("application/json; charset=utf-8", 31);
        }
    }
    if (trigger != NULL)
        c->trigger = dup_text(trigger, trigger_len);
    if ((c->body_len > 0 && (c->body == NULL || c->content_type == NULL)) ||
        (trigger != NULL && c->trigger == NULL))
        goto oom;
    *out = c;
    return true;
oom:
    termination_free(c);
    return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
}

static enum sl_plugin_result termination_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct termination_conf *c = arg;
    size_t len;
    if (c->trigger != NULL && sl_plugin_header(ctx, c->trigger, 0, &len) == NULL &&
        sl_plugin_query_arg(ctx, c->trigger, &len) == NULL)
        return SL_PLUGIN_CONTINUE; /* trigger absent: nothing to do */
    sl_plugin_respond(ctx, c->status, c->content_type, c->body, c->body_len);
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_request_termination = {
    .name = "request-termination",
    .priority = 2,
    .parse_config = termination_parse,
    .free_config = termination_free,
    .access = termination_access,
};
