"""A Pool task that cannot be pickled (its function or an argument) fails
through its result, for every Pool method, in fastmp as in the standard
package: apply_async() returns a result whose get() raises the pickling
error and whose error_callback runs, an imap yields the error at the
task's place, and the other tasks still run.  Only a pool that is not
running, or a KeyboardInterrupt while pickling, raises at the call."""
import gc
import pickle
import threading
import weakref

import pytest

import fastmp
import fastmp.pool
from support import drain
from test_pool_map_failure import FastmpOwnQueuesPool, StdlibOwnQueuesPool

# what pickling a lambda raises (the type differs between versions)
LAMBDA_ERRORS = (AttributeError, pickle.PicklingError)

_done = None        # _done[x]: task x ran (set by the initializer)


def share(done):
    global _done
    _done = done


def mark_done(x):
    _done[x] = 1
    return x


def square(x):
    return x * x


class Unpicklable:
    """An argument that cannot be pickled; `x`: the task it stands for."""

    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        raise TypeError("not picklable: %d" % self.x)


# ---- apply_async and apply ---------------------------------------------------

def check_failed_apply(pool, func, args, errors):
    """apply_async(func, args) fails through its result (with and without
    callbacks) and apply() raises; the pool goes on serving."""
    got = []
    result = pool.apply_async(func, args, callback=got.append, error_callback=got.append)
    with pytest.raises(errors) as info:
        result.get(timeout=60)
    assert got == [info.value]
    assert result.ready() and not result.successful()
    assert result._job not in pool._cache
    result = pool.apply_async(func, args)
    result.wait(timeout=60)
    assert result.ready() and not result.successful()
    with pytest.raises(errors):
        result.get(0)
    with pytest.raises(errors):
        pool.apply(func, args)
    assert pool.apply(square, (3,)) == 9


def check_apply_of_a_pool(pool):
    check_failed_apply(pool, mark_done, (Unpicklable(0),), TypeError)
    check_failed_apply(pool, lambda: 0, (), LAMBDA_ERRORS)
    assert pool._cache == {}
    # a pool that is not running refuses the task at the call
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(mark_done, (Unpicklable(0),))
    pool.join()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_apply_async_fails_through_its_result(ctx):
    with ctx.Pool(2) as pool:
        check_apply_of_a_pool(pool)


@pytest.mark.parametrize("start_method", ["fork"])
def test_apply_async_of_a_pool_with_its_own_queues(ctx, impl):
    pool_cls = FastmpOwnQueuesPool if impl is fastmp else StdlibOwnQueuesPool
    with pool_cls(2, context=ctx) as pool:
        check_apply_of_a_pool(pool)


# ---- every method with a function that cannot be pickled -----------------

def check_unpicklable_function(pool):
    func = lambda x: x    # noqa: E731
    items = [1, 2, 3]
    with pytest.raises(LAMBDA_ERRORS):
        pool.map(func, items)
    with pytest.raises(LAMBDA_ERRORS):
        pool.starmap(func, [(x,) for x in items])
    for name, args in (("map_async", items), ("starmap_async", [(x,) for x in items])):
        errors = []
        result = getattr(pool, name)(func, args, chunksize=1, error_callback=errors.append)
        with pytest.raises(LAMBDA_ERRORS) as info:
            result.get(timeout=60)
        assert errors == [info.value]
    # with chunksize 1 each item fails at its place; chunks end the
    # iteration at the first failure
    for name in ("imap", "imap_unordered"):
        assert drain(getattr(pool, name)(func, items), LAMBDA_ERRORS) == ["error"] * 3
        assert drain(getattr(pool, name)(func, items, 2), LAMBDA_ERRORS) == ["error"]
    assert pool.apply(square, (4,)) == 16
    assert pool._cache == {}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_unpicklable_function_fails_each_task(ctx):
    with ctx.Pool(2) as pool:
        check_unpicklable_function(pool)
        check_failed_apply(pool, lambda: 0, (), LAMBDA_ERRORS)


# ---- imap with an item that cannot be pickled ----------------------------

N = 9
BAD = 4             # the item that cannot be pickled; with chunks of 3,
BAD_CHUNK = (3, 4, 5)   # the chunk that holds it
RUNS = [(name, chunksize, as_generator)
        for name in ("imap", "imap_unordered")
        for chunksize in (1, 3)
        for as_generator in (False, True)]


def start_imaps(pool):
    """Start each run of RUNS over its own N items (run r: r * N + i),
    item BAD of each unpicklable; the iterators, not consumed yet."""
    iterators = []
    for run, (name, chunksize, as_generator) in enumerate(RUNS):
        items = [run * N + i for i in range(N)]
        items[BAD] = Unpicklable(run * N + BAD)
        if as_generator:            # no len(): fed in the background
            items = (x for x in items)
        iterators.append(getattr(pool, name)(mark_done, items, chunksize))
    return iterators


def check_imaps(iterators, pool, done):
    for run, (name, chunksize, _) in enumerate(RUNS):
        base = run * N
        out = drain(iterators[run], TypeError)
        unsent = (BAD,) if chunksize == 1 else BAD_CHUNK
        if name == "imap" and chunksize == 1:
            assert out == [base + i if i != BAD else "error" for i in range(N)]
        elif name == "imap":
            assert out == [base + i for i in range(BAD_CHUNK[0])] + ["error"]
        elif chunksize == 1:
            assert out.count("error") == 1
            assert sorted(x for x in out if x != "error") == \
                [base + i for i in range(N) if i != BAD]
        else:   # whole chunks, as they come, until the failed one
            assert out[-1] == "error" and len(out) % 3 == 1
            assert set(out[:-1]) <= {base + i for i in range(N) if i not in BAD_CHUNK}
    pool.close()
    pool.join()
    # every task but the unsent ones ran, those after them too
    for run, (_, chunksize, _) in enumerate(RUNS):
        unsent = (BAD,) if chunksize == 1 else BAD_CHUNK
        assert list(done[run * N:(run + 1) * N]) == \
            [0 if i in unsent else 1 for i in range(N)], RUNS[run]
    assert pool._cache == {}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_imap_item_that_cannot_be_pickled(ctx):
    done = ctx.Array('b', len(RUNS) * N, lock=False)
    with ctx.Pool(2, initializer=share, initargs=(done,)) as pool:
        check_imaps(start_imaps(pool), pool, done)


@pytest.mark.parametrize("start_method", ["fork"])
def test_imap_item_of_a_pool_with_its_own_queues(ctx, impl):
    pool_cls = FastmpOwnQueuesPool if impl is fastmp else StdlibOwnQueuesPool
    done = ctx.Array('b', len(RUNS) * N, lock=False)
    with pool_cls(2, initializer=share, initargs=(done,), context=ctx) as pool:
        check_imaps(start_imaps(pool), pool, done)


def held_input(go, release):
    """N items, BAD unpicklable: BAD's chunk once `go` is set, the chunk
    after it once `release` is."""
    for i in range(N):
        if i == BAD_CHUNK[0]:
            assert go.wait(60)
        if i == BAD_CHUNK[-1] + 1:
            assert release.wait(60)
        yield Unpicklable(i) if i == BAD else i


def set_later(event):
    timer = threading.Timer(0.3, event.set)
    timer.start()
    return timer


@pytest.mark.timeout(30)    # the failure would wait for the input's end
@pytest.mark.parametrize("start_method", ["fork"])
@pytest.mark.parametrize("own_queues", [False, True], ids=["pool", "own-queues"])
def test_chunk_failing_while_the_iterator_waits(ctx, impl, own_queues):
    """A chunk that cannot be pickled while a chunked imap's consumer
    waits: the consumer gets its error at once.  The iterator ends there,
    but the pool still takes the rest of the input: join() returns once
    it has run."""
    if own_queues:
        pool_cls = FastmpOwnQueuesPool if impl is fastmp else StdlibOwnQueuesPool
    else:
        pool_cls = impl.pool.Pool
    done = ctx.Array('b', N, lock=False)
    go, release = threading.Event(), threading.Event()
    with pool_cls(2, initializer=share, initargs=(done,), context=ctx) as pool:
        items = pool.imap(mark_done, held_input(go, release), 3)
        assert [next(items) for _ in BAD_CHUNK] == [0, 1, 2]
        timers = [set_later(go)]
        with pytest.raises(TypeError):
            next(items)
        assert drain(items, TypeError) == []
        pool.close()
        timers.append(set_later(release))
        pool.join()
        for timer in timers:
            timer.join()
        assert list(done) == [0 if i in BAD_CHUNK else 1 for i in range(N)]
        assert pool._cache == {}


# ---- a thread pool pickles nothing -----------------------------------------

def test_thread_pool_takes_what_does_not_pickle(impl):
    item = Unpicklable(0)
    with impl.dummy.Pool(2) as pool:
        assert pool.apply_async(lambda x: x, (item,)).get(timeout=60) is item
        assert pool.map(lambda x: x, [item, 1]) == [item, 1]
        assert list(pool.imap(lambda x: x, [item, 1], 2)) == [item, 1]


# ---- fastmp: what stays raised at the call, what is kept -------------------

class Interrupting:
    def __reduce__(self):
        raise KeyboardInterrupt


def open_jobs(pool, since):
    """The jobs numbered from `since` that the dispatcher still holds."""
    upto = next(fastmp.pool.job_counter)
    return [job for job in range(since, upto)
            if pool._core.dispatcher.finished(job) is not None]


@pytest.mark.parametrize("start_method", ["fork"])
def test_interrupt_while_pickling_raises_at_the_call(fctx):
    with fctx.Pool(1) as pool:
        since = next(fastmp.pool.job_counter)
        with pytest.raises(KeyboardInterrupt):
            pool.apply_async(square, (Interrupting(),))
        with pytest.raises(KeyboardInterrupt):
            pool.map_async(square, [1, Interrupting()], chunksize=1)
        with pytest.raises(KeyboardInterrupt):
            pool.imap(square, [1, Interrupting(), 3])
        # no job is left open, in the dispatcher or the cache
        assert open_jobs(pool, since) == [] and pool._cache == {}
        # and a failed apply leaves none either, once its outcome is taken
        since = next(fastmp.pool.job_counter)
        result = pool.apply_async(square, (Unpicklable(0),))
        result.wait(timeout=60)
        assert open_jobs(pool, since) == [] and pool._cache == {}
        assert pool.apply(square, (5,)) == 25


@pytest.mark.parametrize("start_method", ["fork"])
def test_unpicklable_task_keeps_no_pool_alive(fctx):
    # the pickling error is kept without the frames that raised it, whose
    # callers hold the pool: a dropped pool goes at once
    gc.disable()
    try:
        pool = fctx.Pool(1)
        kept = [pool.apply_async(square, (Unpicklable(0),)),
                pool.map_async(square, [1, Unpicklable(1), 3], chunksize=1),
                pool.imap(square, [Unpicklable(2), 2]),
                pool.imap(square, [1, Unpicklable(3), 3], 2)]
        for result in kept[:2]:
            result.wait(timeout=60)
            assert not result.successful()
        pool.terminate()
        dropped = weakref.ref(pool)
        del pool
        assert dropped() is None
    finally:
        gc.enable()
