/* payment-service: consumes order.created, charges a simulated card
 * (amounts over PAYMENT_LIMIT_CENTS fail), stores the payment and its
 * payment.succeeded / payment.failed event in one statement, database
 * `payments`. payments.order_id is unique: an order is charged once.
 * See docs/services.md and openapi.yaml next to this file. */
#include "bus.h"
#include "db.h"
#include "svc.h"

#include <stdlib.h>
#include <string.h>

#define PAYMENT_JSON                                                                               \
    "json_build_object('id', id, 'order_id', order_id, 'user_id', user_id,"                        \
    " 'amount_cents', amount_cents, 'currency', currency, 'status', status,"                       \
    " 'reason', reason, 'created_at', created_at)"

static const char SCHEMA[] = "CREATE TABLE IF NOT EXISTS payments ("
                             " id uuid PRIMARY KEY,"
                             " order_id uuid NOT NULL UNIQUE,"
                             " user_id uuid NOT NULL,"
                             " amount_cents bigint NOT NULL,"
                             " currency text NOT NULL,"
                             " status text NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),"
                             " reason text,"
                             " created_at timestamptz NOT NULL DEFAULT now());" BUS_OUTBOX_SQL;

static long long payment_limit_cents;

/* ---- HTTP ---------------------------------------------------------------------------- */

static void on_payment(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    svc_reply_row(arg, res, error, 200, "no payment has this id");
}

static void handle(struct svc_req *r)
{
    if (r->n_segments == 0 || strcmp(r->segments[0], "payments") != 0 || r->n_segments > 2) {
        svc_problem(r, 404, "not-found", "no such resource", NULL);
        return;
    }
    if (r->method != EVHTTP_REQ_GET) {
        svc_method_not_allowed(r, "GET");
        return;
    }
    const char *field = r->n_segments == 2 ? "id" : "order_id";
    const char *id = r->n_segments == 2 ? r->segments[1] : svc_param(r, "order_id");
    if (svc_require_uuid(r, field, id) == NULL)
        return;
    const char *params[] = {id};
    if (r->n_segments == 2)
        svc_query(r, "SELECT " PAYMENT_JSON "::text FROM payments WHERE id = $1", 1, params,
                  on_payment);
    else
        svc_query(r,
                  "SELECT json_build_object('items', coalesce(json_agg(" PAYMENT_JSON
                  "), '[]'::json))::text FROM payments WHERE order_id = $1",
                  1, params, on_payment);
}

/* ---- order.created ------------------------------------------------------------------- */

static void on_charged(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct bus_event *ev = arg;
    const char *order_id = json_string_value(json_object_get(ev->data, "order_id"));
    if (res == NULL) {
        svc_log(SVC_WARN, &ev->trace, "cannot store the payment",
                json_pack("{s:s,s:s}", "order_id", order_id, "error", error));
        bus_db_failed(ev, sqlstate, error);
        return;
    }
    if (PQntuples(res) == 1) {
        svc_log(SVC_INFO, &ev->trace, "payment stored",
                json_pack("{s:s,s:s,s:s}", "order_id", order_id, "payment_id",
                          PQgetvalue(res, 0, 0), "status", PQgetvalue(res, 0, 1)));
        bus_relay_kick(svc_bus());
    } else {
        svc_log(SVC_INFO, &ev->trace, "order already charged; nothing to do",
                json_pack("{s:s,s:s}", "order_id", order_id, "event_id", ev->event_id));
    }
    bus_done(ev, BUS_OK, NULL);
}

static void on_order_created(struct bus_event *ev)
{
    json_t *d = ev->data;
    const char *order_id = json_string_value(json_object_get(d, "order_id"));
    const char *user_id = json_string_value(json_object_get(d, "user_id"));
    const char *currency = json_string_value(json_object_get(d, "currency"));
    json_t *total = json_object_get(d, "total_cents");
    if (!svc_is_uuid(order_id) || !svc_is_uuid(user_id) || !currency || strlen(currency) != 3 ||
        !json_is_integer(total) || json_integer_value(total) <= 0) {
        svc_log(SVC_ERROR, &ev->trace, "order.created is not valid",
                json_pack("{s:s}", "event_id", ev->event_id));
        bus_done(
            ev, BUS_PERMANENT,
            "order_id, user_id, currency (3 letters) or total_cents (> 0) is missing or wrong");
        return;
    }
    /* the simulated card: deterministic, so a replay decides the same */
    long long amount = json_integer_value(total);
    bool ok = amount <= payment_limit_cents;
    char payment_id[37], event_id[37], amount_text[24];
    svc_uuid(payment_id);
    svc_uuid(event_id);
    snprintf(amount_text, sizeof amount_text, "%lld", amount);
    const char *params[] = {payment_id,
                            order_id,
                            user_id,
                            amount_text,
                            currency,
                            ok ? "SUCCEEDED" : "FAILED",
                            ok ? NULL : "amount_over_limit",
                            event_id,
                            ev->traceparent};
    /* the payment and its event in one statement; ON CONFLICT: an order
     * already charged gets neither a second payment nor a second event */
    bus_query(ev,
              "WITH p AS (INSERT INTO payments (id, order_id, user_id, amount_cents, currency,"
              "   status, reason) VALUES ($1, $2, $3, $4::bigint, $5, $6, $7)"
              "  ON CONFLICT (order_id) DO NOTHING RETURNING *),"
              " e AS (INSERT INTO outbox (id, topic, payload, traceparent)"
              "  SELECT $8, CASE WHEN status = 'SUCCEEDED' THEN 'payment.succeeded'"
              "   ELSE 'payment.failed' END,"
              "   CASE WHEN status = 'SUCCEEDED' THEN jsonb_build_object('order_id', order_id,"
              "    'user_id', user_id, 'payment_id', id, 'amount_cents', amount_cents,"
              "    'currency', currency)"
              "   ELSE jsonb_build_object('order_id', order_id, 'user_id', user_id,"
              "    'payment_id', id, 'reason', reason) END, $9 FROM p)"
              " SELECT id, status FROM p",
              9, params, on_charged);
}

int main(void)
{
    payment_limit_cents = svc_env_int("PAYMENT_LIMIT_CENTS", 100000, 0, 100000000000LL);
    struct svc_options opts = {
        .name = "payment-service",
        .default_port = 8083,
        .default_db = "payments",
        .schema_sql = SCHEMA,
        .handler = handle,
        .uses_redis = true,
    };
    svc_init(&opts);
    static const char *const topics[] = {"order.created"};
    bus_relay_start(svc_bus(), svc_db());
    bus_subscribe_service(topics, 1, on_order_created);
    return svc_run();
}
