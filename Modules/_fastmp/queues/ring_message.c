/* ring_message.c - the ring's operations that need the GIL: whole
 * messages read into Python objects, a blocking lock, and the exceptions
 * of a corrupt ring.  Used by the Queue channel (channel.c) and a Pipe()
 * end (connection/pipe_ring.c). */
#include "queues/ring.h"
#include "core/deadline.h"
#include "core/errors.h"

#include <errno.h>
#include <string.h>

int
chan_lock_blocking(pthread_mutex_t *mu)
{
    int err = chan_lock(mu, &chan_no_wait, 0);
    while (err == EBUSY || err == EINTR) {
        if (err == EINTR && PyErr_CheckSignals() < 0) {
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        err = chan_lock(mu, &chan_forever, 1);
        Py_END_ALLOW_THREADS
    }
    if (err) {
        fastmp_oserror(err, "pthread_mutex_lock");
        return -1;
    }
    return 0;
}

PyObject *
chan_raise_corrupt(chan_map *m)
{
    const char *why = chan_broken(m);
    PyObject *text = PyUnicode_FromFormat(
        "the %s's shared memory is corrupt (%s): it cannot be used any more",
        (m->flags & CHAN_PIPE) ? "Pipe()" : "queue", why ? why : "unknown");
    if (text != NULL) {
        PyObject *args = Py_BuildValue("(iO)", CHAN_CORRUPT, text);
        if (args != NULL) {
            PyErr_SetObject(PyExc_OSError, args);
            Py_DECREF(args);
        }
        Py_DECREF(text);
    }
    return NULL;
}

PyObject *
chan_oserror(chan_map *m, int err, const char *call)
{
    return err == CHAN_CORRUPT ? chan_raise_corrupt(m) : fastmp_oserror(err, call);
}

/* Whether the n bytes at p are all ASCII. */
static int
all_ascii(const char *p, Py_ssize_t n)
{
    uint64_t high = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, sizeof(word));
        high |= word;
    }
    for (; i < n; i++) {
        high |= (unsigned char)p[i];
    }
    return (high & 0x8080808080808080ULL) == 0;
}

/* The str whose UTF-8 is the `n` bytes at `utf8`; an ASCII one (as the
 * writer flagged it) is copied without decoding.  Bytes that are not what
 * the writer said (no UTF-8, or not ASCII) mean that `m` is corrupt:
 * NULL with an exception set. */
PyObject *
chan_str_from_payload(chan_map *m, const char *utf8, Py_ssize_t n, uint32_t flags)
{
    if (!(flags & REC_ASCII)) {
        PyObject *s = PyUnicode_DecodeUTF8(utf8, n, NULL);
        if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            chan_mark_corrupt(m, "a str message is not UTF-8");
            return chan_raise_corrupt(m);
        }
        return s;
    }
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) {
        memcpy(PyUnicode_DATA(s), utf8, (size_t)n);
        /* checked in the copy: the ring's bytes may change meanwhile */
        if (!all_ascii(PyUnicode_DATA(s), n)) {
            Py_DECREF(s);
            chan_mark_corrupt(m, "a str message flagged ASCII is not");
            return chan_raise_corrupt(m);
        }
    }
    return s;
}

/* Holding rlock, after CHAN_READ_BEGIN: take in the message that begins,
 * of r->total bytes.  Returns 1 with it in *msg when it was whole in its
 * first record, 0 when its other records follow into *msg, -1 with an
 * exception set (the message is dropped). */
static int
take_first(chan_map *m, chan_reading *r, PyObject **msg)
{
    const char *direct = (r->flags & REC_STR) ? chan_read_direct(m, r) : NULL;
    if (direct != NULL) {
        /* a str in one piece: decode it straight from the ring */
        *msg = chan_str_from_payload(m, direct, (Py_ssize_t)r->total, r->flags);
        (void)chan_read_pass(m, r);
        chan_count_done(m);
        return *msg == NULL ? -1 : 1;
    }
    *msg = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)r->total);
    if (*msg == NULL) {
        /* dropped: a streamed one's remainder is skipped, then counted */
        if (chan_read_pass(m, r)) {
            chan_count_done(m);
        }
        return -1;
    }
    chan_advise_fresh(PyBytes_AS_STRING(*msg), r->total);
    r->buf = PyBytes_AS_STRING(*msg);
    if (chan_read_take(m, r) == CHAN_READ_DONE) {
        chan_count_done(m);
        return 1;
    }
    return 0;
}

/* Holding rlock: wait for and read one whole message (see ring.h). */
PyObject *
chan_read_message(chan_map *m, int block, const fastmp_deadline *d, uint32_t *flags,
                  uint64_t limit, uint64_t *too_long)
{
    chan_reading r;
    PyObject *msg = NULL;
    if (chan_read_start(m, &r) != 0) {
        return chan_raise_corrupt(m);
    }
    for (;;) {
        int taken;
        switch (chan_read_record(m, &r)) {
        case CHAN_READ_TOOK:
            continue;
        case CHAN_READ_DONE:
            chan_count_done(m);
            *flags = r.flags;
            return msg;
        case CHAN_READ_TORN:
            Py_CLEAR(msg);
            chan_count_done(m);
            continue;
        case CHAN_READ_CORRUPT:
            Py_XDECREF(msg);
            return chan_raise_corrupt(m);
        case CHAN_READ_BEGIN:
            if (r.total > limit) {
                *too_long = r.total;    /* left in the ring */
                return NULL;
            }
            *flags = r.flags;
            taken = take_first(m, &r, &msg);
            if (taken != 0) {
                return taken > 0 ? msg : NULL;
            }
            continue;
        default:
            break;                      /* CHAN_READ_EMPTY: wait below */
        }
        int mid = r.state != CHAN_IDLE;
        uint32_t shut = chan_shut_state(m);
        if (!mid && (!block || chan_shut_and_drained(m, shut))) {
            return NULL;
        }
        /* inside a message the deadline no longer applies, but we look
         * at the writer every slice in case it is gone */
        fastmp_deadline slice;
        fastmp_deadline_from_seconds(0.05, &slice);
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = chan_wait_data(m, mid ? &slice : d, shut);
        Py_END_ALLOW_THREADS
        if (err == ETIMEDOUT) {
            if (!mid) {
                return NULL;
            }
            if (chan_writer_gone(m)) {
                Py_CLEAR(msg);
                chan_read_abandon(m, &r);
                chan_count_done(m);
            }
            else if (PyErr_CheckSignals() < 0) {
                Py_XDECREF(msg);        /* rd_in_message tells the next reader */
                return NULL;
            }
        }
        else if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                Py_XDECREF(msg);        /* rd_in_message tells the next reader */
                return NULL;
            }
        }
        else if (err) {
            Py_XDECREF(msg);
            return fastmp_oserror(err, "futex");
        }
    }
}
