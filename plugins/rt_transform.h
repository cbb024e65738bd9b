/*
 * request-transformer's transforms as pure functions (plugins/rt_transform.c):
 * the configuration, templates, and Kong's edits on headers, query strings
 * and JSON / form bodies. Nothing here sees a request: what a transform
 * reads (the client's headers, query, captures, consumer) and the header
 * edits it makes go through struct rt_env, which the plugin
 * (request_transformer.c) fills from the plugin API and the unit suite
 * (tests/unit/check_request_transformer.c) from tables.
 *
 * Ownership: an rt_conf belongs to whoever made it (rt_conf_new) and is
 * read-only afterwards, shared by every worker. Strings returned by
 * rt_render, rt_transform_query, rt_transform_body and rt_form_into_query
 * are malloc'ed and belong to the caller.
 */
#ifndef SL_RT_TRANSFORM_H
#define SL_RT_TRANSFORM_H

#include <stdbool.h>
#include <stddef.h>

enum rt_target { RT_HEADERS, RT_QUERY, RT_BODY, RT_N_TARGETS };
enum rt_op { RT_REMOVE, RT_RENAME, RT_REPLACE, RT_ADD, RT_APPEND, RT_N_OPS };

extern const char *const rt_op_names[RT_N_OPS];         /* "remove", ... */
extern const char *const rt_target_names[RT_N_TARGETS]; /* "headers", "querystring", "body" */

struct rt_conf;
struct rt_template;

/* What a transform reads and where header edits go. Any callback may be
 * NULL (then nothing is found, or the edit is dropped). */
struct rt_env {
    void *arg;
    /* the client's request, for templates */
    const char *(*header)(void *arg, const char *name, size_t *len);
    const char *query; /* raw, without '?' */
    size_t query_len;
    const char *(*capture)(void *arg, const char *name, size_t *len);
    const char *consumer_id, *consumer_username, *consumer_custom_id, *credential_key;
    /* the request headers as they will go upstream (after earlier plugins) */
    size_t (*upstream_count)(void *arg, const char *name);
    const char *(*upstream_get)(void *arg, const char *name, size_t index, size_t *len);
    void (*upstream_set)(void *arg, const char *name, const char *value, size_t len);
    void (*upstream_add)(void *arg, const char *name, const char *value, size_t len);
    void (*upstream_remove)(void *arg, const char *name);
    /* an edit skipped because its rendered value has CR, LF or NUL
     * (what: "header", "query argument", "body field") */
    void (*refused)(void *arg, const char *what, const char *name);
};

/* ---- configuration ------------------------------------------------------- */

struct rt_conf *rt_conf_new(void);
void rt_conf_free(struct rt_conf *c);

/* Each returns false with a static reason in *why. */
/* http_method: upper-case letters, 1-31 of them (Kong's "^%u+$"). */
bool rt_conf_set_method(struct rt_conf *c, const char *method, const char **why);
/* replace.uri: a template. */
bool rt_conf_set_uri(struct rt_conf *c, const char *uri, size_t len, const char **why);
/* One entry of <op>.<target>: "name" for remove, "old:new" for rename,
 * "name:value" otherwise (Kong's "^([^:]+):*(.-)$": the colons right after
 * the name are all separators). Header names must be tokens; values of
 * replace/add/append must not be empty and are templates. */
bool rt_conf_add(struct rt_conf *c, enum rt_op op, enum rt_target target, const char *entry,
                 size_t len, const char **why);

const char *rt_conf_method(const struct rt_conf *c); /* NULL when not set */
bool rt_conf_has_uri(const struct rt_conf *c);
bool rt_conf_has_edits(const struct rt_conf *c, enum rt_target target);
/* Kong's transform_method: changing the method to GET, HEAD or TRACE moves
 * the arguments of a form body into the query string. */
bool rt_conf_method_takes_form(const struct rt_conf *c);

/* ---- templates ----------------------------------------------------------- */

/* "text $(expr) text" with expr one of headers.x, headers["x"],
 * query_params.x, query_params["x"], uri_captures.x, uri_captures[1],
 * consumer.id, consumer.username, consumer.custom_id, credential.key. */
struct rt_template *rt_template_compile(const char *src, size_t len, const char **why);
void rt_template_free(struct rt_template *t);
/* The rendered value (NUL-terminated, *len without it); a missing value
 * renders as "". NULL when out of memory. May contain CR, LF or NUL:
 * callers check (rt_value_is_safe). */
char *rt_template_render(const struct rt_template *t, const struct rt_env *env, size_t *len);
/* No CR, LF or NUL: the value cannot add a line to a request head. */
bool rt_value_is_safe(const char *value, size_t len);

/* replace.uri rendered; NULL when not configured, unusable (empty, CR, LF,
 * NUL) or out of memory. */
char *rt_render_uri(const struct rt_conf *c, const struct rt_env *env, size_t *len);

/* ---- transforms ---------------------------------------------------------- */

/* Kong's header edits, judged on the upstream headers; the changes go out
 * through env->upstream_set/add/remove. */
void rt_transform_headers(const struct rt_conf *c, const struct rt_env *env);

/* The new query string for `query` (raw, without '?'), or NULL when the
 * instance changes nothing in it (or out of memory). Untouched arguments
 * keep their order and encoding; new values are percent-encoded. */
char *rt_transform_query(const struct rt_conf *c, const struct rt_env *env, const char *query,
                         size_t len, size_t *out_len);

enum rt_body_type { RT_BODY_OTHER, RT_BODY_JSON, RT_BODY_FORM };
/* By Content-Type (NULL: none): application/json,
 * application/x-www-form-urlencoded, anything else (multipart too). */
enum rt_body_type rt_body_type(const char *content_type, size_t len);

/* The new body, or NULL when it stays as it is (nothing changed, not a JSON
 * object, another type, out of memory). An empty JSON body is {}. */
char *rt_transform_body(const struct rt_conf *c, const struct rt_env *env, enum rt_body_type type,
                        const char *body, size_t len, size_t *out_len);

/* The query string with a form body's arguments appended (Kong's
 * GET conversion); NULL when the body has none (or out of memory). */
char *rt_form_into_query(const char *query, size_t qlen, const char *body, size_t blen,
                         size_t *out_len);

#endif
