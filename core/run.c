#include "run.h"

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autoconfig.h"
#include "balancer.h"
#include "log.h"
#include "metrics.h"
#include "plugin_runtime.h"
#include "resilience.h"
#include "server.h"
#include "snapshot.h"
#include "util.h"

static void usage(const struct sl_role *role, FILE *out)
{
    fprintf(out,
            "usage: %s [-t] -c FILE\n"
            "       %s -V | -h\n"
            "\n"
            "  -c FILE  %s\n"
            "  -t       check the configuration and exit (0 = valid, 1 = invalid)\n"
            "  -V       print the version and exit\n"
            "  -h       print this help and exit\n"
            "\n"
            "Signals: SIGTERM drains (finish requests in flight, then exit 0),\n"
            "SIGINT stops at once, SIGHUP reloads the configuration file.\n"
            "Every key of the %s: block can be overridden by SLUICE_<KEY>.\n",
            role->program, role->program, role->summary, role->name);
}

/* The file, loaded and validated in full (snapshot.h); NULL after the
 * message went to stderr. */
static struct sl_snapshot *load(const struct sl_role *role, const char *path)
{
    struct sl_config_error err;
    struct sl_snapshot *snap = sl_snapshot_load(path, role->name, &err);
    if (!snap)
        fprintf(stderr, "%s\n", err.text);
    return snap;
}

/* What the process-wide registries still hold once no snapshot is left. */
static void free_registries(void)
{
    sl_balancer_registry_sweep();
    sl_resilience_sweep();
    sl_plugins_shutdown(); /* the plugins' own threads (jwt's JWKS fetcher) */
}

static void reload(const struct sl_role *role, struct sl_server *srv, const char *path)
{
    /* load and validate on this thread; workers only swap a pointer */
    struct sl_snapshot *next = load(role, path);
    sl_metrics_reload_result(next != NULL);
    if (!next) {
        sl_error("SIGHUP: %s refused; the current configuration stays", path);
        return;
    }
    char hash[sizeof next->cfg->hash];
    memcpy(hash, next->cfg->hash, sizeof hash); /* next is the server's after the call */
    sl_server_reload(srv, next);
    sl_notice("SIGHUP: configuration reloaded from %s (%s)", path, hash);
}

/*
 * Signals until every worker has stopped. SIGTERM: readiness turns off at
 * once; after drain_delay (the sidecar's; 0 for the gateway) the listeners
 * close and requests in flight finish (graceful_shutdown_timeout), so a
 * load balancer that polls readiness has removed the endpoint before
 * connections are refused.
 */
static void serve(const struct sl_role *role, struct sl_server *srv, const char *path,
                  const sigset_t *set)
{
    bool stopping = false, drained = false;
    uint64_t drain_at_ms = 0;
    while (atomic_load(&srv->workers_running) > 0) {
        if (stopping && !drained && sl_now_ms() >= drain_at_ms) {
            drained = true;
            sl_server_drain(srv);
        }
        struct timespec tick = {0, 100 * 1000 * 1000};
        if (stopping && !drained) {
            uint64_t left = drain_at_ms - sl_now_ms();
            if (left < 100)
                tick.tv_nsec = (long)left * 1000 * 1000;
        }
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig < 0)
            continue; /* EAGAIN (tick) or EINTR */
        switch (sig) {
        case SIGTERM:
        case SIGQUIT:
            if (!stopping) {
                uint32_t delay = srv->snapshot->cfg->node.drain_delay_ms;
                stopping = true;
                atomic_store(&srv->ready, false);
                drain_at_ms = sl_now_ms() + delay;
                if (delay)
                    sl_notice("signal %d: not ready; draining in %u ms", sig, delay);
                else
                    sl_notice("signal %d: draining", sig);
            }
            break;
        case SIGINT:
            sl_notice("SIGINT: stopping");
            sl_server_stop(srv);
            break;
        case SIGHUP:
            reload(role, srv, path);
            break;
        default:
            break;
        }
    }
}

int sl_run(const struct sl_role *role, const struct sl_plugin_ops *const *plugins, int argc,
           char **argv)
{
    const char *path = NULL;
    bool check_only = false;
    int opt;
    sl_plugin_registry_set(plugins);
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'V':
            printf("%s %s\n", role->program, PACKAGE_VERSION);
            return 0;
        case 'h':
            usage(role, stdout);
            return 0;
        default:
            usage(role, stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(role, stderr);
        return 2;
    }
    struct sl_snapshot *snap = load(role, path);
    if (!snap) {
        free_registries();
        return 1;
    }
    if (check_only) {
        printf("%s: configuration is valid\n", path);
        sl_snapshot_unref(snap);
        free_registries();
        return 0;
    }
    int level = sl_log_level_from_name(snap->cfg->node.log_level);
    if (level >= 0)
        sl_log_set_level((enum sl_log_level)level);

    /* Workers inherit this mask; only the main thread takes signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sl_server srv;
    memset(&srv, 0, sizeof srv);
    char err[512];
    int workers = snap->cfg->node.worker_processes;
    if (sl_server_start(&srv, snap, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", role->program, err);
        free_registries();
        return 1;
    }
    sl_notice("%s %s started: %d worker(s), config %s", role->program, PACKAGE_VERSION, workers,
              path);
    serve(role, &srv, path, &set);
    sl_server_join(&srv);
    free_registries();
    sl_notice("%s stopped", role->program);
    return 0;
}
