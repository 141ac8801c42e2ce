/* dispatch.h - the wire format between the pool dispatcher (dispatch.c,
 * parent side) and the pool worker loop (worker.c, child side), and the
 * worker's module functions.
 *
 * Each worker has its own stream socket to the parent.  Both directions
 * carry frames: a fixed 32-byte header followed by `len` payload bytes.
 * Parent to worker: a task (payload: a pickle) or STOP.  Worker to parent:
 * one RESULT frame per task, in the order the tasks were received. */
#ifndef FASTMP_DISPATCH_H
#define FASTMP_DISPATCH_H

#include "fastmp.h"

enum {
    FRAME_APPLY = 1,    /* payload: pickle of (func, args, kwds) */
    FRAME_MAP = 2,      /* payload: pickle of (func, items): [func(x)...] */
    FRAME_STARMAP = 3,  /* payload: pickle of (func, items): [func(*x)...] */
    FRAME_STOP = 4,     /* no payload: leave the loop */
    FRAME_RESULT = 8,   /* worker to parent; `status` says how it went */
};

enum {
    RESULT_OK = 0,      /* payload: pickle of the value */
    RESULT_ERROR = 1,   /* payload: pickle of the (wrapped) exception */
    RESULT_LOST = 2,    /* parent-made: the worker died holding the task */
};

typedef struct {
    uint32_t kind;
    uint32_t status;
    uint64_t job;
    uint64_t index;
    uint64_t len;
} frame_header;

/* Refuse payloads past this size (a corrupt header, not a real task). */
#define FRAME_MAX_PAYLOAD ((uint64_t)1 << 40)

/* worker.c: module-level functions (the worker loop). */
extern PyMethodDef fastmp_worker_functions[];

#endif /* FASTMP_DISPATCH_H */
