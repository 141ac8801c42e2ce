/* quickpickle.h - pickling and unpickling of plain data without a
 * Pickler (quickpickle.c), for the small messages of manager calls and
 * the results of pool tasks. */
#ifndef FASTMP_QUICKPICKLE_H
#define FASTMP_QUICKPICKLE_H

#include "core/compat.h"

/* Pickle `obj` if it is plain data: None, bool, int, float, str, bytes,
 * and tuples, lists and dicts of plain data (exact types; no list, dict,
 * or str or bytes of 64 or more, twice), up to a small size.  The pickle
 * (protocol 4, no memo) loads with pickle.loads into an equal object.  Returns 1 with a new bytes
 * object in *out; 0 if obj is not plain data (nothing set); -1 with an
 * exception set. */
int fastmp_quick_dumps(PyObject *obj, PyObject **out);

/* A growable output buffer (PyMem_Raw memory; buf may start NULL). */
typedef struct {
    char *buf;
    size_t len, cap;
} quick_buffer;

/* As fastmp_quick_dumps(), the pickle written into out->buf[0..out->len)
 * (grown as needed, kept for the next call) and up to max_size bytes.
 * Returns 1, 0 (out->len is 0), or -1 with an exception set. */
int fastmp_quick_dump_into(PyObject *obj, quick_buffer *out, size_t max_size);

/* Unpickle buf[0..len) if it holds only plain data (as pickle.dumps and
 * fastmp_quick_dumps write it).  Returns 1 with a new reference in *out,
 * or 0 (nothing set) if the pickle holds anything else or is malformed:
 * pickle.loads then says what it holds, or what is wrong with it. */
int fastmp_quick_loads(const char *buf, Py_ssize_t len, PyObject **out);

#endif /* FASTMP_QUICKPICKLE_H */
