/* quickpickle.h - pickling and unpickling of plain data without a
 * Pickler (quickpickle.c), for the small messages of manager calls. */
#ifndef FASTMP_QUICKPICKLE_H
#define FASTMP_QUICKPICKLE_H

#include "fastmp.h"

/* Pickle `obj` if it is plain data: None, bool, int, float, str, bytes,
 * and tuples, lists and dicts of plain data (exact types; no list or dict
 * twice), up to a small size.  The pickle (protocol 4, no memo) loads
 * with pickle.loads into an equal object.  Returns 1 with a new bytes
 * object in *out; 0 if obj is not plain data (nothing set); -1 with an
 * exception set. */
int fastmp_quick_dumps(PyObject *obj, PyObject **out);

/* Unpickle buf[0..len) if it holds only plain data (as pickle.dumps and
 * fastmp_quick_dumps write it).  Returns 1 with a new reference in *out,
 * or 0 (nothing set) if the pickle holds anything else or is malformed:
 * pickle.loads then says what it holds, or what is wrong with it. */
int fastmp_quick_loads(const char *buf, Py_ssize_t len, PyObject **out);

/* quick_dumps() and quick_loads() for Python (added by manager.c). */
extern PyMethodDef fastmp_quickpickle_functions[];

#endif /* FASTMP_QUICKPICKLE_H */
