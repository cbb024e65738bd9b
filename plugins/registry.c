/* The table of built-in plugins (see plugins.h). */
#include "plugins.h"

#include <stddef.h>

const struct sl_plugin_ops *const sl_builtin_plugins[] = {
    &sl_plugin_request_termination, &sl_plugin_jwt, &sl_plugin_request_transformer,
    &sl_plugin_rate_limiting,       NULL,
};
