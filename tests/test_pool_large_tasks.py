"""Pool tasks and results whose pickle comes in many pieces: a pickler
writing to a stream hands over a piece per 64 KiB frame and one per large
bytes-like object, so a big list, a big dict or several arrays make a
pickle of dozens to thousands of pieces.  Every such task the standard
package accepts must go through, and its result come back."""
import numpy as np
import pytest


def identity(x):
    return x


def total_length(*args):
    return sum(len(a) for a in args)


# the pieces are gathered by the parent's dispatcher, whatever the start method
@pytest.mark.parametrize("start_method", ["fork"])
def test_tasks_and_results_in_many_pieces(ctx):
    ints = list(range(400_000))                           # ~2 MB of pickle frames
    table = {i: str(i) for i in range(300_000)}
    arrays = [np.full(2 ** 17, i, dtype=np.float64) for i in range(8)]   # 1 MiB each
    # the reported pool.map(identity, [np.zeros(2**20) for _ in range(100)]),
    # at 128 KiB an array (still a piece of its own): a chunk of 13 holds 26
    many = [np.full(2 ** 14, i, dtype=np.float64) for i in range(100)]
    with ctx.Pool(2) as pool:
        assert pool.apply(len, (ints,)) == 400_000
        assert pool.apply(identity, (ints,)) == ints
        assert pool.apply(len, (table,)) == 300_000
        assert pool.apply(identity, (table,)) == table
        assert pool.apply(total_length, arrays) == 8 * 2 ** 17
        back = pool.apply(identity, (arrays,))
        assert [a.tolist() == b.tolist() for a, b in zip(back, arrays)] == [True] * 8
        assert pool.apply_async(len, (ints,)).get(timeout=60) == 400_000
        mapped = pool.map(identity, many)
        assert [float(a[0]) for a in mapped] == [float(i) for i in range(100)]
        assert all(a.shape == (2 ** 14,) for a in mapped)
        assert pool.starmap(total_length, [arrays[:4], arrays[4:]]) == [4 * 2 ** 17] * 2
        assert [float(a[-1]) for a in pool.imap(identity, many, 25)] == [
            float(i) for i in range(100)]
