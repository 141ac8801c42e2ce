"""Connections between processes: Pipe(), Listener and Client over Unix and
TCP sockets with HMAC authentication, and wait().

The Connection is the C type fastmp._fastmp.Connection.  Its frames and
the authentication handshake here are byte-compatible with the standard
multiprocessing.connection, so either end of a pipe or socket may be the
standard package.  The handshake negotiates the digest as CPython 3.12+
does, on every supported interpreter, and still answers (and accepts) the
HMAC-MD5 of older peers.

Where fastmp differs from the standard package:
- a peer that closes the connection in the middle of a message gives
  EOFError (the standard package raises OSError when the header or the
  payload is cut short);
- a frame header announcing a negative length, more than a bytes object
  can hold or more than the machine's memory raises OSError before
  anything is allocated, and the connection stops reading, as for a
  message over maxlength;
- pickling a Connection other than through ForkingPickler raises TypeError;
- Pipe(duplex=True) is a socketpair whose messages travel through a
  shared-memory ring per direction (1 MiB, larger messages stream through
  it), so both ends must be fastmp Connections made by Pipe() (Listener,
  Client and Connection(fd) keep the standard wire).  The socket holds one
  byte while messages are waiting, so fileno() is readable exactly then;
  a sender learns that its reader is gone (BrokenPipeError) when it sends
  to an empty ring, or once the ring is full, rather than at once;
  send_handle()/recv_handle() work on such an end between messages as long
  as the receiver takes handles and messages in the order they were sent;
- through a pipe, a message larger than the pipe's capacity is handed over
  by reference (vmsplice) and send_bytes() returns once the reader has
  read all of it, not just all but the last pipe-full;
- a receiver (recv*, poll with a timeout, wait) that finds nothing waiting
  spins for up to 50 microseconds, GIL released, before it sleeps; it
  stops spinning on a connection whose spins keep failing, and while the
  CPUs are oversubscribed (a Pipe() end spins up to 20 microseconds,
  yielding the CPU, on a budget that shrinks while its peer is idle).
"""
import os
import secrets
import socket
import sys

from . import _fastmp, util
from ._fastmp import (AuthenticationError, BufferTooShort,  # noqa: F401 (public here too)
                      Connection, wait_readable)
from .context import reduction

__all__ = ['Client', 'Listener', 'Pipe', 'wait']

# the standard package's value on the running interpreter (64 KiB from 3.14)
BUFSIZE = 64 * 1024 if sys.version_info >= (3, 14) else 8192
# A generous limit for local connections, kept for programs that read it.
CONNECTION_TIMEOUT = 20.0

families = ['AF_INET']
if hasattr(socket, 'AF_UNIX'):
    families.append('AF_UNIX')
default_family = families[-1]

# The standard package's base class of its Connection types; ours is one type.
_ConnectionBase = Connection

def Pipe(duplex=True):
    """Two connected Connections.  With duplex=False the first only
    receives and the second only sends (an os.pipe); otherwise both do
    (an AF_UNIX socketpair, the messages going through shared memory)."""
    if not duplex:
        read_fd, write_fd = os.pipe()
        return Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    here, there = _socket_pipe()
    here._pair_rings(there, _fastmp.RING_SIZE)
    return here, there


def _socket_pipe():
    """A duplex pair on an AF_UNIX socketpair alone: the standard wire,
    for ends that may be rebuilt from their descriptor by code other
    than fastmp's (see context.BaseContext.Pipe)."""
    ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in ends:
        end.setblocking(True)      # even under socket.setdefaulttimeout()
    return Connection(ends[0].detach()), Connection(ends[1].detach())


#
# Addresses
#

def arbitrary_address(family):
    """A fresh address that a Listener of `family` can bind to."""
    if family == 'AF_INET':
        return ('localhost', 0)
    if family == 'AF_UNIX':
        return os.path.join(util.get_temp_dir(), 'listener-' + secrets.token_hex(6))
    raise ValueError('unrecognized family')


def address_type(address):
    """The family ('AF_INET', 'AF_UNIX' or 'AF_PIPE') an address belongs to."""
    if type(address) is tuple:
        return 'AF_INET'
    if type(address) is str and address.startswith('\\\\'):
        return 'AF_PIPE'
    if type(address) is str or util.is_abstract_socket_namespace(address):
        return 'AF_UNIX'
    raise ValueError('address type of %r unrecognized' % (address,))


def _check_family(family):
    # any socket family the platform has (AF_INET6 too); never AF_PIPE
    if family == 'AF_PIPE' or not hasattr(socket, family):
        raise ValueError('Family %s is not recognized.' % (family,))


def _check_authkey_type(authkey):
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError('authkey should be a byte string')


class Listener(object):
    """A socket bound to `address` and listening.  accept() returns a
    Connection, after the challenge-response handshake when `authkey` is
    given."""

    def __init__(self, address=None, family=None, backlog=1, authkey=None):
        if not family:
            family = address_type(address) if address else default_family
        _check_family(family)
        _check_authkey_type(authkey)
        address = address or arbitrary_address(family)
        sock = socket.socket(getattr(socket, family))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(True)
            sock.bind(address)
            sock.listen(backlog)
            self._address = sock.getsockname()
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._family = family
        self._authkey = authkey
        self._last_accepted = None
        self._unlink = None
        if family == 'AF_UNIX' and not util.is_abstract_socket_namespace(address):
            # the socket file outlives the socket: remove it on close or exit
            self._unlink = util.Finalize(self, os.unlink, args=(address,), exitpriority=0)

    def accept(self):
        """Wait for a client; return the Connection to it."""
        if self._socket is None:
            raise OSError('listener is closed')
        sock, self._last_accepted = self._socket.accept()
        sock.setblocking(True)
        conn = Connection(sock.detach())
        if self._authkey is not None:
            try:
                deliver_challenge(conn, self._authkey)
                answer_challenge(conn, self._authkey)
            except BaseException:
                conn.close()
                raise
        return conn

    def close(self):
        """Stop listening (and remove a Unix socket's file)."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        try:
            sock.close()
        finally:
            unlink, self._unlink = self._unlink, None
            if unlink is not None:
                unlink()

    @property
    def address(self):
        return self._address

    @property
    def last_accepted(self):
        return self._last_accepted

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()


def SocketClient(address):
    """A Connection over a socket connected to `address`."""
    sock = socket.socket(getattr(socket, address_type(address)))
    try:
        sock.setblocking(True)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return Connection(sock.detach())


def Client(address, family=None, authkey=None):
    """A Connection to the Listener at `address`, authenticated with
    `authkey` when one is given."""
    _check_family(family or address_type(address))
    _check_authkey_type(authkey)
    conn = SocketClient(address)
    if authkey is not None:
        try:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
        except BaseException:
            conn.close()
            raise
    return conn


#
# Authentication.  The server sends b'#CHALLENGE#' + '{digest}' + random
# bytes; the client answers '{digest}' + HMAC(authkey, challenge); the
# server replies b'#WELCOME#' or b'#FAILURE#'.  Then the roles swap.  A
# pre-3.12 server sends 20 bare random bytes and expects a bare 16-byte
# HMAC-MD5; a pre-3.12 client answers any challenge that way.
#

MESSAGE_LENGTH = 40
CHALLENGE = _CHALLENGE = b'#CHALLENGE#'
WELCOME = _WELCOME = b'#WELCOME#'
FAILURE = _FAILURE = b'#FAILURE#'

_ALLOWED_DIGESTS = frozenset({b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384'})
_MAX_DIGEST_LEN = max(len(name) for name in _ALLOWED_DIGESTS)
_LEGACY_CHALLENGE_LEN = 20
_LEGACY_MD5_LEN = 16
_REPLY_LIMIT = 256          # no handshake message is longer


def _split_digest(message):
    """(digest name, payload) of a challenge or a response; the name is ''
    for the bare legacy forms, which only have the lengths 20 and 16."""
    if len(message) in (_LEGACY_CHALLENGE_LEN, _LEGACY_MD5_LEN):
        return '', message
    if message.startswith(b'{'):
        end = message.find(b'}', 1, _MAX_DIGEST_LEN + 2)
        if end > 0 and message[1:end] in _ALLOWED_DIGESTS:
            return message[1:end].decode('ascii'), message[end + 1:]
    raise AuthenticationError('unsupported message length, missing digest prefix, '
                              'or unsupported digest: message=%r' % (message,))


def _create_response(authkey, message):
    """The answer to the challenge `message`: a bare HMAC-MD5 for a legacy
    challenge, else '{digest}' + the HMAC with the digest it names.  The
    MAC covers the whole message, digest prefix included."""
    import hmac
    digest = _split_digest(message)[0]
    if not digest:
        try:
            return hmac.new(authkey, message, 'md5').digest()
        except ValueError:
            digest = 'sha256'       # no MD5 here (FIPS): answer the modern way
    mac = hmac.new(authkey, message, digest).digest()
    return b'{' + digest.encode('ascii') + b'}' + mac


def _verify_challenge(authkey, message, response):
    """Raise AuthenticationError unless `response` is a valid answer to our
    challenge `message`.  A bare response is taken as HMAC-MD5."""
    import hmac
    digest, mac = _split_digest(response)
    digest = digest or 'md5'
    try:
        expected = hmac.new(authkey, message, digest).digest()
    except ValueError:
        raise AuthenticationError('response_digest=%r unsupported' % (digest,))
    if len(mac) != len(expected):
        raise AuthenticationError('expected %r of length %d got %d'
                                  % (digest, len(expected), len(mac)))
    if not hmac.compare_digest(expected, mac):
        raise AuthenticationError('digest received was wrong')


def _require_bytes(authkey):
    if not isinstance(authkey, bytes):
        raise ValueError('Authkey must be bytes, not %s' % (type(authkey),))


def deliver_challenge(connection, authkey, digest_name='sha256'):
    """Challenge the peer to prove it knows `authkey` (server side)."""
    _require_bytes(authkey)
    message = b'{' + digest_name.encode('ascii') + b'}' + os.urandom(MESSAGE_LENGTH)
    connection.send_bytes(_CHALLENGE + message)
    response = connection.recv_bytes(_REPLY_LIMIT)
    try:
        _verify_challenge(authkey, message, response)
    except AuthenticationError:
        connection.send_bytes(_FAILURE)
        raise
    connection.send_bytes(_WELCOME)


def answer_challenge(connection, authkey):
    """Prove to the peer that we know `authkey` (client side)."""
    _require_bytes(authkey)
    message = connection.recv_bytes(_REPLY_LIMIT)
    if not message.startswith(_CHALLENGE):
        raise AuthenticationError('Protocol error, expected challenge: message=%r' % (message,))
    message = message[len(_CHALLENGE):]
    if len(message) < _LEGACY_CHALLENGE_LEN:
        raise AuthenticationError('challenge too short: %d bytes' % len(message))
    connection.send_bytes(_create_response(authkey, message))
    if connection.recv_bytes(_REPLY_LIMIT) != _WELCOME:
        raise AuthenticationError('digest sent was rejected')


#
# XML-RPC serialization (the managers' 'xmlrpclib' serializer)
#

class ConnectionWrapper(object):
    """A connection whose send() and recv() use `dumps` and `loads` in place
    of pickle; the other methods are the wrapped connection's."""

    def __init__(self, conn, dumps, loads):
        self._conn = conn
        self._dumps = dumps
        self._loads = loads
        for name in ('fileno', 'close', 'poll', 'recv_bytes', 'send_bytes'):
            setattr(self, name, getattr(conn, name))

    def send(self, obj):
        self._conn.send_bytes(self._dumps(obj))

    def recv(self):
        return self._loads(self._conn.recv_bytes())


def _xml_dumps(obj):
    import xmlrpc.client
    return xmlrpc.client.dumps((obj,), None, None, None, 1).encode('utf-8')


def _xml_loads(data):
    import xmlrpc.client
    (obj,), _method = xmlrpc.client.loads(data.decode('utf-8'))
    return obj


class XmlListener(Listener):
    def accept(self):
        return ConnectionWrapper(Listener.accept(self), _xml_dumps, _xml_loads)


def XmlClient(*args, **kwds):
    return ConnectionWrapper(Client(*args, **kwds), _xml_dumps, _xml_loads)


#
# Waiting on several objects
#

def wait(object_list, timeout=None):
    """Wait until some of object_list (Connections, sockets, process
    sentinels, file descriptors or objects with fileno()) can be read, or
    timeout seconds pass (None: without limit).  Return those that can,
    in the order given (empty on timeout)."""
    objects = list(object_list)
    fds = [obj if isinstance(obj, int) else obj.fileno() for obj in objects]
    return [objects[i] for i in wait_readable(fds, timeout)]


#
# Connections travel to other processes as a duplicate of their descriptor
#

def rebuild_connection(df, readable, writable, rings=None):
    conn = Connection(df.detach(), readable, writable)
    if rings is not None:
        conn._attach_rings(*(dup.detach() for dup in rings))
    return conn


def reduce_connection(conn):
    dup = reduction.DupFd(conn.fileno())
    ring_fds = conn._ring_fds()
    if ring_fds is None:
        return rebuild_connection, (dup, conn.readable, conn.writable)
    rings = tuple(reduction.DupFd(fd) for fd in ring_fds)
    return rebuild_connection, (dup, conn.readable, conn.writable, rings)


reduction.register(Connection, reduce_connection)
