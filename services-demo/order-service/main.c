/* order-service: orders in database `orders`, the user checked through
 * user-service over HTTP, `order.created` published through the outbox, and
 * the payment events consumed to end the saga (CONFIRMED or CANCELLED).
 * See docs/services.md and openapi.yaml next to this file. */
#include "bus.h"
#include "db.h"
#include "svc.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ORDER_JSON                                                                                 \
    "json_build_object('id', id, 'user_id', user_id, 'total_cents', total_cents,"                  \
    " 'currency', currency, 'status', status, 'cancel_reason', cancel_reason,"                     \
    " 'created_at', created_at, 'updated_at', updated_at)"

#define USER_CHECK_TIMEOUT_S 3

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS orders ("
    " id uuid PRIMARY KEY,"
    " user_id uuid NOT NULL,"
    " total_cents bigint NOT NULL CHECK (total_cents > 0),"
    " currency text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'CONFIRMED', 'CANCELLED')),"
    " cancel_reason text,"
    /* a client's Idempotency-Key and what it asked for with it */
    " idempotency_key text UNIQUE,"
    " request_fingerprint text,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " updated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);" BUS_OUTBOX_SQL;

static const char *const ORDER_FIELDS[] = {"user_id", "total_cents", "currency", NULL};

static struct {
    char host[256];
    int port;
    char path_prefix[256];
} user_service;

/* The HTTP proxy of `http_proxy` (read as curl reads it), when user-service
 * is reached through one, e.g. a sidecar's outbound listener: the check
 * connects to it and sends the absolute-form target (RFC 9112 §3.2.2). */
static struct {
    bool on;
    char host[256];
    int port;
} proxy;

/* A POST /orders on its way: validated input, then the user check, then
 * the insert. */
struct new_order {
    char user_id[37];
    char total[24];
    char currency[4];
    char *key; /* Idempotency-Key or NULL */
    char fingerprint[96];
    bool looked_up;                 /* the key was looked up already (after a conflict) */
    struct evhttp_connection *conn; /* to user-service, while checking */
};

static void new_order_free(void *p)
{
    struct new_order *o = p;
    if (o) {
        free(o->key);
        free(o);
    }
}

static void check_user(struct svc_req *r);

/* ---- POST /orders ------------------------------------------------------------ */

static void on_existing(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct svc_req *r = arg;
    struct new_order *o = r->data;
    if (res == NULL) {
        svc_unavailable(r, "database", error);
        return;
    }
    if (PQntuples(res) == 0) {
        if (o->looked_up) { /* conflicted, then vanished: cannot happen without deletes */
            svc_problem(r, 409, "conflict", "the Idempotency-Key is in use; retry", NULL);
            return;
        }
        o->looked_up = true;
        check_user(r);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 1), o->fingerprint) != 0) {
        svc_problem(r, 409, "conflict",
                    "this Idempotency-Key was used for a different order request", NULL);
        return;
    }
    /* the same request again: the same order, nothing created */
    char location[64];
    snprintf(location, sizeof location, "/orders/%s", PQgetvalue(res, 0, 2));
    svc_reply_header(r, "Location", location);
    svc_reply_row(r, res, error, 200, "");
}

static void look_up_key(struct svc_req *r)
{
    struct new_order *o = r->data;
    const char *params[] = {o->key};
    svc_query(r,
              "SELECT " ORDER_JSON "::text, request_fingerprint, id FROM orders"
              " WHERE idempotency_key = $1",
              1, params, on_existing);
}

static void on_inserted(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct svc_req *r = arg;
    struct new_order *o = r->data;
    if (res == NULL && o->key && sqlstate && strcmp(sqlstate, DB_UNIQUE_VIOLATION) == 0) {
        /* the same key raced us: answer as a repeat */
        o->looked_up = true;
        look_up_key(r);
        return;
    }
    if (res && PQntuples(res) == 1) {
        char location[64];
        snprintf(location, sizeof location, "/orders/%s", PQgetvalue(res, 0, 1));
        svc_reply_header(r, "Location", location);
        svc_log(SVC_INFO, &r->trace, "order created",
                json_pack("{s:s,s:s}", "order_id", PQgetvalue(res, 0, 1), "user_id", o->user_id));
        bus_relay_kick(svc_bus());
    }
    svc_reply_row(r, res, error, 201, "");
}

static void insert_order(struct svc_req *r)
{
    struct new_order *o = r->data;
    char order_id[37], event_id[37];
    svc_uuid(order_id);
    svc_uuid(event_id);
    const char *params[] = {order_id,    o->user_id,    o->total,
                            o->currency, o->key,        o->key ? o->fingerprint : NULL,
                            event_id,    r->traceparent};
    /* one statement, so one transaction: the order and its event are
     * stored together or not at all (the transactional outbox) */
    svc_query(r,
              "WITH o AS (INSERT INTO orders (id, user_id, total_cents, currency, status,"
              "   idempotency_key, request_fingerprint)"
              "  VALUES ($1, $2, $3::bigint, $4, 'PENDING_PAYMENT', $5, $6) RETURNING *),"
              " e AS (INSERT INTO outbox (id, topic, payload, traceparent)"
              "  SELECT $7, 'order.created', jsonb_build_object('order_id', id, 'user_id', user_id,"
              "   'total_cents', total_cents, 'currency', currency), $8 FROM o)"
              " SELECT " ORDER_JSON "::text, id FROM o",
              8, params, on_inserted);
}

static void free_connection(evutil_socket_t fd, short what, void *conn)
{
    evhttp_connection_free(conn);
}

static void on_user_checked(struct evhttp_request *reply, void *arg)
{
    struct svc_req *r = arg;
    struct new_order *o = r->data;
    /* not from inside its own callback; and libevent 2.1 leaks a connection
     * that failed to connect even with evhttp_connection_free_on_completion */
    struct timeval now = {0, 0};
    if (event_base_once(svc_base(), -1, EV_TIMEOUT, free_connection, o->conn, &now) != 0)
        svc_log(SVC_ERROR, &r->trace, "cannot schedule freeing a connection", NULL);
    o->conn = NULL;
    int code = reply ? evhttp_request_get_response_code(reply) : 0;
    svc_log(SVC_DEBUG, &r->trace, "user-service answered",
            json_pack("{s:s,s:i}", "user_id", o->user_id, "status", code));
    if (code == 200) {
        insert_order(r);
    } else if (code == 404) {
        char detail[96];
        snprintf(detail, sizeof detail, "user %s does not exist", o->user_id);
        svc_problem(r, 422, "unknown-user", detail,
                    json_pack("[{s:s,s:s}]", "field", "user_id", "message", detail));
    } else {
        char why[64];
        snprintf(why, sizeof why, code ? "user-service answered %d" : "no answer", code);
        svc_unavailable(r, "user-service", why);
    }
}

static void check_user(struct svc_req *r)
{
    struct new_order *o = r->data;
    struct evhttp_connection *conn =
        evhttp_connection_base_new(svc_base(), NULL, proxy.on ? proxy.host : user_service.host,
                                   (ev_uint16_t)(proxy.on ? proxy.port : user_service.port));
    struct evhttp_request *call = conn ? evhttp_request_new(on_user_checked, r) : NULL;
    if (call == NULL) {
        if (conn)
            evhttp_connection_free(conn);
        svc_unavailable(r, "user-service", "out of memory");
        return;
    }
    evhttp_connection_set_timeout(conn, USER_CHECK_TIMEOUT_S);
    struct evkeyvalq *h = evhttp_request_get_output_headers(call);
    char host[300];
    snprintf(host, sizeof host, "%s:%d", user_service.host, user_service.port);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "traceparent", r->traceparent);
    char path[720];
    snprintf(path, sizeof path, "%s%s%s/users/%s", proxy.on ? "http://" : "", proxy.on ? host : "",
             user_service.path_prefix, o->user_id);
    if (evhttp_make_request(conn, call, EVHTTP_REQ_GET, path) != 0) {
        /* evhttp_make_request freed the request */
        evhttp_connection_free(conn);
        svc_unavailable(r, "user-service", "cannot send the request");
        return;
    }
    o->conn = conn; /* one connection per check, freed after its reply */
}

static bool valid_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 200)
        return false;
    for (; *k; k++)
        if (*k < 0x21 || *k > 0x7e)
            return false;
    return true;
}

static void create_order(struct svc_req *r)
{
    json_t *body = svc_json_body(r);
    if (body == NULL)
        return;
    struct svc_errors e;
    svc_errors_init(&e);
    svc_check_members(body, ORDER_FIELDS, &e);
    const char *user_id = svc_check_uuid(body, "user_id", &e);
    long long total = 0;
    bool total_ok = svc_check_int(body, "total_cents", 1, 100000000000LL, &total, &e);
    const char *currency = svc_check_string(body, "currency", true, 3, 3, &e);
    if (currency && !(currency[0] >= 'A' && currency[0] <= 'Z' && currency[1] >= 'A' &&
                      currency[1] <= 'Z' && currency[2] >= 'A' && currency[2] <= 'Z')) {
        svc_errors_add(&e, "currency", "currency must be three capital letters (ISO 4217)");
        currency = NULL;
    }
    const char *key = svc_header(r, "Idempotency-Key");
    if (key && !valid_key(key))
        svc_errors_add(&e, "Idempotency-Key",
                       "Idempotency-Key must be 1 to 200 visible characters");
    struct new_order *o = NULL;
    if (!svc_errors_any(&e) && user_id && total_ok && currency) {
        o = calloc(1, sizeof *o);
        if (o) {
            snprintf(o->user_id, sizeof o->user_id, "%s", user_id);
            for (int i = 0; o->user_id[i]; i++) /* one spelling for the fingerprint */
                if (o->user_id[i] >= 'A' && o->user_id[i] <= 'F')
                    o->user_id[i] = (char)(o->user_id[i] - 'A' + 'a');
            snprintf(o->total, sizeof o->total, "%lld", total);
            snprintf(o->currency, sizeof o->currency, "%s", currency);
            snprintf(o->fingerprint, sizeof o->fingerprint, "%s|%s|%s", o->user_id, o->total,
                     o->currency);
            o->key = key ? strdup(key) : NULL;
        }
    }
    json_decref(body);
    if (svc_errors_reply(r, &e)) {
        svc_errors_free(&e);
        new_order_free(o);
        return;
    }
    svc_errors_free(&e);
    if (o == NULL) {
        svc_problem(r, 503, "overloaded", "out of memory", NULL);
        return;
    }
    r->data = o;
    r->data_free = new_order_free;
    if (o->key)
        look_up_key(r);
    else
        check_user(r);
}

/* ---- GET ------------------------------------------------------------------------- */

static void on_order(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    svc_reply_row(arg, res, error, 200, "no order has this id");
}

static void list_orders(struct svc_req *r)
{
    const char *user_id = svc_require_uuid(r, "user_id", svc_param(r, "user_id"));
    if (user_id == NULL)
        return;
    const char *params[] = {user_id};
    svc_query(r,
              "SELECT json_build_object('items', coalesce(json_agg(" ORDER_JSON
              " ORDER BY created_at, id), '[]'::json))::text FROM orders WHERE user_id = $1",
              1, params, on_order);
}

static void handle(struct svc_req *r)
{
    if (r->n_segments == 0 || strcmp(r->segments[0], "orders") != 0 || r->n_segments > 2) {
        svc_problem(r, 404, "not-found", "no such resource", NULL);
        return;
    }
    if (r->n_segments == 1) {
        if (r->method == EVHTTP_REQ_POST)
            create_order(r);
        else if (r->method == EVHTTP_REQ_GET)
            list_orders(r);
        else
            svc_method_not_allowed(r, "GET, POST");
        return;
    }
    if (r->method != EVHTTP_REQ_GET) {
        svc_method_not_allowed(r, "GET");
        return;
    }
    if (svc_require_uuid(r, "id", r->segments[1]) == NULL)
        return;
    const char *params[] = {r->segments[1]};
    svc_query(r, "SELECT " ORDER_JSON "::text FROM orders WHERE id = $1", 1, params, on_order);
}

/* ---- the saga's end: payment events ----------------------------------------------- */

static void on_settled(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct bus_event *ev = arg;
    const char *order_id = json_string_value(json_object_get(ev->data, "order_id"));
    if (res == NULL) {
        svc_log(SVC_WARN, &ev->trace, "cannot settle the order",
                json_pack("{s:s,s:s}", "order_id", order_id, "error", error));
        bus_db_failed(ev, sqlstate, error);
        return;
    }
    if (PQntuples(res) == 1)
        svc_log(SVC_INFO, &ev->trace, "order settled",
                json_pack("{s:s,s:s,s:s}", "order_id", order_id, "status", PQgetvalue(res, 0, 0),
                          "event_id", ev->event_id));
    else /* already settled (a repeated event) or not ours: nothing to change */
        svc_log(SVC_INFO, &ev->trace, "payment event changes nothing",
                json_pack("{s:s,s:s}", "order_id", order_id, "event_id", ev->event_id));
    bus_done(ev, BUS_OK, NULL);
}

static void on_payment_event(struct bus_event *ev)
{
    const char *order_id = json_string_value(json_object_get(ev->data, "order_id"));
    bool succeeded = strcmp(ev->stream, "payment.succeeded") == 0;
    const char *reason = json_string_value(json_object_get(ev->data, "reason"));
    if (!svc_is_uuid(order_id)) {
        svc_log(SVC_ERROR, &ev->trace, "payment event without a valid order_id",
                json_pack("{s:s}", "event_id", ev->event_id));
        bus_done(ev, BUS_PERMANENT, "order_id is missing or not a uuid");
        return;
    }
    const char *params[] = {order_id, succeeded ? "CONFIRMED" : "CANCELLED",
                            succeeded ? NULL : (reason ? reason : "payment_failed")};
    /* only from PENDING_PAYMENT: a second delivery, or a late contradicting
     * event, changes nothing */
    bus_query(ev,
              "UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now()"
              " WHERE id = $1 AND status = 'PENDING_PAYMENT' RETURNING status",
              3, params, on_settled);
}

static void parse_user_service_url(const char *url)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    if (!u || !scheme || strcmp(scheme, "http") != 0 || !host || !*host) {
        fprintf(stderr,
                "order-service: USER_SERVICE_URL must be http://host[:port][/path], not '%s'\n",
                url);
        exit(2);
    }
    snprintf(user_service.host, sizeof user_service.host, "%s", host);
    user_service.port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    const char *path = evhttp_uri_get_path(u);
    snprintf(user_service.path_prefix, sizeof user_service.path_prefix, "%s", path ? path : "");
    size_t n = strlen(user_service.path_prefix);
    while (n > 0 && user_service.path_prefix[n - 1] == '/')
        user_service.path_prefix[--n] = '\0';
    evhttp_uri_free(u);
}

/* Whether `no_proxy` (curl's rules: a comma-separated list of names, each
 * matching itself and its subdomains, a leading dot ignored, `*` for every
 * host; no CIDR ranges) says to reach `host` directly. */
static bool proxy_bypassed(const char *host, const char *no_proxy)
{
    size_t host_len = strlen(host);
    const char *p = no_proxy;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ' && *end != '\t')
            end++;
        const char *name = p;
        size_t len = (size_t)(end - p);
        p = end;
        if (len == 1 && *name == '*')
            return true;
        if (len > 0 && *name == '.') {
            name++;
            len--;
        }
        if (len == 0 || len > host_len)
            continue;
        const char *tail = host + host_len - len;
        if (strncasecmp(tail, name, len) == 0 && (tail == host || tail[-1] == '.'))
            return true;
    }
    return false;
}

/* http_proxy: "[http://]host[:port][/]", port 1080 by default (curl's).
 * Only the lower-case name, as curl: HTTP_PROXY may come from a CGI
 * request's Proxy header ("httpoxy"). */
static void parse_http_proxy(void)
{
    const char *value = svc_env("http_proxy", NULL);
    if (value == NULL)
        return;
    const char *no_proxy = svc_env("no_proxy", svc_env("NO_PROXY", ""));
    if (proxy_bypassed(user_service.host, no_proxy))
        return;
    char url[600];
    int url_len = snprintf(url, sizeof url, "%s%s", strstr(value, "://") ? "" : "http://", value);
    struct evhttp_uri *u = url_len < (int)sizeof url ? evhttp_uri_parse(url) : NULL;
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (!u || !scheme || strcmp(scheme, "http") != 0 || !host || !*host ||
        strlen(host) >= sizeof proxy.host || evhttp_uri_get_userinfo(u) ||
        evhttp_uri_get_query(u) || (path && *path && strcmp(path, "/") != 0)) {
        if (u)
            evhttp_uri_free(u);
        fprintf(stderr,
                "order-service: http_proxy must be [http://]host[:port][/] (no credentials), "
                "not '%s'\n",
                value);
        exit(2);
    }
    proxy.on = true;
    snprintf(proxy.host, sizeof proxy.host, "%s", host);
    proxy.port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 1080;
    evhttp_uri_free(u);
}

int main(void)
{
    parse_user_service_url(svc_env("USER_SERVICE_URL", "http://127.0.0.1:8081"));
    parse_http_proxy();
    struct svc_options opts = {
        .name = "order-service",
        .default_port = 8082,
        .default_db = "orders",
        .schema_sql = SCHEMA,
        .handler = handle,
        .uses_redis = true,
    };
    svc_init(&opts);
    if (proxy.on)
        svc_log(SVC_INFO, NULL, "user-service is called through an HTTP proxy",
                json_pack("{s:s,s:i}", "proxy_host", proxy.host, "proxy_port", proxy.port));
    static const char *const topics[] = {"payment.succeeded", "payment.failed"};
    bus_relay_start(svc_bus(), svc_db());
    bus_subscribe_service(topics, 2, on_payment_event);
    return svc_run();
}
