/* An asynchronous PostgreSQL pool on the service's event loop.
 *
 * A few connections (DB_POOL) each run one statement at a time with libpq's
 * non-blocking API; statements wait in a bounded queue. Every statement the
 * services run is a single statement — a transaction of its own — so a
 * state change and its outbox event are written together with a CTE and
 * no BEGIN/COMMIT ever spans callbacks. */
#ifndef SVC_DB_H
#define SVC_DB_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>

struct db;

/* `res` is the statement's last result (TUPLES_OK or COMMAND_OK), or NULL
 * on failure, with `sqlstate` (may be "") and `error` set. The pool frees
 * the result after the callback returns. */
typedef void (*db_cb)(PGresult *res, const char *sqlstate, const char *error, void *arg);

/* pool_size connections; at most queue_limit statements wait for one. */
struct db *db_open(struct event_base *base, const char *conninfo, const char *app_name,
                   int pool_size, int queue_limit);
/* Fails what is queued or running (callbacks run; db_query returns false
 * from then on) and closes the connections; db_free releases the pool. */
void db_close(struct db *db);
void db_free(struct db *db);
/* Queues a statement; params are copied. Returns false (and never calls
 * cb) when the queue is full or the pool is closing. */
bool db_query(struct db *db, const char *sql, int n_params, const char *const *params, db_cb cb,
              void *arg);
/* The queue is at its bound: db_query refuses until it drains. */
bool db_full(const struct db *db);
/* Statements queued or running. */
int db_pending(const struct db *db);

/* Start-up only (blocking): runs `sql` once the database answers, retrying
 * up to `wait_seconds`. Returns false with a message in err. */
bool db_run_startup_sql(const char *conninfo, const char *sql, int wait_seconds, char *err,
                        size_t err_size);

#define DB_UNIQUE_VIOLATION "23505"

#endif
