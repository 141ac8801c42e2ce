"""Queue, JoinableQueue and SimpleQueue on fastmp's C message channel.

Every method that runs per message is the C type ``fastmp._fastmp.Channel``
itself: the classes here only add construction, pickling for child
processes and the public names.  Messages travel through a shared-memory
ring (an anonymous memfd, so nothing appears in /dev/shm); see
Modules/_fastmp/channel.h for its design.

Differences from the standard package, on purpose:

* ``put`` pickles in the calling thread, so an unpicklable object raises
  at ``put`` rather than later in a feeder thread.
* On an unbounded or bounded ``Queue``, a message that does not fit the
  ring right away waits in a per-process buffer drained by a native thread;
  the buffer is flushed before the process exits unless
  ``cancel_join_thread()`` was called.
* A process killed in the middle of ``put`` or ``get`` does not wedge the
  others: the message it was moving is dropped.
"""
import types

from . import _fastmp, context, reduction, util

__all__ = ['Queue', 'SimpleQueue', 'JoinableQueue']

# Bytes of ring per queue.  Pages are only used as messages touch them;
# larger messages stream through in pieces.
RING_BYTES = 1 << 20
_JOINABLE = 1
_SIMPLE = 2
# Same limit on maxsize as the standard package (a semaphore's maximum).
_MAXSIZE_LIMIT = 2**31 - 1

_fastmp._channel_setup(reduction.ForkingPickler.dumps)


class _ExitFlush:
    """Anchor that re-registers the exit-time flush in every child."""


def _register_exit_flush(_anchor=None):
    # Runs with the finalizers of negative priority: after the children
    # were joined, like the standard package's join of its feeder threads.
    util.Finalize(None, _fastmp._channel_flush_all, exitpriority=-5)


_exit_flush_anchor = _ExitFlush()
_register_exit_flush()
util.register_after_fork(_exit_flush_anchor, _register_exit_flush)


class Queue(_fastmp.Channel):
    """A process-shared FIFO queue (``multiprocessing.Queue``)."""

    _kind = 0

    def __init__(self, maxsize=0, *, ctx):
        if maxsize <= 0:
            maxsize = _MAXSIZE_LIMIT
        self._maxsize = maxsize
        # a channel limit of 0 means unbounded: no slot accounting at all
        limit = 0 if maxsize >= _MAXSIZE_LIMIT else maxsize
        self._create(limit, self._kind, RING_BYTES)

    def __getstate__(self):
        context.assert_spawning(self)
        return (reduction.DupFd(self._fd()), self._maxsize)

    def __setstate__(self, state):
        dup, self._maxsize = state
        self._attach(dup.detach())

    def join_thread(self):
        """Wait until the messages this process buffered are in the ring."""
        assert self._closed, "Queue {0!r} not closed".format(self)
        self._flush()

    __class_getitem__ = classmethod(types.GenericAlias)


class JoinableQueue(Queue):
    """A Queue that counts unfinished tasks (``task_done``/``join``)."""

    _kind = _JOINABLE
    task_done = _fastmp.Channel._task_done
    join = _fastmp.Channel._join


class SimpleQueue(_fastmp.Channel):
    """A simplified queue: get, put, empty and close only."""

    def __init__(self, *, ctx):
        self._create(0, _SIMPLE, RING_BYTES)

    def __getstate__(self):
        context.assert_spawning(self)
        return reduction.DupFd(self._fd())

    def __setstate__(self, dup):
        self._attach(dup.detach())

    put = _fastmp.Channel._put_blocking

    __class_getitem__ = classmethod(types.GenericAlias)
