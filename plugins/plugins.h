/*
 * The plugins shipped with sluice. main() passes sl_builtin_plugins to
 * sl_plugin_registry_set(); the order of the table is irrelevant (plugins
 * run by priority), it only lists what exists.
 */
#ifndef SL_PLUGINS_H
#define SL_PLUGINS_H

#include "sluice/plugin.h"

extern const struct sl_plugin_ops sl_plugin_request_termination;
extern const struct sl_plugin_ops sl_plugin_jwt;
extern const struct sl_plugin_ops sl_plugin_request_transformer;
extern const struct sl_plugin_ops sl_plugin_rate_limiting;

/* NULL-terminated */
extern const struct sl_plugin_ops *const sl_builtin_plugins[];

#endif
