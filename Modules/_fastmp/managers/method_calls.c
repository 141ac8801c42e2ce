/* method_calls.c - the per-call paths of managers (see Lib/fastmp/_proxies.py
 * and managers.py): the proxy's _callmethod, and the server's loop over
 * one client thread's method calls.
 *
 * Both handle the common case in C and hand anything else to Python: the
 * proxy returns a #RETURN reply's result itself and gives other replies
 * to the proxy's _answer(); the server runs a call to an exposed method
 * of a known object itself and gives other requests to the server's
 * _serve_request().  The messages are the standard package's. */
#include "connection/connection.h"
#include "core/args.h"
#include "core/gil_turn.h"
#include "core/state.h"
#include "pickle/forking_pickler.h"
#include "pickle/quickpickle.h"

enum {
    S_TLS, S_ID, S_DECODE, S_CONNECTION, S_CONNECT, S_ANSWER,
    S_LOST_CONNECTION, S_SEND, S_RECV, S_RECV_BYTES, S_RETURN, S_ERROR,
    S_ID_TO_OBJ, S_STOP_EVENT, S_IS_SET, S_SERVE_REQUEST, S_REQUEST_FAILED,
    S_REPLY_FAILED, S_COUNT
};

static const char *const string_values[S_COUNT] = {
    "_tls", "_id", "_decode", "connection", "_connect", "_answer",
    "_lost_connection", "send", "recv", "recv_bytes", "#RETURN", "#ERROR",
    "id_to_obj", "stop_event", "is_set", "_serve_request", "_request_failed",
    "_reply_failed",
};

_Static_assert(S_COUNT == FASTMP_MANAGER_STRINGS, "core/state.h sizes mgr_strings");

#define STR(st, i) ((st)->mgr_strings[i])

/* Call obj.<name>(*args) with n arguments (at most 3).  Returns a new
 * reference, or NULL with an exception set. */
static PyObject *
call_method(PyObject *obj, PyObject *name, PyObject *a0, PyObject *a1, PyObject *a2, int n)
{
    PyObject *stack[4] = {obj, a0, a1, a2};
    return PyObject_VectorcallMethod(name, stack, (size_t)(n + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* The raised exception, if it is an Exception (the kinds that the
 * standard package's manager code catches): a new reference, the error
 * indicator cleared.  NULL, the error left set, for the other kinds
 * (KeyboardInterrupt, SystemExit...), which must propagate. */
static PyObject *
take_ordinary_exception(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    return PyErr_GetRaisedException();
}

/* ---- messages --------------------------------------------------------- */

/* `conn` is a Connection or the xmlrpclib serializer's wrapper.  One
 * that fastmp_connection_is_direct() accepts (`direct`) is called in C,
 * plain data pickled here; anything else through its methods. */

/* Send `obj` on `conn`.  Returns 0, or -1 with an exception set. */
static int
send_message(fastmp_state *st, PyObject *conn, int direct, PyObject *obj)
{
    if (!direct) {
        PyObject *sent = call_method(conn, STR(st, S_SEND), obj, NULL, NULL, 1);
        Py_XDECREF(sent);
        return sent == NULL ? -1 : 0;
    }
    PyObject *pickled = NULL;
    if (fastmp_quick_dumps(obj, &pickled) < 0) {
        return -1;
    }
    if (pickled == NULL) {
        return fastmp_connection_send(conn, obj);
    }
    int rc = fastmp_connection_send_bytes(conn, pickled);
    Py_DECREF(pickled);
    return rc;
}

/* The next message's frame on `conn`, undecoded.  Returns a new
 * reference, or NULL with an exception set. */
static PyObject *
receive_frame(fastmp_state *st, PyObject *conn, int direct)
{
    if (direct) {
        return fastmp_connection_recv_bytes(conn);
    }
    return call_method(conn, STR(st, S_RECV_BYTES), NULL, NULL, NULL, 0);
}

/* The message in `frame`, received on `conn`: plain data unpickled here,
 * anything else by the function `decode`, or if that is NULL by
 * owner._decode.  Returns a new reference, or NULL with an exception
 * set. */
static PyObject *
decode_message(fastmp_state *st, int direct, PyObject *frame, PyObject *decode,
               PyObject *owner)
{
    PyObject *obj;
    if (direct && PyBytes_CheckExact(frame)
        && fastmp_quick_loads(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), &obj)) {
        return obj;
    }
    if (decode != NULL) {
        return PyObject_CallOneArg(decode, frame);
    }
    PyObject *owned = PyObject_GetAttr(owner, STR(st, S_DECODE));
    obj = owned ? PyObject_CallOneArg(owned, frame) : NULL;
    Py_XDECREF(owned);
    return obj;
}

/* ---- the proxy's call ------------------------------------------------- */

/* The connection this thread is in the middle of an exchange on, if any
 * (only compared with, never used): a finalizer or signal handler that
 * runs meanwhile in the same thread must make its request elsewhere. */
static _Thread_local const void *thread_exchange;

/* Send `request` on `conn` and return the reply frame, undecoded (so
 * that proxies unpickled from it may use the connection again).  Returns
 * a new reference, or NULL with an exception set: the connection may
 * then hold an unread reply. */
static PyObject *
exchange(fastmp_state *st, PyObject *conn, int direct, PyObject *request)
{
    const void *outer = thread_exchange;
    thread_exchange = conn;
    PyObject *frame = NULL;
    if (send_message(st, conn, direct, request) == 0) {
        frame = receive_frame(st, conn, direct);
    }
    thread_exchange = outer;
    return frame;
}

/* After a failed exchange on the proxy's connection `conn`: have the
 * proxy drop it (_lost_connection), keeping the exchange's exception
 * raised (as the context of any new one). */
static void
drop_connection(fastmp_state *st, PyObject *proxy, PyObject *conn)
{
    PyObject *failure = PyErr_GetRaisedException();
    PyObject *dropped = call_method(proxy, STR(st, S_LOST_CONNECTION), conn, NULL, NULL, 1);
    if (dropped == NULL) {
        PyObject *later = PyErr_GetRaisedException();
        if (later != NULL && failure != NULL) {
            PyException_SetContext(later, failure);
            failure = later;
        }
        else {
            Py_XDECREF(later);
        }
    }
    Py_XDECREF(dropped);
    if (failure != NULL) {
        PyErr_SetRaisedException(failure);
    }
}

/* Is `kind` the string "#RETURN"? */
static int
is_return(fastmp_state *st, PyObject *kind)
{
    return kind == STR(st, S_RETURN)
           || (PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, STR(st, S_RETURN)) == 0);
}

/* BaseProxy._callmethod(methodname, args=(), kwds={}): one round trip to
 * the server.  Returns the result of a #RETURN reply; any other reply
 * goes to proxy._answer(reply).  NULL with an exception set on error. */
static PyObject *
proxy_callmethod(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    static const char *const names[] = {"self", "methodname", "args", "kwds"};
    PyObject *a[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs > 4) {
        PyErr_Format(PyExc_TypeError, "_callmethod() takes at most 3 arguments (%zd given)",
                     nargs - 1);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        a[i] = args[i];
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int i = 1; i < 4; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                slot = i;
            }
        }
        if (slot < 0 || a[slot] != NULL) {
            PyErr_Format(PyExc_TypeError, "_callmethod() got %s keyword argument '%U'",
                         slot < 0 ? "an unexpected" : "a repeated", key);
            return NULL;
        }
        a[slot] = args[nargs + k];
    }
    if (a[0] == NULL || a[1] == NULL) {
        PyErr_SetString(PyExc_TypeError, "_callmethod() missing required argument 'methodname'");
        return NULL;
    }
    PyObject *proxy = a[0];
    PyObject *call_args = a[2] != NULL ? Py_NewRef(a[2]) : PyTuple_New(0);
    PyObject *call_kwds = a[3] != NULL ? Py_NewRef(a[3]) : PyDict_New();
    PyObject *tls = NULL, *conn = NULL, *ident = NULL, *request = NULL;
    PyObject *frame = NULL, *reply = NULL, *result = NULL;
    if (call_args == NULL || call_kwds == NULL
        || (tls = PyObject_GetAttr(proxy, STR(st, S_TLS))) == NULL) {
        goto done;
    }
    conn = PyObject_GetAttr(tls, STR(st, S_CONNECTION));
    if (conn == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            goto done;
        }
        PyErr_Clear();
        conn = call_method(proxy, STR(st, S_CONNECT), NULL, NULL, NULL, 0);
        if (conn == NULL) {
            goto done;
        }
    }
    int direct = fastmp_connection_is_direct(st, conn);
    if (direct < 0) {
        goto done;
    }
    if ((ident = PyObject_GetAttr(proxy, STR(st, S_ID))) == NULL
        || (request = PyTuple_Pack(4, ident, a[1], call_args, call_kwds)) == NULL
        || (frame = exchange(st, conn, direct, request)) == NULL) {
        if (request != NULL) {
            drop_connection(st, proxy, conn);
        }
        goto done;
    }
    if ((reply = decode_message(st, direct, frame, NULL, proxy)) == NULL) {
        goto done;
    }
    if (PyTuple_CheckExact(reply) && PyTuple_GET_SIZE(reply) == 2
        && is_return(st, PyTuple_GET_ITEM(reply, 0))) {
        result = Py_NewRef(PyTuple_GET_ITEM(reply, 1));
    }
    else {
        result = call_method(proxy, STR(st, S_ANSWER), reply, NULL, NULL, 1);
    }
done:
    Py_XDECREF(call_args);
    Py_XDECREF(call_kwds);
    Py_XDECREF(tls);
    Py_XDECREF(conn);
    Py_XDECREF(ident);
    Py_XDECREF(request);
    Py_XDECREF(frame);
    Py_XDECREF(reply);
    return result;
}

/* ---- the server's loop ------------------------------------------------ */

/* The reply to `request` if it is a call the fast path takes: an
 * (id, name, args, kwds) tuple naming a live object and one of its
 * exposed methods that returns no proxy.  Returns a new reference to the
 * reply ((#RETURN, result) or (#ERROR, exception)); Py_None (new
 * reference) if the request is not such a call; NULL with an exception
 * set if the method raised something other than an Exception. */
static PyObject *
fast_call(fastmp_state *st, PyObject *id_to_obj, PyObject *request)
{
    if (!PyTuple_CheckExact(request) || PyTuple_GET_SIZE(request) != 4) {
        Py_RETURN_NONE;
    }
    PyObject *ident = PyTuple_GET_ITEM(request, 0), *name = PyTuple_GET_ITEM(request, 1);
    PyObject *args = PyTuple_GET_ITEM(request, 2), *kwds = PyTuple_GET_ITEM(request, 3);
    if (!PyUnicode_CheckExact(ident) || !PyUnicode_CheckExact(name)
        || !PyTuple_CheckExact(args) || !PyDict_CheckExact(kwds)) {
        Py_RETURN_NONE;
    }
    /* (object, exposed names, method -> typeid); held: another thread may
     * drop the object from the table while its method runs */
    PyObject *entry = PyDict_GetItemWithError(id_to_obj, ident);
    if (entry == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_INCREF(entry);
    PyObject *reply = NULL, *method = NULL;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3
        || !PyAnySet_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
        reply = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *typeids = PyTuple_GET_ITEM(entry, 2);
    int exposed = PySet_Contains(PyTuple_GET_ITEM(entry, 1), name);
    int makes_proxy = 0;
    if (exposed > 0 && typeids != Py_None) {
        makes_proxy = PyDict_CheckExact(typeids) ? PyDict_Contains(typeids, name) : 1;
    }
    if (exposed <= 0 || makes_proxy != 0) {
        PyErr_Clear();          /* a failed lookup: Python's path reports it */
        reply = Py_NewRef(Py_None);
        goto done;
    }
    /* The exposed name's interned copy: attribute lookups cache by the
     * name's identity.  A missing attribute has fallbacks (#GETVALUE,
     * __repr__...) that Python knows. */
    Py_INCREF(name);
    PyUnicode_InternInPlace(&name);
    method = PyObject_GetAttr(PyTuple_GET_ITEM(entry, 0), name);
    Py_DECREF(name);
    if (method == NULL) {
        PyErr_Clear();
        reply = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *result = PyObject_Call(method, args, PyDict_GET_SIZE(kwds) ? kwds : NULL);
    if (result != NULL) {
        reply = PyTuple_Pack(2, STR(st, S_RETURN), result);
        Py_DECREF(result);
        goto done;
    }
    PyObject *exc = take_ordinary_exception();
    if (exc != NULL) {
        reply = PyTuple_Pack(2, STR(st, S_ERROR), exc);
        Py_DECREF(exc);
    }
done:
    Py_XDECREF(method);
    Py_DECREF(entry);
    return reply;
}

/* serve_calls(server, conn): Server.serve_client's loop.  Serves the
 * requests arriving on `conn` until the peer hangs up, or a request
 * handed to Python leaves the server's stop_event set; returns None
 * then.  Requests the fast path does not
 * take go to server._serve_request(conn, request), which returns the
 * reply (None: it answered itself); a request that cannot be read goes
 * to server._request_failed(exc), a reply that cannot be sent to
 * server._reply_failed(conn, reply, exc).  Exceptions that are not
 * Exceptions (SystemExit...) propagate. */
static PyObject *
serve_calls(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (fastmp_check_nargs("serve_calls", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *server = args[0], *conn = args[1];
    PyObject *loads = fastmp_unpickler(st);
    if (loads == NULL) {
        return NULL;
    }
    PyObject *id_to_obj = PyObject_GetAttr(server, STR(st, S_ID_TO_OBJ));
    PyObject *stop_event = id_to_obj ? PyObject_GetAttr(server, STR(st, S_STOP_EVENT)) : NULL;
    if (stop_event == NULL) {
        Py_XDECREF(id_to_obj);
        return NULL;
    }
    /* counted while it runs Python: see fastmp_serving_wait_turn() */
    int outer_serving = fastmp_serving_begin();
    if (!PyDict_Check(id_to_obj)) {
        PyErr_SetString(PyExc_TypeError, "server.id_to_obj must be a dict");
        goto fail;
    }
    /* Only Python's requests (a shutdown...) stop the server: the event
     * is looked at before the first request and after each of those. */
    int look_at_stop = 1;
    for (;;) {
        if (look_at_stop) {
            PyObject *stop = call_method(stop_event, STR(st, S_IS_SET), NULL, NULL, NULL, 0);
            int stopping = stop == NULL ? -1 : PyObject_IsTrue(stop);
            Py_XDECREF(stop);
            if (stopping != 0) {
                if (stopping < 0) {
                    goto fail;
                }
                break;
            }
            look_at_stop = 0;
        }
        PyObject *reply, *request;
        /* looked at per request: Python code may patch conn meanwhile */
        int direct = fastmp_connection_is_direct(st, conn);
        if (direct < 0) {
            goto fail;
        }
        if (direct) {
            PyObject *frame = fastmp_connection_recv_bytes(conn);
            request = frame ? decode_message(st, direct, frame, loads, NULL) : NULL;
            Py_XDECREF(frame);
        }
        else {
            request = call_method(conn, STR(st, S_RECV), NULL, NULL, NULL, 0);
        }
        if (request == NULL) {
            if (PyErr_ExceptionMatches(PyExc_EOFError)) {
                PyErr_Clear();
                break;
            }
            PyObject *exc = take_ordinary_exception();
            if (exc == NULL) {
                goto fail;
            }
            reply = call_method(server, STR(st, S_REQUEST_FAILED), exc, NULL, NULL, 1);
            Py_DECREF(exc);
        }
        else {
            reply = fast_call(st, id_to_obj, request);
            if (reply == Py_None) {
                Py_DECREF(reply);
                reply = call_method(server, STR(st, S_SERVE_REQUEST), conn, request, NULL, 2);
                look_at_stop = 1;
            }
            Py_DECREF(request);
        }
        if (reply == NULL) {
            goto fail;
        }
        if (reply == Py_None) {     /* the request answered itself */
            Py_DECREF(reply);
            continue;
        }
        PyObject *sent = send_message(st, conn, direct, reply) == 0 ? Py_NewRef(Py_None) : NULL;
        if (sent == NULL) {
            PyObject *exc = take_ordinary_exception();
            if (exc != NULL) {
                sent = call_method(server, STR(st, S_REPLY_FAILED), conn, reply, exc, 3);
                Py_DECREF(exc);
            }
        }
        Py_DECREF(reply);
        if (sent == NULL) {
            goto fail;
        }
        Py_DECREF(sent);
    }
    fastmp_serving_end(outer_serving);
    Py_DECREF(id_to_obj);
    Py_DECREF(stop_event);
    Py_RETURN_NONE;
fail:
    fastmp_serving_end(outer_serving);
    Py_DECREF(id_to_obj);
    Py_DECREF(stop_event);
    return NULL;
}

/* ---- module part ------------------------------------------------------ */

static PyMethodDef callmethod_def = {
    "_callmethod", (PyCFunction)(void (*)(void))proxy_callmethod,
    METH_FASTCALL | METH_KEYWORDS,
    PyDoc_STR("_callmethod(self, methodname, args=(), kwds={})\n--\n\n"
              "Call methodname on the referent; return a copy of the result\n"
              "(or a proxy, for methods registered to return one).")
};

static PyObject *
exchange_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (fastmp_check_nargs("exchange_frame", nargs, 2, 2) < 0) {
        return NULL;
    }
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    int direct = fastmp_connection_is_direct(st, args[0]);
    return direct < 0 ? NULL : exchange(st, args[0], direct, args[1]);
}

static PyObject *
in_exchange(PyObject *module, PyObject *conn)
{
    return PyBool_FromLong(conn == thread_exchange);
}

static PyMethodDef manager_functions[] = {
    {"exchange_frame", (PyCFunction)(void (*)(void))exchange_frame, METH_FASTCALL,
     PyDoc_STR("exchange_frame($module, conn, request, /)\n--\n\n"
               "Send request on conn and return the reply frame, undecoded.  Until\n"
               "it returns, in_exchange(conn) is true in this thread.")},
    {"in_exchange", in_exchange, METH_O,
     PyDoc_STR("in_exchange($module, conn, /)\n--\n\n"
               "True if this thread is in the middle of an exchange on conn.")},
    {"serve_calls", (PyCFunction)(void (*)(void))serve_calls, METH_FASTCALL,
     PyDoc_STR("serve_calls($module, server, conn, /)\n--\n\n"
               "Serve the method calls arriving on conn (Server.serve_client).")},
    {NULL, NULL, 0, NULL},
};

int
fastmp_method_calls_exec(PyObject *module, fastmp_state *st)
{
    for (int i = 0; i < S_COUNT; i++) {
        st->mgr_strings[i] = PyUnicode_InternFromString(string_values[i]);
        if (st->mgr_strings[i] == NULL) {
            return -1;
        }
    }
    /* An instancemethod: bound like a function when set on a class */
    PyObject *name = PyModule_GetNameObject(module);
    PyObject *func = name ? PyCFunction_NewEx(&callmethod_def, module, name) : NULL;
    PyObject *method = func ? PyInstanceMethod_New(func) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(func);
    if (method == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "proxy_callmethod", method);
    Py_DECREF(method);
    if (rc < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, manager_functions);
}

int
fastmp_method_calls_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    (void)st;
    (void)visit;
    (void)arg;
    return 0;                   /* interned strings only */
}

void
fastmp_method_calls_clear(fastmp_state *st)
{
    for (int i = 0; i < S_COUNT; i++) {
        Py_CLEAR(st->mgr_strings[i]);
    }
}
