"""Manager workloads: the cost of a proxied call (one round trip to the
server process) and of starting a manager.  All under fork."""
import time

from bench.harness import workload

PAYLOAD = 'x' * 256


def _manager(mp):
    return mp.get_context('fork').Manager()


@workload("manager_list_get", n=20000, target=1.5)
def manager_list_get(mp, n):
    """l[5] on a managed list"""
    with _manager(mp) as m:
        lst = m.list(range(10))
        lst[5]                      # opens this thread's connection
        t0 = time.perf_counter()
        for _ in range(n):
            lst[5]
        return time.perf_counter() - t0


@workload("manager_dict_set", n=20000, target=1.5)
def manager_dict_set(mp, n):
    """d[i & 1023] = i on a managed dict"""
    with _manager(mp) as m:
        dct = m.dict()
        dct[0] = 0
        t0 = time.perf_counter()
        for i in range(n):
            dct[i & 1023] = i
        return time.perf_counter() - t0


def _produce(q, ready, go, n):
    ready.set()
    go.wait()
    for _ in range(n):
        q.put(PAYLOAD)
    q.put(None)


@workload("manager_queue_256B", n=10000, target=1.5, unit="msg")
def manager_queue_256B(mp, n):
    """a producer process puts 256-character str objects on manager.Queue();
    the parent gets them until the sentinel"""
    ctx = mp.get_context('fork')
    with ctx.Manager() as m:
        q = m.Queue()
        ready, go = ctx.Event(), ctx.Event()
        producer = ctx.Process(target=_produce, args=(q, ready, go, n))
        producer.start()
        ready.wait()
        q.qsize()                   # opens this thread's connection
        t0 = time.perf_counter()
        go.set()
        while q.get() is not None:
            pass
        elapsed = time.perf_counter() - t0
        producer.join()
        return elapsed


@workload("manager_lock", n=10000, target=1.5)
def manager_lock(mp, n):
    """managed Lock acquire + release"""
    with _manager(mp) as m:
        lock = m.Lock()
        lock.acquire()
        lock.release()
        t0 = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        return time.perf_counter() - t0


@workload("manager_start", n=20, target=1.2)
def manager_start(mp, n):
    """with Manager() as m: m.list()"""
    ctx = mp.get_context('fork')
    t0 = time.perf_counter()
    for _ in range(n):
        with ctx.Manager() as m:
            m.list()
    return time.perf_counter() - t0


@workload("manager_nested_get", n=3000)
def manager_nested_get(mp, n):
    """d['inner'][0]: a managed list inside a managed dict (each access
    rebuilds, increfs and drops a proxy)"""
    with _manager(mp) as m:
        dct = m.dict()
        dct['inner'] = m.list([1])
        dct['inner'][0]
        t0 = time.perf_counter()
        for _ in range(n):
            dct['inner'][0]
        return time.perf_counter() - t0


@workload("manager_create_list", n=2000)
def manager_create_list(mp, n):
    """m.list() made and dropped"""
    with _manager(mp) as m:
        m.list()
        t0 = time.perf_counter()
        for _ in range(n):
            m.list()
        return time.perf_counter() - t0
