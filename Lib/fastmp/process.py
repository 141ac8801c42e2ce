"""The Process object (modelled on threading.Thread) and the registry of
this process's identity, its parent and its live children."""
import itertools
import os
import sys
import threading
from _weakrefset import WeakSet

__all__ = ['BaseProcess', 'current_process', 'active_children',
           'parent_process']


def _starting_directory():
    try:
        return os.path.abspath(os.getcwd())
    except OSError:  # started in a directory that no longer exists
        return None


ORIGINAL_DIR = _starting_directory()


def current_process():
    """The Process object of the running process."""
    return _current_process


def parent_process():
    """The Process object of the parent, or None in the main process."""
    global _parent_process
    if _parent_process is None and _parent_details is not None:
        # made on first use: most children never ask, and each object a
        # forked child creates is memory it must copy from its parent
        _parent_process = _ParentProcess(*_parent_details)
    return _parent_process


def active_children():
    """The children started by this process that are still running."""
    _cleanup()
    return list(_children)


def _cleanup():
    """Forget (and reap) the children that have exited."""
    exited = [child for child in list(_children)
              if child._popen is not None and child._popen.poll() is not None]
    _children.difference_update(exited)


class BaseProcess(object):
    """A unit of work run in a child process; subclasses pick the start
    method through _Popen."""

    def __init__(self, group=None, target=None, name=None, args=(), kwargs=None,
                 *, daemon=None):
        assert group is None, 'group argument must be None for now'
        creator = _current_process
        # Process-1:2 is the second child of this process's first child
        self._identity = creator._identity + (next(_process_counter),)
        self._config = dict(creator._config)   # inherited settings
        self._parent_pid, self._parent_name = os.getpid(), creator.name
        self._popen, self._closed = None, False
        self._target, self._args = target, tuple(args)
        self._kwargs = dict(kwargs) if kwargs else {}
        self._name = name or '%s-%s' % (type(self).__name__,
                                        ':'.join(map(str, self._identity)))
        if daemon is not None:
            self.daemon = daemon
        _dangling.add(self)

    def _Popen(self):
        raise NotImplementedError

    def run(self):
        """The child's work: call target(*args, **kwargs).  Override it in
        a subclass for other work."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    # ---- checks shared by the methods below ------------------------------

    def _check_closed(self):
        if self._closed:
            raise ValueError("process object is closed")

    def _check_is_our_child(self, action):
        assert self._parent_pid == os.getpid(), 'can only %s' % action

    # ---- life cycle, seen from the parent ----------------------------------

    def start(self):
        """Start the child process."""
        self._check_closed()
        assert self._popen is None, 'cannot start a process twice'
        self._check_is_our_child('start a process object created by current process')
        assert not _current_process._config.get('daemon'), \
            'daemonic processes are not allowed to have children'
        _cleanup()
        popen = self._popen = self._Popen(self)
        self._sentinel = popen.sentinel
        _children.add(self)
        # the target may refer back to this object: drop it, no cycle
        del self._target, self._args, self._kwargs

    def join(self, timeout=None):
        """Wait for the child to exit, at most `timeout` seconds."""
        self._check_closed()
        self._check_is_our_child('join a child process')
        assert self._popen is not None, 'can only join a started process'
        if self._popen.wait(timeout) is not None:
            _children.discard(self)

    def interrupt(self):
        """Send SIGINT to the child.  Unless the child handles SIGINT
        otherwise, it raises KeyboardInterrupt there, which ends it with
        exit code 1 (or -SIGINT where SIGINT has its default action)."""
        self._check_closed()
        self._popen.interrupt()

    def terminate(self):
        """Send SIGTERM to the child."""
        self._check_closed()
        self._popen.terminate()

    def kill(self):
        """Send SIGKILL to the child."""
        self._check_closed()
        self._popen.kill()

    def close(self):
        """Release the resources of an exited child; ValueError if it still
        runs.  Most methods raise ValueError afterwards."""
        popen = self._popen
        if popen is not None:
            if popen.poll() is None:
                raise ValueError("Cannot close a process while it is still running. "
                                 "You should first call join() or terminate().")
            popen.close()
            self._popen = None
            del self._sentinel
            _children.discard(self)
        self._closed = True

    def is_alive(self):
        """True while the child runs (always true for this process)."""
        self._check_closed()
        if self is _current_process:
            return True
        self._check_is_our_child('test a child process')
        running = self._popen is not None and self._popen.poll() is None
        if not running:
            _children.discard(self)
        return running

    # ---- attributes ---------------------------------------------------------

    def _get_name(self):
        return self._name

    def _set_name(self, name):
        assert isinstance(name, str), 'name must be a string'
        self._name = name

    name = property(_get_name, _set_name)

    # daemon and authkey live in _config, which children inherit

    def _get_daemon(self):
        return self._config.get('daemon', False)

    def _set_daemon(self, daemonic):
        assert self._popen is None, 'process has already started'
        self._config['daemon'] = daemonic

    daemon = property(_get_daemon, _set_daemon, doc=(
        "Whether the child is daemonic (terminated when its parent exits; "
        "may not start children)."))

    def _get_authkey(self):
        return self._config['authkey']

    def _set_authkey(self, authkey):
        self._config['authkey'] = AuthenticationString(authkey)

    authkey = property(_get_authkey, _set_authkey)

    @property
    def exitcode(self):
        """The exit code, -N if killed by signal N, None while running or
        before start."""
        self._check_closed()
        return None if self._popen is None else self._popen.poll()

    @property
    def ident(self):
        """The pid, or None before start."""
        self._check_closed()
        if self is _current_process:
            return os.getpid()
        return self._popen.pid if self._popen is not None else None

    pid = ident

    @property
    def sentinel(self):
        """A file descriptor that becomes readable when the child exits."""
        self._check_closed()
        try:
            return self._sentinel
        except AttributeError:
            raise ValueError("process not started") from None

    def _status(self):
        """(state word, exit code or None) for repr."""
        if self is _current_process:
            return 'started', None
        if self._closed:
            return 'closed', None
        if self._parent_pid != os.getpid():
            return 'unknown', None
        if self._popen is None:
            return 'initial', None
        code = self._popen.poll()
        return ('started' if code is None else 'stopped'), code

    def __repr__(self):
        state, code = self._status()
        words = [type(self).__name__, 'name=%r' % self._name]
        if self._popen is not None:
            words.append('pid=%s' % self._popen.pid)
        words += ['parent=%s' % self._parent_pid, state]
        if code is not None:
            words.append('exitcode=%s' % _exitcode_text(code))
        if self.daemon:
            words.append('daemon')
        return '<%s>' % ' '.join(words)

    # ---- life cycle, seen from the child ------------------------------------

    def _bootstrap(self, parent_sentinel=None):
        """Become this process in the child: reset the registry, run
        after-fork hooks and run(); return the exit code."""
        from . import util
        try:
            self._become_current(parent_sentinel)
            util.info('child process calling self.run()')
            self.run()
            exitcode = 0
        except SystemExit as exc:
            exitcode = _exit_status(exc.code)
        except BaseException:
            exitcode = 1
            _report_crash(self.name)
        finally:
            threading._shutdown()
            util.info('process exiting with exitcode %d', exitcode)
            util._flush_std_streams()
        return exitcode

    def _become_current(self, parent_sentinel):
        """Make this object the current process, with fresh children and
        counter, the parent recorded, stdin detached and the after-fork
        hooks run."""
        from . import context, util
        global _current_process, _parent_process, _parent_details
        global _process_counter, _children
        if self._start_method is not None:
            context._force_start_method(self._start_method)
        _children = set()
        _process_counter = itertools.count(1)
        util._close_stdin()
        # the parent's object may have finalizers: keep it alive until
        # the after-fork hooks have run
        replaced = _current_process
        _current_process = self
        _parent_process = None
        _parent_details = (self._parent_name, self._parent_pid, parent_sentinel)
        if threading._HAVE_THREAD_NATIVE_ID:
            threading.main_thread()._set_native_id()
        self._after_fork()
        del replaced

    @staticmethod
    def _after_fork():
        from . import util
        util._finalizer_registry.clear()
        util._run_after_forkers()
        util._standard_child_setup()


def _report_crash(name):
    """Print the exception being handled, headed by the process name."""
    import traceback
    sys.stderr.write('Process %s:\n' % name)
    traceback.print_exc()


def _exit_status(code):
    """The exit status sys.exit(code) gives, printing a non-int code."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(str(code) + '\n')
    return 1


def _exitcode_text(code):
    """'-SIGTERM' for -15 and so on; other codes as they are."""
    if code < 0:
        import signal   # not at the top: a child starts faster without it
        try:
            return '-' + signal.Signals(-code).name
        except ValueError:
            pass
    return code


class AuthenticationString(bytes):
    """An authkey: bytes that refuse to be pickled except while a child
    process is being started."""

    def __reduce__(self):
        from .context import get_spawning_popen
        if get_spawning_popen() is None:
            raise TypeError('Pickling an AuthenticationString object is '
                            'disallowed for security reasons')
        return AuthenticationString, (bytes(self),)


class _ParentProcess(BaseProcess):
    """The parent as seen from a child: alive until its sentinel fd (the
    read end of a pipe the parent holds open) reports end-of-file."""

    def __init__(self, name, pid, sentinel):
        self._name, self._pid, self._sentinel = name, pid, sentinel
        self._identity, self._config = (), {}
        self._parent_pid, self._popen, self._closed = None, None, False

    @property
    def ident(self):
        return self._pid

    pid = ident

    def is_alive(self):
        from .util import _wait_readable
        return not _wait_readable(self._sentinel, 0)

    def join(self, timeout=None):
        """Wait for the parent to exit, at most `timeout` seconds."""
        from .util import _wait_readable
        _wait_readable(self._sentinel, timeout)


class _MainProcess(BaseProcess):
    """The process the program started in.  Everything in _config is
    inherited by descendants; the short semaphore prefix suits systems
    that limit the length of semaphore names."""

    def __init__(self):
        self._name, self._identity = 'MainProcess', ()
        self._parent_pid, self._popen, self._closed = None, None, False
        self._config = {'authkey': AuthenticationString(os.urandom(32)),
                        'semprefix': '/mp'}

    def close(self):
        pass


_current_process = _MainProcess()
_parent_process = None
_parent_details = None   # (name, pid, sentinel) of the parent, in a child
_children = set()
_process_counter = itertools.count(1)

# every Process object created and not yet collected (for leak tests)
_dangling = WeakSet()
