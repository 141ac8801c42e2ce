/* module.c - fastmp._fastmp: multi-phase init, per-module state, the
 * exception classes, the feature `flags` dict, and the error and deadline
 * helpers declared in fastmp.h. */
#include "core/state.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------- */

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

int
fastmp_bind_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
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

PyObject *
fastmp_take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        (void)PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* ---- deadlines ------------------------------------------------------- */

static void
now_monotonic(struct timespec *ts)
{
    /* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux */
    (void)clock_gettime(CLOCK_MONOTONIC, ts);
}

void
fastmp_deadline_from_seconds(double seconds, fastmp_deadline *d)
{
    if (seconds < 0 || isinf(seconds)) {
        d->infinite = 1;
        d->at.tv_sec = 0;
        d->at.tv_nsec = 0;
        return;
    }
    d->infinite = 0;
    now_monotonic(&d->at);
    double whole = floor(seconds);
    if (whole > (double)(INT64_MAX / 4)) {
        d->infinite = 1;
        return;
    }
    d->at.tv_sec += (time_t)whole;
    d->at.tv_nsec += (long)((seconds - whole) * 1e9);
    if (d->at.tv_nsec >= 1000000000L) {
        d->at.tv_sec += 1;
        d->at.tv_nsec -= 1000000000L;
    }
}

int
fastmp_deadline_from_object(PyObject *timeout, fastmp_deadline *d)
{
    if (timeout == NULL || timeout == Py_None) {
        fastmp_deadline_from_seconds(-1.0, d);
        return 0;
    }
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(seconds)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    fastmp_deadline_from_seconds(seconds < 0 ? 0.0 : seconds, d);
    return 0;
}

int
fastmp_deadline_remaining(const fastmp_deadline *d, struct timespec *left)
{
    if (d->infinite) {
        return 1;
    }
    struct timespec now;
    now_monotonic(&now);
    time_t sec = d->at.tv_sec - now.tv_sec;
    long nsec = d->at.tv_nsec - now.tv_nsec;
    if (nsec < 0) {
        nsec += 1000000000L;
        sec -= 1;
    }
    if (sec < 0 || (sec == 0 && nsec == 0)) {
        left->tv_sec = 0;
        left->tv_nsec = 0;
        return 0;
    }
    left->tv_sec = sec;
    left->tv_nsec = nsec;
    return 1;
}

int
fastmp_deadline_remaining_ms(const fastmp_deadline *d)
{
    if (d->infinite) {
        return -1;
    }
    struct timespec left;
    if (!fastmp_deadline_remaining(d, &left)) {
        return 0;
    }
    if (left.tv_sec >= INT_MAX / 1000 - 1) {
        return INT_MAX;
    }
    return (int)(left.tv_sec * 1000 + (left.tv_nsec + 999999L) / 1000000L);
}

/* ---- module state ---------------------------------------------------- */

fastmp_state *
fastmp_state_from_type(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *module = PyType_GetModuleByDef(tp, &fastmp_module_def);
    if (module == NULL) {
        return NULL;
    }
    return (fastmp_state *)PyModule_GetState(module);
#else
    /* 3.10 has no PyType_GetModuleByDef: walk the MRO ourselves */
    PyObject *mro = tp->tp_mro;
    if (mro != NULL && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
                continue;
            }
            PyObject *module = ((PyHeapTypeObject *)base)->ht_module;
            if (module != NULL && PyModule_GetDef(module) == &fastmp_module_def) {
                return (fastmp_state *)PyModule_GetState(module);
            }
        }
    }
    PyErr_Format(PyExc_TypeError, "%s is not a fastmp._fastmp type", tp->tp_name);
    return NULL;
#endif
}

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

static int
fastmp_exec(PyObject *module)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);

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

    st->flags = PyDict_New();
    if (st->flags == NULL || PyModule_AddObjectRef(module, "flags", st->flags) < 0) {
        return -1;
    }

    if (fastmp_connection_exec(module, st) < 0
        || fastmp_semlock_exec(module, st) < 0
        || fastmp_channel_exec(module, st) < 0
        || fastmp_shm_exec(module, st) < 0
        || fastmp_dispatch_exec(module, st) < 0
        || fastmp_manager_exec(module, st) < 0) {
        return -1;
    }
    return 0;
}

static int
fastmp_traverse(PyObject *module, visitproc visit, void *arg)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    Py_VISIT(st->ProcessError);
    Py_VISIT(st->BufferTooShort);
    Py_VISIT(st->TimeoutError);
    Py_VISIT(st->AuthenticationError);
    Py_VISIT(st->flags);
    int r;
    if ((r = fastmp_connection_traverse(st, visit, arg)) != 0
        || (r = fastmp_semlock_traverse(st, visit, arg)) != 0
        || (r = fastmp_channel_traverse(st, visit, arg)) != 0
        || (r = fastmp_shm_traverse(st, visit, arg)) != 0
        || (r = fastmp_dispatch_traverse(st, visit, arg)) != 0
        || (r = fastmp_manager_traverse(st, visit, arg)) != 0) {
        return r;
    }
    return 0;
}

static int
fastmp_clear(PyObject *module)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    Py_CLEAR(st->ProcessError);
    Py_CLEAR(st->BufferTooShort);
    Py_CLEAR(st->TimeoutError);
    Py_CLEAR(st->AuthenticationError);
    Py_CLEAR(st->flags);
    fastmp_connection_clear(st);
    fastmp_semlock_clear(st);
    fastmp_channel_clear(st);
    fastmp_shm_clear(st);
    fastmp_dispatch_clear(st);
    fastmp_manager_clear(st);
    return 0;
}

static void
fastmp_free(void *module)
{
    (void)fastmp_clear((PyObject *)module);
}

static PyModuleDef_Slot fastmp_slots[] = {
    {Py_mod_exec, (void *)fastmp_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyModuleDef fastmp_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastmp._fastmp",
    .m_doc = "C core of fastmp: Connection, SemLock, shared memory, the "
             "Queue channel and the Pool dispatcher.",
    .m_size = sizeof(fastmp_state),
    .m_slots = fastmp_slots,
    .m_traverse = fastmp_traverse,
    .m_clear = fastmp_clear,
    .m_free = fastmp_free,
};

PyMODINIT_FUNC
PyInit__fastmp(void)
{
    return PyModuleDef_Init(&fastmp_module_def);
}
