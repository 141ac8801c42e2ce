"""Pickling for fastmp: the ForkingPickler with its table of registered
reducers, fd passing over Unix sockets (sendfds/recvfds, send_handle/
recv_handle), DupFd, and reducers that make bound methods, method
descriptors, partials and sockets picklable.

ForkingPickler.dumps hands the common case to the C core, which keeps one
pickler and reuses it: several times cheaper for a small message than
building a fresh pickler (and copying the dispatch table) on every call.
"""
from abc import ABCMeta
import array
import copyreg
import functools
import io
import os
import pickle
import socket
import sys

from . import _fastmp, context

__all__ = ['send_handle', 'recv_handle', 'ForkingPickler', 'register', 'dump',
           'DupFd', 'sendfds', 'recvfds']

HAVE_SEND_HANDLE = (hasattr(socket, 'CMSG_LEN') and
                    hasattr(socket, 'SCM_RIGHTS') and
                    hasattr(socket.socket, 'sendmsg'))

# The receiver of descriptors acknowledges them with one byte that the
# sender waits for, where the running interpreter's standard package does,
# so that either package may be at either end: from 3.14 everywhere, and
# before on macOS, which may drop descriptors still in flight when their
# sender closes its copies (bpo-14669).
ACKNOWLEDGE = sys.version_info >= (3, 14) or sys.platform == 'darwin'
_ACK = b'A'
# A Pipe() end's socket also carries its peer's readiness bells (see
# fastmp.connection.Pipe).
_BELL = b'\0'
_RECV_FLAGS = getattr(socket, 'MSG_CMSG_CLOEXEC', 0)


class ForkingPickler(pickle.Pickler):
    """A Pickler that also applies the reducers registered with register()
    (on top of copyreg's), used for everything fastmp sends to another
    process."""
    _extra_reducers = {}
    _copyreg_dispatch_table = copyreg.dispatch_table

    def __init__(self, *args):
        super().__init__(*args)
        # registered reducers take precedence over the standard package's,
        # which take precedence over copyreg's
        self.dispatch_table = {**self._copyreg_dispatch_table,
                               **_standard_reducers(),
                               **self._extra_reducers}

    @classmethod
    def register(cls, type, reduce):
        """Pickle instances of `type` with `reduce(obj)`."""
        cls._extra_reducers[type] = reduce

    @classmethod
    def dumps(cls, obj, protocol=None):
        """Pickle `obj` with the registered reducers; return a bytes-like
        object."""
        if cls is ForkingPickler and protocol is None:
            # The C core keeps one pickler and reuses it (its dispatch
            # table follows register() and copyreg live); it builds a fresh
            # ForkingPickler itself when that one is busy.
            return _fastmp.forking_dumps(obj)
        out = io.BytesIO()
        pickler = cls(out, protocol)
        pickler.dump(obj)
        return out.getbuffer()

    loads = pickle.loads


register = ForkingPickler.register


def _standard_reducers():
    """The reducers registered with the standard package's ForkingPickler
    when that package is loaded beside fastmp (not replaced by it), so that
    its objects (a Connection inside a standard Queue) sent to a fastmp
    child are pickled the way it pickles them.  {} otherwise."""
    standard = sys.modules.get('multiprocessing.reduction')
    if standard is None or standard is sys.modules[__name__]:
        return {}
    return getattr(getattr(standard, 'ForkingPickler', None), '_extra_reducers', {})


def dump(obj, file, protocol=None):
    """pickle.dump() with the registered reducers."""
    ForkingPickler(file, protocol).dump(obj)


#
# Passing file descriptors over a Unix socket (SCM_RIGHTS)
#

def sendfds(sock, fds):
    """Send the descriptors `fds` over the AF_UNIX socket `sock`.  One data
    byte travels with them: the count modulo 256, checked by recvfds.
    Where ACKNOWLEDGE, wait for the receiver's acknowledgement."""
    _sendfds(sock, fds, None)


def _sendfds(sock, fds, pipe_end):
    """sendfds over the socket of `pipe_end` (see _pipe_end), whose peer's
    bells rung before its acknowledgement are read on the way to it (the
    peer rings again behind it, see _recvfds)."""
    fds = array.array('i', fds)
    sock.sendmsg([bytes([len(fds) & 0xff])],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    if not ACKNOWLEDGE:
        return
    ack = sock.recv(1)
    while ack == _BELL and pipe_end is not None:
        ack = sock.recv(1)
    if ack != _ACK:
        raise RuntimeError('the receiver did not acknowledge the descriptors')


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def recvfds(sock, size):
    """Receive `size` descriptors sent by sendfds over `sock`; return them
    as a list of ints.  EOFError if the peer closed; RuntimeError (with
    any descriptors that did arrive closed) if the message is malformed."""
    return _recvfds(sock, size, None)


def _recvfds(sock, size, pipe_end):
    """recvfds over the socket of `pipe_end` (see _pipe_end).  While its
    ring holds messages, a lone bell first is taken out of the way; while
    its own messages wait in the peer's ring, it rings again behind its
    acknowledgement, since the sender reads that bell on the way to it."""
    itemsize = array.array('i').itemsize
    bell = pipe_end is not None and pipe_end._bell_rung()
    msg, ancdata, _flags, _addr = sock.recvmsg(
        1, socket.CMSG_SPACE(size * itemsize), _RECV_FLAGS)
    if bell and msg == _BELL and not ancdata:
        msg, ancdata, _flags, _addr = sock.recvmsg(
            1, socket.CMSG_SPACE(size * itemsize), _RECV_FLAGS)
    if not msg and not ancdata:
        raise EOFError
    fds = array.array('i')
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % itemsize])
    fds = list(fds)
    if ACKNOWLEDGE:
        rering = pipe_end is not None and pipe_end._peer_bell_rung()
        sock.sendall(_ACK + _BELL if rering else _ACK)
    if len(ancdata) != 1 or not fds or not msg or len(fds) & 0xff != msg[0]:
        _close_all(fds)
        raise RuntimeError('received a malformed descriptor message '
                           '(%d control items, %d descriptors)'
                           % (len(ancdata), len(fds)))
    return fds


def _pipe_end(conn):
    """`conn` if it is a Pipe() end whose socket carries readiness bells
    beside the descriptors (see fastmp.connection.Pipe), else None."""
    ring_fds = getattr(conn, '_ring_fds', None)
    return conn if ring_fds is not None and ring_fds() is not None else None


def _borrowed_socket(conn):
    """A socket object over `conn`'s descriptor, detached (not closed) when
    the caller is done with it."""
    return socket.socket(fileno=conn.fileno())


def send_handle(conn, handle, destination_pid):
    """Send the descriptor `handle` over the Unix-socket connection `conn`."""
    sock = _borrowed_socket(conn)
    try:
        _sendfds(sock, [handle], _pipe_end(conn))
    finally:
        sock.detach()


def recv_handle(conn):
    """Receive one descriptor sent with send_handle over `conn`."""
    sock = _borrowed_socket(conn)
    try:
        return _recvfds(sock, 1, _pipe_end(conn))[0]
    finally:
        sock.detach()


def DupFd(fd):
    """A picklable stand-in for descriptor `fd`; its detach() gives the
    receiving process its own copy.  While a process is being started the
    starter carries it; otherwise the resource sharer does."""
    popen_obj = context.get_spawning_popen()
    if popen_obj is not None:
        return popen_obj.DupFd(popen_obj.duplicate_for_child(fd))
    if not HAVE_SEND_HANDLE:
        raise ValueError('this platform cannot pass descriptors '
                         '(no SCM_RIGHTS)')
    from . import resource_sharer
    return resource_sharer.DupFd(fd)


#
# Reducers for callables and sockets that plain pickle refuses
#

def _reduce_method(m):
    # A bound method is rebuilt by looking its name up on its object again.
    return getattr, (m.__self__, m.__func__.__name__)


def _reduce_method_descriptor(m):
    return getattr, (m.__objclass__, m.__name__)


def _rebuild_partial(func, args, keywords):
    return functools.partial(func, *args, **keywords)


def _reduce_partial(p):
    return _rebuild_partial, (p.func, p.args, p.keywords or {})


def _rebuild_socket(df, family, type, proto):
    return socket.socket(family, type, proto, fileno=df.detach())


def _reduce_socket(s):
    return _rebuild_socket, (DupFd(s.fileno()), s.family, s.type, s.proto)


class _Sample:
    def method(self):
        pass


_BOUND_METHOD = type(_Sample().method)
_METHOD_DESCRIPTORS = (type(list.append), type(int.__add__))


def _register_builtin_reducers():
    register(_BOUND_METHOD, _reduce_method)
    for descriptor_type in _METHOD_DESCRIPTORS:
        register(descriptor_type, _reduce_method_descriptor)
    register(functools.partial, _reduce_partial)
    register(socket.socket, _reduce_socket)


_register_builtin_reducers()


class AbstractReducer(metaclass=ABCMeta):
    """Base for a replacement reduction module (see context.reducer): it
    exposes this module's functions (set below) and re-registers its
    reducers."""

    def __init__(self, *args):
        _register_builtin_reducers()


for _name in ('ForkingPickler', 'register', 'dump', 'send_handle',
              'recv_handle', 'sendfds', 'recvfds', 'DupFd', '_reduce_method',
              '_reduce_method_descriptor', '_rebuild_partial',
              '_reduce_socket', '_rebuild_socket'):
    setattr(AbstractReducer, _name, globals()[_name])
del _name
