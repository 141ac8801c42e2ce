/* shared_memory.c - named POSIX shared memory for fastmp.shared_memory:
 * shm_map() opens (or creates), sizes and maps a segment in one call and
 * returns a SegmentMapping (a writable buffer with close()); shm_unlink()
 * removes a segment. */
#include "core/args.h"
#include "core/errors.h"
#include "core/state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <structmember.h>

/* The UTF-8 path of `name`; NULL with ValueError if it holds a NUL. */
static const char *
shm_path(PyObject *name)
{
    Py_ssize_t len;
    const char *path = PyUnicode_AsUTF8AndSize(name, &len);
    if (path != NULL && strlen(path) != (size_t)len) {
        PyErr_SetString(PyExc_ValueError, "embedded null character in shared memory name");
        return NULL;
    }
    return path;
}

/* shm_open with the GIL released, retried on EINTR.  Returns the fd, or
 * -1 with an exception set (OSError naming `name`). */
static int
open_segment(PyObject *name, const char *path, int flags, int mode)
{
    int fd;
    do {
        Py_BEGIN_ALLOW_THREADS
        fd = shm_open(path, flags | O_CLOEXEC, (mode_t)mode);
        Py_END_ALLOW_THREADS
    } while (fd < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (fd < 0 && !PyErr_Occurred()) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    }
    return fd;
}

/* ---- SegmentMapping -------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    char *base;                     /* NULL once closed */
    Py_ssize_t size;
    Py_ssize_t exports;             /* live buffer views */
} MappingObject;

static void
Mapping_dealloc(MappingObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->base != NULL) {
        (void)munmap(self->base, (size_t)self->size);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
Mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags)
{
    if (self->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "shared memory mapping is closed");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->size, 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
Mapping_releasebuffer(MappingObject *self, Py_buffer *view)
{
    self->exports--;
}

/* close(): unmap; BufferError while views of it are alive. */
static PyObject *
Mapping_close(MappingObject *self, PyObject *unused)
{
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "cannot close exported pointers exist");
        return NULL;
    }
    if (self->base != NULL) {
        int rc = munmap(self->base, (size_t)self->size);
        self->base = NULL;
        if (rc < 0) {
            return fastmp_oserror(errno, "munmap");
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
Mapping_get_closed(MappingObject *self, void *closure)
{
    return PyBool_FromLong(self->base == NULL);
}

static PyMethodDef Mapping_methods[] = {
    {"close", (PyCFunction)Mapping_close, METH_NOARGS, "close($self, /)\n--\n\n"
     "Unmap the segment."},
    {NULL},
};

static PyMemberDef Mapping_members[] = {
    {"size", T_PYSSIZET, offsetof(MappingObject, size), READONLY, "length in bytes"},
    {NULL},
};

static PyGetSetDef Mapping_getset[] = {
    {"closed", (getter)Mapping_get_closed, NULL, "whether close() was called", NULL},
    {NULL},
};

static PyType_Slot Mapping_slots[] = {
    {Py_tp_dealloc, Mapping_dealloc},
    {Py_tp_methods, Mapping_methods},
    {Py_tp_members, Mapping_members},
    {Py_tp_getset, Mapping_getset},
    {Py_bf_getbuffer, Mapping_getbuffer},
    {Py_bf_releasebuffer, Mapping_releasebuffer},
    {Py_tp_doc, "A mapped shared memory segment (from shm_map)."},
    {0, NULL},
};

static PyType_Spec Mapping_spec = {
    .name = "fastmp._fastmp.SegmentMapping",
    .basicsize = sizeof(MappingObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Mapping_slots,
};

/* ---- functions ------------------------------------------------------- */

/* Size (when creating) or measure the open segment `fd` and map it.
 * Returns the mapping and sets *size, or MAP_FAILED with an exception set. */
static void *
map_segment(int fd, int creating, Py_ssize_t *size)
{
    if (creating) {
        if (ftruncate(fd, (off_t)*size) < 0) {
            fastmp_oserror(errno, "ftruncate");
            return MAP_FAILED;
        }
    }
    else {
        struct stat info;
        if (fstat(fd, &info) < 0) {
            fastmp_oserror(errno, "fstat");
            return MAP_FAILED;
        }
        *size = (Py_ssize_t)info.st_size;
    }
    if (*size <= 0) {
        PyErr_SetString(PyExc_ValueError, "cannot mmap an empty shared memory segment");
        return MAP_FAILED;
    }
    void *base = mmap(NULL, (size_t)*size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        fastmp_oserror(errno, "mmap");
    }
    return base;
}

/* shm_map(name, flags, mode, size) -> SegmentMapping.  With O_CREAT|O_EXCL
 * in flags the new segment is sized to `size`; otherwise `size` is ignored
 * and the segment's own size is mapped.  A segment this call created is
 * unlinked again if sizing or mapping it fails. */
static PyObject *
shm_map_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (fastmp_check_nargs("shm_map", nargs, 4, 4) < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "shm_map() name must be str, not %s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    PyObject *name = args[0];
    int flags, mode;
    if (fastmp_parse_int(args[1], "shm_map() flag", &flags) < 0
        || fastmp_parse_int(args[2], "shm_map() mode", &mode) < 0) {
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[3]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const char *path = shm_path(name);
    if (path == NULL) {
        return NULL;
    }
    int creating = (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL);
    int fd = open_segment(name, path, flags, mode);
    if (fd < 0) {
        return NULL;
    }
    void *base = map_segment(fd, creating, &size);
    (void)close(fd);                /* the mapping keeps the segment */
    MappingObject *self = NULL;
    if (base != MAP_FAILED) {
        self = PyObject_New(MappingObject, st->SegmentMapping_type);
        if (self == NULL) {
            (void)munmap(base, (size_t)size);
        }
    }
    if (self == NULL) {
        if (creating) {
            (void)shm_unlink(path);
        }
        return NULL;
    }
    self->base = base;
    self->size = size;
    self->exports = 0;
    return (PyObject *)self;
}

/* shm_unlink(path): remove a POSIX shared memory object.  OSError with the
 * name on failure. */
static PyObject *
shm_unlink_py(PyObject *module, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "shm_unlink() argument must be str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    const char *path = shm_path(name);
    if (path == NULL) {
        return NULL;
    }
    if (shm_unlink(path) < 0) {
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    }
    Py_RETURN_NONE;
}

static PyMethodDef segment_functions[] = {
    {"shm_map", (PyCFunction)(void (*)(void))shm_map_py, METH_FASTCALL,
     "shm_map($module, name, flags, mode, size, /)\n--\n\n"
     "Open (or with O_CREAT make) the segment `name` and map it."},
    {"shm_unlink", (PyCFunction)shm_unlink_py, METH_O,
     "shm_unlink($module, path, /)\n--\n\nRemove the segment's name."},
    {NULL},
};

/* ---- module hooks ---------------------------------------------------- */

int
fastmp_shared_memory_exec(PyObject *module, fastmp_state *st)
{
    st->SegmentMapping_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Mapping_spec, NULL);
    if (st->SegmentMapping_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, segment_functions);
}

int
fastmp_shared_memory_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->SegmentMapping_type);
    return 0;
}

void
fastmp_shared_memory_clear(fastmp_state *st)
{
    Py_CLEAR(st->SegmentMapping_type);
}
