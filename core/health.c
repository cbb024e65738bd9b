/*
 * Active health checks on a thread of their own (see health.h for why).
 *
 * Per upstream with active checks: a timer at active.healthy.interval that
 * probes the targets currently healthy, and one at active.unhealthy.interval
 * for those currently unhealthy (Kong). A due target joins the upstream's
 * queue unless it is queued or being probed already; at most
 * active.concurrency probes run at once per upstream.
 *
 * A probe (Kong's run_single_check): resolve the target (evdns, hosts file
 * first), connect, send "GET http_path HTTP/1.0" with Host and the
 * configured headers, read the status line, close. The whole probe is
 * bounded by active.timeout. Connect or read failure: tcp_failures;
 * timeout: timeouts; a status: counted per the active status lists.
 * type "tcp" only connects. type "https" needs TLS, which sluice does not
 * have yet: such upstreams are not probed (a warning says so).
 */
#include "health.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balancer.h"
#include "log.h"
#include "snapshot.h"
#include "util.h"

#define SL_PROBE_MAX_STATUS_LINE 1024

enum target_state { TS_IDLE = 0, TS_QUEUED, TS_PROBING };

struct hc_upstream;

struct probe {
    struct hc_upstream *hu;
    size_t target; /* index in the upstream */
    struct bufferevent *bev;
    struct event *timer;
    struct evdns_getaddrinfo_request *dns;
    bool in_resolve_call; /* evdns may answer from inside its own call */
    struct evutil_addrinfo *sync_answer;
    int sync_result;
    bool sync_answered;
    struct probe *next, *prev;
};

struct hc_upstream {
    struct checker *c;
    const struct sl_lb_upstream *u;
    const struct sl_upstream *conf;
    struct event *healthy_timer, *unhealthy_timer;
    unsigned char *state; /* enum target_state per target */
    size_t running;
    bool tcp_only;
};

struct checker {
    pthread_t thread;
    bool thread_started;
    struct event_base *base;
    struct evdns_base *dns;
    int pipe[2];
    struct event *pipe_ev;
    struct sl_snapshot *snap;
    struct hc_upstream *ups;
    size_t n_ups;
    struct probe *probes; /* in flight */
};

struct hc_msg {
    char cmd; /* 'u' new snapshot, 's' stop */
    struct sl_snapshot *snap;
};

static struct checker *checker; /* the process's one checker; main thread only */

static void run_queue(struct hc_upstream *hu);

/* ------------------------------------------------------------------------ */
/* probes                                                                    */

static void probe_free(struct probe *p)
{
    struct checker *c = p->hu->c;
    if (p->dns) {
        struct evdns_getaddrinfo_request *req = p->dns;
        p->dns = NULL;
        evdns_getaddrinfo_cancel(req); /* its callback sees EVUTIL_EAI_CANCEL */
    }
    if (p->bev)
        bufferevent_free(p->bev);
    if (p->timer)
        event_free(p->timer);
    if (p->prev)
        p->prev->next = p->next;
    else
        c->probes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

/* A result is in: count it, free the probe, start the next one. */
static void probe_done(struct probe *p)
{
    struct hc_upstream *hu = p->hu;
    hu->state[p->target] = TS_IDLE;
    hu->running--;
    probe_free(p);
    run_queue(hu);
}

static struct sl_lb_target *probe_target(const struct probe *p)
{
    return sl_lb_upstream_target(p->hu->u, p->target);
}

static void probe_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    sl_debug("health: %s: probe timed out", sl_lb_target_conf(probe_target(p))->host);
    sl_lb_target_active_timeout(probe_target(p));
    probe_done(p);
}

/* "HTTP/1.1 200 ..." -> 200; 0 when it is not a status line. */
static int parse_status_line(const char *line, size_t len)
{
    if (len < 12 || memcmp(line, "HTTP/", 5) != 0)
        return 0;
    const char *sp = memchr(line, ' ', len);
    if (!sp || (size_t)(sp - line) + 4 > len)
        return 0;
    int status = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return 0;
        status = status * 10 + (sp[i] - '0');
    }
    return status;
}

static void probe_read(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF);
    size_t len = evbuffer_get_length(in);
    if (eol.pos < 0 && len < SL_PROBE_MAX_STATUS_LINE)
        return; /* the status line is not complete yet */
    size_t line_len = eol.pos >= 0 ? (size_t)eol.pos : len;
    if (line_len > SL_PROBE_MAX_STATUS_LINE)
        line_len = SL_PROBE_MAX_STATUS_LINE;
    const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)line_len);
    int status = line ? parse_status_line(line, line_len) : 0;
    sl_debug("health: %s: probe answered %d", sl_lb_target_conf(probe_target(p))->host, status);
    sl_lb_target_active_status(probe_target(p), status);
    probe_done(p);
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
    struct probe *p = arg;
    struct hc_upstream *hu = p->hu;
    if (what & BEV_EVENT_CONNECTED) {
        if (hu->tcp_only) {
            sl_lb_target_active_success(probe_target(p));
            probe_done(p);
            return;
        }
        const struct sl_healthchecks *hc = &hu->conf->healthchecks;
        const struct sl_target *t = sl_lb_target_conf(probe_target(p));
        struct evbuffer *out = bufferevent_get_output(bev);
        evbuffer_add_printf(out, "GET %s HTTP/1.0\r\n",
                            hc->active.http_path ? hc->active.http_path : "/");
        for (size_t i = 0; i < hc->active.n_headers; i++)
            for (size_t k = 0; k < hc->active.headers[i].n_values; k++)
                evbuffer_add_printf(out, "%s: %s\r\n", hc->active.headers[i].name,
                                    hc->active.headers[i].values[k]);
        const char *host = hu->conf->host_header ? hu->conf->host_header : t->host;
        evbuffer_add_printf(out, strchr(host, ':') ? "Host: [%s]\r\n\r\n" : "Host: %s\r\n\r\n",
                            host);
        bufferevent_enable(bev, EV_READ);
        return;
    }
    /* refused, reset, or closed before a status line */
    sl_debug("health: %s: probe failed: %s", sl_lb_target_conf(probe_target(p))->host,
             (what & BEV_EVENT_ERROR) ? strerror(EVUTIL_SOCKET_ERROR()) : "closed");
    sl_lb_target_active_tcp_failure(probe_target(p));
    probe_done(p);
}

static void probe_connect(struct probe *p, const struct sockaddr *sa, socklen_t len)
{
    p->bev = bufferevent_socket_new(p->hu->c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!p->bev) {
        probe_done(p); /* out of resources: no verdict on the target */
        return;
    }
    bufferevent_setcb(p->bev, probe_read, NULL, probe_event, p);
    if (bufferevent_socket_connect(p->bev, sa, (int)len) < 0) {
        sl_lb_target_active_tcp_failure(probe_target(p));
        probe_done(p);
    }
}

static void probe_resolved_now(struct probe *p, int result, struct evutil_addrinfo *ai)
{
    if (result != 0 || !ai) {
        /* the name does not resolve: the target cannot be reached */
        sl_debug("health: %s: %s", sl_lb_target_conf(probe_target(p))->host,
                 evutil_gai_strerror(result));
        if (ai)
            evutil_freeaddrinfo(ai);
        sl_lb_target_active_tcp_failure(probe_target(p));
        probe_done(p);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = ai->ai_addrlen < sizeof ss ? (socklen_t)ai->ai_addrlen : sizeof ss;
    memcpy(&ss, ai->ai_addr, len);
    evutil_freeaddrinfo(ai);
    probe_connect(p, (struct sockaddr *)&ss, len);
}

static void probe_resolved(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct probe *p = arg;
    if (result == EVUTIL_EAI_CANCEL) {
        if (ai)
            evutil_freeaddrinfo(ai);
        return; /* probe_free() is tearing it down */
    }
    p->dns = NULL;
    if (p->in_resolve_call) { /* answered from inside evdns_getaddrinfo() */
        p->sync_answered = true;
        p->sync_result = result;
        p->sync_answer = ai;
        return;
    }
    probe_resolved_now(p, result, ai);
}

static void probe_start(struct hc_upstream *hu, size_t index)
{
    struct checker *c = hu->c;
    struct probe *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->hu = hu;
    p->target = index;
    p->timer = evtimer_new(c->base, probe_timeout, p);
    if (!p->timer) {
        free(p);
        return;
    }
    p->next = c->probes;
    if (c->probes)
        c->probes->prev = p;
    c->probes = p;
    hu->state[index] = TS_PROBING;
    hu->running++;
    uint32_t ms = hu->conf->healthchecks.active.timeout_ms;
    if (ms == 0)
        ms = 1000;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);

    const struct sl_target *t = sl_lb_target_conf(probe_target(p));
    char port[8];
    snprintf(port, sizeof port, "%u", t->port);
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    p->in_resolve_call = true;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(c->dns, t->host, port, &hints, probe_resolved, p);
    p->in_resolve_call = false;
    if (p->sync_answered)
        probe_resolved_now(p, p->sync_result, p->sync_answer);
    else
        p->dns = req;
}

/* Start what the queue holds, up to `concurrency` probes at once. */
static void run_queue(struct hc_upstream *hu)
{
    uint32_t concurrency = hu->conf->healthchecks.active.concurrency;
    if (concurrency == 0)
        concurrency = 1;
    size_t n = sl_lb_upstream_n_targets(hu->u);
    for (size_t i = 0; i < n && hu->running < concurrency; i++)
        if (hu->state[i] == TS_QUEUED)
            probe_start(hu, i);
}

/* A timer is due: queue the targets in the state it watches. */
static void enqueue(struct hc_upstream *hu, bool healthy_ones)
{
    size_t n = sl_lb_upstream_n_targets(hu->u);
    for (size_t i = 0; i < n; i++) {
        if (hu->state[i] != TS_IDLE)
            continue;
        enum sl_lb_health h = sl_lb_target_health(sl_lb_upstream_target(hu->u, i));
        bool is_healthy = h == SL_LB_HEALTHY || h == SL_LB_MOSTLY_HEALTHY;
        if (is_healthy == healthy_ones)
            hu->state[i] = TS_QUEUED;
    }
    run_queue(hu);
}

static void healthy_tick(evutil_socket_t fd, short what, void *arg)
{
    enqueue(arg, true);
}

static void unhealthy_tick(evutil_socket_t fd, short what, void *arg)
{
    enqueue(arg, false);
}

/* ------------------------------------------------------------------------ */
/* snapshots                                                                 */

static void drop_snapshot(struct checker *c)
{
    while (c->probes)
        probe_free(c->probes);
    for (size_t i = 0; i < c->n_ups; i++) {
        if (c->ups[i].healthy_timer)
            event_free(c->ups[i].healthy_timer);
        if (c->ups[i].unhealthy_timer)
            event_free(c->ups[i].unhealthy_timer);
        free(c->ups[i].state);
    }
    free(c->ups);
    c->ups = NULL;
    c->n_ups = 0;
    if (c->snap)
        sl_snapshot_unref(c->snap);
    c->snap = NULL;
}

static struct event *periodic(struct checker *c, uint32_t ms, event_callback_fn fn, void *arg)
{
    struct event *ev = event_new(c->base, -1, EV_PERSIST, fn, arg);
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    if (ev)
        event_add(ev, &tv);
    return ev;
}

/* Takes the reference to snap. */
static void use_snapshot(struct checker *c, struct sl_snapshot *snap)
{
    drop_snapshot(c);
    c->snap = snap;
    const struct sl_balancer *b = snap->balancer;
    size_t n = sl_balancer_n_upstreams(b);
    c->ups = calloc(n ? n : 1, sizeof *c->ups);
    if (!c->ups)
        return;
    c->n_ups = n;
    evdns_base_clear_host_addresses(c->dns);
    evdns_base_load_hosts(c->dns, snap->cfg->node.dns_hostsfile);
    for (size_t i = 0; i < n; i++) {
        struct hc_upstream *hu = &c->ups[i];
        hu->c = c;
        hu->u = sl_balancer_upstream_at(b, i);
        hu->conf = sl_lb_upstream_conf(hu->u);
        const struct sl_healthchecks *hc = &hu->conf->healthchecks;
        uint32_t hi = hc->active.healthy.interval_ms, ui = hc->active.unhealthy.interval_ms;
        if (hi == 0 && ui == 0)
            continue;
        const char *type = hc->active.type ? hc->active.type : "http";
        if (strcmp(type, "https") == 0) {
            sl_warn("upstream '%s': active https health checks need TLS, not supported yet; "
                    "not probing",
                    hu->conf->name);
            continue;
        }
        hu->tcp_only = strcmp(type, "tcp") == 0;
        hu->state = calloc(sl_lb_upstream_n_targets(hu->u) + 1, 1);
        if (!hu->state)
            continue;
        if (hi)
            hu->healthy_timer = periodic(c, hi, healthy_tick, hu);
        if (ui)
            hu->unhealthy_timer = periodic(c, ui, unhealthy_tick, hu);
    }
}

static void control_read(evutil_socket_t fd, short what, void *arg)
{
    struct checker *c = arg;
    struct hc_msg msgs[8];
    ssize_t n = read(fd, msgs, sizeof msgs);
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof msgs[0]; i++) {
        if (msgs[i].cmd == 'u')
            use_snapshot(c, msgs[i].snap);
        else if (msgs[i].cmd == 's')
            event_base_loopexit(c->base, NULL);
    }
}

static void *checker_main(void *arg)
{
    struct checker *c = arg;
    event_base_dispatch(c->base);
    return NULL;
}

static void checker_free(struct checker *c)
{
    if (c->pipe[0] >= 0) { /* snapshots still in the pipe */
        struct hc_msg msg;
        while (read(c->pipe[0], &msg, sizeof msg) == (ssize_t)sizeof msg)
            if (msg.cmd == 'u' && msg.snap)
                sl_snapshot_unref(msg.snap);
    }
    drop_snapshot(c);
    if (c->pipe_ev)
        event_free(c->pipe_ev);
    if (c->dns)
        evdns_base_free(c->dns, 0);
    if (c->base)
        event_base_free(c->base);
    if (c->pipe[0] >= 0)
        close(c->pipe[0]);
    if (c->pipe[1] >= 0)
        close(c->pipe[1]);
    free(c);
}

static bool send_msg(char cmd, struct sl_snapshot *snap)
{
    struct hc_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.cmd = cmd;
    msg.snap = snap;
    if (write(checker->pipe[1], &msg, sizeof msg) != (ssize_t)sizeof msg) {
        sl_error("health checker: control pipe: %s", strerror(errno));
        return false;
    }
    return true;
}

int sl_health_start(struct sl_snapshot *snap, char *err, size_t err_size)
{
    if (checker)
        return SL_OK;
    struct checker *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_size, "health checker: out of memory");
        return SL_ERR;
    }
    c->pipe[0] = c->pipe[1] = -1;
    struct event_config *ec = event_config_new();
    if (ec)
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK); /* its thread only */
    c->base = ec ? event_base_new_with_config(ec) : NULL;
    if (ec)
        event_config_free(ec);
    if (c->base) {
        c->dns = evdns_base_new(c->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!c->dns) /* no usable resolv.conf: the hosts file only */
            c->dns = evdns_base_new(c->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    }
    if (!c->base || !c->dns || pipe2(c->pipe, O_CLOEXEC | O_NONBLOCK) < 0 ||
        !(c->pipe_ev = event_new(c->base, c->pipe[0], EV_READ | EV_PERSIST, control_read, c)) ||
        event_add(c->pipe_ev, NULL) < 0) {
        snprintf(err, err_size, "health checker: out of resources");
        checker_free(c);
        return SL_ERR;
    }
    use_snapshot(c, sl_snapshot_ref(snap));
    if (pthread_create(&c->thread, NULL, checker_main, c) != 0) {
        snprintf(err, err_size, "health checker: cannot start its thread");
        checker_free(c);
        return SL_ERR;
    }
    c->thread_started = true;
    checker = c;
    return SL_OK;
}

void sl_health_update(struct sl_snapshot *snap)
{
    if (!checker)
        return;
    sl_snapshot_ref(snap);
    if (!send_msg('u', snap))
        sl_snapshot_unref(snap);
}

void sl_health_stop(void)
{
    if (!checker)
        return;
    if (checker->thread_started) {
        if (!send_msg('s', NULL))
            return; /* the thread still runs: leaking beats freeing under it */
        pthread_join(checker->thread, NULL);
    }
    checker_free(checker);
    checker = NULL;
}
