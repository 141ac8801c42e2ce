/* worker.c - the pool worker's loop (child side of dispatch.h): read a
 * task frame from the parent's socket, run it in Python, write the result
 * frame back; until STOP, end of file or the task budget is spent. */
#include "dispatch.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Read exactly `len` bytes with the GIL released, retrying after EINTR
 * once pending signals were handled.  Returns 1 when done, 0 on end of
 * file before the first byte, -1 with an exception set otherwise (an end
 * of file in mid-frame is an EOFError). */
static int
read_exact(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = read(fd, buf + got, len - got);
        Py_END_ALLOW_THREADS
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0) {
            if (got == 0) {
                return 0;
            }
            PyErr_SetString(PyExc_EOFError, "pool channel closed in mid-frame");
            return -1;
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        fastmp_oserror(errno, "read");
        return -1;
    }
    return 1;
}

/* Write the header and payload with the GIL released.  Returns 0, or -1
 * with an exception set. */
static int
write_frame(int fd, frame_header *h, const char *payload)
{
    struct iovec iov[2] = {
        {.iov_base = h, .iov_len = sizeof(*h)},
        {.iov_base = (void *)payload, .iov_len = (size_t)h->len},
    };
    int nvec = 2, first = 0;
    while (first < nvec) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = writev(fd, iov + first, nvec - first);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            fastmp_oserror(errno, "writev");
            return -1;
        }
        size_t left = (size_t)n;
        while (first < nvec && left >= iov[first].iov_len) {
            left -= iov[first].iov_len;
            first++;
        }
        if (first < nvec) {
            iov[first].iov_base = (char *)iov[first].iov_base + left;
            iov[first].iov_len -= left;
        }
    }
    return 0;
}

/* Apply `func` to each item of `items` (each item unpacked as the
 * arguments when `star`).  Returns a new list or NULL with an exception. */
static PyObject *
map_items(PyObject *func, PyObject *items, int star)
{
    PyObject *seq = PySequence_Fast(items, "map task items must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *value;
        if (star) {
            PyObject *args = PySequence_Tuple(item);
            value = args == NULL ? NULL : PyObject_Call(func, args, NULL);
            Py_XDECREF(args);
        }
        else {
            value = PyObject_CallOneArg(func, item);
        }
        if (value == NULL) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(out, i, value);
    }
    Py_DECREF(seq);
    return out;
}

/* Run one unpickled task.  Returns the task's value, or NULL with the
 * task's exception set. */
static PyObject *
run_task(uint32_t kind, PyObject *task)
{
    PyObject *func, *args, *kwds = NULL;
    if (kind == FRAME_APPLY) {
        if (!PyArg_ParseTuple(task, "OO|O:apply task", &func, &args, &kwds)) {
            return NULL;
        }
        if (!PyTuple_Check(args)) {
            PyErr_SetString(PyExc_TypeError, "apply task arguments must be a tuple");
            return NULL;
        }
        return PyObject_Call(func, args, kwds == Py_None ? NULL : kwds);
    }
    if (!PyArg_ParseTuple(task, "OO:map task", &func, &args)) {
        return NULL;
    }
    return map_items(func, args, kind == FRAME_STARMAP);
}

/* Take the raised exception (normalized, with its traceback attached);
 * NULL if none is set. */
static PyObject *
take_exception(void)
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

/* Pickle the outcome of one task into a bytes object and set *status.
 * A failure (or a value `dumps` refuses) goes through on_failure(exc,
 * value), which returns the bytes to send.  Returns NULL with an
 * exception set only when even that fails, or for a BaseException that is
 * not an Exception (KeyboardInterrupt, SystemExit: they end the worker). */
static PyObject *
encode_outcome(PyObject *value, PyObject *dumps, PyObject *on_failure,
               uint32_t *status)
{
    if (value != NULL) {
        PyObject *data = PyObject_CallOneArg(dumps, value);
        if (data != NULL) {
            *status = RESULT_OK;
            return data;
        }
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *exc = take_exception();
    PyObject *data = PyObject_CallFunctionObjArgs(
        on_failure, exc, value == NULL ? Py_None : value, NULL);
    Py_DECREF(exc);
    *status = RESULT_ERROR;
    return data;
}

/* worker_loop(fd, loads, dumps, on_failure, maxtasks) -> tasks run */
static PyObject *
worker_loop(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "worker_loop(fd, loads, dumps, on_failure, maxtasks)");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        return NULL;
    }
    PyObject *loads = args[1], *dumps = args[2], *on_failure = args[3];
    long long maxtasks = PyLong_AsLongLong(args[4]);
    if (maxtasks == -1 && PyErr_Occurred()) {
        return NULL;
    }

    long long done = 0;
    while (maxtasks <= 0 || done < maxtasks) {
        frame_header h;
        int r = read_exact(fd, (char *)&h, sizeof(h));
        if (r <= 0) {
            if (r < 0) {
                return NULL;
            }
            break;
        }
        if (h.kind == FRAME_STOP) {
            break;
        }
        if (h.kind < FRAME_APPLY || h.kind > FRAME_STARMAP || h.len > FRAME_MAX_PAYLOAD) {
            PyErr_Format(PyExc_ValueError, "bad pool frame (kind %u, %llu bytes)",
                         (unsigned)h.kind, (unsigned long long)h.len);
            return NULL;
        }
        PyObject *payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h.len);
        if (payload == NULL) {
            return NULL;
        }
        /* the bytes object is private to us until filled */
        if (h.len > 0 && read_exact(fd, PyBytes_AS_STRING(payload), (size_t)h.len) <= 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_EOFError, "pool channel closed in mid-frame");
            }
            Py_DECREF(payload);
            return NULL;
        }
        PyObject *task = PyObject_CallOneArg(loads, payload);
        Py_DECREF(payload);
        PyObject *value = task == NULL ? NULL : run_task(h.kind, task);
        Py_XDECREF(task);
        uint32_t status = RESULT_OK;
        PyObject *data = encode_outcome(value, dumps, on_failure, &status);
        Py_XDECREF(value);
        if (data == NULL) {
            return NULL;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(data);
            return NULL;
        }
        frame_header reply = {
            .kind = FRAME_RESULT, .status = status, .job = h.job,
            .index = h.index, .len = (uint64_t)view.len,
        };
        r = write_frame(fd, &reply, view.buf);
        PyBuffer_Release(&view);
        Py_DECREF(data);
        if (r < 0) {
            return NULL;
        }
        done++;
    }
    return PyLong_FromLongLong(done);
}

PyMethodDef fastmp_worker_functions[] = {
    {"worker_loop", (PyCFunction)(void (*)(void))worker_loop, METH_FASTCALL,
     "worker_loop(fd, loads, dumps, on_failure, maxtasks) -> int\n\n"
     "Serve pool tasks from the parent's socket `fd` until STOP, end of file\n"
     "or `maxtasks` tasks (0: no limit); return the number of tasks run."},
    {NULL, NULL, 0, NULL},
};
