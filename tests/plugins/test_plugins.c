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
 *   test-rewrite (priority 800): the request line and body API, driven by
 *     request headers: X-Test-Method, X-Test-Path, X-Test-Query set the
 *     upstream method, path and query (a refused value adds the upstream
 *     header X-Test-Refused: method|path|query); X-Test-Capture: <name>
 *     sends the route's uri capture upstream as X-Test-Capture-Value (or
 *     "none"); X-Test-Set-Then-Remove: <name> sets that header and then
 *     removes it; X-Test-Body: upper|keep reads the body (config.max_body,
 *     default 1024): upper sends it upper-cased, keep leaves it, and the
 *     upstream gets X-Test-Body-Seen: <length> or "too-large"; deny answers
 *     403 from the callback (a response after a suspension).
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
    const char *username = sl_plugin_consumer_username(sl_plugin_consumer(ctx));
    fprintf(stderr, "test-suspend log: status=%d body_bytes=%zu consumer=%s\n",
            sl_plugin_response_status(ctx), st ? st->body_bytes : 0, username ? username : "-");
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
    const struct sl_consumer *consumer = sl_plugin_find_consumer(sl_plugin_config(ctx), name, len);
    const char *username = sl_plugin_consumer_username(consumer);
    /* by username only: a consumer found by its id does not count */
    if (username && strlen(username) == len && memcmp(username, name, len) == 0) {
        sl_plugin_set_consumer(ctx, consumer, NULL);
        return SL_PLUGIN_CONTINUE;
    }
    sl_plugin_respond_error(ctx, 401, NULL);
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_test_consumer = {
    .name = "test-consumer",
    .priority = 1450,
    .access = consumer_access,
};

static bool rewrite_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                          struct sl_config_error *err)
{
    static const char *const known[] = {"max_body", NULL};
    long long max_body = 1024;
    if (!sl_plugin_config_known_keys(pc, cfg, known, err) ||
        !sl_plugin_config_int(pc, cfg, "max_body", 0, 64 << 20, &max_body, err))
        return false;
    long long *c = malloc(sizeof *c);
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    *c = max_body;
    *out = c;
    return true;
}

/* The request header `name` as a NUL-terminated copy (request memory). */
static const char *header_copy(struct sl_plugin_ctx *ctx, const char *name)
{
    size_t len;
    const char *v = sl_plugin_header(ctx, name, 0, &len);
    if (v == NULL)
        return NULL;
    char *copy = sl_plugin_alloc(ctx, len + 1);
    if (copy) {
        memcpy(copy, v, len);
        copy[len] = '\0';
    }
    return copy;
}

static void rewrite_body_ready(struct sl_plugin_ctx *ctx, const char *body, size_t len, void *arg)
{
    if (arg == (void *)2) { /* answer from the callback, after the suspension */
        sl_plugin_respond_error(ctx, 403, "denied after suspension");
        sl_plugin_resume(ctx);
        return;
    }
    bool upper = arg == (void *)1;
    char seen[32];
    if (body == NULL) {
        sl_plugin_upstream_header_set(ctx, "X-Test-Body-Seen", "too-large", 9);
    } else {
        int n = snprintf(seen, sizeof seen, "%zu", len);
        sl_plugin_upstream_header_set(ctx, "X-Test-Body-Seen", seen, (size_t)n);
        if (upper) {
            char *copy = malloc(len + 1);
            for (size_t i = 0; copy && i < len; i++)
                copy[i] = body[i] >= 'a' && body[i] <= 'z' ? (char)(body[i] - 32) : body[i];
            if (copy)
                sl_plugin_upstream_set_body(ctx, copy, len);
            free(copy);
        }
    }
    sl_plugin_resume(ctx);
}

static void rewrite_cancel(void *arg)
{
    (void)arg;
    fprintf(stderr, "test-rewrite body read cancelled\n");
}

static enum sl_plugin_result rewrite_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const long long *max_body = arg;
    const char *v;
    if ((v = header_copy(ctx, "X-Test-Method")) && !sl_plugin_upstream_set_method(ctx, v))
        sl_plugin_upstream_header_add(ctx, "X-Test-Refused", "method", 6);
    if ((v = header_copy(ctx, "X-Test-Path")) && !sl_plugin_upstream_set_path(ctx, v, strlen(v)))
        sl_plugin_upstream_header_add(ctx, "X-Test-Refused", "path", 4);
    if ((v = header_copy(ctx, "X-Test-Query")) && !sl_plugin_upstream_set_query(ctx, v, strlen(v)))
        sl_plugin_upstream_header_add(ctx, "X-Test-Refused", "query", 5);
    if ((v = header_copy(ctx, "X-Test-Capture"))) {
        size_t len;
        const char *cap = sl_plugin_uri_capture(ctx, v, &len);
        sl_plugin_upstream_header_set(ctx, "X-Test-Capture-Value", cap ? cap : "none",
                                      cap ? len : 4);
    }
    if ((v = header_copy(ctx, "X-Test-Set-Then-Remove"))) {
        sl_plugin_upstream_header_set(ctx, v, "set", 3);
        sl_plugin_upstream_header_remove(ctx, v);
    }
    if ((v = header_copy(ctx, "X-Test-Body"))) {
        bool upper = strcmp(v, "upper") == 0, deny = strcmp(v, "deny") == 0;
        /* asking twice is refused; the second call must not start anything */
        if (!sl_plugin_read_body(ctx, (size_t)*max_body, rewrite_body_ready,
                                 deny    ? (void *)2
                                 : upper ? (void *)1
                                         : NULL) ||
            sl_plugin_read_body(ctx, 1, rewrite_body_ready, NULL)) {
            sl_plugin_respond_error(ctx, 500, "read_body misbehaved");
            return SL_PLUGIN_CONTINUE;
        }
        sl_plugin_on_cancel(ctx, rewrite_cancel, NULL);
        return SL_PLUGIN_SUSPEND;
    }
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_test_rewrite = {
    .name = "test-rewrite",
    .priority = 800,
    .parse_config = rewrite_parse,
    .free_config = free,
    .access = rewrite_access,
};

const struct sl_plugin_ops *const sl_builtin_plugins[] = {
    &sl_plugin_request_termination, &sl_plugin_jwt,
    &sl_plugin_request_transformer, &sl_plugin_rate_limiting,
    &sl_plugin_test_suspend,        &sl_plugin_test_consumer,
    &sl_plugin_test_rewrite,        NULL,
};
