/* JWT decoding and verification for the jwt plugin; see jwt_token.h. */
#include "jwt_token.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    enum sl_jwt_alg alg;
} alg_names[] = {
    {"HS256", SL_JWT_HS256}, {"HS384", SL_JWT_HS384}, {"HS512", SL_JWT_HS512},
    {"RS256", SL_JWT_RS256}, {"RS384", SL_JWT_RS384}, {"RS512", SL_JWT_RS512},
    {"ES256", SL_JWT_ES256}, {"ES384", SL_JWT_ES384}, {"ES512", SL_JWT_ES512},
};

enum sl_jwt_alg sl_jwt_alg_from_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (strcmp(alg_names[i].name, name) == 0)
            return alg_names[i].alg;
    return SL_JWT_ALG_NONE;
}

const char *sl_jwt_alg_name(enum sl_jwt_alg alg)
{
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (alg_names[i].alg == alg)
            return alg_names[i].name;
    return "none";
}

bool sl_jwt_alg_is_hmac(enum sl_jwt_alg alg)
{
    return alg == SL_JWT_HS256 || alg == SL_JWT_HS384 || alg == SL_JWT_HS512;
}

static bool alg_is_ec(enum sl_jwt_alg alg)
{
    return alg == SL_JWT_ES256 || alg == SL_JWT_ES384 || alg == SL_JWT_ES512;
}

static const EVP_MD *alg_digest(enum sl_jwt_alg alg)
{
    switch (alg) {
    case SL_JWT_HS256:
    case SL_JWT_RS256:
    case SL_JWT_ES256:
        return EVP_sha256();
    case SL_JWT_HS384:
    case SL_JWT_RS384:
    case SL_JWT_ES384:
        return EVP_sha384();
    case SL_JWT_HS512:
    case SL_JWT_RS512:
    case SL_JWT_ES512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

/* ES*: the curve (OpenSSL group name) and the size of R and S in bytes. */
static const char *ec_curve(enum sl_jwt_alg alg, size_t *coordinate)
{
    switch (alg) {
    case SL_JWT_ES256:
        *coordinate = 32;
        return "prime256v1";
    case SL_JWT_ES384:
        *coordinate = 48;
        return "secp384r1";
    case SL_JWT_ES512:
        *coordinate = 66;
        return "secp521r1";
    default:
        *coordinate = 0;
        return NULL;
    }
}

const char *sl_jwt_decode_reason(enum sl_jwt_decode_result r)
{
    switch (r) {
    case SL_JWT_BAD_JSON:
        return "invalid JSON";
    case SL_JWT_BAD_ALG:
        return "invalid alg";
    case SL_JWT_BAD_CRIT:
        return "invalid crit";
    case SL_JWT_BAD_CLAIMS:
        return "invalid claims";
    case SL_JWT_BAD_SIGNATURE:
        return "invalid signature";
    default:
        return "ok";
    }
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

bool sl_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                          size_t *out_len)
{
    if (len % 4 == 1)
        return false;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > out_size)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* unused bits must be zero: one token, one encoding */
        return false;
    *out_len = o;
    return true;
}

/* A JSON object, without duplicate keys (they would let two readers see
 * two different tokens), from base64url text. */
static json_t *decode_object(const char *b64, size_t len)
{
    unsigned char buf[SL_JWT_MAX_TOKEN];
    size_t n;
    if (!sl_jwt_b64url_decode(b64, len, buf, sizeof buf, &n))
        return NULL;
    json_error_t error;
    json_t *v = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &error);
    return v;
}

/* Header parameter names the JWS, JWE and JWA specifications define
 * (RFC 7515 4.1, RFC 7516 4.1, RFC 7518 4.6.1, 4.7.1, 4.8.1): `crit` must
 * not name them. */
static const char *const registered_header_names[] = {
    "alg",  "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty",
    "crit", "enc", "zip", "epk", "apu", "apv", "iv",  "tag",      "p2s", "p2c",
};

static bool is_registered_header_name(const char *name)
{
    for (size_t i = 0; i < sizeof registered_header_names / sizeof registered_header_names[0]; i++)
        if (strcmp(registered_header_names[i], name) == 0)
            return true;
    return false;
}

const char *sl_jwt_crit_problem(const json_t *header)
{
    const json_t *crit = json_object_get(header, "crit");
    if (crit == NULL)
        return NULL;
    if (!json_is_array(crit))
        return "crit is not an array";
    size_t n = json_array_size(crit);
    if (n == 0)
        return "crit is empty";
    for (size_t i = 0; i < n; i++) {
        const json_t *member = json_array_get(crit, i);
        if (!json_is_string(member) || json_string_length(member) == 0)
            return "crit member is not a non-empty string";
        const char *name = json_string_value(member);
        for (size_t j = 0; j < i; j++)
            if (json_equal(member, json_array_get(crit, j)))
                return "crit lists a name twice";
        if (is_registered_header_name(name))
            return "crit lists a registered header parameter";
        if (json_object_get(header, name) == NULL)
            return "crit lists a parameter absent from the header";
    }
    /* every name is a well-formed extension present in the header, and
     * sluice implements none (not even RFC 7797's b64) */
    return "crit lists an extension sluice does not implement";
}

enum sl_jwt_decode_result sl_jwt_decode(const char *token, size_t len, struct sl_jwt_token *out)
{
    memset(out, 0, sizeof *out);
    if (len == 0 || len > SL_JWT_MAX_TOKEN)
        return SL_JWT_BAD_JSON;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return SL_JWT_BAD_JSON; /* exactly three parts */
    const char *sig64 = dot2 + 1;
    size_t sig64_len = len - (size_t)(sig64 - token);
    out->header = decode_object(token, (size_t)(dot1 - token));
    out->claims = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    bool sig_ok = sl_jwt_b64url_decode(sig64, sig64_len, out->signature, sizeof out->signature,
                                       &out->signature_len);
    /* Kong decodes all three together: any failure is "invalid JSON" (a
     * signature that does not decode is reported later, as Kong does) */
    if (out->header == NULL || out->claims == NULL || !json_is_object(out->header)) {
        sl_jwt_token_free(out);
        return SL_JWT_BAD_JSON;
    }
    json_t *alg = json_object_get(out->header, "alg");
    out->alg = json_is_string(alg) ? sl_jwt_alg_from_name(json_string_value(alg)) : SL_JWT_ALG_NONE;
    if (out->alg == SL_JWT_ALG_NONE) {
        sl_jwt_token_free(out);
        return SL_JWT_BAD_ALG;
    }
    if (sl_jwt_crit_problem(out->header) != NULL) {
        sl_jwt_token_free(out);
        return SL_JWT_BAD_CRIT;
    }
    if (!json_is_object(out->claims)) {
        sl_jwt_token_free(out);
        return SL_JWT_BAD_CLAIMS;
    }
    if (!sig_ok || out->signature_len == 0) {
        sl_jwt_token_free(out);
        return SL_JWT_BAD_SIGNATURE;
    }
    out->signing_input = token;
    out->signing_len = (size_t)(dot2 - token);
    return SL_JWT_DECODED;
}

void sl_jwt_token_free(struct sl_jwt_token *t)
{
    json_decref(t->header);
    json_decref(t->claims);
    t->header = NULL;
    t->claims = NULL;
}

EVP_PKEY *sl_jwt_public_key(enum sl_jwt_alg alg, const char *pem)
{
    if (pem == NULL || *pem == '\0' || sl_jwt_alg_is_hmac(alg) || alg == SL_JWT_ALG_NONE)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    if (key == NULL)
        return NULL;
    bool ok;
    if (alg_is_ec(alg)) {
        size_t coordinate;
        const char *curve = ec_curve(alg, &coordinate);
        char group[64] = "";
        size_t group_len = 0;
        ok = EVP_PKEY_is_a(key, "EC") &&
             EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                            &group_len) == 1 &&
             strcmp(group, curve) == 0;
    } else {
        ok = EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) >= 2048;
    }
    if (!ok) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

/* R || S (RFC 7518 section 3.4) to the DER that OpenSSL verifies. */
static unsigned char *ecdsa_der(const unsigned char *sig, size_t coordinate, int *der_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)coordinate, NULL);
    BIGNUM *s = BN_bin2bn(sig + coordinate, (int)coordinate, NULL);
    unsigned char *der = NULL;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        *der_len = i2d_ECDSA_SIG(es, &der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return *der_len > 0 ? der : NULL;
}

bool sl_jwt_verify(const struct sl_jwt_token *t, const struct sl_jwt_key *key)
{
    const EVP_MD *md = alg_digest(t->alg);
    if (md == NULL || key == NULL || key->alg != t->alg)
        return false;
    if (sl_jwt_alg_is_hmac(t->alg)) {
        if (key->secret == NULL || key->secret_len == 0) /* never "no verification" */
            return false;
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        if (HMAC(md, key->secret, (int)key->secret_len, (const unsigned char *)t->signing_input,
                 t->signing_len, mac, &mac_len) == NULL)
            return false;
        return mac_len == t->signature_len && CRYPTO_memcmp(mac, t->signature, mac_len) == 0;
    }
    if (key->pkey == NULL)
        return false;
    const unsigned char *sig = t->signature;
    size_t sig_len = t->signature_len;
    unsigned char *der = NULL;
    if (alg_is_ec(t->alg)) {
        size_t coordinate;
        ec_curve(t->alg, &coordinate);
        if (sig_len != 2 * coordinate)
            return false;
        int der_len = 0;
        der = ecdsa_der(sig, coordinate, &der_len);
        if (der == NULL)
            return false;
        sig = der;
        sig_len = (size_t)der_len;
    }
    EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
    bool ok = mdctx != NULL && EVP_DigestVerifyInit(mdctx, NULL, md, NULL, key->pkey) == 1 &&
              EVP_DigestVerify(mdctx, sig, sig_len, (const unsigned char *)t->signing_input,
                               t->signing_len) == 1;
    EVP_MD_CTX_free(mdctx);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}

#define SL_JWT_MAX_TIME 253402300799LL /* 9999-12-31T23:59:59Z */

bool sl_jwt_claim_time(const json_t *claims, const char *name, long long *out)
{
    json_t *v = json_object_get(claims, name);
    if (!json_is_integer(v))
        return false; /* absent, a string, a float, 1e300 (a real in jansson) */
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > SL_JWT_MAX_TIME)
        return false;
    *out = (long long)n;
    return true;
}

static void add_error(char *body, size_t size, size_t *len, const char *claim, const char *message)
{
    if (*len >= size)
        return;
    int n =
        snprintf(body + *len, size - *len, "%s\"%s\":\"%s\"", *len > 1 ? "," : "", claim, message);
    if (n > 0)
        *len += (size_t)n;
}

bool sl_jwt_check_claims(const struct sl_jwt_token *t, bool verify_exp, bool verify_nbf,
                         bool exp_first, long long maximum_expiration, time_t now, char *body,
                         size_t body_size)
{
    size_t len = 0;
    body[len++] = '{';
    body[len] = '\0';
    long long exp = 0, nbf = 0;
    for (int pass = 0; pass < 2; pass++) {
        bool is_exp = (pass == 0) == exp_first;
        if (is_exp && verify_exp) {
            if (!sl_jwt_claim_time(t->claims, "exp", &exp))
                add_error(body, body_size, &len, "exp", "must be a number");
            else if (exp <= (long long)now)
                add_error(body, body_size, &len, "exp", "token expired");
        }
        if (!is_exp && verify_nbf) {
            if (!sl_jwt_claim_time(t->claims, "nbf", &nbf))
                add_error(body, body_size, &len, "nbf", "must be a number");
            else if (nbf > (long long)now)
                add_error(body, body_size, &len, "nbf", "token not valid yet");
        }
    }
    if (len == 1 && maximum_expiration > 0 &&
        (!sl_jwt_claim_time(t->claims, "exp", &exp) || exp - (long long)now > maximum_expiration))
        add_error(body, body_size, &len, "exp", "exceeds maximum allowed expiration");
    if (len == 1)
        return true;
    if (len + 2 <= body_size) {
        body[len++] = '}';
        body[len] = '\0';
    }
    return false;
}
