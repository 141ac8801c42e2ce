/* quickpickle.c - pickling and unpickling of plain data (None, bool, int,
 * float, str, bytes, and tuples, lists and dicts of them) straight from
 * and into buffers, without creating a Pickler or an Unpickler: a manager
 * call's request and reply are such data, small, and creating the
 * (un)pickler costs more than the work; a pool task's result is often
 * such data, large, and written here several times faster.  Anything else is left to the
 * pickle module (the functions say so by returning 0).  The pickles are
 * protocol 4, without frames or memo; the reader also takes the memo and
 * frame opcodes that pickle.dumps writes. */
#include "pickle/quickpickle.h"
#include "core/args.h"
#include "core/state.h"

#include <string.h>

/* Output above this size is left to the pickle module by quick_dumps()
 * (which avoids copying large payloads). */
#define QUICK_MAX_SIZE (64 * 1024)
/* Nesting allowed in either direction. */
#define QUICK_MAX_DEPTH 16
/* A str or bytes of this length or more that occurs twice in one
 * message is left to the pickle module, which writes it once (and loads
 * it as one object); shorter ones are written again. */
#define QUICK_SHARED_MIN 64
/* A list's items (a dict's keys and values) are added in batches of
 * this many, so that the reader's stack stays short. */
#define QUICK_BATCH 32
/* The reader's limits (it lives on the C stack): values on its stack,
 * memo entries.  pickle.dumps's batches of 1000 items go to pickle. */
#define QUICK_STACK 256
#define QUICK_MEMO 64

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    char *buf;                  /* `inline_space`, or PyMem_Raw memory */
    size_t len, cap;
    size_t max;                 /* output past this is left to pickle */
    char *inline_space;
    /* the lists, dicts and long str/bytes met so far: a set of addresses
     * (open addressing, NULL slots are free) */
    const void **seen;
    size_t seen_mask, nseen;
    const void *seen_inline[64];
} writer;

static int grow(writer *w, size_t n);

/* Make room for n more bytes.  Returns 1, 0 if the output would pass
 * w->max, -1 with MemoryError set. */
static inline int
reserve(writer *w, size_t n)
{
    return w->len + n <= w->cap ? 1 : grow(w, n);
}

/* reserve() when the buffer is too small. */
static int
grow(writer *w, size_t n)
{
    if (w->len + n > w->max) {
        return 0;
    }
    size_t cap = w->cap < 256 ? 256 : w->cap * 2;
    while (cap < w->len + n) {
        cap *= 2;
    }
    int from_inline = w->buf != NULL && w->buf == w->inline_space;
    char *grown = from_inline ? PyMem_RawMalloc(cap) : PyMem_RawRealloc(w->buf, cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (from_inline) {
        memcpy(grown, w->inline_space, w->len);
    }
    w->buf = grown;
    w->cap = cap;
    return 1;
}

/* Append n bytes.  Returns as reserve(). */
static int
put_raw(writer *w, const void *data, size_t n)
{
    int r = reserve(w, n);
    if (r == 1 && n > 0) {
        memcpy(w->buf + w->len, data, n);
        w->len += n;
    }
    return r;
}

/* Append an opcode and n bytes of argument.  Returns as reserve(). */
static inline int
put(writer *w, char opcode, const void *arg, size_t n)
{
    int r = reserve(w, n + 1);
    if (r == 1) {
        w->buf[w->len] = opcode;
        if (n > 0) {
            memcpy(w->buf + w->len + 1, arg, n);
        }
        w->len += n + 1;
    }
    return r;
}

static void
little_endian(unsigned char *out, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = (unsigned char)(v >> (8 * i));
    }
}

/* A str or bytes payload: the short opcode and a 1-byte length below
 * 256 bytes, else the long one and a 4-byte length. */
static int
put_sized(writer *w, char short_op, char long_op, const char *data, size_t n)
{
    unsigned char len[4];
    int r;
    if (n < 256) {
        len[0] = (unsigned char)n;
        r = put(w, short_op, len, 1);
    }
    else {
        little_endian(len, n, 4);
        r = n > w->max ? 0 : put(w, long_op, len, 4);
    }
    return r == 1 ? put_raw(w, data, n) : r;
}

static int write_value(writer *w, PyObject *obj, int depth);

static size_t
address_hash(const void *p)
{
    return (size_t)(((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 24);
}

/* Note obj (a list, a dict, a long str or bytes) about to be written.
 * Returns 1 when it was met before in this message (shared or
 * recursive: the pickle module's memo is needed), 0 the first time, -1
 * with MemoryError set. */
static int
seen_before(writer *w, const void *obj)
{
    if (2 * (w->nseen + 1) > w->seen_mask + 1) {
        size_t cap = 2 * (w->seen_mask + 1);
        const void **grown = PyMem_RawCalloc(cap, sizeof(*grown));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i <= w->seen_mask; i++) {
            if (w->seen[i] != NULL) {
                size_t at = address_hash(w->seen[i]) & (cap - 1);
                while (grown[at] != NULL) {
                    at = (at + 1) & (cap - 1);
                }
                grown[at] = w->seen[i];
            }
        }
        if (w->seen != w->seen_inline) {
            PyMem_RawFree(w->seen);
        }
        w->seen = grown;
        w->seen_mask = cap - 1;
    }
    size_t at = address_hash(obj) & w->seen_mask;
    while (w->seen[at] != NULL) {
        if (w->seen[at] == obj) {
            return 1;
        }
        at = (at + 1) & w->seen_mask;
    }
    w->seen[at] = obj;
    w->nseen++;
    return 0;
}

/* seen_before() as a writer's answer: 1 to write obj, 0 to leave the
 * message to pickle, -1 on error. */
static int
first_sighting(writer *w, const void *obj)
{
    int r = seen_before(w, obj);
    return r == 0 ? 1 : (r == 1 ? 0 : -1);
}

static int
write_int(writer *w, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        return 0;
    }
    unsigned char arg[9];
    if (v >= 0 && v < 256) {
        arg[0] = (unsigned char)v;
        return put(w, 'K', arg, 1);
    }
    if (v >= 0 && v < 65536) {
        little_endian(arg, (uint64_t)v, 2);
        return put(w, 'M', arg, 2);
    }
    if (v >= INT32_MIN && v <= INT32_MAX) {
        little_endian(arg, (uint64_t)v, 4);
        return put(w, 'J', arg, 4);
    }
    /* LONG1: the fewest bytes of two's complement that keep the sign */
    int n = 5;
    while (n < 8 && (v < -((long long)1 << (8 * n - 1)) || v >= ((long long)1 << (8 * n - 1)))) {
        n++;
    }
    arg[0] = (unsigned char)n;
    little_endian(arg + 1, (uint64_t)v, n);
    return put(w, '\x8a', arg, (size_t)n + 1);
}

static int
write_float(writer *w, PyObject *obj)
{
    double d = PyFloat_AS_DOUBLE(obj);
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    unsigned char arg[8];
    for (int i = 0; i < 8; i++) {
        arg[i] = (unsigned char)(bits >> (56 - 8 * i));     /* big-endian */
    }
    return put(w, 'G', arg, 8);
}

static int
write_str(writer *w, PyObject *obj)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(obj) < 0) {
        return -1;
    }
#endif
    if (PyUnicode_IS_ASCII(obj)) {
        return put_sized(w, '\x8c', 'X', (const char *)PyUnicode_DATA(obj),
                         (size_t)PyUnicode_GET_LENGTH(obj));
    }
    /* A temporary encoding: PyUnicode_AsUTF8 would keep one in the str.
     * Lone surrogates are left to the pickle module. */
    PyObject *utf8 = PyUnicode_AsUTF8String(obj);
    if (utf8 == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = put_sized(w, '\x8c', 'X', PyBytes_AS_STRING(utf8), (size_t)PyBytes_GET_SIZE(utf8));
    Py_DECREF(utf8);
    return r;
}

/* Write the items seq[start..stop) of a tuple or list. */
static int
write_items(writer *w, PyObject *seq, Py_ssize_t start, Py_ssize_t stop, int depth)
{
    for (Py_ssize_t i = start; i < stop; i++) {
        int r = write_value(w, PySequence_Fast_GET_ITEM(seq, i), depth + 1);
        if (r != 1) {
            return r;
        }
    }
    return 1;
}

static int
write_tuple(writer *w, PyObject *obj, int depth)
{
    static const char sized[] = {')', '\x85', '\x86', '\x87'};
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    int r = n > 3 ? put(w, '(', NULL, 0) : 1;
    if (r == 1) {
        r = write_items(w, obj, 0, n, depth);
    }
    return r == 1 ? put(w, n > 3 ? 't' : sized[n], NULL, 0) : r;
}

static int
write_list(writer *w, PyObject *obj, int depth)
{
    int r = first_sighting(w, obj);
    if (r == 1) {
        r = put(w, ']', NULL, 0);
    }
    for (Py_ssize_t i = 0; r == 1 && i < PyList_GET_SIZE(obj); i += QUICK_BATCH) {
        Py_ssize_t stop = Py_MIN(i + QUICK_BATCH, PyList_GET_SIZE(obj));
        r = put(w, '(', NULL, 0);
        if (r == 1) {
            r = write_items(w, obj, i, stop, depth);
        }
        if (r == 1) {
            r = put(w, 'e', NULL, 0);       /* APPENDS */
        }
    }
    return r;
}

static int
write_dict(writer *w, PyObject *obj, int depth)
{
    int r = first_sighting(w, obj);
    if (r == 1) {
        r = put(w, '}', NULL, 0);
    }
    Py_ssize_t pos = 0, batched = 0;
    PyObject *key, *value;
    while (r == 1 && PyDict_Next(obj, &pos, &key, &value)) {
        if (batched == 0) {
            r = put(w, '(', NULL, 0);
        }
        if (r == 1) {
            r = write_value(w, key, depth + 1);
        }
        if (r == 1) {
            r = write_value(w, value, depth + 1);
        }
        if (r == 1 && ++batched == QUICK_BATCH / 2) {
            r = put(w, 'u', NULL, 0);       /* SETITEMS */
            batched = 0;
        }
    }
    return r == 1 && batched > 0 ? put(w, 'u', NULL, 0) : r;
}

/* Write obj's opcodes.  Returns 1, 0 if obj is not plain data (or too
 * big or deep), -1 with an exception set.  Only exact built-in types are
 * taken, so no Python code runs meanwhile. */
static int
write_value(writer *w, PyObject *obj, int depth)
{
    if (depth >= QUICK_MAX_DEPTH) {     /* the reader's marks run out */
        return 0;
    }
    if (obj == Py_None) {
        return put(w, 'N', NULL, 0);
    }
    if (obj == Py_True || obj == Py_False) {
        return put(w, obj == Py_True ? '\x88' : '\x89', NULL, 0);
    }
    if (PyLong_CheckExact(obj)) {
        return write_int(w, obj);
    }
    if (PyUnicode_CheckExact(obj)) {
        int r = PyUnicode_GetLength(obj) < QUICK_SHARED_MIN ? 1 : first_sighting(w, obj);
        return r == 1 ? write_str(w, obj) : r;
    }
    if (PyBytes_CheckExact(obj)) {
        int r = PyBytes_GET_SIZE(obj) < QUICK_SHARED_MIN ? 1 : first_sighting(w, obj);
        return r == 1 ? put_sized(w, 'C', 'B', PyBytes_AS_STRING(obj),
                                  (size_t)PyBytes_GET_SIZE(obj))
                      : r;
    }
    if (PyTuple_CheckExact(obj)) {
        return write_tuple(w, obj, depth);
    }
    if (PyFloat_CheckExact(obj)) {
        return write_float(w, obj);
    }
    if (PyList_CheckExact(obj)) {
        return write_list(w, obj, depth);
    }
    if (PyDict_CheckExact(obj)) {
        return write_dict(w, obj, depth);
    }
    return 0;
}

/* Write the whole pickle of obj into w.  Returns as write_value(). */
static int
write_pickle(writer *w, PyObject *obj)
{
    memset(w->seen_inline, 0, sizeof(w->seen_inline));
    w->seen = w->seen_inline;
    w->seen_mask = Py_ARRAY_LENGTH(w->seen_inline) - 1;
    w->nseen = 0;
    w->len = 0;
    static const char proto[] = {'\x80', 4};
    int r = put_raw(w, proto, sizeof(proto));
    if (r == 1) {
        r = write_value(w, obj, 0);
    }
    if (r == 1) {
        r = put(w, '.', NULL, 0);
    }
    if (w->seen != w->seen_inline) {
        PyMem_RawFree(w->seen);
    }
    return r;
}

int
fastmp_quick_dumps(PyObject *obj, PyObject **out)
{
    char inline_space[256];
    writer w = {.buf = inline_space, .cap = sizeof(inline_space), .max = QUICK_MAX_SIZE,
                .inline_space = inline_space};
    int r = write_pickle(&w, obj);
    if (r == 1) {
        *out = PyBytes_FromStringAndSize(w.buf, (Py_ssize_t)w.len);
        if (*out == NULL) {
            r = -1;
        }
    }
    if (w.buf != inline_space) {
        PyMem_RawFree(w.buf);
    }
    return r;
}

int
fastmp_quick_dump_into(PyObject *obj, quick_buffer *out, size_t max_size)
{
    writer w = {.buf = out->buf, .cap = out->cap, .max = max_size};
    int r = write_pickle(&w, obj);
    out->buf = w.buf;
    out->cap = w.cap;
    out->len = r == 1 ? w.len : 0;
    return r;
}

/* ---- reading ---------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    PyObject *stack[QUICK_STACK];
    int n;
    int marks[QUICK_MAX_DEPTH];
    int nmarks;
    PyObject *memo[QUICK_MEMO];
    int nmemo;                  /* memo[0..nmemo) may be set (or NULL) */
    int nset;                   /* entries set: where MEMOIZE puts, as in
                                 * pickle (a PUT past them leaves holes) */
} reader;

/* The next n argument bytes, or NULL if the pickle ends first. */
static const unsigned char *
take(reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        return NULL;
    }
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

static uint64_t
read_le(const unsigned char *at, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = (v << 8) | at[i];
    }
    return v;
}

/* Push a new reference (NULL: a failed creation).  Returns 1, or 0. */
static int
push(reader *r, PyObject *obj)
{
    if (obj == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (r->n == QUICK_STACK) {
        Py_DECREF(obj);
        return 0;
    }
    r->stack[r->n++] = obj;
    return 1;
}

/* The lowest stack position opcodes may take values from: the topmost
 * mark's.  As in the pickle module, the values below a mark are out of
 * reach until the mark is popped. */
static int
fence(const reader *r)
{
    return r->nmarks ? r->marks[r->nmarks - 1] : 0;
}

/* The index of the topmost mark, popped; -1 if there is none, or if
 * opcodes since took values from below it (a malformed pickle). */
static int
pop_mark(reader *r)
{
    if (r->nmarks == 0) {
        return -1;
    }
    int at = r->marks[--r->nmarks];
    return at <= r->n ? at : -1;
}

/* A tuple of the values stack[from..n), which leave the stack. */
static PyObject *
pop_tuple(reader *r, int from)
{
    PyObject *t = PyTuple_New(r->n - from);
    if (t == NULL) {
        return NULL;
    }
    for (int i = from; i < r->n; i++) {
        PyTuple_SET_ITEM(t, i - from, r->stack[i]);
    }
    r->n = from;
    return t;
}

/* Move stack[from..n) into the container below them: append them to a
 * list, or (`pairs`) set them as key, value pairs in a dict.  Returns 1,
 * or 0. */
static int
add_items(reader *r, int from, int pairs)
{
    if (from - 1 < fence(r) || (pairs && (r->n - from) % 2 != 0)) {
        return 0;
    }
    PyObject *container = r->stack[from - 1];
    if (pairs ? !PyDict_CheckExact(container) : !PyList_CheckExact(container)) {
        return 0;
    }
    for (int i = from; i < r->n; i += 1 + pairs) {
        int rc = pairs ? PyDict_SetItem(container, r->stack[i], r->stack[i + 1])
                       : PyList_Append(container, r->stack[i]);
        if (rc < 0) {
            PyErr_Clear();
            return 0;
        }
    }
    while (r->n > from) {
        Py_DECREF(r->stack[--r->n]);
    }
    return 1;
}

static int
memo_put(reader *r, uint64_t index)
{
    if (r->n <= fence(r) || index >= QUICK_MEMO) {
        return 0;
    }
    while (r->nmemo < QUICK_MEMO && (uint64_t)r->nmemo <= index) {
        r->memo[r->nmemo++] = NULL;
    }
    if (r->memo[index] == NULL) {
        r->nset++;
    }
    Py_XSETREF(r->memo[index], Py_NewRef(r->stack[r->n - 1]));
    return 1;
}

static int
memo_get(reader *r, uint64_t index)
{
    if (index >= (uint64_t)r->nmemo || r->memo[index] == NULL) {
        return 0;
    }
    return push(r, Py_NewRef(r->memo[index]));
}

static PyObject *
decode_str(const unsigned char *at, size_t n)
{
    return PyUnicode_DecodeUTF8((const char *)at, (Py_ssize_t)n, "surrogatepass");
}

/* Run one opcode.  Returns 1 to go on, 2 at STOP, 0 if the pickle is
 * beyond this reader. */
static int
step(reader *r)
{
    const unsigned char *a;
    int from;
    switch (*r->p++) {
    case 0x80:                  /* PROTO */
        return (a = take(r, 1)) != NULL && a[0] <= 5;
    case 0x95:                  /* FRAME: frames only group the opcodes, */
        /* but one cannot be longer than what is left */
        return (a = take(r, 8)) != NULL && read_le(a, 8) <= (uint64_t)(r->end - r->p);
    case '.':
        return 2;
    case 'N':
        return push(r, Py_NewRef(Py_None));
    case 0x88:
        return push(r, Py_NewRef(Py_True));
    case 0x89:
        return push(r, Py_NewRef(Py_False));
    case 'K':
        return (a = take(r, 1)) != NULL && push(r, PyLong_FromLong(a[0]));
    case 'M':
        return (a = take(r, 2)) != NULL && push(r, PyLong_FromLong((long)read_le(a, 2)));
    case 'J':
        return (a = take(r, 4)) != NULL
               && push(r, PyLong_FromLong((long)(int32_t)(uint32_t)read_le(a, 4)));
    case 0x8a: {                /* LONG1, up to 8 bytes */
        if ((a = take(r, 1)) == NULL || a[0] > 8) {
            return 0;
        }
        int n = a[0];
        if ((a = take(r, (size_t)n)) == NULL) {
            return 0;
        }
        uint64_t v = read_le(a, n);
        if (n > 0 && n < 8 && (a[n - 1] & 0x80)) {
            v |= ~(uint64_t)0 << (8 * n);       /* sign-extend */
        }
        return push(r, PyLong_FromLongLong((long long)v));
    }
    case 'G': {
        if ((a = take(r, 8)) == NULL) {
            return 0;
        }
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) {
            bits = (bits << 8) | a[i];
        }
        double d;
        memcpy(&d, &bits, sizeof(d));
        return push(r, PyFloat_FromDouble(d));
    }
    case 0x8c:                  /* SHORT_BINUNICODE */
    case 'C': {                 /* SHORT_BINBYTES */
        int is_str = r->p[-1] == 0x8c;
        if ((a = take(r, 1)) == NULL) {
            return 0;
        }
        size_t n = a[0];
        if ((a = take(r, n)) == NULL) {
            return 0;
        }
        return push(r, is_str ? decode_str(a, n)
                              : PyBytes_FromStringAndSize((const char *)a, (Py_ssize_t)n));
    }
    case 'X':                   /* BINUNICODE */
    case 'B': {                 /* BINBYTES */
        int is_str = r->p[-1] == 'X';
        if ((a = take(r, 4)) == NULL) {
            return 0;
        }
        size_t n = (size_t)read_le(a, 4);
        if ((a = take(r, n)) == NULL) {
            return 0;
        }
        return push(r, is_str ? decode_str(a, n)
                              : PyBytes_FromStringAndSize((const char *)a, (Py_ssize_t)n));
    }
    case ')':
        return push(r, PyTuple_New(0));
    case 0x85:                  /* TUPLE1..3 */
    case 0x86:
    case 0x87:
        from = r->n - (r->p[-1] - 0x84);
        return from >= fence(r) && push(r, pop_tuple(r, from));
    case '(':
        if (r->nmarks == QUICK_MAX_DEPTH) {
            return 0;
        }
        r->marks[r->nmarks++] = r->n;
        return 1;
    case 't':
        return (from = pop_mark(r)) >= 0 && push(r, pop_tuple(r, from));
    case ']':
        return push(r, PyList_New(0));
    case 'a':
        return r->n >= 2 && add_items(r, r->n - 1, 0);
    case 'e':
        return (from = pop_mark(r)) >= 0 && add_items(r, from, 0);
    case '}':
        return push(r, PyDict_New());
    case 's':
        return r->n >= 3 && add_items(r, r->n - 2, 1);
    case 'u':
        return (from = pop_mark(r)) >= 0 && add_items(r, from, 1);
    case 0x94:                  /* MEMOIZE */
        return memo_put(r, (uint64_t)r->nset);
    case 'q':                   /* BINPUT */
        return (a = take(r, 1)) != NULL && memo_put(r, a[0]);
    case 'r':                   /* LONG_BINPUT */
        return (a = take(r, 4)) != NULL && memo_put(r, read_le(a, 4));
    case 'h':                   /* BINGET */
        return (a = take(r, 1)) != NULL && memo_get(r, a[0]);
    case 'j':                   /* LONG_BINGET */
        return (a = take(r, 4)) != NULL && memo_get(r, read_le(a, 4));
    default:
        return 0;
    }
}

int
fastmp_quick_loads(const char *buf, Py_ssize_t len, PyObject **out)
{
    reader r;
    r.p = (const unsigned char *)buf;
    r.end = r.p + len;
    r.n = r.nmarks = r.nmemo = r.nset = 0;
    int s = 1;
    while (s == 1 && r.p < r.end) {
        s = step(&r);
    }
    int ok = s == 2 && r.n == 1 && r.nmarks == 0 && r.p == r.end;
    if (ok) {
        *out = r.stack[0];
        r.n = 0;
    }
    for (int i = 0; i < r.n; i++) {
        Py_DECREF(r.stack[i]);
    }
    for (int i = 0; i < r.nmemo; i++) {
        Py_XDECREF(r.memo[i]);
    }
    return ok;
}

/* ---- Python access (for tests and tools) ------------------------------ */

static PyObject *
quick_dumps(PyObject *module, PyObject *obj)
{
    PyObject *out = NULL;
    int r = fastmp_quick_dumps(obj, &out);
    if (r < 0) {
        return NULL;
    }
    return r == 1 ? out : Py_NewRef(Py_None);
}

static PyObject *
quick_loads(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("quick_loads", nargs, 2, 2) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *out;
    int r = fastmp_quick_loads(view.buf, view.len, &out);
    PyBuffer_Release(&view);
    return r == 1 ? out : Py_NewRef(args[1]);
}

static PyMethodDef quickpickle_functions[] = {
    {"quick_dumps", quick_dumps, METH_O,
     PyDoc_STR("quick_dumps($module, obj, /)\n--\n\n"
               "A pickle of obj if it is plain data (None, bool, int, float, str,\n"
               "bytes, and tuples, lists and dicts of them), else None.")},
    {"quick_loads", (PyCFunction)(void (*)(void))quick_loads, METH_FASTCALL,
     PyDoc_STR("quick_loads($module, data, default, /)\n--\n\n"
               "The object the pickle `data` holds if it is plain data, else default.")},
    {NULL, NULL, 0, NULL},
};

int
fastmp_quickpickle_exec(PyObject *module, fastmp_state *st)
{
    return PyModule_AddFunctions(module, quickpickle_functions);
}
