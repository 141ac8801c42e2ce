"""fastmp.heap: the C block allocator over shared arenas.

The first test, blocks handed to children under each start method, is the
standard behaviour and runs against both packages.  The rest is fastmp
only: the allocator's internals (tiling, coalescing, reuse, flat memory,
per-process heaps after fork) and the README's "Shared memory" deviation
that heap blocks are always zeroed."""
import gc
import importlib
import os
import random
import sys
import threading

import pytest

from fastmp import heap


@pytest.fixture
def fresh_heap():
    """A pristine heap for BufferWrapper, restored afterwards."""
    saved = heap.BufferWrapper._heap
    heap.BufferWrapper._heap = heap.Heap()
    yield heap.BufferWrapper._heap
    heap.BufferWrapper._heap = saved


def _check_layout(h):
    """The free and used blocks tile every arena exactly."""
    blocks = h._blocks()
    by_arena = {}
    for arena, start, stop, _ in blocks:
        by_arena.setdefault(arena, []).append((start, stop))
    assert set(by_arena) == set(h._arenas)
    for arena, spans in by_arena.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == arena.size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # no two free neighbours: freeing coalesces
    for (a1, _, _, free1), (a2, _, _, free2) in zip(blocks, blocks[1:]):
        assert not (a1 is a2 and free1 and free2)


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") // 1024


# ---- children --------------------------------------------------------------

def _write_block(wrapper, payload):
    wrapper.create_memoryview()[:len(payload)] = payload


# ---- standard behaviour: both packages ------------------------------------

def test_blocks_reach_child(impl, ctx):
    heap_module = importlib.import_module(impl.__name__ + ".heap")
    small = heap_module.BufferWrapper(16)
    large = heap_module.BufferWrapper(3 * 1024 * 1024)   # a dedicated arena
    p = ctx.Process(target=_write_block, args=(small, b"from the child"))
    q = ctx.Process(target=_write_block, args=(large, b"\x01" * 1000))
    for child in (p, q):
        child.start()
    for child in (p, q):
        child.join(60)
        assert child.exitcode == 0
    # (only fastmp zeroes blocks: see test_blocks_zeroed_writable_and_reused)
    assert bytes(small.create_memoryview()[:14]) == b"from the child"
    assert bytes(large.create_memoryview()[:1000]) == b"\x01" * 1000


# ==== fastmp only: the allocator's internals, zeroed blocks ===============

def test_blocks_zeroed_writable_and_reused(fresh_heap):
    """README "Shared memory": heap blocks are always zeroed, also when a
    freed block is reused (internal: it is)."""
    w = heap.BufferWrapper(100)
    view = w.create_memoryview()
    assert len(view) == 100 and bytes(view) == bytes(100)
    view[:] = b"\xff" * 100
    start = w._start
    del view, w
    again = heap.BufferWrapper(100)
    assert again._start == start                     # the freed block came back
    assert bytes(again.create_memoryview()) == bytes(100)
    assert fresh_heap._n_mallocs == 2 and fresh_heap._n_frees == 1


def test_sizes_and_errors(fresh_heap):
    """Internal: block sizes and the errors of bad ones."""
    assert len(heap.BufferWrapper(0).create_memoryview()) == 0
    assert len(heap.BufferWrapper(1).create_memoryview()) == 1
    with pytest.raises(ValueError):
        heap.BufferWrapper(-1)
    for too_large in (sys.maxsize, 2 ** 80):
        with pytest.raises(OverflowError):
            heap.BufferWrapper(too_large)
    with pytest.raises(TypeError):
        heap.BufferWrapper("10")


def test_block_larger_than_an_arena_gets_its_own(fresh_heap):
    """Internal: a block larger than an arena gets an arena of its own."""
    small = heap.BufferWrapper(64)
    big = heap.BufferWrapper(9 * 1024 * 1024 + 3)
    view = big.create_memoryview()
    view[-1] = 7
    assert big._arena is not small._arena
    assert big._arena.size >= 9 * 1024 * 1024 + 3
    assert len(fresh_heap._arenas) == 2
    del view, big
    assert len(fresh_heap._arenas) == 1              # dedicated arena given back
    del small


def test_memoryview_keeps_block_alive(fresh_heap):
    """Internal: a memoryview of a block keeps the block allocated."""
    w = heap.BufferWrapper(32)
    view = w.create_memoryview()
    del w
    gc.collect()
    assert fresh_heap._n_frees == 0
    view[0] = 1
    view.release()
    assert fresh_heap._n_frees == 1


def test_random_churn_tiles_and_empties(fresh_heap):
    """Internal: free and used blocks always tile the arenas, and freeing
    coalesces."""
    fresh_heap._DISCARD_FREE_SPACE_LARGER_THAN = 0
    rng = random.Random(5)
    live = []
    for _ in range(3000):
        live.append(heap.BufferWrapper(int(rng.lognormvariate(0, 1) * 1000)))
        if len(live) > 50:
            del live[rng.randrange(len(live))]
    _check_layout(fresh_heap)
    rng.shuffle(live)
    del live[:]
    assert fresh_heap._n_frees == fresh_heap._n_mallocs
    assert fresh_heap._arenas == [] and fresh_heap._len_to_seq == {}
    assert fresh_heap._allocated_blocks == {}


@pytest.mark.timeout(60)
def test_100k_alloc_free_cycles_flat_memory(fresh_heap):
    """Internal: allocation churn does not grow the process's memory."""
    sizes = [8, 24, 100, 1000, 5000]
    for i in range(1000):
        heap.BufferWrapper(sizes[i % 5])
    arenas_before = sum(a.size for a in fresh_heap._arenas)
    rss_before = _rss_kib()
    keep = []
    for i in range(100_000):
        w = heap.BufferWrapper(sizes[i % 5])
        if i % 7 == 0:
            keep.append(w)
            if len(keep) > 20:
                keep.pop(0)
    del keep, w
    assert sum(a.size for a in fresh_heap._arenas) == arenas_before
    assert _rss_kib() - rss_before < 4096
    assert fresh_heap._n_mallocs == fresh_heap._n_frees == 101_000
    _check_layout(fresh_heap)


def test_threads_allocate_concurrently(fresh_heap):
    """Internal: the allocator is thread-safe."""
    errors = []

    def churn(seed):
        rng = random.Random(seed)
        mine = []
        try:
            for _ in range(3000):
                w = heap.BufferWrapper(rng.randrange(1, 3000))
                w.create_memoryview()[:1] = bytes([seed])
                mine.append(w)
                if len(mine) > 30:
                    victim = mine.pop(rng.randrange(len(mine)))
                    assert victim.create_memoryview()[0] == seed
        except Exception as exc:          # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(s,)) for s in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_layout(fresh_heap)


def test_forked_child_has_its_own_heap(fresh_heap):
    """Internal: a forked child allocates from arenas of its own and never
    frees into its parent's heap."""
    parent_blocks = [heap.BufferWrapper(64) for _ in range(4)]
    for i, w in enumerate(parent_blocks):
        w.create_memoryview()[:] = bytes([i + 1]) * 64
    del parent_blocks[1]                   # a free hole the child must not reuse
    parent_arenas = list(fresh_heap._arenas)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            fresh = [heap.BufferWrapper(64) for _ in range(8)]
            for w in fresh:
                w.create_memoryview()[:] = b"\xee" * 64
            inherited = heap.BufferWrapper._heap
            if inherited._arenas and all(w._arena not in parent_arenas for w in fresh):
                status = 0
            del fresh, w, parent_blocks[:]   # must not free into the parent's heap
            status = status if inherited._n_frees == 8 else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert [bytes(w.create_memoryview()) for w in parent_blocks] == [
        bytes([i]) * 64 for i in (1, 3, 4)]
    _check_layout(fresh_heap)
