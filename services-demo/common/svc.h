/* The runtime the reference services share: one libevent loop per process,
 * an evhttp server, JSON logs, RFC 9457 problems, W3C trace context,
 * request validation helpers, an asynchronous PostgreSQL pool (db.h) and
 * Redis Streams with a transactional outbox (bus.h).
 *
 * A service is one process and one event loop, so the state here is
 * process-wide. Nothing on a request path blocks: queries, Redis commands
 * and HTTP calls to other services all complete through callbacks. */
#ifndef SVC_H
#define SVC_H

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

struct db;
struct bus;

enum svc_log_level { SVC_DEBUG, SVC_INFO, SVC_WARN, SVC_ERROR };

/* W3C trace context: the trace this work belongs to, our own span, and the
 * span that called us (empty when we started the trace). */
struct svc_trace {
    char trace_id[33];
    char span_id[17];
    char parent_id[17];
    uint8_t flags;
};

/* Parses a traceparent header value; false if absent or malformed. */
bool svc_trace_parse(const char *header, struct svc_trace *out);
/* A new span in `parent`'s trace (or a new trace when parent is NULL). */
void svc_trace_child(const struct svc_trace *parent, struct svc_trace *out);
/* "00-<trace>-<span>-<flags>": what goes out on calls and events we make. */
void svc_trace_format(const struct svc_trace *t, char out[56]);

/* One JSON line on stderr: time, level, service, msg, trace_id (when t is
 * given) and the members of `fields` (stolen; may be NULL). */
void svc_log(enum svc_log_level level, const struct svc_trace *t, const char *msg, json_t *fields);

/* Environment with a default; integers are range-checked (exit on error). */
const char *svc_env(const char *name, const char *fallback);
long long svc_env_int(const char *name, long long fallback, long long min, long long max);

/* Random bytes from the kernel (getrandom). */
void svc_random(void *buf, size_t n);
/* Random (version 4) uuid, lowercase text. */
void svc_uuid(char out[37]);
/* A canonical 8-4-4-4-12 hex uuid (either case). */
bool svc_is_uuid(const char *s);

/* ---- requests ------------------------------------------------------------ */

#define SVC_MAX_SEGMENTS 8

struct svc_req {
    struct evhttp_request *http;
    enum evhttp_cmd_type method;
    const char *method_name;
    char *path;                       /* raw path, owned */
    char *segments[SVC_MAX_SEGMENTS]; /* into path_copy, percent-decoded */
    int n_segments;
    char *path_copy;
    struct evkeyvalq query;
    bool query_ok; /* the query string parsed */
    struct svc_trace trace;
    char traceparent[56]; /* our span, for outgoing calls and events */
    int64_t start_us;
    void *data; /* the handler's own state */
    void (*data_free)(void *);
};

typedef void (*svc_handler)(struct svc_req *r);

struct svc_options {
    const char *name; /* "user-service": logs, consumer names */
    int default_port;
    const char *default_db; /* database name when DB_URL is not set */
    const char *schema_sql; /* run once at start, under an advisory lock */
    svc_handler handler;    /* every request but /health and /ready */
    bool uses_redis;
};

/* Reads the environment, connects, creates the schema (waiting for the
 * database up to 60 s: this is start-up, not a request path), listens.
 * Exits with a message on a configuration error. */
void svc_init(const struct svc_options *opts);
/* Runs the loop until SIGTERM/SIGINT has drained everything; returns the
 * exit status. */
int svc_run(void);

struct event_base *svc_base(void);
struct db *svc_db(void);
struct bus *svc_bus(void);
const char *svc_name(void);

/* Work that must finish before a drain may exit (handlers, relays). */
void svc_work_begin(void);
void svc_work_end(void);

/* Query parameter, NULL when absent (or the query did not parse). */
const char *svc_param(struct svc_req *r, const char *name);
/* Header of the request, NULL when absent. */
const char *svc_header(struct svc_req *r, const char *name);

/* Replies end the request: they log it and free `r`. */
void svc_reply(struct svc_req *r, int status, const char *content_type, const char *body,
               size_t len);
void svc_reply_json(struct svc_req *r, int status, json_t *body /* stolen */);
void svc_reply_header(struct svc_req *r, const char *name, const char *value); /* before a reply */
/* RFC 9457: type https://sluice.dev/problems/<slug>, title, status, detail,
 * instance; `errors` (stolen, may be NULL) lists {field, message}. */
void svc_problem(struct svc_req *r, int status, const char *slug, const char *detail,
                 json_t *errors);
/* 405 with Allow. */
void svc_method_not_allowed(struct svc_req *r, const char *allow);
/* 503 for a failed database or Redis call. */
void svc_unavailable(struct svc_req *r, const char *what, const char *error);

/* Queues a statement whose callback gets `r` as its argument; answers 503
 * when the pool refuses it. */
void svc_query(struct svc_req *r, const char *sql, int n_params, const char *const *params,
               void (*cb)(PGresult *, const char *, const char *, void *));
/* Answers a statement's outcome: the JSON text in the first column of the
 * first row with `status`, 404 `not_found` when there is no row, 503 when
 * the statement failed. */
void svc_reply_row(struct svc_req *r, PGresult *res, const char *error, int status,
                   const char *not_found);

/* ---- validation ------------------------------------------------------------ */

/* The request's JSON object body, or NULL after replying 415/400. */
json_t *svc_json_body(struct svc_req *r);

/* Field checks append {field, message} to `errors` and return NULL/false
 * when the field is wrong. Optional fields return NULL when absent. */
struct svc_errors {
    json_t *list;
};
void svc_errors_init(struct svc_errors *e);
void svc_errors_add(struct svc_errors *e, const char *field, const char *message);
bool svc_errors_any(const struct svc_errors *e);
/* Replies 400 with the collected errors; true if there were any. */
bool svc_errors_reply(struct svc_req *r, struct svc_errors *e);
void svc_errors_free(struct svc_errors *e);

void svc_check_members(json_t *obj, const char *const *allowed, struct svc_errors *e);
const char *svc_check_string(json_t *obj, const char *key, bool required, size_t min_chars,
                             size_t max_chars, struct svc_errors *e);
const char *svc_check_uuid(json_t *obj, const char *key, struct svc_errors *e);
const char *svc_check_enum(json_t *obj, const char *key, bool required, const char *const *values,
                           struct svc_errors *e);
bool svc_check_int(json_t *obj, const char *key, long long min, long long max, long long *out,
                   struct svc_errors *e);
bool svc_is_email(const char *s);
/* `value` (a path segment or query parameter named `field`) if it is a
 * uuid; otherwise answers 400 and returns NULL. */
const char *svc_require_uuid(struct svc_req *r, const char *field, const char *value);
/* A decimal integer in [min, max] from a query parameter. */
bool svc_parse_int(const char *text, long long min, long long max, long long *out);

#endif
