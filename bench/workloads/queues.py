"""Queue workloads (fork): messages from producer processes to consumers.

Every process is started before the clock starts and waits on a pipe for
the go signal, so the measured part is the message traffic and the final
joins only.
"""
import os
import time

from bench.harness import workload

SMALL = "x" * 256
HUGE = 64 << 20


def _wait_go(go_fd):
    os.read(go_fd, 1)


def _produce(q, go_fd, n, item, sentinels):
    _wait_go(go_fd)
    for _ in range(n):
        q.put(item)
    for _ in range(sentinels):
        q.put(None)


def _produce_huge(q, go_fd, n):
    _produce(q, go_fd, n, bytes(HUGE), 1)


def _consume(q, go_fd):
    _wait_go(go_fd)
    while q.get() is not None:
        pass


def _run(mp, producers, consumers, make_queue):
    """Start `producers` (callables taking the queue and the go fd) and
    `consumers` processes; if `consumers` is 0 the parent consumes until it
    has seen one sentinel per producer.  Returns the seconds from the go
    signal to the end."""
    ctx = mp.get_context("fork")
    q = make_queue(ctx)
    go_r, go_w = os.pipe()
    procs = [ctx.Process(target=fn, args=(q, go_r)) for fn in producers]
    procs += [ctx.Process(target=_consume, args=(q, go_r)) for _ in range(consumers)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    os.write(go_w, b"g" * len(procs))
    if consumers == 0:
        left = len(producers)
        while left:
            if q.get() is None:
                left -= 1
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    os.close(go_r)
    os.close(go_w)
    for p in procs:
        if p.exitcode != 0:
            raise RuntimeError("a benchmark process failed: exit code %s" % p.exitcode)
    return elapsed


def _producer(n, item=SMALL, sentinels=1):
    return lambda q, go_fd: _produce(q, go_fd, n, item, sentinels)


@workload("queue_256B", n=200000, target=10.0, unit="msg")
def queue_256b(mp, n):
    """one producer process puts 256-byte str objects; the parent gets them"""
    return _run(mp, [_producer(n)], 0, lambda ctx: ctx.Queue())


@workload("simplequeue_256B", n=200000, target=5.0, unit="msg")
def simplequeue_256b(mp, n):
    """as queue_256B, with SimpleQueue"""
    return _run(mp, [_producer(n)], 0, lambda ctx: ctx.SimpleQueue())


@workload("queue_fanin_4to1", n=200000, target=5.0, unit="msg")
def queue_fanin(mp, n):
    """four producer processes, the parent consumes"""
    return _run(mp, [_producer(n // 4) for _ in range(4)], 0, lambda ctx: ctx.Queue())


@workload("queue_fanout_1to4", n=200000, target=4.0, unit="msg")
def queue_fanout(mp, n):
    """one producer process, four consumer processes"""
    return _run(mp, [_producer(n, sentinels=4)], 4, lambda ctx: ctx.Queue())


@workload("queue_64MiB_bytes", n=10, target=5.0, unit="msg")
def queue_64mib(mp, n):
    """one producer process puts 64 MiB bytes objects; the parent gets them"""
    return _run(mp, [lambda q, go_fd: _produce_huge(q, go_fd, n)], 0, lambda ctx: ctx.Queue())
