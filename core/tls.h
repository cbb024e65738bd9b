/*
 * TLS termination: the server side of the proxy's `ssl` listeners.
 *
 * One struct sl_tls per configuration snapshot holds an SSL_CTX per
 * `certificates` entity (cert/key and cert_alt/key_alt loaded side by side,
 * so OpenSSL offers the ECDSA or the RSA one per client capability) and the
 * SNI table. A connection starts on the default certificate (the one whose
 * snis include "*", else the first in the file) and the servername callback
 * moves it to the certificate of its SNI: exact names first, then "*.x"
 * and "x.*" wildcards, as Kong.
 *
 * Every SSL_CTX gets the same policy: TLS 1.2 and 1.3 only, Mozilla's
 * "intermediate" cipher list and groups (guidelines 5.7), client cipher
 * preference, no compression, no renegotiation, ALPN "http/1.1", and
 * stateless session tickets whose keys rotate (see below). No server-side
 * session cache: tickets need no lock shared by the workers.
 *
 * Ticket keys: derived, never stored. A process-wide random master secret
 * (made once) and the number of the current rotation period give the key
 * name, the AES-256 key and the HMAC key by HMAC-SHA256. New tickets use
 * the current period's keys; tickets of the previous period are still
 * accepted (and renewed), older ones fall back to a full handshake. So
 * every worker and every snapshot agree without sharing state, reloads
 * keep resumption working, and a key lives at most two periods.
 *
 * Ownership: struct sl_tls belongs to its snapshot (sl_tls_free with it).
 * An SSL made by sl_tls_new_ssl keeps its SSL_CTX alive by OpenSSL's own
 * reference count, so connections outlive a reload safely.
 */
#ifndef SL_TLS_H
#define SL_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

struct sl_tls;

/* Build the contexts for cfg's certificates. NULL with err filled when a
 * certificate cannot be used, or when cfg has none (err says so). */
struct sl_tls *sl_tls_new(const struct sl_config *cfg, char *err, size_t err_size);
void sl_tls_free(struct sl_tls *tls);

/* A server-side SSL for one accepted connection (on the default context). */
SSL *sl_tls_new_ssl(struct sl_tls *tls);

/* The SNI the client sent (lower case as sent), or NULL. */
const char *sl_tls_sni(SSL *ssl);

/*
 * The client-side context for a service with protocol "https": TLS 1.2+,
 * and with tls_verify the peer's chain checked against the service's
 * ca_certificates (the system store when it names none) to tls_verify_depth.
 * Contexts are cached for the life of the process by their settings (at
 * most SL_TLS_MAX_CLIENT_PROFILES distinct ones), so the same settings give
 * the same pointer across reloads and pooled connections can be keyed by
 * it. NULL with err filled on failure. Thread-safe; never on a request.
 */
SSL_CTX *sl_tls_client_ctx(const struct sl_config *cfg, const struct sl_service *svc, char *err,
                           size_t err_size);
#define SL_TLS_MAX_CLIENT_PROFILES 256

/* Make ssl (from a client context) talk to `host`: SNI (not for an IP
 * literal) and, when the context verifies, the name or IP the certificate
 * must carry. */
bool sl_tls_client_prepare(SSL *ssl, const char *host);

/* Seconds per ticket-key rotation period. */
#define SL_TLS_TICKET_PERIOD_S 3600

/*
 * The ticket keys of period `epoch` (exposed for the unit tests):
 * name[16], aes[32], hmac[32]. Deterministic for one process.
 */
void sl_tls_ticket_keys(uint64_t epoch, unsigned char name[16], unsigned char aes[32],
                        unsigned char hmac[32]);

/* The clock of ticket-key rotation (tests move it); NULL: time(). */
void sl_tls_set_clock(time_t (*clock)(time_t *));

/* Mozilla intermediate (guidelines 5.7, OpenSSL 3.0) */
#define SL_TLS_CIPHERS                                                                             \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define SL_TLS_GROUPS "X25519:prime256v1:secp384r1"

#endif
