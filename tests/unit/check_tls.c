/*
 * TLS contexts (core/tls.c), with client and server in memory (a BIO pair):
 * certificate choice by SNI and the default, ALPN, the protocol floor,
 * session tickets and the hourly rotation of their keys.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tls.h"
#include "unit.h"

static char *slurp(const char *name)
{
    char path[4096];
    const char *d = getenv("SLUICE_SRCDIR");
    snprintf(path, sizeof path, "%s/tests/unit/data/tls/%s", d && *d ? d : ".", name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[8][8192];
    static int next;
    char *out = buf[next++ % 8];
    size_t n = fread(out, 1, sizeof buf[0] - 1, f);
    out[n] = '\0';
    fclose(f);
    return out;
}

/* A PEM as a YAML double-quoted scalar. */
static void quoted(char *out, size_t size, const char *pem)
{
    size_t o = 0;
    out[o++] = '"';
    for (const char *p = pem; *p && o + 3 < size; p++) {
        if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* rsa.crt for rsa.example.test; ec.crt for ec.example.test and "*" (the default). */
static struct sl_config *two_certificates(void)
{
    static char yaml[40000];
    char rc[9000], rk[9000], ec[9000], ek[9000];
    quoted(rc, sizeof rc, slurp("rsa.crt"));
    quoted(rk, sizeof rk, slurp("rsa.key"));
    quoted(ec, sizeof ec, slurp("ec.crt"));
    quoted(ek, sizeof ek, slurp("ec.key"));
    snprintf(yaml, sizeof yaml,
             "_format_version: \"3.0\"\n"
             "gateway:\n  proxy_listen: [\"127.0.0.1:1 ssl\"]\n"
             "certificates:\n"
             "  - cert: %s\n    key: %s\n    snis: [rsa.example.test, \"*.wild.test\"]\n"
             "  - cert: %s\n    key: %s\n    snis: [ec.example.test, \"*\"]\n",
             rc, rk, ec, ek);
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load_buffer(yaml, strlen(yaml), "t.yml", "gateway", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    return cfg;
}

struct conn {
    SSL *client, *server;
};

static struct conn pair(struct sl_tls *tls, SSL_CTX *cctx, const char *sni)
{
    struct conn c = {SSL_new(cctx), sl_tls_new_ssl(tls)};
    ck_assert_ptr_nonnull(c.client);
    ck_assert_ptr_nonnull(c.server);
    BIO *cb, *sb;
    ck_assert_int_eq(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
    SSL_set_bio(c.client, cb, cb);
    SSL_set_bio(c.server, sb, sb);
    SSL_set_connect_state(c.client);
    SSL_set_accept_state(c.server);
    if (sni)
        SSL_set_tlsext_host_name(c.client, sni);
    return c;
}

/* Drive both ends until the handshake ends; true when both finished. */
static bool handshake(struct conn *c)
{
    for (int i = 0; i < 50; i++) {
        int a = SSL_do_handshake(c->client);
        int b = SSL_do_handshake(c->server);
        if (a == 1 && b == 1)
            return true;
        int ea = a == 1 ? SSL_ERROR_NONE : SSL_get_error(c->client, a);
        int eb = b == 1 ? SSL_ERROR_NONE : SSL_get_error(c->server, b);
        bool stuck_a =
            ea != SSL_ERROR_NONE && ea != SSL_ERROR_WANT_READ && ea != SSL_ERROR_WANT_WRITE;
        bool stuck_b =
            eb != SSL_ERROR_NONE && eb != SSL_ERROR_WANT_READ && eb != SSL_ERROR_WANT_WRITE;
        if (stuck_a || stuck_b)
            return false;
    }
    return false;
}

static void conn_free(struct conn *c)
{
    /* a connection closed without close_notify makes its session unusable */
    SSL_set_shutdown(c->client, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_set_shutdown(c->server, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->client);
    SSL_free(c->server);
    ERR_clear_error();
}

static SSL_CTX *client_ctx(int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(ctx, max_version);
    return ctx;
}

/* The CN of the certificate the server chose. */
static void peer_cn(SSL *client, char *out, size_t size)
{
    X509 *x = SSL_get1_peer_certificate(client);
    ck_assert_ptr_nonnull(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)size);
    X509_free(x);
}

START_TEST(test_certificate_by_sni)
{
    struct sl_config *cfg = two_certificates();
    char err[512];
    struct sl_tls *tls = sl_tls_new(cfg, err, sizeof err);
    ck_assert_msg(tls != NULL, "%s", err);
    SSL_CTX *cctx = client_ctx(0);
    static const struct {
        const char *sni, *cn;
    } cases[] = {
        {"rsa.example.test", "rsa.example.test"},
        {"RSA.Example.Test", "rsa.example.test"}, /* names are case-insensitive */
        {"x.wild.test", "rsa.example.test"},      /* wildcard */
        {"a.b.wild.test", "ec.example.test"},     /* a wildcard is one label */
        {"ec.example.test", "ec.example.test"},
        {"unknown.test", "ec.example.test"}, /* the "*" SNI is the default */
        {NULL, "ec.example.test"},           /* no SNI: the default */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn c = pair(tls, cctx, cases[i].sni);
        ck_assert_msg(handshake(&c), "handshake with SNI %s", cases[i].sni);
        char cn[128];
        peer_cn(c.client, cn, sizeof cn);
        ck_assert_msg(strcmp(cn, cases[i].cn) == 0, "SNI %s: got %s, want %s",
                      cases[i].sni ? cases[i].sni : "(none)", cn, cases[i].cn);
        conn_free(&c);
    }
    SSL_CTX_free(cctx);
    sl_tls_free(tls);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_alpn_and_floor)
{
    struct sl_config *cfg = two_certificates();
    char err[512];
    struct sl_tls *tls = sl_tls_new(cfg, err, sizeof err);
    ck_assert_ptr_nonnull(tls);
    SSL_CTX *cctx = client_ctx(0);
    static const unsigned char both[] = "\x02h2\x08http/1.1", h2[] = "\x02h2";
    struct conn c = pair(tls, cctx, NULL);
    SSL_set_alpn_protos(c.client, both, sizeof both - 1);
    ck_assert(handshake(&c));
    const unsigned char *proto;
    unsigned int len;
    SSL_get0_alpn_selected(c.client, &proto, &len);
    ck_assert_uint_eq(len, 8);
    ck_assert(memcmp(proto, "http/1.1", 8) == 0);
    ck_assert_int_eq(SSL_version(c.client), TLS1_3_VERSION);
    conn_free(&c);

    c = pair(tls, cctx, NULL);
    SSL_set_alpn_protos(c.client, h2, sizeof h2 - 1);
    ck_assert_msg(handshake(&c), "only h2 offered: the handshake goes on without ALPN");
    SSL_get0_alpn_selected(c.client, &proto, &len);
    ck_assert_uint_eq(len, 0);
    conn_free(&c);
    SSL_CTX_free(cctx);

    cctx = client_ctx(TLS1_1_VERSION);
    SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
    SSL_CTX_set_security_level(cctx, 0);
    c = pair(tls, cctx, NULL);
    ck_assert_msg(!handshake(&c), "TLS 1.1 is refused");
    conn_free(&c);
    SSL_CTX_free(cctx);
    sl_tls_free(tls);
    sl_config_unref(cfg);
}
END_TEST

static time_t fake_now;
static time_t fake_clock(time_t *t)
{
    if (t)
        *t = fake_now;
    return fake_now;
}

/* Resume `session` at the current fake time: was it accepted? */
static bool resumes(struct sl_tls *tls, SSL_CTX *cctx, SSL_SESSION *session, SSL_SESSION **fresh)
{
    struct conn c = pair(tls, cctx, NULL);
    SSL_set_session(c.client, session);
    ck_assert(handshake(&c));
    bool reused = SSL_session_reused(c.client) == 1;
    if (fresh)
        *fresh = SSL_get1_session(c.client);
    conn_free(&c);
    return reused;
}

START_TEST(test_ticket_rotation)
{
    unsigned char n1[16], a1[32], h1[32], n2[16], a2[32], h2[32], n3[16], a3[32], h3[32];
    sl_tls_ticket_keys(100, n1, a1, h1);
    sl_tls_ticket_keys(100, n2, a2, h2);
    sl_tls_ticket_keys(101, n3, a3, h3);
    ck_assert(memcmp(n1, n2, 16) == 0 && memcmp(a1, a2, 32) == 0 && memcmp(h1, h2, 32) == 0);
    ck_assert(memcmp(n1, n3, 16) != 0 && memcmp(a1, a3, 32) != 0 && memcmp(h1, h3, 32) != 0);
    ck_assert(memcmp(a1, h1, 32) != 0);

    struct sl_config *cfg = two_certificates();
    char err[512];
    struct sl_tls *tls = sl_tls_new(cfg, err, sizeof err);
    ck_assert_ptr_nonnull(tls);
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION); /* TLS 1.2: the ticket comes in the handshake */
    sl_tls_set_clock(fake_clock);
    fake_now = (time_t)SL_TLS_TICKET_PERIOD_S * 500000 + 10;

    struct conn c = pair(tls, cctx, NULL);
    ck_assert(handshake(&c));
    ck_assert_int_eq(SSL_session_reused(c.client), 0);
    SSL_SESSION *first = SSL_get1_session(c.client);
    ck_assert(SSL_SESSION_has_ticket(first));
    conn_free(&c);

    ck_assert_msg(resumes(tls, cctx, first, NULL), "same period: resumed");
    fake_now += SL_TLS_TICKET_PERIOD_S;
    SSL_SESSION *renewed = NULL;
    ck_assert_msg(resumes(tls, cctx, first, &renewed), "next period: still resumed");
    ck_assert_msg(SSL_SESSION_has_ticket(renewed), "and a fresh ticket was issued");
    fake_now += SL_TLS_TICKET_PERIOD_S;
    ck_assert_msg(!resumes(tls, cctx, first, NULL), "two periods later: full handshake");
    ck_assert_msg(resumes(tls, cctx, renewed, NULL), "the renewed ticket still works");

    SSL_SESSION_free(first);
    SSL_SESSION_free(renewed);
    sl_tls_set_clock(NULL);
    SSL_CTX_free(cctx);
    sl_tls_free(tls);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_no_certificates)
{
    const char *yaml = "_format_version: \"3.0\"\n"
                       "gateway:\n  proxy_listen: [\"127.0.0.1:1 ssl\"]\n";
    struct sl_config_error cerr;
    struct sl_config *cfg = sl_config_load_buffer(yaml, strlen(yaml), "t.yml", "gateway", &cerr);
    ck_assert_ptr_nonnull(cfg);
    char err[512];
    ck_assert_ptr_null(sl_tls_new(cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "t.yml: an ssl listener needs at least one entry in 'certificates'"),
                  "%s", err);
    sl_config_unref(cfg);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_certificate_by_sni);
    tcase_add_test(tc, test_alpn_and_floor);
    tcase_add_test(tc, test_ticket_rotation);
    tcase_add_test(tc, test_no_certificates);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
