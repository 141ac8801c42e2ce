/* connection.c - Connection: length-prefixed messages over a file
 * descriptor (a pipe end or a socket), on the wire identical to the
 * standard multiprocessing.connection.Connection (it pickles with
 * pickle/forking_pickler.c); and wait_readable(), the poll(2) loop behind
 * fastmp.connection.wait().
 *
 * Frame: a 4-byte big-endian signed length, then the payload.  A payload
 * longer than 2 GiB - 1 is announced by the length -1 followed by an
 * 8-byte big-endian length (frame.c encodes and decodes it).
 *
 * The two ends of a Pipe() carry their messages (the frames' payloads)
 * through a shared-memory ring per direction instead (pipe_ring.c);
 * their socket tells readiness and end of file. */
#include "connection/connection.h"
#include "connection/frame.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/gil_turn.h"
#include "core/spin.h"
#include "core/state.h"
#include "pickle/forking_pickler.h"
#include "queues/ring.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <structmember.h>

/* Transfers up to this size are first tried with the GIL held (the data is
 * usually there already); larger ones release the GIL straight away. */
#define SMALL_IO (64 * 1024)
/* Fresh buffers at least this large are read in windows, each faulted
 * in with one call (see read_fresh_payload); the first window is this. */
#define LARGE_BUFFER (8 * 1024 * 1024)
#define FIRST_WINDOW (1024 * 1024)
/* A message longer than this and than its pipe's capacity is handed to
 * the pipe by reference (splice.c). */
#define SPLICE_MIN (1024 * 1024)
/* A frame with a payload up to this size is copied into one buffer to be
 * sent. */
#define SMALL_FRAME 1024
/* A pickle written in more pieces than this is joined before sending. */
#define MAX_CHUNKS 64

/* How a descriptor is read and written, learnt when a Connection takes
 * it.  A socket uses recv/sendmsg (the cheapest calls, and they take
 * MSG_DONTWAIT per call).  Anything else uses readv/writev, with
 * RWF_NOWAIT for the attempts that must not block, or without such
 * attempts if the kernel cannot do that for the descriptor. */
enum { IO_SOCKET, IO_RWF, IO_PLAIN };

typedef struct {
    PyObject_HEAD
    int fd;                     /* -1 once closed */
    char readable;
    char writable;
    char kind;                  /* how its I/O is done: an IO_* value */
    spin_state spin;            /* whether its reads spin before sleeping */
    spin_state linger;          /* a Pipe() end: whether its reads linger */
    int pipe_capacity;          /* bytes if a pipe, -1 if not, 0: not known */
    struct chan_map *tx;        /* a Pipe() end: the rings it sends and */
    struct chan_map *rx;        /* receives through (NULL: the fd does) */
    PyObject *dict;
    PyObject *weakrefs;
} ConnObject;

/* ---- checks shared by the methods ------------------------------------- */

/* A file descriptor number from an int-like object.  Returns it, or -1
 * with an exception set (ValueError if negative, OverflowError if too
 * large for an int). */
static int
fd_from_object(PyObject *obj)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0 || v > INT_MAX) {
        PyErr_Format(v < 0 ? PyExc_ValueError : PyExc_OverflowError,
                     "invalid file descriptor: %ld", v);
        return -1;
    }
    return (int)v;
}

static int
check_open(ConnObject *self)
{
    if (self->fd < 0) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    return 0;
}

/* OSError unless the connection is open and may be used for reading (if
 * `reading`) or for writing.  Returns 0 or -1. */
static int
check_usable(ConnObject *self, int reading)
{
    if (check_open(self) < 0) {
        return -1;
    }
    if (reading ? !self->readable : !self->writable) {
        PyErr_SetString(PyExc_OSError, reading ? "connection is write-only"
                                               : "connection is read-only");
        return -1;
    }
    return 0;
}

/* Close the descriptor (once).  Returns 0, or an errno value. */
static int
close_fd(ConnObject *self)
{
    int fd = self->fd;
    if (fd < 0) {
        return 0;
    }
    self->fd = -1;
    /* On Linux the descriptor is gone even when close() reports EINTR */
    if (close(fd) < 0 && errno != EINTR) {
        return errno;
    }
    return 0;
}

/* Let go of a Pipe() end's rings (the last user unmaps them). */
static void
release_rings(ConnObject *self)
{
    chan_map *tx = self->tx, *rx = self->rx;
    self->tx = self->rx = NULL;
    if (tx != NULL) {
        chan_map_decref(tx);
    }
    if (rx != NULL) {
        chan_map_decref(rx);
    }
}

/* The stream can no longer be read in step with the sender: stop reading
 * (close if reading was all it did) and raise OSError.  Returns -1. */
static int
bad_message_length(ConnObject *self, const char *why, uint64_t length)
{
    if (self->writable) {
        self->readable = 0;
    }
    else {
        (void)close_fd(self);
    }
    if (why == NULL) {
        PyErr_SetString(PyExc_OSError, "bad message length");
    }
    else {
        PyErr_Format(PyExc_OSError, "bad message length: %s (%llu bytes announced)",
                     why, (unsigned long long)length);
    }
    return -1;
}

static void
raise_truncated(size_t got, uint64_t want)
{
    PyErr_Format(PyExc_EOFError,
                 "the peer closed the connection in the middle of a message "
                 "(got %zu of %llu bytes)", got, (unsigned long long)want);
}

/* ---- moving bytes ----------------------------------------------------- */

/* One read or write on fd, done the `kind` way; with `nowait`, one that
 * does not block (not used for IO_PLAIN).  Safe without the GIL.  Returns
 * what the system call returns, errno set on failure. */
static ssize_t
io_once(int fd, int kind, int writing, struct iovec *iov, int iovcnt, int nowait)
{
    if (kind == IO_SOCKET) {
        int flags = nowait ? MSG_DONTWAIT : 0;
        /* a peer that has gone gives EPIPE, not a SIGPIPE */
        flags |= writing ? MSG_NOSIGNAL : 0;
        if (iovcnt == 1) {
            return writing ? send(fd, iov[0].iov_base, iov[0].iov_len, flags)
                           : recv(fd, iov[0].iov_base, iov[0].iov_len, flags);
        }
        struct msghdr m;
        memset(&m, 0, sizeof(m));
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)iovcnt;
        return writing ? sendmsg(fd, &m, flags) : recvmsg(fd, &m, flags);
    }
    if (nowait) {
#ifdef RWF_NOWAIT
        return writing ? pwritev2(fd, iov, iovcnt, -1, RWF_NOWAIT)
                       : preadv2(fd, iov, iovcnt, -1, RWF_NOWAIT);
#else
        errno = EOPNOTSUPP;
        return -1;
#endif
    }
    return writing ? writev(fd, iov, iovcnt) : readv(fd, iov, iovcnt);
}

/* One attempt at the transfer without blocking, with the GIL held.
 * Returns the bytes moved, or -1 with errno set (EAGAIN: not ready, or
 * the descriptor cannot be tried without blocking).  Learns the
 * descriptor's kind on the way. */
static ssize_t
try_without_blocking(ConnObject *self, int writing, struct iovec *iov, int iovcnt)
{
    while (self->kind != IO_PLAIN) {
        ssize_t n = io_once(self->fd, self->kind, writing, iov, iovcnt, 1);
        if (n >= 0) {
            return n;
        }
        if (self->kind == IO_SOCKET && errno == ENOTSOCK) {
            self->kind = IO_RWF;
            continue;
        }
        if (self->kind == IO_RWF
            && (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)) {
            self->kind = IO_PLAIN;
            continue;
        }
        return n;
    }
    errno = EAGAIN;
    return -1;
}

/* Drop `n` transferred bytes from the front of the iovec array. */
static void
advance_iov(struct iovec **iov, int *iovcnt, size_t n)
{
    while (*iovcnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* ---- spinning before sleeping (core/spin.c) --------------------------- */

/* The spin state of wait_readable(), which has no connection to keep it
 * (the module runs under the GIL, in one interpreter). */
static spin_state wait_spin;

/* A read that found nothing, retried by fastmp_spin. */
typedef struct {
    int fd, kind;
    struct iovec *iov;
    int iovcnt;
    ssize_t n;                  /* as io_once returned */
    int err;                    /* errno after it */
} spun_read;

/* fastmp_spin's test for a read: try it without blocking (an IO_PLAIN
 * descriptor is polled instead, then read); over when it moved bytes,
 * met end of file or failed otherwise than with EAGAIN. */
static int
read_came(void *arg)
{
    spun_read *r = arg;
    if (r->kind == IO_PLAIN) {
        struct pollfd p = {r->fd, POLLIN, 0};
        int ready = poll(&p, 1, 0);
        if (ready == 0) {
            return 0;
        }
        r->n = ready < 0 ? -1 : io_once(r->fd, r->kind, 0, r->iov, r->iovcnt, 0);
    }
    else {
        r->n = io_once(r->fd, r->kind, 0, r->iov, r->iovcnt, 1);
    }
    r->err = r->n < 0 ? errno : 0;
    return r->n >= 0 || (r->err != EAGAIN && r->err != EWOULDBLOCK);
}

/* Read or write every byte that iov[0..iovcnt) describes (the array is
 * consumed).  A small transfer is first tried without blocking, with the GIL
 * held.  A read that would block spins first while the connection's spin
 * state allows (see read_came).  Retries partial transfers, waits on
 * non-blocking descriptors, and resumes after EINTR once signal handlers
 * have run.  Returns the bytes moved: all of them, or fewer when a read
 * met end of file; -1 with an exception set on error. */
static Py_ssize_t
transfer(ConnObject *self, int writing, struct iovec *iov, int iovcnt)
{
    size_t total = 0, moved = 0;
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    advance_iov(&iov, &iovcnt, 0);
    while (moved < total) {
        ssize_t n = -1;
        int err = EAGAIN;
        if (total - moved <= SMALL_IO) {
            n = try_without_blocking(self, writing, iov, iovcnt);
            err = n < 0 ? errno : 0;
        }
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            int fd = self->fd, kind = self->kind, found = 0;
            int spin = !writing && fastmp_spin_wanted(FASTMP_WAIT_IO, &self->spin);
            int serving = fastmp_serving_release();
            Py_BEGIN_ALLOW_THREADS
            if (spin) {
                spun_read r = {fd, kind, iov, iovcnt, -1, EAGAIN};
                found = fastmp_spin(FASTMP_WAIT_IO, &self->spin, NULL, read_came, &r);
                n = r.n;
                err = r.err;
            }
            if (!found) {
                n = io_once(fd, kind == IO_RWF ? IO_PLAIN : kind, writing, iov, iovcnt, 0);
                err = n < 0 ? errno : 0;
                if (err == EAGAIN || err == EWOULDBLOCK) {
                    /* an O_NONBLOCK descriptor: wait until it is ready */
                    struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
                    if (poll(&p, 1, -1) < 0) {
                        err = errno;
                    }
                }
            }
            if (serving && n > 0) {
                fastmp_serving_wait_turn();
            }
            Py_END_ALLOW_THREADS
            if (serving) {
                fastmp_serving_retake();
            }
        }
        if (n > 0) {
            moved += (size_t)n;
            advance_iov(&iov, &iovcnt, (size_t)n);
            continue;
        }
        if (n == 0 && !writing) {
            break;              /* end of file */
        }
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK || n == 0) {
            continue;
        }
        if (err == ENOTSOCK && self->kind == IO_SOCKET) {
            self->kind = IO_RWF;        /* not a socket after all */
            continue;
        }
        fastmp_oserror(err, writing ? "write" : "read");
        return -1;
    }
    return (Py_ssize_t)moved;
}

/* Read exactly `len` bytes into `buf`.  Returns the bytes read (fewer at
 * end of file) or -1 with an exception set. */
static Py_ssize_t
read_into(ConnObject *self, void *buf, size_t len)
{
    struct iovec iov = {buf, len};
    return transfer(self, 0, &iov, 1);
}

/* Read the next frame header.  Returns 0 with *length set, 1 if the
 * peer closed the connection before the frame began, -1 with an
 * exception set (EOFError when it closed in the middle of the header,
 * OSError for a malformed length). */
static int
read_header(ConnObject *self, uint64_t *length)
{
    unsigned char h[FRAME_LONG_HEADER];
    Py_ssize_t n = read_into(self, h, FRAME_SHORT_HEADER);
    if (n < 0) {
        return -1;
    }
    if (n == 0) {
        return 1;
    }
    if (n < FRAME_SHORT_HEADER) {
        raise_truncated((size_t)n, FRAME_SHORT_HEADER);
        return -1;
    }
    int size = frame_decode(h, FRAME_SHORT_HEADER, length);
    if (size == 0) {
        /* the long form: the length follows */
        size_t rest = FRAME_LONG_HEADER - FRAME_SHORT_HEADER;
        n = read_into(self, h + FRAME_SHORT_HEADER, rest);
        if (n < 0) {
            return -1;
        }
        if ((size_t)n < rest) {
            raise_truncated((size_t)n + FRAME_SHORT_HEADER, FRAME_LONG_HEADER);
            return -1;
        }
        size = frame_decode(h, FRAME_LONG_HEADER, length);
    }
    if (size < 0) {
        return bad_message_length(self, "negative length in the frame header", *length);
    }
    return 0;
}

/* The machine's memory in bytes (0 if unknown), learnt once. */
static uint64_t
machine_memory(void)
{
    static uint64_t memory;
    if (memory == 0) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        memory = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    }
    return memory;
}

/* Check an announced payload length against maxlength (< 0: none) and
 * against what could ever be allocated, before anything is allocated.
 * Returns 0, or -1 with OSError set (the connection stops reading). */
static int
check_length(ConnObject *self, uint64_t length, Py_ssize_t maxlength)
{
    switch (frame_check_length(length, maxlength < 0 ? UINT64_MAX : (uint64_t)maxlength,
                               (uint64_t)(PY_SSIZE_T_MAX - 64), machine_memory())) {
    case FRAME_FITS:
        return 0;
    case FRAME_OVER_MAXLENGTH:
        return bad_message_length(self, NULL, length);
    case FRAME_OVER_OBJECT:
        return bad_message_length(self, "more than a bytes object can hold", length);
    default:
        return bad_message_length(self, "more than this machine's memory", length);
    }
}

/* Read the next frame's header and check the length it announces (see
 * check_length).  Returns 0 with *length set, or -1 with an exception
 * set (EOFError when the peer closed the connection before the frame). */
static int
begin_frame(ConnObject *self, Py_ssize_t maxlength, uint64_t *length)
{
    int r = read_header(self, length);
    if (r > 0) {
        PyErr_SetNone(PyExc_EOFError);
    }
    if (r != 0) {
        return -1;
    }
    return check_length(self, *length, maxlength);
}

/* Read a frame's whole payload of `length` bytes into buf.  Returns 0, or
 * -1 with an exception set (EOFError when the peer closed first). */
static int
read_payload(ConnObject *self, char *buf, uint64_t length)
{
    Py_ssize_t n = read_into(self, buf, (size_t)length);
    if (n >= 0 && (uint64_t)n < length) {
        raise_truncated((size_t)n, length);
        return -1;
    }
    return n < 0 ? -1 : 0;
}

/* Fault in the pages of buf[0..len) with one call instead of one fault
 * per page (GIL released).  Advice only; failures are ignored. */
static void
populate_pages(char *buf, size_t len)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)buf + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)buf + len) & ~(page - 1);
    if (end > start) {
        Py_BEGIN_ALLOW_THREADS
        (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
        Py_END_ALLOW_THREADS
    }
#else
    (void)buf;
    (void)len;
#endif
}

/* read_payload() into a buffer just allocated for it.  A large one is
 * read in windows: the first faults its pages in one at a time as bytes
 * land; each next one, as large as everything that arrived before it, is
 * faulted in with one call first.  So the memory taken grows with the
 * bytes that actually arrive (at most twice them), never with the length
 * the header announced. */
static int
read_fresh_payload(ConnObject *self, char *buf, uint64_t length)
{
    if (length < LARGE_BUFFER) {
        return read_payload(self, buf, length);
    }
    chan_advise_fresh(buf, length);
    uint64_t got = 0;
    while (got < length) {
        uint64_t window = got == 0 ? FIRST_WINDOW : got;
        if (window > length - got) {
            window = length - got;
        }
        if (got > 0) {
            populate_pages(buf + got, (size_t)window);
        }
        Py_ssize_t n = read_into(self, buf + got, (size_t)window);
        if (n < 0) {
            return -1;
        }
        got += (uint64_t)n;
        if ((uint64_t)n < window) {
            raise_truncated((size_t)got, length);
            return -1;
        }
    }
    return 0;
}

/* Read the payload of a frame announcing `length` bytes into a new bytes
 * object.  Returns a new reference, or NULL with an exception set. */
static PyObject *
read_payload_bytes(ConnObject *self, uint64_t length)
{
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (result == NULL) {
        return NULL;
    }
    if (read_fresh_payload(self, PyBytes_AS_STRING(result), length) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* A Pipe() end: take the next message from its ring (see recv_message). */
static PyObject *
ring_recv(ConnObject *self, Py_ssize_t maxlength)
{
    chan_map *m = self->rx;
    uint64_t too_long;
    /* a close() by another thread meanwhile must not unmap the ring */
    chan_map_incref(m);
    PyObject *msg = fastmp_ring_recv(m, self->fd, &self->linger,
                                     maxlength < 0 ? UINT64_MAX : (uint64_t)maxlength,
                                     &too_long);
    chan_map_decref(m);
    if (msg == NULL && too_long) {
        bad_message_length(self, NULL, too_long);
    }
    return msg;
}

/* Read the next message into a new bytes object.  maxlength < 0: no
 * limit.  Returns a new reference, or NULL with an exception set
 * (EOFError when the peer has closed the connection). */
static PyObject *
recv_message(ConnObject *self, Py_ssize_t maxlength)
{
    if (self->rx != NULL) {
        return ring_recv(self, maxlength);
    }
    uint64_t length;
    if (begin_frame(self, maxlength, &length) < 0) {
        return NULL;
    }
    return read_payload_bytes(self, length);
}

/* A Pipe() end: publish the concatenation of bufs[0..n) in its ring (see
 * send_frame). */
static int
ring_send(ConnObject *self, const Py_buffer *bufs, int n)
{
    const char *data = n > 0 ? bufs[0].buf : "";
    uint64_t len = n > 0 ? (uint64_t)bufs[0].len : 0;
    char *joined = NULL;
    if (n > 1) {
        len = 0;
        for (int i = 0; i < n; i++) {
            len += (uint64_t)bufs[i].len;
        }
        if ((joined = PyMem_Malloc(len ? (size_t)len : 1)) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            memcpy(joined + at, bufs[i].buf, (size_t)bufs[i].len);
            at += (size_t)bufs[i].len;
        }
        data = joined;
    }
    chan_map *m = self->tx;
    chan_map_incref(m);             /* see ring_recv */
    int rc = fastmp_ring_send(m, self->fd, data, len);
    chan_map_decref(m);
    PyMem_Free(joined);
    return rc;
}

/* Send one frame whose payload is the concatenation of the buffers
 * bufs[0..n) (n <= MAX_CHUNKS): header and payload go out together, in a
 * single system call when the descriptor takes them.  Returns 0, or -1
 * with an exception set. */
static int
send_frame(ConnObject *self, const Py_buffer *bufs, int n)
{
    if (self->tx != NULL) {
        return ring_send(self, bufs, n);
    }
    struct iovec iov[MAX_CHUNKS + 1];
    unsigned char header[FRAME_LONG_HEADER];
    uint64_t length = 0;
    for (int i = 0; i < n; i++) {
        iov[i + 1].iov_base = bufs[i].buf;
        iov[i + 1].iov_len = (size_t)bufs[i].len;
        length += (uint64_t)bufs[i].len;
    }
    iov[0].iov_base = header;
    iov[0].iov_len = frame_encode(header, length);
    if (length <= SMALL_FRAME) {
        /* one buffer: the kernel takes it with less work than a vector */
        unsigned char frame[FRAME_LONG_HEADER + SMALL_FRAME];
        size_t at = 0;
        for (int i = 0; i <= n; i++) {
            if (iov[i].iov_len > 0) {
                memcpy(frame + at, iov[i].iov_base, iov[i].iov_len);
                at += iov[i].iov_len;
            }
        }
        struct iovec whole = {frame, at};
        return transfer(self, 1, &whole, 1) < 0 ? -1 : 0;
    }
    if (length >= SPLICE_MIN && self->pipe_capacity == 0) {
        self->pipe_capacity = fastmp_pipe_capacity(self->fd);
    }
    if (length < SPLICE_MIN || self->pipe_capacity < 0
        || length <= (uint64_t)self->pipe_capacity) {
        return transfer(self, 1, iov, n + 1) < 0 ? -1 : 0;
    }
    /* It would not fit in the pipe anyway: the send waits for the reader
     * either way, and the reader's copy can be the only one. */
    if (transfer(self, 1, iov, 1) < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int rc = fastmp_splice_to_pipe(self->fd, bufs[i].buf, (size_t)bufs[i].len);
        if (rc < 0) {
            return -1;
        }
        if (rc > 0) {
            self->pipe_capacity = -1;
            return transfer(self, 1, iov + 1 + i, n - i) < 0 ? -1 : 0;
        }
    }
    return 0;
}

/* Send the bytes-like objects objs[0..n) as one message.  Returns 0, or
 * -1 with an exception set. */
static int
send_objects(ConnObject *self, PyObject *const *objs, Py_ssize_t n)
{
    Py_buffer bufs[MAX_CHUNKS] = {{0}};  /* zeroed: quiets a false gcc -O2 warning */
    int got = 0, rc = -1;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(objs[got], &bufs[got], PyBUF_SIMPLE) < 0) {
            goto done;
        }
    }
    rc = send_frame(self, bufs, got);
done:
    for (int i = 0; i < got; i++) {
        PyBuffer_Release(&bufs[i]);
    }
    return rc;
}

/* Send a fastmp_pickle() result as one frame.  Returns 0, or -1 with an
 * exception set. */
static int
send_pickle(ConnObject *self, PyObject *payload)
{
    if (!PyList_CheckExact(payload)) {
        return send_objects(self, &payload, 1);
    }
    Py_ssize_t n = PyList_GET_SIZE(payload);
    if (n <= MAX_CHUNKS) {
        return send_objects(self, PySequence_Fast_ITEMS(payload), n);
    }
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *joined = empty ? PyObject_CallMethod(empty, "join", "O", payload) : NULL;
    Py_XDECREF(empty);
    if (joined == NULL) {
        return -1;
    }
    int rc = send_objects(self, &joined, 1);
    Py_DECREF(joined);
    return rc;
}

/* ---- waiting ---------------------------------------------------------- */

/* A poll(2) of descriptors, retried by fastmp_spin. */
typedef struct {
    struct pollfd *fds;
    nfds_t nfds;
    int n;                      /* what the last poll returned */
} spun_poll;

/* fastmp_spin's test for a poll: over when a descriptor has an event or
 * poll failed. */
static int
poll_came(void *arg)
{
    spun_poll *p = arg;
    return (p->n = poll(p->fds, p->nfds, 0)) != 0;
}

/* poll(2) the descriptors until one has an event or the deadline passes:
 * first without blocking with the GIL held, then with it released,
 * spinning first as the spin state `s` allows;
 * after EINTR the signal handlers run and the wait resumes against the
 * same deadline.  Returns the number of descriptors with events, 0 on
 * timeout, -1 with an exception set. */
static int
poll_until(struct pollfd *fds, nfds_t nfds, const fastmp_deadline *d, spin_state *s)
{
    int n = poll(fds, nfds, 0);
    for (;;) {
        int err = n < 0 ? errno : 0;
        if (n > 0) {
            return n;
        }
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
        }
        else if (err != 0) {
            fastmp_oserror(err, "poll");
            return -1;
        }
        int ms = fastmp_deadline_remaining_ms(d);
        if (ms == 0 && err == 0) {
            return 0;
        }
        int spin = fastmp_spin_wanted(FASTMP_WAIT_IO, s);
        Py_BEGIN_ALLOW_THREADS
        spun_poll p = {fds, nfds, 0};
        if (spin && fastmp_spin(FASTMP_WAIT_IO, s, d, poll_came, &p)) {
            n = p.n;
        }
        else {
            n = poll(fds, nfds, fastmp_deadline_remaining_ms(d));
        }
        Py_END_ALLOW_THREADS
    }
}

/* ---- Connection methods ----------------------------------------------- */

/* Make fd the connection's descriptor, and learn its kind (a descriptor
 * that cannot tell is taken for a socket until its first I/O). */
static void
adopt_fd(ConnObject *self, int fd)
{
    self->fd = fd;
    self->kind = IO_SOCKET;
    if (fd >= 0) {
        int type;
        socklen_t len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 && errno == ENOTSOCK) {
            self->kind = IO_RWF;
        }
    }
    memset(&self->spin, 0, sizeof(self->spin));
    memset(&self->linger, 0, sizeof(self->linger));
    self->pipe_capacity = 0;
}

static PyObject *
Conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ConnObject *self = (ConnObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        adopt_fd(self, -1);     /* closed until __init__ gives it one */
    }
    return (PyObject *)self;
}

static int
Conn_init(ConnObject *self, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"handle", "readable", "writable"};
    PyObject *a[3];
    int readable = 1, writable = 1;
    if (fastmp_bind_slot_args("Connection", args, kwds, names, 3, 1, a) < 0
        || (a[1] != NULL && (readable = PyObject_IsTrue(a[1])) < 0)
        || (a[2] != NULL && (writable = PyObject_IsTrue(a[2])) < 0)) {
        return -1;
    }
    PyObject *handle = a[0];
    PyObject *index = PyNumber_Index(handle);
    if (index == NULL) {
        return -1;
    }
    long fd = PyLong_AsLong(index);
    Py_DECREF(index);
    if (fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid handle");
        return -1;
    }
    if (!readable && !writable) {
        PyErr_SetString(PyExc_ValueError,
                        "at least one of `readable` and `writable` must be True");
        return -1;
    }
    adopt_fd(self, (int)fd);
    self->readable = (char)readable;
    self->writable = (char)writable;
    return 0;
}

static int
Conn_traverse(ConnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    return 0;
}

static int
Conn_clear(ConnObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void
Conn_dealloc(ConnObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)close_fd(self);
    release_rings(self);
    Py_CLEAR(self->dict);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(send_doc, "send($self, obj)\n--\n\nSend a picklable object.");

int
fastmp_connection_send(PyObject *conn, PyObject *obj)
{
    ConnObject *self = (ConnObject *)conn;
    if (check_usable(self, 0) < 0) {
        return -1;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    PyObject *payload = st ? fastmp_pickle(st, obj) : NULL;
    if (payload == NULL) {
        return -1;
    }
    int rc = send_pickle(self, payload);
    Py_DECREF(payload);
    return rc;
}

static PyObject *
Conn_send(ConnObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj"};
    PyObject *obj;
    if (fastmp_bind_args("send", args, nargs, kwnames, names, 1, 1, &obj) < 0
        || fastmp_connection_send((PyObject *)self, obj) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(recv_doc, "recv($self, /)\n--\n\nReceive a pickled object.");

PyObject *
fastmp_connection_recv(PyObject *conn)
{
    ConnObject *self = (ConnObject *)conn;
    if (check_usable(self, 1) < 0) {
        return NULL;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    PyObject *loads = st ? fastmp_unpickler(st) : NULL;
    if (loads == NULL) {
        return NULL;
    }
    PyObject *data = recv_message(self, -1);
    if (data == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(loads, data);
    Py_DECREF(data);
    return obj;
}

static PyObject *
Conn_recv(ConnObject *self, PyObject *unused)
{
    return fastmp_connection_recv((PyObject *)self);
}

/* An optional non-negative integer argument; `dflt` when absent or None.
 * Returns -1 with an exception set (ValueError `negative` if < 0). */
static Py_ssize_t
size_arg(PyObject *obj, Py_ssize_t dflt, const char *negative)
{
    if (obj == NULL || obj == Py_None) {
        return dflt;
    }
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, negative);
        return -1;
    }
    return v;
}

int
fastmp_connection_send_bytes(PyObject *conn, PyObject *data)
{
    ConnObject *self = (ConnObject *)conn;
    Py_buffer view;
    if (check_usable(self, 0) < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    int rc = send_frame(self, &view, 1);
    PyBuffer_Release(&view);
    return rc;
}

PyDoc_STRVAR(send_bytes_doc,
"send_bytes($self, buf, offset=0, size=None)\n--\n\n"
"Send the bytes of a bytes-like object, from offset (in bytes) for size bytes.");

static PyObject *
Conn_send_bytes(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"buf", "offset", "size"};
    PyObject *a[3];
    if (fastmp_bind_args("send_bytes", args, nargs, kwnames, names, 3, 1, a) < 0
        || check_usable(self, 0) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = -1;
    Py_ssize_t offset = size_arg(a[1], 0, "offset is negative");
    if (offset < 0) {
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto done;
    }
    Py_ssize_t size = size_arg(a[2], view.len - offset, "size is negative");
    if (size < 0) {
        goto done;
    }
    if (size > view.len - offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
        goto done;
    }
    Py_buffer part = view;
    part.buf = (char *)view.buf + offset;
    part.len = size;
    rc = send_frame(self, &part, 1);
done:
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(recv_bytes_doc,
"recv_bytes($self, maxlength=None)\n--\n\n"
"Receive one message as bytes.  A message longer than maxlength raises\n"
"OSError and the connection stops reading.");

static PyObject *
Conn_recv_bytes(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"maxlength"};
    PyObject *a[1];
    if (fastmp_bind_args("recv_bytes", args, nargs, kwnames, names, 1, 0, a) < 0
        || check_usable(self, 1) < 0) {
        return NULL;
    }
    Py_ssize_t maxlength = size_arg(a[0], PY_SSIZE_T_MAX, "negative maxlength");
    if (maxlength < 0) {
        return NULL;
    }
    return recv_message(self, maxlength);
}

PyObject *
fastmp_connection_recv_bytes(PyObject *conn)
{
    ConnObject *self = (ConnObject *)conn;
    if (check_usable(self, 1) < 0) {
        return NULL;
    }
    return recv_message(self, PY_SSIZE_T_MAX);
}

PyDoc_STRVAR(recv_bytes_into_doc,
"recv_bytes_into($self, buf, offset=0)\n--\n\n"
"Receive one message into a writable buffer at offset (in bytes); return\n"
"its length.  BufferTooShort, carrying the message, if it does not fit.");

static PyObject *
Conn_recv_bytes_into(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    static const char *const names[] = {"buf", "offset"};
    PyObject *a[2];
    if (fastmp_bind_args("recv_bytes_into", args, nargs, kwnames, names, 2, 1, a) < 0
        || check_usable(self, 1) < 0) {
        return NULL;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    uint64_t length;
    Py_ssize_t offset = size_arg(a[1], 0, "negative offset");
    if (offset < 0) {
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto done;
    }
    if (self->rx != NULL) {
        /* a Pipe() end: the message is read whole from the ring */
        PyObject *message = ring_recv(self, -1);
        if (message == NULL) {
            goto done;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(message);
        if (n > view.len - offset) {
            PyErr_SetObject(st->BufferTooShort, message);
        }
        else {
            memcpy((char *)view.buf + offset, PyBytes_AS_STRING(message), (size_t)n);
            result = PyLong_FromSsize_t(n);
        }
        Py_DECREF(message);
        goto done;
    }
    if (begin_frame(self, -1, &length) < 0) {
        goto done;
    }
    if (length > (uint64_t)(view.len - offset)) {
        /* does not fit: hand the whole message over in the exception */
        PyObject *message = read_payload_bytes(self, length);
        if (message != NULL) {
            PyErr_SetObject(st->BufferTooShort, message);
            Py_DECREF(message);
        }
        goto done;
    }
    if (read_payload(self, (char *)view.buf + offset, length) == 0) {
        result = PyLong_FromUnsignedLongLong((unsigned long long)length);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(poll_doc,
"poll($self, timeout=0.0)\n--\n\n"
"Whether a message (or end of file) can be read, waiting up to timeout\n"
"seconds (None: without limit).");

static PyObject *
Conn_poll(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    if (fastmp_bind_args("poll", args, nargs, kwnames, names, 1, 0, a) < 0
        || check_usable(self, 1) < 0) {
        return NULL;
    }
    fastmp_deadline d;
    if (a[0] == NULL) {
        fastmp_deadline_from_seconds(0.0, &d);
    }
    else if (fastmp_deadline_from_object(a[0], &d) < 0) {
        return NULL;
    }
    if (self->rx != NULL) {
        chan_map *m = self->rx;
        chan_map_incref(m);         /* see ring_recv */
        int ready = fastmp_ring_poll(m, self->fd, &d);
        chan_map_decref(m);
        return ready < 0 ? NULL : PyBool_FromLong(ready);
    }
    struct pollfd p = {self->fd, POLLIN, 0};
    int n = poll_until(&p, 1, &d, &self->spin);
    if (n < 0) {
        return NULL;
    }
    if (p.revents & POLLNVAL) {
        return fastmp_oserror(EBADF, "poll");
    }
    return PyBool_FromLong(n > 0);
}

static PyObject *
Conn_fileno(ConnObject *self, PyObject *unused)
{
    if (check_open(self) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->fd);
}

static PyObject *
Conn_close(ConnObject *self, PyObject *unused)
{
    release_rings(self);
    int err = close_fd(self);
    if (err != 0) {
        return fastmp_oserror(err, "close");
    }
    Py_RETURN_NONE;
}

static PyObject *
Conn_enter(ConnObject *self, PyObject *unused)
{
    return Py_NewRef(self);
}

static PyObject *
Conn_exit(ConnObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Conn_close(self, NULL);
}

static PyObject *
Conn_reduce(ConnObject *self, PyObject *unused)
{
    PyErr_Format(PyExc_TypeError,
                 "cannot pickle '%s' object: a Connection travels only with "
                 "fastmp's ForkingPickler (to a child process or through "
                 "another Connection)", Py_TYPE(self)->tp_name);
    return NULL;
}

static PyObject *
Conn_get_closed(ConnObject *self, void *unused)
{
    return PyBool_FromLong(self->fd < 0);
}

static PyObject *
Conn_get_readable(ConnObject *self, void *unused)
{
    return PyBool_FromLong(self->readable);
}

static PyObject *
Conn_get_writable(ConnObject *self, void *unused)
{
    return PyBool_FromLong(self->writable);
}

/* _handle: the descriptor, or None once closed.  Setting None forgets the
 * descriptor without closing it (the standard test-suite does this). */
static PyObject *
Conn_get_handle(ConnObject *self, void *unused)
{
    if (self->fd < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(self->fd);
}

static int
Conn_set_handle(ConnObject *self, PyObject *value, void *unused)
{
    if (value == NULL || value == Py_None) {
        self->fd = -1;
        return 0;
    }
    int fd = fd_from_object(value);
    if (fd < 0) {
        return -1;
    }
    adopt_fd(self, fd);
    return 0;
}

/* _pair_rings(other, capacity): self and other, the two ends of a fresh
 * socketpair, become a Pipe(): a ring of `capacity` bytes per direction
 * carries their messages. */
static PyObject *
Conn_pair_rings(ConnObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (fastmp_check_nargs("_pair_rings", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->Connection_type)) {
        PyErr_Format(PyExc_TypeError, "_pair_rings() other must be a Connection, not %s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    ConnObject *other = (ConnObject *)args[0];
    long long capacity = PyLong_AsLongLong(args[1]);
    if (capacity == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!chan_capacity_valid(capacity)) {
        PyErr_SetString(PyExc_ValueError, CHAN_CAPACITY_ERROR);
        return NULL;
    }
    chan_map *out = NULL, *in = NULL;
    int err = chan_map_create((uint64_t)capacity, 0, CHAN_PIPE, &out);
    if (err == 0 && (err = chan_map_create((uint64_t)capacity, 0, CHAN_PIPE, &in)) != 0) {
        chan_map_decref(out);
    }
    if (err) {
        return fastmp_oserror(err, "memfd_create");
    }
    release_rings(self);
    release_rings(other);
    chan_map_incref(out);
    chan_map_incref(in);
    self->tx = other->rx = out;
    self->rx = other->tx = in;
    Py_RETURN_NONE;
}

/* _attach_rings(tx_fd, rx_fd): make this end use the rings of another
 * process's Pipe() end (received as descriptors, which it takes over:
 * they are closed on failure too). */
static PyObject *
Conn_attach_rings(ConnObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("_attach_rings", nargs, 2, 2) < 0) {
        return NULL;
    }
    int fds[2];
    for (int i = 0; i < 2; i++) {
        if ((fds[i] = fd_from_object(args[i])) < 0) {
            if (i == 1) {
                (void)close(fds[0]);
            }
            return NULL;
        }
    }
    chan_map *tx = NULL, *rx = NULL;
    int err = chan_map_attach(fds[0], -1, &tx);
    if (err) {
        (void)close(fds[0]);
    }
    else if ((err = chan_map_attach(fds[1], -1, &rx)) != 0) {
        chan_map_decref(tx);
    }
    if (err) {
        (void)close(fds[1]);
        return fastmp_oserror(err, "mmap");
    }
    release_rings(self);
    self->tx = tx;
    self->rx = rx;
    Py_RETURN_NONE;
}

/* _bell_rung(): whether messages wait in this Pipe() end's ring, so that
 * its socket holds a bell (False for other connections). */
static PyObject *
Conn_bell_rung(ConnObject *self, PyObject *unused)
{
    return PyBool_FromLong(self->rx != NULL
                           && __atomic_load_n(&self->rx->sh->pipe_pending, __ATOMIC_ACQUIRE) > 0);
}

/* _peer_bell_rung(): whether messages this Pipe() end sent wait in its
 * peer's ring, so that the peer's socket holds our bell (False for other
 * connections). */
static PyObject *
Conn_peer_bell_rung(ConnObject *self, PyObject *unused)
{
    return PyBool_FromLong(self->tx != NULL
                           && __atomic_load_n(&self->tx->sh->pipe_pending, __ATOMIC_ACQUIRE) > 0);
}

/* _ring_fds(): (tx_fd, rx_fd) of a Pipe() end's rings, or None. */
static PyObject *
Conn_ring_fds(ConnObject *self, PyObject *unused)
{
    if (self->tx == NULL) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(ii)", self->tx->fd, self->rx->fd);
}

static PyMethodDef Conn_methods[] = {
    {"_pair_rings", (PyCFunction)(void (*)(void))Conn_pair_rings, METH_FASTCALL,
     "_pair_rings($self, other, capacity, /)\n--\n\n"},
    {"_attach_rings", (PyCFunction)(void (*)(void))Conn_attach_rings, METH_FASTCALL,
     "_attach_rings($self, tx_fd, rx_fd, /)\n--\n\n"},
    {"_ring_fds", (PyCFunction)Conn_ring_fds, METH_NOARGS, "_ring_fds($self, /)\n--\n\n"},
    {"_bell_rung", (PyCFunction)Conn_bell_rung, METH_NOARGS, "_bell_rung($self, /)\n--\n\n"},
    {"_peer_bell_rung", (PyCFunction)Conn_peer_bell_rung, METH_NOARGS, "_peer_bell_rung($self, /)\n--\n\n"},
    {"send", (PyCFunction)(void (*)(void))Conn_send, METH_FASTCALL | METH_KEYWORDS, send_doc},
    {"recv", (PyCFunction)Conn_recv, METH_NOARGS, recv_doc},
    {"send_bytes", (PyCFunction)(void (*)(void))Conn_send_bytes,
     METH_FASTCALL | METH_KEYWORDS, send_bytes_doc},
    {"recv_bytes", (PyCFunction)(void (*)(void))Conn_recv_bytes,
     METH_FASTCALL | METH_KEYWORDS, recv_bytes_doc},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))Conn_recv_bytes_into,
     METH_FASTCALL | METH_KEYWORDS, recv_bytes_into_doc},
    {"poll", (PyCFunction)(void (*)(void))Conn_poll,
     METH_FASTCALL | METH_KEYWORDS, poll_doc},
    {"fileno", (PyCFunction)Conn_fileno, METH_NOARGS,
     PyDoc_STR("fileno($self, /)\n--\n\nThe connection's file descriptor.")},
    {"close", (PyCFunction)Conn_close, METH_NOARGS,
     PyDoc_STR("close($self, /)\n--\n\nClose the connection (again: no effect).")},
    {"__enter__", (PyCFunction)Conn_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", (PyCFunction)(void (*)(void))Conn_exit, METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\n"},
    {"__reduce__", (PyCFunction)Conn_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Conn_getset[] = {
    {"closed", (getter)Conn_get_closed, NULL, "True once the connection is closed", NULL},
    {"readable", (getter)Conn_get_readable, NULL, "True if the connection can receive", NULL},
    {"writable", (getter)Conn_get_writable, NULL, "True if the connection can send", NULL},
    {"_handle", (getter)Conn_get_handle, (setter)Conn_set_handle,
     "the file descriptor, or None once closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Conn_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(ConnObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ConnObject, weakrefs), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Conn_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
        "Connection(handle, readable=True, writable=True)\n--\n\n"
        "Messages over a pipe or socket file descriptor, framed as the\n"
        "standard multiprocessing.connection.Connection frames them.")},
    {Py_tp_new, Conn_new},
    {Py_tp_init, Conn_init},
    {Py_tp_dealloc, Conn_dealloc},
    {Py_tp_traverse, Conn_traverse},
    {Py_tp_clear, Conn_clear},
    {Py_tp_methods, Conn_methods},
    {Py_tp_getset, Conn_getset},
    {Py_tp_members, Conn_members},
    {0, NULL},
};

static PyType_Spec Conn_spec = {
    .name = "fastmp.connection.Connection",
    .basicsize = sizeof(ConnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Conn_slots,
};

/* ---- the methods other parts call directly (connection.h) ------------ */

/* Their names, in the order of st->conn_direct_methods. */
static const char *const direct_names[FASTMP_CONN_DIRECT_METHODS] = {
    "send", "recv", "send_bytes", "recv_bytes",
};

int
fastmp_connection_is_direct(fastmp_state *st, PyObject *conn)
{
    if (!PyObject_TypeCheck(conn, st->Connection_type)) {
        return 0;
    }
    PyTypeObject *tp = Py_TYPE(conn);
    if (tp->tp_getattro != PyObject_GenericGetAttr) {
        return 0;               /* a subclass's __getattribute__/__getattr__ */
    }
    PyObject *dict = ((ConnObject *)conn)->dict;
    if (dict != NULL && PyDict_GET_SIZE(dict) > 0) {
        for (int i = 0; i < FASTMP_CONN_DIRECT_METHODS; i++) {
            int shadowed = PyDict_Contains(dict, PyDescr_NAME(st->conn_direct_methods[i]));
            if (shadowed != 0) {
                return shadowed < 0 ? -1 : 0;
            }
        }
    }
    /* The plain type is looked at again only after a change to it (which
     * gives it a new version tag): the lookups cost a manager call ~10 %. */
    int plain = tp == st->Connection_type;
    if (plain && tp->tp_version_tag != 0 && tp->tp_version_tag == st->conn_direct_tag) {
        return 1;
    }
    for (int i = 0; i < FASTMP_CONN_DIRECT_METHODS; i++) {
        PyObject *method = st->conn_direct_methods[i];
        /* the type's own lookup (cached): a method descriptor looked up
         * on a class is the descriptor itself */
        PyObject *found = PyObject_GetAttr((PyObject *)tp, PyDescr_NAME(method));
        if (found == NULL) {
            return -1;
        }
        Py_DECREF(found);
        if (found != method) {
            return 0;
        }
    }
    if (plain) {
        /* the lookups gave the type a tag if it had none */
        st->conn_direct_tag = tp->tp_version_tag;
    }
    return 1;
}

/* ---- wait_readable ---------------------------------------------------- */

PyDoc_STRVAR(wait_readable_doc,
"wait_readable($module, fds, timeout=None, /)\n--\n\n"
"Wait until one of the file descriptors fds is readable, at end of file or\n"
"in error, or timeout seconds pass (None: without limit).  Return the\n"
"positions in fds of those that are, in order (empty on timeout).");

static PyObject *
wait_readable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("wait_readable", nargs, 1, 2) < 0) {
        return NULL;
    }
    fastmp_deadline d;
    if (fastmp_deadline_from_object(nargs > 1 ? args[1] : Py_None, &d) < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "fds must be a sequence of file descriptors");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    struct pollfd *fds = PyMem_New(struct pollfd, n > 0 ? n : 1);
    PyObject *result = NULL;
    if (fds == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int fd = fd_from_object(PySequence_Fast_GET_ITEM(seq, i));
        if (fd < 0) {
            goto done;
        }
        fds[i].fd = fd;
        fds[i].events = POLLIN;
        fds[i].revents = 0;
    }
    if (poll_until(fds, (nfds_t)n, &d, &wait_spin) < 0 || (result = PyList_New(0)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fds[i].revents == 0) {
            continue;
        }
        PyObject *pos = PyLong_FromSsize_t(i);
        if (pos == NULL || PyList_Append(result, pos) < 0) {
            Py_XDECREF(pos);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(pos);
    }
done:
    PyMem_Free(fds);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef connection_functions[] = {
    {"wait_readable", (PyCFunction)(void (*)(void))wait_readable, METH_FASTCALL,
     wait_readable_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- module hooks ----------------------------------------------------- */

int
fastmp_connection_exec(PyObject *module, fastmp_state *st)
{
    st->Connection_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Conn_spec, NULL);
    if (st->Connection_type == NULL
        || PyModule_AddObjectRef(module, "Connection", (PyObject *)st->Connection_type) < 0
        || PyModule_AddFunctions(module, connection_functions) < 0) {
        return -1;
    }
    for (int i = 0; i < FASTMP_CONN_DIRECT_METHODS; i++) {
        st->conn_direct_methods[i] = PyObject_GetAttrString((PyObject *)st->Connection_type,
                                                            direct_names[i]);
        if (st->conn_direct_methods[i] == NULL) {
            return -1;
        }
    }
    return fastmp_serving_init();
}

int
fastmp_connection_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Connection_type);
    for (int i = 0; i < FASTMP_CONN_DIRECT_METHODS; i++) {
        Py_VISIT(st->conn_direct_methods[i]);
    }
    return 0;
}

void
fastmp_connection_clear(fastmp_state *st)
{
    Py_CLEAR(st->Connection_type);
    for (int i = 0; i < FASTMP_CONN_DIRECT_METHODS; i++) {
        Py_CLEAR(st->conn_direct_methods[i]);
    }
}
