/*
 * Private to the configuration loader: core/config.c and core/conf_*.c
 * include it, nothing else does (config.h is the interface). The loader's
 * state, the records entities are read into, the descriptor tables, and
 * the functions the loader's files share.
 *
 * Files of the loader, one concern each:
 *   conf_arena.c      the snapshot's arena; the vectors and string map of a load
 *   conf_tree.c       errors, YAML -> tree, typed reads and value checks
 *   conf_entities.c   descriptor tables and the generic entity reader;
 *                     references, protocols, plugins, consumers
 *   conf_routes.c     routes
 *   conf_services.c   services
 *   conf_resilience.c retry_policy, circuit_breakers, outlier_detection
 *   conf_upstreams.c  upstreams, targets, health checks
 *   conf_certs.c      certificates, SNIs, CA certificates, jwt secrets
 *   conf_node.c       the node block and SLUICE_<KEY> overrides
 *   config.c          top level, references, layout, load/ref/unref
 */
#ifndef SL_CONF_INTERNAL_H
#define SL_CONF_INTERNAL_H

#ifndef SL_CONFIG_LOADER
#error "conf_internal.h is private to the configuration loader: include config.h"
#endif

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SL_CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)
#define SL_CONFIG_MAX_DEPTH 64
#define SL_CONFIG_MAX_NODES 1000000u
#define SL_CONFIG_MAX_LISTEN 64
#define SL_CONFIG_MAX_TRUSTED_IPS 4096
#define SL_CONFIG_MAX_TIMEOUT_MS 2147483646LL /* Kong's timeout range: 2^31 - 2 */

#define NONE SIZE_MAX /* "no index" */

/* ------------------------------------------------------------------------ */
/* Arena, vectors, string map (conf_arena.c)                                  */
/* ------------------------------------------------------------------------ */

/* The arena of a snapshot: owned by the sl_config, freed with it. */
struct sl_arena *conf_arena_new(void);
/* Zeroed memory aligned for any type; NULL when out of memory. */
void *conf_arena_alloc(struct sl_arena *a, size_t n);
void conf_arena_free(struct sl_arena *a);

/* A growable array, owned by the loader: lives during one load, its data is
 * freed by the loader at the end (what must outlive the load is copied into
 * the arena). */
struct vec {
    void *data;
    size_t n, cap, elem;
};

/* A zeroed new last element; NULL when out of memory. */
void *conf_vec_push(struct vec *v);
void *conf_vec_at(const struct vec *v, size_t i);

/* The string map, owned by the loader like the vectors; its keys are arena
 * strings (they outlive it). */
/* Namespaces of the string map. Map keys use the map node's address. */
enum {
    NS_SERVICE_NAME = 1,
    NS_SERVICE_ID,
    NS_ROUTE_NAME,
    NS_ROUTE_ID,
    NS_CONSUMER_USERNAME,
    NS_CONSUMER_CUSTOM_ID,
    NS_CONSUMER_ID,
    NS_PLUGIN_ID,
    NS_PLUGIN_INSTANCE_NAME,
    NS_PLUGIN_SCOPE,
    NS_UPSTREAM_NAME,
    NS_UPSTREAM_ID,
    NS_TARGET, /* "upstream index|host:port" */
    NS_CERTIFICATE_ID,
    NS_SNI_NAME,
    NS_CA_ID,
    NS_JWT_KEY,
    NS_JWT_ID,
};

struct strmap_entry {
    uintptr_t ns; /* 0 = empty slot */
    const char *key;
    size_t len;
    uint64_t hash;
    const struct sl_conf_value *node; /* where it was first seen */
    size_t index;
};

struct strmap {
    struct strmap_entry *slots;
    size_t n, cap; /* cap is a power of two */
};

const struct strmap_entry *conf_strmap_get(const struct strmap *m, uintptr_t ns, const char *key);
/*
 * Insert (ns, key). Returns the existing entry when the key is already there,
 * NULL when inserted; sets *oom on allocation failure. `key` must outlive the
 * map (arena strings do).
 */
const struct strmap_entry *conf_strmap_put(struct strmap *m, uintptr_t ns, const char *key,
                                           const struct sl_conf_value *node, size_t index,
                                           bool *oom);

/* ------------------------------------------------------------------------ */
/* Loader state                                                               */
/* ------------------------------------------------------------------------ */

/* Entities as read, with the indices that become pointers at the end. */
struct service_rec {
    struct sl_service s;
    bool port_set;
};

struct route_rec {
    struct sl_route r;
    size_t service;
};

struct plugin_rec {
    struct sl_plugin_conf p;
    size_t service, route, consumer;
    const struct sl_conf_value *consumer_at; /* the `consumer:` value; NULL when nested */
};

struct target_rec {
    struct sl_target t;
    size_t upstream;
    const struct sl_conf_value *node, *target_node;
};

struct sni_rec {
    struct sl_sni s;
    size_t certificate;
};

struct jwt_rec {
    struct sl_jwt_secret j;
    size_t consumer;
};

enum ref_target { REF_SERVICE, REF_ROUTE, REF_CONSUMER, REF_UPSTREAM, REF_CERTIFICATE, REF_CA };
/* who holds a reference (pending_ref.owner_kind) */
enum { OWNER_ROUTE, OWNER_PLUGIN, OWNER_TARGET, OWNER_SNI, OWNER_JWT, OWNER_SERVICE };
enum ref_mode { REF_NAME_OR_ID, REF_NAME, REF_ID };

/* A reference by name or id, resolved once every entity is known. */
struct pending_ref {
    enum ref_target target;
    enum ref_mode mode;
    const char *key;
    const struct sl_conf_value *node;
    int owner_kind; /* OWNER_* */
    size_t owner_index;
};

struct node_source {
    const struct sl_conf_value *node; /* set from the file */
    const char *env;                  /* set from the environment (wins) */
};

#define N_NODE_FIELDS 32

/* The state of one load: on the stack of sl_config_load_buffer(), gone when
 * it returns. cfg and arena become the snapshot (or are freed on failure);
 * the vectors and the map are freed by the loader. */
struct loader {
    const char *source;
    const char *role;
    struct sl_config_error *err;
    bool failed;
    struct sl_arena *arena;
    struct sl_config *cfg;
    const char *data;
    size_t len;
    size_t n_nodes;
    bool legacy_paths;                      /* _format_version < 3.0: Kong's regex path heuristic */
    const struct sl_conf_value *node_block; /* the key of the role's block; NULL without one */

    struct vec services;        /* struct service_rec */
    struct vec routes;          /* struct route_rec */
    struct vec consumers;       /* struct sl_consumer */
    struct vec plugins;         /* struct plugin_rec */
    struct vec upstreams;       /* struct sl_upstream */
    struct vec targets;         /* struct target_rec */
    struct vec certificates;    /* struct sl_certificate */
    struct vec snis;            /* struct sni_rec */
    struct vec ca_certificates; /* struct sl_ca_certificate */
    struct vec jwt_secrets;     /* struct jwt_rec */
    struct vec refs;            /* struct pending_ref */
    struct strmap names;
    struct node_source node_src[N_NODE_FIELDS];
};

/* ------------------------------------------------------------------------ */
/* Errors and allocation (conf_tree.c). The first error wins; every one       */
/* returns false so that callers can `return conf_fail(...)`.                 */
/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 4, 5))) bool conf_fail_at(struct loader *L, int line, int column,
                                                        const char *fmt, ...);
/* Error pointing at a node of the file ("file: ..." when `at` is NULL). */
__attribute__((format(printf, 3, 4))) bool
conf_fail(struct loader *L, const struct sl_conf_value *at, const char *fmt, ...);
/* Error of an environment override: "env:VAR: ...". */
__attribute__((format(printf, 3, 4))) bool conf_fail_env(struct loader *L, const char *var,
                                                         const char *fmt, ...);
bool conf_fail_oom(struct loader *L);
/* A value quoted into a message: bounded, control characters replaced. */
const char *conf_excerpt(char out[100], const char *s);
/* Arena memory of the snapshot; NULL (after an "out of memory" error) on failure. */
void *conf_alloc(struct loader *L, size_t n);
char *conf_strndup(struct loader *L, const char *s, size_t n);
char *conf_strdup(struct loader *L, const char *s);

/* ------------------------------------------------------------------------ */
/* YAML -> tree, typed reads, value checks (conf_tree.c)                      */
/* ------------------------------------------------------------------------ */

/* Parse L->data into a tree; NULL with L->failed, or NULL for an empty stream. */
struct sl_conf_value *conf_parse_yaml(struct loader *L);

/* n > 0 digits of `base` (8, 16, anything else: 10). */
bool conf_is_digits(const char *s, size_t n, int base);
bool conf_expect_type(struct loader *L, const struct sl_conf_value *v, enum sl_conf_type type);
/* A non-empty string (Kong's strings have a minimum length of 1). */
bool conf_read_string(struct loader *L, const struct sl_conf_value *v, const char **out);
/* An integer in [min, max] (a float with an integral value counts). */
bool conf_read_int(struct loader *L, const struct sl_conf_value *v, long long min, long long max,
                   long long *out);
/* A finite number (an integer or a float) in [min, max]. */
bool conf_read_number(struct loader *L, const struct sl_conf_value *v, double min, double max,
                      double *out);
/* A boolean, YAML 1.1 spellings (yes/no/on/off) included. */
bool conf_read_bool(struct loader *L, const struct sl_conf_value *v, bool *out);
/* A sequence of non-empty strings, copied into the arena (NULL-terminated). */
bool conf_read_string_list(struct loader *L, const struct sl_conf_value *val, char ***out,
                           size_t *n_out);

bool conf_valid_name(const char *s);
bool conf_valid_uuid(const char *s);
bool conf_valid_tag(const char *s);
/* A URI path as Kong accepts it: NULL when valid, else the reason. */
const char *conf_path_problem(const char *p);
/* Kong 3 reads a pre-3.0 path as a regex when it has any other character. */
bool conf_legacy_regex_path(const char *p);
bool conf_valid_hostname(const char *h, size_t n);
bool conf_valid_ipv6(const char *h, size_t n);
/*
 * A service host: hostname, IPv4, or IPv6 with or without brackets (stored
 * without). Returns NULL on success and sets *start and *len to the part to keep.
 */
const char *conf_host_problem(const char *h, size_t n, size_t *start, size_t *len);

/* The parts of "scheme://host[:port][/path]" (no credentials, query or
 * fragment): pointers into the URL, which must outlive them. */
struct conf_url {
    char scheme[16];       /* lower case */
    const char *authority; /* after "://" */
    const char *host;      /* an IPv6 literal without its brackets */
    size_t host_len;
    long port;        /* -1 when the URL has none */
    const char *path; /* "" when the URL has none */
    char why[80];     /* the problem, when a step returns false */
};
/* First the scheme (the caller judges it), then the rest. */
bool conf_url_scheme(const char *url, struct conf_url *out);
bool conf_url_rest(struct conf_url *out);

/* ------------------------------------------------------------------------ */
/* Entities: descriptor tables and a generic reader (conf_entities.c)         */
/* ------------------------------------------------------------------------ */

struct entity;

typedef bool (*field_fn)(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val);

enum field_kind {
    FK_CUSTOM,      /* parse(): anything else */
    FK_STRING,      /* char * at offset, non-empty */
    FK_NAME,        /* char * at offset, Kong name characters */
    FK_UUID,        /* char * at offset */
    FK_U16,         /* uint16_t at offset, [min, max] */
    FK_U32,         /* uint32_t at offset, [min, max] */
    FK_U64,         /* uint64_t at offset, [min, max] */
    FK_NUMBER,      /* double at offset, an integer or a float in [min, max] */
    FK_INT,         /* integer in [min, max], checked and not stored */
    FK_BOOL,        /* bool at offset (NONE: checked and not stored) */
    FK_TAGS,        /* list of tags, checked and not stored */
    FK_COMMENT,     /* _comment: a string */
    FK_IGNORE,      /* _ignore: a sequence of anything */
    FK_UNSUPPORTED, /* a Kong field sluice does not implement yet: must be unset */
};

struct field {
    const char *name;
    enum field_kind kind;
    size_t offset;
    long long min, max;
    field_fn parse;
};

#define MAX_FIELDS 32

/* One entity being read: on the stack of its read_* function; obj points
 * at a copy of the record that is written back into its vector. */
struct entity {
    const char *kind; /* "service", "route", ... for messages */
    void *obj;        /* the sl_* struct being filled */
    size_t index;
    size_t parent_service, parent_route, parent_consumer; /* nesting; NONE at top level */
    const struct sl_conf_value *node;                     /* the entity's map */
    const struct field *fields;
    size_t n_fields;
    const struct sl_conf_value *seen[MAX_FIELDS]; /* key node of each field that was set */
};

/* An entity read from a map: its kind, object, index, field table and
 * the parents it is nested under (NONE at the top level). */
#define ENTITY(kind_, obj_, index_, fields_, service_, route_, consumer_)                          \
    ((struct entity){.kind = (kind_),                                                              \
                     .obj = (obj_),                                                                \
                     .index = (index_),                                                            \
                     .parent_service = (service_),                                                 \
                     .parent_route = (route_),                                                     \
                     .parent_consumer = (consumer_),                                               \
                     .fields = (fields_),                                                          \
                     .n_fields = sizeof(fields_) / sizeof(fields_)[0]})

/* The key node of a field that was set; NULL when it was not. */
const struct sl_conf_value *conf_seen(const struct entity *e, const char *name);
/* The value node of a field that was set, else the entity's map (for error positions). */
const struct sl_conf_value *conf_value_of(const struct entity *e, const char *name);
/* Read the map of one entity through its descriptor table. */
bool conf_read_entity(struct loader *L, struct entity *e, const struct sl_conf_value *map);
/*
 * Read one entity's map into tmp, then copy tmp into its slot of v (index
 * e->index). tmp, not the slot: entities nested in it are pushed to
 * vectors meanwhile, and the slot's vector may be one of them and move.
 * Returns the slot, or NULL when the map was refused (after the copy, so
 * what was read is freed with the rest).
 */
void *conf_read_entity_into(struct loader *L, struct entity *e, const struct sl_conf_value *map,
                            struct vec *v, const void *tmp, size_t size);
/* Register a unique value (name, id, ...) of an entity; error on a duplicate. */
bool conf_unique(struct loader *L, uintptr_t ns, const char *what, const char *value,
                 const struct sl_conf_value *at, size_t index);
/* A reference: "name-or-id", {name: x} or {id: x}, resolved after the read. */
bool conf_read_ref(struct loader *L, struct entity *e, enum ref_target target,
                   const struct sl_conf_value *val, int owner_kind);
/* Protocol names Kong knows but sluice does not serve (yet). */
bool conf_kong_protocol(const char *p);
/* A `protocols` set; grpc/grpcs only when `allow_grpc` (plugins). */
bool conf_read_protocols(struct loader *L, const struct sl_conf_value *val, bool allow_grpc,
                         unsigned *out);

/* ------------------------------------------------------------------------ */
/* Readers of each kind of entity: a sequence of maps, pushed to its vector.  */
/* `service`, `route`, `consumer`, ...: the index of the entity they are      */
/* nested under, NONE at the top level.                                       */
/* ------------------------------------------------------------------------ */

bool conf_read_plugins(struct loader *L, const struct sl_conf_value *seq, size_t service,
                       size_t route, size_t consumer); /* conf_entities.c */
bool conf_read_consumers(struct loader *L, const struct sl_conf_value *seq);
/* Kong's name-based (v5) UUID of a consumer without an id. */
char *conf_consumer_generated_id(struct loader *L, const struct sl_consumer *c);
bool conf_read_routes(struct loader *L, const struct sl_conf_value *seq, size_t service);
bool conf_read_services(struct loader *L, const struct sl_conf_value *seq);
bool conf_read_upstreams(struct loader *L, const struct sl_conf_value *seq);
bool conf_read_targets(struct loader *L, const struct sl_conf_value *seq, size_t upstream);
bool conf_read_certificates(struct loader *L, const struct sl_conf_value *seq);
bool conf_read_snis(struct loader *L, const struct sl_conf_value *seq, size_t certificate);
bool conf_read_ca_certificates(struct loader *L, const struct sl_conf_value *seq);
bool conf_read_jwt_secrets(struct loader *L, const struct sl_conf_value *seq, size_t consumer);

/* ------------------------------------------------------------------------ */
/* Resilience blocks (conf_resilience.c): `val` is the block's map; *out gets */
/* set = true, the defaults, and what the map sets.                           */
/* ------------------------------------------------------------------------ */

bool conf_read_retry_policy(struct loader *L, const struct sl_conf_value *val,
                            struct sl_retry_policy *out);
bool conf_read_circuit_breakers(struct loader *L, const struct sl_conf_value *val,
                                struct sl_circuit_breakers *out);
bool conf_read_outlier_detection(struct loader *L, const struct sl_conf_value *val,
                                 struct sl_outlier_detection *out);

/* ------------------------------------------------------------------------ */
/* Node block and SLUICE_<KEY> overrides (conf_node.c)                        */
/* ------------------------------------------------------------------------ */

/* The defaults of the role ("gateway" or "sidecar"). */
void conf_node_defaults(struct sl_node_config *n, const char *role);
bool conf_read_node_block(struct loader *L, const struct sl_conf_value *map);
/* SLUICE_<KEY> wins over the file. */
bool conf_apply_env(struct loader *L);
/* Rules that involve several node keys, checked after the overrides. */
bool conf_check_node(struct loader *L);

#endif
