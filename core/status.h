/*
 * The status listener: Kong's GET /status and GET /status/ready on
 * status_listen, served by worker 0 and kept open while draining, so
 * readiness turns to 503 as soon as a drain starts.
 */
#ifndef SL_STATUS_H
#define SL_STATUS_H

struct sl_worker;

void sl_status_accept(struct sl_worker *w, int fd);

/* Close every open status connection (the worker is stopping). */
void sl_status_close_all(struct sl_worker *w);

#endif
