/*
 * The status listener (status_listen), served by worker 0 and kept open
 * while draining, so readiness turns to 503 as soon as a drain starts.
 * The routes depend on the role:
 *  - "gateway": Kong's GET /status and GET /status/ready, and GET /metrics;
 *  - "sidecar": GET /healthz/live (200 while the process runs),
 *    GET /healthz/ready (the same readiness as /status/ready), GET /metrics
 *    and GET /status.
 *
 * Ownership: the server returned belongs to the caller (the worker, which
 * frees it with sl_httpd_free() before its event_base); its handlers read
 * the worker's snapshot and the server's counters on the worker's thread.
 */
#ifndef SL_STATUS_H
#define SL_STATUS_H

#include <stddef.h>

struct sl_worker;
struct sl_httpd;

/* The status endpoints of `role` on w's event_base; hand it accepted
 * connections with sl_httpd_accept(). NULL with err filled on failure. */
struct sl_httpd *sl_status_new(struct sl_worker *w, const char *role, char *err, size_t err_size);

#endif
