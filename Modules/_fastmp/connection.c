/* connection.c - Connection: framed messages over a file descriptor.  (Not written yet.) */
#include "fastmp.h"

int
fastmp_connection_exec(PyObject *module, fastmp_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

int
fastmp_connection_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;
}

void
fastmp_connection_clear(fastmp_state *st)
{
    (void)st;
}
