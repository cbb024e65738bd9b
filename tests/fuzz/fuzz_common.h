/*
 * What the HTTP/1.1 codec harnesses share (fuzz_http1, fuzz_response,
 * fuzz_chunked, fuzz_host): the invariant check, heap copies of exactly the bytes a
 * parser may read (so ASan sees a read past the end), the grammar's byte
 * classes and the header array invariants.
 */
#ifndef SL_FUZZ_COMMON_H
#define SL_FUZZ_COMMON_H

#include "http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NHDR 64

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline char *copy(const uint8_t *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (b == NULL)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

static inline bool inside(const char *p, size_t n, const char *base, size_t len)
{
    return p != NULL && p >= base && n <= len && (size_t)(p - base) <= len - n;
}

static inline bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static inline bool is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static inline bool lower_eq(const char *s, size_t n, const char *lit)
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
static inline void check_headers(const struct sl_http_header *h, size_t n, const char *buf,
                                 size_t head)
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

/* Prefixes to try: all of them for short inputs, a spread plus the split seed otherwise. */
static inline bool want_prefix(size_t k, size_t n, size_t seed)
{
    if (n <= 300)
        return true;
    return k % (n / 64 + 1) == 0 || k == seed % (n + 1) || k + 3 >= n;
}

/* The chunked body after an accepted head, scanned as the proxy scans it,
 * from a heap copy of exactly those bytes: it stays within them, counts no
 * more data than it took, and takes everything unless the body ended. */
static inline void check_chunked_after_head(const uint8_t *body, size_t len)
{
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    char *copied = copy(body, len);
    long used = sl_chunked_scan(&s, copied, len);
    CHECK(used == -1 || (used >= 0 && (size_t)used <= len));
    CHECK(used < 0 || s.body_bytes <= (uint64_t)used);
    CHECK(used < 0 || s.done || (size_t)used == len);
    free(copied);
}

#endif
