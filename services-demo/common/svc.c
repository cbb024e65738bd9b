#include "svc.h"

#include "bus.h"
#include "db.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/util.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY_BYTES (64 * 1024)
#define MAX_HEADER_BYTES (16 * 1024)
#define READY_TIMEOUT_MS 1000

static struct {
    struct svc_options opts;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    struct db *db;
    struct bus *bus;
    struct event *sig_term, *sig_int, *drain_timer, *drain_deadline;
    enum svc_log_level min_level;
    bool draining;
    int exit_status;
    long in_flight; /* requests and handler work not yet finished */
    long long drain_timeout_ms;
} g;

/* ---- small utilities ------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no entropy: nothing sensible to do */
        }
        p += got;
        n -= (size_t)got;
    }
}

void svc_random(void *buf, size_t n)
{
    random_bytes(buf, n);
}

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool all_zero(const char *s)
{
    for (; *s; s++)
        if (*s != '0')
            return false;
    return true;
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

void svc_uuid(char out[37])
{
    uint8_t b[16];
    char h[33];
    random_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    hex(b, sizeof b, h);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

bool svc_is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* ---- trace context ------------------------------------------------------------ */

bool svc_trace_parse(const char *h, struct svc_trace *out)
{
    /* version 00 only: 00-<32 hex>-<16 hex>-<2 hex>, lowercase, ids not zero */
    if (h == NULL || strlen(h) != 55 || h[0] != '0' || h[1] != '0' || h[2] != '-' || h[35] != '-' ||
        h[52] != '-')
        return false;
    if (!is_lower_hex(h + 3, 32) || !is_lower_hex(h + 36, 16) || !is_lower_hex(h + 53, 2))
        return false;
    memset(out, 0, sizeof *out);
    memcpy(out->trace_id, h + 3, 32);
    memcpy(out->parent_id, h + 36, 16);
    if (all_zero(out->trace_id) || all_zero(out->parent_id))
        return false;
    out->flags = (uint8_t)strtoul(h + 53, NULL, 16);
    return true;
}

void svc_trace_child(const struct svc_trace *parent, struct svc_trace *out)
{
    uint8_t b[16];
    struct svc_trace t;
    memset(&t, 0, sizeof t);
    if (parent && parent->trace_id[0]) {
        memcpy(t.trace_id, parent->trace_id, sizeof t.trace_id);
        memcpy(t.parent_id, parent->span_id[0] ? parent->span_id : parent->parent_id,
               sizeof t.parent_id);
        t.flags = parent->flags;
    } else {
        do {
            random_bytes(b, 16);
            hex(b, 16, t.trace_id);
        } while (all_zero(t.trace_id));
        t.flags = 1; /* we start the trace: sampled */
    }
    do {
        random_bytes(b, 8);
        hex(b, 8, t.span_id);
    } while (all_zero(t.span_id));
    *out = t;
}

void svc_trace_format(const struct svc_trace *t, char out[56])
{
    snprintf(out, 56, "00-%s-%s-%02x", t->trace_id, t->span_id, t->flags);
}

/* ---- logging ---------------------------------------------------------------------- */

static const char *level_name(enum svc_log_level l)
{
    switch (l) {
    case SVC_DEBUG:
        return "debug";
    case SVC_INFO:
        return "info";
    case SVC_WARN:
        return "warn";
    default:
        return "error";
    }
}

void svc_log(enum svc_log_level level, const struct svc_trace *t, const char *msg, json_t *fields)
{
    if (level < g.min_level) {
        json_decref(fields);
        return;
    }
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string(level_name(level)));
    json_object_set_new(line, "service", json_string(g.opts.name ? g.opts.name : "service"));
    json_object_set_new(line, "msg", json_string(msg));
    if (t && t->trace_id[0]) {
        json_object_set_new(line, "trace_id", json_string(t->trace_id));
        json_object_set_new(line, "span_id", json_string(t->span_id));
    }
    if (fields)
        json_object_update(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    if (text) {
        fprintf(stderr, "%s\n", text);
        free(text);
    }
    json_decref(line);
}

/* ---- environment ------------------------------------------------------------------ */

const char *svc_env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

long long svc_env_int(const char *name, long long fallback, long long min, long long max)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return fallback;
    long long out;
    if (!svc_parse_int(v, min, max, &out)) {
        fprintf(stderr, "%s: %s must be an integer from %lld to %lld, not '%s'\n",
                g.opts.name ? g.opts.name : "service", name, min, max, v);
        exit(2);
    }
    return out;
}

bool svc_parse_int(const char *text, long long min, long long max, long long *out)
{
    if (text == NULL || *text == '\0' || strlen(text) > 20)
        return false;
    const char *p = text;
    if (*p == '-')
        p++;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    if (*p == '\0')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- accessors ---------------------------------------------------------------------- */

struct event_base *svc_base(void)
{
    return g.base;
}
struct db *svc_db(void)
{
    return g.db;
}
struct bus *svc_bus(void)
{
    return g.bus;
}
const char *svc_name(void)
{
    return g.opts.name;
}
void svc_work_begin(void)
{
    g.in_flight++;
}
void svc_work_end(void)
{
    g.in_flight--;
}

/* ---- requests and replies ----------------------------------------------------------- */

const char *svc_param(struct svc_req *r, const char *name)
{
    return r->query_ok ? evhttp_find_header(&r->query, name) : NULL;
}

const char *svc_header(struct svc_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->http), name);
}

void svc_reply_header(struct svc_req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->http), name, value);
}

static void req_free(struct svc_req *r)
{
    if (r->data_free)
        r->data_free(r->data);
    evhttp_clear_headers(&r->query); /* initialised by evhttp_parse_query_str */
    free(r->path);
    free(r->path_copy);
    free(r);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

void svc_reply(struct svc_req *r, int status, const char *content_type, const char *body,
               size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->http);
    struct evbuffer *buf = evbuffer_new();
    if (content_type)
        evhttp_add_header(out, "Content-Type", content_type);
    if (body && len)
        evbuffer_add(buf, body, len);
    if (g.draining)
        evhttp_add_header(out, "Connection", "close");
    evhttp_send_reply(r->http, status, reason_phrase(status), buf);
    evbuffer_free(buf);
    int64_t took = now_us() - r->start_us;
    svc_log(status >= 500 ? SVC_WARN : SVC_INFO, &r->trace, "request",
            json_pack("{s:s,s:s,s:i,s:f}", "method", r->method_name, "path", r->path, "status",
                      status, "duration_ms", (double)took / 1000.0));
    req_free(r);
    svc_work_end();
}

void svc_reply_json(struct svc_req *r, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) {
        svc_reply(r, 500, "application/problem+json", NULL, 0);
        return;
    }
    svc_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

static const char *problem_title(int status)
{
    switch (status) {
    case 400:
        return "Request is not valid";
    case 404:
        return "Not found";
    case 405:
        return "Method not allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Request body too large";
    case 415:
        return "Unsupported media type";
    case 422:
        return "Unprocessable request";
    case 503:
        return "Service unavailable";
    default:
        return "Internal error";
    }
}

void svc_problem(struct svc_req *r, int status, const char *slug, const char *detail,
                 json_t *errors)
{
    char type[128];
    snprintf(type, sizeof type, "https://sluice.dev/problems/%s", slug);
    json_t *p = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", type, "title", problem_title(status),
                          "status", status, "detail", detail, "instance", r->path);
    if (errors)
        json_object_set_new(p, "errors", errors);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    svc_reply(r, status, "application/problem+json", text, text ? strlen(text) : 0);
    free(text);
}

void svc_method_not_allowed(struct svc_req *r, const char *allow)
{
    char detail[128];
    snprintf(detail, sizeof detail, "%s is not allowed here; allowed: %s", r->method_name, allow);
    svc_reply_header(r, "Allow", allow);
    svc_problem(r, 405, "method-not-allowed", detail, NULL);
}

void svc_unavailable(struct svc_req *r, const char *what, const char *error)
{
    svc_log(SVC_ERROR, &r->trace, "dependency failed",
            json_pack("{s:s,s:s}", "dependency", what, "error", error ? error : "queue full"));
    char detail[96];
    snprintf(detail, sizeof detail, "the %s is not available; try again", what);
    svc_problem(r, 503, "dependency-unavailable", detail, NULL);
}

void svc_query(struct svc_req *r, const char *sql, int n_params, const char *const *params,
               void (*cb)(PGresult *, const char *, const char *, void *))
{
    if (db_query(g.db, sql, n_params, params, cb, r))
        return;
    if (db_full(g.db))
        svc_problem(r, 503, "overloaded", "too many requests are waiting for the database", NULL);
    else
        svc_unavailable(r, "database", "no connection");
}

void svc_reply_row(struct svc_req *r, PGresult *res, const char *error, int status,
                   const char *not_found)
{
    if (res == NULL)
        svc_unavailable(r, "database", error);
    else if (PQntuples(res) == 0 || PQnfields(res) == 0)
        svc_problem(r, 404, "not-found", not_found, NULL);
    else {
        /* PostgreSQL's json text has spaces around every colon: re-encode
         * compactly (jansson keeps the members' order) */
        json_t *v = json_loadb(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), 0, NULL);
        if (v)
            svc_reply_json(r, status, v);
        else
            svc_reply(r, status, "application/json", PQgetvalue(res, 0, 0),
                      (size_t)PQgetlength(res, 0, 0));
    }
}

/* ---- validation --------------------------------------------------------------------- */

void svc_errors_init(struct svc_errors *e)
{
    e->list = json_array();
}

void svc_errors_add(struct svc_errors *e, const char *field, const char *message)
{
    json_array_append_new(e->list, json_pack("{s:s,s:s}", "field", field, "message", message));
}

bool svc_errors_any(const struct svc_errors *e)
{
    return json_array_size(e->list) > 0;
}

bool svc_errors_reply(struct svc_req *r, struct svc_errors *e)
{
    if (!svc_errors_any(e))
        return false;
    json_t *list = e->list;
    e->list = NULL;
    const char *first = json_string_value(json_object_get(json_array_get(list, 0), "message"));
    char detail[256];
    snprintf(detail, sizeof detail, "%s%s", first ? first : "invalid request",
             json_array_size(list) > 1 ? " (and more: see errors)" : "");
    svc_problem(r, 400, "validation-error", detail, list);
    return true;
}

void svc_errors_free(struct svc_errors *e)
{
    json_decref(e->list);
    e->list = NULL;
}

void svc_check_members(json_t *obj, const char *const *allowed, struct svc_errors *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown field '%.100s'", key);
            svc_errors_add(e, key, msg);
        }
    }
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

const char *svc_check_string(json_t *obj, const char *key, bool required, size_t min_chars,
                             size_t max_chars, struct svc_errors *e)
{
    char msg[160];
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        if (required) {
            snprintf(msg, sizeof msg, "%s is required", key);
            svc_errors_add(e, key, msg);
        }
        return NULL;
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "%s must be a string", key);
        svc_errors_add(e, key, msg);
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t n = utf8_chars(s);
    if (strlen(s) != json_string_length(v)) {
        snprintf(msg, sizeof msg, "%s must not contain NUL", key);
        svc_errors_add(e, key, msg);
        return NULL;
    }
    if (n < min_chars || n > max_chars) {
        snprintf(msg, sizeof msg, "%s must have %zu to %zu characters", key, min_chars, max_chars);
        svc_errors_add(e, key, msg);
        return NULL;
    }
    return s;
}

const char *svc_check_uuid(json_t *obj, const char *key, struct svc_errors *e)
{
    char msg[160];
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        snprintf(msg, sizeof msg, "%s is required", key);
        svc_errors_add(e, key, msg);
        return NULL;
    }
    if (!json_is_string(v) || !svc_is_uuid(json_string_value(v))) {
        snprintf(msg, sizeof msg, "%s must be a uuid", key);
        svc_errors_add(e, key, msg);
        return NULL;
    }
    return json_string_value(v);
}

const char *svc_check_enum(json_t *obj, const char *key, bool required, const char *const *values,
                           struct svc_errors *e)
{
    const char *s = svc_check_string(obj, key, required, 1, 64, e);
    if (s == NULL)
        return NULL;
    for (const char *const *v = values; *v; v++)
        if (strcmp(*v, s) == 0)
            return s;
    char msg[200];
    size_t n = (size_t)snprintf(msg, sizeof msg, "%s must be one of", key);
    for (const char *const *v = values; *v && n < sizeof msg; v++)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "%s %s", v == values ? "" : ",", *v);
    svc_errors_add(e, key, msg);
    return NULL;
}

bool svc_check_int(json_t *obj, const char *key, long long min, long long max, long long *out,
                   struct svc_errors *e)
{
    char msg[160];
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        snprintf(msg, sizeof msg, "%s is required", key);
        svc_errors_add(e, key, msg);
        return false;
    }
    /* jansson parses 12.0 as a real: integers only, as the schema says */
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", key, min, max);
        svc_errors_add(e, key, msg);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

const char *svc_require_uuid(struct svc_req *r, const char *field, const char *value)
{
    if (svc_is_uuid(value))
        return value;
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a uuid", field);
    svc_problem(r, 400, "validation-error", msg,
                json_pack("[{s:s,s:s}]", "field", field, "message", msg));
    return NULL;
}

bool svc_is_email(const char *s)
{
    /* deliberately simple: one @, a non-empty local part, a dotted domain
     * of letters, digits, hyphens; no spaces or control characters */
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') || strlen(s) > 254)
        return false;
    for (const char *p = s; p < at; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '"' || *p == '(' || *p == ')' ||
            *p == ',' || *p == ':' || *p == ';' || *p == '<' || *p == '>' || *p == '[' ||
            *p == ']' || *p == '\\')
            return false;
    const char *d = at + 1;
    size_t label = 0, labels = 0;
    for (const char *p = d;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || p[-1] == '-')
                return false;
            labels++;
            label = 0;
            if (*p == '\0')
                break;
            continue;
        }
        if (!(isalnum((unsigned char)*p) || (*p == '-' && label > 0)))
            return false;
        label++;
    }
    return labels >= 2;
}

json_t *svc_json_body(struct svc_req *r)
{
    const char *ct = svc_header(r, "Content-Type");
    size_t mt_len = ct ? strcspn(ct, ";") : 0;
    while (ct && mt_len > 0 && (ct[mt_len - 1] == ' ' || ct[mt_len - 1] == '\t'))
        mt_len--;
    if (ct == NULL || mt_len != strlen("application/json") ||
        strncasecmp(ct, "application/json", mt_len) != 0) {
        svc_problem(r, 415, "unsupported-media-type", "the body must be application/json", NULL);
        return NULL;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
    size_t len = evbuffer_get_length(in);
    const char *data = (const char *)evbuffer_pullup(in, -1);
    json_error_t jerr;
    json_t *body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL || !json_is_object(body)) {
        char detail[256];
        if (body == NULL)
            snprintf(detail, sizeof detail, "the body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
        else
            snprintf(detail, sizeof detail, "the body must be a JSON object");
        json_decref(body);
        svc_problem(r, 400, "validation-error", detail,
                    json_pack("[{s:s,s:s}]", "field", "", "message", detail));
        return NULL;
    }
    return body;
}

/* ---- /health and /ready ------------------------------------------------------------- */

/* The database and Redis checks run side by side; the answer goes out when
 * both are in or after READY_TIMEOUT_MS, whichever is first. The check is
 * freed when its last outstanding part has come back. */
struct ready_check {
    struct svc_req *r; /* NULL once answered */
    struct event *timer;
    int outstanding;
    bool db_ok, redis_ok;
};

static void ready_answer(struct ready_check *c)
{
    if (c->r == NULL)
        return;
    bool ok = c->db_ok && (c->redis_ok || !g.opts.uses_redis) && !g.draining;
    json_t *checks = json_pack("{s:s}", "database", c->db_ok ? "ok" : "fail");
    if (g.opts.uses_redis)
        json_object_set_new(checks, "redis", json_string(c->redis_ok ? "ok" : "fail"));
    json_t *body = json_pack("{s:s,s:o}", "status", ok ? "ready" : "unavailable", "checks", checks);
    if (g.draining)
        json_object_set_new(body, "draining", json_true());
    svc_reply_json(c->r, ok ? 200 : 503, body);
    c->r = NULL;
}

static void ready_part_done(struct ready_check *c)
{
    if (--c->outstanding > 0)
        return;
    ready_answer(c);
    event_free(c->timer);
    free(c);
}

static void ready_db_done(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct ready_check *c = arg;
    c->db_ok = res != NULL;
    ready_part_done(c);
}

static void ready_redis_done(bool ok, void *arg)
{
    struct ready_check *c = arg;
    c->redis_ok = ok;
    ready_part_done(c);
}

static void ready_timeout(evutil_socket_t fd, short what, void *arg)
{
    ready_answer(arg);
}

static void handle_ready(struct svc_req *r)
{
    struct ready_check *c = calloc(1, sizeof *c);
    if (c == NULL) {
        svc_problem(r, 503, "overloaded", "out of memory", NULL);
        return;
    }
    c->r = r;
    c->timer = evtimer_new(g.base, ready_timeout, c);
    struct timeval tv = {READY_TIMEOUT_MS / 1000, (READY_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->outstanding = 1; /* this function, so no callback frees c under us */
    c->outstanding++;
    if (!db_query(g.db, "SELECT 1", 0, NULL, ready_db_done, c))
        c->outstanding--;
    if (g.opts.uses_redis) {
        c->outstanding++;
        bus_ping(g.bus, ready_redis_done, c);
    }
    ready_part_done(c);
}

/* ---- /metrics ---------------------------------------------------------------------- */

/* The event consumer's counters (services that use Redis). */
static void handle_metrics(struct svc_req *r)
{
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        svc_problem(r, 503, "overloaded", "out of memory", NULL);
        return;
    }
    bus_write_metrics(g.bus, out);
    size_t len = evbuffer_get_length(out);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    svc_reply(r, 200, "text/plain; version=0.0.4", text ? text : "", len);
    evbuffer_free(out);
}

/* ---- dispatch ------------------------------------------------------------------------ */

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* Percent-decoded segments; false for a path no resource can have (more
 * segments than any route, or a %00 that would cut a segment short). */
static bool split_path(struct svc_req *r)
{
    r->path_copy = strdup(r->path);
    if (r->path_copy == NULL)
        return false;
    char *save = NULL;
    for (char *seg = strtok_r(r->path_copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (r->n_segments == SVC_MAX_SEGMENTS)
            return false;
        size_t len = 0;
        char *decoded = evhttp_uridecode(seg, 0, &len);
        if (decoded == NULL || len != strlen(decoded)) {
            free(decoded);
            return false;
        }
        /* decoded is never longer than seg: copy back, keep one buffer */
        memcpy(seg, decoded, len + 1);
        free(decoded);
        r->segments[r->n_segments++] = seg;
    }
    return true;
}

static void on_request(struct evhttp_request *http, void *arg)
{
    struct svc_req *r = calloc(1, sizeof *r);
    if (r == NULL) {
        evhttp_send_error(http, 503, "Service Unavailable");
        return;
    }
    svc_work_begin();
    r->http = http;
    r->start_us = now_us();
    r->method = evhttp_request_get_command(http);
    r->method_name = method_name(r->method);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(http);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    r->path = strdup(path && *path ? path : "/");
    struct svc_trace incoming;
    bool traced = svc_trace_parse(svc_header(r, "traceparent"), &incoming);
    svc_trace_child(traced ? &incoming : NULL, &r->trace); /* parent: the caller's span */
    svc_trace_format(&r->trace, r->traceparent);
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    r->query_ok = evhttp_parse_query_str(q ? q : "", &r->query) == 0;
    if (r->path == NULL) {
        svc_problem(r, 503, "overloaded", "out of memory", NULL);
        return;
    }
    if (!split_path(r)) {
        svc_problem(r, 404, "not-found", "no such resource", NULL);
        return;
    }
    if (!r->query_ok) {
        svc_problem(r, 400, "validation-error", "the query string is malformed",
                    json_pack("[{s:s,s:s}]", "field", "", "message", "malformed query string"));
        return;
    }
    if (r->n_segments == 1 && g.bus && strcmp(r->segments[0], "metrics") == 0) {
        if (r->method != EVHTTP_REQ_GET) {
            svc_method_not_allowed(r, "GET");
            return;
        }
        handle_metrics(r);
        return;
    }
    if (r->n_segments == 1 &&
        (strcmp(r->segments[0], "health") == 0 || strcmp(r->segments[0], "ready") == 0)) {
        if (r->method != EVHTTP_REQ_GET) {
            svc_method_not_allowed(r, "GET");
            return;
        }
        if (strcmp(r->segments[0], "health") == 0)
            svc_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
        else
            handle_ready(r);
        return;
    }
    g.opts.handler(r);
}

/* ---- start-up, drain ------------------------------------------------------------------- */

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    bool idle = g.in_flight <= 0 && db_pending(g.db) == 0 && (g.bus == NULL || bus_idle(g.bus));
    if (idle) {
        svc_log(SVC_INFO, NULL, "drained; exiting", NULL);
        event_base_loopexit(g.base, NULL);
    }
}

static void drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    svc_log(SVC_WARN, NULL, "drain timed out; exiting with work in flight",
            json_pack("{s:I}", "in_flight", (json_int_t)g.in_flight));
    g.exit_status = 1;
    event_base_loopexit(g.base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (g.draining) {
        if (sig == SIGINT) /* a second ^C: stop now */
            event_base_loopexit(g.base, NULL);
        return;
    }
    g.draining = true;
    svc_log(SVC_INFO, NULL, "draining", json_pack("{s:i}", "signal", (int)sig));
    /* stop accepting: new connections are refused, requests on open
     * connections are still answered (with Connection: close) */
    if (g.listener) {
        evhttp_del_accept_socket(g.http, g.listener);
        g.listener = NULL;
    }
    if (g.bus)
        bus_stop(g.bus);
    g.drain_timer = event_new(g.base, -1, EV_PERSIST, drain_check, NULL);
    struct timeval every = {0, 50 * 1000};
    event_add(g.drain_timer, &every);
    g.drain_deadline = evtimer_new(g.base, drain_deadline, NULL);
    struct timeval limit = {g.drain_timeout_ms / 1000, (g.drain_timeout_ms % 1000) * 1000};
    evtimer_add(g.drain_deadline, &limit);
}

static char *default_db_url(const char *dbname)
{
    char *url = malloc(strlen(dbname) + 32);
    if (url)
        sprintf(url, "postgresql:///%s", dbname);
    return url;
}

void svc_init(const struct svc_options *opts)
{
    g.opts = *opts;
    signal(SIGPIPE, SIG_IGN);
    const char *level = svc_env("LOG_LEVEL", "info");
    g.min_level = strcmp(level, "debug") == 0   ? SVC_DEBUG
                  : strcmp(level, "warn") == 0  ? SVC_WARN
                  : strcmp(level, "error") == 0 ? SVC_ERROR
                                                : SVC_INFO;
    int port = (int)svc_env_int("PORT", opts->default_port, 1, 65535);
    const char *addr = svc_env("LISTEN_ADDR", "127.0.0.1");
    int pool = (int)svc_env_int("DB_POOL", 4, 1, 64);
    int queue = (int)svc_env_int("DB_QUEUE", 1024, 1, 1000000);
    g.drain_timeout_ms = svc_env_int("DRAIN_TIMEOUT_MS", 10000, 0, 600000);
    char *fallback_db = default_db_url(opts->default_db);
    const char *db_url = svc_env("DB_URL", fallback_db);

    char err[512];
    /* several instances may start at once: CREATE ... IF NOT EXISTS is not
     * safe against itself, so the schema is made under an advisory lock */
    char *schema = NULL;
    if (opts->schema_sql) {
        const char *lock = "SELECT pg_advisory_lock(hashtext('sluice-schema'));";
        const char *unlock = "SELECT pg_advisory_unlock(hashtext('sluice-schema'));";
        schema = malloc(strlen(lock) + strlen(opts->schema_sql) + strlen(unlock) + 1);
        if (schema == NULL)
            exit(1);
        sprintf(schema, "%s%s%s", lock, opts->schema_sql, unlock);
    }
    if (schema && !db_run_startup_sql(db_url, schema, 60, err, sizeof err)) {
        svc_log(SVC_ERROR, NULL, "cannot prepare the database", json_pack("{s:s}", "error", err));
        exit(1);
    }
    free(schema);
    g.base = event_base_new();
    if (g.base == NULL)
        exit(1);
    g.db = db_open(g.base, db_url, opts->name, pool, queue);
    free(fallback_db);
    if (g.db == NULL) {
        svc_log(SVC_ERROR, NULL, "cannot open the database pool", NULL);
        exit(1);
    }
    if (opts->uses_redis) {
        g.bus = bus_open(g.base, svc_env("REDIS_URL", "redis://127.0.0.1:6379/0"), err, sizeof err);
        if (g.bus == NULL) {
            svc_log(SVC_ERROR, NULL, "bad REDIS_URL", json_pack("{s:s}", "error", err));
            exit(2);
        }
    }
    g.http = evhttp_new(g.base);
    evhttp_set_max_body_size(g.http, MAX_BODY_BYTES);
    evhttp_set_max_headers_size(g.http, MAX_HEADER_BYTES);
    evhttp_set_timeout(g.http, 30);
    evhttp_set_allowed_methods(g.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                           EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(g.http, on_request, NULL);
    g.listener = evhttp_bind_socket_with_handle(g.http, addr, (ev_uint16_t)port);
    if (g.listener == NULL) {
        svc_log(SVC_ERROR, NULL, "cannot listen",
                json_pack("{s:s,s:i,s:s}", "addr", addr, "port", port, "error", strerror(errno)));
        exit(1);
    }
    g.sig_term = evsignal_new(g.base, SIGTERM, on_signal, NULL);
    g.sig_int = evsignal_new(g.base, SIGINT, on_signal, NULL);
    event_add(g.sig_term, NULL);
    event_add(g.sig_int, NULL);
    svc_log(SVC_INFO, NULL, "listening", json_pack("{s:s,s:i}", "addr", addr, "port", port));
}

int svc_run(void)
{
    event_base_dispatch(g.base);
    /* callbacks still pending answer their requests while evhttp exists;
     * the pool refuses new statements before Redis' callbacks could queue any */
    db_close(g.db);
    if (g.bus)
        bus_close(g.bus);
    db_free(g.db);
    if (g.http)
        evhttp_free(g.http);
    if (g.drain_timer)
        event_free(g.drain_timer);
    if (g.drain_deadline)
        event_free(g.drain_deadline);
    event_free(g.sig_term);
    event_free(g.sig_int);
    event_base_free(g.base);
    return g.exit_status;
}
