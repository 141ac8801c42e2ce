/* channel.c - shared-memory message channel behind Queue.  (Not written yet.) */
#include "fastmp.h"

int
fastmp_channel_exec(PyObject *module, fastmp_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

int
fastmp_channel_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;
}

void
fastmp_channel_clear(fastmp_state *st)
{
    (void)st;
}
