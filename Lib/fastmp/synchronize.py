"""Process-shared synchronization primitives: Lock, RLock, Semaphore,
BoundedSemaphore, Condition, Event and Barrier.

The locks are Python subclasses of the C type ``fastmp._fastmp.SemLock``, so
``acquire``, ``release``, ``__enter__`` and ``__exit__`` resolve straight to
C methods; Condition subclasses ``fastmp._fastmp.Condition`` in the same way.
Objects made by a 'fork' context live in anonymous shared memory that only
forked children inherit.  Under 'spawn' and 'forkserver' they get a name that
children open; the creating process unlinks it when the object goes away,
and the resource tracker does so if the whole program is killed.

Differences from the standard package, all where it would hang or mislead:
a Condition wakes the threads that were already waiting, oldest first, and
skips a waiter whose process died (the standard notify() then blocks
forever); at most about 4,000 threads may wait on one Condition at a time
(RuntimeError beyond); Barrier(0) raises ValueError.
"""

__all__ = [
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition', 'Event'
]

import threading
import time

from . import _fastmp
from . import _names
from . import context
from . import process
from . import util
from ._fastmp import sem_unlink

RECURSIVE_MUTEX, SEMAPHORE = 0, 1
SEM_VALUE_MAX = _fastmp.SemLock.SEM_VALUE_MAX

# Resource-tracker type of our named objects: their shm files are named as
# glibc names a semaphore, so the tracker's sem_unlink removes them.
_RTYPE = "semaphore"


def _resolve_context(ctx):
    if ctx is None:
        ctx = context._default_context.get_context()
    return ctx


def _new_name_or_none(ctx):
    """A fresh object name, or None when `ctx` forks (no name needed)."""
    if ctx.get_start_method() == 'fork':
        return None
    return '/' + _names.fresh_name('fmp')


def _unlink_name(name):
    from .resource_tracker import unregister
    sem_unlink(name)
    unregister(name, _RTYPE)


def _track_name(obj, name):
    """Have `name` unlinked when `obj` dies or this process exits, and by the
    resource tracker if the process is killed first."""
    from .resource_tracker import register
    register(name, _RTYPE)
    util.Finalize(obj, _unlink_name, (name,), exitpriority=0)


def _check_shareable(obj):
    """Raise RuntimeError unless `obj` is being handed to a starting child
    that can open it by name."""
    context.assert_spawning(obj)
    if obj._is_fork_ctx:
        # The standard package's wording (programs and its tests match it)
        raise RuntimeError(
            'A SemLock created in a fork context (%s) cannot be passed to a '
            'process started by spawn or forkserver: create it from the same '
            'context as the Process' % type(obj).__name__)


def _owner_name():
    """How the reprs name the calling thread: process[|thread]."""
    name = process.current_process().name
    thread = threading.current_thread().name
    if thread != 'MainThread':
        name += '|' + thread
    return name


#
# Locks and semaphores
#

def _rebuild_semlock(cls, handle, kind, maxvalue, name):
    obj = cls._rebuild(handle, kind, maxvalue, name)
    # a rebuilt lock can be passed on to grandchildren (gh-108520)
    obj._is_fork_ctx = False
    return obj


class SemLock(_fastmp.SemLock):
    """A SemLock that knows the context it was made for.  Subclasses give
    their (kind, value, maxvalue) through `_params`."""

    @staticmethod
    def _params(kind, value, maxvalue):
        return kind, value, maxvalue

    def __new__(cls, *args, ctx=None, **kwargs):
        kind, value, maxvalue = cls._params(*args, **kwargs)
        ctx = _resolve_context(ctx)
        name = _new_name_or_none(ctx)
        self = super().__new__(cls, kind, value, maxvalue, name or '', name is None)
        self._is_fork_ctx = name is None
        if name is not None:
            _track_name(self, name)
        util.debug('created semlock with handle %s' % self.handle)
        return self

    def __init__(self, *args, ctx=None, **kwargs):
        # all the work is done in __new__ (the C type needs it there)
        pass

    @property
    def _semlock(self):
        # the standard classes wrap a separate C object; ours is ourself
        return self

    _cleanup = staticmethod(_unlink_name)

    def __reduce__(self):
        _check_shareable(self)
        return _rebuild_semlock, (type(self), self.handle, self.kind,
                                  self.maxvalue, self.name)


class Semaphore(SemLock):

    @staticmethod
    def _params(value=1):
        return SEMAPHORE, value, SEM_VALUE_MAX

    def get_value(self):
        return self._get_value()

    def _describe(self):
        return 'value=%s' % self._get_value()

    def __repr__(self):
        try:
            inside = self._describe()
        except Exception:
            inside = 'value=unknown'
        return '<%s(%s)>' % (type(self).__name__, inside)


class BoundedSemaphore(Semaphore):

    @staticmethod
    def _params(value=1):
        return SEMAPHORE, value, value

    def _describe(self):
        return 'value=%s, maxvalue=%s' % (self._get_value(), self.maxvalue)


def _holder(lock):
    """Who holds `lock`, as the reprs say it, and whether that is the
    calling thread."""
    if lock._is_mine():
        return _owner_name(), True
    if lock._get_value() == 1:
        return 'None', False
    # another thread of ours counts as an acquisition in this process
    return ('SomeOtherThread' if lock._count() > 0 else 'SomeOtherProcess'), False


class Lock(SemLock):

    @staticmethod
    def _params():
        return SEMAPHORE, 1, 1

    def __repr__(self):
        try:
            owner = _holder(self)[0]
        except Exception:
            owner = 'unknown'
        return '<%s(owner=%s)>' % (type(self).__name__, owner)


class RLock(SemLock):

    @staticmethod
    def _params():
        return RECURSIVE_MUTEX, 1, 1

    def __repr__(self):
        try:
            owner, mine = _holder(self)
            if mine:
                depth = self._count()
            else:
                depth = 0 if owner == 'None' else 'nonzero'
        except Exception:
            owner, depth = 'unknown', 'unknown'
        return '<%s(%s, %s)>' % (type(self).__name__, owner, depth)


#
# Condition variable
#

class _CountView(object):
    """Read-only stand-in for a counting semaphore of the standard Condition
    (its test-suite reads them): only get_value()."""

    __slots__ = ('get_value',)

    def __init__(self, get_value):
        self.get_value = get_value


def _nothing_in_transit():
    return 0


def _rebuild_condition(cls, lock, name):
    obj = cls._rebuild(lock, name)
    obj._set_up(False)
    return obj


class Condition(_fastmp.Condition):
    """wait/notify/notify_all run in C (see condition.c); a notification
    goes to threads already waiting, oldest first."""

    def __new__(cls, lock=None, *, ctx=None):
        ctx = _resolve_context(ctx)
        if lock is None:
            lock = RLock(ctx=ctx)
        name = _new_name_or_none(ctx)
        self = super().__new__(cls, lock, name or '', name is None)
        self._set_up(name is None)
        if name is not None:
            _track_name(self, name)
        return self

    def _set_up(self, fork_ctx):
        self._is_fork_ctx = fork_ctx
        # the lock's own C methods, as the standard Condition binds them
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __reduce__(self):
        _check_shareable(self)
        return _rebuild_condition, (type(self), self._lock, self.name)

    # The standard Condition counts sleepers and woken threads in two
    # semaphores and hands wakes over in a third; ours has just waiters.
    @property
    def _sleeping_count(self):
        return _CountView(self._waiters)

    @property
    def _woken_count(self):
        return _CountView(_nothing_in_transit)

    _wait_semaphore = _woken_count

    def __repr__(self):
        try:
            waiters = self._waiters()
        except Exception:
            waiters = 'unknown'
        return '<%s(%s, %s)>' % (type(self).__name__, self._lock, waiters)

    def wait_for(self, predicate, timeout=None):
        result = predicate()
        if result or timeout is not None and timeout <= 0:
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
            self.wait(left)
            result = predicate()
        return result


#
# Event: a flag in the condition's shared words
#

_EVENT_FLAG = 0


class Event(object):

    def __init__(self, *, ctx=None):
        ctx = _resolve_context(ctx)
        # an RLock (private, so never released elsewhere) lets set() defer
        # its wakes until it lets go of the lock (see condition.c)
        self._cond = Condition(RLock(ctx=ctx), ctx=ctx)

    def is_set(self):
        return self._cond._word(_EVENT_FLAG) != 0

    def set(self):
        with self._cond:
            self._cond._set_word(_EVENT_FLAG, 1)
            self._cond.notify_all()

    def clear(self):
        with self._cond:
            self._cond._set_word(_EVENT_FLAG, 0)

    def wait(self, timeout=None):
        if self.is_set():
            return True             # no need for the lock
        with self._cond:
            if not self._cond._word(_EVENT_FLAG):
                self._cond.wait(timeout)
            return self._cond._word(_EVENT_FLAG) != 0

    def __repr__(self):
        return '<%s at %#x %s>' % (type(self).__qualname__, id(self),
                                   'set' if self.is_set() else 'unset')


#
# Barrier: threading.Barrier's logic, its state in shared words
#

_BARRIER_STATE, _BARRIER_COUNT = 0, 1


class Barrier(threading.Barrier):

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        if parties < 1:
            raise ValueError('parties must be > 0')
        ctx = _resolve_context(ctx)
        self.__setstate__((parties, action, timeout, Condition(ctx=ctx)))

    def __getstate__(self):
        return (self._parties, self._action, self._timeout, self._cond)

    def __setstate__(self, state):
        self._parties, self._action, self._timeout, self._cond = state

    @property
    def _state(self):
        return self._cond._word(_BARRIER_STATE)

    @_state.setter
    def _state(self, value):
        self._cond._set_word(_BARRIER_STATE, value)

    @property
    def _count(self):
        return self._cond._word(_BARRIER_COUNT)

    @_count.setter
    def _count(self, value):
        self._cond._set_word(_BARRIER_COUNT, value)
