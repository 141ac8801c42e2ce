"""The contract every pool dispatcher keeps, run against each of them.

A pool hands its jobs to a dispatcher: the C `fastmp._fastmp.Dispatcher`
behind the process Pool, `fastmp.pool._ThreadDispatcher` behind ThreadPool,
and its subclass behind a Pool that sets up its own queues (`PipePool`).
Their interface (open_job, expect, forget, nudge, finished, submit,
submit_chunks, apply, collect, wait_idle, next_events, close) is driven here
through the public Pool API, not called directly: the C dispatcher needs
live workers speaking its wire protocol, so only a pool can drive it
honestly.  Each test says which operations it exercises.  Every test runs on
the three pool kinds of both fastmp and the standard package, whose
behaviour the dispatchers must reproduce."""
import importlib
import threading
import time

import pytest

from support import drain

pytestmark = pytest.mark.timeout(60)


# ---- task functions (module level: process workers import them) -----------

def square(x):
    return x * x


def mul(a, b):
    return a * b


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


def sleep_pair(args):
    return sleep_then(*args)


def fail_on_two(x):
    if x == 2:
        raise KeyError(x)
    return x


# ---- the pools -------------------------------------------------------------

class OwnQueues:
    """A Pool subclass that sets up its queues itself (as joblib's
    MemmappingPool does): fastmp gives it the standard-shaped PipePool."""

    def _setup_queues(self):
        super()._setup_queues()


_OWN_QUEUES = {}


def _own_queues_pool(impl):
    pool_class = importlib.import_module(impl.__name__ + ".pool").Pool
    if pool_class not in _OWN_QUEUES:
        _OWN_QUEUES[pool_class] = type("OwnQueuesPool", (OwnQueues, pool_class), {})
    return _OWN_QUEUES[pool_class]


@pytest.fixture(params=["process", "thread", "own-queues"])
def make_pool(request, impl):
    """make_pool(n): a pool of `n` workers of each kind, for each package."""
    ctx = impl.get_context("fork")
    if request.param == "process":
        return ctx.Pool
    if request.param == "thread":
        return importlib.import_module(impl.__name__ + ".pool").ThreadPool
    return lambda n: _own_queues_pool(impl)(n, context=ctx)


# ---- the contract ----------------------------------------------------------

def test_apply_and_its_failure(make_pool):
    """apply + collect (ready): a value, and a task's exception raised."""
    with make_pool(2) as pool:
        assert pool.apply(square, (7,)) == 49
        assert pool.apply_async(mul, (3, 4)).get(timeout=30) == 12
        result = pool.apply_async(fail_on_two, (2,))
        with pytest.raises(KeyError):
            result.get(timeout=30)
        assert result.ready() and not result.successful()


def test_get_and_wait_time_out_while_pending(make_pool, impl):
    """collect with a timeout and without waiting: a result not done yet is
    not ready, get() times out, wait() returns."""
    with make_pool(1) as pool:
        result = pool.apply_async(sleep_then, ("late", 0.5))
        with pytest.raises(impl.TimeoutError):
            result.get(timeout=0.05)
        result.wait(0.05)
        assert not result.ready()
        with pytest.raises(ValueError):
            result.successful()
        assert result.get(timeout=30) == "late"
        assert result.ready() and result.successful()


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_map_in_chunks_keeps_order(make_pool, chunksize):
    """open_job + submit_chunks: map and starmap of a sized input."""
    with make_pool(2) as pool:
        assert pool.map(square, range(50), chunksize) == [x * x for x in range(50)]
        pairs = [(x, x + 1) for x in range(30)]
        assert pool.starmap(mul, pairs, chunksize) == [a * b for a, b in pairs]
        assert pool.map(square, []) == []


def test_map_of_an_iterator_is_ready_when_every_task_is(make_pool):
    """expect: a map over an iterator learns its task count as it reads,
    and is ready only once all of them have finished; finished counts
    them (the standard _number_left)."""
    with make_pool(2) as pool:
        result = pool.map_async(sleep_pair, ((x, 0.2) for x in range(4)), chunksize=1)
        assert not result.ready()
        assert result._number_left > 0
        assert result.get(timeout=30) == [0, 1, 2, 3]
        assert result.ready() and result._number_left == 0


def test_failed_map_raises_the_first_failure(make_pool):
    """open_job's drop_after_failure: a map whose task fails raises that
    failure, and the pool goes on serving."""
    with make_pool(2) as pool:
        with pytest.raises(KeyError):
            pool.map(fail_on_two, range(6), chunksize=1)
        assert pool.map(square, range(3)) == [0, 1, 4]


def test_imap_yields_in_order_and_unordered_as_tasks_finish(make_pool):
    """collect of some outcomes: imap hands out the results in order,
    imap_unordered as each is done."""
    with make_pool(2) as pool:
        assert list(pool.imap(square, range(20))) == [x * x for x in range(20)]
        assert list(pool.imap(square, range(20), 3)) == [x * x for x in range(20)]
        # the first task is slow: a later one finishes before it
        out = list(pool.imap_unordered(sleep_pair, [(0, 0.5)] + [(x, 0) for x in range(1, 4)]))
        assert sorted(out) == [0, 1, 2, 3] and out[0] != 0


def test_imap_next_times_out_then_goes_on(make_pool, impl):
    """collect with a timeout on an iterator: next(timeout) raises
    TimeoutError while the result is pending, then hands it out."""
    with make_pool(1) as pool:
        it = pool.imap(sleep_pair, [("a", 0.5), ("b", 0)])
        with pytest.raises(impl.TimeoutError):
            it.next(timeout=0.05)
        assert it.next(timeout=30) == "a"
        assert list(it) == ["b"]


def test_imap_after_a_failed_task(make_pool):
    """open_job without drop_after_failure: with chunksize 1 the items
    after a failed task still come; with chunks the iteration ends at it."""
    with make_pool(2) as pool:
        assert drain(pool.imap(fail_on_two, range(6)), KeyError) == [0, 1, "error", 3, 4, 5]
        assert drain(pool.imap(fail_on_two, range(6), 2), KeyError) == [0, 1, "error"]
        out = drain(pool.imap_unordered(fail_on_two, range(6)), KeyError)
        assert sorted(map(str, out)) == ["0", "1", "3", "4", "5", "error"]
        out = drain(pool.imap_unordered(fail_on_two, range(6), 2), KeyError)
        assert out[-1] == "error" and out.count("error") == 1


def _failing_input(n, when):
    for i in range(n):
        if i == when:
            raise ZeroDivisionError("input failed")
        yield i


def test_input_that_raises(make_pool):
    """nudge: an input iterator that raises fails a map at once, and an
    imap at that position, waking its consumer."""
    with make_pool(2) as pool:
        with pytest.raises(ZeroDivisionError):
            pool.map(square, _failing_input(10, 3))
        it = pool.imap(square, _failing_input(10, 3))
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(ZeroDivisionError):
            next(it)


def test_callbacks_run_once_in_this_process(make_pool):
    """open_job's notify + next_events: callback and error_callback run
    once each, in a thread of the pool's process that is not the caller."""
    seen, errors, threads = [], [], []

    def record(value):
        seen.append(value)
        threads.append(threading.current_thread())
    with make_pool(2) as pool:
        pool.apply_async(square, (4,), callback=record).wait(30)
        pool.map_async(square, [1, 2], callback=record).wait(30)
        pool.apply_async(fail_on_two, (2,), error_callback=errors.append).wait(30)
        pool.map_async(fail_on_two, range(4), error_callback=errors.append).wait(30)
    assert seen == [16, [1, 4]]
    assert [type(e) for e in errors] == [KeyError, KeyError]
    assert threading.current_thread() not in threads


def test_abandoned_imap_leaves_the_pool_serving(make_pool):
    """forget: an iterator dropped before its end leaves nothing behind
    that blocks later work or close()/join()."""
    pool = make_pool(2)
    it = pool.imap(square, range(1000), 10)
    assert next(it) == 0
    del it
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
    pool.close()
    pool.join()


def test_close_and_join_wait_for_queued_work(make_pool):
    """wait_idle: join() after close() returns once every queued task has
    run."""
    pool = make_pool(2)
    results = [pool.apply_async(sleep_then, (x, 0.05)) for x in range(8)]
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))
    pool.join()
    assert all(r.ready() for r in results)
    assert [r.get(0) for r in results] == list(range(8))
    assert not any(w.is_alive() for w in pool._pool)


def test_terminate_stops_the_pool(make_pool):
    """close: terminate() with work queued returns, and the pool takes no
    more work."""
    pool = make_pool(1)
    pool.map_async(sleep_pair, [(x, 0.2) for x in range(20)], chunksize=1)
    pool.terminate()
    pool.join()
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))
