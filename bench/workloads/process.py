"""Process start-up workloads."""
import time

from bench.harness import workload


def _nothing():
    pass


def _start_join(mp, method, n):
    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=_nothing)
        p.start()
        p.join()
    return time.perf_counter() - t0


@workload("process_start_join_fork", n=300, target=1.0)
def process_start_join_fork(mp, n):
    """start and join an empty Process under fork"""
    return _start_join(mp, "fork", n)


@workload("process_start_join_spawn", n=40, target=1.0)
def process_start_join_spawn(mp, n):
    """start and join an empty Process under spawn"""
    return _start_join(mp, "spawn", n)
