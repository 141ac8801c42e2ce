"""The client side of the manager protocol: tokens, the request/reply
exchange, and the proxy classes that stand for objects living in a
manager's server process.

A proxied call is one round trip on a connection the calling thread keeps
open to the server: the request ``(object id, method name, args, kwds)``
goes out, one ``(kind, payload)`` reply comes back.  Kinds: ``#RETURN``
(the result), ``#PROXY`` (the result stays in the server: ``(exposed,
token)``), ``#ERROR`` (the exception the method raised), ``#TRACEBACK`` and
``#UNSERIALIZABLE`` (text of a failure in the server itself).  Control
requests (create, incref, decref, ...) use a fresh authenticated
connection each, as the standard package does -- except that a fastmp
server also takes them on a thread's open connection (it says so in its
answer to ``accept_connection``, which standard clients ignore), which
saves a connection, a handshake and a server thread per request.

The call itself (BaseProxy._callmethod) and the server's loop over calls
are in C (Modules/_fastmp/managers/method_calls.c; the names it reads back
are listed in managers._NAMES_C_READS); a request or reply made only of
plain data (None, bool, int, float, str, bytes, tuples, lists and dicts of
them) is pickled and unpickled there without a Pickler
(pickle/quickpickle.c), everything else by
the pickle module.  The bytes on the wire are standard pickles either way.
"""
import collections.abc
import pickle
import threading
import time
import types
import weakref

from . import connection
from . import process
from . import util
from ._fastmp import exchange_frame, in_exchange, proxy_callmethod
from .context import get_spawning_popen

__all__ = ['Token', 'RemoteError', 'BaseProxy', 'AutoProxy', 'MakeProxyType',
           'RebuildProxy', 'dispatch', 'convert_to_error']


class Token:
    """Names one shared object: its registered type, the address of the
    server holding it and its id there."""
    __slots__ = ('typeid', 'address', 'id')

    def __init__(self, typeid, address, id):
        self.typeid = typeid
        self.address = address
        self.id = id

    def __getstate__(self):
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state):
        self.typeid, self.address, self.id = state

    def __repr__(self):
        return '%s(typeid=%r, address=%r, id=%r)' % (
            type(self).__name__, self.typeid, self.address, self.id)


class RemoteError(Exception):
    """A failure inside the manager's server; the message is the server's
    traceback text."""

    def __str__(self):
        rule = '-' * 75
        return '\n%s\n%s%s' % (rule, self.args[0], rule)


class State:
    """Where a manager is in its life; shared with the finalizers of its
    proxies so they skip talking to a server that is gone."""
    __slots__ = ['value']
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2


# serializer name -> (Listener type, Client function)
listener_client = {
    'pickle': (connection.Listener, connection.Client),
    'xmlrpclib': (connection.XmlListener, connection.XmlClient),
}


def convert_to_error(kind, result):
    """The exception a non-#RETURN reply stands for."""
    if kind == '#ERROR':
        return result
    if kind in ('#TRACEBACK', '#UNSERIALIZABLE'):
        if not isinstance(result, str):
            raise TypeError("Result %r (kind %r) type is %s, not str"
                            % (result, kind, type(result)))
        if kind == '#UNSERIALIZABLE':
            return RemoteError('Unserializable message: %s\n' % result)
        return RemoteError(result)
    return ValueError('Unrecognized message type %r' % (kind,))


def dispatch(c, id, methodname, args=(), kwds={}):
    """Send one request on connection `c`; return the result or raise the
    error the server reported."""
    c.send((id, methodname, args, kwds))
    return unwrap_reply(*c.recv())


def connect_client(Client, address, authkey):
    """An authenticated connection to the server at `address`.  A missing
    Unix socket file means the server is gone: say so as a
    ConnectionRefusedError, like a closed TCP port."""
    try:
        return Client(address, authkey=authkey)
    except FileNotFoundError as e:
        raise ConnectionRefusedError(
            e.errno, 'no manager is serving at %r' % (address,)) from None


def call_server(Client, address, authkey, methodname, args=(), kwds={}):
    """One control request (create, incref, shutdown...) on its own
    connection."""
    conn = connect_client(Client, address, authkey)
    try:
        return dispatch(conn, None, methodname, args, kwds)
    finally:
        conn.close()


# What a fastmp server answers to accept_connection: it also takes control
# requests (id None) on that connection.  The standard server answers None.
INBAND_CONTROL = 'fastmp:inband-control'


def _xml_reply(frame):
    import xmlrpc.client
    (reply,), _ = xmlrpc.client.loads(frame.decode('utf-8'))
    return reply


# serializer -> function decoding a reply frame
reply_decoders = {'pickle': pickle.loads, 'xmlrpclib': _xml_reply}


def _shared_state(address):
    """(per-thread connection holder, ids this process references) for the
    server at `address`, made on first use."""
    with BaseProxy._mutex:
        shared = BaseProxy._address_to_local.get(address)
        if shared is None:
            shared = (util.ForkAwareLocal(), ProcessLocalSet())
            BaseProxy._address_to_local[address] = shared
    return shared


def open_thread_connection(tls, Client, address, authkey):
    """Open the calling thread's connection for method calls to the server
    at `address` (kept in `tls`); return it."""
    name = process.current_process().name
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += '|' + thread.name
    conn = connect_client(Client, address, authkey)
    answer = dispatch(conn, None, 'accept_connection', (name,))
    tls.inband = answer == INBAND_CONTROL
    tls.connection = conn
    return conn


def forget_connection(tls, conn):
    """Drop a thread connection that may hold an unread reply (a call cut
    short): the next call opens a fresh one."""
    if getattr(tls, 'connection', None) is conn:
        del tls.connection
    try:
        conn.close()
    except OSError:
        pass


def exchange(tls, conn, request):
    """Send `request` on the thread connection and return the reply frame
    (undecoded, so that proxies unpickled from it may use the connection).
    While the exchange is under way, in_exchange(conn) is true: a
    finalizer or signal handler that runs meanwhile makes its control
    request elsewhere."""
    try:
        return exchange_frame(conn, request)
    except BaseException:
        forget_connection(tls, conn)
        raise


def _free_connection(tls):
    """This thread's connection kept in `tls` if it is open and not in the
    middle of an exchange, else None."""
    conn = getattr(tls, 'connection', None)
    return None if conn is None or in_exchange(conn) else conn


def control(serializer, address, authkey, methodname, args=(), kwds={},
            open_connection=False):
    """One control request: on this thread's connection to `address` if the
    server takes it there and the connection is free (opening one first if
    `open_connection`), else on a connection of its own."""
    Client = listener_client[serializer][1]
    tls = _shared_state(address)[0]
    conn = getattr(tls, 'connection', None)
    if conn is None and open_connection:
        conn = open_thread_connection(tls, Client, address, authkey)
    if conn is None or not tls.inband or in_exchange(conn):
        return call_server(Client, address, authkey, methodname, args, kwds)
    frame = exchange(tls, conn, (None, methodname, args, kwds))
    return unwrap_reply(*reply_decoders[serializer](frame))


def unwrap_reply(kind, result):
    """The result a #RETURN reply carries, or raise the error another kind
    stands for."""
    if kind == '#RETURN':
        return result
    # Drop the frame's reference to a returned exception, so that
    # exception -> traceback -> frame -> exception never forms a cycle.
    try:
        raise convert_to_error(kind, result)
    finally:
        result = None


# Addresses of the servers this process started and has not shut down:
# its thread connections to them stay open (for creates and the final
# shutdown) even while it holds no proxies.
owned_servers = set()


def shutdown_inband(address, timeout):
    """Ask the server at `address` to shut down on this thread's connection,
    if the server takes control requests there; wait at most `timeout`
    seconds for the answer.  False if it could not be asked that way."""
    shared = BaseProxy._address_to_local.get(address)
    tls = shared[0] if shared else None
    conn = _free_connection(tls)
    if conn is None or not tls.inband:
        return False
    # Taken from the thread first, so that nothing else uses it meanwhile.
    del tls.connection
    try:
        conn.send((None, 'shutdown', (), {}))
        if conn.poll(timeout):
            conn.recv_bytes()
    except (OSError, EOFError) as e:
        util.debug('shutdown request failed: %s', e)
    finally:
        forget_connection(tls, conn)
    return True


def adopt_reference(proxytype, token, serializer, manager, authkey, exposed):
    """A proxy taking over the reference the server counted when it created
    the object (saving the incref/decref pair, two connections)."""
    proxy = proxytype(token, serializer, manager=manager, authkey=authkey,
                      exposed=exposed, incref=False)
    proxy._track()
    return proxy


class ProcessLocalSet(set):
    """A set that empties itself in a forked child."""

    def __init__(self):
        util.register_after_fork(self, lambda obj: obj.clear())

    def __reduce__(self):
        return type(self), ()


# typeid -> proxy type, from every manager class's register(): lets a proxy
# that lost its manager (in a child process) still wrap a #PROXY reply.
proxytype_for_typeid = {}


def _authkey_for(authkey, manager):
    """The key a proxy authenticates with: the one given, else its
    manager's, else this process's."""
    if authkey is not None:
        return process.AuthenticationString(authkey)
    if manager is not None:
        return manager._authkey
    return process.current_process().authkey


class BaseProxy:
    """Stands in for an object held by a manager's server."""

    # address -> (per-thread connection holder, ids this process references)
    _address_to_local = {}
    _mutex = util.ForkAwareThreadLock()

    def __init__(self, token, serializer, manager=None, authkey=None,
                 exposed=None, incref=True, manager_owned=False):
        self._tls, self._idset = _shared_state(token.address)
        self._token, self._id = token, token.id
        self._manager, self._serializer = manager, serializer
        self._Client = listener_client[serializer][1]
        self._decode = reply_decoders[serializer]
        # True for a proxy rebuilt inside the server itself (a managed
        # object stored in another): the server keeps that reference.
        self._owned_by_manager = manager_owned
        self._authkey = _authkey_for(authkey, manager)
        if incref:
            self._incref()
        util.register_after_fork(self, BaseProxy._after_fork)

    def _connect(self):
        """Open this thread's connection to the server; return it."""
        return open_thread_connection(self._tls, self._Client,
                                      self._token.address, self._authkey)

    # _callmethod(methodname, args=(), kwds={}): call `methodname` on the
    # referent; return a copy of the result (or a proxy, for methods
    # registered to return one).  In C: one round trip on this thread's
    # connection, as exchange() makes it; a reply other than #RETURN goes
    # to _answer().
    _callmethod = proxy_callmethod

    def _answer(self, reply):
        """The result of a reply other than #RETURN, or raise the error it
        stands for."""
        kind, result = reply
        reply = None
        if kind == '#RETURN':
            return result
        if kind == '#PROXY':
            return self._adopt(*result)
        try:
            return unwrap_reply(kind, result)
        finally:
            result = None   # no exception -> frame -> exception cycle

    def _lost_connection(self, conn):
        """A call on `conn` failed midway: stop using it."""
        forget_connection(self._tls, conn)

    def _adopt(self, exposed, token):
        """A proxy for an object the server created as a method's result."""
        manager = self._manager
        # A proxy without a manager (in a child), or whose manager class
        # lacks the typeid (a client of a remote server), still needs one.
        entry = manager._registry.get(token.typeid) if manager else None
        if entry is not None:
            proxytype = entry[-1]
        else:
            proxytype = proxytype_for_typeid.get(token.typeid, AutoProxy)
        token.address = self._token.address
        return adopt_reference(proxytype, token, self._serializer, manager,
                               self._authkey, exposed)

    def _getvalue(self):
        """A copy of the referent."""
        return self._callmethod('#GETVALUE')

    def _incref(self):
        if self._owned_by_manager:
            return
        control(self._serializer, self._token.address, self._authkey,
                'incref', (self._id,))
        self._track()

    def _track(self):
        """Note that this process holds a reference, to be dropped (decref)
        when the proxy goes."""
        self._idset.add(self._id)
        state = self._manager._state if self._manager is not None else None
        self._close = util.Finalize(
            self, BaseProxy._decref,
            args=(self._token, self._authkey, state, self._tls, self._idset,
                  self._serializer),
            exitpriority=10)

    @staticmethod
    def _decref(token, authkey, state, tls, idset, serializer):
        idset.discard(token.id)
        if state is None or state.value == State.STARTED:
            try:
                control(serializer, token.address, authkey,
                        'decref', (token.id,))
            except Exception as e:
                util.debug('decref of %r failed: %s', token.id, e)
        # The thread's connection is no longer needed once the process
        # holds nothing from this server.
        if not idset and token.address not in owned_servers:
            conn = _free_connection(tls)
            if conn is not None:
                forget_connection(tls, conn)

    def _after_fork(self):
        # The forked child holds its own reference (and has no manager).
        self._manager = None
        try:
            self._incref()
        except Exception as e:
            util.info('incref after fork failed: %s', e)

    def __reduce__(self):
        # The key travels only to a child being spawned; anywhere else the
        # receiver authenticates with its own key.
        kwds = {'authkey': self._authkey} if get_spawning_popen() else {}
        rebuild_as = type(self)
        if getattr(self, '_isauto', False):
            rebuild_as = AutoProxy
            kwds['exposed'] = self._exposed_
        return RebuildProxy, (rebuild_as, self._token, self._serializer, kwds)

    def __deepcopy__(self, memo):
        return self._getvalue()

    def __repr__(self):
        return '<%s object, typeid %r at %#x>' % (
            type(self).__name__, self._token.typeid, id(self))

    def __str__(self):
        """The referent's repr, or a note that it could not be had."""
        try:
            text = self._callmethod('__repr__')
        except Exception:
            text = "%s; '__str__()' failed>" % repr(self)[:-1]
        return text


def RebuildProxy(func, token, serializer, kwds):
    """Unpickle a proxy.  Inside the server that holds the referent the
    proxy is marked manager-owned: the server keeps the object alive for as
    long as such proxies (stored in its other objects) exist.  In a process
    being spawned, the parent's reference covers it."""
    server = getattr(process.current_process(), '_manager_server', None)
    if server is not None and server.address == token.address:
        kwds['manager_owned'] = True
        server.hold_for_local_proxy(token.id)
        proxy = func(token, serializer, incref=False, **kwds)
        weakref.finalize(proxy, server.release_for_local_proxy, token.id)
        return proxy
    incref = (kwds.pop('incref', True)
              and not getattr(process.current_process(), '_inheriting', False))
    return func(token, serializer, incref=incref, **kwds)


def _forwarder(name):
    def forward(self, /, *args, **kwds):
        return self._callmethod(name, args, kwds)
    forward.__name__ = forward.__qualname__ = name
    return forward


_proxy_type_cache = {}


def MakeProxyType(name, exposed, _cache=_proxy_type_cache):
    """A BaseProxy subclass with one forwarding method per name in
    `exposed` (cached per (name, exposed))."""
    exposed = tuple(exposed)
    key = (name, exposed)
    proxytype = _cache.get(key)
    if proxytype is None:
        namespace = {meth: _forwarder(meth) for meth in exposed}
        proxytype = type(name, (BaseProxy,), namespace)
        proxytype._exposed_ = exposed
        _cache[key] = proxytype
    return proxytype


def AutoProxy(token, serializer, manager=None, authkey=None, exposed=None,
              incref=True, manager_owned=False):
    """A proxy whose methods are the ones the server exposes for `token`
    (asked from the server when not given)."""
    authkey = _authkey_for(authkey, manager)
    if exposed is None:
        exposed = control(serializer, token.address, authkey,
                          'get_methods', (token,))
    proxytype = MakeProxyType('AutoProxy[%s]' % token.typeid, exposed)
    proxy = proxytype(token, serializer, manager=manager, authkey=authkey,
                      incref=incref, manager_owned=manager_owned)
    proxy._isauto = True
    return proxy


# -- the objects SyncManager serves that the standard library lacks -------

class Namespace:
    """A bag of attributes."""

    def __init__(self, /, **kwds):
        self.__dict__.update(kwds)

    def __repr__(self):
        shown = sorted('%s=%r' % kv for kv in self.__dict__.items()
                       if not kv[0].startswith('_'))
        return '%s(%s)' % (type(self).__name__, ', '.join(shown))


class Value:
    """One value with a type code (the code is only shown, not enforced)."""

    def __init__(self, typecode, value, lock=True):
        self._typecode, self._value = typecode, value

    def get(self):
        return self._value

    def set(self, value):
        self._value = value

    value = property(get, set)

    def __repr__(self):
        return '%s(%r, %r)' % (type(self).__name__, self._typecode, self._value)


def Array(typecode, sequence, lock=True):
    """An array.array (the lock argument is accepted for compatibility)."""
    import array
    return array.array(typecode, sequence)


# -- proxy types --------------------------------------------------------------

def _forwards(*names):
    """Class decorator: give the proxy class a method for each of `names`
    that calls the referent's method of that name with the same
    arguments."""
    def add_forwarders(cls):
        for name in names:
            setattr(cls, name, _forwarder(name))
        return cls
    return add_forwarders


def _calls(methodname):
    """A method that calls the referent's `methodname` with no arguments,
    whatever it is given (for __enter__/__exit__)."""
    def call(self, *ignored):
        return self._callmethod(methodname)
    return call


@_forwards('__next__', 'send', 'throw', 'close')
class IteratorProxy(BaseProxy):
    _exposed_ = ('__next__', 'send', 'throw', 'close')

    def __iter__(self):
        return self


@_forwards('acquire', 'release', 'locked')
class AcquirerProxy(BaseProxy):
    _exposed_ = ('acquire', 'release', 'locked')
    __enter__ = _calls('acquire')
    __exit__ = _calls('release')


@_forwards('wait', 'notify', 'notify_all')
class ConditionProxy(AcquirerProxy):
    _exposed_ = AcquirerProxy._exposed_ + ('wait', 'notify', 'notify_all')

    def wait_for(self, predicate, timeout=None):
        """Wait until predicate() is true (or the timeout passes); return
        its last value."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result


@_forwards('is_set', 'set', 'clear', 'wait')
class EventProxy(BaseProxy):
    _exposed_ = ('is_set', 'set', 'clear', 'wait')


def _remote_attribute(name):
    return property(lambda self: self._callmethod('__getattribute__', (name,)))


@_forwards('wait', 'abort', 'reset')
class BarrierProxy(BaseProxy):
    _exposed_ = ('__getattribute__', 'wait', 'abort', 'reset')
    parties = _remote_attribute('parties')
    n_waiting = _remote_attribute('n_waiting')
    broken = _remote_attribute('broken')


class NamespaceProxy(BaseProxy):
    """Attribute access goes to the referent, except for names starting
    with '_' (the proxy's own state)."""
    _exposed_ = ('__getattribute__', '__setattr__', '__delattr__')

    def __getattr__(self, key):
        if key.startswith('_'):
            return object.__getattribute__(self, key)
        return _remote_call(self, '__getattribute__', key)

    def __setattr__(self, key, value):
        if key.startswith('_'):
            object.__setattr__(self, key, value)
        else:
            _remote_call(self, '__setattr__', key, value)

    def __delattr__(self, key):
        if key.startswith('_'):
            object.__delattr__(self, key)
        else:
            _remote_call(self, '__delattr__', key)


def _remote_call(proxy, methodname, *args):
    # Reached without the proxy's own attribute lookup, which
    # NamespaceProxy redirects to the referent.
    return object.__getattribute__(proxy, '_callmethod')(methodname, args)


@_forwards('get', 'set')
class ValueProxy(BaseProxy):
    _exposed_ = ('get', 'set')
    value = property(lambda self: self.get(), lambda self, v: self.set(v))
    __class_getitem__ = classmethod(types.GenericAlias)


def _in_place(methodname):
    """An augmented-assignment method that updates the referent and keeps
    the proxy bound to the name."""
    def update(self, value):
        self._callmethod(methodname, (value,))
        return self
    update.__name__ = update.__qualname__ = methodname
    return update


BaseListProxy = MakeProxyType('BaseListProxy', (
    '__add__', '__contains__', '__delitem__', '__getitem__', '__len__',
    '__mul__', '__reversed__', '__rmul__', '__setitem__',
    'append', 'clear', 'copy', 'count', 'extend', 'index', 'insert', 'pop',
    'remove', 'reverse', 'sort', '__imul__'))


class ListProxy(BaseListProxy):
    __iadd__ = _in_place('extend')
    __imul__ = _in_place('__imul__')
    __class_getitem__ = classmethod(types.GenericAlias)


_BaseDictProxy = MakeProxyType('_BaseDictProxy', (
    '__contains__', '__delitem__', '__getitem__', '__ior__', '__iter__',
    '__len__', '__or__', '__reversed__', '__ror__', '__setitem__',
    'clear', 'copy', 'fromkeys', 'get', 'items', 'keys', 'pop', 'popitem',
    'setdefault', 'update', 'values'))
_BaseDictProxy._method_to_typeid_ = {'__iter__': 'Iterator'}


class DictProxy(_BaseDictProxy):
    __ior__ = _in_place('__ior__')
    __class_getitem__ = classmethod(types.GenericAlias)


_BaseSetProxy = MakeProxyType('_BaseSetProxy', (
    '__and__', '__contains__', '__iand__', '__ior__', '__isub__', '__iter__',
    '__ixor__', '__len__', '__or__', '__rand__', '__ror__', '__rsub__',
    '__rxor__', '__sub__', '__xor__', '__ge__', '__gt__', '__le__', '__lt__',
    'add', 'clear', 'copy', 'difference', 'difference_update', 'discard',
    'intersection', 'intersection_update', 'isdisjoint', 'issubset',
    'issuperset', 'pop', 'remove', 'symmetric_difference',
    'symmetric_difference_update', 'union', 'update'))


class SetProxy(_BaseSetProxy):
    __ior__ = _in_place('__ior__')
    __iand__ = _in_place('__iand__')
    __ixor__ = _in_place('__ixor__')
    __isub__ = _in_place('__isub__')
    __class_getitem__ = classmethod(types.GenericAlias)


collections.abc.MutableSequence.register(BaseListProxy)
collections.abc.MutableMapping.register(_BaseDictProxy)
# (the standard package registers its set proxy as a MutableMapping:
# gh-142740)
collections.abc.MutableSet.register(_BaseSetProxy)

ArrayProxy = MakeProxyType('ArrayProxy', ('__len__', '__getitem__', '__setitem__'))

BasePoolProxy = MakeProxyType('PoolProxy', (
    'apply', 'apply_async', 'close', 'imap', 'imap_unordered', 'join',
    'map', 'map_async', 'starmap', 'starmap_async', 'terminate'))
BasePoolProxy._method_to_typeid_ = {
    'apply_async': 'AsyncResult',
    'map_async': 'AsyncResult',
    'starmap_async': 'AsyncResult',
    'imap': 'Iterator',
    'imap_unordered': 'Iterator',
}


class PoolProxy(BasePoolProxy):
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()
