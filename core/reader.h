/*
 * Reading a socket into a bufferevent's input without libevent's read path,
 * and writing a bufferevent's output at once (sl_bev_write_now).
 *
 * Why: libevent's evbuffer_read() asks the kernel how much is readable
 * (ioctl FIONREAD) before every read. On a proxy that is one extra system
 * call per read, two per request; measured here it is about a tenth of the
 * CPU a request costs. The reader reads into space reserved in the input
 * buffer with one readv() and hands the bytes to the same callbacks a
 * bufferevent would call. The bufferevent keeps doing the writes.
 *
 * Ownership: a reader is embedded in the connection struct that owns the
 * bufferevent (client or upstream connection) and lives exactly as long as
 * that bufferevent; sl_reader_free() before bufferevent_free(). Callbacks
 * may free the owner; the reader touches nothing after calling one.
 */
#ifndef SL_READER_H
#define SL_READER_H

#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct evbuffer;
struct sl_chunked_scanner;

struct sl_reader {
    struct event *ev; /* EV_READ | EV_PERSIST on the socket */
    struct bufferevent *bev;
    bufferevent_data_cb on_read;   /* new bytes are in the input */
    bufferevent_event_cb on_event; /* BEV_EVENT_READING | EOF, ERROR or TIMEOUT */
    void *arg;
    uint32_t timeout_ms; /* between two reads; 0 = none */
    size_t high_water;   /* stop reading while the input holds this much; 0 = no limit */
    bool enabled;
    /* bufferevent mode (TLS): the bufferevent reads (it must, to decrypt);
     * its read callback must be on_read and its event callback on_event,
     * set by the owner with bufferevent_setcb(). The calls below map onto
     * the bufferevent's enable/timeouts/watermarks. */
    bool via_bev;
    uint32_t write_timeout_ms; /* bufferevent mode: kept, as timeouts are set together */
};

/* Attach to bev (its socket must be set). Reading starts disabled. */
bool sl_reader_init(struct sl_reader *r, struct bufferevent *bev);
/* The same, in bufferevent mode (a filtering bufferevent such as TLS). */
bool sl_reader_init_bev(struct sl_reader *r, struct bufferevent *bev);
/* The bufferevent's write timeout (0 = none); in bufferevent mode it must
 * be set here, not with bufferevent_set_timeouts(). */
void sl_reader_set_write_timeout(struct sl_reader *r, uint32_t timeout_ms);
void sl_reader_free(struct sl_reader *r);

void sl_reader_setcb(struct sl_reader *r, bufferevent_data_cb on_read,
                     bufferevent_event_cb on_event, void *arg);
void sl_reader_set_timeout(struct sl_reader *r, uint32_t timeout_ms);
/* All of the bufferevent's callbacks at once, in either mode: on_read and
 * on_event through the reader, on_write (may be NULL) and on_event on the
 * bufferevent. */
void sl_reader_setcb_all(struct sl_reader *r, bufferevent_data_cb on_read,
                         bufferevent_data_cb on_write, bufferevent_event_cb on_event, void *arg);
void sl_reader_set_high_water(struct sl_reader *r, size_t high_water);

void sl_reader_enable(struct sl_reader *r);
void sl_reader_disable(struct sl_reader *r);

/* The input was drained: resume reading if the high-water mark had paused it. */
void sl_reader_drained(struct sl_reader *r);

/*
 * Write the bufferevent's queued output now, from the callback that queued
 * it (as nginx does), instead of arming the write event and writing on the
 * next loop iteration: two epoll_ctl calls saved per write. Only when the
 * socket cannot take everything does the write event take over (its
 * callback runs once the output drained to the low watermark). A write
 * error is left for that event to report. True when the output is empty.
 * Plain sockets and OpenSSL bufferevents alike.
 */
bool sl_bev_write_now(struct bufferevent *bev);

/* Append a copy of the first n bytes of src (all of it when it holds
 * fewer) to dst; src is left as it is. */
void sl_evbuffer_copy(struct evbuffer *dst, struct evbuffer *src, size_t n);

/*
 * Run a chunked scanner (http1.h) over `in` from `offset` on without
 * consuming anything. Returns how many bytes belong to the body (all of
 * them, or up to its end), or -1 on a framing error.
 */
long sl_scan_chunked_evbuffer(struct sl_chunked_scanner *s, struct evbuffer *in, size_t offset);

#endif
