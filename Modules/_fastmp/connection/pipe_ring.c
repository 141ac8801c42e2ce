/* pipe_ring.c - the messages of a Pipe() end travel through a
 * shared-memory ring per direction (the Queue's channel ring, see
 * queues/ring.h), while the end's socket stays for what its descriptor is used
 * for: readiness, end of file, BrokenPipeError and passing descriptors.
 *
 * Readiness ("bells"): the ring's `pipe_pending` counts the messages
 * published and not yet taken.  A writer whose increment takes it from 0
 * writes one byte into the socket; a reader whose decrement takes it to 0
 * reads one byte out.  So the socket holds a byte exactly while messages
 * wait, and select()/poll() on fileno() tell the truth; a stream whose
 * reader lags behind makes no system call at all.  Writers publish, count
 * and ring holding `wlock`; readers take, count and read the bell holding
 * `rlock`.  With both locks held and nothing in the ring, the count must
 * be 0 and the socket empty: `reconcile` restores that after a process
 * was killed between two of these steps. */
#include "connection/connection.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/spin.h"
#include "queues/ring.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

/* A reader waiting for its bell polls the socket in slices of this many
 * ms while a writer holds wlock, for at most BELL_PATIENCE_MS in all. */
#define BELL_SLICE_MS 1
#define BELL_PATIENCE_MS 100
/* A sleeping reader wakes this often (ms) to look at the ring itself, so
 * that a bell lost with a killed writer delays it, never hangs it. */
#define WAIT_SLICE_MS 50

/* True once every copy of the peer's end is closed. */
static int
peer_gone(int fd)
{
    struct pollfd p = {fd, 0, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

/* ---- writing ---------------------------------------------------------- */

/* Take wlock, waiting (GIL released) as long as it takes, and repair
 * what a writer before left unfinished.  Returns 0, or -1 with an
 * exception set (the lock is not held then). */
static int
lock_writer(chan_map *m)
{
    int err = chan_lock_writer(m, &chan_no_wait, 1);
    if (err == EBUSY) {
        if (chan_lock_blocking(&m->sh->wlock) < 0) {
            return -1;
        }
        if ((err = chan_repair_writer(m)) != 0) {
            chan_unlock(&m->sh->wlock);
        }
    }
    if (err) {
        chan_oserror(m, err, "pthread_mutex_lock");
        return -1;
    }
    return 0;
}

int
fastmp_ring_send(chan_map *m, int fd, const char *data, uint64_t len)
{
    chan_shared *sh = m->sh;
    if (lock_writer(m) < 0) {
        return -1;
    }
    int err = chan_try_write_whole(m, data, len, 0);
    if (err == CHAN_CORRUPT) {
        chan_unlock(&sh->wlock);
        chan_raise_corrupt(m);
        return -1;
    }
    if (err != 0) {
        /* no room now, or too large for one record: stream it, looking
         * for signals and for a reader that went away between slices */
        chan_wmsg w = {data, len, 0, 0, 0};
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            err = chan_write(m, &w, &chan_forever);
            Py_END_ALLOW_THREADS
            if (err == 0) {
                break;
            }
            /* a message left half-published stays flagged: the next
             * writer aborts it for the readers */
            if (err != EINTR && err != ETIMEDOUT) {
                chan_unlock(&sh->wlock);
                chan_oserror(m, err, "futex");
                return -1;
            }
            if (PyErr_CheckSignals() < 0) {
                chan_unlock(&sh->wlock);
                return -1;
            }
            if (peer_gone(fd)) {
                chan_unlock(&sh->wlock);
                errno = EPIPE;
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
    }
    err = 0;
    if (__atomic_fetch_add(&sh->pipe_pending, 1, __ATOMIC_ACQ_REL) == 0) {
        ssize_t n;
        do {
            n = send(fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        /* EAGAIN: the socket is full of bytes already, it is readable */
        err = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK ? errno : 0;
    }
    chan_unlock(&sh->wlock);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);  /* EPIPE: BrokenPipeError */
        return -1;
    }
    return 0;
}

/* ---- reading ---------------------------------------------------------- */

/* Read the bells (NUL bytes) at the front of the socket, without
 * blocking; stop before anything else (send_handle's message, whose data
 * byte is the descriptor count).  Returns 1 if something else is there. */
static int
drain_bells(int fd)
{
    char buf[64];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT), bells = 0;
        while (bells < n && buf[bells] == 0) {
            bells++;
        }
        if (bells > 0 && recv(fd, buf, (size_t)bells, MSG_DONTWAIT) != bells) {
            return 0;
        }
        if (bells < n || n <= 0) {
            return bells < n;
        }
    }
}

/* Holding rlock with the ring empty: if the count is off (or with `stale`,
 * when the socket showed a byte) and no writer is at work, set the count
 * to 0 and take the bells out of the socket.  A writer killed mid-message
 * is repaired first (its ABORT record is then there to read).  Returns 1
 * if the socket holds something else than bells. */
static int
reconcile(chan_map *m, int fd, int stale)
{
    chan_shared *sh = m->sh;
    if (!stale && __atomic_load_n(&sh->pipe_pending, __ATOMIC_ACQUIRE) == 0) {
        return 0;
    }
    if (chan_readable(m) || chan_lock(&sh->wlock, &chan_no_wait, 0) != 0) {
        return 0;
    }
    if (chan_repair_writer(m) != 0) {
        chan_unlock(&sh->wlock);        /* broken: the next read says so */
        return 0;
    }
    int foreign = 0;
    if (!chan_readable(m)) {
        __atomic_store_n(&sh->pipe_pending, 0, __ATOMIC_RELEASE);
        foreign = drain_bells(fd);
    }
    chan_unlock(&sh->wlock);
    return foreign;
}

/* Holding rlock, having taken the message that brought the count to 0:
 * read its bell.  The writer that counted it rings while still holding
 * wlock, so while wlock is busy the bell may be on its way (wait for it,
 * a while); once wlock is free it is there or never comes (its writer was
 * killed).  A bell that comes later still is left to reconcile(). */
static void
take_bell(chan_map *m, int fd)
{
    char bell;
    if (recv(fd, &bell, 1, MSG_DONTWAIT) >= 0) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int waited = 0; waited < BELL_PATIENCE_MS; waited += BELL_SLICE_MS) {
        if (chan_lock(&m->sh->wlock, &chan_no_wait, 0) == 0) {
            chan_unlock(&m->sh->wlock);
            (void)!recv(fd, &bell, 1, MSG_DONTWAIT);
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, BELL_SLICE_MS) > 0 && recv(fd, &bell, 1, MSG_DONTWAIT) >= 0) {
            break;
        }
    }
    Py_END_ALLOW_THREADS
}

/* Wait, GIL released, until the ring has data, the socket has an event
 * (a bell, the peer closing) or `d` passes, in slices of WAIT_SLICE_MS.
 * Spins on the ring first as the Queue's readers do (chan_spin_data:
 * a spin record per process and ring).  After a
 * `stale` byte was seen in the socket, sleeps a slice of BELL_SLICE_MS
 * instead of polling it.  Returns the socket's events (0 if none), or -1
 * with an exception set (a signal handler raised, or poll failed). */
static int
wait_ring(chan_map *m, int fd, const fastmp_deadline *d, int stale)
{
    int n = 0, err = 0;
    struct pollfd p = {fd, POLLIN, 0};
    Py_BEGIN_ALLOW_THREADS
    int ms = fastmp_deadline_remaining_ms(d);
    if (ms != 0 && !stale && chan_spin_data(m)) {
        ms = 0;
    }
    else if (!chan_available(m)) {
        int slice = stale ? BELL_SLICE_MS : WAIT_SLICE_MS;
        if (ms < 0 || ms > slice) {
            ms = slice;
        }
        n = poll(&p, stale ? 0 : 1, ms);
        err = n < 0 ? errno : 0;
    }
    Py_END_ALLOW_THREADS
    /* also after a slice: a signal may have come while not in poll() */
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    if (err == EINTR) {
        return 0;
    }
    if (err) {
        fastmp_oserror(err, "poll");
        return -1;
    }
    if (n > 0 && (p.revents & POLLNVAL)) {
        fastmp_oserror(EBADF, "poll");
        return -1;
    }
    return n > 0 ? p.revents : 0;
}

/* fastmp_spin's test for linger: the writer counted another message */
static int
next_counted(void *sh)
{
    return __atomic_load_n(&((chan_shared *)sh)->pipe_pending, __ATOMIC_ACQUIRE) != 1;
}

/* The reader holds the last message counted: taking it brings the count
 * to 0 and costs both sides a system call (the bell read here, the next
 * one rung by the writer).  A writer streaming messages counts its next
 * one within a microsecond or so: spin that long (FASTMP_WAIT_PIPE_COUNT,
 * GIL held, rlock held), while `s` shows it pays, so that the count stays
 * above 0 for as long as the stream lasts. */
static void
linger(chan_shared *sh, spin_state *s)
{
    if (!next_counted(sh) && fastmp_spin_wanted(FASTMP_WAIT_PIPE_COUNT, s)) {
        (void)fastmp_spin(FASTMP_WAIT_PIPE_COUNT, s, NULL, next_counted, sh);
    }
}

PyObject *
fastmp_ring_recv(chan_map *m, int fd, spin_state *lingering, uint64_t limit,
                 uint64_t *too_long)
{
    chan_shared *sh = m->sh;
    int stale = 0;
    *too_long = 0;
    for (;;) {
        if (chan_lock_blocking(&sh->rlock) < 0) {
            return NULL;
        }
        uint32_t flags;
        PyObject *msg = chan_read_message(m, 0, &chan_no_wait, &flags, limit, too_long);
        if (msg != NULL) {
            linger(sh, lingering);
            if (__atomic_sub_fetch(&sh->pipe_pending, 1, __ATOMIC_ACQ_REL) == 0) {
                take_bell(m, fd);
            }
            chan_unlock(&sh->rlock);
            return msg;
        }
        if (PyErr_Occurred() || *too_long) {
            chan_unlock(&sh->rlock);
            return NULL;
        }
        (void)reconcile(m, fd, stale);
        chan_unlock(&sh->rlock);
        int events = wait_ring(m, fd, &chan_forever, stale);
        if (events < 0) {
            return NULL;
        }
        if ((events & (POLLHUP | POLLERR)) && !chan_available(m)) {
            PyErr_SetNone(PyExc_EOFError);
            return NULL;
        }
        /* a byte in the socket with nothing in the ring: a bell another
         * reader is about to take, or a stale one */
        stale = (events & POLLIN) && !chan_available(m);
    }
}

int
fastmp_ring_poll(chan_map *m, int fd, const fastmp_deadline *d)
{
    int stale = 0;
    if (chan_broken(m) != NULL) {
        chan_raise_corrupt(m);
        return -1;
    }
    for (;;) {
        if (chan_available(m)) {
            return 1;
        }
        if (stale && chan_lock(&m->sh->rlock, &chan_no_wait, 0) == 0) {
            int foreign = reconcile(m, fd, 1);
            chan_unlock(&m->sh->rlock);
            if (foreign) {
                return 1;               /* readable, as for any socket */
            }
        }
        int events = wait_ring(m, fd, d, stale);
        if (events < 0) {
            return -1;
        }
        if (chan_available(m) || (events & (POLLHUP | POLLERR))) {
            return 1;
        }
        stale = (events & POLLIN) != 0;
        if (!stale && fastmp_deadline_remaining_ms(d) == 0) {
            return 0;
        }
    }
}
