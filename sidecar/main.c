/*
 * sluice-sidecar: the mesh role (east-west), one process beside each
 * service instance: inbound_listen in front of the local app, outbound_listen
 * for the app's calls to other services. This file only wires things
 * together; the process itself is run.c's.
 */
#include <stddef.h>

#include "run.h"

/* The sidecar role runs no plugins yet (a file with plugins is refused):
 * its registry is empty, and it links none of them. */
static const struct sl_plugin_ops *const no_plugins[] = {NULL};

int main(int argc, char **argv)
{
    static const struct sl_role sidecar = {
        .name = "sidecar",
        .program = "sluice-sidecar",
        .summary = "declarative configuration (Kong format, with a sidecar: block)",
    };
    return sl_run(&sidecar, no_plugins, argc, argv);
}
