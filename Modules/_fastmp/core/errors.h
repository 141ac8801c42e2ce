/* errors.h - turning an errno value into the Python exception (errors.c).
 * Code that runs without the GIL returns errno values; the caller, with
 * the GIL back, raises with fastmp_oserror once.  (Saving and re-raising
 * a Python exception: PyErr_GetRaisedException/PyErr_SetRaisedException,
 * see compat.h.) */
#ifndef FASTMP_ERRORS_H
#define FASTMP_ERRORS_H

#include "core/compat.h"

/* Raise OSError (its errno subclass) for `err`, naming the failing call:
 * "call: strerror".  Always returns NULL. */
PyObject *fastmp_oserror(int err, const char *call);

#endif /* FASTMP_ERRORS_H */
