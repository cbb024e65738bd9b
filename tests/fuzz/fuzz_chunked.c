/*
 * libFuzzer harness for the chunked body scanner (core/http1.c), fed in
 * random splits: the proxy sees a chunked body in whatever pieces the
 * network delivers, and a scanner whose verdict depends on the cut points
 * is a smuggling vector (two readers, two bodies).
 *
 * Input: byte 0 low 3 bits = k, the number of cut points the fuzzer
 * chooses; then k 16-bit cut offsets; then 2 bytes seeding a PRNG for
 * further random splits; the rest is the body. The harness abort()s when:
 *  - any split (none, the fuzzer's cuts, PRNG pieces of 1-17 bytes, one
 *    byte at a time) gives a different verdict: bytes consumed, done,
 *    body_bytes, error or not;
 *  - the scanner eats bytes after the body, takes less than it was given
 *    before the end, or accepts bytes after an error or after the end;
 *  - the data bytes it marks (sl_chunked_data_ready, as the proxy's
 *    de-chunking path uses it) differ between splits or do not add up to
 *    body_bytes;
 *  - a finished body's data, chunked again in PRNG-sized chunks without
 *    extensions or trailers, does not scan back to the same data.
 */
#include "fuzz_common.h"

#define MAX_CUTS 7

struct verdict {
    long consumed; /* bytes accepted in all, or -1 */
    bool done;
    uint64_t body_bytes;
};

static uint32_t prng_next(uint32_t *state)
{
    /* xorshift32: reproducible from the input, no libc state */
    uint32_t x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static void check_verdicts_equal(const struct verdict *a, const struct verdict *b)
{
    CHECK(a->consumed == b->consumed && a->done == b->done && a->body_bytes == b->body_bytes);
}

/* Feed msg cut at cuts[] (ascending, each <= n). */
static struct verdict scan_pieces(const uint8_t *msg, size_t n, const size_t *cuts, size_t ncuts)
{
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    struct verdict v = {0, false, 0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        CHECK(to >= from && to <= n);
        char *piece = copy(msg + from, to - from);
        long used = sl_chunked_scan(&s, piece, to - from);
        free(piece);
        if (used < 0) {
            CHECK(used == -1 && s.error != NULL && s.error[0] != '\0' && !s.done);
            CHECK(sl_chunked_scan(&s, "0\r\n\r\n", 5) == -1); /* an error sticks */
            v.consumed = -1;
            return v;
        }
        CHECK((size_t)used <= to - from);
        v.consumed += used;
        if (s.done) {
            CHECK(sl_chunked_scan(&s, "0\r\n\r\n", 5) == 0); /* the next message's */
            break;
        }
        CHECK((size_t)used == to - from); /* not done: everything was taken */
        from = to;
    }
    CHECK(s.body_bytes <= (uint64_t)v.consumed);
    v.done = s.done;
    v.body_bytes = s.body_bytes;
    return v;
}

/* PRNG pieces of 1 to 17 bytes, through scan_pieces and its checks. */
static struct verdict scan_random_pieces(const uint8_t *msg, size_t n, uint32_t *prng)
{
    size_t *cuts = malloc((n + 1) * sizeof *cuts), ncuts = 0;
    CHECK(cuts != NULL);
    for (size_t at = 1 + prng_next(prng) % 17; at < n; at += 1 + prng_next(prng) % 17)
        cuts[ncuts++] = at;
    struct verdict v = scan_pieces(msg, n, cuts, ncuts);
    free(cuts);
    return v;
}

/* The proxy's de-chunking walk: framing one byte at a time, data in runs
 * of what sl_chunked_data_ready() allows, each run also cut at a PRNG
 * length. The data goes to out (capacity out_cap). */
static struct verdict dechunk(const uint8_t *msg, size_t n, uint32_t *prng, uint8_t *out,
                              size_t out_cap, size_t *out_len)
{
    struct sl_chunked_scanner s;
    sl_chunked_init(&s);
    struct verdict v = {0, false, 0};
    size_t at = 0, o = 0;
    while (at < n && !s.done) {
        uint64_t ready = sl_chunked_data_ready(&s);
        size_t take = 1;
        if (ready) {
            take = 1 + prng_next(prng) % 64;
            if (take > ready)
                take = (size_t)ready;
            if (take > n - at)
                take = n - at;
        }
        char *piece = copy(msg + at, take);
        long used = sl_chunked_scan(&s, piece, take);
        free(piece);
        if (used < 0) {
            v.consumed = -1;
            *out_len = o;
            return v;
        }
        /* data bytes are always taken whole; a framing byte may end the body */
        CHECK((size_t)used == take || (s.done && !ready));
        if (ready) {
            CHECK(o + take <= out_cap);
            memcpy(out + o, msg + at, take);
            o += take;
        }
        at += (size_t)used;
        v.consumed += used;
    }
    CHECK(o == s.body_bytes);
    v.done = s.done;
    v.body_bytes = s.body_bytes;
    *out_len = o;
    return v;
}

/* data as chunks of PRNG sizes, "0\r\n\r\n" last; returns the length. */
static size_t rechunk(const uint8_t *data, size_t len, uint32_t *prng, char *out, size_t cap)
{
    size_t o = 0, at = 0;
    while (at < len) {
        size_t chunk = 1 + prng_next(prng) % 300;
        if (chunk > len - at)
            chunk = len - at;
        int w = snprintf(out + o, cap - o, "%zx\r\n", chunk);
        CHECK(w > 0 && (size_t)w < cap - o);
        o += (size_t)w;
        CHECK(o + chunk + 2 <= cap);
        memcpy(out + o, data + at, chunk);
        o += chunk;
        memcpy(out + o, "\r\n", 2);
        o += 2;
        at += chunk;
    }
    CHECK(o + 5 <= cap);
    memcpy(out + o, "0\r\n\r\n", 5);
    return o + 5;
}

static int compare_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t ncuts = data[0] & MAX_CUTS;
    size_t header = 1 + 2 * ncuts + 2;
    if (size < header)
        return 0;
    const uint8_t *msg = data + header;
    size_t n = size - header;
    size_t cuts[MAX_CUTS];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = ((size_t)data[1 + 2 * i] << 8 | data[2 + 2 * i]) % (n + 1);
    qsort(cuts, ncuts, sizeof cuts[0], compare_size);
    uint32_t prng = (uint32_t)data[header - 2] << 8 | data[header - 1];

    struct verdict whole = scan_pieces(msg, n, NULL, 0);
    if (whole.done)
        CHECK(whole.consumed >= 5 && msg[whole.consumed - 1] == '\n' &&
              msg[whole.consumed - 2] == '\r');
    struct verdict cut = scan_pieces(msg, n, cuts, ncuts);
    check_verdicts_equal(&cut, &whole);
    struct verdict random = scan_random_pieces(msg, n, &prng);
    check_verdicts_equal(&random, &whole);
    if (n <= 1024) {
        size_t every[1024];
        for (size_t i = 0; i < n; i++)
            every[i] = i;
        struct verdict bytewise = scan_pieces(msg, n, every, n);
        check_verdicts_equal(&bytewise, &whole);
    }

    /* the data the proxy would forward: the same whatever the split */
    uint8_t *body1 = malloc(n + 1), *body2 = malloc(n + 1);
    CHECK(body1 && body2);
    size_t len1, len2;
    struct verdict d1 = dechunk(msg, n, &prng, body1, n, &len1);
    struct verdict d2 = dechunk(msg, n, &prng, body2, n, &len2);
    check_verdicts_equal(&d1, &whole);
    check_verdicts_equal(&d2, &whole);
    CHECK(len1 == len2 && memcmp(body1, body2, len1) == 0);

    /* a finished body, chunked again plainly, scans back to the same data */
    if (whole.done) {
        size_t cap = len1 * 8 + 16; /* a 1-byte chunk costs at most 7 framing bytes */
        char *again = malloc(cap);
        CHECK(again);
        size_t again_len = rechunk(body1, len1, &prng, again, cap);
        size_t len3;
        struct verdict d3 = dechunk((const uint8_t *)again, again_len, &prng, body2, n, &len3);
        CHECK(d3.done && d3.consumed == (long)again_len && d3.body_bytes == whole.body_bytes);
        CHECK(len3 == len1 && memcmp(body1, body2, len1) == 0);
        free(again);
    }
    free(body1);
    free(body2);
    return 0;
}
