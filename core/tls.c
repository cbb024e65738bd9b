/* TLS termination contexts; see tls.h. */
#include "tls.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "util.h"

struct sni_entry {
    const char *name; /* owned by the config snapshot: lower case, may start "*." or end ".*" */
    size_t ctx;       /* index into ctxs */
};

struct sl_tls {
    SSL_CTX **ctxs; /* one per certificate, in file order */
    size_t n_ctxs;
    size_t default_ctx;
    struct sni_entry *snis;
    size_t n_snis;
};

/* ------------------------------------------------------------------------ */
/* session ticket keys                                                       */

static unsigned char ticket_master[32];
static time_t (*ticket_clock)(time_t *) = time;
static bool ticket_master_ok;
static pthread_once_t ticket_master_once = PTHREAD_ONCE_INIT;

static void make_ticket_master(void)
{
    ticket_master_ok = RAND_bytes(ticket_master, sizeof ticket_master) == 1;
    if (!ticket_master_ok)
        sl_warn("tls: no random bytes for session ticket keys: tickets are off");
}

static void derive(const char *label, uint64_t epoch, unsigned char out[32])
{
    unsigned char msg[32];
    size_t label_len = strlen(label);
    memcpy(msg, label, label_len);
    for (int i = 0; i < 8; i++)
        msg[label_len + (size_t)i] = (unsigned char)(epoch >> (56 - 8 * i));
    unsigned int out_len = 32;
    HMAC(EVP_sha256(), ticket_master, sizeof ticket_master, msg, label_len + 8, out, &out_len);
}

void sl_tls_ticket_keys(uint64_t epoch, unsigned char name[16], unsigned char aes[32],
                        unsigned char hmac[32])
{
    unsigned char full_name[32];
    pthread_once(&ticket_master_once, make_ticket_master);
    derive("sluice name", epoch, full_name);
    memcpy(name, full_name, 16);
    derive("sluice aes", epoch, aes);
    derive("sluice hmac", epoch, hmac);
}

void sl_tls_set_clock(time_t (*clock)(time_t *))
{
    ticket_clock = clock ? clock : time;
}

static int set_ticket_mac(EVP_MAC_CTX *hctx, unsigned char key[32])
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket key callback: 1 = use (and keep) the ticket, 2 = use it
 * and issue a fresh one, 0 = unknown key (full handshake), -1 = error. */
/* The keys of an epoch, derived once per thread and epoch (a handshake
 * that issues or reads a ticket would otherwise pay three HMACs). */
struct epoch_keys {
    bool valid;
    uint64_t epoch;
    unsigned char name[16], aes[32], mac[32];
};
static _Thread_local struct epoch_keys keys_cache[2];

static const struct epoch_keys *keys_of(uint64_t epoch)
{
    struct epoch_keys *k = &keys_cache[epoch & 1];
    if (!k->valid || k->epoch != epoch) {
        sl_tls_ticket_keys(epoch, k->name, k->aes, k->mac);
        k->epoch = epoch;
        k->valid = true;
    }
    return k;
}

/* AES-256-CBC fetched once: EVP_aes_256_cbc() makes OpenSSL 3 look the
 * cipher up (a locked table) on every use. */
static EVP_CIPHER *ticket_cipher;
static pthread_once_t ticket_cipher_once = PTHREAD_ONCE_INIT;
static void fetch_ticket_cipher(void)
{
    ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

/* OpenSSL's ticket key callback: 1 = use (and keep) the ticket, 2 = use it
 * and issue a fresh one, 0 = unknown key (full handshake), -1 = error. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    (void)ssl;
    pthread_once(&ticket_master_once, make_ticket_master);
    pthread_once(&ticket_cipher_once, fetch_ticket_cipher);
    if (!ticket_master_ok || ticket_cipher == NULL)
        return enc ? -1 : 0;
    uint64_t epoch = (uint64_t)ticket_clock(NULL) / SL_TLS_TICKET_PERIOD_S;
    unsigned char mac[32];
    if (enc) {
        const struct epoch_keys *k = keys_of(epoch);
        memcpy(key_name, k->name, 16);
        memcpy(mac, k->mac, sizeof mac);
        int ok = RAND_bytes(iv, 16) == 1 &&
                 EVP_EncryptInit_ex(cctx, ticket_cipher, NULL, k->aes, iv) == 1 &&
                 set_ticket_mac(hctx, mac) == 1;
        OPENSSL_cleanse(mac, sizeof mac);
        return ok ? 1 : -1;
    }
    for (uint64_t back = 0; back < 2 && back <= epoch; back++) {
        const struct epoch_keys *k = keys_of(epoch - back);
        if (CRYPTO_memcmp(key_name, k->name, 16) != 0)
            continue;
        memcpy(mac, k->mac, sizeof mac);
        int ok = EVP_DecryptInit_ex(cctx, ticket_cipher, NULL, k->aes, iv) == 1 &&
                 set_ticket_mac(hctx, mac) == 1;
        OPENSSL_cleanse(mac, sizeof mac);
        return ok ? (back == 0 ? 1 : 2) : -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* ALPN and SNI                                                              */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *in, unsigned int in_len, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned int i = 0; i < in_len;) {
        unsigned int len = in[i];
        if (i + 1 + len > in_len)
            break;
        if (len == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *out_len = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    /* only h2 (say) offered: go on without ALPN, HTTP/1.1 is what we speak */
    return SSL_TLSEXT_ERR_NOACK;
}

static bool sni_matches(const char *pattern, const char *name, size_t name_len)
{
    size_t plen = strlen(pattern);
    if (plen > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com": exactly one more label in front */
        size_t suffix = plen - 1; /* ".example.com" */
        if (name_len <= suffix || strncasecmp(name + name_len - suffix, pattern + 1, suffix) != 0)
            return false;
        return memchr(name, '.', name_len - suffix) == NULL;
    }
    if (plen > 2 && pattern[plen - 1] == '*' && pattern[plen - 2] == '.') {
        /* "example.*": exactly one more label behind */
        size_t prefix = plen - 1; /* "example." */
        if (name_len <= prefix || strncasecmp(name, pattern, prefix) != 0)
            return false;
        return memchr(name + prefix, '.', name_len - prefix) == NULL;
    }
    return plen == name_len && strncasecmp(pattern, name, name_len) == 0;
}

static long find_sni(const struct sl_tls *tls, const char *name)
{
    size_t len = strlen(name);
    while (len > 0 && name[len - 1] == '.')
        len--; /* "example.com." is example.com */
    /* Kong's order: the exact name, a prefix wildcard ("*.x"), a suffix
     * wildcard ("x.*"); then the "*" certificate (the default) */
    for (int pass = 0; pass < 3; pass++)
        for (size_t i = 0; i < tls->n_snis; i++) {
            const char *p = tls->snis[i].name;
            int kind = p[0] == '*' ? 1 : strchr(p, '*') != NULL ? 2 : 0;
            if (kind == pass && strcmp(p, "*") != 0 && sni_matches(p, name, len))
                return (long)tls->snis[i].ctx;
        }
    return -1;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct sl_tls *tls = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        return SSL_TLSEXT_ERR_OK; /* the default certificate */
    long i = find_sni(tls, name);
    if (i >= 0 && tls->ctxs[i] != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, tls->ctxs[i]);
    return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------------------ */
/* contexts                                                                  */

static void openssl_error(char *err, size_t err_size, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    snprintf(err, err_size, "%s: %s", what, buf);
}

/* One certificate (its chain follows it in the PEM) and its key. */
static bool use_pair(SSL_CTX *ctx, const char *cert_pem, const char *key_pem, char *err,
                     size_t err_size)
{
    bool ok = false;
    BIO *cb = BIO_new_mem_buf(cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (leaf && chain && key) {
        X509 *extra;
        while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL)
            if (!sk_X509_push(chain, extra))
                X509_free(extra);
        ERR_clear_error(); /* the end of the PEM */
        ok = SSL_CTX_use_cert_and_key(ctx, leaf, key, chain, 1) == 1;
    }
    if (!ok)
        openssl_error(err, err_size, "certificate");
    X509_free(leaf);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    BIO_free(cb);
    BIO_free(kb);
    return ok;
}

static SSL_CTX *new_ctx(struct sl_tls *tls, char *err, size_t err_size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_error(err, err_size, "SSL_CTX_new");
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, SL_TLS_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, SL_TLS_GROUPS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1) {
        openssl_error(err, err_size, "TLS policy");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE); /* Mozilla: off */
    /* partial and moved writes: write_now and libevent may retry a blocked
     * SSL_write with the bytes at another address (see proxy.c) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only */
    /* no read_ahead: OpenSSL would keep bytes the socket no longer shows
     * as readable, and libevent's bufferevent would wait for them forever */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, SL_TLS_TICKET_PERIOD_S);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, tls);
    return ctx;
}

struct sl_tls *sl_tls_new(const struct sl_config *cfg, char *err, size_t err_size)
{
    if (cfg->n_certificates == 0) {
        snprintf(err, err_size, "%s: an ssl listener needs at least one entry in 'certificates'",
                 cfg->source_path);
        return NULL;
    }
    struct sl_tls *tls = calloc(1, sizeof *tls);
    if (tls == NULL || (tls->ctxs = calloc(cfg->n_certificates, sizeof *tls->ctxs)) == NULL ||
        (cfg->n_snis && (tls->snis = calloc(cfg->n_snis, sizeof *tls->snis)) == NULL)) {
        snprintf(err, err_size, "out of memory");
        sl_tls_free(tls);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_certificates; i++) {
        const struct sl_certificate *c = &cfg->certificates[i];
        char why[400];
        SSL_CTX *ctx = new_ctx(tls, why, sizeof why);
        if (ctx == NULL || !use_pair(ctx, c->cert, c->key, why, sizeof why) ||
            (c->cert_alt && !use_pair(ctx, c->cert_alt, c->key_alt, why, sizeof why))) {
            snprintf(err, err_size, "%s:%d:%d: %s", cfg->source_path, c->line, c->column, why);
            SSL_CTX_free(ctx);
            sl_tls_free(tls);
            return NULL;
        }
        tls->ctxs[i] = ctx;
        tls->n_ctxs = i + 1;
    }
    for (size_t i = 0; i < cfg->n_snis; i++) {
        tls->snis[i].name = cfg->snis[i].name;
        tls->snis[i].ctx = cfg->snis[i].certificate->index;
        if (strcmp(cfg->snis[i].name, "*") == 0)
            tls->default_ctx = tls->snis[i].ctx; /* Kong: the "*" SNI is the default */
    }
    tls->n_snis = cfg->n_snis;
    return tls;
}

void sl_tls_free(struct sl_tls *tls)
{
    if (tls == NULL)
        return;
    for (size_t i = 0; i < tls->n_ctxs; i++)
        SSL_CTX_free(tls->ctxs[i]);
    free(tls->ctxs);
    free(tls->snis);
    free(tls);
}

SSL *sl_tls_new_ssl(struct sl_tls *tls)
{
    return SSL_new(tls->ctxs[tls->default_ctx]);
}

const char *sl_tls_sni(SSL *ssl)
{
    return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}

/* ------------------------------------------------------------------------ */
/* client side (upstream TLS)                                                */

struct client_profile {
    unsigned char key[32]; /* SHA-256 of the settings */
    SSL_CTX *ctx;
};

static struct client_profile client_profiles[SL_TLS_MAX_CLIENT_PROFILES];
static size_t n_client_profiles;
static pthread_mutex_t client_profiles_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct sl_ca_certificate *find_ca(const struct sl_config *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->n_ca_certificates; i++)
        if (cfg->ca_certificates[i].id && strcmp(cfg->ca_certificates[i].id, id) == 0)
            return &cfg->ca_certificates[i];
    return NULL;
}

static SSL_CTX *new_client_ctx(const struct sl_config *cfg, const struct sl_service *svc, char *err,
                               size_t err_size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        openssl_error(err, err_size, "upstream TLS");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* partial and moved writes: write_now and libevent may retry a blocked
     * SSL_write with the bytes at another address (see proxy.c) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!svc->tls_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (svc->tls_verify_depth >= 0)
        SSL_CTX_set_verify_depth(ctx, svc->tls_verify_depth);
    if (svc->n_ca_certificates == 0) {
        if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            openssl_error(err, err_size, "upstream TLS: the system CA store");
            SSL_CTX_free(ctx);
            return NULL;
        }
        return ctx;
    }
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    for (size_t i = 0; i < svc->n_ca_certificates; i++) {
        const struct sl_ca_certificate *ca = find_ca(cfg, svc->ca_certificates[i]);
        BIO *b = ca ? BIO_new_mem_buf(ca->cert, -1) : NULL;
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        bool ok = x != NULL && X509_STORE_add_cert(store, x) == 1;
        X509_free(x);
        BIO_free(b);
        if (!ok) {
            openssl_error(err, err_size, "upstream TLS: ca_certificate");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

static void hash_add(EVP_MD_CTX *md, const char *s)
{
    size_t len = s ? strlen(s) + 1 : 0; /* the NUL separates fields */
    EVP_DigestUpdate(md, s ? s : "", len ? len : 1);
}

SSL_CTX *sl_tls_client_ctx(const struct sl_config *cfg, const struct sl_service *svc, char *err,
                           size_t err_size)
{
    unsigned char key[32];
    char head[32];
    snprintf(head, sizeof head, "%d/%d", svc->tls_verify, svc->tls_verify_depth);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool hashed = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    if (hashed) {
        hash_add(md, head);
        for (size_t i = 0; svc->tls_verify && i < svc->n_ca_certificates; i++) {
            const struct sl_ca_certificate *ca = find_ca(cfg, svc->ca_certificates[i]);
            hash_add(md, ca ? ca->cert : NULL);
        }
        hashed = EVP_DigestFinal_ex(md, key, NULL) == 1;
    }
    EVP_MD_CTX_free(md);
    if (!hashed) {
        openssl_error(err, err_size, "upstream TLS");
        return NULL;
    }
    SSL_CTX *found = NULL;
    pthread_mutex_lock(&client_profiles_lock);
    for (size_t i = 0; i < n_client_profiles && !found; i++)
        if (memcmp(client_profiles[i].key, key, sizeof key) == 0)
            found = client_profiles[i].ctx;
    if (!found) {
        if (n_client_profiles == SL_TLS_MAX_CLIENT_PROFILES) {
            snprintf(err, err_size, "more than %d different upstream TLS settings",
                     SL_TLS_MAX_CLIENT_PROFILES);
        } else if ((found = new_client_ctx(cfg, svc, err, err_size)) != NULL) {
            memcpy(client_profiles[n_client_profiles].key, key, sizeof key);
            client_profiles[n_client_profiles++].ctx = found;
        }
    }
    pthread_mutex_unlock(&client_profiles_lock);
    return found;
}

bool sl_tls_client_prepare(SSL *ssl, const char *host)
{
    bool is_ip = sl_is_ip_literal(host);
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        return false;
    if (SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE)
        return true;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    return is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1
                 : X509_VERIFY_PARAM_set1_host(param, host, 0) == 1;
}
