/* user-service: the seed's user contract as full CRUD, database `users`.
 * See docs/services.md and openapi.yaml next to this file. */
#include "db.h"
#include "svc.h"

#include <stdlib.h>
#include <string.h>

#define USER_JSON                                                                                  \
    "json_build_object('id', id, 'name', name, 'email', email, 'role', role,"                      \
    " 'created_at', created_at, 'updated_at', updated_at)"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS users ("
    " id uuid PRIMARY KEY,"
    " name text NOT NULL,"
    " email text NOT NULL,"
    " role text NOT NULL CHECK (role IN ('user', 'admin')),"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " updated_at timestamptz NOT NULL DEFAULT now());"
    /* unique regardless of case: Ada@x.org and ada@x.org are one address */
    "CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower ON users (lower(email));";

static const char *const ROLES[] = {"user", "admin", NULL};
static const char *const USER_FIELDS[] = {"name", "email", "role", NULL};

static void on_created(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct svc_req *r = arg;
    if (res == NULL && sqlstate && strcmp(sqlstate, DB_UNIQUE_VIOLATION) == 0) {
        svc_problem(r, 409, "conflict", "a user with this email already exists", NULL);
        return;
    }
    if (res && PQntuples(res) == 1) {
        char location[64];
        snprintf(location, sizeof location, "/users/%s", PQgetvalue(res, 0, 1));
        svc_reply_header(r, "Location", location);
    }
    svc_reply_row(r, res, error, 201, "no user has this id");
}

static void on_user(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct svc_req *r = arg;
    if (res == NULL && sqlstate && strcmp(sqlstate, DB_UNIQUE_VIOLATION) == 0)
        svc_problem(r, 409, "conflict", "a user with this email already exists", NULL);
    else
        svc_reply_row(r, res, error, 200, "no user has this id");
}

static void on_deleted(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    struct svc_req *r = arg;
    if (res == NULL)
        svc_unavailable(r, "database", error);
    else if (strcmp(PQcmdTuples(res), "0") == 0)
        svc_problem(r, 404, "not-found", "no user has this id", NULL);
    else
        svc_reply(r, 204, NULL, NULL, 0);
}

static void on_list(PGresult *res, const char *sqlstate, const char *error, void *arg)
{
    svc_reply_row(arg, res, error, 200, "");
}

/* name, email, role from a POST (role optional) or PUT (all required) body;
 * false after answering 400. */
static bool read_user(struct svc_req *r, json_t *body, bool full, const char *out[3])
{
    struct svc_errors e;
    svc_errors_init(&e);
    svc_check_members(body, USER_FIELDS, &e);
    out[0] = svc_check_string(body, "name", true, 1, 200, &e);
    out[1] = svc_check_string(body, "email", true, 3, 254, &e);
    if (out[1] && !svc_is_email(out[1])) {
        svc_errors_add(&e, "email", "email must be an address like name@example.com");
        out[1] = NULL;
    }
    out[2] = svc_check_enum(body, "role", full, ROLES, &e);
    if (out[2] == NULL && !full && json_object_get(body, "role") == NULL)
        out[2] = "user";
    bool bad = svc_errors_reply(r, &e);
    svc_errors_free(&e);
    return !bad;
}

static void create_user(struct svc_req *r)
{
    json_t *body = svc_json_body(r);
    if (body == NULL)
        return;
    const char *f[3];
    if (read_user(r, body, false, f)) {
        char id[37];
        svc_uuid(id);
        const char *params[] = {id, f[0], f[1], f[2]};
        svc_query(r,
                  "INSERT INTO users (id, name, email, role) VALUES ($1, $2, $3, $4)"
                  " RETURNING " USER_JSON "::text, id",
                  4, params, on_created);
    }
    json_decref(body);
}

static void replace_user(struct svc_req *r, const char *id)
{
    json_t *body = svc_json_body(r);
    if (body == NULL)
        return;
    const char *f[3];
    if (read_user(r, body, true, f)) {
        const char *params[] = {id, f[0], f[1], f[2]};
        svc_query(r,
                  "UPDATE users SET name = $2, email = $3, role = $4, updated_at = now()"
                  " WHERE id = $1 RETURNING " USER_JSON "::text, id",
                  4, params, on_user);
    }
    json_decref(body);
}

static void list_users(struct svc_req *r)
{
    struct svc_errors e;
    svc_errors_init(&e);
    long long limit = 20, offset = 0;
    const char *l = svc_param(r, "limit"), *o = svc_param(r, "offset");
    if (l && !svc_parse_int(l, 1, 100, &limit))
        svc_errors_add(&e, "limit", "limit must be an integer from 1 to 100");
    if (o && !svc_parse_int(o, 0, 2147483647, &offset))
        svc_errors_add(&e, "offset", "offset must be an integer from 0 to 2147483647");
    if (svc_errors_reply(r, &e)) {
        svc_errors_free(&e);
        return;
    }
    svc_errors_free(&e);
    char ls[24], os[24];
    snprintf(ls, sizeof ls, "%lld", limit);
    snprintf(os, sizeof os, "%lld", offset);
    const char *params[] = {ls, os};
    svc_query(r,
              "SELECT json_build_object('items', coalesce((SELECT json_agg(p.j ORDER BY"
              " p.created_at, p.id) FROM (SELECT " USER_JSON " AS j, created_at, id FROM users"
              " ORDER BY created_at, id LIMIT $1::int OFFSET $2::int) p), '[]'::json),"
              " 'limit', $1::int, 'offset', $2::int, 'total', (SELECT count(*) FROM users))::text",
              2, params, on_list);
}

static void handle(struct svc_req *r)
{
    if (r->n_segments == 0 || strcmp(r->segments[0], "users") != 0 || r->n_segments > 2) {
        svc_problem(r, 404, "not-found", "no such resource", NULL);
        return;
    }
    if (r->n_segments == 1) {
        if (r->method == EVHTTP_REQ_GET)
            list_users(r);
        else if (r->method == EVHTTP_REQ_POST)
            create_user(r);
        else
            svc_method_not_allowed(r, "GET, POST");
        return;
    }
    const char *id = r->segments[1];
    if (r->method != EVHTTP_REQ_GET && r->method != EVHTTP_REQ_PUT &&
        r->method != EVHTTP_REQ_DELETE) {
        svc_method_not_allowed(r, "GET, PUT, DELETE");
        return;
    }
    if (svc_require_uuid(r, "id", id) == NULL)
        return;
    const char *params[] = {id};
    if (r->method == EVHTTP_REQ_GET)
        svc_query(r, "SELECT " USER_JSON "::text, id FROM users WHERE id = $1", 1, params, on_user);
    else if (r->method == EVHTTP_REQ_DELETE)
        svc_query(r, "DELETE FROM users WHERE id = $1", 1, params, on_deleted);
    else
        replace_user(r, id);
}

int main(void)
{
    struct svc_options opts = {
        .name = "user-service",
        .default_port = 8081,
        .default_db = "users",
        .schema_sql = SCHEMA,
        .handler = handle,
        .uses_redis = false,
    };
    svc_init(&opts);
    return svc_run();
}
