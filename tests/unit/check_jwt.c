/*
 * JWT decoding and verification (plugins/jwt_token.c): the RFC 7515 A.1
 * token, strict base64url, and the attack tokens libjwt 1.10 would let
 * through (alg none in any case, lowercase alg, RS256-to-HS256 with the
 * public key as secret, empty or padded signatures, kid injection, exp as a
 * string, a float or 1e300, a future nbf, duplicate claims, oversized).
 */
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwks.h"
#include "jwt_token.h"
#include "unit.h"

/* RFC 7515 appendix A.1 (the same token as RFC 7519 section 3.1) */
static const char A1_TOKEN[] = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
                               "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGx"
                               "lLmNvbS9pc19yb290Ijp0cnVlfQ."
                               "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
static const char A1_KEY[] =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

static const char *data_file(const char *name)
{
    static char path[4096];
    const char *d = getenv("SLUICE_SRCDIR");
    snprintf(path, sizeof path, "%s/tests/unit/data/tls/%s", d && *d ? d : ".", name);
    return path;
}

static char *slurp(const char *name)
{
    FILE *f = fopen(data_file(name), "rb");
    ck_assert_msg(f != NULL, "cannot open %s", data_file(name));
    char *out = calloc(1, 16384);
    ck_assert_uint_gt(fread(out, 1, 16383, f), 0);
    fclose(f);
    return out;
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = abc[(v >> 18) & 63];
        out[o++] = abc[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = abc[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = abc[v & 63];
    }
    out[o] = '\0';
}

/* header.claims.signature, signed with alg: key is the HMAC secret (text)
 * or a private key PEM file name; signature NULL = sign */
static char *make_token(const char *header, const char *claims, const char *alg, const char *key)
{
    char *t = calloc(1, 65536);
    char h[4096], c[8192];
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)claims, strlen(claims), c);
    int n = snprintf(t, 65536, "%s.%s", h, c);
    unsigned char sig[1024];
    size_t sig_len = 0;
    const EVP_MD *md = strstr(alg, "384")   ? EVP_sha384()
                       : strstr(alg, "512") ? EVP_sha512()
                                            : EVP_sha256();
    if (alg[0] == 'H') {
        unsigned int l = 0;
        HMAC(md, key, (int)strlen(key), (unsigned char *)t, (size_t)n, sig, &l);
        sig_len = l;
    } else {
        FILE *f = fopen(data_file(key), "rb");
        ck_assert_ptr_nonnull(f);
        EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        ck_assert_ptr_nonnull(pk);
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        size_t l = sizeof sig;
        ck_assert_int_eq(EVP_DigestSignInit(m, NULL, md, NULL, pk), 1);
        ck_assert_int_eq(EVP_DigestSign(m, sig, &l, (unsigned char *)t, (size_t)n), 1);
        EVP_MD_CTX_free(m);
        EVP_PKEY_free(pk);
        sig_len = l;
        if (alg[0] == 'E') { /* DER to R || S */
            const unsigned char *p = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)l);
            ck_assert_ptr_nonnull(es);
            memset(sig, 0, 64);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sig_len = 64;
        }
    }
    char s[2048];
    b64url(sig, sig_len, s);
    snprintf(t + n, 65536 - (size_t)n, ".%s", s);
    return t;
}

static struct sl_jwt_key hmac_key(const char *secret)
{
    struct sl_jwt_key k = {SL_JWT_HS256, (const unsigned char *)secret, strlen(secret), NULL};
    return k;
}

static enum sl_jwt_decode_result decode(const char *token, struct sl_jwt_token *t)
{
    return sl_jwt_decode(token, strlen(token), t);
}

START_TEST(test_rfc7515_a1)
{
    unsigned char key[64];
    size_t key_len;
    ck_assert(sl_jwt_b64url_decode(A1_KEY, strlen(A1_KEY), key, sizeof key, &key_len));
    ck_assert_uint_eq(key_len, 64);
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(A1_TOKEN, &t), SL_JWT_DECODED);
    ck_assert_int_eq(t.alg, SL_JWT_HS256);
    ck_assert_str_eq(json_string_value(json_object_get(t.claims, "iss")), "joe");
    struct sl_jwt_key k = {SL_JWT_HS256, key, key_len, NULL};
    ck_assert_msg(sl_jwt_verify(&t, &k), "the A.1 token verifies with its key");
    k.secret_len--;
    ck_assert_msg(!sl_jwt_verify(&t, &k), "and not with another key");
    char body[256];
    ck_assert(sl_jwt_check_claims(&t, false, false, false, 0, time(NULL), body, sizeof body));
    ck_assert(!sl_jwt_check_claims(&t, true, false, true, 0, time(NULL), body, sizeof body));
    ck_assert_str_eq(body, "{\"exp\":\"token expired\"}");
    ck_assert(sl_jwt_check_claims(&t, true, false, true, 0, 1300819379, body, sizeof body));
    ck_assert(!sl_jwt_check_claims(&t, true, false, true, 0, 1300819380, body, sizeof body));
    sl_jwt_token_free(&t);
}
END_TEST

START_TEST(test_b64url_strict)
{
    unsigned char out[16];
    size_t n;
    ck_assert(sl_jwt_b64url_decode("QQ", 2, out, sizeof out, &n) && n == 1 && out[0] == 'A');
    ck_assert(!sl_jwt_b64url_decode("QR", 2, out, sizeof out, &n));    /* stray bits */
    ck_assert(!sl_jwt_b64url_decode("QQ==", 4, out, sizeof out, &n));  /* padding */
    ck_assert(!sl_jwt_b64url_decode("a+b/", 4, out, sizeof out, &n));  /* base64, not url */
    ck_assert(!sl_jwt_b64url_decode("QUFBQ", 5, out, sizeof out, &n)); /* 1 mod 4 */
    ck_assert(!sl_jwt_b64url_decode("QUFB\n", 5, out, sizeof out, &n));
    ck_assert(!sl_jwt_b64url_decode("QUFBQUFBQUFBQUFBQUFBQUFB", 24, out, 4, &n)); /* too long */
}
END_TEST

START_TEST(test_alg_attacks)
{
    static const char *const bad[] = {"none",  "None",   "NONE",  "nOnE",  "hs256",
                                      "Hs256", "HS256 ", "PS256", "EdDSA", ""};
    struct sl_jwt_token t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char header[128];
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", bad[i]);
        char *tok = make_token(header, "{\"iss\":\"a\"}", "HS256", "secret");
        ck_assert_msg(decode(tok, &t) == SL_JWT_BAD_ALG, "alg '%s' is refused", bad[i]);
        free(tok);
    }
    /* alg none with an empty signature, as an attacker sends it */
    ck_assert_int_eq(decode("eyJhbGciOiJub25lIn0.eyJpc3MiOiJhIn0.", &t), SL_JWT_BAD_ALG);
    char *tok = make_token("{\"alg\":123}", "{\"iss\":\"a\"}", "HS256", "secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_ALG);
    free(tok);
}
END_TEST

START_TEST(test_key_confusion)
{
    /* RS256 credential; the attacker signs HS256 with the public key PEM as
     * the HMAC secret (libjwt 1.10 would accept it) */
    char *pub = slurp("rsa.pub");
    EVP_PKEY *pk = sl_jwt_public_key(SL_JWT_RS256, pub);
    ck_assert_ptr_nonnull(pk);
    struct sl_jwt_key rs = {SL_JWT_RS256, NULL, 0, pk};
    char *tok = make_token("{\"alg\":\"HS256\"}", "{\"iss\":\"a\"}", "HS256", pub);
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    ck_assert_msg(!sl_jwt_verify(&t, &rs), "HS256 against an RS256 credential never verifies");
    sl_jwt_token_free(&t);
    free(tok);
    /* the genuine RS256 token verifies, a tampered one does not */
    tok = make_token("{\"alg\":\"RS256\"}", "{\"iss\":\"a\"}", "RS256", "rsa.key");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    ck_assert(sl_jwt_verify(&t, &rs));
    sl_jwt_token_free(&t);
    /* the claims of another token under this signature */
    char *other = make_token("{\"alg\":\"RS256\"}", "{\"iss\":\"b\"}", "RS256", "rsa.key");
    char spliced[4096];
    snprintf(spliced, sizeof spliced, "%.*s%s", (int)(strrchr(other, '.') - other), other,
             strrchr(tok, '.'));
    ck_assert_int_eq(decode(spliced, &t), SL_JWT_DECODED);
    ck_assert_msg(!sl_jwt_verify(&t, &rs), "a signature does not carry over to other claims");
    sl_jwt_token_free(&t);
    free(other);
    free(tok);
    EVP_PKEY_free(pk);
    /* keys of the wrong kind are refused when read */
    char *ec = slurp("ec.pub"), *ec384 = slurp("ec384.pub");
    ck_assert_ptr_null(sl_jwt_public_key(SL_JWT_RS256, ec));
    ck_assert_ptr_null(sl_jwt_public_key(SL_JWT_ES256, pub));
    ck_assert_ptr_null(sl_jwt_public_key(SL_JWT_ES256, ec384));
    ck_assert_ptr_null(sl_jwt_public_key(SL_JWT_HS256, pub));
    ck_assert_ptr_null(sl_jwt_public_key(SL_JWT_RS256, ""));
    EVP_PKEY *p384 = sl_jwt_public_key(SL_JWT_ES384, ec384);
    ck_assert_ptr_nonnull(p384);
    EVP_PKEY_free(p384);
    free(pub);
    free(ec);
    free(ec384);
}
END_TEST

START_TEST(test_es256)
{
    char *pub = slurp("ec.pub");
    EVP_PKEY *pk = sl_jwt_public_key(SL_JWT_ES256, pub);
    ck_assert_ptr_nonnull(pk);
    struct sl_jwt_key es = {SL_JWT_ES256, NULL, 0, pk};
    char *tok = make_token("{\"alg\":\"ES256\"}", "{\"iss\":\"a\",\"x\":1}", "ES256", "ec.key");
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    ck_assert_msg(sl_jwt_verify(&t, &es), "ES256 (R || S) verifies");
    t.signature_len = 63; /* not 2 x 32 bytes */
    ck_assert(!sl_jwt_verify(&t, &es));
    sl_jwt_token_free(&t);
    free(tok);
    EVP_PKEY_free(pk);
    free(pub);
}
END_TEST

START_TEST(test_malformed)
{
    struct sl_jwt_token t;
    char *tok = make_token("{\"alg\":\"HS256\"}", "{\"iss\":\"a\"}", "HS256", "secret");
    struct sl_jwt_key k = hmac_key("secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    ck_assert(sl_jwt_verify(&t, &k));
    struct sl_jwt_key empty = hmac_key("");
    ck_assert_msg(!sl_jwt_verify(&t, &empty), "an empty secret never means no verification");
    sl_jwt_token_free(&t);

    char buf[4096];
    /* empty signature */
    snprintf(buf, sizeof buf, "%.*s.", (int)(strrchr(tok, '.') - tok), tok);
    ck_assert_int_eq(decode(buf, &t), SL_JWT_BAD_SIGNATURE);
    /* padded signature (malleability) */
    snprintf(buf, sizeof buf, "%s=", tok);
    ck_assert_int_eq(decode(buf, &t), SL_JWT_BAD_SIGNATURE);
    /* four parts, two parts, not base64, not JSON */
    snprintf(buf, sizeof buf, "%s.x", tok);
    ck_assert_int_eq(decode(buf, &t), SL_JWT_BAD_JSON);
    ck_assert_int_eq(decode("abc.def", &t), SL_JWT_BAD_JSON);
    ck_assert_int_eq(decode("!!!.eyJpc3MiOiJhIn0.AAAA", &t), SL_JWT_BAD_JSON);
    ck_assert_int_eq(decode("bm90IGpzb24.eyJpc3MiOiJhIn0.AAAA", &t), SL_JWT_BAD_JSON);
    free(tok);
    /* claims that are not an object */
    tok = make_token("{\"alg\":\"HS256\"}", "[1,2]", "HS256", "secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_CLAIMS);
    free(tok);
    /* duplicate claims: two readers could see two tokens */
    tok = make_token("{\"alg\":\"HS256\"}", "{\"iss\":\"a\",\"iss\":\"b\"}", "HS256", "secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_JSON);
    free(tok);
    /* a 20 KB token is refused before anything is decoded */
    char *big = malloc(20 * 1024 + 1);
    memset(big, 'A', 20 * 1024);
    big[20 * 1024] = '\0';
    big[100] = '.';
    big[200] = '.';
    ck_assert_int_eq(decode(big, &t), SL_JWT_BAD_JSON);
    free(big);
}
END_TEST

START_TEST(test_kid_ignored)
{
    static const char *const kids[] = {"../../../../etc/passwd", "' OR 1=1 --", "/dev/null", ""};
    struct sl_jwt_key good = hmac_key("secret"), bad = hmac_key("other");
    for (size_t i = 0; i < sizeof kids / sizeof kids[0]; i++) {
        char header[256];
        snprintf(header, sizeof header, "{\"alg\":\"HS256\",\"kid\":\"%s\"}", kids[i]);
        char *tok = make_token(header, "{\"iss\":\"a\"}", "HS256", "secret");
        struct sl_jwt_token t;
        ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
        ck_assert_msg(sl_jwt_verify(&t, &good) && !sl_jwt_verify(&t, &bad),
                      "kid '%s' changes nothing", kids[i]);
        sl_jwt_token_free(&t);
        free(tok);
    }
}
END_TEST

START_TEST(test_crit)
{
    /* RFC 7515 4.1.11, case by case: every shape of crit is refused, each
     * for its own reason, and a token without crit still decodes */
    static const struct {
        const char *header;
        const char *problem; /* sl_jwt_crit_problem's answer */
    } cases[] = {
        {"{\"alg\":\"HS256\",\"crit\":\"exp\"}", "crit is not an array"},
        {"{\"alg\":\"HS256\",\"crit\":{}}", "crit is not an array"},
        {"{\"alg\":\"HS256\",\"crit\":null}", "crit is not an array"},
        {"{\"alg\":\"HS256\",\"crit\":[]}", "crit is empty"},
        {"{\"alg\":\"HS256\",\"crit\":[1],\"1\":1}", "crit member is not a non-empty string"},
        {"{\"alg\":\"HS256\",\"crit\":[\"\"],\"\":1}", "crit member is not a non-empty string"},
        {"{\"alg\":\"HS256\",\"crit\":[[\"x\"]],\"x\":1}", "crit member is not a non-empty string"},
        {"{\"alg\":\"HS256\",\"crit\":[\"x\",\"x\"],\"x\":1}", "crit lists a name twice"},
        {"{\"alg\":\"HS256\",\"crit\":[\"alg\"]}", "crit lists a registered header parameter"},
        {"{\"alg\":\"HS256\",\"crit\":[\"crit\"]}", "crit lists a registered header parameter"},
        {"{\"alg\":\"HS256\",\"crit\":[\"x5t#S256\"],\"x5t#S256\":\"a\"}",
         "crit lists a registered header parameter"},
        {"{\"alg\":\"HS256\",\"crit\":[\"enc\"],\"enc\":\"A128GCM\"}",
         "crit lists a registered header parameter"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "crit lists a parameter absent from the header"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}",
         "crit lists an extension sluice does not implement"},
        {"{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}",
         "crit lists an extension sluice does not implement"},
        {"{\"alg\":\"HS256\",\"crit\":[\"a\",\"alg\"],\"a\":1}",
         "crit lists a registered header parameter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *header = json_loads(cases[i].header, 0, NULL);
        ck_assert_ptr_nonnull(header);
        const char *problem = sl_jwt_crit_problem(header);
        ck_assert_msg(problem && strcmp(problem, cases[i].problem) == 0, "%s: %s, not %s",
                      cases[i].header, problem ? problem : "(accepted)", cases[i].problem);
        json_decref(header);
        char *tok = make_token(cases[i].header, "{\"iss\":\"a\"}", "HS256", "secret");
        struct sl_jwt_token t;
        ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_CRIT);
        ck_assert_str_eq(sl_jwt_decode_reason(SL_JWT_BAD_CRIT), "invalid crit");
        free(tok);
    }
    /* a NUL inside a crit name never reaches the check: the JSON is refused */
    char *tok = make_token("{\"alg\":\"HS256\",\"crit\":[\"a\\u0000b\"],\"a\":1}",
                           "{\"iss\":\"a\"}", "HS256", "secret");
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_JSON);
    free(tok);
    /* an alg problem is reported before a crit problem, as Kong orders its checks */
    tok = make_token("{\"alg\":\"none\",\"crit\":[]}", "{\"iss\":\"a\"}", "HS256", "secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_BAD_ALG);
    free(tok);
    /* no crit: decodes */
    tok = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"iss\":\"a\"}", "HS256", "secret");
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    sl_jwt_token_free(&t);
    free(tok);
}
END_TEST

START_TEST(test_claim_types)
{
    static const struct {
        const char *claims;
        bool exp, nbf;
        const char *body; /* NULL: passes */
    } cases[] = {
        {"{\"exp\":\"9999999999\"}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{\"exp\":1999999999.5}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{\"exp\":1e300}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{\"exp\":-1}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{\"exp\":true}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{}", true, false, "{\"exp\":\"must be a number\"}"},
        {"{\"exp\":1999999999}", true, false, NULL},
        {"{\"exp\":1000}", true, false, "{\"exp\":\"token expired\"}"},
        {"{\"nbf\":1999999999}", false, true, "{\"nbf\":\"token not valid yet\"}"},
        {"{\"nbf\":1000}", false, true, NULL},
        {"{\"nbf\":\"1000\"}", false, true, "{\"nbf\":\"must be a number\"}"},
        {"{\"exp\":1000,\"nbf\":1999999999}", true, true,
         "{\"exp\":\"token expired\",\"nbf\":\"token not valid yet\"}"},
        {"{\"exp\":1000}", false, false, NULL}, /* not asked: not checked (Kong) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tok = make_token("{\"alg\":\"HS256\"}", cases[i].claims, "HS256", "s");
        struct sl_jwt_token t;
        ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
        char body[256] = "";
        bool ok = sl_jwt_check_claims(&t, cases[i].exp, cases[i].nbf, true, 0, 1500000000, body,
                                      sizeof body);
        if (cases[i].body == NULL)
            ck_assert_msg(ok, "%s passes", cases[i].claims);
        else
            ck_assert_msg(!ok && strcmp(body, cases[i].body) == 0, "%s: got %s, want %s",
                          cases[i].claims, ok ? "(pass)" : body, cases[i].body);
        sl_jwt_token_free(&t);
        free(tok);
    }
    /* maximum_expiration */
    char *tok = make_token("{\"alg\":\"HS256\"}", "{\"exp\":1500003600}", "HS256", "s");
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    char body[256];
    ck_assert(sl_jwt_check_claims(&t, true, false, true, 3600, 1500000000, body, sizeof body));
    ck_assert(!sl_jwt_check_claims(&t, true, false, true, 3599, 1500000000, body, sizeof body));
    ck_assert_str_eq(body, "{\"exp\":\"exceeds maximum allowed expiration\"}");
    sl_jwt_token_free(&t);
    free(tok);
}
END_TEST

/* The JWK of a public key PEM in tests/unit/data/tls (n/e or crv/x/y). */
static void jwk_of(const char *file, const char *kid, const char *alg, char *out, size_t size)
{
    char *pem = slurp(file);
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    ck_assert_ptr_nonnull(pk);
    char alg_field[64] = "";
    if (alg)
        snprintf(alg_field, sizeof alg_field, ",\"alg\":\"%s\"", alg);
    if (EVP_PKEY_is_a(pk, "RSA")) {
        BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY_get_bn_param(pk, "n", &n);
        EVP_PKEY_get_bn_param(pk, "e", &e);
        unsigned char nb[1024], eb[16];
        int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
        char n64[1500], e64[32];
        b64url(nb, (size_t)nl, n64);
        b64url(eb, (size_t)el, e64);
        snprintf(out, size,
                 "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"%s}",
                 kid, n64, e64, alg_field);
        BN_free(n);
        BN_free(e);
    } else {
        unsigned char pt[200];
        size_t pl = 0;
        EVP_PKEY_get_octet_string_param(pk, "pub", pt, sizeof pt, &pl);
        ck_assert_uint_eq(pl, 65);
        char x64[64], y64[64];
        b64url(pt + 1, 32, x64);
        b64url(pt + 33, 32, y64);
        snprintf(out, size,
                 "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"%s}",
                 kid, x64, y64, alg_field);
    }
    EVP_PKEY_free(pk);
}

START_TEST(test_jwks)
{
    char rsa[2048], ec[512], enc[2048], doc[8192];
    jwk_of("rsa.pub", "r1", NULL, rsa, sizeof rsa);
    jwk_of("ec.pub", "e1", "ES256", ec, sizeof ec);
    jwk_of("rsa.pub", "enc", NULL, enc, sizeof enc);
    char *use = strstr(enc, "\"use\":\"sig\"");
    memcpy(use, "\"use\":\"enc\"", 11); /* an encryption key: skipped */
    snprintf(doc, sizeof doc,
             "{\"keys\":[%s,%s,%s,{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"AAAA\"},"
             "{\"kty\":\"RSA\",\"kid\":\"broken\",\"n\":\"!!\",\"e\":\"AQAB\"}]}",
             rsa, ec, enc);
    struct sl_jwks_set *set = sl_jwks_parse(doc, strlen(doc));
    ck_assert_ptr_nonnull(set);
    ck_assert_uint_eq(sl_jwks_set_size(set), 2);
    ck_assert_ptr_nonnull(sl_jwks_set_find(set, "r1", SL_JWT_RS256));
    ck_assert_ptr_nonnull(sl_jwks_set_find(set, "r1", SL_JWT_RS512));
    ck_assert_ptr_null(sl_jwks_set_find(set, "r1", SL_JWT_ES256)); /* RSA key, EC alg */
    ck_assert_ptr_nonnull(sl_jwks_set_find(set, "e1", SL_JWT_ES256));
    ck_assert_ptr_null(sl_jwks_set_find(set, "e1", SL_JWT_ES384)); /* alg and curve */
    ck_assert_ptr_null(sl_jwks_set_find(set, "nope", SL_JWT_RS256));
    ck_assert_ptr_null(sl_jwks_set_find(set, "enc", SL_JWT_RS256));
    ck_assert_ptr_null(sl_jwks_set_find(set, "h", SL_JWT_HS256));

    /* a token signed by the key verifies with the JWKS key */
    char *tok =
        make_token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", "{\"iss\":\"a\"}", "RS256", "rsa.key");
    struct sl_jwt_token t;
    ck_assert_int_eq(decode(tok, &t), SL_JWT_DECODED);
    struct sl_jwt_key k = {SL_JWT_RS256, NULL, 0, sl_jwks_set_find(set, "r1", SL_JWT_RS256)};
    ck_assert(sl_jwt_verify(&t, &k));
    sl_jwt_token_free(&t);
    free(tok);
    sl_jwks_set_free(set);
    ck_assert_ptr_null(sl_jwks_parse("{\"nokeys\":1}", 12));
    ck_assert_ptr_null(sl_jwks_parse("not json", 8));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("jwt");
    tcase_add_test(tc, test_rfc7515_a1);
    tcase_add_test(tc, test_b64url_strict);
    tcase_add_test(tc, test_alg_attacks);
    tcase_add_test(tc, test_key_confusion);
    tcase_add_test(tc, test_es256);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_kid_ignored);
    tcase_add_test(tc, test_crit);
    tcase_add_test(tc, test_claim_types);
    tcase_add_test(tc, test_jwks);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
