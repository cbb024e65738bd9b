/*
 * libFuzzer harness for JWT handling (plugins/jwt_token.c): decoding any
 * bytes as a token, then, for what decodes, signature verification with an
 * HMAC key and the registered-claim checks. Nothing may crash, leak or read
 * out of bounds, whatever the token.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jwt_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sl_jwt_token t;
    if (sl_jwt_decode((const char *)data, size, &t) == SL_JWT_DECODED) {
        static const unsigned char secret[] = "fuzz-secret";
        struct sl_jwt_key key = {t.alg, secret, sizeof secret - 1, NULL};
        (void)sl_jwt_verify(&t, &key);
        char body[256];
        (void)sl_jwt_check_claims(&t, true, true, true, 3600, 1700000000, body, sizeof body);
        long long v;
        (void)sl_jwt_claim_time(t.claims, "exp", &v);
        sl_jwt_token_free(&t);
    }
    unsigned char out[512];
    size_t n;
    (void)sl_jwt_b64url_decode((const char *)data, size, out, sizeof out, &n);
    return 0;
}
