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

/* ---- bounded spinning before a sleep (engine.c) -----------------------
 * A hand-off that sleeps in the kernel costs a wake-up (tens of
 * microseconds); retrying for a few microseconds first is far cheaper
 * when the peer answers quickly.  A waiter whose spins keep failing stops
 * spinning for a while, so an idle or slow peer costs almost nothing. */
#define SPIN_NS 50000           /* longest spin before sleeping */
#define SPIN_FAILS_MAX 3        /* failed spins in a row before pausing */
#define SPIN_PAUSE 32           /* waits that skip spinning after that */

typedef struct {
    uint32_t fails;             /* failed spins in a row */
    uint32_t skip;              /* waits left that do not spin */
} spin_policy;

/* 1 when the next wait should spin first (and counts a skipped wait). */
int spin_wanted(spin_policy *p);
/* Record whether a spin saw what it waited for. */
void spin_record(spin_policy *p, int succeeded);
/* Nanoseconds of CLOCK_MONOTONIC since `start`. */
int64_t spin_elapsed_ns(const struct timespec *start);

#endif /* FASTMP_WIRE_H */
