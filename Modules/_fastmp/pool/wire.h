/* wire.h - the wire format between the pool dispatcher (dispatcher.c,
 * parent side) and the pool worker loop (worker.c, child side), and the
 * worker's module functions.
 *
 * Each worker has its own stream socket to the parent.  Both directions
 * carry frames: a fixed 32-byte header followed by `len` payload bytes.
 * Parent to worker: a task or STOP.  A task's payload is two pickles: its
 * function, then the rest (apply: (args, kwds); map: the items); `status`
 * holds the length of the first, and FUNC_BY_NAME when the function is
 * pickled by its name only (the worker may keep what it unpickled).
 * Worker to parent: one RESULT frame per task, in the order the tasks
 * were received. */
#ifndef FASTMP_WIRE_H
#define FASTMP_WIRE_H

#include "core/compat.h"

#include <stdint.h>

enum {
    FRAME_APPLY = 1,    /* payload: func, (args, kwds): func(*args, **kwds) */
    FRAME_MAP = 2,      /* payload: func, items: [func(x)...] */
    FRAME_STARMAP = 3,  /* payload: func, items: [func(*x)...] */
    FRAME_STOP = 4,     /* no payload: leave the loop */
    FRAME_RESULT = 8,   /* worker to parent; `status` says how it went */
};

enum {
    RESULT_OK = 0,      /* payload: pickle of the value */
    RESULT_ERROR = 1,   /* payload: pickle of the (wrapped) exception */
    RESULT_LOST = 2,    /* parent-made: the worker died holding the task */
    RESULT_QUICK = 3,   /* payload: pickle of the value, plain data written
                         * by pickle/quickpickle.c (the parent reads it so) */
};

typedef struct {
    uint32_t kind;
    uint32_t status;
    uint64_t job;
    uint64_t index;
    uint64_t len;
} frame_header;

#define FUNC_BY_NAME 0x80000000u

/* Refuse payloads past this size (a corrupt header, not a real task). */
#define FRAME_MAX_PAYLOAD ((uint64_t)1 << 40)

#endif /* FASTMP_WIRE_H */
