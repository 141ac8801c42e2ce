/* semlock.c - SemLock, the process-shared semaphore / lock behind every
 * fastmp.synchronize primitive, call-compatible with _multiprocessing.SemLock;
 * sem_unlink.
 *
 * The count is a futex word in a shared block (see semlock.h): acquire takes
 * a unit with one compare-and-swap, release gives it back with another and
 * makes a futex wake only when someone sleeps.  Per-process state (the
 * recursion count and the owning thread) lives in the object, as in the
 * standard module; it is reset in a forked child. */
#include "synchronize/semlock.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/fork.h"
#include "core/futex.h"
#include "core/shmblock.h"
#include "core/state.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <structmember.h>

#define SEMBLOCK_MAGIC 0x464d504cu      /* "FMPL" */
#define SEM_MAX_DEFERRED 8

/* The shared part of a SemLock. */
typedef struct {
    uint32_t value;     /* futex word: units available */
    uint32_t sleepers;  /* threads (of any process) asleep or about to be */
    uint32_t magic;
    uint32_t unused;
} semblock;

typedef struct {
    PyObject_HEAD
    semblock *blk;
    int kind;
    int maxvalue;
    int count;              /* acquisitions held by this process */
    uint64_t forks;         /* fork generation when `count` was last valid */
    unsigned int born;      /* fork_epoch when the block was allocated */
    int in_slab;            /* the block is a slab slot, not its own mapping */
    unsigned long owner;    /* thread ident of the last acquirer */
    PyObject *name;         /* str, or NULL when not reachable by name */
    /* Condition wakes held back until this RLock is released, so the woken
     * thread finds it free (fastmp_semlock_defer_wake).  `deferrer` is the
     * Condition whose block holds the words (borrowed: it cancels on death). */
    PyObject *deferrer;
    int ndeferred;
    uint32_t *deferred[SEM_MAX_DEFERRED];
} SemLockObject;

/* Unnamed locks (reachable by fork only) are 16-byte slots carved from
 * shared anonymous slabs: no mapping per lock, so programs can make many
 * thousands.  A freed slot is reused only if no fork happened since it was
 * handed out; otherwise a child may still use it, and it stays retired. */
#define SLAB_BYTES 65536
static char *slab_next, *slab_end;      /* unallocated rest of the slab */
static semblock **free_slots;           /* reusable slots, process-private */
static size_t nfree, free_capacity;

/* Bumped on both sides of every fork (the parent too, unlike the fork
 * generation): slots handed out in an earlier epoch may be in use by
 * another process. */
static volatile unsigned int fork_epoch;

static void
count_fork_in_parent(void)
{
    fork_epoch++;
}

static void
count_fork_in_child(void)
{
    fork_epoch++;
    /* the parent goes on carving and reusing these; the child must not */
    slab_next = slab_end = NULL;
    nfree = 0;
}

/* A zeroed slab slot for an unnamed lock; NULL with an exception set. */
static semblock *
slot_alloc(void)
{
    if (nfree > 0) {
        return free_slots[--nfree];
    }
    if (slab_next == slab_end) {
        char *slab = fastmp_block_create(NULL, SLAB_BYTES);
        if (slab == NULL) {
            return NULL;
        }
        slab_next = slab;
        slab_end = slab + SLAB_BYTES;
    }
    semblock *b = (semblock *)slab_next;
    slab_next += sizeof(semblock);
    return b;
}

/* Give back a slot handed out when fork_epoch was `born`. */
static void
slot_free(semblock *b, unsigned int born)
{
    if (born != fork_epoch) {
        return;         /* shared with a forked process: retire it */
    }
    if (nfree == free_capacity) {
        size_t cap = free_capacity ? free_capacity * 2 : 256;
        semblock **grown = PyMem_RawRealloc(free_slots, cap * sizeof(*grown));
        if (grown == NULL) {
            return;     /* out of memory: retire the slot rather than fail */
        }
        free_slots = grown;
        free_capacity = cap;
    }
    memset(b, 0, sizeof(*b));
    free_slots[nfree++] = b;
}

/* ---- the lock-free core (safe without the GIL) ----------------------- */

/* Take one unit if there is one: 1 if taken, else 0. */
static inline int
sem_try_take(semblock *b)
{
    uint32_t v = __atomic_load_n(&b->value, __ATOMIC_SEQ_CST);
    while (v > 0) {
        if (__atomic_compare_exchange_n(&b->value, &v, v - 1, 1,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            return 1;
        }
    }
    return 0;
}

/* Sleep until a unit can be taken, then take it.  Returns 0 once taken,
 * ETIMEDOUT, EINTR (nothing taken), or an errno value from futex().  No
 * spinning first: on a loaded machine with few cores (measured with
 * condition_pingpong) a spinner only delays the holder. */
static int
sem_wait_take(semblock *b, const fastmp_deadline *d)
{
    int err;
    /* Announce ourselves before the last check: a releaser that increments
     * value after our check then sees sleepers > 0 and wakes us. */
    __atomic_fetch_add(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        if (sem_try_take(b)) {
            err = 0;
            break;
        }
        err = fastmp_futex_wait(&b->value, 0, d);
        if (err == ETIMEDOUT) {
            err = sem_try_take(b) ? 0 : ETIMEDOUT;
            break;
        }
        if (err != 0) {
            break;
        }
    }
    __atomic_fetch_sub(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    return err;
}

/* Give one unit back unless that would pass `maxvalue`: 0, or -1 if the
 * count is already at maxvalue.  *wake_err is set from the futex wake. */
static int
sem_give(semblock *b, uint32_t maxvalue, int *wake_err)
{
    uint32_t v = __atomic_load_n(&b->value, __ATOMIC_SEQ_CST);
    do {
        if (v >= maxvalue) {
            return -1;
        }
    } while (!__atomic_compare_exchange_n(&b->value, &v, v + 1, 1,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    *wake_err = 0;
    if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0) {
        *wake_err = fastmp_futex_wake(&b->value, 1);
    }
    return 0;
}

/* ---- per-process bookkeeping ---------------------------------------- */

/* Forget acquisitions inherited from the parent through fork(). */
static inline void
sync_fork(SemLockObject *self)
{
    uint64_t now = fastmp_fork_generation();
    if (self->forks != now) {
        self->forks = now;
        self->count = 0;
        self->ndeferred = 0;        /* the parent still owns those wakes */
        self->deferrer = NULL;
    }
}

static inline int
is_mine(SemLockObject *self)
{
    sync_fork(self);
    return self->count > 0 && self->owner == PyThread_get_thread_ident();
}

/* Block until a unit is taken or the deadline passes, releasing the GIL.
 * 1 taken, 0 timed out, -1 with an exception (a signal handler raised or
 * futex failed). */
static int
wait_with_gil_released(SemLockObject *self, const fastmp_deadline *d)
{
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = sem_wait_take(self->blk, d);
        Py_END_ALLOW_THREADS
        if (err == 0) {
            return 1;
        }
        if (err == ETIMEDOUT) {
            return 0;
        }
        if (err != EINTR) {
            fastmp_oserror(err, "futex");
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* Record one acquisition by the calling thread. */
static inline void
note_acquired(SemLockObject *self, unsigned long me)
{
    self->count++;
    self->owner = me;
}

/* acquire() without its argument parsing; `timeout` in seconds, negative
 * for none.  1 acquired, 0 not (non-blocking or timed out), -1 error. */
static int
semlock_acquire_impl(SemLockObject *self, int blocking, double timeout)
{
    unsigned long me = PyThread_get_thread_ident();
    sync_fork(self);
    if (self->kind == FASTMP_RECURSIVE_MUTEX && self->count > 0 && self->owner == me) {
        if (self->count == INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "maximum recursion depth of the lock reached");
            return -1;
        }
        self->count++;
        return 1;
    }
    if (sem_try_take(self->blk)) {
        note_acquired(self, me);
        return 1;
    }
    if (!blocking) {
        return 0;
    }
    fastmp_deadline d;
    fastmp_deadline_from_seconds(timeout, &d);
    int r = wait_with_gil_released(self, &d);
    if (r == 1) {
        note_acquired(self, me);
    }
    return r;
}

/* Make the deferred Condition wakes.  0, or an errno value from futex(). */
static int
flush_deferred(SemLockObject *self)
{
    int first_err = 0;
    for (int i = 0; i < self->ndeferred; i++) {
        int err = fastmp_futex_wake(self->deferred[i], 1);
        if (err != 0 && first_err == 0) {
            first_err = err;
        }
    }
    self->ndeferred = 0;
    self->deferrer = NULL;
    return first_err;
}

/* release() proper: 0, or -1 with AssertionError (an RLock not held by
 * this thread), ValueError (released too many times) or OSError. */
static int
semlock_release_impl(SemLockObject *self)
{
    if (self->kind == FASTMP_RECURSIVE_MUTEX) {
        if (!is_mine(self)) {
            PyErr_SetString(PyExc_AssertionError,
                            "attempt to release recursive lock not owned by thread");
            return -1;
        }
        if (self->count > 1) {
            self->count--;
            return 0;
        }
    }
    else {
        sync_fork(self);
    }
    int wake_err;
    if (sem_give(self->blk, (uint32_t)self->maxvalue, &wake_err) < 0) {
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return -1;
    }
    self->count--;
    if (self->ndeferred > 0) {
        int err = flush_deferred(self);
        if (wake_err == 0) {
            wake_err = err;
        }
    }
    if (wake_err != 0) {
        fastmp_oserror(wake_err, "futex");
        return -1;
    }
    return 0;
}

/* ---- the C API (semlock.h) ------------------------------------------- */

int
fastmp_semlock_check(fastmp_state *st, PyObject *obj)
{
    return PyObject_TypeCheck(obj, st->SemLock_type);
}

int
fastmp_semlock_acquire_blocking(PyObject *semlock)
{
    return semlock_acquire_impl((SemLockObject *)semlock, 1, -1.0) < 0 ? -1 : 0;
}

int
fastmp_semlock_release(PyObject *semlock)
{
    return semlock_release_impl((SemLockObject *)semlock);
}

int
fastmp_semlock_is_mine(PyObject *semlock)
{
    return is_mine((SemLockObject *)semlock);
}

int
fastmp_semlock_defer_wake(PyObject *semlock, PyObject *deferrer, uint32_t *word)
{
    SemLockObject *self = (SemLockObject *)semlock;
    /* only an RLock is sure to be released by this very object */
    if (self->kind != FASTMP_RECURSIVE_MUTEX || !is_mine(self)
        || self->ndeferred == SEM_MAX_DEFERRED
        || (self->deferrer != NULL && self->deferrer != deferrer)) {
        return 0;
    }
    self->deferrer = deferrer;
    self->deferred[self->ndeferred++] = word;
    return 1;
}

int
fastmp_semlock_cancel_deferred(PyObject *semlock, PyObject *deferrer)
{
    SemLockObject *self = (SemLockObject *)semlock;
    if (self->deferrer != deferrer || self->ndeferred == 0) {
        return 0;
    }
    return flush_deferred(self);
}

int
fastmp_semlock_release_all(PyObject *semlock)
{
    SemLockObject *self = (SemLockObject *)semlock;
    int depth = self->kind == FASTMP_RECURSIVE_MUTEX ? self->count : 1;
    if (self->kind == FASTMP_RECURSIVE_MUTEX) {
        self->count = 1;
    }
    if (semlock_release_impl(self) < 0) {
        return -1;
    }
    return depth;
}

int
fastmp_semlock_reacquire(PyObject *semlock, int depth)
{
    SemLockObject *self = (SemLockObject *)semlock;
    if (semlock_acquire_impl(self, 1, -1.0) < 0) {
        return -1;
    }
    if (self->kind == FASTMP_RECURSIVE_MUTEX) {
        self->count = depth;
    }
    return 0;
}

/* ---- the Python type ------------------------------------------------- */

/* Let go of a SemLock's block: a slab slot or its own mapping. */
static void
block_release(semblock *blk, int in_slab, unsigned int born)
{
    if (in_slab) {
        slot_free(blk, born);
    }
    else {
        fastmp_block_unmap(blk, sizeof(semblock));
    }
}

/* Build an object of `type` around a block (a named mapping, or a slab
 * slot when `name` is NULL), which it takes over, releasing it on failure.
 * NULL with an exception set on error. */
static PyObject *
semlock_wrap(PyTypeObject *type, semblock *blk, int kind, int maxvalue, PyObject *name)
{
    SemLockObject *self = (SemLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        block_release(blk, name == NULL, fork_epoch);
        return NULL;
    }
    self->blk = blk;
    self->in_slab = name == NULL;
    self->born = fork_epoch;
    self->kind = kind;
    self->maxvalue = maxvalue;
    self->count = 0;
    self->forks = fastmp_fork_generation();
    self->owner = 0;
    self->name = Py_XNewRef(name);
    self->deferrer = NULL;
    self->ndeferred = 0;
    return (PyObject *)self;
}

static int
check_kind_and_max(int kind, int maxvalue)
{
    if (kind != FASTMP_RECURSIVE_MUTEX && kind != FASTMP_SEMAPHORE) {
        PyErr_SetString(PyExc_ValueError, "unrecognized kind");
        return -1;
    }
    if (maxvalue < 0) {
        PyErr_SetString(PyExc_ValueError, "maxvalue must be >= 0");
        return -1;
    }
    return 0;
}

/* SemLock(kind, value, maxvalue, name, unlink): a new lock.  With unlink
 * true the lock has no name at all (fork-inherited only). */
static PyObject *
semlock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"kind", "value", "maxvalue", "name", "unlink"};
    PyObject *a[5];
    int kind, value, maxvalue, unlink;
    if (fastmp_bind_slot_args("SemLock", args, kwds, names, 5, 5, a) < 0
        || fastmp_parse_int(a[0], "kind", &kind) < 0
        || fastmp_parse_int(a[1], "value", &value) < 0
        || fastmp_parse_int(a[2], "maxvalue", &maxvalue) < 0
        || fastmp_check_str("SemLock", "name", a[3]) < 0
        || (unlink = PyObject_IsTrue(a[4])) < 0) {
        return NULL;
    }
    PyObject *name = a[3];
    if (check_kind_and_max(kind, maxvalue) < 0) {
        return NULL;
    }
    if (value < 0) {
        PyErr_SetString(PyExc_ValueError, "semaphore initial value must be >= 0");
        return NULL;
    }
    const char *cname = NULL;
    if (!unlink) {
        cname = PyUnicode_AsUTF8(name);
        if (cname == NULL) {
            return NULL;
        }
    }
    semblock *blk = unlink ? slot_alloc() : fastmp_block_create(cname, sizeof(semblock));
    if (blk == NULL) {
        return NULL;
    }
    blk->value = (uint32_t)value;
    blk->magic = SEMBLOCK_MAGIC;
    return semlock_wrap(type, blk, kind, maxvalue, unlink ? NULL : name);
}

static void
semlock_dealloc(SemLockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    block_release(self->blk, self->in_slab, self->born);
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* A timeout object (not None) as seconds >= 0; -2.0 with an exception
 * set if it is not a number or is NaN. */
static double
timeout_seconds(PyObject *timeout)
{
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -2.0;
    }
    if (isnan(seconds)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -2.0;
    }
    return seconds < 0 ? 0.0 : seconds;
}

/* acquire(block=True, timeout=None) -> bool */
static PyObject *
semlock_acquire(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    if (fastmp_bind_args("acquire", args, nargs, kwnames, names, 2, 0, a) < 0) {
        return NULL;
    }
    PyObject *block = a[0], *timeout = a[1];
    int blocking = 1;
    if (block != NULL && (blocking = PyObject_IsTrue(block)) < 0) {
        return NULL;
    }
    double seconds = -1.0;
    if (timeout != NULL && timeout != Py_None && (seconds = timeout_seconds(timeout)) == -2.0) {
        return NULL;
    }
    int r = semlock_acquire_impl(self, blocking, seconds);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
semlock_release(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (semlock_release_impl(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
semlock_enter(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (semlock_acquire_impl(self, 1, -1.0) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
semlock_exit(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (semlock_release_impl(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
semlock_count(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    sync_fork(self);
    return PyLong_FromLong(self->count);
}

static PyObject *
semlock_is_mine(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(is_mine(self));
}

static PyObject *
semlock_get_value(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->blk->value, __ATOMIC_SEQ_CST));
}

static PyObject *
semlock_is_zero(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(__atomic_load_n(&self->blk->value, __ATOMIC_SEQ_CST) == 0);
}

static PyObject *
semlock_after_fork(SemLockObject *self, PyObject *Py_UNUSED(ignored))
{
    self->count = 0;
    Py_RETURN_NONE;
}

/* SemLock._rebuild(handle, kind, maxvalue, name): open the named lock
 * another process created (the handle is only meaningful there). */
static PyObject *
semlock_rebuild(PyTypeObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    int kind, maxvalue;
    if (fastmp_check_nargs("_rebuild", nargs, 4, 4) < 0
        || fastmp_parse_int(args[1], "kind", &kind) < 0
        || fastmp_parse_int(args[2], "maxvalue", &maxvalue) < 0) {
        return NULL;
    }
    PyObject *name = args[3];      /* args[0], the handle, means nothing here */
    if (check_kind_and_max(kind, maxvalue) < 0) {
        return NULL;
    }
    if (name == Py_None) {
        PyErr_SetString(PyExc_ValueError,
                        "this SemLock has no name, so another process cannot open "
                        "it: it can only be inherited through fork");
        return NULL;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "SemLock name must be str or None");
        return NULL;
    }
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL) {
        return NULL;
    }
    semblock *blk = fastmp_block_open(cname, sizeof(semblock));
    if (blk == NULL) {
        return NULL;
    }
    if (blk->magic != SEMBLOCK_MAGIC) {
        fastmp_block_unmap(blk, sizeof(semblock));
        PyErr_Format(PyExc_ValueError, "%R is not a fastmp SemLock", name);
        return NULL;
    }
    return semlock_wrap(cls, blk, kind, maxvalue, name);
}

static PyObject *
semlock_get_handle(SemLockObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->blk);
}

static PyObject *
semlock_get_name(SemLockObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->name != NULL ? self->name : Py_None);
}

static PyMethodDef semlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))semlock_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, block=True, timeout=None)\n--\n\n"
     "Take the lock or one unit "
     "of the semaphore; False if not blocking or on timeout."},
    {"release", (PyCFunction)semlock_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Release the lock, or give one unit back to the semaphore."},
    {"__enter__", (PyCFunction)semlock_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"
     "acquire(); return True."},
    {"__exit__", (PyCFunction)(void (*)(void))semlock_exit, METH_FASTCALL, "__exit__($self, /, *args)\n--\n\n"
     "release()."},
    {"locked", (PyCFunction)semlock_is_zero, METH_NOARGS,
     "locked($self, /)\n--\n\n"
     "Whether the object is locked right now: a lock held "
     "by any thread of any process, or a semaphore with no unit left."},
    {"_count", (PyCFunction)semlock_count, METH_NOARGS,
     "_count($self, /)\n--\n\n"
     "Acquisitions held by this process (recursion depth for an RLock)."},
    {"_is_mine", (PyCFunction)semlock_is_mine, METH_NOARGS,
     "_is_mine($self, /)\n--\n\n"
     "Whether the calling thread holds the lock."},
    {"_get_value", (PyCFunction)semlock_get_value, METH_NOARGS, "_get_value($self, /)\n--\n\n"
     "The current count."},
    {"_is_zero", (PyCFunction)semlock_is_zero, METH_NOARGS, "_is_zero($self, /)\n--\n\n"
     "Whether the count is zero."},
    {"_after_fork", (PyCFunction)semlock_after_fork, METH_NOARGS,
     "_after_fork($self, /)\n--\n\n"
     "Forget acquisitions inherited through fork (done automatically too)."},
    {"_rebuild", (PyCFunction)(void (*)(void))semlock_rebuild, METH_FASTCALL | METH_CLASS,
     "_rebuild($type, handle, kind, maxvalue, name, /)\n--\n\n"
     "open a named lock by name."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef semlock_members[] = {
    {"kind", T_INT, offsetof(SemLockObject, kind), READONLY, "RECURSIVE_MUTEX (0) or SEMAPHORE (1)"},
    {"maxvalue", T_INT, offsetof(SemLockObject, maxvalue), READONLY, "the highest count allowed"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef semlock_getset[] = {
    {"handle", (getter)semlock_get_handle, NULL, "address of the shared block in this process", NULL},
    {"name", (getter)semlock_get_name, NULL, "name to open the lock by, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot semlock_slots[] = {
    {Py_tp_new, semlock_new},
    {Py_tp_dealloc, semlock_dealloc},
    {Py_tp_methods, semlock_methods},
    {Py_tp_members, semlock_members},
    {Py_tp_getset, semlock_getset},
    {Py_tp_doc, "SemLock(kind, value, maxvalue, name, unlink)\n\n"
                "A semaphore or lock shared between processes (futex in shared memory)."},
    {0, NULL},
};

static PyType_Spec semlock_spec = {
    .name = "fastmp._fastmp.SemLock",
    .basicsize = sizeof(SemLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = semlock_slots,
};

/* sem_unlink(name): remove the name of a lock (an OSError if there is none). */
static PyObject *
fastmp_sem_unlink(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "sem_unlink() argument must be str");
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    if (fastmp_block_unlink(name) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef semlock_functions[] = {
    {"sem_unlink", fastmp_sem_unlink, METH_O, "sem_unlink($module, name, /)\n--\n\nRemove a SemLock's name."},
    {NULL, NULL, 0, NULL},
};

int
fastmp_semlock_exec(PyObject *module, fastmp_state *st)
{
    static const fastmp_fork_hooks hooks = {
        "semlock", NULL, count_fork_in_parent, count_fork_in_child,
    };
    if (fastmp_fork_add_hooks(&hooks) < 0) {
        return -1;
    }
    st->SemLock_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &semlock_spec, NULL);
    if (st->SemLock_type == NULL) {
        return -1;
    }
    PyObject *maxv = PyLong_FromLong(INT_MAX);
    if (maxv == NULL) {
        return -1;
    }
    int r = PyObject_SetAttrString((PyObject *)st->SemLock_type, "SEM_VALUE_MAX", maxv);
    Py_DECREF(maxv);
    if (r < 0
        || PyModule_AddObjectRef(module, "SemLock", (PyObject *)st->SemLock_type) < 0
        || PyModule_AddFunctions(module, semlock_functions) < 0
        || PyModule_AddIntConstant(module, "SEM_VALUE_MAX", INT_MAX) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_semlock_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->SemLock_type);
    return 0;
}

void
fastmp_semlock_clear(fastmp_state *st)
{
    Py_CLEAR(st->SemLock_type);
}
