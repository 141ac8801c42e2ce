/* shm.c - shared-memory arenas, block allocator, synchronized accessors.  (Not written yet.) */
#include "fastmp.h"

int
fastmp_shm_exec(PyObject *module, fastmp_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

int
fastmp_shm_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;
}

void
fastmp_shm_clear(fastmp_state *st)
{
    (void)st;
}
