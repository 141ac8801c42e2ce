"""Queue, JoinableQueue and SimpleQueue.

The first two parts are the standard behaviour, written once and run against
fastmp and the standard package: the API, messages of any size and type, and
processes under every start method.  The last part, "fastmp only", covers
the README's "Queue.put pickles in the calling thread" and the crash safety
of fastmp's shared-memory ring under real SIGKILLs and signals."""
import hashlib
import itertools
import os
import pickle
import queue
import random
import signal
import threading
import time

import pytest

import fastmp
from fastmp import queues

from support import wait_for

BIG = 64 << 20
RING = queues.RING_BYTES


@pytest.fixture
def fork_ctx(impl):
    """A fork context of each implementation (behaviour must agree)."""
    return impl.get_context("fork")


# ---- workers (module level: spawn and forkserver children import them) --

def echo_worker(inq, outq, jq, sq):
    """Exercise every method from a child, report through outq."""
    item = inq.get()
    outq.put(("got", item))
    outq.put_nowait(("qsize", inq.qsize(), inq.empty(), inq.full()))
    try:
        inq.get(timeout=0.05)
    except queue.Empty:
        outq.put("empty-timeout")
    try:
        inq.get_nowait()
    except queue.Empty:
        outq.put("empty-nowait")
    task = jq.get()
    jq.task_done()
    outq.put(("task", task))
    sq.put(("simple", sq.empty()))
    outq.close()
    outq.join_thread()


def big_worker(inq, outq):
    data = inq.get()
    outq.put(hashlib.sha256(data).hexdigest())
    outq.put(data)


def producer_worker(q, ident, count, seed):
    rng = random.Random(seed)
    for i in range(count):
        size = rng.choice((0, 10, 300, 5000, RING // 3))
        q.put((ident, i, os.urandom(size)))


def consumer_worker(q, results):
    seen = []
    while True:
        item = q.get()
        if item is None:
            break
        ident, i, payload = item
        seen.append((ident, i, hashlib.sha1(payload).hexdigest()))
    results.put(seen)


def put_and_exit_worker(q, n, cancel):
    for i in range(n):
        q.put(("msg", i, b"x" * 1000))
    q.put(bytes(4 << 20))
    if cancel:
        q.cancel_join_thread()


def counting_producer(q, n):
    for i in range(n):
        q.put((i, "x" * 200))
    q.put(None)


def hold_put_worker(q):
    q.put(bytes(BIG))               # cannot fit: streams and stalls


def getter_worker(q, outq):
    outq.put(q.get())


def put_after_big_worker(q):
    q.put(bytes(BIG))
    q.put("after")


# ---- the standard API, on both packages ----------------------------------

def test_fifo_and_types(fork_ctx):
    q = fork_ctx.Queue()
    items = [1, "two", b"three", 4.0, None, True, (5, [6]), {"seven": 7},
             bytearray(b"eight"), "x" * 100000]
    for item in items:
        q.put(item)
    assert [q.get(timeout=5) for _ in items] == items
    q.close()
    q.join_thread()


def test_get_timeout_and_nowait(fork_ctx):
    q = fork_ctx.Queue()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - start >= 0.19
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(1)
    assert q.get(True, 5) == 1


def test_bounded_put_full_and_qsize(fork_ctx):
    q = fork_ctx.Queue(2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put(2, timeout=1)
    assert wait_for(lambda: q.qsize() == 2)
    assert q.full()
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - start >= 0.19
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, False)
    assert q.get() == 1
    q.put(3)
    assert [q.get(), q.get()] == [2, 3]
    assert q.qsize() == 0 and not q.full()


def test_bounded_put_waits_for_a_get(fork_ctx):
    q = fork_ctx.Queue(1)
    q.put("first")
    timer = threading.Timer(0.2, q.get)
    timer.start()
    start = time.monotonic()
    q.put("second", timeout=10)
    assert time.monotonic() - start >= 0.15
    timer.join()
    assert q.get(timeout=5) == "second"


def test_closed_queue_refuses(fork_ctx):
    q = fork_ctx.Queue()
    q.put(1)
    q.close()
    assert q.qsize() == 1 and not q.full()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.join_thread()


def test_empty_on_a_closed_queue(fork_ctx):
    # as the standard package: close() ends the read side of a SimpleQueue,
    # and of a Queue once a put was made through it
    sq = fork_ctx.SimpleQueue()
    sq.close()
    with pytest.raises(OSError, match="is closed"):
        sq.empty()
    for make in (fork_ctx.Queue, fork_ctx.JoinableQueue):
        unused = make()
        unused.close()
        unused.join_thread()
        assert unused.empty()
        used = make()
        used.put("x")
        used.close()
        used.join_thread()
        with pytest.raises(OSError, match="is closed"):
            used.empty()


def put_and_report(q, report):
    try:
        q.put("from child")
        report.put("put")
    except Exception as exc:
        report.put(type(exc).__name__)


def test_close_does_not_carry_into_a_forked_child(fork_ctx):
    # the standard package resets a Queue in a forked child: closed in the
    # parent, it still takes puts there (a SimpleQueue's close() carries)
    report = fork_ctx.SimpleQueue()
    for closed, outcome in ((fork_ctx.Queue(), "put"), (fork_ctx.SimpleQueue(), "OSError")):
        closed.close()
        child = fork_ctx.Process(target=put_and_report, args=(closed, report))
        child.start()
        assert report.get() == outcome
        child.join(30)
        assert child.exitcode == 0


def test_join_thread_needs_close(fork_ctx):
    q = fork_ctx.Queue()
    q.put(1)
    with pytest.raises(AssertionError):
        q.join_thread()
    q.cancel_join_thread()
    assert q.get(timeout=5) == 1


def test_joinable_queue(fork_ctx):
    q = fork_ctx.JoinableQueue()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    for i in range(3):
        q.put(i)

    def work():
        for _ in range(3):
            q.get(timeout=5)
            time.sleep(0.05)
            q.task_done()

    worker = threading.Thread(target=work)
    worker.start()
    q.join()
    assert q.empty()
    worker.join()
    with pytest.raises(ValueError):
        q.task_done()


def test_simple_queue(fork_ctx):
    q = fork_ctx.SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    q.put(b"raw")
    assert wait_for(lambda: not q.empty())
    assert q.get() == [1, 2]
    assert q.get() == b"raw"
    assert q.empty()
    q.close()


def test_arguments_by_keyword(fork_ctx):
    q = fork_ctx.Queue()
    q.put(obj=1, block=True, timeout=5)
    q.put_nowait(obj=2)
    assert [q.get(block=True, timeout=5), q.get(timeout=5)] == [1, 2]
    with pytest.raises(TypeError):
        q.put(1, obj=2)
    with pytest.raises(TypeError):
        q.get(wait=True)
    s = fork_ctx.SimpleQueue()
    s.put(obj=3)
    assert s.get() == 3
    for closing in (q, s):
        closing.close()


def test_pickling_outside_process_start_raises(fork_ctx):
    for q in (fork_ctx.Queue(), fork_ctx.JoinableQueue(), fork_ctx.SimpleQueue()):
        with pytest.raises(RuntimeError):
            pickle.dumps(q)


def test_generic_alias(fork_ctx):
    alias = type(fork_ctx.SimpleQueue())[int]
    assert alias.__args__ == (int,)


class Point:
    def __init__(self, x):
        self.x = x


def _rebuild_point(x):
    return Point(x * 10)


def test_registered_reducers_apply(impl):
    pickler = impl.reduction.ForkingPickler
    q = impl.get_context("fork").Queue()
    q.put([Point(2)])                   # pickled before the reducer exists
    assert q.get(timeout=5)[0].x == 2
    pickler.register(Point, lambda p: (_rebuild_point, (p.x,)))
    try:
        q.put(Point(4))
        assert q.get(timeout=5).x == 40
        q.close()
        q.join_thread()
    finally:
        pickler._extra_reducers.pop(Point, None)


class BytesSub(bytes):
    pass


def test_str_of_every_width_is_sent_exactly(fork_ctx):
    q = fork_ctx.Queue()
    # ASCII, Latin-1, BMP and astral; small, and larger than one record
    items = ["", "ascii", "caf\u00e9", "\u20ac" * 3, "\U0001f600x", "a\x00b",
             "y" * (RING // 2), "\u00e9" * (RING // 2), "ok\ud800"]
    for item in items:
        q.put(item)
    got = [q.get(timeout=10) for _ in items]
    assert got == items
    assert [type(g) for g in got] == [str] * len(items)


def test_bytes_are_sent_exactly(fork_ctx):
    q = fork_ctx.Queue()
    for item in (b"", b"\0" * 17, bytes(range(256)), BytesSub(b"sub")):
        q.put(item)
    assert q.get() == b""
    assert q.get() == b"\0" * 17
    assert q.get() == bytes(range(256))
    got = q.get()
    assert type(got) is BytesSub and got == b"sub"


def test_messages_larger_than_the_ring_in_one_process(fork_ctx):
    q = fork_ctx.Queue()
    data = os.urandom(3 * RING + 12345)
    q.put(data)                     # returns at once: the feeder streams it
    q.put("next")
    assert q.get(timeout=30) == data
    assert q.get(timeout=5) == "next"


@pytest.mark.timeout(60)
def test_small_messages_beyond_the_ring_without_a_reader(fork_ctx):
    q = fork_ctx.Queue()
    n = 3 * RING // 256
    for i in range(n):              # nobody reads: put buffers, never blocks
        (q.put if i % 2 else q.put_nowait)("%08d" % i + "x" * 248)
    assert [q.get(timeout=10)[:8] for _ in range(n)] == ["%08d" % i for i in range(n)]
    assert q.empty()


def test_no_fd_left_behind(fork_ctx):
    before = set(os.listdir("/proc/self/fd"))
    for make in (fork_ctx.Queue, fork_ctx.JoinableQueue, fork_ctx.SimpleQueue):
        q = make()
        q.put("x")
        assert q.get() == "x"
        del q
    assert wait_for(lambda: set(os.listdir("/proc/self/fd")) <= before)


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted


def _interrupted_by_a_signal(call):
    """Run `call` with a SIGUSR1 due in 0.2 s whose handler raises
    Interrupted; check that it does."""
    old = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        with pytest.raises(Interrupted):
            call()
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.timeout(30)
def test_signals_interrupt_blocking_calls(fork_ctx):
    full = fork_ctx.Queue(1)
    full.put(0)
    jq = fork_ctx.JoinableQueue()
    jq.put(0)
    for call in (fork_ctx.Queue().get, lambda: full.put(1), jq.join):
        _interrupted_by_a_signal(call)


# ---- across processes, under every start method, on both packages --------

@pytest.mark.timeout(60)
def test_every_method_from_a_child(ctx):
    inq, outq, jq, sq = ctx.Queue(), ctx.Queue(), ctx.JoinableQueue(), ctx.SimpleQueue()
    p = ctx.Process(target=echo_worker, args=(inq, outq, jq, sq))
    p.start()
    inq.put({"hello": "child"})
    jq.put("job")
    assert outq.get(timeout=30) == ("got", {"hello": "child"})
    assert outq.get(timeout=10) == ("qsize", 0, True, False)
    assert outq.get(timeout=10) == "empty-timeout"
    assert outq.get(timeout=10) == "empty-nowait"
    assert outq.get(timeout=10) == ("task", "job")
    jq.join()
    assert sq.get() == ("simple", True)
    p.join(30)
    assert p.exitcode == 0


@pytest.mark.timeout(90)
def test_64MiB_messages_both_ways(ctx):
    inq, outq = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=big_worker, args=(inq, outq))
    p.start()
    data = os.urandom(1 << 20) * (BIG >> 20)
    inq.put(data)
    assert outq.get(timeout=60) == hashlib.sha256(data).hexdigest()
    assert outq.get(timeout=60) == data
    p.join(30)
    assert p.exitcode == 0


@pytest.mark.timeout(90)
def test_many_producers_many_consumers_checksums(ctx):
    q, results = ctx.Queue(), ctx.Queue()
    producers = [ctx.Process(target=producer_worker, args=(q, i, 150, i)) for i in range(3)]
    consumers = [ctx.Process(target=consumer_worker, args=(q, results)) for _ in range(3)]
    for p in producers + consumers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    for _ in consumers:
        q.put(None)
    per_consumer = [results.get(timeout=60) for _ in consumers]
    seen = [item for part in per_consumer for item in part]
    for p in consumers:
        p.join(30)
        assert p.exitcode == 0
    expected = []
    for ident in range(3):
        rng = random.Random(ident)
        for i in range(150):
            rng.choice((0, 10, 300, 5000, RING // 3))
            expected.append((ident, i))
    assert sorted((ident, i) for ident, i, _ in seen) == sorted(expected)
    # per producer, each consumer saw that producer's messages in order
    for part in per_consumer:
        for ident in range(3):
            order = [i for who, i, _ in part if who == ident]
            assert order == sorted(order)
    assert q.empty() and q.qsize() == 0


@pytest.mark.timeout(60)
def test_buffered_messages_are_flushed_at_exit(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=put_and_exit_worker, args=(q, 3000, False))
    p.start()
    # far more than the ring holds: the child waits at exit until we read
    time.sleep(1.0)
    assert p.is_alive()
    got = [q.get(timeout=10) for _ in range(3000)]
    assert [g[1] for g in got] == list(range(3000))
    assert q.get(timeout=10) == bytes(4 << 20)
    p.join(30)
    assert p.exitcode == 0


@pytest.mark.timeout(60)
def test_a_producer_outrunning_a_paused_consumer_keeps_order(ctx):
    # the producer fills the ring and buffers while the consumer pauses,
    # then drains its buffer as room comes
    q = ctx.Queue()
    n = 4 * RING // 200
    p = ctx.Process(target=counting_producer, args=(q, n))
    p.start()
    got = [q.get(timeout=30) for _ in range(100)]
    time.sleep(0.3)
    while got[-1] is not None:
        got.append(q.get(timeout=30))
    assert [item[0] for item in got[:-1]] == list(range(n))
    p.join(30)
    assert p.exitcode == 0


# ==== fastmp only: README deviations and the ring's crash safety ==========

def test_pickling_error_raises_at_put():
    """README "Queue.put pickles in the calling thread": an unpicklable
    object raises at put(), and the queue goes on."""
    q = fastmp.get_context("fork").Queue()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put(lambda: None)
    assert q.qsize() == 0
    q.put("still works")
    assert q.get(timeout=5) == "still works"


@pytest.mark.timeout(30)
def test_put_cut_off_by_a_signal_is_dropped():
    """Internal (the shared-memory ring): a SimpleQueue message larger than
    the ring, cut off by a signal, is dropped and the next one arrives whole
    (the standard package's pipe is left mid-message)."""
    sq = fastmp.get_context("fork").SimpleQueue()
    _interrupted_by_a_signal(lambda: sq.put(bytes(3 * RING)))
    sq.put("next")
    assert sq.get() == "next"


@pytest.mark.timeout(60)
def test_cancel_join_thread_does_not_wait(fctx):
    """Internal (the shared-memory ring): a child that exits after
    cancel_join_thread() leaves whole messages in order and drops the one it
    cut off (the standard package's pipe is left mid-message)."""
    q = fctx.Queue()
    p = fctx.Process(target=put_and_exit_worker, args=(q, 3000, True))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    # whatever arrived arrives in order; a message cut off is dropped
    got = []
    while True:
        try:
            got.append(q.get(timeout=0.5))
        except queue.Empty:
            break
    small = [g[1] for g in got if isinstance(g, tuple)]
    assert small == list(range(len(small)))
    q.put("usable")
    assert q.get(timeout=5) == "usable"


@pytest.mark.timeout(60)
def test_sigkill_of_a_writer_mid_message(fctx):
    """Internal (the shared-memory ring): a writer killed inside a
    message larger than the ring leaves the queue usable."""
    q = fctx.Queue()
    p = fctx.Process(target=hold_put_worker, args=(q,))
    p.start()
    # the 64 MiB message fills the ring and its writer waits for room
    assert wait_for(lambda: not q.empty(), timeout=30)
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    q.put("after")
    assert q.get(timeout=10) == "after"
    assert q.empty()


@pytest.mark.timeout(60)
def test_sigkill_of_a_reader_mid_message(fctx):
    """Internal (the shared-memory ring): a reader killed inside a
    message leaves the rest of it to be skipped by the next reader."""
    q, outq = fctx.Queue(), fctx.Queue()
    writer = fctx.Process(target=put_after_big_worker, args=(q,))
    writer.start()
    assert wait_for(lambda: not q.empty(), timeout=30)
    time.sleep(0.1)
    os.kill(writer.pid, signal.SIGSTOP)      # the message stalls mid-way
    try:
        reader = fctx.Process(target=getter_worker, args=(q, outq))
        reader.start()
        # the reader drains what is in the ring and waits inside the message
        assert wait_for(lambda: q.empty(), timeout=30)
        time.sleep(0.2)
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(10)
    finally:
        os.kill(writer.pid, signal.SIGCONT)
    # the next reader skips the rest of the torn message
    assert q.get(timeout=30) == "after"
    writer.join(30)
    assert writer.exitcode == 0


@pytest.mark.timeout(60)
def test_waiting_on_a_dead_readers_lock_times_out_then_recovers(fctx):
    """Internal (robust locks): the read lock of a reader killed while
    waiting is recovered (the standard package's stays held forever)."""
    q, outq = fctx.Queue(), fctx.Queue()
    reader = fctx.Process(target=getter_worker, args=(q, outq))
    reader.start()
    time.sleep(0.5)                 # it now waits for data holding the lock
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    os.kill(reader.pid, signal.SIGKILL)
    reader.join(10)
    q.put("ok")
    assert q.get(timeout=10) == "ok"


def endless_producer(q, ident):
    rng = random.Random(ident)
    for i in itertools.count():
        data = os.urandom(rng.choice((0, 300, 5000, RING // 3, 2 * RING)))
        q.put((ident, i, hashlib.sha1(data).hexdigest(), data))


def checking_consumer(q, out):
    while True:
        ident, i, digest, data = q.get()
        out.put(hashlib.sha1(data).hexdigest() == digest)


@pytest.mark.timeout(60)
def test_random_sigkills_never_corrupt_or_wedge():
    """Internal (the shared-memory ring): random SIGKILLs of producers
    and consumers never deliver a corrupt message or wedge the queue."""
    ctx = fastmp.get_context("fork")
    q, out = ctx.Queue(), ctx.Queue()
    rng = random.Random(7)
    procs, serial = [], itertools.count()
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            alive = [p for p in procs if p.is_alive()]
            if sum(p.name == "producer" for p in alive) < 2:
                procs.append(ctx.Process(target=endless_producer, args=(q, next(serial)),
                                         name="producer"))
                procs[-1].start()
            if sum(p.name == "consumer" for p in alive) < 2:
                procs.append(ctx.Process(target=checking_consumer, args=(q, out),
                                         name="consumer"))
                procs[-1].start()
            time.sleep(rng.random() * 0.1)
            victim = rng.choice([p for p in procs if p.is_alive()])
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    verdicts = []
    while True:
        try:
            verdicts.append(out.get(timeout=1))
        except queue.Empty:
            break
    assert verdicts and all(verdicts)
    q.put("last")
    while q.get(timeout=10) != "last":
        pass
