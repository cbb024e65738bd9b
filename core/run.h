/*
 * The life of a sluice process, shared by sluice-gateway and sluice-sidecar:
 * the command line (-c, -t, -V, -h), loading and validating the file
 * (snapshot.h), signals (SIGTERM drains, SIGINT stops, SIGHUP reloads) and
 * the server. A main.c names its role and its plugins, then calls sl_run().
 *
 * Ownership: everything sl_run() makes is freed before it returns.
 */
#ifndef SL_RUN_H
#define SL_RUN_H

struct sl_plugin_ops;

struct sl_role {
    const char *name;    /* "gateway" or "sidecar": the node block's name */
    const char *program; /* "sluice-gateway" */
    const char *summary; /* the usage's description of -c FILE */
};

/* Run the process; the exit status (0, 1 for a refused file, 2 for bad
 * usage). `plugins` is the NULL-terminated registry table. */
int sl_run(const struct sl_role *role, const struct sl_plugin_ops *const *plugins, int argc,
           char **argv);

#endif
