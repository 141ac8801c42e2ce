/* semlock.c - SemLock: process-shared semaphore/lock.  (Not written yet.) */
#include "fastmp.h"

int
fastmp_semlock_exec(PyObject *module, fastmp_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

int
fastmp_semlock_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;
}

void
fastmp_semlock_clear(fastmp_state *st)
{
    (void)st;
}
