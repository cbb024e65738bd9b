#include "db.h"

#include "svc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_WATCHDOG_S 5
/* The server cancels a statement after statement_timeout; this catches a
 * server or network that no longer answers at all. */
#define STATEMENT_WATCHDOG_S 10
#define SESSION_OPTIONS "-c statement_timeout=5000 -c TimeZone=UTC"

struct db_job {
    struct db_job *next;
    char *sql;
    int n_params;
    char **params;
    db_cb cb;
    void *arg;
};

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

struct db_conn {
    struct db *db;
    PGconn *pg;
    enum conn_state state;
    struct event *io;
    struct event *timer; /* watchdog while connecting or busy; retry while down */
    struct db_job *job;
    PGresult *result; /* the statement's last result so far */
    bool flushing;    /* libpq still has bytes to send */
    int backoff_ms;
};

struct db {
    struct event_base *base;
    char *conninfo;
    char *app_name;
    struct db_conn *conns;
    int n_conns;
    struct db_job *head, *tail;
    int queued;
    int queue_limit;
    bool closing;
};

static void conn_connect(struct db_conn *c);
static void dispatch(struct db *db);

static void job_free(struct db_job *j)
{
    for (int i = 0; i < j->n_params; i++)
        free(j->params[i]);
    free(j->params);
    free(j->sql);
    free(j);
}

static void job_fail(struct db_job *j, const char *sqlstate, const char *error)
{
    j->cb(NULL, sqlstate, error, j->arg);
    job_free(j);
}

static int usable_connections(const struct db *db)
{
    int n = 0;
    for (int i = 0; i < db->n_conns; i++)
        n += db->conns[i].state == CONN_IDLE || db->conns[i].state == CONN_BUSY;
    return n;
}

static int connecting_connections(const struct db *db)
{
    int n = 0;
    for (int i = 0; i < db->n_conns; i++)
        n += db->conns[i].state == CONN_CONNECTING;
    return n;
}

/* With no connection up and none about to be, queued statements would only
 * wait: fail them so callers answer 503 now. */
static void fail_queue_if_unreachable(struct db *db, const char *why)
{
    if (usable_connections(db) > 0 || connecting_connections(db) > 0)
        return;
    while (db->head) {
        struct db_job *j = db->head;
        db->head = j->next;
        db->queued--;
        job_fail(j, "", why);
    }
    db->tail = NULL;
}

static void arm_timer(struct db_conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void conn_reset(struct db_conn *c, const char *why)
{
    if (c->io) {
        event_free(c->io);
        c->io = NULL;
    }
    evtimer_del(c->timer);
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    struct db_job *job = c->job;
    c->job = NULL;
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->state = CONN_DOWN;
    c->flushing = false;
    if (c->db->closing) {
        if (job)
            job_fail(job, "", why);
        return;
    }
    c->backoff_ms = c->backoff_ms ? (c->backoff_ms * 2 > 2000 ? 2000 : c->backoff_ms * 2) : 100;
    arm_timer(c, c->backoff_ms);
    svc_log(SVC_WARN, NULL, "database connection lost",
            json_pack("{s:s,s:i}", "error", why, "retry_ms", c->backoff_ms));
    if (job)
        job_fail(job, "", why); /* it may or may not have committed: the caller decides */
    fail_queue_if_unreachable(c->db, why);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

static void wait_io(struct db_conn *c, short what)
{
    if (c->io)
        event_free(c->io);
    /* libpq may change the socket while connecting: a new event each time */
    c->io = event_new(c->db->base, PQsocket(c->pg), what, on_io, c);
    event_add(c->io, NULL);
}

static void conn_poll_connect(struct db_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        wait_io(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        wait_io(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            conn_reset(c, "cannot make the connection non-blocking");
            return;
        }
        event_free(c->io);
        c->io = NULL;
        evtimer_del(c->timer);
        c->state = CONN_IDLE;
        c->backoff_ms = 0;
        dispatch(c->db);
        return;
    default: {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(c->pg));
        why[strcspn(why, "\n")] = '\0';
        conn_reset(c, why[0] ? why : "connection failed");
        return;
    }
    }
}

static void finish_job(struct db_conn *c)
{
    struct db_job *job = c->job;
    PGresult *res = c->result;
    c->job = NULL;
    c->result = NULL;
    c->state = CONN_IDLE;
    evtimer_del(c->timer);
    if (c->io) {
        event_free(c->io);
        c->io = NULL;
    }
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        job->cb(res, NULL, NULL, job->arg);
    } else {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", res ? PQresultErrorMessage(res) : "no result");
        msg[strcspn(msg, "\n")] = '\0';
        job->cb(NULL, state ? state : "", msg, job->arg);
    }
    if (res)
        PQclear(res);
    job_free(job);
    dispatch(c->db);
}

static void conn_read(struct db_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(c->pg));
        why[strcspn(why, "\n")] = '\0';
        conn_reset(c, why);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            finish_job(c);
            return;
        }
        /* keep the last result, but an error wins over what follows it */
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            if (c->result)
                PQclear(c->result);
            c->result = r;
        }
    }
    wait_io(c, EV_READ);
}

static void conn_flush(struct db_conn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_reset(c, "cannot send to the database");
        return;
    }
    c->flushing = r == 1;
    /* while flushing, read too: the server may answer before taking all */
    wait_io(c, c->flushing ? EV_READ | EV_WRITE : EV_READ);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    if (c->state == CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if (c->state != CONN_BUSY)
        return;
    if (what & EV_READ) {
        if (!PQconsumeInput(c->pg)) {
            conn_reset(c, "connection to the database lost");
            return;
        }
    }
    if (c->flushing) {
        conn_flush(c);
        if (c->state != CONN_BUSY || c->flushing)
            return;
    }
    conn_read(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    switch (c->state) {
    case CONN_DOWN:
        conn_connect(c);
        break;
    case CONN_CONNECTING:
        conn_reset(c, "timed out connecting to the database");
        break;
    case CONN_BUSY:
        conn_reset(c, "the database did not answer in time");
        break;
    case CONN_IDLE:
        break;
    }
}

/* Notices (e.g. "already exists, skipping") go to the JSON log, not raw
 * to stderr. */
static void log_notice(void *arg, const char *message)
{
    char text[512];
    snprintf(text, sizeof text, "%s", message);
    text[strcspn(text, "\n")] = '\0';
    svc_log(SVC_DEBUG, NULL, "database notice", json_pack("{s:s}", "notice", text));
}

static void conn_connect(struct db_conn *c)
{
    const char *keys[] = {"dbname", "application_name", "options", NULL};
    const char *values[] = {c->db->conninfo, c->db->app_name, SESSION_OPTIONS, NULL};
    c->pg = PQconnectStartParams(keys, values, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_reset(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pg, log_notice, NULL);
    c->state = CONN_CONNECTING;
    arm_timer(c, CONNECT_WATCHDOG_S * 1000);
    wait_io(c, EV_WRITE);
}

static void conn_run(struct db_conn *c, struct db_job *j)
{
    c->job = j;
    c->state = CONN_BUSY;
    if (!PQsendQueryParams(c->pg, j->sql, j->n_params, NULL, (const char *const *)j->params, NULL,
                           NULL, 0)) {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(c->pg));
        why[strcspn(why, "\n")] = '\0';
        conn_reset(c, why);
        return;
    }
    arm_timer(c, STATEMENT_WATCHDOG_S * 1000);
    conn_flush(c);
}

static void dispatch(struct db *db)
{
    for (int i = 0; i < db->n_conns && db->head; i++) {
        struct db_conn *c = &db->conns[i];
        if (c->state != CONN_IDLE)
            continue;
        struct db_job *j = db->head;
        db->head = j->next;
        if (db->head == NULL)
            db->tail = NULL;
        db->queued--;
        conn_run(c, j);
    }
}

struct db *db_open(struct event_base *base, const char *conninfo, const char *app_name,
                   int pool_size, int queue_limit)
{
    struct db *db = calloc(1, sizeof *db);
    if (db == NULL)
        return NULL;
    db->base = base;
    db->conninfo = strdup(conninfo);
    db->app_name = strdup(app_name);
    db->n_conns = pool_size;
    db->queue_limit = queue_limit;
    db->conns = calloc((size_t)pool_size, sizeof *db->conns);
    if (!db->conninfo || !db->app_name || !db->conns) {
        db_close(db);
        db_free(db);
        return NULL;
    }
    for (int i = 0; i < pool_size; i++) {
        struct db_conn *c = &db->conns[i];
        c->db = db;
        c->timer = evtimer_new(base, on_timer, c);
        conn_connect(c);
    }
    return db;
}

void db_close(struct db *db)
{
    if (db == NULL)
        return;
    db->closing = true;
    while (db->head) {
        struct db_job *j = db->head;
        db->head = j->next;
        job_fail(j, "", "shutting down");
    }
    db->tail = NULL;
    db->queued = 0;
    for (int i = 0; db->conns && i < db->n_conns; i++) {
        struct db_conn *c = &db->conns[i];
        if (c->timer) {
            conn_reset(c, "shutting down");
            event_free(c->timer);
            c->timer = NULL;
        }
    }
}

void db_free(struct db *db)
{
    if (db == NULL)
        return;
    free(db->conns);
    free(db->conninfo);
    free(db->app_name);
    free(db);
}

bool db_query(struct db *db, const char *sql, int n_params, const char *const *params, db_cb cb,
              void *arg)
{
    if (db->closing || db->queued >= db->queue_limit)
        return false;
    if (usable_connections(db) == 0 && connecting_connections(db) == 0)
        return false; /* all down and waiting to retry: fail fast */
    struct db_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return false;
    j->sql = strdup(sql);
    j->n_params = n_params;
    j->params = n_params ? calloc((size_t)n_params, sizeof *j->params) : NULL;
    j->cb = cb;
    j->arg = arg;
    bool ok = j->sql && (n_params == 0 || j->params);
    for (int i = 0; ok && i < n_params; i++) {
        if (params[i]) {
            j->params[i] = strdup(params[i]);
            ok = j->params[i] != NULL;
        }
    }
    if (!ok) {
        job_free(j);
        return false;
    }
    if (db->tail)
        db->tail->next = j;
    else
        db->head = j;
    db->tail = j;
    db->queued++;
    dispatch(db);
    return true;
}

bool db_full(const struct db *db)
{
    return db->queued >= db->queue_limit;
}

int db_pending(const struct db *db)
{
    int n = db->queued;
    for (int i = 0; i < db->n_conns; i++)
        n += db->conns[i].state == CONN_BUSY;
    return n;
}

bool db_run_startup_sql(const char *conninfo, const char *sql, int wait_seconds, char *err,
                        size_t err_size)
{
    time_t deadline = time(NULL) + wait_seconds;
    const char *keys[] = {"dbname", "connect_timeout", "options", NULL};
    const char *values[] = {conninfo, "5", SESSION_OPTIONS, NULL};
    for (;;) {
        PGconn *pg = PQconnectdbParams(keys, values, 1);
        if (pg && PQstatus(pg) == CONNECTION_OK) {
            PQsetNoticeProcessor(pg, log_notice, NULL);
            PGresult *r = PQexec(pg, sql);
            ExecStatusType st = PQresultStatus(r);
            bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
            if (!ok) {
                snprintf(err, err_size, "%s", PQresultErrorMessage(r));
                err[strcspn(err, "\n")] = '\0';
            }
            PQclear(r);
            PQfinish(pg);
            return ok;
        }
        snprintf(err, err_size, "%s", pg ? PQerrorMessage(pg) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfinish(pg);
        if (time(NULL) >= deadline)
            return false;
        usleep(500 * 1000);
    }
}
