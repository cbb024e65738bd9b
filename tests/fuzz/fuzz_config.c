/*
 * libFuzzer harness for the configuration loader: any bytes as a YAML file.
 * A load must either succeed (and then the plugins' configs are checked,
 * the router builds and the snapshot frees cleanly) or fail with a "file:line:column: message" /
 * "env:" error; never crash, leak or fail silently.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "plugin_runtime.h"
#include "plugins.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sl_config_error err;
    err.text[0] = '\0';
    struct sl_config *cfg =
        sl_config_load_buffer((const char *)data, size, "fuzz.yml", "gateway", &err);
    if (!cfg) {
        /* a refusal always says where and why */
        if (strncmp(err.text, "fuzz.yml", 8) != 0 && strncmp(err.text, "env:", 4) != 0)
            abort();
        return 0;
    }
    /* the plugins' config checks see the same bytes */
    sl_plugin_registry_set(sl_builtin_plugins);
    err.text[0] = '\0';
    if (!sl_plugins_attach(cfg, &err)) {
        if (strncmp(err.text, "fuzz.yml", 8) != 0)
            abort();
        sl_config_unref(cfg);
        return 0;
    }
    struct sl_router *router = sl_router_build(cfg);
    if (!router)
        abort();
    static const char *const paths[] = {"/", "/api/x", "/t", "/x/../y", "/%7e"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct sl_router_request req = {.method = "GET",
                                        .method_len = 3,
                                        .host = "a.example.com",
                                        .host_len = 13,
                                        .path = paths[i],
                                        .path_len = strlen(paths[i])};
        struct sl_router_match match;
        if (sl_router_find(router, &req, &match)) {
            char out[512];
            if (sl_router_upstream_path(&match, paths[i], strlen(paths[i]), out, sizeof out) >
                (long)sizeof out)
                abort();
        }
    }
    sl_router_free(router);
    sl_config_unref(cfg);
    return 0;
}
