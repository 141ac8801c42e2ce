"""The resource tracker: a helper process that removes the named kernel
objects (named semaphores, shared-memory segments, folders) a program
registered and did not unregister before it ended.

Every process of the program holds the write end of one pipe to the
tracker and sends it one-line messages `REGISTER:name:type` and
`UNREGISTER:name:type`; a name such a line cannot carry (a newline, or not
ASCII) travels as a line of JSON with the name's UTF-8 bytes in base64,
as the standard package sends it.  When the last of them is gone, however it ended
(normal exit, exception, SIGKILL of the whole process tree), the tracker
reads EOF, warns about what is left and unlinks it.

The tracker runs in a session of its own (posix_spawn with setsid, so
atomically), which keeps it out of reach of a killpg() of the program's
process group, and it ignores SIGINT and SIGTERM.
"""
import os
import sys
import threading

from . import spawn, util

__all__ = ['ensure_running', 'register', 'unregister']


def _warn(message):
    # warnings is imported only when there is something to say: every
    # spawned child imports this module, and starts faster without it
    import warnings
    warnings.warn(message)


def _tracker_signals():
    """The signals the tracker ignores: those a user sends a whole
    program.  signal is imported here, not at the top: every spawned child
    imports this module, and starts faster without it."""
    import signal
    return (signal.SIGINT, signal.SIGTERM)

# POSIX makes a pipe write of at most PIPE_BUF (>= 512) bytes atomic, so
# messages from many processes never interleave.
_MAX_MESSAGE = 512
# POSIX limits the names of semaphores and shared-memory segments to
# NAME_MAX bytes (255 on Linux), which keeps a JSON message in base64
# well under _MAX_MESSAGE.
_MAX_NAME_BYTES = 255


def _simple_message(cmd, name, rtype):
    """`cmd:name:type`, or None if the line cannot carry the message."""
    if '\n' in name + rtype or ':' in rtype or not (name + rtype).isascii():
        return None
    return ('%s:%s:%s\n' % (cmd, name, rtype)).encode('ascii')


def _json_message(cmd, name, rtype):
    """The JSON line for a message: any name, its bytes in base64."""
    import base64
    import json
    raw = name.encode('utf-8', 'surrogateescape')
    if len(raw) > _MAX_NAME_BYTES:
        raise ValueError('resource name too long for the resource tracker: '
                         '%d bytes, the limit is %d'
                         % (len(raw), _MAX_NAME_BYTES))
    fields = {'cmd': cmd, 'rtype': rtype,
              'base64_name': base64.urlsafe_b64encode(raw).decode('ascii')}
    return (json.dumps(fields, ensure_ascii=True, separators=(',', ':'))
            + '\n').encode('ascii')


def _decode(line):
    """(command, name, type) of a message line in either form."""
    if not line.startswith(b'{'):
        cmd, _, rest = line.decode('ascii').rstrip('\n').partition(':')
        name, _, rtype = rest.rpartition(':')
        return cmd, name, rtype
    import base64
    import binascii
    import json
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError('malformed resource tracker message %r' % (line,))
    cmd, rtype = fields.get('cmd'), fields.get('rtype')
    encoded = fields.get('base64_name', '')
    if not all(isinstance(v, str) for v in (cmd, rtype, encoded)):
        raise ValueError('malformed resource tracker message %r' % (line,))
    try:
        raw = base64.urlsafe_b64decode(encoded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError('malformed resource name in message %r'
                         % (line,)) from exc
    return cmd, raw.decode('utf-8', 'surrogateescape'), rtype

# The folder holding the fastmp package, put on the helper processes'
# sys.path so they start even when the program found fastmp through a path
# of its own.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _helper_argv(code):
    """(executable, argv) that run the Python source `code` in a fresh
    interpreter with this one's flags, able to import fastmp.  The helper
    processes (tracker, forkserver) start this way."""
    exe = spawn.get_executable() or sys.executable
    prelude = 'import sys; sys.path.append(%r); ' % (_PACKAGE_ROOT,)
    argv = [exe] + util._args_from_interpreter_flags()
    return exe, argv + ['-c', prelude + code]


def _refuse_noop(name):
    raise RuntimeError('the "noop" resource type is only for probes; '
                       'nothing may be registered under it')


def _unlink_semaphore(name):
    # fastmp's own semaphores when the C core provides an unlink for them,
    # otherwise POSIX named semaphores as the standard package makes them.
    from . import _fastmp
    unlink = getattr(_fastmp, 'sem_unlink', None)
    if unlink is None:
        import _multiprocessing
        unlink = _multiprocessing.sem_unlink
    unlink(name)


def _unlink_shared_memory(name):
    import _posixshmem
    _posixshmem.shm_unlink(name)


def _remove_folder(name):
    import shutil
    shutil.rmtree(name)


def _forget(name):
    pass


# Resource type -> how a leaked object of that type is removed.  The keys
# are those of the running version's standard package (its test-suite
# walks them); the tracker also accepts the types in _MORE_CLEANUP_FUNCS.
_CLEANUP_FUNCS = {
    'noop': _refuse_noop,
    'semaphore': _unlink_semaphore,
    'shared_memory': _unlink_shared_memory,
}
_MORE_CLEANUP_FUNCS = {
    'dummy': _forget,           # the test-suites' stand-in resource
    'folder': _remove_folder,
}
if sys.version_info >= (3, 13):
    _CLEANUP_FUNCS['dummy'] = _MORE_CLEANUP_FUNCS.pop('dummy')
_ALL_CLEANUP_FUNCS = {**_CLEANUP_FUNCS, **_MORE_CLEANUP_FUNCS}

# Types whose leaks are removed without a warning.
_QUIET_TYPES = frozenset({'dummy'})


class ReentrantCallError(RuntimeError):
    """The tracker was called again by the thread already inside it (a
    finalizer run by the garbage collector in the middle of a call)."""


class _OwnedLock(object):
    """A lock that knows which thread holds it, so that the holder trying
    to take it again gets ReentrantCallError instead of a deadlock."""
    __slots__ = ('_lock', '_owner')

    def __init__(self):
        self._lock = threading.Lock()
        self._owner = None

    def __enter__(self):
        me = threading.get_ident()
        if self._owner == me:
            raise ReentrantCallError(
                'reentrant call into the fastmp resource tracker')
        self._lock.acquire()
        self._owner = me

    def __exit__(self, *exc_info):
        self._owner = None
        self._lock.release()


class ResourceTracker(object):
    """This process's link to the tracker process: starts it on first use
    (or again if it died) and sends it registrations."""

    def __init__(self):
        self._lock = _OwnedLock()
        self._fd = None         # write end of the pipe to the tracker
        self._pid = None        # the tracker's pid, in the process that started it
        self._exitcode = None   # the tracker's exit code, after _stop()
        # False sends every message as JSON (the standard package's
        # test-suite exercises both forms through this switch); True sends
        # the shorter line whenever it can carry the name.
        self._use_simple_format = True

    def _after_fork_in_child(self):
        # The lock may have been held by a thread that does not exist here.
        self._lock = _OwnedLock()

    def getfd(self):
        """The write end of the tracker's pipe (started if need be)."""
        self.ensure_running()
        return self._fd

    def ensure_running(self):
        """Start the tracker unless one this process can reach is alive;
        warn if it had died and has to be started again.  Works in any
        process of the program: children reuse their parent's tracker."""
        with self._lock:
            if self._fd is None:
                self._fd, self._pid = self._launch()
            elif not self._check_alive():
                self._restart_dead_tracker()

    def _check_alive(self):
        """True if the tracker still reads its pipe (a probe write works)."""
        try:
            os.write(self._fd, b'PROBE:0:noop\n')
        except OSError:
            return False
        return True

    def _restart_dead_tracker(self):
        """Forget the unreachable tracker (reaping it if it is our ended
        child), warn, and start a new one.  Called with the lock held."""
        os.close(self._fd)
        self._fd = None
        if self._pid is not None:
            # Reap it if it has ended; never block: a tracker we merely
            # cannot reach (our descriptor was closed) may still run.
            try:
                os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                pass   # already reaped
            self._pid = None
        _warn('resource_tracker: process died unexpectedly, '
              'relaunching.  Some resources might leak.')
        self._fd, self._pid = self._launch()

    @staticmethod
    def _launch():
        """Start a tracker process; return (write end of its pipe, pid)."""
        read_end, write_end = os.pipe()
        try:
            # Another thread spawning now may inherit the read end too;
            # harmless: only write ends decide when the tracker sees EOF.
            os.set_inheritable(read_end, True)
            exe, argv = _helper_argv(
                'from fastmp.resource_tracker import main; main(%d)'
                % read_end)
            # SIGINT/SIGTERM stay blocked until the tracker ignores them.
            pid = os.posix_spawn(exe, argv, os.environ, setsid=True,
                                 setsigmask=_tracker_signals())
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return write_end, pid

    def _stop(self):
        """Close our end of the pipe; if this process started the tracker,
        wait for it to finish its clean-up and record its exit code."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if self._pid is None:
                return
            try:
                _, status = os.waitpid(self._pid, 0)
                self._exitcode = os.waitstatus_to_exitcode(status)
            except (ChildProcessError, ValueError):
                self._exitcode = None
            self._pid = None

    def register(self, name, rtype):
        """Have the tracker remove `name` (of type `rtype`) at the end
        unless it is unregistered first."""
        self._send('REGISTER', name, rtype)

    def unregister(self, name, rtype):
        """Take `name` off the tracker's list (it was removed properly)."""
        self._send('UNREGISTER', name, rtype)

    def _send(self, cmd, name, rtype):
        message = None
        if self._use_simple_format:
            message = _simple_message(cmd, name, rtype)
        if message is None:
            message = _json_message(cmd, name, rtype)
        if len(message) > _MAX_MESSAGE:
            raise ValueError('resource name too long for the resource '
                             'tracker: the message would be %d bytes, the '
                             'limit is %d' % (len(message), _MAX_MESSAGE))
        try:
            with self._lock:
                self._write_or_restart(message)
        except ReentrantCallError:
            _warn('ResourceTracker called reentrantly for resource '
                  'cleanup, which is unsupported. The %s object %r '
                  'might leak.' % (rtype, name))
            if self._fd is not None:
                os.write(self._fd, message)

    def _write_or_restart(self, message):
        """Write `message`, starting the tracker first if there is none
        and again if it died.  Called with the lock held."""
        if self._fd is None:
            self._fd, self._pid = self._launch()
        else:
            try:
                os.write(self._fd, message)
                return
            except BrokenPipeError:
                self._restart_dead_tracker()
        os.write(self._fd, message)


# The module's functions are those of the process's one tracker.
_resource_tracker = ResourceTracker()
ensure_running, register, unregister, getfd = (
    _resource_tracker.ensure_running, _resource_tracker.register,
    _resource_tracker.unregister, _resource_tracker.getfd)
os.register_at_fork(after_in_child=_resource_tracker._after_fork_in_child)


#
# The tracker process
#

def _detach_from_program(pipe_fd):
    """Ignore the signals a user sends a whole program, drop stdin/stdout
    (keeping stderr for warnings) and every other inherited descriptor."""
    import signal
    ignored = _tracker_signals()
    for signum in ignored:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)
    if os.getsid(0) != os.getpid():
        # started some other way than by ResourceTracker._launch
        try:
            os.setsid()
        except OSError:
            pass
    devnull = os.open(os.devnull, os.O_RDWR)
    for std_fd in (0, 1):
        if std_fd != pipe_fd:
            os.dup2(devnull, std_fd)
    util.close_all_fds_except((0, 1, 2, pipe_fd))


def _apply(line, live):
    """Apply one message to `live` ({type: set of names})."""
    cmd, name, rtype = _decode(line)
    if rtype not in live:
        raise ValueError('cannot track %r: unknown resource type %r'
                         % (name, rtype))
    if cmd == 'REGISTER':
        live[rtype].add(name)
    elif cmd == 'UNREGISTER':
        live[rtype].remove(name)
    elif cmd != 'PROBE':
        raise ValueError('unknown resource tracker command %r' % (cmd,))


def _remove_leftovers(live):
    """Warn about and remove every object still registered; return 0 if
    there were none, 1 if all were removed, 2 if a removal failed."""
    status = 0
    for rtype, names in live.items():
        if not names:
            continue
        status = max(status, 1)
        if rtype not in _QUIET_TYPES:
            _warn('resource_tracker: There appear to be %d leaked %s '
                  'objects to clean up at shutdown: %r'
                  % (len(names), rtype, names))
        for name in names:
            try:
                _ALL_CLEANUP_FUNCS[rtype](name)
            except Exception as exc:
                status = 2
                _warn('resource_tracker: %r: %s' % (name, exc))
    return status


def main(fd):
    """Run the tracker on the read end `fd` of its pipe until every writer
    is gone, then remove what is left.  Exits 0 (nothing left), 1 (leaks
    removed), 2 (a removal failed) or 3 (a bad message was received)."""
    _detach_from_program(fd)
    live = {rtype: set() for rtype in _ALL_CLEANUP_FUNCS}
    bad_message = False
    try:
        with open(fd, 'rb') as pipe:
            for line in pipe:
                try:
                    _apply(line, live)
                except Exception:
                    bad_message = True
                    sys.excepthook(*sys.exc_info())
    finally:
        status = _remove_leftovers(live)
    sys.exit(status or (3 if bad_message else 0))
