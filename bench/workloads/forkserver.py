"""Process start-up under the forkserver start method (the server itself
is started before the clock runs)."""
import time

from bench.harness import workload


def _nothing():
    pass


@workload("process_start_join_forkserver", n=100, target=1.0)
def process_start_join_forkserver(mp, n):
    """start and join an empty Process under forkserver"""
    ctx = mp.get_context("forkserver")
    warm = ctx.Process(target=_nothing)
    warm.start()
    warm.join()
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=_nothing)
        p.start()
        p.join()
    return time.perf_counter() - t0
