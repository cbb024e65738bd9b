/*
 * libFuzzer harness for the resilience blocks and the sidecar block. The
 * input is up to four parts separated by a line "%%": the bodies of a
 * service's retry_policy, circuit_breakers and outlier_detection, and of
 * the node block. They are indented into an otherwise valid file, which is
 * loaded in both roles (the node block is `sidecar:` in the sidecar role,
 * `gateway:` in the gateway role). A load must either succeed with values
 * inside their documented ranges, or fail with "fuzz.yml:line:column:
 * message"; never crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 65536
#define SEPARATOR "\n%%\n"

extern char **environ;

/* SLUICE_<KEY> variables of whoever runs the fuzzer would change the file. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e != NULL && name[0] == '\0'; e++)
            if (strncmp(*e, "SLUICE_", 7) == 0)
                snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
        if (name[0] == '\0')
            return 0;
        unsetenv(name);
    }
}

struct text {
    char *buf;
    size_t len, cap;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->len + n > t->cap)
        abort(); /* the buffer is sized for the worst case */
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

static void puts_(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* "key:\n" then every line of the part indented below it. */
static void block(struct text *t, const char *key, const char *indent, const char *part, size_t n)
{
    puts_(t, key);
    puts_(t, ":\n");
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && part[end] != '\n')
            end++;
        puts_(t, indent);
        put(t, part + i, end - i);
        puts_(t, "\n");
        i = end + 1;
    }
}

static void check_error(const char *text)
{
    int line = 0, column = 0, used = 0;
    if (sscanf(text, "fuzz.yml:%d:%d: %n", &line, &column, &used) != 2 || used == 0 || line < 1 ||
        column < 1 || text[used] == '\0') {
        fprintf(stderr, "error without file:line:column: %s\n", text);
        abort();
    }
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s\n", #cond);                                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_breakers(const struct sl_circuit_breakers *cb)
{
    static const struct sl_circuit_breakers none;
    if (!cb->set) {
        CHECK(memcmp(cb, &none, sizeof none) == 0);
        return;
    }
    CHECK(cb->max_connections >= 1 && cb->max_connections <= 1000000);
    CHECK(cb->max_pending_requests >= 1 && cb->max_pending_requests <= 1000000);
    CHECK(cb->max_requests >= 1 && cb->max_requests <= 1000000);
    CHECK(cb->max_retries <= 1000000);
}

static void check_service(const struct sl_service *s)
{
    const struct sl_retry_policy *rp = &s->retry_policy;
    static const struct sl_retry_policy no_retry;
    if (rp->set) {
        CHECK(rp->retry_on != 0 && (rp->retry_on & ~0x3fu) == 0);
        CHECK(((rp->retry_on & SL_RETRY_STATUS_CODES) != 0) == (rp->n_retriable_status_codes > 0));
        for (size_t i = 0; i < rp->n_retriable_status_codes; i++)
            CHECK(rp->retriable_status_codes[i] >= 100 && rp->retriable_status_codes[i] <= 599);
        CHECK(rp->num_retries <= 100);
        CHECK(rp->per_try_timeout_ms <= 2147483646u && rp->timeout_ms <= 2147483646u);
        CHECK(rp->backoff_base_interval_ms >= 1);
        CHECK(rp->backoff_max_interval_ms >= rp->backoff_base_interval_ms);
        CHECK(rp->backoff_max_interval_ms <= 2147483646u);
        CHECK(rp->budget_ratio >= 0 && rp->budget_ratio <= 1);
        CHECK(rp->budget_min_retries_per_second <= 1000000);
        CHECK(rp->budget_ttl_ms >= 1);
        CHECK(rp->max_body_bytes <= (1u << 30));
        CHECK(rp->line >= 1 && rp->column >= 1);
    } else {
        CHECK(memcmp(rp, &no_retry, sizeof no_retry) == 0);
    }
    check_breakers(&s->circuit_breakers);
    const struct sl_outlier_detection *od = &s->outlier_detection;
    static const struct sl_outlier_detection no_outliers;
    if (od->set) {
        CHECK(od->consecutive_5xx <= 1000000 && od->consecutive_gateway_failure <= 1000000);
        CHECK(od->interval_ms >= 1 && od->base_ejection_time_ms >= 1);
        CHECK(od->max_ejection_time_ms >= od->base_ejection_time_ms);
        CHECK(od->max_ejection_percent <= 100);
    } else {
        CHECK(memcmp(od, &no_outliers, sizeof no_outliers) == 0);
    }
}

static void check_node(const struct sl_config *cfg, bool sidecar)
{
    const struct sl_node_config *n = &cfg->node;
    CHECK(strcmp(cfg->role, sidecar ? "sidecar" : "gateway") == 0);
    if (!sidecar) {
        CHECK(n->service_name[0] == '\0' && n->app_url[0] == '\0' && n->app_port == 0);
        CHECK(n->inbound_listen.port == 0 && n->outbound_listen.port == 0);
        CHECK(n->n_proxy_listen >= 1);
        CHECK(!n->inbound_circuit_breakers.set);
        return;
    }
    size_t len = strlen(n->service_name);
    CHECK(len >= 1 && len <= 127 &&
          strspn(n->service_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._-") == len);
    CHECK(n->inbound_listen.port != 0);
    CHECK(strncasecmp(n->app_url, "http://", 7) == 0);
    CHECK(n->app_host[0] != '\0' && n->app_port != 0);
    CHECK(n->n_proxy_listen == 0 && n->proxy_listen == NULL);
    check_breakers(&n->inbound_circuit_breakers);
}

static void load(const char *file, size_t len, bool sidecar)
{
    struct sl_config_error err;
    err.text[0] = '\0';
    struct sl_config *cfg =
        sl_config_load_buffer(file, len, "fuzz.yml", sidecar ? "sidecar" : "gateway", &err);
    if (cfg == NULL) {
        check_error(err.text);
        return;
    }
    CHECK(cfg->n_services == 1);
    check_service(&cfg->services[0]);
    check_node(cfg, sidecar);
    sl_config_unref(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    const char *in = (const char *)data;
    const char *part[4] = {"", "", "", ""};
    size_t part_len[4] = {0, 0, 0, 0};
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        const char *rest = in + at;
        size_t rest_len = size - at;
        const char *sep = i < 3 ? memmem(rest, rest_len, SEPARATOR, 4) : NULL;
        part[i] = rest;
        part_len[i] = sep != NULL ? (size_t)(sep - rest) : rest_len;
        if (sep == NULL) {
            at = size;
            break;
        }
        at += part_len[i] + 4;
    }

    /* every byte of input can become a line of its own, with its indent */
    struct text t = {.cap = 8 * size + 1024};
    t.buf = malloc(t.cap);
    if (t.buf == NULL)
        return 0;
    for (int sidecar = 0; sidecar < 2; sidecar++) {
        t.len = 0;
        puts_(&t, "_format_version: \"3.0\"\n"
                  "services:\n"
                  "  - name: s\n"
                  "    host: h\n"
                  "    routes: [{paths: [/]}]\n");
        block(&t, "    retry_policy", "      ", part[0], part_len[0]);
        block(&t, "    circuit_breakers", "      ", part[1], part_len[1]);
        block(&t, "    outlier_detection", "      ", part[2], part_len[2]);
        block(&t, sidecar ? "sidecar" : "gateway", "  ", part[3], part_len[3]);
        load(t.buf, t.len, sidecar);
    }
    free(t.buf);
    return 0;
}
