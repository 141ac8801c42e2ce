"""MapResult._number_left: the chunks of a map_async() not finished yet,
which progress bars (parmap's) read while they wait.  It counts down as
chunks finish, failed ones too, and is 0 once the result is ready, in
fastmp as in the standard package."""
import threading

import pytest

from support import wait_for

_permits = None


def take_permits(semaphore):
    global _permits
    _permits = semaphore


def gated(x):
    """Finishes once the test releases a permit for it."""
    _permits.acquire()
    return x


def gated_failing_first(x):
    """As gated(); the first chunk (0, 1, 2) fails once it took its permits."""
    gated(x)
    if x == 2:
        raise ValueError(x)
    return x


def count_down(pool, permits, func=gated):
    """The values _number_left takes while the 4 chunks of a 10-item map
    finish one after the other (a permit per item), the result, and what
    its callbacks got.  Even when a chunk failed, the result is not ready
    until the last one finished."""
    outcomes = []
    result = pool.map_async(func, range(10), chunksize=3, callback=outcomes.append,
                            error_callback=outcomes.append)
    seen = [result._number_left]
    for chunk in (3, 3, 3):
        for _ in range(chunk):
            permits.release()
        left = seen[-1] - 1
        assert wait_for(lambda: result._number_left == left, timeout=30), (
            seen, result._number_left)
        seen.append(left)
    assert not result.ready() and result._job in pool._cache
    with pytest.raises(ValueError):
        result.successful()
    permits.release()
    result.wait(timeout=30)
    assert result.ready() and result._job not in pool._cache
    seen.append(result._number_left)
    return seen, result, outcomes


def check_count_downs(pool, permits):
    seen, result, outcomes = count_down(pool, permits)
    assert seen == [4, 3, 2, 1, 0]
    assert result.get(0) == list(range(10)) and outcomes == [list(range(10))]
    # (get() is left to test_pool_map_failure: the traceback of what it
    # raises would keep the frames here, and the semaphore, alive)
    seen, result, outcomes = count_down(pool, permits, gated_failing_first)
    assert seen == [4, 3, 2, 1, 0]
    assert not result.successful()
    assert [(type(e), e.args) for e in outcomes] == [(ValueError, (2,))]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_number_left_counts_unfinished_chunks(ctx):
    permits = ctx.Semaphore(0)
    with ctx.Pool(1, initializer=take_permits, initargs=(permits,)) as pool:
        check_count_downs(pool, permits)
        assert pool.map_async(gated, [])._number_left == 0
        # the other results have no such counter, as in the standard package
        assert not hasattr(pool.imap(abs, [1]), '_number_left')
        assert not hasattr(pool.apply_async(abs, (1,)), '_number_left')


def test_thread_pool_number_left(impl):
    permits = threading.Semaphore(0)
    take_permits(permits)
    with impl.pool.ThreadPool(1) as pool:
        check_count_downs(pool, permits)
