/* channel.c - fastmp._fastmp.Channel, the C core of Queue, JoinableQueue
 * and SimpleQueue (fastmp.queues subclasses it): put/get with pickling,
 * timeouts, the bounded-queue slots, JoinableQueue's task counter, and the
 * exit-time flush of buffered messages.  The ring itself is in
 * ring.c (whole messages with the GIL: ring_message.c) and the feeder
 * thread in feeder.c. */
#include "queues/feeder.h"
#include "queues/ring.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/fork.h"
#include "core/futex.h"
#include "core/state.h"
#include "pickle/forking_pickler.h"


#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

/* Payloads up to this size are copied into the feeder buffer; larger ones
 * are sent straight from the pickled object, which the buffer keeps. */
#define COPY_LIMIT (64u * 1024u)
/* Seconds a put waits for a writer lock held for small messages before
 * it buffers its message instead. */
#define LOCK_PATIENCE 0.001

typedef struct {
    PyObject_HEAD
    chan_map *map;                      /* NULL until _create/_attach */
    pid_t closed_in;                    /* close() was called there; 0: open */
    pid_t put_in;                       /* the last process that put */
} ChannelObject;

static fastmp_state *
chan_state(PyObject *self)
{
    return fastmp_state_from_type(Py_TYPE(self));
}

/* close() was called on this object in this process.  A Queue's close()
 * does not carry into fork children (the standard package resets its
 * Queue there); a SimpleQueue's does (its pipe stays closed). */
static int
closed_here(ChannelObject *self)
{
    if (self->closed_in == 0) {
        return 0;
    }
    if (self->closed_in == fastmp_fork_pid()) {
        return 1;
    }
    return self->map != NULL && (self->map->flags & CHAN_SIMPLE);
}

/* The map, or NULL with an exception if it was never set up, if its
 * shared memory was found corrupt, or, for `transfer` (put and get), if
 * the queue was closed in this process. */
static chan_map *
usable_map(ChannelObject *self, int transfer)
{
    if (self->map == NULL) {
        PyErr_SetString(PyExc_ValueError, "queue is not initialised");
        return NULL;
    }
    if (chan_broken(self->map) != NULL) {
        chan_raise_corrupt(self->map);
        return NULL;
    }
    if (transfer && closed_here(self)) {
        if (self->map->flags & CHAN_SIMPLE) {
            PyErr_SetString(PyExc_OSError, "handle is closed");
        }
        else {
            PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)self);
        }
        return NULL;
    }
    return self->map;
}

/* Bind put's or get's arguments: `obj` (put only), then block=True and
 * timeout=None.  Returns 0, or -1 with an exception set. */
static int
parse_put_get(const char *fname, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, PyObject **obj, int *block, PyObject **timeout)
{
    static const char *const put_names[] = {"obj", "block", "timeout"};
    PyObject *a[3];
    int with_obj = obj != NULL;
    if (fastmp_bind_args(fname, args, nargs, kwnames, put_names + !with_obj,
                         2 + with_obj, with_obj, a) < 0) {
        return -1;
    }
    if (with_obj) {
        *obj = a[0];
    }
    PyObject *given_block = a[with_obj], *given_timeout = a[with_obj + 1];
    *block = given_block == NULL ? 1 : PyObject_IsTrue(given_block);
    *timeout = given_timeout == NULL ? Py_None : given_timeout;
    return *block < 0 ? -1 : 0;
}

/* The one `obj` argument of put_nowait and SimpleQueue.put. */
static int
parse_obj(const char *fname, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, PyObject **obj)
{
    static const char *const names[] = {"obj"};
    return fastmp_bind_args(fname, args, nargs, kwnames, names, 1, 1, obj);
}

/* ---- encoding -------------------------------------------------------- */

/* The message for `obj`: a bytes object is sent as is (REC_RAW), a str
 * as its UTF-8 (REC_STR, and REC_ASCII if it is; both skip pickle
 * entirely), other plain atoms go
 * through pickle.dumps and everything else through the reused
 * ForkingPickler (pickle/forking_pickler.c: ForkingPickler.dumps without
 * the call through Python; its reducers stay live).  Returns 0 with *view filled (it keeps the source alive),
 * or -1. */
static int
encode(fastmp_state *st, PyObject *obj, Py_buffer *view, uint32_t *flags)
{
    *flags = 0;
    if (PyBytes_CheckExact(obj)) {
        *flags = REC_RAW;
        return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
        if (utf8 != NULL) {
            *flags = REC_STR | (PyUnicode_IS_ASCII(obj) ? REC_ASCII : 0);
            return PyBuffer_FillInfo(view, obj, (void *)utf8, len, 1, PyBUF_SIMPLE);
        }
        PyErr_Clear();                  /* lone surrogates: pickle copes */
    }
    int atom = PyUnicode_CheckExact(obj) || PyLong_CheckExact(obj)
               || PyFloat_CheckExact(obj) || obj == Py_None || PyBool_Check(obj);
    PyObject *payload = atom ? PyObject_CallOneArg(st->chan_fast_dumps, obj)
                             : fastmp_pickle_joined(st, obj);
    if (payload == NULL) {
        return -1;
    }
    int r = PyObject_GetBuffer(payload, view, PyBUF_SIMPLE);
    Py_DECREF(payload);
    return r;
}

/* The object for a received message (consumes `msg`, the payload bytes,
 * or for a str that was decoded straight from the ring, the str). */
static PyObject *
decode(fastmp_state *st, chan_map *m, PyObject *msg, uint32_t flags)
{
    if ((flags & REC_RAW) || PyUnicode_CheckExact(msg)) {
        return msg;
    }
    PyObject *obj;
    if (flags & REC_STR) {
        obj = chan_str_from_payload(m, PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg), flags);
    }
    else {
        obj = PyObject_CallOneArg(st->chan_loads, msg);
    }
    Py_DECREF(msg);
    return obj;
}

/* Raise ShutDown (queue.ShutDown, or fastmp.queues' own before 3.13). */
static void
raise_shutdown(fastmp_state *st)
{
    if (st->chan_ShutDown == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the queue was shut down");
        return;
    }
    PyErr_SetNone(st->chan_ShutDown);
}

/* ---- put ------------------------------------------------------------- */

/* Count the message in (a slot on a bounded queue, waiting per `block` and
 * the deadline).  Returns 0, or -1 with Full, ShutDown or another
 * exception set. */
static int
count_in(fastmp_state *st, chan_map *m, int block, const fastmp_deadline *d)
{
    chan_shared *sh = m->sh;
    int err = chan_count_in(m, &chan_no_wait);
    if (err == ETIMEDOUT && block) {
        do {
            Py_BEGIN_ALLOW_THREADS
            err = chan_count_in(m, d);
            Py_END_ALLOW_THREADS
        } while (err == EINTR && PyErr_CheckSignals() == 0);
    }
    if (err == ETIMEDOUT) {
        PyErr_SetNone(st->chan_Full);
        return -1;
    }
    if (err == ESHUTDOWN) {
        raise_shutdown(st);
        return -1;
    }
    if (err) {
        if (err != EINTR) {             /* EINTR: a signal handler raised */
            chan_oserror(m, err, "futex");
        }
        return -1;
    }
    if (m->flags & CHAN_JOINABLE) {
        __atomic_add_fetch(&sh->unfinished, 1, __ATOMIC_SEQ_CST);
    }
    if (__builtin_expect(chan_shut_state(m) != CHAN_OPEN, 0)) {
        /* shut down since put began: a reader may already have found the
         * queue drained (see ring.h), so this message must not come */
        chan_count_drop(m);
        raise_shutdown(st);
        return -1;
    }
    return 0;
}

/* Take wlock for a put; if this process has messages buffered, ours
 * goes behind them anyway, so there is no point waiting for a busy lock.
 * Returns 0, EBUSY or CHAN_CORRUPT. */
static int
lock_for_put(chan_map *m, int buffered)
{
    int err = chan_lock_writer(m, &chan_no_wait, !buffered);
    if (err == EBUSY && !buffered && !chan_streaming(m)) {
        /* wait a moment for a busy lock rather than buffer: buffering
         * costs more, and memory when producers outrun the consumer */
        fastmp_deadline soon;
        fastmp_deadline_from_seconds(LOCK_PATIENCE, &soon);
        Py_BEGIN_ALLOW_THREADS
        err = chan_lock_writer(m, &soon, 1);
        Py_END_ALLOW_THREADS
    }
    return err == 0 || err == CHAN_CORRUPT ? err : EBUSY;
}

/* Try to publish the message now, without waiting for room: a put on an
 * unbounded Queue never blocks.  Messages this process buffered earlier
 * go first (FIFO); if they do not all fit, this one is buffered behind
 * them.  Returns 0, EAGAIN or CHAN_CORRUPT. */
static int
try_write_now(chan_map *m, const Py_buffer *view, uint32_t flags)
{
    int buffered = __atomic_load_n(&m->first, __ATOMIC_ACQUIRE) != NULL
                   && m->pid == fastmp_fork_pid();
    int err = lock_for_put(m, buffered);
    if (err != 0) {
        return err == CHAN_CORRUPT ? err : EAGAIN;
    }
    if (__builtin_expect(chan_dropping(m), 0)) {
        /* the queue shut down immediately after this put counted its
         * message in: as if it had come first, and been discarded */
        chan_unlock(&m->sh->wlock);
        chan_count_drop(m);
        return 0;
    }
    err = buffered ? chan_feeder_drain(m) : 0;
    if (err == 0) {
        err = chan_try_write_whole(m, view->buf, (uint64_t)view->len, flags);
    }
    chan_unlock(&m->sh->wlock);
    return err == 0 || err == CHAN_CORRUPT ? err : EAGAIN;
}

/* Hand the message to the feeder thread (takes over *view).  Returns 0 or
 * -1 with an exception set. */
static int
buffer_message(chan_map *m, Py_buffer *view, uint32_t flags)
{
    int copy = (uint64_t)view->len <= COPY_LIMIT;
    chan_pending *item = malloc(sizeof(*item) + (copy ? (size_t)view->len : 0));
    if (item == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(item, 0, sizeof(*item));
    item->len = (uint64_t)view->len;
    item->flags = flags;
    if (copy) {
        memcpy(item + 1, view->buf, (size_t)view->len);
        item->data = (const char *)(item + 1);
        PyBuffer_Release(view);
    }
    else {
        item->view = *view;
        item->data = view->buf;
    }
    int err = chan_feeder_push(m, item);
    if (err) {
        if (!copy) {
            *view = item->view;         /* the caller still releases it */
        }
        free(item);
        fastmp_oserror(err, "pthread_create");
        return -1;
    }
    if (!copy) {
        view->obj = NULL;
    }
    return 0;
}

/* SimpleQueue: write the message with the writer lock held, waiting for
 * space as long as it takes (like a pipe write).  Returns 0 or -1. */
static int
write_blocking(chan_map *m, const Py_buffer *view, uint32_t flags)
{
    if (chan_lock_blocking(&m->sh->wlock) < 0) {
        return -1;
    }
    int err = chan_repair_writer(m);
    chan_wmsg w = {view->buf, (uint64_t)view->len, flags, 0, 0};
    if (err == 0) {
        err = chan_write(m, &w, &chan_no_wait);  /* as far as the space goes */
    }
    while (err == ETIMEDOUT || err == EINTR) {
        if (err == EINTR && PyErr_CheckSignals() < 0) {
            /* a started message stays flagged: the next writer aborts it */
            chan_unlock(&m->sh->wlock);
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        err = chan_write(m, &w, &chan_forever);
        Py_END_ALLOW_THREADS
    }
    chan_unlock(&m->sh->wlock);
    if (err) {
        chan_oserror(m, err, "futex");
        return -1;
    }
    return 0;
}

/* Let go of the large objects the feeder thread has finished sending
 * (it cannot: it never holds the GIL). */
static inline void
release_sent(chan_map *m)
{
    if (__atomic_load_n(&m->done, __ATOMIC_RELAXED) != NULL) {
        chan_feeder_release_done(m);
    }
}

/* What put and get both start with: the usable mapping, the module state
 * and the deadline (none when not blocking: the caller checks `block`).
 * Returns 0, or -1 with an exception set. */
static int
begin_op(ChannelObject *self, int block, PyObject *timeout, chan_map **m,
         fastmp_state **st, fastmp_deadline *d)
{
    *m = usable_map(self, 1);
    *st = chan_state((PyObject *)self);
    if (*m == NULL || *st == NULL) {
        return -1;
    }
    return fastmp_deadline_from_object(block ? timeout : Py_None, d);
}

/* put for all three classes; `simple` selects SimpleQueue's blocking
 * write instead of the feeder buffer. */
static PyObject *
put_impl(ChannelObject *self, PyObject *obj, int block, PyObject *timeout, int simple)
{
    chan_map *m;
    fastmp_state *st;
    fastmp_deadline d;
    if (begin_op(self, block, timeout, &m, &st, &d) < 0) {
        return NULL;
    }
    if (__builtin_expect(chan_shut_state(m) != CHAN_OPEN, 0)) {
        raise_shutdown(st);             /* before pickling, as queue.Queue */
        return NULL;
    }
    release_sent(m);
    Py_buffer view;
    uint32_t flags;
    if (encode(st, obj, &view, &flags) < 0) {
        return NULL;  /* the pickling error, raised in the caller's thread */
    }
    if (count_in(st, m, block, &d) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->put_in = fastmp_fork_pid();
    int failed = 0, err = try_write_now(m, &view, flags);
    if (err == CHAN_CORRUPT) {
        chan_raise_corrupt(m);
        failed = 1;
    }
    else if (err != 0) {
        failed = simple ? write_blocking(m, &view, flags) : buffer_message(m, &view, flags);
    }
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    if (failed) {
        chan_count_drop(m);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Channel_put(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *obj, *timeout;
    int block;
    if (parse_put_get("put", args, nargs, kwnames, &obj, &block, &timeout) < 0) {
        return NULL;
    }
    return put_impl(self, obj, block, timeout, 0);
}

static PyObject *
Channel_put_nowait(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    PyObject *obj;
    if (parse_obj("put_nowait", args, nargs, kwnames, &obj) < 0) {
        return NULL;
    }
    return put_impl(self, obj, 0, Py_None, 0);
}

static PyObject *
Channel_put_blocking(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    PyObject *obj;
    if (parse_obj("put", args, nargs, kwnames, &obj) < 0) {
        return NULL;
    }
    return put_impl(self, obj, 1, Py_None, 1);
}

/* ---- get ------------------------------------------------------------- */

/* get found no message (before its deadline, or at once): ShutDown if
 * none will come, else Empty.  Returns NULL. */
static PyObject *
nothing_to_get(fastmp_state *st, chan_map *m)
{
    if (chan_broken(m) != NULL) {
        return chan_raise_corrupt(m);
    }
    if (chan_shut_and_drained(m, chan_shut_state(m))) {
        raise_shutdown(st);
    }
    else {
        PyErr_SetNone(st->chan_Empty);
    }
    return NULL;
}

static PyObject *
get_impl(ChannelObject *self, int block, PyObject *timeout)
{
    chan_map *m;
    fastmp_state *st;
    fastmp_deadline d;
    if (begin_op(self, block, timeout, &m, &st, &d) < 0) {
        return NULL;
    }
    int err = chan_lock(&m->sh->rlock, &d, 0);
    while (err == EBUSY || err == EINTR) {
        if (!block) {
            break;
        }
        if (err == EINTR && PyErr_CheckSignals() < 0) {
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        err = chan_lock(&m->sh->rlock, &d, 1);
        Py_END_ALLOW_THREADS
    }
    if (err == EBUSY || err == ETIMEDOUT) {
        return nothing_to_get(st, m);
    }
    if (err) {
        return fastmp_oserror(err, "pthread_mutex_lock");
    }
    release_sent(m);
    uint32_t flags = 0;
    uint64_t too_long = 0;
    PyObject *msg = chan_read_message(m, block, &d, &flags, UINT64_MAX, &too_long);
    chan_unlock(&m->sh->rlock);
    chan_rearm(m);
    if (msg == NULL) {
        return PyErr_Occurred() ? NULL : nothing_to_get(st, m);
    }
    return decode(st, m, msg, flags);
}

static PyObject *
Channel_get(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int block;
    PyObject *timeout;
    if (parse_put_get("get", args, nargs, kwnames, NULL, &block, &timeout) < 0) {
        return NULL;
    }
    return get_impl(self, block, timeout);
}

static PyObject *
Channel_get_nowait(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    return get_impl(self, 0, Py_None);
}

/* ---- state queries --------------------------------------------------- */

static PyObject *
Channel_qsize(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    uint64_t n;
    if (m == NULL) {
        return NULL;
    }
    if (chan_qsize(m, &n) != 0) {
        return chan_raise_corrupt(m);
    }
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
Channel_empty(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    if (m == NULL) {
        return NULL;
    }
    /* The standard package closes its pipe's read end in close() for a
     * SimpleQueue, and for a Queue once a put has started its feeder
     * thread: empty() then fails the same way here. */
    if (closed_here(self) && ((m->flags & CHAN_SIMPLE) || self->put_in == fastmp_fork_pid())) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    return PyBool_FromLong(chan_available(m) == 0);
}

static PyObject *
Channel_full(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    if (m == NULL) {
        return NULL;
    }
    uint64_t n;
    if (chan_qsize(m, &n) != 0) {
        return chan_raise_corrupt(m);
    }
    return PyBool_FromLong(m->maxsize != 0 && n >= m->maxsize);
}

/* ---- JoinableQueue --------------------------------------------------- */

static PyObject *
Channel_task_done(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    if (m == NULL) {
        return NULL;
    }
    chan_shared *sh = m->sh;
    uint32_t u = __atomic_load_n(&sh->unfinished, __ATOMIC_SEQ_CST);
    do {
        if (u == 0) {
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
            return NULL;
        }
    } while (!__atomic_compare_exchange_n(&sh->unfinished, &u, u - 1, 0,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    if (u == 1 && __atomic_load_n(&sh->join_waiters, __ATOMIC_SEQ_CST)) {
        int err = fastmp_futex_wake(&sh->unfinished, INT32_MAX);
        if (err) {
            return fastmp_oserror(err, "futex");
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
Channel_join(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    if (m == NULL) {
        return NULL;
    }
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = chan_wait_joined(m);
        Py_END_ALLOW_THREADS
        if (err == 0) {
            Py_RETURN_NONE;
        }
        if (err != EINTR) {
            return chan_oserror(m, err, "futex");
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

/* ---- shutdown -------------------------------------------------------- */

/* Queue.shutdown(immediate=False), for every process sharing the queue:
 * put raises ShutDown from now on; get returns the messages left, then
 * raises ShutDown instead of waiting.  With `immediate`, the messages left
 * are discarded at once (each counting as a done task for join()) and get
 * raises at once.  Every blocked put and get is woken. */
static PyObject *
Channel_shutdown(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"immediate"};
    PyObject *given = NULL;
    if (fastmp_bind_args("shutdown", args, nargs, kwnames, names, 1, 0, &given) < 0) {
        return NULL;
    }
    int immediate = given == NULL ? 0 : PyObject_IsTrue(given);
    chan_map *m = immediate < 0 ? NULL : usable_map(self, 0);
    if (m == NULL) {
        return NULL;
    }
    if (chan_broken(m) != NULL) {
        return chan_raise_corrupt(m);
    }
    chan_shut_down(m, immediate ? CHAN_SHUT_NOW : CHAN_SHUT);
    int err = immediate ? EINTR : 0;
    while (err == EINTR) {
        Py_BEGIN_ALLOW_THREADS
        err = chan_discard_all(m);
        Py_END_ALLOW_THREADS
        if (err == EINTR && PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    if (err) {
        return chan_oserror(m, err, "pthread_mutex_lock");
    }
    Py_RETURN_NONE;
}

/* ---- lifetime -------------------------------------------------------- */

/* Wait (GIL released in slices) until this process's buffer for `m` is
 * sent or cancelled.  Returns 0 or -1 if a signal handler raised. */
static int
flush_map(chan_map *m)
{
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = chan_feeder_wait_empty(m);
        Py_END_ALLOW_THREADS
        chan_feeder_release_done(m);
        if (err == 0) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

static PyObject *
Channel_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    self->closed_in = fastmp_fork_pid();
    Py_RETURN_NONE;
}

static PyObject *
Channel_flush(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->map != NULL && flush_map(self->map) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Channel_cancel_join_thread(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = self->map;
    if (m != NULL) {
        chan_feeder_adopt(m);
        pthread_mutex_lock(&m->mu);
        m->cancelled = 1;
        pthread_cond_broadcast(&m->idle);
        pthread_mutex_unlock(&m->mu);
    }
    Py_RETURN_NONE;
}

static int
set_map(ChannelObject *self, chan_map *m, int err)
{
    if (err) {
        fastmp_oserror(err, "queue channel");
        return -1;
    }
    if (self->map != NULL) {
        chan_map_decref(self->map);
    }
    self->map = m;
    self->closed_in = 0;
    return 0;
}

static PyObject *
Channel_create(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* _create(maxsize, kind_flags, capacity) */
    long long maxsize, capacity;
    unsigned long kind;
    if (fastmp_check_nargs("_create", nargs, 3, 3) < 0) {
        return NULL;
    }
    if ((maxsize = PyLong_AsLongLong(args[0])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((kind = PyLong_AsUnsignedLong(args[1])) == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((capacity = PyLong_AsLongLong(args[2])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (maxsize < 0 || maxsize > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "maxsize out of range");
        return NULL;
    }
    if (!chan_capacity_valid(capacity)) {
        PyErr_SetString(PyExc_ValueError, CHAN_CAPACITY_ERROR);
        return NULL;
    }
    chan_map *m = NULL;
    int err = chan_map_create((uint64_t)capacity, (uint32_t)maxsize,
                              (uint32_t)kind & (CHAN_JOINABLE | CHAN_SIMPLE), &m);
    if (set_map(self, m, err) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Channel_attach(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* _attach(fd, event_fd) */
    int fds[2];
    if (fastmp_check_nargs("_attach", nargs, 2, 2) < 0) {
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        long fd = PyLong_AsLong(args[i]);
        if (fd == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (fd < 0 || fd > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "bad file descriptor");
            return NULL;
        }
        fds[i] = (int)fd;
    }
    chan_map *m = NULL;
    int err = chan_map_attach(fds[0], fds[1], &m);
    if (set_map(self, m, err) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Channel_fds(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    return m == NULL ? NULL : Py_BuildValue("(ii)", m->fd, m->efd);
}

static PyObject *
Channel_watch(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    chan_map *m = usable_map(self, 0);
    return m == NULL ? NULL : PyLong_FromLong(chan_watch(m));
}

static PyObject *
Channel_get_closed(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(closed_here(self));
}

static void
Channel_dealloc(ChannelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->map != NULL) {
        chan_feeder_adopt(self->map);
        chan_feeder_release_done(self->map);
        chan_live_prune();
        chan_map_decref(self->map);
        self->map = NULL;
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
Channel_traverse(ChannelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* Module function: flush every channel this process buffered messages
 * for, except cancelled ones (run at exit, like joining feeder threads). */
static PyObject *
channel_flush_all(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    /* flushing releases the GIL, so the list may change meanwhile: work
     * on a snapshot holding its own references */
    size_t n = 0;
    for (chan_map *m = chan_live_first(); m != NULL; m = m->next_live) {
        n++;
    }
    chan_map **maps = PyMem_Malloc((n ? n : 1) * sizeof(*maps));
    if (maps == NULL) {
        return PyErr_NoMemory();
    }
    n = 0;
    for (chan_map *m = chan_live_first(); m != NULL; m = m->next_live) {
        chan_map_incref(m);
        maps[n++] = m;
    }
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!failed && flush_map(maps[i]) < 0) {
            failed = 1;
        }
        chan_map_decref(maps[i]);
    }
    PyMem_Free(maps);
    if (failed) {
        return NULL;
    }
    chan_live_prune();
    Py_RETURN_NONE;
}

/* Module function: _channel_setup(shutdown_error) installs the
 * exception class a shut-down queue raises. */
static PyObject *
channel_setup(PyObject *module, PyObject *shutdown_error)
{
    fastmp_state *st = PyModule_GetState(module);
    if (!PyExceptionClass_Check(shutdown_error)) {
        PyErr_SetString(PyExc_TypeError, "shutdown_error must be an exception class");
        return NULL;
    }
    Py_XSETREF(st->chan_ShutDown, Py_NewRef(shutdown_error));
    Py_RETURN_NONE;
}

static PyMethodDef Channel_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Channel_put, METH_FASTCALL | METH_KEYWORDS,
     "put($self, obj, block=True, timeout=None)\n--\n\n"},
    {"get", (PyCFunction)(void (*)(void))Channel_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, block=True, timeout=None)\n--\n\n"},
    {"put_nowait", (PyCFunction)(void (*)(void))Channel_put_nowait,
     METH_FASTCALL | METH_KEYWORDS, "put_nowait($self, obj)\n--\n\n"
     "put(obj, False)"},
    {"get_nowait", (PyCFunction)Channel_get_nowait, METH_NOARGS, "get_nowait($self, /)\n--\n\n"
     "get(False)"},
    {"_put_blocking", (PyCFunction)(void (*)(void))Channel_put_blocking,
     METH_FASTCALL | METH_KEYWORDS,
     "_put_blocking($self, obj)\n--\n\n"
     "put that waits for room in the ring instead of buffering (SimpleQueue)"},
    {"qsize", (PyCFunction)Channel_qsize, METH_NOARGS, "qsize($self, /)\n--\n\n"
     "messages put and not yet got"},
    {"empty", (PyCFunction)Channel_empty, METH_NOARGS, "empty($self, /)\n--\n\n"
     "True if nothing is ready to get"},
    {"full", (PyCFunction)Channel_full, METH_NOARGS, "full($self, /)\n--\n\n"
     "True if a bounded queue is full"},
    {"_task_done", (PyCFunction)Channel_task_done, METH_NOARGS, "_task_done($self, /)\n--\n\n"
     "JoinableQueue.task_done"},
    {"_join", (PyCFunction)Channel_join, METH_NOARGS, "_join($self, /)\n--\n\n"
     "JoinableQueue.join"},
    {"_shutdown", (PyCFunction)(void (*)(void))Channel_shutdown, METH_FASTCALL | METH_KEYWORDS,
     "_shutdown($self, immediate=False)\n--\n\n"
     "Queue.shutdown(immediate=False)"},
    {"close", (PyCFunction)Channel_close, METH_NOARGS, "close($self, /)\n--\n\n"
     "no more put/get in this process"},
    {"_flush", (PyCFunction)Channel_flush, METH_NOARGS,
     "_flush($self, /)\n--\n\n"
     "wait until this process's buffered messages are in the ring"},
    {"cancel_join_thread", (PyCFunction)Channel_cancel_join_thread, METH_NOARGS,
     "cancel_join_thread($self, /)\n--\n\n"
     "do not wait for buffered messages at exit"},
    {"_create", (PyCFunction)(void (*)(void))Channel_create, METH_FASTCALL,
     "_create($self, maxsize, flags, capacity, /)\n--\n\n"
     "a new channel"},
    {"_attach", (PyCFunction)(void (*)(void))Channel_attach, METH_FASTCALL,
     "_attach($self, fd, event_fd, /)\n--\n\n"
     "map a channel (both fds become owned)"},
    {"_fds", (PyCFunction)Channel_fds, METH_NOARGS,
     "_fds($self, /)\n--\n\n"
     "(memfd, readiness eventfd) of the channel"},
    {"_watch", (PyCFunction)Channel_watch, METH_NOARGS,
     "_watch($self, /)\n--\n\n"
     "the eventfd that is readable while messages are waiting"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Channel_getset[] = {
    {"_closed", (getter)Channel_get_closed, NULL, "close() was called here", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Channel_slots[] = {
    {Py_tp_dealloc, Channel_dealloc},
    {Py_tp_traverse, Channel_traverse},
    {Py_tp_methods, Channel_methods},
    {Py_tp_getset, Channel_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Shared-memory message channel behind fastmp.queues."},
    {0, NULL},
};

static PyType_Spec Channel_spec = {
    .name = "fastmp._fastmp.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Channel_slots,
};

static PyMethodDef channel_functions[] = {
    {"_channel_flush_all", channel_flush_all, METH_NOARGS,
     "_channel_flush_all($module, /)\n--\n\n"
     "Flush the buffered messages of every queue of this process."},
    {"_channel_setup", channel_setup, METH_O,
     "_channel_setup($module, shutdown_error, /)\n--\n\n"
     "Set the exception a shut-down queue raises."},
    {NULL, NULL, 0, NULL},
};

static int
import_attr(PyObject **slot, const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) {
        return -1;
    }
    *slot = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return *slot == NULL ? -1 : 0;
}

/* The module constant _channel_layout: where each field of the shared
 * header lies, the record kinds and flags.  For tests that write into a
 * live channel as another process could. */
static int
add_layout(PyObject *module)
{
#define FIELD(name) {#name, offsetof(chan_shared, name)}
    static const struct {
        const char *name;
        size_t value;
    } entries[] = {
        {"header_size", CHAN_HEADER_SIZE}, {"record_header", sizeof(chan_rec)},
        FIELD(magic), FIELD(flags), FIELD(capacity), FIELD(maxsize), FIELD(watched),
        FIELD(corrupt), FIELD(wlock), FIELD(rlock), FIELD(tail), FIELD(wr_in_message),
        FIELD(head), FIELD(rd_in_message), FIELD(n_got), FIELD(data_seq),
        FIELD(rd_sleeping), FIELD(space_seq), FIELD(wr_sleeping), FIELD(room_seq),
        FIELD(room_sleeping), FIELD(n_put), FIELD(count), FIELD(slot_waiters),
        FIELD(unfinished), FIELD(join_waiters), FIELD(pipe_pending),
        {"REC_WHOLE", REC_WHOLE}, {"REC_FIRST", REC_FIRST}, {"REC_MORE", REC_MORE},
        {"REC_LAST", REC_LAST}, {"REC_ABORT", REC_ABORT}, {"REC_RAW", REC_RAW},
        {"REC_STR", REC_STR}, {"REC_ASCII", REC_ASCII},
    };
#undef FIELD
    PyObject *layout = PyDict_New();
    if (layout == NULL) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
        PyObject *v = PyLong_FromSize_t(entries[i].value);
        if (v == NULL || PyDict_SetItemString(layout, entries[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(layout);
            return -1;
        }
        Py_DECREF(v);
    }
    int rc = PyModule_AddObjectRef(module, "_channel_layout", layout);
    Py_DECREF(layout);
    return rc;
}

int
fastmp_channel_exec(PyObject *module, fastmp_state *st)
{
    if (fastmp_fork_track() < 0) {
        return -1;
    }
    st->Channel_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Channel_spec, NULL);
    if (st->Channel_type == NULL
        || PyModule_AddObjectRef(module, "Channel", (PyObject *)st->Channel_type) < 0
        || PyModule_AddFunctions(module, channel_functions) < 0
        || add_layout(module) < 0
        || PyModule_AddIntConstant(module, "RING_SIZE", CHAN_RING_SIZE) < 0
        || PyModule_AddIntConstant(module, "CHANNEL_JOINABLE", CHAN_JOINABLE) < 0
        || PyModule_AddIntConstant(module, "CHANNEL_SIMPLE", CHAN_SIMPLE) < 0
        || import_attr(&st->chan_Empty, "queue", "Empty") < 0
        || import_attr(&st->chan_Full, "queue", "Full") < 0
        || import_attr(&st->chan_fast_dumps, "pickle", "dumps") < 0
        || import_attr(&st->chan_loads, "pickle", "loads") < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_channel_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Channel_type);
    Py_VISIT(st->chan_Empty);
    Py_VISIT(st->chan_Full);
    Py_VISIT(st->chan_fast_dumps);
    Py_VISIT(st->chan_loads);
    Py_VISIT(st->chan_ShutDown);
    return 0;
}

void
fastmp_channel_clear(fastmp_state *st)
{
    Py_CLEAR(st->Channel_type);
    Py_CLEAR(st->chan_Empty);
    Py_CLEAR(st->chan_Full);
    Py_CLEAR(st->chan_fast_dumps);
    Py_CLEAR(st->chan_loads);
    Py_CLEAR(st->chan_ShutDown);
}
