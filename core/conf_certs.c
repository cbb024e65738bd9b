/*
 * Certificates and their SNIs, CA certificates, jwt secrets: every PEM is
 * parsed with OpenSSL here, so that TLS and the jwt plugin only ever get
 * keys they can use.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Certificates, SNIs, CA certificates, jwt secrets                         */
/* ------------------------------------------------------------------------ */

/* The key type of a PEM certificate or key: EVP_PKEY_RSA, EVP_PKEY_EC, or
 * -1 when it does not parse. */
static int pem_key_type(const char *pem, bool is_cert, bool is_private, EVP_PKEY **keep)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio == NULL)
        return -1;
    EVP_PKEY *key = NULL;
    if (is_cert) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x != NULL) {
            key = X509_get_pubkey(x);
            X509_free(x);
        }
    } else if (is_private) {
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    } else {
        key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    if (key == NULL)
        return -1;
    int type = EVP_PKEY_base_id(key);
    if (keep != NULL)
        *keep = key;
    else
        EVP_PKEY_free(key);
    return type;
}

static const char *key_type_name(int type)
{
    return type == EVP_PKEY_RSA ? "RSA" : type == EVP_PKEY_EC ? "ECDSA" : "other";
}

/* cert + key: both parse and belong together; returns the key type. */
static int check_cert_pair(struct loader *L, const struct entity *e, const char *cert_field,
                           const char *cert, const char *key_field, const char *key)
{
    EVP_PKEY *pub = NULL, *priv = NULL;
    int t1 = pem_key_type(cert, true, false, &pub);
    if (t1 < 0) {
        conf_fail(L, conf_value_of(e, cert_field), "%s: not a PEM certificate", cert_field);
        return -1;
    }
    int t2 = pem_key_type(key, false, true, &priv);
    if (t2 < 0) {
        EVP_PKEY_free(pub);
        conf_fail(L, conf_value_of(e, key_field), "%s: not a PEM private key", key_field);
        return -1;
    }
    bool match = EVP_PKEY_eq(pub, priv) == 1;
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    if (!match) {
        conf_fail(L, conf_value_of(e, key_field), "%s does not match %s", key_field, cert_field);
        return -1;
    }
    if (t1 != EVP_PKEY_RSA && t1 != EVP_PKEY_EC) {
        conf_fail(L, conf_value_of(e, cert_field), "%s: only RSA and ECDSA keys are supported",
                  cert_field);
        return -1;
    }
    return t1;
}

static bool certificate_snis(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                             const struct sl_conf_value *val)
{
    return conf_read_snis(L, val, e->index);
}

static const struct field certificate_fields[] = {
    {"id", FK_UUID, offsetof(struct sl_certificate, id), 0, 0, NULL},
    {"cert", FK_STRING, offsetof(struct sl_certificate, cert), 0, 0, NULL},
    {"key", FK_STRING, offsetof(struct sl_certificate, key), 0, 0, NULL},
    {"cert_alt", FK_STRING, offsetof(struct sl_certificate, cert_alt), 0, 0, NULL},
    {"key_alt", FK_STRING, offsetof(struct sl_certificate, key_alt), 0, 0, NULL},
    {"snis", FK_CUSTOM, 0, 0, 0, certificate_snis},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

bool conf_read_certificates(struct loader *L, const struct sl_conf_value *seq)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_certificate *c = conf_vec_push(&L->certificates);
        if (c == NULL)
            return conf_fail_oom(L);
        size_t index = L->certificates.n - 1;
        struct sl_certificate tmp = {
            .index = index, .line = seq->items[i]->line, .column = seq->items[i]->column};
        struct entity e = ENTITY("certificate", &tmp, index, certificate_fields, NONE, NONE, NONE);
        if ((c = conf_read_entity_into(L, &e, seq->items[i], &L->certificates, &tmp, sizeof tmp)) ==
            NULL)
            return false;
        if (c->cert == NULL || c->key == NULL)
            return conf_fail(L, e.node, "certificate needs 'cert' and 'key'");
        if ((c->cert_alt == NULL) != (c->key_alt == NULL))
            return conf_fail(L, conf_value_of(&e, c->cert_alt ? "cert_alt" : "key_alt"),
                             "'cert_alt' and 'key_alt' go together");
        int type = check_cert_pair(L, &e, "cert", c->cert, "key", c->key);
        if (type < 0)
            return false;
        if (c->cert_alt != NULL) {
            int alt = check_cert_pair(L, &e, "cert_alt", c->cert_alt, "key_alt", c->key_alt);
            if (alt < 0)
                return false;
            if (alt == type)
                return conf_fail(L, conf_value_of(&e, "cert_alt"),
                                 "cert_alt must be of the other key type than cert (both are %s)",
                                 key_type_name(type));
        }
        if (!conf_unique(L, NS_CERTIFICATE_ID, "certificate id", c->id, conf_value_of(&e, "id"),
                         index))
            return false;
    }
    return true;
}

static bool sni_name(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                     const struct sl_conf_value *val)
{
    struct sl_sni *s = e->obj;
    const char *text = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &text))
        return false;
    char *h = conf_strdup(L, text);
    if (h == NULL)
        return false;
    for (char *c = h; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    size_t n = strlen(h);
    if (strcmp(h, "*") == 0) { /* Kong: the certificate for any other name */
        s->name = h;
        return true;
    }
    bool leading = n > 2 && h[0] == '*' && h[1] == '.';
    bool trailing = n > 2 && h[n - 1] == '*' && h[n - 2] == '.';
    const char *name = leading ? h + 2 : h;
    size_t name_len = leading || trailing ? n - 2 : n;
    if (memchr(name, '*', name_len) != NULL)
        return conf_fail(
            L, val, "invalid SNI '%s': the wildcard must be the leftmost or the rightmost label",
            conf_excerpt(q, text));
    if (!conf_valid_hostname(name, name_len))
        return conf_fail(L, val, "invalid SNI '%s'", conf_excerpt(q, text));
    s->name = h;
    return true;
}

static bool sni_certificate(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                            const struct sl_conf_value *val)
{
    if (e->parent_service != NONE) /* parent_service carries the certificate here */
        return conf_fail(L, key,
                         "conflicting values: this SNI is nested under a certificate already");
    return conf_read_ref(L, e, REF_CERTIFICATE, val, OWNER_SNI);
}

static const struct field sni_fields[] = {
    {"name", FK_CUSTOM, 0, 0, 0, sni_name},
    {"id", FK_UUID, NONE, 0, 0, NULL},
    {"certificate", FK_CUSTOM, 0, 0, 0, sni_certificate},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

bool conf_read_snis(struct loader *L, const struct sl_conf_value *seq, size_t certificate)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sni_rec *rec = conf_vec_push(&L->snis);
        if (rec == NULL)
            return conf_fail_oom(L);
        size_t index = L->snis.n - 1;
        const struct sl_conf_value *item = seq->items[i];
        struct sni_rec tmp = {.s = {.line = item->line, .column = item->column},
                              .certificate = certificate};
        struct entity e = ENTITY("sni", &tmp.s, index, sni_fields, certificate, NONE, NONE);
        bool ok;
        if (item->type == SL_CONF_STRING && certificate != NONE) /* snis: [a.example.com] */
            ok = sni_name(L, &e, item, item);
        else
            ok = conf_read_entity(L, &e, item);
        rec = conf_vec_at(&L->snis, index);
        *rec = tmp;
        if (!ok)
            return false;
        const struct sl_conf_value *at =
            item->type == SL_CONF_STRING ? item : conf_value_of(&e, "name");
        if (rec->s.name == NULL)
            return conf_fail(L, e.node, "sni needs a 'name'");
        if (certificate == NONE && conf_seen(&e, "certificate") == NULL)
            return conf_fail(L, e.node, "sni needs a 'certificate'");
        if (!conf_unique(L, NS_SNI_NAME, "SNI", rec->s.name, at, index))
            return false;
    }
    return true;
}

bool conf_read_ca_certificates(struct loader *L, const struct sl_conf_value *seq)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    static const struct field ca_fields[] = {
        {"id", FK_UUID, offsetof(struct sl_ca_certificate, id), 0, 0, NULL},
        {"cert", FK_STRING, offsetof(struct sl_ca_certificate, cert), 0, 0, NULL},
        {"cert_digest", FK_STRING, NONE, 0, 0, NULL},
        {"tags", FK_TAGS, NONE, 0, 0, NULL},
        {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
        {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
    };
    for (size_t i = 0; i < seq->n_items; i++) {
        struct sl_ca_certificate *c = conf_vec_push(&L->ca_certificates);
        if (c == NULL)
            return conf_fail_oom(L);
        size_t index = L->ca_certificates.n - 1;
        struct sl_ca_certificate tmp = {.line = seq->items[i]->line,
                                        .column = seq->items[i]->column};
        struct entity e = ENTITY("ca_certificate", &tmp, index, ca_fields, NONE, NONE, NONE);
        if ((c = conf_read_entity_into(L, &e, seq->items[i], &L->ca_certificates, &tmp,
                                       sizeof tmp)) == NULL)
            return false;
        if (c->cert == NULL)
            return conf_fail(L, e.node, "ca_certificate needs a 'cert'");
        int is_ca = -1;
        BIO *bio = BIO_new_mem_buf(c->cert, -1);
        X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        if (x != NULL)
            is_ca = X509_check_ca(x) >= 1;
        X509_free(x);
        BIO_free(bio);
        if (is_ca < 0)
            return conf_fail(L, conf_value_of(&e, "cert"), "cert: not a PEM certificate");
        if (!is_ca) /* Kong's ca_certificates schema, same words */
            return conf_fail(
                L, conf_value_of(&e, "cert"),
                "cert: certificate does not appear to be a CA because it is missing the "
                "\"CA\" basic constraint");
        if (!conf_unique(L, NS_CA_ID, "ca_certificate id", c->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}

static bool jwt_algorithm(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    static const char *const names[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                        "RS512", "ES256", "ES384", "ES512"};
    /* Kong 3 knows these too; the jwt plugin here does not verify them */
    static const char *const later[] = {"PS256", "PS384", "PS512", "EdDSA"};
    const char *s = NULL; /* set by conf_read_string() */
    char q[100];
    if (!conf_read_string(L, val, &s))
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0)
            return (((struct sl_jwt_secret *)e->obj)->algorithm = conf_strdup(L, s)) != NULL;
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
        if (strcmp(s, later[i]) == 0)
            return conf_fail(L, val, "algorithm '%s' is not supported yet", s);
    return conf_fail(L, val,
                     "invalid algorithm '%s': expected one of HS256, HS384, HS512, RS256, RS384, "
                     "RS512, ES256, ES384, ES512",
                     conf_excerpt(q, s));
}

static bool jwt_consumer(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    if (e->parent_consumer != NONE)
        return conf_fail(L, key,
                         "conflicting values: this jwt_secret is nested under a consumer already");
    return conf_read_ref(L, e, REF_CONSUMER, val, OWNER_JWT);
}

static const struct field jwt_fields[] = {
    {"id", FK_UUID, offsetof(struct sl_jwt_secret, id), 0, 0, NULL},
    {"key", FK_STRING, offsetof(struct sl_jwt_secret, key), 0, 0, NULL},
    {"secret", FK_STRING, offsetof(struct sl_jwt_secret, secret), 0, 0, NULL},
    {"rsa_public_key", FK_STRING, offsetof(struct sl_jwt_secret, rsa_public_key), 0, 0, NULL},
    {"algorithm", FK_CUSTOM, 0, 0, 0, jwt_algorithm},
    {"consumer", FK_CUSTOM, 0, 0, 0, jwt_consumer},
    {"tags", FK_TAGS, NONE, 0, 0, NULL},
    {"_comment", FK_COMMENT, NONE, 0, 0, NULL},
    {"_ignore", FK_IGNORE, NONE, 0, 0, NULL},
};

/* Kong makes up key and secret when they are absent: 32 random hex digits. */
static char *random_hex(struct loader *L, const struct sl_conf_value *at)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        conf_fail(L, at, "cannot generate a random key or secret");
        return NULL;
    }
    char *out = conf_alloc(L, 33);
    if (out != NULL)
        for (size_t i = 0; i < 16; i++)
            snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return out;
}

bool conf_read_jwt_secrets(struct loader *L, const struct sl_conf_value *seq, size_t consumer)
{
    if (!conf_expect_type(L, seq, SL_CONF_SEQ))
        return false;
    for (size_t i = 0; i < seq->n_items; i++) {
        struct jwt_rec *rec = conf_vec_push(&L->jwt_secrets);
        if (rec == NULL)
            return conf_fail_oom(L);
        size_t index = L->jwt_secrets.n - 1;
        struct jwt_rec tmp = {
            .j = {.index = index, .line = seq->items[i]->line, .column = seq->items[i]->column},
            .consumer = consumer};
        struct entity e = ENTITY("jwt_secret", &tmp.j, index, jwt_fields, NONE, NONE, consumer);
        if ((rec = conf_read_entity_into(L, &e, seq->items[i], &L->jwt_secrets, &tmp,
                                         sizeof tmp)) == NULL)
            return false;
        struct sl_jwt_secret *j = &rec->j;
        if (consumer == NONE && conf_seen(&e, "consumer") == NULL)
            return conf_fail(L, e.node, "jwt_secret needs a 'consumer'");
        if (j->algorithm == NULL && (j->algorithm = conf_strdup(L, "HS256")) == NULL)
            return false;
        if ((j->key == NULL && (j->key = random_hex(L, e.node)) == NULL))
            return false;
        if (j->algorithm[0] == 'H') {
            /* an empty secret would make libjwt skip verification: never */
            if (j->secret == NULL && (j->secret = random_hex(L, e.node)) == NULL)
                return false;
        } else if (j->rsa_public_key != NULL) {
            /* without one (unlike Kong), the key must come from the jwt
             * plugin's jwks_url: an instance without it refuses the token */
            int want = j->algorithm[0] == 'R' ? EVP_PKEY_RSA : EVP_PKEY_EC;
            EVP_PKEY *pub = NULL;
            int type = pem_key_type(j->rsa_public_key, false, false, &pub);
            if (type < 0)
                return conf_fail(L, conf_value_of(&e, "rsa_public_key"),
                                 "rsa_public_key: not a PEM public key");
            /* RFC 7518 section 3.4: ES256 is P-256, ES384 P-384, ES512 P-521;
             * a key on another curve could never verify a token */
            const char *curve = strcmp(j->algorithm, "ES256") == 0   ? "prime256v1"
                                : strcmp(j->algorithm, "ES384") == 0 ? "secp384r1"
                                                                     : "secp521r1";
            char group[64] = "";
            size_t group_len = 0;
            if (type == EVP_PKEY_EC &&
                EVP_PKEY_get_group_name(pub, group, sizeof group, &group_len) != 1)
                group[0] = '\0';
            EVP_PKEY_free(pub);
            if (type != want)
                return conf_fail(L, conf_value_of(&e, "rsa_public_key"),
                                 "rsa_public_key: a %s key cannot verify %s", key_type_name(type),
                                 j->algorithm);
            if (want == EVP_PKEY_EC && strcmp(group, curve) != 0)
                return conf_fail(L, conf_value_of(&e, "rsa_public_key"),
                                 "rsa_public_key: %s needs a key on curve %s, got %s", j->algorithm,
                                 curve, group[0] ? group : "an unknown curve");
        }
        if (!conf_unique(L, NS_JWT_KEY, "jwt_secret key", j->key, conf_value_of(&e, "key"),
                         index) ||
            !conf_unique(L, NS_JWT_ID, "jwt_secret id", j->id, conf_value_of(&e, "id"), index))
            return false;
    }
    return true;
}
