/*
 * Error log: one line per call on stderr,
 *   2026-11-24T23:59:59.123Z [notice] message
 * written with a single write(2) so that lines from different threads never
 * interleave (writes to a pipe of at most PIPE_BUF bytes are atomic, and we
 * cap a line well below the usual 4096). Control characters in the message
 * are escaped so that data from a request cannot forge log lines.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Keep a line under PIPE_BUF (4096 on Linux) so one write(2) is atomic. */
#define SL_LOG_LINE_MAX 4000

static atomic_int log_min_level = SL_LOG_NOTICE;

static const char *const level_names[] = {
    [SL_LOG_DEBUG] = "debug", [SL_LOG_INFO] = "info",   [SL_LOG_NOTICE] = "notice",
    [SL_LOG_WARN] = "warn",   [SL_LOG_ERROR] = "error",
};

void sl_log_set_level(enum sl_log_level level)
{
    if (level < SL_LOG_DEBUG || level > SL_LOG_ERROR)
        return;
    atomic_store_explicit(&log_min_level, (int)level, memory_order_relaxed);
}

int sl_log_level_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void sl_log(enum sl_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_vlog(level, fmt, ap);
    va_end(ap);
}

void sl_vlog(enum sl_log_level level, const char *fmt, va_list ap)
{
    if (level < SL_LOG_DEBUG || level > SL_LOG_ERROR)
        level = SL_LOG_ERROR;
    if ((int)level < atomic_load_explicit(&log_min_level, memory_order_relaxed))
        return;

    int saved_errno = errno; /* callers may log between a failure and reading errno */

    char msg[SL_LOG_LINE_MAX];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        n = 0;
    size_t msg_len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    bool truncated = (size_t)n >= sizeof msg;

    char line[SL_LOG_LINE_MAX + 64];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t len = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    len += (size_t)snprintf(line + len, sizeof line - len, ".%03ldZ [%s] ",
                            (long)(ts.tv_nsec / 1000000), level_names[level]);

    /* Room kept for "...", "\n" and one escape sequence. */
    const size_t limit = sizeof line - 8;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < msg_len && len < limit; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c >= 0x20 && c != 0x7f) {
            line[len++] = (char)c;
        } else if (c == '\t') {
            line[len++] = '\t';
        } else {
            if (len + 4 > limit) {
                truncated = true;
                break;
            }
            line[len++] = '\\';
            line[len++] = 'x';
            line[len++] = hex[c >> 4];
            line[len++] = hex[c & 0xf];
        }
        if (len >= limit && i + 1 < msg_len)
            truncated = true;
    }
    if (truncated) {
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';

    /* One write; a short write to stderr is not retried (it would split the line). */
    ssize_t w;
    do {
        w = write(STDERR_FILENO, line, len);
    } while (w < 0 && errno == EINTR);

    errno = saved_errno;
}
