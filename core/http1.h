/*
 * sluice HTTP/1.1 codec (RFC 9110, RFC 9112).
 *
 * Contract (in the spirit of picohttpparser):
 *  - Zero-copy: every string in a parsed message points into the caller's
 *    buffer; the caller keeps that buffer alive and unmoved while it uses
 *    the result.
 *  - No allocation: the caller supplies the header array.
 *  - Incremental: a head parser is called again with the longer buffer when
 *    more bytes arrive; it returns SL_HTTP_INCOMPLETE until the empty line
 *    that ends the head is present. The chunked scanner keeps its own small
 *    state and is fed bytes in any split.
 *  - Strict: the codec decides framing, so request smuggling is stopped
 *    here. Every rejection returns a negative HTTP status (-400, -414, -431,
 *    -413, -502 for responses) and sets `error` to a static reason string.
 *
 * Ownership: all structs here are plain values owned by the caller.
 */
#ifndef SL_HTTP1_H
#define SL_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returned by the head parsers when the head is not complete yet. */
#define SL_HTTP_INCOMPLETE 0

/* Well-known header ids, so the proxy never compares names twice. */
enum sl_http_header_id {
    SL_HDR_OTHER = 0,
    SL_HDR_HOST,
    SL_HDR_CONTENT_LENGTH,
    SL_HDR_TRANSFER_ENCODING,
    SL_HDR_CONNECTION,
    SL_HDR_KEEP_ALIVE,
    SL_HDR_PROXY_CONNECTION,
    SL_HDR_TE,
    SL_HDR_TRAILER,
    SL_HDR_UPGRADE,
    SL_HDR_EXPECT,
    SL_HDR_X_FORWARDED_FOR,
    SL_HDR_X_FORWARDED_PROTO,
    SL_HDR_X_FORWARDED_HOST,
    SL_HDR_X_FORWARDED_PORT,
    SL_HDR_X_FORWARDED_PATH,
    SL_HDR_X_FORWARDED_PREFIX,
    SL_HDR_X_REAL_IP,
    SL_HDR_X_REQUEST_ID,
    SL_HDR_VIA,
    SL_HDR_ACCEPT,
    SL_HDR_PROXY_AUTHENTICATE,
    SL_HDR_PROXY_AUTHORIZATION,
    SL_HDR_DATE,
    SL_HDR_SERVER,
    SL_HDR__COUNT
};

struct sl_http_header {
    const char *name;
    size_t name_len;
    const char *value; /* optional whitespace around the value removed */
    size_t value_len;
    enum sl_http_header_id id;
};

enum sl_http_body_kind {
    SL_BODY_NONE = 0,    /* no body bytes follow the head */
    SL_BODY_LENGTH,      /* exactly content_length bytes follow */
    SL_BODY_CHUNKED,     /* chunked framing follows (scan with sl_chunked_*) */
    SL_BODY_UNTIL_CLOSE, /* responses only: body ends when the peer closes */
};

/* Limits applied while parsing a request head. 0 means "use the default". */
struct sl_http_limits {
    size_t max_request_line; /* -414 beyond; default 8192 */
    size_t max_header_bytes; /* whole head incl. request line; -431; default 32768 */
    size_t max_headers;      /* header field count; -431; default 100 */
};

#define SL_HTTP_DEFAULT_MAX_REQUEST_LINE 8192
#define SL_HTTP_DEFAULT_MAX_HEADER_BYTES 32768
#define SL_HTTP_DEFAULT_MAX_HEADERS 100

/* Empty lines skipped before a request-line (RFC 9112 section 2.2); more is 400. */
#define SL_HTTP_MAX_LEADING_EMPTY_LINES 4

struct sl_http_request {
    const char *method;
    size_t method_len;
    const char *target; /* request-target as sent (origin-form normally) */
    size_t target_len;
    int version_minor; /* 1 for HTTP/1.1, 0 for HTTP/1.0 */

    struct sl_http_header *headers; /* in: caller's array; out: filled */
    size_t header_capacity;         /* in: size of the array */
    size_t num_headers;             /* out */

    /* Framing and semantics the codec derived (RFC 9112 section 6). */
    enum sl_http_body_kind body_kind; /* NONE, LENGTH or CHUNKED */
    uint64_t content_length;          /* valid when body_kind == SL_BODY_LENGTH */
    bool keep_alive;                  /* version default adjusted by Connection */
    bool expect_continue;             /* Expect: 100-continue present */
    bool has_upgrade;                 /* Connection: upgrade + Upgrade header */
    const char *host;                 /* Host header value, NULL when absent */
    size_t host_len;
    /*
     * The authority the request is for: the target's for an absolute-form
     * target (`http://a.example/x`, RFC 9112 section 3.2.2: it replaces
     * Host), else the Host value; NULL when there is neither (HTTP/1.0
     * without Host). Always a valid `uri-host [":" port]`.
     */
    const char *authority;
    size_t authority_len;
    /*
     * The target without scheme and authority: `path-abempty ["?" query]`
     * of an absolute-form target (may be empty, meaning "/"), else the
     * whole target.
     */
    const char *origin;
    size_t origin_len;
    bool absolute_form; /* the target was `http://...` or `https://...` */

    const char *error; /* static reason when the parser returns < 0 */
};

struct sl_http_response {
    int version_minor;
    int status; /* 100..999 */
    const char *reason;
    size_t reason_len;

    struct sl_http_header *headers;
    size_t header_capacity;
    size_t num_headers;

    enum sl_http_body_kind body_kind; /* computed with the request method */
    uint64_t content_length;
    bool keep_alive; /* the upstream connection may be reused afterwards */
    /* Transfer-Encoding without chunked last: the body is read until close
     * and is still coded, so its Transfer-Encoding must go with it */
    bool transfer_coded;

    const char *error;
};

/*
 * Parse a request head from buf[0..len).
 * Returns the length of the head (up to and including the final CRLF) when
 * complete, SL_HTTP_INCOMPLETE when more bytes are needed (and no limit is
 * exceeded yet), or a negative HTTP status when the request must be refused
 * (the connection is then closed by the caller).
 * Bare LF as a line end in the head is accepted (RFC 9112 section 2.2);
 * bare CR, NUL and other control bytes are not.
 * Besides -400/-414/-431, a well-formed HTTP version other than 1.0 and 1.1
 * gets -505. The verdict depends only on the bytes up to the point where it
 * is taken, so once a call returns a head length or an error, calling again
 * with more bytes returns the same. The other fields of `req` are valid
 * only when the return value is positive. The strictness decisions are
 * listed at the top of http1.c.
 */
int sl_http_parse_request(const char *buf, size_t len, const struct sl_http_limits *limits,
                          struct sl_http_request *req);

/*
 * Optional helper for the incremental caller: after a read grew the buffer
 * from prev_len to len bytes (prev_len = 0 for a new message), is it worth
 * calling the head parser again? False when the new bytes hold no LF and
 * cross no limit, so the parser cannot complete the head nor answer
 * -414/-431 now. Calling the parser anyway is always correct (a verdict
 * never changes once given, so skipping a call only delays an early 400);
 * the point is that a client sending one byte per packet does not make the
 * head cost quadratic time. Works for request and response heads.
 */
bool sl_http_head_may_complete(const char *buf, size_t prev_len, size_t len,
                               const struct sl_http_limits *limits);

/*
 * Parse an upstream response head. `request_method_is_head` selects the
 * no-body rule for HEAD; 1xx/204/304 never have a body. Errors are -502.
 * max_header_bytes/max_headers from `limits` apply (NULL for defaults).
 */
int sl_http_parse_response(const char *buf, size_t len, bool request_method_is_head,
                           const struct sl_http_limits *limits, struct sl_http_response *resp);

/* Case-insensitive: does the comma-separated list `value` contain `token`? */
bool sl_http_list_has_token(const char *value, size_t value_len, const char *token,
                            size_t token_len);

/*
 * Iterate the comma-separated tokens of a list header value (Connection).
 * Start with *pos = 0; returns false when no token is left.
 */
bool sl_http_list_next(const char *value, size_t value_len, size_t *pos, const char **token,
                       size_t *token_len);

/* Case-insensitive ASCII comparison of two byte strings of equal length. */
bool sl_http_name_equals(const char *a, size_t a_len, const char *b, size_t b_len);

/*
 * Chunked body scanner (RFC 9112 section 7.1). It validates the framing of
 * a chunked body as bytes pass through, so the proxy can forward validated
 * bytes verbatim. It never copies data.
 */
#define SL_CHUNK_SIZE_MAX_DIGITS 16 /* hex digits in a chunk-size, leading zeros included */
#define SL_CHUNK_LINE_MAX 4096      /* chunk-size line without CRLF: size and extensions */
#define SL_CHUNK_TRAILER_MAX 8192   /* trailer section after the last chunk, final CRLF included */

struct sl_chunked_scanner {
    int state;
    uint64_t chunk_remaining; /* data bytes left in the current chunk */
    unsigned size_digits;     /* hex digits seen in the current size line */
    unsigned line_bytes;      /* bytes in the current ext/trailer line */
    unsigned trailer_bytes;   /* bytes of the trailer section so far */
    uint64_t body_bytes;      /* total chunk data seen so far */
    bool done;                /* final CRLF after the last chunk seen */
    const char *error;        /* static reason after a failure */
};

void sl_chunked_init(struct sl_chunked_scanner *s);

/*
 * Feed bytes. Returns the number of bytes accepted (all of them up to the
 * end of the body; fewer only when the body ended inside buf, in which case
 * s->done is true and the rest belongs to the next message), or -1 on a
 * framing error (s->error says why): chunk sizes with a sign, "0x", "_",
 * spaces or more than 16 hex digits, extensions outside the chunk-ext
 * grammar of RFC 9112 section 7.1.1 (a bare ';', an empty name, '=' without
 * a value, whitespace before CRLF, a broken quoted-string, control bytes),
 * bare LF or bare CR in framing, control bytes in trailers, size lines over
 * SL_CHUNK_LINE_MAX or trailer sections over SL_CHUNK_TRAILER_MAX bytes.
 */
long sl_chunked_scan(struct sl_chunked_scanner *s, const char *buf, size_t len);

/*
 * Chunk data bytes that follow at the scanner's position (0 while it is in
 * framing). A proxy that must remove the framing (for an HTTP/1.0 client)
 * feeds framing bytes to sl_chunked_scan() and forwards only data bytes.
 */
uint64_t sl_chunked_data_ready(const struct sl_chunked_scanner *s);

/*
 * Host and authority syntax (RFC 9110 section 7.2, RFC 3986 section 3.2.2):
 * `uri-host [ ":" port ]` of an http or https URI, where uri-host is an
 * IP-literal (`[` IPv6address or IPvFuture `]`), an IPv4address or a
 * reg-name (unreserved / pct-encoded / sub-delims), and port is *DIGIT.
 * The host may not be empty (RFC 9110 section 4.2.1) and userinfo is
 * refused (section 4.2.4).
 */
enum sl_http_host_kind {
    SL_HOST_REG_NAME = 1,
    SL_HOST_IPV4,      /* dotted-quad dec-octets: "1.2.3.4", never "01.2.3.4" */
    SL_HOST_IPV6,      /* "[...]" */
    SL_HOST_IPVFUTURE, /* "[v1.x]" */
};

struct sl_http_host {
    enum sl_http_host_kind kind;
    const char *name; /* the host as sent, brackets included for an IP-literal */
    size_t name_len;
    const char *port; /* the digits after ':' (may be empty); NULL without ':' */
    size_t port_len;
};

/*
 * Parse s[0..n) as `uri-host [ ":" port ]` (no surrounding whitespace).
 * Returns NULL and fills `out` (its pointers into s) when valid, else a
 * static reason and `out` is left undefined.
 */
const char *sl_http_parse_host(const char *s, size_t n, struct sl_http_host *out);

/* Static reason phrase for a status code ("OK", "Bad Request", ...). */
const char *sl_http_reason(int status);

/* A token character (RFC 9110 section 5.6.2): header names, methods. */
bool sl_http_is_tchar(unsigned char c);

#endif
