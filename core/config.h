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

/* the YAML tree, struct sl_plugin_conf, struct sl_config_error, SL_PROTO_* */
#include "sluice/config_types.h"

struct sl_listen {
    char host[256]; /* "0.0.0.0", "127.0.0.1", "::1" (no brackets) ... */
    uint16_t port;
    bool ssl;           /* "ssl" flag on the entry; TLS is a later issue */
    bool reuseport_off; /* reserved */
};

/* A CIDR from trusted_ips. */
struct sl_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix_len;
};

/*
 * Resilience policies (docs/configuration.md, "Resilience"). Plain values
 * inside the snapshot (sl_service, sl_node_config) and owned by it like the
 * rest; `set` is false when the block is absent, and then every other
 * field is zero. All durations are milliseconds.
 */

/* retry_policy.retry_on (Envoy's names) */
/* clang-format off */
#define SL_RETRY_CONNECT_FAILURE 0x01u /* "connect-failure": connect refused/failed/timed out, DNS failure */
#define SL_RETRY_RESET 0x02u           /* "reset": the connection closed or reset before a response head */
#define SL_RETRY_GATEWAY_ERROR 0x04u   /* "gateway-error": 502, 503, 504 (and per-try timeout) */
#define SL_RETRY_5XX 0x08u             /* "5xx": any 5xx, reset, connect failure, per-try timeout */
#define SL_RETRY_RETRIABLE_4XX 0x10u   /* "retriable-4xx": 409 */
#define SL_RETRY_STATUS_CODES 0x20u    /* "retriable-status-codes": retriable_status_codes */
/* clang-format on */

/* A service's retry_policy: when set, it replaces the service's Kong
 * `retries` (which keeps its Kong meaning otherwise). */
struct sl_retry_policy {
    bool set;          /* the service has a retry_policy block */
    unsigned retry_on; /* SL_RETRY_* bits; default connect-failure|reset|gateway-error */
    uint16_t *retriable_status_codes; /* owned by the snapshot */
    size_t n_retriable_status_codes;
    uint32_t num_retries;                   /* default 2 */
    uint32_t per_try_timeout_ms;            /* default 0: the service's read_timeout */
    uint32_t timeout_ms;                    /* whole request over all attempts; default 0: none */
    uint32_t backoff_base_interval_ms;      /* default 25 */
    uint32_t backoff_max_interval_ms;       /* default 250 (10 x base when only base is set) */
    double budget_ratio;                    /* default 0.2 */
    uint32_t budget_min_retries_per_second; /* default 10 */
    uint32_t budget_ttl_ms;                 /* default 10000 */
    uint64_t max_body_bytes;                /* default 65536 */
    int line, column;                       /* of the retry_policy key's value */
};

/* Limits on the traffic to one upstream (a service's, or the sidecar's
 * inbound app): absent, there are no limits at all. */
struct sl_circuit_breakers {
    bool set;                      /* the block is present (absent: no limits at all) */
    uint32_t max_connections;      /* default 1024 */
    uint32_t max_pending_requests; /* default 1024 */
    uint32_t max_requests;         /* default 1024 */
    uint32_t max_retries;          /* default 3 */
    int line, column;
};

/* Ejection of a service's failing targets: absent, it is off. */
struct sl_outlier_detection {
    bool set;                             /* the block is present (absent: off) */
    uint32_t consecutive_5xx;             /* default 5; 0 disables this rule */
    uint32_t consecutive_gateway_failure; /* default 5; 0 disables this rule */
    uint32_t interval_ms;                 /* default 10000 */
    uint32_t base_ejection_time_ms;       /* default 30000 */
    uint32_t max_ejection_time_ms;        /* default 300000 */
    uint32_t max_ejection_percent;        /* default 10 (0..100) */
    int line, column;
};

/* The node block (`gateway:` or `sidecar:`), in the snapshot. Keys of the
 * other role keep their zero value, except where a default says otherwise. */
struct sl_node_config {
    struct sl_listen *proxy_listen; /* gateway role; NULL (none) in the sidecar role */
    size_t n_proxy_listen;
    struct sl_listen status_listen; /* port 0 = off; 127.0.0.1:8100 (sidecar: 0.0.0.0:15021) */
    struct sl_listen admin_listen;  /* POST /config; port 0 = off (the default) */
    int worker_processes;           /* resolved: "auto" -> number of cores (sidecar default 1) */
    struct sl_cidr *trusted_ips;
    size_t n_trusted_ips;

    /* Client side limits and timeouts (ms / bytes). */
    uint32_t client_header_timeout_ms;     /* whole head must arrive in this; default 60000 */
    uint32_t client_body_timeout_ms;       /* between two reads of the body; default 60000 */
    uint32_t client_body_total_timeout_ms; /* whole body; default 300000, 0 = none */
    uint32_t send_timeout_ms;      /* a client not reading our writes for this long is cut; 60000 */
    uint32_t keepalive_timeout_ms; /* idle client keep-alive; default 75000 */
    uint32_t keepalive_requests;   /* requests per client connection; default 10000 */
    uint32_t max_request_line;     /* 414 beyond; default 8192 */
    uint32_t max_header_bytes;     /* 431 beyond; default 32768 */
    uint32_t max_headers;          /* 431 beyond; default 100 */
    uint64_t client_max_body_size; /* 413 beyond; default 0 = unlimited (Kong) */

    /* Upstream connection reuse (kong.conf names). */
    uint32_t upstream_keepalive_pool_size;    /* per worker per target; default 512; 0 = no reuse */
    uint32_t upstream_keepalive_max_requests; /* default 10000 */
    uint32_t upstream_keepalive_idle_timeout_ms; /* default 60000 */

    /* Name resolution (kong.conf names). dns_resolver: comma-separated
     * "ip[:port]" list, empty = the nameservers of /etc/resolv.conf. */
    char dns_resolver[256];
    char dns_hostsfile[256]; /* default /etc/hosts */

    uint32_t graceful_shutdown_timeout_ms; /* SIGTERM drain grace; default 10000; 0 = none */
    bool access_log;                       /* JSON line per request on stdout; default true */
    char log_level[16]; /* "debug" "info" "notice" "warn" "error"; default "notice" */

    /* sidecar role (zero/empty in the gateway role) */
    char service_name[128];           /* required in the sidecar role */
    struct sl_listen inbound_listen;  /* default 0.0.0.0:15006 */
    struct sl_listen outbound_listen; /* default 127.0.0.1:15001 */
    char app_url[512];                /* default "http://127.0.0.1:8080", as written */
    char app_host[256];               /* parsed from app_url (IPv6 without brackets) */
    uint16_t app_port;                /* parsed; default 80 when the URL has none */
    uint32_t drain_delay_ms;          /* default 5000 */
    struct sl_circuit_breakers inbound_circuit_breakers; /* key inbound_circuit_breakers */
};


struct sl_upstream;

struct sl_service {
    char *name;     /* may be NULL */
    char *id;       /* may be NULL */
    char *protocol; /* "http" (default) or "https" */
    char *host;
    uint16_t port;               /* default 80 (443 for https) */
    char *path;                  /* NULL when not set */
    uint32_t connect_timeout_ms; /* default 60000 */
    uint32_t read_timeout_ms;    /* default 60000 */
    uint32_t write_timeout_ms;   /* default 60000 */
    uint32_t retries;            /* default 5; unused when retry_policy.set */
    bool enabled;                /* default true */
    /* The upstream entity whose name equals `host` (Kong: then the host is
     * balanced over its targets instead of resolved); NULL otherwise. */
    const struct sl_upstream *upstream;
    bool tls_verify;        /* upstream TLS (issue 4); default false */
    int tls_verify_depth;   /* -1 = not set */
    char **ca_certificates; /* ids of ca_certificates entities */
    size_t n_ca_certificates;
    struct sl_retry_policy retry_policy;
    struct sl_circuit_breakers circuit_breakers;
    struct sl_outlier_detection outlier_detection;
    size_t index;                /* position in sl_config.services */
    int line, column;            /* where the entity starts in the file */
};

/* One entry of a route's `headers` map. */
struct sl_route_header {
    char *name;    /* lower case */
    char **values; /* as written; a value starting "~*" is a regex (the rest) */
    size_t n_values;
};

struct sl_route {
    char *name; /* may be NULL */
    char *id;
    /* Plain prefixes start with "/"; regexes with "~" (the pattern follows
     * the "~"). Pre-3.0 files: the loader has already added the "~" to the
     * paths Kong reads as regexes, so consumers never see the legacy rule. */
    char **paths;
    size_t n_paths;
    char **hosts; /* lower case; may start "*." or end ".*" (wildcards) */
    size_t n_hosts;
    char **methods; /* upper case */
    size_t n_methods;
    struct sl_route_header *headers;
    size_t n_headers;
    char **snis; /* lower case */
    size_t n_snis;
    int regex_priority;         /* default 0 */
    bool strip_path;            /* default true */
    bool preserve_host;         /* default false */
    struct sl_service *service; /* never NULL for a proxied route */
    size_t index;
    unsigned protocols;             /* SL_PROTO_HTTP|SL_PROTO_HTTPS (default both) */
    int https_redirect_status_code; /* default 426 */
    int line, column;
};

struct sl_consumer {
    char *id;        /* as written, or generated from the username (Kong: a v5 UUID) */
    char *username;  /* may be NULL (then custom_id is set) */
    char *custom_id; /* may be NULL (then username is set) */
    size_t index;
    int line, column;
};

/* A credential of the jwt plugin, owned by a consumer. */
struct sl_jwt_secret {
    char *id;                           /* may be NULL */
    char *key;                          /* the `iss` value it matches; unique */
    char *secret;                       /* HS*: the shared secret */
    char *rsa_public_key;               /* RS* and ES*: PEM; NULL for HS* */
    char *algorithm;                    /* "HS256" (default), "RS256", "ES384" ... */
    const struct sl_consumer *consumer; /* never NULL */
    size_t index;
    int line, column;
};

enum sl_lb_algorithm {
    SL_LB_ROUND_ROBIN = 0, /* default */
    SL_LB_LEAST_CONNECTIONS,
    SL_LB_CONSISTENT_HASHING,
    SL_LB_LATENCY,
};

enum sl_hash_on {
    SL_HASH_NONE = 0, /* default */
    SL_HASH_CONSUMER,
    SL_HASH_IP,
    SL_HASH_HEADER,
    SL_HASH_COOKIE,
    SL_HASH_PATH,
    SL_HASH_QUERY_ARG,
    SL_HASH_URI_CAPTURE,
};

/* Kong's healthchecks block; a counter of 0 disables that check. */
struct sl_healthcheck_counters {
    uint32_t interval_ms;   /* Kong writes seconds (may be fractional); 0 = off */
    uint32_t successes;     /* healthy only */
    uint32_t tcp_failures;  /* unhealthy only */
    uint32_t timeouts;      /* unhealthy only */
    uint32_t http_failures; /* unhealthy only */
    uint16_t *http_statuses;
    size_t n_http_statuses;
};

struct sl_healthchecks {
    double threshold; /* percentage; default 0 */
    struct {
        char *type;                      /* "http" (default), "https", "tcp" */
        uint32_t timeout_ms;             /* default 1000 */
        uint32_t concurrency;            /* default 10 */
        char *http_path;                 /* default "/" */
        char *https_sni;                 /* may be NULL */
        bool https_verify_certificate;   /* default true */
        struct sl_route_header *headers; /* extra request headers; may be empty */
        size_t n_headers;
        struct sl_healthcheck_counters healthy; /* statuses default [200, 302] */
        struct sl_healthcheck_counters
            unhealthy; /* statuses default [429,404,500,501,502,503,504,505] */
    } active;
    struct {
        char *type;                               /* "http" (default), "https", "tcp" */
        struct sl_healthcheck_counters healthy;   /* statuses 200-208, 226, 300-308 */
        struct sl_healthcheck_counters unhealthy; /* statuses [429, 500, 503] */
    } passive;
};

struct sl_target {
    char *id;        /* may be NULL */
    char *host;      /* name or IP (IPv6 without brackets) */
    uint16_t port;   /* default 8000 */
    uint32_t weight; /* default 100; 0 = never picked */
    const struct sl_upstream *upstream;
    size_t index; /* position in its upstream's targets */
    int line, column;
};

struct sl_upstream {
    char *name; /* required; a service whose host is this name uses it */
    char *id;   /* may be NULL */
    enum sl_lb_algorithm algorithm;
    enum sl_hash_on hash_on, hash_fallback;
    char *hash_on_header, *hash_fallback_header;
    char *hash_on_cookie, *hash_on_cookie_path; /* path default "/" */
    char *hash_on_query_arg, *hash_fallback_query_arg;
    char *hash_on_uri_capture, *hash_fallback_uri_capture;
    uint32_t slots;    /* default 10000 */
    char *host_header; /* may be NULL */
    struct sl_healthchecks healthchecks;
    struct sl_target *targets; /* in file order (top-level ones appended) */
    size_t n_targets;
    size_t index;
    int line, column;
};

struct sl_sni {
    char *name; /* lower case; may start "*." */
    const struct sl_certificate *certificate;
    int line, column;
};

struct sl_certificate {
    char *id;                 /* may be NULL */
    char *cert, *key;         /* PEM */
    char *cert_alt, *key_alt; /* PEM, may be NULL (the other key type) */
    size_t index;
    int line, column;
};

struct sl_ca_certificate {
    char *id;   /* may be NULL */
    char *cert; /* PEM */
    int line, column;
};

struct sl_arena; /* private allocator owning every string and array of a snapshot */

struct sl_config {
    atomic_int refcount;
    const char *role;  /* "gateway" or "sidecar" (static string) */
    char *source_path; /* file it came from */
    char format_version[8];
    struct sl_node_config node;
    struct sl_service *services;
    size_t n_services;
    struct sl_route *routes;
    size_t n_routes;
    char hash[33]; /* first 128 bits of SHA-256 of the file bytes, hex (for /status) */
    struct sl_consumer *consumers;
    size_t n_consumers;
    struct sl_plugin_conf *plugins; /* in file order */
    size_t n_plugins;
    struct sl_upstream *upstreams;
    size_t n_upstreams;
    struct sl_certificate *certificates;
    size_t n_certificates;
    struct sl_sni *snis; /* all snis, nested and top level */
    size_t n_snis;
    struct sl_ca_certificate *ca_certificates;
    size_t n_ca_certificates;
    struct sl_jwt_secret *jwt_secrets;
    size_t n_jwt_secrets;
    struct sl_arena *arena; /* private */
    /* The plugin runtime (parsed plugin configs, per-route plans) attached
     * by sl_plugins_attach() (plugin_runtime.h); freed with the snapshot. */
    void *plugin_runtime;
    void (*plugin_runtime_free)(void *runtime);
};

/*
 * Load and validate `path`. `role` is "gateway" or "sidecar" (the name of
 * the node block). Environment variables SLUICE_<KEY> override node keys.
 * On failure returns NULL and fills err with "file:line:column: message"
 * (line and column are 1-based and point at the offending node), or
 * "env:SLUICE_KEY: message" for a bad override, or "file: message" for the
 * file itself (cannot open, too large). docs/configuration.md lists it all.
 */
struct sl_config *sl_config_load(const char *path, const char *role, struct sl_config_error *err);

/*
 * Same as sl_config_load() on bytes already in memory (tests, fuzzing);
 * `source_name` is used in error messages and as source_path.
 */
struct sl_config *sl_config_load_buffer(const char *data, size_t len, const char *source_name,
                                        const char *role, struct sl_config_error *err);

/*
 * Check that every plugin named in cfg is in `supported` (a NULL-terminated
 * list of names). Fails with "file:line:column: plugin 'jwt' is not
 * supported yet" for the first one that is not.
 */
bool sl_config_check_plugins(const struct sl_config *cfg, const char *const *supported,
                             struct sl_config_error *err);

struct sl_config *sl_config_ref(struct sl_config *cfg);
void sl_config_unref(struct sl_config *cfg);

/* Parse a "host:port [ssl]" listen entry; returns false on a bad entry. */
bool sl_config_parse_listen(const char *text, struct sl_listen *out);

/* Is the address in one of the trusted CIDRs? */
bool sl_config_ip_trusted(const struct sl_node_config *node, const struct sockaddr *addr);

#endif
