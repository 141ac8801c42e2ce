/* compat.h - Python.h, and the newer C-API functions fastmp uses, for the
 * interpreters that lack them (CPython 3.10 and 3.11).  Every fastmp
 * header that needs Python includes this one first (Python.h must precede
 * system headers). */
#ifndef FASTMP_COMPAT_H
#define FASTMP_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
/* 3.12's PyErr_GetRaisedException: the raised exception, normalized, with
 * its traceback attached (a new reference; NULL if none is set); clears
 * the error indicator. */
static inline PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        (void)PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* 3.12's PyErr_SetRaisedException: raise `exc` again, with its traceback
 * (steals the reference; NULL clears the error indicator). */
static inline void
PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

#if PY_VERSION_HEX < 0x030D0000
/* 3.13's PyWeakref_GetRef (PyWeakref_GetObject is deprecated there): 1
 * with a new reference to the referent in *pobj, 0 with NULL there if it
 * is gone, -1 with TypeError set if `ref` is not a weak reference. */
static inline int
PyWeakref_GetRef(PyObject *ref, PyObject **pobj)
{
    *pobj = NULL;
    if (ref == NULL || !PyWeakref_Check(ref)) {
        PyErr_SetString(PyExc_TypeError, "expected a weak reference");
        return -1;
    }
    PyObject *target = PyWeakref_GetObject(ref);
    if (target == NULL) {
        return -1;
    }
    if (target == Py_None) {
        return 0;
    }
    *pobj = Py_NewRef(target);
    return 1;
}
#endif

#if PY_VERSION_HEX < 0x030B0000
/* 3.11's PyType_GetModuleByDef: the module made from `def` that defined
 * `tp` or one of its bases (a borrowed reference), or NULL with TypeError
 * set.  3.10 keeps the module of a heap type in ht_module. */
static inline PyObject *
PyType_GetModuleByDef(PyTypeObject *tp, PyModuleDef *def)
{
    PyObject *mro = tp->tp_mro;
    if (mro != NULL && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
                continue;
            }
            PyObject *module = ((PyHeapTypeObject *)base)->ht_module;
            if (module != NULL && PyModule_GetDef(module) == def) {
                return module;
            }
        }
    }
    PyErr_Format(PyExc_TypeError, "%s is not a %s type", tp->tp_name, def->m_name);
    return NULL;
}
#endif

#endif /* FASTMP_COMPAT_H */
