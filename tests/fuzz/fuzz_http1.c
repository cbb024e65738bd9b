/*
 * libFuzzer harness for the HTTP/1.1 codec (core/http1.c).
 *
 * Input: byte 0 picks limits and options, bytes 1-2 pick split points, the
 * rest is the message. Every input goes through the request parser, the
 * response parser and the chunked scanner, each on heap copies of exactly
 * the bytes they may read (so ASan sees any read past the end), and the
 * harness abort()s when an invariant of the contract breaks:
 *  - a head length is <= len and <= max_header_bytes; every pointer the
 *    parser returns lies inside the head; errors carry a reason;
 *  - a verdict never changes with more bytes: a prefix is INCOMPLETE or
 *    gets the verdict of the whole buffer (same head length, same fields);
 *    feeding a prefix then the whole buffer ends in the whole's result;
 *  - an accepted request has unambiguous framing: at most one
 *    Content-Length, at most one Transfer-Encoding, never both, no
 *    underscore spelling, exactly one Host in HTTP/1.1, and names, values,
 *    method and target hold only the bytes the grammar allows; the
 *    authority (absolute-form target's or Host's) is a valid host;
 *  - sl_http_head_may_complete() never says "no" when the parser would
 *    complete the head or hit a limit;
 *  - the chunked scanner gives the same result (consumed bytes, done,
 *    body_bytes, error) whatever the split, and never eats bytes after the
 *    body.
 */
#include "http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NHDR 64

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *copy(const uint8_t *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (b == NULL)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

static bool inside(const char *p, size_t n, const char *base, size_t len)
{
    return p != NULL && p >= base && n <= len && (size_t)(p - base) <= len - n;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool lower_eq(const char *s, size_t n, const char *lit)
{
    if (n != strlen(lit))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* Header array invariants shared by requests and responses. */
static void check_headers(const struct sl_http_header *h, size_t n, const char *buf, size_t head)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i].name_len > 0);
        CHECK(inside(h[i].name, h[i].name_len, buf, head));
        CHECK(inside(h[i].value, h[i].value_len, buf, head));
        for (size_t j = 0; j < h[i].name_len; j++)
            CHECK(is_tchar((unsigned char)h[i].name[j]));
        CHECK(h[i].name[h[i].name_len] == ':');
        for (size_t j = 0; j < h[i].value_len; j++)
            CHECK(!is_ctl((unsigned char)h[i].value[j]));
        if (h[i].value_len > 0) {
            CHECK(h[i].value[0] != ' ' && h[i].value[0] != '\t');
            CHECK(h[i].value[h[i].value_len - 1] != ' ' && h[i].value[h[i].value_len - 1] != '\t');
        }
        CHECK((int)h[i].id >= 0 && h[i].id < SL_HDR__COUNT);
        if (h[i].id == SL_HDR_CONTENT_LENGTH)
            CHECK(lower_eq(h[i].name, h[i].name_len, "content-length"));
        if (h[i].id == SL_HDR_TRANSFER_ENCODING)
            CHECK(lower_eq(h[i].name, h[i].name_len, "transfer-encoding"));
        if (h[i].id == SL_HDR_HOST)
            CHECK(lower_eq(h[i].name, h[i].name_len, "host"));
        if (lower_eq(h[i].name, h[i].name_len, "content-length"))
            CHECK(h[i].id == SL_HDR_CONTENT_LENGTH);
        if (lower_eq(h[i].name, h[i].name_len, "x-forwarded-for"))
            CHECK(h[i].id == SL_HDR_X_FORWARDED_FOR);
    }
}

/* ---- requests ---------------------------------------------------------------- */

struct req_result {
    int rc;
    struct sl_http_request req;
    struct sl_http_header hdrs[NHDR];
};

static void parse_req(const char *buf, size_t len, const struct sl_http_limits *lim, size_t cap,
                      struct req_result *out)
{
    memset(&out->req, 0x5a, sizeof(out->req));
    out->req.headers = out->hdrs;
    out->req.header_capacity = cap;
    out->rc = sl_http_parse_request(buf, len, lim, &out->req);
}

static void check_request(const struct req_result *r, const char *buf, size_t len, size_t max_head,
                          size_t max_headers, size_t cap)
{
    int rc = r->rc;
    const struct sl_http_request *q = &r->req;
    CHECK(rc == SL_HTTP_INCOMPLETE || rc > 0 || rc == -400 || rc == -414 || rc == -431 ||
          rc == -505);
    if (rc < 0)
        CHECK(q->error != NULL && q->error[0] != '\0');
    if (rc <= 0)
        return;
    size_t head = (size_t)rc;
    CHECK(head <= len && head <= max_head);
    CHECK(q->error == NULL);
    CHECK(buf[head - 1] == '\n');
    CHECK(q->version_minor == 0 || q->version_minor == 1);
    CHECK(q->method_len > 0 && inside(q->method, q->method_len, buf, head));
    CHECK(q->target_len > 0 && inside(q->target, q->target_len, buf, head));
    for (size_t i = 0; i < q->method_len; i++)
        CHECK(is_tchar((unsigned char)q->method[i]));
    for (size_t i = 0; i < q->target_len; i++)
        CHECK(q->target[i] > 0x20 && q->target[i] < 0x7f);
    CHECK(q->method[q->method_len] == ' ' && q->target[-1] == ' ' &&
          q->target[q->target_len] == ' ');
    CHECK(q->num_headers <= cap && q->num_headers <= max_headers);
    check_headers(q->headers, q->num_headers, buf, head);

    /* framing must be unambiguous */
    size_t cl = 0, te = 0, host = 0;
    for (size_t i = 0; i < q->num_headers; i++) {
        const struct sl_http_header *h = &q->headers[i];
        cl += h->id == SL_HDR_CONTENT_LENGTH;
        te += h->id == SL_HDR_TRANSFER_ENCODING;
        host += h->id == SL_HDR_HOST;
        CHECK(!lower_eq(h->name, h->name_len, "content_length"));
        CHECK(!lower_eq(h->name, h->name_len, "transfer_encoding"));
        if (h->id == SL_HDR_TRANSFER_ENCODING)
            CHECK(lower_eq(h->value, h->value_len, "chunked"));
        if (h->id == SL_HDR_CONTENT_LENGTH) {
            CHECK(h->value_len >= 1 && h->value_len <= 19);
            uint64_t v = 0;
            for (size_t j = 0; j < h->value_len; j++) {
                CHECK(h->value[j] >= '0' && h->value[j] <= '9');
                v = v * 10 + (uint64_t)(h->value[j] - '0');
            }
            CHECK(v == q->content_length);
        }
        if (h->id == SL_HDR_HOST) {
            CHECK(q->host == h->value && q->host_len == h->value_len);
            for (size_t j = 0; j < h->value_len; j++)
                CHECK(h->value[j] != ' ' && h->value[j] != '/' && h->value[j] != '@' &&
                      !is_ctl((unsigned char)h->value[j]));
        }
    }
    CHECK(cl <= 1 && te <= 1 && !(cl && te) && host <= 1);
    if (q->version_minor == 1)
        CHECK(host == 1);
    if (host == 0)
        CHECK(q->host == NULL);
    /* the authority: the absolute-form target's, else Host's; a valid host either way */
    CHECK(inside(q->origin, q->origin_len, q->target, q->target_len) &&
          q->origin + q->origin_len == q->target + q->target_len);
    if (q->absolute_form) {
        CHECK(q->authority != NULL &&
              inside(q->authority, q->authority_len, q->target, q->target_len));
        CHECK(q->authority + q->authority_len == q->origin);
    } else {
        CHECK(q->origin == q->target && q->authority == q->host && q->authority_len == q->host_len);
    }
    if (q->authority != NULL) {
        struct sl_http_host hh;
        CHECK(sl_http_parse_host(q->authority, q->authority_len, &hh) == NULL);
    }
    if (te)
        CHECK(q->version_minor == 1);
    switch (q->body_kind) {
    case SL_BODY_NONE:
        CHECK(te == 0 && q->content_length == 0);
        break;
    case SL_BODY_LENGTH:
        CHECK(cl == 1 && q->content_length > 0);
        break;
    case SL_BODY_CHUNKED:
        CHECK(te == 1 && q->content_length == 0);
        break;
    default:
        CHECK(!"request body kind");
    }
    if (q->has_upgrade) {
        bool up = false;
        for (size_t i = 0; i < q->num_headers; i++)
            up |= q->headers[i].id == SL_HDR_UPGRADE;
        CHECK(up);
    }
}

/* Same verdict and same fields (as offsets, since the buffers differ). */
static void same_request(const struct req_result *a, const char *abuf, const struct req_result *b,
                         const char *bbuf)
{
    CHECK(a->rc == b->rc);
    if (a->rc <= 0)
        return;
    const struct sl_http_request *x = &a->req, *y = &b->req;
    CHECK(x->method - abuf == y->method - bbuf && x->method_len == y->method_len);
    CHECK(x->target - abuf == y->target - bbuf && x->target_len == y->target_len);
    CHECK(x->version_minor == y->version_minor && x->num_headers == y->num_headers);
    for (size_t i = 0; i < x->num_headers; i++) {
        CHECK(x->headers[i].name - abuf == y->headers[i].name - bbuf);
        CHECK(x->headers[i].name_len == y->headers[i].name_len);
        CHECK(x->headers[i].value - abuf == y->headers[i].value - bbuf);
        CHECK(x->headers[i].value_len == y->headers[i].value_len);
        CHECK(x->headers[i].id == y->headers[i].id);
    }
    CHECK(x->body_kind == y->body_kind && x->content_length == y->content_length);
    CHECK(x->keep_alive == y->keep_alive && x->expect_continue == y->expect_continue);
    CHECK(x->has_upgrade == y->has_upgrade && x->host_len == y->host_len);
    CHECK((x->host == NULL) == (y->host == NULL));
    if (x->host)
        CHECK(x->host - abuf == y->host - bbuf);
}

/* Prefixes to try: all of them for short inputs, a spread plus the split seed otherwise. */
static bool want_prefix(size_t k, size_t n, size_t seed)
{
    if (n <= 300)
        return true;
    return k % (n / 64 + 1) == 0 || k == seed % (n + 1) || k + 3 >= n;
}

static void fuzz_request(const uint8_t *msg, size_t n, const struct sl_http_limits *lim,
                         size_t max_head, size_t max_headers, size_t cap, size_t seed)
{
    static struct req_result whole, part;
    char *wbuf = copy(msg, n);
    parse_req(wbuf, n, lim, cap, &whole);
    check_request(&whole, wbuf, n, max_head, max_headers, cap);

    int prev_rc = SL_HTTP_INCOMPLETE;
    size_t prev_k = 0;
    for (size_t k = 0; k <= n; k++) {
        if (!want_prefix(k, n, seed))
            continue;
        char *buf = copy(msg, k);
        parse_req(buf, k, lim, cap, &part);
        check_request(&part, buf, k, max_head, max_headers, cap);
        if (part.rc == SL_HTTP_INCOMPLETE) {
            CHECK(whole.rc <= 0 || (size_t)whole.rc > k);
        } else {
            /* a verdict at a prefix is the verdict of the whole buffer */
            same_request(&part, buf, &whole, wbuf);
        }
        /* once given, a verdict stays */
        if (prev_rc != SL_HTTP_INCOMPLETE)
            CHECK(part.rc == prev_rc);
        /* the helper may only say "no" when the parser cannot complete or hit a limit */
        if (prev_rc == SL_HTTP_INCOMPLETE && k > prev_k &&
            !sl_http_head_may_complete(buf, prev_k, k, lim))
            CHECK(part.rc == SL_HTTP_INCOMPLETE || part.rc == -400 || part.rc == -505);
        prev_rc = part.rc;
        prev_k = k;
        free(buf);
    }

    /* an accepted chunked request: scan what follows like the proxy would */
    if (whole.rc > 0 && whole.req.body_kind == SL_BODY_CHUNKED) {
        struct sl_chunked_scanner s;
        sl_chunked_init(&s);
        long used = sl_chunked_scan(&s, wbuf + whole.rc, n - (size_t)whole.rc);
        CHECK(used >= -1 && used <= (long)(n - (size_t)whole.rc));
    }
    free(wbuf);
}

/* ---- responses --------------------------------------------------------------- */

struct resp_result {
    int rc;
    struct sl_http_response resp;
    struct sl_http_header hdrs[NHDR];
};

static void parse_resp(const char *buf, size_t len, bool head, const struct sl_http_limits *lim,
                       struct resp_result *out)
{
    memset(&out->resp, 0x5a, sizeof(out->resp));
    out->resp.headers = out->hdrs;
    out->resp.header_capacity = NHDR;
    out->rc = sl_http_parse_response(buf, len, head, lim, &out->resp);
}

static void check_response(const struct resp_result *r, const char *buf, size_t len,
                           size_t max_head, bool head_req)
{
    const struct sl_http_response *p = &r->resp;
    CHECK(r->rc >= 0 || r->rc == -502);
    if (r->rc < 0)
        CHECK(p->error != NULL && p->error[0] != '\0');
    if (r->rc <= 0)
        return;
    size_t head = (size_t)r->rc;
    CHECK(head <= len && head <= max_head && buf[head - 1] == '\n');
    CHECK(p->status >= 100 && p->status <= 999);
    CHECK(p->version_minor == 0 || p->version_minor == 1);
    CHECK(inside(p->reason, p->reason_len, buf, head));
    for (size_t i = 0; i < p->reason_len; i++)
        CHECK(!is_ctl((unsigned char)p->reason[i]));
    CHECK(p->num_headers <= NHDR);
    check_headers(p->headers, p->num_headers, buf, head);
    CHECK(p->body_kind >= SL_BODY_NONE && p->body_kind <= SL_BODY_UNTIL_CLOSE);
    if (head_req || p->status < 200 || p->status == 204 || p->status == 304)
        CHECK(p->body_kind == SL_BODY_NONE);
    if (p->body_kind == SL_BODY_UNTIL_CLOSE)
        CHECK(!p->keep_alive);
    if (p->body_kind == SL_BODY_LENGTH)
        CHECK(p->content_length > 0);
    bool te = false;
    for (size_t i = 0; i < p->num_headers; i++)
        te |= p->headers[i].id == SL_HDR_TRANSFER_ENCODING;
    if (p->body_kind == SL_BODY_CHUNKED)
        CHECK(te && p->version_minor == 1);
    if (te)
        CHECK(p->body_kind != SL_BODY_LENGTH);
}

static void fuzz_response(const uint8_t *msg, size_t n, bool head_req,
                          const struct sl_http_limits *lim, size_t max_head, size_t seed)
{
    static struct resp_result whole, part;
    char *wbuf = copy(msg, n);
    parse_resp(wbuf, n, head_req, lim, &whole);
    check_response(&whole, wbuf, n, max_head, head_req);
    int prev_rc = SL_HTTP_INCOMPLETE;
    for (size_t k = 0; k <= n; k++) {
        if (!want_prefix(k, n, seed))
            continue;
        char *buf = copy(msg, k);
        parse_resp(buf, k, head_req, lim, &part);
        check_response(&part, buf, k, max_head, head_req);
        if (part.rc == SL_HTTP_INCOMPLETE) {
            CHECK(whole.rc <= 0 || (size_t)whole.rc > k);
        } else {
            CHECK(part.rc == whole.rc);
            if (part.rc > 0) {
                CHECK(part.resp.status == whole.resp.status);
                CHECK(part.resp.body_kind == whole.resp.body_kind);
                CHECK(part.resp.content_length == whole.resp.content_length);
                CHECK(part.resp.keep_alive == whole.resp.keep_alive);
                CHECK(part.resp.num_headers == whole.resp.num_headers);
                CHECK(part.resp.reason_len == whole.resp.reason_len);
            }
        }
        if (prev_rc != SL_HTTP_INCOMPLETE)
            CHECK(part.rc == prev_rc);
        prev_rc = part.rc;
        free(buf);
    }
    free(wbuf);
}

/* ---- chunked ------------------------------------------------------------------ */

struct scan_result {
    long consumed; /* total bytes accepted, or -1 */
    bool done;
    uint64_t body_bytes;
};

/* Feed msg in pieces cut at the given offsets (sorted, <= n). */
static struct scan_result scan_pieces(const uint8_t *msg, size_t n, const size_t *cuts,
                                      size_t ncuts)
{
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    struct scan_result r = {0, false, 0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        if (to < from)
            to = from;
        char *piece = copy(msg + from, to - from);
        long used = sl_chunked_scan(&s, piece, to - from);
        free(piece);
        if (used < 0) {
            CHECK(used == -1 && s.error != NULL && !s.done);
            CHECK(sl_chunked_scan(&s, "0\r\n\r\n", 5) == -1);
            r.consumed = -1;
            return r;
        }
        CHECK((size_t)used <= to - from);
        r.consumed += used;
        if (s.done) {
            CHECK(sl_chunked_scan(&s, "x", 1) == 0);
            break;
        }
        CHECK((size_t)used == to - from); /* not done: everything was taken */
        from = to;
    }
    CHECK(s.body_bytes <= (uint64_t)r.consumed);
    r.done = s.done;
    r.body_bytes = s.body_bytes;
    return r;
}

static void fuzz_chunked(const uint8_t *msg, size_t n, size_t seed)
{
    struct scan_result whole = scan_pieces(msg, n, NULL, 0);
    if (whole.done)
        CHECK(whole.consumed >= 5 && msg[whole.consumed - 1] == '\n' &&
              msg[whole.consumed - 2] == '\r');
    size_t cuts[2];
    size_t step = n / 48 + 1;
    for (size_t k = 0; k <= n; k += step) {
        cuts[0] = k;
        struct scan_result two = scan_pieces(msg, n, cuts, 1);
        CHECK(two.consumed == whole.consumed && two.done == whole.done &&
              two.body_bytes == whole.body_bytes);
    }
    if (n > 0) {
        cuts[0] = seed % (n + 1);
        cuts[1] = cuts[0] + (seed >> 4) % (n - cuts[0] + 1);
        struct scan_result three = scan_pieces(msg, n, cuts, 2);
        CHECK(three.consumed == whole.consumed && three.done == whole.done &&
              three.body_bytes == whole.body_bytes);
    }
    if (n <= 512) { /* one byte at a time */
        struct sl_chunked_scanner s;
        sl_chunked_init(&s);
        long total = 0;
        for (size_t i = 0; i < n && !s.done; i++) {
            long used = sl_chunked_scan(&s, (const char *)msg + i, 1);
            if (used < 0) {
                total = -1;
                break;
            }
            total += used;
        }
        CHECK(total == whole.consumed && s.done == whole.done);
        if (total >= 0)
            CHECK(s.body_bytes == whole.body_bytes);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t opt = data[0];
    size_t seed = (size_t)data[1] << 8 | data[2];
    const uint8_t *msg = data + 3;
    size_t n = size - 3;

    /* small limits half of the time, so -414/-431 and the boundaries get hit */
    struct sl_http_limits lim = {0};
    size_t max_head = SL_HTTP_DEFAULT_MAX_HEADER_BYTES, max_headers = SL_HTTP_DEFAULT_MAX_HEADERS;
    const struct sl_http_limits *limp = NULL;
    if (opt & 1) {
        lim.max_request_line = 8 + (seed & 0x3f);
        lim.max_header_bytes = 16 + ((seed >> 6) & 0xff);
        lim.max_headers = 1 + ((opt >> 4) & 7);
        max_head = lim.max_header_bytes;
        max_headers = lim.max_headers;
        limp = &lim;
    }
    size_t cap = (opt & 2) ? 1 + ((opt >> 2) & 3) : NHDR;

    fuzz_request(msg, n, limp, max_head, max_headers, cap, seed);
    fuzz_response(msg, n, (opt & 0x80) != 0, limp, max_head, seed);
    fuzz_chunked(msg, n, seed);
    return 0;
}
