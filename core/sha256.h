/*
 * SHA-256 (FIPS 180-4), for the configuration's hash. OpenSSL has one, but
 * its first digest initialises the provider machinery, which costs about
 * 2 MB of resident memory: too much for an idle sidecar (bench/sidecar),
 * which otherwise never needs OpenSSL's digests.
 *
 * Ownership: plain values owned by the caller.
 */
#ifndef SL_SHA256_H
#define SL_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sl_sha256 {
    uint32_t state[8];
    uint64_t bytes; /* message length so far */
    unsigned char block[64];
    size_t used; /* bytes in block */
};

void sl_sha256_init(struct sl_sha256 *s);
void sl_sha256_update(struct sl_sha256 *s, const void *data, size_t len);
void sl_sha256_final(struct sl_sha256 *s, unsigned char digest[32]);
/* The digest of data[0..len) in one call. */
void sl_sha256(const void *data, size_t len, unsigned char digest[32]);

#endif
