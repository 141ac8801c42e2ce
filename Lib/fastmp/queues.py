"""Queue, JoinableQueue and SimpleQueue on fastmp's C message channel.

Every method that runs per message is the C type ``fastmp._fastmp.Channel``
itself: the classes here only add construction, pickling for child
processes and the public names.  Messages travel through a shared-memory
ring (an anonymous memfd, so nothing appears in /dev/shm); see
Modules/_fastmp/queues/ring.h for its design.

Differences from the standard package, on purpose:

* ``put`` pickles in the calling thread, so an unpicklable object raises
  at ``put`` rather than later in a feeder thread.
* On an unbounded or bounded ``Queue``, a message that does not fit the
  ring right away waits in a per-process buffer drained by a native thread;
  the buffer is flushed before the process exits unless
  ``cancel_join_thread()`` was called.  As in the standard package,
  ``put`` never waits for room.
* A process killed in the middle of ``put`` or ``get`` does not wedge the
  others: the message it was moving is dropped.

A subclass that defines one of the standard package's private names
(``_feed``, ``_start_thread``, ``_on_queue_feeder_error``, ``_reader``,
``__getstate__``, ...) gets the standard shape instead: a pipe, locks and
a feeder thread (see _pipe_queues.py).

``Queue.shutdown(immediate=False)`` (and ``JoinableQueue``'s) behaves as
``queue.Queue.shutdown`` of 3.13, on every supported version and for every
process sharing the queue; it raises ``ShutDown``, which is
``queue.ShutDown`` where the interpreter has it (3.13+) and this module's
own class before.
"""
import types
from queue import Empty, Full

from . import _fastmp, connection, context, reduction, synchronize, util
from ._standard_shape import take_standard_shape
from .util import Finalize, debug, info, is_exiting, register_after_fork

__all__ = ['Queue', 'SimpleQueue', 'JoinableQueue']

# Names of the standard module that libraries import from it.
_ForkingPickler = reduction.ForkingPickler
# What the standard-shaped queues append to tell their feeder to finish.
_sentinel = object()

# Bytes of ring per queue.  Pages are only used as messages touch them;
# larger messages stream through in pieces.
RING_BYTES = _fastmp.RING_SIZE
_JOINABLE = _fastmp.CHANNEL_JOINABLE
_SIMPLE = _fastmp.CHANNEL_SIMPLE
# Same limit on maxsize as the standard package (a semaphore's maximum).
_MAXSIZE_LIMIT = _fastmp.SEM_VALUE_MAX

try:
    from queue import ShutDown
except ImportError:                     # before 3.13
    class ShutDown(Exception):
        """Raised by put() and get() of a queue that shutdown() was called on."""


_fastmp._channel_setup(ShutDown)


class _ExitFlush:
    """Anchor that re-registers the exit-time flush in every child."""


def _register_exit_flush(_anchor=None):
    # Runs with the finalizers of negative priority: after the children
    # were joined, like the standard package's join of its feeder threads.
    util.Finalize(None, _fastmp._channel_flush_all, exitpriority=-5)


_exit_flush_anchor = _ExitFlush()
_register_exit_flush()
util.register_after_fork(_exit_flush_anchor, _register_exit_flush)


def _channel_state(queue):
    """The channel's fds, for a child being started (and only then).  As
    in the standard package, a queue made in a fork context may only go to
    forked children."""
    synchronize._check_shareable(queue)
    return tuple(reduction.DupFd(fd) for fd in queue._fds())


def _attach_channel(queue, dups):
    queue._attach(*(dup.detach() for dup in dups))
    queue._is_fork_ctx = False


# The private names of the standard package's queues.  A subclass that
# defines one of them relies on the standard mechanics behind them.
_QUEUE_MECHANICS = frozenset({
    '__getstate__', '__setstate__', '_after_fork', '_reset', '_start_thread',
    '_feed', '_finalize_join', '_finalize_close', '_on_queue_feeder_error',
    '_terminate_broken', '_reader', '_writer', '_rlock', '_wlock', '_sem',
    '_opid', '_maxsize', '_ignore_epipe', '_buffer', '_notempty', '_thread',
    '_jointhread', '_joincancelled', '_closed', '_close', '_send_bytes',
    '_recv_bytes', '_poll', '_cond', '_unfinished_tasks'})
_SIMPLE_QUEUE_MECHANICS = frozenset({
    '__getstate__', '__setstate__', '_reader', '_writer', '_rlock', '_wlock',
    '_poll'})


def _standard_shapes():
    from . import _pipe_queues
    return _pipe_queues.SHAPES


class _ChannelEnd:
    """Stands for the pipe end the standard queues keep as ``_reader`` or
    ``_writer``, for code that reaches for it: concurrent.futures waits on
    a SimpleQueue's reader with connection.wait() and receives from it,
    and closes the reader of a Queue whose consumers died."""

    __slots__ = ("_queue",)

    def __init__(self, queue):
        self._queue = queue

    @property
    def closed(self):
        return self._queue._closed or self._queue._ends_closed

    def fileno(self):
        # readable whenever a message is waiting (see queues/ring.h in C)
        return self._queue._watch()

    def recv(self):
        return self._queue.get()

    def close(self):
        # nobody will read what this process still buffers: drop it at exit
        # instead of waiting for room (puts remain allowed, as with a pipe
        # whose reader is gone and whose writer ignores EPIPE)
        self._queue._ends_closed = True
        self._queue.cancel_join_thread()


class Queue(_fastmp.Channel):
    """A process-shared FIFO queue (``multiprocessing.Queue``)."""

    _kind = 0
    _reader = property(_ChannelEnd)
    _writer = property(_ChannelEnd)
    _ends_closed = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        take_standard_shape(cls, _QUEUE_MECHANICS, _standard_shapes)

    def __init__(self, maxsize=0, *, ctx):
        if maxsize <= 0:
            maxsize = _MAXSIZE_LIMIT
        self._maxsize = maxsize
        # a channel limit of 0 means unbounded: no slot accounting at all
        limit = 0 if maxsize >= _MAXSIZE_LIMIT else maxsize
        self._create(limit, self._kind, RING_BYTES)
        self._is_fork_ctx = ctx.get_start_method() == 'fork'

    def __getstate__(self):
        return (_channel_state(self), self._maxsize)

    def __setstate__(self, state):
        dups, self._maxsize = state
        _attach_channel(self, dups)

    shutdown = _fastmp.Channel._shutdown

    def join_thread(self):
        """Wait until the messages this process buffered are in the ring."""
        assert self._closed, "Queue {0!r} not closed".format(self)
        self._flush()

    def _terminate_broken(self):
        self._reader.close()
        self.close()
        self.join_thread()

    __class_getitem__ = classmethod(types.GenericAlias)


class JoinableQueue(Queue):
    """A Queue that counts unfinished tasks (``task_done``/``join``)."""

    _kind = _JOINABLE
    task_done = _fastmp.Channel._task_done
    join = _fastmp.Channel._join


class SimpleQueue(_fastmp.Channel):
    """A simplified queue: get, put, empty and close only."""

    _reader = property(_ChannelEnd)
    _writer = property(_ChannelEnd)
    _ends_closed = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        take_standard_shape(cls, _SIMPLE_QUEUE_MECHANICS, _standard_shapes)

    def __init__(self, *, ctx):
        self._create(0, _SIMPLE, RING_BYTES)
        self._is_fork_ctx = ctx.get_start_method() == 'fork'

    def __getstate__(self):
        return _channel_state(self)

    def __setstate__(self, dups):
        _attach_channel(self, dups)

    put = _fastmp.Channel._put_blocking

    __class_getitem__ = classmethod(types.GenericAlias)
