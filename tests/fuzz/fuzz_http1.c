/*
 * libFuzzer harness for the HTTP/1.1 request parser (core/http1.c); the
 * response parser and the chunked scanner have their own (fuzz_response,
 * fuzz_chunked).
 *
 * Input: byte 0 picks limits and options, bytes 1-2 pick split points, the
 * rest is the message. The parser sees heap copies of exactly the bytes it
 * may read (so ASan sees any read past the end), and the harness abort()s
 * when an invariant of the contract breaks:
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
 *  - the chunked body after an accepted head is scanned as the proxy
 *    would, within the buffer.
 */
#include "fuzz_common.h"

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
    if (whole.rc > 0 && whole.req.body_kind == SL_BODY_CHUNKED)
        check_chunked_after_head(msg + whole.rc, n - (size_t)whole.rc);
    free(wbuf);
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
    return 0;
}
