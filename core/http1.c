/*
 * sluice HTTP/1.1 codec: request and response heads (RFC 9112 sections 2-6)
 * and the chunked transfer coding (RFC 9112 section 7.1).
 *
 * How the head parsers work
 * -------------------------
 * Both head parsers make one forward pass over the bytes with table-driven
 * character classes and decide everything at a byte position: a verdict
 * (head length, or an error) depends only on the bytes up to the position
 * where it is taken. Two properties follow that the proxy relies on and
 * that the fuzzer checks:
 *   - once a prefix of a stream gets a verdict, every longer prefix gets the
 *     same verdict, so the answer never depends on how reads were split;
 *   - limits are positions too: -431 as soon as the buffer holds a byte past
 *     max_header_bytes with the head still open, -414 as soon as it holds a
 *     byte past max_request_line with the request line still open.
 * The parsers keep no state between calls; sl_http_head_may_complete()
 * lets a caller skip calls that cannot change the answer, which keeps a
 * client trickling one byte per packet from costing quadratic time.
 *
 * Strictness decisions (the proxy decides framing here, so request
 * smuggling is stopped here):
 *   - Content-Length: 1 to 19 DIGITs and nothing else. A request with two
 *     Content-Length fields is refused even when the values are equal: a
 *     sender that repeats framing headers is either broken or probing, and
 *     nginx refuses it too. A response may repeat an identical value (RFC
 *     9110 section 8.6); differing or invalid values are -502.
 *   - Transfer-Encoding in a request: exactly one field whose value, after
 *     removing SP padding, is `chunked` (any case). HTAB padding, lists,
 *     parameters, other codings and repeated fields are refused, stricter
 *     than RFC 9112 section 6.3 on purpose (like nginx), because those are
 *     the spellings other parsers disagree on.
 *   - Content-Length together with Transfer-Encoding in a request: 400
 *     (RFC 9112 section 6.1 allows rejecting). In a response the coding wins,
 *     and the upstream connection is not reused; the Content-Length must
 *     still be valid (-502 otherwise). A response whose last coding is not
 *     chunked is read until close.
 *   - Any Transfer-Encoding in an HTTP/1.0 message: 400 / -502 (RFC 9112
 *     section 6.1: framing is faulty).
 *   - Names spelled Content_Length / Transfer_Encoding (any case) in a
 *     request: 400, since some backends fold `_` into `-`. Other names with
 *     `_` are forwarded.
 *   - obs-fold is refused (400 / -502), never unfolded (RFC 9112 section 5.2).
 *   - Bare LF ends a head line (RFC 9112 section 2.2); a bare CR never does.
 *   - Host: one field at most (RFC 9112 section 3.2), and its value is a
 *     valid `uri-host [":" port]` (sl_http_parse_host): reg-name, IPv4 or
 *     an IP-literal, a port of digits, no userinfo, never empty (not even
 *     in HTTP/1.0, as nginx: an http URI has a non-empty host, RFC 9110
 *     section 4.2.1). An absolute-form target's authority is checked the
 *     same way and replaces Host; a Host naming another host or port is
 *     refused (see absolute_target()).
 *   - Up to SL_HTTP_MAX_LEADING_EMPTY_LINES empty lines before the
 *     request-line are skipped (RFC 9112 section 2.2); more is 400.
 *   - Request-line: method is a token, exactly one SP between the parts,
 *     target is 1*(0x21-0x7E) without '#' (no fragment), version is
 *     `HTTP/1.1` or `HTTP/1.0`; another well-formed `HTTP/d.d` is 505, anything else 400 (including
 *     HTTP/0.9 requests without a version).
 */
#include "http1.h"

#include <limits.h>
#include <string.h>

/* ---- character classes ---------------------------------------------------- */

enum {
    C_TCHAR = 1 << 0,  /* token characters, RFC 9110 section 5.6.2 */
    C_FVALUE = 1 << 1, /* field-value bytes: VCHAR, obs-text, SP, HTAB (section 5.5) */
    C_TARGET = 1 << 2, /* request-target bytes: visible ASCII 0x21-0x7E but '#' */
};

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_VCHAR(c) ((c) >= 0x21 && (c) <= 0x7e)
#define IS_TCHAR(c)                                                                                \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' ||         \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||          \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define CLS(c)                                                                                     \
    ((IS_TCHAR(c) ? C_TCHAR : 0) |                                                                 \
     ((IS_VCHAR(c) || (c) >= 0x80 || (c) == ' ' || (c) == '\t') ? C_FVALUE : 0) |                  \
     ((IS_VCHAR(c) && (c) != '#') ? C_TARGET : 0))
#define LC(c) ((uint8_t)(((c) >= 'A' && (c) <= 'Z') ? (c) + 32 : (c)))
#define HEXV(c)                                                                                    \
    (IS_DIGIT(c)                  ? (c) - '0'                                                      \
     : ((c) >= 'a' && (c) <= 'f') ? (c) - 'a' + 10                                                 \
     : ((c) >= 'A' && (c) <= 'F') ? (c) - 'A' + 10                                                 \
                                  : 0xff)

#define R4(m, c) m(c), m((c) + 1), m((c) + 2), m((c) + 3)
#define R16(m, c) R4(m, c), R4(m, (c) + 4), R4(m, (c) + 8), R4(m, (c) + 12)
#define R64(m, c) R16(m, c), R16(m, (c) + 16), R16(m, (c) + 32), R16(m, (c) + 48)
#define R256(m) R64(m, 0), R64(m, 64), R64(m, 128), R64(m, 192)

static const uint8_t cls[256] = {R256(CLS)};

bool sl_http_is_tchar(unsigned char c)
{
    return (cls[c] & C_TCHAR) != 0;
}
static const uint8_t lower[256] = {R256(LC)};
static const uint8_t hexval[256] = {R256(HEXV)};

#define U(p) ((unsigned char)*(p))
#define HAS(c, k) ((cls[(unsigned char)(c)] & (k)) != 0)

/*
 * Word-at-a-time skipping for the long runs (field values, request-target):
 * eight bytes are tested at once and the byte table only runs where a word
 * holds something unusual (the classic "has a byte less than n" tests,
 * which are exact as yes/no answers).
 */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load8(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* Non-zero when some byte of x is below n (n <= 128). */
static inline uint64_t has_less(uint64_t x, uint64_t n)
{
    return (x - ONES * n) & ~x & HIGHS;
}

/* Non-zero when some byte of x equals b. */
static inline uint64_t has_byte(uint64_t x, uint64_t b)
{
    return has_less(x ^ (ONES * b), 1);
}

/* Every byte is >= 0x20 and not DEL: a field-value word without HTAB or a line end. */
static inline bool word_is_value(uint64_t x)
{
    return (has_less(x, 0x20) | has_byte(x, 0x7f)) == 0;
}

/* Every byte is in 0x21-0x7E and not '#': a request-target word. */
static inline bool word_is_target(uint64_t x)
{
    return (has_less(x, 0x21) | has_byte(x, 0x7f) | has_byte(x, '#') | (x & HIGHS)) == 0;
}

/* First byte at or after p, before end, that is not in class k. */
static inline const char *skip_class(const char *p, const char *end, unsigned k)
{
    for (;;) {
        if (k == C_FVALUE) {
            while (end - p >= 8 && word_is_value(load8(p)))
                p += 8;
        } else {
            while (end - p >= 8 && word_is_target(load8(p)))
                p += 8;
        }
        const char *stop = end - p >= 8 ? p + 8 : end;
        while (p < stop && HAS(*p, k))
            p++;
        if (p < stop || p == end)
            return p;
    }
}

/* ---- small helpers ---------------------------------------------------------- */

/* Case-insensitive compare of n bytes against a lower-case literal. */
static inline bool eq_lower(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lower[(unsigned char)s[i]] != (unsigned char)lit[i])
            return false;
    }
    return true;
}

bool sl_http_name_equals(const char *a, size_t a_len, const char *b, size_t b_len)
{
    if (a_len != b_len)
        return false;
    for (size_t i = 0; i < a_len; i++) {
        if (lower[(unsigned char)a[i]] != lower[(unsigned char)b[i]])
            return false;
    }
    return true;
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 9110 section 5.6.1: empty list elements and OWS around them are ignored. */
bool sl_http_list_next(const char *value, size_t value_len, size_t *pos, const char **token,
                       size_t *token_len)
{
    size_t i = *pos;
    while (i < value_len && (is_ows(value[i]) || value[i] == ','))
        i++;
    if (i >= value_len) {
        *pos = value_len;
        return false;
    }
    size_t start = i;
    while (i < value_len && value[i] != ',')
        i++;
    size_t stop = i;
    while (stop > start && is_ows(value[stop - 1]))
        stop--;
    if (i < value_len)
        i++; /* the comma */
    *pos = i;
    *token = value + start;
    *token_len = stop - start;
    return true;
}

bool sl_http_list_has_token(const char *value, size_t value_len, const char *token,
                            size_t token_len)
{
    size_t pos = 0;
    const char *t;
    size_t tl;
    while (sl_http_list_next(value, value_len, &pos, &t, &tl)) {
        if (sl_http_name_equals(t, tl, token, token_len))
            return true;
    }
    return false;
}

/* 1 to 19 DIGITs (RFC 9110 section 8.6); 19 digits cannot overflow uint64_t. */
static bool parse_content_length(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)v[i] - (unsigned)'0';
        if (d > 9)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* Internal ids for names that only differ from a framing header by '_'. */
enum { ID_CONTENT_LENGTH_UNDERSCORE = SL_HDR__COUNT + 1, ID_TRANSFER_ENCODING_UNDERSCORE };

/*
 * Header id from the name: switch on length and first byte, then one
 * comparison against the lower-case spelling (names are tchars already).
 */
static int classify(const char *n, size_t len)
{
    unsigned char c0 = lower[(unsigned char)n[0]];
#define IS(lit) eq_lower(n + 1, (lit) + 1, len - 1)
    switch (len) {
    case 2:
        if (c0 == 't' && IS("te"))
            return SL_HDR_TE;
        break;
    case 3:
        if (c0 == 'v' && IS("via"))
            return SL_HDR_VIA;
        break;
    case 4:
        if (c0 == 'h' && IS("host"))
            return SL_HDR_HOST;
        if (c0 == 'd' && IS("date"))
            return SL_HDR_DATE;
        break;
    case 6:
        if (c0 == 'e' && IS("expect"))
            return SL_HDR_EXPECT;
        if (c0 == 'a' && IS("accept"))
            return SL_HDR_ACCEPT;
        if (c0 == 's' && IS("server"))
            return SL_HDR_SERVER;
        break;
    case 7:
        if (c0 == 't' && IS("trailer"))
            return SL_HDR_TRAILER;
        if (c0 == 'u' && IS("upgrade"))
            return SL_HDR_UPGRADE;
        break;
    case 9:
        if (c0 == 'x' && IS("x-real-ip"))
            return SL_HDR_X_REAL_IP;
        break;
    case 10:
        if (c0 == 'c' && IS("connection"))
            return SL_HDR_CONNECTION;
        if (c0 == 'k' && IS("keep-alive"))
            return SL_HDR_KEEP_ALIVE;
        break;
    case 12:
        if (c0 == 'x' && IS("x-request-id"))
            return SL_HDR_X_REQUEST_ID;
        break;
    case 14:
        if (c0 == 'c') {
            if (IS("content-length"))
                return SL_HDR_CONTENT_LENGTH;
            if (IS("content_length"))
                return ID_CONTENT_LENGTH_UNDERSCORE;
        }
        break;
    case 15:
        if (c0 == 'x' && IS("x-forwarded-for"))
            return SL_HDR_X_FORWARDED_FOR;
        break;
    case 16:
        if (c0 == 'x') {
            if (IS("x-forwarded-host"))
                return SL_HDR_X_FORWARDED_HOST;
            if (IS("x-forwarded-port"))
                return SL_HDR_X_FORWARDED_PORT;
            if (IS("x-forwarded-path"))
                return SL_HDR_X_FORWARDED_PATH;
        } else if (c0 == 'p' && IS("proxy-connection")) {
            return SL_HDR_PROXY_CONNECTION;
        }
        break;
    case 17:
        if (c0 == 't') {
            if (IS("transfer-encoding"))
                return SL_HDR_TRANSFER_ENCODING;
            if (IS("transfer_encoding"))
                return ID_TRANSFER_ENCODING_UNDERSCORE;
        } else if (c0 == 'x' && IS("x-forwarded-proto")) {
            return SL_HDR_X_FORWARDED_PROTO;
        }
        break;
    case 18:
        if (c0 == 'x' && IS("x-forwarded-prefix"))
            return SL_HDR_X_FORWARDED_PREFIX;
        if (c0 == 'p' && IS("proxy-authenticate"))
            return SL_HDR_PROXY_AUTHENTICATE;
        break;
    case 19:
        if (c0 == 'p' && IS("proxy-authorization"))
            return SL_HDR_PROXY_AUTHORIZATION;
        break;
    default:
        break;
    }
#undef IS
    return SL_HDR_OTHER;
}

/* ---- head parsing shared by requests and responses ----------------------- */

struct head {
    const char *buf;
    const char *end; /* buf + min(len, max_header_bytes) */
    bool over;       /* the buffer holds bytes past max_header_bytes */
    bool is_request;
    int err;       /* -400 or -502 */
    int err_limit; /* -431 or -502 */
    int version_minor;
    const char *error;

    struct sl_http_header *headers;
    size_t max_fields; /* min(max_headers, header_capacity) */
    size_t num_headers;

    /* what the fields said */
    bool cl_seen, te_seen, te_chunked, host_seen, target_https;
    bool conn_close, conn_keep_alive, conn_upgrade, upgrade_seen, expect_continue;
    uint64_t content_length;
    const char *host;
    size_t host_len;
    struct sl_http_host host_parsed; /* valid when host_seen */
};

static size_t limit_or(size_t v, size_t dflt)
{
    if (v == 0)
        v = dflt;
    return v > INT_MAX ? INT_MAX : v; /* the head length is returned as an int */
}

static void head_init(struct head *h, const char *buf, size_t len, size_t max_head,
                      struct sl_http_header *headers, size_t capacity, size_t max_headers,
                      bool is_request)
{
    memset(h, 0, sizeof(*h));
    h->buf = buf;
    h->over = len > max_head;
    h->end = len == 0 ? buf : buf + (h->over ? max_head : len); /* buf may be NULL when empty */
    h->is_request = is_request;
    h->err = is_request ? -400 : -502;
    h->err_limit = is_request ? -431 : -502;
    h->headers = headers;
    h->max_fields = headers == NULL ? 0 : (capacity < max_headers ? capacity : max_headers);
}

static int fail(struct head *h, const char *why)
{
    h->error = why;
    return h->err;
}

/* Ran out of bytes at h->end: either wait for more or the head is too big. */
static int out_of_data(struct head *h)
{
    if (h->over) {
        h->error = h->is_request ? "request header section too large"
                                 : "response header section too large";
        return h->err_limit;
    }
    return SL_HTTP_INCOMPLETE;
}

/*
 * *p is CR or LF at a line end. Returns the terminator length (2 for CRLF,
 * 1 for a bare LF), 0 when the byte after CR has not arrived, -1 for a bare
 * CR (RFC 9112 section 2.2).
 */
static inline int eol_len(const char *p, const char *end)
{
    if (*p == '\n')
        return 1;
    if (p + 1 == end)
        return 0;
    return p[1] == '\n' ? 2 : -1;
}

static void connection_tokens(struct head *h, const char *v, size_t n)
{
    size_t pos = 0;
    const char *t;
    size_t tl;
    while (sl_http_list_next(v, n, &pos, &t, &tl)) {
        if (tl == 5 && eq_lower(t, "close", 5))
            h->conn_close = true;
        else if (tl == 10 && eq_lower(t, "keep-alive", 10))
            h->conn_keep_alive = true;
        else if (tl == 7 && eq_lower(t, "upgrade", 7))
            h->conn_upgrade = true;
    }
}

/* ---- Host and authority (RFC 9110 section 7.2, RFC 3986 section 3.2.2) ---- */

#define IS_HEX(c) (hexval[(unsigned char)(c)] != 0xff)
/* unreserved / sub-delims (RFC 3986 section 2): what a reg-name holds besides pct-encoded */
#define IS_UNRESERVED(c)                                                                           \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~')
#define IS_SUBDELIM(c)                                                                             \
    ((c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' ||          \
     (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=')

/* IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet, and nothing else */
static bool ipv4_valid(const char *s, size_t n)
{
    size_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i == n || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && IS_DIGIT(s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        size_t digits = i - start;
        /* dec-octet has no leading zero ("01" is a reg-name) and is at most 255 */
        if (digits == 0 || (digits > 1 && s[start] == '0') || v > 255)
            return false;
    }
    return i == n;
}

/*
 * IPv6address (RFC 3986 section 3.2.2): eight h16 pieces separated by ':',
 * the last two of which may be an IPv4address (ls32), or fewer pieces with
 * one "::" standing for at least one zero piece.
 */
static bool ipv6_valid(const char *s, size_t n)
{
    size_t i = 0;
    unsigned pieces = 0;
    bool elided = false;
    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        elided = true;
        i = 2;
        if (i == n)
            return true;
    }
    for (;;) {
        size_t start = i;
        while (i < n && IS_HEX(s[i]) && i - start < 5)
            i++;
        size_t len = i - start;
        if (i < n && s[i] == '.') { /* ls32 as an IPv4address: the last two pieces */
            if (!ipv4_valid(s + start, n - start))
                return false;
            pieces += 2;
            break;
        }
        if (len == 0 || len > 4)
            return false;
        pieces++;
        if (i == n)
            break;
        if (s[i] != ':')
            return false;
        i++;
        if (i < n && s[i] == ':') {
            if (elided)
                return false; /* one "::" at most */
            elided = true;
            i++;
            if (i == n)
                break;
        } else if (i == n) {
            return false; /* a single trailing ':' */
        }
    }
    return elided ? pieces <= 7 : pieces == 8;
}

/* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
static bool ipvfuture_valid(const char *s, size_t n)
{
    size_t i = 1;
    if (n == 0 || (s[0] != 'v' && s[0] != 'V'))
        return false;
    while (i < n && IS_HEX(s[i]))
        i++;
    if (i == 1 || i == n || s[i] != '.')
        return false;
    if (++i == n)
        return false;
    for (; i < n; i++) {
        if (!IS_UNRESERVED(s[i]) && !IS_SUBDELIM(s[i]) && s[i] != ':')
            return false;
    }
    return true;
}

const char *sl_http_parse_host(const char *s, size_t n, struct sl_http_host *out)
{
    if (n == 0)
        return "empty host";
    /* userinfo "@" has no place in Host and is refused in a target (RFC 9110 section 4.2.4) */
    if (memchr(s, '@', n) != NULL)
        return "userinfo in the host";
    size_t i;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return "unterminated IP-literal";
        size_t inner = (size_t)(close - s) - 1;
        if (inner > 0 && (s[1] == 'v' || s[1] == 'V')) {
            if (!ipvfuture_valid(s + 1, inner))
                return "invalid IPvFuture literal";
            out->kind = SL_HOST_IPVFUTURE;
        } else {
            if (!ipv6_valid(s + 1, inner))
                return "invalid IPv6 literal";
            out->kind = SL_HOST_IPV6;
        }
        i = inner + 2;
    } else {
        for (i = 0; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (n - i < 3 || !IS_HEX(s[i + 1]) || !IS_HEX(s[i + 2]))
                    return "invalid percent-encoding in the host";
                i += 2;
            } else if (!IS_UNRESERVED(c) && !IS_SUBDELIM(c)) {
                return "invalid character in the host";
            }
        }
        if (i == 0)
            return "empty host"; /* ":80" */
        out->kind = ipv4_valid(s, i) ? SL_HOST_IPV4 : SL_HOST_REG_NAME;
    }
    out->name = s;
    out->name_len = i;
    out->port = NULL;
    out->port_len = 0;
    if (i == n)
        return NULL;
    if (s[i] != ':')
        return "invalid character after an IP-literal";
    /* port = *DIGIT: may be empty ("a.example:" means the default port) */
    for (size_t k = i + 1; k < n; k++) {
        if (!IS_DIGIT(s[k]))
            return "invalid port";
    }
    out->port = s + i + 1;
    out->port_len = n - i - 1;
    return NULL;
}

/* Do two ports name the same one? An empty or absent port is the scheme's. */
static bool same_port(const char *a, size_t a_len, const char *b, size_t b_len, const char *dflt)
{
    if (a == NULL || a_len == 0) {
        a = dflt;
        a_len = strlen(dflt);
    }
    if (b == NULL || b_len == 0) {
        b = dflt;
        b_len = strlen(dflt);
    }
    /* *DIGIT of any length: compare without leading zeros, so nothing overflows */
    while (a_len > 0 && *a == '0') {
        a++;
        a_len--;
    }
    while (b_len > 0 && *b == '0') {
        b++;
        b_len--;
    }
    return a_len == b_len && memcmp(a, b, a_len) == 0;
}

/*
 * What a request field means for framing. raw..raw_end is the value with
 * its surrounding whitespace, v..v+n without.
 */
static int request_field(struct head *h, struct sl_http_header *f, int id, const char *raw,
                         const char *raw_end)
{
    const char *v = f->value;
    size_t n = f->value_len;
    switch (id) {
    case SL_HDR_HOST:
        if (h->host_seen)
            return fail(h, "more than one Host field");
        /* RFC 9112 section 3.2: an invalid Host value is a 400. Empty is
         * refused in HTTP/1.0 too: an http(s) URI never has an empty host
         * (RFC 9110 section 4.2.1), and a client without one omits Host. */
        if (n == 0)
            return fail(h, "empty Host");
        if (sl_http_parse_host(v, n, &h->host_parsed) != NULL)
            return fail(h, "invalid Host value");
        h->host_seen = true;
        h->host = v;
        h->host_len = n;
        break;
    case SL_HDR_CONTENT_LENGTH:
        /* Every repetition is refused, equal values included (see top). */
        if (h->cl_seen)
            return fail(h, "more than one Content-Length field");
        if (h->te_seen)
            return fail(h, "both Content-Length and Transfer-Encoding");
        if (!parse_content_length(v, n, &h->content_length))
            return fail(h, "invalid Content-Length");
        h->cl_seen = true;
        break;
    case SL_HDR_TRANSFER_ENCODING:
        if (h->te_seen)
            return fail(h, "more than one Transfer-Encoding field");
        if (h->cl_seen)
            return fail(h, "both Content-Length and Transfer-Encoding");
        if (h->version_minor == 0)
            return fail(h, "Transfer-Encoding in an HTTP/1.0 request");
        /* Only SP may pad it: a tab-padded `chunked` is read differently by others. */
        for (const char *q = raw; q < v; q++) {
            if (*q != ' ')
                return fail(h, "tab around Transfer-Encoding");
        }
        for (const char *q = v + n; q < raw_end; q++) {
            if (*q != ' ')
                return fail(h, "tab around Transfer-Encoding");
        }
        if (n != 7 || !eq_lower(v, "chunked", 7))
            return fail(h, "Transfer-Encoding other than chunked");
        h->te_seen = true;
        h->te_chunked = true;
        break;
    case SL_HDR_CONNECTION:
        connection_tokens(h, v, n);
        break;
    case SL_HDR_UPGRADE:
        h->upgrade_seen = true;
        break;
    case SL_HDR_EXPECT:
        if (n == 12 && eq_lower(v, "100-continue", 12))
            h->expect_continue = true;
        break;
    case ID_CONTENT_LENGTH_UNDERSCORE:
        return fail(h, "Content_Length field name");
    case ID_TRANSFER_ENCODING_UNDERSCORE:
        return fail(h, "Transfer_Encoding field name");
    default:
        break;
    }
    return 0;
}

static int response_field(struct head *h, struct sl_http_header *f, int id)
{
    const char *v = f->value;
    size_t n = f->value_len;
    switch (id) {
    case SL_HDR_CONTENT_LENGTH: {
        uint64_t cl;
        if (!parse_content_length(v, n, &cl))
            return fail(h, "invalid Content-Length");
        /* RFC 9110 section 8.6: identical repetitions may be accepted. */
        if (h->cl_seen && cl != h->content_length)
            return fail(h, "different Content-Length values");
        h->cl_seen = true;
        h->content_length = cl;
        break;
    }
    case SL_HDR_TRANSFER_ENCODING: {
        if (h->version_minor == 0)
            return fail(h, "Transfer-Encoding in an HTTP/1.0 response");
        /* Fields combine into one list: the last coding of the last field decides. */
        size_t pos = 0;
        const char *t, *last = NULL;
        size_t tl, last_len = 0;
        while (sl_http_list_next(v, n, &pos, &t, &tl)) {
            last = t;
            last_len = tl;
        }
        h->te_seen = true;
        if (last != NULL)
            h->te_chunked = last_len == 7 && eq_lower(last, "chunked", 7);
        break;
    }
    case SL_HDR_CONNECTION:
        connection_tokens(h, v, n);
        break;
    case SL_HDR_UPGRADE:
        h->upgrade_seen = true;
        break;
    default:
        break;
    }
    return 0;
}

/*
 * Field lines from p to the empty line that ends the head (RFC 9112
 * section 5). Returns the head length, SL_HTTP_INCOMPLETE or an error.
 */
static int parse_fields(struct head *h, const char *p)
{
    const char *end = h->end;
    for (;;) {
        if (p == end)
            return out_of_data(h);
        unsigned char c = U(p);
        if (c == '\r' || c == '\n') {
            int t = eol_len(p, end);
            if (t == 0)
                return out_of_data(h);
            if (t < 0)
                return fail(h, "bare CR");
            return (int)(p + t - h->buf);
        }
        if (c == ' ' || c == '\t')
            return fail(h, "obs-fold or whitespace before a field line");
        const char *name = p;
        while (p < end && HAS(*p, C_TCHAR))
            p++;
        if (p == end)
            return out_of_data(h);
        if (*p != ':') {
            c = U(p);
            if (c == ' ' || c == '\t')
                return fail(h, "whitespace before the colon");
            if (c == '\r' || c == '\n')
                return fail(h, "field line without a colon");
            return fail(h, "invalid character in a field name");
        }
        if (p == name)
            return fail(h, "empty field name");
        size_t name_len = (size_t)(p - name);
        p++;

        const char *raw = p;
        while (p < end && is_ows(*p))
            p++;
        const char *value = p;
        p = skip_class(p, end, C_FVALUE);
        if (p == end)
            return out_of_data(h);
        c = U(p);
        if (c != '\r' && c != '\n')
            return fail(h, "control character in a field value");
        int t = eol_len(p, end);
        if (t == 0)
            return out_of_data(h);
        if (t < 0)
            return fail(h, "bare CR");
        const char *raw_end = p;
        const char *vend = p;
        while (vend > value && is_ows(vend[-1]))
            vend--;
        p += t;

        /* Checked at the line end, so every -431 is taken at an LF or at a byte limit. */
        if (h->num_headers == h->max_fields) {
            h->error = "too many header fields";
            return h->err_limit;
        }
        struct sl_http_header *f = &h->headers[h->num_headers++];
        int id = classify(name, name_len);
        f->name = name;
        f->name_len = name_len;
        f->value = value;
        f->value_len = (size_t)(vend - value);
        f->id = id < SL_HDR__COUNT ? (enum sl_http_header_id)id : SL_HDR_OTHER;
        if (id != SL_HDR_OTHER) {
            int rc =
                h->is_request ? request_field(h, f, id, raw, raw_end) : response_field(h, f, id);
            if (rc < 0)
                return rc;
        }
    }
}

/* ---- requests ---------------------------------------------------------------- */

/*
 * The request-target's form. absolute-form with the http or https scheme
 * (RFC 9112 section 3.2.2) is split into its authority, which must be a
 * valid host (no userinfo, no empty host: RFC 9110 sections 4.2.1 and
 * 4.2.4), and the rest. Any other target is left whole to the caller,
 * which serves origin-form only.
 */
static int absolute_target(struct head *h, struct sl_http_request *req, struct sl_http_host *host)
{
    const char *t = req->target;
    size_t n = req->target_len;
    size_t skip;
    if (n >= 5 && eq_lower(t, "http:", 5))
        skip = 5;
    else if (n >= 6 && eq_lower(t, "https:", 6))
        skip = 6;
    else {
        req->origin = t;
        req->origin_len = n;
        return 0;
    }
    req->absolute_form = true;
    h->target_https = skip == 6;
    if (n - skip < 2 || t[skip] != '/' || t[skip + 1] != '/')
        return fail(h, "http URI without an authority");
    const char *auth = t + skip + 2, *end = t + n, *q = auth;
    while (q < end && *q != '/' && *q != '?')
        q++;
    if (sl_http_parse_host(auth, (size_t)(q - auth), host) != NULL)
        return fail(h, memchr(auth, '@', (size_t)(q - auth)) ? "userinfo in the request-target"
                                                             : "invalid request-target authority");
    req->authority = auth;
    req->authority_len = (size_t)(q - auth);
    req->origin = q;
    req->origin_len = (size_t)(end - q);
    return 0;
}

/* The request-line is longer than allowed once a byte at this offset is not its end. */
#define RL_OVER(p) ((size_t)((p)-rl) >= max_rl && U(p) != '\r' && U(p) != '\n')

int sl_http_parse_request(const char *buf, size_t len, const struct sl_http_limits *limits,
                          struct sl_http_request *req)
{
    static const struct sl_http_limits no_limits;
    if (limits == NULL)
        limits = &no_limits;
    size_t max_rl = limit_or(limits->max_request_line, SL_HTTP_DEFAULT_MAX_REQUEST_LINE);
    size_t max_head = limit_or(limits->max_header_bytes, SL_HTTP_DEFAULT_MAX_HEADER_BYTES);
    size_t max_headers = limit_or(limits->max_headers, SL_HTTP_DEFAULT_MAX_HEADERS);

    req->method = NULL;
    req->method_len = 0;
    req->target = NULL;
    req->target_len = 0;
    req->version_minor = 0;
    req->num_headers = 0;
    req->body_kind = SL_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->has_upgrade = false;
    req->host = NULL;
    req->host_len = 0;
    req->authority = NULL;
    req->authority_len = 0;
    req->origin = NULL;
    req->origin_len = 0;
    req->absolute_form = false;
    req->error = NULL;

    struct head hs;
    struct head *h = &hs;
    struct sl_http_host target_host;
    head_init(h, buf, len, max_head, req->headers, req->header_capacity, max_headers, true);
    const char *p = buf, *end = h->end;
    int rc;

    /* RFC 9112 section 2.2: ignore a few empty lines before the request-line. */
    for (int empty = 0;; empty++) {
        if (p == end)
            goto out;
        if (U(p) != '\r' && U(p) != '\n')
            break;
        if (empty == SL_HTTP_MAX_LEADING_EMPTY_LINES) {
            rc = fail(h, "too many empty lines before the request-line");
            goto done;
        }
        int t = eol_len(p, end);
        if (t <= 0) {
            rc = t == 0 ? out_of_data(h) : fail(h, "bare CR");
            goto done;
        }
        p += t;
    }

    const char *rl = p;
    /* Tight loops stop at the request-line limit; RL_OVER sorts out why. */
    const char *stop = rl + ((size_t)(end - rl) < max_rl ? (size_t)(end - rl) : max_rl);

    /* method = token SP (RFC 9112 section 3) */
    while (p < stop && HAS(*p, C_TCHAR))
        p++;
    if (p == end)
        goto out;
    if (RL_OVER(p)) {
        rc = -414;
        h->error = "request-line too long";
        goto done;
    }
    if (*p != ' ' || p == rl) {
        rc = fail(h, p == rl && *p == ' ' ? "empty method" : "malformed method");
        goto done;
    }
    req->method = rl;
    req->method_len = (size_t)(p - rl);
    p++;

    /* request-target SP: visible ASCII only, no fragment */
    const char *target = p;
    p = skip_class(p, stop, C_TARGET);
    if (p == end)
        goto out;
    if (RL_OVER(p)) {
        rc = -414;
        h->error = "request-line too long";
        goto done;
    }
    if (*p != ' ') {
        /* '#' starts a fragment, which no request-target has (RFC 9112
         * section 3.2): refused rather than passed on, since "/a#.png"
         * would match a suffix rule here and mean "/a" to a backend that
         * cuts the fragment (HAProxy's CVE-2023-45539) */
        rc = fail(h, U(p) == '\r' || U(p) == '\n' ? "request-line without an HTTP version"
                     : U(p) == '#'                ? "fragment in the request-target"
                                                  : "invalid character in the request-target");
        goto done;
    }
    if (p == target) {
        rc = fail(h, "empty request-target");
        goto done;
    }
    req->target = target;
    req->target_len = (size_t)(p - target);
    p++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, then the line end */
    const char *version = p;
    for (;; p++) {
        if (p == end)
            goto out;
        unsigned char c = U(p);
        if (c == '\r' || c == '\n')
            break;
        if (RL_OVER(p)) {
            rc = -414;
            h->error = "request-line too long";
            goto done;
        }
        size_t i = (size_t)(p - version);
        bool ok = i < 5              ? c == (unsigned char)"HTTP/"[i]
                  : i == 5 || i == 7 ? IS_DIGIT(c)
                  : i == 6           ? c == '.'
                                     : false;
        if (!ok) {
            rc = fail(h, "malformed HTTP version");
            goto done;
        }
    }
    {
        int t = eol_len(p, end);
        if (t <= 0) {
            rc = t == 0 ? out_of_data(h) : fail(h, "bare CR");
            goto done;
        }
        if (p - version != 8) {
            rc = fail(h, "malformed HTTP version");
            goto done;
        }
        if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
            rc = -505;
            h->error = "HTTP version not supported";
            goto done;
        }
        h->version_minor = req->version_minor = version[7] - '0';
        p += t;
    }
    rc = absolute_target(h, req, &target_host);
    if (rc < 0)
        goto done;

    rc = parse_fields(h, p);
    if (rc <= 0)
        goto done;

    /* RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one Host. */
    if (h->version_minor == 1 && !h->host_seen) {
        rc = fail(h, "HTTP/1.1 request without Host");
        goto done;
    }
    if (req->absolute_form) {
        /* RFC 9112 section 3.2.2: the target's authority replaces Host. A
         * client MUST send a Host identical to it (section 3.2), so one that
         * names another host or port is refused, as HAProxy does, rather
         * than leaving two authorities for whatever reads the message next. */
        const struct sl_http_host *a = &target_host, *b = &h->host_parsed;
        if (h->host_seen && (!sl_http_name_equals(a->name, a->name_len, b->name, b->name_len) ||
                             !same_port(a->port, a->port_len, b->port, b->port_len,
                                        h->target_https ? "443" : "80"))) {
            rc = fail(h, "Host differs from the request-target's authority");
            goto done;
        }
    } else if (h->host_seen) {
        req->authority = h->host;
        req->authority_len = h->host_len;
    }
    if (h->te_chunked) {
        req->body_kind = SL_BODY_CHUNKED;
    } else if (h->cl_seen) {
        req->content_length = h->content_length;
        req->body_kind = h->content_length > 0 ? SL_BODY_LENGTH : SL_BODY_NONE;
    }
    req->keep_alive = !h->conn_close && (h->version_minor == 1 || h->conn_keep_alive);
    req->expect_continue = h->expect_continue;
    req->has_upgrade = h->conn_upgrade && h->upgrade_seen;
    req->host = h->host;
    req->host_len = h->host_len;
    goto done;

out:
    rc = out_of_data(h);
done:
    req->num_headers = h->num_headers;
    req->error = rc < 0 ? h->error : NULL;
    return rc;
}

/* ---- responses --------------------------------------------------------------- */

int sl_http_parse_response(const char *buf, size_t len, bool request_method_is_head,
                           const struct sl_http_limits *limits, struct sl_http_response *resp)
{
    static const struct sl_http_limits no_limits;
    if (limits == NULL)
        limits = &no_limits;
    size_t max_head = limit_or(limits->max_header_bytes, SL_HTTP_DEFAULT_MAX_HEADER_BYTES);
    size_t max_headers = limit_or(limits->max_headers, SL_HTTP_DEFAULT_MAX_HEADERS);

    resp->version_minor = 0;
    resp->status = 0;
    resp->reason = NULL;
    resp->reason_len = 0;
    resp->num_headers = 0;
    resp->body_kind = SL_BODY_NONE;
    resp->content_length = 0;
    resp->keep_alive = false;
    resp->transfer_coded = false;
    resp->error = NULL;

    struct head hs;
    struct head *h = &hs;
    head_init(h, buf, len, max_head, resp->headers, resp->header_capacity, max_headers, false);
    const char *p = buf, *end = h->end;
    int rc;

    /* status-line = HTTP-version SP 3DIGIT [SP reason-phrase] (RFC 9112 section 4) */
    static const char prefix[] = "HTTP/1.";
    for (size_t i = 0; i < 12; i++, p++) {
        if (p == end) {
            rc = out_of_data(h);
            goto done;
        }
        unsigned char c = U(p);
        bool ok = i < 7    ? c == (unsigned char)prefix[i]
                  : i == 7 ? c == '0' || c == '1'
                  : i == 8 ? c == ' '
                  : i == 9 ? c >= '1' && c <= '9'
                           : IS_DIGIT(c);
        if (!ok) {
            rc = fail(h, "malformed status-line");
            goto done;
        }
    }
    h->version_minor = resp->version_minor = buf[7] - '0';
    resp->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');

    /* "HTTP/1.1 200\r\n" without the SP is accepted too */
    if (p == end) {
        rc = out_of_data(h);
        goto done;
    }
    if (*p == ' ') {
        p++;
        resp->reason = p;
        p = skip_class(p, end, C_FVALUE);
        if (p == end) {
            rc = out_of_data(h);
            goto done;
        }
        resp->reason_len = (size_t)(p - resp->reason);
    } else {
        resp->reason = p;
    }
    if (U(p) != '\r' && U(p) != '\n') {
        rc = fail(h, "malformed status-line");
        goto done;
    }
    int t = eol_len(p, end);
    if (t <= 0) {
        rc = t == 0 ? out_of_data(h) : fail(h, "bare CR");
        goto done;
    }
    p += t;

    rc = parse_fields(h, p);
    if (rc <= 0)
        goto done;

    /* Framing, RFC 9112 section 6.3 */
    int status = resp->status;
    bool keep_alive = !h->conn_close && (h->version_minor == 1 || h->conn_keep_alive);
    if (h->cl_seen)
        resp->content_length = h->content_length;
    if (request_method_is_head || status < 200 || status == 204 || status == 304) {
        resp->body_kind = SL_BODY_NONE;
    } else if (h->te_seen) {
        if (h->te_chunked) {
            resp->body_kind = SL_BODY_CHUNKED;
        } else {
            resp->body_kind = SL_BODY_UNTIL_CLOSE;
            resp->transfer_coded = true;
            keep_alive = false;
        }
        if (h->cl_seen) /* RFC 9112 section 6.1: the coding wins, then close */
            keep_alive = false;
    } else if (h->cl_seen) {
        resp->body_kind = h->content_length > 0 ? SL_BODY_LENGTH : SL_BODY_NONE;
    } else {
        resp->body_kind = SL_BODY_UNTIL_CLOSE;
        keep_alive = false;
    }
    resp->keep_alive = keep_alive;

done:
    resp->num_headers = h->num_headers;
    resp->error = rc < 0 ? h->error : NULL;
    return rc;
}

bool sl_http_head_may_complete(const char *buf, size_t prev_len, size_t len,
                               const struct sl_http_limits *limits)
{
    static const struct sl_http_limits no_limits;
    if (limits == NULL)
        limits = &no_limits;
    size_t max_rl = limit_or(limits->max_request_line, SL_HTTP_DEFAULT_MAX_REQUEST_LINE);
    size_t max_head = limit_or(limits->max_header_bytes, SL_HTTP_DEFAULT_MAX_HEADER_BYTES);
    if (len == prev_len)
        return false;
    if (len < prev_len) /* not the same buffer any more */
        return true;
    if (len > max_head)
        return true;
    /* the -414 position is max_rl bytes after at most 2 bytes per leading empty line */
    if (len > max_rl && prev_len <= max_rl + 2 * SL_HTTP_MAX_LEADING_EMPTY_LINES)
        return true;
    return memchr(buf + prev_len, '\n', len - prev_len) != NULL;
}

/* ---- chunked transfer coding ------------------------------------------------- */

/*
 * Chunked transfer coding (RFC 9112 section 7.1). Stricter than the grammar
 * where parsers are known to disagree:
 *   - chunk-size is 1 to 16 HEXDIGs, leading zeros counted, with nothing
 *     before it: no sign, "0x", '_' or whitespace;
 *   - chunk-ext follows section 7.1.1 exactly, with nothing left out:
 *       chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *       chunk-ext-name = token, chunk-ext-val = token / quoted-string
 *     with the quoted-string rules of RFC 9110 section 5.6.4 (qdtext and
 *     quoted-pair; obs-text only inside quotes). So a bare ';', an empty
 *     name, '=' without a value, whitespace before CRLF, an unterminated
 *     quote or any control byte is a framing error. Extensions are not
 *     interpreted (section 7.1.1: a recipient ignores unknown ones) and go
 *     through verbatim, which is why they must parse the same everywhere;
 *   - the size line, size and extensions, is at most SL_CHUNK_LINE_MAX
 *     bytes (section 7.1.1 asks a server to bound extensions);
 *   - every line end in the framing is exactly CRLF;
 *   - trailer fields follow the head rules (token name, no whitespace
 *     before ':', no obs-fold, no control bytes) and the trailer section
 *     is at most SL_CHUNK_TRAILER_MAX bytes.
 * Requests and responses share the scanner: a response is forwarded
 * verbatim just the same, so the same framing rules protect the client.
 */
enum chunked_state {
    CS_SIZE_FIRST = 0, /* first hex digit of a chunk-size */
    CS_SIZE,           /* more hex digits, BWS, ';' or CR */
    CS_EXT_SEMI,       /* BWS that must end in ';' */
    CS_EXT_NAME_FIRST, /* after ';': BWS, then the first tchar of a name */
    CS_EXT_NAME,       /* more tchars, then BWS, '=', ';' or CR */
    CS_EXT_NAME_BWS,   /* BWS after a name, which must end in '=' or ';' */
    CS_EXT_VALUE,      /* after '=': BWS, then a token or '"' */
    CS_EXT_TOKEN,      /* more tchars of a token value, then BWS, ';' or CR */
    CS_EXT_QUOTED,     /* inside a quoted-string */
    CS_EXT_QPAIR,      /* the byte after '\' in a quoted-string */
    CS_EXT_UNQUOTED,   /* after the closing '"': BWS, ';' or CR */
    CS_SIZE_LF,        /* LF after the size line */
    CS_DATA,           /* chunk-data */
    CS_DATA_CR,        /* CR after chunk-data */
    CS_DATA_LF,        /* LF after chunk-data */
    CS_TRAILER_START,  /* start of a trailer field line or of the final CRLF */
    CS_TRAILER_NAME,   /* field name up to ':' */
    CS_TRAILER_VALUE,  /* field value up to CR */
    CS_TRAILER_LF,     /* LF after a trailer field line */
    CS_FINAL_LF,       /* LF of the final CRLF */
    CS_DONE,
    CS_ERROR,
};

void sl_chunked_init(struct sl_chunked_scanner *s)
{
    memset(s, 0, sizeof(*s));
    s->state = CS_SIZE_FIRST;
}

uint64_t sl_chunked_data_ready(const struct sl_chunked_scanner *s)
{
    return s->state == CS_DATA ? s->chunk_remaining : 0;
}

static long chunked_fail(struct sl_chunked_scanner *s, const char *why)
{
    s->state = CS_ERROR;
    s->error = why;
    return -1;
}

long sl_chunked_scan(struct sl_chunked_scanner *s, const char *buf, size_t len)
{
    if (s->state == CS_ERROR)
        return -1;
    if (s->done || len == 0)
        return 0;
    const char *p = buf, *end = buf + len;
    while (p < end) {
        unsigned char c = U(p);
        int state = s->state;
        /* the whole size line is bounded, size digits and extensions, CRLF excluded */
        if (state >= CS_SIZE && state <= CS_EXT_UNQUOTED && c != '\r' &&
            ++s->line_bytes > SL_CHUNK_LINE_MAX)
            return chunked_fail(s, "chunk extension too long");
        switch (state) {
        case CS_DATA: {
            size_t avail = (size_t)(end - p);
            size_t n = s->chunk_remaining < avail ? (size_t)s->chunk_remaining : avail;
            p += n;
            s->chunk_remaining -= n;
            s->body_bytes += n;
            if (s->chunk_remaining == 0)
                s->state = CS_DATA_CR;
            continue;
        }
        case CS_SIZE_FIRST:
            if (hexval[c] == 0xff)
                return chunked_fail(s, "invalid chunk size");
            s->chunk_remaining = hexval[c];
            s->size_digits = 1;
            s->line_bytes = 1;
            s->state = CS_SIZE;
            break;
        case CS_SIZE:
            if (hexval[c] != 0xff) {
                if (s->size_digits == SL_CHUNK_SIZE_MAX_DIGITS)
                    return chunked_fail(s, "chunk size too large");
                s->chunk_remaining = s->chunk_remaining << 4 | hexval[c];
                s->size_digits++;
            } else if (c == '\r') {
                s->state = CS_SIZE_LF;
            } else if (c == ';') {
                s->state = CS_EXT_NAME_FIRST;
            } else if (c == ' ' || c == '\t') {
                s->state = CS_EXT_SEMI;
            } else if (c == '\n') {
                return chunked_fail(s, "bare LF in chunked framing");
            } else {
                return chunked_fail(s, "invalid chunk size");
            }
            break;
        case CS_EXT_SEMI:
            if (c == ';')
                s->state = CS_EXT_NAME_FIRST;
            else if (c != ' ' && c != '\t')
                return chunked_fail(s, c == '\n'   ? "bare LF in chunked framing"
                                       : c == '\r' ? "whitespace before CRLF in a chunk-size line"
                                                   : "whitespace not followed by ';' in a "
                                                     "chunk-size line");
            break;
        case CS_EXT_NAME_FIRST:
            if (HAS(c, C_TCHAR))
                s->state = CS_EXT_NAME;
            else if (c != ' ' && c != '\t')
                return chunked_fail(s, c == '\n' ? "bare LF in chunked framing"
                                       : (c == ';' || c == '\r' || c == '=')
                                           ? "empty chunk extension name"
                                           : "invalid character in a chunk extension name");
            break;
        case CS_EXT_NAME:
        case CS_EXT_TOKEN:
            if (HAS(c, C_TCHAR))
                break;
            if (c == '\r')
                s->state = CS_SIZE_LF;
            else if (c == ';')
                s->state = CS_EXT_NAME_FIRST;
            else if (c == '=' && state == CS_EXT_NAME)
                s->state = CS_EXT_VALUE;
            else if (c == ' ' || c == '\t')
                s->state = state == CS_EXT_NAME ? CS_EXT_NAME_BWS : CS_EXT_SEMI;
            else if (c == '\n')
                return chunked_fail(s, "bare LF in chunked framing");
            else
                return chunked_fail(s, state == CS_EXT_NAME
                                           ? "invalid character in a chunk extension name"
                                           : "invalid character in a chunk extension value");
            break;
        case CS_EXT_NAME_BWS:
            if (c == '=')
                s->state = CS_EXT_VALUE;
            else if (c == ';')
                s->state = CS_EXT_NAME_FIRST;
            else if (c != ' ' && c != '\t')
                return chunked_fail(s, c == '\n'   ? "bare LF in chunked framing"
                                       : c == '\r' ? "whitespace before CRLF in a chunk-size line"
                                                   : "invalid chunk extension");
            break;
        case CS_EXT_VALUE:
            if (HAS(c, C_TCHAR))
                s->state = CS_EXT_TOKEN;
            else if (c == '"')
                s->state = CS_EXT_QUOTED;
            else if (c != ' ' && c != '\t')
                return chunked_fail(s, c == '\n' ? "bare LF in chunked framing"
                                       : (c == ';' || c == '\r')
                                           ? "chunk extension '=' without a value"
                                           : "invalid character in a chunk extension value");
            break;
        case CS_EXT_QUOTED:
            /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 section 5.6.4) */
            if (c == '"')
                s->state = CS_EXT_UNQUOTED;
            else if (c == '\\')
                s->state = CS_EXT_QPAIR;
            else if (!HAS(c, C_FVALUE))
                return chunked_fail(s, c == '\r' || c == '\n'
                                           ? "unterminated quoted string in a chunk extension"
                                           : "control character in a chunk extension");
            break;
        case CS_EXT_QPAIR:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!HAS(c, C_FVALUE))
                return chunked_fail(s, "invalid quoted-pair in a chunk extension");
            s->state = CS_EXT_QUOTED;
            break;
        case CS_EXT_UNQUOTED:
            if (c == '\r')
                s->state = CS_SIZE_LF;
            else if (c == ';')
                s->state = CS_EXT_NAME_FIRST;
            else if (c == ' ' || c == '\t')
                s->state = CS_EXT_SEMI;
            else
                return chunked_fail(s, c == '\n' ? "bare LF in chunked framing"
                                                 : "invalid byte after a quoted chunk extension "
                                                   "value");
            break;
        case CS_SIZE_LF:
            if (c != '\n')
                return chunked_fail(s, "bare CR in chunked framing");
            if (s->chunk_remaining == 0) {
                s->state = CS_TRAILER_START;
                s->trailer_bytes = 0;
            } else {
                s->state = CS_DATA;
            }
            s->line_bytes = 0;
            break;
        case CS_DATA_CR:
            if (c != '\r')
                return chunked_fail(s, "chunk data not followed by CRLF");
            s->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (c != '\n')
                return chunked_fail(s, "chunk data not followed by CRLF");
            s->state = CS_SIZE_FIRST;
            break;
        case CS_TRAILER_START:
            if (c == '\r') {
                s->state = CS_FINAL_LF;
            } else if (HAS(c, C_TCHAR)) {
                s->line_bytes = 0;
                s->state = CS_TRAILER_NAME;
            } else if (c == '\n') {
                return chunked_fail(s, "bare LF in chunked framing");
            } else if (c == ' ' || c == '\t') {
                return chunked_fail(s, "obs-fold in the trailer section");
            } else {
                return chunked_fail(s, "invalid trailer field");
            }
            break;
        case CS_TRAILER_NAME:
            if (c == ':')
                s->state = CS_TRAILER_VALUE;
            else if (!HAS(c, C_TCHAR))
                return chunked_fail(s, c == ' ' || c == '\t' ? "whitespace before the colon"
                                                             : "invalid trailer field name");
            break;
        case CS_TRAILER_VALUE:
            if (c == '\r')
                s->state = CS_TRAILER_LF;
            else if (!HAS(c, C_FVALUE))
                return chunked_fail(s, c == '\n' ? "bare LF in chunked framing"
                                                 : "control character in a trailer field");
            break;
        case CS_TRAILER_LF:
            if (c != '\n')
                return chunked_fail(s, "bare CR in chunked framing");
            s->state = CS_TRAILER_START;
            break;
        case CS_FINAL_LF:
            if (c != '\n')
                return chunked_fail(s, "bare CR in chunked framing");
            if (++s->trailer_bytes > SL_CHUNK_TRAILER_MAX)
                return chunked_fail(s, "trailer section too long");
            s->state = CS_DONE;
            s->done = true;
            return (long)(p + 1 - buf);
        default:
            return chunked_fail(s, "chunked scanner misuse");
        }
        /* the trailer section is bounded as a whole, final CRLF included */
        if (state >= CS_TRAILER_START) {
            s->line_bytes++;
            if (++s->trailer_bytes > SL_CHUNK_TRAILER_MAX)
                return chunked_fail(s, "trailer section too long");
        }
        p++;
    }
    return (long)(p - buf);
}

/* ---- reason phrases (RFC 9110 section 15) ------------------------------------ */

const char *sl_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 306:
        return "Unused";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
