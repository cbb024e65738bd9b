/*
 * Small shared helpers: request ids, clocks, return codes.
 */
#ifndef SL_UTIL_H
#define SL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One vocabulary of return codes for the engine. */
enum sl_rc {
    SL_OK = 0,
    SL_ERR = -1,     /* generic failure; errno or a log line says more */
    SL_AGAIN = -2,   /* not complete yet; call again when more arrives */
    SL_NOMEM = -3,   /* allocation failed */
    SL_INVALID = -4, /* input refused */
};

#define SL_REQUEST_ID_LEN 32

/*
 * 32 lowercase hex chars + NUL from a per-thread generator seeded with
 * getrandom(); never blocks after the first call of a thread.
 */
void sl_request_id(char out[SL_REQUEST_ID_LEN + 1]);

/* A random 64-bit number from the same per-thread generator (not for
 * secrets): jitter, random choices. */
uint64_t sl_random64(void);

/* Monotonic clock in milliseconds / microseconds. */
uint64_t sl_now_ms(void);
uint64_t sl_now_us(void);

/* Numeric text of an address ("127.0.0.1", "::1") and its port. */
void sl_sockaddr_text(const struct sockaddr *sa, char *out, size_t out_size, uint16_t *port);

/* Is "name" a literal IPv4 or IPv6 address? */
bool sl_is_ip_literal(const char *name);

/* Minimal JSON string escaping into out (NUL terminated); returns length or -1. */
long sl_json_escape(const char *in, size_t in_len, char *out, size_t out_size);

#endif
