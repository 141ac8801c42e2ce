/* state.h - the per-module state of fastmp._fastmp, and the parts that
 * fill it: one per C file that adds types or functions to the module,
 * listed in module.c's table of parts (state.c: finding the state). */
#ifndef FASTMP_STATE_H
#define FASTMP_STATE_H

#include "core/compat.h"

/* Per-module state.  Each part owns the fields of its own section and
 * clears and traverses them in its hooks. */
typedef struct {
    /* core/exceptions.c (their __module__ is fastmp.context) */
    PyObject *ProcessError;
    PyObject *BufferTooShort;
    PyObject *TimeoutError;
    PyObject *AuthenticationError;

    /* pickle/forking_pickler.c (the fields after ReducerChain_type are
     * filled on first use) */
    PyTypeObject *ReducerChain_type;
    PyObject *forking_pickler;      /* fastmp.reduction.ForkingPickler */
    PyObject *forking_loads;        /* ... and its loads */
    PyObject *reducer_chain;        /* its reducers over copyreg's, live */
    PyObject *pickle_chunks;        /* list the reused pickler writes into */
    PyObject *pickler_dump;         /* the reused pickler's bound dump */
    PyObject *pickler_clear;        /* ... and clear_memo */
    int pickler_busy;               /* the reused pickler is mid-dump */

    /* synchronize/semlock.c, synchronize/condition.c */
    PyTypeObject *SemLock_type;
    PyTypeObject *Condition_type;

    /* shm/heap.c */
    PyTypeObject *Arena_type;
    PyTypeObject *Heap_type;
    PyTypeObject *BufferWrapper_type;
    PyObject *str_heap;             /* interned "_heap" */
    /* shm/sharedctypes.c */
    PyTypeObject *SyncCore_type;    /* lock + ctypes object, generic access */
    PyTypeObject *SyncValue_type;   /* + fast .value */
    PyTypeObject *SyncArray_type;   /* + fast [i] */
    PyObject *str_value;            /* interned "value" */
    PyObject *plain_lock_types;     /* {lock type: keeps SemLock's methods?} */
    /* shm/shared_memory.c */
    PyTypeObject *SegmentMapping_type;

    /* queues/channel.c */
    PyTypeObject *Channel_type;
    PyObject *chan_Empty;           /* queue.Empty */
    PyObject *chan_Full;            /* queue.Full */
    PyObject *chan_fast_dumps;      /* pickle.dumps, for plain atoms */
    PyObject *chan_loads;           /* pickle.loads */
    PyObject *chan_ShutDown;        /* a shut-down queue's exception */

    /* connection/connection.c */
    PyTypeObject *Connection_type;
    /* its send, recv, send_bytes, recv_bytes: the methods other parts
     * call directly on a Connection that keeps them */
#define FASTMP_CONN_DIRECT_METHODS 4
    PyObject *conn_direct_methods[FASTMP_CONN_DIRECT_METHODS];
    /* Connection_type's version tag when its methods were last found to
     * be these (0: not yet); a change to the type changes the tag */
    unsigned int conn_direct_tag;

    /* pool/dispatcher.c */
    PyTypeObject *Dispatcher_type;

    /* managers/method_calls.c: interned attribute names and reply kinds */
#define FASTMP_MANAGER_STRINGS 18
    PyObject *mgr_strings[FASTMP_MANAGER_STRINGS];
} fastmp_state;

/* The module's definition (module.c). */
extern PyModuleDef fastmp_module_def;

/* Module state for the module that defined `tp` or one of its bases
 * (works for Python subclasses of our heap types).  Never fails once the
 * module is initialised; returns NULL with an exception set otherwise. */
fastmp_state *fastmp_state_from_type(PyTypeObject *tp);

/* The hooks of a part, which module.c's table lists.  exec: add the
 * part's types, functions and constants to the module and fill its state
 * fields; return -1 with an exception set on error.  traverse/clear: its
 * state fields (a part without any has neither). */
#define FASTMP_DECLARE_PART(name) \
    int fastmp_##name##_exec(PyObject *module, fastmp_state *st); \
    int fastmp_##name##_traverse(fastmp_state *st, visitproc visit, void *arg); \
    void fastmp_##name##_clear(fastmp_state *st);
#define FASTMP_DECLARE_EXEC_ONLY_PART(name) \
    int fastmp_##name##_exec(PyObject *module, fastmp_state *st);

FASTMP_DECLARE_PART(exceptions)         /* core/exceptions.c */
FASTMP_DECLARE_PART(forking_pickler)    /* pickle/forking_pickler.c */
FASTMP_DECLARE_EXEC_ONLY_PART(quickpickle)  /* pickle/quickpickle.c */
FASTMP_DECLARE_PART(semlock)            /* synchronize/semlock.c */
FASTMP_DECLARE_PART(condition)          /* synchronize/condition.c */
FASTMP_DECLARE_PART(heap)               /* shm/heap.c */
FASTMP_DECLARE_PART(sharedctypes)       /* shm/sharedctypes.c */
FASTMP_DECLARE_PART(shared_memory)      /* shm/shared_memory.c */
FASTMP_DECLARE_PART(channel)            /* queues/channel.c */
FASTMP_DECLARE_PART(connection)         /* connection/connection.c */
FASTMP_DECLARE_PART(dispatcher)         /* pool/dispatcher.c */
FASTMP_DECLARE_EXEC_ONLY_PART(worker)   /* pool/worker.c */
FASTMP_DECLARE_PART(method_calls)       /* managers/method_calls.c */

#endif /* FASTMP_STATE_H */
