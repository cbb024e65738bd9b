/*
 * The server: worker threads and their listeners, reloads, graceful drain.
 * Configuration snapshots are in snapshot.h.
 *
 * Ownership:
 *  - struct sl_server is owned by main(); it outlives every worker.
 *  - struct sl_worker is owned by the server; its event_base, listeners,
 *    DNS base, upstream pool and client connections belong to its thread and
 *    are touched only from it (no locks on the request path). Other threads
 *    talk to a worker only by writing a command byte to its control pipe.
 */
#ifndef SL_SERVER_H
#define SL_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "snapshot.h"

struct event_base;
struct event;
struct evdns_base;
struct evbuffer;
struct sl_upstream_pool;
struct sl_metrics;
struct sl_balancer;
struct sl_client;
struct accept_ctx;
struct sl_httpd;
struct evconnlistener;

/* What a listener is for: each kind has its own request pipeline. */
enum sl_listener_kind {
    SL_LISTENER_PROXY,    /* the gateway's proxy_listen: plugins, router, services */
    SL_LISTENER_INBOUND,  /* the sidecar's inbound_listen: everything to the local app */
    SL_LISTENER_OUTBOUND, /* the sidecar's outbound_listen: by authority to a service */
};
const char *sl_listener_kind_to_str(enum sl_listener_kind kind);

/* Counters shared with the status API: relaxed atomics, one writer each. */
struct sl_worker_stats {
    atomic_uint_fast64_t connections_accepted;
    atomic_uint_fast64_t connections_handled;
    atomic_int_fast64_t connections_active;
    atomic_int_fast64_t connections_reading;
    atomic_int_fast64_t connections_writing;
    atomic_int_fast64_t connections_waiting;
    atomic_uint_fast64_t total_requests;
};

struct sl_listener_socket {
    int fd;
    enum sl_listener_kind kind;
    uint16_t port; /* the port of its listen entry */
    bool ssl;
    struct evconnlistener *listener;
    struct event *resume_timer; /* re-enables accepting after running out of fds */
    uint64_t accept_pauses;     /* how often accepting had to pause */
};

struct sl_worker {
    int index;
    struct sl_server *server;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns;
    struct sl_upstream_pool *pool;
    struct sl_snapshot *snapshot; /* the worker's reference to the current one */

    struct sl_listener_socket *listeners;
    size_t n_listeners;
    struct accept_ctx *accept_ctx;          /* one per listener, passed to its callback */
    struct evconnlistener *status_listener; /* worker 0 only, when status_listen is set */
    struct sl_httpd *status;                /* worker 0: serves status_listen (status.h) */
    bool started;                           /* its thread was created */

    int control_pipe[2]; /* [1] written by other threads, [0] read here */
    struct event *control_event;
    struct event *drain_timer;

    struct sl_client *clients; /* every open client connection (intrusive list) */
    size_t n_clients;
    bool draining;

    struct evbuffer *access_log; /* lines waiting for the next flush */
    uint64_t access_log_dropped; /* bytes dropped because stdout could not take them */
    struct event *access_log_timer;

    struct sl_worker_stats stats;

    /* per-worker data of each plugin (plugin.h), by registry index */
    void **plugin_data;
    /* request metrics, written by this worker only (metrics.h) */
    struct sl_metrics *metrics;
};

struct sl_admin;

struct sl_server {
    struct sl_snapshot *snapshot; /* current; replaced under reload_lock */
    pthread_mutex_t reload_lock;  /* SIGHUP and POST /config reload one at a time */
    struct sl_admin *admin;       /* admin_listen's thread, when configured */
    struct sl_worker *workers;
    int n_workers;
    atomic_bool ready;
    atomic_int workers_running; /* threads that have not returned yet */
};

/*
 * Bind every listener (SO_REUSEPORT, one socket per worker per entry) and
 * start the workers on snap (from sl_snapshot_load; the caller's reference
 * is taken, also on failure). Returns SL_OK, or SL_ERR with a message in err.
 */
int sl_server_start(struct sl_server *srv, struct sl_snapshot *snap, char *err, size_t err_size);

/*
 * From any thread (the main thread on SIGHUP, the admin thread on POST
 * /config; serialised): make snap (from sl_snapshot_load; its reference is
 * taken) the configuration of every new request. Requests in flight finish
 * on the snapshot they started with. Listener changes need a restart.
 */
void sl_server_reload(struct sl_server *srv, struct sl_snapshot *snap);

/* From the main thread: graceful drain (SIGTERM) or immediate stop (SIGINT). */
void sl_server_drain(struct sl_server *srv);
void sl_server_stop(struct sl_server *srv);

/* Wait for every worker to finish and free everything. */
void sl_server_join(struct sl_server *srv);

/* Called by the proxy when a worker may have finished draining. */
void sl_worker_check_drained(struct sl_worker *w);

/* Append one access-log line (without newline) for this worker. */
void sl_worker_access_log(struct sl_worker *w, const char *line, size_t len);

#endif
