# bench/lib.sh — the pieces every side-by-side benchmark script shares:
# installing the tools, the temporary directory, starting and stopping the
# processes under test by pid, CPU and memory readings from /proc, wrk's
# number formats, medians, and building sluice in build-bench/.
#
# Sourced by bench/run and bench/sidecar after they set BENCH_TAG (the log
# prefix), here (bench/) and top (the repository).

log() { printf '[%s %s] %s\n' "${BENCH_TAG:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------
# Installs what is missing (root on Debian): the servers under test, the load
# generator, and the build dependencies of sluice. apt-get update runs only
# when something is missing. Arguments: more COMMAND:PACKAGE pairs a script
# needs beyond these (bench/slow: slowhttptest:slowhttptest).
install_missing() {
    local pkgs=() cmd pkg pair
    for pair in nginx:nginx haproxy:haproxy wrk:wrk python3:python3 taskset:util-linux \
                curl:curl pkg-config:pkg-config make:make gcc:gcc "$@"; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || pkgs+=("$pkg")
    done
    if [ -z "${BENCH_NO_BUILD:-}" ]; then
        [ -x "$top/configure" ] || {
            command -v autoreconf >/dev/null 2>&1 || pkgs+=(autoconf)
            command -v automake >/dev/null 2>&1 || pkgs+=(automake)
        }
        if command -v pkg-config >/dev/null 2>&1; then
            for pair in "libevent_openssl:libevent-dev" "openssl:libssl-dev" "yaml-0.1:libyaml-dev" \
                        "jansson:libjansson-dev" "libjwt:libjwt-dev" "hiredis:libhiredis-dev" \
                        "libcurl:libcurl4-openssl-dev" "check:check"; do
                pkg-config --exists "${pair%%:*}" || pkgs+=("${pair#*:}")
            done
        else
            pkgs+=(libevent-dev libssl-dev libyaml-dev libjansson-dev libjwt-dev libhiredis-dev
                   libcurl4-openssl-dev check)
        fi
    fi
    [ ${#pkgs[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing: ${pkgs[*]} (install them, or run as root on Debian)"
    fi
    log "installing: ${pkgs[*]}"
    # Keep Debian from starting the system nginx/haproxy services on install.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
    local rc=$?
    [ -n "$made_policy" ] && rm -f $policy
    [ $rc -eq 0 ] || die "apt-get install failed"
}

# Open files: thousands of idle connections need more than the usual 1024.
raise_nofile() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    [ "$NOFILE" = unlimited ] && NOFILE=1048576
}

# The temporary directory ($tmp) and the list of pids we started (PIDS); both
# are cleaned up on exit, also on Ctrl-C.
make_tmp() {
    tmp=$(mktemp -d /tmp/sluice-bench.XXXXXX) || die "mktemp"
    chmod 755 "$tmp"   # nginx workers run as nobody when we are root
    PIDS=()
    trap cleanup EXIT
    trap 'log interrupted; exit 130' INT TERM
}

# --- process helpers ----------------------------------------------------------
descendants() { # pid and all its descendants, one per line
    local p=$1
    echo "$p"
    local c
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do descendants "$c"; done
}

stop_pid() { # stop one process we started (and its children), bounded
    local pid=$1 tree i p
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    tree=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # still there, or children left behind: kill exactly those pids
    for p in $tree; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    return 0
}

stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    PIDS=()
}

cleanup() {
    stop_all
    if [ -n "${BENCH_KEEP_TMP:-}" ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}

# start NAME CPUS CMD... : background, logs in $tmp/NAME.log, pid in PIDS and
# in the variable PID_<NAME>
start() {
    local name=$1 cpus=$2; shift 2
    if [ -n "$cpus" ]; then
        taskset -c "$cpus" "$@" >"$tmp/$name.log" 2>&1 &
    else
        "$@" >"$tmp/$name.log" 2>&1 &
    fi
    local pid=$!
    PIDS+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
}

# forget NAME: stop the process started as NAME and drop it from PIDS
stop_named() {
    local v="PID_$1" pid i
    pid=${!v:-}
    [ -n "$pid" ] || return 0
    stop_pid "$pid"
    for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" = "$pid" ] && unset 'PIDS[i]'; done
    PIDS=("${PIDS[@]}")
    unset "PID_$1"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http NAME PORT [CURL-ARGS...]: the process is alive and GET $REQ_PATH
# answers 200 (within 10 s)
wait_http() {
    local name=$1 port=$2 pidvar="PID_$1" i code
    shift 2
    for i in $(seq 100); do
        kill -0 "${!pidvar}" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" "http://127.0.0.1:$port${REQ_PATH:-/}" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- readings -----------------------------------------------------------------
cpu_ticks() { # utime+stime of a process tree (threads included), in ticks
    local t=0 p f
    for p in $(descendants "$1"); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }   # fields after "(comm) "
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo $t
}

busy_ticks() { # CPU time of the whole machine, all CPUs: user nice system irq softirq
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}

child_ticks() { # user+sys of this shell's finished children (wrk), in ticks, from
    # the output of `times` saved in file $1 (`times` must run in this shell:
    # in a $(...) subshell it would only count the subshell's own children)
    awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%d", t * hz + 0.5 }' "$1"
}

rss_kb() { # VmRSS summed over a process tree, kB
    local t=0 p v
    for p in $(descendants "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $t
}

to_ms() { # "350.00us" "1.20ms" "2.00s" -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "nan" }'
}

median() { sort -g | awk '$1 != "nan" { v[n++] = $1 } END {
    if (n == 0) { print "nan"; exit }
    if (n % 2) print v[(n - 1) / 2]; else printf "%.3f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'; }

# --- the upstream and the reference proxies ---------------------------------
# Configs for $tmp, on the ports P_UPSTREAM (the nginx upstream), P_NGINX
# (nginx proxy_pass) and P_HAPROXY (HAProxy), all on 127.0.0.1.
# write_upstream_conf [WORKER_CONNECTIONS [EXTRA]]: EXTRA is more nginx
# text for the server block (bench/slow adds locations), default none.
write_upstream_conf() {
    local NGINX_NOFILE=$((NOFILE < 30000 ? NOFILE : 30000))
    local worker_connections=${1:-4096} extra=${2:-}
    mkdir -p "$tmp/upstream/logs"
    cat >"$tmp/upstream/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NGINX_NOFILE;
pid $tmp/upstream/nginx.pid;
error_log $tmp/upstream/logs/error.log warn;
events { worker_connections $worker_connections; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$P_UPSTREAM backlog=4096;
        location / {
            default_type application/json;
            return 200 '{"ok":true,"service":"bench"}';
        }
$extra
    }
}
EOF
}

write_nginx_conf() { # workers
    local NGINX_NOFILE=$((NOFILE < 30000 ? NOFILE : 30000))
    mkdir -p "$tmp/nginx/logs"
    cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $1;
worker_rlimit_nofile $NGINX_NOFILE;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    upstream bench {
        server 127.0.0.1:$P_UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$P_NGINX reuseport backlog=4096;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

write_haproxy_conf() { # workers
    # HAProxy sizes its fd table from maxconn (about 2 per connection).
    local maxconn=$(((NOFILE - 200) / 2))
    [ $maxconn -gt 20000 ] && maxconn=20000
    cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread $1
    maxconn $maxconn
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend bench
    bind 127.0.0.1:$P_HAPROXY backlog 4096
    default_backend upstream
backend upstream
    http-reuse always
    server up 127.0.0.1:$P_UPSTREAM
EOF
}

# --- build ------------------------------------------------------------------
# the revision that gets built (read now: commits may land during the run)
git_rev() {
    local rev
    rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$top" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && rev="$rev (+ uncommitted changes)"
    echo "$rev"
}

# build_sluice MAKE-TARGET...: configure build-bench/ once (-O2 -g, no
# sanitizers) and make the targets; on failure SLUICE_STATUS says why.
SLUICE_STATUS=ok
build_sluice() {
    [ -n "${BENCH_NO_BUILD:-}" ] && return 0
    local b=$top/build-bench
    log "building sluice in build-bench/ (-O2 -g, log: build-bench/bench-build.log)"
    mkdir -p "$b"
    : >"$b/bench-build.log"
    if [ ! -x "$top/configure" ]; then
        (cd "$top" && autoreconf -fi) >>"$b/bench-build.log" 2>&1 || { SLUICE_STATUS="autoreconf failed"; return 1; }
    fi
    # --disable-werror: a warning that only -O2 brings out (maybe-uninitialized,
    # say) must not stop a benchmark; CI keeps -Werror.
    local args='CFLAGS=-O2 -g --disable-werror'
    if [ ! -f "$b/Makefile" ] || [ "$(cat "$b/.bench-configure" 2>/dev/null)" != "$args" ]; then
        (cd "$b" && ../configure CFLAGS="-O2 -g" --disable-werror) >>"$b/bench-build.log" 2>&1 || { SLUICE_STATUS="configure failed"; return 1; }
        echo "$args" >"$b/.bench-configure"
    fi
    (cd "$b" && make -j2 "$@") >>"$b/bench-build.log" 2>&1 || { SLUICE_STATUS="build failed"; return 1; }
}
