/* exceptions.c - the exception classes of fastmp.context (ProcessError
 * and its subclasses), made here so that the C parts raise the same
 * classes Python code catches. */
#include "core/state.h"

static int
add_exception(PyObject *module, PyObject **slot, const char *qualname,
              const char *shortname, PyObject *base)
{
    *slot = PyErr_NewException(qualname, base, NULL);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, shortname, *slot);
}

int
fastmp_exceptions_exec(PyObject *module, fastmp_state *st)
{
    if (add_exception(module, &st->ProcessError, "fastmp.context.ProcessError",
                      "ProcessError", PyExc_Exception) < 0
        || add_exception(module, &st->BufferTooShort,
                         "fastmp.context.BufferTooShort", "BufferTooShort",
                         st->ProcessError) < 0
        || add_exception(module, &st->TimeoutError,
                         "fastmp.context.TimeoutError", "TimeoutError",
                         st->ProcessError) < 0
        || add_exception(module, &st->AuthenticationError,
                         "fastmp.context.AuthenticationError",
                         "AuthenticationError", st->ProcessError) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_exceptions_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->ProcessError);
    Py_VISIT(st->BufferTooShort);
    Py_VISIT(st->TimeoutError);
    Py_VISIT(st->AuthenticationError);
    return 0;
}

void
fastmp_exceptions_clear(fastmp_state *st)
{
    Py_CLEAR(st->ProcessError);
    Py_CLEAR(st->BufferTooShort);
    Py_CLEAR(st->TimeoutError);
    Py_CLEAR(st->AuthenticationError);
}
