/* fork.h - the one fork tracker of the process (fork.c): this process's
 * pid and fork generation without a system call, and the hooks parts run
 * around every fork().
 *
 * A part that reads fastmp_fork_pid() or fastmp_fork_generation() calls
 * fastmp_fork_track() at its exec; a part with state to fix around a fork
 * calls fastmp_fork_add_hooks() at its exec (which tracks too). */
#ifndef FASTMP_FORK_H
#define FASTMP_FORK_H

#include "core/compat.h"

#include <stdint.h>
#include <sys/types.h>

/* Written by fork.c only (at setup and in a forked child); read them
 * through the accessors below. */
extern pid_t fastmp_fork_current_pid;
extern uint64_t fastmp_fork_current_generation;

/* This process's pid (getpid() is a system call in current glibc),
 * renewed in every forked child before the child hooks run. */
static inline pid_t
fastmp_fork_pid(void)
{
    return fastmp_fork_current_pid;
}

/* How many forks made this process from the one that set up the tracker:
 * 0 there, bumped in every forked child before the child hooks run.  An
 * object stamped with another generation was copied from an ancestor. */
static inline uint64_t
fastmp_fork_generation(void)
{
    return fastmp_fork_current_generation;
}

/* What a part runs around fork(); any of the three may be NULL.  They run
 * in the forking thread (holding the GIL if the fork came from Python)
 * and must not call Python.
 *   prepare  before the fork, in the parent;
 *   parent   after it, in the parent;
 *   child    after it, in the child (its only thread).
 * Order, as for the C library's own fork handlers: prepare hooks run
 * newest first, parent and child hooks oldest first.  Parts add theirs at
 * exec in the order of module.c's table (bottom layer first), so prepare
 * hooks run from the top layer down.  Lock order: the tracker's table
 * lock, then the locks prepare hooks take, top layer first (a layer may
 * hold its lock while it calls one below, never the other way round).
 * Today only the pool engine's hooks take locks: its registry_mu, then
 * each dispatcher's alloc_mu. */
typedef struct {
    const char *part;           /* named in the error if the table is full */
    void (*prepare)(void);
    void (*parent)(void);
    void (*child)(void);
} fastmp_fork_hooks;

/* Set up the tracker: its fork handlers, registered once per process on
 * the first call; later calls do nothing.  Returns 0, or -1 with OSError
 * set if the registration failed. */
int fastmp_fork_track(void);

/* Track forks, and run `hooks` around every fork from now on.  Hooks with
 * the same three functions as ones already added (a second module
 * instance, a subinterpreter) are not added again.  Returns 0, or -1 with
 * an exception set (RuntimeError if the table of hooks is full). */
int fastmp_fork_add_hooks(const fastmp_fork_hooks *hooks);

#endif /* FASTMP_FORK_H */
