/* forking_pickler.c - the ForkingPickler that fastmp keeps and reuses for every
 * message (Connection.send() and forking_dumps()): a pickler writing into
 * a list, reset between messages, whose dispatch table is a live view of
 * fastmp.reduction.ForkingPickler's reducers over copyreg's, so a reducer
 * registered at any time applies. */
#include "pickle/forking_pickler.h"
#include "core/state.h"

/* A read-only mapping that looks a type up in one dict, then another:
 * the dispatch table of the reused pickler, a live view of
 * ForkingPickler._extra_reducers over copyreg.dispatch_table. */
typedef struct {
    PyObject_HEAD
    PyObject *first;
    PyObject *second;
} ChainObject;

/* ---- the reducer chain ------------------------------------------------ */

static PyObject *
Chain_getitem(ChainObject *self, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(self->first, key);
    if (value == NULL && !PyErr_Occurred()) {
        value = PyDict_GetItemWithError(self->second, key);
    }
    if (value != NULL) {
        return Py_NewRef(value);
    }
    if (!PyErr_Occurred()) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return NULL;
}

static int
Chain_traverse(ChainObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->first);
    Py_VISIT(self->second);
    return 0;
}

static int
Chain_clear(ChainObject *self)
{
    Py_CLEAR(self->first);
    Py_CLEAR(self->second);
    return 0;
}

static void
Chain_dealloc(ChainObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Chain_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyType_Slot Chain_slots[] = {
    {Py_mp_subscript, Chain_getitem},
    {Py_tp_traverse, Chain_traverse},
    {Py_tp_clear, Chain_clear},
    {Py_tp_dealloc, Chain_dealloc},
    {0, NULL},
};

static PyType_Spec Chain_spec = {
    .name = "fastmp._fastmp.ReducerChain",
    .basicsize = sizeof(ChainObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Chain_slots,
};

/* ---- the reused pickler ----------------------------------------------- */


/* A new ForkingPickler whose output goes into the list `chunks` (its
 * file is a SimpleNamespace whose write is the list's append), with the
 * live reducer chain as its dispatch table when there is one.  Returns a
 * new reference, or NULL with an exception set. */
static PyObject *
new_pickler(fastmp_state *st, PyObject *chunks)
{
    PyObject *pickler = NULL, *sink = NULL, *ns = NULL, *noargs = NULL, *kw = NULL;
    PyObject *append = PyObject_GetAttrString(chunks, "append");
    PyObject *types = append ? PyImport_ImportModule("types") : NULL;
    if (types != NULL
        && (ns = PyObject_GetAttrString(types, "SimpleNamespace")) != NULL
        && (noargs = PyTuple_New(0)) != NULL
        && (kw = Py_BuildValue("{sO}", "write", append)) != NULL
        && (sink = PyObject_Call(ns, noargs, kw)) != NULL
        && (pickler = PyObject_CallOneArg(st->forking_pickler, sink)) != NULL
        && st->reducer_chain != NULL
        && PyObject_SetAttrString(pickler, "dispatch_table", st->reducer_chain) < 0) {
        Py_CLEAR(pickler);
    }
    Py_XDECREF(append);
    Py_XDECREF(types);
    Py_XDECREF(ns);
    Py_XDECREF(noargs);
    Py_XDECREF(kw);
    Py_XDECREF(sink);
    return pickler;
}

/* The live view of ForkingPickler's reducers over copyreg's, when it
 * keeps them the standard way (the dicts _extra_reducers and
 * _copyreg_dispatch_table).  Returns a new reference; None when it does
 * not; NULL with an exception set on error. */
static PyObject *
new_reducer_chain(fastmp_state *st, PyObject *fp)
{
    PyObject *extra = PyObject_GetAttrString(fp, "_extra_reducers");
    PyObject *base = extra ? PyObject_GetAttrString(fp, "_copyreg_dispatch_table") : NULL;
    if (base == NULL || !PyDict_Check(extra) || !PyDict_Check(base)) {
        PyErr_Clear();
        Py_XDECREF(extra);
        Py_XDECREF(base);
        Py_RETURN_NONE;
    }
    ChainObject *chain = PyObject_GC_New(ChainObject, st->ReducerChain_type);
    if (chain == NULL) {
        Py_DECREF(extra);
        Py_DECREF(base);
        return NULL;
    }
    chain->first = extra;
    chain->second = base;
    PyObject_GC_Track(chain);
    return (PyObject *)chain;
}

/* On first use: fetch fastmp.reduction.ForkingPickler and its loads, and
 * when its reducers can be followed live, make the pickler that is kept
 * and reused for every message.  Returns 0, or -1 with an exception set. */
static int
ensure_pickling(fastmp_state *st)
{
    if (st->forking_loads != NULL) {
        return 0;
    }
    PyObject *fp = NULL, *chain = NULL, *pickler = NULL;
    PyObject *reduction = PyImport_ImportModule("fastmp.reduction");
    if (reduction != NULL) {
        fp = PyObject_GetAttrString(reduction, "ForkingPickler");
        Py_DECREF(reduction);
    }
    if (fp == NULL || (chain = new_reducer_chain(st, fp)) == NULL) {
        goto error;
    }
    st->forking_pickler = fp;
    fp = NULL;
    if (chain != Py_None) {
        st->reducer_chain = chain;
        chain = NULL;
        if ((st->pickle_chunks = PyList_New(0)) == NULL
            || (pickler = new_pickler(st, st->pickle_chunks)) == NULL
            || (st->pickler_dump = PyObject_GetAttrString(pickler, "dump")) == NULL
            || (st->pickler_clear = PyObject_GetAttrString(pickler, "clear_memo")) == NULL) {
            goto error;
        }
        Py_CLEAR(pickler);
    }
    Py_CLEAR(chain);
    st->forking_loads = PyObject_GetAttrString(st->forking_pickler, "loads");
    if (st->forking_loads != NULL) {
        return 0;
    }
error:
    Py_XDECREF(fp);
    Py_XDECREF(chain);
    Py_XDECREF(pickler);
    Py_CLEAR(st->forking_pickler);
    Py_CLEAR(st->reducer_chain);
    Py_CLEAR(st->pickle_chunks);
    Py_CLEAR(st->pickler_dump);
    Py_CLEAR(st->pickler_clear);
    return -1;
}

/* Pickle obj with the bound `dump` of a pickler writing into `chunks`,
 * then reset the pickler (its memo and the chunks) for the next message,
 * whatever happened.  Returns a new reference to the one chunk, or to a
 * list of them whose concatenation is the pickle; NULL with an exception
 * set. */
static PyObject *
dump_into(PyObject *dump, PyObject *clear_memo, PyObject *chunks, PyObject *obj)
{
    PyObject *result = PyObject_CallOneArg(dump, obj);
    if (result != NULL) {
        Py_DECREF(result);
        Py_ssize_t n = PyList_GET_SIZE(chunks);
        result = n == 1 ? Py_NewRef(PyList_GET_ITEM(chunks, 0))
                        : PyList_GetSlice(chunks, 0, n);
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *cleared = PyObject_CallNoArgs(clear_memo);
    if (cleared == NULL || PyList_SetSlice(chunks, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        Py_CLEAR(result);           /* reported instead of the pickle */
    }
    Py_XDECREF(cleared);
    if (exc != NULL) {
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
    return result;
}

/* See forking_pickler.h.  Uses the reused pickler when it is free. */
PyObject *
fastmp_pickle(fastmp_state *st, PyObject *obj)
{
    if (ensure_pickling(st) < 0) {
        return NULL;
    }
    if (st->pickler_dump != NULL && !st->pickler_busy) {
        st->pickler_busy = 1;
        PyObject *result = dump_into(st->pickler_dump, st->pickler_clear,
                                     st->pickle_chunks, obj);
        st->pickler_busy = 0;
        return result;
    }
    /* A pickler of its own: the reused one is mid-dump (a reducer is
     * sending, or let another thread in), or there is none. */
    PyObject *result = NULL, *pickler = NULL, *dump = NULL, *clear_memo = NULL;
    PyObject *chunks = PyList_New(0);
    if (chunks != NULL
        && (pickler = new_pickler(st, chunks)) != NULL
        && (dump = PyObject_GetAttrString(pickler, "dump")) != NULL
        && (clear_memo = PyObject_GetAttrString(pickler, "clear_memo")) != NULL) {
        result = dump_into(dump, clear_memo, chunks, obj);
    }
    Py_XDECREF(chunks);
    Py_XDECREF(pickler);
    Py_XDECREF(dump);
    Py_XDECREF(clear_memo);
    return result;
}

/* See forking_pickler.h. */
PyObject *
fastmp_pickle_joined(fastmp_state *st, PyObject *obj)
{
    PyObject *pickled = fastmp_pickle(st, obj);
    if (pickled == NULL || !PyList_CheckExact(pickled)) {
        return pickled;
    }
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *joined = empty ? PyObject_CallMethod(empty, "join", "O", pickled) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(pickled);
    return joined;
}

PyDoc_STRVAR(forking_dumps_doc,
"forking_dumps($module, obj, /)\n--\n\n"
"Pickle obj as fastmp.reduction.ForkingPickler does (its reducers over\n"
"copyreg's, default protocol) and return the bytes, with the pickler that\n"
"Connection.send() keeps and reuses.");

static PyObject *
forking_dumps(PyObject *module, PyObject *obj)
{
    return fastmp_pickle_joined((fastmp_state *)PyModule_GetState(module), obj);
}


/* See forking_pickler.h. */
PyObject *
fastmp_unpickler(fastmp_state *st)
{
    return ensure_pickling(st) < 0 ? NULL : st->forking_loads;
}

static PyMethodDef pickler_functions[] = {
    {"forking_dumps", forking_dumps, METH_O, forking_dumps_doc},
    {NULL, NULL, 0, NULL},
};

int
fastmp_forking_pickler_exec(PyObject *module, fastmp_state *st)
{
    st->ReducerChain_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Chain_spec, NULL);
    if (st->ReducerChain_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, pickler_functions);
}

int
fastmp_forking_pickler_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->ReducerChain_type);
    Py_VISIT(st->forking_pickler);
    Py_VISIT(st->forking_loads);
    Py_VISIT(st->reducer_chain);
    Py_VISIT(st->pickle_chunks);
    Py_VISIT(st->pickler_dump);
    Py_VISIT(st->pickler_clear);
    return 0;
}

void
fastmp_forking_pickler_clear(fastmp_state *st)
{
    Py_CLEAR(st->ReducerChain_type);
    Py_CLEAR(st->forking_pickler);
    Py_CLEAR(st->forking_loads);
    Py_CLEAR(st->reducer_chain);
    Py_CLEAR(st->pickle_chunks);
    Py_CLEAR(st->pickler_dump);
    Py_CLEAR(st->pickler_clear);
}
