/*
 * JSON Web Key Sets for the jwt plugin (beyond Kong): public keys fetched
 * from a URL (RFC 7517), chosen by a token's `kid`.
 *
 * Fetching is off the request path: one background thread fetches every
 * source with libcurl, at load (so the first requests find the keys) and
 * then every refresh interval, and publishes the parsed set with one atomic
 * store. A worker finds a key with an atomic load and a scan, no lock. A
 * set is replaced only when the document changed; old sets stay until the
 * source is released, so a key a worker holds is never freed under it.
 *
 * Ownership: a source is shared by the jwt instances with the same URL and
 * interval (reference counted). sl_jwks_release() from any thread; the
 * fetcher frees released sources and ends when none is left.
 */
#ifndef SL_JWKS_H
#define SL_JWKS_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#include "jwt_token.h"

struct sl_jwks;
struct sl_jwks_set;

/* A source for url, refreshed every refresh_s seconds; the first fetch
 * happens before this returns (bounded by the fetch timeout, 5 s). NULL
 * when out of memory. A failed fetch is logged and retried later. */
struct sl_jwks *sl_jwks_acquire(const char *url, unsigned refresh_s);
void sl_jwks_release(struct sl_jwks *src);

/* The key with this kid that can verify alg (RS*: RSA; ES*: EC on the
 * alg's curve; a JWK `alg` must equal alg), or NULL. */
EVP_PKEY *sl_jwks_find(struct sl_jwks *src, const char *kid, enum sl_jwt_alg alg);

/* Process exit: stop the fetcher and free every source (all released). */
void sl_jwks_shutdown(void);

/* Parse a JWKS document (for the unit tests and the fetcher). Keys that
 * are not signature keys, not RSA (2048 bits or more) / EC P-256/384/521,
 * or without a kid are skipped. NULL when it is not a JWKS document. */
struct sl_jwks_set *sl_jwks_parse(const char *json, size_t len);
size_t sl_jwks_set_size(const struct sl_jwks_set *set);
EVP_PKEY *sl_jwks_set_find(const struct sl_jwks_set *set, const char *kid, enum sl_jwt_alg alg);
void sl_jwks_set_free(struct sl_jwks_set *set);

#endif
