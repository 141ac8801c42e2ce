/* dispatcher.c - the pool's parent-side task dispatcher, the Python type
 * Dispatcher: jobs are opened and tasks submitted from Python, outcomes
 * collected back.  The engine that moves them (the native thread, the
 * worker streams) is in engine.c.  A thread that waits for an
 * outcome first does the engine's work itself for a short while with the
 * GIL released (so a quick result needs no hand-off between threads),
 * then sleeps on a futex, where signals (Ctrl-C) interrupt it. */
#include "pool/engine.h"
#include "pool/wire.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/futex.h"
#include "core/state.h"
#include "pickle/forking_pickler.h"
#include "pickle/quickpickle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* A thread submitting while every worker has a queue pumps once per
 * this many tasks. */
#define PUMP_EVERY 8

/* ---- Python-facing methods ------------------------------------------- */

static int
check_usable(Dispatcher *d)
{
    if (!dispatch_owned(d)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a pool dispatcher cannot be used in a child process");
        return -1;
    }
    if (d->closed) {
        PyErr_SetString(PyExc_ValueError, "pool dispatcher is closed");
        return -1;
    }
    if (d->error != 0) {
        fastmp_oserror(d->error, "pool dispatcher thread");
        return -1;
    }
    return 0;
}

/* Lock the mutex; with the GIL released when it is contended. */
static void
lock_dispatcher(Dispatcher *d)
{
    if (pthread_mutex_trylock(&d->mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&d->mu);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *
Dispatcher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"inflight"};
    PyObject *given;
    int inflight = 2;
    if (fastmp_bind_slot_args("Dispatcher", args, kwds, names, 1, 0, &given) < 0
        || (given != NULL && fastmp_parse_int(given, "inflight", &inflight) < 0)) {
        return NULL;
    }
    if (inflight < 1) {
        PyErr_SetString(PyExc_ValueError, "inflight must be at least 1");
        return NULL;
    }
    Dispatcher *d = (Dispatcher *)type->tp_alloc(type, 0);
    if (d == NULL) {
        return NULL;
    }
    d->wakefd = -1;
    d->inflight_max = inflight;
    int err = pthread_mutex_init(&d->mu, NULL);
    if (err == 0 && (err = pthread_mutex_init(&d->alloc_mu, NULL)) != 0) {
        (void)pthread_mutex_destroy(&d->mu);
    }
    if (err != 0) {
        Py_DECREF(d);
        return fastmp_oserror(err, "pthread_mutex_init");
    }
    dispatch_register(d);
    d->registered = 1;
    d->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wakefd < 0) {
        err = errno;
        Py_DECREF(d);
        return fastmp_oserror(err, "eventfd");
    }
    return (PyObject *)d;
}

/* Stop the thread and release every kernel object and buffer.  Sleepers
 * are woken and see `closed`.  Called with the GIL held. */
static void
shutdown_dispatcher(Dispatcher *d, int send_stop)
{
    if (!dispatch_owned(d)) {
        return;                 /* a forked copy: the thread is not ours */
    }
    lock_dispatcher(d);
    int was_closed = d->closed;
    d->closed = 1;
    if (d->thread_running) {
        dispatch_wake_thread(d);
    }
    pthread_mutex_unlock(&d->mu);
    if (d->thread_running) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(d->thread, NULL);
        Py_END_ALLOW_THREADS
        d->thread_running = 0;
    }
    if (was_closed) {
        return;
    }
    lock_dispatcher(d);
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd < 0) {
            continue;
        }
        if (send_stop && w->writing == NULL) {
            frame_header stop = {.kind = FRAME_STOP};
            (void)!write(w->fd, &stop, sizeof(stop));
        }
        dispatch_free_tasks(w->head);
        close(w->fd);
        if (w->sentinel >= 0) {
            close(w->sentinel);
        }
        free(w->in);
        dispatch_payload_free(w->big, (size_t)w->big_h.len);
        memset(w, 0, sizeof(*w));
        w->fd = -1;
        w->sentinel = -1;
    }
    dispatch_free_tasks(d->pend_head);
    d->pend_head = d->pend_tail = NULL;
    d->busy = 0;
    dispatch_announce(d);
    dispatch_announce_events(d);
    pthread_mutex_unlock(&d->mu);
}

static void
Dispatcher_dealloc(Dispatcher *d)
{
    PyTypeObject *tp = Py_TYPE(d);
    if (d->registered) {
        shutdown_dispatcher(d, 1);
        dispatch_unregister(d);
    }
    for (size_t b = 0; b < d->job_buckets; b++) {
        for (job_t *j = d->jobs[b]; j != NULL;) {
            job_t *next = j->next;
            dispatch_free_job(j);
            j = next;
        }
    }
    free(d->jobs);
    for (event_t *e = d->ev_head; e != NULL;) {
        event_t *next = e->next;
        free(e);
        e = next;
    }
    for (int i = 0; i < d->nworkers; i++) {
        free(d->workers[i]);
    }
    free(d->workers);
    for (int i = 0; i < FUNC_CACHE; i++) {
        Py_CLEAR(d->func_refs[i]);
        Py_CLEAR(d->func_pickles[i]);
    }
    if (d->wakefd >= 0) {
        close(d->wakefd);
    }
    if (d->registered) {
        (void)pthread_mutex_destroy(&d->alloc_mu);
        (void)pthread_mutex_destroy(&d->mu);
    }
    tp->tp_free((PyObject *)d);
    Py_DECREF(tp);
}

/* add_worker(fd, sentinel, pid, budget): take ownership of socket `fd`
 * (made non-blocking here); `sentinel` (or -1) is duplicated.  budget:
 * how many tasks the worker will run before it exits (-1: no limit). */
static PyObject *
Dispatcher_add_worker(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, sentinel;
    long long pid, budget;
    if (fastmp_check_nargs("add_worker", nargs, 4, 4) < 0) {
        return NULL;
    }
    if (fastmp_parse_int(args[0], "value", &fd) < 0 || fastmp_parse_int(args[1], "value", &sentinel) < 0) {
        return NULL;
    }
    if ((pid = PyLong_AsLongLong(args[2])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((budget = PyLong_AsLongLong(args[3])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_usable(d) < 0) {
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0
        || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return fastmp_oserror(errno, "fcntl");
    }
    int sdup = -1;
    if (sentinel >= 0 && (sdup = fcntl(sentinel, F_DUPFD_CLOEXEC, 3)) < 0) {
        return fastmp_oserror(errno, "dup");
    }
    lock_dispatcher(d);
    int slot = -1;
    for (int i = 0; i < d->nworkers; i++) {
        if (d->workers[i]->fd < 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        worker_t **ws = realloc(d->workers, (size_t)(d->nworkers + 1) * sizeof(*ws));
        worker_t *fresh = ws == NULL ? NULL : malloc(sizeof(*fresh));
        if (ws != NULL) {
            d->workers = ws;
        }
        if (fresh == NULL) {
            pthread_mutex_unlock(&d->mu);
            if (sdup >= 0) {
                close(sdup);
            }
            return PyErr_NoMemory();
        }
        slot = d->nworkers++;
        d->workers[slot] = fresh;
    }
    worker_t *w = d->workers[slot];
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->sentinel = sdup;
    w->pid = pid;
    w->budget = budget < 0 ? -1 : budget;
    w->depth = d->inflight_max;
    int err = 0;
    if (!d->thread_running) {
        err = dispatch_start_thread(d);     /* it starts by reading the state */
    }
    else if (d->polling) {
        dispatch_wake_thread(d);
    }
    if (err != 0) {
        w->fd = -1;
    }
    pthread_mutex_unlock(&d->mu);
    if (err != 0) {
        if (sdup >= 0) {
            close(sdup);
        }
        return fastmp_oserror(err, "pthread_create");
    }
    Py_RETURN_NONE;
}

/* Add a job with these fields to the table.  Returns 0, or -1 with an
 * exception set (no memory, or the id is taken). */
static int
add_job(Dispatcher *d, uint64_t id, int64_t expected, int drop_after_failure, int notify)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    j->id = id;
    j->expected = expected;
    j->drop_after_failure = drop_after_failure;
    j->notify = notify;
    lock_dispatcher(d);
    if (dispatch_find_job(d, id) != NULL) {
        pthread_mutex_unlock(&d->mu);
        free(j);
        PyErr_Format(PyExc_ValueError, "job %llu is already open", (unsigned long long)id);
        return -1;
    }
    if (dispatch_link_job(d, j) != 0) {
        pthread_mutex_unlock(&d->mu);
        free(j);
        PyErr_NoMemory();
        return -1;
    }
    dispatch_post_ready_if_due(d, j);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* open_job(job, ntasks, drop_after_failure, notify); ntasks -1: not known yet */
static PyObject *
Dispatcher_open_job(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id;
    long long ntasks;
    if (fastmp_check_nargs("open_job", nargs, 4, 4) < 0 || fastmp_parse_u64(args[0], &id) < 0) {
        return NULL;
    }
    if ((ntasks = PyLong_AsLongLong(args[1])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int drop_after_failure = PyObject_IsTrue(args[2]);
    int notify = PyObject_IsTrue(args[3]);
    if (drop_after_failure < 0 || notify < 0 || check_usable(d) < 0
        || add_job(d, id, ntasks < 0 ? -1 : ntasks, drop_after_failure, notify) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* expect(job, ntasks): the job has this many tasks in all. */
static PyObject *
Dispatcher_expect(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id, count;
    if (fastmp_check_nargs("expect", nargs, 2, 2) < 0
        || fastmp_parse_u64(args[0], &id) < 0 || fastmp_parse_u64(args[1], &count) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t *j = dispatch_find_job(d, id);
    if (j != NULL) {
        j->expected = (int64_t)count;
        dispatch_post_ready_if_due(d, j);
        dispatch_announce(d);
    }
    pthread_mutex_unlock(&d->mu);
    Py_RETURN_NONE;
}

/* forget(job): drop the job and whatever it has not collected. */
static PyObject *
Dispatcher_forget(Dispatcher *d, PyObject *arg)
{
    uint64_t id;
    if (fastmp_parse_u64(arg, &id) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t *j = dispatch_unlink_job(d, id);
    pthread_mutex_unlock(&d->mu);
    dispatch_free_job(j);
    Py_RETURN_NONE;
}

/* nudge(job): end the waits of the threads collecting the job (their
 * collect() returns, with no outcome if none came). */
static PyObject *
Dispatcher_nudge(Dispatcher *d, PyObject *arg)
{
    uint64_t id;
    if (fastmp_parse_u64(arg, &id) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t *j = dispatch_find_job(d, id);
    if (j != NULL) {
        j->nudged = 1;
        dispatch_announce(d);
    }
    pthread_mutex_unlock(&d->mu);
    Py_RETURN_NONE;
}

/* finished(job) -> tasks of the job with an outcome (collected or not),
 * or None when the job is not open. */
static PyObject *
Dispatcher_finished(Dispatcher *d, PyObject *arg)
{
    uint64_t id;
    if (fastmp_parse_u64(arg, &id) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t *j = dispatch_find_job(d, id);
    long long finished = j != NULL ? (long long)j->finished : -1;
    pthread_mutex_unlock(&d->mu);
    if (finished < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(finished);
}

/* 1 when pickle saves `func` by its module and name only, so that its
 * pickle can be reused for every task (a plain function or a module-level
 * builtin, with no reducer registered for its type); 0 when not; -1 with
 * an exception set.  Called after fastmp_pickle() made the reducer chain. */
static int
pickled_by_name(fastmp_state *st, PyObject *func)
{
    int plain = PyFunction_Check(func)
                || (PyCFunction_Check(func)
                    && (PyCFunction_GET_SELF(func) == NULL
                        || PyModule_Check(PyCFunction_GET_SELF(func))));
    if (!plain || st->reducer_chain == NULL) {
        return 0;
    }
    PyObject *reducer = PyObject_GetItem(st->reducer_chain, (PyObject *)Py_TYPE(func));
    if (reducer != NULL) {
        Py_DECREF(reducer);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
        return -1;
    }
    PyErr_Clear();
    return 1;
}

/* The object a weak reference points to (borrowed), or NULL. */
static PyObject *
weak_target(PyObject *ref)
{
    PyObject *target = NULL;
    if (PyWeakref_GetRef(ref, &target) != 1) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(target);          /* only compared with func, which the caller holds */
    return target;
}

/* The pickle of a task's function: from the cache when the function is
 * pickled by name (*by_name = 1), else freshly made.  Returns a new
 * reference to what fastmp_pickle() returns, or NULL with an exception
 * set. */
static PyObject *
func_pickle(Dispatcher *d, fastmp_state *st, PyObject *func, int *by_name)
{
    size_t slot = ((uintptr_t)func >> 4) % FUNC_CACHE;
    if (d->func_refs[slot] != NULL && weak_target(d->func_refs[slot]) == func) {
        *by_name = 1;
        return Py_NewRef(d->func_pickles[slot]);
    }
    PyObject *pickled = fastmp_pickle(st, func);
    if (pickled == NULL || !PyBytes_CheckExact(pickled)) {
        *by_name = 0;
        return pickled;         /* a large pickle in pieces: not cached */
    }
    int r = pickled_by_name(st, func);
    if (r < 0) {
        Py_DECREF(pickled);
        return NULL;
    }
    *by_name = r;
    if (r) {
        PyObject *ref = PyWeakref_NewRef(func, NULL);
        if (ref == NULL) {
            PyErr_Clear();          /* not weakly referenceable: no cache */
        }
        else {
            Py_XSETREF(d->func_refs[slot], ref);
            Py_XSETREF(d->func_pickles[slot], Py_NewRef(pickled));
        }
    }
    return pickled;
}

/* The pieces of a fastmp_pickle() result: the list's items, or the one
 * bytes-like object. */
static Py_ssize_t
count_pieces(PyObject *pickled)
{
    return PyList_CheckExact(pickled) ? PyList_GET_SIZE(pickled) : 1;
}

static PyObject *
piece_at(PyObject *pickled, Py_ssize_t i)
{
    return PyList_CheckExact(pickled) ? PyList_GET_ITEM(pickled, i) : pickled;
}

/* Take a view of each piece of `pickled` into views[*nviews...] (room
 * made by the caller) and add their lengths to *len.  Returns 0, or -1
 * with an exception set (a payload past FRAME_MAX_PAYLOAD is refused);
 * the views taken stay counted in *nviews for the caller to release. */
static int
view_pieces(PyObject *pickled, Py_buffer *views, Py_ssize_t *nviews, uint64_t *len)
{
    Py_ssize_t n = count_pieces(pickled);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer *view = &views[*nviews];
        if (PyObject_GetBuffer(piece_at(pickled, i), view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        (*nviews)++;
        /* each piece is below 2**63 and the sum stays at most 2**40 before
         * it: the addition cannot wrap */
        *len += (uint64_t)view->len;
        if (*len > FRAME_MAX_PAYLOAD) {
            PyErr_Format(PyExc_ValueError,
                         "task pickle larger than %llu bytes: too large for a pool task",
                         (unsigned long long)FRAME_MAX_PAYLOAD);
            return -1;
        }
    }
    return 0;
}

/* A small task's pickles come in a few pieces (the function's and the
 * arguments'): their views stay on the stack.  A large one's pickle
 * comes in a piece per 64 KiB frame and per large bytes-like object, as
 * many as it takes: their views are allocated. */
#define TASK_VIEWS_ON_STACK 8

/* A task frame: the function's pickle `fpick` (status: its length, and
 * FUNC_BY_NAME when `by_name`, the worker may cache what it unpickles
 * to), then the pickle `rpick` of the rest (apply: (args, kwds); map:
 * the items), copied into one buffer.  Returns NULL with an exception
 * set on failure. */
static task_t *
frame_task(uint64_t job, uint64_t index, uint64_t kind, PyObject *fpick, int by_name,
           PyObject *rpick)
{
    Py_buffer on_stack[TASK_VIEWS_ON_STACK];
    Py_buffer *views = on_stack;
    Py_ssize_t total = count_pieces(fpick) + count_pieces(rpick);
    if (total > TASK_VIEWS_ON_STACK && (views = PyMem_New(Py_buffer, (size_t)total)) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t nviews = 0;
    uint64_t len = 0, func_len;
    task_t *t = NULL;
    if (view_pieces(fpick, views, &nviews, &len) < 0) {
        goto done;
    }
    func_len = len;
    if (func_len >= FUNC_BY_NAME) {
        PyErr_Format(PyExc_ValueError, "task function pickle of %llu bytes is too large",
                     (unsigned long long)func_len);
        goto done;
    }
    if (view_pieces(rpick, views, &nviews, &len) < 0) {
        goto done;
    }
    if (len > SIZE_MAX - sizeof(*t) - sizeof(frame_header)
        || (t = malloc(sizeof(*t) + sizeof(frame_header) + (size_t)len)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    frame_header h = {.kind = (uint32_t)kind, .job = job, .index = index, .len = len,
                      .status = (uint32_t)func_len | (by_name ? FUNC_BY_NAME : 0)};
    t->next = NULL;
    t->size = sizeof(h) + (size_t)len;
    memcpy(t->frame, &h, sizeof(h));
    unsigned char *at = t->frame + sizeof(h);
    for (Py_ssize_t i = 0; i < nviews; i++) {
        memcpy(at, views[i].buf, (size_t)views[i].len);
        at += views[i].len;
    }
done:
    for (Py_ssize_t i = 0; i < nviews; i++) {
        PyBuffer_Release(&views[i]);
    }
    if (views != on_stack) {
        PyMem_Free(views);
    }
    return t;
}

/* The task frame of func applied to `rest` (see frame_task).  Returns
 * NULL with an exception set on failure. */
static task_t *
make_task(Dispatcher *d, uint64_t job, uint64_t index, uint64_t kind,
          PyObject *func, PyObject *rest)
{
    if (kind < FRAME_APPLY || kind > FRAME_STARMAP) {
        PyErr_Format(PyExc_ValueError, "bad task kind %llu", (unsigned long long)kind);
        return NULL;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(d));
    if (st == NULL) {
        return NULL;
    }
    int by_name = 0;
    PyObject *fpick = func_pickle(d, st, func, &by_name);
    PyObject *rpick = fpick != NULL ? fastmp_pickle(st, rest) : NULL;
    task_t *t = rpick != NULL ? frame_task(job, index, kind, fpick, by_name, rpick) : NULL;
    Py_XDECREF(fpick);
    Py_XDECREF(rpick);
    return t;
}

/* Queue task t (and count it busy), then send what can be sent.  Takes
 * the mutex.  Returns 0, or -1 with an exception set (t is freed). */
static int
queue_task(Dispatcher *d, task_t *t)
{
    lock_dispatcher(d);
    if (d->closed || d->error || !dispatch_owned(d)) {
        pthread_mutex_unlock(&d->mu);
        free(t);
        (void)check_usable(d);
        return -1;
    }
    if (d->pend_tail) {
        d->pend_tail->next = t;
    }
    else {
        d->pend_head = t;
    }
    d->pend_tail = t;
    d->busy++;
    /* A worker with fewer than two tasks (so none queued behind the one
     * it runs) gets the task from this thread at once.  When every worker
     * has a queue, tasks wait and this thread pumps once per
     * PUMP_EVERY of them: it collects results (the dispatcher thread is
     * not woken for each) and sends the waiting tasks in one write per
     * worker.  Tasks still waiting when submitting stops go out when
     * their worker's next result is read.  The dispatcher thread is told
     * only when a socket filled up (it must poll for POLLOUT). */
    int short_worker = 0;
    for (int i = 0; i < d->nworkers && !short_worker; i++) {
        worker_t *w = d->workers[i];
        short_worker = w->fd >= 0 && !w->eof && w->budget != 0 && w->ninflight < 2;
    }
    if (!short_worker && (++d->busy_submits % PUMP_EVERY) == 0) {
        dispatch_pump(d);
    }
    else if (short_worker && dispatch_assign_pending(d) && d->polling) {
        dispatch_wake_thread(d);
    }
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* After make_task() failed: the exception it raised, taken, when it is
 * an Exception (the task cannot be pickled, so it fails alone, through
 * its result, as the standard package's task thread fails it).  Its
 * traceback is dropped: the frames that raised it refer to their callers',
 * which hold the pool, and the result keeps the exception.  NULL, the
 * error still set, for anything else (KeyboardInterrupt): raised at the
 * call. */
static PyObject *
take_unsent_failure(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *exc = PyErr_GetRaisedException();
    if (exc != NULL && PyException_SetTraceback(exc, Py_None) < 0) {
        Py_CLEAR(exc);
    }
    return exc;
}

/* submit(job, index, kind, func, rest) -> None, or the exception that
 * pickling the task raised (see take_unsent_failure; nothing is queued). */
static PyObject *
Dispatcher_submit(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t job, index, kind;
    if (fastmp_check_nargs("submit", nargs, 5, 5) < 0
        || fastmp_parse_u64(args[0], &job) < 0 || fastmp_parse_u64(args[1], &index) < 0
        || fastmp_parse_u64(args[2], &kind) < 0) {
        return NULL;
    }
    task_t *t = make_task(d, job, index, kind, args[3], args[4]);
    if (t == NULL) {
        return take_unsent_failure();
    }
    if (queue_task(d, t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The next chunk of at most `size` items from `it`: a new list, an empty
 * one at the end of the input, or NULL with an exception set. */
static PyObject *
next_chunk(PyObject *it, Py_ssize_t size)
{
    PyObject *chunk = PyList_New(0);
    while (chunk != NULL && PyList_GET_SIZE(chunk) < size) {
        PyObject *item = PyIter_Next(it);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                Py_CLEAR(chunk);
            }
            break;
        }
        if (PyList_Append(chunk, item) < 0) {
            Py_CLEAR(chunk);
        }
        Py_DECREF(item);
    }
    return chunk;
}

/* submit_chunks(job, index, kind, func, iterator, chunksize, limit)
 *     -> (count, outcome, unsent)
 * Queue chunks of `chunksize` items read from `iterator` as tasks index,
 * index + 1, ..., at most `limit` of them.  count: the tasks queued.
 * outcome: None when `limit` were queued or the dispatcher closed; True
 * at the end of the input; the exception that reading the input or
 * pickling a chunk raised (the chunk at index + count is lost), returned
 * rather than raised so that the count is not lost with it.  unsent: True
 * when the chunk could not be pickled (an Exception, see
 * take_unsent_failure): it fails alone and the input goes on. */
static PyObject *
Dispatcher_submit_chunks(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t job, index, kind, limit;
    Py_ssize_t size;
    if (fastmp_check_nargs("submit_chunks", nargs, 7, 7) < 0
        || fastmp_parse_u64(args[0], &job) < 0 || fastmp_parse_u64(args[1], &index) < 0
        || fastmp_parse_u64(args[2], &kind) < 0 || fastmp_parse_u64(args[6], &limit) < 0) {
        return NULL;
    }
    if ((size = PyLong_AsSsize_t(args[5])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 1 || !PyIter_Check(args[4])) {
        PyErr_SetString(PyExc_ValueError, "submit_chunks() needs an iterator and chunksize >= 1");
        return NULL;
    }
    uint64_t count = 0;
    PyObject *outcome = NULL;
    int unsent = 0;
    while (count < limit && outcome == NULL) {
        if (d->closed) {
            break;
        }
        PyObject *chunk = next_chunk(args[4], size);
        if (chunk != NULL && PyList_GET_SIZE(chunk) == 0) {
            outcome = Py_NewRef(Py_True);
        }
        else {
            task_t *t = chunk != NULL ? make_task(d, job, index + count, kind, args[3], chunk)
                                      : NULL;
            if (t != NULL && queue_task(d, t) == 0) {
                count++;
            }
            else if (d->closed && PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();  /* terminated meanwhile: stop quietly */
                Py_XDECREF(chunk);
                break;
            }
            else if (t == NULL && chunk != NULL
                     && (outcome = take_unsent_failure()) != NULL) {
                unsent = 1;
            }
            else {
                outcome = PyErr_GetRaisedException();
            }
        }
        Py_XDECREF(chunk);
    }
    return Py_BuildValue("(KNO)", (unsigned long long)count,
                         outcome != NULL ? outcome : Py_NewRef(Py_None),
                         unsent ? Py_True : Py_False);
}

/* apply(job, notify, func, args, kwds) -> None: open a one-task job and
 * queue its task.  When the task cannot be pickled: the exception (see
 * take_unsent_failure), and the job is open with its count of tasks not
 * known, for the caller to record the failure, then expect(job, 0). */
static PyObject *
Dispatcher_apply(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id;
    if (fastmp_check_nargs("apply", nargs, 5, 5) < 0 || fastmp_parse_u64(args[0], &id) < 0) {
        return NULL;
    }
    int notify = PyObject_IsTrue(args[1]);
    if (notify < 0 || check_usable(d) < 0) {
        return NULL;
    }
    PyObject *rest = PyTuple_Pack(2, args[3], args[4]);
    if (rest == NULL) {
        return NULL;
    }
    PyObject *unsent = NULL;
    task_t *t = make_task(d, id, 0, FRAME_APPLY, args[2], rest);
    Py_DECREF(rest);
    if (t == NULL && (unsent = take_unsent_failure()) == NULL) {
        return NULL;
    }
    if (add_job(d, id, t != NULL ? 1 : -1, 0, notify) < 0) {
        free(t);
        Py_XDECREF(unsent);
        return NULL;
    }
    if (unsent != NULL) {
        return unsent;
    }
    if (queue_task(d, t) < 0) {
        lock_dispatcher(d);
        dispatch_free_job(dispatch_unlink_job(d, id));
        pthread_mutex_unlock(&d->mu);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Sleep on the futex `word` until it moves past `seen` or the deadline;
 * `sleepers` counts the threads asleep on it.  Called with the mutex held
 * and the GIL held; returns with both held.  Returns 0, ETIMEDOUT, or -1
 * with an exception set (a signal handler raised). */
static int
sleep_on_change(Dispatcher *d, uint32_t *word, int *sleepers, uint32_t seen,
                const fastmp_deadline *dl)
{
    (*sleepers)++;
    pthread_mutex_unlock(&d->mu);
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = fastmp_futex_wait(word, seen, dl);
    Py_END_ALLOW_THREADS
    int raised = 0;
    if (err == EINTR) {
        raised = PyErr_CheckSignals() < 0;
    }
    lock_dispatcher(d);
    (*sleepers)--;
    if (raised) {
        return -1;
    }
    return err == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* The outcomes c (taken from a job, mutex not held: reading a value may
 * run the garbage collector) as a new list of (index, status,
 * payload-or-pid-or-value) tuples; c is freed.  A RESULT_QUICK payload
 * is read here, into the value; one this reader cannot take goes as
 * RESULT_OK bytes to the pickle module.  Returns NULL with an exception
 * set on failure (the outcomes are then lost). */
static PyObject *
outcome_list(completion_t *c)
{
    PyObject *out = PyList_New(0);
    for (completion_t *p = c; out != NULL && p != NULL; p = p->next) {
        PyObject *item, *value;
        if (p->status == RESULT_LOST) {
            item = Py_BuildValue("(KIL)", (unsigned long long)p->index,
                                 (unsigned)p->status, (long long)p->pid);
        }
        else if (p->status == RESULT_QUICK
                 && fastmp_quick_loads((const char *)p->data, (Py_ssize_t)p->len, &value)) {
            item = Py_BuildValue("(KIN)", (unsigned long long)p->index,
                                 (unsigned)RESULT_QUICK, value);
        }
        else {
            item = Py_BuildValue("(KIy#)", (unsigned long long)p->index,
                                 p->status == RESULT_QUICK ? (unsigned)RESULT_OK
                                                           : (unsigned)p->status,
                                 (const char *)p->data, (Py_ssize_t)p->len);
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    dispatch_free_completions(c);
    return out;
}

enum { WAIT_NONE = 0, WAIT_ANY = 1, WAIT_READY = 2, WAIT_SOME = 3 };
enum { STATE_PENDING = 0, STATE_READY = 1, STATE_CLOSED = 2, STATE_GONE = 3 };

/* 1 when a wait of mode `want` for job j (NULL: unknown) is over. */
static int
wait_over(const Dispatcher *d, const job_t *j, long want)
{
    return j == NULL || want == WAIT_NONE || dispatch_job_ready(j)
           || ((want == WAIT_ANY || want == WAIT_SOME) && (j->head != NULL || j->nudged))
           || d->closed || d->error;
}

/* A wait in collect(), spun by fastmp_spin. */
typedef struct {
    Dispatcher *d;
    uint64_t id;
    long want;
} job_wait;

/* fastmp_spin's test for collect(): do the engine's work from this
 * thread, then look whether the wait is over */
static int
job_wait_over(void *arg)
{
    job_wait *w = arg;
    dispatch_lock_nogil(w->d);
    if (!w->d->closed) {
        dispatch_pump(w->d);
    }
    int over = wait_over(w->d, dispatch_find_job(w->d, w->id), w->want);
    dispatch_unlock_nogil(w->d);
    return over;
}

/* Spin (FASTMP_WAIT_POOL_RESULT, with the GIL released) until the wait for job
 * `id` is over, the spin's budget is spent or the deadline passes.
 * Called with the mutex and the GIL held; returns with both held. */
static void
spin_for_job(Dispatcher *d, uint64_t id, long want, const fastmp_deadline *dl)
{
    job_wait w = {d, id, want};
    pthread_mutex_unlock(&d->mu);
    Py_BEGIN_ALLOW_THREADS
    (void)fastmp_spin(FASTMP_WAIT_POOL_RESULT, &d->caller_spin, dl, job_wait_over, &w);
    Py_END_ALLOW_THREADS
    lock_dispatcher(d);
}

/* collect(job, timeout, want) -> (state, outcomes)
 * want 0: do not block; 1: until an outcome is there; 2: until the job is
 * ready; 3: as 1, for a job that is not asked again once ready.  state:
 * 0 pending, 1 ready, 2 the dispatcher closed first, 3 the job is unknown
 * to an open dispatcher (another thread collected it).  outcomes: every outcome not collected before.  A ready job
 * is forgotten here, except with want 1 (an imap iterator asks again
 * until it has seen every chunk). */
static PyObject *
Dispatcher_collect(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id;
    long want;
    fastmp_deadline dl;
    if (fastmp_check_nargs("collect", nargs, 3, 3) < 0 || fastmp_parse_u64(args[0], &id) < 0
        || fastmp_deadline_from_object(args[1], &dl) < 0) {
        return NULL;
    }
    if ((want = PyLong_AsLong(args[2])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    lock_dispatcher(d);
    int state, spun = 0;
    job_t *j;
    for (;;) {
        j = dispatch_find_job(d, id);
        if (j == NULL) {
            state = d->closed || d->error ? STATE_CLOSED : STATE_GONE;
            break;
        }
        state = dispatch_job_ready(j) ? STATE_READY : STATE_PENDING;
        if (state == STATE_READY || wait_over(d, j, want)) {
            if (state == STATE_PENDING && (d->closed || d->error)) {
                state = STATE_CLOSED;
            }
            break;
        }
        if (!dispatch_owned(d)) {
            state = STATE_CLOSED;
            break;
        }
        if (!spun && fastmp_spin_wanted(FASTMP_WAIT_POOL_RESULT, &d->caller_spin)) {
            spun = 1;
            spin_for_job(d, id, want, &dl);
            continue;           /* the mutex was released: look again */
        }
        dispatch_hand_back(d);
        int *interest = want == WAIT_READY ? &j->want_ready : &j->want_any;
        (*interest)++;
        uint32_t seen = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        int r = sleep_on_change(d, &d->seq, &d->waiters, seen, &dl);
        /* the job may have been forgotten (and freed) meanwhile */
        j = dispatch_find_job(d, id);
        if (j != NULL) {
            (*(want == WAIT_READY ? &j->want_ready : &j->want_any))--;
        }
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            state = j != NULL && dispatch_job_ready(j) ? STATE_READY : STATE_PENDING;
            break;
        }
    }
    completion_t *taken = NULL;
    if (j != NULL) {
        taken = j->head;
        j->head = j->tail = NULL;
        j->nudged = 0;
    }
    job_t *done = NULL;
    if (state == STATE_READY && want != WAIT_ANY) {
        done = dispatch_unlink_job(d, id);
    }
    pthread_mutex_unlock(&d->mu);
    dispatch_free_job(done);
    PyObject *outcomes = outcome_list(taken);
    if (outcomes == NULL) {
        return NULL;
    }
    return Py_BuildValue("(iN)", state, outcomes);
}

/* wait_idle(timeout) -> bool: True once no task is pending or in flight. */
static PyObject *
Dispatcher_wait_idle(Dispatcher *d, PyObject *timeout)
{
    fastmp_deadline dl;
    if (fastmp_deadline_from_object(timeout, &dl) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    int idle;
    for (;;) {
        idle = d->busy == 0;
        if (idle || d->closed || d->error) {
            break;
        }
        uint32_t seen = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        dispatch_hand_back(d);
        d->idle_waiters++;
        int r = sleep_on_change(d, &d->seq, &d->waiters, seen, &dl);
        d->idle_waiters--;
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            idle = d->busy == 0;
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return PyBool_FromLong(idle);
}

/* next_events(timeout) -> list of (kind, value), or None once closed.
 * kind 1 (EXIT): worker `value` (a pid) is gone; 2 (READY): job `value`
 * is ready (jobs opened with notify).  An empty list on timeout. */
static PyObject *
Dispatcher_next_events(Dispatcher *d, PyObject *timeout)
{
    fastmp_deadline dl;
    if (fastmp_deadline_from_object(timeout, &dl) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    while (d->ev_head == NULL && !d->closed && !d->error) {
        uint32_t seen = __atomic_load_n(&d->ev_seq, __ATOMIC_SEQ_CST);
        int r = sleep_on_change(d, &d->ev_seq, &d->ev_waiters, seen, &dl);
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            break;
        }
    }
    if (d->ev_head == NULL && (d->closed || d->error)) {
        pthread_mutex_unlock(&d->mu);
        Py_RETURN_NONE;
    }
    event_t *e = d->ev_head;
    d->ev_head = d->ev_tail = NULL;
    pthread_mutex_unlock(&d->mu);
    PyObject *out = PyList_New(0);
    while (e != NULL) {
        event_t *next = e->next;
        if (out != NULL) {
            PyObject *item = Py_BuildValue("(iL)", e->kind, (long long)e->value);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_CLEAR(out);
            }
            Py_XDECREF(item);
        }
        free(e);
        e = next;
    }
    return out;
}

/* close(stop=True): stop the thread, tell idle workers to STOP, close
 * every channel.  Waiting threads return with state "closed". */
static PyObject *
Dispatcher_close(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("close", nargs, 0, 1) < 0) {
        return NULL;
    }
    int stop = nargs > 0 ? PyObject_IsTrue(args[0]) : 1;
    if (stop < 0) {
        return NULL;
    }
    shutdown_dispatcher(d, stop);
    Py_RETURN_NONE;
}

/* close_in_child(): in a forked child, close the copies of the parent's
 * channels (a worker holding another's channel would hide its end of
 * file).  Nothing else runs in the child, so no lock is taken. */
static PyObject *
Dispatcher_close_in_child(Dispatcher *d, PyObject *Py_UNUSED(ignored))
{
    if (dispatch_owned(d)) {
        PyErr_SetString(PyExc_RuntimeError, "close_in_child() called in the parent");
        return NULL;
    }
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd >= 0) {
            close(w->fd);
            w->fd = -1;
        }
        if (w->sentinel >= 0) {
            close(w->sentinel);
            w->sentinel = -1;
        }
    }
    if (d->wakefd >= 0) {
        close(d->wakefd);
        d->wakefd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_get_busy(Dispatcher *d, void *Py_UNUSED(closure))
{
    lock_dispatcher(d);
    long long busy = d->busy;
    pthread_mutex_unlock(&d->mu);
    return PyLong_FromLongLong(busy);
}

static PyMethodDef Dispatcher_methods[] = {
    {"add_worker", (PyCFunction)(void (*)(void))Dispatcher_add_worker, METH_FASTCALL,
     "add_worker($self, fd, sentinel, pid, budget, /)\n--\n\n"
     "serve a worker over socket fd."},
    {"open_job", (PyCFunction)(void (*)(void))Dispatcher_open_job, METH_FASTCALL,
     "open_job($self, job, ntasks, drop_after_failure, notify, /)\n--\n\n"
     "Make a slot for a job's outcomes; ntasks -1 until expect() tells."},
    {"expect", (PyCFunction)(void (*)(void))Dispatcher_expect, METH_FASTCALL,
     "expect($self, job, ntasks, /)\n--\n\n"
     "the job has ntasks tasks in all."},
    {"forget", (PyCFunction)Dispatcher_forget, METH_O,
     "forget($self, job, /)\n--\n\n"
     "drop the job and its uncollected outcomes."},
    {"nudge", (PyCFunction)Dispatcher_nudge, METH_O,
     "nudge($self, job, /)\n--\n\n"
     "return the job's collectors from collect(), outcome or not."},
    {"finished", (PyCFunction)Dispatcher_finished, METH_O,
     "finished($self, job, /)\n--\n\n"
     "Tasks of the job with an outcome, or None if it is not open."},
    {"submit", (PyCFunction)(void (*)(void))Dispatcher_submit, METH_FASTCALL,
     "submit($self, job, index, kind, func, rest, /)\n--\n\n"
     "Queue one task and return None (rest: (args,\n"
     "kwds) for TASK_APPLY, the items for TASK_MAP and TASK_STARMAP); or the\n"
     "exception that pickling it raised (an Exception: nothing is queued)."},
    {"submit_chunks", (PyCFunction)(void (*)(void))Dispatcher_submit_chunks, METH_FASTCALL,
     "submit_chunks($self, job, index, kind, func, iterator, chunksize, limit, /)\n--\n\n"
     "Return (count, outcome, unsent):\n"
     "queue chunks read from iterator as tasks index, index + 1, ...; outcome is\n"
     "None (limit reached or closed), True (input ended) or the exception raised\n"
     "(unsent: by pickling the chunk, the input goes on)."},
    {"apply", (PyCFunction)(void (*)(void))Dispatcher_apply, METH_FASTCALL,
     "apply($self, job, notify, func, args, kwds, /)\n--\n\n"
     "Open a one-task job, queue its task and return None;\n"
     "or the exception that pickling it raised (an Exception), the job then\n"
     "open with its count not known: expect(job, 0) once the failure is recorded."},
    {"collect", (PyCFunction)(void (*)(void))Dispatcher_collect, METH_FASTCALL,
     "collect($self, job, timeout, want, /)\n--\n\n"
     "Return (state, [(index, status, data), ...])."},
    {"wait_idle", (PyCFunction)Dispatcher_wait_idle, METH_O,
     "wait_idle($self, timeout, /)\n--\n\n"
     "True once no task is pending or in flight."},
    {"next_events", (PyCFunction)Dispatcher_next_events, METH_O,
     "next_events($self, timeout, /)\n--\n\n"
     "[(kind, value), ...], or None once closed."},
    {"close", (PyCFunction)(void (*)(void))Dispatcher_close, METH_FASTCALL,
     "close($self, stop=True, /)\n--\n\n"
     "stop dispatching and close every channel."},
    {"close_in_child", (PyCFunction)Dispatcher_close_in_child, METH_NOARGS,
     "close_in_child($self, /)\n--\n\n"
     "after fork, close the child's copies of the channels."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Dispatcher_getset[] = {
    {"busy", (getter)Dispatcher_get_busy, NULL, "tasks pending or in flight", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Dispatcher_slots[] = {
    {Py_tp_new, Dispatcher_new},
    {Py_tp_dealloc, Dispatcher_dealloc},
    {Py_tp_methods, Dispatcher_methods},
    {Py_tp_getset, Dispatcher_getset},
    {Py_tp_doc, "Dispatcher(inflight=2): moves pool tasks to workers and "
                "results back, on a native thread."},
    {0, NULL},
};

static PyType_Spec Dispatcher_spec = {
    .name = "fastmp._fastmp.Dispatcher",
    .basicsize = sizeof(Dispatcher),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Dispatcher_slots,
};

int
fastmp_dispatcher_exec(PyObject *module, fastmp_state *st)
{
    if (dispatch_fork_init() < 0) {
        return -1;
    }
    st->Dispatcher_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Dispatcher_spec, NULL);
    if (st->Dispatcher_type == NULL
        || PyModule_AddType(module, st->Dispatcher_type) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "TASK_APPLY", FRAME_APPLY) < 0
        || PyModule_AddIntConstant(module, "TASK_MAP", FRAME_MAP) < 0
        || PyModule_AddIntConstant(module, "TASK_STARMAP", FRAME_STARMAP) < 0
        || PyModule_AddIntConstant(module, "RESULT_OK", RESULT_OK) < 0
        || PyModule_AddIntConstant(module, "RESULT_ERROR", RESULT_ERROR) < 0
        || PyModule_AddIntConstant(module, "RESULT_LOST", RESULT_LOST) < 0
        || PyModule_AddIntConstant(module, "RESULT_QUICK", RESULT_QUICK) < 0
        || PyModule_AddIntConstant(module, "EVENT_EXIT", EVENT_EXIT) < 0
        || PyModule_AddIntConstant(module, "EVENT_READY", EVENT_READY) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_dispatcher_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Dispatcher_type);
    return 0;
}

void
fastmp_dispatcher_clear(fastmp_state *st)
{
    Py_CLEAR(st->Dispatcher_type);
}
