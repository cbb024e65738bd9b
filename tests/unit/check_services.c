/* The reference services' runtime (services-demo/common): trace context,
 * uuids, the request validators and the Redis URL parser. */
#include "bus.h"
#include "svc.h"
#include "unit.h"

#include <string.h>

START_TEST(trace_parse_valid)
{
    struct svc_trace t;
    ck_assert(svc_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t));
    ck_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(t.parent_id, "00f067aa0ba902b7");
    ck_assert_int_eq(t.flags, 1);
}
END_TEST

START_TEST(trace_parse_invalid)
{
    struct svc_trace t;
    const char *bad[] = {
        NULL,
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* long */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(!svc_trace_parse(bad[i], &t), "accepted %s", bad[i] ? bad[i] : "NULL");
}
END_TEST

START_TEST(trace_child_keeps_the_trace)
{
    struct svc_trace parent, child, root;
    char text[56];
    ck_assert(svc_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &parent));
    svc_trace_child(&parent, &child);
    ck_assert_str_eq(child.trace_id, parent.trace_id);
    ck_assert_str_eq(child.parent_id, "00f067aa0ba902b7");
    ck_assert_int_eq(strlen(child.span_id), 16);
    ck_assert_int_eq(child.flags, 0);
    svc_trace_format(&child, text);
    struct svc_trace again;
    ck_assert(svc_trace_parse(text, &again)); /* what we send, a peer accepts */
    ck_assert_str_eq(again.parent_id, child.span_id);
    svc_trace_child(NULL, &root);
    ck_assert_int_eq(strlen(root.trace_id), 32);
    ck_assert_str_ne(root.trace_id, parent.trace_id);
    ck_assert_int_eq(root.flags, 1);
}
END_TEST

START_TEST(uuid_v4)
{
    char a[37], b[37];
    svc_uuid(a);
    svc_uuid(b);
    ck_assert(svc_is_uuid(a));
    ck_assert_str_ne(a, b);
    ck_assert_int_eq(a[14], '4');             /* version 4 */
    ck_assert(strchr("89ab", a[19]) != NULL); /* RFC 9562 variant */
    ck_assert(svc_is_uuid("5D1D3BD0-0000-4000-8000-000000000001"));
    ck_assert(!svc_is_uuid("5d1d3bd0-0000-4000-8000-00000000001"));
    ck_assert(!svc_is_uuid("5d1d3bd0x0000-4000-8000-000000000001"));
    ck_assert(!svc_is_uuid("5d1d3bd0-0000-4000-8000-00000000000g"));
    ck_assert(!svc_is_uuid(NULL));
}
END_TEST

START_TEST(emails)
{
    const char *good[] = {"ada@example.com", "a.b+tag@mail.example.org", "x@a-b.io"};
    const char *bad[] = {"",
                         "ada",
                         "@example.com",
                         "ada@",
                         "ada@localhost",
                         "a b@example.com",
                         "ada@example..com",
                         "ada@-example.com",
                         "ada@example-.com",
                         "a@b@example.com",
                         "ada@exa_mple.com",
                         "<ada>@example.com"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        ck_assert_msg(svc_is_email(good[i]), "refused %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(!svc_is_email(bad[i]), "accepted %s", bad[i]);
}
END_TEST

START_TEST(integers)
{
    long long v = 0;
    ck_assert(svc_parse_int("20", 1, 100, &v) && v == 20);
    ck_assert(svc_parse_int("-5", -10, 0, &v) && v == -5);
    ck_assert(!svc_parse_int("0", 1, 100, &v));
    ck_assert(!svc_parse_int("101", 1, 100, &v));
    ck_assert(!svc_parse_int("1.5", 1, 100, &v));
    ck_assert(!svc_parse_int(" 5", 1, 100, &v));
    ck_assert(!svc_parse_int("5x", 1, 100, &v));
    ck_assert(!svc_parse_int("-", -10, 10, &v));
    ck_assert(!svc_parse_int("99999999999999999999", 0, 100, &v));
    ck_assert(!svc_parse_int("", 0, 100, &v));
}
END_TEST

static int error_count(struct svc_errors *e)
{
    return (int)json_array_size(e->list);
}

START_TEST(field_checks)
{
    json_t *o = json_pack("{s:s,s:i,s:f,s:s,s:s,s:b}", "name", "Ada", "n", 7, "real", 7.0, "id",
                          "5d1d3bd0-0000-4000-8000-000000000001", "role", "root", "extra", 1);
    static const char *const allowed[] = {"name", "n", "real", "id", "role", NULL};
    static const char *const roles[] = {"user", "admin", NULL};
    struct svc_errors e;
    svc_errors_init(&e);
    svc_check_members(o, allowed, &e);
    ck_assert_int_eq(error_count(&e), 1); /* extra */
    ck_assert_str_eq(svc_check_string(o, "name", true, 1, 3, &e), "Ada");
    ck_assert_ptr_null(svc_check_string(o, "name", true, 4, 10, &e));    /* too short */
    ck_assert_ptr_null(svc_check_string(o, "missing", false, 1, 3, &e)); /* optional: fine */
    ck_assert_int_eq(error_count(&e), 2);
    ck_assert_ptr_null(svc_check_string(o, "missing", true, 1, 3, &e));
    ck_assert_ptr_null(svc_check_string(o, "n", true, 1, 3, &e)); /* not a string */
    ck_assert_int_eq(error_count(&e), 4);
    long long n = 0;
    ck_assert(svc_check_int(o, "n", 1, 10, &n, &e) && n == 7);
    ck_assert(!svc_check_int(o, "real", 1, 10, &n, &e)); /* 7.0 is not an integer */
    ck_assert(!svc_check_int(o, "n", 8, 10, &n, &e));
    ck_assert_int_eq(error_count(&e), 6);
    ck_assert_ptr_nonnull(svc_check_uuid(o, "id", &e));
    ck_assert_ptr_null(svc_check_uuid(o, "name", &e));
    ck_assert_ptr_null(svc_check_enum(o, "role", true, roles, &e));
    ck_assert_int_eq(error_count(&e), 8);
    const char *msg = json_string_value(json_object_get(json_array_get(e.list, 7), "message"));
    ck_assert_str_eq(msg, "role must be one of user, admin");
    ck_assert(svc_errors_any(&e));
    svc_errors_free(&e);
    json_decref(o);
}
END_TEST

START_TEST(utf8_lengths)
{
    /* limits count characters, not bytes: 200 x "é" is 400 bytes */
    char name[401];
    for (int i = 0; i < 200; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[400] = '\0';
    json_t *o = json_pack("{s:s}", "name", name);
    struct svc_errors e;
    svc_errors_init(&e);
    ck_assert_ptr_nonnull(svc_check_string(o, "name", true, 1, 200, &e));
    ck_assert_ptr_null(svc_check_string(o, "name", true, 1, 199, &e));
    svc_errors_free(&e);
    json_decref(o);
}
END_TEST

START_TEST(redis_urls)
{
    struct bus_redis_url u;
    char err[256];
    ck_assert(bus_parse_url("redis://127.0.0.1", &u, err, sizeof err));
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 6379);
    ck_assert_int_eq(u.database, 0);
    ck_assert_ptr_null(u.password);
    bus_redis_url_free(&u);
    ck_assert(bus_parse_url("redis://:s3cret@cache.local:6380/2", &u, err, sizeof err));
    ck_assert_str_eq(u.host, "cache.local");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.database, 2);
    ck_assert_str_eq(u.password, "s3cret");
    ck_assert_ptr_null(u.username);
    bus_redis_url_free(&u);
    ck_assert(bus_parse_url("redis://app:pw@h/0", &u, err, sizeof err));
    ck_assert_str_eq(u.username, "app");
    ck_assert_str_eq(u.password, "pw");
    bus_redis_url_free(&u);
    const char *bad[] = {"http://h",      "redis://",      "redis://h:0",   "redis://h:99999",
                         "redis://h:x/1", "redis://h/abc", "redis://:pw@:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        ck_assert_msg(!bus_parse_url(bad[i], &u, err, sizeof err), "accepted %s", bad[i]);
        ck_assert_msg(strstr(err, "REDIS_URL") != NULL, "no message for %s", bad[i]);
    }
}
END_TEST

/* What a failed statement means for its event: retried without counting
 * (the database may come back) or counted toward the dead letter. */
START_TEST(sqlstates)
{
    const char *transient[] = {NULL,    "",      "08006", "08001", "57P01", "57P03", "57014",
                               "40001", "40P01", "53300", "58030", "55P03", "25006"};
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        ck_assert_msg(bus_sqlstate_transient(transient[i]), "%s is transient",
                      transient[i] ? transient[i] : "NULL");
    const char *permanent[] = {"23505", "23503", "23514", "23502", "22P02",
                               "22003", "42P01", "42703", "XX000", "P0001"};
    for (size_t i = 0; i < sizeof permanent / sizeof *permanent; i++)
        ck_assert_msg(!bus_sqlstate_transient(permanent[i]), "%s is permanent", permanent[i]);
}
END_TEST

/* Bounded exponential steps with equal jitter: [step/2, step], the step
 * doubling from min and capped at max. */
START_TEST(retry_delays)
{
    const uint32_t jitters[] = {0, 1, 77, 499, 500, 12345, 0x7fffffffu, 0xffffffffu};
    for (size_t j = 0; j < sizeof jitters / sizeof *jitters; j++) {
        long long step = 500;
        for (long long attempt = 1; attempt <= 70; attempt++) {
            long long d = bus_retry_delay_ms(500, 10000, attempt, jitters[j]);
            ck_assert_msg(d >= step / 2 && d <= step, "attempt %lld: %lld not in [%lld, %lld]",
                          attempt, d, step / 2, step);
            step = step * 2 > 10000 ? 10000 : step * 2;
        }
    }
    ck_assert_int_eq(bus_retry_delay_ms(500, 10000, 1, 0), 250);
    ck_assert_int_eq(bus_retry_delay_ms(500, 10000, 1, 250), 500);
    ck_assert_int_eq(bus_retry_delay_ms(500, 10000, 3, 0), 1000);
    ck_assert_int_eq(bus_retry_delay_ms(500, 10000, 1000000, 0xffffffffu) <= 10000, 1);
    ck_assert_int_eq(bus_retry_delay_ms(2, 2, 5, 7), 1 + 7 % 2);
    /* the jitter spreads: not every jitter gives the same step */
    ck_assert_int_ne(bus_retry_delay_ms(500, 10000, 2, 3), bus_retry_delay_ms(500, 10000, 2, 400));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("services");
    TCase *tc = tcase_create("runtime");
    tcase_add_test(tc, trace_parse_valid);
    tcase_add_test(tc, trace_parse_invalid);
    tcase_add_test(tc, trace_child_keeps_the_trace);
    tcase_add_test(tc, uuid_v4);
    tcase_add_test(tc, emails);
    tcase_add_test(tc, integers);
    tcase_add_test(tc, field_checks);
    tcase_add_test(tc, utf8_lengths);
    tcase_add_test(tc, redis_urls);
    tcase_add_test(tc, sqlstates);
    tcase_add_test(tc, retry_delays);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
