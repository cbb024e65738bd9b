/*
 * sluice-sidecar: the mesh role (east-west), one process beside each
 * service instance: inbound_listen in front of the local app, outbound_listen
 * for the app's calls to other services. This file only wires things
 * together; the process itself is run.c's.
 */
#include "plugins.h"
#include "run.h"

int main(int argc, char **argv)
{
    static const struct sl_role sidecar = {
        .name = "sidecar",
        .program = "sluice-sidecar",
        .summary = "declarative configuration (Kong format, with a sidecar: block)",
    };
    return sl_run(&sidecar, sl_builtin_plugins, argc, argv);
}
