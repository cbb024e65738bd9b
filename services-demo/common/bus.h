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
    bool redelivery;        /* taken again from our pending list (a retry or a claim) */
    long long deliveries;   /* Redis' delivery counter for the entry, this one included */
};

/* How a handler's work ended. */
enum bus_outcome {
    BUS_OK,        /* committed: the entry is acknowledged */
    BUS_TRANSIENT, /* a dependency failed (database down, timed out, overloaded): retried
                    * with backoff; the delivery does not count */
    BUS_PERMANENT, /* the event cannot be handled (invalid, a constraint refused it):
                    * retried; at EVENT_MAX_DELIVERIES moved to <stream>.dead */
};

/* A handler calls bus_done exactly once, when its transaction committed or
 * failed; `reason` (copied; may be NULL for BUS_OK) goes to the log and to
 * the dead letter. */
typedef void (*bus_handler)(struct bus_event *ev);
void bus_done(struct bus_event *ev, enum bus_outcome outcome, const char *reason);
/* bus_done for a failed statement: its SQLSTATE says transient or not. */
void bus_db_failed(struct bus_event *ev, const char *sqlstate, const char *error);
/* Whether a statement that failed with `sqlstate` may succeed later as it
 * is: "" (no answer from the server: connection lost, timed out, the pool
 * refused), classes 08 (connection), 40 (serialization, deadlock), 53
 * (resources), 57 (shutdown, cancelled by statement_timeout), 58 (system),
 * 55P03 (lock not available) and 25006 (read-only: a failover). Anything
 * else (22 data, 23 constraints, 42 ...) is permanent for this event. */
bool bus_sqlstate_transient(const char *sqlstate);

/* The step before retry `attempt` (1, 2, ...): min_ms doubled per attempt,
 * at most max_ms, then "equal jitter": half the step plus jitter spread
 * over the other half. */
long long bus_retry_delay_ms(long long min_ms, long long max_ms, long long attempt,
                             uint32_t jitter);

/* A handler's statement, with `ev` as the callback's argument; when the
 * pool refuses it the event is done (transient) and will come again. */
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

struct bus_retry_policy {
    long long max_deliveries; /* EVENT_MAX_DELIVERIES (5) */
    long long min_ms, max_ms; /* EVENT_RETRY_MIN_MS (500), EVENT_RETRY_MAX_MS (10000) */
};

/* Consume `streams` as consumer `consumer` of `group`. */
void bus_subscribe(struct bus *bus, const char *group, const char *consumer,
                   const char *const *streams, int n_streams, long long claim_idle_ms,
                   const struct bus_retry_policy *policy, bus_handler handler);

/* bus_subscribe for this service: group = the service's name, consumer =
 * CONSUMER_NAME or <service>-<hostname>-<pid>, CLAIM_IDLE_MS (30 s), the
 * policy from EVENT_MAX_DELIVERIES, EVENT_RETRY_MIN_MS, EVENT_RETRY_MAX_MS. */
void bus_subscribe_service(const char *const *streams, int n_streams, bus_handler handler);

/* The consumer's counters in Prometheus' text format (nothing when the
 * service consumes nothing). */
struct evbuffer;
void bus_write_metrics(const struct bus *bus, struct evbuffer *out);

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
