/*
 * Plugins that exist only in the test build of the gateway
 * (tests/integration/sluice-gateway-test): they exercise the parts of the
 * plugin runtime no shipped plugin uses yet, through the real proxy.
 *
 *   test-suspend (priority 1000): access suspends the request on a timer of
 *     config.delay_ms, then adds the upstream header X-Test-Suspended and
 *     resumes; header_filter adds X-Test-Status: <upstream status>;
 *     body_filter counts response body bytes; log writes
 *     "test-suspend log: status=N body_bytes=M consumer=C" to stderr.
 *     If the request dies while suspended, the cancel callback writes
 *     "test-suspend cancelled" to stderr.
 *   test-consumer (priority 1450, like jwt): sets the consumer named by the
 *     request header X-Test-Consumer (username), so consumer scoping can be
 *     tested before the real auth plugins exist.
 *
 * This file also defines sl_builtin_plugins for the test binary (the linker
 * then leaves plugins/registry.c out).
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins.h"

struct suspend_conf {
    long long delay_ms;
};

static bool suspend_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                          struct sl_config_error *err)
{
    static const char *const known[] = {"delay_ms", NULL};
    long long delay = 50;
    if (!sl_plugin_config_known_keys(pc, cfg, known, err) ||
        !sl_plugin_config_int(pc, cfg, "delay_ms", 0, 60000, &delay, err))
        return false;
    struct suspend_conf *c = malloc(sizeof *c);
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    c->delay_ms = delay;
    *out = c;
    return true;
}

struct suspend_state {
    struct sl_plugin_ctx *ctx;
    struct event *timer;
    size_t body_bytes;
};

static void suspend_cancel(void *arg)
{
    struct suspend_state *st = arg;
    fprintf(stderr, "test-suspend cancelled\n");
    event_free(st->timer);
    st->timer = NULL;
}

static void suspend_fire(evutil_socket_t fd, short what, void *arg)
{
    struct suspend_state *st = arg;
    event_free(st->timer);
    st->timer = NULL;
    sl_plugin_upstream_header_set(st->ctx, "X-Test-Suspended", "yes", 3);
    sl_plugin_resume(st->ctx);
}

static struct suspend_state *state_of(struct sl_plugin_ctx *ctx)
{
    void **slot = sl_plugin_request_data(ctx);
    return slot ? *slot : NULL;
}

static enum sl_plugin_result suspend_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct suspend_conf *c = arg;
    struct suspend_state *st = sl_plugin_alloc(ctx, sizeof *st);
    void **slot = sl_plugin_request_data(ctx);
    if (st == NULL || slot == NULL) {
        sl_plugin_respond_error(ctx, 500, NULL);
        return SL_PLUGIN_CONTINUE;
    }
    memset(st, 0, sizeof *st);
    st->ctx = ctx;
    *slot = st;
    st->timer = evtimer_new(sl_plugin_event_base(ctx), suspend_fire, st);
    if (st->timer == NULL) {
        sl_plugin_respond_error(ctx, 500, NULL);
        return SL_PLUGIN_CONTINUE;
    }
    struct timeval tv = {c->delay_ms / 1000, (c->delay_ms % 1000) * 1000};
    evtimer_add(st->timer, &tv);
    sl_plugin_on_cancel(ctx, suspend_cancel, st);
    return SL_PLUGIN_SUSPEND;
}

static void suspend_header_filter(struct sl_plugin_ctx *ctx, const void *arg)
{
    char v[16];
    int n = snprintf(v, sizeof v, "%d", sl_plugin_response_status(ctx));
    sl_plugin_response_header_set(ctx, "X-Test-Status", v, (size_t)n);
}

static void suspend_body_filter(struct sl_plugin_ctx *ctx, const void *arg, const char *data,
                                size_t len, bool last)
{
    struct suspend_state *st = state_of(ctx);
    if (st)
        st->body_bytes += len;
}

static void suspend_log(struct sl_plugin_ctx *ctx, const void *arg)
{
    struct suspend_state *st = state_of(ctx);
    const struct sl_consumer *consumer = sl_plugin_consumer(ctx);
    fprintf(stderr, "test-suspend log: status=%d body_bytes=%zu consumer=%s\n",
            sl_plugin_response_status(ctx), st ? st->body_bytes : 0,
            consumer && consumer->username ? consumer->username : "-");
}

const struct sl_plugin_ops sl_plugin_test_suspend = {
    .name = "test-suspend",
    .priority = 1000,
    .parse_config = suspend_parse,
    .free_config = free,
    .access = suspend_access,
    .header_filter = suspend_header_filter,
    .body_filter = suspend_body_filter,
    .log = suspend_log,
};

static enum sl_plugin_result consumer_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    size_t len;
    const char *name = sl_plugin_header(ctx, "X-Test-Consumer", 0, &len);
    if (name == NULL)
        return SL_PLUGIN_CONTINUE;
    const struct sl_config *cfg = sl_plugin_config(ctx);
    for (size_t i = 0; i < cfg->n_consumers; i++) {
        const char *u = cfg->consumers[i].username;
        if (u && strlen(u) == len && memcmp(u, name, len) == 0) {
            sl_plugin_set_consumer(ctx, &cfg->consumers[i], NULL);
            return SL_PLUGIN_CONTINUE;
        }
    }
    sl_plugin_respond_error(ctx, 401, NULL);
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_test_consumer = {
    .name = "test-consumer",
    .priority = 1450,
    .access = consumer_access,
};

const struct sl_plugin_ops *const sl_builtin_plugins[] = {
    &sl_plugin_request_termination,
    &sl_plugin_test_suspend,
    &sl_plugin_test_consumer,
    NULL,
};
