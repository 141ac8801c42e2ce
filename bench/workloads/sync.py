"""Lock, RLock and Condition workloads (fork context)."""
import time

from bench.harness import workload


def _acquire_release(lock, n):
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return time.perf_counter() - t0


def _with_block(lock, n):
    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            pass
    return time.perf_counter() - t0


@workload("lock", n=1_000_000, target=1.2)
def lock(mp, n):
    """Lock acquire+release as `with lock:`, uncontended"""
    return _with_block(mp.get_context("fork").Lock(), n)


@workload("rlock", n=1_000_000, target=1.2)
def rlock(mp, n):
    """RLock acquire+release as `with rlock:`, uncontended"""
    return _with_block(mp.get_context("fork").RLock(), n)


@workload("lock_calls", n=1_000_000)
def lock_calls(mp, n):
    """Lock acquire() then release() as two calls, uncontended"""
    return _acquire_release(mp.get_context("fork").Lock(), n)


@workload("rlock_calls", n=1_000_000)
def rlock_calls(mp, n):
    """RLock acquire() then release() as two calls, uncontended"""
    return _acquire_release(mp.get_context("fork").RLock(), n)


@workload("lock_create", n=20_000)
def lock_create(mp, n):
    """create n Locks (fork context) and keep them, as n synchronized Values do"""
    make = mp.get_context("fork").Lock
    t0 = time.perf_counter()
    locks = [make() for _ in range(n)]
    elapsed = time.perf_counter() - t0
    del locks
    return elapsed


def _pingpong_partner(cond, n):
    with cond:
        cond.notify()            # the parent is waiting: start the rally
        for _ in range(n):
            if not cond.wait(10):
                raise SystemExit("pingpong partner: no notify for 10 s")
            cond.notify()


@workload("condition_pingpong", n=20_000, target=2.0)
def condition_pingpong(mp, n):
    """two processes alternate notify/wait on one Condition"""
    ctx = mp.get_context("fork")
    cond = ctx.Condition()
    child = ctx.Process(target=_pingpong_partner, args=(cond, n))
    with cond:
        child.start()
        if not cond.wait(30):   # the partner's first notify
            raise RuntimeError("pingpong partner did not start")
        t0 = time.perf_counter()
        for _ in range(n):
            cond.notify()
            if not cond.wait(10):
                raise RuntimeError("pingpong: no answer for 10 s")
        elapsed = time.perf_counter() - t0
    child.join(30)
    if child.exitcode != 0:
        raise RuntimeError("pingpong partner exited with %s" % child.exitcode)
    return elapsed
