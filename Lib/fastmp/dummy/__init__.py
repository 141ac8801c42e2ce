"""fastmp.dummy: the multiprocessing API over threads of this process.

`Process` is a thread, the synchronization primitives and `Queue` are the
`threading`/`queue` ones, `Manager()` returns this module itself and
`Pool` is a `fastmp.pool.ThreadPool`.
"""
import array
import sys
import threading
import weakref
from queue import Queue
from threading import (Barrier, BoundedSemaphore, Condition, Event, Lock,
                       RLock, Semaphore)

from .._proxies import Namespace  # the same attribute bag the managers serve
from .connection import Pipe

__all__ = [
    'Process', 'current_process', 'active_children', 'freeze_support',
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition',
    'Event', 'Barrier', 'Queue', 'Manager', 'Pipe', 'Pool', 'JoinableQueue',
]


class DummyProcess(threading.Thread):
    """A thread with the Process API (exitcode, children, start checks)."""

    def __init__(self, group=None, target=None, name=None, args=(), kwargs=None):
        super().__init__(group, target, name, args, kwargs)
        self._pid = None
        self._children = weakref.WeakKeyDictionary()
        self._start_called = False
        self._parent = current_process()

    def start(self):
        me = current_process()
        if self._parent is not me:
            raise RuntimeError("Parent is {0!r} but current_process is {1!r}"
                               .format(self._parent, me))
        self._start_called = True
        children = getattr(self._parent, '_children', None)
        if children is not None:
            children[self] = None
        super().start()

    @property
    def exitcode(self):
        """0 once the thread has run and ended, else None."""
        return 0 if self._start_called and not self.is_alive() else None


Process = DummyProcess
current_process = threading.current_thread
current_process()._children = weakref.WeakKeyDictionary()


def active_children():
    """The live threads started from the current one."""
    children = current_process()._children
    for child in [c for c in children if not c.is_alive()]:
        children.pop(child, None)
    return list(children)


def freeze_support():
    pass


dict = dict
list = list


def Array(typecode, sequence, lock=True):
    return array.array(typecode, sequence)


class Value(object):
    """A boxed value; `lock` is accepted and ignored (threads share it)."""

    def __init__(self, typecode, value, lock=True):
        self._typecode, self.value = typecode, value

    def __repr__(self):
        return '<%s(%r, %r)>' % (type(self).__name__, self._typecode, self.value)


def Pool(processes=None, initializer=None, initargs=()):
    """A pool of worker threads."""
    from ..pool import ThreadPool
    return ThreadPool(processes, initializer, initargs)


def Manager():
    """Threads share everything already: the 'manager' is this module."""
    return sys.modules[__name__]


def shutdown():
    """The module-as-manager has nothing to shut down."""


JoinableQueue = Queue
