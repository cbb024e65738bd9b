/*
 * The plugin runtime (core/plugin.c) without the proxy: Kong's scoping
 * precedence, priority order, per-phase bookkeeping, suspend/resume/cancel,
 * header edits that refuse CR/LF, the parse_config helpers' messages,
 * request-termination's config checks, and the plugin API's view of the
 * configuration (core/plugin_config.c), logging and JSON escaping.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "plugin_runtime.h"
#include "plugins.h"
#include "unit.h"

/* ---- fake plugins: each access hook appends "<name>:<tag>" to a trace ---- */

static char trace[512];

struct tag_conf {
    char tag[32];
};

static bool tag_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                      struct sl_config_error *err)
{
    static const char *const known[] = {"tag", NULL};
    const char *tag = "-";
    if (!sl_plugin_config_known_keys(pc, cfg, known, err) ||
        !sl_plugin_config_string(pc, cfg, "tag", &tag, NULL, err))
        return false;
    struct tag_conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        return false;
    snprintf(c->tag, sizeof c->tag, "%s", tag);
    *out = c;
    return true;
}

static void trace_add(const char *who, const void *conf)
{
    const struct tag_conf *c = conf;
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s%s:%s", n ? " " : "", who, c ? c->tag : "-");
}

static enum sl_plugin_result low_access(struct sl_plugin_ctx *ctx, const void *conf)
{
    trace_add("low", conf);
    return SL_PLUGIN_CONTINUE;
}

static enum sl_plugin_result high_access(struct sl_plugin_ctx *ctx, const void *conf)
{
    trace_add("high", conf);
    return SL_PLUGIN_CONTINUE;
}

static enum sl_plugin_result high_rewrite(struct sl_plugin_ctx *ctx, const void *conf)
{
    trace_add("rewrite", conf);
    return SL_PLUGIN_CONTINUE;
}

/* "auth": sets the consumer named by its tag */
static enum sl_plugin_result auth_access(struct sl_plugin_ctx *ctx, const void *conf)
{
    const struct tag_conf *c = conf;
    const struct sl_config *cfg = sl_plugin_config(ctx);
    trace_add("auth", conf);
    for (size_t i = 0; i < cfg->n_consumers; i++)
        if (strcmp(cfg->consumers[i].username, c->tag) == 0)
            sl_plugin_set_consumer(ctx, &cfg->consumers[i], "cred-1");
    return SL_PLUGIN_CONTINUE;
}

/* "wait": suspends; the test resumes it */
static int cancelled;
static void wait_cancel(void *arg)
{
    cancelled++;
}
static enum sl_plugin_result wait_access(struct sl_plugin_ctx *ctx, const void *conf)
{
    trace_add("wait", conf);
    sl_plugin_on_cancel(ctx, wait_cancel, NULL);
    return SL_PLUGIN_SUSPEND;
}

/* "stop": answers 403 */
static enum sl_plugin_result stop_access(struct sl_plugin_ctx *ctx, const void *conf)
{
    trace_add("stop", conf);
    sl_plugin_respond_error(ctx, 403, NULL);
    return SL_PLUGIN_CONTINUE;
}

static const struct sl_plugin_ops low = {.name = "low",
                                         .priority = 10,
                                         .parse_config = tag_parse,
                                         .free_config = free,
                                         .access = low_access};
static const struct sl_plugin_ops high = {.name = "high",
                                          .priority = 900,
                                          .parse_config = tag_parse,
                                          .free_config = free,
                                          .rewrite = high_rewrite,
                                          .access = high_access};
static const struct sl_plugin_ops auth = {.name = "auth",
                                          .priority = 1450,
                                          .parse_config = tag_parse,
                                          .free_config = free,
                                          .access = auth_access};
static const struct sl_plugin_ops waiter = {.name = "wait",
                                            .priority = 1000,
                                            .parse_config = tag_parse,
                                            .free_config = free,
                                            .access = wait_access};
static const struct sl_plugin_ops stopper = {.name = "stop",
                                             .priority = 5,
                                             .parse_config = tag_parse,
                                             .free_config = free,
                                             .access = stop_access};
static const struct sl_plugin_ops *const fake_registry[] = {
    &low, &high, &auth, &waiter, &stopper, &sl_plugin_request_termination, NULL};

static struct sl_config *load_with(const struct sl_plugin_ops *const *registry, const char *yaml,
                                   struct sl_config_error *err)
{
    sl_plugin_registry_set(registry);
    struct sl_config *cfg = sl_config_load_buffer(yaml, strlen(yaml), "t.yaml", "gateway", err);
    if (cfg != NULL && !sl_plugins_attach(cfg, err)) {
        sl_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

static struct sl_config *load(const char *yaml, struct sl_config_error *err)
{
    return load_with(fake_registry, yaml, err);
}

static const struct sl_route *route_named(const struct sl_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].name && strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    return NULL;
}

static int resumed;
static void on_resume(void *owner)
{
    resumed++;
}

static void ctx_init(struct sl_plugin_ctx *ctx, const struct sl_config *cfg, const char *route,
                     const struct sl_http_header *headers, size_t n_headers, const char *query)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->cfg = cfg;
    ctx->scheme = "http";
    ctx->method = "GET";
    ctx->path = "/";
    ctx->path_len = 1;
    ctx->query = query ? query : "";
    ctx->query_len = query ? strlen(query) : 0;
    ctx->headers = headers;
    ctx->n_headers = n_headers;
    ctx->request_id = "rid";
    ctx->client_ip = "127.0.0.1";
    ctx->resume = on_resume;
    if (route) {
        ctx->route = route_named(cfg, route);
        ck_assert_ptr_nonnull(ctx->route);
        ctx->service = ctx->route->service;
    }
    trace[0] = '\0';
}

/* Kong's precedence, every level against the next one down. */
static const char scoping_yaml[] =
    "_format_version: \"3.0\"\n"
    "consumers:\n"
    "  - username: alice\n"
    "    plugins: [{name: low, config: {tag: consumer}}]\n"
    "  - username: bob\n"
    "  - username: carol\n"
    "services:\n"
    "  - name: svc\n"
    "    url: http://127.0.0.1:1\n"
    "    plugins: [{name: low, config: {tag: service}}]\n"
    "    routes:\n"
    "      - name: r1\n"
    "        paths: [/r1]\n"
    "        plugins: [{name: low, config: {tag: route}}]\n"
    "      - name: r2\n"
    "        paths: [/r2]\n"
    "  - name: other\n"
    "    url: http://127.0.0.1:1\n"
    "    routes: [{name: r3, paths: [/r3]}]\n"
    "plugins:\n"
    "  - {name: low, config: {tag: global}}\n"
    "  - {name: auth, config: {tag: nobody}, route: r2}\n"
    "  - {name: low, config: {tag: route+service}, route: r2, service: svc}\n"
    "  - {name: low, config: {tag: service+consumer}, service: svc, consumer: bob}\n"
    "  - {name: low, config: {tag: route+consumer}, route: r1, consumer: bob}\n"
    "  - {name: low, config: {tag: route+service+consumer}, route: r1, service: svc, "
    "consumer: carol}\n"
    "  - {name: low, config: {tag: rsc-other}, route: r1, service: other, consumer: carol}\n";

static const char *run_low(const struct sl_config *cfg, const char *route, const char *consumer)
{
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, route, NULL, 0, NULL);
    for (size_t i = 0; consumer && i < cfg->n_consumers; i++)
        if (strcmp(cfg->consumers[i].username, consumer) == 0)
            ctx.consumer = &cfg->consumers[i];
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_PROXY);
    sl_plugin_ctx_release(&ctx);
    return trace;
}

START_TEST(scoping_precedence)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(scoping_yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_str_eq(run_low(cfg, "r1", NULL), "low:route");
    ck_assert_str_eq(run_low(cfg, "r1", "alice"), "low:consumer");
    ck_assert_str_eq(run_low(cfg, "r1", "bob"), "low:route+consumer");
    ck_assert_str_eq(run_low(cfg, "r1", "carol"), "low:route+service+consumer");
    /* r2: route+service beats service; service+consumer beats route+service */
    ck_assert_str_eq(run_low(cfg, "r2", NULL), "auth:nobody low:route+service");
    ck_assert_str_eq(run_low(cfg, "r2", "alice"), "auth:nobody low:route+service");
    ck_assert_str_eq(run_low(cfg, "r2", "bob"), "auth:nobody low:service+consumer");
    ck_assert_str_eq(run_low(cfg, "r3", NULL), "low:global");
    ck_assert_str_eq(run_low(cfg, "r3", "alice"), "low:consumer");
    ck_assert_str_eq(run_low(cfg, "r3", "bob"), "low:global");
    sl_config_unref(cfg);
}
END_TEST

START_TEST(auth_sets_consumer_for_later_plugins)
{
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "consumers:\n"
                               "  - username: alice\n"
                               "    plugins: [{name: low, config: {tag: alice-only}}]\n"
                               "services:\n"
                               "  - name: svc\n"
                               "    url: http://127.0.0.1:1\n"
                               "    routes: [{name: r, paths: [/]}]\n"
                               "plugins:\n"
                               "  - {name: auth, config: {tag: alice}}\n"
                               "  - {name: low, config: {tag: everyone}}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, "r", NULL, 0, NULL);
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_PROXY);
    ck_assert_str_eq(trace, "auth:alice low:alice-only");
    ck_assert_ptr_nonnull(ctx.consumer);
    ck_assert_str_eq(ctx.consumer->username, "alice");
    ck_assert_str_eq(sl_plugin_credential_id(&ctx), "cred-1");
    sl_plugin_ctx_release(&ctx);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(priority_order_and_rewrite_globals_only)
{
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "services:\n"
                               "  - name: svc\n"
                               "    url: http://127.0.0.1:1\n"
                               "    routes:\n"
                               "      - name: r\n"
                               "        paths: [/]\n"
                               "        plugins: [{name: high, config: {tag: route}}]\n"
                               "plugins:\n"
                               "  - {name: low, config: {tag: g}}\n"
                               "  - {name: high, config: {tag: g}}\n"
                               "  - {name: auth, config: {tag: nobody}}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, NULL, NULL, 0, NULL);
    ck_assert_int_eq(sl_plugins_rewrite(&ctx), SL_PHASE_PROXY);
    ck_assert_str_eq(trace, "rewrite:g"); /* only global instances rewrite */
    trace[0] = '\0';
    ctx.route = route_named(cfg, "r");
    ctx.service = ctx.route->service;
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_PROXY);
    ck_assert_str_eq(trace, "auth:nobody high:route low:g"); /* 1450, 900, 10 */
    sl_plugin_ctx_release(&ctx);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(suspend_resume_and_cancel)
{
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "services:\n"
                               "  - name: svc\n"
                               "    url: http://127.0.0.1:1\n"
                               "    routes: [{name: r, paths: [/]}]\n"
                               "plugins:\n"
                               "  - {name: low, config: {tag: after}}\n"
                               "  - {name: wait, config: {tag: w}}\n"
                               "  - {name: high, config: {tag: before}}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, "r", NULL, 0, NULL);
    resumed = 0;
    cancelled = 0;
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_SUSPENDED);
    ck_assert_str_eq(trace, "wait:w");
    sl_plugin_resume(&ctx);
    ck_assert_int_eq(resumed, 1);
    sl_plugin_resume(&ctx); /* a second resume is ignored */
    ck_assert_int_eq(resumed, 1);
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_PROXY); /* continues after wait */
    ck_assert_str_eq(trace, "wait:w high:before low:after");
    sl_plugin_ctx_release(&ctx);
    ck_assert_int_eq(cancelled, 0);

    /* dies while suspended: cancel runs, exactly once */
    ctx_init(&ctx, cfg, "r", NULL, 0, NULL);
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_SUSPENDED);
    sl_plugin_ctx_release(&ctx);
    sl_plugin_ctx_release(&ctx);
    ck_assert_int_eq(cancelled, 1);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(respond_stops_the_chain)
{
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "services:\n"
                               "  - name: svc\n"
                               "    url: http://127.0.0.1:1\n"
                               "    routes: [{name: r, paths: [/]}]\n"
                               "plugins:\n"
                               "  - {name: stop, config: {tag: s}}\n"
                               "  - {name: high, config: {tag: h}}\n"
                               "  - {name: request-termination, config: {status_code: 418}}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, "r", NULL, 0, NULL);
    /* high (900) runs, stop (5) answers, request-termination (2) never runs */
    ck_assert_int_eq(sl_plugins_access(&ctx), SL_PHASE_RESPOND);
    ck_assert_str_eq(trace, "high:h stop:s");
    ck_assert_int_eq(ctx.respond_status, 403);
    ck_assert(ctx.respond_is_error);
    ck_assert_str_eq(ctx.respond_message, "Forbidden");
    sl_plugin_ctx_release(&ctx);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(header_edits_refuse_injection)
{
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "services:\n"
                               "  - {name: svc, url: \"http://127.0.0.1:1\", routes: [{name: r, "
                               "paths: [/]}]}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, "r", NULL, 0, NULL);
    ck_assert(sl_plugin_upstream_header_set(&ctx, "X-Ok", "fine", 4));
    ck_assert(!sl_plugin_upstream_header_set(&ctx, "X-Bad", "a\r\nEvil: 1", 10));
    ck_assert(!sl_plugin_upstream_header_add(&ctx, "X-Bad", "a\nb", 3));
    ck_assert(!sl_plugin_upstream_header_add(&ctx, "X-Bad", "a\0b", 3));
    ck_assert(!sl_plugin_response_header_set(&ctx, "Bad Name", "v", 1));
    ck_assert(!sl_plugin_response_header_set(&ctx, "", "v", 1));
    ck_assert(sl_plugin_response_header_remove(&ctx, "Server"));
    /* only the two valid edits were kept */
    ck_assert_ptr_nonnull(ctx.upstream_edits);
    ck_assert_str_eq(ctx.upstream_edits->name, "X-Ok");
    ck_assert_ptr_null(ctx.upstream_edits->next);
    ck_assert_int_eq(ctx.response_edits->op, SL_EDIT_REMOVE);
    ck_assert_ptr_null(ctx.response_edits->next);
    sl_plugin_ctx_release(&ctx);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(request_accessors)
{
    static const char yaml[] = "_format_version: \"3.0\"\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    struct sl_http_header hs[] = {
        {"Authorization", 13, "a", 1, 0},
        {"X-Other", 7, "o", 1, 0},
        {"authorization", 13, "b", 1, 0},
    };
    struct sl_plugin_ctx ctx;
    ctx_init(&ctx, cfg, NULL, hs, 3, "jwt=abc&flag&x=1&jwt=second");
    size_t len;
    ck_assert_uint_eq(sl_plugin_header_count(&ctx, "AUTHORIZATION"), 2);
    const char *v = sl_plugin_header(&ctx, "authorization", 1, &len);
    ck_assert(v != NULL && len == 1 && v[0] == 'b');
    ck_assert_ptr_null(sl_plugin_header(&ctx, "authorization", 2, &len));
    v = sl_plugin_query_arg(&ctx, "jwt", &len);
    ck_assert(v != NULL && len == 3 && memcmp(v, "abc", 3) == 0);
    v = sl_plugin_query_arg(&ctx, "flag", &len);
    ck_assert(v != NULL && len == 0);
    ck_assert_ptr_null(sl_plugin_query_arg(&ctx, "fla", &len));
    ck_assert_ptr_null(sl_plugin_query_arg(&ctx, "JWT", &len));
    sl_plugin_ctx_release(&ctx);
    sl_config_unref(cfg);
}
END_TEST

static void expect_error(const char *yaml, const char *want)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg == NULL, "accepted: %s", yaml);
    ck_assert_msg(strstr(err.text, want) != NULL, "got '%s', want '%s'", err.text, want);
}

START_TEST(config_errors_have_positions)
{
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: nope\n",
                 "t.yaml:3:5: plugin 'nope' is not supported yet");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: low\n    config:\n      tagg: x\n",
                 "t.yaml:5:7: plugin 'low': config.tagg: unknown field");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: low\n    config:\n      tag: 5\n",
                 "t.yaml:5:12: plugin 'low': config.tag: expected a string, got an integer");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: low\n    config: [1]\n",
                 "t.yaml:4:13: expected a map, got a sequence");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: request-termination\n"
                 "    config: {status_code: 99}\n",
                 "t.yaml:4:27: plugin 'request-termination': config.status_code: value should be "
                 "between 100 and 599");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: request-termination\n"
                 "    config: {message: m, body: b}\n",
                 "message cannot be used with content_type or body");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: request-termination\n"
                 "    config: {content_type: text/plain}\n",
                 "content_type requires a body");
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: request-termination\n"
                 "    config: {trigger: \"a b\"}\n",
                 "config.trigger: bad header name 'a b'");
    /* a disabled instance is still checked (Kong validates it too) */
    expect_error("_format_version: \"3.0\"\nplugins:\n  - name: request-termination\n"
                 "    enabled: false\n    config: {status_code: 700}\n",
                 "config.status_code: value should be between 100 and 599");
}
END_TEST

START_TEST(disabled_instances_never_run)
{
    static const char yaml[] =
        "_format_version: \"3.0\"\n"
        "services:\n"
        "  - name: svc\n"
        "    url: http://127.0.0.1:1\n"
        "    routes:\n"
        "      - name: r\n"
        "        paths: [/]\n"
        "        plugins: [{name: low, enabled: false, config: {tag: route}}]\n"
        "plugins:\n"
        "  - {name: low, config: {tag: global}}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_str_eq(run_low(cfg, "r", NULL), "low:global");
    sl_config_unref(cfg);
}
END_TEST

START_TEST(kong_default_messages)
{
    ck_assert_str_eq(sl_plugin_default_message(401), "Unauthorized");
    ck_assert_str_eq(sl_plugin_default_message(429), "Too many requests");
    ck_assert_str_eq(sl_plugin_default_message(503),
                     "The upstream server is currently unavailable");
    ck_assert_ptr_null(sl_plugin_default_message(299));
}
END_TEST

/* ---- the configuration, through the plugin API ---------------------------- */

static const char entities_yaml[] = "_format_version: \"3.0\"\n"
                                    "consumers:\n"
                                    "  - username: alice\n"
                                    "    custom_id: a-1\n"
                                    "    jwt_secrets:\n"
                                    "      - key: alice-iss\n"
                                    "        secret: s3cret\n"
                                    "  - id: 6f1c2bd4-8b6e-4bd2-9d3a-2a2a5e1f0c11\n"
                                    "    custom_id: only-custom\n"
                                    "  - username: alicia\n"
                                    "services:\n"
                                    "  - name: svc\n"
                                    "    url: http://127.0.0.1:1\n"
                                    "    routes:\n"
                                    "      - name: r\n"
                                    "        id: 11111111-1111-4111-8111-111111111111\n"
                                    "        paths: [/r]\n"
                                    "  - id: 22222222-2222-4222-8222-222222222222\n"
                                    "    url: http://127.0.0.1:1\n"
                                    "    routes: [{paths: [/n]}]\n";

START_TEST(config_entity_accessors)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(entities_yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_str_eq(sl_plugin_config_source(cfg), "t.yaml");

    const struct sl_route *r = route_named(cfg, "r");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(sl_plugin_route_id(r), "11111111-1111-4111-8111-111111111111");
    ck_assert_str_eq(sl_plugin_route_name(r), "r");
    ck_assert_str_eq(sl_plugin_service_name(r->service), "svc");
    const struct sl_service *unnamed = &cfg->services[1];
    ck_assert_str_eq(sl_plugin_service_id(unnamed), "22222222-2222-4222-8222-222222222222");
    ck_assert_ptr_null(sl_plugin_service_name(unnamed));
    ck_assert_ptr_null(sl_plugin_route_name(&cfg->routes[1]));
    ck_assert_ptr_null(sl_plugin_route_id(NULL));
    ck_assert_ptr_null(sl_plugin_route_name(NULL));
    ck_assert_ptr_null(sl_plugin_service_id(NULL));
    ck_assert_ptr_null(sl_plugin_service_name(NULL));

    const struct sl_consumer *alice = &cfg->consumers[0], *anon = &cfg->consumers[1];
    ck_assert_str_eq(sl_plugin_consumer_username(alice), "alice");
    ck_assert_str_eq(sl_plugin_consumer_custom_id(alice), "a-1");
    ck_assert_str_eq(sl_plugin_consumer_id(alice), alice->id); /* generated at load */
    ck_assert_str_eq(sl_plugin_consumer_id(anon), "6f1c2bd4-8b6e-4bd2-9d3a-2a2a5e1f0c11");
    ck_assert_ptr_null(sl_plugin_consumer_username(anon));
    ck_assert_str_eq(sl_plugin_consumer_custom_id(anon), "only-custom");
    ck_assert_ptr_null(sl_plugin_consumer_id(NULL));
    ck_assert_ptr_null(sl_plugin_consumer_username(NULL));
    ck_assert_ptr_null(sl_plugin_consumer_custom_id(NULL));
    sl_config_unref(cfg);
}
END_TEST

START_TEST(find_consumer_by_id_or_username)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(entities_yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    const char *id = "6f1c2bd4-8b6e-4bd2-9d3a-2a2a5e1f0c11";
    ck_assert_ptr_eq(sl_plugin_find_consumer(cfg, "alice", 5), &cfg->consumers[0]);
    ck_assert_ptr_eq(sl_plugin_find_consumer(cfg, id, strlen(id)), &cfg->consumers[1]);
    ck_assert_ptr_eq(sl_plugin_find_consumer(cfg, "alicia", 6), &cfg->consumers[2]);
    /* exactly len bytes: a header value need not end with a NUL */
    ck_assert_ptr_eq(sl_plugin_find_consumer(cfg, "alice, bob", 5), &cfg->consumers[0]);
    ck_assert_ptr_null(sl_plugin_find_consumer(cfg, "alic", 4));
    ck_assert_ptr_null(sl_plugin_find_consumer(cfg, "alicex", 6));
    ck_assert_ptr_null(sl_plugin_find_consumer(cfg, "", 0));
    /* a custom_id is not a consumer reference (Kong) */
    ck_assert_ptr_null(sl_plugin_find_consumer(cfg, "a-1", 3));
    sl_config_unref(cfg);
}
END_TEST

START_TEST(jwt_secrets_in_file_order)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(entities_yaml, &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_uint_eq(sl_plugin_jwt_secret_count(cfg), 1);
    struct sl_plugin_jwt_secret s;
    ck_assert(sl_plugin_jwt_secret_at(cfg, 0, &s));
    ck_assert_str_eq(s.key, "alice-iss");
    ck_assert_str_eq(s.secret, "s3cret");
    ck_assert_str_eq(s.algorithm, "HS256");
    ck_assert_ptr_null(s.rsa_public_key);
    ck_assert_ptr_eq(s.consumer, &cfg->consumers[0]);
    ck_assert_int_eq(s.line, 6);
    ck_assert_int_eq(s.column, 9);
    struct sl_plugin_jwt_secret untouched = s;
    ck_assert(!sl_plugin_jwt_secret_at(cfg, 1, &s));
    ck_assert(memcmp(&s, &untouched, sizeof s) == 0);
    sl_config_unref(cfg);
}
END_TEST

/* jwt names an unusable credential by its own position, in the file of the
 * snapshot (sl_plugin_config_source and the secret's line and column) */
START_TEST(jwt_refuses_an_unusable_secret_at_its_position)
{
    static const struct sl_plugin_ops *const jwt_only[] = {&sl_plugin_jwt, NULL};
    static const char yaml[] = "_format_version: \"3.0\"\n"
                               "consumers:\n"
                               "  - username: alice\n"
                               "    jwt_secrets:\n"
                               "      - key: k1\n"
                               "        secret: \"!!!\"\n"
                               "plugins:\n"
                               "  - name: jwt\n"
                               "    config: {secret_is_base64: true}\n";
    struct sl_config_error err;
    struct sl_config *cfg = load_with(jwt_only, yaml, &err);
    ck_assert_msg(cfg == NULL, "accepted a secret that is not base64");
    ck_assert_str_eq(err.text, "t.yaml:8:5: plugin 'jwt': jwt_secret 'k1' (t.yaml:5:9): its secret "
                               "is not base64 (secret_is_base64 is set) or is empty: a token could "
                               "never be verified with it");
}
END_TEST

static void log_every_level(void)
{
    sl_plugin_log(SL_PLUGIN_LOG_DEBUG, "d%d", 1);
    sl_plugin_log(SL_PLUGIN_LOG_INFO, "i%d", 2);
    sl_plugin_log(SL_PLUGIN_LOG_NOTICE, "n%d", 3);
    sl_plugin_log(SL_PLUGIN_LOG_WARN, "w%d", 4);
    sl_plugin_log(SL_PLUGIN_LOG_ERROR, "e%s", "5\nforged [error] line");
}

/* What fn writes on stderr (the error log's fd), NUL terminated in out. */
static void capture_stderr(void (*fn)(void), char *out, size_t size)
{
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(tmp), STDERR_FILENO), 0);
    fn();
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, size - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

START_TEST(plugin_log_levels)
{
    char out[2048];
    sl_log_set_level(SL_LOG_WARN);
    capture_stderr(log_every_level, out, sizeof out);
    ck_assert_msg(strstr(out, "[warn] w4\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "[error] e5\\x0aforged [error] line\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "[notice]") == NULL && strstr(out, "[info]") == NULL &&
                      strstr(out, "[debug]") == NULL,
                  "below log_level: %s", out);

    sl_log_set_level(SL_LOG_DEBUG);
    capture_stderr(log_every_level, out, sizeof out);
    static const char *const lines[] = {"[debug] d1\n", "[info] i2\n", "[notice] n3\n",
                                        "[warn] w4\n"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        ck_assert_msg(strstr(out, lines[i]) != NULL, "no '%s' in %s", lines[i], out);
    sl_log_set_level(SL_LOG_NOTICE); /* the default */
}
END_TEST

START_TEST(plugin_json_escape)
{
    char out[32];
    ck_assert_int_eq(sl_plugin_json_escape("a\"b\\\n", 5, out, sizeof out), 12);
    ck_assert_str_eq(out, "a\\\"b\\\\\\u000a");
    ck_assert_int_eq(sl_plugin_json_escape("abc", 3, out, 4), 3);
    ck_assert_int_eq(sl_plugin_json_escape("abc", 3, out, 3), -1); /* no room for the NUL */
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("runtime");
    tcase_add_test(tc, scoping_precedence);
    tcase_add_test(tc, auth_sets_consumer_for_later_plugins);
    tcase_add_test(tc, priority_order_and_rewrite_globals_only);
    tcase_add_test(tc, suspend_resume_and_cancel);
    tcase_add_test(tc, respond_stops_the_chain);
    tcase_add_test(tc, header_edits_refuse_injection);
    tcase_add_test(tc, request_accessors);
    tcase_add_test(tc, config_errors_have_positions);
    tcase_add_test(tc, disabled_instances_never_run);
    tcase_add_test(tc, kong_default_messages);
    tcase_add_test(tc, config_entity_accessors);
    tcase_add_test(tc, find_consumer_by_id_or_username);
    tcase_add_test(tc, jwt_secrets_in_file_order);
    tcase_add_test(tc, jwt_refuses_an_unusable_secret_at_its_position);
    tcase_add_test(tc, plugin_log_levels);
    tcase_add_test(tc, plugin_json_escape);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
