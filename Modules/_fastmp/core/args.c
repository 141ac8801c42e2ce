/* args.c - the argument helpers of the METH_FASTCALL functions (see
 * args.h). */
#include "core/args.h"

#include <limits.h>

int
fastmp_bind_any_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, const char *const *names, int nnames,
                     int required, PyObject **out)
{
    for (int i = 0; i < nnames; i++) {
        out[i] = NULL;
    }
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)",
                     func, nnames, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int i = 0; i < nnames; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                slot = i;
                break;
            }
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         func, key);
            return -1;
        }
        if (out[slot] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                         func, names[slot]);
            return -1;
        }
        out[slot] = args[nargs + k];
    }
    for (int i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'",
                         func, names[i]);
            return -1;
        }
    }
    return 0;
}

int
fastmp_bind_slot_args(const char *func, PyObject *args, PyObject *kwds,
                      const char *const *names, int nnames, int required, PyObject **out)
{
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    Py_ssize_t nkw = kwds == NULL ? 0 : PyDict_GET_SIZE(kwds);
    if (nkw == 0) {
        return fastmp_bind_args(func, PySequence_Fast_ITEMS(args), nargs, NULL, names, nnames,
                                required, out);
    }
    /* the vectorcall layout: positional arguments, then the keywords'
     * values, their names in a tuple */
    PyObject **stack = PyMem_New(PyObject *, nargs + nkw);
    PyObject *kwnames = PyTuple_New(nkw);
    int rc = -1;
    if (stack == NULL || kwnames == NULL) {
        if (stack == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        stack[i] = PyTuple_GET_ITEM(args, i);
    }
    Py_ssize_t pos = 0, k = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwds, &pos, &key, &value)) {
        PyTuple_SET_ITEM(kwnames, k, Py_NewRef(key));
        stack[nargs + k] = value;
        k++;
    }
    rc = fastmp_bind_args(func, stack, nargs, kwnames, names, nnames, required, out);
done:
    PyMem_Free(stack);
    Py_XDECREF(kwnames);
    return rc;
}

int
fastmp_check_nargs(const char *func, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs < lo || nargs > hi) {
        if (lo == hi) {
            PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
                         func, lo, nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                         func, lo, hi, nargs);
        }
        return -1;
    }
    return 0;
}

int
fastmp_check_str(const char *func, const char *name, PyObject *obj)
{
    if (PyUnicode_Check(obj)) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be str, not %s", func, name,
                 Py_TYPE(obj)->tp_name);
    return -1;
}

int
fastmp_parse_int(PyObject *obj, const char *what, int *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s out of range for a C int", what);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int
fastmp_parse_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}
