/* Events on Redis Streams: the outbox relay that publishes what a service
 * stored, and consumer groups that deliver events to handlers.
 *
 * Stream = topic. Entry fields: id (event uuid), type, time, traceparent,
 * data (JSON). Delivery is at least once; handlers must be idempotent. */
#ifndef SVC_BUS_H
#define SVC_BUS_H

#include "svc.h"

struct bus;

struct bus_event {
    const char *stream;   /* the topic */
    const char *entry_id; /* the stream entry id */
    const char *event_id;
    const char *type;
    const char *time;
    json_t *data;           /* a JSON object */
    struct svc_trace trace; /* a span of the producer's trace */
    char traceparent[56];   /* our span, for events the handler stores */
    bool redelivery;        /* read again from our pending list (a retry or a claim) */
};

/* A handler calls bus_done exactly once, when its transaction committed
 * (ok: the entry is acknowledged) or failed (it stays pending and is
 * delivered again after a pause). */
typedef void (*bus_handler)(struct bus_event *ev);
void bus_done(struct bus_event *ev, bool ok);

/* A handler's statement, with `ev` as the callback's argument; when the
 * pool refuses it the event is done (not ok) and will come again. */
void bus_query(struct bus_event *ev, const char *sql, int n_params, const char *const *params,
               void (*cb)(PGresult *, const char *, const char *, void *));

/* redis://[[user]:password@]host[:port][/db]; false with a message. */
struct bus_redis_url {
    char host[256];
    int port;     /* 6379 when absent */
    int database; /* 0 when absent */
    char *username, *password;
};
bool bus_parse_url(const char *url, struct bus_redis_url *out, char *err, size_t err_size);
void bus_redis_url_free(struct bus_redis_url *u);

struct bus *bus_open(struct event_base *base, const char *redis_url, char *err, size_t err_size);
void bus_close(struct bus *bus);

/* Consume `streams` as consumer `consumer` of `group`. */
void bus_subscribe(struct bus *bus, const char *group, const char *consumer,
                   const char *const *streams, int n_streams, long long claim_idle_ms,
                   bus_handler handler);

/* bus_subscribe for this service: group = the service's name, consumer =
 * CONSUMER_NAME or <service>-<hostname>-<pid>, CLAIM_IDLE_MS (30 s). */
void bus_subscribe_service(const char *const *streams, int n_streams, bus_handler handler);

/* Relay the `outbox` table of `db` to the streams: every 200 ms and after
 * bus_relay_kick (call it when a statement wrote to the outbox). */
void bus_relay_start(struct bus *bus, struct db *db);
void bus_relay_kick(struct bus *bus);

/* Readiness: PING answered within a second. cb(ok, arg). */
void bus_ping(struct bus *bus, void (*cb)(bool ok, void *arg), void *arg);

/* Drain: no new reads; true once nothing is in flight. */
void bus_stop(struct bus *bus);
bool bus_idle(const struct bus *bus);

/* The outbox table every publishing service creates. */
#define BUS_OUTBOX_SQL                                                                             \
    "CREATE TABLE IF NOT EXISTS outbox ("                                                          \
    " seq bigserial PRIMARY KEY,"                                                                  \
    " id uuid NOT NULL UNIQUE,"                                                                    \
    " topic text NOT NULL,"                                                                        \
    " payload jsonb NOT NULL,"                                                                     \
    " traceparent text NOT NULL DEFAULT '',"                                                       \
    " created_at timestamptz NOT NULL DEFAULT now(),"                                              \
    " claimed_until timestamptz,"                                                                  \
    " published_at timestamptz);"                                                                  \
    "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;"

#endif
