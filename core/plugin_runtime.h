/*
 * The engine's side of the plugin API (sluice/plugin.h): the registry main()
 * fills, and how the proxy runs the phases of one request. Plugins never
 * include this header (core/ is not on their include path).
 *
 * Ownership: struct sl_plugin_ctx is embedded in (or allocated with) the
 * request and lives exactly as long as it; sl_plugin_ctx_release() must run
 * before the request is freed (it cancels a suspended hook and frees the
 * request's plugin memory). The ctx keeps pointers to the request's head
 * (method, path, headers) that the proxy keeps valid for the whole request.
 */
#ifndef SL_PLUGIN_RUNTIME_H
#define SL_PLUGIN_RUNTIME_H

#include "config.h"
#include "http1.h"
#include "router.h"
#include "sluice/plugin.h"

struct evbuffer;

/* ---- registry (main thread, before loading any configuration) ---------- */

/* `table` is NULL-terminated and must outlive the process. */
void sl_plugin_registry_set(const struct sl_plugin_ops *const *table);
const struct sl_plugin_ops *sl_plugin_registry_find(const char *name);
size_t sl_plugin_registry_size(void);

/*
 * Check every plugin instance of cfg (known name, valid config) and attach
 * the plugin runtime (parsed configs, per-route plan) to cfg. Fails with
 * "file:line:column: message" for the first bad instance.
 */
bool sl_plugins_attach(struct sl_config *cfg, struct sl_config_error *err);

/* Every plugin's shutdown hook (main, at exit). */
void sl_plugins_shutdown(void);

#define SL_PLUGIN_MAX_PER_REQUEST 32

enum sl_header_edit_op { SL_EDIT_SET, SL_EDIT_ADD, SL_EDIT_REMOVE };

struct sl_header_edit {
    enum sl_header_edit_op op;
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    struct sl_header_edit *next;
};

enum sl_plugin_phase_result {
    SL_PHASE_PROXY,     /* every hook ran: go on proxying */
    SL_PHASE_RESPOND,   /* a hook answered: send ctx's response */
    SL_PHASE_SUSPENDED, /* a hook suspended: the resume callback follows */
};

struct sl_plugin_mem;

struct sl_plugin_ctx {
    /* filled by the proxy before the first phase */
    const struct sl_config *cfg;
    struct event_base *base;
    void **worker_data; /* the worker's array, sl_plugin_registry_size() long */
    const char *request_id;
    const char *client_ip;
    const char *method;
    const char *scheme;
    const char *path;
    size_t path_len;
    const char *query; /* without '?' */
    size_t query_len;
    const struct sl_http_header *headers;
    size_t n_headers;
    /* called (from sl_plugin_resume) to continue a suspended request */
    void (*resume)(void *owner);
    void *owner;

    /* routing result (access and later) */
    const struct sl_route *route;
    const struct sl_service *service;
    const struct sl_consumer *consumer;
    const char *credential_id;

    /* response (header_filter and later) */
    int resp_status;
    const struct sl_http_header *resp_headers;
    size_t n_resp_headers;

    /* edits for the upstream request and the client's response */
    struct sl_header_edit *upstream_edits, *upstream_edits_tail;
    struct sl_header_edit *response_edits, *response_edits_tail;

    /* the upstream request line as plugins set it (NULL: the client's) */
    const char *up_method;
    const char *up_path; /* replaces the route/service mapping */
    size_t up_path_len;
    const char *up_query; /* without '?'; "" = none */
    size_t up_query_len;
    /* the route's regex captures (access and later); NULL for a prefix */
    const struct sl_router_match *match;

    /* sl_plugin_read_body: asked for by the current access hook; the proxy
     * collects the body, then calls sl_plugin_body_collected() */
    bool body_requested;
    bool body_in_ready; /* inside ready(): set_body is allowed */
    size_t body_max;
    sl_plugin_body_ready body_ready;
    void *body_arg;
    const char *up_body; /* the replacement body, or NULL */
    size_t up_body_len;

    /* a plugin's own response */
    bool responded;
    int respond_status;
    bool respond_is_error; /* Kong's error shape with respond_message */
    const char *respond_message;
    const char *respond_content_type;
    const char *respond_body;
    size_t respond_body_len;

    /* phase runner state */
    int phase;        /* private */
    size_t next_slot; /* private: index of the next plugin to run */
    bool suspended;   /* private */
    size_t n_ran;     /* instances whose access (or rewrite) ran */
    const void *ran_conf[SL_PLUGIN_MAX_PER_REQUEST];
    const struct sl_plugin_ops *ran_ops[SL_PLUGIN_MAX_PER_REQUEST];
    void (*cancel)(void *arg);
    void *cancel_arg;
    const struct sl_plugin_ops *current; /* the plugin whose hook runs */
    struct sl_plugin_mem *mem;
    void **request_data; /* per plugin (registry index), from mem */
};

/* Does cfg have any plugin instance at all (fast path: skip everything)? */
bool sl_plugins_active(const struct sl_config *cfg);

/* Rewrite: the global instances, before routing. */
enum sl_plugin_phase_result sl_plugins_rewrite(struct sl_plugin_ctx *ctx);
/* Access: after routing (ctx->route/service set). Call again after a
 * resume: it continues where it stopped. */
enum sl_plugin_phase_result sl_plugins_access(struct sl_plugin_ctx *ctx);
void sl_plugins_header_filter(struct sl_plugin_ctx *ctx);
void sl_plugins_body_filter(struct sl_plugin_ctx *ctx, const char *data, size_t len, bool last);
void sl_plugins_log(struct sl_plugin_ctx *ctx);

/* The body a plugin asked for is here (body NULL: larger than its bound).
 * Runs the plugin's ready() callback, which resumes the request. */
void sl_plugin_body_collected(struct sl_plugin_ctx *ctx, const char *body, size_t len);

/* Cancel a suspended hook and free the ctx's memory. Idempotent. */
void sl_plugin_ctx_release(struct sl_plugin_ctx *ctx);

/* A worker's array of per-plugin data slots (NULL when out of memory, then
 * sl_plugin_worker_data() returns NULL), and its release: each plugin's
 * free_worker_data runs, while the worker's event_base still exists. */
void **sl_plugins_new_worker_data(void);
void sl_plugins_free_worker_data(void **data);

/* Every registered plugin's metrics hook, into out (struct evbuffer). */
void sl_plugins_render_metrics(struct evbuffer *out);

/* Kong's default message for an error status (kong.response.error). */
const char *sl_plugin_default_message(int status);

#endif
