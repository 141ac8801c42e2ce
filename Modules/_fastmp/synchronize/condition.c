/* condition.c - Condition: a process-shared condition variable over a
 * fastmp SemLock, the C core of fastmp.synchronize's Condition, Event and
 * Barrier.
 *
 * Every waiter owns a slot in a shared block and sleeps on the slot's own
 * futex word.  notify(n) (called with the lock held) moves the n oldest
 * waiting slots to NOTIFIED and wakes exactly those threads, so a
 * notification can never be taken by a thread that starts waiting later,
 * and the notifier never waits for the woken thread to answer (the standard
 * package's Condition needs that handshake).  A waiter whose process died is
 * skipped and its slot reclaimed.  The block also holds a few spare words
 * that Event and Barrier keep their shared state in. */
#include "synchronize/semlock.h"
#include "core/args.h"
#include "core/deadline.h"
#include "core/errors.h"
#include "core/fork.h"
#include "core/futex.h"
#include "core/shmblock.h"
#include "core/state.h"

#include <errno.h>
#include <signal.h>
#include <structmember.h>
#include <sys/types.h>
#include <unistd.h>

#define CONDBLOCK_MAGIC 0x464d5043u     /* "FMPC" */
#define CONDBLOCK_SIZE 65536            /* touched (so allocated) only as used */
#define COND_WORDS 8

enum { SLOT_FREE = 0, SLOT_WAITING = 1, SLOT_NOTIFIED = 2 };

typedef struct {
    uint32_t state;     /* futex word: SLOT_* */
    uint32_t ticket;    /* arrival order, for first-come first-notified */
    int32_t pid;        /* the waiter's process */
    uint32_t unused;
} condslot;

typedef struct {
    uint32_t magic;
    uint32_t used;          /* slots [0, used) have been handed out */
    uint32_t next_ticket;
    uint32_t waiting;       /* slots in SLOT_WAITING */
    int32_t words[COND_WORDS];
    condslot slots[];
} condblock;

#define COND_MAX_SLOTS ((CONDBLOCK_SIZE - sizeof(condblock)) / sizeof(condslot))

typedef struct {
    PyObject_HEAD
    condblock *blk;
    PyObject *lock;     /* the SemLock this condition uses */
    PyObject *name;     /* str, or NULL when reachable through fork only */
} ConditionObject;

/* ---- slots (claimed and notified with the lock held) ---------------- */

/* Claim a free slot for the calling thread; the lock must be held.
 * Returns the slot, or NULL with RuntimeError when all are taken. */
static condslot *
claim_slot(condblock *b)
{
    uint32_t used = __atomic_load_n(&b->used, __ATOMIC_SEQ_CST);
    condslot *s = NULL;
    for (uint32_t i = 0; i < used; i++) {
        if (__atomic_load_n(&b->slots[i].state, __ATOMIC_SEQ_CST) == SLOT_FREE) {
            s = &b->slots[i];
            break;
        }
    }
    if (s == NULL) {
        if (used >= COND_MAX_SLOTS) {
            PyErr_Format(PyExc_RuntimeError, "more than %zu threads are waiting "
                         "on one Condition", (size_t)COND_MAX_SLOTS);
            return NULL;
        }
        s = &b->slots[used];
        __atomic_store_n(&b->used, used + 1, __ATOMIC_SEQ_CST);
    }
    s->ticket = b->next_ticket++;
    s->pid = (int32_t)fastmp_fork_pid();
    __atomic_fetch_add(&b->waiting, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s->state, SLOT_WAITING, __ATOMIC_SEQ_CST);
    return s;
}

/* Move slot `s` out of SLOT_WAITING into `to`.  1 if this call did it, 0 if
 * someone else already had (the waiter timed out, or was notified). */
static int
leave_waiting(condblock *b, condslot *s, uint32_t to)
{
    uint32_t expected = SLOT_WAITING;
    if (!__atomic_compare_exchange_n(&s->state, &expected, to, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        return 0;
    }
    __atomic_fetch_sub(&b->waiting, 1, __ATOMIC_SEQ_CST);
    return 1;
}

/* Sleep until slot `s` leaves SLOT_WAITING.  No GIL.  0 when it has,
 * ETIMEDOUT, EINTR, or an errno value from futex(). */
static int
sleep_on_slot(condslot *s, const fastmp_deadline *d)
{
    while (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) == SLOT_WAITING) {
        int err = fastmp_futex_wait(&s->state, SLOT_WAITING, d);
        if (err != 0) {
            return err;
        }
    }
    return 0;
}

/* Whether the process that claimed `s` is gone.  A process seen alive is
 * not asked again for a while, to keep kill() off the notify fast path. */
static int
waiter_is_dead(const condslot *s)
{
    static __thread pid_t alive_pid;
    static __thread struct timespec alive_at;
    pid_t pid = (pid_t)s->pid;
    if (pid == fastmp_fork_pid()) {
        return 0;
    }
    struct timespec now;
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    if (pid == alive_pid && now.tv_sec - alive_at.tv_sec < 1) {
        return 0;
    }
    if (kill(pid, 0) < 0 && errno == ESRCH) {
        return 1;
    }
    alive_pid = pid;
    alive_at = now;
    return 0;
}

/* The waiting slot that arrived first, or NULL. */
static condslot *
oldest_waiting(condblock *b)
{
    uint32_t used = __atomic_load_n(&b->used, __ATOMIC_SEQ_CST);
    condslot *best = NULL;
    for (uint32_t i = 0; i < used; i++) {
        condslot *s = &b->slots[i];
        if (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) == SLOT_WAITING
            && (best == NULL || (int32_t)(s->ticket - best->ticket) < 0)) {
            best = s;
        }
    }
    return best;
}

/* Notify slot `s` if it still waits and its process lives: 1 if notified,
 * 0 if not; -1 with an exception if the futex wake failed.  The wake waits
 * for the lock's release when the lock allows (see semlock.h). */
static int
notify_slot(ConditionObject *cond, condslot *s)
{
    condblock *b = cond->blk;
    if (waiter_is_dead(s)) {
        (void)leave_waiting(b, s, SLOT_FREE);
        return 0;
    }
    if (!leave_waiting(b, s, SLOT_NOTIFIED)) {
        return 0;
    }
    if (fastmp_semlock_defer_wake(cond->lock, (PyObject *)cond, &s->state)) {
        return 1;
    }
    int err = fastmp_futex_wake(&s->state, 1);
    if (err != 0) {
        fastmp_oserror(err, "futex");
        return -1;
    }
    return 1;
}

/* Wake up to n waiters, oldest first.  -1 with an exception on error. */
static int
notify_waiters(ConditionObject *cond, Py_ssize_t n)
{
    condblock *b = cond->blk;
    if (n >= (Py_ssize_t)__atomic_load_n(&b->waiting, __ATOMIC_SEQ_CST)) {
        /* everyone: order does not matter, one pass */
        uint32_t used = __atomic_load_n(&b->used, __ATOMIC_SEQ_CST);
        for (uint32_t i = 0; i < used; i++) {
            condslot *s = &b->slots[i];
            if (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) == SLOT_WAITING
                && notify_slot(cond, s) < 0) {
                return -1;
            }
        }
        return 0;
    }
    for (Py_ssize_t done = 0; done < n;) {
        condslot *s = oldest_waiting(b);
        if (s == NULL) {
            break;
        }
        int r = notify_slot(cond, s);
        if (r < 0) {
            return -1;
        }
        done += r;
    }
    return 0;
}

/* ---- the Python type ------------------------------------------------- */

static fastmp_state *
cond_state(PyTypeObject *tp)
{
    return fastmp_state_from_type(tp);
}

/* Build an object of `type` on a mapped block (unmapped on failure). */
static PyObject *
condition_wrap(PyTypeObject *type, condblock *blk, PyObject *lock, PyObject *name)
{
    ConditionObject *self = (ConditionObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        fastmp_block_unmap(blk, CONDBLOCK_SIZE);
        return NULL;
    }
    self->blk = blk;
    self->lock = Py_NewRef(lock);
    self->name = Py_XNewRef(name);
    return (PyObject *)self;
}

static int
check_lock(PyTypeObject *type, PyObject *lock)
{
    fastmp_state *st = cond_state(type);
    if (st == NULL) {
        return -1;
    }
    if (!fastmp_semlock_check(st, lock)) {
        PyErr_Format(PyExc_TypeError, "a Condition needs a fastmp Lock or RLock, not %.100s",
                     Py_TYPE(lock)->tp_name);
        return -1;
    }
    return 0;
}

/* Condition(lock, name, unlink): a new condition variable over `lock`; with
 * unlink true it has no name (fork-inherited only). */
static PyObject *
condition_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"lock", "name", "unlink"};
    PyObject *a[3];
    int unlink;
    if (fastmp_bind_slot_args("Condition", args, kwds, names, 3, 3, a) < 0
        || fastmp_check_str("Condition", "name", a[1]) < 0
        || (unlink = PyObject_IsTrue(a[2])) < 0
        || check_lock(type, a[0]) < 0) {
        return NULL;
    }
    PyObject *lock = a[0], *name = a[1];
    const char *cname = NULL;
    if (!unlink && (cname = PyUnicode_AsUTF8(name)) == NULL) {
        return NULL;
    }
    condblock *blk = fastmp_block_create(cname, CONDBLOCK_SIZE);
    if (blk == NULL) {
        return NULL;
    }
    blk->magic = CONDBLOCK_MAGIC;
    return condition_wrap(type, blk, lock, unlink ? NULL : name);
}

/* Condition._rebuild(lock, name): open the named condition made elsewhere. */
static PyObject *
condition_rebuild(PyTypeObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("_rebuild", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *lock = args[0], *name = args[1];
    if (fastmp_check_str("_rebuild", "name", name) < 0 || check_lock(cls, lock) < 0) {
        return NULL;
    }
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL) {
        return NULL;
    }
    condblock *blk = fastmp_block_open(cname, CONDBLOCK_SIZE);
    if (blk == NULL) {
        return NULL;
    }
    if (blk->magic != CONDBLOCK_MAGIC) {
        fastmp_block_unmap(blk, CONDBLOCK_SIZE);
        PyErr_Format(PyExc_ValueError, "%R is not a fastmp Condition", name);
        return NULL;
    }
    return condition_wrap(cls, blk, lock, name);
}

static int
condition_traverse(ConditionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->lock);
    return 0;
}

static int
condition_clear(ConditionObject *self)
{
    if (self->lock != NULL) {
        /* our block is about to go: make the wakes we left on the lock */
        (void)fastmp_semlock_cancel_deferred(self->lock, (PyObject *)self);
    }
    Py_CLEAR(self->lock);
    return 0;
}

static void
condition_dealloc(ConditionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)condition_clear(self);
    Py_CLEAR(self->name);
    fastmp_block_unmap(self->blk, CONDBLOCK_SIZE);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* 0 if the calling thread holds the lock, else -1 with AssertionError(msg). */
static int
require_owner(ConditionObject *self, const char *msg)
{
    if (self->lock == NULL || !fastmp_semlock_is_mine(self->lock)) {
        PyErr_SetString(PyExc_AssertionError, msg);
        return -1;
    }
    return 0;
}

/* Sleep in slot `s` until notified or the deadline, with the GIL released.
 * 1 notified, 0 timed out, -1 with an exception (a signal handler raised,
 * or futex failed); in every case the slot is left free. */
static int
wait_in_slot(condblock *b, condslot *s, const fastmp_deadline *d)
{
    int result;
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = sleep_on_slot(s, d);
        Py_END_ALLOW_THREADS
        if (err == 0) {
            result = 1;
            break;
        }
        if (err == ETIMEDOUT) {
            result = 0;
            break;
        }
        if (err != EINTR) {
            fastmp_oserror(err, "futex");
            result = -1;
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            result = -1;
            break;
        }
    }
    if (result != 1 && !leave_waiting(b, s, SLOT_FREE)) {
        /* a notify got there first: it counts as delivered */
        if (result == 0) {
            result = 1;
        }
    }
    __atomic_store_n(&s->state, SLOT_FREE, __ATOMIC_SEQ_CST);
    return result;
}

/* wait(timeout=None) -> bool: release the lock, sleep until notified or
 * timed out, take the lock back; False on timeout. */
static PyObject *
condition_wait(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *timeout;
    if (fastmp_bind_args("wait", args, nargs, kwnames, names, 1, 0, &timeout) < 0) {
        return NULL;
    }
    if (require_owner(self, "must acquire() condition before using wait()") < 0) {
        return NULL;
    }
    fastmp_deadline d;
    if (fastmp_deadline_from_object(timeout, &d) < 0) {
        return NULL;
    }
    condslot *s = claim_slot(self->blk);
    if (s == NULL) {
        return NULL;
    }
    PyObject *lock = Py_NewRef(self->lock);
    int depth = fastmp_semlock_release_all(lock);
    if (depth < 0) {
        (void)leave_waiting(self->blk, s, SLOT_FREE);
        Py_DECREF(lock);
        return NULL;
    }
    int notified = wait_in_slot(self->blk, s, &d);
    /* Take the lock back even when failing, as a with-block expects; keep
     * the first error. */
    PyObject *exc = PyErr_GetRaisedException();
    int relocked = fastmp_semlock_reacquire(lock, depth);
    Py_DECREF(lock);
    if (relocked < 0) {
        Py_XDECREF(exc);
        return NULL;
    }
    PyErr_SetRaisedException(exc);
    if (notified < 0) {
        return NULL;
    }
    return PyBool_FromLong(notified);
}

/* notify(n=1): wake up to n waiters; the lock must be held. */
static PyObject *
condition_notify(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"n"};
    PyObject *given;
    Py_ssize_t n = 1;
    if (fastmp_bind_args("notify", args, nargs, kwnames, names, 1, 0, &given) < 0) {
        return NULL;
    }
    if (given != NULL) {
        n = PyNumber_AsSsize_t(given, PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();      /* a huge n: everyone */
            n = PY_SSIZE_T_MAX;
        }
    }
    if (require_owner(self, "lock is not owned") < 0) {
        return NULL;
    }
    if (n > 0 && notify_waiters(self, n) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
condition_notify_all(ConditionObject *self, PyObject *Py_UNUSED(ignored))
{
    if (require_owner(self, "lock is not owned") < 0
        || notify_waiters(self, PY_SSIZE_T_MAX) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* 0, or -1 with ValueError if the garbage collector took the lock away. */
static int
require_lock(ConditionObject *self)
{
    if (self->lock == NULL) {
        PyErr_SetString(PyExc_ValueError, "the Condition has been cleared");
        return -1;
    }
    return 0;
}

static PyObject *
condition_enter(ConditionObject *self, PyObject *Py_UNUSED(ignored))
{
    if (require_lock(self) < 0 || fastmp_semlock_acquire_blocking(self->lock) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
condition_exit(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (require_lock(self) < 0 || fastmp_semlock_release(self->lock) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
condition_waiters(ConditionObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->blk->waiting, __ATOMIC_SEQ_CST));
}

/* Index argument of _word/_set_word: 0 <= i < COND_WORDS, else -1 + IndexError. */
static Py_ssize_t
word_index(PyObject *arg)
{
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (i < 0 || i >= COND_WORDS) {
        PyErr_SetString(PyExc_IndexError, "shared word index out of range");
        return -1;
    }
    return i;
}

static PyObject *
condition_word(ConditionObject *self, PyObject *arg)
{
    Py_ssize_t i = word_index(arg);
    if (i < 0) {
        return NULL;
    }
    return PyLong_FromLong(__atomic_load_n(&self->blk->words[i], __ATOMIC_SEQ_CST));
}

static PyObject *
condition_set_word(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("_set_word", nargs, 2, 2) < 0) {
        return NULL;
    }
    Py_ssize_t i = word_index(args[0]);
    if (i < 0) {
        return NULL;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(args[1], &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "shared word value out of 32-bit range");
        return NULL;
    }
    __atomic_store_n(&self->blk->words[i], (int32_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
condition_get_handle(ConditionObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->blk);
}

static PyObject *
condition_get_name(ConditionObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->name != NULL ? self->name : Py_None);
}

static PyObject *
condition_get_lock(ConditionObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->lock != NULL ? self->lock : Py_None);
}

static PyMethodDef condition_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))condition_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait($self, timeout=None)\n--\n\n"
     "Release the lock, sleep until notified "
     "(True) or timed out (False), take the lock back."},
    {"notify", (PyCFunction)(void (*)(void))condition_notify, METH_FASTCALL | METH_KEYWORDS,
     "notify($self, n=1)\n--\n\n"
     "wake up to n waiters, oldest first."},
    {"notify_all", (PyCFunction)condition_notify_all, METH_NOARGS, "notify_all($self, /)\n--\n\n"
     "Wake every waiter."},
    {"__enter__", (PyCFunction)condition_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"
     "Acquire the lock."},
    {"__exit__", (PyCFunction)(void (*)(void))condition_exit, METH_FASTCALL, "__exit__($self, /, *args)\n--\n\n"
     "Release the lock."},
    {"_waiters", (PyCFunction)condition_waiters, METH_NOARGS, "_waiters($self, /)\n--\n\n"
     "Threads waiting now."},
    {"_word", (PyCFunction)condition_word, METH_O, "_word($self, index, /)\n--\n\n"
     "shared word i."},
    {"_set_word", (PyCFunction)(void (*)(void))condition_set_word, METH_FASTCALL,
     "_set_word($self, index, value, /)\n--\n\n"
     "set shared word i."},
    {"_rebuild", (PyCFunction)(void (*)(void))condition_rebuild, METH_FASTCALL | METH_CLASS,
     "_rebuild($type, lock, name, /)\n--\n\n"
     "open a named condition by name."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef condition_getset[] = {
    {"handle", (getter)condition_get_handle, NULL, "address of the shared block here", NULL},
    {"name", (getter)condition_get_name, NULL, "name to open it by, or None", NULL},
    {"_lock", (getter)condition_get_lock, NULL, "the lock", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot condition_slots[] = {
    {Py_tp_new, condition_new},
    {Py_tp_dealloc, condition_dealloc},
    {Py_tp_traverse, condition_traverse},
    {Py_tp_clear, condition_clear},
    {Py_tp_methods, condition_methods},
    {Py_tp_getset, condition_getset},
    {Py_tp_doc, "Condition(lock, name, unlink)\n\nA condition variable shared "
                "between processes, over a fastmp SemLock."},
    {0, NULL},
};

static PyType_Spec condition_spec = {
    .name = "fastmp._fastmp.Condition",
    .basicsize = sizeof(ConditionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = condition_slots,
};

int
fastmp_condition_exec(PyObject *module, fastmp_state *st)
{
    if (fastmp_fork_track() < 0) {
        return -1;
    }
    st->Condition_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &condition_spec, NULL);
    if (st->Condition_type == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Condition", (PyObject *)st->Condition_type);
}

int
fastmp_condition_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Condition_type);
    return 0;
}

void
fastmp_condition_clear(fastmp_state *st)
{
    Py_CLEAR(st->Condition_type);
}
