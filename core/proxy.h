/*
 * The proxy: client connections and the life of one request, from the
 * first byte of its head to the last byte of the response.
 *
 * Ownership: a struct sl_client is owned by its worker (kept in the
 * worker's list) from accept until it is closed; it is freed only from a
 * deferred callback, never from inside one of its own bufferevent callbacks.
 */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>

struct sl_worker;

void sl_proxy_accept(struct sl_worker *w, int fd, const struct sockaddr *peer, int peer_len,
                     uint16_t listen_port, bool ssl);

/* Drain: close idle keep-alive clients now, let busy ones finish and close. */
void sl_proxy_drain(struct sl_worker *w);

/* Stop: close every client connection now. */
void sl_proxy_close_all(struct sl_worker *w);

#endif
