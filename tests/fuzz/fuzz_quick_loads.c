/* fuzz_quick_loads.c - libFuzzer target for fastmp_quick_loads()
 * (Modules/_fastmp/pickle/quickpickle.c, linked as is, in an embedded Python).
 * The input is a pickle from a peer.  quick_loads must either decline it
 * (leaving it to the pickle module) or return exactly what the pickle
 * module returns for it; never crash, never leave an exception set.  A
 * pickle that would run code (one quick_loads took by mistake) is refused
 * before the pickle module sees it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pickle/quickpickle.h"

#include <stdlib.h>

static PyObject *plain_loads;           /* pickle.loads refusing code */

static const char setup[] =
    "import pickle, pickletools\n"
    "CODE = {'GLOBAL', 'STACK_GLOBAL', 'REDUCE', 'BUILD', 'INST', 'OBJ', 'NEWOBJ',\n"
    "        'NEWOBJ_EX', 'EXT1', 'EXT2', 'EXT4', 'PERSID', 'BINPERSID'}\n"
    "def plain_loads(data):\n"
    "    for opcode, _, _ in pickletools.genops(data):\n"
    "        if opcode.name in CODE:\n"
    "            raise pickle.UnpicklingError('refused: ' + opcode.name)\n"
    "    return pickle.loads(data)\n";

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    Py_InitializeEx(0);
    PyObject *ns = PyDict_New();
    PyObject *done = ns ? PyRun_String(setup, Py_file_input, ns, ns) : NULL;
    plain_loads = done ? PyDict_GetItemString(ns, "plain_loads") : NULL;
    if (plain_loads == NULL) {
        PyErr_Print();
        abort();
    }
    Py_INCREF(plain_loads);
    Py_DECREF(done);
    Py_DECREF(ns);
    return 0;
}

/* Whether a and b are the same plain data (repr tells -0.0 from 0.0 and
 * a NaN from another float; the types must match too). */
static int
same(PyObject *a, PyObject *b)
{
    PyObject *ra = PyObject_Repr(a), *rb = PyObject_Repr(b);
    if (ra == NULL || rb == NULL) {
        PyErr_Print();
        abort();
    }
    int eq = Py_IS_TYPE(a, Py_TYPE(b)) && PyUnicode_Compare(ra, rb) == 0;
    Py_DECREF(ra);
    Py_DECREF(rb);
    return eq;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *quick = NULL;
    int took = fastmp_quick_loads((const char *)data, (Py_ssize_t)size, &quick);
    if (PyErr_Occurred() || (took != 0 && took != 1)) {
        abort();
    }
    if (!took) {
        return 0;
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)size);
    PyObject *slow = bytes ? PyObject_CallOneArg(plain_loads, bytes) : NULL;
    if (slow == NULL) {
        PyErr_Print();                  /* quick_loads took what pickle refuses */
        abort();
    }
    if (!same(quick, slow)) {
        abort();
    }
    Py_DECREF(slow);
    Py_DECREF(bytes);
    Py_DECREF(quick);
    return 0;
}
