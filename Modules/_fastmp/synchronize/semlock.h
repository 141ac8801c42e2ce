/* semlock.h - the C API of fastmp's process-shared locks (semlock.c), for
 * the condition variables (condition.c) and sharedctypes' synchronized
 * wrappers (shm/sharedctypes.c).
 *
 * A SemLock's count is a 32-bit futex word in shared memory: an
 * uncontended acquire or release is one atomic instruction, and only a
 * thread that has to wait makes a system call.  The word lives in a
 * shared block (core/shmblock.h), anonymous or named. */
#ifndef FASTMP_SEMLOCK_H
#define FASTMP_SEMLOCK_H

#include "core/state.h"

#include <stddef.h>
#include <stdint.h>

/* SemLock kinds, as in the standard _multiprocessing module. */
#define FASTMP_RECURSIVE_MUTEX 0
#define FASTMP_SEMAPHORE 1

/* 1 if obj is a fastmp SemLock (or subclass) instance, else 0. */
int fastmp_semlock_check(fastmp_state *st, PyObject *obj);

/* Acquire, blocking; releases the GIL only if it has to wait; handles EINTR and
   signals.  0 on success, -1 with an exception set. */
int fastmp_semlock_acquire_blocking(PyObject *semlock);

/* Release; 0 on success, -1 with an exception set. */
int fastmp_semlock_release(PyObject *semlock);

/* ---- used by condition.c ------------------------------------------------ */

/* 1 if the calling thread holds `semlock` (a checked SemLock), else 0. */
int fastmp_semlock_is_mine(PyObject *semlock);

/* Release `semlock` completely (all recursion levels of an RLock) on behalf
 * of a waiting Condition; returns the recursion depth to restore, or -1 with
 * an exception set.  The caller must hold the lock. */
int fastmp_semlock_release_all(PyObject *semlock);

/* Hold back a futex wake of `word` (one waiter) until the calling thread
 * fully releases `semlock`, so the woken thread finds the lock free.  The
 * word lives in memory kept mapped by `deferrer`, which must call
 * fastmp_semlock_cancel_deferred before it goes.  Returns 1 if deferred, 0
 * if the caller must wake now (not an RLock, or no room). */
int fastmp_semlock_defer_wake(PyObject *semlock, PyObject *deferrer, uint32_t *word);

/* Make now the wakes `deferrer` deferred on `semlock`.  0 or an errno value. */
int fastmp_semlock_cancel_deferred(PyObject *semlock, PyObject *deferrer);

/* Take `semlock` back after a Condition wait and restore the recursion depth
 * `depth`.  Blocks without a deadline, as the standard package does.
 * 0 on success, -1 with an exception set (a signal handler raised). */
int fastmp_semlock_reacquire(PyObject *semlock, int depth);

#endif /* FASTMP_SEMLOCK_H */
