/* heap.c - the shared-memory heap behind fastmp.heap and sharedctypes:
 *   Arena          a memfd mapping (MAP_SHARED) that children inherit under
 *                  fork and receive by fd passing under spawn/forkserver;
 *   Heap           a block allocator over arenas: 16-byte aligned chunks,
 *                  size-class bins, neighbour coalescing, a dedicated arena
 *                  for large requests, fully free arenas given back;
 *   BufferWrapper  one allocated block; exports it through the buffer
 *                  protocol and returns it to its heap when the last
 *                  reference in the allocating process goes.
 * The allocator runs with the GIL held and never releases it, which makes
 * it thread-safe; it is fork-safe because a child never touches the heap
 * state it inherited (the fork generation, core/fork.h, marks the
 * inherited heap stale and it starts afresh). */
#include "core/args.h"
#include "core/errors.h"
#include "core/fork.h"
#include "core/state.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <structmember.h>

#define CHUNK_ALIGN 16
#define EXACT_BINS 64               /* sizes below 1024, one bin per 16 bytes */
#define NBINS 128                   /* then one bin per power of two */
#define FIRST_ARENA_SIZE ((size_t)256 * 1024)
#define MAX_ARENA_SIZE ((size_t)4 * 1024 * 1024)
#define DEDICATED_MIN ((size_t)1024 * 1024)   /* requests this big get their own arena */
#define DEFAULT_DISCARD_ABOVE ((Py_ssize_t)4 * 1024 * 1024)

/* ---- Arena ----------------------------------------------------------- */

typedef struct chunk chunk;
typedef struct ArenaObject ArenaObject;

/* A run of bytes in an arena, free or allocated.  Kept in process memory
 * (never in the shared mapping) so a child cannot corrupt its parent's heap. */
struct chunk {
    chunk *addr_prev, *addr_next;   /* neighbours in address order */
    chunk *bin_prev, *bin_next;     /* free-bin links while free */
    ArenaObject *arena;
    size_t offset, size;
    int is_free;
};

struct ArenaObject {
    PyObject_HEAD
    int fd;
    int dedicated;                  /* serves exactly one large block */
    char *base;
    size_t size;
    size_t dirty_end;               /* bytes past this were never handed out (still zero) */
    chunk *first;                   /* address-ordered chunk list, NULL if not from a heap */
};

static void
chunk_list_free(chunk *c)
{
    while (c != NULL) {
        chunk *next = c->addr_next;
        PyMem_Free(c);
        c = next;
    }
}

static void
Arena_dealloc(ArenaObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->base != NULL && self->base != MAP_FAILED) {
        (void)munmap(self->base, self->size);
    }
    if (self->fd >= 0) {
        (void)close(self->fd);
    }
    chunk_list_free(self->first);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Map `size` bytes of `fd` (creating a memfd if fd < 0; the arena owns the
 * fd either way).  Returns a new Arena, or NULL with an exception set. */
static ArenaObject *
arena_create(PyTypeObject *type, size_t size, int fd)
{
    if (size == 0 || size > (size_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "arena size out of range");
        if (fd >= 0) {
            (void)close(fd);
        }
        return NULL;
    }
    ArenaObject *self = (ArenaObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        if (fd >= 0) {
            (void)close(fd);
        }
        return NULL;
    }
    self->fd = fd;
    self->size = size;
    self->base = NULL;
    self->first = NULL;
    if (fd < 0) {
        self->fd = memfd_create("fastmp-heap", MFD_CLOEXEC);
        if (self->fd < 0) {
            fastmp_oserror(errno, "memfd_create");
            Py_DECREF(self);
            return NULL;
        }
        if (ftruncate(self->fd, (off_t)size) < 0) {
            fastmp_oserror(errno, "ftruncate");
            Py_DECREF(self);
            return NULL;
        }
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
    if (base == MAP_FAILED) {
        fastmp_oserror(errno, "mmap");
        Py_DECREF(self);
        return NULL;
    }
    self->base = base;
    return self;
}

/* Arena(size, fd=-1): a new memfd arena, or a mapping of an inherited fd
 * (the arena then owns that fd). */
static PyObject *
Arena_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"size", "fd"};
    PyObject *a[2];
    int fd = -1;
    if (fastmp_bind_slot_args("Arena", args, kwds, names, 2, 1, a) < 0
        || (a[1] != NULL && fastmp_parse_int(a[1], "fd", &fd) < 0)) {
        return NULL;
    }
    Py_ssize_t size = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "arena size must be positive");
        return NULL;
    }
    return (PyObject *)arena_create(type, (size_t)size, fd);
}

static PyObject *
Arena_repr(ArenaObject *self)
{
    return PyUnicode_FromFormat("<fastmp.heap.Arena size=%zu fd=%d>", self->size, self->fd);
}

static PyMemberDef Arena_members[] = {
    {"fd", T_INT, offsetof(ArenaObject, fd), READONLY, "file descriptor of the mapping"},
    {"size", T_PYSSIZET, offsetof(ArenaObject, size), READONLY, "length in bytes"},
    {NULL},
};

static PyType_Slot Arena_slots[] = {
    {Py_tp_new, Arena_new},
    {Py_tp_dealloc, Arena_dealloc},
    {Py_tp_repr, Arena_repr},
    {Py_tp_members, Arena_members},
    {Py_tp_doc, "Arena(size, fd=-1): a shared mapping that blocks are carved from."},
    {0, NULL},
};

static PyType_Spec Arena_spec = {
    .name = "fastmp._fastmp.Arena",
    .basicsize = sizeof(ArenaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Arena_slots,
};

/* ---- Heap ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    chunk *bins[NBINS];             /* free chunks by size class */
    uint64_t binmap[NBINS / 64];    /* bit set: bin is non-empty */
    ArenaObject **arenas;           /* strong references */
    Py_ssize_t n_arenas, cap_arenas;
    size_t next_arena_size;
    Py_ssize_t discard_above;       /* give back free arenas larger than this */
    Py_ssize_t n_mallocs, n_frees;
    uint64_t generation;            /* fork generation this heap serves */
    uint64_t epoch;                 /* bumped each time the heap starts afresh */
} HeapObject;

static int
bin_index(size_t size)
{
    if (size < (size_t)EXACT_BINS * CHUNK_ALIGN) {
        return (int)(size / CHUNK_ALIGN);
    }
    int log2 = 63 - __builtin_clzll((unsigned long long)size);
    int index = EXACT_BINS + (log2 - 10);
    return index < NBINS ? index : NBINS - 1;
}

static void
bin_insert(HeapObject *h, chunk *c)
{
    int b = bin_index(c->size);
    c->is_free = 1;
    c->bin_prev = NULL;
    c->bin_next = h->bins[b];
    if (c->bin_next != NULL) {
        c->bin_next->bin_prev = c;
    }
    h->bins[b] = c;
    h->binmap[b / 64] |= (uint64_t)1 << (b % 64);
}

static void
bin_remove(HeapObject *h, chunk *c)
{
    int b = bin_index(c->size);
    if (c->bin_prev != NULL) {
        c->bin_prev->bin_next = c->bin_next;
    }
    else {
        h->bins[b] = c->bin_next;
        if (h->bins[b] == NULL) {
            h->binmap[b / 64] &= ~((uint64_t)1 << (b % 64));
        }
    }
    if (c->bin_next != NULL) {
        c->bin_next->bin_prev = c->bin_prev;
    }
    c->is_free = 0;
}

/* First non-empty bin at or after `from`, or -1. */
static int
next_nonempty_bin(HeapObject *h, int from)
{
    for (int word = from / 64; word < NBINS / 64; word++) {
        uint64_t bits = h->binmap[word];
        if (word == from / 64) {
            bits &= ~(uint64_t)0 << (from % 64);
        }
        if (bits != 0) {
            return word * 64 + __builtin_ctzll(bits);
        }
    }
    return -1;
}

/* A free chunk of at least `size` bytes, taken out of its bin; NULL if
 * none fits. */
static chunk *
take_fitting_chunk(HeapObject *h, size_t size)
{
    int b = bin_index(size);
    if (b >= EXACT_BINS) {
        /* a power-of-two bin mixes sizes: first fit within it */
        for (chunk *c = h->bins[b]; c != NULL; c = c->bin_next) {
            if (c->size >= size) {
                bin_remove(h, c);
                return c;
            }
        }
        b++;
    }
    /* every chunk in an exact bin >= b, or in any later bin, fits */
    b = b < NBINS ? next_nonempty_bin(h, b) : -1;
    if (b < 0) {
        return NULL;
    }
    chunk *c = h->bins[b];
    bin_remove(h, c);
    return c;
}

/* Drop everything a forked child inherited: those arenas' free space is
 * its parent's to hand out.  Blocks the child inherited keep their arenas
 * alive through their own references. */
static void
heap_forget_arenas(HeapObject *h)
{
    memset(h->bins, 0, sizeof(h->bins));
    memset(h->binmap, 0, sizeof(h->binmap));
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        Py_DECREF(h->arenas[i]);
    }
    h->n_arenas = 0;
    h->n_mallocs = h->n_frees = 0;
    h->epoch++;
    h->next_arena_size = FIRST_ARENA_SIZE;
}

/* Make the heap usable in this process (after a fork it starts empty). */
static void
heap_refresh(HeapObject *h)
{
    if (h->generation != fastmp_fork_generation()) {
        heap_forget_arenas(h);
        h->generation = fastmp_fork_generation();
    }
}

/* Whether a block allocated in heap epoch `epoch` is this process's to free. */
static int
heap_owns_here(HeapObject *h, uint64_t epoch)
{
    return h->generation == fastmp_fork_generation() && h->epoch == epoch;
}

static void
heap_detach_arena(HeapObject *h, ArenaObject *a)
{
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        if (h->arenas[i] == a) {
            h->arenas[i] = h->arenas[--h->n_arenas];
            Py_DECREF(a);
            return;
        }
    }
}

/* Map a new arena for a request of `size` bytes and put its space in the
 * bins.  Returns 0, or -1 with an exception set. */
static int
heap_grow(HeapObject *h, fastmp_state *st, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int dedicated = size >= DEDICATED_MIN;
    size_t length = dedicated ? size : h->next_arena_size;
    if (length < size) {
        length = size;
    }
    if (length > (size_t)PY_SSIZE_T_MAX - page) {
        PyErr_NoMemory();
        return -1;
    }
    length = (length + page - 1) / page * page;
    if (h->n_arenas == h->cap_arenas) {
        Py_ssize_t cap = h->cap_arenas ? h->cap_arenas * 2 : 8;
        ArenaObject **grown = PyMem_Realloc(h->arenas, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->arenas = grown;
        h->cap_arenas = cap;
    }
    chunk *whole = PyMem_Calloc(1, sizeof(chunk));
    if (whole == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ArenaObject *a = arena_create(st->Arena_type, length, -1);
    if (a == NULL) {
        PyMem_Free(whole);
        return -1;
    }
    a->dedicated = dedicated;
    a->dirty_end = 0;
    a->first = whole;
    whole->arena = a;
    whole->offset = 0;
    whole->size = length;
    h->arenas[h->n_arenas++] = a;
    bin_insert(h, whole);
    if (!dedicated && h->next_arena_size < MAX_ARENA_SIZE) {
        h->next_arena_size *= 2;
    }
    return 0;
}

/* Allocate a zero-filled block of at least `request` bytes.  Returns the
 * chunk, or NULL with an exception set. */
static chunk *
heap_malloc(HeapObject *h, fastmp_state *st, size_t request)
{
    heap_refresh(h);
    if (request > (size_t)PY_SSIZE_T_MAX - CHUNK_ALIGN) {
        PyErr_NoMemory();
        return NULL;
    }
    size_t size = request ? (request + CHUNK_ALIGN - 1) & ~(size_t)(CHUNK_ALIGN - 1) : CHUNK_ALIGN;
    chunk *c = size < DEDICATED_MIN ? take_fitting_chunk(h, size) : NULL;
    if (c == NULL) {
        if (heap_grow(h, st, size) < 0) {
            return NULL;
        }
        c = take_fitting_chunk(h, size);
        if (c == NULL) {            /* cannot happen: the new arena fits */
            PyErr_SetString(PyExc_SystemError, "fresh arena has no room for the block");
            return NULL;
        }
    }
    if (c->size - size >= CHUNK_ALIGN && !c->arena->dedicated) {
        chunk *rest = PyMem_Calloc(1, sizeof(chunk));
        if (rest == NULL) {
            bin_insert(h, c);
            PyErr_NoMemory();
            return NULL;
        }
        rest->arena = c->arena;
        rest->offset = c->offset + size;
        rest->size = c->size - size;
        rest->addr_prev = c;
        rest->addr_next = c->addr_next;
        if (rest->addr_next != NULL) {
            rest->addr_next->addr_prev = rest;
        }
        c->addr_next = rest;
        c->size = size;
        bin_insert(h, rest);
    }
    ArenaObject *a = c->arena;
    size_t end = c->offset + c->size;
    if (c->offset < a->dirty_end) {
        /* reused bytes; the never-used tail of an arena is still zero */
        size_t dirty = (end < a->dirty_end ? end : a->dirty_end) - c->offset;
        memset(a->base + c->offset, 0, dirty);
    }
    if (end > a->dirty_end) {
        a->dirty_end = end;
    }
    h->n_mallocs++;
    return c;
}

/* Merge `c` into the free chunk before it (which survives); returns it. */
static chunk *
absorb_into_prev(chunk *c)
{
    chunk *prev = c->addr_prev;
    prev->size += c->size;
    prev->addr_next = c->addr_next;
    if (c->addr_next != NULL) {
        c->addr_next->addr_prev = prev;
    }
    PyMem_Free(c);
    return prev;
}

/* Return a block to the heap, coalescing with free neighbours; an arena
 * that becomes wholly free is given back when it is dedicated or larger
 * than the discard threshold. */
static void
heap_free(HeapObject *h, chunk *c)
{
    h->n_frees++;
    if (c->addr_next != NULL && c->addr_next->is_free) {
        bin_remove(h, c->addr_next);
        (void)absorb_into_prev(c->addr_next);
    }
    if (c->addr_prev != NULL && c->addr_prev->is_free) {
        bin_remove(h, c->addr_prev);
        c = absorb_into_prev(c);
    }
    ArenaObject *a = c->arena;
    if (c->offset == 0 && c->size == a->size
        && (a->dedicated || (Py_ssize_t)a->size > h->discard_above)) {
        c->is_free = 1;
        heap_detach_arena(h, a);   /* frees the chunk too, with the arena */
        return;
    }
    bin_insert(h, c);
}

static PyObject *
Heap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Heap() takes no arguments");
        return NULL;
    }
    HeapObject *h = (HeapObject *)type->tp_alloc(type, 0);
    if (h == NULL) {
        return NULL;
    }
    h->next_arena_size = FIRST_ARENA_SIZE;
    h->discard_above = DEFAULT_DISCARD_ABOVE;
    h->generation = fastmp_fork_generation();
    return (PyObject *)h;
}

static void
Heap_dealloc(HeapObject *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        Py_DECREF(h->arenas[i]);
    }
    PyMem_Free(h->arenas);
    tp->tp_free((PyObject *)h);
    Py_DECREF(tp);
}

static int
Heap_traverse(HeapObject *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    return 0;
}

/* The arenas this process allocates from, as a list. */
static PyObject *
Heap_get_arenas(HeapObject *h, void *closure)
{
    heap_refresh(h);
    PyObject *list = PyList_New(h->n_arenas);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        PyList_SET_ITEM(list, i, Py_NewRef((PyObject *)h->arenas[i]));
    }
    return list;
}

/* _blocks() -> [(arena, start, stop, is_free), ...] in address order:
 * the layout, for inspection and tests. */
static PyObject *
Heap_blocks(HeapObject *h, PyObject *unused)
{
    heap_refresh(h);
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        for (chunk *c = h->arenas[i]->first; c != NULL; c = c->addr_next) {
            PyObject *item = Py_BuildValue("(OnnO)", (PyObject *)c->arena,
                                           (Py_ssize_t)c->offset,
                                           (Py_ssize_t)(c->offset + c->size),
                                           c->is_free ? Py_True : Py_False);
            if (item == NULL || PyList_Append(list, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(item);
        }
    }
    return list;
}

static PyObject *
Heap_get_count(HeapObject *h, void *which)
{
    heap_refresh(h);
    return PyLong_FromSsize_t(which ? h->n_frees : h->n_mallocs);
}

static PyGetSetDef Heap_getset[] = {
    {"_arenas", (getter)Heap_get_arenas, NULL, "arenas in use by this process", NULL},
    {"_n_mallocs", (getter)Heap_get_count, NULL, "blocks allocated", NULL},
    {"_n_frees", (getter)Heap_get_count, NULL, "blocks freed", (void *)1},
    {NULL},
};

static PyMemberDef Heap_members[] = {
    {"_DISCARD_FREE_SPACE_LARGER_THAN", T_PYSSIZET, offsetof(HeapObject, discard_above), 0,
     "a wholly free arena larger than this many bytes is unmapped"},
    {NULL},
};

static PyMethodDef Heap_methods[] = {
    {"_blocks", (PyCFunction)Heap_blocks, METH_NOARGS,
     "_blocks($self, /)\n--\n\n"
     "List of (arena, start, stop, is_free) in address order."},
    {NULL},
};

static PyType_Slot Heap_slots[] = {
    {Py_tp_new, Heap_new},
    {Py_tp_dealloc, Heap_dealloc},
    {Py_tp_traverse, Heap_traverse},
    {Py_tp_getset, Heap_getset},
    {Py_tp_members, Heap_members},
    {Py_tp_methods, Heap_methods},
    {Py_tp_doc, "Heap(): block allocator over shared arenas (per process)."},
    {0, NULL},
};

static PyType_Spec Heap_spec = {
    .name = "fastmp._fastmp.Heap",
    .basicsize = sizeof(HeapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Heap_slots,
};

/* ---- BufferWrapper --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    HeapObject *heap;               /* NULL when attached to a received arena */
    ArenaObject *arena;
    chunk *block;                   /* ours to free, if heap owns it here */
    uint64_t epoch;                 /* heap epoch at allocation */
    size_t start, size;
} WrapperObject;

/* BufferWrapper(size): a zeroed block from the class's `_heap`. */
static PyObject *
Wrapper_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    fastmp_state *st = fastmp_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    static const char *const names[] = {"size"};
    PyObject *size_obj;
    if (fastmp_bind_slot_args("BufferWrapper", args, kwds, names, 1, 1, &size_obj) < 0) {
        return NULL;
    }
    Py_ssize_t size = PyNumber_AsSsize_t(size_obj, PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_Format(PyExc_ValueError, "Size %zd out of range", size);
        return NULL;
    }
    if (size == PY_SSIZE_T_MAX) {
        /* as the standard package: sys.maxsize and more overflow */
        PyErr_Format(PyExc_OverflowError, "Size %zd too large", size);
        return NULL;
    }
    PyObject *heap = PyObject_GetAttr((PyObject *)type, st->str_heap);
    if (heap == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(heap, st->Heap_type)) {
        PyErr_Format(PyExc_TypeError, "%s._heap must be a fastmp Heap, not %.100s",
                     type->tp_name, Py_TYPE(heap)->tp_name);
        Py_DECREF(heap);
        return NULL;
    }
    WrapperObject *self = (WrapperObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(heap);
        return NULL;
    }
    self->heap = (HeapObject *)heap;
    chunk *c = heap_malloc(self->heap, st, (size_t)size);
    if (c == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->block = c;
    self->epoch = self->heap->epoch;
    self->arena = (ArenaObject *)Py_NewRef((PyObject *)c->arena);
    self->start = c->offset;
    self->size = (size_t)size;
    return (PyObject *)self;
}

static void
Wrapper_dealloc(WrapperObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->block != NULL && heap_owns_here(self->heap, self->epoch)) {
        heap_free(self->heap, self->block);
    }
    Py_XDECREF(self->arena);
    Py_XDECREF(self->heap);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* _attach(arena, start, size): a wrapper over bytes of an arena received
 * from another process; it never frees them. */
static PyObject *
Wrapper_attach(PyTypeObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    fastmp_state *st = fastmp_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (fastmp_check_nargs("_attach", nargs, 3, 3) < 0) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->Arena_type)) {
        PyErr_Format(PyExc_TypeError, "_attach() arena must be an Arena, not %s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    ArenaObject *arena = (ArenaObject *)args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = start < 0 ? -1 : PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || size < 0 || (size_t)start > arena->size
        || (size_t)size > arena->size - (size_t)start) {
        PyErr_SetString(PyExc_ValueError, "block lies outside its arena");
        return NULL;
    }
    WrapperObject *self = (WrapperObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->arena = (ArenaObject *)Py_NewRef((PyObject *)arena);
    self->start = (size_t)start;
    self->size = (size_t)size;
    return (PyObject *)self;
}

static int
Wrapper_getbuffer(WrapperObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->arena->base + self->start,
                             (Py_ssize_t)self->size, 0, flags);
}

static PyObject *
Wrapper_create_memoryview(WrapperObject *self, PyObject *unused)
{
    return PyMemoryView_FromObject((PyObject *)self);
}

static PyMemberDef Wrapper_members[] = {
    {"_arena", T_OBJECT, offsetof(WrapperObject, arena), READONLY, "the arena holding the block"},
    {"_start", T_PYSSIZET, offsetof(WrapperObject, start), READONLY, "offset in the arena"},
    {"_size", T_PYSSIZET, offsetof(WrapperObject, size), READONLY, "requested size in bytes"},
    {NULL},
};

static PyMethodDef Wrapper_methods[] = {
    {"create_memoryview", (PyCFunction)Wrapper_create_memoryview, METH_NOARGS,
     "create_memoryview($self, /)\n--\n\n"
     "A writable memoryview of the block."},
    {"_attach", (PyCFunction)(void (*)(void))Wrapper_attach, METH_FASTCALL | METH_CLASS,
     "_attach($type, arena, start, size, /)\n--\n\n"
     "view a block of a received arena"},
    {NULL},
};

static PyType_Slot Wrapper_slots[] = {
    {Py_tp_new, Wrapper_new},
    {Py_tp_dealloc, Wrapper_dealloc},
    {Py_tp_members, Wrapper_members},
    {Py_tp_methods, Wrapper_methods},
    {Py_bf_getbuffer, Wrapper_getbuffer},
    {Py_tp_doc, "BufferWrapper(size): a block of shared memory from the class's _heap."},
    {0, NULL},
};

static PyType_Spec Wrapper_spec = {
    .name = "fastmp._fastmp.BufferWrapper",
    .basicsize = sizeof(WrapperObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Wrapper_slots,
};

/* ---- module hooks ---------------------------------------------------- */

static int
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddType(module, *slot);
}

int
fastmp_heap_exec(PyObject *module, fastmp_state *st)
{
    if (fastmp_fork_track() < 0) {
        return -1;
    }
    st->str_heap = PyUnicode_InternFromString("_heap");
    if (st->str_heap == NULL
        || add_type(module, &Arena_spec, &st->Arena_type) < 0
        || add_type(module, &Heap_spec, &st->Heap_type) < 0
        || add_type(module, &Wrapper_spec, &st->BufferWrapper_type) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_heap_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Arena_type);
    Py_VISIT(st->Heap_type);
    Py_VISIT(st->BufferWrapper_type);
    return 0;
}

void
fastmp_heap_clear(fastmp_state *st)
{
    Py_CLEAR(st->Arena_type);
    Py_CLEAR(st->Heap_type);
    Py_CLEAR(st->BufferWrapper_type);
    Py_CLEAR(st->str_heap);
}
