/* spin.h - the one spin policy (spin.c): a thread that would sleep
 * waiting for another process or thread retries without sleeping first,
 * for a bounded time.  Every spin of the extension goes through
 * fastmp_spin(): its caller names the kind of wait (which sets the budget
 * and how the CPU is given up between tries) and passes what it waits
 * for.  The spin is adaptive per waiter (spin_state) and paused for the
 * whole process while the CPUs are oversubscribed.  Safe without the GIL;
 * no budget is defined anywhere else (tools/check_layers.py checks). */
#ifndef FASTMP_SPIN_H
#define FASTMP_SPIN_H

#include "core/deadline.h"

#include <stdint.h>

/* The kinds of wait that spin; each has its budget in spin.c. */
typedef enum {
    /* a descriptor's read or poll (Connection, connection.wait): each
     * try is a system call, and the CPU is yielded between tries */
    FASTMP_WAIT_IO,
    /* a pool caller's wait for results: as FASTMP_WAIT_IO (each try a
     * pump of the pool's engine), with a shorter back-off */
    FASTMP_WAIT_POOL_RESULT,
    /* a pool worker's wait for its next task (and its look for it before
     * sending a result): as FASTMP_WAIT_POOL_RESULT, but not paused while
     * the CPUs are oversubscribed (see spin.c) */
    FASTMP_WAIT_POOL_TASK,
    /* a manager's serving thread waiting for its turn with the GIL
     * (core/gil_turn.c): yielding between tries */
    FASTMP_WAIT_GIL_TURN,
    /* a Queue's or a Pipe() end's reader waiting for the ring's data:
     * cheap looks at shared memory, the CPU yielded now and then */
    FASTMP_WAIT_RING_DATA,
    /* a Pipe() end's reader, holding the GIL and the ring's rlock, that
     * waits for the writer to count its next message: never yields */
    FASTMP_WAIT_PIPE_COUNT,
    /* a Queue's writer waiting for another writer to release the ring's
     * wlock after one small message: never yields */
    FASTMP_WAIT_RING_WLOCK,
} fastmp_wait;

/* Whether the waits of one waiter (a connection, a ring, a pool caller)
 * try early -- spin, or look ahead without blocking: one whose tries keep
 * failing (an idle or slow peer) stops trying for a while, longer after
 * each run of failures, then tries again.  All zero: try.  Packed in one
 * word that is read and written atomically, so that threads may share a
 * record without the GIL (a lost update only shifts a pause). */
typedef struct {
    uint32_t bits;
} spin_state;

/* What a spin waits for: returns nonzero once the wait is over (what was
 * awaited came, or the waiter must stop spinning for a reason of its
 * own).  Called without the GIL unless the wait holds it. */
typedef int (*fastmp_spin_done)(void *arg);

/* Whether a wait of kind `kind` of the waiter with the record `s` (NULL:
 * none) spins now: not while spinning is paused for the process, nor
 * while `s` says that spinning does not pay (this counts a skipped wait
 * down). */
int fastmp_spin_wanted(fastmp_wait kind, spin_state *s);

/* Spin for a wait of kind `kind` that fastmp_spin_wanted(s) let spin:
 * call done(arg) until it returns nonzero, the kind's budget is spent or
 * the deadline `d` (NULL: none) passes, giving up the CPU between tries
 * as the kind says; learn into `s` (NULL: none) whether the spin paid.
 * Returns 1 when done() ended the spin, else 0: the caller then sleeps
 * as it would have. */
int fastmp_spin(fastmp_wait kind, spin_state *s, const fastmp_deadline *d,
                fastmp_spin_done done, void *arg);

/* For an early try that is not a spin (a look without blocking): whether
 * the record `s` says to try now (this counts a skipped wait down), and
 * learning whether the try, made for a wait of kind `kind`, found
 * something.  After a few misses in a row the record says no for the
 * next 1, 2, 4, ... asks, up to the kind's longest pause (spin.c); a hit
 * starts over. */
int fastmp_early_try_wanted(spin_state *s);
void fastmp_early_try_learn(fastmp_wait kind, spin_state *s, int found);

#endif /* FASTMP_SPIN_H */
