/* errors.c - errno values as Python exceptions (see errors.h). */
#include "core/errors.h"

#include <string.h>

PyObject *
fastmp_oserror(int err, const char *call)
{
    PyObject *msg = PyUnicode_FromFormat("%s: %s", call, strerror(err));
    if (msg == NULL) {
        return NULL;
    }
    /* OSError(errno, text) picks the errno's subclass (BrokenPipeError...) */
    PyObject *args = Py_BuildValue("(iO)", err, msg);
    Py_DECREF(msg);
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}
