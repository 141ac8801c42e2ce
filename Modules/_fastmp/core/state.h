/* fastmp.h - declarations shared by the C files of fastmp._fastmp:
 * the per-module state, the per-file exec hooks, error helpers and
 * CLOCK_MONOTONIC deadline helpers. */
#ifndef FASTMP_H
#define FASTMP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

/* Per-module state.  Each C file owns the fields in its own section;
 * module.c clears and traverses all of them through the per-file hooks. */
typedef struct {
    /* module.c: exceptions (their __module__ is fastmp.context) */
    PyObject *ProcessError;
    PyObject *BufferTooShort;
    PyObject *TimeoutError;
    PyObject *AuthenticationError;
    PyObject *flags;                /* dict exposed as _fastmp.flags */

    /* connection.c; pickler.c (its fields after ReducerChain_type are
     * filled on first use) */
    PyTypeObject *Connection_type;
    PyTypeObject *ReducerChain_type;
    PyObject *forking_pickler;      /* fastmp.reduction.ForkingPickler */
    PyObject *forking_loads;        /* ... and its loads */
    PyObject *reducer_chain;        /* its reducers over copyreg's, live */
    PyObject *pickle_chunks;        /* list the reused pickler writes into */
    PyObject *pickler_dump;         /* the reused pickler's bound dump */
    PyObject *pickler_clear;        /* ... and clear_memo */
    int pickler_busy;               /* the reused pickler is mid-dump */

    /* semlock.c, condition.c */
    PyTypeObject *SemLock_type;
    PyTypeObject *Condition_type;

    /* channel.c */
    PyTypeObject *Channel_type;
    PyObject *chan_Empty;           /* queue.Empty */
    PyObject *chan_Full;            /* queue.Full */
    PyObject *chan_fast_dumps;      /* pickle.dumps, for plain atoms */
    PyObject *chan_dumps;           /* ForkingPickler-aware dumps */
    PyObject *chan_loads;           /* pickle.loads */
    PyObject *chan_ShutDown;        /* a shut-down queue's exception */

    /* shm.c, shm_sync.c, shm_segment.c */
    PyTypeObject *Arena_type;
    PyTypeObject *Heap_type;
    PyTypeObject *BufferWrapper_type;
    PyObject *str_heap;             /* interned "_heap" */
    PyTypeObject *SyncCore_type;    /* lock + ctypes object, generic access */
    PyTypeObject *SyncValue_type;   /* + fast .value */
    PyTypeObject *SyncArray_type;   /* + fast [i] */
    PyObject *str_value;            /* interned "value" */
    PyObject *plain_lock_types;     /* {lock type: keeps SemLock's methods?} */
    PyTypeObject *SegmentMapping_type;  /* shm_segment.c */

    /* dispatch.c */
    PyTypeObject *Dispatcher_type;

    /* manager.c: interned attribute names and reply kinds */
#define FASTMP_MANAGER_STRINGS 19
    PyObject *mgr_strings[FASTMP_MANAGER_STRINGS];
} fastmp_state;

extern PyModuleDef fastmp_module_def;

/* Module state for the module that defined `tp` or one of its bases
 * (works for Python subclasses of our heap types).  Never fails once the
 * module is initialised; returns NULL with an exception set otherwise. */
fastmp_state *fastmp_state_from_type(PyTypeObject *tp);

/* Per-file hooks, called by module.c.  exec: add types/constants to the
 * module and fill the file's state fields; return -1 with an exception set
 * on error.  clear/traverse: the file's state fields. */
#define FASTMP_DECLARE_PART(name) \
    int fastmp_##name##_exec(PyObject *module, fastmp_state *st); \
    int fastmp_##name##_traverse(fastmp_state *st, visitproc visit, void *arg); \
    void fastmp_##name##_clear(fastmp_state *st);

FASTMP_DECLARE_PART(connection)
FASTMP_DECLARE_PART(semlock)
FASTMP_DECLARE_PART(channel)
FASTMP_DECLARE_PART(shm)
FASTMP_DECLARE_PART(dispatch)
FASTMP_DECLARE_PART(manager)

/* ---- errors ---------------------------------------------------------- */

/* Raise OSError (its errno subclass) for `err`, naming the failing call:
 * "call: strerror".  Always returns NULL. */
PyObject *fastmp_oserror(int err, const char *call);

/* The raised exception, normalized, with its traceback attached (a new
 * reference; NULL if none is set).  Clears the error indicator. */
PyObject *fastmp_take_exception(void);

/* ---- arguments -------------------------------------------------------- */

/* Sort the arguments of a METH_FASTCALL | METH_KEYWORDS call into
 * out[0..nnames) by parameter name (the first `required` must be given;
 * missing optional ones are NULL).  Returns 0, or -1 with TypeError set. */
int fastmp_bind_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, const char *const *names, int nnames,
                     int required, PyObject **out);

/* ---- deadlines on CLOCK_MONOTONIC ------------------------------------ */

typedef struct {
    int infinite;               /* no deadline: block forever */
    struct timespec at;         /* absolute CLOCK_MONOTONIC time */
} fastmp_deadline;

/* Convert a Python timeout (None = forever, a number of seconds; negative
 * counts as zero) into a deadline starting now.  Returns -1 with a
 * TypeError/ValueError set on a bad object. */
int fastmp_deadline_from_object(PyObject *timeout, fastmp_deadline *d);

/* Deadline `seconds` from now; seconds < 0 means infinite. */
void fastmp_deadline_from_seconds(double seconds, fastmp_deadline *d);

/* Milliseconds left, rounded up, for poll(): -1 if infinite, 0 if past,
 * capped at INT_MAX. */
int fastmp_deadline_remaining_ms(const fastmp_deadline *d);

/* Time left as a relative timespec.  Returns 0 if the deadline has passed
 * (then *left is zero), 1 otherwise; for an infinite deadline returns 1
 * and leaves *left untouched. */
int fastmp_deadline_remaining(const fastmp_deadline *d, struct timespec *left);

/* The CLOCK_MONOTONIC time in nanoseconds (CLOCK_MONOTONIC cannot fail). */
static inline int64_t
fastmp_monotonic_ns(void)
{
    struct timespec t;
    (void)clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A busy-wait step that lets a sibling hyperthread run. */
static inline void
fastmp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif /* FASTMP_H */
