"""Subclasses that drive the standard package's private mechanics get the
standard shape: Queue subclasses (as loky's Queue and concurrent.futures'
call queue) a pipe, locks and a feeder thread started through
`threading`; Pool subclasses that set up their own queues (as joblib's
MemmappingPool) have their tasks and results go through them.  Each test
runs against fastmp and the standard package; plain queues and pools keep
fastmp's native paths."""
import copyreg
import io
import multiprocessing.pool
import multiprocessing.queues
import os
import pickle
import sys
import threading
import weakref

import pytest

import fastmp
import fastmp.context
import fastmp.pool
import fastmp.queues
from fastmp import _pipe_pool, _pipe_queues

pytestmark = pytest.mark.timeout(60)


class LokyStyle:
    """Overrides what loky's Queue overrides, with its argument shapes:
    the pickled state, `_start_thread` (which starts this class's `_feed`
    with arguments of its own) and `_on_queue_feeder_error`."""

    def __init__(self, maxsize=0, *, ctx, tag="tag"):
        super().__init__(maxsize, ctx=ctx)
        self._tag = tag
        self._fed = []  # what this process's feeder wrote

    def __getstate__(self):
        self._queues.context.assert_spawning(self)
        return (self._ignore_epipe, self._maxsize, self._reader, self._writer,
                self._rlock, self._wlock, self._sem, self._opid, self._tag)

    def __setstate__(self, state):
        (self._ignore_epipe, self._maxsize, self._reader, self._writer,
         self._rlock, self._wlock, self._sem, self._opid, self._tag) = state
        self._fed = []
        self._reset()

    def _start_thread(self):
        self._buffer.clear()
        self._thread = threading.Thread(
            target=type(self)._feed, name="QueueFeederThread", daemon=True,
            args=(self._buffer, self._notempty, self._send_bytes, self._wlock,
                  self._writer.close, self._fed, self._queues._sentinel,
                  self._on_queue_feeder_error, self._sem))
        self._thread.start()
        if not self._joincancelled and self._opid != os.getpid():
            self._jointhread = self._queues.Finalize(
                self._thread, type(self)._finalize_join,
                [weakref.ref(self._thread)], exitpriority=-5)
        self._close = self._queues.Finalize(
            self, type(self)._finalize_close, [self._buffer, self._notempty],
            exitpriority=10)

    @staticmethod
    def _feed(buffer, notempty, send_bytes, writelock, close, fed, sentinel,
              onerror, queue_sem):
        while True:
            with notempty:
                while not buffer:
                    notempty.wait()
                obj = buffer.popleft()
            if obj is sentinel:
                close()
                return
            try:
                data = pickle.dumps(obj)
            except Exception as e:
                queue_sem.release()
                onerror(e, obj)
                continue
            with writelock:
                send_bytes(data)
            fed.append(obj)

    def _on_queue_feeder_error(self, e, obj):
        self._fed.append(("refused", type(e).__name__))


class FastmpLokyQueue(LokyStyle, fastmp.queues.Queue):
    _queues = fastmp.queues


class StdlibLokyQueue(LokyStyle, multiprocessing.queues.Queue):
    _queues = multiprocessing.queues


class LokyStyleSimple:
    """loky's SimpleQueue: its own put, close and pickled state."""

    def __getstate__(self):
        return (self._reader, self._writer, self._rlock, self._wlock)

    def __setstate__(self, state):
        self._reader, self._writer, self._rlock, self._wlock = state

    def put(self, obj):
        data = pickle.dumps(("simple", obj))
        with self._wlock:
            self._writer.send_bytes(data)

    def close(self):
        self._reader.close()
        self._writer.close()


class FastmpLokySimpleQueue(LokyStyleSimple, fastmp.queues.SimpleQueue):
    pass


class StdlibLokySimpleQueue(LokyStyleSimple, multiprocessing.queues.SimpleQueue):
    pass


class HookedJoinableQueue:
    """Only the feeder-error hook, as concurrent.futures overrides it."""

    def _on_queue_feeder_error(self, e, obj):
        self.refused.append((type(e).__name__, threading.current_thread().name))


class FastmpHookedJoinableQueue(HookedJoinableQueue, fastmp.queues.JoinableQueue):
    pass


class StdlibHookedJoinableQueue(HookedJoinableQueue, multiprocessing.queues.JoinableQueue):
    pass


def classes(impl, *names):
    prefix = "Fastmp" if impl is fastmp else "Stdlib"
    return [globals()[prefix + name] for name in names]


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses pickling")


def echo(inbox, outbox, simple_in, simple_out):
    """Child: move two messages from `inbox` to `outbox`, flush them, then
    answer on the simple queues with how many this process's own
    (overriding) feeder wrote."""
    for _ in range(2):
        outbox.put(("echo", inbox.get(timeout=30)))
    outbox.close()
    outbox.join_thread()
    simple_out.put((simple_in.get(), len(outbox._fed)))


def test_loky_style_subclasses_round_trip(ctx, impl):
    queue_cls, simple_cls = classes(impl, "LokyQueue", "LokySimpleQueue")
    inbox, outbox = queue_cls(ctx=ctx), queue_cls(ctx=ctx)
    simple_in, simple_out = simple_cls(ctx=ctx), simple_cls(ctx=ctx)
    child = ctx.Process(target=echo, args=(inbox, outbox, simple_in, simple_out))
    child.start()
    try:
        inbox.put([1, 2])
        inbox.put("two")
        simple_in.put(3)
        got = [outbox.get(timeout=30) for _ in range(2)]
        simple_got = simple_out.get()
    finally:
        child.join(30)
    assert child.exitcode == 0
    assert got == [("echo", [1, 2]), ("echo", "two")]
    # the subclass's own put pickled both ways, and get read that as is
    assert simple_got == ("simple", (("simple", 3), 2))
    for queue in (inbox, outbox):
        queue.close()
        queue.join_thread()
    # this process's feeder was the subclass's _feed (like loky's, the
    # queue's creator does not join it: wait for it here)
    inbox._thread.join(30)
    assert inbox._fed == [[1, 2], "two"]
    assert inbox._thread.name == "QueueFeederThread"
    for queue in (simple_in, simple_out):
        queue.close()


def test_feeder_error_reaches_the_overriding_hook(impl):
    queue_cls, = classes(impl, "LokyQueue")
    queue = queue_cls(1, ctx=impl.get_context("fork"))
    queue.put(Unpicklable())
    queue.put("after")
    # the refused message gave its slot back
    assert queue.get(timeout=30) == "after"
    assert queue.empty() and not queue.full()
    queue.close()
    queue._thread.join(30)
    assert queue._fed == [("refused", "TypeError"), "after"]


def test_joinable_subclass_with_a_hook(impl):
    queue_cls, = classes(impl, "HookedJoinableQueue")
    ctx = impl.get_context("fork")
    queue = queue_cls(2, ctx=ctx)
    queue.refused = []
    queue.put(Unpicklable())
    queue.put("kept")
    assert queue.get(timeout=30) == "kept"
    # the hook ran in the feeder thread, as in the standard package
    assert queue.refused == [("TypeError", "QueueFeederThread")]
    queue.task_done()
    queue.task_done()  # the refused message was counted too
    with pytest.raises(ValueError):
        queue.task_done()
    queue.join()
    queue.close()
    queue.join_thread()


def refuse_to_start(thread):
    raise RuntimeError("can't create new thread at interpreter shutdown")


def test_feeder_that_cannot_start_leaves_the_queue_usable(impl, monkeypatch):
    if impl is multiprocessing and sys.version_info < (3, 12):
        pytest.skip("the standard package recovers from this from 3.12 on (gh-109047)")
    queue_cls, = classes(impl, "HookedJoinableQueue")
    queue = queue_cls(ctx=impl.get_context("fork"))
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", refuse_to_start)
        with pytest.raises(RuntimeError, match="shutdown"):
            queue.put("lost")
    assert queue._thread is None
    queue.put("kept")
    assert queue.get(timeout=30) == "kept"
    queue.close()
    queue.join_thread()


def test_failed_feeder_start_gives_back_the_slot(fctx, monkeypatch):
    queue = FastmpHookedJoinableQueue(1, ctx=fctx)
    monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
    with pytest.raises(RuntimeError):
        queue.put("lost")
    assert not queue.full() and queue.qsize() == 0


def test_standard_shape_only_where_asked(fctx):
    class Counting(fastmp.queues.Queue):
        """Overrides a public method only: keeps the channel."""
        def put(self, obj, block=True, timeout=None):
            super().put(obj, block, timeout)

    for queue in (fctx.Queue(), fctx.SimpleQueue(), fctx.JoinableQueue(),
                  Counting(ctx=fctx)):
        assert not isinstance(queue, (_pipe_queues.PipeQueue, _pipe_queues.PipeSimpleQueue))
        queue.close()
    for cls, fast in [(FastmpLokyQueue, fastmp.queues.Queue),
                      (FastmpLokySimpleQueue, fastmp.queues.SimpleQueue),
                      (FastmpHookedJoinableQueue, fastmp.queues.JoinableQueue)]:
        assert issubclass(cls, fast)
        assert issubclass(cls, (_pipe_queues.PipeQueue, _pipe_queues.PipeSimpleQueue))

    # a subclass of a fast subclass gets the standard shape after its base
    class Deeper(Counting):
        def _feed(*args):
            pass
    assert Deeper.__mro__[1:3] == (Counting, _pipe_queues.PipeQueue)


class Marked:
    """Records which custom picklers it went through."""

    def __init__(self, trail=()):
        self.trail = trail


def rebuild_marked(trail):
    return Marked(trail)


def add_trail(marked):
    return Marked(marked.trail + ("worker",))


class TaggingQueue:
    """joblib's CustomizablePicklingQueue in small: a locked pipe whose
    writer pickles Marked objects with a reducer of its own."""

    def __init__(self, ctx, tag):
        self._reader, self._writer = ctx.Pipe(duplex=False)
        self._rlock, self._wlock = ctx.Lock(), ctx.Lock()
        self._tag = tag

    def _send(self, obj):
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer)
        tag = self._tag
        pickler.dispatch_table = dict(copyreg.dispatch_table)
        pickler.dispatch_table[Marked] = lambda m: (rebuild_marked, (m.trail + (tag,),))
        pickler.dump(obj)
        self._writer.send_bytes(buffer.getvalue())

    def _recv(self):
        return self._reader.recv()

    def put(self, obj):
        with self._wlock:
            self._send(obj)

    def get(self):
        with self._rlock:
            return self._reader.recv()


class TaggingPool:
    """Overrides _setup_queues as joblib's PicklingPool does."""

    def _setup_queues(self):
        self._inqueue = TaggingQueue(self._ctx, "forward")
        self._outqueue = TaggingQueue(self._ctx, "backward")
        self._quick_put = self._inqueue._send
        self._quick_get = self._outqueue._recv


class FastmpTaggingPool(TaggingPool, fastmp.pool.Pool):
    pass


class StdlibTaggingPool(TaggingPool, multiprocessing.pool.Pool):
    pass


def test_pool_subclass_sends_through_its_own_queues(ctx, impl):
    pool_cls, = classes(impl, "TaggingPool")
    with pool_cls(2, context=ctx) as pool:
        assert pool.apply(add_trail, (Marked(),)).trail == ("forward", "worker", "backward")
        results = pool.map(add_trail, [Marked()] * 5, chunksize=2)
        assert [m.trail for m in results] == [("forward", "worker", "backward")] * 5
        # (not raised here: the traceback would keep the pool in a cycle)
        failed = pool.apply_async(divmod, (1, 0))
        failed.wait(30)
        assert not failed.successful()
        assert isinstance(failed._value, ZeroDivisionError)
        pool.close()
        pool.join()


def test_pool_subclass_terminated_while_busy(impl):
    pool_cls, = classes(impl, "TaggingPool")
    pool = pool_cls(2, context=impl.get_context("fork"))
    pool.map_async(add_trail, [Marked()] * 200, chunksize=1)
    pool.terminate()
    pool.join()
    assert all(not worker.is_alive() for worker in pool._pool)


def test_only_pools_with_their_own_queues_change_shape():
    assert issubclass(FastmpTaggingPool, _pipe_pool.PipePool)
    assert not issubclass(fastmp.pool.Pool, _pipe_pool.PipePool)

    class ThreadPoolWithQueues(TaggingPool, fastmp.pool.ThreadPool):
        pass
    # threads pickle nothing: a thread pool keeps its own shape
    assert not issubclass(ThreadPoolWithQueues, _pipe_pool.PipePool)


class ForeignContext(fastmp.context.BaseContext):
    """A context class of another library, as loky's LokyContext."""
    _name = "foreign"


def test_foreign_context_pipes_speak_the_standard_wire():
    # such a library rebuilds a passed Connection from its descriptor
    # alone: its duplex pipes carry their messages on the socket itself
    ours = fastmp.get_context().Pipe()
    theirs = ForeignContext().Pipe()
    assert ours[0]._ring_fds() is not None
    assert theirs[0]._ring_fds() is None and theirs[1]._ring_fds() is None
    for a, b in (ours, theirs):
        a.send("there")
        assert b.recv() == "there"
        a.close()
        b.close()
