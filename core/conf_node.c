/*
 * The node block (`gateway:` or `sidecar:`): settings of the process, named
 * after kong.conf, each one overridable by SLUICE_<KEY> (upper case) as Kong
 * does with KONG_<KEY>. One table of keys (`node_fields`) serves the file
 * and the environment; values from either are parsed from text the same way.
 * A key belongs to one role or to both: a key of the other role is an
 * unknown field in the block, and its variable is not read.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Node block (gateway: / sidecar:) and SLUICE_<KEY> overrides              */
/* ------------------------------------------------------------------------ */

enum node_kind {
    NK_LISTEN_LIST, /* proxy_listen */
    NK_LISTEN_ONE,  /* status_listen, admin_listen, ...: one entry or "off" (unless NF_NO_OFF) */
    NK_WORKERS,     /* integer >= 1 or "auto" */
    NK_CIDRS,       /* trusted_ips */
    NK_MS,          /* duration: integer ms or "500ms" / "60s" / "2m" / "1h" */
    NK_U32,         /* integer */
    NK_BYTES,       /* size: integer bytes or "8k" / "10m" / "1g" */
    NK_ONOFF,       /* boolean or on/off */
    NK_LOG_LEVEL,
    NK_DNS_SERVERS,  /* "ip[:port]" list, comma-separated (kong.conf dns_resolver) */
    NK_PATH,         /* a file path */
    NK_SERVICE_NAME, /* 1..127 of [A-Za-z0-9._-] */
    NK_APP_URL,      /* "http://host[:port][/]" */
    NK_BREAKERS,     /* a circuit_breakers map (the file only: NF_NO_ENV) */
};

enum {
    NF_GATEWAY = 0x1, /* a key of the gateway: block */
    NF_SIDECAR = 0x2, /* a key of the sidecar: block */
    NF_BOTH = NF_GATEWAY | NF_SIDECAR,
    NF_NO_OFF = 0x4, /* NK_LISTEN_ONE: "off" is refused */
    NF_NO_ENV = 0x8, /* no SLUICE_<KEY> override */
};

struct node_field {
    const char *name;
    enum node_kind kind;
    size_t offset;
    unsigned long long min, max;
    unsigned flags; /* NF_* */
};

#define NODE_KEY(n, k, lo, hi, flags)                                                              \
    {                                                                                              \
#n, k, offsetof(struct sl_node_config, n), lo, hi, flags                                   \
    }
#define NODE_FIELD(n, k, lo, hi) NODE_KEY(n, k, lo, hi, NF_BOTH)
#define NODE_MS_KEY(n, lo, flags)                                                                  \
    {                                                                                              \
#n, NK_MS, offsetof(struct sl_node_config, n##_ms), lo, 2147483646ULL, flags               \
    }
#define NODE_MS(n, lo) NODE_MS_KEY(n, lo, NF_BOTH)
static const struct node_field node_fields[] = {
    NODE_KEY(proxy_listen, NK_LISTEN_LIST, 0, 0, NF_GATEWAY),
    NODE_FIELD(status_listen, NK_LISTEN_ONE, 0, 0),
    NODE_FIELD(admin_listen, NK_LISTEN_ONE, 0, 0),
    NODE_FIELD(worker_processes, NK_WORKERS, 1, 1024),
    NODE_FIELD(trusted_ips, NK_CIDRS, 0, 0),
    NODE_MS(client_header_timeout, 1),
    NODE_MS(client_body_timeout, 1),
    NODE_MS(client_body_total_timeout, 0),
    NODE_MS(send_timeout, 1),
    NODE_MS(keepalive_timeout, 1),
    NODE_MS(upstream_keepalive_idle_timeout, 1),
    NODE_MS(graceful_shutdown_timeout, 0),
    NODE_FIELD(keepalive_requests, NK_U32, 1, UINT32_MAX),
    NODE_FIELD(max_request_line, NK_U32, 64, 1048576),
    NODE_FIELD(max_header_bytes, NK_U32, 64, 16777216),
    NODE_FIELD(max_headers, NK_U32, 1, 10000),
    NODE_FIELD(upstream_keepalive_pool_size, NK_U32, 0, 1000000),
    NODE_FIELD(upstream_keepalive_max_requests, NK_U32, 1, UINT32_MAX),
    NODE_FIELD(client_max_body_size, NK_BYTES, 0, UINT64_MAX),
    NODE_FIELD(access_log, NK_ONOFF, 0, 0),
    NODE_FIELD(log_level, NK_LOG_LEVEL, 0, 0),
    NODE_FIELD(dns_resolver, NK_DNS_SERVERS, 0, 0),
    NODE_FIELD(dns_hostsfile, NK_PATH, 0, 0),
    /* the sidecar's own */
    NODE_KEY(service_name, NK_SERVICE_NAME, 0, 0, NF_SIDECAR),
    NODE_KEY(inbound_listen, NK_LISTEN_ONE, 0, 0, NF_SIDECAR | NF_NO_OFF),
    NODE_KEY(outbound_listen, NK_LISTEN_ONE, 0, 0, NF_SIDECAR),
    NODE_KEY(app_url, NK_APP_URL, 0, 0, NF_SIDECAR),
    NODE_MS_KEY(drain_delay, 0, NF_SIDECAR),
    NODE_KEY(inbound_circuit_breakers, NK_BREAKERS, 0, 0, NF_SIDECAR | NF_NO_ENV),
};
#define N_NODE_FIELDS_USED (sizeof node_fields / sizeof node_fields[0])
_Static_assert(N_NODE_FIELDS_USED <= N_NODE_FIELDS, "raise N_NODE_FIELDS");

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 1024 ? 1024 : (int)n;
}

/* The role's bit of node_field.flags. */
static unsigned role_flag(const struct loader *L)
{
    return strcmp(L->role, "sidecar") == 0 ? NF_SIDECAR : NF_GATEWAY;
}

void conf_node_defaults(struct sl_node_config *n, const char *role)
{
    memset(n, 0, sizeof *n);
    bool sidecar = strcmp(role, "sidecar") == 0;
    /* the sidecar's ports are Istio's: health 15021, inbound 15006, outbound 15001 */
    snprintf(n->status_listen.host, sizeof n->status_listen.host,
             sidecar ? "0.0.0.0" : "127.0.0.1");
    n->status_listen.port = sidecar ? 15021 : 8100;
    /* the gateway: "auto", as DESIGN.md and Kong; a sidecar shares its pod */
    n->worker_processes = sidecar ? 1 : online_cpus();
    n->client_header_timeout_ms = 60000;
    n->client_body_timeout_ms = 60000;
    n->client_body_total_timeout_ms = 300000;
    n->send_timeout_ms = 60000; /* nginx's send_timeout */
    n->keepalive_timeout_ms = 75000;
    n->keepalive_requests = 10000;
    n->max_request_line = 8192;
    n->max_header_bytes = 32768;
    n->max_headers = 100;
    n->client_max_body_size = 0;
    n->upstream_keepalive_pool_size = 512;
    n->upstream_keepalive_max_requests = 10000;
    n->upstream_keepalive_idle_timeout_ms = 60000;
    n->graceful_shutdown_timeout_ms = 10000;
    n->access_log = true;
    snprintf(n->log_level, sizeof n->log_level, "notice");
    snprintf(n->dns_hostsfile, sizeof n->dns_hostsfile, "/etc/hosts");
    if (sidecar) {
        snprintf(n->inbound_listen.host, sizeof n->inbound_listen.host, "0.0.0.0");
        n->inbound_listen.port = 15006;
        snprintf(n->outbound_listen.host, sizeof n->outbound_listen.host, "127.0.0.1");
        n->outbound_listen.port = 15001;
        snprintf(n->app_url, sizeof n->app_url, "http://127.0.0.1:8080");
        snprintf(n->app_host, sizeof n->app_host, "127.0.0.1");
        n->app_port = 8080;
        n->drain_delay_ms = 5000;
    }
}

/* One dns_resolver entry: "1.2.3.4", "1.2.3.4:53", "[::1]:53" or "::1". */
static bool valid_nameserver(const char *s, size_t n)
{
    char host[64];
    const char *port = NULL;
    size_t port_len = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || (size_t)(close - s - 1) >= sizeof host)
            return false;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return false;
            port = close + 2;
            port_len = (size_t)(s + n - port);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        const char *last = colon ? memrchr(s, ':', n) : NULL;
        size_t host_len = (colon && colon == last) ? (size_t)(colon - s) : n;
        if (host_len >= sizeof host)
            return false;
        memcpy(host, s, host_len);
        host[host_len] = '\0';
        if (colon && colon == last) {
            port = colon + 1;
            port_len = (size_t)(s + n - port);
        }
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
        return false;
    if (port) {
        if (port_len == 0 || port_len > 5 || !conf_is_digits(port, port_len, 5))
            return false;
        unsigned long v = strtoul(port, NULL, 10);
        if (v == 0 || v > 65535)
            return false;
    }
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* "host:port [ssl] [reuseport]"; why gets the reason on failure. */
static bool parse_listen(const char *text, size_t len, struct sl_listen *out, char *why,
                         size_t why_size)
{
    memset(out, 0, sizeof *out);
    trim(&text, &len);
    size_t addr_len = 0;
    while (addr_len < len && text[addr_len] != ' ' && text[addr_len] != '\t')
        addr_len++;
    if (addr_len == 0) {
        snprintf(why, why_size, "expected host:port");
        return false;
    }
    const char *host = text, *port;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = memchr(text, ']', addr_len);
        if (close == NULL || close + 1 >= text + addr_len || close[1] != ':') {
            snprintf(why, why_size, "expected [IPv6]:port");
            return false;
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = NULL;
        for (size_t i = 0; i < addr_len; i++)
            if (text[i] == ':')
                colon = text + i;
        if (colon == NULL) {
            snprintf(why, why_size, "expected host:port");
            return false;
        }
        host_len = (size_t)(colon - text);
        port = colon + 1;
        if (memchr(text, ':', host_len) != NULL) {
            snprintf(why, why_size, "an IPv6 address must be written in brackets: [::1]:8000");
            return false;
        }
    }
    size_t port_len = (size_t)(text + addr_len - port);
    unsigned long p = 0;
    if (!conf_is_digits(port, port_len, 10) || port_len > 5 || (p = strtoul(port, NULL, 10)) == 0 ||
        p > 65535) {
        snprintf(why, why_size, "invalid port");
        return false;
    }
    char h[INET6_ADDRSTRLEN + 1];
    if (host_len == 1 && host[0] == '*') {
        snprintf(h, sizeof h, "0.0.0.0");
    } else {
        if (host_len == 0 || host_len >= sizeof h) {
            snprintf(why, why_size, "expected an IP address");
            return false;
        }
        memcpy(h, host, host_len);
        h[host_len] = '\0';
        unsigned char buf[sizeof(struct in6_addr)];
        int family = text[0] == '[' ? AF_INET6 : AF_INET;
        if (inet_pton(family, h, buf) != 1) {
            snprintf(why, why_size, "expected an IP address (hostnames are not supported)");
            return false;
        }
    }
    snprintf(out->host, sizeof out->host, "%s", h);
    out->port = (uint16_t)p;

    const char *flags = text + addr_len;
    size_t flags_len = len - addr_len;
    while (flags_len > 0) {
        trim(&flags, &flags_len);
        size_t n = 0;
        while (n < flags_len && flags[n] != ' ' && flags[n] != '\t')
            n++;
        if (n == 0)
            break;
        if (n == 3 && memcmp(flags, "ssl", 3) == 0) {
            out->ssl = true;
        } else if (n == 9 && memcmp(flags, "reuseport", 9) == 0) {
            /* sluice always listens with SO_REUSEPORT (one socket per worker) */
        } else {
            static const char *const kong_flags[] = {
                "http2",    "proxy_protocol", "deferred",     "bind",
                "backlog=", "ipv6only=",      "so_keepalive="};
            bool known = false;
            for (size_t i = 0; i < sizeof kong_flags / sizeof kong_flags[0]; i++) {
                size_t kl = strlen(kong_flags[i]);
                if ((kong_flags[i][kl - 1] == '=' && n >= kl &&
                     memcmp(flags, kong_flags[i], kl) == 0) ||
                    (n == kl && memcmp(flags, kong_flags[i], kl) == 0))
                    known = true;
            }
            snprintf(why, why_size,
                     known ? "listen flag '%.*s' is not supported yet"
                           : "unknown listen flag '%.*s'",
                     (int)(n > 40 ? 40 : n), flags);
            return false;
        }
        flags += n;
        flags_len -= n;
    }
    return true;
}

bool sl_config_parse_listen(const char *text, struct sl_listen *out)
{
    char why[128];
    if (text == NULL || out == NULL)
        return false;
    return parse_listen(text, strlen(text), out, why, sizeof why);
}

static bool parse_cidr(const char *text, size_t len, struct sl_cidr *out, char *why,
                       size_t why_size)
{
    trim(&text, &len);
    char buf[INET6_ADDRSTRLEN + 8];
    if (len == 0 || len >= sizeof buf) {
        snprintf(why, why_size, "expected an IP address or a CIDR range");
        return false;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix_len = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix_len = 128;
    } else {
        snprintf(why, why_size, "expected an IP address or a CIDR range");
        return false;
    }
    if (slash != NULL) {
        const char *bits = slash + 1;
        size_t n = strlen(bits);
        unsigned long b = 0;
        if (!conf_is_digits(bits, n, 10) || n > 3 ||
            (b = strtoul(bits, NULL, 10)) > out->prefix_len) {
            snprintf(why, why_size, "invalid prefix length");
            return false;
        }
        out->prefix_len = (unsigned)b;
    }
    return true;
}

/* "60000", "500ms", "60s", "2m", "1h" -> ms. */
static bool parse_duration_ms(const char *s, unsigned long long *out)
{
    size_t n = strlen(s), d = 0;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    if (d == 0 || d > 12)
        return false;
    unsigned long long v = strtoull(s, NULL, 10), mul;
    const char *unit = s + d;
    if (*unit == '\0' || strcmp(unit, "ms") == 0)
        mul = 1;
    else if (strcmp(unit, "s") == 0)
        mul = 1000;
    else if (strcmp(unit, "m") == 0)
        mul = 60000;
    else if (strcmp(unit, "h") == 0)
        mul = 3600000;
    else
        return false;
    *out = v * mul; /* at most 10^12 * 3.6 * 10^6: fits in 64 bits */
    return true;
}

/* "1048576", "8k", "10m", "1g" (powers of 1024, like nginx) -> bytes. */
static bool parse_size(const char *s, unsigned long long *out)
{
    size_t n = strlen(s), d = 0;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    if (d == 0 || d > 19)
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE)
        return false;
    unsigned shift = 0;
    const char *unit = s + d;
    if (*unit == '\0')
        shift = 0;
    else if (strcmp(unit, "k") == 0 || strcmp(unit, "K") == 0)
        shift = 10;
    else if (strcmp(unit, "m") == 0 || strcmp(unit, "M") == 0)
        shift = 20;
    else if (strcmp(unit, "g") == 0 || strcmp(unit, "G") == 0)
        shift = 30;
    else
        return false;
    if (shift > 0 && v > (UINT64_MAX >> shift))
        return false;
    *out = v << shift;
    return true;
}

/* service_name: what a metric label, a span attribute and a Host can carry. */
static bool valid_service_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* app_url: the local app, plain http on host[:port], no path but "/".
 * Returns NULL when valid, else the reason (possibly in u). */
static const char *app_url_problem(const char *text, struct conf_url *u)
{
    if (!conf_url_scheme(text, u))
        return u->why;
    if (strcmp(u->scheme, "http") != 0)
        return "the scheme must be http";
    if (!conf_url_rest(u))
        return u->why;
    if (u->port == 0)
        return "bad port";
    if (*u->path != '\0' && strcmp(u->path, "/") != 0)
        return "a path other than '/' is not allowed";
    return NULL;
}

static bool set_app_url(const char *text, struct sl_node_config *n, char *why, size_t why_size)
{
    if (strlen(text) >= sizeof n->app_url) {
        snprintf(why, why_size, "longer than %zu bytes", sizeof n->app_url - 1);
        return false;
    }
    struct conf_url u;
    const char *problem = app_url_problem(text, &u);
    if (problem != NULL) {
        snprintf(why, why_size, "%s", problem);
        return false;
    }
    snprintf(n->app_url, sizeof n->app_url, "%s", text);
    snprintf(n->app_host, sizeof n->app_host, "%.*s", (int)u.host_len, u.host);
    n->app_port = u.port > 0 ? (uint16_t)u.port : 80;
    return true;
}

/* One place for both sources of an error: a node of the file, or a variable. */
struct node_origin {
    const char *key;                  /* field name */
    const struct sl_conf_value *node; /* file */
    const char *env;                  /* environment variable name */
};

__attribute__((format(printf, 3, 4))) static bool
fail_node(struct loader *L, const struct node_origin *o, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->env != NULL)
        return conf_fail_env(L, o->env, "%s", msg);
    return conf_fail(L, o->node, "%s: %s", o->key, msg);
}

static bool bad_value(struct loader *L, const struct node_origin *o, const char *value,
                      const char *why)
{
    char q[100];
    return fail_node(L, o, "invalid value '%s': %s", conf_excerpt(q, value), why);
}

/* Parse a comma-separated list (kong.conf style) into items[]. */
static bool node_list_text(struct loader *L, const struct node_field *f,
                           const struct node_origin *o, const char *text, void *items, size_t *n,
                           size_t max)
{
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *entry = p;
        size_t elen = len;
        trim(&entry, &elen);
        char why[160];
        char copy[300];
        snprintf(copy, sizeof copy, "%.*s", (int)(elen > 200 ? 200 : elen), entry);
        if (elen == 0) {
            if (*text != '\0') /* "" is an empty list; "a,,b" is a mistake */
                return bad_value(L, o, text, "empty entry in the list");
        } else if (*n == max) {
            return bad_value(L, o, copy, "too many entries");
        } else if (f->kind == NK_CIDRS) {
            if (!parse_cidr(entry, elen, (struct sl_cidr *)items + *n, why, sizeof why))
                return bad_value(L, o, copy, why);
            (*n)++;
        } else {
            if (!parse_listen(entry, elen, (struct sl_listen *)items + *n, why, sizeof why))
                return bad_value(L, o, copy, why);
            (*n)++;
        }
        if (p[len] == '\0')
            return true;
        p += len + 1;
    }
}

static bool store_list(struct loader *L, const struct node_field *f, void *items, size_t n,
                       const struct node_origin *o)
{
    struct sl_node_config *node = &L->cfg->node;
    if (f->kind == NK_CIDRS) {
        struct sl_cidr *a = n ? conf_alloc(L, n * sizeof *a) : NULL;
        if (n && a == NULL)
            return false;
        if (n)
            memcpy(a, items, n * sizeof *a);
        node->trusted_ips = a;
        node->n_trusted_ips = n;
        return true;
    }
    if (n == 0)
        return fail_node(L, o, "at least one address is needed");
    struct sl_listen *a = conf_alloc(L, n * sizeof *a);
    if (a == NULL)
        return false;
    memcpy(a, items, n * sizeof *a);
    node->proxy_listen = a;
    node->n_proxy_listen = n;
    return true;
}

/* A scalar node value given as text (from the file or the environment). */
static bool node_set_text(struct loader *L, const struct node_field *f, const struct node_origin *o,
                          const char *text)
{
    char *base = (char *)&L->cfg->node;
    char why[160];
    unsigned long long v = 0;

    switch (f->kind) {
    case NK_LISTEN_LIST:
    case NK_CIDRS: {
        size_t max = f->kind == NK_CIDRS ? SL_CONFIG_MAX_TRUSTED_IPS : SL_CONFIG_MAX_LISTEN;
        size_t elem = f->kind == NK_CIDRS ? sizeof(struct sl_cidr) : sizeof(struct sl_listen);
        void *items = calloc(max, elem);
        size_t n = 0;
        if (items == NULL)
            return conf_fail_oom(L);
        bool ok = node_list_text(L, f, o, text, items, &n, max) && store_list(L, f, items, n, o);
        free(items);
        return ok;
    }
    case NK_LISTEN_ONE: {
        struct sl_listen *out = (struct sl_listen *)(base + f->offset);
        if (strcmp(text, "off") == 0) {
            if (f->flags & NF_NO_OFF)
                return bad_value(L, o, text, "this listener cannot be off");
            memset(out, 0, sizeof *out);
            return true;
        }
        struct sl_listen l;
        if (!parse_listen(text, strlen(text), &l, why, sizeof why))
            return bad_value(L, o, text, why);
        if (l.ssl)
            return bad_value(L, o, text, "ssl on this listener is not supported yet");
        *out = l;
        return true;
    }
    case NK_WORKERS: {
        int *out = (int *)(base + f->offset);
        if (strcmp(text, "auto") == 0) {
            *out = online_cpus();
            return true;
        }
        if (!conf_is_digits(text, strlen(text), 10) || strlen(text) > 6 ||
            (v = strtoull(text, NULL, 10)) < f->min || v > f->max) {
            snprintf(why, sizeof why, "expected 'auto' or an integer between %llu and %llu", f->min,
                     f->max);
            return bad_value(L, o, text, why);
        }
        *out = (int)v;
        return true;
    }
    case NK_MS:
    case NK_U32:
    case NK_BYTES: {
        bool ok;
        if (f->kind == NK_MS)
            ok = parse_duration_ms(text, &v);
        else if (f->kind == NK_BYTES)
            ok = parse_size(text, &v);
        else if ((ok = conf_is_digits(text, strlen(text), 10) && strlen(text) <= 12))
            v = strtoull(text, NULL, 10);
        if (!ok) {
            const char *expect = f->kind == NK_MS ? "expected milliseconds, or a number with "
                                                    "a unit: ms, s, m, h (\"60s\")"
                                 : f->kind == NK_BYTES
                                     ? "expected bytes, or a number with a unit: k, m, g (\"8m\")"
                                     : "expected a non-negative integer";
            return bad_value(L, o, text, expect);
        }
        if (v < f->min || v > f->max) {
            snprintf(why, sizeof why, "out of range (%llu..%llu%s)", f->min, f->max,
                     f->kind == NK_MS ? " ms" : "");
            return bad_value(L, o, text, why);
        }
        if (f->kind == NK_BYTES)
            memcpy(base + f->offset, &(uint64_t){v}, sizeof(uint64_t));
        else
            memcpy(base + f->offset, &(uint32_t){(uint32_t)v}, sizeof(uint32_t));
        return true;
    }
    case NK_ONOFF: {
        bool b;
        if (strcasecmp(text, "on") == 0 || strcasecmp(text, "true") == 0)
            b = true;
        else if (strcasecmp(text, "off") == 0 || strcasecmp(text, "false") == 0)
            b = false;
        else
            return bad_value(L, o, text, "expected on, off, true or false");
        memcpy(base + f->offset, &b, sizeof b);
        return true;
    }
    case NK_DNS_SERVERS: {
        if (strlen(text) >= sizeof L->cfg->node.dns_resolver)
            return bad_value(L, o, text, "too long");
        const char *p = text;
        while (*p) {
            size_t len = strcspn(p, ",");
            const char *entry = p;
            size_t elen = len;
            trim(&entry, &elen);
            if (!valid_nameserver(entry, elen))
                return bad_value(L, o, text, "expected a comma-separated list of ip[:port]");
            p += len + (p[len] == ',');
        }
        snprintf(base + f->offset, sizeof L->cfg->node.dns_resolver, "%s", text);
        return true;
    }
    case NK_PATH:
        if (text[0] == '\0' || strlen(text) >= sizeof L->cfg->node.dns_hostsfile)
            return bad_value(L, o, text, "expected a file path shorter than 256 bytes");
        snprintf(base + f->offset, sizeof L->cfg->node.dns_hostsfile, "%s", text);
        return true;
    case NK_LOG_LEVEL:
        if (sl_log_level_from_name(text) < 0)
            return bad_value(L, o, text, "expected debug, info, notice, warn or error");
        snprintf(base + f->offset, sizeof L->cfg->node.log_level, "%s", text);
        return true;
    case NK_SERVICE_NAME:
        if (!valid_service_name(text))
            return bad_value(L, o, text, "expected 1 to 127 characters of A-Z a-z 0-9 . _ -");
        snprintf(base + f->offset, sizeof L->cfg->node.service_name, "%s", text);
        return true;
    case NK_APP_URL:
        if (!set_app_url(text, &L->cfg->node, why, sizeof why))
            return bad_value(L, o, text, why);
        return true;
    case NK_BREAKERS: /* NF_NO_ENV: only ever read from the file's map */
        return bad_value(L, o, text, "expected a map in the file");
    }
    return true;
}

/* A node key from the file: a scalar, or for lists also a YAML sequence. */
static bool node_set_yaml(struct loader *L, const struct node_field *f,
                          const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    struct node_origin o = {.key = f->name, .node = val};
    bool is_list = f->kind == NK_LISTEN_LIST || f->kind == NK_CIDRS;
    if (val->type == SL_CONF_SEQ && is_list) {
        size_t max = f->kind == NK_CIDRS ? SL_CONFIG_MAX_TRUSTED_IPS : SL_CONFIG_MAX_LISTEN;
        if (val->n_items > max)
            return conf_fail(L, val, "%s: too many entries (the limit is %zu)", f->name, max);
        size_t elem = f->kind == NK_CIDRS ? sizeof(struct sl_cidr) : sizeof(struct sl_listen);
        void *items = calloc(val->n_items + 1, elem);
        if (items == NULL)
            return conf_fail_oom(L);
        bool ok = true;
        for (size_t i = 0; ok && i < val->n_items; i++) {
            const struct sl_conf_value *it = val->items[i];
            struct node_origin io = {.key = f->name, .node = it};
            char why[160];
            if (it->type != SL_CONF_STRING) {
                ok = conf_fail(L, it, "%s: expected a string, got %s", f->name,
                               sl_conf_type_name(it->type));
            } else if (f->kind == NK_CIDRS) {
                if (!parse_cidr(it->text, it->text_len, (struct sl_cidr *)items + i, why,
                                sizeof why))
                    ok = bad_value(L, &io, it->text, why);
            } else if (!parse_listen(it->text, it->text_len, (struct sl_listen *)items + i, why,
                                     sizeof why)) {
                ok = bad_value(L, &io, it->text, why);
            }
        }
        ok = ok && store_list(L, f, items, val->n_items, &o);
        free(items);
        return ok;
    }
    if (f->kind == NK_BREAKERS)
        return conf_read_circuit_breakers(
            L, val, (struct sl_circuit_breakers *)((char *)&L->cfg->node + f->offset));
    if (val->text == NULL)
        return conf_fail(L, val, "%s: expected %s, got %s", f->name,
                         is_list ? "a string or a sequence" : "a scalar",
                         sl_conf_type_name(val->type));
    if (f->kind == NK_ONOFF && val->type != SL_CONF_BOOL && val->type != SL_CONF_STRING)
        return bad_value(L, &o, val->text, "expected on, off, true or false");
    if ((f->kind == NK_U32 || f->kind == NK_MS || f->kind == NK_BYTES || f->kind == NK_WORKERS) &&
        val->type != SL_CONF_INT && val->type != SL_CONF_STRING)
        return bad_value(L, &o, val->text, "expected an integer");
    if ((f->kind == NK_SERVICE_NAME || f->kind == NK_APP_URL) && val->type != SL_CONF_STRING)
        return bad_value(L, &o, val->text, "expected a string");
    return node_set_text(L, f, &o, val->text);
}

bool conf_read_node_block(struct loader *L, const struct sl_conf_value *map)
{
    if (!conf_expect_type(L, map, SL_CONF_MAP))
        return false;
    for (size_t i = 0; i < map->n_items; i++) {
        const struct sl_conf_value *key = map->keys[i], *val = map->items[i];
        if (strcmp(key->text, "_comment") == 0) {
            if (!conf_expect_type(L, val, SL_CONF_STRING))
                return false;
            continue;
        }
        size_t fi = 0;
        while (fi < N_NODE_FIELDS_USED && (strcmp(node_fields[fi].name, key->text) != 0 ||
                                           !(node_fields[fi].flags & role_flag(L))))
            fi++;
        if (fi == N_NODE_FIELDS_USED) {
            char q[100];
            return conf_fail(L, key, "unknown field '%s'", conf_excerpt(q, key->text));
        }
        if (val->type == SL_CONF_NULL)
            continue;
        if (!node_set_yaml(L, &node_fields[fi], key, val))
            return false;
        L->node_src[fi].node = val;
    }
    return true;
}

/* SLUICE_<KEY> wins over the file. */
bool conf_apply_env(struct loader *L)
{
    for (size_t fi = 0; fi < N_NODE_FIELDS_USED; fi++) {
        const struct node_field *f = &node_fields[fi];
        if (!(f->flags & role_flag(L)) || (f->flags & NF_NO_ENV))
            continue;
        char var[64] = "SLUICE_";
        size_t n = strlen(var);
        for (const char *c = f->name; *c && n + 1 < sizeof var; c++)
            var[n++] = (char)((*c >= 'a' && *c <= 'z') ? *c - 'a' + 'A' : *c);
        var[n] = '\0';
        const char *value = getenv(var);
        if (value == NULL)
            continue;
        char *name = conf_strdup(L, var); /* kept for later messages */
        if (name == NULL)
            return false;
        struct node_origin o = {.key = f->name, .env = name};
        const char *text = value;
        size_t len = strlen(text);
        trim(&text, &len);
        char *copy = conf_strndup(L, text, len);
        if (copy == NULL || !node_set_text(L, f, &o, copy))
            return false;
        L->node_src[fi].env = name;
    }
    return true;
}

static struct node_origin origin_of(const struct loader *L, const char *name)
{
    for (size_t fi = 0; fi < N_NODE_FIELDS_USED; fi++)
        if (strcmp(node_fields[fi].name, name) == 0)
            return (struct node_origin){name, L->node_src[fi].node, L->node_src[fi].env};
    return (struct node_origin){name, NULL, NULL};
}

static bool origin_set(const struct node_origin *o)
{
    return o->node != NULL || o->env != NULL;
}

/* The listeners of one entry each, after the proxy_listen entries (those of
 * the other role are off: port 0). */
static const char *const single_listeners[] = {"status_listen", "admin_listen", "inbound_listen",
                                               "outbound_listen"};
#define N_SINGLE_LISTENERS (sizeof single_listeners / sizeof single_listeners[0])

static const struct sl_listen *listen_at(const struct sl_node_config *n, size_t i)
{
    if (i < n->n_proxy_listen)
        return &n->proxy_listen[i];
    const struct sl_listen *single[] = {&n->status_listen, &n->admin_listen, &n->inbound_listen,
                                        &n->outbound_listen};
    _Static_assert(sizeof single / sizeof single[0] == N_SINGLE_LISTENERS, "one name each");
    return single[i - n->n_proxy_listen];
}

static const char *listen_name(const struct sl_node_config *n, size_t i)
{
    return i < n->n_proxy_listen ? "proxy_listen" : single_listeners[i - n->n_proxy_listen];
}

/* sidecar.service_name: at the sidecar block, or at 1:1 without one. */
static bool check_service_name(struct loader *L)
{
    if (strcmp(L->role, "sidecar") != 0 || L->cfg->node.service_name[0] != '\0')
        return true;
    if (L->node_block != NULL)
        return conf_fail(L, L->node_block, "sidecar.service_name is required");
    return conf_fail_at(L, 1, 1, "sidecar.service_name is required");
}

/* Rules that involve several node keys, checked after the overrides. */
bool conf_check_node(struct loader *L)
{
    struct sl_node_config *n = &L->cfg->node;
    if (!check_service_name(L))
        return false;
    if (n->proxy_listen == NULL && role_flag(L) == NF_GATEWAY) {
        n->proxy_listen = conf_alloc(L, sizeof *n->proxy_listen);
        if (n->proxy_listen == NULL)
            return false;
        snprintf(n->proxy_listen->host, sizeof n->proxy_listen->host, "0.0.0.0");
        n->proxy_listen->port = 8000;
        n->n_proxy_listen = 1;
    }
    if (n->max_header_bytes < n->max_request_line) {
        struct node_origin o = origin_of(L, "max_header_bytes");
        if (origin_set(&o))
            return fail_node(L, &o, "%u is less than max_request_line (%u)", n->max_header_bytes,
                             n->max_request_line);
        o = origin_of(L, "max_request_line");
        return fail_node(L, &o, "%u is more than max_header_bytes (%u)", n->max_request_line,
                         n->max_header_bytes);
    }
    /* Two sockets on one address would split its traffic (SO_REUSEPORT) or
     * fail to bind; a wildcard address covers every address of its family. */
    size_t n_all = n->n_proxy_listen + N_SINGLE_LISTENERS;
    for (size_t i = 0; i < n_all; i++) {
        const struct sl_listen *a = listen_at(n, i);
        for (size_t j = i + 1; j < n_all; j++) {
            const struct sl_listen *b = listen_at(n, j);
            if (b->port != a->port || b->port == 0)
                continue;
            bool a6 = strchr(a->host, ':') != NULL, b6 = strchr(b->host, ':') != NULL;
            if (a6 != b6)
                continue;
            const char *any = a6 ? "::" : "0.0.0.0";
            bool same = strcmp(a->host, b->host) == 0;
            if (!same && strcmp(a->host, any) != 0 && strcmp(b->host, any) != 0)
                continue;
            /* reported at the later key when it was set, else at the earlier
             * one; the reported key's address comes first */
            struct node_origin o = origin_of(L, listen_name(n, j));
            if (!origin_set(&o)) {
                o = origin_of(L, listen_name(n, i));
                const struct sl_listen *t = a;
                a = b;
                b = t;
            }
            if (same)
                return fail_node(L, &o, "address %s%s%s:%u is used twice", a6 ? "[" : "", a->host,
                                 a6 ? "]" : "", a->port);
            return fail_node(L, &o, "address %s%s%s:%u overlaps %s%s%s:%u", a6 ? "[" : "", b->host,
                             a6 ? "]" : "", b->port, a6 ? "[" : "", a->host, a6 ? "]" : "",
                             a->port);
        }
    }
    return true;
}
