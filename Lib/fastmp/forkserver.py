"""The forkserver start method's server: one process, started on first
use, that has imported the preload modules (by default the main module)
and forks a child for each request.

A request is a connection to the server's Unix socket (in the program's
private temp directory, mode 0600).  Client and server first prove to
each other that they know the server's secret key, with the
challenge-response of multiprocessing.connection (so that
`connection.Client(address, authkey=key)` passes it too); a client that
fails gets b'#FAILURE#' and the connection closed.  Then come the
descriptors, passed with SCM_RIGHTS: the child's data pipe, the pipe the
server reports the child's pid and exit status on, the "alive" pipe, the
resource tracker's pipe, and the descriptors the Process object needs
(DupFd).  The child reads the preparation data and the pickled Process
from its data pipe as a spawned child does (spawn._main).

The server stops when every process of the program has closed its copy of
the "alive" pipe's write end.  A process started through the server uses
the same server for the processes it starts.
"""
import atexit
import errno
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import warnings
# The server computes HMACs with the interpreter's own SHA-256 and compares
# them with hmac.compare_digest's constant-time comparison, without
# importing hmac: that loads OpenSSL, which every process forked from the
# server would carry (and each fork costs more with it mapped).
from _operator import _compare_digest
try:
    from _sha2 import sha256 as _sha256            # 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256 as _sha256      # 3.10 and 3.11
    except ImportError:                            # built without them
        from hashlib import sha256 as _sha256

from . import _dropin, _names, process, resource_tracker, spawn, util
from .context import reduction

__all__ = ['ensure_running', 'get_inherited_fds', 'connect_to_new_process',
           'set_forkserver_preload']

MAXFDS_TO_SEND = 256
SIGNED_STRUCT = struct.Struct('q')     # a pid or an exit status

_AUTHKEY_LENGTH = 32
# After the handshake, one byte says whether the requesting process runs
# with the drop-in aliasing (the server may have started before it was
# turned on).
_ALIASED, _PLAIN = b'A', b'-'
_REQUEST_TIMEOUT = 5.0   # seconds a client may take over its whole request
# What a module that fails to preload does (set_forkserver_preload's on_error).
_PRELOAD_ERROR_POLICIES = ('ignore', 'warn', 'fail')

# The handshake's messages, framed as multiprocessing.connection frames
# them: a 4-byte big-endian length, then the bytes.  Each side sends
# _CHALLENGE + _DIGEST + random bytes and expects _DIGEST + the HMAC-SHA256
# of everything after _CHALLENGE under the key, then answers _WELCOME or
# _FAILURE.  The server challenges first.  Only SHA-256 is spoken (the
# digest Client and Listener use on every version fastmp supports).
_FRAME_HEADER = struct.Struct('!i')
_CHALLENGE, _WELCOME, _FAILURE = b'#CHALLENGE#', b'#WELCOME#', b'#FAILURE#'
_DIGEST = b'{sha256}'
_NONCE_LENGTH = 40
_MAX_FRAME = 256         # no handshake message is longer
_HMAC_BLOCK = 64         # SHA-256's block size
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


def _hmac_sha256(key, message):
    """HMAC-SHA256 of `message` under `key` (RFC 2104)."""
    if len(key) > _HMAC_BLOCK:
        key = _sha256(key).digest()
    key = key.ljust(_HMAC_BLOCK, b'\0')
    inner = _sha256(key.translate(_INNER_PAD) + message).digest()
    return _sha256(key.translate(_OUTER_PAD) + inner).digest()


def _new_challenge():
    """The part of a challenge that its answer's HMAC covers."""
    return _DIGEST + os.urandom(_NONCE_LENGTH)


def _answer(key, challenge):
    return _DIGEST + _hmac_sha256(key, challenge)


class _ControlChannel:
    """Handshake frames over a control socket.  Every receive ends by
    `deadline` (time.monotonic(); None: waits as long as it takes) with
    TimeoutError; a peer that closes gives EOFError."""

    def __init__(self, sock, deadline=None):
        self.sock = sock
        self.deadline = deadline

    def _set_timeout(self):
        if self.deadline is not None:
            self.sock.settimeout(max(self.deadline - time.monotonic(), 0))

    def send(self, *messages, trailer=b''):
        """Send each message as a frame, then the raw bytes `trailer`, in
        one write."""
        frames = [_FRAME_HEADER.pack(len(m)) + m for m in messages]
        self.sock.sendall(b''.join(frames) + trailer)

    def recv_exactly(self, count):
        data = b''
        while len(data) < count:
            self._set_timeout()
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise EOFError('the other end closed the fork server\'s '
                               'control connection')
            data += chunk
        return data

    def recv(self):
        """One frame's bytes; OSError for a frame no handshake sends."""
        length, = _FRAME_HEADER.unpack(self.recv_exactly(_FRAME_HEADER.size))
        if not 0 <= length <= _MAX_FRAME:
            raise OSError('bad frame length %d on the fork server\'s '
                          'control connection' % length)
        return self.recv_exactly(length)

    def recvfds(self, size):
        self._set_timeout()
        return reduction.recvfds(self.sock, size)


def _import_main():
    """How the server's command line imports main().  On the drop-in it
    names the module as the program knows it, so that tools looking for
    the multiprocessing forkserver among the program's processes (loky's
    tests do) find it; importing fastmp first turns the alias on there."""
    if os.environ.get(_dropin.ENV_VAR) == '1':
        return 'import fastmp; from multiprocessing.forkserver import main; '
    return 'from fastmp.forkserver import main; '


class ForkServer(object):
    """This process's handle on the fork server."""

    def __init__(self):
        self._forkserver_address = None
        self._forkserver_alive_fd = None   # our write end of the alive pipe
        self._forkserver_authkey = None
        self._forkserver_pid = None        # set where the server was started
        self._inherited_fds = None         # in a child started by the server
        self._lock = threading.Lock()
        self._preload_modules = ['__main__']
        self._preload_on_error = 'ignore'

    def _stop(self):
        """Stop the server this process started (the test-suites use it)."""
        with self._lock:
            self._stop_unlocked()

    def _stop_unlocked(self):
        if self._forkserver_pid is None:
            return
        os.close(self._forkserver_alive_fd)   # the server sees EOF and exits
        self._forkserver_alive_fd = None
        try:
            os.waitpid(self._forkserver_pid, 0)
        except ChildProcessError:
            pass
        self._forget_server()

    def _forget_server(self):
        """Drop every reference to the current server, and its socket file
        if this process started it."""
        if self._forkserver_alive_fd is not None:
            os.close(self._forkserver_alive_fd)
        if self._forkserver_pid is not None:
            try:
                os.unlink(self._forkserver_address)
            except OSError:
                pass
        self._forkserver_address = None
        self._forkserver_alive_fd = None
        self._forkserver_authkey = None
        self._forkserver_pid = None

    def _after_fork_in_child(self):
        # A forked child shares its parent's server (it inherited the alive
        # pipe) but cannot wait for it; a thread may have held the lock.
        self._forkserver_pid = None
        self._lock = threading.Lock()

    def set_forkserver_preload(self, modules_names, *, on_error='ignore'):
        """Modules the server imports when it starts, so that the children
        it forks have them already.  A module that fails to import is
        skipped ('ignore'), skipped with an ImportWarning on the server's
        stderr ('warn'), or ends the server ('fail'), and with it every
        start through it."""
        if not all(type(name) is str for name in modules_names):
            raise TypeError('module_names must be a list of strings')
        if on_error not in _PRELOAD_ERROR_POLICIES:
            raise ValueError("on_error must be 'ignore', 'warn', or 'fail', "
                             "not %r" % (on_error,))
        self._preload_modules = modules_names
        self._preload_on_error = on_error

    def get_inherited_fds(self):
        """The descriptors sent along with this process's start request, in
        a process the server started; None elsewhere."""
        return self._inherited_fds

    def connect_to_new_process(self, fds):
        """Ask the server for a new child that receives `fds`.  Returns
        (status_r, data_w): the child's pid, then its exit status, can be
        read from status_r; the caller writes the preparation data and the
        pickled Process object to data_w."""
        if len(fds) + 4 >= MAXFDS_TO_SEND:
            raise ValueError('too many fds')
        self.ensure_running()
        try:
            try:
                return self._request_child(fds)
            except (ConnectionRefusedError, FileNotFoundError):
                # the server of our parent process is gone: start our own
                with self._lock:
                    if self._forkserver_pid is None:
                        self._forget_server()
                self.ensure_running()
                return self._request_child(fds)
        except (EOFError, ConnectionError) as exc:
            if self._preload_modules and self._preload_on_error == 'fail':
                _add_note(exc, 'Forkserver process may have crashed while '
                               "preloading modules (on_error='fail'); its "
                               'stderr says why.')
            raise

    def _request_child(self, fds):
        with socket.socket(socket.AF_UNIX) as client:
            client.setblocking(True)   # even under socket.setdefaulttimeout()
            client.connect(self._forkserver_address)
            status_r, status_w = os.pipe()
            data_r, data_w = os.pipe()
            try:
                _authenticate_server(_ControlChannel(client),
                                     self._forkserver_authkey)
                reduction.sendfds(client, [data_r, status_w,
                                           self._forkserver_alive_fd,
                                           resource_tracker.getfd(), *fds])
            except BaseException:
                util.close_fds(status_r, data_w)
                raise
            finally:
                util.close_fds(data_r, status_w)
        return status_r, data_w

    def ensure_running(self):
        """Start the server unless one is known: started by this process
        and still alive, or handed down by the process that started us."""
        with self._lock:
            resource_tracker.ensure_running()
            if self._forkserver_pid is not None:
                pid, _ = os.waitpid(self._forkserver_pid, os.WNOHANG)
                if not pid:
                    return
                self._forget_server()   # it died: start another
            elif self._forkserver_address is not None:
                return
            self._launch()

    def _launch(self):
        """Start a server process; called with the lock held."""
        authkey = os.urandom(_AUTHKEY_LENGTH)
        address = os.path.join(util.get_temp_dir(),
                               'forkserver-%s' % os.urandom(8).hex())
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            authkey_r, authkey_w = os.pipe()
            os.write(authkey_w, authkey)   # far below a pipe's capacity
            os.close(authkey_w)
            kwargs, sys_argv = self._preload_arguments()
            try:
                exe, argv = resource_tracker._helper_argv(
                    _import_main() +
                    'main(%d, %d, %r, authkey_r=%d, root_pid=%r, %s**%r)'
                    % (listener.fileno(), alive_r, self._preload_modules,
                       authkey_r, _names.root_pid,
                       '' if sys_argv is None else 'sys_argv=sys.argv[1:], ',
                       kwargs))
                # the program's argv follows the code as real arguments, so
                # that no argument grows past the system's limit on one
                pid = util.spawnv_passfds(
                    exe, argv + (sys_argv or []),
                    [listener.fileno(), alive_r, authkey_r])
            except BaseException:
                os.close(alive_w)
                os.unlink(address)
                raise
            finally:
                util.close_fds(alive_r, authkey_r)
        self._forkserver_address = address
        self._forkserver_alive_fd = alive_w
        self._forkserver_authkey = authkey
        self._forkserver_pid = pid

    def _preload_arguments(self):
        """(keyword arguments for main(), the program's sys.argv) for
        preloading: the sys.path to preload with, the program's main script
        when '__main__' is to be preloaded, the on_error policy.  ({}, None)
        without modules to preload."""
        if not self._preload_modules:
            return {}, None
        data = spawn.get_preparation_data('ignore')
        found = {'sys_path': data['sys_path']}
        if ('__main__' in self._preload_modules and
                'init_main_from_path' in data):
            found['main_path'] = data['init_main_from_path']
        if self._preload_on_error != 'ignore':
            found['on_error'] = self._preload_on_error
        return found, list(data['sys_argv'])


def _add_note(exc, note):
    """exc.add_note(note), also before 3.11 (where nothing prints notes)."""
    if hasattr(exc, 'add_note'):
        exc.add_note(note)
    else:
        exc.__notes__ = getattr(exc, '__notes__', []) + [note]


def _dropin_flag():
    from . import _dropin
    return _ALIASED if os.environ.get(_dropin.ENV_VAR) == '1' else _PLAIN


def _authenticate_server(channel, key):
    """The client's half of the handshake: answer the server's challenge
    and challenge it in one write, then check its verdict and answer; last
    the verdict on the server, with the drop-in flag.  AuthenticationError
    when either side's answer is wrong."""
    from .context import AuthenticationError
    challenge = channel.recv()
    if not challenge.startswith(_CHALLENGE + _DIGEST):
        raise AuthenticationError('the fork server did not send a SHA-256 '
                                  'challenge: %r' % (challenge,))
    ours = _new_challenge()
    channel.send(_answer(key, challenge[len(_CHALLENGE):]), _CHALLENGE + ours)
    if channel.recv() != _WELCOME:
        raise AuthenticationError('the fork server refused our key (digest '
                                  'sent was rejected)')
    if not _compare_digest(channel.recv(), _answer(key, ours)):
        channel.send(_FAILURE)
        raise AuthenticationError('the fork server does not know our key '
                                  '(digest received was wrong)')
    channel.send(_WELCOME, trailer=_dropin_flag())


#
# The server process
#

# Standard modules that fastmp imports only on use (spawned children start
# lighter) but that the standard package imports with itself, so that its
# fork server holds them.  Programs use them widely: the server imports
# them too, so its children need not each import them again.  (Only these:
# every module the server holds makes each of its forks dearer.)
_STANDARD_PRELOAD = ('contextlib', 'importlib', 'subprocess')


def _handle_preload(preload, main_path=None, sys_path=None, sys_argv=None,
                    on_error='ignore'):
    """Import what the children should inherit, with the program's sys.path
    and sys.argv.  A failure is handled as `on_error` says (see
    set_forkserver_preload); with 'ignore' the child that needs the module
    reports the error itself."""
    if not preload:
        return
    if sys_argv is not None:
        sys.argv[:] = sys_argv
    if sys_path is not None:
        sys.path[:] = sys_path
    me = process.current_process()
    if '__main__' in preload and main_path is not None:
        me._inheriting = True   # the main module must not start processes
        try:
            spawn.import_main_path(main_path)
        except Exception as exc:   # running the script may raise anything
            _preload_failed(on_error, '__main__ from %r' % (main_path,), exc)
        finally:
            del me._inheriting
    for name in preload:
        if name == '__main__':
            continue
        try:
            __import__(name)
        except ImportError as exc:
            _preload_failed(on_error, 'module %r' % (name,), exc)
    # what the preloaded code printed must not be flushed again by each child
    util._flush_std_streams()


def _preload_failed(on_error, what, exc):
    """Re-raise `exc` ('fail'), warn about it ('warn') or let it be."""
    if on_error == 'fail':
        raise exc
    if on_error == 'warn':
        warnings.warn('Failed to preload %s: %s' % (what, exc), ImportWarning,
                      stacklevel=3)


def _read_exactly(fd, count):
    """`count` bytes from `fd`; EOFError if it ends first."""
    data = b''
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError('unexpected EOF')
        data += chunk
    return data


def _authenticate_client(channel, key):
    """The server's half of the handshake, in the order a
    multiprocessing.connection.Client expects: challenge the client, send
    the verdict, answer its challenge, read its verdict.  True if the
    client knows `key`."""
    ours = _new_challenge()
    channel.send(_CHALLENGE + ours)
    if not _compare_digest(channel.recv(), _answer(key, ours)):
        channel.send(_FAILURE)
        return False
    channel.send(_WELCOME)
    theirs = channel.recv()
    if not theirs.startswith(_CHALLENGE + _DIGEST):
        return False
    channel.send(_answer(key, theirs[len(_CHALLENGE):]))
    return channel.recv() == _WELCOME


class _Server:
    """The server's state and event loop."""

    def __init__(self, listener, alive_r, authkey):
        self.listener = listener
        self.alive_r = alive_r
        self.authkey = authkey
        self.status_fds = {}      # child pid -> its status pipe write end
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # SIGCHLD only has to wake poll() up, through the wakeup fd
        self.old_handlers = {
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda *a: None),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        }
        signal.set_wakeup_fd(self.wake_w)

    def serve(self):
        """Serve requests until the alive pipe reaches EOF."""
        poller = select.poll()
        for fd in (self.listener.fileno(), self.alive_r, self.wake_r):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self.alive_r in ready:
                return   # every process of the program is gone
            if self.wake_r in ready:
                self._reap_children()
            if self.listener.fileno() in ready:
                try:
                    self._handle_request()
                except OSError as exc:
                    if exc.errno != errno.ECONNABORTED:
                        raise

    def _reap_children(self):
        """Report the exit status of every child that has ended."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status_w = self.status_fds.pop(pid, None)
            if status_w is None:
                warnings.warn('forkserver: waitpid returned unexpected '
                              'pid %d' % pid)
                continue
            try:
                write_signed(status_w, os.waitstatus_to_exitcode(status))
            except BrokenPipeError:
                pass   # the process that asked for this child is gone
            os.close(status_w)

    def _handle_request(self):
        """Accept one request; fork its child and report the pid."""
        conn, _ = self.listener.accept()
        with conn:
            channel = _ControlChannel(conn, time.monotonic() + _REQUEST_TIMEOUT)
            try:
                if not _authenticate_client(channel, self.authkey):
                    return   # not one of ours; its descriptors die with conn
                aliased = channel.recv_exactly(1) == _ALIASED
                fds = channel.recvfds(MAXFDS_TO_SEND + 1)
            except (EOFError, RuntimeError, OSError):
                return   # a broken request costs the client, not the server
        if len(fds) < 2 or len(fds) > MAXFDS_TO_SEND:
            for fd in fds:
                os.close(fd)   # the client reads EOF instead of a pid
            return
        data_r, status_w, *child_fds = fds
        pid = os.fork()
        if pid == 0:
            self._become_child(data_r, status_w, child_fds, aliased)
        try:
            write_signed(status_w, pid)
        except BrokenPipeError:
            pass
        self.status_fds[pid] = status_w
        for fd in [data_r, *child_fds]:
            os.close(fd)

    def _become_child(self, data_r, status_w, fds, aliased):
        """Run the requested process in the forked child, with the drop-in
        aliasing if its requester has it; never returns."""
        code = 1
        try:
            atexit._clear()   # the server's hooks are not the child's
            atexit.register(util._exit_function)
            signal.set_wakeup_fd(-1)
            for signum, handler in self.old_handlers.items():
                signal.signal(signum, handler)
            self.listener.close()
            for fd in [self.alive_r, self.wake_r, self.wake_w, status_w,
                       *self.status_fds.values()]:
                os.close(fd)
            (_forkserver._forkserver_alive_fd,
             resource_tracker._resource_tracker._fd,
             *_forkserver._inherited_fds) = fds
            if aliased:
                from . import _dropin
                _dropin.install()
            code = spawn._main(data_r, os.dup(data_r))
        except Exception:
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
        finally:
            atexit._run_exitfuncs()
            os._exit(code)


def main(listener_fd, alive_r, preload, main_path=None, sys_path=None,
         *, sys_argv=None, authkey_r=None, on_error='ignore', root_pid=None):
    """Run the fork server on the listening socket `listener_fd` until the
    alive pipe `alive_r` reaches EOF, after preloading (_handle_preload).
    The key clients must know is read from `authkey_r`; `root_pid` is the
    program's (see _names)."""
    if root_pid is not None:
        _names.adopt_root_pid(root_pid)   # before preloading runs any code
    authkey = b''
    if authkey_r is not None:
        authkey = _read_exactly(authkey_r, _AUTHKEY_LENGTH)
        os.close(authkey_r)
    util._close_stdin()   # first: preloading must not read the terminal
    for name in _STANDARD_PRELOAD:
        __import__(name)
    _handle_preload(preload, main_path, sys_path, sys_argv, on_error)
    with socket.socket(socket.AF_UNIX, fileno=listener_fd) as listener:
        _forkserver._forkserver_address = listener.getsockname()
        _forkserver._forkserver_authkey = authkey
        _Server(listener, alive_r, authkey).serve()


#
# Pids and exit statuses travel as 8-byte signed integers
#

def read_signed(fd):
    """Read one integer written by write_signed; EOFError at EOF."""
    return SIGNED_STRUCT.unpack(_read_exactly(fd, SIGNED_STRUCT.size))[0]


def write_signed(fd, n):
    """Write the integer `n` to `fd` (a pipe: one atomic write)."""
    os.write(fd, SIGNED_STRUCT.pack(n))


_forkserver = ForkServer()
os.register_at_fork(after_in_child=_forkserver._after_fork_in_child)
ensure_running = _forkserver.ensure_running
get_inherited_fds = _forkserver.get_inherited_fds
connect_to_new_process = _forkserver.connect_to_new_process
set_forkserver_preload = _forkserver.set_forkserver_preload
