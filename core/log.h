/*
 * Error log on stderr with levels. Thread-safe (one write(2) per line).
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdarg.h>

enum sl_log_level { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_NOTICE, SL_LOG_WARN, SL_LOG_ERROR };

void sl_log_set_level(enum sl_log_level level);
int sl_log_level_from_name(const char *name); /* -1 when unknown */
void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* sl_log with the arguments already collected (wrappers, e.g. the plugin API's). */
void sl_vlog(enum sl_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define sl_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define sl_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_notice(...) sl_log(SL_LOG_NOTICE, __VA_ARGS__)
#define sl_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
