/*
 * The proxy: client connections and the life of one request, from the
 * first byte of its head to the last byte of the response. Its parts and
 * their ownership are described in proxy_internal.h.
 */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "server.h"

/* A connection accepted on a listener of `kind` (taken: closed on failure). */
void sl_proxy_accept(struct sl_worker *w, int fd, const struct sockaddr *peer, int peer_len,
                     enum sl_listener_kind kind, uint16_t listen_port, bool ssl);

/* Drain: close idle keep-alive clients now, let busy ones finish and close. */
void sl_proxy_drain(struct sl_worker *w);

/* Stop: close every client connection now. */
void sl_proxy_close_all(struct sl_worker *w);

#endif
