/*
 * Resilience blocks: a service's retry_policy, circuit_breakers and
 * outlier_detection, and the sidecar's inbound_circuit_breakers (the same
 * reader). Each block is a map read through a descriptor table like an
 * entity, so unknown keys, types and ranges are refused at their position;
 * the rules between keys (max >= base, status codes <-> retry_on) are
 * checked once the block is read. Durations are integers of milliseconds,
 * as Kong's timeouts. Defaults: docs/configuration.md.
 */
#include <string.h>

#define SL_CONFIG_LOADER 1
#include "conf_internal.h"

#define MS_MAX SL_CONFIG_MAX_TIMEOUT_MS
#define COUNT_MAX 1000000

/* ----- retry_policy ----- */

static const struct {
    const char *name;
    unsigned bit;
} retry_on_names[] = {
    {"connect-failure", SL_RETRY_CONNECT_FAILURE},
    {"reset", SL_RETRY_RESET},
    {"gateway-error", SL_RETRY_GATEWAY_ERROR},
    {"5xx", SL_RETRY_5XX},
    {"retriable-4xx", SL_RETRY_RETRIABLE_4XX},
    {"retriable-status-codes", SL_RETRY_STATUS_CODES},
};

static bool retry_on(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                     const struct sl_conf_value *val)
{
    if (!conf_expect_type(L, val, SL_CONF_SEQ))
        return false;
    if (val->n_items == 0)
        return conf_fail(L, val, "retry_on must not be empty (num_retries: 0 turns retries off)");
    unsigned bits = 0;
    for (size_t i = 0; i < val->n_items; i++) {
        const char *s = NULL; /* set by conf_read_string() */
        if (!conf_read_string(L, val->items[i], &s))
            return false;
        size_t n = 0;
        while (n < sizeof retry_on_names / sizeof retry_on_names[0] &&
               strcmp(s, retry_on_names[n].name) != 0)
            n++;
        if (n == sizeof retry_on_names / sizeof retry_on_names[0]) {
            char q[100];
            return conf_fail(L, val->items[i],
                             "unknown retry_on value '%s' (expected connect-failure, reset, "
                             "gateway-error, 5xx, retriable-4xx or retriable-status-codes)",
                             conf_excerpt(q, s));
        }
        bits |= retry_on_names[n].bit;
    }
    ((struct sl_retry_policy *)e->obj)->retry_on = bits;
    return true;
}

static bool retriable_status_codes(struct loader *L, struct entity *e,
                                   const struct sl_conf_value *key, const struct sl_conf_value *val)
{
    struct sl_retry_policy *rp = e->obj;
    if (!conf_expect_type(L, val, SL_CONF_SEQ))
        return false;
    uint16_t *codes = conf_alloc(L, (val->n_items + 1) * sizeof *codes);
    if (codes == NULL)
        return false;
    for (size_t i = 0; i < val->n_items; i++) {
        long long code;
        if (!conf_read_int(L, val->items[i], 100, 599, &code))
            return false;
        codes[i] = (uint16_t)code;
    }
    rp->retriable_status_codes = codes;
    rp->n_retriable_status_codes = val->n_items;
    return true;
}

/*
 * `upper` must be at least `lower`. The error goes to the key the file
 * sets (the upper one when both are), as for max_header_bytes.
 */
static bool check_order(struct loader *L, const struct entity *e, const char *lower,
                        uint32_t lower_value, const char *upper, uint32_t upper_value)
{
    if (upper_value >= lower_value)
        return true;
    if (conf_seen(e, upper) != NULL)
        return conf_fail(L, conf_value_of(e, upper), "%s: %u is less than %s (%u)", upper,
                         upper_value, lower, lower_value);
    return conf_fail(L, conf_value_of(e, lower), "%s: %u is more than %s (%u)", lower, lower_value,
                     upper, upper_value);
}

#define RETRY_FIELD(n, k, m, lo, hi)                                                               \
    {                                                                                              \
        n, k, offsetof(struct sl_retry_policy, m), lo, hi, NULL                                    \
    }
static const struct field backoff_fields[] = {
    RETRY_FIELD("base_interval", FK_U32, backoff_base_interval_ms, 1, MS_MAX),
    RETRY_FIELD("max_interval", FK_U32, backoff_max_interval_ms, 1, MS_MAX),
};

/* backoff: {base_interval, max_interval}; max defaults to 10 x base (Envoy). */
static bool retry_backoff(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                          const struct sl_conf_value *val)
{
    struct sl_retry_policy *rp = e->obj;
    struct entity b = ENTITY("backoff", rp, NONE, backoff_fields, NONE, NONE, NONE);
    if (!conf_read_entity(L, &b, val))
        return false;
    if (conf_seen(&b, "base_interval") != NULL && conf_seen(&b, "max_interval") == NULL) {
        uint64_t ten = 10ull * rp->backoff_base_interval_ms;
        rp->backoff_max_interval_ms = (uint32_t)(ten > MS_MAX ? MS_MAX : ten);
    }
    return check_order(L, &b, "base_interval", rp->backoff_base_interval_ms, "max_interval",
                       rp->backoff_max_interval_ms);
}

static const struct field budget_fields[] = {
    RETRY_FIELD("ratio", FK_NUMBER, budget_ratio, 0, 1),
    RETRY_FIELD("min_retries_per_second", FK_U32, budget_min_retries_per_second, 0, COUNT_MAX),
    RETRY_FIELD("ttl", FK_U32, budget_ttl_ms, 1, MS_MAX),
};

/* budget: Linkerd's retry budget (ratio of retries to requests over ttl). */
static bool retry_budget(struct loader *L, struct entity *e, const struct sl_conf_value *key,
                         const struct sl_conf_value *val)
{
    struct entity b = ENTITY("budget", e->obj, NONE, budget_fields, NONE, NONE, NONE);
    return conf_read_entity(L, &b, val);
}

static const struct field retry_policy_fields[] = {
    {"retry_on", FK_CUSTOM, 0, 0, 0, retry_on},
    {"retriable_status_codes", FK_CUSTOM, 0, 0, 0, retriable_status_codes},
    RETRY_FIELD("num_retries", FK_U32, num_retries, 0, 100),
    RETRY_FIELD("per_try_timeout", FK_U32, per_try_timeout_ms, 0, MS_MAX),
    RETRY_FIELD("timeout", FK_U32, timeout_ms, 0, MS_MAX),
    {"backoff", FK_CUSTOM, 0, 0, 0, retry_backoff},
    {"budget", FK_CUSTOM, 0, 0, 0, retry_budget},
    RETRY_FIELD("max_body_bytes", FK_U64, max_body_bytes, 0, 1LL << 30),
};

/* The retry_on element naming `retriable-status-codes` (for its error). */
static const struct sl_conf_value *status_codes_element(const struct entity *e)
{
    const struct sl_conf_value *seq = conf_value_of(e, "retry_on");
    for (size_t i = 0; seq->type == SL_CONF_SEQ && i < seq->n_items; i++)
        if (strcmp(seq->items[i]->text, "retriable-status-codes") == 0)
            return seq->items[i];
    return seq;
}

bool conf_read_retry_policy(struct loader *L, const struct sl_conf_value *val,
                            struct sl_retry_policy *out)
{
    *out = (struct sl_retry_policy){
        .set = true,
        .retry_on = SL_RETRY_CONNECT_FAILURE | SL_RETRY_RESET | SL_RETRY_GATEWAY_ERROR,
        .num_retries = 2,
        .backoff_base_interval_ms = 25,
        .backoff_max_interval_ms = 250,
        .budget_ratio = 0.2,
        .budget_min_retries_per_second = 10,
        .budget_ttl_ms = 10000,
        .max_body_bytes = 65536,
        .line = val->line,
        .column = val->column,
    };
    struct entity e = ENTITY("retry_policy", out, NONE, retry_policy_fields, NONE, NONE, NONE);
    if (!conf_read_entity(L, &e, val))
        return false;
    /* nothing is silently ignored: the codes and their retry_on go together */
    bool by_codes = (out->retry_on & SL_RETRY_STATUS_CODES) != 0;
    if (out->n_retriable_status_codes > 0 && !by_codes)
        return conf_fail(L, conf_value_of(&e, "retriable_status_codes"),
                         "retriable_status_codes needs 'retriable-status-codes' in retry_on");
    if (by_codes && out->n_retriable_status_codes == 0)
        return conf_fail(L, status_codes_element(&e),
                         "retry_on 'retriable-status-codes' needs a non-empty "
                         "retriable_status_codes");
    return true;
}

/* ----- circuit_breakers ----- */

#define BREAKER_FIELD(n, lo)                                                                       \
    {                                                                                              \
#n, FK_U32, offsetof(struct sl_circuit_breakers, n), lo, COUNT_MAX, NULL                   \
    }
static const struct field circuit_breaker_fields[] = {
    BREAKER_FIELD(max_connections, 1),
    BREAKER_FIELD(max_pending_requests, 1),
    BREAKER_FIELD(max_requests, 1),
    BREAKER_FIELD(max_retries, 0),
};

bool conf_read_circuit_breakers(struct loader *L, const struct sl_conf_value *val,
                                struct sl_circuit_breakers *out)
{
    *out = (struct sl_circuit_breakers){.set = true,
                                        .max_connections = 1024,
                                        .max_pending_requests = 1024,
                                        .max_requests = 1024,
                                        .max_retries = 3,
                                        .line = val->line,
                                        .column = val->column};
    struct entity e =
        ENTITY("circuit_breakers", out, NONE, circuit_breaker_fields, NONE, NONE, NONE);
    return conf_read_entity(L, &e, val);
}

/* ----- outlier_detection ----- */

#define OUTLIER_FIELD(n, m, lo, hi)                                                                \
    {                                                                                              \
        n, FK_U32, offsetof(struct sl_outlier_detection, m), lo, hi, NULL                          \
    }
static const struct field outlier_fields[] = {
    OUTLIER_FIELD("consecutive_5xx", consecutive_5xx, 0, COUNT_MAX),
    OUTLIER_FIELD("consecutive_gateway_failure", consecutive_gateway_failure, 0, COUNT_MAX),
    OUTLIER_FIELD("interval", interval_ms, 1, MS_MAX),
    OUTLIER_FIELD("base_ejection_time", base_ejection_time_ms, 1, MS_MAX),
    OUTLIER_FIELD("max_ejection_time", max_ejection_time_ms, 1, MS_MAX),
    OUTLIER_FIELD("max_ejection_percent", max_ejection_percent, 0, 100),
};

bool conf_read_outlier_detection(struct loader *L, const struct sl_conf_value *val,
                                 struct sl_outlier_detection *out)
{
    *out = (struct sl_outlier_detection){.set = true,
                                         .consecutive_5xx = 5,
                                         .consecutive_gateway_failure = 5,
                                         .interval_ms = 10000,
                                         .base_ejection_time_ms = 30000,
                                         .max_ejection_time_ms = 300000,
                                         .max_ejection_percent = 10,
                                         .line = val->line,
                                         .column = val->column};
    struct entity e = ENTITY("outlier_detection", out, NONE, outlier_fields, NONE, NONE, NONE);
    return conf_read_entity(L, &e, val) &&
           check_order(L, &e, "base_ejection_time", out->base_ejection_time_ms, "max_ejection_time",
                       out->max_ejection_time_ms);
}
