"""The standard-shaped queues: a pipe, locks and a feeder thread.

Libraries subclass the standard package's queues and drive their private
mechanics: loky's Queue replaces ``_start_thread`` and ``_feed`` and pickles
``_reader``, ``_writer``, ``_rlock``, ``_wlock``, ``_sem`` and ``_opid``
itself; concurrent.futures' call queue overrides ``_on_queue_feeder_error``
and expects a feeder thread started through ``threading``.  A subclass of
``fastmp.queues.Queue``, ``JoinableQueue`` or ``SimpleQueue`` that defines
one of those names gets one of the classes below as its base (see
_standard_shape.py): the standard package's attributes, private
methods and call signatures, over fastmp's own transports (a
``Pipe(duplex=False)`` of fastmp Connections, fastmp locks and semaphores).
Plain queues keep the shared-memory channel.

Each class here derives from its fastmp counterpart, so ``isinstance`` and
``issubclass`` against ``fastmp.queues`` hold; it shadows every method and
attribute of the channel, which stays unused.
"""
import collections
import errno
import os
import threading
import time
import traceback
import weakref

from . import connection, context, queues
from .reduction import ForkingPickler
from .synchronize import SEM_VALUE_MAX
from .util import Finalize, debug, info, is_exiting, register_after_fork

__all__ = ['PipeQueue', 'PipeJoinableQueue', 'PipeSimpleQueue', 'SHAPES']

_sentinel = queues._sentinel


def _pickled_state(queue):
    """The attributes named by the queue's _PICKLED, for a starting child
    (and only then, as in the standard package)."""
    context.assert_spawning(queue)
    return tuple(getattr(queue, name) for name in queue._PICKLED)


def _restore_state(queue, state):
    for name, value in zip(queue._PICKLED, state):
        setattr(queue, name, value)


class PipeQueue(queues.Queue):
    """``Queue`` as the standard package builds it: ``put`` appends to a
    buffer that a daemon thread pickles and writes to a pipe."""

    _standard_shaped = True
    # instance attributes here, in place of the channel's properties
    _reader = _writer = None
    _closed = False
    # what a child gets, in the standard package's order
    _PICKLED = ('_ignore_epipe', '_maxsize', '_reader', '_writer', '_rlock',
                '_wlock', '_sem', '_opid')

    def __init__(self, maxsize=0, *, ctx):
        self._maxsize = maxsize if maxsize > 0 else SEM_VALUE_MAX
        self._reader, self._writer = connection.Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._wlock = ctx.Lock()
        self._sem = ctx.BoundedSemaphore(self._maxsize)
        self._opid = os.getpid()
        # concurrent.futures sets it: a reader that went away ends the feeder
        self._ignore_epipe = False
        self._reset()
        register_after_fork(self, PipeQueue._after_fork)

    __getstate__ = _pickled_state

    def __setstate__(self, state):
        _restore_state(self, state)
        self._reset()

    def _after_fork(self):
        debug('queue reset in the forked child')
        self._reset(after_fork=True)

    def _reset(self, after_fork=False):
        """Fresh per-process state: no buffer, no feeder thread, open."""
        if after_fork:
            # the parent's lock may have been held by a thread that is gone
            self._notempty._at_fork_reinit()
        else:
            self._notempty = threading.Condition(threading.Lock())
        self._buffer = collections.deque()
        self._thread = self._jointhread = self._close = None
        self._joincancelled = self._closed = False
        self._send_bytes = self._writer.send_bytes
        self._recv_bytes = self._reader.recv_bytes
        self._poll = self._reader.poll

    def _check_open(self):
        if self._closed:
            raise ValueError("Queue %r is closed" % (self,))

    def put(self, obj, block=True, timeout=None):
        self._check_open()
        if not self._sem.acquire(block, timeout):
            raise queues.Full
        with self._notempty:
            self._start_feeder_or_release()
            self._enqueue(obj)
            self._notempty.notify()

    def _enqueue(self, obj):
        self._buffer.append(obj)

    def _start_feeder_or_release(self):
        """Start the feeder thread if there is none; if it cannot start,
        give back the slot put took and raise."""
        if self._thread is not None:
            return
        try:
            self._start_thread()
        except BaseException:
            self._sem.release()
            raise

    def get(self, block=True, timeout=None):
        self._check_open()
        if block and timeout is None:
            with self._rlock:
                data = self._recv_bytes()
            self._sem.release()
            return ForkingPickler.loads(data)
        deadline = time.monotonic() + timeout if block else None
        if not self._rlock.acquire(block, timeout):
            raise queues.Empty
        try:
            left = max(0.0, deadline - time.monotonic()) if block else 0.0
            if not self._poll(left):
                raise queues.Empty
            data = self._recv_bytes()
            self._sem.release()
        finally:
            self._rlock.release()
        # unpickled outside the lock, so that other readers can go on
        return ForkingPickler.loads(data)

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def full(self):
        # no slot left: the semaphore that counts free slots is at zero
        return self._sem._semlock._is_zero()

    def qsize(self):
        free = self._sem._semlock._get_value()
        return self._maxsize - free

    def empty(self):
        return not self._poll()

    def cancel_join_thread(self):
        debug('the queue will not wait for its feeder at exit')
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()

    def close(self):
        self._closed = True
        finish, self._close = self._close, None
        if finish:
            finish()

    def join_thread(self):
        assert self._closed, "Queue %r not closed" % (self,)
        debug('waiting until the feeder has written the buffered messages')
        if self._jointhread:
            self._jointhread()

    def _terminate_broken(self):
        # nobody reads the pipe any more: the feeder must not wait for room
        self._reader.close()
        self.close()
        self.join_thread()

    def _start_thread(self):
        debug('starting the queue feeder thread')
        self._buffer.clear()
        feeder = threading.Thread(
            target=PipeQueue._feed, name='QueueFeederThread', daemon=True,
            args=(self._buffer, self._notempty, self._send_bytes, self._wlock,
                  self._reader.close, self._writer.close, self._ignore_epipe,
                  self._on_queue_feeder_error, self._sem))
        self._thread = feeder
        try:
            feeder.start()
        except BaseException:
            # e.g. RuntimeError at interpreter shutdown: the next put retries
            self._thread = None
            raise
        if not self._joincancelled:
            # at exit, wait until the buffered messages are in the pipe
            self._jointhread = Finalize(feeder, PipeQueue._finalize_join,
                                        [weakref.ref(feeder)], exitpriority=-5)
        # tell the feeder to finish when the queue is closed or collected
        self._close = Finalize(self, PipeQueue._finalize_close,
                               [self._buffer, self._notempty], exitpriority=10)

    @staticmethod
    def _finalize_close(buffer, notempty):
        # the sentinel goes after what is buffered: the feeder writes
        # everything, then closes the pipe and ends
        with notempty:
            buffer.append(_sentinel)
            notempty.notify()
        debug('asked the queue feeder thread to finish')

    @staticmethod
    def _finalize_join(thread_ref):
        thread = thread_ref()
        if thread is None:
            debug('queue feeder thread already gone')
            return
        debug('waiting for the queue feeder thread')
        thread.join()

    @staticmethod
    def _feed(buffer, notempty, send_bytes, writelock, reader_close,
              writer_close, ignore_epipe, onerror, queue_sem):
        """The feeder thread: pickle each buffered object and write it to
        the pipe, in order, until the sentinel; then close both ends."""
        debug('queue feeder thread running')
        while True:
            with notempty:
                if not buffer:
                    notempty.wait()
            # only this thread takes from the buffer
            while buffer:
                obj = buffer.popleft()
                if obj is _sentinel:
                    debug('queue feeder thread got the sentinel')
                    reader_close()
                    writer_close()
                    return
                try:
                    data = ForkingPickler.dumps(obj)
                    with writelock:
                        send_bytes(data)
                except Exception as exc:
                    if ignore_epipe and getattr(exc, 'errno', None) == errno.EPIPE:
                        return
                    if is_exiting():
                        # resources may already be torn down: stay quiet
                        info('error in queue feeder thread: %s', exc)
                        return
                    # the message is dropped: give back its slot
                    queue_sem.release()
                    onerror(exc, obj)
                # keep no message alive once it is handled (an error's
                # traceback, held by whoever got the error, refers to this
                # frame)
                obj = data = None

    @staticmethod
    def _on_queue_feeder_error(e, obj):
        """Called in the feeder thread with the error when `obj` could not
        be pickled or written; the message is dropped.  Overridden by
        concurrent.futures."""
        traceback.print_exc()


class PipeJoinableQueue(PipeQueue, queues.JoinableQueue):
    """``JoinableQueue`` in the standard shape: a PipeQueue that counts
    unfinished tasks in a semaphore guarded by a Condition."""

    _PICKLED = PipeQueue._PICKLED + ('_cond', '_unfinished_tasks')

    def __init__(self, maxsize=0, *, ctx):
        PipeQueue.__init__(self, maxsize, ctx=ctx)
        self._unfinished_tasks = ctx.Semaphore(0)
        self._cond = ctx.Condition()

    def _enqueue(self, obj):
        # counted with the Condition held, so that join() sees both or none
        with self._cond:
            self._buffer.append(obj)
            self._unfinished_tasks.release()

    def _all_done(self):
        return self._unfinished_tasks._semlock._is_zero()

    def task_done(self):
        with self._cond:
            counted = self._unfinished_tasks.acquire(False)
            if not counted:
                raise ValueError('task_done() called too many times')
            if self._all_done():
                self._cond.notify_all()

    def join(self):
        with self._cond:
            if not self._all_done():
                self._cond.wait()


class PipeSimpleQueue(queues.SimpleQueue):
    """``SimpleQueue`` as the standard package builds it: a pipe with a
    lock on each end; ``put`` pickles and writes in the calling thread."""

    _standard_shaped = True
    _reader = _writer = None
    _PICKLED = ('_reader', '_writer', '_rlock', '_wlock')

    def __init__(self, *, ctx):
        self._reader, self._writer = connection.Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._wlock = ctx.Lock()
        self._poll = self._reader.poll

    __getstate__ = _pickled_state

    def __setstate__(self, state):
        _restore_state(self, state)
        self._poll = self._reader.poll

    def close(self):
        self._reader.close()
        self._writer.close()

    def empty(self):
        return not self._poll()

    def get(self):
        with self._rlock:
            data = self._reader.recv_bytes()
        return ForkingPickler.loads(data)

    def put(self, obj):
        data = ForkingPickler.dumps(obj)
        with self._wlock:
            self._writer.send_bytes(data)


# the fast class each standard-shaped one stands in for, most derived first
SHAPES = {queues.JoinableQueue: PipeJoinableQueue, queues.Queue: PipeQueue,
          queues.SimpleQueue: PipeSimpleQueue}
