"""Contexts: one per start method (fork, spawn, forkserver) plus the
default context behind the package's top-level functions.  Each factory
method imports the module that implements it on first use."""
import os
import sys
import threading

from . import process

__all__ = ()

# The exception classes live in the C core, loaded when one of them is
# first asked for: a spawned child that needs nothing of the core starts
# faster without it.
_CORE_EXCEPTIONS = ('ProcessError', 'BufferTooShort', 'TimeoutError',
                    'AuthenticationError')


def __getattr__(name):
    # `reduction` (imported by `from .context import reduction` all over the
    # package) is loaded on first use: it imports this module itself.
    if name == 'reduction':
        from . import reduction
        globals()['reduction'] = reduction
        return reduction
    if name in _CORE_EXCEPTIONS:
        from . import _fastmp
        found = globals()[name] = getattr(_fastmp, name)
        return found
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


class _CoreException(object):
    """A context attribute that is the C core's exception class of the
    same name (see _CORE_EXCEPTIONS)."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, obj, objtype=None):
        return globals().get(self._name) or __getattr__(self._name)


def _submodule(name):
    """The submodule fastmp.<name>, imported on first use (importlib only
    then too: a spawned child starts faster without it)."""
    module = sys.modules.get(__package__ + '.' + name)
    if module is None:
        import importlib
        module = importlib.import_module('.' + name, __package__)
    return module


def _can_send_fds():
    """Whether descriptors pass over AF_UNIX sockets (SCM_RIGHTS), which
    forkserver needs.  Asked only when needed: the answer imports socket,
    which a spawned child has no use for."""
    from . import reduction
    return reduction.HAVE_SEND_HANDLE


class BaseContext(object):
    """The package API bound to one start method."""

    ProcessError = _CoreException()
    BufferTooShort = _CoreException()
    TimeoutError = _CoreException()
    AuthenticationError = _CoreException()

    current_process, parent_process, active_children = map(
        staticmethod, (process.current_process, process.parent_process,
                       process.active_children))

    def cpu_count(self):
        """The number of CPUs; NotImplementedError if unknown."""
        count = os.cpu_count()
        if count is None:
            raise NotImplementedError('cannot determine number of cpus')
        return count

    # -- objects shared between processes ---------------------------------

    def _new(self, module, cls, *args, **kwargs):
        """cls(*args, ctx=<this context>, **kwargs), with `cls` taken from
        the submodule `module`, which is imported only now."""
        found = getattr(_submodule(module), cls)
        return found(*args, ctx=self.get_context(), **kwargs)

    def Manager(self):
        """A started SyncManager (a server process holding shared objects)."""
        manager = self._new('managers', 'SyncManager')
        manager.start()
        return manager

    def Pipe(self, duplex=True):
        """A pair of connected Connection objects."""
        from .connection import Pipe
        return Pipe(duplex)

    def Lock(self):
        """A process-shared non-recursive lock."""
        return self._new('synchronize', 'Lock')

    def RLock(self):
        """A process-shared recursive lock."""
        return self._new('synchronize', 'RLock')

    def Condition(self, lock=None):
        """A process-shared condition variable."""
        return self._new('synchronize', 'Condition', lock)

    def Semaphore(self, value=1):
        """A process-shared semaphore."""
        return self._new('synchronize', 'Semaphore', value)

    def BoundedSemaphore(self, value=1):
        """A process-shared bounded semaphore."""
        return self._new('synchronize', 'BoundedSemaphore', value)

    def Event(self):
        """A process-shared event."""
        return self._new('synchronize', 'Event')

    def Barrier(self, parties, action=None, timeout=None):
        """A process-shared barrier."""
        return self._new('synchronize', 'Barrier', parties, action, timeout)

    def Queue(self, maxsize=0):
        """A process-shared FIFO queue."""
        return self._new('queues', 'Queue', maxsize)

    def JoinableQueue(self, maxsize=0):
        """A Queue with task_done() and join()."""
        return self._new('queues', 'JoinableQueue', maxsize)

    def SimpleQueue(self):
        """A minimal process-shared queue."""
        return self._new('queues', 'SimpleQueue')

    def Pool(self, processes=None, initializer=None, initargs=(),
             maxtasksperchild=None):
        """A pool of worker processes."""
        from .pool import Pool
        return Pool(processes, initializer, initargs, maxtasksperchild,
                    context=self.get_context())

    def RawValue(self, typecode_or_type, *args):
        """A ctypes object in shared memory, without a lock."""
        from .sharedctypes import RawValue
        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        """A ctypes array in shared memory, without a lock."""
        from .sharedctypes import RawArray
        return RawArray(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type, *args, lock=True):
        """A ctypes object in shared memory, guarded by a lock."""
        return self._new('sharedctypes', 'Value', typecode_or_type, *args,
                         lock=lock)

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """A ctypes array in shared memory, guarded by a lock."""
        return self._new('sharedctypes', 'Array', typecode_or_type,
                         size_or_initializer, lock=lock)

    # -- configuration ----------------------------------------------------

    def freeze_support(self):
        """Nothing to do on POSIX (frozen Windows executables only)."""

    def get_logger(self):
        """The package logger."""
        from .util import get_logger
        return get_logger()

    def log_to_stderr(self, level=None):
        """Log the package's records to stderr."""
        from .util import log_to_stderr
        return log_to_stderr(level)

    def allow_connection_pickling(self):
        """Connections and sockets always pickle for child processes."""
        from . import connection  # noqa: F401  (registers the reducers)

    def set_executable(self, executable):
        """The interpreter that spawn starts children with."""
        from .spawn import set_executable
        set_executable(executable)

    def set_forkserver_preload(self, module_names):
        """Modules the forkserver imports up front (a hint)."""
        from .forkserver import set_forkserver_preload
        set_forkserver_preload(module_names)

    def get_context(self, method=None):
        """This context, or the one for `method`; ValueError if unknown."""
        if method is None:
            return self
        try:
            found = _concrete_contexts[method]
        except KeyError:
            raise ValueError('cannot find context for %r' % (method,)) from None
        found._check_available()
        return found

    def get_start_method(self, allow_none=False):
        return self._name

    def set_start_method(self, method, force=False):
        # only the default context's method can change
        raise ValueError('cannot set start method of concrete context')

    def _check_available(self):
        """Raise ValueError if this start method cannot work here."""

    @property
    def reducer(self):
        """The module that pickles objects for other processes
        (fastmp.reduction unless replaced)."""
        return globals().get('reduction') or __getattr__('reduction')

    @reducer.setter
    def reducer(self, reduction):
        # one setting for every context and for `from .context import
        # reduction`, as in the standard package
        globals()['reduction'] = reduction


def _chosen_process_class():
    return _default_context.get_context().Process


class Process(process.BaseProcess):
    """A Process that starts with the default context's start method as it
    is when start() is called."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj):
        return _chosen_process_class()._Popen(process_obj)

    @staticmethod
    def _after_fork():
        return _chosen_process_class()._after_fork()


class DefaultContext(BaseContext):
    """The top-level API: a context whose start method is fixed on first
    use or by set_start_method()."""

    Process = Process

    def __init__(self, context=None):
        self._platform_default = context   # None: found on first use
        self._actual_context = None

    @property
    def _default_context(self):
        # Found on first use, not at import: on 3.14+ the answer depends on
        # descriptor passing, and asking imports socket, which a spawned
        # child (whose start method its parent sets) has no use for.
        if self._platform_default is None:
            self._platform_default = _concrete_contexts[_stdlib_default_method()]
        return self._platform_default

    def get_context(self, method=None):
        if method is not None:
            return super().get_context(method)
        if self._actual_context is None:
            self._actual_context = self._default_context
        return self._actual_context

    def set_start_method(self, method, force=False):
        """Fix the start method; RuntimeError if already fixed unless
        force (force with None unfixes it)."""
        if not force and self._actual_context is not None:
            raise RuntimeError('context has already been set')
        unfix = force and method is None
        self._actual_context = None if unfix else self.get_context(method)

    def get_start_method(self, allow_none=False):
        if self._actual_context is None and allow_none:
            return None
        return self.get_context()._name

    def get_all_start_methods(self):
        """The available start methods, the default first."""
        default = self._default_context._name
        available = ['fork', 'spawn'] + (['forkserver'] if _can_send_fds() else [])
        return [default] + [m for m in available if m != default]


def _starter(popen_module):
    """A _Popen for a Process class: start the child with the Popen class
    of `popen_module` (imported on first use)."""
    found = []  # the Popen class, once imported

    def _Popen(process_obj):
        if not found:
            found.append(_submodule(popen_module).Popen)
        return found[0](process_obj)
    return staticmethod(_Popen)


class ForkProcess(process.BaseProcess):
    _Popen = _starter('popen_fork')
    _start_method = 'fork'


class SpawnProcess(process.BaseProcess):
    _Popen = _starter('popen_spawn_posix')
    _start_method = 'spawn'

    @staticmethod
    def _after_fork():
        # a spawned child is a fresh interpreter: nothing to re-initialise
        pass


class ForkServerProcess(process.BaseProcess):
    _Popen = _starter('popen_forkserver')
    _start_method = 'forkserver'


class ForkContext(BaseContext):
    Process = ForkProcess
    _name = 'fork'


class SpawnContext(BaseContext):
    Process = SpawnProcess
    _name = 'spawn'


class ForkServerContext(BaseContext):
    Process = ForkServerProcess
    _name = 'forkserver'

    def _check_available(self):
        if not _can_send_fds():
            raise ValueError('forkserver start method not available')


_concrete_contexts = {
    'fork': ForkContext(),
    'spawn': SpawnContext(),
    'forkserver': ForkServerContext(),
}


def _stdlib_default_method():
    """The start method the running interpreter's multiprocessing uses by
    default: spawn on macOS, fork elsewhere up to 3.13, forkserver from
    3.14."""
    if sys.platform == 'darwin':
        return 'spawn'
    if sys.version_info >= (3, 14) and _can_send_fds():
        return 'forkserver'
    return 'fork'


_default_context = DefaultContext()


def _force_start_method(method):
    """Fix the default context's start method (a child takes its parent's)."""
    _default_context._actual_context = _concrete_contexts[method]


class _SpawningState(threading.local):
    # the Popen starting a child in this thread, set while it pickles the
    # child's data: objects that may only be inherited check it
    popen = None


_spawning = _SpawningState()


def get_spawning_popen():
    return _spawning.popen


def set_spawning_popen(popen):
    _spawning.popen = popen
    # The standard package, loaded beside fastmp, checks its own record:
    # its objects handed to a fastmp child at start (concurrent.futures
    # passes a standard Queue built on a fastmp context) must see it too.
    standard = sys.modules.get('multiprocessing.context')
    if standard is not None and standard is not sys.modules[__name__]:
        standard.set_spawning_popen(popen)


def assert_spawning(obj):
    """RuntimeError unless a child process is being started (for objects
    that can only be passed to children at start)."""
    if _spawning.popen is None:
        raise RuntimeError('%s objects should only be shared between processes'
                           ' through inheritance' % type(obj).__name__)
