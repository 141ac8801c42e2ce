/* worker.c - the pool worker's loop (child side of wire.h): read a
 * task frame from the parent's socket, run it in Python, write the result
 * frame back; until STOP, end of file or the task budget is spent. */
#include "pool/wire.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/spin.h"
#include "core/state.h"
#include "pickle/quickpickle.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_SIZE 65536
/* A buffer that grew past this for a large task is given back once that
 * task is done, so that a worker does not keep its largest task's size. */
#define READ_KEEP (1024 * 1024)

/* The worker's input buffer: one read() often brings several tasks. */
typedef struct {
    char *buf;
    size_t start, len, cap;     /* unparsed bytes: buf[start:start+len] */
    spin_state spin;            /* for the wait for the next task */
} inbuf;

/* A read of the next task, retried by fastmp_spin. */
typedef struct {
    int fd;
    char *at;
    size_t room;
    ssize_t n;                  /* what recv() returned */
    int err;                    /* errno after it */
} task_read;

/* fastmp_spin's test for the next task: a read without blocking that
 * moved bytes, met end of file or failed otherwise than with EAGAIN */
static int
task_came(void *arg)
{
    task_read *r = arg;
    r->n = recv(r->fd, r->at, r->room, MSG_DONTWAIT);
    r->err = r->n < 0 ? errno : 0;
    return r->n >= 0 || r->err != EAGAIN;
}

/* Retry a non-blocking read (FASTMP_WAIT_POOL_TASK, the GIL released) while
 * `in`'s record says it pays, so that a task sent soon after the last
 * result needs no wake-up.  Returns what read() returned, with errno
 * EAGAIN when nothing came. */
static ssize_t
spin_read(int fd, inbuf *in, char *at, size_t room)
{
    task_read r = {fd, at, room, -1, EAGAIN};
    if (fastmp_spin_wanted(FASTMP_WAIT_POOL_TASK, &in->spin)) {
        Py_BEGIN_ALLOW_THREADS
        (void)fastmp_spin(FASTMP_WAIT_POOL_TASK, &in->spin, NULL, task_came, &r);
        Py_END_ALLOW_THREADS
    }
    errno = r.err;
    return r.n;
}

/* Make sure `want` unparsed bytes are buffered, reading with the GIL
 * released and retrying after EINTR once signal handlers ran.  Returns 1
 * when they are, 0 on end of file with nothing buffered, -1 with an
 * exception set otherwise (end of file in mid-frame is an EOFError). */
static int
fill(int fd, inbuf *in, size_t want)
{
    if (in->len >= want) {
        return 1;
    }
    if (in->start + want > in->cap) {
        memmove(in->buf, in->buf + in->start, in->len);
        in->start = 0;
        if (want > in->cap) {
            char *grown = PyMem_RawRealloc(in->buf, want);
            if (grown == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            in->buf = grown;
            in->cap = want;
        }
    }
    while (in->len < want) {
        char *at = in->buf + in->start + in->len;
        size_t room = in->cap - in->start - in->len;
        ssize_t n = spin_read(fd, in, at, room);
        if (n < 0 && errno == EAGAIN) {
            Py_BEGIN_ALLOW_THREADS
            n = read(fd, at, room);
            Py_END_ALLOW_THREADS
        }
        if (n > 0) {
            in->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            if (in->len == 0) {
                return 0;
            }
            PyErr_SetString(PyExc_EOFError, "pool channel closed in mid-frame");
            return -1;
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        fastmp_oserror(errno, "read");
        return -1;
    }
    return 1;
}

/* Read the next frame: its header into *h and, for a task, a pointer to
 * its payload in *payload, valid until the next call.  Returns 1, 0 at
 * end of file, or -1 with an exception set. */
static int
next_frame(int fd, inbuf *in, frame_header *h, const char **payload)
{
    *payload = NULL;
    if (in->len == 0 && in->cap > READ_KEEP) {
        char *small = PyMem_RawRealloc(in->buf, READ_SIZE);
        if (small != NULL) {        /* else keep the large one */
            in->buf = small;
            in->cap = READ_SIZE;
            in->start = 0;
        }
    }
    int r = fill(fd, in, sizeof(*h));
    if (r <= 0) {
        return r;
    }
    memcpy(h, in->buf + in->start, sizeof(*h));
    if (h->kind == FRAME_STOP) {
        in->start += sizeof(*h);
        in->len -= sizeof(*h);
        return 1;
    }
    if (h->kind < FRAME_APPLY || h->kind > FRAME_STARMAP || h->len > FRAME_MAX_PAYLOAD
        || (h->status & ~FUNC_BY_NAME) > h->len) {
        PyErr_Format(PyExc_ValueError, "bad pool frame (kind %u, %llu bytes)",
                     (unsigned)h->kind, (unsigned long long)h->len);
        return -1;
    }
    size_t total = sizeof(*h) + (size_t)h->len;
    r = fill(fd, in, total);
    if (r <= 0) {
        if (r == 0) {
            PyErr_SetString(PyExc_EOFError, "pool channel closed in mid-frame");
        }
        return -1;
    }
    *payload = in->buf + in->start + sizeof(*h);
    in->start += total;
    in->len -= total;
    if (in->len == 0) {
        in->start = 0;      /* the payload stays put until the next fill() */
    }
    return 1;
}

/* Functions pickled by name that this worker unpickled, kept so that the
 * next task with the same function skips the lookup by name. */
#define FUNC_SLOTS 8
typedef struct {
    PyObject *pickle[FUNC_SLOTS];       /* bytes */
    PyObject *func[FUNC_SLOTS];
    unsigned runs[FUNC_SLOTS];          /* tasks it ran */
    int64_t longest_ns[FUNC_SLOTS];     /* the longest of them */
    int next_victim;
} func_cache;

/* The function of a task from its pickle `at[:len]` (cached when
 * `by_name`; *slot: its cache slot, or -1).  Returns a new reference, or
 * NULL with an exception set. */
static PyObject *
task_function(func_cache *cache, PyObject *loads, const char *at, size_t len,
              int by_name, int *slot)
{
    *slot = -1;
    if (by_name) {
        for (int i = 0; i < FUNC_SLOTS; i++) {
            PyObject *p = cache->pickle[i];
            if (p != NULL && (size_t)PyBytes_GET_SIZE(p) == len
                && memcmp(PyBytes_AS_STRING(p), at, len) == 0) {
                *slot = i;
                return Py_NewRef(cache->func[i]);
            }
        }
    }
    PyObject *pickled = PyBytes_FromStringAndSize(at, (Py_ssize_t)len);
    if (pickled == NULL) {
        return NULL;
    }
    PyObject *func = PyObject_CallOneArg(loads, pickled);
    if (func == NULL || !by_name) {
        Py_DECREF(pickled);
        return func;
    }
    int victim = cache->next_victim;
    cache->next_victim = (victim + 1) % FUNC_SLOTS;
    Py_XSETREF(cache->pickle[victim], pickled);
    Py_XSETREF(cache->func[victim], Py_NewRef(func));
    cache->runs[victim] = 0;
    cache->longest_ns[victim] = 0;
    *slot = victim;
    return func;
}

static void
clear_func_cache(func_cache *cache)
{
    for (int i = 0; i < FUNC_SLOTS; i++) {
        Py_CLEAR(cache->pickle[i]);
        Py_CLEAR(cache->func[i]);
    }
}

/* Write every byte of iov[0:nvec] with the GIL released.  Returns 0, or
 * -1 with an exception set. */
static int
write_all(int fd, struct iovec *iov, int nvec)
{
    int first = 0;
    while (first < nvec) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = writev(fd, iov + first, nvec - first);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            fastmp_oserror(errno, "writev");
            return -1;
        }
        size_t left = (size_t)n;
        while (first < nvec && left >= iov[first].iov_len) {
            left -= iov[first].iov_len;
            first++;
        }
        if (first < nvec) {
            iov[first].iov_base = (char *)iov[first].iov_base + left;
            iov[first].iov_len -= left;
        }
    }
    return 0;
}

/* Result frames held back: while the next task, already buffered, runs
 * the same function, and the tasks of that function took less than
 * OUT_SHORT_NS (see LONGEST_DECAY), their results go out together, one write for
 * several (the parent is woken once for them), within about OUT_HOLD_NS.
 * A held result waits for the next task to finish: holding is only for
 * functions known to take microseconds (one that took longer recently
 * is not held for, in this worker). */
#define OUT_HOLD_BYTES 65536
#define OUT_HOLD_NS 100000
#define OUT_SHORT_NS 20000
#define OUT_SHORT_RUNS 4         /* tasks of a function seen before holding */
/* A function's longest time fades by 1/LONGEST_DECAY per run: one run
 * made long by being preempted stops holding for about a hundred runs,
 * not for good, while a function whose runs are often long is never held
 * for. */
#define LONGEST_DECAY 16

typedef struct {
    char *buf;
    size_t len, cap;
    int64_t first_ns;           /* when the oldest held result was made */
    spin_state ahead;           /* looking into the socket for the next task */
} outbuf;

/* 1 when the next task is buffered whole and runs the same function
 * (pickled as `func_pickle`, bytes) as the task `done` just run. */
static int
same_task_buffered(const inbuf *in, const frame_header *done, PyObject *func_pickle)
{
    frame_header h;
    if (in->len < sizeof(h)) {
        return 0;
    }
    memcpy(&h, in->buf + in->start, sizeof(h));
    size_t func_len = (size_t)PyBytes_GET_SIZE(func_pickle);
    return h.kind == done->kind && h.status == done->status && h.len <= in->len - sizeof(h)
           && (done->status & ~FUNC_BY_NAME) == func_len
           && memcmp(in->buf + in->start + sizeof(h), PyBytes_AS_STRING(func_pickle),
                     func_len) == 0;
}

/* Buffer what the socket holds now, without blocking; a failure is left
 * for the next fill() to meet. */
static void
read_ready(int fd, inbuf *in)
{
    size_t room = in->cap - in->start - in->len;
    if (room > 0) {
        ssize_t n = recv(fd, in->buf + in->start + in->len, room, MSG_DONTWAIT);
        if (n > 0) {
            in->len += (size_t)n;
        }
    }
}

/* Send the held results, then the frame h + payload (h may be NULL).
 * Returns 0, or -1 with an exception set. */
static int
send_results(int fd, outbuf *out, frame_header *h, const char *payload)
{
    struct iovec iov[3];
    int nvec = 0;
    if (out->len > 0) {
        iov[nvec++] = (struct iovec){.iov_base = out->buf, .iov_len = out->len};
    }
    if (h != NULL) {
        iov[nvec++] = (struct iovec){.iov_base = h, .iov_len = sizeof(*h)};
        iov[nvec++] = (struct iovec){.iov_base = (void *)payload, .iov_len = (size_t)h->len};
    }
    out->len = 0;
    return nvec == 0 ? 0 : write_all(fd, iov, nvec);
}

/* Send result frame h + payload of the task `task` now, or hold it back
 * (see outbuf).  `func_pickle`: the pickle of the task's function when
 * every task of it so far was short, else NULL.  A task the parent sent
 * after this one was read may already wait in the socket: it is looked
 * for, unless such looks keep finding nothing (as with one task at a
 * time).  Returns 0, or -1 with an exception set. */
static int
put_result(int fd, outbuf *out, inbuf *in, const frame_header *task,
           PyObject *func_pickle, frame_header *h, const char *payload)
{
    size_t size = sizeof(*h) + (size_t)h->len;
    int hold = func_pickle != NULL && size <= OUT_HOLD_BYTES / 4
               && (out->len == 0 || fastmp_monotonic_ns() - out->first_ns < OUT_HOLD_NS);
    if (hold && !same_task_buffered(in, task, func_pickle)) {
        hold = 0;
        if (fastmp_early_try_wanted(&out->ahead)) {
            read_ready(fd, in);
            hold = same_task_buffered(in, task, func_pickle);
            fastmp_early_try_learn(FASTMP_WAIT_POOL_TASK, &out->ahead, hold);
        }
    }
    if (!hold) {
        return send_results(fd, out, h, payload);
    }
    if (out->cap - out->len < size) {
        size_t cap = out->len + size > OUT_HOLD_BYTES ? out->len + size : OUT_HOLD_BYTES;
        char *grown = PyMem_RawRealloc(out->buf, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        out->buf = grown;
        out->cap = cap;
    }
    if (out->len == 0) {
        out->first_ns = fastmp_monotonic_ns();
    }
    memcpy(out->buf + out->len, h, sizeof(*h));
    memcpy(out->buf + out->len + sizeof(*h), payload, (size_t)h->len);
    out->len += size;
    return out->len >= OUT_HOLD_BYTES ? send_results(fd, out, NULL, NULL) : 0;
}

/* func applied to one item (unpacked as the arguments when `star`):
 * a new reference, or NULL with an exception set. */
static PyObject *
call_item(PyObject *func, PyObject *item, int star)
{
    if (!star) {
        return PyObject_CallOneArg(func, item);
    }
    PyObject *args = PySequence_Tuple(item);
    PyObject *value = args == NULL ? NULL : PyObject_Call(func, args, NULL);
    Py_XDECREF(args);
    return value;
}

/* Apply `func` to each item of `items` (each item unpacked as the
 * arguments when `star`).  A list or tuple is walked in place; any other
 * iterable (a range, say) one item at a time, so that its items are not
 * all made first.  Returns a new list or NULL with an exception. */
static PyObject *
map_items(PyObject *func, PyObject *items, int star)
{
    if (PyList_CheckExact(items) || PyTuple_CheckExact(items)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
        PyObject *out = PyList_New(n);
        /* the items were unpickled for this task: nothing else holds them */
        for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
            PyObject *value = call_item(func, PySequence_Fast_GET_ITEM(items, i), star);
            if (value == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, value);
        }
        return out;
    }
    PyObject *it = PyObject_GetIter(items);
    Py_ssize_t hint = it == NULL ? -1 : PyObject_LengthHint(items, 0);
    PyObject *out = hint < 0 ? NULL : PyList_New(hint);    /* NULL slots until filled */
    Py_ssize_t filled = 0;
    PyObject *item;
    while (out != NULL && (item = PyIter_Next(it)) != NULL) {
        PyObject *value = call_item(func, item, star);
        Py_DECREF(item);
        if (value == NULL) {
            Py_CLEAR(out);
        }
        else if (filled < hint) {
            PyList_SET_ITEM(out, filled++, value);
        }
        else {
            int r = PyList_Append(out, value);
            Py_DECREF(value);
            if (r < 0) {
                Py_CLEAR(out);
            }
        }
    }
    if (out != NULL && PyErr_Occurred()) {
        Py_CLEAR(out);
    }
    if (out != NULL && filled < hint && PyList_SetSlice(out, filled, hint, NULL) < 0) {
        Py_CLEAR(out);
    }
    Py_XDECREF(it);
    return out;
}

/* Run one task whose payload is `at[:h->len]` (*slot: its function's
 * cache slot, or -1).  Returns the task's value, or NULL with the task's
 * exception set. */
static PyObject *
run_task(const frame_header *h, const char *at, func_cache *cache, PyObject *loads,
         int *slot)
{
    size_t func_len = h->status & ~FUNC_BY_NAME;
    PyObject *func = task_function(cache, loads, at, func_len,
                                   (h->status & FUNC_BY_NAME) != 0, slot);
    if (func == NULL) {
        return NULL;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)at + func_len,
                                             (Py_ssize_t)(h->len - func_len), PyBUF_READ);
    PyObject *rest = view != NULL ? PyObject_CallOneArg(loads, view) : NULL;
    Py_XDECREF(view);
    PyObject *value = NULL;
    if (rest == NULL) {
        /* the exception is the task's */
    }
    else if (h->kind != FRAME_APPLY) {
        value = map_items(func, rest, h->kind == FRAME_STARMAP);
    }
    else {
        /* rest: (args, kwds), kwds None for none */
        int pair = PyTuple_Check(rest) && PyTuple_GET_SIZE(rest) == 2;
        PyObject *args = pair ? PyTuple_GET_ITEM(rest, 0) : NULL;
        PyObject *kwds = pair ? PyTuple_GET_ITEM(rest, 1) : NULL;
        if (!pair || !PyTuple_Check(args) || (kwds != Py_None && !PyDict_Check(kwds))) {
            PyErr_SetString(PyExc_TypeError, "apply task arguments must be a tuple and a dict");
        }
        else {
            value = PyObject_Call(func, args, kwds == Py_None ? NULL : kwds);
        }
    }
    Py_DECREF(func);
    Py_XDECREF(rest);
    return value;
}

/* Results of plain data up to this size are written by pickle/quickpickle.c
 * (several times faster than a Pickler); its buffer is kept between
 * tasks unless it grew past QUICK_KEEP. */
#define QUICK_RESULT_MAX (16 * 1024 * 1024)
#define QUICK_KEEP (1024 * 1024)

/* Pickle the outcome of one task and set *status.  A value of plain data
 * is written into `quick` (RESULT_QUICK; Py_None is returned), any other
 * into a new bytes object.  A failure (or a value that cannot be
 * pickled) goes through on_failure(exc, value), which returns the bytes
 * to send.  Returns NULL with an exception set only when even that
 * fails, or for a BaseException that is not an Exception
 * (KeyboardInterrupt, SystemExit: they end the worker). */
static PyObject *
encode_outcome(PyObject *value, PyObject *dumps, PyObject *on_failure,
               quick_buffer *quick, uint32_t *status)
{
    if (value != NULL) {
        int r = fastmp_quick_dump_into(value, quick, QUICK_RESULT_MAX);
        if (r == 1) {
            *status = RESULT_QUICK;
            return Py_NewRef(Py_None);
        }
        PyObject *data = r == 0 ? PyObject_CallOneArg(dumps, value) : NULL;
        if (data != NULL) {
            *status = RESULT_OK;
            return data;
        }
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *data = PyObject_CallFunctionObjArgs(
        on_failure, exc, value == NULL ? Py_None : value, NULL);
    Py_DECREF(exc);
    *status = RESULT_ERROR;
    return data;
}

/* worker_loop(fd, loads, dumps, on_failure, maxtasks) -> tasks run */
static PyObject *
worker_loop(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("worker_loop", nargs, 5, 5) < 0) {
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        return NULL;
    }
    PyObject *loads = args[1], *dumps = args[2], *on_failure = args[3];
    long long maxtasks = PyLong_AsLongLong(args[4]);
    if (maxtasks == -1 && PyErr_Occurred()) {
        return NULL;
    }

    inbuf in = {.buf = PyMem_RawMalloc(READ_SIZE), .cap = READ_SIZE};
    if (in.buf == NULL) {
        return PyErr_NoMemory();
    }
    long long done = 0;
    PyObject *outcome = NULL;
    func_cache cache = {0};
    outbuf out = {0};
    quick_buffer quick = {0};
    while (maxtasks <= 0 || done < maxtasks) {
        frame_header h;
        const char *payload;
        int r = next_frame(fd, &in, &h, &payload);
        if (r <= 0 || h.kind == FRAME_STOP) {
            if (r >= 0) {
                outcome = PyLong_FromLongLong(done);
            }
            break;
        }
        int64_t started_ns = fastmp_monotonic_ns();
        int slot;
        PyObject *value = run_task(&h, payload, &cache, loads, &slot);
        uint32_t status = RESULT_OK;
        PyObject *data = encode_outcome(value, dumps, on_failure, &quick, &status);
        Py_XDECREF(value);
        PyObject *short_func = NULL;     /* its pickle, when it is short */
        if (slot >= 0) {
            /* the first run's time includes loading the function */
            int64_t ns = cache.runs[slot] > 0 ? fastmp_monotonic_ns() - started_ns : 0;
            int64_t *longest = &cache.longest_ns[slot];
            *longest = ns > *longest ? ns : *longest - *longest / LONGEST_DECAY;

            cache.runs[slot] += cache.runs[slot] < OUT_SHORT_RUNS;
            if (cache.runs[slot] >= OUT_SHORT_RUNS && cache.longest_ns[slot] < OUT_SHORT_NS) {
                short_func = cache.pickle[slot];
            }
        }
        if (data == NULL) {
            break;
        }
        Py_buffer view = {.buf = quick.buf, .len = (Py_ssize_t)quick.len};
        if (status != RESULT_QUICK && PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(data);
            break;
        }
        frame_header reply = {
            .kind = FRAME_RESULT, .status = status, .job = h.job,
            .index = h.index, .len = (uint64_t)view.len,
        };
        r = put_result(fd, &out, &in, &h, short_func, &reply, view.buf);
        if (status != RESULT_QUICK) {
            PyBuffer_Release(&view);
        }
        else if (quick.cap > QUICK_KEEP) {
            PyMem_RawFree(quick.buf);
            quick = (quick_buffer){0};
        }
        Py_DECREF(data);
        if (r < 0) {
            break;
        }
        done++;
    }
    if (outcome == NULL && !PyErr_Occurred()) {
        outcome = PyLong_FromLongLong(done);     /* the budget is spent */
    }
    if (out.len > 0) {
        /* the results of the tasks that ran go out whatever ended the loop */
        PyObject *exc = PyErr_GetRaisedException();
        if (send_results(fd, &out, NULL, NULL) < 0) {
            Py_CLEAR(outcome);
        }
        if (exc != NULL) {
            PyErr_SetRaisedException(exc);
        }
    }
    PyMem_RawFree(out.buf);
    PyMem_RawFree(quick.buf);
    clear_func_cache(&cache);
    PyMem_RawFree(in.buf);
    return outcome;
}

static PyMethodDef worker_functions[] = {
    {"worker_loop", (PyCFunction)(void (*)(void))worker_loop, METH_FASTCALL,
     "worker_loop($module, fd, loads, dumps, on_failure, maxtasks, /)\n--\n\n"
     "Serve pool tasks from the parent's socket `fd` until STOP, end of file\n"
     "or `maxtasks` tasks (0: no limit); return the number of tasks run."},
    {NULL, NULL, 0, NULL},
};

int
fastmp_worker_exec(PyObject *module, fastmp_state *st)
{
    return PyModule_AddFunctions(module, worker_functions);
}
