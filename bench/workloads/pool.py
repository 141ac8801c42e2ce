"""Pool workloads (issue 5): Pool(2) under fork, fastmp against the
standard package.  Pool start-up is left out except in pool_startup."""
import time

from bench.harness import workload


def ident(x):
    return x


def noop(x):
    pass


def pow3(x):
    return x ** 3


def _timed(mp, n, body):
    with mp.get_context("fork").Pool(2) as pool:
        pool.apply(ident, (0,))         # both workers up
        t0 = time.perf_counter()
        body(pool, n)
        return time.perf_counter() - t0


@workload("pool_apply_roundtrip", n=5000, target=5.0)
def pool_apply_roundtrip(mp, n):
    """sequential pool.apply(ident, (i,))"""
    def body(pool, n):
        for i in range(n):
            pool.apply(ident, (i,))
    return _timed(mp, n, body)


@workload("pool_apply_async_burst", n=20000, target=4.0)
def pool_apply_async_burst(mp, n):
    """submit n apply_async, then get them all"""
    def body(pool, n):
        results = [pool.apply_async(ident, (i,)) for i in range(n)]
        for r in results:
            r.get()
    return _timed(mp, n, body)


@workload("pool_imap_chunk1", n=20000, target=4.0)
def pool_imap_chunk1(mp, n):
    """for x in pool.imap(ident, range(n))"""
    def body(pool, n):
        for _ in pool.imap(ident, range(n)):
            pass
    return _timed(mp, n, body)


@workload("pool_imap_unordered_chunk1", n=20000, target=4.0)
def pool_imap_unordered_chunk1(mp, n):
    """for x in pool.imap_unordered(ident, range(n))"""
    def body(pool, n):
        for _ in pool.imap_unordered(ident, range(n)):
            pass
    return _timed(mp, n, body)


@workload("pool_map_noop_1M", n=1_000_000, target=1.5)
def pool_map_noop_1M(mp, n):
    """pool.map(noop, [None] * n), the documentation's benchmark"""
    return _timed(mp, n, lambda pool, n: pool.map(noop, [None] * n))


@workload("pool_map_pow3_100k", n=100_000, target=1.5)
def pool_map_pow3_100k(mp, n):
    """pool.map(pow3, range(n))"""
    return _timed(mp, n, lambda pool, n: pool.map(pow3, range(n)))


@workload("pool_startup", n=20, target=1.2)
def pool_startup(mp, n):
    """with Pool(2) as p: p.apply(ident, (1,))"""
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    for _ in range(n):
        with ctx.Pool(2) as pool:
            pool.apply(ident, (1,))
    return time.perf_counter() - t0
