"""A map whose chunk fails: the first failure to come is its outcome, but
the result is ready (get() raises, error_callback runs, the job leaves
Pool._cache) only once every chunk has finished, in fastmp as in the
standard package.  Each task marks itself done in shared memory before it
returns, so "every chunk has finished" is checked without timing: what the
tasks had done when get() raised is all they ever do."""
import multiprocessing.dummy
import multiprocessing.pool
import os
import pickle
import signal
import time

import pytest

import fastmp
import fastmp._pipe_pool
import fastmp.dummy
import fastmp.pool

N = 6
FAILING = (1, 4)

_done = None        # _done[x]: task x has finished (set by the initializer)
_pids = None        # _pids[x]: the worker that started task x


def share(done, pids=None):
    global _done, _pids
    _done, _pids = done, pids


def mark_done(x):
    """Fail for FAILING items, else finish a little later (so that a map
    ready too early is caught); either way mark x done first."""
    if x not in FAILING:
        time.sleep(0.05)
    _done[x] = 1
    if x in FAILING:
        raise ValueError(x)
    return x


def mark_done_pair(x, _unused):
    return mark_done(x)


def call_each_map_method(pool, done):
    """Run the map through map, starmap, map_async and starmap_async; for
    each: (the exception raised, the tasks done when it was raised, the
    result or None, what error_callback got, the tasks done when it ran)."""
    runs = []
    for name in ("map", "starmap", "map_async", "starmap_async"):
        done[:] = [0] * N
        func, items = (mark_done_pair, [(x, None) for x in range(N)]) \
            if name.startswith("star") else (mark_done, range(N))
        errors, done_at_callback, result = [], [], None
        with pytest.raises(ValueError) as info:
            if name.endswith("_async"):
                result = getattr(pool, name)(
                    func, items, chunksize=1, callback=errors.append,
                    error_callback=lambda exc: (errors.append(exc),
                                                done_at_callback.append(list(done))))
                result.get(timeout=60)
            else:
                getattr(pool, name)(func, items, chunksize=1)
        runs.append((info.value, list(done), result, errors, done_at_callback))
    return runs


def check_runs(pool, runs):
    for exc, done_at_raise, result, errors, done_at_callback in runs:
        assert exc.args == (FAILING[0],)        # the first to fail wins
        assert done_at_raise == [1] * N
        if result is None:
            continue
        assert errors == [exc] and done_at_callback == [[1] * N]
        assert result.ready() and not result.successful()
        result.wait(0)
        assert result._number_left == 0
        assert result._job not in pool._cache


# one worker: the results come in input order, the first failure is FAILING[0]
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_failed_map_ready_after_every_chunk(ctx):
    done = ctx.Array('b', N, lock=False)
    with ctx.Pool(1, initializer=share, initargs=(done,)) as pool:
        check_runs(pool, call_each_map_method(pool, done))
        assert pool._cache == {}


class OwnQueues:
    """A Pool subclass that sets up its queues itself (as joblib's
    MemmappingPool does): fastmp gives it the standard-shaped pool."""

    def _setup_queues(self):
        super()._setup_queues()


class FastmpOwnQueuesPool(OwnQueues, fastmp.pool.Pool):
    pass


class StdlibOwnQueuesPool(OwnQueues, multiprocessing.pool.Pool):
    pass


@pytest.mark.parametrize("start_method", ["fork"])
def test_failed_map_of_a_pool_with_its_own_queues(ctx, impl):
    pool_cls = FastmpOwnQueuesPool if impl is fastmp else StdlibOwnQueuesPool
    assert impl is not fastmp or issubclass(pool_cls, fastmp._pipe_pool.PipePool)
    done = ctx.Array('b', N, lock=False)
    with pool_cls(1, initializer=share, initargs=(done,), context=ctx) as pool:
        check_runs(pool, call_each_map_method(pool, done))
        assert pool._cache == {}


def test_failed_thread_pool_map_ready_after_every_chunk(impl):
    done = [0] * N
    share(done)
    with impl.dummy.Pool(1) as pool:
        check_runs(pool, call_each_map_method(pool, done))
        assert pool._cache == {}


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_unpicklable_chunk_fails_alone(ctx):
    # the chunk that cannot be pickled fails the map; the others still run
    done = ctx.Array('b', N, lock=False)
    with ctx.Pool(2, initializer=share, initargs=(done,)) as pool:
        items = [(x, None) for x in range(N)]
        items[2] = (2, lambda: 2)
        errors = []
        result = pool.starmap_async(mark_done_pair, items, chunksize=1,
                                    error_callback=errors.append)
        with pytest.raises((pickle.PicklingError, AttributeError)):
            result.get(timeout=60)
        assert list(done) == [1, 1, 0, 1, 1, 1]     # FAILING ones ran too
        assert len(errors) == 1 and not result.successful()
        assert result._number_left == 0 and result._job not in pool._cache
        # no chunk at all could be sent: ready at once, error_callback runs
        result = pool.map_async(mark_done, [lambda: 0], error_callback=errors.append)
        result.wait(timeout=60)
        assert result.ready() and not result.successful() and len(errors) == 2


def kill_own_worker_first(x):
    """Task 0 kills the worker running it; the others take a while."""
    _pids[x] = os.getpid()
    if x == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.1)
    _done[x] = 1
    return x


# fastmp's deviation (README "Pool workers that die"): the chunks the dead
# worker held fail with WorkerLostError and count as finished
@pytest.mark.timeout(90)
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_map_with_a_lost_chunk_ready_after_the_others(fctx):
    n = 8
    done, pids = fctx.Array('b', n, lock=False), fctx.Array('q', n, lock=False)
    with fctx.Pool(2, initializer=share, initargs=(done, pids)) as pool:
        errors = []
        result = pool.map_async(kill_own_worker_first, range(n), chunksize=1,
                                error_callback=errors.append)
        with pytest.raises(fastmp.pool.WorkerLostError) as info:
            result.get(timeout=60)
        done_at_raise = list(done)
        victim = pids[0]
        assert info.value.pid == victim and errors == [info.value]
        assert result._number_left == 0 and result._job not in pool._cache
        # a task not done had been given to the dead worker, and no task
        # was still running when get() raised
        assert all(d or p in (0, victim) for d, p in zip(done_at_raise, pids))
        assert done_at_raise.count(1) >= n // 2
        pool.close()
        pool.join()
        assert list(done) == done_at_raise
