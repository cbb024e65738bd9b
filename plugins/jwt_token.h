/*
 * JSON Web Tokens (RFC 7519, JWS compact form RFC 7515) for the jwt plugin:
 * strict decoding, signature verification and the registered-claim checks,
 * with no request in sight (the unit tests call these directly).
 *
 * Verification is done here with OpenSSL and jansson rather than with
 * libjwt 1.10, whose traps (no claim checked, the token's own `alg`
 * trusted, an empty key meaning "no verification", alloca of the token
 * length) would each need a guard around it. Here:
 *  - the token is at most SL_JWT_MAX_TOKEN bytes, checked before anything;
 *  - base64url is strict: no padding, no '+' or '/', no stray bits;
 *  - header and claims are JSON objects without duplicate keys;
 *  - `alg` is one of the nine supported names, exactly (never "none");
 *  - the caller passes the algorithm it expects (the credential's), and a
 *    key of the matching kind (HMAC secret, RSA key, EC key on the curve);
 *    an empty secret or a missing key never verifies;
 *  - HMAC signatures are compared in constant time; ECDSA signatures must
 *    be exactly 2 x the curve size (R || S), as RFC 7518 section 3.4 says.
 *
 * Ownership: struct sl_jwt_token owns its JSON (sl_jwt_token_free); the
 * signing input points into the token string, which must outlive it.
 */
#ifndef SL_JWT_TOKEN_H
#define SL_JWT_TOKEN_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SL_JWT_MAX_TOKEN 8192

enum sl_jwt_alg {
    SL_JWT_ALG_NONE = 0, /* not an algorithm: unknown or unsupported */
    SL_JWT_HS256,
    SL_JWT_HS384,
    SL_JWT_HS512,
    SL_JWT_RS256,
    SL_JWT_RS384,
    SL_JWT_RS512,
    SL_JWT_ES256,
    SL_JWT_ES384,
    SL_JWT_ES512,
};

/* "HS256" ... exactly (case-sensitive); SL_JWT_ALG_NONE otherwise. */
enum sl_jwt_alg sl_jwt_alg_from_name(const char *name);
const char *sl_jwt_alg_name(enum sl_jwt_alg alg);
bool sl_jwt_alg_is_hmac(enum sl_jwt_alg alg);

/* Kong's "Bad token; ..." reasons, in the order Kong checks them. */
enum sl_jwt_decode_result {
    SL_JWT_DECODED = 0,
    SL_JWT_BAD_JSON,      /* "invalid JSON": not three parts, bad base64url, bad JSON, too long */
    SL_JWT_BAD_ALG,       /* "invalid alg" */
    SL_JWT_BAD_CRIT,      /* "invalid crit": see sl_jwt_crit_problem */
    SL_JWT_BAD_CLAIMS,    /* "invalid claims": the claims are not an object */
    SL_JWT_BAD_SIGNATURE, /* "invalid signature": the signature part does not decode */
};
const char *sl_jwt_decode_reason(enum sl_jwt_decode_result r);

/*
 * RFC 7515 section 4.1.11: a header's `crit` lists extension parameters
 * the recipient must understand, or refuse the token. sluice understands
 * no extension, so a token with `crit` is refused; the shape is checked
 * first, so the answer tells the cases apart (the unit test checks each).
 * NULL when the header has no `crit`,
 * otherwise the problem: not an array, empty, a member that is not a
 * non-empty string, a duplicate, a name registered by RFC 7515/7516/7518
 * (which must not be listed), a name absent from the header, or an
 * extension not understood.
 */
const char *sl_jwt_crit_problem(const json_t *header);

struct sl_jwt_token {
    json_t *header; /* objects */
    json_t *claims;
    enum sl_jwt_alg alg;
    const char *signing_input; /* "header64.claims64", inside the token */
    size_t signing_len;
    unsigned char signature[512];
    size_t signature_len;
};

enum sl_jwt_decode_result sl_jwt_decode(const char *token, size_t len, struct sl_jwt_token *out);
void sl_jwt_token_free(struct sl_jwt_token *t);

/*
 * Strict base64url (RFC 4648 section 5, no padding): false on any other
 * byte, on a length of 1 mod 4, on non-zero unused bits, or when the
 * result would not fit out_size.
 */
bool sl_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                          size_t *out_len);

/*
 * The key a credential verifies with. For HMAC: secret/secret_len (never
 * empty). For RS/ES: pkey, of the type and curve of alg.
 */
struct sl_jwt_key {
    enum sl_jwt_alg alg;
    const unsigned char *secret;
    size_t secret_len;
    EVP_PKEY *pkey;
};

/* Does t's signature verify with key? False when t->alg != key->alg. */
bool sl_jwt_verify(const struct sl_jwt_token *t, const struct sl_jwt_key *key);

/* Parse a PEM public key for alg (RS*: RSA, ES*: EC on the alg's curve). */
EVP_PKEY *sl_jwt_public_key(enum sl_jwt_alg alg, const char *pem);

/*
 * Kong's registered-claim checks at time `now`: each of exp/nbf asked for
 * must be a number (here: a JSON integer between 0 and 253402300799, i.e.
 * no later than 9999-12-31), exp > now, nbf <= now; maximum_expiration > 0
 * also needs exp - now <= maximum_expiration. On failure false, with the
 * JSON body Kong answers ({"exp":"token expired"} ...) in body.
 */
bool sl_jwt_check_claims(const struct sl_jwt_token *t, bool verify_exp, bool verify_nbf,
                         bool exp_first, long long maximum_expiration, time_t now, char *body,
                         size_t body_size);

/* The claim as a bounded integer (see above), or false. */
bool sl_jwt_claim_time(const json_t *claims, const char *name, long long *out);

#endif
