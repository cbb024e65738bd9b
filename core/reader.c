#include "reader.h"

#include "http1.h"

#include <errno.h>
#include <string.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/uio.h>

/* Bytes asked for per read: large enough for a request head or a body
 * chunk in one call. libevent's own path reads at most 4096. */
#define SL_READ_CHUNK 16384

static void reader_pause(struct sl_reader *r)
{
    if (r->ev) /* NULL only after a failed init */
        event_del(r->ev);
}

static void reader_resume(struct sl_reader *r)
{
    if (!r->ev || !r->enabled || event_pending(r->ev, EV_READ, NULL))
        return;
    struct timeval tv = {r->timeout_ms / 1000, (suseconds_t)(r->timeout_ms % 1000) * 1000};
    event_add(r->ev, r->timeout_ms ? &tv : NULL);
}

static bool input_full(const struct sl_reader *r)
{
    return r->bev && r->high_water &&
           evbuffer_get_length(bufferevent_get_input(r->bev)) >= r->high_water;
}

static void reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sl_reader *r = arg;
    struct bufferevent *bev = r->bev;
    if (what & EV_TIMEOUT) {
        r->on_event(bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, r->arg);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t want = SL_READ_CHUNK;
    if (r->high_water) {
        size_t have = evbuffer_get_length(in);
        if (have >= r->high_water) {
            reader_pause(r);
            return;
        }
        if (r->high_water - have < want)
            want = r->high_water - have;
    }
    /* the bufferevent keeps the end of its input frozen outside its own
     * read callback; thaw it for this read, as that callback does */
    evbuffer_unfreeze(in, 0);
    struct evbuffer_iovec vec[2];
    int nvec = evbuffer_reserve_space(in, (ev_ssize_t)want, vec, 2);
    ssize_t n = -1;
    int saved_errno = ENOMEM;
    if (nvec > 0) {
        struct iovec iov[2];
        for (int i = 0; i < nvec; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        n = readv(fd, iov, nvec);
        saved_errno = errno;
        size_t left = n > 0 ? (size_t)n : 0;
        int used = 0;
        for (; used < nvec && left > 0; used++) {
            if (vec[used].iov_len > left)
                vec[used].iov_len = left;
            left -= vec[used].iov_len;
        }
        evbuffer_commit_space(in, vec, used);
    }
    evbuffer_freeze(in, 0);

    if (n > 0) {
        if (input_full(r))
            reader_pause(r); /* resumed by sl_reader_drained() */
        r->on_read(bev, r->arg);
        return;
    }
    if (n == 0) {
        r->on_event(bev, BEV_EVENT_READING | BEV_EVENT_EOF, r->arg);
        return;
    }
    if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == EINTR)
        return;
    errno = saved_errno;
    r->on_event(bev, BEV_EVENT_READING | BEV_EVENT_ERROR, r->arg);
}

/* Draining the input below the high-water mark resumes a paused reader. */
static void input_changed(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct sl_reader *r = arg;
    if (info->n_deleted > 0 && !input_full(r))
        reader_resume(r);
}

static void bev_apply_timeouts(struct sl_reader *r)
{
    struct timeval rt = {r->timeout_ms / 1000, (suseconds_t)(r->timeout_ms % 1000) * 1000};
    struct timeval wt = {r->write_timeout_ms / 1000,
                         (suseconds_t)(r->write_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(r->bev, r->timeout_ms ? &rt : NULL, r->write_timeout_ms ? &wt : NULL);
}

bool sl_reader_init_bev(struct sl_reader *r, struct bufferevent *bev)
{
    memset(r, 0, sizeof *r);
    r->bev = bev;
    r->via_bev = true;
    bufferevent_disable(bev, EV_READ);
    return true;
}

void sl_reader_set_write_timeout(struct sl_reader *r, uint32_t timeout_ms)
{
    r->write_timeout_ms = timeout_ms;
    if (r->via_bev) {
        bev_apply_timeouts(r);
    } else {
        struct timeval wt = {timeout_ms / 1000, (suseconds_t)(timeout_ms % 1000) * 1000};
        bufferevent_set_timeouts(r->bev, NULL, timeout_ms ? &wt : NULL);
    }
}

bool sl_reader_init(struct sl_reader *r, struct bufferevent *bev)
{
    r->via_bev = false;
    r->write_timeout_ms = 0;
    r->bev = bev;
    r->on_read = NULL;
    r->on_event = NULL;
    r->arg = NULL;
    r->timeout_ms = 0;
    r->high_water = 0;
    r->enabled = false;
    r->ev = event_new(bufferevent_get_base(bev), bufferevent_getfd(bev), EV_READ | EV_PERSIST,
                      reader_cb, r);
    if (!r->ev)
        return false;
    if (!evbuffer_add_cb(bufferevent_get_input(bev), input_changed, r)) {
        event_free(r->ev);
        r->ev = NULL;
        return false;
    }
    return true;
}

void sl_reader_free(struct sl_reader *r)
{
    if (r->via_bev) {
        bufferevent_disable(r->bev, EV_READ);
        return;
    }
    if (!r->ev)
        return;
    evbuffer_remove_cb(bufferevent_get_input(r->bev), input_changed, r);
    event_free(r->ev);
    r->ev = NULL;
}

void sl_reader_setcb(struct sl_reader *r, bufferevent_data_cb on_read,
                     bufferevent_event_cb on_event, void *arg)
{
    r->on_read = on_read;
    r->on_event = on_event;
    r->arg = arg;
}

void sl_reader_setcb_all(struct sl_reader *r, bufferevent_data_cb on_read,
                         bufferevent_data_cb on_write, bufferevent_event_cb on_event, void *arg)
{
    sl_reader_setcb(r, on_read, on_event, arg);
    bufferevent_setcb(r->bev, r->via_bev ? on_read : NULL, on_write, on_event, arg);
}

void sl_reader_set_timeout(struct sl_reader *r, uint32_t timeout_ms)
{
    if (r->timeout_ms == timeout_ms)
        return;
    r->timeout_ms = timeout_ms;
    if (r->via_bev) {
        bev_apply_timeouts(r);
        return;
    }
    if (!r->ev || !event_pending(r->ev, EV_READ, NULL))
        return;
    /* on a pending event only the timer moves: no epoll change */
    if (timeout_ms == 0) {
        event_remove_timer(r->ev);
    } else {
        struct timeval tv = {timeout_ms / 1000, (suseconds_t)(timeout_ms % 1000) * 1000};
        event_add(r->ev, &tv);
    }
}

void sl_reader_set_high_water(struct sl_reader *r, size_t high_water)
{
    r->high_water = high_water;
    if (r->via_bev) {
        bufferevent_setwatermark(r->bev, EV_READ, 0, high_water);
        return;
    }
    if (r->enabled && !input_full(r))
        reader_resume(r);
}

void sl_reader_enable(struct sl_reader *r)
{
    r->enabled = true;
    if (r->via_bev)
        bufferevent_enable(r->bev, EV_READ);
    else if (!input_full(r))
        reader_resume(r);
}

void sl_reader_disable(struct sl_reader *r)
{
    r->enabled = false;
    if (r->via_bev)
        bufferevent_disable(r->bev, EV_READ);
    else
        reader_pause(r);
}

void sl_reader_drained(struct sl_reader *r)
{
    if (r->via_bev)
        return; /* the bufferevent watches its own watermark */
    if (!input_full(r))
        reader_resume(r);
}

/* ------------------------------------------------------------------------ */
/* writing now, and scanning chunked bytes in place                          */

/*
 * sl_bev_write_now() for a TLS bufferevent. libevent 2.1's OpenSSL bufferevent
 * writes only from its write event: enabling writing costs an epoll_ctl to
 * add the event, a loop iteration, and another epoll_ctl to remove it. So,
 * as nginx does, the response goes out here with SSL_write, in one record
 * when it fits one. This is safe only while libevent has no write of its
 * own in progress: writing is disabled exactly when the output was empty
 * after the last write (sl_bev_write_now enables it otherwise, the client's and the
 * upstream's write callbacks disable it when drained), so no retry of a partial SSL_write is
 * pending. Whatever the socket does not take, libevent writes from its
 * event, retrying with the same bytes at the same place (the bytes stay at
 * the front of the output until written).
 */
#define SL_TLS_RECORD 16384
static bool tls_write_now(struct bufferevent *bev, struct evbuffer *out)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (bufferevent_get_enabled(bev) & EV_WRITE)
        return evbuffer_get_length(out) == 0; /* libevent's write is under way */
    while (evbuffer_get_length(out) > 0) {
        size_t len = evbuffer_get_length(out);
        if (len > SL_TLS_RECORD)
            len = SL_TLS_RECORD;
        const void *data = evbuffer_pullup(out, (ev_ssize_t)len);
        if (!data)
            break;
        ERR_clear_error();
        int n = SSL_write(ssl, data, (int)len);
        if (n <= 0) {
            /* blocked (libevent retries the same bytes) or failed (libevent
             * meets the error again and reports it to the event callback) */
            bufferevent_enable(bev, EV_WRITE);
            return false;
        }
        evbuffer_drain(out, (size_t)n);
    }
    /* libevent armed the write event when the bytes were queued (in this
     * loop iteration): disarming it now cancels both in the changelist,
     * no epoll_ctl at all */
    bufferevent_disable(bev, EV_WRITE);
    return true;
}

/*
 * Write queued output now, from the callback that queued it, the way nginx
 * does, instead of arming the write event and writing on the next loop
 * iteration: that saves two epoll_ctl calls per write. Only when the socket
 * cannot take everything does the bufferevent's write event take over; its
 * callback runs once the output drained to the low watermark. A write error
 * is left for that write event to report. True when the output is empty.
 */
bool sl_bev_write_now(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (bufferevent_openssl_get_ssl(bev) != NULL)
        return tls_write_now(bev, out);
    /* libevent keeps the start of a bufferevent's output frozen outside its
     * own write callback; thaw it for this write, as that callback does */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, bufferevent_getfd(bev));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0) {
        bufferevent_disable(bev, EV_WRITE);
        return true;
    }
    bufferevent_enable(bev, EV_WRITE);
    return false;
}

/*
 * Run the chunked scanner over `in` from `offset` on, without consuming
 * it. Returns how many bytes belong to the body (all of them, or up to its
 * end), or -1 on a framing error.
 */
long sl_scan_chunked_evbuffer(struct sl_chunked_scanner *s, struct evbuffer *in, size_t offset)
{
    size_t total = offset, len = evbuffer_get_length(in);
    while (total < len && !s->done) {
        struct evbuffer_ptr pos;
        if (evbuffer_ptr_set(in, &pos, total, EVBUFFER_PTR_SET) < 0)
            break;
        struct evbuffer_iovec vec[16];
        int n = evbuffer_peek(in, -1, &pos, vec, 16);
        if (n <= 0)
            break;
        for (int i = 0; i < n && i < 16 && !s->done; i++) {
            long used = sl_chunked_scan(s, vec[i].iov_base, vec[i].iov_len);
            if (used < 0)
                return -1;
            total += (size_t)used;
        }
    }
    return (long)(total - offset);
}

void sl_evbuffer_copy(struct evbuffer *dst, struct evbuffer *src, size_t n)
{
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(src, &pos, 0, EVBUFFER_PTR_SET);
    struct evbuffer_iovec vec[16];
    while (n > 0) {
        int got = evbuffer_peek(src, (ev_ssize_t)n, &pos, vec, 16);
        if (got <= 0)
            return;
        size_t seen = 0;
        for (int i = 0; i < got && i < 16 && n > 0; i++) {
            size_t len = vec[i].iov_len < n ? vec[i].iov_len : n;
            evbuffer_add(dst, vec[i].iov_base, len);
            n -= len;
            seen += len;
        }
        if (got <= 16 || evbuffer_ptr_set(src, &pos, seen, EVBUFFER_PTR_ADD) < 0)
            return;
    }
}
