/*
 * The plugin API: everything a plugin (in plugins/) may see of the engine.
 *
 * A plugin is one `const struct sl_plugin_ops` with a name, Kong's priority
 * and optional hooks for the phases of a request:
 *
 *   rewrite        before routing; only instances configured globally run
 *   access         after routing, in priority order (highest first), with
 *                  Kong's scoping: for each plugin the most specific enabled
 *                  instance for (route, service, consumer) is chosen when its
 *                  turn comes, so an auth plugin that sets the consumer
 *                  changes which instances of later plugins apply
 *   header_filter  the response head is about to go to the client
 *   body_filter    each piece of the response body (read only)
 *   log            the response is complete (or the request ended early)
 *
 * A hook of rewrite or access may end the request with a response of its
 * own (sl_plugin_respond*), or suspend it: it starts asynchronous work,
 * returns SL_PLUGIN_SUSPEND, and later calls sl_plugin_resume() from the
 * same worker's event loop. While suspended nothing else happens to the
 * request; if the client goes away first, the cancel callback the hook
 * registered runs instead, and the hook's work must not touch the request
 * afterwards.
 *
 * Ownership:
 *  - A plugin's parsed configuration (parse_config's `out`) belongs to the
 *    configuration snapshot and is freed with free_config when the last
 *    request using that snapshot is done. It is shared read-only by every
 *    worker thread.
 *  - struct sl_plugin_ctx belongs to the request; it dies with it. Memory
 *    from sl_plugin_alloc() lives exactly as long.
 *  - Per-worker plugin data (sl_plugin_worker_data) belongs to the worker;
 *    free_worker_data runs after the worker stopped, while its event_base
 *    still exists.
 *
 * The boundary: a plugin includes this header (and, through it,
 * sluice/config_types.h) and nothing else of the engine; plugins/ is built
 * without core/ on its include path. The configuration's entities
 * (struct sl_config, sl_route, sl_service, sl_consumer) are opaque here and
 * read through the accessors below. The registry and the phase runner are
 * the engine's side (core/plugin_runtime.h): main() passes one explicit
 * table of plugins to the engine before any configuration is loaded, and
 * core never includes plugins/.
 */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/config_types.h"

struct sl_config;
struct sl_plugin_ctx;
struct sl_plugin_metrics;
struct event_base;

enum sl_plugin_result {
    SL_PLUGIN_CONTINUE = 0, /* go on with the next plugin (or the response, if one was set) */
    SL_PLUGIN_SUSPEND,      /* async work started; sl_plugin_resume() follows */
};

struct sl_plugin_ops {
    const char *name; /* Kong's name, e.g. "request-termination" */
    int priority;     /* Kong's PRIORITY; higher runs first */

    /*
     * Check and convert one instance's `config` map (NULL when the file has
     * none). On error return false with sl_plugin_config_error(). Runs at
     * load, reload and `-t`, never on a request.
     */
    bool (*parse_config)(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                         struct sl_config_error *err);
    void (*free_config)(void *conf);

    enum sl_plugin_result (*rewrite)(struct sl_plugin_ctx *ctx, const void *conf);
    enum sl_plugin_result (*access)(struct sl_plugin_ctx *ctx, const void *conf);
    void (*header_filter)(struct sl_plugin_ctx *ctx, const void *conf);
    void (*body_filter)(struct sl_plugin_ctx *ctx, const void *conf, const char *data, size_t len,
                        bool last);
    void (*log)(struct sl_plugin_ctx *ctx, const void *conf);

    /* Per-worker data: created lazily by the plugin, freed here. */
    void (*free_worker_data)(void *data);

    /* Lines for GET /metrics (Prometheus text format, HELP and TYPE
     * included), from the plugin's own process-wide counters; runs on the
     * status thread, so it reads atomics only. */
    void (*metrics)(struct sl_plugin_metrics *out);

    /* Process exit, after every configuration was freed: stop the
     * plugin's own threads and free what they hold. */
    void (*shutdown)(void);
};

/* Append Prometheus text to a /metrics answer (printf-style). */
void sl_plugin_metrics_printf(struct sl_plugin_metrics *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- services of the engine (any thread) -------------------------------- */

enum sl_plugin_log_level {
    SL_PLUGIN_LOG_DEBUG,
    SL_PLUGIN_LOG_INFO,
    SL_PLUGIN_LOG_NOTICE,
    SL_PLUGIN_LOG_WARN,
    SL_PLUGIN_LOG_ERROR,
};

/* One line on the error log (stderr), when the node's log_level lets it
 * through. Safe from any thread (a plugin's own, too); control characters
 * are escaped, so request data cannot forge lines. */
void sl_plugin_log(enum sl_plugin_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The JSON string escaping of in (quotes, backslashes and control
 * characters; no surrounding quotes) into out, NUL terminated. Returns its
 * length, or -1 when out is too small. */
long sl_plugin_json_escape(const char *in, size_t in_len, char *out, size_t out_size);

/* ---- helpers for parse_config -------------------------------------------- */

/* Fill err with "file:line:column: plugin 'name': message" at node `at`
 * (the instance itself when at is NULL). Always returns false. */
bool sl_plugin_config_error(struct sl_config_error *err, const struct sl_config *cfg,
                            const struct sl_plugin_conf *pc, const struct sl_conf_value *at,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Every key of `config` must be in `known` (NULL-terminated). */
bool sl_plugin_config_known_keys(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                                 const char *const *known, struct sl_config_error *err);

/* Typed reads of config.<key>; absent or null keeps *out (the default). */
bool sl_plugin_config_int(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                          const char *key, long long min, long long max, long long *out,
                          struct sl_config_error *err);
bool sl_plugin_config_bool(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                           const char *key, bool *out, struct sl_config_error *err);
/* *out points into the snapshot (valid as long as the config). */
bool sl_plugin_config_string(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                             const char *key, const char **out, size_t *len,
                             struct sl_config_error *err);

/* config.<key> as a sequence of strings: *out is a malloc'ed array (the
 * caller frees it; NULL and *n 0 when absent or null) of strings that
 * point into the snapshot. */
bool sl_plugin_config_strings(const struct sl_plugin_conf *pc, const struct sl_config *cfg,
                              const char *key, const char ***out, size_t *n,
                              struct sl_config_error *err);

/* Is name a valid header name (an RFC 9110 token)? */
bool sl_plugin_is_header_name(const char *name);

/* ---- the configuration (parse_config and hooks; read only) --------------- */

/* Every string below points into the snapshot: valid as long as it (and so
 * as long as a parsed config or a request of that snapshot). The entity
 * accessors take NULL and then return NULL. */

/* The file the snapshot was loaded from, for messages that point at another
 * entity than the instance being parsed. */
const char *sl_plugin_config_source(const struct sl_config *cfg);

const char *sl_plugin_route_id(const struct sl_route *route);         /* may be NULL */
const char *sl_plugin_route_name(const struct sl_route *route);       /* may be NULL */
const char *sl_plugin_service_id(const struct sl_service *service);   /* may be NULL */
const char *sl_plugin_service_name(const struct sl_service *service); /* may be NULL */

/* A consumer always has an id (as written, or generated at load); username
 * or custom_id, or both. */
const char *sl_plugin_consumer_id(const struct sl_consumer *consumer);
const char *sl_plugin_consumer_username(const struct sl_consumer *consumer);
const char *sl_plugin_consumer_custom_id(const struct sl_consumer *consumer);

/* The first consumer, in file order, whose id or username is exactly the
 * len bytes of ref (Kong's lookup of a consumer reference, e.g. jwt's
 * `anonymous`); NULL when none. */
const struct sl_consumer *sl_plugin_find_consumer(const struct sl_config *cfg, const char *ref,
                                                  size_t len);

/* A `jwt_secrets` credential as the jwt plugin reads it: a copy the caller
 * owns, whose strings are the snapshot's. */
struct sl_plugin_jwt_secret {
    const char *key;                    /* the `iss` value it matches; unique */
    const char *secret;                 /* HS*: the shared secret; may be NULL */
    const char *rsa_public_key;         /* RS* and ES*: PEM; may be NULL */
    const char *algorithm;              /* "HS256", "RS256", "ES384" ...; NULL: HS256 */
    const struct sl_consumer *consumer; /* its owner; never NULL */
    int line, column;                   /* where it is declared in the file */
};

/* How many jwt_secrets cfg has, and the index-th of them (file order) into
 * *out; false (and *out untouched) when index is past the last. */
size_t sl_plugin_jwt_secret_count(const struct sl_config *cfg);
bool sl_plugin_jwt_secret_at(const struct sl_config *cfg, size_t index,
                             struct sl_plugin_jwt_secret *out);

/* ---- the request, from a hook --------------------------------------------- */

const char *sl_plugin_request_id(const struct sl_plugin_ctx *ctx);
const char *sl_plugin_client_ip(const struct sl_plugin_ctx *ctx);
/* "GET", the normalised path (no query), the raw query without '?' (may be empty) */
const char *sl_plugin_method(const struct sl_plugin_ctx *ctx);
const char *sl_plugin_path(const struct sl_plugin_ctx *ctx, size_t *len);
const char *sl_plugin_query(const struct sl_plugin_ctx *ctx, size_t *len);
/* "http" or "https" */
const char *sl_plugin_scheme(const struct sl_plugin_ctx *ctx);

/* Request header by name (case-insensitive): the index-th occurrence, or
 * NULL. sl_plugin_header_count tells how many there are. */
const char *sl_plugin_header(const struct sl_plugin_ctx *ctx, const char *name, size_t index,
                             size_t *len);
size_t sl_plugin_header_count(const struct sl_plugin_ctx *ctx, const char *name);

/* Query argument by name (raw, not percent-decoded): the first one, or NULL.
 * An argument without "=" has the value "" (len 0). */
const char *sl_plugin_query_arg(const struct sl_plugin_ctx *ctx, const char *name, size_t *len);

/* The request's entities (read them with the accessors of "the
 * configuration" below) and the snapshot it runs on. */
const struct sl_route *sl_plugin_route(const struct sl_plugin_ctx *ctx);     /* NULL in rewrite */
const struct sl_service *sl_plugin_service(const struct sl_plugin_ctx *ctx); /* NULL in rewrite */
const struct sl_consumer *sl_plugin_consumer(const struct sl_plugin_ctx *ctx);
const struct sl_config *sl_plugin_config(const struct sl_plugin_ctx *ctx);

/* Set the authenticated consumer (auth plugins); later plugins see it and
 * their instances are chosen with it. credential may be NULL. */
void sl_plugin_set_consumer(struct sl_plugin_ctx *ctx, const struct sl_consumer *consumer,
                            const char *credential_id);
const char *sl_plugin_credential_id(const struct sl_plugin_ctx *ctx);

/* ---- changing what goes upstream (rewrite/access) ------------------------ */

/* A request header as it will go upstream: the client's copies unless an
 * earlier edit replaced or removed them, then the values edits added. */
const char *sl_plugin_upstream_header(const struct sl_plugin_ctx *ctx, const char *name,
                                      size_t index, size_t *len);
size_t sl_plugin_upstream_header_count(const struct sl_plugin_ctx *ctx, const char *name);

/* Replace every copy of the header (set), add one more (add) or drop all
 * (remove). Names are case-insensitive. Values with CR, LF or NUL are
 * refused (returns false) and never reach the upstream. */
bool sl_plugin_upstream_header_set(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len);
bool sl_plugin_upstream_header_add(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len);
bool sl_plugin_upstream_header_remove(struct sl_plugin_ctx *ctx, const char *name);

/*
 * The request line sent upstream (rewrite/access). Each call replaces what
 * the previous one set; reads above (sl_plugin_method/path/query) keep
 * returning the client's original values.
 *  - method: an HTTP token (tchar only, 1-32 bytes), e.g. "POST".
 *  - path: the whole upstream path, sent as is instead of the route/service
 *    mapping (Kong's kong.service.request.set_path); must start with '/',
 *    at most 8 KiB, no byte <= 0x20, no 0x7f, '?' or '#'.
 *  - query: the raw query string without '?' ("" = send none); at most
 *    8 KiB, no byte <= 0x20, no 0x7f or '#'.
 * A refused value returns false and changes nothing.
 */
bool sl_plugin_upstream_set_method(struct sl_plugin_ctx *ctx, const char *method);
bool sl_plugin_upstream_set_path(struct sl_plugin_ctx *ctx, const char *path, size_t len);
bool sl_plugin_upstream_set_query(struct sl_plugin_ctx *ctx, const char *query, size_t len);

/* A regex capture of the matched route path (access and later): by group
 * name, or by number ("0" is the whole match, "1" the first group). NULL
 * when the route has no such group or it did not participate. */
const char *sl_plugin_uri_capture(const struct sl_plugin_ctx *ctx, const char *name, size_t *len);

/*
 * The request body (access only). sl_plugin_read_body asks the engine to
 * read the whole body from the client (de-chunked), up to max_bytes; the
 * hook then returns SL_PLUGIN_SUSPEND. Later, from the worker's event loop,
 * ready() runs once with:
 *   - body/len: the whole body (len 0 when the request has none), valid
 *     until ready() returns; or body NULL when it is larger than max_bytes
 *     (the body then goes upstream untouched, streamed as usual).
 * ready() may call sl_plugin_upstream_set_body() and must end by calling
 * sl_plugin_resume(). If the client goes away first, the cancel callback
 * runs instead (sl_plugin_on_cancel). Returns false (nothing started) when
 * called outside access or twice for one request.
 */
typedef void (*sl_plugin_body_ready)(struct sl_plugin_ctx *ctx, const char *body, size_t len,
                                     void *arg);
bool sl_plugin_read_body(struct sl_plugin_ctx *ctx, size_t max_bytes, sl_plugin_body_ready ready,
                         void *arg);
/* Replace the body sent upstream (copied; sent with Content-Length, any
 * Transfer-Encoding dropped). Only from a ready() callback. */
bool sl_plugin_upstream_set_body(struct sl_plugin_ctx *ctx, const char *body, size_t len);

/* ---- the response ------------------------------------------------------- */

/*
 * End the request with this response instead of proxying it (rewrite,
 * access). The body is copied. content_type may be NULL (no header).
 * The hook then returns SL_PLUGIN_CONTINUE; no later plugin's access runs.
 */
void sl_plugin_respond(struct sl_plugin_ctx *ctx, int status, const char *content_type,
                       const char *body, size_t len);
/* Kong's kong.response.error: {"message":"...","request_id":"..."} (or text
 * per Accept); message NULL = Kong's default for the status. */
void sl_plugin_respond_error(struct sl_plugin_ctx *ctx, int status, const char *message);

/* Headers added to the response the client gets (the upstream's, or one
 * from sl_plugin_respond*); from access, header_filter. */
bool sl_plugin_response_header_set(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len);
bool sl_plugin_response_header_add(struct sl_plugin_ctx *ctx, const char *name, const char *value,
                                   size_t len);
bool sl_plugin_response_header_remove(struct sl_plugin_ctx *ctx, const char *name);

/* The response status (header_filter, log); 0 before there is one. */
int sl_plugin_response_status(const struct sl_plugin_ctx *ctx);
/* A header of the upstream's response (header_filter only), or NULL. */
const char *sl_plugin_response_header(const struct sl_plugin_ctx *ctx, const char *name,
                                      size_t *len);

/* ---- suspension ---------------------------------------------------------- */

struct event_base *sl_plugin_event_base(const struct sl_plugin_ctx *ctx);
/* The worker's slot for this plugin's per-worker data (NULL at first). */
void **sl_plugin_worker_data(struct sl_plugin_ctx *ctx);
/* Register what to do if the request dies while suspended. */
void sl_plugin_on_cancel(struct sl_plugin_ctx *ctx, void (*cancel)(void *arg), void *arg);
/* Continue a suspended request (from the worker's event loop only). */
void sl_plugin_resume(struct sl_plugin_ctx *ctx);

/* This plugin's per-request slot (NULL at first; NULL when out of memory):
 * state that its hooks share over the phases of one request. */
void **sl_plugin_request_data(struct sl_plugin_ctx *ctx);

/* Memory that lives as long as the request. NULL when out of memory. */
void *sl_plugin_alloc(struct sl_plugin_ctx *ctx, size_t size);

#endif
