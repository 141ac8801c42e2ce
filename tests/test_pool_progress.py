"""MapResult._number_left: the chunks of a map_async() not finished yet,
which progress bars (parmap's) read while they wait.  It counts down as
chunks finish and is 0 once the result is ready, in fastmp as in the
standard package."""
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


def count_down(pool, permits):
    """The values _number_left takes while the 4 chunks of a 10-item map
    finish one after the other (a permit per item)."""
    got = []
    result = pool.map_async(gated, range(10), chunksize=3, callback=got.append)
    seen = [result._number_left]
    for chunk in (3, 3, 3):
        for _ in range(chunk):
            permits.release()
        left = seen[-1] - 1
        assert wait_for(lambda: result._number_left == left, timeout=30), (
            seen, result._number_left)
        seen.append(left)
    assert not result.ready()
    permits.release()
    assert result.get(timeout=30) == list(range(10))
    seen.append(result._number_left)
    assert wait_for(lambda: got == [list(range(10))], timeout=30)
    return seen


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_number_left_counts_unfinished_chunks(ctx):
    permits = ctx.Semaphore(0)
    with ctx.Pool(1, initializer=take_permits, initargs=(permits,)) as pool:
        assert count_down(pool, permits) == [4, 3, 2, 1, 0]
        assert pool.map_async(gated, [])._number_left == 0
        # the other results have no such counter, as in the standard package
        assert not hasattr(pool.imap(abs, [1]), '_number_left')
        assert not hasattr(pool.apply_async(abs, (1,)), '_number_left')


def test_thread_pool_number_left(impl):
    permits = threading.Semaphore(0)
    take_permits(permits)
    with impl.pool.ThreadPool(1) as pool:
        assert count_down(pool, permits) == [4, 3, 2, 1, 0]
