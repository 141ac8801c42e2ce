"""Helpers shared by the whole package: the package logger, finalizers run
at exit or when an object dies, callbacks re-run in forked children,
fork-aware locks and thread-locals, a self-removing temp directory, and the
low-level process start helpers (fd closing, spawnv_passfds)."""
import atexit
import itertools
import os
import sys
import threading  # imported before our atexit hook so threads join first
import weakref

from . import process

__all__ = [
    # logging
    'get_logger', 'log_to_stderr', 'sub_debug', 'debug', 'info',
    'sub_warning', 'warn', 'SUBDEBUG', 'SUBWARNING',
    # life cycle
    'Finalize', 'register_after_fork', 'is_exiting', 'get_temp_dir',
    'ForkAwareThreadLock', 'ForkAwareLocal', 'close_all_fds_except',
]

# ---- logging --------------------------------------------------------------

# the package's levels, between logging's own
NOTSET, SUBDEBUG, DEBUG, INFO, SUBWARNING, WARNING = 0, 5, 10, 20, 25, 30

_logger = None                  # made by get_logger()
_log_to_stderr = False          # log_to_stderr() has set up its handler

LOGGER_NAME = 'multiprocessing'
DEFAULT_LOGGING_FORMAT = '[%(levelname)s/%(processName)s] %(message)s'


def _log_function(level, name):
    """The module function that logs at `level`: nothing until
    get_logger() has made the logger.  It looks at _logger before any
    other global: late in interpreter shutdown the module's globals are
    None, and a finalizer that runs then must find "no logger" rather than
    fail.  stacklevel=2 attributes the record to the caller."""
    def log(msg, *args):
        if _logger:
            _logger.log(level, msg, *args, stacklevel=2)
    log.__name__ = log.__qualname__ = name
    return log


sub_debug = _log_function(SUBDEBUG, 'sub_debug')
debug = _log_function(DEBUG, 'debug')
info = _log_function(INFO, 'info')
sub_warning = _log_function(SUBWARNING, 'sub_warning')
warn = _log_function(WARNING, 'warn')


def get_logger():
    """The package's logger (named 'multiprocessing', not propagating),
    created on first use."""
    global _logger
    import logging
    with logging._lock:
        if not _logger:
            _logger = logging.getLogger(LOGGER_NAME)
            _logger.propagate = 0
            _logger.addFilter(_name_records_after_us)
            # Our exit hook must run before logging's own shutdown hook so
            # that finalizers can still log: move it to the end of atexit.
            atexit.unregister(_exit_function)
            atexit.register(_exit_function)
    return _logger



def _name_records_after_us(record):
    # logging takes processName from sys.modules['multiprocessing'], which
    # is the standard package unless fastmp is installed in its place
    record.processName = process.current_process().name
    return True


def log_to_stderr(level=None):
    """Send the package logger's records to stderr; set `level` if given.
    Returns the logger."""
    global _log_to_stderr
    import logging
    logger = get_logger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(DEFAULT_LOGGING_FORMAT))
    logger.addHandler(handler)
    if level:
        logger.setLevel(level)
    _log_to_stderr = True
    return _logger


# ---- abstract AF_UNIX socket names ---------------------------------------

abstract_sockets_supported = sys.platform in ("linux", "android")


def _platform_supports_abstract_sockets():
    return abstract_sockets_supported


def is_abstract_socket_namespace(address):
    """True when an AF_UNIX address lives in Linux's abstract namespace
    (starts with a NUL byte)."""
    if not address:
        return False
    if isinstance(address, (bytes, str)):
        return address[0] in (0, "\0")
    raise TypeError(f'address type of {address!r} unrecognized')


# ---- a temp directory removed at exit ------------------------------------

def _remove_temp_dir(rmtree, tempdir):
    rmtree(tempdir)
    me = process.current_process()
    if me is not None:  # None late in interpreter shutdown
        me._config['tempdir'] = None


def get_temp_dir():
    """A private directory (prefix 'pymp-') for this process, created on
    first call and removed when the process exits."""
    config = process.current_process()._config
    path = config.get('tempdir')
    if path is None:
        import shutil
        import tempfile
        path = tempfile.mkdtemp(prefix='pymp-')
        info('created temp directory %s', path)
        # rmtree is bound now: module globals may be gone when this runs
        Finalize(None, _remove_temp_dir, args=(shutil.rmtree, path),
                 exitpriority=-100)
        config['tempdir'] = path
    return path


# ---- re-initialisation in forked children --------------------------------

_afterfork_registry = weakref.WeakValueDictionary()
_afterfork_counter = itertools.count()


def register_after_fork(obj, func):
    """Call func(obj) in each child started by fork, as long as obj lives;
    registered callbacks run in registration order."""
    _afterfork_registry[(next(_afterfork_counter), id(obj), func)] = obj


def _run_after_forkers():
    if not _afterfork_registry:
        return  # the common case, and sorting an empty registry is not free
    for key, obj in sorted(_afterfork_registry.items()):
        func = key[2]
        try:
            func(obj)
        except Exception as exc:
            info('after forker raised exception %s', exc)


def _standard_child_setup():
    """In a fastmp child of a program that also loaded the standard package
    beside fastmp (concurrent.futures does, given a fastmp context), do for
    that package's objects what its own child set-up does: forget the
    parent's children and finalizers, run its after-fork hooks (a standard
    Queue starts a fresh feeder thread) and run its exit hook when this
    child exits (which flushes such a Queue).  Nothing under install()."""
    standard = sys.modules.get('multiprocessing.util')
    if standard is None or standard is sys.modules[__name__]:
        return
    standard.process._children = set()
    standard._finalizer_registry.clear()
    standard._run_after_forkers()
    # a forked child's atexit hooks were reset to fastmp's alone
    atexit.unregister(standard._exit_function)
    atexit.register(standard._exit_function)


# ---- finalizers ----------------------------------------------------------

_finalizer_registry = {}
_finalizer_counter = itertools.count()


class Finalize(object):
    """Call callback(*args, **kwargs) once: when `obj` is garbage collected,
    when the finalizer is called, or at exit if `exitpriority` is an int
    (higher priorities first, later registrations first within one).
    Only the process that created the finalizer runs it."""

    def __init__(self, obj, callback, args=(), kwargs=None, exitpriority=None):
        if exitpriority is not None and not isinstance(exitpriority, int):
            raise TypeError(
                "Exitpriority ({0!r}) must be None or int, not {1!s}".format(
                    exitpriority, type(exitpriority)))
        if obj is None and exitpriority is None:
            raise ValueError("Without object, exitpriority cannot be None")
        if obj is not None:
            self._weakref = weakref.ref(obj, self)
        self._callback, self._args = callback, args
        self._kwargs = kwargs if kwargs else {}
        # the key orders exit-time calls: priority, then creation order
        self._key = (exitpriority, next(_finalizer_counter))
        self._pid = os.getpid()
        _finalizer_registry[self._key] = self

    def _forget(self):
        self._weakref = self._callback = None
        self._args = self._kwargs = self._key = None

    # The defaults keep what __call__ needs alive through interpreter
    # shutdown, when module globals may already be cleared.
    def __call__(self, wr=None, _registry=_finalizer_registry,
                 _sub_debug=sub_debug, _getpid=os.getpid):
        """Run the callback if still registered; return its result."""
        if _registry.pop(self._key, None) is None:
            _sub_debug('finalizer no longer registered')
            return None
        result = None
        if self._pid == _getpid():
            _sub_debug('finalizer calling %s with args %s and kwargs %s',
                       self._callback, self._args, self._kwargs)
            result = self._callback(*self._args, **self._kwargs)
        else:
            _sub_debug('finalizer ignored because different process')
        self._forget()
        return result

    def cancel(self):
        """Unregister without running the callback."""
        if _finalizer_registry.pop(self._key, None) is not None:
            self._forget()

    def still_active(self):
        """True until the callback has run or been cancelled."""
        return self._key in _finalizer_registry

    def __repr__(self):
        ref = getattr(self, '_weakref', None)
        target = ref() if callable(ref) else None
        name = type(self).__name__
        if target is None:
            return '<%s object, dead>' % name
        parts = ['<%s object, callback=%s' % (
            name, getattr(self._callback, '__name__', self._callback))]
        if self._args:
            parts.append('args=' + str(self._args))
        if self._kwargs:
            parts.append('kwargs=' + str(self._kwargs))
        if self._key[0] is not None:
            parts.append('exitpriority=' + str(self._key[0]))
        return ', '.join(parts) + '>'


def _run_finalizers(minpriority=None):
    """Run the finalizers that have an exit priority (>= minpriority when
    given), highest priority first and newest first within a priority.
    Without minpriority, every finalizer is dropped afterwards."""
    registry = _finalizer_registry
    if registry is None:  # module torn down already
        return
    # list(dict) is atomic; the registry may change while callbacks run
    due = [key for key in list(registry)
           if key[0] is not None and (minpriority is None or key[0] >= minpriority)]
    due.sort(reverse=True)
    for key in due:
        finalizer = registry.get(key)
        if finalizer is None:
            continue
        sub_debug('calling %s', finalizer)
        try:
            finalizer()
        except Exception:
            import traceback
            traceback.print_exc()
    if minpriority is None:
        registry.clear()


# ---- process exit --------------------------------------------------------

_exiting = False


def is_exiting():
    """True once the process has started shutting down."""
    return _exiting or _exiting is None


def _exit_function(info=info, debug=debug, _run_finalizers=_run_finalizers,
                   active_children=process.active_children,
                   current_process=process.current_process,
                   _process=process, _registry=_finalizer_registry):
    """The atexit hook: run priority >= 0 finalizers, terminate daemonic
    children, join the others, then run the remaining finalizers.  The
    defaults keep references usable after module globals are cleared."""
    global _exiting
    if _exiting:
        return
    _exiting = True
    if not (_registry or _process._children or _logger):
        # nothing to run, wait for or log: most children end here, and
        # each step skipped is memory a forked child need not copy
        return
    info('process shutting down')
    debug('running all "atexit" finalizers with priority >= 0')
    _run_finalizers(0)
    # current_process() is None if this module was torn down early (a
    # program that replaced sys.modules); children cannot be found then.
    if current_process() is not None:
        children = active_children()
        for child in children:
            if child.daemon:
                info('calling terminate() for daemon %s', child.name)
                child._popen.terminate()
        for child in active_children():
            info('calling join() for process %s', child.name)
            child.join()
    debug('running the remaining "atexit" finalizers')
    _run_finalizers()


atexit.register(_exit_function)


# ---- fork-aware primitives -----------------------------------------------

class ForkAwareThreadLock(object):
    """A threading.Lock that a forked child gets back unlocked."""

    def __init__(self):
        lock = self._lock = threading.Lock()
        self.acquire, self.release = lock.acquire, lock.release
        register_after_fork(self, ForkAwareThreadLock._at_fork_reinit)

    def _at_fork_reinit(self):
        self._lock._at_fork_reinit()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


def _clear_local(local):
    local.__dict__.clear()


class ForkAwareLocal(threading.local):
    """A threading.local whose attributes a forked child starts without."""

    def __init__(self):
        register_after_fork(self, _clear_local)

    def __reduce__(self):
        # a fresh, empty local on the other side
        return type(self), ()


# ---- file descriptors and starting programs ------------------------------

def _max_fds():
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 256


MAXFD = _max_fds()


def close_all_fds_except(fds):
    """Close every descriptor below MAXFD that is not in `fds`."""
    keep = sorted(set(fds))
    if keep and keep[-1] >= MAXFD:
        raise AssertionError('fd too large')
    low = 0
    for fd in keep + [MAXFD]:
        # closerange(n, n) would close everything on some versions
        if low < fd:
            os.closerange(low, fd)
        low = fd + 1


def close_fds(*fds):
    """Close each of the given file descriptors."""
    for fd in fds:
        os.close(fd)


def _wait_readable(fd, timeout=None):
    """Wait until `fd` is readable (or hung up) or `timeout` seconds pass
    (None: forever); True if it became ready.  Process sentinels use it."""
    import math
    import select
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # poll() retries EINTR itself with the remaining time (PEP 475)
    millis = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(millis))


def _close_stdin():
    """Close sys.stdin and point it at /dev/null (children must not read
    their parent's terminal)."""
    if sys.stdin is None:
        return
    try:
        sys.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    try:
        sys.stdin = open(devnull, encoding="utf-8", closefd=False)
    except (OSError, ValueError):
        os.close(devnull)


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass


def _args_from_interpreter_flags():
    """The options that give a new interpreter this one's flags (-O, -W,
    -X...).  subprocess is imported here, not at the top: a spawned child
    starts faster without it."""
    import subprocess
    return subprocess._args_from_interpreter_flags()


def spawnv_passfds(path, args, passfds):
    """Start program `path` with argv `args`, keeping only the descriptors
    in `passfds` open (plus 0-2); return its pid."""
    import _posixsubprocess
    import subprocess
    keep = tuple(sorted(set(map(int, passfds))))  # fork_exec wants them unique
    err_r, err_w = os.pipe()
    # fork_exec's positional signature changed in 3.11 (process group) and
    # grew allow_vfork later; build the tail for the running version.
    if sys.version_info >= (3, 11):
        tail = (False, False, -1, None, None, None, -1, None)
        if hasattr(subprocess, '_USE_VFORK'):
            tail += (subprocess._USE_VFORK,)
    else:
        tail = (False, False, None, None, None, -1, None)
    try:
        return _posixsubprocess.fork_exec(
            args, [os.fsencode(path)], True, keep, None, None,
            -1, -1, -1, -1, -1, -1, err_r, err_w, *tail)
    finally:
        os.close(err_r)
        os.close(err_w)


def _cleanup_tests():
    """Stop the forkserver and resource tracker, run every finalizer and
    reap children: the standard test-suite calls this after its tests."""
    from test import support
    process._cleanup()
    from . import forkserver, resource_tracker
    forkserver._forkserver._stop()
    resource_tracker._resource_tracker._stop()
    _run_finalizers()  # removes get_temp_dir() directories now
    support.gc_collect()
    support.reap_children()
