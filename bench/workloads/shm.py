"""Shared memory workloads: synchronized ctypes access, heap allocation,
and SharedMemory segments, all in one process, with the fork context's
locks."""
import importlib
import time

from bench.harness import workload


def _timed_loop(n, op):
    t0 = time.perf_counter()
    for _ in range(n):
        op()
    return time.perf_counter() - t0


def _array_get(mp, n, lock):
    # an inline loop: a callable per iteration would cost more than the read
    array = mp.get_context('fork').Array('i', 10, lock=lock)
    t0 = time.perf_counter()
    for _ in range(n):
        array[5]
    return time.perf_counter() - t0


@workload("array_locked_get", n=300_000, target=4.0)
def array_locked_get(mp, n):
    """Array('i', 10, lock=True)[5]"""
    return _array_get(mp, n, True)


@workload("array_lockfree_get", n=4_000_000, target=1.0)
def array_lockfree_get(mp, n):
    """Array('i', 10, lock=False)[5]"""
    return _array_get(mp, n, False)


@workload("value_locked_incr", n=200_000, target=2.0)
def value_locked_incr(mp, n):
    """with v.get_lock(): v.value += 1"""
    v = mp.get_context('fork').Value('i', 0)
    t0 = time.perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    elapsed = time.perf_counter() - t0
    assert v.value == n
    return elapsed


@workload("value_alloc_free", n=20_000, target=3.0)
def value_alloc_free(mp, n):
    """create and drop Value('d')"""
    ctx = mp.get_context('fork')
    return _timed_loop(n, lambda: ctx.Value('d'))


@workload("shm_create_unlink", n=3_000, target=1.0)
def shm_create_unlink(mp, n):
    """SharedMemory(create=True, size=4096), close, unlink"""
    shared_memory = importlib.import_module(mp.__name__ + ".shared_memory")

    def cycle():
        shm = shared_memory.SharedMemory(create=True, size=4096)
        shm.close()
        shm.unlink()
    return _timed_loop(n, cycle)
