/* sharedctypes.c - the C cores of sharedctypes' synchronized wrappers.
 *
 * SynchronizedCore holds a ctypes object and its lock; SynchronizedValueCore
 * adds `.value` and SynchronizedArrayCore adds `[i]`/len().  For the simple
 * numeric type codes (bBhHiIlLqQfd) these take the lock and load or store
 * the shared bytes directly; every other type, and values the fast path
 * does not convert itself, go through the ctypes object under the lock.
 *
 * Lock-free arrays (RawArray, Array(lock=False)) of those codes are
 * instances of a subclass of the ctypes array type whose [i] read is done
 * here as well (raw_array_subscript); everything else stays ctypes'. */
#include "core/args.h"
#include "core/state.h"
#include "synchronize/semlock.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *obj;                  /* the ctypes object */
    PyObject *lock;
    PyObject *acquire, *release;    /* lock.acquire, lock.release */
    PyObject *semlock;              /* `lock`, borrowed, when it is a fastmp SemLock
                                     * with the C methods: taken without calls */
    char *address;                  /* obj's bytes, for the fast path */
    Py_ssize_t length;              /* element count (arrays) */
    char code;                      /* struct type code, or 0: no fast path */
} SyncObject;

/* ---- the lock -------------------------------------------------------- */

/* Whether instances of `type` (a SemLock subclass) keep SemLock's own
 * acquire/release/__enter__/__exit__.  -1 with an exception set on error. */
static int
keeps_semlock_methods(fastmp_state *st, PyTypeObject *type)
{
    static const char *const methods[] = {"acquire", "release", "__enter__", "__exit__"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        PyObject *ours = PyObject_GetAttrString((PyObject *)type, methods[i]);
        PyObject *base = PyObject_GetAttrString((PyObject *)st->SemLock_type, methods[i]);
        int same = ours != NULL && ours == base;
        Py_XDECREF(ours);
        Py_XDECREF(base);
        if (PyErr_Occurred()) {
            return -1;
        }
        if (!same) {
            return 0;
        }
    }
    return 1;
}

/* Whether `lock` is a fastmp SemLock whose lock methods are SemLock's own,
 * so the C API can stand in for calling them (the answer is cached per
 * type).  -1 with an exception set on error. */
static int
is_plain_semlock(fastmp_state *st, PyObject *lock)
{
    if (!fastmp_semlock_check(st, lock)) {
        return 0;
    }
    PyObject *type = (PyObject *)Py_TYPE(lock);
    PyObject *known = PyDict_GetItemWithError(st->plain_lock_types, type);
    if (known != NULL) {
        return known == Py_True;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int plain = keeps_semlock_methods(st, Py_TYPE(lock));
    if (plain < 0 || PyDict_SetItem(st->plain_lock_types, type, plain ? Py_True : Py_False) < 0) {
        return -1;
    }
    return plain;
}

/* Take the lock.  0, or -1 with an exception set. */
static int
sync_acquire(SyncObject *s)
{
    if (s->semlock != NULL) {
        return fastmp_semlock_acquire_blocking(s->semlock);
    }
    PyObject *r = PyObject_CallNoArgs(s->acquire);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Release the lock and pass `result` through.  If `result` is NULL (an
 * error is pending) that error wins over a failure to release. */
static PyObject *
sync_release_with(SyncObject *s, PyObject *result)
{
    PyObject *exc = NULL;
    if (result == NULL) {
        exc = PyErr_GetRaisedException();
    }
    int released;
    if (s->semlock != NULL) {
        released = fastmp_semlock_release(s->semlock);
    }
    else {
        PyObject *r = PyObject_CallNoArgs(s->release);
        released = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    if (result == NULL) {
        if (released < 0) {
            PyErr_Clear();
        }
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    if (released < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* Like sync_release_with for setters: status 0 ok, -1 error pending. */
static int
sync_release_status(SyncObject *s, int status)
{
    PyObject *r = sync_release_with(s, status < 0 ? NULL : Py_NewRef(Py_None));
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ---- loads and stores of simple numbers ------------------------------ */

static Py_ssize_t
code_size(char code)
{
    switch (code) {
    case 'b': case 'B': return 1;
    case 'h': case 'H': return sizeof(short);
    case 'i': case 'I': return sizeof(int);
    case 'l': case 'L': return sizeof(long);
    case 'q': case 'Q': return sizeof(long long);
    case 'f': return sizeof(float);
    case 'd': return sizeof(double);
    default: return 0;
    }
}

#define LOAD(ctype, p) (*(const ctype *)(p))

static PyObject *
load_number(char code, const char *p)
{
    switch (code) {
    case 'b': return PyLong_FromLong(LOAD(signed char, p));
    case 'B': return PyLong_FromLong(LOAD(unsigned char, p));
    case 'h': return PyLong_FromLong(LOAD(short, p));
    case 'H': return PyLong_FromLong(LOAD(unsigned short, p));
    case 'i': return PyLong_FromLong(LOAD(int, p));
    case 'I': return PyLong_FromUnsignedLong(LOAD(unsigned int, p));
    case 'l': return PyLong_FromLong(LOAD(long, p));
    case 'L': return PyLong_FromUnsignedLong(LOAD(unsigned long, p));
    case 'q': return PyLong_FromLongLong(LOAD(long long, p));
    case 'Q': return PyLong_FromUnsignedLongLong(LOAD(unsigned long long, p));
    case 'f': return PyFloat_FromDouble(LOAD(float, p));
    default: return PyFloat_FromDouble(LOAD(double, p));
    }
}

/* Convert `v` for a store, as ctypes does: integers are truncated to the
 * field's width, floats accept int and float.  Returns 0 when `bits` or
 * `real` is set, 1 when the value needs ctypes' own conversion, -1 on error. */
static int
convert_number(char code, PyObject *v, unsigned long long *bits, double *real)
{
    if (code == 'f' || code == 'd') {
        if (!PyFloat_Check(v) && !PyLong_Check(v)) {
            return 1;
        }
        *real = PyFloat_AsDouble(v);
        return (*real == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    if (!PyLong_Check(v)) {
        return 1;
    }
    *bits = PyLong_AsUnsignedLongLongMask(v);
    return (*bits == (unsigned long long)-1 && PyErr_Occurred()) ? -1 : 0;
}

static void
store_number(char code, char *p, unsigned long long bits, double real)
{
    switch (code) {
    case 'b': case 'B': *(unsigned char *)p = (unsigned char)bits; break;
    case 'h': case 'H': *(unsigned short *)p = (unsigned short)bits; break;
    case 'i': case 'I': *(unsigned int *)p = (unsigned int)bits; break;
    case 'l': case 'L': *(unsigned long *)p = (unsigned long)bits; break;
    case 'q': case 'Q': *(unsigned long long *)p = bits; break;
    case 'f': *(float *)p = (float)real; break;
    default: *(double *)p = real; break;
    }
}

/* ---- SynchronizedCore ------------------------------------------------ */

/* __init__(obj, lock, code, address, length): `code` is the struct code of
 * obj's simple numeric type ('' for none), `address` its first byte. */
static int
Sync_init(SyncObject *self, PyObject *args, PyObject *kwds)
{
    const char *code;
    Py_ssize_t code_len, length;
    uint64_t address;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "SynchronizedCore() takes no keyword arguments");
        return -1;
    }
    PyObject *const *a = PySequence_Fast_ITEMS(args);
    if (fastmp_check_nargs("SynchronizedCore", PyTuple_GET_SIZE(args), 5, 5) < 0
        || fastmp_check_str("SynchronizedCore", "code", a[2]) < 0
        || (code = PyUnicode_AsUTF8AndSize(a[2], &code_len)) == NULL
        || fastmp_parse_u64(a[3], &address) < 0
        || ((length = PyNumber_AsSsize_t(a[4], PyExc_OverflowError)) == -1 && PyErr_Occurred())) {
        return -1;
    }
    PyObject *obj = a[0], *lock = a[1];
    if (code_len > 1 || (code_len == 1 && code_size(code[0]) == 0)) {
        PyErr_Format(PyExc_ValueError, "no fast access for type code %R",
                     PyTuple_GET_ITEM(args, 2));
        return -1;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    int plain = is_plain_semlock(st, lock);
    if (plain < 0) {
        return -1;
    }
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    if (acquire == NULL) {
        return -1;
    }
    PyObject *release = PyObject_GetAttrString(lock, "release");
    if (release == NULL) {
        Py_DECREF(acquire);
        return -1;
    }
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    Py_XSETREF(self->obj, Py_NewRef(obj));
    Py_XSETREF(self->lock, Py_NewRef(lock));
    self->semlock = plain ? lock : NULL;
    self->code = code_len ? code[0] : 0;
    self->address = (char *)(uintptr_t)address;
    self->length = length;
    return 0;
}

static int
Sync_traverse(SyncObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->obj);
    Py_VISIT(self->lock);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    return 0;
}

static int
Sync_clear(SyncObject *self)
{
    self->code = 0;                 /* `address` dies with `obj` */
    self->semlock = NULL;           /* borrowed from `lock` */
    Py_CLEAR(self->obj);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    return 0;
}

static void
Sync_dealloc(SyncObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Sync_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Fail cleanly on a wrapper whose __init__ never ran. */
static int
sync_ready(SyncObject *self)
{
    if (self->obj == NULL) {
        PyErr_Format(PyExc_ValueError, "%s object is not initialised", Py_TYPE(self)->tp_name);
        return 0;
    }
    return 1;
}

static PyObject *
Sync_get_obj(SyncObject *self, PyObject *unused)
{
    return sync_ready(self) ? Py_NewRef(self->obj) : NULL;
}

static PyObject *
Sync_get_lock(SyncObject *self, PyObject *unused)
{
    return sync_ready(self) ? Py_NewRef(self->lock) : NULL;
}

static PyObject *
Sync_enter(SyncObject *self, PyObject *unused)
{
    if (!sync_ready(self)) {
        return NULL;
    }
    if (self->semlock != NULL) {
        return fastmp_semlock_acquire_blocking(self->semlock) < 0 ? NULL : Py_NewRef(Py_True);
    }
    return PyObject_CallMethod(self->lock, "__enter__", NULL);
}

static PyObject *
Sync_exit(SyncObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!sync_ready(self)) {
        return NULL;
    }
    if (self->semlock != NULL) {
        if (fastmp_semlock_release(self->semlock) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *method = PyObject_GetAttrString(self->lock, "__exit__");
    if (method == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(method, args, (size_t)nargs, NULL);
    Py_DECREF(method);
    return r;
}

/* _locked_getattr(name): getattr(obj, name) with the lock held. */
static PyObject *
Sync_locked_getattr(SyncObject *self, PyObject *name)
{
    if (!sync_ready(self) || sync_acquire(self) < 0) {
        return NULL;
    }
    return sync_release_with(self, PyObject_GetAttr(self->obj, name));
}

/* _locked_setattr(name, value): setattr(obj, name, value) with the lock held. */
static PyObject *
Sync_locked_setattr(SyncObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("_locked_setattr", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (!sync_ready(self) || sync_acquire(self) < 0) {
        return NULL;
    }
    int status = PyObject_SetAttr(self->obj, args[0], args[1]);
    if (sync_release_status(self, status) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMemberDef Sync_members[] = {
    {"_obj", T_OBJECT, offsetof(SyncObject, obj), READONLY, "the ctypes object"},
    {"_lock", T_OBJECT, offsetof(SyncObject, lock), READONLY, "the lock"},
    {"acquire", T_OBJECT, offsetof(SyncObject, acquire), READONLY, "the lock's acquire"},
    {"release", T_OBJECT, offsetof(SyncObject, release), READONLY, "the lock's release"},
    {NULL},
};

static PyMethodDef Sync_methods[] = {
    {"get_obj", (PyCFunction)Sync_get_obj, METH_NOARGS, "get_obj($self, /)\n--\n\n"
     "The wrapped ctypes object."},
    {"get_lock", (PyCFunction)Sync_get_lock, METH_NOARGS, "get_lock($self, /)\n--\n\n"
     "The lock guarding it."},
    {"__enter__", (PyCFunction)Sync_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"
     "Acquire the lock."},
    {"__exit__", (PyCFunction)(void (*)(void))Sync_exit, METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\nRelease the lock."},
    {"_locked_getattr", (PyCFunction)Sync_locked_getattr, METH_O,
     "_locked_getattr($self, name, /)\n--\n\n"
     "getattr(obj, name) with the lock held"},
    {"_locked_setattr", (PyCFunction)(void (*)(void))Sync_locked_setattr, METH_FASTCALL,
     "_locked_setattr($self, name, value, /)\n--\n\n"
     "setattr(obj, name, value) with the lock held"},
    {NULL},
};

static PyType_Slot Sync_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Sync_init},
    {Py_tp_dealloc, Sync_dealloc},
    {Py_tp_traverse, Sync_traverse},
    {Py_tp_clear, Sync_clear},
    {Py_tp_members, Sync_members},
    {Py_tp_methods, Sync_methods},
    {Py_tp_doc, "Core of a lock-guarded ctypes object (see fastmp.sharedctypes)."},
    {0, NULL},
};

static PyType_Spec Sync_spec = {
    .name = "fastmp._fastmp.SynchronizedCore",
    .basicsize = sizeof(SyncObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Sync_slots,
};

/* ---- .value ---------------------------------------------------------- */

static PyObject *
SyncValue_get(SyncObject *self, void *closure)
{
    if (!sync_ready(self)) {
        return NULL;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    if (st == NULL || sync_acquire(self) < 0) {
        return NULL;
    }
    PyObject *v = self->code ? load_number(self->code, self->address)
                             : PyObject_GetAttr(self->obj, st->str_value);
    return sync_release_with(self, v);
}

static int
SyncValue_set(SyncObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete the value");
        return -1;
    }
    if (!sync_ready(self)) {
        return -1;
    }
    fastmp_state *st = fastmp_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return -1;
    }
    unsigned long long bits = 0;
    double real = 0.0;
    int conv = self->code ? convert_number(self->code, value, &bits, &real) : 1;
    if (conv < 0 || sync_acquire(self) < 0) {
        return -1;
    }
    int status = 0;
    if (conv == 0) {
        store_number(self->code, self->address, bits, real);
    }
    else {
        status = PyObject_SetAttr(self->obj, st->str_value, value);
    }
    return sync_release_status(self, status);
}

static PyGetSetDef SyncValue_getset[] = {
    {"value", (getter)SyncValue_get, (setter)SyncValue_set, "the value, read and written under the lock", NULL},
    {NULL},
};

static PyType_Slot SyncValue_slots[] = {
    {Py_tp_traverse, Sync_traverse},
    {Py_tp_clear, Sync_clear},
    {Py_tp_getset, SyncValue_getset},
    {Py_tp_doc, "SynchronizedCore with a lock-guarded .value"},
    {0, NULL},
};

static PyType_Spec SyncValue_spec = {
    .name = "fastmp._fastmp.SynchronizedValueCore",
    .basicsize = sizeof(SyncObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = SyncValue_slots,
};

/* ---- [i] ------------------------------------------------------------- */

/* Normalise index `i` (negative counts from the end); -1 with IndexError
 * if out of range, as ctypes arrays do. */
static Py_ssize_t
array_position(SyncObject *self, Py_ssize_t i)
{
    if (i < 0) {
        i += self->length;
    }
    if (i < 0 || i >= self->length) {
        PyErr_SetString(PyExc_IndexError, "invalid index");
        return -1;
    }
    return i;
}

static PyObject *
SyncArray_item(SyncObject *self, Py_ssize_t i)
{
    if (!sync_ready(self)) {
        return NULL;
    }
    if (!self->code) {
        if (sync_acquire(self) < 0) {
            return NULL;
        }
        return sync_release_with(self, PySequence_GetItem(self->obj, i));
    }
    if ((i = array_position(self, i)) < 0 || sync_acquire(self) < 0) {
        return NULL;
    }
    PyObject *v = load_number(self->code, self->address + i * code_size(self->code));
    return sync_release_with(self, v);
}

static PyObject *
SyncArray_subscript(SyncObject *self, PyObject *key)
{
    if (self->code && PyLong_CheckExact(key)) {
        Py_ssize_t i = PyLong_AsSsize_t(key);
        if (i == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_SetString(PyExc_IndexError, "invalid index");
            return NULL;
        }
        return SyncArray_item(self, i);
    }
    if (!sync_ready(self) || sync_acquire(self) < 0) {
        return NULL;
    }
    return sync_release_with(self, PyObject_GetItem(self->obj, key));
}

static int
SyncArray_ass_subscript(SyncObject *self, PyObject *key, PyObject *value)
{
    if (!sync_ready(self)) {
        return -1;
    }
    unsigned long long bits = 0;
    double real = 0.0;
    Py_ssize_t i = -1;
    int conv = 1;
    if (self->code && value != NULL && PyLong_CheckExact(key)) {
        i = PyLong_AsSsize_t(key);
        if (i == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_SetString(PyExc_IndexError, "invalid index");
            return -1;
        }
        if ((i = array_position(self, i)) < 0) {
            return -1;
        }
        conv = convert_number(self->code, value, &bits, &real);
        if (conv < 0) {
            return -1;
        }
    }
    if (sync_acquire(self) < 0) {
        return -1;
    }
    int status = 0;
    if (conv == 0) {
        store_number(self->code, self->address + i * code_size(self->code), bits, real);
    }
    else if (value == NULL) {
        status = PyObject_DelItem(self->obj, key);
    }
    else {
        status = PyObject_SetItem(self->obj, key, value);
    }
    return sync_release_status(self, status);
}

static Py_ssize_t
SyncArray_length(SyncObject *self)
{
    if (!sync_ready(self)) {
        return -1;
    }
    return self->code ? self->length : PyObject_Size(self->obj);
}

static PyType_Slot SyncArray_slots[] = {
    {Py_tp_traverse, Sync_traverse},
    {Py_tp_clear, Sync_clear},
    {Py_mp_subscript, SyncArray_subscript},
    {Py_mp_ass_subscript, SyncArray_ass_subscript},
    {Py_mp_length, SyncArray_length},
    {Py_sq_item, SyncArray_item},
    {Py_sq_length, SyncArray_length},
    {Py_tp_doc, "SynchronizedCore with lock-guarded indexing"},
    {0, NULL},
};

static PyType_Spec SyncArray_spec = {
    .name = "fastmp._fastmp.SynchronizedArrayCore",
    .basicsize = sizeof(SyncObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = SyncArray_slots,
};

/* ---- lock-free arrays: [i] of RawArray's numeric arrays --------------- */

/* Where a fast array class keeps what raw_array_subscript needs: in its
 * one __slots__ entry, the last pointer of the instance, a bytes object
 * holding a RawView, written by raw_array_attach only.  The slot's
 * descriptor is removed from the class once installed (sharedctypes does
 * it), so Python code can neither read nor replace it. */
typedef struct {
    const PyObject *owner;          /* identity only: the array described */
    char *address;
    Py_ssize_t length;
    char code;
} RawView;

/* ctypes' own subscript of array types: one function for all of them. */
static binaryfunc ctypes_array_subscript;

static PyObject **
raw_view_slot(PyObject *array)
{
    return (PyObject **)((char *)array + Py_TYPE(array)->tp_basicsize - sizeof(PyObject *));
}

/* mp_subscript of the fast array classes: an int index into an attached
 * array is loaded here; anything else (slices, bad indices, an array
 * whose view is missing) goes to ctypes. */
static PyObject *
raw_array_subscript(PyObject *self, PyObject *key)
{
    PyObject *holder = *raw_view_slot(self);
    RawView view;
    if (holder != NULL && PyBytes_CheckExact(holder)
        && PyBytes_GET_SIZE(holder) == (Py_ssize_t)sizeof(view) && PyLong_CheckExact(key)) {
        memcpy(&view, PyBytes_AS_STRING(holder), sizeof(view));
        if (view.owner == self) {
            Py_ssize_t i = PyLong_AsSsize_t(key);
            if (i == -1 && PyErr_Occurred()) {
                PyErr_Clear();      /* too large: ctypes raises its IndexError */
            }
            else {
                if (i < 0) {
                    i += view.length;
                }
                if (i >= 0 && i < view.length) {
                    return load_number(view.code, view.address + i * code_size(view.code));
                }
            }
        }
    }
    return ctypes_array_subscript(self, key);
}

/* raw_array_fast_indexing(cls): give the ctypes array class `cls` (made
 * by sharedctypes with __slots__ = ('_fastmp_view',)) the fast [i].
 * Returns False, changing nothing, if its layout is not the expected one. */
static PyObject *
raw_array_fast_indexing(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_HasFeature((PyTypeObject *)cls, Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "raw_array_fast_indexing() needs a class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)cls;
    PyObject *descr = PyDict_GetItemString(tp->tp_dict, "_fastmp_view");
    binaryfunc base = tp->tp_base != NULL && tp->tp_base->tp_as_mapping != NULL
        ? tp->tp_base->tp_as_mapping->mp_subscript : NULL;
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) || base == NULL
        || tp->tp_as_mapping == NULL || tp->tp_as_mapping->mp_subscript != base
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX
        || ((PyMemberDescrObject *)descr)->d_member->offset
               != tp->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)
        || (ctypes_array_subscript != NULL && ctypes_array_subscript != base)) {
        Py_RETURN_FALSE;
    }
    ctypes_array_subscript = base;
    tp->tp_as_mapping->mp_subscript = raw_array_subscript;
    Py_RETURN_TRUE;
}

/* raw_array_attach(array, code): make [i] of `array` (an instance of a
 * class set up by raw_array_fast_indexing, elements of struct code `code`)
 * read its bytes directly.  An array whose bytes are misaligned for the
 * type keeps ctypes' [i]. */
static PyObject *
raw_array_attach(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const char *code;
    Py_ssize_t code_len;
    if (fastmp_check_nargs("raw_array_attach", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *array = args[0];
    if (Py_TYPE(array)->tp_as_mapping == NULL
        || Py_TYPE(array)->tp_as_mapping->mp_subscript != raw_array_subscript) {
        PyErr_SetString(PyExc_TypeError, "not an array of a fast array class");
        return NULL;
    }
    if ((code = PyUnicode_AsUTF8AndSize(args[1], &code_len)) == NULL) {
        return NULL;
    }
    Py_ssize_t size = code_len == 1 ? code_size(code[0]) : 0;
    if (size == 0) {
        PyErr_Format(PyExc_ValueError, "no fast access for type code %R", args[1]);
        return NULL;
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(array, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    char *address = buf.buf;
    Py_ssize_t nbytes = buf.len;
    PyBuffer_Release(&buf);
    if ((uintptr_t)address % (uintptr_t)size != 0 || nbytes % size != 0) {
        Py_RETURN_NONE;
    }
    RawView view;
    memset(&view, 0, sizeof(view));     /* no undefined padding in the bytes */
    view.owner = array;
    view.address = address;
    view.length = nbytes / size;
    view.code = code[0];
    PyObject *holder = PyBytes_FromStringAndSize((const char *)&view, sizeof(view));
    if (holder == NULL) {
        return NULL;
    }
    Py_XSETREF(*raw_view_slot(array), holder);
    Py_RETURN_NONE;
}

static PyMethodDef raw_array_functions[] = {
    {"raw_array_fast_indexing", raw_array_fast_indexing, METH_O,
     "raw_array_fast_indexing($module, cls, /)\n--\n\n"
     "Give a ctypes array class made by sharedctypes a fast [i]; False if\n"
     "its layout does not allow it."},
    {"raw_array_attach", (PyCFunction)(void (*)(void))raw_array_attach, METH_FASTCALL,
     "raw_array_attach($module, array, code, /)\n--\n\n"
     "Let [i] of `array` read its bytes directly."},
    {NULL, NULL, 0, NULL},
};

/* ---- module hooks ---------------------------------------------------- */

static PyTypeObject *
add_subtype(PyObject *module, PyType_Spec *spec, PyTypeObject *base)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, (PyObject *)base);
    if (tp != NULL && PyModule_AddType(module, tp) < 0) {
        Py_CLEAR(tp);
    }
    return tp;
}

int
fastmp_sharedctypes_exec(PyObject *module, fastmp_state *st)
{
    st->str_value = PyUnicode_InternFromString("value");
    st->plain_lock_types = PyDict_New();
    if (st->str_value == NULL || st->plain_lock_types == NULL
        || (st->SyncCore_type = add_subtype(module, &Sync_spec, NULL)) == NULL
        || (st->SyncValue_type = add_subtype(module, &SyncValue_spec, st->SyncCore_type)) == NULL
        || (st->SyncArray_type = add_subtype(module, &SyncArray_spec, st->SyncCore_type)) == NULL
        || PyModule_AddFunctions(module, raw_array_functions) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_sharedctypes_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->SyncCore_type);
    Py_VISIT(st->SyncValue_type);
    Py_VISIT(st->SyncArray_type);
    Py_VISIT(st->plain_lock_types);
    return 0;
}

void
fastmp_sharedctypes_clear(fastmp_state *st)
{
    Py_CLEAR(st->SyncCore_type);
    Py_CLEAR(st->SyncValue_type);
    Py_CLEAR(st->SyncArray_type);
    Py_CLEAR(st->str_value);
    Py_CLEAR(st->plain_lock_types);
}
