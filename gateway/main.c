/*
 * sluice-gateway: the edge role (north-south). This file only wires things
 * together: the role's name and its plugins; the process itself is run.c's.
 */
#include "plugins.h"
#include "run.h"

int main(int argc, char **argv)
{
    static const struct sl_role gateway = {
        .name = "gateway",
        .program = "sluice-gateway",
        .summary = "declarative configuration (Kong format, with a gateway: block)",
    };
    return sl_run(&gateway, sl_builtin_plugins, argc, argv);
}
