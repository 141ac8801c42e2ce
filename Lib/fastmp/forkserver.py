"""The forkserver start method's server: one process, started on first
use, that has imported the preload modules (by default the main module)
and forks a child for each request.

A request is a connection to the server's Unix socket (in the program's
private temp directory, mode 0600) that carries a 32-byte secret, which
the server checks before anything else, then descriptors passed with
SCM_RIGHTS: the child's data pipe, the pipe the server reports the
child's pid and exit status on, the "alive" pipe, the resource tracker's
pipe, and the descriptors the Process object needs (DupFd).  The child
reads the preparation data and the pickled Process from its data pipe as
a spawned child does (spawn._main).

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
import warnings
# hmac.compare_digest's constant-time comparison, without importing hmac:
# that loads OpenSSL, which every child forked from the server would carry
from _operator import _compare_digest

from . import _dropin, process, resource_tracker, spawn, util
from .context import reduction

__all__ = ['ensure_running', 'get_inherited_fds', 'connect_to_new_process',
           'set_forkserver_preload']

MAXFDS_TO_SEND = 256
SIGNED_STRUCT = struct.Struct('q')     # a pid or an exit status

_AUTHKEY_LENGTH = 32
# After the secret, one byte says whether the requesting process runs with
# the drop-in aliasing (the server may have started before it was turned on).
_ALIASED, _PLAIN = b'A', b'-'
_REQUEST_TIMEOUT = 5.0   # seconds a client may take to send its request


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

    def set_forkserver_preload(self, modules_names):
        """Modules the server imports when it starts, so that the children
        it forks have them already."""
        if not all(type(name) is str for name in modules_names):
            raise TypeError('module_names must be a list of strings')
        self._preload_modules = modules_names

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
            return self._request_child(fds)
        except (ConnectionRefusedError, FileNotFoundError):
            # the server of our parent process is gone: start our own
            with self._lock:
                if self._forkserver_pid is None:
                    self._forget_server()
            self.ensure_running()
            return self._request_child(fds)

    def _request_child(self, fds):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(self._forkserver_address)
            status_r, status_w = os.pipe()
            data_r, data_w = os.pipe()
            try:
                client.sendall(self._forkserver_authkey + _dropin_flag())
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
            try:
                exe, argv = resource_tracker._helper_argv(
                    _import_main() +
                    'main(%d, %d, %r, authkey_r=%d, **%r)'
                    % (listener.fileno(), alive_r, self._preload_modules,
                       authkey_r, self._main_module_data()))
                pid = util.spawnv_passfds(
                    exe, argv, [listener.fileno(), alive_r, authkey_r])
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

    def _main_module_data(self):
        """Keyword arguments for main(): the sys.path to preload with, and
        the program's main script when '__main__' is to be preloaded."""
        if not self._preload_modules:
            return {}
        data = spawn.get_preparation_data('ignore')
        found = {'sys_path': data['sys_path']}
        if ('__main__' in self._preload_modules and
                'init_main_from_path' in data):
            found['main_path'] = data['init_main_from_path']
        return found


def _dropin_flag():
    from . import _dropin
    return _ALIASED if os.environ.get(_dropin.ENV_VAR) == '1' else _PLAIN


#
# The server process
#

# Standard modules that fastmp imports only on use (spawned children start
# lighter) but that the standard package imports with itself, so that its
# fork server holds them.  Programs use them widely: the server imports
# them too, so its children need not each import them again.  (Only these:
# every module the server holds makes each of its forks dearer.)
_STANDARD_PRELOAD = ('contextlib', 'importlib', 'subprocess')


def _preload(preload, main_path, sys_path):
    """Import what the children should inherit.  A module that fails to
    import is skipped: the child that needs it will report the error."""
    if sys_path is not None:
        sys.path[:] = sys_path
    me = process.current_process()
    if '__main__' in preload and main_path is not None:
        me._inheriting = True   # the main module must not start processes
        try:
            spawn.import_main_path(main_path)
        except Exception:
            pass
        finally:
            del me._inheriting
    for name in preload:
        if name == '__main__':
            continue
        try:
            __import__(name)
        except ImportError:
            pass


def _read_exactly(fd, count):
    """`count` bytes from `fd`; EOFError if it ends first."""
    data = b''
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError('unexpected EOF')
        data += chunk
    return data


def _recv_exactly(sock, count):
    data = b''
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError('client closed before sending its request')
        data += chunk
    return data


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
            conn.settimeout(_REQUEST_TIMEOUT)
            try:
                proof = _recv_exactly(conn, _AUTHKEY_LENGTH + 1)
                if not _compare_digest(proof[:-1], self.authkey):
                    return   # not one of ours; its descriptors die with conn
                aliased = proof[-1:] == _ALIASED
                fds = reduction.recvfds(conn, MAXFDS_TO_SEND + 1)
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
         *, authkey_r=None):
    """Run the fork server on the listening socket `listener_fd` until the
    alive pipe `alive_r` reaches EOF.  The secret clients must present is
    read from `authkey_r`."""
    authkey = b''
    if authkey_r is not None:
        authkey = _read_exactly(authkey_r, _AUTHKEY_LENGTH)
        os.close(authkey_r)
    util._close_stdin()   # first: preloading must not read the terminal
    for name in _STANDARD_PRELOAD:
        __import__(name)
    if preload:
        _preload(preload, main_path, sys_path)
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
