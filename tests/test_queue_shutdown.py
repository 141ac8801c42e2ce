"""Queue.shutdown(immediate=False) on fastmp's Queue and JoinableQueue and
on a manager's queue proxies: queue.Queue's semantics of 3.13 on every
supported version (the same scenarios run on queue.Queue where it has
shutdown), seen by every process sharing the queue, under every start
method; blocked put, get and join are woken."""
import pickle
import queue
import sys
import threading
import time

import pytest

import fastmp
from fastmp import queues

pytestmark = pytest.mark.timeout(60)

ShutDown = queues.ShutDown
# bigger than a quarter of the ring: put hands it to the feeder thread,
# which streams it in pieces
STREAMED = queues.RING_BYTES // 3


# ---- the queues under test -------------------------------------------------

KINDS = ["fastmp", "manager"] + (["queue"] if hasattr(queue.Queue, "shutdown") else [])


@pytest.fixture(params=KINDS)
def make(request):
    """make(maxsize=0, joinable=False): a queue of each kind (fastmp's,
    a manager's proxy, and queue.Queue on 3.13+ as the reference)."""
    if request.param == "queue":
        return lambda maxsize=0, joinable=False: queue.Queue(maxsize)
    if request.param == "fastmp":
        return lambda maxsize=0, joinable=False: (
            fastmp.JoinableQueue(maxsize) if joinable else fastmp.Queue(maxsize))
    manager = fastmp.Manager()
    request.addfinalizer(manager.shutdown)
    return lambda maxsize=0, joinable=False: (
        manager.JoinableQueue(maxsize) if joinable else manager.Queue(maxsize))


def outcome(call, *args):
    """What `call(*args)` gave: its result, or the name of its exception."""
    try:
        return call(*args)
    except Exception as e:
        return type(e).__name__


def in_thread(call, *args):
    """Start `call(*args)` in a thread; returns (thread, [its outcome])."""
    result = []
    t = threading.Thread(target=lambda: result.append(outcome(call, *args)))
    t.start()
    return t, result


# ---- the exception ---------------------------------------------------------

def test_shutdown_error_is_the_standard_one_where_there_is_one():
    if sys.version_info >= (3, 13):
        assert ShutDown is queue.ShutDown
    else:
        assert issubclass(ShutDown, Exception) and ShutDown.__module__ == "fastmp.queues"
    assert type(pickle.loads(pickle.dumps(ShutDown()))) is ShutDown


def test_only_queue_and_joinable_queue_have_it():
    # as in the standard proposal (gh-96471): not SimpleQueue
    assert callable(fastmp.Queue().shutdown) and callable(fastmp.JoinableQueue().shutdown)
    assert not hasattr(fastmp.SimpleQueue(), "shutdown")


# ---- one process: the same scenario on every kind ----------------------------

def test_put_refused_get_drains_then_refused(make):
    q = make()
    q.put("a")
    q.put("b")
    assert q.shutdown() is None
    assert [outcome(q.put, "c"), outcome(q.put_nowait, "c"), q.qsize()] == ["ShutDown", "ShutDown", 2]
    assert [q.get(), q.get_nowait()] == ["a", "b"]
    assert [outcome(q.get), outcome(q.get, False), outcome(q.get, True, 0.01),
            outcome(q.get_nowait)] == ["ShutDown"] * 4
    assert (q.qsize(), q.empty()) == (0, True)
    q.shutdown()                        # again: nothing changes
    assert outcome(q.get) == "ShutDown"


def test_bounded_queue_refuses_before_full(make):
    q = make(maxsize=1)
    q.put(1)
    q.shutdown(False)
    assert [outcome(q.put_nowait, 2), outcome(q.put, 2, True, 0.01), q.full()] == \
        ["ShutDown", "ShutDown", True]
    assert [q.get(), outcome(q.get)] == [1, "ShutDown"]


def test_immediate_discards_and_refuses(make):
    q = make()
    for i in range(3):
        q.put(i)
    q.shutdown(immediate=True)
    assert [q.qsize(), q.empty(), outcome(q.get), outcome(q.get_nowait), outcome(q.put, 9)] == \
        [0, True, "ShutDown", "ShutDown", "ShutDown"]


def test_immediate_after_a_plain_shutdown_discards_the_rest(make):
    q = make()
    q.put(1)
    q.put(2)
    q.shutdown()
    assert q.get() == 1
    q.shutdown(True)
    assert [q.qsize(), outcome(q.get)] == [0, "ShutDown"]


def test_immediate_counts_discarded_items_as_done_tasks(make):
    q = make(joinable=True)
    for i in range(3):
        q.put(i)
    assert q.get() == 0                 # taken, its task not done
    q.shutdown(immediate=True)          # the two left count as done
    q.task_done()
    assert outcome(q.task_done) == "ValueError"
    q.join()                            # nothing unfinished


def test_plain_shutdown_leaves_tasks_unfinished(make):
    q = make(joinable=True)
    q.put(1)
    q.shutdown()
    t, joined = in_thread(q.join)
    assert q.get() == 1
    q.task_done()
    t.join(10)
    assert joined == [None]


def test_shutdown_argument_binding(make):
    q = make()
    assert outcome(q.shutdown, False, 1) == "TypeError"
    q.shutdown(immediate=False)
    assert outcome(q.put, 1) == "ShutDown"


def test_blocked_get_and_put_are_woken(make):
    empty, full = make(), make(maxsize=1)
    full.put(0)
    getter, got = in_thread(empty.get)
    putter, put = in_thread(full.put, 1)
    timed_getter, timed_got = in_thread(empty.get, True, 30)
    time.sleep(0.1)     # let them block (one that has not yet must end the same)
    empty.shutdown()
    full.shutdown()
    for t in (getter, putter, timed_getter):
        t.join(10)
    assert got == put == timed_got == ["ShutDown"]


def test_blocked_join_is_released_by_immediate(make):
    q = make(joinable=True)
    q.put(1)
    q.put(2)
    joiner, joined = in_thread(q.join)
    time.sleep(0.1)     # let it block (if it has not yet, it must end the same)
    q.shutdown(immediate=True)
    joiner.join(10)
    assert joined == [None]


# ---- fastmp only: messages still on their way ------------------------------

def test_streamed_messages_put_before_shutdown_are_got():
    # a message put hands to the feeder thread is in no ring yet when
    # shutdown() returns: get still waits for it rather than raise
    q = fastmp.Queue()
    data = [bytes([i]) * STREAMED for i in range(5)]  # more than the ring holds
    for d in data:
        q.put(d)
    q.shutdown()
    assert [q.get(timeout=30) for _ in data] == data
    assert outcome(q.get) == "ShutDown"


def test_immediate_drops_buffered_and_streaming_messages():
    q = fastmp.JoinableQueue()
    for i in range(5):
        q.put(bytes([i]) * STREAMED)
    q.put("small")
    q.shutdown(immediate=True)
    q.join()                            # every task was discarded
    assert [q.qsize(), outcome(q.get), outcome(q.task_done)] == [0, "ShutDown", "ValueError"]
    q.close()
    q.join_thread()                     # nothing left to flush


# ---- across processes, under every start method ----------------------------

def get_all(q, out):
    """Take messages until ShutDown; report them."""
    got = []
    try:
        while True:
            got.append(q.get(timeout=30))
    except ShutDown:
        out.put(("shutdown", got))
    except queue.Empty:
        out.put(("empty", got))


def put_when_full(q, ready, out):
    ready.set()
    out.put(outcome(q.put, "late"))


def join_queue(q, ready, out):
    ready.set()
    q.join()
    out.put("joined")


def put_then_shut_down(q, big):
    q.put(big)
    q.put("last")
    q.shutdown()


def shut_down_now(q):
    q.shutdown(immediate=True)


def test_blocked_calls_in_children_are_woken(fctx):
    empty, full, jq, out = fctx.Queue(), fctx.Queue(1), fctx.JoinableQueue(), fctx.Queue()
    ready = [fctx.Event(), fctx.Event()]
    full.put(0)
    jq.put("task")
    children = [fctx.Process(target=get_all, args=(empty, out)),
                fctx.Process(target=put_when_full, args=(full, ready[0], out)),
                fctx.Process(target=join_queue, args=(jq, ready[1], out))]
    for p in children:
        p.start()
    for e in ready:
        assert e.wait(30)
    empty.shutdown()
    full.shutdown()
    jq.shutdown(immediate=True)
    reports = sorted(repr(out.get(timeout=30)) for _ in children)
    for p in children:
        p.join(30)
    assert [p.exitcode for p in children] == [0, 0, 0]
    assert reports == sorted(map(repr, [("shutdown", []), "ShutDown", "joined"]))


def test_shutdown_in_a_child_is_seen_here_after_its_messages(fctx):
    q = fctx.Queue()
    big = b"B" * (2 * queues.RING_BYTES)
    p = fctx.Process(target=put_then_shut_down, args=(q, big))
    p.start()
    assert q.get(timeout=30) == big
    assert q.get(timeout=30) == "last"
    assert outcome(q.get, True, 30) == "ShutDown"
    p.join(30)
    assert p.exitcode == 0
    assert outcome(q.put, 1) == "ShutDown"


def test_immediate_in_a_child_empties_the_queue_here(fctx):
    q = fctx.JoinableQueue()
    for i in range(100):
        q.put(i)
    p = fctx.Process(target=shut_down_now, args=(q,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert [q.qsize(), outcome(q.get), outcome(q.put, 1)] == [0, "ShutDown", "ShutDown"]
    q.join()


# ---- races: shutdown while producers and consumers run ---------------------

def put_until_shut_down(q, ident, out):
    """Put numbered messages until ShutDown; report how many were put."""
    n = 0
    try:
        while True:
            q.put((ident, n))
            n += 1
    except ShutDown:
        out.put((ident, n))


def get_and_finish_until_shut_down(q):
    try:
        while True:
            q.get()
            q.task_done()
    except ShutDown:
        pass


@pytest.mark.parametrize("maxsize", [0, 100])
def test_every_message_put_before_shutdown_is_got(maxsize):
    # A put either raises ShutDown or its message reaches a get before
    # that get raises ShutDown, whatever the timing (feeder buffers and
    # blocked puts included).
    ctx = fastmp.get_context("fork")
    q, out = ctx.Queue(maxsize), ctx.Queue()
    producers = [ctx.Process(target=put_until_shut_down, args=(q, i, out)) for i in range(2)]
    for p in producers:
        p.start()
    got = [q.get(timeout=30) for _ in range(1000)]
    threading.Timer(0.2, q.shutdown).start()
    try:
        while True:
            got.append(q.get(timeout=30))
    except ShutDown:
        pass
    counts = dict(out.get(timeout=30) for _ in producers)
    for p in producers:
        p.join(30)
    assert [p.exitcode for p in producers] == [0, 0]
    for ident, n in counts.items():
        assert [i for who, i in got if who == ident] == list(range(n))


def test_immediate_shutdown_while_busy_releases_join():
    ctx = fastmp.get_context("fork")
    q, out = ctx.JoinableQueue(), ctx.Queue()
    workers = [ctx.Process(target=put_until_shut_down, args=(q, i, out)) for i in range(2)]
    workers.append(ctx.Process(target=get_and_finish_until_shut_down, args=(q,)))
    for p in workers:
        p.start()
    # busy: a backlog, or (if the getter keeps up) a second of traffic
    busy_until = time.monotonic() + 1
    while q.qsize() < 1000 and time.monotonic() < busy_until:
        time.sleep(0.01)
    q.shutdown(immediate=True)
    q.join()                            # every task discarded or done
    for p in workers:
        p.join(30)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    assert [q.qsize(), outcome(q.get)] == [0, "ShutDown"]
