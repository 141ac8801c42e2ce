/* dispatch.c - pool task dispatcher and worker loop.  (Not written yet.) */
#include "fastmp.h"

int
fastmp_dispatch_exec(PyObject *module, fastmp_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

int
fastmp_dispatch_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;
}

void
fastmp_dispatch_clear(fastmp_state *st)
{
    (void)st;
}
