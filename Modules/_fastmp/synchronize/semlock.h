/* semlock.h - the C API of fastmp's process-shared locks (semlock.c) and
 * condition variables (condition.c), and the shared-block helpers both use.
 *
 * A SemLock's count is a 32-bit futex word in shared memory: an
 * uncontended acquire or release is one atomic instruction, and only a
 * thread that has to wait makes a system call.  The memory is an anonymous
 * shared mapping when the object is only ever inherited through fork(), or a
 * POSIX shared-memory object named "sem.<name>" (the file name glibc gives a
 * named semaphore, so either sem_unlink() removes it) when processes started
 * by spawn or forkserver must open it by name. */
#ifndef FASTMP_SEMLOCK_H
#define FASTMP_SEMLOCK_H

#include "core/state.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* This process's pid without a system call (kept current across fork). */
pid_t fastmp_getpid(void);

/* ---- shared blocks --------------------------------------------------- */

/* A small block of shared memory: `size` bytes, zero-filled when created.
 * name == NULL: an anonymous shared mapping (inherited by fork only).
 * Otherwise a new POSIX shm object for `name` (a leading '/' is optional;
 * no other '/').  Returns the mapping, or NULL with an exception set
 * (FileExistsError if the name is taken). */
void *fastmp_block_create(const char *name, size_t size);

/* Map the existing block `name` made by fastmp_block_create; checks that it
 * is at least `size` bytes.  NULL with an exception set on error. */
void *fastmp_block_open(const char *name, size_t size);

/* Unmap a block mapped by the functions above. */
void fastmp_block_unmap(void *block, size_t size);

/* Register fastmp_condition_* (condition.c) with the module; called from
 * semlock.c's own hooks so module.c needs no change. */
int fastmp_condition_exec(PyObject *module, fastmp_state *st);
int fastmp_condition_traverse(fastmp_state *st, visitproc visit, void *arg);
void fastmp_condition_clear(fastmp_state *st);

#endif /* FASTMP_SEMLOCK_H */
