#include "bus.h"

#include "db.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
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

struct subscription {
    char *group;
    char *consumer;
    char **streams;
    int n_streams;
    long long claim_idle_ms;
    bus_handler handler;
    bool groups_ready;
    int groups_waiting;
    bool reading;
    bool read_pending; /* read our own pending entries (from id 0) next */
    bool reading_own;  /* the read in flight is one of those */
    unsigned claims;   /* XAUTOCLAIMs that took entries, so far */
    unsigned claims_at_read;
    bool batch_failed;
    int in_batch; /* handlers not yet done */
    struct event *next_read;
    struct event *claim_timer;
};

struct bus {
    struct event_base *base;
    struct bus_redis_url redis;
    struct rconn cmd;   /* XADD, XACK, XAUTOCLAIM, PING, XGROUP */
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

struct bus_event_owned {
    struct bus_event ev; /* first: handlers get &ev */
    struct bus *bus;
    char *stream, *entry_id, *event_id, *type, *time;
};

static void read_next(struct bus *bus);

static void schedule_read(struct bus *bus, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(bus->sub->next_read, &tv);
}

static void on_next_read(evutil_socket_t fd, short what, void *arg)
{
    read_next(arg);
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

static void batch_done(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    if (sub->in_batch > 0)
        return;
    if (sub->batch_failed) {
        /* the failed entries stay pending for us: read them again later */
        sub->batch_failed = false;
        sub->read_pending = true;
        schedule_read(bus, RETRY_PAUSE_MS);
    } else {
        read_next(bus);
    }
}

void bus_done(struct bus_event *ev, bool ok)
{
    struct bus_event_owned *o = (struct bus_event_owned *)ev;
    struct bus *bus = o->bus;
    if (ok)
        ack(bus, o->stream, o->entry_id);
    else
        bus->sub->batch_failed = true;
    json_decref(ev->data);
    free(o->stream);
    free(o->entry_id);
    free(o->event_id);
    free(o->type);
    free(o->time);
    free(o);
    bus->sub->in_batch--;
    svc_work_end();
    batch_done(bus);
}

void bus_query(struct bus_event *ev, const char *sql, int n_params, const char *const *params,
               void (*cb)(PGresult *, const char *, const char *, void *))
{
    if (!db_query(svc_db(), sql, n_params, params, cb, ev)) {
        svc_log(SVC_WARN, &ev->trace, "database unavailable; the event will come again", NULL);
        bus_done(ev, false);
    }
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

static void deliver(struct bus *bus, const char *stream, redisReply *entry, bool redelivery)
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
    const char *event_id = field(fields, "id"), *type = field(fields, "type"),
               *data = field(fields, "data"), *time = field(fields, "time");
    json_t *payload = data ? json_loads(data, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!event_id || !svc_is_uuid(event_id) || !type || !payload || !json_is_object(payload)) {
        /* it would fail the same way every time: log it, take it off */
        svc_log(SVC_ERROR, NULL, "event is not valid; acknowledged without handling",
                json_pack("{s:s,s:s}", "stream", stream, "entry", entry_id));
        json_decref(payload);
        ack(bus, stream, entry_id);
        return;
    }
    struct bus_event_owned *o = calloc(1, sizeof *o);
    if (o == NULL) {
        json_decref(payload);
        sub->batch_failed = true;
        return;
    }
    o->bus = bus;
    o->stream = strdup(stream);
    o->entry_id = strdup(entry_id);
    o->event_id = strdup(event_id);
    o->type = strdup(type);
    o->time = strdup(time ? time : "");
    struct bus_event *ev = &o->ev;
    ev->stream = o->stream;
    ev->entry_id = o->entry_id;
    ev->event_id = o->event_id;
    ev->type = o->type;
    ev->time = o->time;
    ev->data = payload;
    ev->redelivery = redelivery;
    struct svc_trace producer;
    bool traced = svc_trace_parse(field(fields, "traceparent"), &producer);
    svc_trace_child(traced ? &producer : NULL, &ev->trace);
    svc_trace_format(&ev->trace, ev->traceparent);
    sub->in_batch++;
    svc_work_begin();
    svc_log(SVC_DEBUG, &ev->trace, "event received",
            json_pack("{s:s,s:s,s:s,s:b}", "stream", stream, "entry", entry_id, "event_id",
                      event_id, "redelivery", redelivery));
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
        sub->read_pending = true;
        return; /* read again once it is back */
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            sub->groups_ready = false; /* Redis lost its data: create them again */
        svc_log(SVC_WARN, NULL, "redis: XREADGROUP failed", json_pack("{s:s}", "error", r->str));
        schedule_read(bus, RETRY_PAUSE_MS);
        return;
    }
    size_t delivered = 0;
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
            for (size_t e = 0; e < sr->element[1]->elements; e++) {
                deliver(bus, sr->element[0]->str, sr->element[1]->element[e], sub->reading_own);
                delivered++;
            }
        }
    }
    /* our backlog is done: new entries now (unless a claim, made while
     * this read was in flight, put more into it) */
    if (sub->reading_own && delivered == 0 && sub->claims == sub->claims_at_read)
        sub->read_pending = false;
    sub->in_batch--;
    batch_done(bus);
}

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
        read_next(bus);
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

static void read_next(struct bus *bus)
{
    struct subscription *sub = bus->sub;
    if (sub == NULL || bus->stopping || bus->closing || sub->reading || sub->in_batch > 0)
        return;
    if (!bus->block.ready || !bus->cmd.ready)
        return; /* on_ready of the connection calls us again */
    if (!sub->groups_ready) {
        create_groups(bus);
        return;
    }
    int argc = 0;
    const char *argv[16 + 2 * 8];
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = sub->group;
    argv[argc++] = sub->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = "32";
    if (!sub->read_pending) {
        argv[argc++] = "BLOCK";
        argv[argc++] = READ_BLOCK_MS;
    }
    argv[argc++] = "STREAMS";
    for (int i = 0; i < sub->n_streams; i++)
        argv[argc++] = sub->streams[i];
    for (int i = 0; i < sub->n_streams; i++)
        argv[argc++] = sub->read_pending ? "0" : ">";
    if (redisAsyncCommandArgv(bus->block.ac, on_read, bus, argc, argv, NULL) == REDIS_OK) {
        sub->reading = true;
        sub->reading_own = sub->read_pending;
        sub->claims_at_read = sub->claims;
    } else
        schedule_read(bus, RETRY_PAUSE_MS);
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
    /* they are in our pending list now: the next read takes them */
    bus->sub->read_pending = true;
    bus->sub->claims++;
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
        const char *argv[] = {"XAUTOCLAIM", sub->streams[i], sub->group, sub->consumer, idle,
                              "0-0",        "COUNT",         "32",       "JUSTID"};
        cmd_send(bus, on_claimed, sub->streams[i], 9, argv, NULL);
    }
}

void bus_subscribe(struct bus *bus, const char *group, const char *consumer,
                   const char *const *streams, int n_streams, long long claim_idle_ms,
                   bus_handler handler)
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
    sub->handler = handler;
    sub->read_pending = true; /* what this consumer name left unacknowledged */
    sub->next_read = evtimer_new(bus->base, on_next_read, bus);
    sub->claim_timer = event_new(bus->base, -1, EV_PERSIST, on_claim_timer, bus);
    long long every = claim_idle_ms / 2 < 250 ? 250 : claim_idle_ms / 2;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    event_add(sub->claim_timer, &tv);
    bus->sub = sub;
    svc_log(SVC_INFO, NULL, "consuming",
            json_pack("{s:s,s:s,s:i}", "group", group, "consumer", consumer, "streams", n_streams));
    read_next(bus);
}

void bus_subscribe_service(const char *const *streams, int n_streams, bus_handler handler)
{
    char consumer[160];
    char hostname[64] = "host";
    gethostname(hostname, sizeof hostname - 1);
    hostname[sizeof hostname - 1] = '\0';
    snprintf(consumer, sizeof consumer, "%s-%s-%d", svc_name(), hostname, (int)getpid());
    bus_subscribe(svc_bus(), svc_name(), svc_env("CONSUMER_NAME", consumer), streams, n_streams,
                  svc_env_int("CLAIM_IDLE_MS", 30000, 100, 86400000), handler);
}

static void on_connection_ready(struct bus *bus)
{
    if (bus->sub && !bus->sub->reading)
        read_next(bus);
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
    bool consuming = sub && (sub->reading || sub->in_batch > 0);
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
