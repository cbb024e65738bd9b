#include "bus.h"

#include "db.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define READ_COUNT 32
#define READ_BLOCK_MS "2000"
#define RETRY_PAUSE_MS 1000
#define RELAY_BATCH 64
#define RELAY_EVERY_MS 200
#define STREAM_MAXLEN "100000"
#define PING_TIMEOUT_MS 1000
#define OUTBOX_KEEP_S 3600

/* One Redis connection that reconnects by itself. */
struct rconn {
    struct bus *bus;
    const char *role;
    redisAsyncContext *ac;
    bool ready; /* connected (AUTH/SELECT are queued ahead of everything) */
    int backoff_ms;
    struct event *retry;
    void (*on_ready)(struct bus *bus);
};

struct subscription;

struct bus {
    struct event_base *base;
    struct bus_redis_url redis;
    struct rconn cmd;   /* XADD, XACK, XPENDING, XCLAIM, XAUTOCLAIM, PING, XGROUP */
    struct rconn block; /* XREADGROUP BLOCK: it would hold up everything else */
    int cmd_outstanding;
    bool stopping, closing;
    struct subscription *sub;
    /* outbox relay */
    struct db *db;
    struct event *relay_timer, *relay_now;
    bool relay_running;
    int relay_xadds;
    struct relay_row *rows;
    int n_rows;
    time_t last_cleanup;
};

struct relay_row {
    long long seq;
    bool published;
};

static void rconn_connect(struct rconn *rc);

/* ---- URL ------------------------------------------------------------------------ */

bool bus_parse_url(const char *url, struct bus_redis_url *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, err_size, "REDIS_URL must start with redis:// (got '%s')", url);
        return false;
    }
    p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                out->username = strndup(p, (size_t)(colon - p));
            out->password = strndup(colon + 1, (size_t)(at - colon - 1));
        } else {
            out->password = strndup(p, (size_t)(at - p));
        }
        p = at + 1;
    }
    size_t host_len = strcspn(p, ":/");
    if (host_len == 0 || host_len >= sizeof out->host) {
        snprintf(err, err_size, "REDIS_URL has no host: '%s'", url);
        bus_redis_url_free(out);
        return false;
    }
    memcpy(out->host, p, host_len);
    out->host[host_len] = '\0';
    p += host_len;
    out->port = 6379;
    long long v;
    if (*p == ':') {
        char num[8] = {0};
        size_t n = strcspn(p + 1, "/");
        if (n == 0 || n >= sizeof num) {
            snprintf(err, err_size, "REDIS_URL has a bad port: '%s'", url);
            bus_redis_url_free(out);
            return false;
        }
        memcpy(num, p + 1, n);
        if (!svc_parse_int(num, 1, 65535, &v)) {
            snprintf(err, err_size, "REDIS_URL has a bad port: '%s'", url);
            bus_redis_url_free(out);
            return false;
        }
        out->port = (int)v;
        p += 1 + n;
    }
    if (*p == '/' && p[1]) {
        if (!svc_parse_int(p + 1, 0, 10000, &v)) {
            snprintf(err, err_size, "REDIS_URL has a bad database number: '%s'", url);
            bus_redis_url_free(out);
            return false;
        }
        out->database = (int)v;
    }
    return true;
}

void bus_redis_url_free(struct bus_redis_url *u)
{
    free(u->username);
    free(u->password);
    u->username = u->password = NULL;
}

/* ---- connections -------------------------------------------------------------------- */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    rconn_connect(arg);
}

static void schedule_retry(struct rconn *rc)
{
    if (rc->bus->closing)
        return;
    rc->backoff_ms = rc->backoff_ms ? (rc->backoff_ms * 2 > 2000 ? 2000 : rc->backoff_ms * 2) : 100;
    struct timeval tv = {rc->backoff_ms / 1000, (rc->backoff_ms % 1000) * 1000};
    evtimer_add(rc->retry, &tv);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (status != REDIS_OK) {
        svc_log(SVC_WARN, NULL, "redis: cannot connect",
                json_pack("{s:s,s:s}", "connection", rc->role, "error", ac->errstr));
        rc->ac = NULL; /* hiredis frees the context after this callback */
        rc->ready = false;
        schedule_retry(rc);
        return;
    }
    rc->ready = true;
    rc->backoff_ms = 0;
    if (rc->on_ready)
        rc->on_ready(rc->bus);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (!rc->bus->closing)
        svc_log(SVC_WARN, NULL, "redis: connection lost",
                json_pack("{s:s,s:s}", "connection", rc->role, "error",
                          status == REDIS_OK ? "closed" : ac->errstr));
    rc->ac = NULL;
    rc->ready = false;
    schedule_retry(rc);
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        svc_log(SVC_ERROR, NULL, "redis: AUTH/SELECT failed",
                json_pack("{s:s,s:s}", "command", (const char *)priv, "error", r->str));
}

static void rconn_connect(struct rconn *rc)
{
    struct bus *bus = rc->bus;
    if (rc->ac || bus->closing)
        return;
    redisAsyncContext *ac = redisAsyncConnect(bus->redis.host, bus->redis.port);
    if (ac == NULL || ac->err) {
        svc_log(SVC_WARN, NULL, "redis: cannot connect",
                json_pack("{s:s,s:s}", "connection", rc->role, "error",
                          ac ? ac->errstr : "out of memory"));
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    if (redisLibeventAttach(ac, bus->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rc->ac = ac;
    /* queued ahead of any other command on this connection */
    if (bus->redis.password) {
        if (bus->redis.username)
            redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s %s", bus->redis.username,
                              bus->redis.password);
        else
            redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s", bus->redis.password);
    }
    if (bus->redis.database)
        redisAsyncCommand(ac, on_setup_reply, "SELECT", "SELECT %d", bus->redis.database);
}

/* A command on the command connection, counted so a drain can wait for
 * the acknowledgements it sends. cb gets NULL when Redis is unreachable. */
typedef void (*cmd_cb)(struct bus *bus, redisReply *reply, void *arg);
struct cmd_call {
    struct bus *bus;
    cmd_cb cb;
    void *arg;
};

static void on_cmd_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cmd_call *call = priv;
    call->bus->cmd_outstanding--;
    if (call->cb)
        call->cb(call->bus, reply, call->arg);
    free(call);
}

static bool cmd_send(struct bus *bus, cmd_cb cb, void *arg, int argc, const char **argv,
                     const size_t *lens)
{
    if (!bus->cmd.ready || bus->cmd.ac == NULL)
        return false;
    struct cmd_call *call = malloc(sizeof *call);
    if (call == NULL)
        return false;
    *call = (struct cmd_call){bus, cb, arg};
    if (redisAsyncCommandArgv(bus->cmd.ac, on_cmd_reply, call, argc, argv, lens) != REDIS_OK) {
        free(call);
        return false;
    }
    bus->cmd_outstanding++;
    return true;
}

/* ---- consuming ------------------------------------------------------------------------ */

/* Failed events stay pending. They are retried by a "retry pass" that
 * reads our pending list with XPENDING (entry, idle time, delivery count)
 * and takes the entries that are due with XCLAIM, so a failing entry never
 * stops the reads of new ones (the pass runs beside them). A permanent
 * failure keeps the delivery Redis counted; at max_deliveries the entry
 * goes to <stream>.dead. A transient failure gives its delivery back
 * (XCLAIM ... RETRYCOUNT n-1 JUSTID) and puts the consumer in "outage":
 * no new reads, one probe entry every backoff interval until a handler
 * succeeds again. */

struct stream_counts {
    unsigned long long handled, transient, permanent, dead;
};

struct pending_entry {
    char id[48];
    long long idle_ms, count;
    bool chosen;
};

struct pass;
struct pass_stream {
    struct pass *pass;
    int index;
    int n;
    struct pending_entry *e;
};

struct pass {
    bool probe; /* in outage: the oldest entry only */
    int refs;   /* replies still to come in the current stage */
    bool delivered;
    bool more; /* entries left for the next pass (the batch was full) */
    struct pass_stream s[8];
};

struct subscription {
    char *group;
    char *consumer;
    char **streams;
    int n_streams;
    long long claim_idle_ms;
    struct bus_retry_policy policy;
    bus_handler handler;
    bool groups_ready;
    int groups_waiting;
    bool reading;      /* an XREADGROUP of new entries is in flight */
    struct pass *pass; /* a retry pass in flight */
    bool retry_due;    /* run a retry pass as soon as nothing is in flight */
    int64_t retry_at_us;
    bool outage;
    long long outage_ms;
    /* since the last moment nothing was in flight */
    bool success_seen, transient_seen, pass_delivered;
    int in_batch;       /* handlers not yet done */
    int dead_in_flight; /* dead letters not yet stored and acknowledged */
    struct event *next_read;
    struct event *retry_timer;
    struct event *claim_timer;
    struct stream_counts counts[8];
};

struct bus_event_owned {
    struct bus_event ev; /* first: handlers get &ev */
    struct bus *bus;
    char *stream, *entry_id, *event_id, *type, *time;
    /* the entry as stored, for its dead letter */
    int n_fields;
    char **fields;
    size_t *field_lens;
};

static void consume(struct bus *bus);

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long bus_retry_delay_ms(long long min_ms, long long max_ms, long long attempt, uint32_t jitter)
{
    long long b = min_ms;
    for (long long i = 1; i < attempt && b < max_ms; i++)
        b *= 2;
    if (b > max_ms)
        b = max_ms;
    /* "equal jitter": at least half the step, so a retry never comes at
     * once, and spread over the other half so consumers do not retry in
     * step */
    long long half = b / 2;
    return half + (long long)(jitter % (uint32_t)(b - half + 1));
}

bool bus_sqlstate_transient(const char *sqlstate)
{
    if (sqlstate == NULL || *sqlstate == '\0')
        return true; /* no answer at all: connection lost, timed out, pool refused */
    static const char *const classes[] = {"08", "40", "53", "57", "58"};
    for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
        if (strncmp(sqlstate, classes[i], 2) == 0)
            return true;
    /* lock_not_available; read_only_sql_transaction (a failover in progress) */
    return strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "25006") == 0;
}

/* FNV-1a of the entry id and its count: a jitter that is the same for one
 * entry in every pass (no state to keep) but differs between entries. */
static uint32_t entry_jitter(const char *id, long long count)
{
    uint32_t h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return (h ^ (uint32_t)count) * 16777619u;
}

/* How long an entry with `count` counted deliveries waits before the next. */
static long long entry_due_ms(const struct subscription *sub, const char *id, long long count)
{
    return bus_retry_delay_ms(sub->policy.min_ms, sub->policy.max_ms, count < 1 ? 1 : count,
                              entry_jitter(id, count));
}

static int stream_index(const struct subscription *sub, const char *stream)
{
    for (int i = 0; i < sub->n_streams; i++)
        if (strcmp(sub->streams[i], stream) == 0)
            return i;
    return 0;
}

static void schedule_read(struct bus *bus, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(bus->sub->next_read, &tv);
}

static void on_next_read(evutil_socket_t fd, short what, void *arg)
{
    consume(arg);
}

/* A retry pass in `ms`; an earlier one already armed stays, unless `force`. */
static void arm_retry(struct bus *bus, long long ms, bool force)
{
    struct subscription *sub = bus->sub;
    if (bus->closing)
        return;
    if (ms < 1)
        ms = 1;
    int64_t at = mono_us() + ms * 1000;
    if (!force && sub->retry_at_us != 0 && sub->retry_at_us <= at)
        return;
    sub->retry_at_us = at;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(sub->retry_timer, &tv);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    bus->sub->retry_at_us = 0;
    bus->sub->retry_due = true;
    consume(bus);
}

static void on_ack(struct bus *bus, redisReply *r, void *arg)
{
    if (bus->closing)
        return;
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        svc_log(SVC_WARN, NULL, "redis: XACK failed; the event will be delivered again",
                json_pack("{s:s}", "error", r ? r->str : "no connection"));
}

static void ack(struct bus *bus, const char *stream, const char *entry_id)
{
    const char *argv[] = {"XACK", stream, bus->sub->group, entry_id};
    if (!cmd_send(bus, on_ack, NULL, 4, argv, NULL))
        svc_log(SVC_WARN, NULL, "redis: cannot send XACK; the event will be delivered again",
                json_pack("{s:s,s:s}", "stream", stream, "entry", entry_id));
}

/* ---- dead letters ---- */

struct dead_call {
    char *stream, *entry_id, *reason;
    long long deliveries;
};

static void dead_call_free(struct dead_call *d)
{
    free(d->stream);
    free(d->entry_id);
    free(d->reason);
    free(d);
}

static void on_dead_added(struct bus *bus, redisReply *r, void *arg)
{
    struct dead_call *d = arg;
    bus->sub->dead_in_flight--;
    if (bus->closing) {
        dead_call_free(d);
        return;
    }
    if (r && r->type == REDIS_REPLY_STRING) {
        /* acknowledged only once the dead letter is stored: a failure in
         * between leaves the entry pending, and the next pass moves it
         * again (a dead letter may be stored twice, never lost) */
        ack(bus, d->stream, d->entry_id);
        bus->sub->counts[stream_index(bus->sub, d->stream)].dead++;
        char dead[300];
        snprintf(dead, sizeof dead, "%s.dead", d->stream);
        svc_log(SVC_ERROR, NULL, "event dead-lettered",
                json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "stream", d->stream, "entry", d->entry_id,
                          "dead_stream", dead, "dead_entry", r->str, "reason", d->reason,
                          "deliveries", (json_int_t)d->deliveries));
    } else {
        svc_log(SVC_WARN, NULL, "redis: cannot store the dead letter; it stays pending",
                json_pack("{s:s,s:s,s:s}", "stream", d->stream, "entry", d->entry_id, "error",
                          r && r->str ? r->str : "no connection"));
        arm_retry(bus, RETRY_PAUSE_MS, false);
    }
    dead_call_free(d);
    consume(bus); /* a pass may have waited for it */
}

/* XADD <stream>.dead: the entry's own fields, then why and where from. */
static void dead_letter(struct bus *bus, const char *stream, const char *entry_id, int n_fields,
                        const char *const *fields, const size_t *lens, const char *reason,
                        long long deliveries)
{
    struct subscription *sub = bus->sub;
    char dead[300], count[24];
    snprintf(dead, sizeof dead, "%s.dead", stream);
    snprintf(count, sizeof count, "%lld", deliveries);
    const char *tail[] = {"dead_reason",     reason,     "dead_original_id", entry_id,
                          "dead_group",      sub->group, "dead_consumer",    sub->consumer,
                          "dead_deliveries", count};
    int n_tail = (int)(sizeof tail / sizeof *tail);
    int argc = 6 + n_fields + n_tail;
    const char **argv = malloc((size_t)argc * sizeof *argv);
    size_t *argl = malloc((size_t)argc * sizeof *argl);
    struct dead_call *d = calloc(1, sizeof *d);
    if (d) {
        d->stream = strdup(stream);
        d->entry_id = strdup(entry_id);
        d->reason = strdup(reason);
        d->deliveries = deliveries;
    }
    bool sent = false;
    if (argv && argl && d && d->stream && d->entry_id && d->reason) {
        const char *head[] = {"XADD", dead, "MAXLEN", "~", STREAM_MAXLEN, "*"};
        int k = 0;
        for (int i = 0; i < 6; i++, k++) {
            argv[k] = head[i];
            argl[k] = strlen(head[i]);
        }
        for (int i = 0; i < n_fields; i++, k++) {
            argv[k] = fields[i];
            argl[k] = lens[i];
        }
        for (int i = 0; i < n_tail; i++, k++) {
            argv[k] = tail[i];
            argl[k] = strlen(tail[i]);
        }
        sent = cmd_send(bus, on_dead_added, d, argc, argv, argl);
        if (sent)
            sub->dead_in_flight++;
    }
    free(argv);
    free(argl);
    if (!sent) {
        if (d)
            dead_call_free(d);
        svc_log(SVC_WARN, NULL, "redis: cannot send the dead letter; the event stays pending",
                json_pack("{s:s,s:s}", "stream", stream, "entry", entry_id));
        arm_retry(bus, RETRY_PAUSE_MS, false);
    }
}

/* dead_letter with the fields of a reply entry. */
static void dead_letter_reply(struct bus *bus, const char *stream, const char *entry_id,
                              redisReply *fields, const char *reason, long long deliveries)
{
    int n = 0;
    const char **f = NULL;
    size_t *l = NULL;
    if (fields && fields->type == REDIS_REPLY_ARRAY && fields->elements > 0) {
        f = malloc(fields->elements * sizeof *f);
        l = malloc(fields->elements * sizeof *l);
        if (f && l)
            for (size_t i = 0; i < fields->elements; i++) {
                redisReply *x = fields->element[i];
                f[n] = x->type == REDIS_REPLY_STRING ? x->str : "";
                l[n++] = x->type == REDIS_REPLY_STRING ? x->len : 0;
            }
    }
    dead_letter(bus, stream, entry_id, n, f, l, reason, deliveries);
    free(f);
    free(l);
}

/* A permanent failure: counted; dead-lettered at the limit, else retried. */
static void failed_permanently(struct bus *bus, const struct svc_trace *trace, const char *stream,
                               const char *entry_id, long long deliveries, const char *reason,
                               int n_fields, const char *const *fields, const size_t *lens,
                               redisReply *reply_fields)
{
    struct subscription *sub = bus->sub;
    sub->counts[stream_index(sub, stream)].permanent++;
    if (deliveries >= sub->policy.max_deliveries) {
        if (reply_fields)
            dead_letter_reply(bus, stream, entry_id, reply_fields, reason, deliveries);
        else
            dead_letter(bus, stream, entry_id, n_fields, fields, lens, reason, deliveries);
        return;
    }
    long long wait = entry_due_ms(sub, entry_id, deliveries);
    svc_log(SVC_WARN, trace, "event failed; it will be delivered again",
            json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "stream", stream, "entry", entry_id, "reason",
                      reason, "deliveries", (json_int_t)deliveries, "max_deliveries",
                      (json_int_t)sub->policy.max_deliveries, "retry_ms", (json_int_t)wait));
    arm_retry(bus, wait, false);
}

static void on_given_back(struct bus *bus, redisReply *r, void *arg)
{
    if (!bus->closing && (r == NULL || r->type == REDIS_REPLY_ERROR))
        svc_log(SVC_WARN, NULL, "redis: cannot give the delivery back; it counts",
                json_pack("{s:s}", "error", r ? r->str : "no connection"));
}

/* A transient failure does not count: the entry's delivery counter goes
 * back to what it was before this delivery (and its idle time restarts). */
static void give_back(struct bus *bus, const char *stream, const char *entry_id,
                      long long deliveries)
{
    struct subscription *sub = bus->sub;
    char count[24];
    snprintf(count, sizeof count, "%lld", deliveries > 0 ? deliveries - 1 : 0);
    const char *argv[] = {"XCLAIM", stream,       sub->group, sub->consumer, "0",
                          entry_id, "RETRYCOUNT", count,      "JUSTID"};
    cmd_send(bus, on_given_back, NULL, 9, argv, NULL);
}

/* Nothing in flight: decide what comes next from what the handlers said. */
static void batch_done(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    if (sub->in_batch > 0 || sub->pass)
        return;
    if (sub->transient_seen && !sub->success_seen) {
        /* every handler that ended failed on a dependency: stop reading new
         * events (they would fail the same way), probe with backoff */
        if (!sub->outage)
            svc_log(SVC_WARN, NULL, "events fail on a dependency; new events wait, retrying", NULL);
        sub->outage_ms = sub->outage
                             ? (sub->outage_ms * 2 > sub->policy.max_ms ? sub->policy.max_ms
                                                                        : sub->outage_ms * 2)
                             : sub->policy.min_ms;
        sub->outage = true;
        uint32_t j;
        svc_random(&j, sizeof j);
        arm_retry(bus, bus_retry_delay_ms(sub->outage_ms, sub->outage_ms, 1, j), true);
    } else if (sub->success_seen && (sub->outage || sub->transient_seen)) {
        if (sub->outage)
            svc_log(SVC_INFO, NULL, "events are handled again; resuming", NULL);
        sub->outage = false;
        sub->outage_ms = 0;
        /* what failed transiently is retried after one short step */
        if (sub->transient_seen)
            arm_retry(bus, sub->policy.min_ms, false);
        else
            sub->retry_due = true;
    }
    if (sub->pass_delivered && !sub->outage)
        sub->retry_due = true; /* maybe more is due than one pass took */
    if (sub->outage && sub->retry_at_us == 0 && !sub->retry_due) {
        uint32_t j;
        svc_random(&j, sizeof j);
        arm_retry(bus, bus_retry_delay_ms(sub->outage_ms, sub->outage_ms, 1, j), true);
    }
    sub->success_seen = sub->transient_seen = sub->pass_delivered = false;
    consume(bus);
}

static void owned_free(struct bus_event_owned *o)
{
    json_decref(o->ev.data);
    free(o->stream);
    free(o->entry_id);
    free(o->event_id);
    free(o->type);
    free(o->time);
    for (int i = 0; i < o->n_fields; i++)
        free(o->fields[i]);
    free(o->fields);
    free(o->field_lens);
    free(o);
}

void bus_done(struct bus_event *ev, enum bus_outcome outcome, const char *reason)
{
    struct bus_event_owned *o = (struct bus_event_owned *)ev;
    struct bus *bus = o->bus;
    struct subscription *sub = bus->sub;
    struct stream_counts *c = &sub->counts[stream_index(sub, o->stream)];
    switch (outcome) {
    case BUS_OK:
        ack(bus, o->stream, o->entry_id);
        c->handled++;
        sub->success_seen = true;
        break;
    case BUS_TRANSIENT:
        c->transient++;
        sub->transient_seen = true;
        give_back(bus, o->stream, o->entry_id, ev->deliveries);
        svc_log(SVC_WARN, &ev->trace, "event failed on a dependency; it will be retried",
                json_pack("{s:s,s:s,s:s,s:s}", "stream", o->stream, "entry", o->entry_id,
                          "event_id", o->event_id, "reason", reason ? reason : "unknown"));
        break;
    case BUS_PERMANENT:
        failed_permanently(bus, &ev->trace, o->stream, o->entry_id, ev->deliveries,
                           reason ? reason : "the handler refused the event", o->n_fields,
                           (const char *const *)o->fields, o->field_lens, NULL);
        break;
    }
    owned_free(o);
    sub->in_batch--;
    svc_work_end();
    batch_done(bus);
}

void bus_db_failed(struct bus_event *ev, const char *sqlstate, const char *error)
{
    char reason[600];
    snprintf(reason, sizeof reason, "database: %s%s%s", sqlstate && *sqlstate ? sqlstate : "",
             sqlstate && *sqlstate ? " " : "", error ? error : "failed");
    bus_done(ev, bus_sqlstate_transient(sqlstate) ? BUS_TRANSIENT : BUS_PERMANENT, reason);
}

void bus_query(struct bus_event *ev, const char *sql, int n_params, const char *const *params,
               void (*cb)(PGresult *, const char *, const char *, void *))
{
    if (!db_query(svc_db(), sql, n_params, params, cb, ev))
        bus_done(ev, BUS_TRANSIENT, "database: the statement queue is full or closing");
}

static const char *field(redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

static bool copy_fields(struct bus_event_owned *o, redisReply *fields)
{
    size_t n = fields->elements;
    o->fields = calloc(n ? n : 1, sizeof *o->fields);
    o->field_lens = calloc(n ? n : 1, sizeof *o->field_lens);
    if (!o->fields || !o->field_lens)
        return false;
    for (size_t i = 0; i < n; i++) {
        redisReply *x = fields->element[i];
        size_t len = x->type == REDIS_REPLY_STRING ? x->len : 0;
        o->fields[i] = malloc(len + 1);
        if (o->fields[i] == NULL)
            return false;
        o->n_fields = (int)i + 1;
        if (len)
            memcpy(o->fields[i], x->str, len);
        o->fields[i][len] = '\0';
        o->field_lens[i] = len;
    }
    return true;
}

/* Why an entry is not an event, or NULL. */
static const char *entry_problem(redisReply *fields, json_t **payload)
{
    const char *event_id = field(fields, "id"), *type = field(fields, "type"),
               *data = field(fields, "data");
    *payload = NULL;
    if (!event_id || !svc_is_uuid(event_id))
        return "not a valid event: the id field is missing or not a uuid";
    if (!type)
        return "not a valid event: no type field";
    if (!data)
        return "not a valid event: no data field";
    *payload = json_loads(data, JSON_REJECT_DUPLICATES, NULL);
    if (*payload == NULL)
        return "not a valid event: data is not JSON";
    if (!json_is_object(*payload)) {
        json_decref(*payload);
        *payload = NULL;
        return "not a valid event: data is not a JSON object";
    }
    return NULL;
}

/* One entry to its handler; `deliveries` is Redis' count for it now. */
static void deliver(struct bus *bus, const char *stream, redisReply *entry, long long deliveries,
                    bool redelivery)
{
    struct subscription *sub = bus->sub;
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *entry_id = entry->element[0]->str;
    redisReply *fields = entry->element[1];
    if (fields->type != REDIS_REPLY_ARRAY) {
        /* trimmed from the stream while pending: nothing left to handle */
        ack(bus, stream, entry_id);
        return;
    }
    json_t *payload;
    const char *problem = entry_problem(fields, &payload);
    if (problem) {
        /* handled like a handler's permanent failure, so the limit and the
         * dead letter are the same for every kind of poison */
        failed_permanently(bus, NULL, stream, entry_id, deliveries, problem, 0, NULL, NULL, fields);
        return;
    }
    const char *time = field(fields, "time");
    struct bus_event_owned *o = calloc(1, sizeof *o);
    if (o == NULL || !copy_fields(o, fields)) {
        if (o) {
            o->ev.data = payload;
            owned_free(o);
        } else
            json_decref(payload);
        arm_retry(bus, RETRY_PAUSE_MS, false); /* out of memory: it stays pending */
        return;
    }
    o->bus = bus;
    o->stream = strdup(stream);
    o->entry_id = strdup(entry_id);
    o->event_id = strdup(field(fields, "id"));
    o->type = strdup(field(fields, "type"));
    o->time = strdup(time ? time : "");
    struct bus_event *ev = &o->ev;
    ev->stream = o->stream;
    ev->entry_id = o->entry_id;
    ev->event_id = o->event_id;
    ev->type = o->type;
    ev->time = o->time;
    ev->data = payload;
    ev->redelivery = redelivery;
    ev->deliveries = deliveries;
    struct svc_trace producer;
    bool traced = svc_trace_parse(field(fields, "traceparent"), &producer);
    svc_trace_child(traced ? &producer : NULL, &ev->trace);
    svc_trace_format(&ev->trace, ev->traceparent);
    sub->in_batch++;
    svc_work_begin();
    svc_log(SVC_DEBUG, &ev->trace, "event received",
            json_pack("{s:s,s:s,s:s,s:b,s:I}", "stream", stream, "entry", entry_id, "event_id",
                      o->event_id, "redelivery", redelivery, "deliveries", (json_int_t)deliveries));
    sub->handler(ev);
}

static void on_read(redisAsyncContext *ac, void *reply, void *priv)
{
    struct bus *bus = priv;
    struct subscription *sub = bus->sub;
    redisReply *r = reply;
    sub->reading = false;
    if (bus->closing)
        return;
    if (r == NULL) {
        /* the connection went away: what it delivered is pending for us */
        sub->retry_due = true;
        return; /* read again once it is back */
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            sub->groups_ready = false; /* Redis lost its data: create them again */
        svc_log(SVC_WARN, NULL, "redis: XREADGROUP failed", json_pack("{s:s}", "error", r->str));
        schedule_read(bus, RETRY_PAUSE_MS);
        return;
    }
    /* one guard reference so a handler finishing at once cannot start the
     * next read while we are still walking this reply */
    sub->in_batch++;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t s = 0; s < r->elements; s++) {
            redisReply *sr = r->element[s];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2 ||
                sr->element[0]->type != REDIS_REPLY_STRING ||
                sr->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            for (size_t e = 0; e < sr->element[1]->elements; e++)
                /* a new entry: Redis has counted this one delivery */
                deliver(bus, sr->element[0]->str, sr->element[1]->element[e], 1, false);
        }
    }
    sub->in_batch--;
    batch_done(bus);
}

/* ---- retry passes ---- */

static void pass_free(struct pass *p)
{
    for (int i = 0; i < 8; i++)
        free(p->s[i].e);
    free(p);
}

static void pass_end(struct bus *bus, struct pass *p)
{
    struct subscription *sub = bus->sub;
    if (p->delivered || p->more)
        sub->pass_delivered = true;
    sub->pass = NULL;
    pass_free(p);
    batch_done(bus);
}

static void pass_release(struct bus *bus, struct pass *p)
{
    if (--p->refs > 0)
        return;
    if (bus->closing) {
        bus->sub->pass = NULL;
        pass_free(p);
        return;
    }
    pass_end(bus, p);
}

static struct pending_entry *find_pending(struct pass_stream *ps, const char *id)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->e[i].chosen && strcmp(ps->e[i].id, id) == 0)
            return &ps->e[i];
    return NULL;
}

static void on_pass_claimed(struct bus *bus, redisReply *r, void *arg)
{
    struct pass_stream *ps = arg;
    struct pass *p = ps->pass;
    if (bus->closing) {
        pass_release(bus, p);
        return;
    }
    struct subscription *sub = bus->sub;
    const char *stream = sub->streams[ps->index];
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        svc_log(SVC_WARN, NULL, "redis: XCLAIM for a retry failed",
                json_pack("{s:s,s:s}", "stream", stream, "error",
                          r && r->str ? r->str : "no connection"));
        arm_retry(bus, RETRY_PAUSE_MS, false);
        pass_release(bus, p);
        return;
    }
    sub->in_batch++; /* guard, as in on_read */
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *entry = r->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
            entry->element[0]->type != REDIS_REPLY_STRING)
            continue;
        struct pending_entry *pe = find_pending(ps, entry->element[0]->str);
        if (pe == NULL)
            continue;
        pe->chosen = false; /* seen */
        if (pe->count >= sub->policy.max_deliveries) {
            /* already delivered as often as allowed without an outcome: a
             * consumer died with it, or a dead letter was not stored */
            char reason[160];
            snprintf(reason, sizeof reason,
                     "delivered %lld times without being handled (EVENT_MAX_DELIVERIES %lld)",
                     pe->count, sub->policy.max_deliveries);
            sub->counts[ps->index].permanent++;
            dead_letter_reply(bus, stream, pe->id, entry->element[1], reason, pe->count);
            continue;
        }
        p->delivered = true;
        deliver(bus, stream, entry, pe->count + 1, true);
    }
    /* chosen but not returned: the entry was deleted or trimmed from the
     * stream; XACK takes whatever is left of it off the pending list */
    for (int i = 0; i < ps->n; i++)
        if (ps->e[i].chosen) {
            ps->e[i].chosen = false;
            ack(bus, stream, ps->e[i].id);
        }
    sub->in_batch--;
    pass_release(bus, p);
}

/* Every XPENDING has answered: take what is due. */
static void pass_choose(struct bus *bus, struct pass *p)
{
    struct subscription *sub = bus->sub;
    int chosen = 0, total = 0;
    long long next = -1;
    for (int s = 0; s < sub->n_streams; s++) {
        struct pass_stream *ps = &p->s[s];
        for (int i = 0; i < ps->n; i++) {
            struct pending_entry *e = &ps->e[i];
            total++;
            if (p->probe) {
                e->chosen = chosen == 0;
            } else if (chosen >= READ_COUNT) {
                p->more = true;
            } else {
                long long due = entry_due_ms(sub, e->id, e->count);
                e->chosen = e->count >= sub->policy.max_deliveries || e->idle_ms >= due;
                if (!e->chosen && (next < 0 || due - e->idle_ms < next))
                    next = due - e->idle_ms;
            }
            chosen += e->chosen;
        }
    }
    if (p->probe && total == 0) {
        /* nothing of ours is pending: nothing to probe with; read new
         * events again (they will tell whether the dependency is back) */
        sub->outage = false;
        sub->outage_ms = 0;
    }
    if (next >= 0)
        arm_retry(bus, next, false);
    p->refs = 1; /* guard */
    for (int s = 0; s < sub->n_streams; s++) {
        struct pass_stream *ps = &p->s[s];
        int n = 0;
        for (int i = 0; i < ps->n; i++)
            n += ps->e[i].chosen;
        if (n == 0)
            continue;
        const char **argv = malloc((size_t)(5 + n) * sizeof *argv);
        if (argv == NULL)
            continue;
        int argc = 0;
        argv[argc++] = "XCLAIM";
        argv[argc++] = sub->streams[s];
        argv[argc++] = sub->group;
        argv[argc++] = sub->consumer;
        argv[argc++] = "0"; /* ours already: any idle time */
        for (int i = 0; i < ps->n; i++)
            if (ps->e[i].chosen)
                argv[argc++] = ps->e[i].id;
        /* without JUSTID: the fields come back and the delivery is counted */
        if (cmd_send(bus, on_pass_claimed, ps, argc, argv, NULL))
            p->refs++;
        else
            arm_retry(bus, RETRY_PAUSE_MS, false);
        free(argv);
    }
    pass_release(bus, p);
}

static void on_pass_pending(struct bus *bus, redisReply *r, void *arg)
{
    struct pass_stream *ps = arg;
    struct pass *p = ps->pass;
    if (bus->closing) {
        pass_release(bus, p);
        return;
    }
    if (r && r->type == REDIS_REPLY_ARRAY) {
        ps->e = calloc(r->elements ? r->elements : 1, sizeof *ps->e);
        for (size_t i = 0; ps->e && i < r->elements; i++) {
            redisReply *x = r->element[i];
            /* [id, consumer, idle ms, deliveries] */
            if (x->type != REDIS_REPLY_ARRAY || x->elements != 4 ||
                x->element[0]->type != REDIS_REPLY_STRING ||
                x->element[0]->len >= sizeof ps->e->id ||
                x->element[2]->type != REDIS_REPLY_INTEGER ||
                x->element[3]->type != REDIS_REPLY_INTEGER)
                continue;
            struct pending_entry *e = &ps->e[ps->n++];
            memcpy(e->id, x->element[0]->str, x->element[0]->len + 1);
            e->idle_ms = x->element[2]->integer;
            e->count = x->element[3]->integer;
        }
    } else {
        svc_log(SVC_WARN, NULL, "redis: XPENDING failed",
                json_pack("{s:s,s:s}", "stream", bus->sub->streams[ps->index], "error",
                          r && r->str ? r->str : "no connection"));
        if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0)
            bus->sub->groups_ready = false;
        arm_retry(bus, RETRY_PAUSE_MS, false);
    }
    if (--p->refs == 0)
        pass_choose(bus, p);
}

static void start_pass(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    struct pass *p = calloc(1, sizeof *p);
    if (p == NULL) {
        arm_retry(bus, RETRY_PAUSE_MS, false);
        return;
    }
    sub->retry_due = false;
    sub->pass = p;
    p->probe = sub->outage;
    p->refs = 1; /* guard */
    for (int i = 0; i < sub->n_streams; i++) {
        p->s[i].pass = p;
        p->s[i].index = i;
        const char *argv[] = {"XPENDING", sub->streams[i], sub->group,   "-",
                              "+",        "128",           sub->consumer};
        if (cmd_send(bus, on_pass_pending, &p->s[i], 7, argv, NULL))
            p->refs++;
        else
            arm_retry(bus, RETRY_PAUSE_MS, false);
    }
    if (--p->refs == 0)
        pass_choose(bus, p);
}

/* ---- groups, reads ---- */

static void on_group_created(struct bus *bus, redisReply *r, void *arg)
{
    struct subscription *sub = bus->sub;
    if (bus->closing)
        return;
    if (r == NULL || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)) {
        svc_log(SVC_WARN, NULL, "redis: XGROUP CREATE failed",
                json_pack("{s:s}", "error", r ? r->str : "no connection"));
        sub->groups_waiting = -1;
    }
    if (sub->groups_waiting > 0 && --sub->groups_waiting == 0) {
        sub->groups_ready = true;
        consume(bus);
    } else if (sub->groups_waiting == -1) {
        sub->groups_waiting = 0;
        schedule_read(bus, RETRY_PAUSE_MS);
    }
}

static void create_groups(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    if (sub->groups_waiting != 0)
        return;
    sub->groups_waiting = sub->n_streams;
    for (int i = 0; i < sub->n_streams; i++) {
        /* from id 0: events stored before the group existed are ours too */
        const char *argv[] = {"XGROUP", "CREATE", sub->streams[i], sub->group, "0", "MKSTREAM"};
        if (!cmd_send(bus, on_group_created, NULL, 6, argv, NULL)) {
            sub->groups_waiting = 0;
            schedule_read(bus, RETRY_PAUSE_MS);
            return;
        }
    }
}

static void read_new(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    int argc = 0;
    const char *argv[16 + 2 * 8];
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = sub->group;
    argv[argc++] = sub->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = "32";
    argv[argc++] = "BLOCK";
    argv[argc++] = READ_BLOCK_MS;
    argv[argc++] = "STREAMS";
    for (int i = 0; i < sub->n_streams; i++)
        argv[argc++] = sub->streams[i];
    for (int i = 0; i < sub->n_streams; i++)
        argv[argc++] = ">";
    if (redisAsyncCommandArgv(bus->block.ac, on_read, bus, argc, argv, NULL) == REDIS_OK)
        sub->reading = true;
    else
        schedule_read(bus, RETRY_PAUSE_MS);
}

/* Starts what may start: a retry pass when one is due and no handler runs
 * (it may run beside a blocked read of new entries), a read of new entries
 * when no handler or pass runs and no dependency is failing. */
static void consume(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    if (sub == NULL || bus->stopping || bus->closing)
        return;
    if (!bus->block.ready || !bus->cmd.ready)
        return; /* on_ready of the connection calls us again */
    if (!sub->groups_ready) {
        create_groups(bus);
        return;
    }
    /* a dead letter in flight is still pending until its XACK: a pass
     * must not see it and move it twice */
    if (sub->retry_due && !sub->pass && sub->in_batch == 0 && sub->dead_in_flight == 0)
        start_pass(bus);
    if (!sub->reading && !sub->pass && sub->in_batch == 0 && !sub->outage)
        read_new(bus);
}

static void on_claimed(struct bus *bus, redisReply *r, void *arg)
{
    const char *stream = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    size_t n = r->element[1]->elements;
    if (n == 0)
        return;
    svc_log(SVC_INFO, NULL, "claimed events another consumer left pending",
            json_pack("{s:s,s:i}", "stream", stream, "count", (int)n));
    /* they are in our pending list now: a pass takes them (in an outage,
     * the probe timer is already armed) */
    if (!bus->sub->outage) {
        bus->sub->retry_due = true;
        consume(bus);
    }
}

static void on_claim_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bus *bus = arg;
    struct subscription *sub = bus->sub;
    if (bus->stopping || !sub->groups_ready)
        return;
    char idle[24];
    snprintf(idle, sizeof idle, "%lld", sub->claim_idle_ms);
    for (int i = 0; i < sub->n_streams; i++) {
        /* JUSTID: a claim is not a delivery, the counter stays */
        const char *argv[] = {"XAUTOCLAIM", sub->streams[i], sub->group, sub->consumer, idle,
                              "0-0",        "COUNT",         "32",       "JUSTID"};
        cmd_send(bus, on_claimed, sub->streams[i], 9, argv, NULL);
    }
}

void bus_subscribe(struct bus *bus, const char *group, const char *consumer,
                   const char *const *streams, int n_streams, long long claim_idle_ms,
                   const struct bus_retry_policy *policy, bus_handler handler)
{
    struct subscription *sub = calloc(1, sizeof *sub);
    if (sub == NULL || n_streams > 8)
        abort();
    sub->group = strdup(group);
    sub->consumer = strdup(consumer);
    sub->streams = calloc((size_t)n_streams, sizeof *sub->streams);
    for (int i = 0; i < n_streams; i++)
        sub->streams[i] = strdup(streams[i]);
    sub->n_streams = n_streams;
    sub->claim_idle_ms = claim_idle_ms;
    sub->policy = *policy;
    sub->handler = handler;
    sub->retry_due = true; /* what this consumer name left unacknowledged */
    sub->next_read = evtimer_new(bus->base, on_next_read, bus);
    sub->retry_timer = evtimer_new(bus->base, on_retry_timer, bus);
    sub->claim_timer = event_new(bus->base, -1, EV_PERSIST, on_claim_timer, bus);
    long long every = claim_idle_ms / 2 < 250 ? 250 : claim_idle_ms / 2;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    event_add(sub->claim_timer, &tv);
    bus->sub = sub;
    svc_log(SVC_INFO, NULL, "consuming",
            json_pack("{s:s,s:s,s:i,s:I,s:I,s:I}", "group", group, "consumer", consumer, "streams",
                      n_streams, "max_deliveries", (json_int_t)policy->max_deliveries,
                      "retry_min_ms", (json_int_t)policy->min_ms, "retry_max_ms",
                      (json_int_t)policy->max_ms));
    consume(bus);
}

void bus_subscribe_service(const char *const *streams, int n_streams, bus_handler handler)
{
    char consumer[160];
    char hostname[64] = "host";
    gethostname(hostname, sizeof hostname - 1);
    hostname[sizeof hostname - 1] = '\0';
    snprintf(consumer, sizeof consumer, "%s-%s-%d", svc_name(), hostname, (int)getpid());
    struct bus_retry_policy policy;
    policy.max_deliveries = svc_env_int("EVENT_MAX_DELIVERIES", 5, 1, 1000);
    policy.min_ms = svc_env_int("EVENT_RETRY_MIN_MS", 500, 2, 3600000);
    policy.max_ms = svc_env_int("EVENT_RETRY_MAX_MS", 10000, policy.min_ms, 3600000);
    long long claim_idle_ms = svc_env_int("CLAIM_IDLE_MS", 30000, 100, 86400000);
    /* XAUTOCLAIM restarts the idle time of whatever has been idle for
     * CLAIM_IDLE_MS, ours included: a longer step would never come due
     * (and another consumer would take the entry first) */
    if (policy.max_ms > claim_idle_ms / 2)
        policy.max_ms = claim_idle_ms / 2;
    if (policy.min_ms > policy.max_ms)
        policy.min_ms = policy.max_ms;
    bus_subscribe(svc_bus(), svc_name(), svc_env("CONSUMER_NAME", consumer), streams, n_streams,
                  claim_idle_ms, &policy, handler);
}

void bus_write_metrics(const struct bus *bus, struct evbuffer *out)
{
    const struct subscription *sub = bus->sub;
    if (sub == NULL)
        return;
    static const char *const names[] = {
        "sluice_service_events_handled_total",
        "sluice_service_event_failures_transient_total",
        "sluice_service_event_failures_permanent_total",
        "sluice_service_events_dead_lettered_total",
    };
    static const char *const help[] = {
        "Events whose handler succeeded (acknowledged).",
        "Handler failures on a dependency (retried with backoff, not counted as deliveries).",
        "Handler failures that count toward EVENT_MAX_DELIVERIES (invalid events included).",
        "Events moved to <stream>.dead and acknowledged.",
    };
    for (int k = 0; k < 4; k++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", names[k], help[k], names[k]);
        for (int i = 0; i < sub->n_streams; i++) {
            const struct stream_counts *c = &sub->counts[i];
            unsigned long long v = k == 0   ? c->handled
                                   : k == 1 ? c->transient
                                   : k == 2 ? c->permanent
                                            : c->dead;
            evbuffer_add_printf(out, "%s{group=\"%s\",stream=\"%s\"} %llu\n", names[k], sub->group,
                                sub->streams[i], v);
        }
    }
    evbuffer_add_printf(out,
                        "# HELP sluice_service_events_outage 1 while new events wait because "
                        "handlers fail on a dependency.\n"
                        "# TYPE sluice_service_events_outage gauge\n"
                        "sluice_service_events_outage{group=\"%s\"} %d\n",
                        sub->group, sub->outage ? 1 : 0);
}

static void on_connection_ready(struct bus *bus)
{
    consume(bus);
}

/* ---- outbox relay ------------------------------------------------------------------- */

static const char RELAY_CLAIM_SQL[] =
    "UPDATE outbox SET claimed_until = now() + interval '30 seconds'"
    " WHERE seq IN (SELECT seq FROM outbox WHERE published_at IS NULL"
    "  AND (claimed_until IS NULL OR claimed_until < now())"
    "  ORDER BY seq LIMIT 64 FOR UPDATE SKIP LOCKED)"
    " RETURNING seq, id, topic, payload::text, traceparent,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

static void relay_finished(struct bus *bus, bool more)
{
    free(bus->rows);
    bus->rows = NULL;
    bus->n_rows = 0;
    bus->relay_running = false;
    if (more)
        bus_relay_kick(bus);
}

static void on_marked(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct bus *bus = arg;
    if (bus->closing)
        return;
    if (res == NULL)
        svc_log(SVC_WARN, NULL, "outbox: cannot mark events published; they will be sent again",
                json_pack("{s:s}", "error", error));
    bool more = res && bus->n_rows == RELAY_BATCH;
    relay_finished(bus, more);
}

/* Published rows are marked; rows Redis refused are released at once. */
static void relay_mark(struct bus *bus)
{
    size_t cap = (size_t)bus->n_rows * 24 + 4;
    char *ok = malloc(cap), *failed = malloc(cap);
    size_t no = 0, nf = 0;
    if (!ok || !failed) {
        free(ok);
        free(failed);
        relay_finished(bus, false); /* the claims expire after 30 s */
        return;
    }
    ok[no++] = '{';
    failed[nf++] = '{';
    for (int i = 0; i < bus->n_rows; i++) {
        char *buf = bus->rows[i].published ? ok : failed;
        size_t *n = bus->rows[i].published ? &no : &nf;
        *n += (size_t)snprintf(buf + *n, cap - *n, "%s%lld", *n > 1 ? "," : "", bus->rows[i].seq);
    }
    ok[no++] = '}';
    ok[no] = '\0';
    failed[nf++] = '}';
    failed[nf] = '\0';
    const char *params[] = {ok, failed};
    if (!db_query(bus->db,
                  "WITH published AS (UPDATE outbox SET published_at = now(), claimed_until = NULL"
                  "  WHERE seq = ANY($1::bigint[]) RETURNING seq)"
                  " UPDATE outbox SET claimed_until = NULL WHERE seq = ANY($2::bigint[])",
                  2, params, on_marked, bus))
        relay_finished(bus, false);
    free(ok);
    free(failed);
}

struct xadd_call {
    struct bus *bus;
    int row;
};

static void on_xadd(struct bus *bus, redisReply *r, void *arg)
{
    struct xadd_call *x = arg;
    if (bus->closing) { /* the claims expire; the rows are sent again */
        free(x);
        return;
    }
    if (r && r->type == REDIS_REPLY_STRING)
        bus->rows[x->row].published = true;
    else
        svc_log(SVC_WARN, NULL, "outbox: XADD failed; the event stays in the outbox",
                json_pack("{s:s}", "error",
                          r ? (r->str ? r->str : "unexpected reply") : "no connection"));
    free(x);
    if (--bus->relay_xadds == 0)
        relay_mark(bus);
}

static int by_seq(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void on_claimed_rows(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct bus *bus = arg;
    if (bus->closing)
        return;
    if (res == NULL) {
        svc_log(SVC_WARN, NULL, "outbox: cannot read", json_pack("{s:s}", "error", error));
        relay_finished(bus, false);
        return;
    }
    int n = PQntuples(res);
    if (n == 0) {
        relay_finished(bus, false);
        return;
    }
    /* publish in the order the events were stored */
    long long(*order)[2] = calloc((size_t)n, sizeof *order);
    bus->rows = calloc((size_t)n, sizeof *bus->rows);
    if (!order || !bus->rows) {
        free(order);
        relay_finished(bus, false);
        return;
    }
    for (int i = 0; i < n; i++) {
        order[i][0] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        order[i][1] = i;
    }
    qsort(order, (size_t)n, sizeof *order, by_seq);
    bus->n_rows = n;
    bus->relay_xadds = 1; /* a guard until every XADD is sent */
    for (int k = 0; k < n; k++) {
        int i = (int)order[k][1];
        bus->rows[k].seq = order[k][0];
        const char *argv[] = {"XADD",        PQgetvalue(res, i, 2),
                              "MAXLEN",      "~",
                              STREAM_MAXLEN, "*",
                              "id",          PQgetvalue(res, i, 1),
                              "type",        PQgetvalue(res, i, 2),
                              "time",        PQgetvalue(res, i, 5),
                              "traceparent", PQgetvalue(res, i, 4),
                              "data",        PQgetvalue(res, i, 3)};
        struct xadd_call *x = malloc(sizeof *x);
        if (x == NULL)
            continue;
        *x = (struct xadd_call){bus, k};
        if (cmd_send(bus, on_xadd, x, 16, argv, NULL))
            bus->relay_xadds++;
        else
            free(x);
    }
    free(order);
    if (--bus->relay_xadds == 0)
        relay_mark(bus);
}

static void on_cleaned(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    if (res == NULL)
        svc_log(SVC_WARN, NULL, "outbox: cleanup failed", json_pack("{s:s}", "error", error));
}

static void relay_run(struct bus *bus)
{
    if (bus->relay_running || bus->closing || !bus->cmd.ready)
        return;
    time_t now = time(NULL);
    if (now - bus->last_cleanup >= 60) {
        bus->last_cleanup = now;
        char sql[160];
        snprintf(sql, sizeof sql,
                 "DELETE FROM outbox WHERE published_at < now() - interval '%d seconds'",
                 OUTBOX_KEEP_S);
        db_query(bus->db, sql, 0, NULL, on_cleaned, NULL);
    }
    if (db_query(bus->db, RELAY_CLAIM_SQL, 0, NULL, on_claimed_rows, bus))
        bus->relay_running = true;
}

static void on_relay_timer(evutil_socket_t fd, short what, void *arg)
{
    relay_run(arg);
}

void bus_relay_start(struct bus *bus, struct db *db)
{
    bus->db = db;
    bus->relay_timer = event_new(bus->base, -1, EV_PERSIST, on_relay_timer, bus);
    bus->relay_now = evtimer_new(bus->base, on_relay_timer, bus);
    struct timeval tv = {0, RELAY_EVERY_MS * 1000};
    event_add(bus->relay_timer, &tv);
}

void bus_relay_kick(struct bus *bus)
{
    if (bus->relay_now && !bus->closing) {
        struct timeval zero = {0, 0};
        evtimer_add(bus->relay_now, &zero);
    }
}

/* ---- readiness, life cycle -------------------------------------------------------- */

struct ping {
    void (*cb)(bool ok, void *arg);
    void *arg;
    struct event *timer;
    int refs;
};

static void ping_answer(struct ping *p, bool ok)
{
    if (p->cb) {
        p->cb(ok, p->arg);
        p->cb = NULL;
    }
    if (--p->refs == 0) {
        event_free(p->timer);
        free(p);
    }
}

static void on_pong(struct bus *bus, redisReply *r, void *arg)
{
    ping_answer(arg, r && r->type == REDIS_REPLY_STATUS);
}

static void on_ping_timeout(evutil_socket_t fd, short what, void *arg)
{
    ping_answer(arg, false);
}

void bus_ping(struct bus *bus, void (*cb)(bool ok, void *arg), void *arg)
{
    struct ping *p = calloc(1, sizeof *p);
    if (p == NULL) {
        cb(false, arg);
        return;
    }
    *p = (struct ping){cb, arg, evtimer_new(bus->base, on_ping_timeout, p), 2};
    const char *argv[] = {"PING"};
    if (!cmd_send(bus, on_pong, p, 1, argv, NULL)) {
        p->refs = 1;
        ping_answer(p, false);
        return;
    }
    struct timeval tv = {PING_TIMEOUT_MS / 1000, (PING_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

struct bus *bus_open(struct event_base *base, const char *redis_url, char *err, size_t err_size)
{
    struct bus *bus = calloc(1, sizeof *bus);
    if (bus == NULL)
        return NULL;
    bus->base = base;
    if (!bus_parse_url(redis_url, &bus->redis, err, err_size)) {
        free(bus);
        return NULL;
    }
    struct rconn *conns[] = {&bus->cmd, &bus->block};
    const char *roles[] = {"commands", "reads"};
    for (int i = 0; i < 2; i++) {
        conns[i]->bus = bus;
        conns[i]->role = roles[i];
        conns[i]->retry = evtimer_new(base, on_retry, conns[i]);
        conns[i]->on_ready = on_connection_ready;
        rconn_connect(conns[i]);
    }
    return bus;
}

void bus_stop(struct bus *bus)
{
    bus->stopping = true;
}

bool bus_idle(const struct bus *bus)
{
    const struct subscription *sub = bus->sub;
    bool consuming = sub && (sub->reading || sub->pass || sub->in_batch > 0);
    /* a kicked relay has an event just stored to publish: let it run first */
    bool relay_due = bus->relay_now && evtimer_pending(bus->relay_now, NULL);
    return !consuming && !bus->relay_running && !relay_due && bus->cmd_outstanding == 0;
}

void bus_close(struct bus *bus)
{
    if (bus == NULL)
        return;
    bus->closing = true;
    struct rconn *conns[] = {&bus->cmd, &bus->block};
    for (int i = 0; i < 2; i++) {
        if (conns[i]->ac) {
            redisAsyncContext *ac = conns[i]->ac;
            conns[i]->ac = NULL;
            redisAsyncFree(ac); /* pending callbacks run with NULL replies */
        }
        event_free(conns[i]->retry);
    }
    if (bus->sub) {
        struct subscription *sub = bus->sub;
        event_free(sub->next_read);
        event_free(sub->retry_timer);
        event_free(sub->claim_timer);
        for (int i = 0; i < sub->n_streams; i++)
            free(sub->streams[i]);
        free(sub->streams);
        free(sub->group);
        free(sub->consumer);
        free(sub);
        bus->sub = NULL;
    }
    if (bus->relay_timer)
        event_free(bus->relay_timer);
    if (bus->relay_now)
        event_free(bus->relay_now);
    free(bus->rows);
    bus_redis_url_free(&bus->redis);
    free(bus);
}
