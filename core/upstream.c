#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "resilience.h"
#include "tls.h"
#include "util.h"

#define SL_DNS_MAX_ADDRS 8
#define SL_DNS_MIN_TTL_S 1
#define SL_DNS_MAX_TTL_S 3600
/* When DNS fails, a previous answer is used this long before trying again. */
#define SL_DNS_STALE_RETRY_S 5
/* How long a hosts-file answer is used before it is looked up again (the
 * file itself is read at start and on reload). */
#define SL_HOSTS_TTL_S 60

enum dns_state { DNS_NONE, DNS_RESOLVING, DNS_READY };

/* One host:port the worker talks to: its addresses and its idle connections. */
struct sl_upstream_target {
    char *host;
    uint16_t port;
    SSL_CTX *tls; /* NULL: plain TCP */
    enum dns_state dns_state;
    struct sockaddr_storage addrs[SL_DNS_MAX_ADDRS];
    socklen_t addr_lens[SL_DNS_MAX_ADDRS];
    unsigned n_addrs;
    unsigned next_addr; /* round robin over the resolved addresses */
    uint64_t expires_ms;
    bool tried_ipv6;
    struct evdns_request *dns_request;
    struct sl_upstream_pending *waiters; /* waiting for the name */
    struct sl_upstream_conn *idle_head;  /* most recently used first */
    unsigned n_idle;
    struct sl_upstream_pool *pool;
    struct sl_upstream_target *next;
};

struct sl_upstream_pool {
    struct event_base *base;
    struct evdns_base *dns;
    struct sl_upstream_target *targets;
    uint32_t max_idle_per_target;
    uint32_t max_requests;
    uint32_t idle_timeout_ms;
    struct hosts_entry *hosts; /* the hosts file, parsed off the request path */
    size_t n_hosts;
};

struct hosts_entry {
    char *name;
    int family;
    unsigned char addr[16];
};

enum pending_state { PENDING_DEFERRED, PENDING_RESOLVING, PENDING_CONNECTING };

struct sl_upstream_pending {
    struct sl_upstream_pool *pool;
    struct sl_upstream_target *target;
    enum pending_state state;
    sl_upstream_cb cb;
    void *arg;
    uint32_t connect_timeout_ms;
    struct sl_svc_state *limit_state; /* max_connections (see sl_upstream_want) */
    uint32_t max_connections;
    struct sl_upstream_conn *conn; /* pooled (deferred) or connecting */
    enum sl_upstream_error deferred_error;
    struct event *deferred;
    struct sl_upstream_pending *next_waiter;
};

static void pending_finish(struct sl_upstream_pending *p, struct sl_upstream_conn *conn,
                           enum sl_upstream_error error);
static void start_connect(struct sl_upstream_pending *p);

struct sl_upstream_pool *sl_upstream_pool_new(struct event_base *base, struct evdns_base *dns)
{
    struct sl_upstream_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->base = base;
    pool->dns = dns;
    pool->max_idle_per_target = 512;
    pool->max_requests = 10000;
    pool->idle_timeout_ms = 60000;
    return pool;
}

static void hosts_clear(struct sl_upstream_pool *pool)
{
    for (size_t i = 0; i < pool->n_hosts; i++)
        free(pool->hosts[i].name);
    free(pool->hosts);
    pool->hosts = NULL;
    pool->n_hosts = 0;
}

/* Parse the hosts file now (worker start, reload), never on a request. */
static void hosts_load(struct sl_upstream_pool *pool, const char *path)
{
    hosts_clear(pool);
    FILE *f = fopen(path, "re");
    if (!f) {
        sl_warn("dns: cannot read hosts file %s: %s", path, strerror(errno));
        return;
    }
    size_t cap = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        char *addr_text = strtok_r(line, " \t\r\n", &save);
        if (!addr_text)
            continue;
        struct hosts_entry e = {0};
        if (inet_pton(AF_INET, addr_text, e.addr) == 1)
            e.family = AF_INET;
        else if (inet_pton(AF_INET6, addr_text, e.addr) == 1)
            e.family = AF_INET6;
        else
            continue;
        for (char *name = strtok_r(NULL, " \t\r\n", &save); name;
             name = strtok_r(NULL, " \t\r\n", &save)) {
            if (pool->n_hosts == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct hosts_entry *n = realloc(pool->hosts, ncap * sizeof *n);
                if (!n)
                    break;
                pool->hosts = n;
                cap = ncap;
            }
            e.name = strdup(name);
            if (!e.name)
                break;
            pool->hosts[pool->n_hosts++] = e;
        }
    }
    fclose(f);
}

void sl_upstream_pool_configure(struct sl_upstream_pool *pool, const struct sl_node_config *node)
{
    pool->max_idle_per_target = node->upstream_keepalive_pool_size;
    pool->max_requests = node->upstream_keepalive_max_requests;
    pool->idle_timeout_ms = node->upstream_keepalive_idle_timeout_ms;
    hosts_load(pool, node->dns_hostsfile);
}

static void conn_free(struct sl_upstream_conn *conn)
{
    if (conn->counted_by) {
        sl_breaker_leave(conn->counted_by, SL_BREAKER_CONNECTIONS);
        sl_svc_state_put(conn->counted_by);
    }
    sl_reader_free(&conn->rd);
    if (conn->bev)
        bufferevent_free(conn->bev);
    free(conn);
}

static void idle_unlink(struct sl_upstream_conn *conn)
{
    struct sl_upstream_target *t = conn->target;
    if (conn->prev_idle)
        conn->prev_idle->next_idle = conn->next_idle;
    else
        t->idle_head = conn->next_idle;
    if (conn->next_idle)
        conn->next_idle->prev_idle = conn->prev_idle;
    conn->next_idle = conn->prev_idle = NULL;
    t->n_idle--;
}

void sl_upstream_pool_close_idle(struct sl_upstream_pool *pool)
{
    for (struct sl_upstream_target *t = pool->targets; t; t = t->next) {
        while (t->idle_head) {
            struct sl_upstream_conn *c = t->idle_head;
            idle_unlink(c);
            conn_free(c);
        }
    }
}

void sl_upstream_pool_free(struct sl_upstream_pool *pool)
{
    if (!pool)
        return;
    sl_upstream_pool_close_idle(pool);
    hosts_clear(pool);
    struct sl_upstream_target *t = pool->targets;
    while (t) {
        struct sl_upstream_target *next = t->next;
        if (t->dns_request)
            evdns_cancel_request(pool->dns, t->dns_request);
        /* waiters belong to requests that were already torn down */
        free(t->host);
        free(t);
        t = next;
    }
    free(pool);
}

static struct sl_upstream_target *target_get(struct sl_upstream_pool *pool, const char *host,
                                             uint16_t port, SSL_CTX *tls)
{
    for (struct sl_upstream_target *t = pool->targets; t; t = t->next)
        if (t->port == port && t->tls == tls && strcmp(t->host, host) == 0)
            return t;
    struct sl_upstream_target *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->host = strdup(host);
    if (!t->host) {
        free(t);
        return NULL;
    }
    t->port = port;
    t->tls = tls;
    t->pool = pool;
    t->next = pool->targets;
    pool->targets = t;
    return t;
}

/* Slot i of t's addresses: `raw` (4 or 16 bytes per family) and t's port. */
static void target_store_addr(struct sl_upstream_target *t, unsigned i, int family, const void *raw)
{
    struct sockaddr_storage *ss = &t->addrs[i];
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(t->port);
        memcpy(&in->sin_addr, raw, 4);
        t->addr_lens[i] = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(t->port);
        memcpy(&in6->sin6_addr, raw, 16);
        t->addr_lens[i] = sizeof *in6;
    }
}

static void target_set_literal(struct sl_upstream_target *t)
{
    unsigned char raw[16];
    if (inet_pton(AF_INET, t->host, raw) == 1)
        target_store_addr(t, 0, AF_INET, raw);
    else if (inet_pton(AF_INET6, t->host, raw) == 1)
        target_store_addr(t, 0, AF_INET6, raw);
    t->n_addrs = 1;
    t->expires_ms = UINT64_MAX;
    t->dns_state = DNS_READY;
}

/* Names in the hosts file (dns_hostsfile) win over DNS, as with libc. */
static bool hosts_lookup(struct sl_upstream_target *t)
{
    const struct sl_upstream_pool *pool = t->pool;
    unsigned n = 0;
    for (size_t i = 0; i < pool->n_hosts && n < SL_DNS_MAX_ADDRS; i++) {
        const struct hosts_entry *e = &pool->hosts[i];
        if (strcasecmp(e->name, t->host) == 0)
            target_store_addr(t, n++, e->family, e->addr);
    }
    if (n == 0)
        return false;
    t->n_addrs = n;
    t->expires_ms = sl_now_ms() + SL_HOSTS_TTL_S * 1000u;
    t->dns_state = DNS_READY;
    return true;
}

static bool addr_in_target(const struct sl_upstream_target *t, const struct sl_upstream_conn *c)
{
    for (unsigned i = 0; i < t->n_addrs; i++)
        if (t->addr_lens[i] == c->addr_len && memcmp(&t->addrs[i], &c->addr, c->addr_len) == 0)
            return true;
    return false;
}

/* After a new answer: idle connections to addresses that left it are closed. */
static void prune_idle(struct sl_upstream_target *t)
{
    struct sl_upstream_conn *c = t->idle_head;
    while (c) {
        struct sl_upstream_conn *next = c->next_idle;
        if (!addr_in_target(t, c)) {
            idle_unlink(c);
            conn_free(c);
        }
        c = next;
    }
}

static void wake_waiters(struct sl_upstream_target *t, bool ok)
{
    if (ok)
        prune_idle(t);
    struct sl_upstream_pending *p = t->waiters;
    t->waiters = NULL;
    while (p) {
        struct sl_upstream_pending *next = p->next_waiter;
        p->next_waiter = NULL;
        if (ok)
            start_connect(p);
        else
            pending_finish(p, NULL, SL_UPSTREAM_DNS_FAILED);
        p = next;
    }
}

static void dns_answer(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct sl_upstream_target *t = arg;
    t->dns_request = NULL;
    if (result == DNS_ERR_CANCEL)
        return;
    if (result == DNS_ERR_NONE && count > 0 && (type == DNS_IPv4_A || type == DNS_IPv6_AAAA)) {
        t->n_addrs = 0;
        int family = type == DNS_IPv4_A ? AF_INET : AF_INET6;
        size_t size = type == DNS_IPv4_A ? 4 : 16;
        for (int i = 0; i < count && t->n_addrs < SL_DNS_MAX_ADDRS; i++)
            target_store_addr(t, t->n_addrs++, family, (const char *)addresses + size * (size_t)i);
        if (ttl < SL_DNS_MIN_TTL_S)
            ttl = SL_DNS_MIN_TTL_S;
        if (ttl > SL_DNS_MAX_TTL_S)
            ttl = SL_DNS_MAX_TTL_S;
        t->expires_ms = sl_now_ms() + (uint64_t)ttl * 1000u;
        t->dns_state = DNS_READY;
        sl_debug("dns: %s has %u address(es), ttl %d s", t->host, t->n_addrs, ttl);
        wake_waiters(t, true);
        return;
    }
    if (!t->tried_ipv6) {
        /* no A record: try AAAA before giving up */
        t->tried_ipv6 = true;
        t->dns_request =
            evdns_base_resolve_ipv6(t->pool->dns, t->host, DNS_QUERY_NO_SEARCH, dns_answer, t);
        if (t->dns_request)
            return;
    }
    sl_warn("dns: cannot resolve '%s': %s", t->host, evdns_err_to_string(result));
    t->dns_state = t->n_addrs > 0 ? DNS_READY : DNS_NONE; /* keep a stale answer if any */
    if (t->n_addrs > 0) /* use it for a while instead of waiting on DNS per request */
        t->expires_ms = sl_now_ms() + SL_DNS_STALE_RETRY_S * 1000u;
    wake_waiters(t, t->n_addrs > 0);
}

static void resolve(struct sl_upstream_target *t)
{
    t->dns_state = DNS_RESOLVING;
    t->tried_ipv6 = false;
    if (hosts_lookup(t)) {
        wake_waiters(t, true);
        return;
    }
    if (evdns_base_count_nameservers(t->pool->dns) == 0) {
        /* no resolv.conf and no dns_resolver: evdns would queue for ever */
        sl_warn("dns: no nameserver to resolve '%s' (set dns_resolver)", t->host);
        t->dns_state = t->n_addrs > 0 ? DNS_READY : DNS_NONE;
        wake_waiters(t, t->n_addrs > 0);
        return;
    }
    t->dns_request =
        evdns_base_resolve_ipv4(t->pool->dns, t->host, DNS_QUERY_NO_SEARCH, dns_answer, t);
    if (!t->dns_request) {
        t->dns_state = DNS_NONE;
        wake_waiters(t, false);
    }
}

static void pending_free(struct sl_upstream_pending *p)
{
    if (p->deferred)
        event_free(p->deferred);
    free(p);
}

static void pending_finish(struct sl_upstream_pending *p, struct sl_upstream_conn *conn,
                           enum sl_upstream_error error)
{
    sl_upstream_cb cb = p->cb;
    void *arg = p->arg;
    pending_free(p);
    cb(conn, error, arg);
}

/* A pooled connection between acquire and its hand-over must stay silent. */
static void handover_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_upstream_conn *conn = arg;
    conn->broken = true;
    sl_reader_disable(&conn->rd);
}

static void handover_read(struct bufferevent *bev, void *arg)
{
    handover_event(bev, BEV_EVENT_READING, arg);
}

/*
 * The last look at a pooled connection before a request is written into
 * it. The loop may not have read the upstream's close yet: when an upstream
 * dies under load its FIN sits in the kernel behind other ready events, and
 * a request that cannot be replayed (a POST) written into that connection
 * fails. So ask the socket itself: one recv per reuse. For TLS only the
 * end of the stream counts (bytes may be a late session ticket).
 */
static bool pooled_conn_alive(const struct sl_upstream_conn *conn)
{
    int fd = bufferevent_getfd(conn->bev);
    if (fd < 0)
        return true;
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    return n > 0 && conn->tls; /* EOF, or bytes an idle plain connection must not send */
}

static void deferred_fire(evutil_socket_t fd, short what, void *arg)
{
    struct sl_upstream_pending *p = arg;
    struct sl_upstream_conn *conn = p->conn;
    p->conn = NULL;
    if (conn && !conn->broken && !pooled_conn_alive(conn))
        conn->broken = true;
    if (conn && conn->broken) {
        conn_free(conn); /* closed meanwhile: connect afresh below */
        conn = NULL;
    }
    if (conn) {
        pending_finish(p, conn, SL_UPSTREAM_OK);
        return;
    }
    if (p->deferred_error != SL_UPSTREAM_OK) {
        pending_finish(p, NULL, p->deferred_error);
        return;
    }
    /* a name had to be (re)resolved or a connect started: do it now */
    struct sl_upstream_target *t = p->target;
    if (t->dns_state == DNS_READY && sl_now_ms() < t->expires_ms) {
        start_connect(p);
        return;
    }
    p->state = PENDING_RESOLVING;
    p->next_waiter = t->waiters;
    t->waiters = p;
    if (t->dns_state != DNS_RESOLVING)
        resolve(t);
}

static void connect_event(struct bufferevent *bev, short what, void *arg);

/* TCP is up: the same socket continues in a TLS bufferevent (handshake). */
static bool start_tls(struct sl_upstream_pending *p, struct sl_upstream_conn *conn)
{
    struct sl_upstream_target *t = p->target;
    int fd = bufferevent_getfd(conn->bev);
    sl_reader_free(&conn->rd);
    bufferevent_setfd(conn->bev, -1); /* keep the socket open */
    bufferevent_free(conn->bev);
    conn->bev = NULL;
    SSL *ssl = SSL_new(t->tls);
    if (ssl == NULL || !sl_tls_client_prepare(ssl, t->host)) {
        SSL_free(ssl);
        close(fd);
        return false;
    }
    conn->bev = bufferevent_openssl_socket_new(p->pool->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE);
    if (!conn->bev) {
        SSL_free(ssl);
        close(fd);
        return false;
    }
    /* many servers close without close_notify; framing tells truncation */
    bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 1);
    sl_reader_init_bev(&conn->rd, conn->bev);
    conn->tls = true;
    struct timeval tv = {p->connect_timeout_ms / 1000, (p->connect_timeout_ms % 1000) * 1000};
    bufferevent_setcb(conn->bev, NULL, NULL, connect_event, p);
    bufferevent_set_timeouts(conn->bev, &tv, &tv);
    return true;
}

static void connect_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_upstream_pending *p = arg;
    struct sl_upstream_conn *conn = p->conn;
    if ((what & BEV_EVENT_CONNECTED) && p->target->tls && !conn->tls) {
        if (start_tls(p, conn))
            return;
        sl_info("upstream: TLS to %s: out of resources", conn->addr_text);
        p->conn = NULL;
        conn_free(conn);
        pending_finish(p, NULL, SL_UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        p->conn = NULL;
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        bufferevent_set_timeouts(bev, NULL, NULL);
        pending_finish(p, conn, SL_UPSTREAM_OK);
        return;
    }
    enum sl_upstream_error error =
        (what & BEV_EVENT_TIMEOUT) ? SL_UPSTREAM_CONNECT_TIMEOUT : SL_UPSTREAM_CONNECT_FAILED;
    int saved = EVUTIL_SOCKET_ERROR();
    if (conn->tls && error != SL_UPSTREAM_CONNECT_TIMEOUT) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        unsigned long e = bufferevent_get_openssl_error(bev);
        char why[256] = "connection closed";
        if (verify != X509_V_OK)
            snprintf(why, sizeof why, "certificate: %s", X509_verify_cert_error_string(verify));
        else if (e)
            ERR_error_string_n(e, why, sizeof why);
        sl_warn("upstream: TLS handshake with %s (%s) failed: %s", conn->addr_text, p->target->host,
                why);
    } else {
        sl_info("upstream: connect to %s failed: %s", conn->addr_text,
                error == SL_UPSTREAM_CONNECT_TIMEOUT ? "timed out" : strerror(saved));
    }
    p->conn = NULL;
    conn_free(conn);
    pending_finish(p, NULL, error);
}

static void start_connect(struct sl_upstream_pending *p)
{
    struct sl_upstream_target *t = p->target;
    if (p->limit_state &&
        !sl_breaker_enter(p->limit_state, SL_BREAKER_CONNECTIONS, p->max_connections)) {
        pending_finish(p, NULL, SL_UPSTREAM_OVERFLOW);
        return;
    }
    struct sl_upstream_conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        if (p->limit_state)
            sl_breaker_leave(p->limit_state, SL_BREAKER_CONNECTIONS);
        pending_finish(p, NULL, SL_UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (p->limit_state) {
        sl_svc_state_hold(p->limit_state);
        conn->counted_by = p->limit_state;
    }
    unsigned i = t->next_addr++ % t->n_addrs;
    memcpy(&conn->addr, &t->addrs[i], t->addr_lens[i]);
    conn->addr_len = t->addr_lens[i];
    conn->target = t;
    conn->pool = p->pool;
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
    sl_sockaddr_text((struct sockaddr *)&conn->addr, ip, sizeof ip, &port);
    snprintf(conn->addr_text, sizeof conn->addr_text,
             conn->addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);

    int fd = socket(conn->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sl_error("upstream: socket: %s", strerror(errno));
        conn_free(conn);
        pending_finish(p, NULL, SL_UPSTREAM_CONNECT_FAILED);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn->bev = bufferevent_socket_new(p->pool->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!conn->bev) {
        close(fd);
        conn_free(conn);
        pending_finish(p, NULL, SL_UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (!sl_reader_init(&conn->rd, conn->bev)) {
        conn_free(conn);
        pending_finish(p, NULL, SL_UPSTREAM_CONNECT_FAILED);
        return;
    }
    p->state = PENDING_CONNECTING;
    p->conn = conn;
    struct timeval tv = {p->connect_timeout_ms / 1000, (p->connect_timeout_ms % 1000) * 1000};
    bufferevent_setcb(conn->bev, NULL, NULL, connect_event, p);
    bufferevent_set_timeouts(conn->bev, NULL, &tv);
    if (bufferevent_socket_connect(conn->bev, (struct sockaddr *)&conn->addr, (int)conn->addr_len) <
        0) {
        /* the error callback was not scheduled: report it from the loop */
        p->conn = NULL;
        conn_free(conn);
        p->deferred_error = SL_UPSTREAM_CONNECT_FAILED;
        p->state = PENDING_DEFERRED;
        event_active(p->deferred, EV_TIMEOUT, 0);
    }
}

/* An idle pooled connection must stay silent: data, EOF or a timeout closes it. */
static void idle_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_upstream_conn *conn = arg;
    idle_unlink(conn);
    conn_free(conn);
}

static void idle_read(struct bufferevent *bev, void *arg)
{
    idle_event(bev, BEV_EVENT_READING, arg);
}

struct sl_upstream_pending *sl_upstream_acquire(struct sl_upstream_pool *pool,
                                                const struct sl_upstream_want *want,
                                                sl_upstream_cb cb, void *arg)
{
    const char *host = want->host;
    struct sl_upstream_target *t = target_get(pool, host, want->port, want->tls);
    if (!t)
        return NULL;
    struct sl_upstream_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->deferred = evtimer_new(pool->base, deferred_fire, p);
    if (!p->deferred) {
        free(p);
        return NULL;
    }
    p->pool = pool;
    p->target = t;
    p->cb = cb;
    p->arg = arg;
    p->connect_timeout_ms = want->connect_timeout_ms ? want->connect_timeout_ms : 60000;
    p->limit_state = want->state;
    p->max_connections = want->max_connections;
    p->state = PENDING_DEFERRED;

    if (t->dns_state == DNS_NONE && sl_is_ip_literal(host))
        target_set_literal(t);

    /* an expired name is resolved again before a pooled connection is used */
    bool name_fresh = t->dns_state == DNS_READY && sl_now_ms() < t->expires_ms;
    if (want->allow_reuse && name_fresh) {
        while (t->idle_head) {
            struct sl_upstream_conn *c = t->idle_head;
            idle_unlink(c);
            /* a connection the upstream closed shows as readable (EOF) */
            if (evbuffer_get_length(bufferevent_get_input(c->bev)) != 0) {
                conn_free(c);
                continue;
            }
            /* until the requester gets it, anything on it marks it broken
             * (reading stays on: no epoll change on the fast path) */
            sl_reader_setcb_all(&c->rd, handover_read, NULL, handover_event, c);
            c->reused = true;
            p->conn = c;
            break;
        }
    }
    event_active(p->deferred, EV_TIMEOUT, 0);
    return p;
}

void sl_upstream_cancel(struct sl_upstream_pending *p)
{
    if (!p)
        return;
    if (p->state == PENDING_RESOLVING) {
        struct sl_upstream_pending **pp = &p->target->waiters;
        while (*pp && *pp != p)
            pp = &(*pp)->next_waiter;
        if (*pp)
            *pp = p->next_waiter;
    }
    if (p->conn) {
        if (p->state == PENDING_DEFERRED && p->conn->reused)
            sl_upstream_release(p->conn, !p->conn->broken);
        else
            conn_free(p->conn);
    }
    pending_free(p);
}

void sl_upstream_release(struct sl_upstream_conn *conn, bool reusable)
{
    struct sl_upstream_pool *pool = conn->pool;
    struct sl_upstream_target *t = conn->target;
    /* a connection busy when a new answer came was not pruned with the
     * idle ones: pooled now, it would keep the old address in use */
    if (!reusable || t->n_idle >= pool->max_idle_per_target ||
        conn->requests >= pool->max_requests || !addr_in_target(t, conn) ||
        evbuffer_get_length(bufferevent_get_input(conn->bev)) != 0 ||
        evbuffer_get_length(bufferevent_get_output(conn->bev)) != 0) {
        conn_free(conn);
        return;
    }
    sl_reader_setcb_all(&conn->rd, idle_read, NULL, idle_event, conn);
    sl_reader_set_write_timeout(&conn->rd, 0);
    bufferevent_setwatermark(conn->bev, EV_WRITE, 0, 0);
    sl_reader_set_timeout(&conn->rd, pool->idle_timeout_ms);
    sl_reader_set_high_water(&conn->rd, 0);
    sl_reader_enable(&conn->rd);
    conn->idle_since_ms = sl_now_ms();
    conn->next_idle = t->idle_head;
    conn->prev_idle = NULL;
    if (t->idle_head)
        t->idle_head->prev_idle = conn;
    t->idle_head = conn;
    t->n_idle++;
}
