/*
 * sluice-gateway: the edge role. This file only wires things together:
 * command line, configuration, signals, the server.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autoconfig.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "plugin_runtime.h"
#include "plugins.h"
#include "tls.h"
#include "server.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice-gateway [-t] -c FILE\n"
                 "       sluice-gateway -V | -h\n"
                 "\n"
                 "  -c FILE  declarative configuration (Kong format, with a gateway: block)\n"
                 "  -t       check the configuration and exit (0 = valid, 1 = invalid)\n"
                 "  -V       print the version and exit\n"
                 "  -h       print this help and exit\n"
                 "\n"
                 "Signals: SIGTERM drains (finish requests in flight, then exit 0),\n"
                 "SIGINT stops at once, SIGHUP reloads the configuration file.\n"
                 "Every key of the gateway: block can be overridden by SLUICE_<KEY>.\n");
}

static struct sl_config *load(const char *path)
{
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load(path, "gateway", &err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err.text);
        return NULL;
    }
    /* every plugin instance: a known plugin with a valid config */
    if (!sl_plugins_attach(cfg, &err)) {
        fprintf(stderr, "%s\n", err.text);
        sl_config_unref(cfg);
        return NULL;
    }
    /* ssl listeners: the certificates must make a TLS context */
    for (size_t i = 0; i < cfg->node.n_proxy_listen; i++)
        if (cfg->node.proxy_listen[i].ssl) {
            struct sl_tls *tls = sl_tls_new(cfg, err.text, sizeof err.text);
            if (!tls) {
                fprintf(stderr, "%s\n", err.text);
                sl_config_unref(cfg);
                return NULL;
            }
            sl_tls_free(tls);
            break;
        }
    return cfg;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check_only = false;
    int opt;
    sl_plugin_registry_set(sl_builtin_plugins);
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'V':
            printf("sluice-gateway %s\n", PACKAGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct sl_config *cfg = load(path);
    if (!cfg) {
        sl_plugins_shutdown();
        return 1;
    }
    if (check_only) {
        printf("%s: configuration is valid\n", path);
        sl_config_unref(cfg);
        sl_plugins_shutdown();
        return 0;
    }
    int level = sl_log_level_from_name(cfg->node.log_level);
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
    int workers = cfg->node.worker_processes;
    if (sl_server_start(&srv, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "sluice-gateway: %s\n", err);
        return 1;
    }
    sl_notice("sluice-gateway %s started: %d worker(s), config %s", PACKAGE_VERSION, workers, path);

    bool draining = false;
    while (atomic_load(&srv.workers_running) > 0) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig < 0)
            continue; /* EAGAIN (tick) or EINTR */
        switch (sig) {
        case SIGTERM:
        case SIGQUIT:
            if (!draining) {
                sl_notice("signal %d: draining", sig);
                draining = true;
                sl_server_drain(&srv);
            }
            break;
        case SIGINT:
            sl_notice("SIGINT: stopping");
            sl_server_stop(&srv);
            break;
        case SIGHUP: {
            /* load and validate on this thread; workers only swap a pointer */
            struct sl_config *next = load(path);
            if (!next) {
                sl_metrics_reload_result(false);
                sl_error("SIGHUP: %s refused; the current configuration stays", path);
                break;
            }
            char hash[sizeof next->hash];
            memcpy(hash, next->hash, sizeof hash); /* next is the server's after the call */
            bool ok = sl_server_reload(&srv, next, err, sizeof err) == 0;
            sl_metrics_reload_result(ok);
            if (ok)
                sl_notice("SIGHUP: configuration reloaded from %s (%s)", path, hash);
            else
                sl_error("SIGHUP: reload failed: %s", err);
            break;
        }
        default:
            break;
        }
    }
    sl_server_join(&srv);
    sl_plugins_shutdown(); /* the plugins' own threads (jwt's JWKS fetcher) */
    sl_notice("sluice-gateway stopped");
    return 0;
}
