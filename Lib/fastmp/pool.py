"""fastmp.pool: Pool (worker processes) and ThreadPool (worker threads).

A process pool hands its tasks to the native dispatcher
(``_fastmp.Dispatcher``): each worker has its own socket, a C thread moves
pickled tasks out and results back, and the worker runs ``worker_loop`` in
C.  A thread waiting for a result first reads the workers' sockets itself
for a few microseconds (the GIL released), so a quick result needs no
hand-off; then it sleeps and is woken straight from C.  A single Python
handler thread only replaces workers that exit and runs callbacks.

Deviation from the standard package: a worker that dies (SIGKILL, a crash,
``os._exit``) does not hang the pool.  Each task it held fails with
``WorkerLostError`` and a new worker takes its place (a map counts such a
chunk as finished with that failure).  Likewise a task that a
``terminate()`` cut short fails with ``WorkerLostError`` instead of never
finishing.
"""
import collections
import functools
import itertools
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
import types
import warnings

from . import util
from ._fastmp import ProcessError, TimeoutError
from ._standard_shape import take_standard_shape
from ._fastmp import (Dispatcher, worker_loop, forking_dumps, TASK_APPLY,
                      TASK_MAP, TASK_STARMAP, RESULT_OK, RESULT_ERROR,
                      RESULT_LOST, RESULT_QUICK, EVENT_EXIT, EVENT_READY)

__all__ = ['Pool', 'ThreadPool']

# Pool states (the standard package's names and values)
INIT = 'INIT'
RUN = 'RUN'
CLOSE = 'CLOSE'
TERMINATE = 'TERMINATE'

# collect() modes and answers (Modules/_fastmp/pool/dispatcher.c)
_NO_WAIT, _WAIT_ANY, _WAIT_READY, _WAIT_SOME = 0, 1, 2, 3
_PENDING, _READY, _CLOSED, _GONE = 0, 1, 2, 3

# tasks each worker may hold at once (the dispatcher raises it for short tasks)
_INFLIGHT = 2
# results not asked for are dropped from the cache when it grows past this
_PURGE_MIN = 1024

job_counter = itertools.count()


# ---- exceptions ------------------------------------------------------------

class RemoteTraceback(Exception):
    """The worker-side traceback text, attached as ``__cause__`` of an
    exception re-raised in the parent."""

    def __init__(self, tb):
        self.tb = tb

    def __str__(self):
        return self.tb


class MaybeEncodingError(Exception):
    """A task's result (or exception) could not be pickled back."""

    def __init__(self, exc, value):
        self.exc = repr(exc)
        self.value = repr(value)
        super().__init__(self.exc, self.value)

    def __str__(self):
        return "could not send the result %s back to the parent: %s" % (
            self.value, self.exc)

    def __repr__(self):
        return "<%s: %s>" % (type(self).__name__, self)


class WorkerLostError(ProcessError):
    """The worker running a task exited before finishing it (killed,
    crashed, ``os._exit``), or the pool was terminated first."""

    def __init__(self, message, pid=None, exitcode=None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode


def _describe_exit(exitcode):
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            return "killed by %s" % signal.Signals(-exitcode).name
        except ValueError:
            return "killed by signal %d" % -exitcode
    return "exit code %d" % exitcode


def _lost(pid, exitcode):
    return WorkerLostError(
        "pool worker %d died while running this task (%s, exitcode %s)"
        % (pid, _describe_exit(exitcode), exitcode), pid, exitcode)


def _terminated():
    return WorkerLostError("the pool was terminated before this task finished")


def _with_remote_traceback(exc, text):
    exc.__cause__ = RemoteTraceback(text)
    return exc


def _picklable_failure(exc):
    """The exception a process worker sends back, rebuilt in the parent
    with the worker's traceback as its cause."""
    text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = '\n--- traceback in the pool worker ---\n%s---' % text
    return _with_remote_traceback, (exc, text)


class _Failure:
    """Pickles as the call that re-creates the failure in the parent."""

    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        return _picklable_failure(self.exc)


# ---- the worker side -------------------------------------------------------

def _encode_failure(exc, value):
    """worker_loop's on_failure: the bytes that report `exc` (raised by the
    task, or by pickling its result `value`)."""
    if value is not None:
        exc = MaybeEncodingError(exc, value)
        payload = exc
    else:
        payload = _Failure(exc)
    try:
        return forking_dumps(payload)
    except Exception as pickling_error:
        return forking_dumps(MaybeEncodingError(pickling_error, exc))


class _ChildEnd:
    """The worker's end of its channel; pickles (spawn, forkserver) as a
    duplicate of the descriptor for the child.  A forked child inherits
    the parent's end too (`parent_fd`) and must close it, or it would not
    see end of file when the parent dies."""

    def __init__(self, fd, parent_fd=None):
        self.fd = fd
        self.parent_fd = parent_fd

    def __reduce__(self):
        from .reduction import DupFd
        return _rebuild_child_end, (DupFd(self.fd),)


def _rebuild_child_end(dup):
    return _ChildEnd(dup.detach())


def worker(channel, initializer=None, initargs=(), maxtasks=None):
    """A process worker's body: run the initializer, then serve tasks."""
    if channel.parent_fd is not None:
        os.close(channel.parent_fd)
    if initializer is not None:
        initializer(*initargs)
    worker_loop(channel.fd, pickle.loads, forking_dumps, _encode_failure, maxtasks or 0)
    os.close(channel.fd)


def _close_parent_ends(core):
    """After fork: the child must not hold the parent's worker channels,
    or a worker would miss end-of-file when the parent goes away."""
    core.dispatcher.close_in_child()


# ---- results ---------------------------------------------------------------

class ApplyResult:
    """The outcome of one apply_async() call."""

    # outcomes after the first failure are counted and dropped (a map)
    _drop_after_failure = False
    _wait_mode = _WAIT_READY
    _ntasks = 1
    _unsent = 0                 # tasks that failed before being sent

    def __init__(self, pool, callback=None, error_callback=None, ntasks=1):
        core = pool if isinstance(pool, _PoolCore) else pool._core
        self._prepare(core, callback, error_callback)
        core.dispatcher.open_job(self._job, ntasks, self._drop_after_failure,
                                 self._event is not None)
        core.remember(self)

    # the fields of a result without callbacks that is not done yet: an
    # instance sets only those that differ
    _callback = None
    _error_callback = None
    _event = None
    _done = False
    _success = None
    _value = None

    def _prepare(self, core, callback, error_callback):
        """The fields; the job is opened by the caller."""
        self._pool = core
        self._job = next(job_counter)
        self._cache = core.cache
        if callback is not None or error_callback is not None:
            self._callback = callback
            self._error_callback = error_callback
            self._event = threading.Event()

    def ready(self):
        if self._event is not None:
            return self._event.is_set()
        if not self._done:
            self._absorb(*self._pool.dispatcher.collect(self._job, 0, _NO_WAIT))
        return self._done

    def successful(self):
        if not self.ready():
            raise ValueError("{0!r} not ready".format(self))
        return self._success

    def wait(self, timeout=None):
        # With callbacks, _done is set before they run; the event only after.
        if self._event is not None:
            self._event.wait(timeout)
        elif not self._done:
            self._collect(timeout)

    def _collect(self, timeout):
        """Absorb outcomes until the result is done or the timeout passes."""
        collect = self._pool.dispatcher.collect
        if self._wait_mode == _WAIT_READY:
            self._absorb(*collect(self._job, timeout, _WAIT_READY), timeout)
            return
        # outcomes are decoded as they come, while the rest are computed
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._absorb(*collect(self._job, left, self._wait_mode), left)
            if left == 0.0:
                return

    def get(self, timeout=None):
        if self._event is None:
            if not self._done:
                if self._wait_mode == _WAIT_READY:
                    self._absorb(*self._pool.dispatcher.collect(self._job, timeout, _WAIT_READY),
                                 timeout)
                else:
                    self._collect(timeout)
                if not self._done:
                    raise TimeoutError
        else:
            self._event.wait(timeout)
            if not self._event.is_set():
                raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _absorb(self, state, outcomes, timeout=0):
        """Take the outcomes collected from the dispatcher; finish when the
        job is ready (or can never be).  A job another thread collected
        (_GONE) is that thread's to finish: wait up to `timeout` for it."""
        core = self._pool
        if state == _GONE:
            with core.result_cond:
                core.result_cond.wait_for(lambda: self._done, timeout)
            return
        with core.result_lock:
            if self._done:
                return
            for index, status, data in outcomes:
                ok, value = core.decode(status, data)
                self._record(index, ok, value)
            if state == _PENDING:
                return
            if state == _CLOSED:
                self._record(None, False, _terminated())
            self._done = True
            core.result_cond.notify_all()
        self._finish(state)

    def _fail_unsent(self, index, exc):
        """Task `index` could not be sent (`exc`: its pickling failed): it
        counts as a finished task that failed, as in the standard package,
        whose task thread records the failure and sends the next task."""
        with self._pool.result_lock:
            self._record(index, False, exc)
            self._unsent += 1

    def _expect_sent(self):
        """Every task was sent or failed to be: the dispatcher waits for
        the sent ones only (none left: the result is ready)."""
        if self._unsent:
            self._pool.dispatcher.expect(self._job, self._ntasks - self._unsent)

    def _record(self, index, ok, value):
        if self._success is None or (self._success and not ok):
            self._success, self._value = ok, value

    def _finish(self, state):
        self._cache.pop(self._job, None)
        if state != _READY:             # else collect() forgot the job
            self._pool.dispatcher.forget(self._job)
        if self._event is None:
            return
        try:
            if self._success:
                if self._callback is not None:
                    self._callback(self._value)
            elif self._error_callback is not None:
                self._error_callback(self._value)
        finally:
            self._event.set()

    def _abandon(self):
        """The pool is gone: finish with the outcomes that came, failing
        with WorkerLostError if some did not."""
        state, outcomes = self._pool.dispatcher.collect(self._job, 0, _NO_WAIT)
        self._absorb(_CLOSED if state == _PENDING else state, outcomes)


    __class_getitem__ = classmethod(types.GenericAlias)


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The outcome of map_async()/starmap_async(): one task per chunk.  As
    in the standard package, the first failure to come is the outcome, but
    the result is ready (callbacks run, get() returns) only once every
    chunk has finished; a chunk whose worker died counts as finished."""

    _drop_after_failure = True
    _wait_mode = _WAIT_SOME

    def __init__(self, pool, chunksize, length, callback, error_callback):
        self._chunksize = chunksize
        self._ntasks = 0 if length == 0 else -(-length // chunksize)
        super().__init__(pool, callback, error_callback, self._ntasks)
        self._value = [None] * length
        self._success = True

    @property
    def _number_left(self):
        """The chunks not finished yet, 0 once the result is ready: the
        standard package's counter, which progress bars read."""
        if self._done:
            return 0
        finished = self._pool.dispatcher.finished(self._job)
        # a job no longer open is ready: another thread is finishing it
        return 0 if finished is None else self._ntasks - self._unsent - finished

    def _record(self, index, ok, value):
        if not self._success:
            return
        if ok:
            start = index * self._chunksize
            self._value[start:start + len(value)] = value
        else:
            self._success, self._value = False, value


class _Raise:
    """An imap item that is an exception to raise, not a value."""
    __slots__ = ('exc',)

    def __init__(self, exc):
        self.exc = exc


class IMapIterator:
    """The iterator imap() returns: results in input order."""

    # chunks of several items: the first failure ends the iteration, as
    # the standard package's generator over the chunks ends there
    _chunked = False
    _ended = False

    def __init__(self, pool, feeder=None):
        core = pool if isinstance(pool, _PoolCore) else pool._core
        self._pool = core
        self._job = next(job_counter)
        self._cache = core.cache
        self._items = collections.deque()   # values (or _Raise) to hand out
        self._waiting = {}                  # chunk index -> its items
        self._next_chunk = 0
        self._delivered_chunks = 0
        self._length = None                 # chunks, once all are known
        self._feeder = feeder
        self._input_errors = collections.deque()   # (chunk index, exception)
        self._unsent = 0                    # chunks that failed before being sent
        self._lock = threading.Lock()
        core.dispatcher.open_job(self._job, -1, False, False)
        core.remember(self)

    def __iter__(self):
        return self

    def next(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._ended:
                raise StopIteration
            while not self._items:
                self._take_input_error()
                if self._items:
                    break
                if self._length is not None and self._delivered_chunks >= self._length:
                    self._pool.forget(self._job)
                    raise StopIteration
                if self._feeder is not None:
                    self._feeder.refill()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                state, outcomes = self._pool.dispatcher.collect(self._job, left, _WAIT_ANY)
                decode_chunk = self._pool.decode_chunk
                for index, status, data in outcomes:
                    self._add_chunk(index, decode_chunk(status, data))
                if self._items or state == _READY:
                    continue
                if state in (_CLOSED, _GONE):
                    self._length = self._delivered_chunks
                    self._items.append(_Raise(_terminated()))
                elif deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("no result within %s seconds" % timeout)
            value = self._items.popleft()
            if type(value) is _Raise and self._chunked:
                self._ended = True
                self._items.clear()
                self._pool.forget(self._job)
        if type(value) is _Raise:
            raise value.exc
        return value

    __next__ = next

    def _add_chunk(self, index, items):
        waiting = self._waiting
        if index != self._next_chunk:
            waiting[index] = items
            return
        while True:
            self._items.extend(items)
            self._next_chunk += 1
            self._delivered_chunks += 1
            if not waiting or self._next_chunk not in waiting:
                return
            items = waiting.pop(self._next_chunk)

    def _fail_at(self, index, exc, last=True):
        """Chunk `index` failed before it was sent (`exc`: the input raised,
        or the chunk could not be pickled): the consumer hands `exc` out
        after the chunks before it.  `last`: no chunk follows."""
        self._input_errors.append((index, exc))
        self._unsent += 1
        if last:
            self._set_length(index + 1)
        else:
            self._pool.dispatcher.nudge(self._job)   # a consumer may be waiting

    def _take_input_error(self):
        while self._input_errors:
            index, exc = self._input_errors.popleft()
            self._add_chunk(index, [_Raise(exc)])

    def _set_length(self, nchunks):
        self._length = nchunks
        self._pool.dispatcher.expect(self._job, nchunks - self._unsent)


class IMapUnorderedIterator(IMapIterator):
    """The iterator imap_unordered() returns: results as they come."""

    def _add_chunk(self, index, items):
        self._items.extend(items)
        self._delivered_chunks += 1


class _Feeder:
    """Submits an imap's chunks: all at once from the calling thread, a
    bounded number ahead of the consumer (buffersize), or from a thread
    for an iterable of unknown length (consumed eagerly, as the standard
    package does)."""

    # chunks queued per call when feeding without a limit: the feeder
    # thread lets the consumer run between calls
    BATCH = 256

    def __init__(self, core, result, kind, func, iterable, chunksize, buffersize):
        self.core = core
        self.result = result
        self.kind = kind
        self.func = func
        self.chunksize = chunksize
        self.buffersize = buffersize
        self.submitted = 0
        self.lock = threading.Lock()
        try:
            self.items = iter(iterable)
        except Exception as exc:    # raised by next(), as the standard one does
            self.items = None
            result._fail_at(0, exc)

    def feed(self, limit=None):
        """Submit chunks until the input ends or `limit` are out."""
        with self.lock:
            core, job = self.core, self.result._job
            while self.items is not None and (limit is None or self.submitted < limit):
                if core.state == TERMINATE:
                    return
                batch = self.BATCH if limit is None else limit - self.submitted
                count, outcome, unsent = core.dispatcher.submit_chunks(
                    job, self.submitted, self.kind, self.func, self.items,
                    self.chunksize, batch)
                self.submitted += count
                if outcome is None:
                    continue
                if unsent:
                    # a chunk that cannot be sent fails alone and the later
                    # ones still run, as in the standard package (whose
                    # chunked imap ends its iteration at the failure)
                    self.result._fail_at(self.submitted, outcome, last=False)
                    self.submitted += 1
                    continue
                self.items = None
                if isinstance(outcome, Exception):
                    self.result._fail_at(self.submitted, outcome)
                else:
                    self.result._set_length(self.submitted)
                    if outcome is not True:
                        raise outcome   # KeyboardInterrupt: the input ends here

    def refill(self):
        if self.buffersize is not None:
            self.feed(self.result._delivered_chunks + self.buffersize)


# ---- the shared state of a pool (no reference back to the Pool) ------------

class _PoolCore:
    """What the handler thread, the results and the finalizer share.  It
    never refers to the Pool object, so a dropped pool can be collected."""

    def __init__(self, ctx, processes, initializer, initargs, maxtasks, make_worker):
        self.ctx = ctx
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasks
        self.make_worker = make_worker
        self.state = INIT
        self.cache = {}
        self.purge_at = _PURGE_MIN
        self.workers = []                   # the Pool's _pool
        self.by_pid = {}
        self.exitcodes = {}
        self.exit_cond = threading.Condition()
        self.lock = threading.RLock()
        self.result_lock = threading.RLock()
        # signalled when a result is done, for threads that found its job
        # collected by another thread
        self.result_cond = threading.Condition(self.result_lock)
        self.dispatcher = self.make_dispatcher()
        self.handler = None
        self.feeders = []                   # threads submitting an imap's input

    # -- overridden by the thread pool
    def make_dispatcher(self):
        return Dispatcher(_INFLIGHT)

    def decode(self, status, data):
        """(ok, value) for one outcome of the dispatcher (RESULT_QUICK:
        `data` is the value, read by the dispatcher already)."""
        if status == RESULT_QUICK:
            return True, data
        if status == RESULT_LOST:
            return False, _lost(data, self.exitcode_of(data))
        try:
            value = pickle.loads(data)
        except Exception as exc:
            return False, exc
        return status == RESULT_OK, value

    def decode_chunk(self, status, data):
        """The values of one imap chunk, or [_Raise(its exception)]."""
        if status == RESULT_QUICK:
            return data
        if status == RESULT_OK:
            try:
                return pickle.loads(data)
            except Exception as exc:
                return [_Raise(exc)]
        return [_Raise(self.decode(status, data)[1])]

    # -- tasks
    def apply(self, func, args, kwds, callback, error_callback):
        """A new ApplyResult for func(*args, **kwds), its task queued."""
        result = ApplyResult.__new__(ApplyResult)
        result._prepare(self, callback, error_callback)
        job = result._job
        unsent = self.dispatcher.apply(job, result._event is not None, func,
                                       args if type(args) is tuple else tuple(args),
                                       kwds if type(kwds) is dict else dict(kwds))
        cache = self.cache
        cache[job] = result
        if unsent is not None:
            # the task could not be pickled: it fails through its result
            result._fail_unsent(0, unsent)
            result._expect_sent()
        if len(cache) >= self.purge_at:
            self.purge()
        return result

    def remember(self, result):
        self.cache[result._job] = result
        if len(self.cache) >= self.purge_at:
            self.purge()

    def purge(self):
        """Drop finished results nobody asked for from the cache."""
        for result in list(self.cache.values()):
            if isinstance(result, ApplyResult):
                result.ready()
        self.purge_at = max(_PURGE_MIN, 2 * len(self.cache))

    def forget(self, job):
        self.cache.pop(job, None)
        self.dispatcher.forget(job)

    def start_feeder(self, feed):
        """Run `feed` (an imap's input of unknown length) in a thread."""
        thread = threading.Thread(target=feed, daemon=True, name='fastmp-pool-feeder')
        with self.lock:
            self.feeders = [t for t in self.feeders if t.is_alive()]
            thread.start()
            self.feeders.append(thread)

    def wait_for_work(self):
        """After close(): wait until every task is submitted and done.  Like
        the standard package, a closed pool runs all the tasks it was given,
        those of an imap whose iterator stopped at a failed chunk too."""
        with self.lock:
            feeders, self.feeders = self.feeders, []
        for thread in feeders:
            thread.join()
        self.dispatcher.wait_idle(None)

    # -- workers
    def start_worker(self):
        """Start one worker; return (process, parent_fd)."""
        parent, child = socket.socketpair()
        try:
            proc = self.make_worker(self, _ChildEnd(child.fileno(), parent.fileno()))
            proc.start()
        except BaseException:
            parent.close()
            child.close()
            raise
        child.close()
        return proc, parent.detach()

    def register(self, proc, fd):
        self.by_pid[proc.pid] = proc
        self.workers.append(proc)
        budget = self.maxtasks if self.maxtasks else -1
        self.dispatcher.add_worker(fd, proc.sentinel, proc.pid, budget)

    def fill(self):
        """Start workers until there are `processes` of them."""
        with self.lock:
            while len(self.workers) < self.processes and self.state in (RUN, CLOSE):
                self.register(*self.start_worker())

    def worker_gone(self, pid):
        proc = self.by_pid.pop(pid, None)
        if proc is None:
            return
        proc.join()
        with self.exit_cond:
            self.exitcodes[pid] = proc.exitcode
            self.exit_cond.notify_all()
        with self.lock:
            if proc in self.workers:
                self.workers.remove(proc)
            if self.state == RUN or (self.state == CLOSE and self.dispatcher.busy):
                try:
                    self.fill()
                except Exception as exc:
                    util.sub_warning('pool could not replace a worker: %r', exc)

    def exitcode_of(self, pid, timeout=5.0):
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (ChildProcessError, OSError):
            info = None
        if info is not None:
            if info.si_code == os.CLD_EXITED:
                return info.si_status
            return -info.si_status
        with self.exit_cond:
            self.exit_cond.wait_for(lambda: pid in self.exitcodes, timeout)
            return self.exitcodes.get(pid)

    def serve_events(self):
        """The handler thread: replace exited workers, run callbacks."""
        while True:
            events = self.dispatcher.next_events(None)
            if events is None:
                return
            # exits first: a READY of a lost task looks up the exit code
            for kind, value in sorted(events, key=lambda e: e[0] != EVENT_EXIT):
                if kind == EVENT_EXIT:
                    self.worker_gone(value)
                else:
                    result = self.cache.get(value)
                    if result is not None:
                        self.run_callbacks(result)

    def run_callbacks(self, result):
        """Finish `result` in the handler thread, where its callbacks run;
        a callback that raises is reported and the handler goes on."""
        try:
            result._absorb(*self.dispatcher.collect(result._job, 0, _NO_WAIT))
        except Exception:
            sys.stderr.write("Exception in a pool callback:\n")
            traceback.print_exc()

    def start_handler(self):
        self.handler = threading.Thread(target=self.serve_events, daemon=True,
                                        name='fastmp-pool-handler')
        self.handler.start()

    def join_handler(self):
        if self.handler is not None and self.handler is not threading.current_thread():
            self.handler.join()

    def join_workers(self):
        for proc in list(self.workers):
            proc.join()
            self.by_pid.pop(getattr(proc, 'pid', None), None)
        self.workers[:] = []

    def kill_workers(self):
        """Terminate the workers; True when they will exit promptly."""
        for proc in list(self.workers):
            if proc.exitcode is None:
                proc.terminate()
        return True

    def abandon_results(self):
        """The dispatcher is closed: results finish with what they got."""
        for result in list(self.cache.values()):
            if isinstance(result, ApplyResult):
                result._abandon()
        self.cache.clear()

    def terminate(self):
        """Stop everything now; tasks not finished fail."""
        with self.lock:
            if self.state == TERMINATE and self.handler is None:
                return
            self.state = TERMINATE
            self.dispatcher.close(False)
            killed = self.kill_workers()
        self.join_handler()
        self.handler = None
        if killed:
            self.join_workers()
        self.abandon_results()

    def finish(self):
        """After close(): wait for the work, then let the workers go."""
        self.wait_for_work()
        with self.lock:
            self.dispatcher.close(True)
        self.join_handler()
        self.join_workers()
        self.abandon_results()


def _make_process_worker(process_factory, core, channel):
    proc = process_factory(core.ctx, target=worker, args=(
        channel, core.initializer, core.initargs, core.maxtasks))
    proc.name = proc.name.replace('Process', 'PoolWorker')
    proc.daemon = True
    return proc


# ---- Pool ------------------------------------------------------------------

# The standard Pool's private names with which a subclass chooses how tasks
# and results travel (joblib's MemmappingPool pickles them its own way).
_QUEUE_MECHANICS = frozenset({'_setup_queues', '_inqueue', '_outqueue',
                              '_quick_put', '_quick_get'})


def _standard_shapes():
    from . import _pipe_pool
    # a thread pool pickles nothing: it has no use for the queues
    return {ThreadPool: None, Pool: _pipe_pool.PipePool}


class Pool(object):
    """A pool of worker processes that run tasks submitted to it."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        take_standard_shape(cls, _QUEUE_MECHANICS, _standard_shapes)

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None):
        self._state = INIT
        self._pool = []
        if context is None:
            from . import context as _context
            context = _context._default_context
        self._ctx = context
        processes = _default_processes() if processes is None else processes
        _check_pool_arguments(processes, initializer, maxtasksperchild)
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        core = self._make_core()
        self._core = core
        self._pool = core.workers
        self._cache = core.cache
        self._start_workers(core)
        core.start_handler()
        core.state = RUN
        self._state = RUN
        self._terminate = util.Finalize(self, core.terminate, exitpriority=15)

    @staticmethod
    def Process(ctx, *args, **kwds):
        return ctx.Process(*args, **kwds)

    def _make_core(self):
        return _PoolCore(self._ctx, self._processes, self._initializer,
                         self._initargs, self._maxtasksperchild,
                         functools.partial(_make_process_worker, self.Process))

    def _start_workers(self, core):
        """Start every worker before serving any, so that a failure to
        start one leaves nothing behind (the failure is re-raised)."""
        started = []
        try:
            for _ in range(self._processes):
                started.append(core.start_worker())
        except BaseException:
            for proc, fd in started:
                os.close(fd)
                if proc.exitcode is None:
                    proc.terminate()
            for proc, fd in started:
                proc.join()
            core.dispatcher.close(False)
            raise
        core.state = RUN
        util.register_after_fork(core, _close_parent_ends)
        for proc, fd in started:
            core.register(proc, fd)

    def _repopulate_pool(self):
        self._core.fill()

    def __reduce__(self):
        raise NotImplementedError(
            'pool objects cannot be passed between processes or pickled')

    def __repr__(self):
        return '<%s.%s state=%s pool_size=%d>' % (
            type(self).__module__, type(self).__qualname__, self._state, len(self._pool))

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, '_state', None) == RUN:
            _warn("unclosed running multiprocessing pool %r" % self,
                  ResourceWarning, source=self)

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    # -- task methods
    def apply(self, func, args=(), kwds={}):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        if self._state != RUN:
            self._check_running()
        return self._core.apply(func, args, kwds, callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, TASK_MAP, chunksize).get()

    def starmap(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, TASK_STARMAP, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, TASK_MAP, chunksize, callback, error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        return self._map_async(func, iterable, TASK_STARMAP, chunksize, callback,
                               error_callback)

    def _map_async(self, func, iterable, kind, chunksize=None, callback=None,
                   error_callback=None):
        self._check_running()
        if not hasattr(iterable, '__len__'):
            iterable = list(iterable)
        if chunksize is None:
            chunksize = _default_chunksize(len(iterable), len(self._pool))
        elif chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        # a slice of a range is a range: a chunk of it pickles in a few bytes
        items = iterable if isinstance(iterable, (list, tuple, range)) else list(iterable)
        result = MapResult(self._core, chunksize, len(items), callback, error_callback)
        submit = self._core.dispatcher.submit
        try:
            for index, start in enumerate(range(0, len(items), chunksize)):
                unsent = submit(result._job, index, kind, func, items[start:start + chunksize])
                if unsent is not None:
                    result._fail_unsent(index, unsent)
        except BaseException:
            self._core.forget(result._job)
            result._done = True
            raise
        result._expect_sent()
        return result

    def imap(self, func, iterable, chunksize=1, buffersize=None):
        return self._imap(IMapIterator, func, iterable, chunksize, buffersize)

    def imap_unordered(self, func, iterable, chunksize=1, buffersize=None):
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, buffersize)

    def _imap(self, result_type, func, iterable, chunksize, buffersize):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        result = result_type(self._core)
        result._chunked = chunksize > 1
        feeder = _Feeder(self._core, result, TASK_MAP, func, iterable, chunksize,
                         buffersize)
        if buffersize is None and not hasattr(iterable, '__len__'):
            self._core.start_feeder(feeder.feed)
            return result
        if buffersize is not None:
            result._feeder = feeder         # next() feeds the rest
        try:
            feeder.feed(buffersize)         # the first chunks, or all of them
        except BaseException:
            # (a KeyboardInterrupt while pickling) no iterator comes back
            self._core.forget(result._job)
            raise
        return result

    # -- lifecycle
    def close(self):
        if self._state == RUN:
            self._state = CLOSE
            with self._core.lock:
                self._core.state = CLOSE

    def terminate(self):
        self._state = TERMINATE
        self._terminate()

    def join(self):
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._state == CLOSE:
            self._core.finish()
        else:
            self._core.terminate()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()


def _default_chunksize(length, nworkers):
    if length == 0:
        return 1
    chunksize, extra = divmod(length, max(1, nworkers) * 4)
    return chunksize + 1 if extra else chunksize


def _check_pool_arguments(processes, initializer, maxtasksperchild):
    """The standard package's checks, with its exception types."""
    if processes < 1:
        raise ValueError("Number of processes must be at least 1")
    if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
        raise ValueError("maxtasksperchild must be a positive int or None, not %r"
                         % (maxtasksperchild,))
    if initializer is not None and not callable(initializer):
        raise TypeError('initializer must be a callable')


def _default_processes():
    count = getattr(os, 'process_cpu_count', os.cpu_count)()
    return count or 1


# ---- ThreadPool ------------------------------------------------------------

class _ThreadDispatcher:
    """The dispatcher interface of Modules/_fastmp/pool/dispatcher.c over
    threads in this process: tasks and outcomes are Python objects, nothing
    is pickled (so no task fails to be sent: submit() and apply() return
    None)."""

    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.tasks = collections.deque()
        # id -> [expected, finished, failed, drop_after_failure, notify,
        #        posted, outcomes, nudged]
        self.jobs = {}
        self.events = []
        self.busy = 0
        self.closed = False
        self.nworkers = 0

    def open_job(self, job, ntasks, drop_after_failure, notify):
        with self.cond:
            self.jobs[job] = [ntasks, 0, False, drop_after_failure, notify, False, [], False]
            self._post_if_ready(job, self.jobs[job])

    def expect(self, job, ntasks):
        with self.cond:
            slot = self.jobs.get(job)
            if slot is not None:
                slot[0] = ntasks
                self._post_if_ready(job, slot)
            self.cond.notify_all()

    def forget(self, job):
        with self.cond:
            self.jobs.pop(job, None)

    def nudge(self, job):
        with self.cond:
            slot = self.jobs.get(job)
            if slot is not None:
                slot[7] = True
                self.cond.notify_all()

    def finished(self, job):
        with self.cond:
            slot = self.jobs.get(job)
            return None if slot is None else slot[1]

    def submit(self, job, index, kind, func, rest):
        with self.cond:
            if self.closed:
                raise ValueError("pool dispatcher is closed")
            self.tasks.append((job, index, kind, func, rest))
            self.busy += 1
            self.cond.notify_all()

    def submit_chunks(self, job, index, kind, func, items, chunksize, limit):
        count = 0
        while count < limit and not self.closed:
            try:
                chunk = list(itertools.islice(items, chunksize))
                if not chunk:
                    return count, True, False
                self.submit(job, index + count, kind, func, chunk)
            except BaseException as exc:
                if self.closed and isinstance(exc, ValueError):
                    break               # terminated meanwhile: stop quietly
                return count, exc, False
            count += 1
        return count, None, False

    def apply(self, job, notify, func, args, kwds):
        with self.cond:
            if self.closed:
                raise ValueError("pool dispatcher is closed")
            self.jobs[job] = [1, 0, False, False, notify, False, [], False]
        self.submit(job, 0, TASK_APPLY, func, (args, kwds))

    @staticmethod
    def _ready(slot):
        return slot[0] >= 0 and slot[1] >= slot[0]

    def _post_if_ready(self, job, slot):
        if slot[4] and not slot[5] and self._ready(slot):
            slot[5] = True
            self.events.append((EVENT_READY, job))

    def complete(self, job, index, status, value):
        with self.cond:
            self.busy -= 1
            slot = self.jobs.get(job)
            if slot is not None:
                slot[1] += 1
                if not (slot[3] and slot[2]):
                    slot[6].append((index, status, value))
                    slot[2] = slot[2] or status != RESULT_OK
                self._post_if_ready(job, slot)
            self.cond.notify_all()

    def next_task(self):
        """A worker thread's next task, or None when the pool stops."""
        with self.cond:
            while not self.tasks and not self.closed:
                self.cond.wait()
            return self.tasks.popleft() if self.tasks else None

    def collect(self, job, timeout, want):
        with self.cond:
            def done():
                slot = self.jobs.get(job)
                return (slot is None or self.closed or want == _NO_WAIT
                        or self._ready(slot)
                        or (want in (_WAIT_ANY, _WAIT_SOME) and (slot[6] or slot[7])))
            self.cond.wait_for(done, timeout)
            slot = self.jobs.get(job)
            if slot is None:
                return (_CLOSED if self.closed else _GONE), []
            outcomes, slot[6], slot[7] = slot[6], [], False
            if self._ready(slot):
                if want != _WAIT_ANY:
                    del self.jobs[job]
                return _READY, outcomes
            return (_CLOSED if self.closed else _PENDING), outcomes

    def wait_idle(self, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: self.busy == 0 or self.closed, timeout) \
                and self.busy == 0

    def next_events(self, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.events or self.closed, timeout)
            if not self.events and self.closed:
                return None
            events, self.events = self.events, []
            return events

    def worker_exited(self, ident):
        with self.cond:
            self.events.append((EVENT_EXIT, ident))
            self.cond.notify_all()

    def close(self, stop=True):
        with self.cond:
            self.closed = True
            self.tasks.clear()
            self.cond.notify_all()


def _run_thread_task(kind, func, rest):
    if kind == TASK_APPLY:
        return func(*rest[0], **rest[1])
    if kind == TASK_STARMAP:
        return [func(*args) for args in rest]
    return [func(x) for x in rest]


def _thread_worker(dispatcher, initializer, initargs, maxtasks):
    """A ThreadPool worker: serve tasks until the pool stops or the
    budget is spent (then the handler starts a new one)."""
    done = 0
    try:
        if initializer is not None:
            initializer(*initargs)
        while not maxtasks or done < maxtasks:
            entry = dispatcher.next_task()
            if entry is None:
                return
            job, index, kind, func, rest = entry
            entry = None
            try:
                value, status = _run_thread_task(kind, func, rest), RESULT_OK
            except Exception as exc:
                value, status = exc, RESULT_ERROR
            func = rest = None
            dispatcher.complete(job, index, status, value)
            value = None
            done += 1
    finally:
        dispatcher.worker_exited(threading.get_ident())


class _ThreadPoolCore(_PoolCore):

    def make_dispatcher(self):
        return _ThreadDispatcher()

    def decode(self, status, data):
        return status == RESULT_OK, data

    def decode_chunk(self, status, data):
        return data if status == RESULT_OK else [_Raise(data)]

    def start_worker(self):
        proc = self.make_worker(self, None)
        proc.start()
        return proc, None

    def register(self, proc, fd):
        self.by_pid[proc.ident] = proc
        self.workers.append(proc)

    def kill_workers(self):
        """Threads cannot be killed: each stops after its current task
        (the dispatcher is closed), so terminate() does not wait."""
        return False


def _make_thread_worker(core, channel):
    from .dummy import DummyProcess
    proc = DummyProcess(target=_thread_worker, args=(
        core.dispatcher, core.initializer, core.initargs, core.maxtasks))
    proc.name = proc.name.replace('Thread', 'PoolWorker')
    proc.daemon = True
    return proc


class ThreadPool(Pool):
    """A pool of worker threads with the Pool API."""

    def __init__(self, processes=None, initializer=None, initargs=()):
        super().__init__(processes, initializer, initargs)

    @staticmethod
    def Process(ctx, *args, **kwds):
        from .dummy import DummyProcess
        return DummyProcess(*args, **kwds)

    def _make_core(self):
        return _ThreadPoolCore(self._ctx, self._processes, self._initializer,
                               self._initargs, self._maxtasksperchild,
                               _make_thread_worker)

    def _start_workers(self, core):
        core.state = RUN
        core.fill()
