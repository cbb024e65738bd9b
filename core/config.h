/*
 * sluice configuration: Kong's declarative format (_format_version "3.0")
 * plus the node block `gateway:` (or `sidecar:`).
 *
 * Ownership: sl_config_load() returns a snapshot with refcount 1 that the
 * caller owns. A snapshot is immutable once loaded; holders take a reference
 * with sl_config_ref() and drop it with sl_config_unref() (atomic; the last
 * unref frees everything, including all strings and arrays inside).
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct sl_listen {
    char host[256]; /* "0.0.0.0", "127.0.0.1", "::1" (no brackets) ... */
    uint16_t port;
    bool ssl; /* "ssl" flag on the entry; TLS is a later issue */
    bool reuseport_off; /* reserved */
};

/* A CIDR from trusted_ips. */
struct sl_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix_len;
};

struct sl_node_config {
    struct sl_listen *proxy_listen;
    size_t n_proxy_listen;
    struct sl_listen status_listen; /* port 0 = off; default 127.0.0.1:8100 */
    int worker_processes;           /* resolved: "auto" -> number of cores */
    struct sl_cidr *trusted_ips;
    size_t n_trusted_ips;

    /* Client side limits and timeouts (ms / bytes). */
    uint32_t client_header_timeout_ms;     /* whole head must arrive in this; default 60000 */
    uint32_t client_body_timeout_ms;       /* between two reads of the body; default 60000 */
    uint32_t client_body_total_timeout_ms; /* whole body; default 300000, 0 = none */
    uint32_t keepalive_timeout_ms;         /* idle client keep-alive; default 75000 */
    uint32_t keepalive_requests;           /* requests per client connection; default 10000 */
    uint32_t max_request_line;             /* 414 beyond; default 8192 */
    uint32_t max_header_bytes;             /* 431 beyond; default 32768 */
    uint32_t max_headers;                  /* 431 beyond; default 100 */
    uint64_t client_max_body_size;         /* 413 beyond; default 0 = unlimited (Kong) */

    /* Upstream connection reuse (kong.conf names). */
    uint32_t upstream_keepalive_pool_size;     /* per worker per target; default 512 */
    uint32_t upstream_keepalive_max_requests;  /* default 10000 */
    uint32_t upstream_keepalive_idle_timeout_ms; /* default 60000 */

    uint32_t graceful_shutdown_timeout_ms; /* SIGTERM drain grace; default 10000 */
    bool access_log;                       /* JSON line per request on stdout; default true */
    char log_level[16];                    /* "debug" "info" "notice" "warn" "error"; default "notice" */
};

struct sl_service {
    char *name; /* may be NULL */
    char *id;   /* may be NULL */
    char *protocol; /* "http" (default) or "https" */
    char *host;
    uint16_t port;  /* default 80 (443 for https) */
    char *path;     /* NULL when not set */
    uint32_t connect_timeout_ms; /* default 60000 */
    uint32_t read_timeout_ms;    /* default 60000 */
    uint32_t write_timeout_ms;   /* default 60000 */
    uint32_t retries;            /* default 5 */
    bool enabled;                /* default true */
    size_t index;                /* position in sl_config.services */
};

struct sl_route {
    char *name; /* may be NULL */
    char *id;
    char **paths;
    size_t n_paths;
    char **hosts;
    size_t n_hosts;
    char **methods; /* upper case */
    size_t n_methods;
    bool strip_path;    /* default true */
    bool preserve_host; /* default false */
    struct sl_service *service; /* never NULL for a proxied route */
    size_t index;
};

struct sl_config {
    atomic_int refcount;
    char *source_path;   /* file it came from */
    char format_version[8];
    struct sl_node_config node;
    struct sl_service *services;
    size_t n_services;
    struct sl_route *routes;
    size_t n_routes;
    char hash[33]; /* md5-like hex digest of the file bytes (for /status) */
};

/* Error of a load: "file:line:column: message". */
struct sl_config_error {
    char text[512];
};

/*
 * Load and validate `path`. `role` is "gateway" or "sidecar" (the name of
 * the node block). Environment variables SLUICE_<KEY> override node keys.
 * On failure returns NULL and fills err with "file:line:column: message"
 * (line and column are 1-based and point at the offending node).
 */
struct sl_config *sl_config_load(const char *path, const char *role, struct sl_config_error *err);

struct sl_config *sl_config_ref(struct sl_config *cfg);
void sl_config_unref(struct sl_config *cfg);

/* Parse a "host:port [ssl]" listen entry; returns false on a bad entry. */
bool sl_config_parse_listen(const char *text, struct sl_listen *out);

/* Is the address in one of the trusted CIDRs? */
bool sl_config_ip_trusted(const struct sl_node_config *node, const struct sockaddr *addr);

#endif
