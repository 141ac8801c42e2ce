/* args.h - the argument helpers of the METH_FASTCALL functions (args.c). */
#ifndef FASTMP_ARGS_H
#define FASTMP_ARGS_H

#include "core/compat.h"

#include <stdint.h>

/* fastmp_bind_args for any call: with keywords, or wrong (args.c). */
int fastmp_bind_any_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, const char *const *names, int nnames,
                         int required, PyObject **out);

/* Sort the arguments of a METH_FASTCALL | METH_KEYWORDS call into
 * out[0..nnames) by parameter name (the first `required` must be given;
 * missing optional ones are NULL).  Returns 0, or -1 with TypeError set.
 * Inline for the common call, positional only, which the lock and
 * condition methods take millions of times a second. */
static inline int
fastmp_bind_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *const *names, int nnames,
                 int required, PyObject **out)
{
    if (kwnames != NULL || nargs < required || nargs > nnames) {
        return fastmp_bind_any_args(func, args, nargs, kwnames, names, nnames, required, out);
    }
    for (int i = 0; i < nnames; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    return 0;
}

/* fastmp_bind_args for the slots that receive a tuple and a dict
 * (tp_new, tp_init): `kwds` may be NULL.  The bound arguments are
 * borrowed from `args` and `kwds`.  Returns 0, or -1 with an exception
 * set. */
int fastmp_bind_slot_args(const char *func, PyObject *args, PyObject *kwds,
                          const char *const *names, int nnames, int required, PyObject **out);

/* Raise TypeError unless lo <= nargs <= hi for the function `func`.
 * Returns 0 or -1. */
int fastmp_check_nargs(const char *func, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi);

/* TypeError "<func>() argument '<name>' must be str, not <type>" unless
 * `obj` is a str.  Returns 0 or -1. */
int fastmp_check_str(const char *func, const char *name, PyObject *obj);

/* A Python int as a C int in *out; OverflowError "<what> out of range for
 * a C int" past its range.  Returns 0, or -1 with an exception set. */
int fastmp_parse_int(PyObject *obj, const char *what, int *out);

/* A non-negative Python int as a uint64_t in *out.  Returns 0, or -1
 * with an exception set. */
int fastmp_parse_u64(PyObject *obj, uint64_t *out);

#endif /* FASTMP_ARGS_H */
