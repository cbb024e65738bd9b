/*
 * Configuration loader: what it accepts (values and defaults), what it
 * refuses (one table of files and the exact error each must give), node
 * settings and their SLUICE_<KEY> overrides, listen/CIDR helpers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "sha256.h"
#include "plugin_runtime.h"
#include "plugins.h"
#include "unit.h"

static const char *srcdir(void)
{
    const char *d = getenv("SLUICE_SRCDIR");
    return d != NULL && *d != '\0' ? d : ".";
}

static char *data_path(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/unit/data/%s", srcdir(), name);
    return buf;
}

static struct sl_config *load_role(const char *yaml, const char *role, struct sl_config_error *err)
{
    return sl_config_load_buffer(yaml, strlen(yaml), "t.yml", role, err);
}

static struct sl_config *load(const char *yaml, struct sl_config_error *err)
{
    return load_role(yaml, "gateway", err);
}

static struct sl_config *load_ok(const char *yaml)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    ck_assert_msg(cfg != NULL, "unexpected error: %s", err.text);
    return cfg;
}

/* Write text to a temporary file; returns its path (static buffer). */
static const char *temp_file(const char *text)
{
    static char path[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/sluice-check-config-XXXXXX", tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

#define V3 "_format_version: \"3.0\"\n"

/* Node keys that SLUICE_<KEY> can override: the tests own the environment. */
static void clear_env(void)
{
    static const char *const vars[] = {
        "SLUICE_PROXY_LISTEN",
        "SLUICE_STATUS_LISTEN",
        "SLUICE_ADMIN_LISTEN",
        "SLUICE_WORKER_PROCESSES",
        "SLUICE_TRUSTED_IPS",
        "SLUICE_CLIENT_HEADER_TIMEOUT",
        "SLUICE_CLIENT_BODY_TIMEOUT",
        "SLUICE_CLIENT_BODY_TOTAL_TIMEOUT",
        "SLUICE_KEEPALIVE_TIMEOUT",
        "SLUICE_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT",
        "SLUICE_GRACEFUL_SHUTDOWN_TIMEOUT",
        "SLUICE_KEEPALIVE_REQUESTS",
        "SLUICE_MAX_REQUEST_LINE",
        "SLUICE_MAX_HEADER_BYTES",
        "SLUICE_MAX_HEADERS",
        "SLUICE_UPSTREAM_KEEPALIVE_POOL_SIZE",
        "SLUICE_UPSTREAM_KEEPALIVE_MAX_REQUESTS",
        "SLUICE_CLIENT_MAX_BODY_SIZE",
        "SLUICE_ACCESS_LOG",
        "SLUICE_LOG_LEVEL",
        "SLUICE_SERVICE_NAME",
        "SLUICE_INBOUND_LISTEN",
        "SLUICE_OUTBOUND_LISTEN",
        "SLUICE_APP_URL",
        "SLUICE_DRAIN_DELAY",
        "SLUICE_INBOUND_CIRCUIT_BREAKERS",
        "SLUICE_SOMETHING_ELSE",
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* ------------------------------------------------------------------------ */
/* Refusals: file -> exact error ("*" at the end: prefix match)              */
/* ------------------------------------------------------------------------ */

static const struct bad_case {
    const char *yaml;
    const char *error;
} bad_cases[] = {
    /* file level */
    {"", "t.yml:1:1: empty file: expected a map with '_format_version'"},
    {"# only a comment\n", "t.yml:1:1: empty file: expected a map with '_format_version'"},
    {"- a\n- b\n", "t.yml:1:1: expected a map at the top level, got a sequence"},
    {"services: []\n", "t.yml:1:1: missing '_format_version' (expected \"3.0\")"},
    {"_format_version: 3.0\n",
     "t.yml:1:18: _format_version: expected a string, got a number (write \"3.0\")"},
    {"_format_version: \"4.0\"\n",
     "t.yml:1:18: unsupported _format_version '4.0' (expected \"3.0\", \"2.1\" or \"1.1\")"},
    {V3 "xyz: 1\n", "t.yml:2:1: unknown field 'xyz'"},
    {V3 "vaults: []\n", "t.yml:2:1: 'vaults' is not supported yet"},
    {V3 "keys:\n  - x: 1\n", "t.yml:2:1: 'keys' is not supported yet"},
    {V3 "_comment: [a]\n", "t.yml:2:11: expected a string, got a sequence"},
    {V3 "_transform: maybe\n", "t.yml:2:13: expected a boolean, got a string"},
    {V3 "_ignore: x\n", "t.yml:2:10: expected a sequence, got a string"},
    /* YAML itself */
    {V3 "services:\n  - name: a\n   url: x\n",
     "t.yml:4:4: YAML syntax error: did not find expected '-' indicator*"},
    {V3 "a: \"unterminated\n", "t.yml:3:1: YAML syntax error: found unexpected end of stream*"},
    {V3 "x: &a 1\ny: *a\n", "t.yml:3:4: YAML aliases are not supported"},
    {"---\n" V3 "---\n" V3, "t.yml:3:1: only one YAML document is allowed"},
    {V3 "_format_version: \"3.0\"\n",
     "t.yml:2:1: duplicate key '_format_version' (first at line 1)"},
    {V3 "? [a]\n: 1\n", "t.yml:2:3: map keys must be scalars"},
    {V3 "_comment: !!binary aGVsbG8=\n",
     "t.yml:2:11: unsupported YAML tag 'tag:yaml.org,2002:binary'"},
    {V3 "_comment: !!int abc\n", "t.yml:2:11: 'abc' is not an integer"},
    {V3 "_comment: \"a\\0b\"\n", "t.yml:2:11: NUL characters are not allowed in strings"},
    {V3 "_ignore: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     "t.yml:2:73: nesting is too deep (the limit is 64 levels)"},
    /* services */
    {V3 "services: {}\n", "t.yml:2:11: expected a sequence, got a map"},
    {V3 "services:\n  - name: a\n", "t.yml:3:5: service needs 'host' or 'url'"},
    {V3 "services:\n  - url: http://h\n    colour: red\n", "t.yml:4:5: unknown field 'colour'"},
    {V3 "services:\n  - url: http://h\n    host: h\n",
     "t.yml:4:5: conflicting values: 'url' and 'host' cannot both be set"},
    {V3 "services:\n  - port: 81\n    url: http://h\n",
     "t.yml:4:5: conflicting values: 'url' and 'port' cannot both be set"},
    {V3 "services:\n  - url: ftp://h\n",
     "t.yml:3:10: invalid url 'ftp://h': the scheme must be http or https"},
    {V3 "services:\n  - url: grpc://h\n", "t.yml:3:10: protocol 'grpc' is not supported yet"},
    {V3 "services:\n  - url: h:80\n", "t.yml:3:10: invalid url 'h:80': missing scheme"},
    {V3 "services:\n  - url: http://h/x?y=1\n",
     "t.yml:3:10: invalid url 'http://h/x?y=1': a query string or fragment is not allowed"},
    {V3 "services:\n  - url: http://h:99999\n",
     "t.yml:3:10: invalid url 'http://h:99999': bad port"},
    {V3 "services:\n  - url: http://u:p@h\n",
     "t.yml:3:10: invalid url 'http://u:p@h': credentials in a url are not supported"},
    {V3 "services:\n  - url: http://h//x\n",
     "t.yml:3:10: invalid url 'http://h//x': path must not have empty segments"},
    {V3 "services:\n  - url: http://\n", "t.yml:3:10: invalid url 'http://': missing host"},
    {V3 "services:\n  - host: h\n    protocol: tcp\n",
     "t.yml:4:15: protocol 'tcp' is not supported yet"},
    {V3 "services:\n  - host: h\n    protocol: gopher\n",
     "t.yml:4:15: invalid protocol 'gopher': expected http or https"},
    {V3 "services:\n  - host: h:80\n", "t.yml:3:11: invalid host 'h:80': must not have a port"},
    {V3 "services:\n  - host: a b\n", "t.yml:3:11: invalid host 'a b': invalid hostname"},
    {V3 "services:\n  - host: h\n    path: api\n",
     "t.yml:4:11: invalid path 'api': must start with '/'"},
    {V3 "services:\n  - host: h\n    port: 65536\n",
     "t.yml:4:11: value 65536 is out of range (0..65535)"},
    {V3 "services:\n  - host: h\n    connect_timeout: 0\n",
     "t.yml:4:22: value 0 is out of range (1..2147483646)"},
    {V3 "services:\n  - host: h\n    retries: 32768\n",
     "t.yml:4:14: value 32768 is out of range (0..32767)"},
    {V3 "services:\n  - host: h\n    retries: \"5\"\n",
     "t.yml:4:14: expected an integer, got a string"},
    {V3 "services:\n  - host: h\n    retries: 1.5\n", "t.yml:4:14: expected an integer, got 1.5"},
    {V3 "services:\n  - host: h\n    enabled: \"yes\"\n",
     "t.yml:4:14: expected a boolean, got a string"},
    {V3 "services:\n  - host: h\n    name: \"a b\"\n",
     "t.yml:4:11: invalid name 'a b': only letters, digits, '.', '-', '_' and '~' are allowed"},
    {V3 "services:\n  - host: h\n    name: \"\"\n", "t.yml:4:11: must not be empty"},
    {V3 "services:\n  - host: h\n    name: 42\n", "t.yml:4:11: expected a string, got an integer"},
    {V3 "services:\n  - host: h\n    id: 1234\n", "t.yml:4:9: expected a string, got an integer"},
    {V3 "services:\n  - host: h\n    id: not-a-uuid\n",
     "t.yml:4:9: invalid id 'not-a-uuid': expected a UUID"},
    {V3 "services:\n  - host: h\n    tags: [a, \"b,c\"]\n",
     "t.yml:4:15: invalid tag 'b,c': ',', '/' and control characters are not allowed"},
    {V3 "services:\n  - host: h\n    client_certificate: {id: x}\n",
     "t.yml:4:5: service field 'client_certificate' is not supported yet"},
    {V3 "services:\n  - host: h\n    tls_verify: 2\n",
     "t.yml:4:17: expected a boolean, got an integer"},
    {V3 "services:\n  - host: h\n    ca_certificates: [nope]\n",
     "t.yml:4:23: service refers to unknown ca_certificate 'nope'"},
    {V3 "services:\n  - name: a\n    host: h\n  - name: a\n    host: h\n",
     "t.yml:5:11: duplicate service name 'a' (first at line 3)"},
    {V3 "services:\n  - host: h\n    id: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n"
        "  - host: h\n    id: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n",
     "t.yml:6:9: duplicate service id '5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01' (first at line 4)"},
    {V3 "services:\n  - host: h\n    name: 'x'\n    name: 'y'\n",
     "t.yml:5:5: duplicate key 'name' (first at line 4)"},
    /* routes */
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [\"~/users/(\\\\d+\"]\n",
     "t.yml:5:17: invalid regex path '/users/(\\d+': missing closing parenthesis at offset 11"},
    {"_format_version: \"2.1\"\nservices:\n  - host: h\n    routes:\n"
     "      - paths: [\"/users/[a-\"]\n",
     "t.yml:5:17: invalid regex path '/users/[a-': missing terminating ] for character class at "
     "offset 10"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [\"~users\"]\n",
     "t.yml:5:17: invalid path '~users': should start with: / (fixed path) or ~/ (regex path)"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [users]\n",
     "t.yml:5:17: invalid path 'users': must start with '/'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [\"/a b\"]\n",
     "t.yml:5:17: invalid path '/a b': characters outside of RFC 3986 found"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [\"/a%zz\"]\n",
     "t.yml:5:17: invalid path '/a%zz': invalid percent-encoding"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: /a\n",
     "t.yml:5:16: expected a sequence, got a string"},
    {V3 "services:\n  - host: h\n    routes:\n      - name: r\n",
     "t.yml:5:9: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when "
     "'protocols' is 'https'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: []\n        hosts: []\n"
        "        protocols: [http]\n",
     "t.yml:5:9: must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is "
     "'http'"},
    {V3 "services:\n  - host: h\n    routes:\n      - protocols: [https]\n",
     "t.yml:5:9: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when "
     "'protocols' is 'https'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        snis: [10.0.0.1]\n",
     "t.yml:6:16: invalid SNI '10.0.0.1': must not be an IP"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        snis: [\"a.com:443\"]\n",
     "t.yml:6:16: invalid SNI 'a.com:443'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        protocols: [http]\n"
        "        snis: [a.com]\n",
     "t.yml:7:15: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or "
     "'tls_passthrough'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        snis: [\"a b\"]\n",
     "t.yml:6:16: invalid SNI 'a b'"},
    {V3 "services:\n  - host: h\n    routes:\n      - methods: [\"GE T\"]\n",
     "t.yml:5:19: invalid method 'GE T'"},
    {V3 "services:\n  - host: h\n    routes:\n      - hosts: [a.*.com]\n",
     "t.yml:5:17: invalid host 'a.*.com': the wildcard must be the leftmost or the rightmost "
     "label"},
    {V3 "services:\n  - host: h\n    routes:\n      - hosts: [\"*.a.*\"]\n",
     "t.yml:5:17: invalid host '*.a.*': only one wildcard is allowed"},
    {V3 "services:\n  - host: h\n    routes:\n      - hosts: [a.com:8080]\n",
     "t.yml:5:17: hosts with a port are not supported yet"},
    {V3 "services:\n  - host: h\n    routes:\n      - hosts: [\"a_b!\"]\n",
     "t.yml:5:17: invalid host 'a_b!'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        protocols: [grpc]\n",
     "t.yml:6:21: protocol 'grpc' is not supported yet"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        protocols: []\n",
     "t.yml:6:20: protocols must not be empty"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        headers: {Host: [y]}\n",
     "t.yml:6:19: cannot contain 'host' header, which must be specified in the 'hosts' attribute"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        headers: {x: []}\n",
     "t.yml:6:22: header 'x' needs at least one value"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n"
        "        headers: {x: [\"~*(\"]}\n",
     "t.yml:6:23: invalid regex header value '(': missing closing parenthesis at offset 1"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n"
        "        headers: {\"a b\": [y]}\n",
     "t.yml:6:19: invalid header name 'a b'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n"
        "        headers: {x: [a], X: [b]}\n",
     "t.yml:6:27: duplicate header 'x'"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        regex_priority: a\n",
     "t.yml:6:25: expected an integer, got a string"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n        path_handling: v1\n",
     "t.yml:6:24: path_handling 'v1' is not supported yet"},
    {V3 "services:\n  - host: h\n    routes:\n      - paths: [/]\n"
        "        https_redirect_status_code: 400\n",
     "t.yml:6:37: invalid https_redirect_status_code 400: expected 426, 301, 302, 307 or 308"},
    {V3
     "services:\n  - name: s\n    host: h\n    routes:\n      - paths: [/]\n        service: s\n",
     "t.yml:7:9: conflicting values: this route is nested under a service already"},
    {V3 "routes:\n  - paths: [/]\n",
     "t.yml:3:5: route needs a 'service' (routes without a service are not supported yet)"},
    {V3 "routes:\n  - paths: [/]\n    service: nope\n",
     "t.yml:4:14: route refers to unknown service 'nope'"},
    {V3 "services:\n  - name: s\n    host: h\nroutes:\n  - paths: [/]\n    service: {name: t}\n",
     "t.yml:7:21: route refers to unknown service 't'"},
    {V3 "services:\n  - name: s\n    host: h\nroutes:\n  - paths: [/]\n    service: {id: s}\n",
     "t.yml:7:19: route refers to unknown service 's'"},
    {V3 "services:\n  - name: s\n    host: h\nroutes:\n  - paths: [/]\n    service: {nom: s}\n",
     "t.yml:7:15: unknown field 'nom'"},
    {V3 "services:\n  - name: s\n    host: h\nroutes:\n  - paths: [/]\n    service: [s]\n",
     "t.yml:7:14: expected a string or a map, got a sequence"},
    {V3 "services:\n  - host: h\n    routes:\n      - name: r\n        paths: [/a]\n"
        "routes:\n  - name: r\n    service: x\n    paths: [/b]\n",
     "t.yml:8:11: duplicate route name 'r' (first at line 5)"},
    /* consumers */
    {V3 "consumers:\n  - tags: [a]\n", "t.yml:3:5: consumer needs 'username' or 'custom_id'"},
    {V3 "consumers:\n  - username: a\n    keyauth_credentials:\n      - key: k\n",
     "t.yml:4:5: consumer field 'keyauth_credentials' is not supported yet"},
    {V3 "consumers:\n  - username: a\n  - username: a\n",
     "t.yml:4:15: duplicate consumer username 'a' (first at line 3)"},
    {V3 "consumers:\n  - username: a\n    password: x\n", "t.yml:4:5: unknown field 'password'"},
    /* plugins */
    {V3 "plugins:\n  - config: {}\n", "t.yml:3:5: plugin needs a 'name'"},
    {V3 "plugins:\n  - name: jwt\n    config: [a]\n", "t.yml:4:13: expected a map, got a sequence"},
    {V3 "plugins:\n  - name: jwt\n    enabled: 1\n",
     "t.yml:4:14: expected a boolean, got an integer"},
    {V3 "plugins:\n  - name: jwt\n    protocols: [tcp]\n",
     "t.yml:4:17: protocol 'tcp' is not supported yet"},
    {V3 "plugins:\n  - name: \"bad name\"\n", "t.yml:3:11: invalid plugin name 'bad name'"},
    {V3 "plugins:\n  - name: jwt\n    route: nope\n",
     "t.yml:4:12: plugin refers to unknown route 'nope'"},
    {V3 "plugins:\n  - name: jwt\n  - name: jwt\n",
     "t.yml:4:5: plugin 'jwt' is configured twice for the same scope (first at line 3)"},
    {V3 "services:\n  - name: s\n    host: h\n    plugins:\n      - name: jwt\n"
        "        service: s\n",
     "t.yml:7:9: conflicting values: this plugin is nested under a service already"},
    {V3 "services:\n  - name: s\n    host: h\n    plugins:\n      - name: jwt\n"
        "plugins:\n  - name: jwt\n    service: s\n",
     "t.yml:8:5: plugin 'jwt' is configured twice for the same scope (first at line 6)"},
    /* node block */
    {V3 "gateway: [a]\n", "t.yml:2:10: expected a map, got a sequence"},
    {V3 "gateway:\n  listen: 1\n", "t.yml:3:3: unknown field 'listen'"},
    {V3 "sidecar:\n  worker_processes: 1\n",
     "t.yml:2:1: the 'sidecar' block is for sluice-sidecar"},
    {V3 "gateway:\n  worker_processes: 0\n",
     "t.yml:3:21: worker_processes: invalid value '0': expected 'auto' or an integer between 1 "
     "and 1024"},
    {V3 "gateway:\n  worker_processes: many\n",
     "t.yml:3:21: worker_processes: invalid value 'many': expected 'auto' or an integer between "
     "1 and 1024"},
    {V3 "gateway:\n  proxy_listen: [\"127.0.0.1\"]\n",
     "t.yml:3:18: proxy_listen: invalid value '127.0.0.1': expected host:port"},
    {V3 "gateway:\n  proxy_listen: [\"localhost:8000\"]\n",
     "t.yml:3:18: proxy_listen: invalid value 'localhost:8000': expected an IP address "
     "(hostnames are not supported)"},
    {V3 "gateway:\n  proxy_listen: \"0.0.0.0:8000, 0.0.0.0:8443 http2 ssl\"\n",
     "t.yml:3:17: proxy_listen: invalid value '0.0.0.0:8443 http2 ssl': listen flag 'http2' is "
     "not supported yet"},
    {V3 "gateway:\n  proxy_listen: \"0.0.0.0:8000 fast\"\n",
     "t.yml:3:17: proxy_listen: invalid value '0.0.0.0:8000 fast': unknown listen flag 'fast'"},
    {V3 "gateway:\n  proxy_listen: \"::1:8000\"\n",
     "t.yml:3:17: proxy_listen: invalid value '::1:8000': an IPv6 address must be written in "
     "brackets: [::1]:8000"},
    {V3 "gateway:\n  proxy_listen: \"0.0.0.0:0\"\n",
     "t.yml:3:17: proxy_listen: invalid value '0.0.0.0:0': invalid port"},
    {V3 "gateway:\n  proxy_listen: []\n",
     "t.yml:3:17: proxy_listen: at least one address is needed"},
    {V3 "gateway:\n  proxy_listen: \"1.1.1.1:1,,1.1.1.1:2\"\n",
     "t.yml:3:17: proxy_listen: invalid value '1.1.1.1:1,,1.1.1.1:2': empty entry in the list"},
    {V3 "gateway:\n  proxy_listen: [127.0.0.1:8000, \"127.0.0.1:8000 ssl\"]\n",
     "t.yml:3:17: proxy_listen: address 127.0.0.1:8000 is used twice"},
    {V3 "gateway:\n  status_listen: 127.0.0.1:8000\n",
     "t.yml:3:18: status_listen: address 127.0.0.1:8000 overlaps 0.0.0.0:8000"},
    {V3 "gateway:\n  proxy_listen: \"[::]:80, [::1]:80\"\n",
     "t.yml:3:17: proxy_listen: address [::1]:80 overlaps [::]:80"},
    {V3 "gateway:\n  proxy_listen: {a: 1}\n",
     "t.yml:3:17: proxy_listen: expected a string or a sequence, got a map"},
    {V3 "gateway:\n  status_listen: \"127.0.0.1:8100 ssl\"\n",
     "t.yml:3:18: status_listen: invalid value '127.0.0.1:8100 ssl': ssl on this listener is "
     "not supported yet"},
    {V3 "gateway:\n  admin_listen: 127.0.0.1:8100\n",
     "t.yml:3:17: admin_listen: address 127.0.0.1:8100 is used twice"},
    {V3 "gateway:\n  admin_listen: nowhere\n",
     "t.yml:3:17: admin_listen: invalid value 'nowhere': expected host:port"},

    {V3 "gateway:\n  trusted_ips: [10.0.0.0/33]\n",
     "t.yml:3:17: trusted_ips: invalid value '10.0.0.0/33': invalid prefix length"},
    {V3 "gateway:\n  trusted_ips: [example.com]\n",
     "t.yml:3:17: trusted_ips: invalid value 'example.com': expected an IP address or a CIDR "
     "range"},
    {V3 "gateway:\n  upstream_keepalive_max_requests: 0\n",
     "t.yml:3:36: upstream_keepalive_max_requests: invalid value '0': out of range "
     "(1..4294967295)"},
    {V3 "gateway:\n  max_headers: 0\n",
     "t.yml:3:16: max_headers: invalid value '0': out of range (1..10000)"},
    {V3 "gateway:\n  max_request_line: 32\n",
     "t.yml:3:21: max_request_line: invalid value '32': out of range (64..1048576)"},
    {V3 "gateway:\n  max_header_bytes: 1000\n  max_request_line: 2000\n",
     "t.yml:3:21: max_header_bytes: 1000 is less than max_request_line (2000)"},
    {V3 "gateway:\n  max_request_line: 65536\n",
     "t.yml:3:21: max_request_line: 65536 is more than max_header_bytes (32768)"},
    {V3 "gateway:\n  keepalive_timeout: 0\n",
     "t.yml:3:22: keepalive_timeout: invalid value '0': out of range (1..2147483646 ms)"},
    {V3 "gateway:\n  client_header_timeout: 10d\n",
     "t.yml:3:26: client_header_timeout: invalid value '10d': expected milliseconds, or a "
     "number with a unit: ms, s, m, h (\"60s\")"},
    {V3 "gateway:\n  client_header_timeout: -5\n",
     "t.yml:3:26: client_header_timeout: invalid value '-5': expected milliseconds, or a number "
     "with a unit: ms, s, m, h (\"60s\")"},
    {V3 "gateway:\n  client_max_body_size: 10x\n",
     "t.yml:3:25: client_max_body_size: invalid value '10x': expected bytes, or a number with a "
     "unit: k, m, g (\"8m\")"},
    {V3 "gateway:\n  access_log: maybe\n",
     "t.yml:3:15: access_log: invalid value 'maybe': expected on, off, true or false"},
    {V3 "gateway:\n  log_level: verbose\n",
     "t.yml:3:14: log_level: invalid value 'verbose': expected debug, info, notice, warn or "
     "error"},
    {V3 "gateway:\n  keepalive_requests: [1]\n",
     "t.yml:3:23: keepalive_requests: expected a scalar, got a sequence"},
    /* the sidecar's keys are not the gateway's */
    {V3 "gateway:\n  service_name: a\n", "t.yml:3:3: unknown field 'service_name'"},
    {V3 "gateway:\n  inbound_listen: 0.0.0.0:15006\n", "t.yml:3:3: unknown field 'inbound_listen'"},
    {V3 "gateway:\n  outbound_listen: \"off\"\n", "t.yml:3:3: unknown field 'outbound_listen'"},
    {V3 "gateway:\n  app_url: http://h\n", "t.yml:3:3: unknown field 'app_url'"},
    {V3 "gateway:\n  drain_delay: 0\n", "t.yml:3:3: unknown field 'drain_delay'"},
    {V3 "gateway:\n  inbound_circuit_breakers: {}\n",
     "t.yml:3:3: unknown field 'inbound_circuit_breakers'"},
    {V3 "sidecar: ~\n", "t.yml:2:1: the 'sidecar' block is for sluice-sidecar"},

/* retry_policy */
#define SVC V3 "services:\n  - host: h\n"
#define RP SVC "    retry_policy:\n"
    {SVC "    retry_policy: [5xx]\n", "t.yml:4:19: expected a map, got a sequence"},
    {SVC "    retry_policy: true\n", "t.yml:4:19: expected a map, got a boolean"},
    {RP "      retries: 3\n", "t.yml:5:7: unknown field 'retries'"},
    {RP "      retry_on: 5xx\n", "t.yml:5:17: expected a sequence, got a string"},
    {RP "      retry_on: []\n",
     "t.yml:5:17: retry_on must not be empty (num_retries: 0 turns retries off)"},
    {RP "      retry_on: [5xx, \"503\"]\n",
     "t.yml:5:23: unknown retry_on value '503' (expected connect-failure, reset, gateway-error, "
     "5xx, retriable-4xx or retriable-status-codes)"},
    {RP "      retry_on:\n        - reset\n        - refused-stream\n",
     "t.yml:7:11: unknown retry_on value 'refused-stream' (expected connect-failure, reset, "
     "gateway-error, 5xx, retriable-4xx or retriable-status-codes)"},
    {RP "      retry_on: [5xx, 409]\n", "t.yml:5:23: expected a string, got an integer"},
    {RP "      retriable_status_codes: 503\n", "t.yml:5:31: expected a sequence, got an integer"},
    {RP "      retry_on: [retriable-status-codes]\n      retriable_status_codes: [503, 99]\n",
     "t.yml:6:37: value 99 is out of range (100..599)"},
    {RP "      retry_on: [retriable-status-codes]\n      retriable_status_codes: [600]\n",
     "t.yml:6:32: value 600 is out of range (100..599)"},
    {RP "      retry_on: [retriable-status-codes]\n      retriable_status_codes: [\"503\"]\n",
     "t.yml:6:32: expected an integer, got a string"},
    {RP "      retriable_status_codes: [503]\n",
     "t.yml:5:31: retriable_status_codes needs 'retriable-status-codes' in retry_on"},
    {RP "      retry_on: [5xx]\n      retriable_status_codes: [503]\n",
     "t.yml:6:31: retriable_status_codes needs 'retriable-status-codes' in retry_on"},
    {RP "      retry_on: [reset, retriable-status-codes]\n",
     "t.yml:5:25: retry_on 'retriable-status-codes' needs a non-empty retriable_status_codes"},
    {RP "      retriable_status_codes: []\n      retry_on: [retriable-status-codes]\n",
     "t.yml:6:18: retry_on 'retriable-status-codes' needs a non-empty retriable_status_codes"},
    {RP "      num_retries: 101\n", "t.yml:5:20: value 101 is out of range (0..100)"},
    {RP "      num_retries: -1\n", "t.yml:5:20: value -1 is out of range (0..100)"},
    {RP "      num_retries: two\n", "t.yml:5:20: expected an integer, got a string"},
    {RP "      per_try_timeout: 2147483647\n",
     "t.yml:5:24: value 2147483647 is out of range (0..2147483646)"},
    {RP "      per_try_timeout: 1.5\n", "t.yml:5:24: expected an integer, got 1.5"},
    {RP "      per_try_timeout: \"1s\"\n", "t.yml:5:24: expected an integer, got a string"},
    {RP "      timeout: -1\n", "t.yml:5:16: value -1 is out of range (0..2147483646)"},
    {RP "      backoff: 25\n", "t.yml:5:16: expected a map, got an integer"},
    {RP "      backoff: {jitter: true}\n", "t.yml:5:17: unknown field 'jitter'"},
    {RP "      backoff: {base_interval: 0}\n",
     "t.yml:5:32: value 0 is out of range (1..2147483646)"},
    {RP "      backoff: {max_interval: 0}\n",
     "t.yml:5:31: value 0 is out of range (1..2147483646)"},
    {RP "      backoff:\n        base_interval: 100\n        max_interval: 50\n",
     "t.yml:7:23: max_interval: 50 is less than base_interval (100)"},
    {RP "      backoff: {max_interval: 10}\n",
     "t.yml:5:31: max_interval: 10 is less than base_interval (25)"},
    {RP "      budget: 0.2\n", "t.yml:5:15: expected a map, got a number"},
    {RP "      budget: {percent: 20}\n", "t.yml:5:16: unknown field 'percent'"},
    {RP "      budget: {ratio: 1.5}\n", "t.yml:5:23: value 1.5 is out of range (0..1)"},
    {RP "      budget: {ratio: -0.1}\n", "t.yml:5:23: value -0.1 is out of range (0..1)"},
    {RP "      budget: {ratio: 2}\n", "t.yml:5:23: value 2 is out of range (0..1)"},
    {RP "      budget: {ratio: .nan}\n", "t.yml:5:23: value .nan is out of range (0..1)"},
    {RP "      budget: {ratio: \"0.2\"}\n", "t.yml:5:23: expected a number, got a string"},
    {RP "      budget: {min_retries_per_second: 1000001}\n",
     "t.yml:5:40: value 1000001 is out of range (0..1000000)"},
    {RP "      budget: {ttl: 0}\n", "t.yml:5:21: value 0 is out of range (1..2147483646)"},
    {RP "      max_body_bytes: 1073741825\n",
     "t.yml:5:23: value 1073741825 is out of range (0..1073741824)"},
    {RP "      max_body_bytes: 64k\n", "t.yml:5:23: expected an integer, got a string"},

/* circuit_breakers */
#define CB SVC "    circuit_breakers:\n"
    {SVC "    circuit_breakers: []\n", "t.yml:4:23: expected a map, got a sequence"},
    {CB "      max_connection: 1\n", "t.yml:5:7: unknown field 'max_connection'"},
    {CB "      max_connections: 0\n", "t.yml:5:24: value 0 is out of range (1..1000000)"},
    {CB "      max_pending_requests: 0\n", "t.yml:5:29: value 0 is out of range (1..1000000)"},
    {CB "      max_requests: 1000001\n", "t.yml:5:21: value 1000001 is out of range (1..1000000)"},
    {CB "      max_retries: -1\n", "t.yml:5:20: value -1 is out of range (0..1000000)"},
    {CB "      max_retries: 1000001\n", "t.yml:5:20: value 1000001 is out of range (0..1000000)"},
    {CB "      max_requests: 1e3x\n", "t.yml:5:21: expected an integer, got a string"},

/* outlier_detection */
#define OD SVC "    outlier_detection:\n"
    {SVC "    outlier_detection: on\n", "t.yml:4:24: expected a map, got a string"},
    {OD "      success_rate: {}\n", "t.yml:5:7: unknown field 'success_rate'"},
    {OD "      consecutive_5xx: 1000001\n",
     "t.yml:5:24: value 1000001 is out of range (0..1000000)"},
    {OD "      consecutive_gateway_failure: -1\n",
     "t.yml:5:36: value -1 is out of range (0..1000000)"},
    {OD "      interval: 0\n", "t.yml:5:17: value 0 is out of range (1..2147483646)"},
    {OD "      base_ejection_time: 0\n", "t.yml:5:27: value 0 is out of range (1..2147483646)"},
    {OD "      max_ejection_time: 0\n", "t.yml:5:26: value 0 is out of range (1..2147483646)"},
    {OD "      max_ejection_time: 1000\n",
     "t.yml:5:26: max_ejection_time: 1000 is less than base_ejection_time (30000)"},
    {OD "      max_ejection_time: 1000\n      base_ejection_time: 2000\n",
     "t.yml:5:26: max_ejection_time: 1000 is less than base_ejection_time (2000)"},
    {OD "      base_ejection_time: 400000\n",
     "t.yml:5:27: base_ejection_time: 400000 is more than max_ejection_time (300000)"},
    {OD "      max_ejection_percent: 101\n", "t.yml:5:29: value 101 is out of range (0..100)"},
    {OD "      interval: 10s\n", "t.yml:5:17: expected an integer, got a string"},
#undef OD
#undef CB
#undef RP
#undef SVC
};

/* The file must be refused with exactly that error. */
static void check_bad_case(const struct bad_case *c, const char *role, int i)
{
    struct sl_config_error err;
    struct sl_config *cfg = load_role(c->yaml, role, &err);
    if (cfg != NULL)
        sl_config_unref(cfg);
    ck_assert_msg(cfg == NULL, "case %d: accepted, expected: %s", i, c->error);
    size_t n = strlen(c->error);
    if (n > 0 && c->error[n - 1] == '*')
        ck_assert_msg(strncmp(err.text, c->error, n - 1) == 0, "case %d:\n got: %s\nwant: %s", i,
                      err.text, c->error);
    else
        ck_assert_msg(strcmp(err.text, c->error) == 0, "case %d:\n got: %s\nwant: %s", i, err.text,
                      c->error);
}

START_TEST(test_bad_config)
{
    check_bad_case(&bad_cases[_i], "gateway", _i);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Acceptance                                                                 */
/* ------------------------------------------------------------------------ */

START_TEST(test_full_fixture)
{
    struct sl_config_error err;
    const char *path = data_path("full.yml");
    struct sl_config *cfg = sl_config_load(path, "gateway", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_str_eq(cfg->source_path, path);
    ck_assert_str_eq(cfg->format_version, "3.0");
    ck_assert_int_eq(strlen(cfg->hash), 32);

    /* services */
    ck_assert_uint_eq(cfg->n_services, 3);
    const struct sl_service *users = &cfg->services[0];
    ck_assert_str_eq(users->name, "users");
    ck_assert_str_eq(users->id, "5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01");
    ck_assert_str_eq(users->protocol, "https");
    ck_assert_str_eq(users->host, "Users.Internal");
    ck_assert_uint_eq(users->port, 8443);
    ck_assert_str_eq(users->path, "/v1");
    ck_assert_uint_eq(users->connect_timeout_ms, 1000);
    ck_assert_uint_eq(users->read_timeout_ms, 2000);
    ck_assert_uint_eq(users->write_timeout_ms, 3000);
    ck_assert_uint_eq(users->retries, 0);
    ck_assert(users->enabled);
    ck_assert_uint_eq(users->index, 0);
    ck_assert_int_eq(users->line, 9);
    ck_assert_int_eq(users->column, 5);

    const struct sl_service *orders = &cfg->services[1];
    ck_assert_str_eq(orders->name, "orders");
    ck_assert_ptr_null(orders->id);
    ck_assert_str_eq(orders->protocol, "http");
    ck_assert_str_eq(orders->host, "orders.internal");
    ck_assert_uint_eq(orders->port, 80);
    ck_assert_str_eq(orders->path, "/api");
    ck_assert(!orders->enabled); /* "enabled: no" (YAML 1.1 spelling) */
    ck_assert_uint_eq(orders->connect_timeout_ms, 60000);
    ck_assert_uint_eq(orders->retries, 5);

    const struct sl_service *anon = &cfg->services[2];
    ck_assert_ptr_null(anon->name);
    ck_assert_str_eq(anon->host, "10.0.0.7");
    ck_assert_uint_eq(anon->port, 8080);
    ck_assert_ptr_null(anon->path);
    ck_assert_uint_eq(anon->index, 2);

    /* routes: nested first (file order), then top level */
    ck_assert_uint_eq(cfg->n_routes, 4);
    const struct sl_route *r = &cfg->routes[0];
    ck_assert_str_eq(r->name, "users-route");
    ck_assert_ptr_eq(r->service, users);
    ck_assert_uint_eq(r->n_paths, 2);
    ck_assert_str_eq(r->paths[0], "/users");
    ck_assert_str_eq(r->paths[1], "/people");
    ck_assert_uint_eq(r->n_methods, 2);
    ck_assert_str_eq(r->methods[0], "GET");
    ck_assert_str_eq(r->methods[1], "POST");
    ck_assert_uint_eq(r->n_hosts, 2);
    ck_assert_str_eq(r->hosts[0], "api.example.com");
    ck_assert_str_eq(r->hosts[1], "*.example.org");
    ck_assert(!r->strip_path);
    ck_assert(r->preserve_host);
    ck_assert_uint_eq(r->protocols, SL_PROTO_HTTPS);
    ck_assert_int_eq(r->https_redirect_status_code, 301);

    ck_assert_str_eq(cfg->routes[1].name, "by-name");
    ck_assert_ptr_eq(cfg->routes[1].service, users);
    ck_assert(cfg->routes[1].strip_path);
    ck_assert(!cfg->routes[1].preserve_host);
    ck_assert_uint_eq(cfg->routes[1].protocols, SL_PROTO_HTTP | SL_PROTO_HTTPS);
    ck_assert_int_eq(cfg->routes[1].https_redirect_status_code, 426);
    ck_assert_str_eq(cfg->routes[2].name, "by-id");
    ck_assert_ptr_eq(cfg->routes[2].service, users);
    ck_assert_str_eq(cfg->routes[3].name, "by-map-name");
    ck_assert_ptr_eq(cfg->routes[3].service, orders);
    ck_assert_uint_eq(cfg->routes[3].n_paths, 0);
    for (size_t i = 0; i < cfg->n_routes; i++)
        ck_assert_uint_eq(cfg->routes[i].index, i);

    /* consumers */
    ck_assert_uint_eq(cfg->n_consumers, 2);
    ck_assert_str_eq(cfg->consumers[0].username, "alice");
    ck_assert_str_eq(cfg->consumers[0].custom_id, "a-1");
    ck_assert_str_eq(cfg->consumers[0].id, "0b9e7a0e-4c9a-4d0e-8c43-2b8b8f6f0a11");
    ck_assert_ptr_null(cfg->consumers[1].username);
    ck_assert_str_eq(cfg->consumers[1].custom_id, "bob-2");

    /* plugins, in file order, with their scope */
    ck_assert_uint_eq(cfg->n_plugins, 5);
    const struct sl_plugin_conf *p = &cfg->plugins[0];
    ck_assert_str_eq(p->name, "rate-limiting");
    ck_assert_ptr_eq(p->route, &cfg->routes[0]);
    ck_assert_ptr_null(p->service);
    ck_assert_ptr_null(p->consumer);
    ck_assert(p->enabled);
    ck_assert_int_eq(p->line, 32);
    ck_assert_int_eq(p->column, 13);
    ck_assert_ptr_nonnull(p->config);
    const struct sl_conf_value *minute = sl_conf_get(p->config, "minute");
    ck_assert_ptr_nonnull(minute);
    ck_assert_int_eq(minute->type, SL_CONF_INT);
    ck_assert_int_eq(minute->integer, 100);
    ck_assert_int_eq(minute->line, 34);
    ck_assert_int_eq(minute->column, 23);
    const struct sl_conf_value *policy = sl_conf_get(p->config, "policy");
    ck_assert_int_eq(policy->type, SL_CONF_STRING);
    ck_assert_str_eq(policy->text, "local");
    ck_assert_ptr_null(sl_conf_get(p->config, "hour"));

    p = &cfg->plugins[1];
    ck_assert_str_eq(p->name, "jwt");
    ck_assert_ptr_eq(p->service, users);
    ck_assert(!p->enabled);
    ck_assert_ptr_null(p->config);

    p = &cfg->plugins[2];
    ck_assert_str_eq(p->name, "request-transformer");
    ck_assert_ptr_eq(p->consumer, &cfg->consumers[0]);
    ck_assert_ptr_null(p->service);

    p = &cfg->plugins[3];
    ck_assert_str_eq(p->name, "prometheus");
    ck_assert_ptr_null(p->service);
    ck_assert_ptr_null(p->route);
    ck_assert_ptr_null(p->consumer);
    ck_assert_uint_eq(p->protocols,
                      SL_PROTO_HTTP | SL_PROTO_HTTPS | SL_PROTO_GRPC | SL_PROTO_GRPCS);

    p = &cfg->plugins[4];
    ck_assert_str_eq(p->name, "request-transformer");
    ck_assert_ptr_eq(p->service, orders);
    ck_assert_ptr_eq(p->route, &cfg->routes[1]);
    ck_assert_ptr_eq(p->consumer, &cfg->consumers[0]);
    ck_assert_str_eq(p->instance_name, "rt-orders");
    const struct sl_conf_value *add = sl_conf_get(p->config, "add");
    ck_assert_int_eq(add->type, SL_CONF_MAP);
    const struct sl_conf_value *headers = sl_conf_get(add, "headers");
    ck_assert_int_eq(headers->type, SL_CONF_SEQ);
    ck_assert_uint_eq(headers->n_items, 1);
    ck_assert_str_eq(headers->items[0]->text, "X-Consumer-ID:$(consumer.id)");

    /* node block */
    const struct sl_node_config *n = &cfg->node;
    ck_assert_uint_eq(n->n_proxy_listen, 2);
    ck_assert_str_eq(n->proxy_listen[0].host, "127.0.0.1");
    ck_assert_uint_eq(n->proxy_listen[0].port, 8000);
    ck_assert(!n->proxy_listen[0].ssl);
    ck_assert_str_eq(n->proxy_listen[1].host, "::1");
    ck_assert_uint_eq(n->proxy_listen[1].port, 8443);
    ck_assert(n->proxy_listen[1].ssl);
    ck_assert_uint_eq(n->status_listen.port, 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_eq(n->worker_processes, cpus < 1 ? 1 : cpus);
    ck_assert_uint_eq(n->n_trusted_ips, 3);
    ck_assert_int_eq(n->trusted_ips[0].family, AF_INET);
    ck_assert_uint_eq(n->trusted_ips[0].prefix_len, 8);
    ck_assert_int_eq(n->trusted_ips[1].family, AF_INET6);
    ck_assert_uint_eq(n->trusted_ips[1].prefix_len, 128);
    ck_assert_uint_eq(n->trusted_ips[2].prefix_len, 0);
    ck_assert_uint_eq(n->client_header_timeout_ms, 5000);
    ck_assert_uint_eq(n->client_body_timeout_ms, 500);
    ck_assert_uint_eq(n->client_body_total_timeout_ms, 0);
    ck_assert_uint_eq(n->keepalive_timeout_ms, 120000);
    ck_assert_uint_eq(n->upstream_keepalive_idle_timeout_ms, 3600000);
    ck_assert_uint_eq(n->graceful_shutdown_timeout_ms, 3000);
    ck_assert_uint_eq(n->keepalive_requests, 50);
    ck_assert_uint_eq(n->max_request_line, 4096);
    ck_assert_uint_eq(n->max_header_bytes, 16384);
    ck_assert_uint_eq(n->max_headers, 64);
    ck_assert_uint_eq(n->upstream_keepalive_pool_size, 0);
    ck_assert_uint_eq(n->upstream_keepalive_max_requests, 7);
    ck_assert_uint_eq(n->client_max_body_size, 8u << 20);
    ck_assert(!n->access_log);
    ck_assert_str_eq(n->log_level, "debug");

    /* reference counting */
    ck_assert_ptr_eq(sl_config_ref(cfg), cfg);
    sl_config_unref(cfg);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_defaults)
{
    struct sl_config *cfg = load_ok(V3 "services:\n  - name: s\n    url: https://h\n");
    const struct sl_service *s = &cfg->services[0];
    ck_assert_str_eq(s->protocol, "https");
    ck_assert_uint_eq(s->port, 443);
    ck_assert_ptr_null(s->path);
    ck_assert_uint_eq(s->connect_timeout_ms, 60000);
    ck_assert_uint_eq(s->read_timeout_ms, 60000);
    ck_assert_uint_eq(s->write_timeout_ms, 60000);
    ck_assert_uint_eq(s->retries, 5);
    ck_assert(s->enabled);
    ck_assert_uint_eq(cfg->n_routes, 0);
    ck_assert_uint_eq(cfg->n_plugins, 0);
    ck_assert_uint_eq(cfg->n_consumers, 0);

    const struct sl_node_config *n = &cfg->node;
    ck_assert_uint_eq(n->n_proxy_listen, 1);
    ck_assert_str_eq(n->proxy_listen[0].host, "0.0.0.0");
    ck_assert_uint_eq(n->proxy_listen[0].port, 8000);
    ck_assert(!n->proxy_listen[0].ssl);
    ck_assert_str_eq(n->status_listen.host, "127.0.0.1");
    ck_assert_uint_eq(n->status_listen.port, 8100);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_eq(n->worker_processes, cpus < 1 ? 1 : cpus); /* "auto" */
    ck_assert_uint_eq(n->n_trusted_ips, 0);
    ck_assert_uint_eq(n->client_header_timeout_ms, 60000);
    ck_assert_uint_eq(n->client_body_timeout_ms, 60000);
    ck_assert_uint_eq(n->client_body_total_timeout_ms, 300000);
    ck_assert_uint_eq(n->send_timeout_ms, 60000);
    ck_assert_uint_eq(n->keepalive_timeout_ms, 75000);
    ck_assert_uint_eq(n->keepalive_requests, 10000);
    ck_assert_uint_eq(n->max_request_line, 8192);
    ck_assert_uint_eq(n->max_header_bytes, 32768);
    ck_assert_uint_eq(n->max_headers, 100);
    ck_assert_uint_eq(n->client_max_body_size, 0);
    ck_assert_uint_eq(n->upstream_keepalive_pool_size, 512);
    ck_assert_uint_eq(n->upstream_keepalive_max_requests, 10000);
    ck_assert_uint_eq(n->upstream_keepalive_idle_timeout_ms, 60000);
    ck_assert_uint_eq(n->graceful_shutdown_timeout_ms, 10000);
    ck_assert(n->access_log);
    ck_assert_str_eq(n->log_level, "notice");
    ck_assert_str_eq(n->dns_resolver, "");
    ck_assert_str_eq(n->dns_hostsfile, "/etc/hosts");
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_dns_keys)
{
    struct sl_config *cfg = load_ok(V3 "gateway:\n  dns_resolver: \"127.0.0.1:5353, [::1]:53, "
                                       "10.0.0.2\"\n  dns_hostsfile: /tmp/hosts\n");
    ck_assert_str_eq(cfg->node.dns_resolver, "127.0.0.1:5353, [::1]:53, 10.0.0.2");
    ck_assert_str_eq(cfg->node.dns_hostsfile, "/tmp/hosts");
    sl_config_unref(cfg);
    struct sl_config_error err;
    const char *bad[] = {"dns.example:53", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "1.2.3.4:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[200];
        snprintf(yaml, sizeof yaml, V3 "gateway:\n  dns_resolver: \"%s\"\n", bad[i]);
        cfg = sl_config_load_buffer(yaml, strlen(yaml), "t.yml", "gateway", &err);
        ck_assert_msg(cfg == NULL, "dns_resolver '%s' was accepted", bad[i]);
        ck_assert_msg(strstr(err.text, "t.yml:3:17: dns_resolver: invalid value") == err.text,
                      "dns_resolver '%s': %s", bad[i], err.text);
    }
}
END_TEST

START_TEST(test_accepted_variants)
{
    static const char *const ok[] = {
        /* a file with only the version is valid */
        V3,
        "_format_version: \"1.1\"\n",
        "_format_version: '2.1'\nservices:\n  - host: h\n    routes:\n      - paths: "
        "[/a-b_c.d~/%41]\n",
        /* null means "not set" */
        V3 "services: ~\nroutes: null\nconsumers:\nplugins:\n",
        V3 "services:\n  - host: h\n    path: null\n    tags: ~\n",
        /* Kong export noise */
        V3 "services:\n  - host: h\n    tls_verify: null\n    ca_certificates: []\n    routes:\n"
           "      - paths: [/]\n        headers: {}\n        snis: []\n        regex_priority: 0\n",
        /* IPv6 service hosts, with or without brackets */
        V3 "services:\n  - url: http://[::1]:8080/x\n  - host: \"::1\"\n  - host: \"[fe80::1]\"\n",
        /* route hosts: IPv6, wildcards */
        V3 "services:\n  - host: h\n    routes:\n      - hosts: [\"::1\", \"[::2]\", \"*.a.b\", "
           "\"c.*\"]\n",
        /* tagged values */
        V3 "services:\n  - host: !!str h\n    retries: !!int 3\n    enabled: !!bool true\n",
        /* floats that are integers (lyaml reads 5.0 as 5) */
        V3 "services:\n  - host: h\n    retries: 5.0\n",
        /* YAML 1.1 booleans */
        V3 "_transform: yes\nservices:\n  - host: h\n    enabled: On\n",
        /* the other role's block is fine for that role */
        V3 "gateway: ~\n",
        V3 "gateway:\n  trusted_ips: []\n  proxy_listen: \"*:8000\"\n",
        V3 "gateway:\n  proxy_listen: \"0.0.0.0:8000, [::]:8000, 127.0.0.1:8001\"\n",
        /* anchors without aliases are harmless */
        V3 "_comment: &c hello\n",
        /* flow style, comments, document markers */
        "---\n{_format_version: \"3.0\", services: [{host: h, routes: [{paths: [/]}]}]} # c\n...\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct sl_config_error err;
        struct sl_config *cfg = load(ok[i], &err);
        ck_assert_msg(cfg != NULL, "case %zu: %s", i, err.text);
        sl_config_unref(cfg);
    }

    struct sl_config *cfg = load_ok(V3 "services:\n  - url: http://[::1]:8080/x\n  - host: "
                                       "\"[fe80::1]\"\n    routes:\n      - hosts: [\"::1\"]\n");
    ck_assert_str_eq(cfg->services[0].host, "::1");
    ck_assert_uint_eq(cfg->services[0].port, 8080);
    ck_assert_str_eq(cfg->services[0].path, "/x");
    ck_assert_str_eq(cfg->services[1].host, "fe80::1");
    ck_assert_str_eq(cfg->routes[0].hosts[0], "::1");
    sl_config_unref(cfg);

    cfg = load_ok(V3 "services:\n  - url: HTTP://H/\n");
    ck_assert_str_eq(cfg->services[0].protocol, "http");
    ck_assert_str_eq(cfg->services[0].path, "/");
    sl_config_unref(cfg);

    cfg = load_ok(V3 "gateway:\n  proxy_listen: \"*:8000\"\n");
    ck_assert_str_eq(cfg->node.proxy_listen[0].host, "0.0.0.0");
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_sidecar_role)
{
    clear_env();
    struct sl_config_error err;
    const char *yaml = V3 "sidecar:\n  service_name: app\n  worker_processes: 3\n";
    struct sl_config *cfg = load_role(yaml, "sidecar", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_int_eq(cfg->node.worker_processes, 3);
    ck_assert_str_eq(cfg->role, "sidecar");
    sl_config_unref(cfg);

    /* each role refuses the other's block, with or without a value */
    static const struct {
        const char *yaml, *role, *error;
    } other[] = {
        {V3 "gateway:\n  worker_processes: 3\n", "sidecar",
         "t.yml:2:1: the 'gateway' block is for sluice-gateway"},
        {V3 "gateway: ~\n", "sidecar", "t.yml:2:1: the 'gateway' block is for sluice-gateway"},
        {V3 "sidecar:\n  service_name: app\n", "gateway",
         "t.yml:2:1: the 'sidecar' block is for sluice-sidecar"},
        {V3 "sidecar: {}\n", "gateway", "t.yml:2:1: the 'sidecar' block is for sluice-sidecar"},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        cfg = load_role(other[i].yaml, other[i].role, &err);
        ck_assert_msg(cfg == NULL, "case %zu accepted", i);
        ck_assert_str_eq(err.text, other[i].error);
    }

    cfg = load_role(V3, "mesh", &err);
    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(err.text, "t.yml: invalid role 'mesh' (expected gateway or sidecar)");

    cfg = sl_config_load_buffer(V3, strlen(V3), "t.yml", NULL, &err); /* NULL: gateway */
    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(cfg->role, "gateway");
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_listen_string_forms)
{
    struct sl_config *cfg = load_ok(
        V3 "gateway:\n  proxy_listen: \"127.0.0.1:9000, [::]:9443 ssl reuseport ,10.1.2.3:80\"\n");
    const struct sl_node_config *n = &cfg->node;
    ck_assert_uint_eq(n->n_proxy_listen, 3);
    ck_assert_str_eq(n->proxy_listen[0].host, "127.0.0.1");
    ck_assert_uint_eq(n->proxy_listen[0].port, 9000);
    ck_assert_str_eq(n->proxy_listen[1].host, "::");
    ck_assert_uint_eq(n->proxy_listen[1].port, 9443);
    ck_assert(n->proxy_listen[1].ssl);
    ck_assert_str_eq(n->proxy_listen[2].host, "10.1.2.3");
    ck_assert_uint_eq(n->proxy_listen[2].port, 80);
    sl_config_unref(cfg);

    cfg = load_ok(V3 "gateway:\n  trusted_ips: \"10.0.0.0/8, ::/0\"\n  status_listen: "
                     "\"[::1]:8101\"\n");
    ck_assert_uint_eq(cfg->node.n_trusted_ips, 2);
    ck_assert_str_eq(cfg->node.status_listen.host, "::1");
    ck_assert_uint_eq(cfg->node.status_listen.port, 8101);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_env_overrides)
{
    setenv("SLUICE_PROXY_LISTEN", "127.0.0.1:9000, 127.0.0.1:9443 ssl", 1);
    setenv("SLUICE_WORKER_PROCESSES", "1", 1);
    setenv("SLUICE_ACCESS_LOG", "off", 1);
    setenv("SLUICE_CLIENT_MAX_BODY_SIZE", "10m", 1);
    setenv("SLUICE_TRUSTED_IPS", "", 1);
    setenv("SLUICE_STATUS_LISTEN", "off", 1);
    setenv("SLUICE_KEEPALIVE_TIMEOUT", " 30s ", 1);
    setenv("SLUICE_SOMETHING_ELSE", "ignored", 1); /* not a node key: not ours */

    /* The environment wins over the file... */
    struct sl_config *cfg = load_ok(V3 "gateway:\n  proxy_listen: [0.0.0.0:8000]\n"
                                       "  worker_processes: 8\n  access_log: on\n"
                                       "  trusted_ips: [10.0.0.0/8]\n");
    const struct sl_node_config *n = &cfg->node;
    ck_assert_uint_eq(n->n_proxy_listen, 2);
    ck_assert_str_eq(n->proxy_listen[0].host, "127.0.0.1");
    ck_assert_uint_eq(n->proxy_listen[0].port, 9000);
    ck_assert(!n->proxy_listen[0].ssl);
    ck_assert_uint_eq(n->proxy_listen[1].port, 9443);
    ck_assert(n->proxy_listen[1].ssl);
    ck_assert_int_eq(n->worker_processes, 1);
    ck_assert(!n->access_log);
    ck_assert_uint_eq(n->client_max_body_size, 10u << 20);
    ck_assert_uint_eq(n->n_trusted_ips, 0);
    ck_assert_uint_eq(n->status_listen.port, 0);
    ck_assert_uint_eq(n->keepalive_timeout_ms, 30000);
    sl_config_unref(cfg);

    /* ... and applies without a node block too. */
    cfg = load_ok(V3);
    ck_assert_uint_eq(cfg->node.n_proxy_listen, 2);
    ck_assert_int_eq(cfg->node.worker_processes, 1);
    sl_config_unref(cfg);
    clear_env(); /* in case Check runs without fork (CK_FORK=no) */
}
END_TEST

static const struct env_case {
    const char *var, *value, *error;
} env_cases[] = {
    {"SLUICE_WORKER_PROCESSES", "x",
     "env:SLUICE_WORKER_PROCESSES: invalid value 'x': expected 'auto' or an integer between 1 "
     "and 1024"},
    {"SLUICE_PROXY_LISTEN", "127.0.0.1:9000, nowhere",
     "env:SLUICE_PROXY_LISTEN: invalid value 'nowhere': expected host:port"},
    {"SLUICE_PROXY_LISTEN", "", "env:SLUICE_PROXY_LISTEN: at least one address is needed"},
    {"SLUICE_ACCESS_LOG", "sometimes",
     "env:SLUICE_ACCESS_LOG: invalid value 'sometimes': expected on, off, true or false"},
    {"SLUICE_MAX_HEADERS", "100000",
     "env:SLUICE_MAX_HEADERS: invalid value '100000': out of range (1..10000)"},
    {"SLUICE_MAX_HEADER_BYTES", "100",
     "env:SLUICE_MAX_HEADER_BYTES: 100 is less than max_request_line (8192)"},
    {"SLUICE_TRUSTED_IPS", "1.2.3.4/40",
     "env:SLUICE_TRUSTED_IPS: invalid value '1.2.3.4/40': invalid prefix length"},
    {"SLUICE_LOG_LEVEL", "crit",
     "env:SLUICE_LOG_LEVEL: invalid value 'crit': expected debug, info, notice, warn or error"},
    {"SLUICE_STATUS_LISTEN", "0.0.0.0:8000",
     "env:SLUICE_STATUS_LISTEN: address 0.0.0.0:8000 is used twice"},
    {"SLUICE_PROXY_LISTEN", "0.0.0.0:80, 127.0.0.1:80",
     "env:SLUICE_PROXY_LISTEN: address 127.0.0.1:80 overlaps 0.0.0.0:80"},
};

/* With c->var set, the file must be refused with exactly c->error. */
static void check_env_case(const struct env_case *c, const char *yaml, const char *role)
{
    setenv(c->var, c->value, 1);
    struct sl_config_error err;
    struct sl_config *cfg = load_role(yaml, role, &err);
    unsetenv(c->var);
    if (cfg != NULL)
        sl_config_unref(cfg);
    ck_assert_msg(cfg == NULL, "%s=%s accepted", c->var, c->value);
    ck_assert_str_eq(err.text, c->error);
}

START_TEST(test_env_errors)
{
    check_env_case(&env_cases[_i], V3 "gateway:\n  worker_processes: 2\n", "gateway");
}
END_TEST

START_TEST(test_files)
{
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load("/nonexistent/sluice.yml", "gateway", &err);
    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(err.text, "/nonexistent/sluice.yml: cannot open: No such file or directory");

    cfg = sl_config_load(srcdir(), "gateway", &err);
    ck_assert_ptr_null(cfg);
    char want[4200];
    snprintf(want, sizeof want, "%s: not a regular file", srcdir());
    ck_assert_str_eq(err.text, want);

    /* A file from disk reports its own path. */
    const char *path = temp_file(V3 "services:\n  - name: a\n");
    cfg = sl_config_load(path, "gateway", &err);
    ck_assert_ptr_null(cfg);
    snprintf(want, sizeof want, "%s:3:5: service needs 'host' or 'url'", path);
    ck_assert_str_eq(err.text, want);
    unlink(path);

    path = temp_file("");
    cfg = sl_config_load(path, "gateway", &err);
    ck_assert_ptr_null(cfg);
    snprintf(want, sizeof want, "%s:1:1: empty file: expected a map with '_format_version'", path);
    ck_assert_str_eq(err.text, want);

    /* Too big: refused before reading (a sparse file costs no disk). */
    ck_assert_int_eq(truncate(path, 17 * 1024 * 1024), 0);
    cfg = sl_config_load(path, "gateway", &err);
    ck_assert_ptr_null(cfg);
    snprintf(want, sizeof want, "%s: file is too large (17825792 bytes; the limit is 16 MiB)",
             path);
    ck_assert_str_eq(err.text, want);
    unlink(path);

    /* Invalid UTF-8 is a reader error with an offset, not a mark. */
    path = temp_file(V3 "_comment: \"\xff\"\n");
    cfg = sl_config_load(path, "gateway", &err);
    ck_assert_ptr_null(cfg);
    snprintf(want, sizeof want, "%s:2:12: YAML syntax error: invalid leading UTF-8 octet", path);
    ck_assert_str_eq(err.text, want);
    unlink(path);
}
END_TEST

START_TEST(test_hash)
{
    struct sl_config *a = load_ok(V3);
    struct sl_config *b = load_ok(V3);
    struct sl_config *c = load_ok(V3 "# different bytes\n");
    ck_assert_int_eq(strlen(a->hash), 32);
    for (const char *h = a->hash; *h; h++)
        ck_assert((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'));
    ck_assert_str_eq(a->hash, b->hash);
    ck_assert_str_ne(a->hash, c->hash);
    /* SHA-256("_format_version: \"3.0\"\n") truncated to 128 bits */
    ck_assert_str_eq(a->hash, "7ad62cd3851cd4181245dbf739aee722");
    sl_config_unref(a);
    sl_config_unref(b);
    sl_config_unref(c);
}
END_TEST

static void hex32(const unsigned char md[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The configuration hash's own SHA-256 (sha256.h) against the FIPS 180-2
 * examples, in one call and fed in uneven pieces across block borders. */
START_TEST(test_sha256_vectors)
{
    static const struct {
        const char *msg;
        const char *digest;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    unsigned char md[32];
    char hex[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        sl_sha256(v[i].msg, strlen(v[i].msg), md);
        hex32(md, hex);
        ck_assert_str_eq(hex, v[i].digest);
    }
    struct sl_sha256 s;
    sl_sha256_init(&s);
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    size_t fed = 0, step = 1;
    while (fed < 1000000) { /* one million 'a', in pieces of 1..999 bytes */
        size_t n = step < 1000000 - fed ? step : 1000000 - fed;
        sl_sha256_update(&s, chunk, n);
        fed += n;
        step = step * 7 % 999 + 1;
    }
    sl_sha256_final(&s, md);
    hex32(md, hex);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

static void check_seed(const char *path)
{
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load(path, "gateway", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_uint_eq(cfg->n_services, 2);
    ck_assert_str_eq(cfg->services[0].name, "user-service");
    ck_assert_str_eq(cfg->services[0].host, "user-service");
    ck_assert_uint_eq(cfg->services[0].port, 8080);
    ck_assert_str_eq(cfg->services[1].name, "order-service");
    ck_assert_uint_eq(cfg->n_routes, 2);
    ck_assert_str_eq(cfg->routes[0].paths[0], "/api/v1/users");
    ck_assert_ptr_eq(cfg->routes[0].service, &cfg->services[0]);
    ck_assert_str_eq(cfg->routes[1].paths[0], "/api/v1/orders");
    ck_assert_ptr_eq(cfg->routes[1].service, &cfg->services[1]);
    ck_assert_uint_eq(cfg->n_plugins, 4);
    ck_assert_str_eq(cfg->plugins[0].name, "jwt");
    ck_assert_ptr_eq(cfg->plugins[0].service, &cfg->services[0]);
    ck_assert_str_eq(cfg->plugins[1].name, "rate-limiting");
    ck_assert_str_eq(cfg->plugins[3].name, "request-transformer");
    ck_assert_ptr_eq(cfg->plugins[3].service, &cfg->services[1]);

    /* -t: every plugin must be implemented */
    static const char *const none[] = {NULL};
    ck_assert(!sl_config_check_plugins(cfg, none, &err));
    char want[4200];
    snprintf(want, sizeof want, "%s:9:9: plugin 'jwt' is not supported yet", path);
    ck_assert_str_eq(err.text, want);

    static const char *const some[] = {"jwt", "rate-limiting", NULL};
    ck_assert(!sl_config_check_plugins(cfg, some, &err));
    snprintf(want, sizeof want, "%s:22:9: plugin 'request-transformer' is not supported yet", path);
    ck_assert_str_eq(err.text, want);

    static const char *const all[] = {"jwt", "rate-limiting", "request-transformer", NULL};
    ck_assert(sl_config_check_plugins(cfg, all, &err));
    sl_config_unref(cfg);
}

START_TEST(test_seed_copy)
{
    check_seed(data_path("seed-kong-declarative.yml"));
}
END_TEST

START_TEST(test_seed_shared)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/../shared/fixtures/seed/kong-declarative.yml", srcdir());
    if (access(path, R_OK) != 0)
        return; /* only in the development tree */
    check_seed(path);
}
END_TEST

START_TEST(test_demo_config)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/conf/sluice.yml", srcdir());
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load(path, "gateway", &err);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_uint_eq(cfg->n_services, 1);
    ck_assert_str_eq(cfg->services[0].name, "demo");
    ck_assert_str_eq(cfg->services[0].host, "127.0.0.1");
    ck_assert_uint_eq(cfg->services[0].port, 9001);
    ck_assert_uint_eq(cfg->n_routes, 3);
    ck_assert_str_eq(cfg->routes[0].paths[0], "/");
    ck_assert_str_eq(cfg->routes[1].paths[0], "/api");
    ck_assert(cfg->routes[1].strip_path);
    ck_assert_str_eq(cfg->routes[2].paths[0], "/legacy");
    ck_assert_uint_eq(cfg->n_plugins, 1);
    ck_assert_str_eq(cfg->plugins[0].name, "request-termination");
    ck_assert_ptr_eq(cfg->plugins[0].route, &cfg->routes[2]);
    ck_assert_uint_eq(cfg->node.n_proxy_listen, 1);
    ck_assert_str_eq(cfg->node.proxy_listen[0].host, "127.0.0.1");
    ck_assert_uint_eq(cfg->node.proxy_listen[0].port, 8000);
    ck_assert_str_eq(cfg->node.status_listen.host, "127.0.0.1");
    ck_assert_uint_eq(cfg->node.status_listen.port, 8100);
    sl_plugin_registry_set(sl_builtin_plugins);
    ck_assert_msg(sl_plugins_attach(cfg, &err), "%s", err.text);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_parse_listen)
{
    struct sl_listen l;
    ck_assert(sl_config_parse_listen("0.0.0.0:8000", &l));
    ck_assert_str_eq(l.host, "0.0.0.0");
    ck_assert_uint_eq(l.port, 8000);
    ck_assert(!l.ssl);
    ck_assert(sl_config_parse_listen("  [::1]:443   ssl ", &l));
    ck_assert_str_eq(l.host, "::1");
    ck_assert_uint_eq(l.port, 443);
    ck_assert(l.ssl);
    ck_assert(sl_config_parse_listen("*:1", &l));
    ck_assert_str_eq(l.host, "0.0.0.0");
    ck_assert(sl_config_parse_listen("127.0.0.1:65535 reuseport", &l));

    static const char *const bad[] = {
        "",          "8000",          "0.0.0.0",     "0.0.0.0:",         ":8000",
        "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:80x", "::1:80",           "[::1]80",
        "[::1",      "[1.2.3.4]:80",  "h.com:80",    "1.2.3.4:80 http2", "1.2.3.4:80 ssl junk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!sl_config_parse_listen(bad[i], &l), "accepted '%s'", bad[i]);
    ck_assert(!sl_config_parse_listen(NULL, &l));
}
END_TEST

static bool trusted(const struct sl_node_config *n, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return sl_config_ip_trusted(n, (const struct sockaddr *)&ss);
}

START_TEST(test_trusted_ips)
{
    struct sl_config *cfg = load_ok(V3 "gateway:\n  trusted_ips: [10.0.0.0/8, 192.168.1.7, "
                                       "\"2001:db8::/32\", 172.16.0.0/12]\n");
    const struct sl_node_config *n = &cfg->node;
    ck_assert(trusted(n, "10.1.2.3"));
    ck_assert(trusted(n, "10.255.255.255"));
    ck_assert(!trusted(n, "11.0.0.1"));
    ck_assert(trusted(n, "192.168.1.7"));
    ck_assert(!trusted(n, "192.168.1.8"));
    ck_assert(trusted(n, "172.31.0.1"));
    ck_assert(!trusted(n, "172.32.0.1"));
    ck_assert(trusted(n, "2001:db8::1"));
    ck_assert(!trusted(n, "2001:db9::1"));
    ck_assert(trusted(n, "::ffff:10.9.9.9")); /* IPv4-mapped peer on a dual-stack socket */
    ck_assert(!trusted(n, "::ffff:11.9.9.9"));
    struct sockaddr unix_addr = {.sa_family = AF_UNIX};
    ck_assert(!sl_config_ip_trusted(n, &unix_addr));
    sl_config_unref(cfg);

    cfg = load_ok(V3 "gateway:\n  trusted_ips: [0.0.0.0/0, \"::/0\"]\n");
    ck_assert(trusted(&cfg->node, "1.2.3.4"));
    ck_assert(trusted(&cfg->node, "2a00::1"));
    sl_config_unref(cfg);

    cfg = load_ok(V3 "gateway:\n  trusted_ips: [10.0.0.1/7]\n"); /* host bits ignored */
    ck_assert(trusted(&cfg->node, "11.200.0.1"));
    ck_assert(!trusted(&cfg->node, "12.0.0.1"));
    sl_config_unref(cfg);

    cfg = load_ok(V3); /* nobody is trusted by default */
    ck_assert(!trusted(&cfg->node, "127.0.0.1"));
    ck_assert(!trusted(&cfg->node, "::1"));
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_conf_values)
{
    struct sl_config *cfg = load_ok(
        V3 "plugins:\n  - name: x\n    config:\n      i: -12\n      h: 0x1f\n      o: 0o17\n"
           "      f: 1.5e3\n      inf: -.inf\n      b: false\n      n: ~\n      s: '12'\n"
           "      big: 99999999999999999999\n      seq: [1, two]\n");
    const struct sl_conf_value *c = cfg->plugins[0].config;
    ck_assert_int_eq(c->type, SL_CONF_MAP);
    ck_assert_uint_eq(c->n_items, 10);
    ck_assert_int_eq(sl_conf_get(c, "i")->integer, -12);
    ck_assert_int_eq(sl_conf_get(c, "h")->integer, 31);
    ck_assert_int_eq(sl_conf_get(c, "o")->integer, 15);
    ck_assert_int_eq(sl_conf_get(c, "f")->type, SL_CONF_FLOAT);
    ck_assert(sl_conf_get(c, "f")->number == 1500.0);
    ck_assert(isinf(sl_conf_get(c, "inf")->number));
    ck_assert_int_eq(sl_conf_get(c, "b")->type, SL_CONF_BOOL);
    ck_assert(!sl_conf_get(c, "b")->boolean);
    ck_assert_int_eq(sl_conf_get(c, "n")->type, SL_CONF_NULL);
    ck_assert_int_eq(sl_conf_get(c, "s")->type, SL_CONF_STRING);
    ck_assert(!sl_conf_get(c, "s")->plain);
    ck_assert_int_eq(sl_conf_get(c, "big")->type, SL_CONF_FLOAT);
    const struct sl_conf_value *seq = sl_conf_get(c, "seq");
    ck_assert_int_eq(seq->items[0]->type, SL_CONF_INT);
    ck_assert_int_eq(seq->items[1]->type, SL_CONF_STRING);
    ck_assert_str_eq(sl_conf_type_name(SL_CONF_SEQ), "a sequence");
    ck_assert_ptr_null(sl_conf_get(seq, "x"));
    ck_assert_ptr_null(sl_conf_get(NULL, "x"));
    sl_config_unref(cfg);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Kong entities beyond services/routes: upstreams, targets, health checks,   */
/* route headers/snis/regex, jwt_secrets, certificates                        */
/* ------------------------------------------------------------------------ */

START_TEST(test_upstreams_and_targets)
{
    struct sl_config *cfg = load_ok(
        V3 "services:\n"
           "  - name: s\n"
           "    host: orders-up\n"
           "    routes: [{paths: [/]}]\n"
           "  - name: plain\n"
           "    host: example.com\n"
           "upstreams:\n"
           "  - name: orders-up\n"
           "    algorithm: consistent-hashing\n"
           "    hash_on: header\n"
           "    hash_on_header: X-User\n"
           "    hash_fallback: ip\n"
           "    slots: 100\n"
           "    host_header: api.internal\n"
           "    healthchecks:\n"
           "      threshold: 25.5\n"
           "      active:\n"
           "        type: tcp\n"
           "        timeout: 0.25\n"
           "        concurrency: 3\n"
           "        http_path: /health\n"
           "        headers: {x-probe: [a, b]}\n"
           "        healthy: {interval: 0.2, successes: 2, http_statuses: [200]}\n"
           "        unhealthy: {interval: 5, http_failures: 2, tcp_failures: 1, timeouts: 4}\n"
           "      passive:\n"
           "        unhealthy: {http_failures: 3, http_statuses: [500, 503]}\n"
           "    targets:\n"
           "      - target: 127.0.0.1:9001\n"
           "        weight: 50\n"
           "      - target: LocalHost\n"
           "  - name: rr\n"
           "targets:\n"
           "  - target: \"[::1]:9003\"\n"
           "    upstream: orders-up\n"
           "  - target: 10.0.0.1:80\n"
           "    upstream: {name: rr}\n"
           "    weight: 0\n");
    ck_assert_uint_eq(cfg->n_upstreams, 2);
    const struct sl_upstream *u = &cfg->upstreams[0];
    ck_assert_str_eq(u->name, "orders-up");
    ck_assert_int_eq(u->algorithm, SL_LB_CONSISTENT_HASHING);
    ck_assert_int_eq(u->hash_on, SL_HASH_HEADER);
    ck_assert_str_eq(u->hash_on_header, "x-user");
    ck_assert_int_eq(u->hash_fallback, SL_HASH_IP);
    ck_assert_str_eq(u->hash_on_cookie_path, "/");
    ck_assert_uint_eq(u->slots, 100);
    ck_assert_str_eq(u->host_header, "api.internal");
    const struct sl_healthchecks *hc = &u->healthchecks;
    ck_assert(hc->threshold > 25.4 && hc->threshold < 25.6);
    ck_assert_str_eq(hc->active.type, "tcp");
    ck_assert_uint_eq(hc->active.timeout_ms, 250);
    ck_assert_uint_eq(hc->active.concurrency, 3);
    ck_assert_str_eq(hc->active.http_path, "/health");
    ck_assert_uint_eq(hc->active.n_headers, 1);
    ck_assert_uint_eq(hc->active.headers[0].n_values, 2);
    ck_assert_uint_eq(hc->active.healthy.interval_ms, 200);
    ck_assert_uint_eq(hc->active.healthy.successes, 2);
    ck_assert_uint_eq(hc->active.healthy.n_http_statuses, 1);
    ck_assert_uint_eq(hc->active.unhealthy.interval_ms, 5000);
    ck_assert_uint_eq(hc->active.unhealthy.http_failures, 2);
    ck_assert_uint_eq(hc->active.unhealthy.tcp_failures, 1);
    ck_assert_uint_eq(hc->active.unhealthy.timeouts, 4);
    ck_assert_uint_eq(hc->active.unhealthy.n_http_statuses, 8); /* Kong's default list */
    ck_assert_uint_eq(hc->passive.unhealthy.http_failures, 3);
    ck_assert_uint_eq(hc->passive.unhealthy.n_http_statuses, 2);
    ck_assert_uint_eq(hc->passive.healthy.n_http_statuses, 19);
    ck_assert_str_eq(hc->passive.type, "http");
    /* nested targets first, then the top-level ones, in file order */
    ck_assert_uint_eq(u->n_targets, 3);
    ck_assert_str_eq(u->targets[0].host, "127.0.0.1");
    ck_assert_uint_eq(u->targets[0].port, 9001);
    ck_assert_uint_eq(u->targets[0].weight, 50);
    ck_assert_str_eq(u->targets[1].host, "localhost");
    ck_assert_uint_eq(u->targets[1].port, 8000); /* Kong's default port */
    ck_assert_uint_eq(u->targets[1].weight, 100);
    ck_assert_str_eq(u->targets[2].host, "::1");
    ck_assert_uint_eq(u->targets[2].port, 9003);
    ck_assert_ptr_eq(u->targets[2].upstream, u);
    ck_assert_uint_eq(u->targets[2].index, 2);
    const struct sl_upstream *rr = &cfg->upstreams[1];
    ck_assert_int_eq(rr->algorithm, SL_LB_ROUND_ROBIN);
    ck_assert_uint_eq(rr->slots, 10000);
    ck_assert_uint_eq(rr->healthchecks.active.timeout_ms, 1000);
    ck_assert_uint_eq(rr->healthchecks.active.concurrency, 10);
    ck_assert_uint_eq(rr->healthchecks.active.healthy.interval_ms, 0);
    ck_assert_uint_eq(rr->n_targets, 1);
    ck_assert_uint_eq(rr->targets[0].weight, 0);
    /* Kong: a service whose host names an upstream is balanced over it */
    ck_assert_ptr_eq(cfg->services[0].upstream, u);
    ck_assert_ptr_null(cfg->services[1].upstream);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_route_matching_fields)
{
    struct sl_config *cfg =
        load_ok(V3 "services:\n"
                   "  - host: h\n"
                   "    routes:\n"
                   "      - paths: [\"~/users/(?<id>\\\\d+)$\", /plain]\n"
                   "        regex_priority: -3\n"
                   "        headers: {X-Version: [v1, \"~*^v2\"], X-Env: prod}\n"
                   "        snis: [API.Example.com, \"*.example.org\"]\n");
    const struct sl_route *r = &cfg->routes[0];
    ck_assert_str_eq(r->paths[0], "~/users/(?<id>\\d+)$");
    ck_assert_str_eq(r->paths[1], "/plain");
    ck_assert_int_eq(r->regex_priority, -3);
    ck_assert_uint_eq(r->n_headers, 2);
    ck_assert_str_eq(r->headers[0].name, "x-version");
    ck_assert_uint_eq(r->headers[0].n_values, 2);
    ck_assert_str_eq(r->headers[0].values[1], "~*^v2");
    ck_assert_str_eq(r->headers[1].name, "x-env");
    ck_assert_uint_eq(r->headers[1].n_values, 1);
    ck_assert_str_eq(r->headers[1].values[0], "prod");
    ck_assert_uint_eq(r->n_snis, 2);
    ck_assert_str_eq(r->snis[0], "api.example.com");
    sl_config_unref(cfg);

    /* pre-3.0 files: Kong's heuristic makes a regex of a path with regex
     * characters; it is stored the 3.0 way */
    cfg = load_ok("_format_version: \"2.1\"\nservices:\n  - host: h\n    routes:\n"
                  "      - paths: [\"/users/\\\\d+\", /plain]\n");
    ck_assert_str_eq(cfg->routes[0].paths[0], "~/users/\\d+");
    ck_assert_str_eq(cfg->routes[0].paths[1], "/plain");
    sl_config_unref(cfg);

    /* a 3.0 file keeps such a path plain, and an explicit "~" in a 1.1
     * file is not doubled */
    cfg = load_ok(V3 "services:\n  - host: h\n    routes:\n      - paths: [\"/a(b)\"]\n");
    ck_assert_str_eq(cfg->routes[0].paths[0], "/a(b)");
    sl_config_unref(cfg);
    cfg = load_ok("_format_version: \"1.1\"\nservices:\n  - host: h\n    routes:\n"
                  "      - paths: [\"~/v(\\\\d)\"]\n");
    ck_assert_str_eq(cfg->routes[0].paths[0], "~/v(\\d)");
    sl_config_unref(cfg);

    /* Kong: with https among the protocols, snis alone are enough */
    cfg = load_ok(V3 "services:\n  - host: h\n    routes:\n      - snis: [a.com]\n"
                     "      - snis: [b.com]\n        protocols: [https]\n");
    ck_assert_uint_eq(cfg->routes[0].protocols, SL_PROTO_HTTP | SL_PROTO_HTTPS);
    ck_assert_uint_eq(cfg->routes[0].n_snis, 1);
    ck_assert_uint_eq(cfg->routes[1].protocols, SL_PROTO_HTTPS);
    ck_assert_int_eq(cfg->routes[0].regex_priority, 0); /* Kong's default */
    ck_assert_uint_eq(cfg->routes[0].n_headers, 0);
    sl_config_unref(cfg);
}
END_TEST

/* a YAML block scalar holding a PEM file of tests/unit/data/tls */
static void add_pem(char *out, size_t size, const char *key, const char *file, int indent)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/unit/data/tls/%s", srcdir(), file);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s", path);
    size_t n = strlen(out);
    n += (size_t)snprintf(out + n, size - n, "%*s%s: |\n", indent, "", key);
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        n += (size_t)snprintf(out + n, size - n, "%*s  %s", indent, "", line);
    fclose(f);
    ck_assert_uint_lt(n, size);
}

START_TEST(test_certificates_and_snis)
{
    static char yaml[32768];
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  - id: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n");
    add_pem(yaml, sizeof yaml, "cert", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "rsa.key", 4);
    add_pem(yaml, sizeof yaml, "cert_alt", "ec.crt", 4);
    add_pem(yaml, sizeof yaml, "key_alt", "ec.key", 4);
    strcat(yaml, "    snis: [API.example.com, {name: \"*.example.org\"}, \"mail.example.*\"]\n"
                 "snis:\n  - name: other.example.net\n"
                 "    certificate: {id: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01}\n"
                 "ca_certificates:\n  - id: 6f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n");
    add_pem(yaml, sizeof yaml, "cert", "ec.crt", 4);
    strcat(yaml, "services:\n  - host: h\n    protocol: https\n    tls_verify: true\n"
                 "    tls_verify_depth: 3\n"
                 "    ca_certificates: [6f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01]\n");
    struct sl_config *cfg = load_ok(yaml);
    ck_assert_uint_eq(cfg->n_certificates, 1);
    ck_assert_ptr_nonnull(cfg->certificates[0].cert_alt);
    ck_assert_uint_eq(cfg->n_snis, 4);
    ck_assert_str_eq(cfg->snis[0].name, "api.example.com");
    ck_assert_str_eq(cfg->snis[1].name, "*.example.org");
    ck_assert_str_eq(cfg->snis[2].name, "mail.example.*");
    ck_assert_str_eq(cfg->snis[3].name, "other.example.net");
    ck_assert_str_eq(cfg->certificates[0].id, "5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01");
    ck_assert_ptr_nonnull(strstr(cfg->certificates[0].key, "PRIVATE KEY"));
    ck_assert_str_eq(cfg->ca_certificates[0].id, "6f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01");
    ck_assert_str_eq(cfg->services[0].ca_certificates[0], "6f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01");
    for (size_t i = 0; i < 4; i++)
        ck_assert_ptr_eq(cfg->snis[i].certificate, &cfg->certificates[0]);
    ck_assert_uint_eq(cfg->n_ca_certificates, 1);
    ck_assert(cfg->services[0].tls_verify);
    ck_assert_int_eq(cfg->services[0].tls_verify_depth, 3);
    ck_assert_uint_eq(cfg->services[0].n_ca_certificates, 1);
    sl_config_unref(cfg);
}
END_TEST

static void expect_refusal(const char *yaml, const char *want)
{
    struct sl_config_error err;
    struct sl_config *cfg = load(yaml, &err);
    if (cfg != NULL)
        sl_config_unref(cfg);
    ck_assert_msg(cfg == NULL, "accepted, expected: %s", want);
    ck_assert_msg(strstr(err.text, want) != NULL, "\n got: %s\nwant: %s", err.text, want);
}

START_TEST(test_certificate_errors)
{
    static char yaml[32768];
    /* a key that does not belong to the certificate */
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "other-rsa.key", 4);
    expect_refusal(yaml, "t.yml:24:10: key does not match cert");
    /* cert_alt of the same key type */
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "rsa.key", 4);
    add_pem(yaml, sizeof yaml, "cert_alt", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key_alt", "rsa.key", 4);
    expect_refusal(yaml, "cert_alt must be of the other key type than cert (both are RSA)");
    /* not PEM at all */
    expect_refusal(V3 "certificates:\n  - cert: nonsense\n    key: nonsense\n",
                   "t.yml:3:11: cert: not a PEM certificate");
    expect_refusal(V3 "certificates:\n  - cert: x\n",
                   "t.yml:3:5: certificate needs 'cert' and 'key'");
    /* cert_alt alone */
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "ec.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "ec.key", 4);
    strcat(yaml, "    cert_alt: x\n");
    expect_refusal(yaml, "'cert_alt' and 'key_alt' go together");
    /* SNIs */
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  - snis: [a.example.com, A.example.com]\n");
    add_pem(yaml, sizeof yaml, "cert", "ec.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "ec.key", 4);
    expect_refusal(yaml, "t.yml:3:27: duplicate SNI 'a.example.com' (first at line 3)");
    expect_refusal(V3 "snis:\n  - name: a.*.com\n    certificate: x\n",
                   "t.yml:3:11: invalid SNI 'a.*.com': the wildcard must be the leftmost or the "
                   "rightmost label");
    expect_refusal(
        V3 "snis:\n  - name: a.com\n    certificate: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n",
        "t.yml:4:18: sni refers to unknown certificate");
    expect_refusal(V3 "snis:\n  - name: a.com\n", "t.yml:3:5: sni needs a 'certificate'");
    expect_refusal(V3 "ca_certificates:\n  - cert: nope\n",
                   "t.yml:3:11: cert: not a PEM certificate");
    snprintf(yaml, sizeof yaml, V3 "ca_certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "leaf.crt", 4);
    expect_refusal(yaml, "t.yml:4:11: cert: certificate does not appear to be a CA because it is "
                         "missing the \"CA\" basic constraint");
    expect_refusal(V3 "ca_certificates:\n  - id: x\n",
                   "t.yml:3:9: invalid id 'x': expected a UUID");
    /* a service refers to CA certificates by id only */
    snprintf(yaml, sizeof yaml,
             V3 "ca_certificates:\n  - id: 6f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n");
    add_pem(yaml, sizeof yaml, "cert", "ec.crt", 4);
    strcat(yaml, "services:\n  - host: h\n    tls_verify_depth: 65\n");
    expect_refusal(yaml, "value 65 is out of range (0..64)");
    /* an SNI given twice, nested and top level */
    snprintf(yaml, sizeof yaml,
             V3 "certificates:\n  - id: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n    snis: [a.com]\n");
    add_pem(yaml, sizeof yaml, "cert", "ec.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "ec.key", 4);
    strcat(yaml, "snis:\n  - name: A.com\n    certificate: 5f3c1f38-0b43-4c55-9d3a-6e1e1d2a9b01\n");
    expect_refusal(yaml, "duplicate SNI 'a.com' (first at line 4)");
    /* key_alt alone, and a cert_alt whose key is not its own */
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "rsa.key", 4);
    add_pem(yaml, sizeof yaml, "key_alt", "ec.key", 4);
    expect_refusal(yaml, "'cert_alt' and 'key_alt' go together");
    snprintf(yaml, sizeof yaml, V3 "certificates:\n  -\n");
    add_pem(yaml, sizeof yaml, "cert", "rsa.crt", 4);
    add_pem(yaml, sizeof yaml, "key", "rsa.key", 4);
    add_pem(yaml, sizeof yaml, "cert_alt", "ec.crt", 4);
    add_pem(yaml, sizeof yaml, "key_alt", "other-rsa.key", 4);
    expect_refusal(yaml, "key_alt does not match cert_alt");
    expect_refusal(V3 "snis:\n  - name: \"*.a.*\"\n    certificate: x\n",
                   "t.yml:3:11: invalid SNI '*.a.*': the wildcard must be the leftmost or the "
                   "rightmost label");
}
END_TEST

START_TEST(test_jwt_secrets)
{
    static char yaml[16384];
    snprintf(yaml, sizeof yaml,
             V3 "consumers:\n"
                "  - username: alice\n"
                "    jwt_secrets:\n"
                "      - key: alice-iss\n"
                "        secret: s3cret\n"
                "      - algorithm: HS512\n"
                "      - key: alice-rs\n"
                "        algorithm: RS256\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "rsa.pub", 8);
    strcat(yaml, "  - username: bob\n"
                 "jwt_secrets:\n"
                 "  - key: bob-es\n"
                 "    consumer: bob\n"
                 "    algorithm: ES256\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "ec.pub", 4);
    struct sl_config *cfg = load_ok(yaml);
    ck_assert_uint_eq(cfg->n_jwt_secrets, 4);
    const struct sl_jwt_secret *j = cfg->jwt_secrets;
    ck_assert_str_eq(j[0].key, "alice-iss");
    ck_assert_str_eq(j[0].secret, "s3cret");
    ck_assert_str_eq(j[0].algorithm, "HS256"); /* Kong's default */
    ck_assert_ptr_eq(j[0].consumer, &cfg->consumers[0]);
    /* Kong makes up key and secret when absent */
    ck_assert_uint_eq(strlen(j[1].key), 32);
    ck_assert_uint_eq(strlen(j[1].secret), 32);
    ck_assert_str_ne(j[1].key, j[1].secret);
    ck_assert_str_eq(j[1].algorithm, "HS512");
    ck_assert_ptr_nonnull(j[2].rsa_public_key);
    ck_assert_str_eq(j[3].key, "bob-es");
    ck_assert_ptr_eq(j[3].consumer, &cfg->consumers[1]);
    sl_config_unref(cfg);

    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: none\n",
                   "t.yml:5:20: invalid algorithm 'none': expected one of HS256");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: hs256\n",
                   "t.yml:5:20: invalid algorithm 'hs256'");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - secret: \"\"\n",
                   "t.yml:5:17: must not be empty");
    /* an RS/ES credential without a key: its keys come from a JWKS URL */
    cfg = load_ok(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: RS256\n");
    ck_assert_ptr_null(cfg->jwt_secrets[0].rsa_public_key);
    sl_config_unref(cfg);
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: RS256\n"
                      "        rsa_public_key: nope\n",
                   "t.yml:6:25: rsa_public_key: not a PEM public key");
    snprintf(yaml, sizeof yaml,
             V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: ES384\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "rsa.pub", 8);
    expect_refusal(yaml, "rsa_public_key: a RSA key cannot verify ES384");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n"
                      "      - key: k\n",
                   "t.yml:6:14: duplicate jwt_secret key 'k' (first at line 5)");
    expect_refusal(V3 "jwt_secrets:\n  - key: k\n", "t.yml:3:5: jwt_secret needs a 'consumer'");
    expect_refusal(V3 "jwt_secrets:\n  - key: k\n    consumer: nobody\n",
                   "t.yml:4:15: jwt_secret refers to unknown consumer 'nobody'");
    /* RFC 7518 section 3.4: each ES algorithm has its curve */
    snprintf(yaml, sizeof yaml,
             V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: ES384\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "ec384.pub", 8);
    cfg = load_ok(yaml);
    ck_assert_str_eq(cfg->jwt_secrets[0].algorithm, "ES384");
    ck_assert_ptr_null(cfg->jwt_secrets[0].secret); /* only HS* get a made-up secret */
    sl_config_unref(cfg);
    snprintf(yaml, sizeof yaml,
             V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: ES512\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "ec.pub", 8);
    expect_refusal(yaml, "t.yml:6:25: rsa_public_key: ES512 needs a key on curve secp521r1, got "
                         "prime256v1");
    snprintf(yaml, sizeof yaml,
             V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: RS512\n");
    add_pem(yaml, sizeof yaml, "rsa_public_key", "ec.pub", 8);
    expect_refusal(yaml, "t.yml:6:25: rsa_public_key: a ECDSA key cannot verify RS512");
    /* the secret and key are random: two loads differ */
    const char *gen = V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - {}\n";
    struct sl_config *c1 = load_ok(gen), *c2 = load_ok(gen);
    ck_assert_str_ne(c1->jwt_secrets[0].key, c2->jwt_secrets[0].key);
    ck_assert_str_ne(c1->jwt_secrets[0].secret, c2->jwt_secrets[0].secret);
    ck_assert_uint_eq(strspn(c1->jwt_secrets[0].secret, "0123456789abcdef"), 32);
    sl_config_unref(c1);
    sl_config_unref(c2);
    /* top-level jwt_secrets refer to a consumer by username or id */
    cfg = load_ok(V3 "consumers:\n  - custom_id: c1\n    id: 0b9e7a0e-4c9a-4d0e-8c43-2b8b8f6f0a11\n"
                     "jwt_secrets:\n  - key: k\n    secret: s\n    algorithm: HS384\n"
                     "    consumer: {id: 0b9e7a0e-4c9a-4d0e-8c43-2b8b8f6f0a11}\n    tags: [t]\n");
    ck_assert_ptr_eq(cfg->jwt_secrets[0].consumer, &cfg->consumers[0]);
    ck_assert_str_eq(cfg->jwt_secrets[0].algorithm, "HS384");
    sl_config_unref(cfg);
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - algorithm: PS256\n",
                   "t.yml:5:20: algorithm 'PS256' is not supported yet");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n"
                      "        consumer: a\n",
                   "t.yml:6:9: conflicting values: this jwt_secret is nested under a consumer "
                   "already");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n"
                      "        colour: red\n",
                   "t.yml:6:9: unknown field 'colour'");
    expect_refusal(V3 "consumers:\n  - username: a\n    jwt_secrets:\n      - key: k\n"
                      "  - username: b\njwt_secrets:\n  - key: k\n    consumer: b\n",
                   "t.yml:8:10: duplicate jwt_secret key 'k' (first at line 5)");
}
END_TEST

/* Plugins: every nesting and reference gives the right scope; Kong's
 * unique (name, route, service, consumer) and its no_consumer plugins. */
START_TEST(test_plugin_scopes)
{
    struct sl_config *cfg =
        load_ok(V3 "services:\n"
                   "  - name: s\n"
                   "    host: h\n"
                   "    plugins:\n"
                   "      - name: cors\n" /* 0: service */
                   "    routes:\n"
                   "      - name: r\n"
                   "        paths: [/]\n"
                   "        plugins:\n"
                   "          - name: cors\n" /* 1: route only (Kong) */
                   "consumers:\n"
                   "  - username: u\n"
                   "    plugins:\n"
                   "      - name: rate-limiting\n"       /* 2: consumer */
                   "      - name: request-transformer\n" /* 3: consumer + route */
                   "        route: r\n"
                   "plugins:\n"
                   "  - name: rate-limiting\n" /* 4: route + service + consumer */
                   "    route: {name: r}\n"
                   "    service: s\n"
                   "    consumer: u\n"
                   "  - name: rate-limiting\n" /* 5: global */
                   "  - name: rate-limiting\n" /* 6: service */
                   "    service: s\n");
    const struct sl_plugin_conf *p = cfg->plugins;
    const struct sl_service *s = &cfg->services[0];
    const struct sl_route *r = &cfg->routes[0];
    const struct sl_consumer *u = &cfg->consumers[0];
    ck_assert_uint_eq(cfg->n_plugins, 7);
    ck_assert(p[0].service == s && p[0].route == NULL && p[0].consumer == NULL);
    ck_assert(p[1].service == NULL && p[1].route == r && p[1].consumer == NULL);
    ck_assert(p[2].service == NULL && p[2].route == NULL && p[2].consumer == u);
    ck_assert(p[3].service == NULL && p[3].route == r && p[3].consumer == u);
    ck_assert(p[4].service == s && p[4].route == r && p[4].consumer == u);
    ck_assert(p[5].service == NULL && p[5].route == NULL && p[5].consumer == NULL);
    ck_assert(p[6].service == s && p[6].route == NULL && p[6].consumer == NULL);
    sl_config_unref(cfg);

    /* the same scope reached by nesting and by a top-level reference */
    expect_refusal(V3 "services:\n  - name: s\n    host: h\n    routes:\n      - name: r\n"
                      "        paths: [/]\n        plugins:\n          - name: cors\n"
                      "plugins:\n  - name: cors\n    route: r\n",
                   "t.yml:11:5: plugin 'cors' is configured twice for the same scope (first at "
                   "line 9)");
    expect_refusal(V3 "consumers:\n  - username: u\n    plugins:\n      - name: rate-limiting\n"
                      "plugins:\n  - name: rate-limiting\n    consumer: u\n",
                   "t.yml:7:5: plugin 'rate-limiting' is configured twice for the same scope "
                   "(first at line 5)");
    /* Kong's no_consumer plugins: at the reference, or at the nested plugin */
    expect_refusal(V3 "consumers:\n  - username: u\nplugins:\n  - name: jwt\n    consumer: u\n",
                   "t.yml:6:15: plugin 'jwt' cannot be configured on a consumer (Kong: "
                   "'consumer: value must be null')");
    expect_refusal(V3 "consumers:\n  - username: u\n    plugins:\n      - name: key-auth\n",
                   "t.yml:5:9: plugin 'key-auth' cannot be configured on a consumer");
    expect_refusal(V3 "consumers:\n  - username: u\n    plugins:\n      - name: jwt\n"
                      "        consumer: u\n",
                   "t.yml:6:9: conflicting values: this plugin is nested under a consumer "
                   "already");
    expect_refusal(V3 "plugins:\n  - name: cors\n    consumer: nobody\n",
                   "t.yml:4:15: plugin refers to unknown consumer 'nobody'");
}
END_TEST

/* admin_listen: off by default, one address, checked against the others. */
START_TEST(test_admin_listen)
{
    clear_env();
    struct sl_config *cfg = load_ok(V3);
    ck_assert_uint_eq(cfg->node.admin_listen.port, 0);
    sl_config_unref(cfg);
    cfg = load_ok(V3 "gateway:\n  admin_listen: 127.0.0.1:8001\n");
    ck_assert_str_eq(cfg->node.admin_listen.host, "127.0.0.1");
    ck_assert_uint_eq(cfg->node.admin_listen.port, 8001);
    sl_config_unref(cfg);
    cfg = load_ok(V3 "gateway:\n  admin_listen: \"[::1]:8444\"\n");
    ck_assert_str_eq(cfg->node.admin_listen.host, "::1");
    ck_assert_uint_eq(cfg->node.admin_listen.port, 8444);
    sl_config_unref(cfg);
    cfg = load_ok(V3 "gateway:\n  admin_listen: \"off\"\n");
    ck_assert_uint_eq(cfg->node.admin_listen.port, 0);
    sl_config_unref(cfg);
    /* SLUICE_ADMIN_LISTEN wins over the file */
    setenv("SLUICE_ADMIN_LISTEN", "127.0.0.1:9001", 1);
    cfg = load_ok(V3 "gateway:\n  admin_listen: \"off\"\n");
    ck_assert_uint_eq(cfg->node.admin_listen.port, 9001);
    sl_config_unref(cfg);
    setenv("SLUICE_ADMIN_LISTEN", "127.0.0.1:8000", 1);
    struct sl_config_error err;
    ck_assert_ptr_null(load(V3, &err));
    ck_assert_str_eq(err.text, "env:SLUICE_ADMIN_LISTEN: address 127.0.0.1:8000 "
                               "overlaps 0.0.0.0:8000");
    unsetenv("SLUICE_ADMIN_LISTEN");
    expect_refusal(V3 "gateway:\n  proxy_listen: \"[::]:8001\"\n  admin_listen: \"[::1]:8001\"\n",
                   "t.yml:4:17: admin_listen: address [::1]:8001 overlaps [::]:8001");
    expect_refusal(V3 "gateway:\n  admin_listen: [127.0.0.1:1, 127.0.0.1:2]\n",
                   "t.yml:3:17: admin_listen: ");
}
END_TEST

START_TEST(test_upstream_errors)
{
    expect_refusal(V3 "upstreams:\n  - algorithm: round-robin\n",
                   "t.yml:3:5: upstream needs a 'name'");
    expect_refusal(V3 "upstreams:\n  - name: \"a b\"\n",
                   "t.yml:3:11: invalid upstream name 'a b': it must be a valid hostname");
    expect_refusal(V3 "upstreams:\n  - name: 10.0.0.1\n",
                   "t.yml:3:11: invalid upstream name '10.0.0.1': no ip addresses allowed");
    expect_refusal(V3 "upstreams:\n  - name: u\n    use_srv_name: true\n",
                   "t.yml:4:5: upstream field 'use_srv_name' is not supported yet");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: cookie\n    hash_on_cookie: \"a;b\"\n",
                   "t.yml:5:21: invalid cookie name 'a;b'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: ip\n    hash_fallback: cookie\n",
                   "t.yml:4:14: hashing on a cookie needs 'hash_on_cookie'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: none\n    hash_fallback: ip\n",
                   "t.yml:5:20: hash_fallback must be 'none' when hash_on is 'none'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: query_arg\n",
                   "t.yml:4:14: hash_on 'query_arg' needs 'hash_on_query_arg'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: ip\n    hash_fallback: uri_capture\n",
                   "t.yml:5:20: hash_fallback 'uri_capture' needs 'hash_fallback_uri_capture'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: header\n    hash_on_header: x\n"
                      "    hash_fallback: header\n    hash_fallback_header: X\n",
                   "t.yml:6:20: hash_fallback must differ from hash_on");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      active:\n"
                      "        timeout: 70000\n",
                   "t.yml:6:18: value 70000 is out of range (0..65535 seconds)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      passive:\n"
                      "        unhealthy: {tcp_failures: 256}\n",
                   "t.yml:6:35: value 256 is out of range (0..255)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      threshold: 101\n",
                   "t.yml:5:18: expected a percentage between 0 and 100");
    expect_refusal(V3 "upstreams:\n  - name: u\n  - name: u\n",
                   "t.yml:4:11: duplicate upstream name 'u' (first at line 3)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    algorithm: random\n",
                   "t.yml:4:16: invalid algorithm 'random': expected round-robin");
    expect_refusal(V3 "upstreams:\n  - name: u\n    slots: 5\n",
                   "t.yml:4:12: value 5 is out of range (10..65536)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: header\n",
                   "t.yml:4:14: hash_on 'header' needs 'hash_on_header'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: cookie\n    hash_on_cookie: c\n"
                      "    hash_fallback: ip\n",
                   "t.yml:6:20: hash_fallback must be 'none' when hash_on is 'cookie'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: ip\n    hash_fallback: ip\n",
                   "t.yml:5:20: hash_fallback must differ from hash_on");
    expect_refusal(V3 "upstreams:\n  - name: u\n    hash_on: hat\n",
                   "t.yml:4:14: invalid value 'hat': expected none, consumer");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      active:\n"
                      "        healthy: {interval: -1}\n",
                   "t.yml:6:29: value -1 is out of range (0..65535 seconds)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      passive:\n"
                      "        healthy: {interval: 1}\n",
                   "t.yml:6:19: unknown field 'interval'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      active:\n"
                      "        unhealthy: {http_statuses: [99]}\n",
                   "t.yml:6:37: value 99 is out of range (100..999)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      active:\n"
                      "        http_path: health\n",
                   "t.yml:6:20: invalid http_path 'health': should start with /");
    expect_refusal(V3 "upstreams:\n  - name: u\n    healthchecks:\n      active:\n"
                      "        type: grpc\n",
                   "t.yml:6:15: health check type 'grpc' is not supported yet");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - target: \"a b:80\"\n",
                   "t.yml:5:17: invalid target 'a b:80': not a valid hostname or ip address");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - target: \"h:99999\"\n",
                   "t.yml:5:17: invalid target 'h:99999': bad port");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - target: h:80\n"
                      "        weight: 70000\n",
                   "t.yml:6:17: value 70000 is out of range (0..65535)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - target: h:80\n"
                      "      - target: H:80\n",
                   "t.yml:6:17: target 'h:80' is already in upstream 'u' (line 5)");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - weight: 1\n",
                   "t.yml:5:9: target needs a 'target' (\"host:port\")");
    expect_refusal(V3 "targets:\n  - target: h:80\n", "t.yml:3:5: target needs an 'upstream'");
    expect_refusal(V3 "targets:\n  - target: h:80\n    upstream: nope\n",
                   "t.yml:4:15: target refers to unknown upstream 'nope'");
    expect_refusal(V3 "upstreams:\n  - name: u\n    targets:\n      - target: h:80\n"
                      "        upstream: u\n",
                   "t.yml:6:9: conflicting values: this target is nested under an upstream "
                   "already");
}
END_TEST

/* Kong's hash_on / hash_fallback pairs that are allowed, and their companions. */
START_TEST(test_upstream_hashing)
{
    struct sl_config *cfg = load_ok(V3 "upstreams:\n"
                                       "  - name: a\n"
                                       "    hash_on: consumer\n"
                                       "    hash_fallback: cookie\n"
                                       "    hash_on_cookie: sid\n"
                                       "    hash_on_cookie_path: /app\n"
                                       "  - name: b\n"
                                       "    hash_on: query_arg\n"
                                       "    hash_on_query_arg: user\n"
                                       "    hash_fallback: query_arg\n"
                                       "    hash_fallback_query_arg: session\n"
                                       "  - name: c\n"
                                       "    hash_on: uri_capture\n"
                                       "    hash_on_uri_capture: id\n"
                                       "    hash_fallback: uri_capture\n"
                                       "    hash_fallback_uri_capture: name\n"
                                       "  - name: d\n"
                                       "    hash_on: header\n"
                                       "    hash_on_header: X-A\n"
                                       "    hash_fallback: header\n"
                                       "    hash_fallback_header: X-B\n"
                                       "    use_srv_name: false\n"
                                       "  - name: e\n"
                                       "    hash_on: path\n"
                                       "    hash_fallback: ip\n");
    const struct sl_upstream *u = cfg->upstreams;
    ck_assert_int_eq(u[0].hash_on, SL_HASH_CONSUMER);
    ck_assert_int_eq(u[0].hash_fallback, SL_HASH_COOKIE);
    ck_assert_str_eq(u[0].hash_on_cookie, "sid");
    ck_assert_str_eq(u[0].hash_on_cookie_path, "/app");
    ck_assert_int_eq(u[1].hash_on, SL_HASH_QUERY_ARG);
    ck_assert_str_eq(u[1].hash_on_query_arg, "user");
    ck_assert_int_eq(u[1].hash_fallback, SL_HASH_QUERY_ARG);
    ck_assert_str_eq(u[1].hash_fallback_query_arg, "session");
    ck_assert_int_eq(u[2].hash_on, SL_HASH_URI_CAPTURE);
    ck_assert_str_eq(u[2].hash_on_uri_capture, "id");
    ck_assert_str_eq(u[2].hash_fallback_uri_capture, "name");
    ck_assert_str_eq(u[3].hash_on_header, "x-a");
    ck_assert_str_eq(u[3].hash_fallback_header, "x-b");
    ck_assert_int_eq(u[4].hash_on, SL_HASH_PATH);
    ck_assert_int_eq(u[4].hash_fallback, SL_HASH_IP);
    ck_assert_int_eq(u[4].algorithm, SL_LB_ROUND_ROBIN);
    sl_config_unref(cfg);
}
END_TEST

/* Many entities: references resolve through the index, not a scan. */
START_TEST(test_many_entities)
{
    enum { N = 3000 };
    size_t cap = (size_t)N * 160 + 256;
    char *yaml = malloc(cap);
    ck_assert_ptr_nonnull(yaml);
    size_t len = (size_t)snprintf(yaml, cap, V3 "services:\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(yaml + len, cap - len, "  - name: s%d\n    host: h%d\n", i, i);
    len += (size_t)snprintf(yaml + len, cap - len, "routes:\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(yaml + len, cap - len,
                                "  - name: r%d\n    service: s%d\n    paths: [/p%d]\n", i,
                                N - 1 - i, i);
    struct sl_config_error err;
    struct sl_config *cfg = sl_config_load_buffer(yaml, len, "many.yml", "gateway", &err);
    free(yaml);
    ck_assert_msg(cfg != NULL, "%s", err.text);
    ck_assert_uint_eq(cfg->n_routes, N);
    ck_assert_ptr_eq(cfg->routes[0].service, &cfg->services[N - 1]);
    ck_assert_ptr_eq(cfg->routes[N - 1].service, &cfg->services[0]);
    sl_config_unref(cfg);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Resilience blocks of a service                                             */
/* ------------------------------------------------------------------------ */

static void assert_breakers(const struct sl_circuit_breakers *cb, unsigned connections,
                            unsigned pending, unsigned requests, unsigned retries)
{
    ck_assert(cb->set);
    ck_assert_uint_eq(cb->max_connections, connections);
    ck_assert_uint_eq(cb->max_pending_requests, pending);
    ck_assert_uint_eq(cb->max_requests, requests);
    ck_assert_uint_eq(cb->max_retries, retries);
}

/* Absent: not set, and nothing else either; {}: set, with every default. */
START_TEST(test_resilience_defaults)
{
    struct sl_config *cfg =
        load_ok(V3 "services:\n  - host: a\n  - host: b\n    retry_policy: null\n"
                   "    circuit_breakers: ~\n    outlier_detection:\n"
                   "  - host: c\n    retry_policy: {}\n    circuit_breakers: {}\n"
                   "    outlier_detection: {}\n");
    static const struct sl_retry_policy no_retry;
    static const struct sl_circuit_breakers no_breakers;
    static const struct sl_outlier_detection no_outliers;
    for (size_t i = 0; i < 2; i++) {
        const struct sl_service *s = &cfg->services[i];
        ck_assert_msg(memcmp(&s->retry_policy, &no_retry, sizeof no_retry) == 0, "service %zu", i);
        ck_assert(memcmp(&s->circuit_breakers, &no_breakers, sizeof no_breakers) == 0);
        ck_assert(memcmp(&s->outlier_detection, &no_outliers, sizeof no_outliers) == 0);
        ck_assert_uint_eq(s->retries, 5); /* Kong's, kept when there is no retry_policy */
    }
    const struct sl_service *s = &cfg->services[2];
    const struct sl_retry_policy *rp = &s->retry_policy;
    ck_assert(rp->set);
    ck_assert_uint_eq(rp->retry_on,
                      SL_RETRY_CONNECT_FAILURE | SL_RETRY_RESET | SL_RETRY_GATEWAY_ERROR);
    ck_assert_uint_eq(rp->n_retriable_status_codes, 0);
    ck_assert_uint_eq(rp->num_retries, 2);
    ck_assert_uint_eq(rp->per_try_timeout_ms, 0);
    ck_assert_uint_eq(rp->timeout_ms, 0);
    ck_assert_uint_eq(rp->backoff_base_interval_ms, 25);
    ck_assert_uint_eq(rp->backoff_max_interval_ms, 250);
    ck_assert_double_eq(rp->budget_ratio, 0.2);
    ck_assert_uint_eq(rp->budget_min_retries_per_second, 10);
    ck_assert_uint_eq(rp->budget_ttl_ms, 10000);
    ck_assert_uint_eq(rp->max_body_bytes, 65536);
    ck_assert_int_eq(rp->line, 9);
    ck_assert_int_eq(rp->column, 19);
    const struct sl_circuit_breakers *cb = &s->circuit_breakers;
    assert_breakers(cb, 1024, 1024, 1024, 3);
    ck_assert_int_eq(cb->line, 10);
    ck_assert_int_eq(cb->column, 23);
    const struct sl_outlier_detection *od = &s->outlier_detection;
    ck_assert(od->set);
    ck_assert_uint_eq(od->consecutive_5xx, 5);
    ck_assert_uint_eq(od->consecutive_gateway_failure, 5);
    ck_assert_uint_eq(od->interval_ms, 10000);
    ck_assert_uint_eq(od->base_ejection_time_ms, 30000);
    ck_assert_uint_eq(od->max_ejection_time_ms, 300000);
    ck_assert_uint_eq(od->max_ejection_percent, 10);
    ck_assert_int_eq(od->line, 11);
    ck_assert_int_eq(od->column, 24);
    sl_config_unref(cfg);
}
END_TEST

/* Every key set, with values other than the defaults. */
START_TEST(test_resilience_values)
{
    struct sl_config *cfg = load_ok(
        V3 "services:\n"
           "  - name: user-service\n"
           "    host: user-service.upstream\n"
           "    retries: 7\n"
           "    retry_policy:\n"
           "      retry_on: [connect-failure, reset, gateway-error, 5xx, retriable-4xx,\n"
           "                 retriable-status-codes, 5xx]\n"
           "      retriable_status_codes: [503, 429, 100, 599]\n"
           "      num_retries: 100\n"
           "      per_try_timeout: 2147483646\n"
           "      timeout: 3000\n"
           "      backoff: {base_interval: 10, max_interval: 10}\n"
           "      budget: {ratio: 1, min_retries_per_second: 1000000, ttl: 1}\n"
           "      max_body_bytes: 1073741824\n"
           "    circuit_breakers: {max_connections: 1, max_pending_requests: 1000000,\n"
           "                       max_requests: 7, max_retries: 0}\n"
           "    outlier_detection:\n"
           "      consecutive_5xx: 0\n"
           "      consecutive_gateway_failure: 1000000\n"
           "      interval: 1\n"
           "      base_ejection_time: 500\n"
           "      max_ejection_time: 500\n"
           "      max_ejection_percent: 100\n"
           "  - host: b\n"
           "    retry_policy:\n"
           "      retry_on: [5xx]\n"
           "      backoff: {base_interval: 40}\n"
           "      budget: {ratio: 0}\n"
           "      max_body_bytes: 0\n"
           "    outlier_detection: {max_ejection_percent: 0, consecutive_gateway_failure: 0}\n"
           "  - host: c\n"
           "    retry_policy:\n"
           "      backoff: {base_interval: 300000000}\n"
           "      budget: {ratio: 0.5}\n");
    const struct sl_retry_policy *rp = &cfg->services[0].retry_policy;
    ck_assert_uint_eq(cfg->services[0].retries, 7); /* kept as written, replaced at run time */
    ck_assert_uint_eq(rp->retry_on, SL_RETRY_CONNECT_FAILURE | SL_RETRY_RESET |
                                        SL_RETRY_GATEWAY_ERROR | SL_RETRY_5XX |
                                        SL_RETRY_RETRIABLE_4XX | SL_RETRY_STATUS_CODES);
    ck_assert_uint_eq(rp->n_retriable_status_codes, 4);
    ck_assert_uint_eq(rp->retriable_status_codes[0], 503);
    ck_assert_uint_eq(rp->retriable_status_codes[1], 429);
    ck_assert_uint_eq(rp->retriable_status_codes[2], 100);
    ck_assert_uint_eq(rp->retriable_status_codes[3], 599);
    ck_assert_uint_eq(rp->num_retries, 100);
    ck_assert_uint_eq(rp->per_try_timeout_ms, 2147483646u);
    ck_assert_uint_eq(rp->timeout_ms, 3000);
    ck_assert_uint_eq(rp->backoff_base_interval_ms, 10);
    ck_assert_uint_eq(rp->backoff_max_interval_ms, 10);
    ck_assert_double_eq(rp->budget_ratio, 1.0);
    ck_assert_uint_eq(rp->budget_min_retries_per_second, 1000000);
    ck_assert_uint_eq(rp->budget_ttl_ms, 1);
    ck_assert_uint_eq(rp->max_body_bytes, 1u << 30);
    ck_assert_int_eq(rp->line, 7);
    ck_assert_int_eq(rp->column, 7);
    assert_breakers(&cfg->services[0].circuit_breakers, 1, 1000000, 7, 0);
    const struct sl_outlier_detection *od = &cfg->services[0].outlier_detection;
    ck_assert_uint_eq(od->consecutive_5xx, 0);
    ck_assert_uint_eq(od->consecutive_gateway_failure, 1000000);
    ck_assert_uint_eq(od->interval_ms, 1);
    ck_assert_uint_eq(od->base_ejection_time_ms, 500);
    ck_assert_uint_eq(od->max_ejection_time_ms, 500);
    ck_assert_uint_eq(od->max_ejection_percent, 100);

    rp = &cfg->services[1].retry_policy;
    ck_assert_uint_eq(rp->retry_on, SL_RETRY_5XX);
    ck_assert_uint_eq(rp->backoff_base_interval_ms, 40);
    ck_assert_uint_eq(rp->backoff_max_interval_ms, 400); /* 10 x base */
    ck_assert_double_eq(rp->budget_ratio, 0.0);
    ck_assert_uint_eq(rp->budget_min_retries_per_second, 10); /* the rest of budget: defaults */
    ck_assert_uint_eq(rp->budget_ttl_ms, 10000);
    ck_assert_uint_eq(rp->max_body_bytes, 0);
    ck_assert(!cfg->services[1].circuit_breakers.set);
    od = &cfg->services[1].outlier_detection;
    ck_assert_uint_eq(od->max_ejection_percent, 0);
    ck_assert_uint_eq(od->consecutive_gateway_failure, 0);
    ck_assert_uint_eq(od->consecutive_5xx, 5);

    rp = &cfg->services[2].retry_policy;
    ck_assert_uint_eq(rp->backoff_base_interval_ms, 300000000u);
    ck_assert_uint_eq(rp->backoff_max_interval_ms, 2147483646u); /* 10 x base, capped */
    ck_assert_double_eq(rp->budget_ratio, 0.5);
    sl_config_unref(cfg);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The sidecar role                                                           */
/* ------------------------------------------------------------------------ */

#define SIDECAR V3 "sidecar:\n  service_name: app\n"

static struct sl_config *load_sidecar_ok(const char *yaml)
{
    struct sl_config_error err;
    struct sl_config *cfg = load_role(yaml, "sidecar", &err);
    ck_assert_msg(cfg != NULL, "unexpected error: %s", err.text);
    return cfg;
}

static void assert_listen(const struct sl_listen *l, const char *host, unsigned port)
{
    ck_assert_str_eq(l->host, host);
    ck_assert_uint_eq(l->port, port);
}

static void assert_app(const struct sl_node_config *n, const char *url, const char *host,
                       unsigned port)
{
    ck_assert_str_eq(n->app_url, url);
    ck_assert_str_eq(n->app_host, host);
    ck_assert_uint_eq(n->app_port, port);
}

START_TEST(test_sidecar_defaults)
{
    clear_env();
    struct sl_config *cfg = load_sidecar_ok(SIDECAR);
    const struct sl_node_config *n = &cfg->node;
    ck_assert_str_eq(cfg->role, "sidecar");
    ck_assert_str_eq(n->service_name, "app");
    assert_listen(&n->inbound_listen, "0.0.0.0", 15006);
    assert_listen(&n->outbound_listen, "127.0.0.1", 15001);
    assert_listen(&n->status_listen, "0.0.0.0", 15021);
    ck_assert_uint_eq(n->admin_listen.port, 0);
    ck_assert_int_eq(n->worker_processes, 1);
    assert_app(n, "http://127.0.0.1:8080", "127.0.0.1", 8080);
    ck_assert_uint_eq(n->drain_delay_ms, 5000);
    ck_assert(!n->inbound_circuit_breakers.set);
    ck_assert_ptr_null(n->proxy_listen); /* a gateway key */
    ck_assert_uint_eq(n->n_proxy_listen, 0);
    /* the keys both roles share keep their defaults */
    ck_assert_uint_eq(n->keepalive_timeout_ms, 75000);
    ck_assert_uint_eq(n->graceful_shutdown_timeout_ms, 10000);
    ck_assert_str_eq(n->log_level, "notice");
    sl_config_unref(cfg);

    /* in the gateway role the sidecar's fields are zero and empty */
    cfg = load_ok(V3);
    n = &cfg->node;
    ck_assert_str_eq(cfg->role, "gateway");
    ck_assert_str_eq(n->service_name, "");
    ck_assert_uint_eq(n->inbound_listen.port, 0);
    ck_assert_str_eq(n->inbound_listen.host, "");
    ck_assert_uint_eq(n->outbound_listen.port, 0);
    assert_app(n, "", "", 0);
    ck_assert_uint_eq(n->drain_delay_ms, 0);
    ck_assert(!n->inbound_circuit_breakers.set);
    assert_listen(&n->status_listen, "127.0.0.1", 8100);
    ck_assert_uint_eq(n->n_proxy_listen, 1);
    sl_config_unref(cfg);
}
END_TEST

START_TEST(test_sidecar_keys)
{
    clear_env();
    struct sl_config *cfg =
        load_sidecar_ok(V3 "sidecar:\n"
                           "  service_name: user-service.v2_A\n"
                           "  inbound_listen: \"[::]:16006\"\n"
                           "  outbound_listen: \"off\"\n"
                           "  app_url: http://[::1]:9000/\n"
                           "  status_listen: \"off\"\n"
                           "  admin_listen: 127.0.0.1:15000\n"
                           "  worker_processes: auto\n"
                           "  drain_delay: 0\n"
                           "  graceful_shutdown_timeout: 2s\n"
                           "  trusted_ips: [10.0.0.0/8]\n"
                           "  inbound_circuit_breakers: {max_connections: 64, max_retries: 0}\n"
                           "  _comment: the pod's proxy\n");
    const struct sl_node_config *n = &cfg->node;
    ck_assert_str_eq(n->service_name, "user-service.v2_A");
    assert_listen(&n->inbound_listen, "::", 16006);
    ck_assert_uint_eq(n->outbound_listen.port, 0);
    assert_app(n, "http://[::1]:9000/", "::1", 9000);
    ck_assert_uint_eq(n->status_listen.port, 0);
    assert_listen(&n->admin_listen, "127.0.0.1", 15000);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_eq(n->worker_processes, cpus < 1 ? 1 : cpus);
    ck_assert_uint_eq(n->drain_delay_ms, 0);
    ck_assert_uint_eq(n->graceful_shutdown_timeout_ms, 2000);
    ck_assert_uint_eq(n->n_trusted_ips, 1);
    const struct sl_circuit_breakers *cb = &n->inbound_circuit_breakers;
    assert_breakers(cb, 64, 1024, 1024, 0);
    ck_assert_int_eq(cb->line, 13);
    ck_assert_int_eq(cb->column, 29);
    sl_config_unref(cfg);

    /* app_url: a name, no port (80), upper-case scheme, written as is */
    static const struct {
        const char *url, *host;
        unsigned port;
    } urls[] = {
        {"http://app", "app", 80},
        {"HTTP://App.Local:81/", "App.Local", 81},
        {"http://10.1.2.3:65535", "10.1.2.3", 65535},
        {"http://[fe80::1]", "fe80::1", 80},
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, SIDECAR "  app_url: \"%s\"\n", urls[i].url);
        cfg = load_sidecar_ok(yaml);
        assert_app(&cfg->node, urls[i].url, urls[i].host, urls[i].port);
        sl_config_unref(cfg);
    }
    /* the longest name */
    char yaml[512];
    char name[128];
    memset(name, 'n', 127);
    name[127] = '\0';
    snprintf(yaml, sizeof yaml, V3 "sidecar:\n  service_name: %s\n", name);
    cfg = load_sidecar_ok(yaml);
    ck_assert_str_eq(cfg->node.service_name, name);
    sl_config_unref(cfg);
}
END_TEST

static const struct bad_case sidecar_bad_cases[] = {
    {V3, "t.yml:1:1: sidecar.service_name is required"},
    {V3 "services: []\n", "t.yml:1:1: sidecar.service_name is required"},
    {V3 "sidecar:\n  worker_processes: 1\n", "t.yml:2:1: sidecar.service_name is required"},
    {V3 "sidecar: ~\n", "t.yml:2:1: sidecar.service_name is required"},
    {V3 "sidecar: []\n", "t.yml:2:10: expected a map, got a sequence"},
    {V3 "sidecar:\n  service_name: \"user service\"\n",
     "t.yml:3:17: service_name: invalid value 'user service': expected 1 to 127 characters of "
     "A-Z a-z 0-9 . _ -"},
    {V3 "sidecar:\n  service_name: \"\"\n",
     "t.yml:3:17: service_name: invalid value '': expected 1 to 127 characters of A-Z a-z 0-9 . "
     "_ -"},
    {V3 "sidecar:\n  service_name: "
        "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
        "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\n",
     "t.yml:3:17: service_name: invalid value "
     "'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...': "
     "expected 1 to 127 characters of A-Z a-z 0-9 . _ -"},
    {V3 "sidecar:\n  service_name: 42\n",
     "t.yml:3:17: service_name: invalid value '42': expected a string"},
    {V3 "sidecar:\n  service_name: [a]\n",
     "t.yml:3:17: service_name: expected a scalar, got a sequence"},
    /* the gateway's keys that the sidecar does not have */
    {SIDECAR "  proxy_listen: 0.0.0.0:8000\n", "t.yml:4:3: unknown field 'proxy_listen'"},
    {SIDECAR "  listen: 1\n", "t.yml:4:3: unknown field 'listen'"},
    /* listeners */
    {SIDECAR "  inbound_listen: \"off\"\n",
     "t.yml:4:19: inbound_listen: invalid value 'off': this listener cannot be off"},
    {SIDECAR "  inbound_listen: \"0.0.0.0:15006 ssl\"\n",
     "t.yml:4:19: inbound_listen: invalid value '0.0.0.0:15006 ssl': ssl on this listener is "
     "not supported yet"},
    {SIDECAR "  inbound_listen: 15006\n",
     "t.yml:4:19: inbound_listen: invalid value '15006': expected host:port"},
    {SIDECAR "  inbound_listen: [0.0.0.0:1, 0.0.0.0:2]\n",
     "t.yml:4:19: inbound_listen: expected a scalar, got a sequence"},
    {SIDECAR "  outbound_listen: \"localhost:15001\"\n",
     "t.yml:4:20: outbound_listen: invalid value 'localhost:15001': expected an IP address "
     "(hostnames are not supported)"},
    {SIDECAR "  outbound_listen: 127.0.0.1:15006\n",
     "t.yml:4:20: outbound_listen: address 127.0.0.1:15006 overlaps 0.0.0.0:15006"},
    {SIDECAR "  inbound_listen: 127.0.0.1:15001\n",
     "t.yml:4:19: inbound_listen: address 127.0.0.1:15001 is used twice"},
    {SIDECAR "  status_listen: 127.0.0.1:15006\n",
     "t.yml:4:18: status_listen: address 127.0.0.1:15006 overlaps 0.0.0.0:15006"},
    {SIDECAR "  admin_listen: 0.0.0.0:15001\n",
     "t.yml:4:17: admin_listen: address 0.0.0.0:15001 overlaps 127.0.0.1:15001"},
    {SIDECAR "  inbound_listen: \"[::]:9000\"\n  outbound_listen: \"[::1]:9000\"\n",
     "t.yml:5:20: outbound_listen: address [::1]:9000 overlaps [::]:9000"},
    /* app_url */
    {SIDECAR "  app_url: https://127.0.0.1:8443\n",
     "t.yml:4:12: app_url: invalid value 'https://127.0.0.1:8443': the scheme must be http"},
    {SIDECAR "  app_url: 127.0.0.1:8080\n",
     "t.yml:4:12: app_url: invalid value '127.0.0.1:8080': missing scheme"},
    {SIDECAR "  app_url: http://127.0.0.1:8080/api\n",
     "t.yml:4:12: app_url: invalid value 'http://127.0.0.1:8080/api': a path other than '/' is "
     "not allowed"},
    {SIDECAR "  app_url: http://127.0.0.1:8080//\n",
     "t.yml:4:12: app_url: invalid value 'http://127.0.0.1:8080//': path must not have empty "
     "segments"},
    {SIDECAR "  app_url: http://127.0.0.1:0\n",
     "t.yml:4:12: app_url: invalid value 'http://127.0.0.1:0': bad port"},
    {SIDECAR "  app_url: http://127.0.0.1:65536\n",
     "t.yml:4:12: app_url: invalid value 'http://127.0.0.1:65536': bad port"},
    {SIDECAR "  app_url: http://127.0.0.1:8080/?x=1\n",
     "t.yml:4:12: app_url: invalid value 'http://127.0.0.1:8080/?x=1': a query string or "
     "fragment is not allowed"},
    {SIDECAR "  app_url: http://u:p@127.0.0.1\n",
     "t.yml:4:12: app_url: invalid value 'http://u:p@127.0.0.1': credentials in a url are not "
     "supported"},
    {SIDECAR "  app_url: http://\n", "t.yml:4:12: app_url: invalid value 'http://': missing host"},
    {SIDECAR "  app_url: \"http://a b\"\n",
     "t.yml:4:12: app_url: invalid value 'http://a b': invalid hostname"},
    {SIDECAR "  app_url: \"http://[::1\"\n",
     "t.yml:4:12: app_url: invalid value 'http://[::1': unterminated IPv6 address"},
    {SIDECAR "  app_url: 8080\n", "t.yml:4:12: app_url: invalid value '8080': expected a string"},
    /* drain_delay: NK_MS, 0 allowed */
    {SIDECAR "  drain_delay: soon\n",
     "t.yml:4:16: drain_delay: invalid value 'soon': expected milliseconds, or a number with a "
     "unit: ms, s, m, h (\"60s\")"},
    {SIDECAR "  drain_delay: 2147483647\n",
     "t.yml:4:16: drain_delay: invalid value '2147483647': out of range (0..2147483646 ms)"},
    /* inbound_circuit_breakers: the circuit_breakers reader */
    {SIDECAR "  inbound_circuit_breakers: 100\n", "t.yml:4:29: expected a map, got an integer"},
    {SIDECAR "  inbound_circuit_breakers:\n    max_requests: 0\n",
     "t.yml:5:19: value 0 is out of range (1..1000000)"},
    {SIDECAR "  inbound_circuit_breakers: {max_conns: 1}\n",
     "t.yml:4:30: unknown field 'max_conns'"},
    /* the shared keys keep their rules */
    {SIDECAR "  worker_processes: 0\n",
     "t.yml:4:21: worker_processes: invalid value '0': expected 'auto' or an integer between 1 "
     "and 1024"},
    {SIDECAR "  max_header_bytes: 1000\n",
     "t.yml:4:21: max_header_bytes: 1000 is less than max_request_line (8192)"},
    /* service blocks are read in this role too */
    {SIDECAR "services:\n  - host: h\n    circuit_breakers: {max_requests: 0}\n",
     "t.yml:6:38: value 0 is out of range (1..1000000)"},
};

START_TEST(test_sidecar_bad_config)
{
    clear_env();
    check_bad_case(&sidecar_bad_cases[_i], "sidecar", _i);
}
END_TEST

/* SLUICE_<KEY> for every sidecar key; the environment wins over the file. */
START_TEST(test_sidecar_env)
{
    clear_env();
    setenv("SLUICE_SERVICE_NAME", "orders", 1);
    setenv("SLUICE_INBOUND_LISTEN", "127.0.0.1:7006", 1);
    setenv("SLUICE_OUTBOUND_LISTEN", "off", 1);
    setenv("SLUICE_APP_URL", " http://localhost:3000 ", 1);
    setenv("SLUICE_DRAIN_DELAY", "2s", 1);
    setenv("SLUICE_STATUS_LISTEN", "127.0.0.1:7021", 1);
    setenv("SLUICE_WORKER_PROCESSES", "2", 1);
    setenv("SLUICE_PROXY_LISTEN", "nowhere", 1);             /* not a sidecar key: not read */
    setenv("SLUICE_INBOUND_CIRCUIT_BREAKERS", "nowhere", 1); /* the file only */
    struct sl_config *cfg = load_sidecar_ok(V3 "sidecar:\n  service_name: app\n"
                                               "  inbound_listen: 0.0.0.0:15006\n"
                                               "  outbound_listen: 127.0.0.1:15001\n"
                                               "  app_url: http://127.0.0.1:8080\n"
                                               "  drain_delay: 100\n"
                                               "  worker_processes: 4\n");
    const struct sl_node_config *n = &cfg->node;
    ck_assert_str_eq(n->service_name, "orders");
    assert_listen(&n->inbound_listen, "127.0.0.1", 7006);
    ck_assert_uint_eq(n->outbound_listen.port, 0);
    assert_app(n, "http://localhost:3000", "localhost", 3000);
    ck_assert_uint_eq(n->drain_delay_ms, 2000);
    assert_listen(&n->status_listen, "127.0.0.1", 7021);
    ck_assert_int_eq(n->worker_processes, 2);
    ck_assert_uint_eq(n->n_proxy_listen, 0);
    ck_assert(!n->inbound_circuit_breakers.set);
    sl_config_unref(cfg);

    /* SLUICE_SERVICE_NAME stands for a missing sidecar block */
    cfg = load_sidecar_ok(V3);
    ck_assert_str_eq(cfg->node.service_name, "orders");
    sl_config_unref(cfg);

    /* the gateway does not read the sidecar's variables */
    setenv("SLUICE_SERVICE_NAME", "not a name", 1);
    setenv("SLUICE_APP_URL", "ftp://x", 1);
    unsetenv("SLUICE_PROXY_LISTEN");
    unsetenv("SLUICE_STATUS_LISTEN");
    cfg = load_ok(V3);
    ck_assert_str_eq(cfg->node.service_name, "");
    ck_assert_str_eq(cfg->node.app_url, "");
    ck_assert_uint_eq(cfg->node.inbound_listen.port, 0);
    ck_assert_uint_eq(cfg->node.drain_delay_ms, 0);
    sl_config_unref(cfg);
    clear_env();
}
END_TEST

static const struct env_case sidecar_env_cases[] = {
    {"SLUICE_SERVICE_NAME", "",
     "env:SLUICE_SERVICE_NAME: invalid value '': expected 1 to 127 characters of A-Z a-z 0-9 . "
     "_ -"},
    {"SLUICE_SERVICE_NAME", "a/b",
     "env:SLUICE_SERVICE_NAME: invalid value 'a/b': expected 1 to 127 characters of A-Z a-z 0-9 "
     ". _ -"},
    {"SLUICE_INBOUND_LISTEN", "off",
     "env:SLUICE_INBOUND_LISTEN: invalid value 'off': this listener cannot be off"},
    {"SLUICE_INBOUND_LISTEN", "127.0.0.1:15001",
     "env:SLUICE_INBOUND_LISTEN: address 127.0.0.1:15001 is used twice"},
    {"SLUICE_OUTBOUND_LISTEN", "0.0.0.0",
     "env:SLUICE_OUTBOUND_LISTEN: invalid value '0.0.0.0': expected host:port"},
    {"SLUICE_OUTBOUND_LISTEN", "0.0.0.0:15021",
     "env:SLUICE_OUTBOUND_LISTEN: address 0.0.0.0:15021 is used twice"},
    {"SLUICE_APP_URL", "https://app",
     "env:SLUICE_APP_URL: invalid value 'https://app': the scheme must be http"},
    {"SLUICE_APP_URL", "http://app/v1",
     "env:SLUICE_APP_URL: invalid value 'http://app/v1': a path other than '/' is not allowed"},
    {"SLUICE_DRAIN_DELAY", "-1",
     "env:SLUICE_DRAIN_DELAY: invalid value '-1': expected milliseconds, or a number with a "
     "unit: ms, s, m, h (\"60s\")"},
    {"SLUICE_STATUS_LISTEN", "0.0.0.0:15006",
     "env:SLUICE_STATUS_LISTEN: address 0.0.0.0:15006 is used twice"},
};

START_TEST(test_sidecar_env_errors)
{
    clear_env();
    check_env_case(&sidecar_env_cases[_i], SIDECAR, "sidecar");
}
END_TEST

/* The app_url is longer than its field: refused, never cut. */
START_TEST(test_sidecar_long_app_url)
{
    clear_env();
    char url[600] = "http://";
    size_t n = strlen(url);
    while (n < 520) {
        memcpy(url + n, "a.", 2);
        n += 2;
    }
    memcpy(url + n, "b", 2);
    setenv("SLUICE_APP_URL", url, 1);
    struct sl_config_error err;
    struct sl_config *cfg = load_role(SIDECAR, "sidecar", &err);
    unsetenv("SLUICE_APP_URL");
    if (cfg != NULL)
        sl_config_unref(cfg);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strstr(err.text, "env:SLUICE_APP_URL: invalid value 'http://a.a.") == err.text,
                  "%s", err.text);
    ck_assert_msg(strstr(err.text, "': longer than 511 bytes") != NULL, "%s", err.text);
}
END_TEST

static Suite *make_suite(void)
{
    clear_env();
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_bad_config, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_full_fixture);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_dns_keys);
    tcase_add_test(tc, test_accepted_variants);
    tcase_add_test(tc, test_sidecar_role);
    tcase_add_test(tc, test_listen_string_forms);
    tcase_add_test(tc, test_env_overrides);
    tcase_add_loop_test(tc, test_env_errors, 0, (int)(sizeof env_cases / sizeof env_cases[0]));
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_hash);
    tcase_add_test(tc, test_sha256_vectors);
    tcase_add_test(tc, test_seed_copy);
    tcase_add_test(tc, test_seed_shared);
    tcase_add_test(tc, test_demo_config);
    tcase_add_test(tc, test_parse_listen);
    tcase_add_test(tc, test_trusted_ips);
    tcase_add_test(tc, test_conf_values);
    tcase_add_test(tc, test_many_entities);
    tcase_add_test(tc, test_upstreams_and_targets);
    tcase_add_test(tc, test_route_matching_fields);
    tcase_add_test(tc, test_certificates_and_snis);
    tcase_add_test(tc, test_certificate_errors);
    tcase_add_test(tc, test_jwt_secrets);
    tcase_add_test(tc, test_upstream_errors);
    tcase_add_test(tc, test_upstream_hashing);
    tcase_add_test(tc, test_plugin_scopes);
    tcase_add_test(tc, test_admin_listen);
    tcase_add_test(tc, test_resilience_defaults);
    tcase_add_test(tc, test_resilience_values);
    tcase_add_test(tc, test_sidecar_defaults);
    tcase_add_test(tc, test_sidecar_keys);
    tcase_add_loop_test(tc, test_sidecar_bad_config, 0,
                        (int)(sizeof sidecar_bad_cases / sizeof sidecar_bad_cases[0]));
    tcase_add_test(tc, test_sidecar_env);
    tcase_add_loop_test(tc, test_sidecar_env_errors, 0,
                        (int)(sizeof sidecar_env_cases / sizeof sidecar_env_cases[0]));
    tcase_add_test(tc, test_sidecar_long_app_url);
    suite_add_tcase(s, tc);
    return s;
}

SL_UNIT_MAIN
