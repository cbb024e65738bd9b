/*
 * libFuzzer harness for the Host / authority parser, sl_http_parse_host()
 * (core/http1.c; RFC 9110 section 7.2, RFC 3986 section 3.2.2).
 *
 * The input is the Host value. It is parsed from a heap copy of exactly
 * its bytes (so ASan sees any read past the end) and the harness abort()s
 * when one of these breaks:
 *  - an accepted value splits into name [":" port] that covers the input
 *    exactly, the port is all digits, and the name is never empty and holds
 *    no userinfo;
 *  - the kind agrees with an independent oracle, glibc's inet_pton():
 *    SL_HOST_IPV4 exactly when inet_pton(AF_INET) takes the name (glibc
 *    takes dotted quads without leading zeros, RFC 3986's dec-octet), and
 *    for "[...]" without a 'v', acceptance as SL_HOST_IPV6 exactly when
 *    inet_pton(AF_INET6) takes what is inside the brackets (it is the RFC
 *    4291 text form, the same grammar as IPv6address);
 *  - a reg-name holds only unreserved, sub-delims and complete %XX;
 *  - as a Host field of a request, the value gets the same verdict from
 *    sl_http_parse_request(), and the request's authority is the value.
 */
#include "fuzz_common.h"

#include <arpa/inet.h>

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* unreserved / sub-delims, written out again rather than shared with the parser */
static bool reg_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           (c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL);
}

/* inet_pton() needs a NUL-terminated string; anything with a NUL inside is not an address */
static bool pton(int af, const char *s, size_t n)
{
    char tmp[64];
    unsigned char out[16];
    if (n >= sizeof tmp || memchr(s, '\0', n) != NULL)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(af, tmp, out) == 1;
}

static void check_request(const char *s, size_t n, bool accepted)
{
    /* only values that can stand in a field line: no CR, LF or NUL, no OWS at the ends */
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return;
    }
    if (n > 0 && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        return;
    static const char pre[] = "GET / HTTP/1.1\r\nHost: ", post[] = "\r\n\r\n";
    size_t len = sizeof pre - 1 + n + sizeof post - 1;
    char *msg = malloc(len);
    if (msg == NULL)
        abort();
    memcpy(msg, pre, sizeof pre - 1);
    memcpy(msg + sizeof pre - 1, s, n);
    memcpy(msg + sizeof pre - 1 + n, post, sizeof post - 1);
    struct sl_http_header hdrs[4];
    struct sl_http_request req = {.headers = hdrs, .header_capacity = 4};
    int rc = sl_http_parse_request(msg, len, NULL, &req);
    if (accepted) {
        CHECK(rc == (int)len);
        CHECK(req.authority == msg + sizeof pre - 1 && req.authority_len == n);
    } else {
        CHECK(rc == -400 && req.error != NULL);
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    if (s == NULL)
        abort();
    if (size)
        memcpy(s, data, size);
    struct sl_http_host h;
    const char *why = sl_http_parse_host(s, size, &h);
    bool accepted = why == NULL;
    if (!accepted)
        CHECK(why[0] != '\0');

    bool bracketed = size >= 2 && s[0] == '[';
    const char *close = bracketed ? memchr(s, ']', size) : NULL;
    if (accepted) {
        CHECK(h.name == s && h.name_len > 0 && h.name_len <= size);
        CHECK(memchr(s, '@', size) == NULL);
        if (h.port == NULL) {
            CHECK(h.name_len == size);
        } else {
            CHECK(h.name_len < size && s[h.name_len] == ':' && h.port == s + h.name_len + 1 &&
                  h.port_len == size - h.name_len - 1);
            for (size_t i = 0; i < h.port_len; i++)
                CHECK(is_digit((unsigned char)h.port[i]));
        }
        switch (h.kind) {
        case SL_HOST_IPV4:
            CHECK(pton(AF_INET, h.name, h.name_len));
            break;
        case SL_HOST_REG_NAME:
            CHECK(!pton(AF_INET, h.name, h.name_len));
            for (size_t i = 0; i < h.name_len; i++) {
                unsigned char c = (unsigned char)h.name[i];
                if (c == '%') {
                    CHECK(i + 2 < h.name_len && is_hex((unsigned char)h.name[i + 1]) &&
                          is_hex((unsigned char)h.name[i + 2]));
                    i += 2;
                } else {
                    CHECK(reg_name_char(c));
                }
            }
            break;
        case SL_HOST_IPV6:
            CHECK(h.name[0] == '[' && h.name[h.name_len - 1] == ']');
            CHECK(pton(AF_INET6, h.name + 1, h.name_len - 2));
            break;
        case SL_HOST_IPVFUTURE:
            CHECK(h.name[0] == '[' && h.name[h.name_len - 1] == ']');
            CHECK(h.name[1] == 'v' || h.name[1] == 'V');
            break;
        default:
            CHECK(!"unknown host kind");
        }
    }
    /* the other direction: whatever inet_pton() takes as an IPv6 literal is accepted */
    if (close != NULL && size > 2 && s[1] != 'v' && s[1] != 'V' &&
        pton(AF_INET6, s + 1, (size_t)(close - s) - 1)) {
        size_t rest = size - (size_t)(close - s) - 1;
        bool port_ok = rest == 0 || close[1] == ':';
        for (size_t i = 2; port_ok && i <= rest; i++)
            port_ok = is_digit((unsigned char)close[i]);
        if (port_ok)
            CHECK(accepted && h.kind == SL_HOST_IPV6);
    }
    check_request(s, size, accepted);
    free(s);
    return 0;
}
