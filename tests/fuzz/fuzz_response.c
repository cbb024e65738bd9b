/*
 * libFuzzer harness for the HTTP/1.1 response parser (core/http1.c),
 * which reads what upstreams send: their bytes are as untrusted as a
 * client's, and a response the gateway gets wrong desynchronises the
 * pooled connection it came on.
 *
 * Input: byte 0 picks limits and whether the request was HEAD (bit 7),
 * bytes 1-2 pick split points, the rest is the message. The harness
 * abort()s when an invariant breaks:
 *  - a head length is <= len and <= max_header_bytes, every pointer lies
 *    inside the head, the status is 100-999, errors are -502 with a reason;
 *  - responses to HEAD, 1xx, 204 and 304 have no body; a body read until
 *    close means the connection is not kept; chunked only in HTTP/1.1;
 *    Transfer-Encoding never leaves Content-Length in charge;
 *  - a verdict never changes with more bytes (every prefix is INCOMPLETE
 *    or the whole's verdict with the same fields), and parsing is
 *    repeatable;
 *  - a chunked body after the head is scanned within the buffer.
 */
#include "fuzz_common.h"

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
    /* what follows an accepted head is read as the proxy reads it */
    if (whole.rc > 0) {
        if (whole.resp.body_kind == SL_BODY_CHUNKED)
            check_chunked_after_head(msg + whole.rc, n - (size_t)whole.rc);
        /* a second parse of the same bytes is the same (no hidden state) */
        static struct resp_result again;
        parse_resp(wbuf, n, head_req, lim, &again);
        CHECK(again.rc == whole.rc && again.resp.status == whole.resp.status &&
              again.resp.body_kind == whole.resp.body_kind);
    }
    free(wbuf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t opt = data[0];
    size_t seed = (size_t)data[1] << 8 | data[2];
    struct sl_http_limits lim = {0};
    size_t max_head = SL_HTTP_DEFAULT_MAX_HEADER_BYTES;
    const struct sl_http_limits *limp = NULL;
    if (opt & 1) { /* small limits half of the time: the boundaries get hit */
        lim.max_header_bytes = 16 + ((seed >> 6) & 0xff);
        lim.max_headers = 1 + ((opt >> 4) & 7);
        max_head = lim.max_header_bytes;
        limp = &lim;
    }
    fuzz_response(data + 3, size - 3, (opt & 0x80) != 0, limp, max_head, seed);
    return 0;
}
