"""A process Pool whose tasks and results travel through the queues that a
subclass's ``_setup_queues`` sets up, as in the standard package.

joblib's MemmappingPool overrides ``_setup_queues`` so that tasks and
results are pickled with reducers of its own (a large numpy array goes as
a reference to a memory-mapped file).  fastmp's Pool sends tasks through
its native dispatcher, which would bypass them; a subclass that defines
``_setup_queues`` gets this class as its base instead (see
_standard_shape.py).  Its tasks go out through ``self._quick_put``
to workers that read ``self._inqueue``, and results come back from
``self._outqueue`` through ``self._quick_get``, each a tuple
``(job, index, status, value)``.  The results, callbacks and the pool's
life cycle are fastmp's own (a Python dispatcher with the native one's
interface, as for ThreadPool); like the standard package, it cannot tell
which worker held a task, so a task whose worker died is not failed.
"""
import functools
import os
import threading

from . import connection, pool
from ._pipe_queues import PipeSimpleQueue

__all__ = ['PipePool', 'worker']


def _run_task(task):
    """(status, value) of one task: its result, or its exception with the
    worker's traceback attached when it reaches the parent."""
    job, index, kind, func, rest = task
    try:
        return pool.RESULT_OK, pool._run_thread_task(kind, func, rest)
    except Exception as exc:
        return pool.RESULT_ERROR, pool._Failure(exc)


def worker(inqueue, outqueue, initializer=None, initargs=(), maxtasks=None):
    """A worker's body: serve `(job, index, kind, func, args)` tasks from
    `inqueue` until None or `maxtasks` are done, answering on `outqueue`."""
    if initializer is not None:
        initializer(*initargs)
    done = 0
    while not maxtasks or done < maxtasks:
        try:
            task = inqueue.get()
        except (EOFError, OSError):
            return                      # the pool is gone
        if task is None:
            return
        status, value = _run_task(task)
        job, index = task[0], task[1]
        task = None
        try:
            outqueue.put((job, index, status, value))
        except Exception as exc:
            # the result (or the exception) does not pickle
            failure = pool.MaybeEncodingError(exc, getattr(value, 'exc', value))
            outqueue.put((job, index, pool.RESULT_ERROR, failure))
        value = None
        done += 1


class _QueuePoolCore(pool._PoolCore):
    """The pool's shared state; three threads besides fastmp's handler:
    the sender (tasks to `quick_put`), the reader (results from
    `quick_get`) and the watcher (worker exits)."""

    # as in a thread pool: outcomes are objects already (the reader
    # unpickled them), the dispatcher is in Python, a worker has no channel
    make_dispatcher = pool._ThreadPoolCore.make_dispatcher
    decode = pool._ThreadPoolCore.decode
    decode_chunk = pool._ThreadPoolCore.decode_chunk
    start_worker = pool._ThreadPoolCore.start_worker

    def __init__(self, queues, *args):
        self.inqueue, self.outqueue, self.quick_put, self.quick_get = queues
        # written to when the watcher must look at a changed set of workers
        self.wake_r, self.wake_w = os.pipe()
        self.reader_stopped = False
        super().__init__(*args)
        self.threads = [threading.Thread(target=target, daemon=True, name=name)
                        for target, name in ((self.send_tasks, 'fastmp-pool-sender'),
                                             (self.read_results, 'fastmp-pool-reader'),
                                             (self.watch_workers, 'fastmp-pool-watcher'))]

    def register(self, proc, fd):
        self.by_pid[proc.pid] = proc
        self.workers.append(proc)
        if self.wake_w is not None:
            os.write(self.wake_w, b'w')

    def kill_workers(self):
        # the reader first, while no worker can be holding the out-queue's
        # lock: one killed in the middle of a put would hold it for ever
        self.stop_reader()
        return super().kill_workers()

    def start_handler(self):
        super().start_handler()
        for thread in self.threads:
            thread.start()

    def send_tasks(self):
        """Sender thread: each queued task to the workers, in order."""
        dispatcher = self.dispatcher
        while True:
            task = dispatcher.next_task()
            if task is None:
                return
            try:
                self.quick_put(task)
            except Exception as exc:    # it does not pickle: it fails alone
                dispatcher.complete(task[0], task[1], pool.RESULT_ERROR, exc)
            task = None

    def read_results(self):
        """Reader thread: each result to its job, until the None that
        stop_threads sends."""
        while True:
            try:
                outcome = self.quick_get()
            except (EOFError, OSError):
                return
            if outcome is None:
                return
            job, index, status, value = outcome
            outcome = None
            self.dispatcher.complete(job, index, status, value)
            value = None

    def watch_workers(self):
        """Watcher thread: report each worker that exits."""
        watched, seen = {}, set()
        while True:
            with self.lock:
                for proc in self.workers:
                    if proc.pid not in seen:
                        seen.add(proc.pid)
                        watched[proc.sentinel] = proc.pid
            ready = connection.wait([self.wake_r, *watched])
            for handle in ready:
                if handle == self.wake_r:
                    if not os.read(self.wake_r, 64):
                        return          # stop_threads closed the other end
                else:
                    self.dispatcher.worker_exited(watched.pop(handle))

    def stop_reader(self):
        """End the reader thread (the None it reads is its cue)."""
        if self.reader_stopped:
            return
        self.reader_stopped = True
        try:
            self.outqueue.put(None)
        except OSError:
            return                      # the queue is gone: so is the reader
        self.threads[1].join()

    def stop_threads(self):
        """After the dispatcher closed: end the reader, the sender and the
        watcher."""
        self.stop_reader()
        if self.wake_w is None:
            return
        os.close(self.wake_w)
        self.wake_w = None
        for thread in self.threads:
            thread.join()
        os.close(self.wake_r)

    def finish(self):
        self.wait_for_work()
        with self.lock:
            self.dispatcher.close(True)
            workers = list(self.workers)
        for _ in workers:
            self.quick_put(None)
        self.join_handler()
        self.join_workers()
        self.stop_threads()
        self.abandon_results()

    def terminate(self):
        super().terminate()
        self.stop_threads()


class PipePool(pool.Pool):
    """Pool whose tasks and results go through `_setup_queues`' queues."""

    _standard_shaped = True

    def _setup_queues(self):
        self._inqueue = PipeSimpleQueue(ctx=self._ctx)
        self._outqueue = PipeSimpleQueue(ctx=self._ctx)
        self._quick_put = self._inqueue._writer.send
        self._quick_get = self._outqueue._reader.recv

    def _make_core(self):
        self._setup_queues()
        queues = (self._inqueue, self._outqueue, self._quick_put, self._quick_get)
        # (like the fast pool's core, it holds no reference to the Pool)
        return _QueuePoolCore(queues, self._ctx, self._processes, self._initializer,
                              self._initargs, self._maxtasksperchild,
                              functools.partial(_make_worker, self.Process))

    def _start_workers(self, core):
        core.state = pool.RUN
        core.fill()


def _make_worker(process_factory, core, channel):
    proc = process_factory(core.ctx, target=worker, args=(
        core.inqueue, core.outqueue, core.initializer, core.initargs, core.maxtasks))
    proc.name = proc.name.replace('Process', 'PoolWorker')
    proc.daemon = True
    return proc
