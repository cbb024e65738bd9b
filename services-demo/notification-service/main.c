/* notification-service: one notification per event (order.created and the
 * payment events, consumer group notification-service), database
 * `notifications`; event_id is unique, so a repeated event records nothing.
 * See docs/services.md and openapi.yaml next to this file. */
#include "bus.h"
#include "db.h"
#include "svc.h"

#include <stdlib.h>
#include <string.h>

#define NOTIFICATION_JSON                                                                          \
    "json_build_object('id', id, 'user_id', user_id, 'order_id', order_id, 'event', event,"        \
    " 'event_id', event_id, 'message', message, 'created_at', created_at)"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS notifications ("
    " id uuid PRIMARY KEY,"
    " event_id uuid NOT NULL UNIQUE,"
    " user_id uuid NOT NULL,"
    " order_id uuid NOT NULL,"
    " event text NOT NULL,"
    " message text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, created_at);";

static void on_list(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    svc_reply_row(arg, res, error, 200, "");
}

static void handle(struct svc_req *r)
{
    if (r->n_segments != 1 || strcmp(r->segments[0], "notifications") != 0) {
        svc_problem(r, 404, "not-found", "no such resource", NULL);
        return;
    }
    if (r->method != EVHTTP_REQ_GET) {
        svc_method_not_allowed(r, "GET");
        return;
    }
    const char *user_id = svc_require_uuid(r, "user_id", svc_param(r, "user_id"));
    if (user_id == NULL)
        return;
    const char *params[] = {user_id};
    svc_query(r,
              "SELECT json_build_object('items', coalesce(json_agg(" NOTIFICATION_JSON
              " ORDER BY created_at, id), '[]'::json))::text FROM notifications WHERE user_id = $1",
              1, params, on_list);
}

static void on_recorded(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct bus_event *ev = arg;
    if (res == NULL) {
        svc_log(SVC_WARN, &ev->trace, "cannot record the notification",
                json_pack("{s:s,s:s}", "event_id", ev->event_id, "error", error));
        bus_db_failed(ev, sqlstate, error);
        return;
    }
    svc_log(SVC_INFO, &ev->trace,
            strcmp(PQcmdTuples(res), "1") == 0 ? "notification recorded"
                                               : "event already notified; nothing to do",
            json_pack("{s:s,s:s}", "event", ev->type, "event_id", ev->event_id));
    bus_done(ev, BUS_OK, NULL);
}

/* What the user is told, from the event. */
static bool compose(const struct bus_event *ev, char *out, size_t size)
{
    json_t *d = ev->data;
    const char *order_id = json_string_value(json_object_get(d, "order_id"));
    if (strcmp(ev->stream, "order.created") == 0) {
        json_t *total = json_object_get(d, "total_cents");
        const char *currency = json_string_value(json_object_get(d, "currency"));
        if (!json_is_integer(total) || !currency)
            return false;
        long long cents = json_integer_value(total);
        snprintf(out, size, "Order %s was placed: %lld.%02lld %.3s, waiting for payment.", order_id,
                 cents / 100, cents % 100, currency);
    } else if (strcmp(ev->stream, "payment.succeeded") == 0) {
        snprintf(out, size, "Payment for order %s succeeded; the order is confirmed.", order_id);
    } else {
        const char *reason = json_string_value(json_object_get(d, "reason"));
        snprintf(out, size, "Payment for order %s failed (%.100s); the order is cancelled.",
                 order_id, reason ? reason : "unknown reason");
    }
    return true;
}

static void on_event(struct bus_event *ev)
{
    const char *order_id = json_string_value(json_object_get(ev->data, "order_id"));
    const char *user_id = json_string_value(json_object_get(ev->data, "user_id"));
    char message[400];
    if (!svc_is_uuid(order_id) || !svc_is_uuid(user_id) || !compose(ev, message, sizeof message)) {
        svc_log(SVC_ERROR, &ev->trace, "event is not valid",
                json_pack("{s:s,s:s}", "event", ev->type, "event_id", ev->event_id));
        bus_done(ev, BUS_PERMANENT,
                 "order_id or user_id is not a uuid, or the payload lacks the topic's fields");
        return;
    }
    char id[37];
    svc_uuid(id);
    const char *params[] = {id, ev->event_id, user_id, order_id, ev->stream, message};
    bus_query(ev,
              "INSERT INTO notifications (id, event_id, user_id, order_id, event, message)"
              " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
              6, params, on_recorded);
}

int main(void)
{
    struct svc_options opts = {
        .name = "notification-service",
        .default_port = 8084,
        .default_db = "notifications",
        .schema_sql = SCHEMA,
        .handler = handle,
        .uses_redis = true,
    };
    svc_init(&opts);
    static const char *const topics[] = {"order.created", "payment.succeeded", "payment.failed"};
    bus_subscribe_service(topics, 3, on_event);
    return svc_run();
}
