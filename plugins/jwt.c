/*
 * jwt (Kong's, PRIORITY 1450): authenticate a request by a signed JSON Web
 * Token whose key claim (`iss`) names a `jwt_secrets` credential; the
 * credential's consumer becomes the request's consumer.
 *
 * Kong's behaviour, in Kong's order (kong/plugins/jwt/handler.lua): token
 * from the query (uri_param_names), cookies (cookie_names), then headers
 * (header_names, `\s*[Bb]earer\s+(.+)`); identical tokens merge, different
 * ones are refused; decode; key claim in the claims, then in the header;
 * credential; exact algorithm; key; signature; claims_to_verify;
 * maximum_expiration; then the consumer headers. Every failure is a 401
 * with Kong's body and WWW-Authenticate, or the anonymous consumer.
 *
 * Beyond Kong: the guards of jwt_token.h; keys are read and checked at
 * load (an unusable key is a configuration error, never "no
 * verification"); the consumer headers a client sends are removed first,
 * on every request of the plugin's routes; a per-worker cache of verified
 * tokens (bounded, expiring no later than the token) skips the signature
 * check of a token seen again.
 */
#include <ctype.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "jwks.h"
#include "jwt_token.h"
#include "plugins.h"

#define JWT_CACHE_SLOTS 1024
#define JWT_CACHE_TTL_S 60
#define JWT_MAX_NAMES 16

static const char *const identity_headers[] = {
    "X-Consumer-ID",           "X-Consumer-Custom-ID", "X-Consumer-Username",
    "X-Credential-Identifier", "X-Anonymous-Consumer",
};

struct jwt_cred {
    const char *credential_key;         /* its `key`, the value of the key claim (snapshot) */
    const struct sl_consumer *consumer; /* its owner (snapshot) */
    struct sl_jwt_key key;
    unsigned char *secret_buf; /* HS: the (decoded) secret */
};

struct jwt_conf {
    uint64_t id; /* unique per parsed instance: cache entries name it */
    const char **uri_param_names;
    size_t n_uri_param_names;
    const char **cookie_names;
    size_t n_cookie_names;
    const char **header_names;
    size_t n_header_names;
    const char *key_claim_name;
    bool verify_exp, verify_nbf, exp_first;
    long long maximum_expiration;
    const struct sl_consumer *anonymous;
    bool run_on_preflight;
    char *www_base;         /* Bearer, or Bearer realm="x" */
    char *www_error;        /* ... error="invalid_token" */
    struct jwt_cred *creds; /* sorted by key */
    size_t n_creds;
    struct sl_jwks *jwks; /* keys by kid from jwks_url (ours), or NULL */
};

static atomic_uint_fast64_t next_conf_id = 1;

static void jwt_free(void *arg)
{
    struct jwt_conf *c = arg;
    if (c == NULL)
        return;
    free(c->uri_param_names);
    free(c->cookie_names);
    free(c->header_names);
    free(c->www_base);
    free(c->www_error);
    for (size_t i = 0; i < c->n_creds; i++) {
        EVP_PKEY_free(c->creds[i].key.pkey);
        if (c->creds[i].secret_buf) {
            OPENSSL_cleanse(c->creds[i].secret_buf, c->creds[i].key.secret_len);
            free(c->creds[i].secret_buf);
        }
    }
    free(c->creds);
    sl_jwks_release(c->jwks);
    free(c);
}

static int cred_cmp(const void *a, const void *b)
{
    return strcmp(((const struct jwt_cred *)a)->credential_key,
                  ((const struct jwt_cred *)b)->credential_key);
}

/* The base64url (Kong: also with padding, '+' and '/') secret, decoded. */
static unsigned char *decode_secret(const char *s, size_t *out_len)
{
    size_t len = strlen(s);
    char *norm = malloc(len + 1);
    unsigned char *out = malloc(len + 1);
    if (!norm || !out) {
        free(norm);
        free(out);
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
        if (ch == '=')
            break;
        norm[n++] = ch;
    }
    bool ok = sl_jwt_b64url_decode(norm, n, out, len + 1, out_len);
    free(norm);
    if (!ok || *out_len == 0) {
        free(out);
        return NULL;
    }
    return out;
}

static bool prepare_credentials(struct jwt_conf *c, const struct sl_plugin_conf *pc,
                                const struct sl_config *cfg, bool secret_is_base64,
                                struct sl_config_error *err)
{
    size_t n_secrets = sl_plugin_jwt_secret_count(cfg);
    c->creds = calloc(n_secrets ? n_secrets : 1, sizeof *c->creds);
    if (c->creds == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    struct sl_plugin_jwt_secret s;
    for (size_t i = 0; sl_plugin_jwt_secret_at(cfg, i, &s); i++) {
        struct jwt_cred *cr = &c->creds[c->n_creds++];
        cr->credential_key = s.key;
        cr->consumer = s.consumer;
        cr->key.alg = sl_jwt_alg_from_name(s.algorithm ? s.algorithm : "HS256");
        const char *why = NULL;
        if (cr->key.alg == SL_JWT_ALG_NONE) {
            why = "its algorithm is not supported";
        } else if (sl_jwt_alg_is_hmac(cr->key.alg)) {
            const char *secret = s.secret ? s.secret : "";
            if (secret_is_base64) {
                cr->secret_buf = decode_secret(secret, &cr->key.secret_len);
                if (cr->secret_buf == NULL)
                    why = "its secret is not base64 (secret_is_base64 is set) or is empty";
            } else if (*secret != '\0') {
                cr->key.secret_len = strlen(secret);
                cr->secret_buf = malloc(cr->key.secret_len);
                if (cr->secret_buf)
                    memcpy(cr->secret_buf, secret, cr->key.secret_len);
            }
            if (!why && (cr->secret_buf == NULL || cr->key.secret_len == 0))
                why = "its secret is empty";
            cr->key.secret = cr->secret_buf;
        } else if (s.rsa_public_key != NULL) {
            /* (no key at all: only keys from jwks_url can verify its tokens) */
            cr->key.pkey = sl_jwt_public_key(cr->key.alg, s.rsa_public_key);
            if (cr->key.pkey == NULL)
                why = "its rsa_public_key is not a usable public key for the algorithm "
                      "(RSA of at least 2048 bits, or EC on the algorithm's curve)";
        }
        if (why)
            return sl_plugin_config_error(err, cfg, pc, NULL,
                                          "jwt_secret '%s' (%s:%d:%d): %s: a token could never "
                                          "be verified with it",
                                          s.key, sl_plugin_config_source(cfg), s.line, s.column,
                                          why);
    }
    qsort(c->creds, c->n_creds, sizeof *c->creds, cred_cmp);
    return true;
}

static bool realm_is_safe(const char *realm)
{
    for (const unsigned char *p = (const unsigned char *)realm; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            return false;
    return true;
}

static bool jwt_parse(const struct sl_plugin_conf *pc, const struct sl_config *cfg, void **out,
                      struct sl_config_error *err)
{
    static const char *const known[] = {"uri_param_names",
                                        "cookie_names",
                                        "header_names",
                                        "key_claim_name",
                                        "secret_is_base64",
                                        "claims_to_verify",
                                        "maximum_expiration",
                                        "anonymous",
                                        "run_on_preflight",
                                        "realm",
                                        "jwks_url",
                                        "jwks_refresh_interval",
                                        NULL};
    if (!sl_plugin_config_known_keys(pc, cfg, known, err))
        return false;
    struct jwt_conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        return sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
    c->id = atomic_fetch_add(&next_conf_id, 1);
    c->key_claim_name = "iss";
    c->run_on_preflight = true;
    bool secret_is_base64 = false;
    const char **claims = NULL;
    size_t n_claims = 0;
    const char *anonymous = NULL, *realm = NULL, *jwks_url = NULL;
    long long jwks_refresh = 300;
    const struct sl_conf_value *cv = pc->config;
    bool ok = sl_plugin_config_strings(pc, cfg, "uri_param_names", &c->uri_param_names,
                                       &c->n_uri_param_names, err) &&
              sl_plugin_config_strings(pc, cfg, "cookie_names", &c->cookie_names,
                                       &c->n_cookie_names, err) &&
              sl_plugin_config_strings(pc, cfg, "header_names", &c->header_names,
                                       &c->n_header_names, err) &&
              sl_plugin_config_string(pc, cfg, "key_claim_name", &c->key_claim_name, NULL, err) &&
              sl_plugin_config_bool(pc, cfg, "secret_is_base64", &secret_is_base64, err) &&
              sl_plugin_config_strings(pc, cfg, "claims_to_verify", &claims, &n_claims, err) &&
              sl_plugin_config_int(pc, cfg, "maximum_expiration", 0, 31536000,
                                   &c->maximum_expiration, err) &&
              sl_plugin_config_string(pc, cfg, "anonymous", &anonymous, NULL, err) &&
              sl_plugin_config_bool(pc, cfg, "run_on_preflight", &c->run_on_preflight, err) &&
              sl_plugin_config_string(pc, cfg, "realm", &realm, NULL, err) &&
              sl_plugin_config_string(pc, cfg, "jwks_url", &jwks_url, NULL, err) &&
              sl_plugin_config_int(pc, cfg, "jwks_refresh_interval", 1, 86400, &jwks_refresh, err);
    if (!ok)
        goto fail;
    /* Kong's defaults when the keys are absent */
    static const char *const default_uri[] = {"jwt"}, *const default_header[] = {"authorization"};
    if (c->uri_param_names == NULL && sl_conf_get(cv, "uri_param_names") == NULL) {
        c->uri_param_names = malloc(sizeof *c->uri_param_names);
        if (c->uri_param_names) {
            c->uri_param_names[0] = default_uri[0];
            c->n_uri_param_names = 1;
        }
    }
    if (c->header_names == NULL && sl_conf_get(cv, "header_names") == NULL) {
        c->header_names = malloc(sizeof *c->header_names);
        if (c->header_names) {
            c->header_names[0] = default_header[0];
            c->n_header_names = 1;
        }
    }
    if (c->n_uri_param_names > JWT_MAX_NAMES || c->n_cookie_names > JWT_MAX_NAMES ||
        c->n_header_names > JWT_MAX_NAMES) {
        sl_plugin_config_error(err, cfg, pc, NULL, "at most %d names per list", JWT_MAX_NAMES);
        goto fail;
    }
    for (size_t i = 0; i < c->n_header_names; i++)
        if (!sl_plugin_is_header_name(c->header_names[i])) {
            sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "header_names"),
                                   "config.header_names: '%s' is not a header name",
                                   c->header_names[i]);
            goto fail;
        }
    if (*c->key_claim_name == '\0') {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "key_claim_name"),
                               "config.key_claim_name: must not be empty");
        goto fail;
    }
    for (size_t i = 0; i < n_claims; i++) {
        if (strcmp(claims[i], "exp") == 0) {
            c->verify_exp = true;
            if (!c->verify_nbf)
                c->exp_first = true;
        } else if (strcmp(claims[i], "nbf") == 0) {
            c->verify_nbf = true;
        } else {
            sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "claims_to_verify"),
                                   "config.claims_to_verify: expected one of: exp, nbf");
            goto fail;
        }
    }
    if (c->maximum_expiration > 0 && !c->verify_exp) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "maximum_expiration"),
                               "config.maximum_expiration: expiration check needs exp in "
                               "claims_to_verify");
        goto fail;
    }
    if (anonymous && *anonymous) {
        c->anonymous = sl_plugin_find_consumer(cfg, anonymous, strlen(anonymous));
        if (c->anonymous == NULL) {
            sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "anonymous"),
                                   "config.anonymous: no consumer with id or username '%s'",
                                   anonymous);
            goto fail;
        }
    }
    if (realm && !realm_is_safe(realm)) {
        sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "realm"),
                               "config.realm: quotes, backslashes and control characters are "
                               "not allowed");
        goto fail;
    }
    size_t www_size = (realm ? strlen(realm) : 0) + 64;
    c->www_base = malloc(www_size);
    c->www_error = malloc(www_size);
    if (!c->www_base || !c->www_error || !c->uri_param_names || !c->header_names) {
        sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
        goto fail;
    }
    if (realm)
        snprintf(c->www_base, www_size, "Bearer realm=\"%s\"", realm);
    else
        snprintf(c->www_base, www_size, "Bearer");
    snprintf(c->www_error, www_size, "%s error=\"invalid_token\"", c->www_base);
    if (!prepare_credentials(c, pc, cfg, secret_is_base64, err))
        goto fail;
    if (jwks_url) {
        if (strncmp(jwks_url, "http://", 7) != 0 && strncmp(jwks_url, "https://", 8) != 0) {
            sl_plugin_config_error(err, cfg, pc, sl_conf_get(cv, "jwks_url"),
                                   "config.jwks_url: an http:// or https:// URL");
            goto fail;
        }
        c->jwks = sl_jwks_acquire(jwks_url, (unsigned)jwks_refresh);
        if (c->jwks == NULL) {
            sl_plugin_config_error(err, cfg, pc, NULL, "out of memory");
            goto fail;
        }
    }
    free(claims);
    *out = c;
    return true;
fail:
    free(claims);
    jwt_free(c);
    return false;
}

/* ------------------------------------------------------------------------ */
/* the token                                                                 */

struct token_set {
    const char *first; /* request memory */
    size_t first_len;
    bool several; /* a second, different token */
};

static void token_add(struct token_set *ts, const char *t, size_t len)
{
    if (len == 0)
        return;
    if (ts->first == NULL) {
        ts->first = t;
        ts->first_len = len;
    } else if (ts->first_len != len || memcmp(ts->first, t, len) != 0) {
        ts->several = true;
    }
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decode (and '+' to space, as a query string) into request memory. */
static char *unescape(struct sl_plugin_ctx *ctx, const char *s, size_t len, size_t *out_len)
{
    char *out = sl_plugin_alloc(ctx, len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static void tokens_from_query(struct sl_plugin_ctx *ctx, const struct jwt_conf *c,
                              struct token_set *ts)
{
    size_t qlen;
    const char *q = sl_plugin_query(ctx, &qlen);
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq != NULL) {
            size_t name_len, value_len;
            char *name = unescape(ctx, q, (size_t)(eq - q), &name_len);
            for (size_t i = 0; name && i < c->n_uri_param_names; i++)
                if (strlen(c->uri_param_names[i]) == name_len &&
                    memcmp(c->uri_param_names[i], name, name_len) == 0) {
                    char *value = unescape(ctx, eq + 1, (size_t)(stop - eq - 1), &value_len);
                    if (value)
                        token_add(ts, value, value_len);
                    break;
                }
        }
        q = stop + 1;
    }
}

/* The first cookie `name` of the Cookie headers (nginx's $cookie_name). */
static const char *cookie_value(struct sl_plugin_ctx *ctx, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    size_t n = sl_plugin_header_count(ctx, "Cookie");
    for (size_t h = 0; h < n; h++) {
        size_t vlen;
        const char *v = sl_plugin_header(ctx, "Cookie", h, &vlen);
        const char *end = v + vlen;
        while (v && v < end) {
            while (v < end && (*v == ' ' || *v == ';'))
                v++;
            const char *semi = memchr(v, ';', (size_t)(end - v));
            const char *stop = semi ? semi : end;
            const char *eq = memchr(v, '=', (size_t)(stop - v));
            if (eq && (size_t)(eq - v) == name_len && strncasecmp(v, name, name_len) == 0) {
                *len = (size_t)(stop - eq - 1);
                return eq + 1;
            }
            v = stop;
        }
    }
    return NULL;
}

/* Kong's `\s*[Bb]earer\s+(.+)`: the rest of the value after the first
 * "Bearer" followed by white space. */
static const char *bearer_token(const char *v, size_t len, size_t *out_len)
{
    for (size_t i = 0; i + 6 < len; i++) {
        if ((v[i] != 'B' && v[i] != 'b') || memcmp(v + i + 1, "earer", 5) != 0)
            continue;
        size_t j = i + 6;
        if (!isspace((unsigned char)v[j]))
            continue;
        while (j < len && isspace((unsigned char)v[j]))
            j++;
        if (j == len)
            return NULL;
        *out_len = len - j;
        return v + j;
    }
    return NULL;
}

static void find_tokens(struct sl_plugin_ctx *ctx, const struct jwt_conf *c, struct token_set *ts)
{
    tokens_from_query(ctx, c, ts);
    for (size_t i = 0; i < c->n_cookie_names; i++) {
        size_t len;
        const char *v = cookie_value(ctx, c->cookie_names[i], &len);
        if (v)
            token_add(ts, v, len);
    }
    for (size_t i = 0; i < c->n_header_names; i++) {
        size_t len, tlen;
        const char *v = sl_plugin_header(ctx, c->header_names[i], 0, &len);
        const char *t = v ? bearer_token(v, len, &tlen) : NULL;
        if (t)
            token_add(ts, t, tlen);
    }
}

/* ------------------------------------------------------------------------ */
/* the verified-token cache (per worker)                                     */

struct cache_entry {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    uint64_t conf_id;
    size_t cred; /* index into that conf's creds */
    time_t expires;
};

struct jwt_worker {
    struct cache_entry entries[JWT_CACHE_SLOTS];
};

static struct cache_entry *cache_slot(struct sl_plugin_ctx *ctx, const unsigned char *digest)
{
    void **slot = sl_plugin_worker_data(ctx);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        *slot = calloc(1, sizeof(struct jwt_worker));
    struct jwt_worker *w = *slot;
    if (w == NULL)
        return NULL;
    uint32_t h;
    memcpy(&h, digest, sizeof h);
    return &w->entries[h % JWT_CACHE_SLOTS];
}

/* ------------------------------------------------------------------------ */
/* access                                                                    */

struct failure {
    char body[256];
    const char *www;
};

static bool fail_message(struct failure *f, const char *www, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail_message(struct failure *f, const char *www, const char *fmt, ...)
{
    char message[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    char esc[200];
    if (sl_plugin_json_escape(message, strlen(message), esc, sizeof esc) < 0)
        snprintf(esc, sizeof esc, "Unauthorized");
    snprintf(f->body, sizeof f->body, "{\"message\":\"%s\"}", esc);
    f->www = www;
    return false;
}

/* credential_key NULL: the anonymous consumer */
static void set_identity(struct sl_plugin_ctx *ctx, const struct sl_consumer *consumer,
                         const char *credential_key)
{
    sl_plugin_set_consumer(ctx, consumer, credential_key);
    const char *values[] = {sl_plugin_consumer_id(consumer), sl_plugin_consumer_custom_id(consumer),
                            sl_plugin_consumer_username(consumer), credential_key,
                            credential_key ? NULL : "true"};
    for (size_t i = 0; i < sizeof identity_headers / sizeof identity_headers[0]; i++) {
        /* a value that cannot be a header (CR, LF, NUL) is dropped, never sent */
        if (values[i] == NULL ||
            !sl_plugin_upstream_header_set(ctx, identity_headers[i], values[i], strlen(values[i])))
            sl_plugin_upstream_header_remove(ctx, identity_headers[i]);
    }
}

static const struct jwt_cred *find_cred(const struct jwt_conf *c, const char *key)
{
    size_t lo = 0, hi = c->n_creds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(key, c->creds[mid].credential_key);
        if (cmp == 0)
            return &c->creds[mid];
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The key to verify with: the JWKS key named by the token's kid (when the
 * instance has jwks_url), else the credential's own. */
static const struct sl_jwt_key *verify_key(const struct jwt_conf *c, const struct sl_jwt_token *t,
                                           const struct jwt_cred *cr, struct sl_jwt_key *jwk)
{
    if (c->jwks == NULL || sl_jwt_alg_is_hmac(t->alg))
        return &cr->key;
    json_t *kid = json_object_get(t->header, "kid");
    EVP_PKEY *pk =
        json_is_string(kid) ? sl_jwks_find(c->jwks, json_string_value(kid), t->alg) : NULL;
    if (pk == NULL)
        return &cr->key;
    jwk->alg = t->alg;
    jwk->secret = NULL;
    jwk->secret_len = 0;
    jwk->pkey = pk;
    return jwk;
}

static bool authenticate(struct sl_plugin_ctx *ctx, const struct jwt_conf *c, struct failure *f)
{
    struct token_set ts = {0};
    find_tokens(ctx, c, &ts);
    if (ts.first == NULL)
        return fail_message(f, c->www_base, "Unauthorized");
    if (ts.several)
        return fail_message(f, c->www_error, "Multiple tokens provided");

    time_t now = time(NULL);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)ts.first, ts.first_len, digest);
    struct cache_entry *slot = cache_slot(ctx, digest);
    if (slot && slot->conf_id == c->id && slot->expires > now &&
        memcmp(slot->digest, digest, sizeof digest) == 0) {
        const struct jwt_cred *cr = &c->creds[slot->cred];
        set_identity(ctx, cr->consumer, cr->credential_key);
        return true;
    }

    struct sl_jwt_token t;
    enum sl_jwt_decode_result dr = sl_jwt_decode(ts.first, ts.first_len, &t);
    if (dr != SL_JWT_DECODED)
        return fail_message(f, c->www_error, "Bad token; %s", sl_jwt_decode_reason(dr));
    bool ok = false;
    struct sl_jwt_key jwk;
    json_t *kv = json_object_get(t.claims, c->key_claim_name);
    if (kv == NULL)
        kv = json_object_get(t.header, c->key_claim_name);
    const struct jwt_cred *cr = NULL;
    if (kv == NULL || json_is_null(kv) || json_is_false(kv)) {
        fail_message(f, c->www_error, "No mandatory '%s' in claims", c->key_claim_name);
    } else if (!json_is_string(kv) || json_string_length(kv) == 0) {
        fail_message(f, c->www_error, "Invalid '%s' in claims", c->key_claim_name);
    } else if ((cr = find_cred(c, json_string_value(kv))) == NULL) {
        fail_message(f, c->www_error, "No credentials found for given '%s'", c->key_claim_name);
    } else if (t.alg != cr->key.alg) {
        fail_message(f, c->www_error, "Invalid algorithm");
    } else if (!sl_jwt_verify(&t, verify_key(c, &t, cr, &jwk))) {
        fail_message(f, c->www_error, "%s",
                     sl_jwt_alg_is_hmac(t.alg) || verify_key(c, &t, cr, &jwk)->pkey
                         ? "Invalid signature"
                         : "Invalid key/secret");
    } else if (!sl_jwt_check_claims(&t, c->verify_exp, c->verify_nbf, c->exp_first,
                                    c->maximum_expiration, now, f->body, sizeof f->body)) {
        f->www = c->www_error;
    } else {
        ok = true;
        set_identity(ctx, cr->consumer, cr->credential_key);
        if (slot) {
            /* cached until the token expires, and never longer than the TTL */
            long long exp;
            time_t until = now + JWT_CACHE_TTL_S;
            if (sl_jwt_claim_time(t.claims, "exp", &exp) && (time_t)exp < until)
                until = (time_t)exp;
            memcpy(slot->digest, digest, sizeof digest);
            slot->conf_id = c->id;
            slot->cred = (size_t)(cr - c->creds);
            slot->expires = until;
        }
    }
    sl_jwt_token_free(&t);
    return ok;
}

static enum sl_plugin_result jwt_access(struct sl_plugin_ctx *ctx, const void *arg)
{
    const struct jwt_conf *c = arg;
    /* whatever happens next, the client's own identity headers never reach
     * the upstream */
    for (size_t i = 0; i < sizeof identity_headers / sizeof identity_headers[0]; i++)
        sl_plugin_upstream_header_remove(ctx, identity_headers[i]);
    if (!c->run_on_preflight && strcmp(sl_plugin_method(ctx), "OPTIONS") == 0)
        return SL_PLUGIN_CONTINUE;
    if (c->anonymous && sl_plugin_credential_id(ctx) != NULL)
        return SL_PLUGIN_CONTINUE; /* another auth plugin authenticated it (logical OR) */
    struct failure f;
    if (authenticate(ctx, c, &f))
        return SL_PLUGIN_CONTINUE;
    if (c->anonymous) {
        set_identity(ctx, c->anonymous, NULL);
        return SL_PLUGIN_CONTINUE;
    }
    sl_plugin_response_header_set(ctx, "WWW-Authenticate", f.www, strlen(f.www));
    sl_plugin_respond(ctx, 401, "application/json; charset=utf-8", f.body, strlen(f.body));
    return SL_PLUGIN_CONTINUE;
}

const struct sl_plugin_ops sl_plugin_jwt = {
    .name = "jwt",
    .priority = 1450,
    .parse_config = jwt_parse,
    .free_config = jwt_free,
    .access = jwt_access,
    .free_worker_data = free,
    .shutdown = sl_jwks_shutdown,
};
