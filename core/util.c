#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* xoshiro-style generator state; per thread so ids need no lock. */
static _Thread_local uint64_t request_id_state[2];
static _Thread_local bool request_id_seeded;

static uint64_t next_random(void)
{
    uint64_t s1 = request_id_state[0];
    const uint64_t s0 = request_id_state[1];
    const uint64_t result = s0 + s1;
    request_id_state[0] = s0;
    s1 ^= s1 << 23;
    request_id_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return result;
}

static void seed_random(void)
{
    if (!request_id_seeded) {
        if (getrandom(request_id_state, sizeof request_id_state, 0) != sizeof request_id_state) {
            request_id_state[0] = sl_now_us() ^ (uint64_t)(uintptr_t)&request_id_state;
            request_id_state[1] = 0x9e3779b97f4a7c15ULL ^ request_id_state[0];
        }
        if ((request_id_state[0] | request_id_state[1]) == 0)
            request_id_state[1] = 1;
        request_id_seeded = true;
    }
}

uint64_t sl_random64(void)
{
    seed_random();
    return next_random();
}

void sl_request_id(char out[SL_REQUEST_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    seed_random();
    uint64_t words[2] = {next_random(), next_random()};
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 16; i++)
            out[w * 16 + i] = hex[(words[w] >> (60 - 4 * i)) & 0xf];
    out[SL_REQUEST_ID_LEN] = '\0';
}

uint64_t sl_now_ms(void)
{
    return sl_now_us() / 1000;
}

uint64_t sl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void sl_sockaddr_text(const struct sockaddr *sa, char *out, size_t out_size, uint16_t *port)
{
    out[0] = '\0';
    if (port)
        *port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)out_size);
        if (port)
            *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)out_size);
        if (port)
            *port = ntohs(in6->sin6_port);
    } else {
        snprintf(out, out_size, "unix");
    }
}

bool sl_is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

long sl_json_escape(const char *in, size_t in_len, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < in_len; i++) {
        unsigned char c = (unsigned char)in[i];
        char esc[7];
        size_t n;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (o + n + 1 > out_size)
            return -1;
        memcpy(out + o, esc, n);
        o += n;
    }
    if (o + 1 > out_size)
        return -1;
    out[o] = '\0';
    return (long)o;
}
