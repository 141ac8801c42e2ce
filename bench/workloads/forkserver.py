"""Process start-up under the forkserver start method (the server itself
is started before the clock runs)."""
from bench.harness import workload
from bench.workloads.process import _start_join


@workload("process_start_join_forkserver", n=100, target=1.0)
def process_start_join_forkserver(mp, n):
    """start and join an empty Process under forkserver"""
    _start_join(mp, "forkserver", 1)   # starts the server, off the clock
    return _start_join(mp, "forkserver", n)
