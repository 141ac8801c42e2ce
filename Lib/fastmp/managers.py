"""Managers: a server process that holds Python objects, and the manager
objects that start it (or connect to it) and hand out proxies for what it
holds.  The proxies and the client half of the protocol are in _proxies.

The protocol is the standard package's, so fastmp clients and servers mix
with standard ones.  (A standard peer needs fastmp importable only when
fastmp tokens or proxies travel inside messages: results returned as
proxies, proxies stored in shared containers.)  A new connection is authenticated both ways, then
carries either one control request (create, incref, decref, shutdown...)
or, after ``accept_connection``, the method calls of one client thread for
as long as it lives.

Where fastmp behaves differently from the standard package:
- A fastmp server also takes control requests on a thread's open
  connection, and fastmp clients use that (see _proxies): creating,
  passing and dropping proxies costs no new connection.  Standard clients
  and servers never see the difference.
- start() raises the error that kept the server from starting (an
  initializer's exception, OSError for an address in use), not EOFError.
- shutdown() gives up on a server that does not answer within
  shutdown_timeout and goes on to terminate it, instead of hanging.
- A proxied call cut short (say by KeyboardInterrupt) drops its thread's
  connection, so its late reply is never taken for a later call's.
- A call to a server that is gone raises ConnectionRefusedError (also for
  a Unix socket whose file was removed) or EOFError.
- An object stored in another shared object (through a proxy) is freed
  once no stored proxy and no client refers to it; the standard server
  keeps every such object until it shuts down.
- SyncManager's Queue and JoinableQueue are a queue.Queue subclass whose
  put() and get() are cheaper when they need not wait (same methods, same
  behaviour), with queue.Queue's shutdown() of 3.13 on every version
  (before 3.13 it raises fastmp.queues.ShutDown).
- A Semaphore's or BoundedSemaphore's proxy answers locked(); the
  standard server holds a threading.Semaphore, which has none.
"""
import array
import os
import queue
import signal
import sys
import threading
import time
from traceback import format_exc, format_exception

from . import connection
from . import process
from . import reduction
from . import util
from ._fastmp import serve_calls
from .context import ProcessError
from ._proxies import (  # noqa: F401 (the standard module's names)
    Token, RemoteError, State, BaseProxy, RebuildProxy, AutoProxy,
    MakeProxyType, Namespace, Value, Array, IteratorProxy, AcquirerProxy,
    ConditionProxy, EventProxy, BarrierProxy, NamespaceProxy, ValueProxy,
    BaseListProxy, ListProxy, _BaseDictProxy, DictProxy, _BaseSetProxy,
    SetProxy, ArrayProxy, BasePoolProxy,
    PoolProxy, ProcessLocalSet, dispatch, convert_to_error, listener_client,
    call_server, connect_client, control, adopt_reference,
    proxytype_for_typeid, INBAND_CONTROL, owned_servers, shutdown_inband)

__all__ = ['BaseManager', 'SyncManager', 'BaseProxy', 'Token',
           'SharedMemoryManager']

# Results the server sends back must pickle: arrays by value, dict views
# as lists.
def _reduce_array(a):
    return array.array, (a.typecode, a.tobytes())


def _reduce_view(view):
    return list, (list(view),)


reduction.register(array.array, _reduce_array)
for _view in ({}.keys(), {}.values(), {}.items()):
    reduction.register(type(_view), _reduce_view)
del _view


def all_methods(obj):
    """Names of the callable attributes of `obj`."""
    return [name for name in dir(obj) if callable(getattr(obj, name))]


def public_methods(obj):
    """Names of the callable attributes of `obj` not starting with '_'."""
    return [name for name in all_methods(obj) if name[0] != '_']


# Returned by a control request that has sent its reply itself (shutdown,
# accept_connection): a second one would only meet a closed connection,
# and formatting that failure would hold up the server's exit.
_ANSWERED = object()


class _StartFailure:
    """Sent by a server process that could not start, instead of its
    address: the error start() raises."""

    def __init__(self, error):
        self.error = error

    def report(self, writer):
        with writer:
            try:
                writer.send(self)
            except Exception:   # the error itself does not pickle
                writer.send(_StartFailure(ProcessError(
                    'the manager process failed to start: %r' % (self.error,))))


def _check_initial(state, what='server'):
    """Raise ProcessError unless a manager in `state` can still start."""
    if state.value == State.STARTED:
        raise ProcessError("Already started %s" % what)
    if state.value == State.SHUTDOWN:
        raise ProcessError("Manager has shut down")
    if state.value != State.INITIAL:
        raise ProcessError("Unknown state %r" % (state.value,))


# -- the names the C core reads ---------------------------------------------

# Modules/_fastmp/managers/method_calls.c runs a proxy's method call
# (BaseProxy._callmethod) and the server's loop over calls (serve_client)
# in C, and reaches back into Python by the names below: by the object it
# reads them from, each with the number of arguments C calls it with
# (None: an attribute C only reads).  method_calls.c's table of interned
# strings holds exactly these names and _REPLY_KINDS_C_USES;
# tests/test_c_contract.py checks that the two agree and that every name is
# there on the live objects, so renaming one here fails a test instead of
# sending every call down the slow path or breaking it.
_NAMES_C_READS = {
    # the BaseProxy whose _callmethod runs
    'proxy': {
        '_tls': None,               # util.ForkAwareLocal: this thread's `connection`
        '_id': None,                # the referent's id in the server (str)
        '_decode': 1,               # (frame) -> reply, for a frame C cannot read
        '_connect': 0,              # () -> this thread's new connection
        '_answer': 1,               # (reply) -> result of a reply other than #RETURN
        '_lost_connection': 1,      # (conn): an exchange on conn failed midway
    },
    'proxy._tls': {
        'connection': None,         # this thread's open connection; unset until opened
    },
    # the Server whose serve_client runs
    'server': {
        # id -> (object, exposed names: a set, method -> typeid dict or None);
        # C calls an exposed method that returns no proxy itself
        'id_to_obj': None,
        'stop_event': None,         # threading.Event: set, the loop ends
        '_serve_request': 2,        # (conn, request) -> reply; None: answered
        '_request_failed': 1,       # (exc) -> reply to a request not read
        '_reply_failed': 3,         # (conn, reply, exc): the reply was not sent
    },
    'server.stop_event': {
        'is_set': 0,
    },
    # the xmlrpclib serializer's ConnectionWrapper, or a Connection whose
    # methods were overridden or replaced (a plain Connection's C
    # functions are called directly: connection/connection.h)
    'conn': {
        'send': 1,
        'recv': 0,
        'recv_bytes': 0,
    },
}
# The reply kinds method_calls.c writes, and recognises without calling _answer.
_REPLY_KINDS_C_USES = ('#RETURN', '#ERROR')


# -- the server -----------------------------------------------------------

class Server:
    """Holds the shared objects and serves requests for them, one thread
    per connection."""

    # Control requests a fresh connection may make.
    public = ['shutdown', 'create', 'accept_connection', 'get_methods',
              'debug_info', 'number_of_objects', 'dummy', 'incref', 'decref']

    def __init__(self, registry, address, authkey, serializer):
        if not isinstance(authkey, bytes):
            raise TypeError("Authkey %r is type %s, not bytes"
                            % (authkey, type(authkey)))
        self.registry = registry
        self.authkey = process.AuthenticationString(authkey)
        self.mutex = threading.Lock()
        # id -> (object, exposed method names, method -> result typeid)
        self.id_to_obj = {'0': (None, ())}
        self.id_to_refcount = {}
        # Objects referenced by proxies stored inside other shared objects,
        # and how many such proxies each has.
        self.id_to_local_proxy_obj = {}
        self._local_proxy_count = {}
        # Clients authenticate per connection, after accept.
        self.listener = listener_client[serializer][0](address=address,
                                                       backlog=128)
        self.address = self.listener.address

    def _start_accepting(self):
        """Start taking connections (once)."""
        if getattr(self, 'stop_event', None) is None:
            self.stop_event = threading.Event()
            process.current_process()._manager_server = self
            threading.Thread(target=self.accepter, daemon=True).start()

    def serve_forever(self):
        """Serve until a client asks for shutdown (or SIGINT/SystemExit),
        then exit the process."""
        try:
            self._start_accepting()
            try:
                while not self.stop_event.is_set():
                    self.stop_event.wait(1)
            except (KeyboardInterrupt, SystemExit):
                pass
        finally:
            if sys.stdout != sys.__stdout__:
                sys.stdout = sys.__stdout__
                sys.stderr = sys.__stderr__
            sys.exit(0)

    def accepter(self):
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle_request, args=(conn,),
                             daemon=True).start()

    def handle_request(self, conn):
        """Authenticate a new connection and serve its first request."""
        try:
            self._handle_request(conn)
        except SystemExit:
            pass   # a served client went away
        finally:
            conn.close()

    def _handle_request(self, c):
        request = None
        try:
            connection.deliver_challenge(c, self.authkey)
            connection.answer_challenge(c, self.authkey)
            request = c.recv()
            _, funcname, args, kwds = request
            if funcname not in self.public:
                raise AssertionError('%r unrecognized' % (funcname,))
            func = getattr(self, funcname)
        except Exception:
            reply = ('#TRACEBACK', format_exc())
        else:
            try:
                result = func(c, *args, **kwds)
            except Exception:
                reply = ('#TRACEBACK', format_exc())
            else:
                if result is _ANSWERED:
                    return
                reply = ('#RETURN', result)
        try:
            c.send(reply)
        except Exception as e:
            try:
                c.send(('#TRACEBACK', format_exc()))
            except Exception:
                pass
            util.info('Failure to send message: %r', reply)
            util.info(' ... request was %r', request)
            util.info(' ... exception was %r', e)

    def _lookup(self, ident):
        try:
            return self.id_to_obj[ident]
        except KeyError:
            entry = self.id_to_local_proxy_obj.get(ident)
            if entry is None:
                raise
            return entry

    def _call(self, conn, ident, methodname, args, kwds):
        """Run one method call; return the reply to send."""
        if ident is None:
            return self._inband_control(conn, methodname, args, kwds)
        try:
            obj, exposed, gettypeid = self._lookup(ident)
            if methodname not in exposed:
                raise AttributeError('method %r of %r object is not in exposed=%r'
                                     % (methodname, type(obj), exposed))
            method = getattr(obj, methodname)
        except AttributeError:
            fallback = self.fallback_mapping.get(methodname)
            if fallback is None:
                return ('#TRACEBACK', format_exc())
            try:
                return ('#RETURN', fallback(self, conn, ident, obj, *args, **kwds))
            except Exception:
                return ('#TRACEBACK', format_exc())
        except Exception:
            return ('#TRACEBACK', format_exc())
        try:
            result = method(*args, **kwds)
        except Exception as e:
            return ('#ERROR', e)
        typeid = gettypeid.get(methodname) if gettypeid else None
        if typeid is None:
            return ('#RETURN', result)
        try:
            rident, rexposed = self.create(conn, typeid, result)
        except Exception:
            return ('#TRACEBACK', format_exc())
        return ('#PROXY', (rexposed, Token(typeid, self.address, rident)))

    def _inband_control(self, conn, methodname, args, kwds):
        """A control request made on a serving connection (by a fastmp
        client); return the reply to send (None: it answered itself)."""
        try:
            if methodname not in self.public or methodname == 'accept_connection':
                raise ValueError('%r cannot be requested on a connection '
                                 'serving method calls' % (methodname,))
            result = getattr(self, methodname)(conn, *args, **kwds)
        except Exception:
            return ('#TRACEBACK', format_exc())
        return None if result is _ANSWERED else ('#RETURN', result)

    def serve_client(self, conn):
        """Serve the method calls of one client thread until it hangs up
        (calls of exposed methods in C; the rest in _serve_request)."""
        serve_calls(self, conn)

    def _serve_request(self, conn, request):
        """The reply to a request serve_calls() does not handle itself
        (None: the request answered itself)."""
        try:
            ident, methodname, args, kwds = request
        except Exception:
            return ('#TRACEBACK', format_exc())
        return self._call(conn, ident, methodname, args, kwds)

    def _request_failed(self, exc):
        """The reply to a request that could not be read."""
        return ('#TRACEBACK', ''.join(format_exception(exc)))

    def _reply_failed(self, conn, reply, exc):
        """`reply` could not be sent: report that instead, else hang up."""
        try:
            conn.send(('#UNSERIALIZABLE', ''.join(format_exception(exc))))
        except Exception as e:
            util.info('exception in thread serving %r',
                      threading.current_thread().name)
            util.info(' ... message was %r', reply)
            util.info(' ... exception was %r', e)
            conn.close()
            sys.exit(1)

    # Methods every shared object answers, exposed or not:
    # name -> fn(server, conn, ident, obj).
    fallback_mapping = {
        '__str__': lambda server, conn, ident, obj: str(obj),
        '__repr__': lambda server, conn, ident, obj: repr(obj),
        '#GETVALUE': lambda server, conn, ident, obj: obj,
    }

    def dummy(self, c):
        pass

    def debug_info(self, c):
        """One line per live object with its reference count."""
        with self.mutex:
            return '\n'.join(
                '  %s:       refcount=%s\n    %s'
                % (ident, count, str(self.id_to_obj[ident][0])[:75])
                for ident, count in sorted(self.id_to_refcount.items())
                if ident != '0')

    def number_of_objects(self, c):
        """How many shared objects are alive."""
        return len(self.id_to_refcount)

    def shutdown(self, c):
        """Acknowledge, then stop serve_forever()."""
        try:
            c.send(('#RETURN', None))
        except Exception as e:
            util.info('could not acknowledge shutdown: %r', e)
        finally:
            self.stop_event.set()
        return _ANSWERED

    def create(self, c, typeid, /, *args, **kwds):
        """Make a new shared object of `typeid` with one reference; return
        (id, exposed method names)."""
        with self.mutex:
            factory, exposed, method_to_typeid, _ = self.registry[typeid]
            if factory is None:
                if kwds or len(args) != 1:
                    raise ValueError(
                        "Without callable, must have one non-keyword argument")
                obj = args[0]
            else:
                obj = factory(*args, **kwds)
            if exposed is None:
                exposed = public_methods(obj)
            if method_to_typeid is not None:
                if not isinstance(method_to_typeid, dict):
                    raise TypeError("Method_to_typeid %r: type %s, not dict"
                                    % (method_to_typeid, type(method_to_typeid)))
                exposed = list(exposed) + list(method_to_typeid)
            # A string id: xmlrpclib has only 32-bit integers.
            ident = '%x' % id(obj)
            self.id_to_obj[ident] = (obj, set(exposed), method_to_typeid)
            self.id_to_refcount.setdefault(ident, 0)
        self.incref(c, ident)
        return ident, tuple(exposed)

    def get_methods(self, c, token):
        """The exposed method names of the object `token` names."""
        return tuple(self.id_to_obj[token.id][1])

    def accept_connection(self, c, name):
        """Turn this connection into one serving method calls."""
        threading.current_thread().name = name
        # Tells a fastmp client it may send control requests here too.
        c.send(('#RETURN', INBAND_CONTROL))
        self.serve_client(c)
        return _ANSWERED

    def incref(self, c, ident):
        with self.mutex:
            if ident in self.id_to_refcount:
                self.id_to_refcount[ident] += 1
            elif ident in self.id_to_local_proxy_obj:
                # Only a proxy stored inside the server still held it; a new
                # outside reference brings it back under counting.
                self.id_to_refcount[ident] = 1
                self.id_to_obj[ident] = self.id_to_local_proxy_obj[ident]
            else:
                raise KeyError(ident)

    def hold_for_local_proxy(self, ident):
        """A proxy of object `ident` is being rebuilt inside this server
        (stored in another object): keep the object while it lives."""
        with self.mutex:
            count = self._local_proxy_count.get(ident, 0)
            if count == 0:
                self.id_to_local_proxy_obj[ident] = self.id_to_obj[ident]
            self._local_proxy_count[ident] = count + 1

    def release_for_local_proxy(self, ident):
        """Such a proxy is gone; the last one lets the object go (unless
        clients still reference it)."""
        entry = None
        with self.mutex:
            count = self._local_proxy_count.pop(ident, 0) - 1
            if count > 0:
                self._local_proxy_count[ident] = count
            else:
                entry = self.id_to_local_proxy_obj.pop(ident, None)
        # Dropped outside the mutex: the object may hold proxies whose
        # release needs it.
        del entry

    def decref(self, c, ident):
        if (ident not in self.id_to_refcount
                and ident in self.id_to_local_proxy_obj):
            return
        with self.mutex:
            count = self.id_to_refcount[ident]
            if count <= 0:
                raise AssertionError("Id %s (%r) has refcount %d, not 1+"
                                     % (ident, self.id_to_obj[ident], count))
            if count > 1:
                self.id_to_refcount[ident] = count - 1
                return
            del self.id_to_refcount[ident]
            # Drop the object outside the mutex: if it holds proxies of
            # other objects here, their decref needs the mutex.
            entry = self.id_to_obj[ident]
            self.id_to_obj[ident] = (None, (), None)
        del entry
        with self.mutex:
            if ident not in self.id_to_refcount:
                self.id_to_obj.pop(ident, None)


# -- managers -------------------------------------------------------------

class BaseManager:
    """Starts (or connects to) a server and creates shared objects in it
    through the typeids registered on the class."""

    _registry = {}
    _Server = Server

    def __init__(self, address=None, authkey=None, serializer='pickle',
                 ctx=None, *, shutdown_timeout=1.0):
        self._address = address     # the real one is known once started
        self._authkey = process.AuthenticationString(
            process.current_process().authkey if authkey is None else authkey)
        self._state = State()
        self._state.value = State.INITIAL
        self._serializer = serializer
        self._Listener, self._Client = listener_client[serializer]
        if ctx is None:
            from . import get_context
            ctx = get_context()
        self._ctx = ctx
        self._shutdown_timeout = shutdown_timeout
        self._process = None

    @property
    def address(self):
        return self._address

    def get_server(self):
        """A server for this manager's registry, to run in this process
        with serve_forever()."""
        _check_initial(self._state)
        return self._Server(self._registry, self._address, self._authkey,
                            self._serializer)

    def connect(self):
        """Use the server already running at self.address."""
        call_server(self._Client, self._address, self._authkey, 'dummy')
        self._state.value = State.STARTED

    def start(self, initializer=None, initargs=()):
        """Start the server in a new process."""
        _check_initial(self._state)
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        if self._address is None and self._ctx.get_start_method() == 'fork':
            # The forked server then puts its socket in this process's
            # temporary directory instead of making and removing its own.
            util.get_temp_dir()
        # The server reports its address (known once it listens) here.
        reader, writer = connection.Pipe(duplex=False)
        server_args = (self._registry, self._address, self._authkey,
                       self._serializer, writer, initializer, initargs)
        self._process = self._ctx.Process(target=type(self)._run_server,
                                          args=server_args)
        self._process.name = '%s-%s' % (
            type(self).__name__, ':'.join(map(str, self._process._identity)))
        self._process.start()
        writer.close()
        try:
            reply = reader.recv()
        except EOFError:
            reply = _StartFailure(ProcessError(
                'the manager process died before serving'))
        finally:
            reader.close()
        if isinstance(reply, _StartFailure):
            self._process.join()
            raise reply.error
        self._address = reply
        self._state.value = State.STARTED
        owned_servers.add(self._address)
        stop_args = (self._process, self._address, self._authkey, self._state,
                     self._serializer, self._shutdown_timeout)
        self.shutdown = util.Finalize(self, type(self)._finalize_manager,
                                      args=stop_args, exitpriority=0)

    @classmethod
    def _run_server(cls, registry, address, authkey, serializer, writer,
                    initializer=None, initargs=()):
        """Body of the server process: report the address, then serve."""
        # Ctrl-C in a terminal reaches the whole process group; the owner
        # decides when its manager stops.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if initializer is not None:
                initializer(*initargs)
            server = cls._Server(registry, address, authkey, serializer)
        except BaseException as e:
            # The owner raises it from start(), rather than a bare EOF.
            _StartFailure(e).report(writer)
            raise
        # Accepting before the owner learns the address: its first
        # request need not wait for the accepting thread to start.
        server._start_accepting()
        with writer:
            writer.send(server.address)
        util.info('manager serving at %r', server.address)
        server.serve_forever()

    def _create(self, typeid, /, *args, **kwds):
        """Create a shared object; return (token, exposed).  The server has
        counted one reference for the caller."""
        if self._state.value != State.STARTED:
            raise ProcessError('server not yet started')
        ident, exposed = control(self._serializer, self._address,
                                 self._authkey, 'create', (typeid,) + args,
                                 kwds, open_connection=True)
        return Token(typeid, self._address, ident), exposed

    def join(self, timeout=None):
        """Wait for the server process (if this manager started one)."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = None

    def _debug_info(self):
        """Text listing the server's objects and reference counts."""
        return control(self._serializer, self._address, self._authkey,
                       'debug_info')

    def _number_of_objects(self):
        """How many objects the server holds."""
        return control(self._serializer, self._address, self._authkey,
                       'number_of_objects')

    @staticmethod
    def _finalize_manager(process, address, authkey, state, serializer,
                          shutdown_timeout):
        """Ask the server to stop; escalate to SIGTERM, then SIGKILL, if it
        does not exit within `shutdown_timeout` each time."""
        owned_servers.discard(address)
        if process.is_alive() and not shutdown_inband(address,
                                                      shutdown_timeout):
            # Asked from a helper thread: a server too stuck to answer
            # must not hang its owner.
            Client = listener_client[serializer][1]
            asker = threading.Thread(target=_request_shutdown,
                                     args=(Client, address, authkey),
                                     daemon=True)
            try:
                asker.start()
            except RuntimeError:
                # no new thread while the interpreter finalizes (3.12+):
                # ask from here, as the standard package always does
                _request_shutdown(Client, address, authkey)
            else:
                asker.join(shutdown_timeout)
        if process.is_alive():
            process.join(timeout=shutdown_timeout)
            if process.is_alive() and hasattr(process, 'terminate'):
                util.info('manager still alive: terminating it')
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join()
        state.value = State.SHUTDOWN
        BaseProxy._address_to_local.pop(address, None)

    def __enter__(self):
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value == State.INITIAL:
            raise ProcessError("Unable to start server")
        if self._state.value != State.STARTED:
            _check_initial(self._state)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.shutdown()

    @classmethod
    def register(cls, typeid, callable=None, proxytype=None, exposed=None,
                 method_to_typeid=None, create_method=True):
        """Register `typeid` on this manager class: `callable` makes the
        object in the server, `proxytype` wraps it here."""
        if '_registry' not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, '_exposed_', None)
        method_to_typeid = (method_to_typeid
                            or getattr(proxytype, '_method_to_typeid_', None))
        for key, value in (method_to_typeid or {}).items():
            if type(key) is not str or type(value) is not str:
                raise TypeError('method_to_typeid must map str to str, not '
                                '%r: %r' % (key, value))
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        proxytype_for_typeid[typeid] = proxytype
        if create_method:
            setattr(cls, typeid, _creator(typeid, proxytype))


def _request_shutdown(Client, address, authkey):
    try:
        call_server(Client, address, authkey, 'shutdown')
    except Exception as e:
        util.debug('shutdown request failed: %s', e)


def _creator(typeid, proxytype):
    """The manager method that creates a `typeid` object and returns its
    proxy."""
    def create(self, /, *args, **kwds):
        token, exposed = self._create(typeid, *args, **kwds)
        return adopt_reference(proxytype, token, self._serializer, self,
                               self._authkey, exposed)
    create.__name__ = create.__qualname__ = typeid
    return create


# -- SyncManager ----------------------------------------------------------

class SyncManager(BaseManager):
    """A manager serving the threading synchronization types, queues,
    list, dict, set, Namespace, Value, Array and Pool.  fastmp.Manager()
    returns a started one."""


def _make_pool(*args, **kwds):
    # Imported on first use: most managers never start a pool.
    from .pool import Pool
    return Pool(*args, **kwds)


class _SharedQueue(queue.Queue):
    """queue.Queue as a manager serves it: the same behaviour, with put()
    and get() cheaper when they need not wait (no Condition entered, no
    notify without a waiter), and shutdown() on every version."""

    is_shutdown = False                 # (queue.Queue sets it from 3.13)

    def put(self, item, block=True, timeout=None):
        if self.maxsize > 0:
            return self._put_waiting(item, block, timeout)
        with self.mutex:
            if self.is_shutdown:
                raise _shutdown_error()
            self._put(item)
            self.unfinished_tasks += 1
            if self.not_empty._waiters:
                self.not_empty.notify()

    def get(self, block=True, timeout=None):
        if timeout is None or not block:
            with self.mutex:
                if self._qsize():
                    item = self._get()
                    if self.not_full._waiters:
                        self.not_full.notify()
                    return item
        return self._get_waiting(block, timeout)

    if hasattr(queue.Queue, 'shutdown'):
        _put_waiting = queue.Queue.put
        _get_waiting = queue.Queue.get
    else:
        # Before 3.13: queue.Queue.shutdown of 3.13, and the waits of put
        # and get that it ends.
        def shutdown(self, immediate=False):
            """put() raises ShutDown from now on, get() once the queue is
            empty; with `immediate`, the queue is emptied now (each item
            counting as a done task).  Blocked calls are woken."""
            with self.mutex:
                self.is_shutdown = True
                if immediate:
                    while self._qsize():
                        self._get()
                        self.unfinished_tasks = max(self.unfinished_tasks - 1, 0)
                    self.all_tasks_done.notify_all()
                self.not_empty.notify_all()
                self.not_full.notify_all()

        def _put_waiting(self, item, block, timeout):
            with self.not_full:
                self._wait(self.not_full, lambda: self._qsize() >= self.maxsize,
                           lambda: self.is_shutdown, block, timeout, queue.Full)
                self._put(item)
                self.unfinished_tasks += 1
                self.not_empty.notify()

        def _get_waiting(self, block, timeout):
            with self.not_empty:
                self._wait(self.not_empty, lambda: not self._qsize(),
                           lambda: self.is_shutdown and not self._qsize(),
                           block, timeout, queue.Empty)
                item = self._get()
                self.not_full.notify()
                return item

        def _wait(self, cond, blocked, refused, block, timeout, exc):
            """Holding `cond`: wait while blocked(); raise ShutDown when
            refused(), `exc` when not blocking or at the deadline (checks
            in queue.Queue's order)."""
            if refused():
                raise _shutdown_error()
            if block and timeout is not None:
                if timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                deadline = time.monotonic() + timeout
            while blocked():
                if not block:
                    raise exc
                if timeout is None:
                    cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise exc
                    cond.wait(left)
                if refused():
                    raise _shutdown_error()


def _shutdown_error():
    """The exception of a queue that was shut down: queue.ShutDown, or
    before 3.13 fastmp's (the queues module loads the C core: on use)."""
    from .queues import ShutDown
    return ShutDown


class _SharedSemaphore(threading.Semaphore):
    """threading.Semaphore with the locked() that the proxies offer (as
    multiprocessing's Semaphore answers it; threading's has none)."""

    def locked(self):
        """Whether acquire(blocking=False) would fail now."""
        return self._value == 0


class _SharedBoundedSemaphore(_SharedSemaphore, threading.BoundedSemaphore):
    pass


if sys.version_info >= (3, 14):
    _SharedRLock = threading.RLock
    _SharedCondition = threading.Condition
else:
    # Before 3.14 threading's RLock and Condition have no locked().
    class _SharedRLock(threading._RLock):
        """The pure-Python RLock, whose inner lock is held exactly while
        some thread owns it, plus the locked() of 3.14."""

        def locked(self):
            return self._block.locked()

    class _SharedCondition(threading.Condition):
        """threading.Condition with the locked() of 3.14: its lock's."""

        def __init__(self, lock=None):
            super().__init__(_SharedRLock() if lock is None else lock)

        def locked(self):
            return self._lock.locked()


def _register_sync_types():
    register = SyncManager.register
    register('Queue', _SharedQueue)
    register('JoinableQueue', _SharedQueue)
    register('Event', threading.Event, EventProxy)
    register('Lock', threading.Lock, AcquirerProxy)
    register('RLock', _SharedRLock, AcquirerProxy)
    register('Semaphore', _SharedSemaphore, AcquirerProxy)
    register('BoundedSemaphore', _SharedBoundedSemaphore, AcquirerProxy)
    register('Condition', _SharedCondition, ConditionProxy)
    register('Barrier', threading.Barrier, BarrierProxy)
    register('Pool', _make_pool, PoolProxy)
    register('list', list, ListProxy)
    register('dict', dict, DictProxy)
    register('set', set, SetProxy)
    register('Value', Value, ValueProxy)
    register('Array', Array, ArrayProxy)
    register('Namespace', Namespace, NamespaceProxy)
    # Types of results that stay in the server (pool and dict methods).
    register('Iterator', proxytype=IteratorProxy, create_method=False)
    register('AsyncResult', create_method=False)


_register_sync_types()


# -- SharedMemoryManager --------------------------------------------------

class _SegmentTracker:
    """The shared-memory segments a SharedMemoryServer unlinks when it
    stops."""

    def __init__(self, name, segment_names=None):
        self.shared_memory_context_name = name
        self.segment_names = [] if segment_names is None else segment_names

    def register_segment(self, segment_name):
        self.segment_names.append(segment_name)

    def destroy_segment(self, segment_name):
        """Forget `segment_name` and unlink its segment."""
        from .shared_memory import SharedMemory
        self.segment_names.remove(segment_name)
        segment = SharedMemory(segment_name)
        segment.close()
        segment.unlink()

    def unlink(self):
        for segment_name in list(self.segment_names):
            self.destroy_segment(segment_name)

    def __del__(self):
        self.unlink()

    def __getstate__(self):
        return (self.shared_memory_context_name, self.segment_names)

    def __setstate__(self, state):
        self.__init__(*state)


_SharedMemoryTracker = _SegmentTracker


class SharedMemoryServer(Server):
    """A Server that also tracks shared-memory segments made through its
    manager, and unlinks them at shutdown."""

    public = Server.public + ['track_segment', 'release_segment',
                              'list_segments']

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        address = self.address
        if isinstance(address, bytes):   # Linux abstract socket names
            address = os.fsdecode(address)
        self.shared_memory_context = _SegmentTracker(
            'shm_%s_%d' % (address, os.getpid()))

    def create(self, c, typeid, /, *args, **kwargs):
        """As Server.create; proxy types marked _shared_memory_proxy get
        the segment tracker as `shared_memory_context`."""
        if hasattr(self.registry[typeid][-1], '_shared_memory_proxy'):
            kwargs['shared_memory_context'] = self.shared_memory_context
        return super().create(c, typeid, *args, **kwargs)

    def shutdown(self, c):
        """Unlink every tracked segment, then stop."""
        self.shared_memory_context.unlink()
        return super().shutdown(c)

    def track_segment(self, c, segment_name):
        self.shared_memory_context.register_segment(segment_name)

    def release_segment(self, c, segment_name):
        self.shared_memory_context.destroy_segment(segment_name)

    def list_segments(self, c):
        return self.shared_memory_context.segment_names


class SharedMemoryManager(BaseManager):
    """A manager whose SharedMemory and ShareableList segments live until
    it shuts down (then they are unlinked)."""

    _Server = SharedMemoryServer

    def __init__(self, *args, **kwargs):
        # Start the resource tracker before the server process forks, so
        # both share one tracker.
        from . import resource_tracker
        resource_tracker.ensure_running()
        super().__init__(*args, **kwargs)

    def get_server(self):
        _check_initial(self._state, 'SharedMemoryServer')
        return self._Server(self._registry, self._address, self._authkey,
                            self._serializer)

    def _tracked(self, make, segment_of):
        """Make a shared-memory object and have the server track its
        segment; unlink it if the server cannot be told."""
        if self._address is None:
            raise ValueError('the SharedMemoryManager is not started')
        conn = connect_client(self._Client, self._address, self._authkey)
        try:
            obj = make()
            segment = segment_of(obj)
            try:
                dispatch(conn, None, 'track_segment', (segment.name,))
            except BaseException:
                segment.unlink()
                raise
        finally:
            conn.close()
        return obj

    def SharedMemory(self, size):
        """A new SharedMemory of `size` bytes, tracked by the manager."""
        from .shared_memory import SharedMemory
        return self._tracked(lambda: SharedMemory(None, create=True, size=size),
                             lambda shm: shm)

    def ShareableList(self, sequence):
        """A new ShareableList holding `sequence`, tracked by the manager."""
        from .shared_memory import ShareableList
        return self._tracked(lambda: ShareableList(sequence),
                             lambda sl: sl.shm)
