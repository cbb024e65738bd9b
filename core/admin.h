/*
 * The admin listener (admin_listen): Kong's DB-less POST /config, which
 * loads a declarative configuration sent in the request body and makes it
 * the running one, exactly like a SIGHUP reload.
 *
 * It runs on a thread of its own with its own event_base, so parsing a big
 * configuration never stalls a worker that serves traffic. Reloads from
 * here and from SIGHUP are serialised by sl_server_reload()'s lock.
 *
 * Ownership: the server starts it (after binding its socket with the other
 * listeners) and stops and joins it in sl_server_join().
 */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include <stddef.h>

struct sl_server;
struct sl_admin;

/* Start serving on the already listening socket fd (taken). NULL on error. */
struct sl_admin *sl_admin_start(struct sl_server *srv, int fd, const char *role, char *err,
                                size_t err_size);
void sl_admin_stop(struct sl_admin *admin);

#endif
