/* JSON Web Key Sets for the jwt plugin; see jwks.h. */
#include "jwks.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/plugin.h"

#define JWKS_MAX_DOCUMENT (1u << 20)
#define JWKS_FETCH_TIMEOUT_S 5

struct jwk {
    char *kid;
    char *alg; /* NULL: any algorithm of the key's type */
    EVP_PKEY *pkey;
    bool ec;
    char curve[32]; /* EC: OpenSSL's group name */
};

struct sl_jwks_set {
    struct jwk *keys;
    size_t n;
    unsigned char digest[SHA256_DIGEST_LENGTH]; /* of the document */
    struct sl_jwks_set *older;                  /* sets this one replaced (freed with the source) */
};

struct sl_jwks {
    char *url;
    unsigned refresh_s;
    int refs; /* under sources_lock */
    _Atomic(struct sl_jwks_set *) current;
    time_t next_fetch;
    struct sl_jwks *next;
};

static pthread_mutex_t sources_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sources_cond = PTHREAD_COND_INITIALIZER;
static struct sl_jwks *sources;
static bool fetcher_running, fetcher_stop;
/* a fetcher thread not joined yet (joined before the next one starts, and
 * at shutdown: only a join waits for its thread-local state, such as
 * OpenSSL's error queue, to be freed) */
static pthread_t fetcher_thread;
static bool fetcher_unjoined;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* parsing                                                                   */

static BIGNUM *b64_bn(const char *s)
{
    unsigned char buf[1024];
    size_t n;
    if (s == NULL || !sl_jwt_b64url_decode(s, strlen(s), buf, sizeof buf, &n) || n == 0)
        return NULL;
    return BN_bin2bn(buf, (int)n, NULL);
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_key(json_t *k)
{
    BIGNUM *n = b64_bn(json_string_value(json_object_get(k, "n")));
    BIGNUM *e = b64_bn(json_string_value(json_object_get(k, "e")));
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1)
        pkey = fromdata("RSA", bld);
    if (pkey && EVP_PKEY_get_bits(pkey) < 2048) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

static EVP_PKEY *ec_key(json_t *k, char *curve, size_t curve_size)
{
    const char *crv = json_string_value(json_object_get(k, "crv"));
    size_t size = 0;
    const char *group = NULL;
    if (crv && strcmp(crv, "P-256") == 0)
        group = "prime256v1", size = 32;
    else if (crv && strcmp(crv, "P-384") == 0)
        group = "secp384r1", size = 48;
    else if (crv && strcmp(crv, "P-521") == 0)
        group = "secp521r1", size = 66;
    if (group == NULL)
        return NULL;
    unsigned char point[1 + 2 * 66], x[128], y[128];
    size_t xn, yn;
    const char *xs = json_string_value(json_object_get(k, "x"));
    const char *ys = json_string_value(json_object_get(k, "y"));
    if (!xs || !ys || !sl_jwt_b64url_decode(xs, strlen(xs), x, sizeof x, &xn) ||
        !sl_jwt_b64url_decode(ys, strlen(ys), y, sizeof y, &yn) || xn != size || yn != size)
        return NULL;
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, size);
    memcpy(point + 1 + size, y, size);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size) == 1)
        pkey = fromdata("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    snprintf(curve, curve_size, "%s", group);
    return pkey;
}

void sl_jwks_set_free(struct sl_jwks_set *set)
{
    while (set) {
        struct sl_jwks_set *older = set->older;
        for (size_t i = 0; i < set->n; i++) {
            free(set->keys[i].kid);
            free(set->keys[i].alg);
            EVP_PKEY_free(set->keys[i].pkey);
        }
        free(set->keys);
        free(set);
        set = older;
    }
}

struct sl_jwks_set *sl_jwks_parse(const char *json, size_t len)
{
    json_error_t error;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &error);
    json_t *keys = json_object_get(root, "keys");
    struct sl_jwks_set *set = NULL;
    if (!json_is_array(keys) || (set = calloc(1, sizeof *set)) == NULL ||
        (set->keys = calloc(json_array_size(keys) + 1, sizeof *set->keys)) == NULL) {
        free(set);
        json_decref(root);
        return NULL;
    }
    SHA256((const unsigned char *)json, len, set->digest);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *use = json_string_value(json_object_get(k, "use"));
        const char *alg = json_string_value(json_object_get(k, "alg"));
        if (kty == NULL || kid == NULL || (use && strcmp(use, "sig") != 0))
            continue;
        struct jwk *j = &set->keys[set->n];
        if (strcmp(kty, "RSA") == 0) {
            j->pkey = rsa_key(k);
        } else if (strcmp(kty, "EC") == 0) {
            j->pkey = ec_key(k, j->curve, sizeof j->curve);
            j->ec = true;
        }
        if (j->pkey == NULL)
            continue; /* not a key we can verify with */
        j->kid = strdup(kid);
        j->alg = alg ? strdup(alg) : NULL;
        set->n++;
    }
    ERR_clear_error();
    json_decref(root);
    return set;
}

size_t sl_jwks_set_size(const struct sl_jwks_set *set)
{
    return set ? set->n : 0;
}

EVP_PKEY *sl_jwks_set_find(const struct sl_jwks_set *set, const char *kid, enum sl_jwt_alg alg)
{
    const char *name = sl_jwt_alg_name(alg);
    bool want_ec = name[0] == 'E', want_rsa = name[0] == 'R';
    const char *curve = alg == SL_JWT_ES256   ? "prime256v1"
                        : alg == SL_JWT_ES384 ? "secp384r1"
                                              : "secp521r1";
    for (size_t i = 0; set && kid && i < set->n; i++) {
        const struct jwk *j = &set->keys[i];
        if (strcmp(j->kid, kid) != 0 || (j->alg && strcmp(j->alg, name) != 0))
            continue;
        if ((want_rsa && !j->ec) || (want_ec && j->ec && strcmp(j->curve, curve) == 0))
            return j->pkey;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* fetching                                                                  */

struct body {
    char *p;
    size_t len;
    bool too_big;
};

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;
    if (b->len + add > JWKS_MAX_DOCUMENT) {
        b->too_big = true;
        return 0;
    }
    char *p = realloc(b->p, b->len + add + 1);
    if (p == NULL)
        return 0;
    b->p = p;
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

/* Fetch and publish; the caller holds no lock. */
static void fetch(struct sl_jwks *src, const char *url)
{
    pthread_once(&curl_once, curl_init);
    CURL *curl = curl_easy_init();
    struct body b = {0};
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (curl) {
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)JWKS_FETCH_TIMEOUT_S);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(curl);
    }
    struct sl_jwks_set *set = NULL;
    if (rc != CURLE_OK || status != 200 || b.p == NULL)
        sl_plugin_log(SL_PLUGIN_LOG_WARN, "jwt: JWKS %s: fetch failed: %s", url,
                      b.too_big        ? "document over 1 MiB"
                      : rc != CURLE_OK ? curl_easy_strerror(rc)
                      : status != 200  ? "status is not 200"
                                       : "empty");
    else if ((set = sl_jwks_parse(b.p, b.len)) == NULL)
        sl_plugin_log(SL_PLUGIN_LOG_WARN, "jwt: JWKS %s: not a JWKS document", url);
    free(b.p);
    if (set == NULL)
        return;
    struct sl_jwks_set *cur = atomic_load(&src->current);
    if (cur && memcmp(cur->digest, set->digest, sizeof set->digest) == 0) {
        sl_jwks_set_free(set); /* unchanged */
        return;
    }
    set->older = cur; /* kept: a worker may hold one of its keys */
    atomic_store(&src->current, set);
    sl_plugin_log(SL_PLUGIN_LOG_NOTICE, "jwt: JWKS %s: %zu key(s)", url, set->n);
}

static void *fetcher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&sources_lock);
    for (;;) {
        /* free released sources (all of them when stopping); stop when
         * there is none left */
        for (struct sl_jwks **pp = &sources; *pp;) {
            if ((*pp)->refs == 0 || fetcher_stop) {
                struct sl_jwks *dead = *pp;
                *pp = dead->next;
                sl_jwks_set_free(atomic_load(&dead->current));
                free(dead->url);
                free(dead);
            } else {
                pp = &(*pp)->next;
            }
        }
        if (sources == NULL)
            break;
        time_t now = time(NULL);
        struct sl_jwks *due = NULL;
        for (struct sl_jwks *s = sources; s && !due; s = s->next)
            if (s->next_fetch <= now)
                due = s;
        if (due) {
            due->next_fetch = now + due->refresh_s;
            char *url = strdup(due->url);
            due->refs++; /* alive while fetched without the lock */
            pthread_mutex_unlock(&sources_lock);
            if (url)
                fetch(due, url);
            free(url);
            pthread_mutex_lock(&sources_lock);
            due->refs--;
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sources_cond, &sources_lock, &until);
    }
    fetcher_running = false;
    pthread_cond_broadcast(&sources_cond);
    pthread_mutex_unlock(&sources_lock);
    return NULL;
}

struct sl_jwks *sl_jwks_acquire(const char *url, unsigned refresh_s)
{
    pthread_mutex_lock(&sources_lock);
    struct sl_jwks *src = NULL;
    for (struct sl_jwks *s = sources; s && !src; s = s->next)
        if (s->refresh_s == refresh_s && strcmp(s->url, url) == 0)
            src = s;
    bool fresh = src == NULL;
    if (fresh) {
        src = calloc(1, sizeof *src);
        if (src == NULL || (src->url = strdup(url)) == NULL) {
            free(src);
            pthread_mutex_unlock(&sources_lock);
            return NULL;
        }
        src->refresh_s = refresh_s;
        src->next = sources;
        sources = src;
    }
    src->refs++;
    if (!fetcher_running) {
        if (fetcher_unjoined) /* it ended (no source was left): reap it */
            pthread_join(fetcher_thread, NULL);
        fetcher_running = pthread_create(&fetcher_thread, NULL, fetcher, NULL) == 0;
        fetcher_unjoined = fetcher_running;
    }
    if (fresh) {
        /* the first fetch now (at load, never on a request): the first
         * requests find the keys; the fetcher refreshes from then on */
        src->next_fetch = time(NULL) + refresh_s;
        src->refs++;
        pthread_mutex_unlock(&sources_lock);
        fetch(src, url);
        pthread_mutex_lock(&sources_lock);
        src->refs--;
    }
    pthread_mutex_unlock(&sources_lock);
    return src;
}

void sl_jwks_shutdown(void)
{
    pthread_mutex_lock(&sources_lock);
    fetcher_stop = true;
    pthread_cond_broadcast(&sources_cond);
    bool join = fetcher_unjoined;
    fetcher_unjoined = false;
    pthread_mutex_unlock(&sources_lock);
    if (join) /* a fetch in progress ends within its timeout */
        pthread_join(fetcher_thread, NULL);
    pthread_mutex_lock(&sources_lock);
    for (struct sl_jwks *s = sources, *next; s; s = next) { /* never fetched by a thread */
        next = s->next;
        sl_jwks_set_free(atomic_load(&s->current));
        free(s->url);
        free(s);
    }
    sources = NULL;
    fetcher_stop = false;
    pthread_mutex_unlock(&sources_lock);
}

void sl_jwks_release(struct sl_jwks *src)
{
    if (src == NULL)
        return;
    pthread_mutex_lock(&sources_lock);
    src->refs--; /* the fetcher frees it */
    pthread_cond_signal(&sources_cond);
    pthread_mutex_unlock(&sources_lock);
}

EVP_PKEY *sl_jwks_find(struct sl_jwks *src, const char *kid, enum sl_jwt_alg alg)
{
    return sl_jwks_set_find(atomic_load(&src->current), kid, alg);
}
