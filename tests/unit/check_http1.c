/*
 * Tests of the HTTP/1.1 codec (core/http1.c): request and response heads,
 * the chunked scanner and the small list/name helpers.
 *
 * Every parse runs on a heap copy of exactly the message length, so a read
 * past the end shows up under ASan and valgrind.
 */
#include "http1.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define NHDR 128

/* A heap copy of exactly n bytes (no terminating NUL). */
static char *dup_exact(const char *s, size_t n)
{
    char *b = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, s, n);
    return b;
}

static int parse_req_n(const char *buf, size_t len, const struct sl_http_limits *lim,
                       struct sl_http_request *req, struct sl_http_header *hdrs, size_t cap)
{
    memset(req, 0xa5, sizeof(*req)); /* the parser must set every output field */
    req->headers = hdrs;
    req->header_capacity = cap;
    return sl_http_parse_request(buf, len, lim, req);
}

static int parse_resp_n(const char *buf, size_t len, bool head, const struct sl_http_limits *lim,
                        struct sl_http_response *resp, struct sl_http_header *hdrs, size_t cap)
{
    memset(resp, 0xa5, sizeof(*resp));
    resp->headers = hdrs;
    resp->header_capacity = cap;
    return sl_http_parse_response(buf, len, head, lim, resp);
}

static bool span_is(const char *p, size_t n, const char *want)
{
    return p != NULL && n == strlen(want) && memcmp(p, want, n) == 0;
}

/* ---- rejected requests, one table row per case -------------------------- */

struct reject_case {
    const char *klass;
    const char *input;
    size_t len;
    int want;
};

#define REQ(h) "GET / HTTP/1.1\r\nHost: example.com\r\n" h "\r\n"
#define POST(h) "POST /p HTTP/1.1\r\nHost: example.com\r\n" h "\r\n"
#define RC(klass, lit, want)                                                                       \
    {                                                                                              \
        klass, lit, sizeof(lit) - 1, want                                                          \
    }

static const struct reject_case reject_cases[] = {
    /* Content-Length together with Transfer-Encoding (RFC 9112 section 6.1) */
    RC("CL+TE", POST("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), -400),
    RC("CL+TE", POST("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), -400),
    RC("CL+TE", POST("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"), -400),
    /* duplicate Content-Length, equal values included */
    RC("dup CL", POST("Content-Length: 5\r\nContent-Length: 5\r\n"), -400),
    RC("dup CL", POST("Content-Length: 5\r\nContent-Length: 6\r\n"), -400),
    RC("dup CL", POST("Content-Length: 0\r\ncontent-length: 0\r\n"), -400),
    /* malformed Content-Length values */
    RC("bad CL", POST("Content-Length:\r\n"), -400),
    RC("bad CL", POST("Content-Length:   \r\n"), -400),
    RC("bad CL", POST("Content-Length: +5\r\n"), -400),
    RC("bad CL", POST("Content-Length: -5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 5a\r\n"), -400),
    RC("bad CL", POST("Content-Length: a5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 0x5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 1.5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 5 5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 5,5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 5, 5\r\n"), -400),
    RC("bad CL", POST("Content-Length: 5,\r\n"), -400),
    RC("bad CL", POST("Content-Length: \"5\"\r\n"), -400),
    RC("bad CL", POST("Content-Length: 00000000000000000001\r\n"), -400), /* 20 digits */
    RC("bad CL", POST("Content-Length: 99999999999999999999\r\n"), -400),
    RC("bad CL", POST("Content-Length: 18446744073709551616\r\n"), -400), /* 2^64 */
    RC("bad CL", POST("Content-Length: 18446744073709551615\r\n"), -400), /* 20 digits */
    /* Transfer-Encoding other than exactly one `chunked` */
    RC("bad TE", POST("Transfer-Encoding: xchunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunkedx\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked, x\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: gzip, chunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked, chunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked,\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: ,chunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked;q=1\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked ;q=1\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: identity\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: gzip\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding:\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding:  \r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: \"chunked\"\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunk ed\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding:\tchunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked\t\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: \tchunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding:\vchunked\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked\v\r\n"), -400),
    RC("bad TE", POST("Transfer-Encoding: chunked\f\r\n"), -400),
    /* Transfer-Encoding in HTTP/1.0 */
    RC("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    RC("TE in 1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    /* whitespace between name and colon, empty name */
    RC("ws before colon", REQ("X-A : 1\r\n"), -400),
    RC("ws before colon", REQ("X-A\t: 1\r\n"), -400),
    RC("ws before colon", REQ("Content-Length : 5\r\n"), -400),
    RC("ws before colon", REQ("Transfer-Encoding : chunked\r\n"), -400),
    RC("ws before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", -400),
    RC("empty name", REQ(": 1\r\n"), -400),
    RC("empty name", REQ(":\r\n"), -400),
    RC("no colon", REQ("X-A\r\n"), -400),
    RC("no colon", REQ("X-A 1\r\n"), -400),
    /* underscore spellings of the framing headers */
    RC("underscore", POST("Transfer_Encoding: chunked\r\n"), -400),
    RC("underscore", POST("transfer_encoding: chunked\r\n"), -400),
    RC("underscore", POST("TRANSFER_ENCODING: chunked\r\n"), -400),
    RC("underscore", POST("Content_Length: 5\r\n"), -400),
    RC("underscore", POST("content_length: 5\r\n"), -400),
    RC("underscore", POST("CONTENT_LENGTH: 5\r\n"), -400),
    RC("underscore", POST("Content-Length: 5\r\nContent_Length: 5\r\n"), -400),
    /* bare CR anywhere in the head */
    RC("bare CR", REQ("X-A: 1\r2\r\n"), -400),
    RC("bare CR", REQ("X-A: 1\r\r\n"), -400),
    RC("bare CR", REQ("X-A: 1\rX-B: 2\r\n"), -400),
    RC("bare CR", REQ("X-A\r: 1\r\n"), -400),
    RC("bare CR", "GET / HTTP/1.1\rHost: a\r\n\r\n", -400),
    RC("bare CR", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("bare CR", "GET\r/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("bare CR", "GET / HTTP/1.1\r\nHost: a\r\n\rX", -400),
    RC("bare CR", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("bare CR", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", -400),
    /* NUL and other control bytes */
    RC("NUL", REQ("X-A: 1\0002\r\n"), -400),
    RC("NUL", REQ("X-A: \000\r\n"), -400),
    RC("NUL", REQ("X-\000A: 1\r\n"), -400),
    RC("NUL", "GET /\000 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("NUL", "G\000ET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("NUL", "GET / HTTP/1.1\000\r\nHost: a\r\n\r\n", -400),
    RC("NUL", "\000GET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("control", REQ("X-A: 1\0012\r\n"), -400),
    RC("control", REQ("X-A: 1\x1f\r\n"), -400),
    RC("control", REQ("X-A: 1\x7f\r\n"), -400),
    RC("control", REQ("X-A: \x1b[31m\r\n"), -400),
    RC("control", REQ("X-A: a\vb\r\n"), -400),
    RC("control", REQ("X-A: a\fb\r\n"), -400),
    RC("control", REQ("X-A\x7f: 1\r\n"), -400),
    RC("control", REQ("X-A\t: 1\r\n"), -400),
    RC("control", "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("control", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("control", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("control", "GE\tT / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    /* obs-fold, RFC 9112 section 5.2 */
    RC("obs-fold", REQ("X-A: 1\r\n 2\r\n"), -400),
    RC("obs-fold", REQ("X-A: 1\r\n\t2\r\n"), -400),
    RC("obs-fold", REQ("X-A: 1\n 2\n"), -400),
    RC("obs-fold", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", -400),
    RC("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n", -400),
    RC("obs-fold", POST("Transfer-Encoding:\r\n chunked\r\n"), -400),
    /* field names must be tchars */
    RC("name char", REQ("X(A): 1\r\n"), -400),
    RC("name char", REQ("X@A: 1\r\n"), -400),
    RC("name char", REQ("X\"A: 1\r\n"), -400),
    RC("name char", REQ("X/A: 1\r\n"), -400),
    RC("name char", REQ("X{A}: 1\r\n"), -400),
    RC("name char", REQ("X[A]: 1\r\n"), -400),
    RC("name char", REQ("X,A: 1\r\n"), -400),
    RC("name char", REQ("X;A: 1\r\n"), -400),
    RC("name char", REQ("X=A: 1\r\n"), -400),
    RC("name char", REQ("X\\A: 1\r\n"), -400),
    RC("name char", REQ("X\xc3\xa9: 1\r\n"), -400),
    RC("name char", REQ("X\x80: 1\r\n"), -400),
    /* request-line */
    RC("request-line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400),
    RC("request-line", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    /* a fragment is no part of a request-target (RFC 9112 section 3.2) */
    RC("request-line", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /a# HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET # HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /a?q#f HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /static/index.html#.png HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET http://a/x#y HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET /\r\n\r\n", -400), /* HTTP/0.9 */
    RC("request-line", "GET /\n\n", -400),
    RC("request-line", "GET / \r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET \r\nHost: a\r\n\r\n", -400),
    RC("request-line", "/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / http/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/1.\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/1,1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTPS/1.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/a.1\r\nHost: a\r\n\r\n", -400),
    RC("request-line", "GET / HTTP/2\r\nHost: a\r\n\r\n", -400),
    RC("version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505),
    RC("version", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", -505),
    RC("version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", -505),
    RC("version", "GET / HTTP/3.0\r\n\r\n", -505),
    RC("version", "GET / HTTP/1.9\n\n", -505),
    /* Host */
    RC("Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", -400),
    /* Host must be uri-host [":" port] (RFC 9110 section 7.2, RFC 3986 section 3.2.2) */
    RC("Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost:   \r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.0\r\nHost:\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a:-1\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a: 80\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: u:p@a\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a@\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a<b>\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a{b}\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a^b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a|b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a`b\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a[b]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: ::1]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: []\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::1]:x\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::1]]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [1:2:3:4:5:6:7:8:9]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [1::2::3]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [12345::]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [g::1]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::1%25eth0]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [::256.0.0.1]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [v1]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [v.x]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [v1.]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: [v1.a/b]\r\n\r\n", -400),
    RC("Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: \r\n\r\n", -400),
    /* absolute-form (RFC 9112 section 3.2.2): the authority must be valid and agree with Host */
    RC("absolute-form", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://a@b/ HTTP/1.1\r\nHost: b\r\n\r\n", -400),
    RC("absolute-form", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http:/a/x HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http:a HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://a:x/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://a#b/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a.\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a:81\r\n\r\n", -400),
    RC("absolute-form", "GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("absolute-form", "GET https://a/ HTTP/1.1\r\nHost: a:80\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a:443\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.0\r\nHost: b\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost: u@a\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n", -400),
    RC("absolute-form", "GET http://a/ HTTP/1.1\r\n\r\n", -400),
    RC("absolute-form", "GET http://[::1]/ HTTP/1.1\r\nHost: [::0:1]\r\n\r\n", -400),
    /* empty lines before the request-line: up to 4 are skipped */
    RC("leading empty", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("leading empty", "\n\n\n\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    RC("leading empty", " \r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
};

START_TEST(test_reject)
{
    const struct reject_case *c = &reject_cases[_i];
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    char *buf = dup_exact(c->input, c->len);
    int rc = parse_req_n(buf, c->len, NULL, &req, hdrs, NHDR);
    ck_assert_msg(rc == c->want, "case %d (%s) \"%.*s\": got %d (%s), want %d", _i, c->klass,
                  (int)c->len, c->input, rc, rc < 0 ? req.error : "-", c->want);
    ck_assert_msg(req.error != NULL && req.error[0] != '\0', "case %d (%s): no error reason", _i,
                  c->klass);
    /* a verdict never changes with more bytes: every prefix is INCOMPLETE or the same */
    for (size_t k = 0; k < c->len; k++) {
        char *pre = dup_exact(c->input, k);
        int prc = parse_req_n(pre, k, NULL, &req, hdrs, NHDR);
        free(pre);
        ck_assert_msg(prc == SL_HTTP_INCOMPLETE || prc == c->want,
                      "case %d (%s): prefix of %zu bytes gives %d, whole gives %d", _i, c->klass, k,
                      prc, c->want);
    }
    free(buf);
}
END_TEST

/* ---- accepted requests ------------------------------------------------------- */

START_TEST(test_simple_get)
{
    static const char msg[] = "GET /index.html?q=1 HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "User-Agent: t/1.0\r\n"
                              "Accept: */*\r\n"
                              "\r\n";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)n);
    ck_assert_ptr_null(req.error);
    ck_assert(span_is(req.method, req.method_len, "GET"));
    ck_assert(span_is(req.target, req.target_len, "/index.html?q=1"));
    ck_assert_ptr_eq(req.method, buf);
    ck_assert_int_eq(req.version_minor, 1);
    ck_assert_uint_eq(req.num_headers, 3);
    ck_assert(span_is(hdrs[0].name, hdrs[0].name_len, "Host"));
    ck_assert(span_is(hdrs[0].value, hdrs[0].value_len, "example.com"));
    ck_assert_int_eq(hdrs[0].id, SL_HDR_HOST);
    ck_assert(span_is(hdrs[1].name, hdrs[1].name_len, "User-Agent"));
    ck_assert(span_is(hdrs[1].value, hdrs[1].value_len, "t/1.0"));
    ck_assert_int_eq(hdrs[1].id, SL_HDR_OTHER);
    ck_assert_int_eq(hdrs[2].id, SL_HDR_ACCEPT);
    ck_assert(span_is(req.host, req.host_len, "example.com"));
    ck_assert_ptr_eq(req.host, hdrs[0].value);
    ck_assert_int_eq(req.body_kind, SL_BODY_NONE);
    ck_assert_uint_eq(req.content_length, 0);
    ck_assert(req.keep_alive);
    ck_assert(!req.expect_continue);
    ck_assert(!req.has_upgrade);
    free(buf);
}
END_TEST

START_TEST(test_post_content_length)
{
    static const char msg[] = "POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                              "hello world";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)(n - 11));
    ck_assert(span_is(req.method, req.method_len, "POST"));
    ck_assert_int_eq(req.body_kind, SL_BODY_LENGTH);
    ck_assert_uint_eq(req.content_length, 11);
    ck_assert_int_eq(hdrs[1].id, SL_HDR_CONTENT_LENGTH);
    ck_assert_mem_eq(buf + rc, "hello world", 11);
    free(buf);
}
END_TEST

START_TEST(test_content_length_values)
{
    static const struct {
        const char *value;
        uint64_t want;
        enum sl_http_body_kind kind;
    } cases[] = {
        {"0", 0, SL_BODY_NONE},
        {"000", 0, SL_BODY_NONE},
        {"007", 7, SL_BODY_LENGTH},
        {"  42  ", 42, SL_BODY_LENGTH},
        {"\t42\t", 42, SL_BODY_LENGTH},
        {"9999999999999999999", UINT64_C(9999999999999999999), SL_BODY_LENGTH},
        {"0000000000000000001", 1, SL_BODY_LENGTH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg),
                         "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length:%s\r\n\r\n", cases[i].value);
        char *buf = dup_exact(msg, (size_t)n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, (size_t)n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == n, "Content-Length \"%s\": got %d", cases[i].value, rc);
        ck_assert_msg(req.content_length == cases[i].want, "Content-Length \"%s\": got %llu",
                      cases[i].value, (unsigned long long)req.content_length);
        ck_assert_msg(req.body_kind == cases[i].kind, "Content-Length \"%s\": kind %d",
                      cases[i].value, req.body_kind);
        free(buf);
    }
}
END_TEST

START_TEST(test_chunked_request)
{
    static const char *const values[] = {"chunked", "Chunked", "CHUNKED", " chunked ", "chunked  "};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg),
                         "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:%s\r\n\r\n", values[i]);
        char *buf = dup_exact(msg, (size_t)n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, (size_t)n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == n, "TE \"%s\": got %d (%s)", values[i], rc, req.error);
        ck_assert_int_eq(req.body_kind, SL_BODY_CHUNKED);
        ck_assert_int_eq(hdrs[1].id, SL_HDR_TRANSFER_ENCODING);
        ck_assert_uint_eq(req.content_length, 0);
        free(buf);
    }
}
END_TEST

START_TEST(test_pipelined)
{
#define HEAD1 "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
#define HEAD2 "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
#define BODY2 "3\r\nxyz\r\n0\r\n\r\n"
    static const char msg[] = HEAD1 "abc" HEAD2 BODY2 "GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    size_t off = 0;

    int rc = parse_req_n(buf + off, n - off, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)strlen(HEAD1));
    ck_assert(span_is(req.target, req.target_len, "/a"));
    ck_assert_int_eq(req.body_kind, SL_BODY_LENGTH);
    ck_assert_uint_eq(req.content_length, 3);
    off += (size_t)rc + req.content_length;

    rc = parse_req_n(buf + off, n - off, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)strlen(HEAD2));
    ck_assert(span_is(req.target, req.target_len, "/b"));
    ck_assert_int_eq(req.body_kind, SL_BODY_CHUNKED);
    off += (size_t)rc;
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    long used = sl_chunked_scan(&s, buf + off, n - off);
    ck_assert_int_eq(used, (long)strlen(BODY2));
    ck_assert(s.done);
    ck_assert_uint_eq(s.body_bytes, 3);
    off += (size_t)used;

    rc = parse_req_n(buf + off, n - off, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)(n - off));
    ck_assert(span_is(req.target, req.target_len, "/c"));
    ck_assert_int_eq(req.body_kind, SL_BODY_NONE);
    free(buf);
}
END_TEST

struct conn_case {
    const char *msg;
    bool keep_alive;
    bool upgrade;
};

START_TEST(test_keep_alive)
{
    static const struct conn_case cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false,
         false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true, false},
        {"GET / HTTP/1.0\r\n\r\n", false, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false},
        {"GET / HTTP/1.0\r\nconnection: x ,  keep-alive , y\r\n\r\n", true, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false, false},
        {"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true,
         true},
        {"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, "
         "upgrade\r\n\r\n",
         true, true},
        {"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", true, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].msg);
        char *buf = dup_exact(cases[i].msg, n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == (int)n, "case %zu: rc %d (%s)", i, rc, req.error);
        ck_assert_msg(req.keep_alive == cases[i].keep_alive, "case %zu: keep_alive %d", i,
                      req.keep_alive);
        ck_assert_msg(req.has_upgrade == cases[i].upgrade, "case %zu: has_upgrade %d", i,
                      req.has_upgrade);
        free(buf);
    }
}
END_TEST

START_TEST(test_expect)
{
    static const struct {
        const char *value;
        bool want;
    } cases[] = {
        {"100-continue", true}, {"100-Continue", true},    {" 100-CONTINUE ", true},
        {"200-ok", false},      {"100-continue-x", false}, {"", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg),
                         "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect:%s\r\n\r\n",
                         cases[i].value);
        char *buf = dup_exact(msg, (size_t)n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, (size_t)n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == n, "Expect \"%s\": rc %d", cases[i].value, rc);
        ck_assert_msg(req.expect_continue == cases[i].want, "Expect \"%s\": %d", cases[i].value,
                      req.expect_continue);
        ck_assert_int_eq(hdrs[2].id, SL_HDR_EXPECT);
        free(buf);
    }
}
END_TEST

START_TEST(test_leading_empty_lines)
{
    static const char *const msgs[] = {
        "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    static const size_t skip[] = {2, 1, 6};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(msgs[i]);
        char *buf = dup_exact(msgs[i], n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == (int)n, "case %zu: rc %d", i, rc);
        ck_assert_ptr_eq(req.method, buf + skip[i]);
        ck_assert(span_is(req.method, req.method_len, "GET"));
        free(buf);
    }
}
END_TEST

START_TEST(test_bare_lf)
{
    static const char msg[] = "GET /lf HTTP/1.1\nHost: a\nX-A: 1 \nX-B: 2\r\n\nrest";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)(n - 4));
    ck_assert_uint_eq(req.num_headers, 3);
    ck_assert(span_is(hdrs[0].value, hdrs[0].value_len, "a"));
    ck_assert(span_is(hdrs[1].value, hdrs[1].value_len, "1"));
    ck_assert(span_is(hdrs[2].value, hdrs[2].value_len, "2"));
    ck_assert(span_is(req.target, req.target_len, "/lf"));
    free(buf);
}
END_TEST

START_TEST(test_values_and_names)
{
    static const char msg[] = "OPTIONS * HTTP/1.1\r\n"
                              "Host: [::1]:8080\r\n"
                              "X-Pad:   a  b \t \r\n"
                              "X-Empty:\r\n"
                              "X-Empty2: \t \r\n"
                              "X_Custom_Header: yes\r\n"
                              "X-Obs: caf\xc3\xa9\r\n"
                              "!#$%&'*+-.^_`|~09az: tchars\r\n"
                              "X-Quote: \"a, b\"; q=\\x\r\n"
                              "\r\n";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
    ck_assert_msg(rc == (int)n, "rc %d (%s)", rc, req.error);
    ck_assert(span_is(req.target, req.target_len, "*"));
    ck_assert(span_is(req.host, req.host_len, "[::1]:8080"));
    ck_assert_uint_eq(req.num_headers, 8);
    ck_assert(span_is(hdrs[1].value, hdrs[1].value_len, "a  b"));
    ck_assert_uint_eq(hdrs[2].value_len, 0);
    ck_assert_ptr_nonnull(hdrs[2].value);
    ck_assert_uint_eq(hdrs[3].value_len, 0);
    ck_assert(span_is(hdrs[4].name, hdrs[4].name_len, "X_Custom_Header"));
    ck_assert_int_eq(hdrs[4].id, SL_HDR_OTHER);
    ck_assert(span_is(hdrs[5].value, hdrs[5].value_len, "caf\xc3\xa9"));
    ck_assert(span_is(hdrs[6].name, hdrs[6].name_len, "!#$%&'*+-.^_`|~09az"));
    ck_assert(span_is(hdrs[7].value, hdrs[7].value_len, "\"a, b\"; q=\\x"));
    for (size_t i = 0; i < req.num_headers; i++) {
        ck_assert(hdrs[i].name >= buf && hdrs[i].name + hdrs[i].name_len <= buf + n);
        ck_assert(hdrs[i].value >= buf && hdrs[i].value + hdrs[i].value_len <= buf + n);
    }
    free(buf);
}
END_TEST

START_TEST(test_host_values)
{
    static const char *const ok[] = {"example.com",
                                     "EXAMPLE.com:443",
                                     "127.0.0.1:8080",
                                     "[2001:db8::1]",
                                     "a-b_c~d%20",
                                     "  x.y  ",
                                     "a:",
                                     "x.example.",
                                     "!$&'()*+,;=:1"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg), "GET / HTTP/1.1\r\nHost:%s\r\n\r\n", ok[i]);
        char *buf = dup_exact(msg, (size_t)n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, (size_t)n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == n, "Host \"%s\": rc %d", ok[i], rc);
        ck_assert_ptr_nonnull(req.host);
        ck_assert_ptr_eq(req.host, hdrs[0].value);
        ck_assert_uint_eq(req.host_len, hdrs[0].value_len);
        free(buf);
    }
    /* HTTP/1.0 needs no Host */
    static const char v10[] = "GET / HTTP/1.0\r\nX: y\r\n\r\n";
    char *buf = dup_exact(v10, sizeof(v10) - 1);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    ck_assert_int_eq(parse_req_n(buf, sizeof(v10) - 1, NULL, &req, hdrs, NHDR),
                     (int)sizeof(v10) - 1);
    ck_assert_ptr_null(req.host);
    ck_assert_int_eq(req.version_minor, 0);
    free(buf);
}
END_TEST

/* sl_http_parse_host(), one row per production of RFC 3986 section 3.2.2, accepted and refused */
static const struct host_case {
    const char *in;
    int kind; /* 0: refused */
    const char *name;
    const char *port; /* NULL: no ':' */
} host_cases[] = {
    /* reg-name = *( unreserved / pct-encoded / sub-delims ), never empty here */
    {"a", SL_HOST_REG_NAME, "a", NULL},
    {"Example.COM", SL_HOST_REG_NAME, "Example.COM", NULL},
    {"a-b.c_d~e", SL_HOST_REG_NAME, "a-b.c_d~e", NULL},
    {"%41%7e", SL_HOST_REG_NAME, "%41%7e", NULL},
    {"!$&'()*+,;=", SL_HOST_REG_NAME, "!$&'()*+,;=", NULL},
    {"a.", SL_HOST_REG_NAME, "a.", NULL},
    {"..", SL_HOST_REG_NAME, "..", NULL},
    {"", 0, NULL, NULL},
    {"%", 0, NULL, NULL},
    {"%4", 0, NULL, NULL},
    {"%4g", 0, NULL, NULL},
    {"a%", 0, NULL, NULL},
    {"a b", 0, NULL, NULL},
    {"a/b", 0, NULL, NULL},
    {"a?b", 0, NULL, NULL},
    {"a#b", 0, NULL, NULL},
    {"a\"b", 0, NULL, NULL},
    {"a\\b", 0, NULL, NULL},
    {"a\x7f", 0, NULL, NULL},
    {"a\x80", 0, NULL, NULL},
    {"a\tb", 0, NULL, NULL},
    {"a]", 0, NULL, NULL},
    {"a[", 0, NULL, NULL},
    /* userinfo */
    {"u@a", 0, NULL, NULL},
    {"@a", 0, NULL, NULL},
    {"u:p@a:80", 0, NULL, NULL},
    {"[::1]@a", 0, NULL, NULL},
    /* IPv4address: four dec-octets; anything else of digits and dots is a reg-name */
    {"1.2.3.4", SL_HOST_IPV4, "1.2.3.4", NULL},
    {"0.0.0.0", SL_HOST_IPV4, "0.0.0.0", NULL},
    {"255.255.255.255:1", SL_HOST_IPV4, "255.255.255.255", "1"},
    {"199.249.250.251", SL_HOST_IPV4, "199.249.250.251", NULL},
    {"256.1.1.1", SL_HOST_REG_NAME, "256.1.1.1", NULL},
    {"01.2.3.4", SL_HOST_REG_NAME, "01.2.3.4", NULL},
    {"1.2.3", SL_HOST_REG_NAME, "1.2.3", NULL},
    {"1.2.3.4.5", SL_HOST_REG_NAME, "1.2.3.4.5", NULL},
    {"1.2.3.4.", SL_HOST_REG_NAME, "1.2.3.4.", NULL},
    {"1234.1.1.1", SL_HOST_REG_NAME, "1234.1.1.1", NULL},
    /* port = *DIGIT */
    {"a:80", SL_HOST_REG_NAME, "a", "80"},
    {"a:", SL_HOST_REG_NAME, "a", ""},
    {"a:0", SL_HOST_REG_NAME, "a", "0"},
    {"a:00080", SL_HOST_REG_NAME, "a", "00080"},
    {"a:99999999999999999999", SL_HOST_REG_NAME, "a", "99999999999999999999"},
    {":80", 0, NULL, NULL},
    {":", 0, NULL, NULL},
    {"a:8a", 0, NULL, NULL},
    {"a:+80", 0, NULL, NULL},
    {"a: 80", 0, NULL, NULL},
    {"a:80:", 0, NULL, NULL},
    {"a::80", 0, NULL, NULL},
    {"a:0x50", 0, NULL, NULL},
    /* IP-literal = "[" ( IPv6address / IPvFuture ) "]" */
    {"[::]", SL_HOST_IPV6, "[::]", NULL},
    {"[::1]", SL_HOST_IPV6, "[::1]", NULL},
    {"[::1]:443", SL_HOST_IPV6, "[::1]", "443"},
    {"[::1]:", SL_HOST_IPV6, "[::1]", ""},
    {"[1::]", SL_HOST_IPV6, "[1::]", NULL},
    {"[2001:DB8::a:b]", SL_HOST_IPV6, "[2001:DB8::a:b]", NULL},
    {"[1:2:3:4:5:6:7:8]", SL_HOST_IPV6, "[1:2:3:4:5:6:7:8]", NULL},
    {"[1:2:3:4:5:6:7::]", SL_HOST_IPV6, "[1:2:3:4:5:6:7::]", NULL},
    {"[::2:3:4:5:6:7:8]", SL_HOST_IPV6, "[::2:3:4:5:6:7:8]", NULL},
    {"[1:2:3::6:7:8]", SL_HOST_IPV6, "[1:2:3::6:7:8]", NULL},
    {"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]", SL_HOST_IPV6,
     "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]", NULL},
    {"[0000:0:0:0:0:0:0:1]", SL_HOST_IPV6, "[0000:0:0:0:0:0:0:1]", NULL},
    {"[::ffff:1.2.3.4]", SL_HOST_IPV6, "[::ffff:1.2.3.4]", NULL},
    {"[1:2:3:4:5:6:1.2.3.4]", SL_HOST_IPV6, "[1:2:3:4:5:6:1.2.3.4]", NULL},
    {"[::1.2.3.4]", SL_HOST_IPV6, "[::1.2.3.4]", NULL},
    {"[1::5:6:1.2.3.4]", SL_HOST_IPV6, "[1::5:6:1.2.3.4]", NULL},
    {"[]", 0, NULL, NULL},
    {"[", 0, NULL, NULL},
    {"[::1", 0, NULL, NULL},
    {"[::1]]", 0, NULL, NULL},
    {"[[::1]]", 0, NULL, NULL},
    {"[::1]x", 0, NULL, NULL},
    {"[::1]:8a", 0, NULL, NULL},
    {"[:]", 0, NULL, NULL},
    {"[:::]", 0, NULL, NULL},
    {"[:1::]", 0, NULL, NULL},
    {"[1:]", 0, NULL, NULL},
    {"[1::2:]", 0, NULL, NULL},
    {"[1::2::3]", 0, NULL, NULL},
    {"[1:2:3:4:5:6:7]", 0, NULL, NULL},
    {"[1:2:3:4:5:6:7:8:9]", 0, NULL, NULL},
    {"[1:2:3:4::5:6:7:8]", 0, NULL, NULL},
    {"[1:2:3:4:5:6:7:8::]", 0, NULL, NULL},
    {"[12345::]", 0, NULL, NULL},
    {"[g::]", 0, NULL, NULL},
    {"[::1 ]", 0, NULL, NULL},
    {"[::1%25eth0]", 0, NULL, NULL},
    {"[::1%eth0]", 0, NULL, NULL},
    {"[1.2.3.4]", 0, NULL, NULL},
    {"[::1.2.3]", 0, NULL, NULL},
    {"[::1.2.3.4.5]", 0, NULL, NULL},
    {"[::01.2.3.4]", 0, NULL, NULL},
    {"[::256.2.3.4]", 0, NULL, NULL},
    {"[::1.2.3.4:1]", 0, NULL, NULL},
    {"[1:2:3:4:5:6:7:1.2.3.4]", 0, NULL, NULL},
    {"[1:2:3:4:5:1.2.3.4]", 0, NULL, NULL},
    {"[::1]:80:80", 0, NULL, NULL},
    /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
    {"[v1.a]", SL_HOST_IPVFUTURE, "[v1.a]", NULL},
    {"[VF.a:b!]:8", SL_HOST_IPVFUTURE, "[VF.a:b!]", "8"},
    {"[v7.fe80::1%25]", 0, NULL, NULL},
    {"[v1]", 0, NULL, NULL},
    {"[v1.]", 0, NULL, NULL},
    {"[v.a]", 0, NULL, NULL},
    {"[vg.a]", 0, NULL, NULL},
    {"[v1.a/b]", 0, NULL, NULL},
    {"[v1.a b]", 0, NULL, NULL},
};

START_TEST(test_host_parser)
{
    const struct host_case *c = &host_cases[_i];
    size_t n = strlen(c->in);
    char *buf = dup_exact(c->in, n);
    struct sl_http_host hp;
    const char *why = sl_http_parse_host(buf, n, &hp);
    if (c->kind == 0) {
        ck_assert_msg(why != NULL, "\"%s\" accepted", c->in);
        ck_assert(why[0] != '\0');
    } else {
        ck_assert_msg(why == NULL, "\"%s\" refused: %s", c->in, why);
        ck_assert_msg((int)hp.kind == c->kind, "\"%s\": kind %d, want %d", c->in, hp.kind, c->kind);
        ck_assert(span_is(hp.name, hp.name_len, c->name));
        ck_assert_ptr_eq(hp.name, buf);
        if (c->port == NULL) {
            ck_assert_ptr_null(hp.port);
        } else {
            ck_assert(span_is(hp.port, hp.port_len, c->port));
        }
    }
    /* the same verdict as a Host field, through the request parser */
    char msg[256];
    int len = snprintf(msg, sizeof msg, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", c->in);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    char *m = dup_exact(msg, (size_t)len);
    int rc = parse_req_n(m, (size_t)len, NULL, &req, hdrs, NHDR);
    ck_assert_msg(c->kind == 0 ? rc == -400 : rc == len, "Host: %s gives %d", c->in, rc);
    if (rc > 0) {
        ck_assert(span_is(req.authority, req.authority_len, c->in));
        ck_assert(!req.absolute_form);
        ck_assert(span_is(req.origin, req.origin_len, "/"));
    }
    free(m);
    free(buf);
}
END_TEST

/* absolute-form: the authority replaces Host, which may be absent (HTTP/1.0) or must agree */
START_TEST(test_absolute_form)
{
    static const struct {
        const char *msg;
        const char *authority, *origin;
    } ok[] = {
        {"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example", "/x?y"},
        {"GET HTTP://A.example HTTP/1.1\r\nHost: a.EXAMPLE\r\n\r\n", "A.example", ""},
        {"GET http://a?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", "a", "?q=1"},
        {"GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "a", "/"},
        /* ports: empty or absent is the scheme's default; leading zeros do not matter */
        {"GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", "a:80", "/"},
        {"GET http://a/ HTTP/1.1\r\nHost: a:80\r\n\r\n", "a", "/"},
        {"GET http://a:/ HTTP/1.1\r\nHost: a:080\r\n\r\n", "a:", "/"},
        {"GET https://a:443/ HTTP/1.1\r\nHost: a:\r\n\r\n", "a:443", "/"},
        {"GET http://a:8080/ HTTP/1.1\r\nHost: a:8080\r\n\r\n", "a:8080", "/"},
        {"GET http://[::1]:8/p HTTP/1.1\r\nHost: [::1]:8\r\n\r\n", "[::1]:8", "/p"},
        {"GET http://1.2.3.4/p HTTP/1.0\r\n\r\n", "1.2.3.4", "/p"},
        /* other schemes are not absolute-form for sluice: the caller refuses them */
        {"GET ftp://a/ HTTP/1.1\r\nHost: b\r\n\r\n", "b", "ftp://a/"},
        {"OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n", "b", "*"},
        {"GET /http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", "b", "/http://a/"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t n = strlen(ok[i].msg);
        char *buf = dup_exact(ok[i].msg, n);
        struct sl_http_header hdrs[NHDR];
        struct sl_http_request req;
        int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
        ck_assert_msg(rc == (int)n, "%s: rc %d (%s)", ok[i].msg, rc, rc < 0 ? req.error : "");
        ck_assert_msg(span_is(req.authority, req.authority_len, ok[i].authority), "%s", ok[i].msg);
        ck_assert_msg(span_is(req.origin, req.origin_len, ok[i].origin), "%s", ok[i].msg);
        ck_assert(req.origin + req.origin_len == req.target + req.target_len);
        bool absolute = strncasecmp(ok[i].msg + 4, "http", 4) == 0;
        ck_assert_msg(req.absolute_form == absolute, "%s", ok[i].msg);
        free(buf);
    }
}
END_TEST

START_TEST(test_header_ids)
{
    static const struct {
        const char *name;
        enum sl_http_header_id id;
    } ids[] = {
        {"hOST", SL_HDR_HOST},
        {"Content-length", SL_HDR_CONTENT_LENGTH},
        {"Connection", SL_HDR_CONNECTION},
        {"KEEP-ALIVE", SL_HDR_KEEP_ALIVE},
        {"Proxy-Connection", SL_HDR_PROXY_CONNECTION},
        {"te", SL_HDR_TE},
        {"Trailer", SL_HDR_TRAILER},
        {"upgrade", SL_HDR_UPGRADE},
        {"Expect", SL_HDR_EXPECT},
        {"X-Forwarded-For", SL_HDR_X_FORWARDED_FOR},
        {"x-forwarded-proto", SL_HDR_X_FORWARDED_PROTO},
        {"X-Forwarded-Host", SL_HDR_X_FORWARDED_HOST},
        {"X-FORWARDED-PORT", SL_HDR_X_FORWARDED_PORT},
        {"X-Forwarded-Path", SL_HDR_X_FORWARDED_PATH},
        {"X-Forwarded-Prefix", SL_HDR_X_FORWARDED_PREFIX},
        {"X-Real-IP", SL_HDR_X_REAL_IP},
        {"X-Request-Id", SL_HDR_X_REQUEST_ID},
        {"Via", SL_HDR_VIA},
        {"Accept", SL_HDR_ACCEPT},
        {"Proxy-Authenticate", SL_HDR_PROXY_AUTHENTICATE},
        {"Proxy-Authorization", SL_HDR_PROXY_AUTHORIZATION},
        {"Date", SL_HDR_DATE},
        {"Server", SL_HDR_SERVER},
        /* near misses stay OTHER */
        {"Hosts", SL_HDR_OTHER},
        {"Hos", SL_HDR_OTHER},
        {"Gost", SL_HDR_OTHER},
        {"Accept-Encoding", SL_HDR_OTHER},
        {"X-Forwarded-Hosx", SL_HDR_OTHER},
        {"Tf", SL_HDR_OTHER},
        {"Proxy-Connectio", SL_HDR_OTHER},
        {"Content-Type", SL_HDR_OTHER},
        {"Contentxlength", SL_HDR_OTHER},
        {"Transfer-Encodinx", SL_HDR_OTHER},
        {"X_Forwarded_For", SL_HDR_OTHER},
        {"Upgrade-Insecure-Requests", SL_HDR_OTHER},
    };
    size_t count = sizeof(ids) / sizeof(ids[0]);
    char msg[4096];
    size_t n = (size_t)snprintf(msg, sizeof(msg), "GET / HTTP/1.1\r\n");
    for (size_t i = 0; i < count; i++) {
        const char *value = ids[i].id == SL_HDR_CONTENT_LENGTH ? "0" : "x";
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s: %s\r\n", ids[i].name, value);
    }
    n += (size_t)snprintf(msg + n, sizeof(msg) - n, "\r\n");
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    int rc = parse_req_n(buf, n, NULL, &req, hdrs, NHDR);
    ck_assert_msg(rc == (int)n, "rc %d (%s)", rc, req.error);
    ck_assert_uint_eq(req.num_headers, count);
    for (size_t i = 0; i < count; i++) {
        ck_assert_msg(hdrs[i].id == ids[i].id, "%s: id %d, want %d", ids[i].name, hdrs[i].id,
                      ids[i].id);
    }
    free(buf);
}
END_TEST

START_TEST(test_header_ids_in_response)
{
    /* underscore spellings are only refused in requests; in responses they are OTHER */
    static const char msg[] = "HTTP/1.1 200 OK\r\nContent_Length: 9\r\nContent-Length: 0\r\n"
                              "Server: s\r\nDate: d\r\n\r\n";
    char *buf = dup_exact(msg, sizeof(msg) - 1);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_response resp;
    int rc = parse_resp_n(buf, sizeof(msg) - 1, false, NULL, &resp, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)sizeof(msg) - 1);
    ck_assert_int_eq(hdrs[0].id, SL_HDR_OTHER);
    ck_assert_int_eq(hdrs[1].id, SL_HDR_CONTENT_LENGTH);
    ck_assert_int_eq(hdrs[2].id, SL_HDR_SERVER);
    ck_assert_int_eq(hdrs[3].id, SL_HDR_DATE);
    free(buf);
}
END_TEST

/* ---- incremental parsing ------------------------------------------------------ */

static void check_every_prefix(const char *msg, size_t n, size_t head_len)
{
    struct sl_http_header whole_hdrs[NHDR], hdrs[NHDR];
    struct sl_http_request whole, req;
    char *wbuf = dup_exact(msg, n);
    int wrc = parse_req_n(wbuf, n, NULL, &whole, whole_hdrs, NHDR);
    ck_assert_int_eq(wrc, (int)head_len);
    for (size_t k = 0; k <= n; k++) {
        char *buf = dup_exact(msg, k);
        int rc = parse_req_n(buf, k, NULL, &req, hdrs, NHDR);
        if (k < head_len) {
            ck_assert_msg(rc == SL_HTTP_INCOMPLETE, "prefix %zu of %zu: rc %d", k, n, rc);
        } else {
            ck_assert_msg(rc == wrc, "prefix %zu: rc %d, want %d", k, rc, wrc);
            ck_assert_uint_eq(req.method - buf, whole.method - wbuf);
            ck_assert_uint_eq(req.method_len, whole.method_len);
            ck_assert_uint_eq(req.target - buf, whole.target - wbuf);
            ck_assert_uint_eq(req.target_len, whole.target_len);
            ck_assert_int_eq(req.version_minor, whole.version_minor);
            ck_assert_uint_eq(req.num_headers, whole.num_headers);
            for (size_t i = 0; i < req.num_headers; i++) {
                ck_assert_uint_eq(hdrs[i].name - buf, whole_hdrs[i].name - wbuf);
                ck_assert_uint_eq(hdrs[i].name_len, whole_hdrs[i].name_len);
                ck_assert_uint_eq(hdrs[i].value - buf, whole_hdrs[i].value - wbuf);
                ck_assert_uint_eq(hdrs[i].value_len, whole_hdrs[i].value_len);
                ck_assert_int_eq(hdrs[i].id, whole_hdrs[i].id);
            }
            ck_assert_int_eq(req.body_kind, whole.body_kind);
            ck_assert_uint_eq(req.content_length, whole.content_length);
            ck_assert_int_eq(req.keep_alive, whole.keep_alive);
            ck_assert_int_eq(req.expect_continue, whole.expect_continue);
            ck_assert_int_eq(req.has_upgrade, whole.has_upgrade);
            if (whole.host == NULL)
                ck_assert_ptr_null(req.host);
            else
                ck_assert_uint_eq(req.host - buf, whole.host - wbuf);
            ck_assert_uint_eq(req.host_len, whole.host_len);
        }
        free(buf);
    }
    free(wbuf);
}

START_TEST(test_incremental_request)
{
    static const char m1[] = "\r\nPOST /upload?x=1 HTTP/1.1\r\n"
                             "Host: api.example.com:8443\r\n"
                             "Content-Length: 5\r\n"
                             "Connection: keep-alive, Upgrade\r\n"
                             "Upgrade: h2c\r\n"
                             "Expect: 100-continue\r\n"
                             "X-Pad: \t padded \t \r\n"
                             "\r\nhello";
    check_every_prefix(m1, sizeof(m1) - 1, sizeof(m1) - 1 - 5);
    static const char m2[] = "GET / HTTP/1.0\nConnection: keep-alive\n\n";
    check_every_prefix(m2, sizeof(m2) - 1, sizeof(m2) - 1);
    static const char m3[] = "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "0\r\n\r\n";
    check_every_prefix(m3, sizeof(m3) - 1, sizeof(m3) - 1 - 5);
}
END_TEST

START_TEST(test_may_complete)
{
    static const char msg[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct sl_http_limits lim = {.max_request_line = 10, .max_header_bytes = 64};
    ck_assert(!sl_http_head_may_complete(msg, 0, 0, NULL));
    ck_assert(!sl_http_head_may_complete(msg, 0, 5, NULL));   /* "GET /" */
    ck_assert(sl_http_head_may_complete(msg, 5, 16, NULL));   /* first LF */
    ck_assert(!sl_http_head_may_complete(msg, 16, 20, NULL)); /* "Host" */
    ck_assert(sl_http_head_may_complete(msg, 20, 28, NULL));  /* the rest */
    ck_assert(!sl_http_head_may_complete(msg, 16, 16, NULL)); /* nothing new */
    ck_assert(sl_http_head_may_complete(msg, 20, 5, NULL));   /* a new buffer */
    ck_assert(!sl_http_head_may_complete(msg, 0, 10, &lim));  /* at the limit */
    ck_assert(sl_http_head_may_complete(msg, 0, 11, &lim));   /* past it: -414 */
    ck_assert(!sl_http_head_may_complete(msg, 20, 24, &lim)); /* line ended before */
    char big[100];
    memset(big, 'a', sizeof(big));
    ck_assert(sl_http_head_may_complete(big, 60, 65, &lim)); /* past the head limit */
    ck_assert(!sl_http_head_may_complete(big, 30, 60, &lim));
    /* when it says "no", the parser indeed stays INCOMPLETE */
    struct sl_http_header hdrs[4];
    struct sl_http_request req;
    char *buf = dup_exact(msg, 20);
    ck_assert_int_eq(parse_req_n(buf, 20, NULL, &req, hdrs, 4), SL_HTTP_INCOMPLETE);
    free(buf);
}
END_TEST

/* ---- limits -------------------------------------------------------------------- */

/* "GET /aaa...a HTTP/1.1" with a request-line of exactly line_len bytes */
static size_t make_request(char *out, size_t cap, size_t line_len, const char *rest)
{
    static const char pre[] = "GET /", post[] = " HTTP/1.1";
    size_t fixed = sizeof(pre) - 1 + sizeof(post) - 1;
    ck_assert(line_len >= fixed && line_len + strlen(rest) + 2 < cap);
    size_t n = 0;
    memcpy(out, pre, sizeof(pre) - 1);
    n += sizeof(pre) - 1;
    memset(out + n, 'a', line_len - fixed);
    n += line_len - fixed;
    memcpy(out + n, post, sizeof(post) - 1);
    n += sizeof(post) - 1;
    memcpy(out + n, "\r\n", 2);
    n += 2;
    memcpy(out + n, rest, strlen(rest));
    return n + strlen(rest);
}

START_TEST(test_limit_request_line)
{
    static char msg[20000];
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    const char *rest = "Host: a\r\n\r\n";

    /* explicit limit: exactly at it, and one over */
    struct sl_http_limits lim = {.max_request_line = 100};
    size_t n = make_request(msg, sizeof(msg), 100, rest);
    char *buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, &lim, &req, hdrs, NHDR), (int)n);
    ck_assert_uint_eq(req.target_len, 100 - 13); /* "/" and the a's */
    free(buf);
    n = make_request(msg, sizeof(msg), 101, rest);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, &lim, &req, hdrs, NHDR), -414);
    ck_assert_ptr_nonnull(req.error);
    free(buf);

    /* detected before the head completes: 100 bytes without a line end wait, 101 fail */
    buf = dup_exact(msg, 100);
    ck_assert_int_eq(parse_req_n(buf, 100, &lim, &req, hdrs, NHDR), SL_HTTP_INCOMPLETE);
    free(buf);
    buf = dup_exact(msg, 101);
    ck_assert_int_eq(parse_req_n(buf, 101, &lim, &req, hdrs, NHDR), -414);
    free(buf);

    /* a CR exactly at the limit position still ends a line of max_request_line bytes */
    n = make_request(msg, sizeof(msg), 100, rest);
    buf = dup_exact(msg, 101);
    ck_assert_int_eq(parse_req_n(buf, 101, &lim, &req, hdrs, NHDR), SL_HTTP_INCOMPLETE);
    free(buf);

    /* leading empty lines do not count toward the request-line */
    msg[0] = '\r';
    msg[1] = '\n';
    n = 2 + make_request(msg + 2, sizeof(msg) - 2, 100, rest);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, &lim, &req, hdrs, NHDR), (int)n);
    free(buf);

    /* defaults: NULL limits and a zeroed struct mean 8192 */
    struct sl_http_limits zero = {0};
    n = make_request(msg, sizeof(msg), SL_HTTP_DEFAULT_MAX_REQUEST_LINE, rest);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, NHDR), (int)n);
    ck_assert_int_eq(parse_req_n(buf, n, &zero, &req, hdrs, NHDR), (int)n);
    free(buf);
    n = make_request(msg, sizeof(msg), SL_HTTP_DEFAULT_MAX_REQUEST_LINE + 1, rest);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, NHDR), -414);
    ck_assert_int_eq(parse_req_n(buf, n, &zero, &req, hdrs, NHDR), -414);
    free(buf);

    /* the limit applies in every part of the line */
    lim.max_request_line = 8;
    static const char long_method[] = "ABCDEFGHI / HTTP/1.1\r\n";
    buf = dup_exact(long_method, 9);
    ck_assert_int_eq(parse_req_n(buf, 9, &lim, &req, hdrs, NHDR), -414);
    free(buf);
    lim.max_request_line = 16;
    static const char in_version[] = "GET /abc HTTP/1.1\r\nHost: a\r\n\r\n";
    buf = dup_exact(in_version, sizeof(in_version) - 1);
    ck_assert_int_eq(parse_req_n(buf, sizeof(in_version) - 1, &lim, &req, hdrs, NHDR), -414);
    free(buf);
    lim.max_request_line = 17;
    buf = dup_exact(in_version, sizeof(in_version) - 1);
    ck_assert_int_eq(parse_req_n(buf, sizeof(in_version) - 1, &lim, &req, hdrs, NHDR),
                     (int)sizeof(in_version) - 1);
    free(buf);
}
END_TEST

START_TEST(test_limit_header_bytes)
{
    struct sl_http_header hdrs[NHDR];
    struct sl_http_request req;
    static char msg[40000];
    /* a head of exactly 200 bytes: "GET / HTTP/1.1\r\nHost: a\r\nX: vvv...\r\n\r\n" */
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t fixed = sizeof(pre) - 1 + 4;
    struct sl_http_limits lim = {.max_header_bytes = 200};
    for (size_t total = 199; total <= 201; total++) {
        memcpy(msg, pre, sizeof(pre) - 1);
        memset(msg + sizeof(pre) - 1, 'v', total - fixed);
        memcpy(msg + total - 4, "\r\n\r\n", 4);
        char *buf = dup_exact(msg, total);
        int rc = parse_req_n(buf, total, &lim, &req, hdrs, NHDR);
        ck_assert_msg(rc == (total <= 200 ? (int)total : -431), "head of %zu bytes: rc %d", total,
                      rc);
        free(buf);
        /* while incomplete: 200 bytes wait, 201 bytes fail */
        memset(msg + sizeof(pre) - 1, 'v', 300);
        buf = dup_exact(msg, total);
        rc = parse_req_n(buf, total, &lim, &req, hdrs, NHDR);
        ck_assert_msg(rc == (total <= 200 ? SL_HTTP_INCOMPLETE : -431),
                      "incomplete head of %zu bytes: rc %d", total, rc);
        free(buf);
    }
    /* the final LF is the byte that crosses the limit */
    memcpy(msg, pre, sizeof(pre) - 1);
    memset(msg + sizeof(pre) - 1, 'v', 201 - fixed);
    memcpy(msg + 201 - 4, "\r\n\r\n", 4);
    char *buf = dup_exact(msg, 200);
    ck_assert_int_eq(parse_req_n(buf, 200, &lim, &req, hdrs, NHDR), SL_HTTP_INCOMPLETE);
    free(buf);
    buf = dup_exact(msg, 201);
    ck_assert_int_eq(parse_req_n(buf, 201, &lim, &req, hdrs, NHDR), -431);
    ck_assert_ptr_nonnull(req.error);
    free(buf);

    /* default 32768 */
    size_t total = SL_HTTP_DEFAULT_MAX_HEADER_BYTES;
    memcpy(msg, pre, sizeof(pre) - 1);
    memset(msg + sizeof(pre) - 1, 'v', total + 1 - fixed);
    memcpy(msg + total - 4, "\r\n\r\n", 4);
    buf = dup_exact(msg, total);
    ck_assert_int_eq(parse_req_n(buf, total, NULL, &req, hdrs, NHDR), (int)total);
    free(buf);
    memcpy(msg + total - 4, "vvvv\r\n\r\n", 8);
    buf = dup_exact(msg, total + 1);
    ck_assert_int_eq(parse_req_n(buf, total + 1, NULL, &req, hdrs, NHDR), -431);
    free(buf);
}
END_TEST

static size_t make_fields(char *msg, size_t cap, size_t nfields)
{
    size_t n = (size_t)snprintf(msg, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i < nfields; i++)
        n += (size_t)snprintf(msg + n, cap - n, "X-%zu: %zu\r\n", i, i);
    n += (size_t)snprintf(msg + n, cap - n, "\r\n");
    return n;
}

START_TEST(test_limit_header_count)
{
    static char msg[8000];
    static struct sl_http_header hdrs[300];
    struct sl_http_request req;
    struct sl_http_limits lim = {.max_headers = 10};

    size_t n = make_fields(msg, sizeof(msg), 10);
    char *buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, &lim, &req, hdrs, 300), (int)n);
    ck_assert_uint_eq(req.num_headers, 10);
    free(buf);
    n = make_fields(msg, sizeof(msg), 11);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, &lim, &req, hdrs, 300), -431);
    free(buf);

    /* the caller's array is a limit too */
    n = make_fields(msg, sizeof(msg), 5);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, 5), (int)n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, 4), -431);
    free(buf);

    /* no array at all: the first field is one too many */
    n = make_fields(msg, sizeof(msg), 1);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, NULL, 0), -431);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, NULL, 8), -431);
    free(buf);

    /*
     * Found by the fuzzer: the count limit used to fire at the first byte of
     * the extra field line, so sl_http_head_may_complete() (which only looks
     * for LFs and byte limits) could hide a -431. It is now taken at the LF
     * that ends the extra line.
     */
    static const char extra[] = "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
    lim.max_headers = 1;
    for (size_t k = 0; k <= sizeof(extra) - 1; k++) {
        buf = dup_exact(extra, k);
        int rc = parse_req_n(buf, k, &lim, &req, hdrs, 300);
        int want = k < 31 ? SL_HTTP_INCOMPLETE : -431; /* byte 30 is the LF after "X: 1" */
        ck_assert_msg(rc == want, "prefix %zu: rc %d, want %d", k, rc, want);
        free(buf);
    }
    ck_assert(!sl_http_head_may_complete(extra, 25, 30, &lim));
    ck_assert(sl_http_head_may_complete(extra, 25, 31, &lim));

    /* default 100 */
    n = make_fields(msg, sizeof(msg), SL_HTTP_DEFAULT_MAX_HEADERS);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, 300), (int)n);
    free(buf);
    n = make_fields(msg, sizeof(msg), SL_HTTP_DEFAULT_MAX_HEADERS + 1);
    buf = dup_exact(msg, n);
    ck_assert_int_eq(parse_req_n(buf, n, NULL, &req, hdrs, 300), -431);
    free(buf);
}
END_TEST

/* ---- responses ------------------------------------------------------------------ */

struct resp_case {
    const char *msg;
    bool head;
    int want; /* < 0: error; 0: whole message is the head */
    enum sl_http_body_kind kind;
    uint64_t content_length;
    bool keep_alive;
};

static const struct resp_case resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, 0, SL_BODY_LENGTH, 5, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false, 0, SL_BODY_LENGTH,
     5, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 0, SL_BODY_NONE, 5, true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 204 No Content\r\n\r\n", false, 0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false, 0, SL_BODY_NONE, 10, true},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, 0, SL_BODY_NONE, 10, true},
    {"HTTP/1.1 100 Continue\r\n\r\n", false, 0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", false, 0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false,
     0, SL_BODY_NONE, 0, true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, SL_BODY_CHUNKED, 0, true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", false, 0, SL_BODY_CHUNKED, 0,
     true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0,
     SL_BODY_CHUNKED, 0, true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0,
     SL_BODY_UNTIL_CLOSE, 0, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false, 0,
     SL_BODY_CHUNKED, 5, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0,
     SL_BODY_CHUNKED, 5, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE, 0, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE,
     0, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE, 0,
     false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE, 0, false},
    {"HTTP/1.1 200 OK\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE, 0, false},
    {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", false, 0, SL_BODY_LENGTH,
     2, false},
    {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, 0, SL_BODY_LENGTH, 2, false},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", false, 0,
     SL_BODY_LENGTH, 2, true},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false, 0, SL_BODY_UNTIL_CLOSE, 0, false},
    {"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", false, 0, SL_BODY_LENGTH, 1, true},
    {"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", false, 0, SL_BODY_LENGTH, 1, true},
    {"HTTP/1.1 599 Custom \t Reason \xc3\xa9\nContent-Length: 1\n\n", false, 0, SL_BODY_LENGTH, 1,
     true},
    {"HTTP/1.1 404 Not Found\r\nX_Under: ok\r\nContent-Length: 3\r\n\r\n", false, 0, SL_BODY_LENGTH,
     3, true},
    /* errors: always -502 */
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n", false, -502, 0,
     0, 0},
    {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 20 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 2000 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 099 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 20x OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1  200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.2 200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/2 200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/2.0 200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"http/1.1 200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"\r\nHTTP/1.1 200 OK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 O\001K\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\rX\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200\tOK\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nX(: a\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\n: a\r\n\r\n", false, -502, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n", false, -502, 0, 0, 0},
};

START_TEST(test_response)
{
    const struct resp_case *c = &resp_cases[_i];
    size_t n = strlen(c->msg);
    char *buf = dup_exact(c->msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_response resp;
    int rc = parse_resp_n(buf, n, c->head, NULL, &resp, hdrs, NHDR);
    int want = c->want < 0 ? c->want : (int)n;
    ck_assert_msg(rc == want, "case %d \"%s\": rc %d (%s), want %d", _i, c->msg, rc,
                  rc < 0 ? resp.error : "-", want);
    if (rc > 0) {
        ck_assert_msg(resp.body_kind == c->kind, "case %d: body_kind %d, want %d", _i,
                      resp.body_kind, c->kind);
        ck_assert_msg(resp.content_length == c->content_length, "case %d: content_length %llu", _i,
                      (unsigned long long)resp.content_length);
        ck_assert_msg(resp.keep_alive == c->keep_alive, "case %d: keep_alive %d", _i,
                      resp.keep_alive);
        /* read until close because of a coding: the coding goes with the body */
        bool coded = c->kind == SL_BODY_UNTIL_CLOSE && strstr(c->msg, "Transfer-Encoding") != NULL;
        ck_assert_msg(resp.transfer_coded == coded, "case %d: transfer_coded %d", _i,
                      resp.transfer_coded);
        ck_assert_ptr_null(resp.error);
    } else {
        ck_assert_ptr_nonnull(resp.error);
    }
    /* every prefix: INCOMPLETE until the verdict, then the verdict */
    for (size_t k = 0; k < n; k++) {
        char *pre = dup_exact(c->msg, k);
        int prc = parse_resp_n(pre, k, c->head, NULL, &resp, hdrs, NHDR);
        free(pre);
        ck_assert_msg(prc == SL_HTTP_INCOMPLETE || (prc < 0 && prc == want),
                      "case %d: prefix %zu gives %d", _i, k, prc);
    }
    free(buf);
}
END_TEST

START_TEST(test_response_fields)
{
    static const char msg[] = "HTTP/1.1 404 Not Found\r\nServer: up\r\nContent-Length: 2\r\n\r\nno";
    size_t n = sizeof(msg) - 1;
    char *buf = dup_exact(msg, n);
    struct sl_http_header hdrs[NHDR];
    struct sl_http_response resp;
    int rc = parse_resp_n(buf, n, false, NULL, &resp, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)n - 2);
    ck_assert_int_eq(resp.status, 404);
    ck_assert_int_eq(resp.version_minor, 1);
    ck_assert(span_is(resp.reason, resp.reason_len, "Not Found"));
    ck_assert_uint_eq(resp.num_headers, 2);
    ck_assert(span_is(hdrs[0].name, hdrs[0].name_len, "Server"));
    ck_assert(span_is(hdrs[0].value, hdrs[0].value_len, "up"));
    ck_assert_int_eq(hdrs[1].id, SL_HDR_CONTENT_LENGTH);
    free(buf);

    static const char noreason[] = "HTTP/1.0 503\r\n\r\n";
    buf = dup_exact(noreason, sizeof(noreason) - 1);
    rc = parse_resp_n(buf, sizeof(noreason) - 1, false, NULL, &resp, hdrs, NHDR);
    ck_assert_int_eq(rc, (int)sizeof(noreason) - 1);
    ck_assert_int_eq(resp.status, 503);
    ck_assert_int_eq(resp.version_minor, 0);
    ck_assert_uint_eq(resp.reason_len, 0);
    ck_assert_int_eq(resp.body_kind, SL_BODY_UNTIL_CLOSE);
    ck_assert(!resp.keep_alive);
    free(buf);
}
END_TEST

START_TEST(test_response_limits)
{
    static char msg[1000];
    static struct sl_http_header hdrs[300];
    struct sl_http_response resp;
    struct sl_http_limits lim = {.max_header_bytes = 100, .max_headers = 3};
    /* 3 fields allowed, a 4th is -502 */
    static const char three[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n";
    char *buf = dup_exact(three, sizeof(three) - 1);
    ck_assert_int_eq(parse_resp_n(buf, sizeof(three) - 1, false, &lim, &resp, hdrs, 300),
                     (int)sizeof(three) - 1);
    free(buf);
    static const char four[] =
        "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n\r\n";
    buf = dup_exact(four, sizeof(four) - 1);
    ck_assert_int_eq(parse_resp_n(buf, sizeof(four) - 1, false, &lim, &resp, hdrs, 300), -502);
    free(buf);
    /* head bytes: exactly 100 accepted, 101 refused */
    for (size_t total = 100; total <= 101; total++) {
        size_t n = (size_t)snprintf(msg, sizeof(msg), "HTTP/1.1 200 OK\r\nX: ");
        memset(msg + n, 'v', total - n - 4);
        memcpy(msg + total - 4, "\r\n\r\n", 4);
        buf = dup_exact(msg, total);
        int rc = parse_resp_n(buf, total, false, &lim, &resp, hdrs, 300);
        ck_assert_msg(rc == (total == 100 ? 100 : -502), "response head %zu: rc %d", total, rc);
        free(buf);
    }
}
END_TEST

/* ---- chunked scanner --------------------------------------------------------- */

/* 4 + 5 + 14 data bytes, extensions and two trailer fields */
static const char chunked_body[] = "4;foo=bar\r\nWiki\r\n"
                                   "5;a ; b=\"q r\"\r\npedia\r\n"
                                   "e\r\n in\r\n\r\nchunks.\r\n"
                                   "000;last\r\n"
                                   "Expires: never\r\n"
                                   "X-Trailer:\tv 1 \r\n"
                                   "\r\n";
#define CHUNKED_DATA 23

START_TEST(test_chunked_whole)
{
    size_t n = sizeof(chunked_body) - 1;
    char *buf = dup_exact(chunked_body, n);
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    ck_assert(!s.done);
    ck_assert_int_eq(sl_chunked_scan(&s, buf, n), (long)n);
    ck_assert(s.done);
    ck_assert_uint_eq(s.body_bytes, CHUNKED_DATA);
    ck_assert_ptr_null(s.error);
    /* after the end, nothing more is taken */
    ck_assert_int_eq(sl_chunked_scan(&s, buf, n), 0);
    free(buf);
}
END_TEST

START_TEST(test_chunked_every_split)
{
    static const char next[] = "GET /next HTTP/1.1\r\n";
    size_t body = sizeof(chunked_body) - 1;
    size_t n = body + sizeof(next) - 1;
    char *all = malloc(n);
    memcpy(all, chunked_body, body);
    memcpy(all + body, next, sizeof(next) - 1);
    for (size_t split = 0; split <= n; split++) {
        char *a = dup_exact(all, split);
        char *b = dup_exact(all + split, n - split);
        struct sl_chunked_scanner s;
        sl_chunked_init(&s);
        long r1 = sl_chunked_scan(&s, a, split);
        ck_assert_msg(r1 >= 0, "split %zu: first piece error %s", split, s.error);
        long r2 = 0;
        if (!s.done) {
            ck_assert_msg((size_t)r1 == split, "split %zu: first piece took %ld", split, r1);
            r2 = sl_chunked_scan(&s, b, n - split);
        }
        ck_assert_msg(r2 >= 0, "split %zu: error %s", split, s.error);
        ck_assert_msg((size_t)(r1 + r2) == body, "split %zu: consumed %ld + %ld, want %zu", split,
                      r1, r2, body);
        ck_assert(s.done);
        ck_assert_uint_eq(s.body_bytes, CHUNKED_DATA);
        free(a);
        free(b);
    }
    /* byte by byte */
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    size_t used = 0;
    for (size_t i = 0; i < n && !s.done; i++) {
        char *one = dup_exact(all + i, 1);
        long r = sl_chunked_scan(&s, one, 1);
        free(one);
        ck_assert_msg(r == 1, "byte %zu: %ld (%s)", i, r, s.error);
        used++;
    }
    ck_assert(s.done);
    ck_assert_uint_eq(used, body);
    ck_assert_uint_eq(s.body_bytes, CHUNKED_DATA);
    free(all);
}
END_TEST

START_TEST(test_chunked_sizes)
{
    struct sl_chunked_scanner s;
    /* hex in both cases */
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "aB\r\n", 4), 4);
    ck_assert_uint_eq(s.chunk_remaining, 0xab);
    /* 16 digits with leading zeros are fine, 17 are not */
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "000000000000000A\r\n", 18), 18);
    ck_assert_uint_eq(s.chunk_remaining, 10);
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "0000000000000000A\r\n", 19), -1);
    ck_assert_ptr_nonnull(s.error);
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "FFFFFFFFFFFFFFFF\r\n", 18), 18);
    ck_assert_uint_eq(s.chunk_remaining, UINT64_MAX);
    ck_assert_int_eq(sl_chunked_scan(&s, "abc", 3), 3);
    ck_assert_uint_eq(s.chunk_remaining, UINT64_MAX - 3);
    ck_assert_uint_eq(s.body_bytes, 3);
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "10000000000000000\r\n", 19), -1);
    /* body_bytes adds up across chunks and calls */
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "3\r\nab", 5), 5);
    ck_assert_uint_eq(s.body_bytes, 2);
    ck_assert_uint_eq(s.chunk_remaining, 1);
    ck_assert_int_eq(sl_chunked_scan(&s, "c\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nX", 31), 30);
    ck_assert_uint_eq(s.body_bytes, 19);
    ck_assert(s.done);
    /* empty input is fine */
    sl_chunked_init(&s);
    ck_assert_int_eq(sl_chunked_scan(&s, "", 0), 0);
    ck_assert(!s.done);
}
END_TEST

START_TEST(test_chunked_limits)
{
    static char buf[20000];
    struct sl_chunked_scanner s;
    /* size line of exactly SL_CHUNK_LINE_MAX bytes, then one more */
    for (size_t line = SL_CHUNK_LINE_MAX; line <= SL_CHUNK_LINE_MAX + 1; line++) {
        memcpy(buf, "1;x=", 4);
        memset(buf + 4, 'y', line - 4);
        memcpy(buf + line, "\r\nz\r\n0\r\n\r\n", 10);
        char *b = dup_exact(buf, line + 10);
        sl_chunked_init(&s);
        long r = sl_chunked_scan(&s, b, line + 10);
        ck_assert_msg(r == (line == SL_CHUNK_LINE_MAX ? (long)line + 10 : -1), "size line %zu: %ld",
                      line, r);
        free(b);
    }
    /* trailer section of exactly SL_CHUNK_TRAILER_MAX bytes (final CRLF included), then one more */
    for (size_t tr = SL_CHUNK_TRAILER_MAX; tr <= SL_CHUNK_TRAILER_MAX + 1; tr++) {
        memcpy(buf, "0\r\nX: ", 6);
        memset(buf + 6, 'v', tr - 3 - 4);
        memcpy(buf + 3 + tr - 4, "\r\n\r\n", 4);
        char *b = dup_exact(buf, 3 + tr);
        sl_chunked_init(&s);
        long r = sl_chunked_scan(&s, b, 3 + tr);
        ck_assert_msg(r == (tr == SL_CHUNK_TRAILER_MAX ? (long)(3 + tr) : -1),
                      "trailer section %zu: %ld (%s)", tr, r, s.error);
        free(b);
    }
}
END_TEST

static const struct {
    const char *name;
    const char *input;
    size_t len;
} chunked_errors[] = {
#define CE(name, lit)                                                                              \
    {                                                                                              \
        name, lit, sizeof(lit) - 1                                                                 \
    }
    CE("sign", "+5\r\nhello\r\n0\r\n\r\n"),
    CE("sign", "-5\r\nhello\r\n0\r\n\r\n"),
    CE("0x", "0x5\r\nhello\r\n0\r\n\r\n"),
    CE("underscore", "1_0\r\n"),
    CE("underscore", "_5\r\n"),
    CE("space before", " 5\r\nhello\r\n0\r\n\r\n"),
    CE("space after", "5 \r\nhello\r\n0\r\n\r\n"),
    CE("tab after", "5\t\r\nhello\r\n0\r\n\r\n"),
    CE("empty size", "\r\nhello\r\n0\r\n\r\n"),
    CE("non-hex", "g\r\n"),
    CE("non-hex", "5g\r\n"),
    CE("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
    CE("bare LF size", "5\nhello\r\n0\r\n\r\n"),
    CE("bare CR size", "5\rhello\r\n0\r\n\r\n"),
    CE("bare LF ext", "5;a=b\nhello\r\n0\r\n\r\n"),
    CE("bare CR ext", "5;a=b\rhello\r\n0\r\n\r\n"),
    CE("control in ext", "5;a=\001\r\nhello\r\n0\r\n\r\n"),
    CE("NUL in ext", "5;a\000\r\nhello\r\n0\r\n\r\n"),
    CE("DEL in ext", "5;\x7f\r\nhello\r\n0\r\n\r\n"),
    CE("obs-text in ext", "5;a=\xc3\xa9\r\nhello\r\n0\r\n\r\n"),
    CE("data too long", "5\r\nhelloX\r\n0\r\n\r\n"),
    CE("bare LF data", "5\r\nhello\n0\r\n\r\n"),
    CE("bare CR data", "5\r\nhello\r0\r\n\r\n"),
    CE("CR CR data", "5\r\nhello\r\r\n"),
    CE("bare LF last", "0\n\r\n"),
    CE("bare LF final", "0\r\n\n"),
    CE("bare CR final", "0\r\n\r\r"),
    CE("bare CR final", "0\r\n\rX"),
    CE("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n"),
    CE("trailer obs-fold", "0\r\n\tb\r\n\r\n"),
    CE("trailer ws colon", "0\r\nX : a\r\n\r\n"),
    CE("trailer no colon", "0\r\nX\r\n\r\n"),
    CE("trailer empty name", "0\r\n: a\r\n\r\n"),
    CE("trailer name char", "0\r\nX(: a\r\n\r\n"),
    CE("trailer bare LF", "0\r\nX: a\n\r\n"),
    CE("trailer bare CR", "0\r\nX: a\rb\r\n\r\n"),
    CE("trailer NUL", "0\r\nX: a\000\r\n\r\n"),
    CE("trailer control", "0\r\nX: a\001\r\n\r\n"),
    CE("trailer DEL", "0\r\nX: a\x7f\r\n\r\n"),
#undef CE
};

/*
 * chunk-ext, RFC 9112 section 7.1.1, one row per production, accepted and
 * refused:
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-name = token; chunk-ext-val = token / quoted-string
 *   quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE  (RFC 9110 section 5.6.4)
 *   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
 *   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ); BWS = *( SP / HTAB )
 */
static const struct {
    const char *ext;
    size_t len;
    bool ok;
} ext_cases[] = {
#define EXT(lit, ok)                                                                               \
    {                                                                                              \
        lit, sizeof(lit) - 1, ok                                                                   \
    }
    /* no extension; name only; name = token; several */
    EXT("", true),
    EXT(";a", true),
    EXT(";a=b", true),
    EXT(";a;b", true),
    EXT(";a=1;b=2;c", true),
    EXT(";!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~", true),
    /* BWS before ';', after ';', around '=' (SP and HTAB) */
    EXT(" ;a", true),
    EXT("\t;a", true),
    EXT(" \t ;a", true),
    EXT("; a", true),
    EXT(";\ta", true),
    EXT(";a =b", true),
    EXT(";a= b", true),
    EXT(";a \t= \tb", true),
    EXT(";a=b ;c", true),
    EXT(";a ;b", true),
    EXT(";a=\"b\" ;c", true),
    /* quoted-string: qdtext, quoted-pair, obs-text */
    EXT(";a=\"\"", true),
    EXT(";a=\"b c\"", true),
    EXT(";a=\"\tb\"", true),
    EXT(";a=\"!#[]~/:,;=\"", true),
    EXT(";a=\"\\\"\"", true),
    EXT(";a=\"\\\\\"", true),
    EXT(";a=\"\\b\\ \\\t\"", true),
    EXT(";a=\"\xc3\xa9\"", true),
    EXT(";a=\"\\\x80\"", true),
    EXT(";a=\"x\";b=\"y\"", true),
    /* ';' with no name */
    EXT(";", false),
    EXT("; ", false),
    EXT(";;a", false),
    EXT(";a;", false),
    EXT(";a;;b", false),
    EXT(";=b", false),
    EXT("; =b", false),
    /* a name with a byte outside tchar */
    EXT(";a(b", false),
    EXT(";a/b", false),
    EXT(";a@b", false),
    EXT(";a,b", false),
    EXT(";a:b", false),
    EXT(";a\"b\"", false),
    EXT(";\"a\"", false),
    EXT(";a[b]", false),
    EXT(";a\\b", false),
    EXT(";\xc3\xa9", false),
    EXT(";a b", false),
    /* '=' with no value, or a second '=' */
    EXT(";a=", false),
    EXT(";a= ", false),
    EXT(";a=;b", false),
    EXT(";a==b", false),
    EXT(";a=b=c", false),
    /* a token value with a byte outside tchar */
    EXT(";a=b/c", false),
    EXT(";a=b\"c\"", false),
    EXT(";a=b c", false),
    EXT(";a=b,c", false),
    EXT(";a=\xc3\xa9", false),
    EXT(";a=(b)", false),
    /* whitespace not followed by ';' or '=' (trailing BWS) */
    EXT(" ", false),
    EXT("\t", false),
    EXT(";a ", false),
    EXT(";a=b ", false),
    EXT(";a=b\t", false),
    EXT(";a=\"b\" ", false),
    EXT(" a", false),
    /* quoted-string not closed, bad bytes after it, bad quoted-pair, CTL inside */
    EXT(";a=\"b", false),
    EXT(";a=\"b\\\"", false),
    EXT(";a=\"b\"c", false),
    EXT(";a=\"b\"\"c\"", false),
    EXT(";a=\"b\\\x01\"", false),
    EXT(";a=\"b\\\x7f\"", false),
    EXT(";a=\"b\x01\"", false),
    EXT(";a=\"b\x7f\"", false),
    EXT(";a=\"b\x00\"", false),
    EXT(";a=\"\n\"", false),
    EXT(";a=\"\r\"", false),
    /* control bytes anywhere else */
    EXT(";a\x01", false),
    EXT(";a=b\x00", false),
    EXT(";\x7f", false),
    EXT("\x0b;a", false),
    EXT("; \x0c a", false),
    /* other separators where ';' belongs */
    EXT(",a", false),
    EXT("=a", false),
    EXT(":a", false),
#undef EXT
};

/* Scan body in every split and say whether it was accepted whole. */
static bool chunked_accepts_every_split(const char *body, size_t n, uint64_t want_data)
{
    int verdict = -1;
    for (size_t split = 0; split <= n; split++) {
        struct sl_chunked_scanner s;
        sl_chunked_init(&s);
        char *a = dup_exact(body, split);
        char *b = dup_exact(body + split, n - split);
        long r1 = sl_chunked_scan(&s, a, split);
        long r2 = r1 < 0 || s.done ? 0 : sl_chunked_scan(&s, b, n - split);
        free(a);
        free(b);
        bool ok =
            r1 >= 0 && r2 >= 0 && (size_t)(r1 + r2) == n && s.done && s.body_bytes == want_data;
        if (!ok)
            ck_assert_msg(r1 < 0 || r2 < 0, "split %zu: neither accepted nor refused", split);
        if (verdict >= 0)
            ck_assert_msg(verdict == ok, "split %zu changes the verdict", split);
        verdict = ok;
    }
    return verdict == 1;
}

START_TEST(test_chunk_ext)
{
    char body[256];
    /* the extension on a data chunk and on the last chunk */
    for (int last = 0; last <= 1; last++) {
        size_t n = 0;
        if (!last) {
            memcpy(body, "5", 1);
            n = 1;
        } else {
            memcpy(body, "5\r\nhello\r\n0", 11);
            n = 11;
        }
        memcpy(body + n, ext_cases[_i].ext, ext_cases[_i].len);
        n += ext_cases[_i].len;
        const char *rest = last ? "\r\n\r\n" : "\r\nhello\r\n0\r\n\r\n";
        memcpy(body + n, rest, strlen(rest));
        n += strlen(rest);
        bool ok = chunked_accepts_every_split(body, n, 5);
        ck_assert_msg(ok == ext_cases[_i].ok, "case %d \"%.*s\" (%s chunk): %s", _i,
                      (int)ext_cases[_i].len, ext_cases[_i].ext, last ? "last" : "data",
                      ok ? "accepted" : "refused");
    }
}
END_TEST

START_TEST(test_chunked_error)
{
    const char *in = chunked_errors[_i].input;
    size_t n = chunked_errors[_i].len;
    char *buf = dup_exact(in, n);
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    long r = sl_chunked_scan(&s, buf, n);
    ck_assert_msg(r == -1, "case %d (%s): got %ld", _i, chunked_errors[_i].name, r);
    ck_assert_ptr_nonnull(s.error);
    ck_assert(!s.done);
    /* an error is sticky */
    ck_assert_int_eq(sl_chunked_scan(&s, "0\r\n\r\n", 5), -1);
    /* and independent of the split */
    for (size_t split = 0; split <= n; split++) {
        sl_chunked_init(&s);
        char *a = dup_exact(in, split);
        char *b = dup_exact(in + split, n - split);
        long r1 = sl_chunked_scan(&s, a, split);
        long r2 = r1 < 0 ? -1 : sl_chunked_scan(&s, b, n - split);
        ck_assert_msg(r2 == -1, "case %d (%s): split %zu gives %ld/%ld", _i,
                      chunked_errors[_i].name, split, r1, r2);
        free(a);
        free(b);
    }
    free(buf);
}
END_TEST

/* ---- helpers -------------------------------------------------------------------- */

START_TEST(test_list_helpers)
{
    static const char v[] = " , keep-alive ,,Upgrade\t,  x-y ,";
    size_t n = sizeof(v) - 1;
    size_t pos = 0;
    const char *t;
    size_t tl;
    ck_assert(sl_http_list_next(v, n, &pos, &t, &tl));
    ck_assert(span_is(t, tl, "keep-alive"));
    ck_assert(sl_http_list_next(v, n, &pos, &t, &tl));
    ck_assert(span_is(t, tl, "Upgrade"));
    ck_assert(sl_http_list_next(v, n, &pos, &t, &tl));
    ck_assert(span_is(t, tl, "x-y"));
    ck_assert(!sl_http_list_next(v, n, &pos, &t, &tl));
    ck_assert(!sl_http_list_next(v, n, &pos, &t, &tl));
    pos = 0;
    ck_assert(!sl_http_list_next("", 0, &pos, &t, &tl));
    pos = 0;
    ck_assert(!sl_http_list_next(" ,\t, ", 5, &pos, &t, &tl));
    pos = 0;
    ck_assert(sl_http_list_next("a b", 3, &pos, &t, &tl));
    ck_assert(span_is(t, tl, "a b"));

    ck_assert(sl_http_list_has_token(v, n, "upgrade", 7));
    ck_assert(sl_http_list_has_token(v, n, "KEEP-ALIVE", 10));
    ck_assert(sl_http_list_has_token(v, n, "x-y", 3));
    ck_assert(!sl_http_list_has_token(v, n, "keep", 4));
    ck_assert(!sl_http_list_has_token(v, n, "close", 5));
    ck_assert(!sl_http_list_has_token("", 0, "close", 5));
    ck_assert(sl_http_list_has_token("close", 5, "close", 5));
    ck_assert(!sl_http_list_has_token("closed", 6, "close", 5));
}
END_TEST

START_TEST(test_name_equals)
{
    ck_assert(sl_http_name_equals("Content-Length", 14, "content-length", 14));
    ck_assert(sl_http_name_equals("HOST", 4, "host", 4));
    ck_assert(!sl_http_name_equals("Host", 4, "Hosts", 5));
    ck_assert(!sl_http_name_equals("Host", 4, "Hist", 4));
    ck_assert(sl_http_name_equals("", 0, "", 0));
    /* only ASCII letters fold: '@' (0x40) is not '`' (0x60), 0xC9 is not 0xE9 */
    ck_assert(!sl_http_name_equals("@", 1, "`", 1));
    ck_assert(!sl_http_name_equals("[", 1, "{", 1));
    ck_assert(!sl_http_name_equals("\xc9", 1, "\xe9", 1));
}
END_TEST

START_TEST(test_reason)
{
    ck_assert_str_eq(sl_http_reason(200), "OK");
    ck_assert_str_eq(sl_http_reason(100), "Continue");
    ck_assert_str_eq(sl_http_reason(101), "Switching Protocols");
    ck_assert_str_eq(sl_http_reason(204), "No Content");
    ck_assert_str_eq(sl_http_reason(206), "Partial Content");
    ck_assert_str_eq(sl_http_reason(304), "Not Modified");
    ck_assert_str_eq(sl_http_reason(308), "Permanent Redirect");
    ck_assert_str_eq(sl_http_reason(400), "Bad Request");
    ck_assert_str_eq(sl_http_reason(413), "Content Too Large");
    ck_assert_str_eq(sl_http_reason(414), "URI Too Long");
    ck_assert_str_eq(sl_http_reason(417), "Expectation Failed");
    ck_assert_str_eq(sl_http_reason(421), "Misdirected Request");
    ck_assert_str_eq(sl_http_reason(429), "Too Many Requests");
    ck_assert_str_eq(sl_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(sl_http_reason(451), "Unavailable For Legal Reasons");
    ck_assert_str_eq(sl_http_reason(502), "Bad Gateway");
    ck_assert_str_eq(sl_http_reason(505), "HTTP Version Not Supported");
    ck_assert_str_eq(sl_http_reason(299), "Unknown");
    ck_assert_str_eq(sl_http_reason(0), "Unknown");
    ck_assert_str_eq(sl_http_reason(-1), "Unknown");
    static const int known[] = {100, 101, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303,
                                304, 305, 306, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407,
                                408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 425,
                                426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        ck_assert_msg(strcmp(sl_http_reason(known[i]), "Unknown") != 0, "%d", known[i]);
}
END_TEST

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *make_suite(void)
{
    Suite *s = suite_create("http1");

    TCase *tc = tcase_create("request-reject");
    tcase_add_loop_test(tc, test_reject, 0, COUNT(reject_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("request");
    tcase_add_test(tc, test_simple_get);
    tcase_add_test(tc, test_post_content_length);
    tcase_add_test(tc, test_content_length_values);
    tcase_add_test(tc, test_chunked_request);
    tcase_add_test(tc, test_pipelined);
    tcase_add_test(tc, test_keep_alive);
    tcase_add_test(tc, test_expect);
    tcase_add_test(tc, test_leading_empty_lines);
    tcase_add_test(tc, test_bare_lf);
    tcase_add_test(tc, test_values_and_names);
    tcase_add_test(tc, test_host_values);
    tcase_add_loop_test(tc, test_host_parser, 0, COUNT(host_cases));
    tcase_add_test(tc, test_absolute_form);
    tcase_add_test(tc, test_header_ids);
    tcase_add_test(tc, test_header_ids_in_response);
    tcase_add_test(tc, test_incremental_request);
    tcase_add_test(tc, test_may_complete);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, test_limit_request_line);
    tcase_add_test(tc, test_limit_header_bytes);
    tcase_add_test(tc, test_limit_header_count);
    suite_add_tcase(s, tc);

    tc = tcase_create("response");
    tcase_add_loop_test(tc, test_response, 0, COUNT(resp_cases));
    tcase_add_test(tc, test_response_fields);
    tcase_add_test(tc, test_response_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("chunked");
    tcase_add_test(tc, test_chunked_whole);
    tcase_add_test(tc, test_chunked_every_split);
    tcase_add_test(tc, test_chunked_sizes);
    tcase_add_test(tc, test_chunked_limits);
    tcase_add_loop_test(tc, test_chunked_error, 0, COUNT(chunked_errors));
    tcase_add_loop_test(tc, test_chunk_ext, 0, COUNT(ext_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_test(tc, test_list_helpers);
    tcase_add_test(tc, test_name_equals);
    tcase_add_test(tc, test_reason);
    suite_add_tcase(s, tc);

    return s;
}

SL_UNIT_MAIN
