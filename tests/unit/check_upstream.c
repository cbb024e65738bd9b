/*
 * The upstream connection pool (core/upstream.c) on a private event_base
 * against a listening socket on 127.0.0.1: a released connection is
 * reused; one that the upstream closed is not, even when the loop has not
 * yet read the close (the kernel has it queued behind other events, as
 * when an upstream is killed under load).
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit.h"
#include "upstream.h"

struct got {
    int calls;
    struct sl_upstream_conn *conn;
    enum sl_upstream_error error;
};

static void on_conn(struct sl_upstream_conn *conn, enum sl_upstream_error error, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->conn = conn;
    g->error = error;
}

/* A listener on a free loopback port; *port gets its number. */
static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Acquire and run the loop until the callback ran (bounded). */
static struct got acquire(struct event_base *base, struct sl_upstream_pool *pool, uint16_t port)
{
    struct got g = {0};
    struct sl_upstream_want want = {
        .host = "127.0.0.1", .port = port, .connect_timeout_ms = 2000, .allow_reuse = true};
    ck_assert_ptr_nonnull(sl_upstream_acquire(pool, &want, on_conn, &g));
    for (int i = 0; i < 1000 && g.calls == 0; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    ck_assert_int_eq(g.calls, 1);
    return g;
}

START_TEST(pool_reuses_a_live_connection)
{
    struct event_base *base = event_base_new();
    struct sl_upstream_pool *pool = sl_upstream_pool_new(base, NULL);
    uint16_t port;
    int lfd = listen_any(&port);
    struct got g = acquire(base, pool, port);
    ck_assert_int_eq(g.error, SL_UPSTREAM_OK);
    ck_assert(!g.conn->reused);
    int server = accept(lfd, NULL, NULL);
    ck_assert_int_ge(server, 0);
    sl_upstream_release(g.conn, true);
    g = acquire(base, pool, port);
    ck_assert_int_eq(g.error, SL_UPSTREAM_OK);
    ck_assert_msg(g.conn->reused, "an idle connection the upstream keeps open is reused");
    sl_upstream_release(g.conn, false);
    close(server);
    close(lfd);
    sl_upstream_pool_free(pool);
    event_base_free(base);
}
END_TEST

START_TEST(pool_skips_a_connection_closed_before_the_loop_saw_it)
{
    struct event_base *base = event_base_new();
    struct sl_upstream_pool *pool = sl_upstream_pool_new(base, NULL);
    uint16_t port;
    int lfd = listen_any(&port);
    struct got g = acquire(base, pool, port);
    ck_assert_int_eq(g.error, SL_UPSTREAM_OK);
    int server = accept(lfd, NULL, NULL);
    ck_assert_int_ge(server, 0);
    sl_upstream_release(g.conn, true);
    /* the upstream dies: its FIN is in our socket, the loop has not run */
    close(server);
    g = acquire(base, pool, port);
    ck_assert_int_eq(g.error, SL_UPSTREAM_OK);
    ck_assert_msg(!g.conn->reused, "a pooled connection the upstream closed is not handed over "
                                   "(a POST written into it would fail)");
    int second = accept(lfd, NULL, NULL);
    ck_assert_int_ge(second, 0); /* a new connection was made instead */
    sl_upstream_release(g.conn, false);
    close(second);
    close(lfd);
    sl_upstream_pool_free(pool);
    event_base_free(base);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, pool_reuses_a_live_connection);
    tcase_add_test(tc, pool_skips_a_connection_closed_before_the_loop_saw_it);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
