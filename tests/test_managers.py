"""Managers and proxies: SyncManager types, custom managers, proxies in
child processes, reference counting, SharedMemoryManager, the doc examples.
Remote (TCP) use and wire compatibility are in test_managers_remote.py.

Everything up to "fastmp only" is the standard behaviour, run against
fastmp and the standard package; the last part covers the README's
"Managers" deviations, each test naming the one it covers."""
import copy
import errno
import gc
import os
import queue
import signal
import sys
import threading
import time

import pytest

import fastmp
import fastmp.managers as fmanagers
import multiprocessing.managers as smanagers
from support import check_lock_locked, check_semaphore_locked, skip_stdlib_before

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def manager(impl):
    """A started SyncManager of `impl` (fork), shut down afterwards."""
    m = impl.get_context('fork').Manager()
    yield m
    m.shutdown()


@pytest.fixture
def fmanager():
    """A started fastmp SyncManager (fork)."""
    m = fastmp.get_context('fork').Manager()
    yield m
    m.shutdown()


# -- workers run in child processes (module level: spawn imports them) ----

def _child_uses_proxies(lst, dct, lock, q, ns, nested):
    with lock:
        lst.append('child')
    dct['pid'] = os.getpid()
    q.put(sum(range(10)))
    ns.seen = True
    nested['inner'].append(7)


def _child_sets_event(event, value):
    value.value = 42
    event.set()


def _child_waits_barrier(barrier):
    barrier.wait(timeout=20)


def _square(x):
    return x * x


# -- the standard types, fastmp and stdlib side by side -----------------------

def test_list_proxy_agrees(manager):
    lst = manager.list([3, 1, 2])
    lst.append(4)
    lst.extend([5, 6])
    lst += [7]
    lst *= 1
    lst.sort()
    assert lst[0] == 1 and lst[-1] == 7
    assert lst[1:3] == [2, 3]
    assert len(lst) == 7 and 5 in lst
    assert lst.index(4) == 3 and lst.count(2) == 1
    assert list(reversed(lst)) == [7, 6, 5, 4, 3, 2, 1]
    del lst[0]
    assert lst.pop() == 7
    assert lst + [0] == [2, 3, 4, 5, 6, 0]
    assert lst._getvalue() == [2, 3, 4, 5, 6]
    assert str(lst) == '[2, 3, 4, 5, 6]'
    assert repr(lst).startswith('<ListProxy object, typeid \'list\' at 0x')



def test_dict_proxy_agrees(manager):
    dct = manager.dict(a=1)
    dct['b'] = 2
    dct.update(c=3)
    assert dct['a'] == 1 and dct.get('z', 9) == 9
    assert sorted(dct.keys()) == ['a', 'b', 'c']
    assert sorted(dct.items()) == [('a', 1), ('b', 2), ('c', 3)]
    assert sorted(dct) == ['a', 'b', 'c']           # __iter__: an Iterator proxy
    assert dct.setdefault('d', 4) == 4 and dct.pop('d') == 4
    assert 'a' in dct and len(dct) == 3
    assert dct.copy() == {'a': 1, 'b': 2, 'c': 3}
    with pytest.raises(KeyError):
        dct['missing']
    dct.clear()
    assert len(dct) == 0



def test_dict_proxy_newer_methods(impl, manager):
    skip_stdlib_before(impl, (3, 14), "the dict proxy's |, reversed and fromkeys")
    dct = manager.dict({'a': 1, 'b': 2})
    backwards = reversed(dct)
    assert type(backwards) is type(iter([])) and list(backwards) == ['b', 'a']
    assert dct | {'c': 3} == {'a': 1, 'b': 2, 'c': 3}
    assert {'z': 0} | dct == {'z': 0, 'a': 1, 'b': 2}
    alias = dct
    dct |= {'d': 4}
    assert dct is alias and dct['d'] == 4
    assert dct.fromkeys('xy', 0) == {'x': 0, 'y': 0}
    assert dct.copy() == {'a': 1, 'b': 2, 'd': 4}
    dct.clear()
    assert dct._getvalue() == {}



def test_list_proxy_newer_methods(impl, manager):
    skip_stdlib_before(impl, (3, 14), "the list proxy's clear and copy")
    lst = manager.list([1, 2])
    copied = lst.copy()
    assert type(copied) is list and copied == [1, 2]
    lst.clear()
    assert len(lst) == 0 and copied == [1, 2]



def test_set_proxy(impl, manager):
    skip_stdlib_before(impl, (3, 14), 'SyncManager.set()')
    s = manager.set([1, 2, 3])
    assert isinstance(s, impl.managers.SetProxy)
    s.add(4)
    s.discard(1)
    assert 2 in s and 1 not in s and len(s) == 3
    assert sorted(s) == [2, 3, 4]
    assert s | {9} == {2, 3, 4, 9} and {9} | s == {2, 3, 4, 9}
    assert s & {2, 7} == {2} and {2, 7} & s == {2}
    assert s - {2} == {3, 4} and {2, 5} - s == {5}
    assert s ^ {2, 5} == {3, 4, 5} and {2, 5} ^ s == {3, 4, 5}
    assert s.issubset({2, 3, 4, 5}) and s <= {2, 3, 4} and s < {2, 3, 4, 5}
    assert s.issuperset({2}) and s >= {2, 3, 4} and s > {3}
    assert s.union({1}) == {1, 2, 3, 4} and s.isdisjoint({7})
    copied = s.copy()
    assert type(copied) is set and copied == {2, 3, 4}
    # iteration walks a copy taken when it starts, as a list proxy's
    # reversed() does, so the set may change meanwhile
    walk = iter(s)
    s.add(5)
    assert sorted(walk) == [2, 3, 4]
    alias = s
    s |= {10}
    s -= {2}
    s &= {3, 4, 5, 10, 11}
    s ^= {5, 12}
    assert s is alias and s._getvalue() == {3, 4, 10, 12}
    with pytest.raises(KeyError):
        s.remove(99)
    s.clear()
    assert len(s) == 0
    with pytest.raises(impl.managers.RemoteError):
        manager.set(1234)



def test_namespace_value_array(manager):
    ns = manager.Namespace(x=1)
    ns.y = 'two'
    assert ns.x == 1 and ns.y == 'two'
    del ns.x
    with pytest.raises(AttributeError):
        ns.x
    assert str(ns) == "Namespace(y='two')"
    val = manager.Value('i', 5)
    val.value += 1
    assert val.get() == 6
    arr = manager.Array('i', [1, 2, 3])
    arr[0] = 9
    assert len(arr) == 3 and arr[0] == 9 and list(arr[:]) == [9, 2, 3]



def test_sync_primitives(manager):
    lock = manager.Lock()
    assert lock.acquire() is True
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    rlock = manager.RLock()
    with rlock:
        assert rlock.acquire(blocking=False)
        rlock.release()
    sem = manager.BoundedSemaphore(1)
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    event = manager.Event()
    assert event.wait(0.01) is False
    event.set()
    assert event.is_set() and event.wait()
    cond = manager.Condition()
    with cond:
        assert cond.wait_for(lambda: True, timeout=1)
        assert cond.wait(0.01) is False
        cond.notify_all()
    barrier = manager.Barrier(1)
    assert barrier.parties == 1 and barrier.n_waiting == 0
    assert barrier.wait() == 0 and not barrier.broken



@pytest.mark.parametrize('kind', ['Lock', 'RLock', 'Condition'])
def test_lock_proxies_locked(impl, manager, kind):
    skip_stdlib_before(impl, (3, 14), "the lock proxies' locked()")
    check_lock_locked(getattr(manager, kind)(), recursive=kind != 'Lock')



def test_condition_proxy_on_a_given_lock_is_locked_with_it(impl, manager):
    skip_stdlib_before(impl, (3, 14), "the condition proxy's locked()")
    lock = manager.Lock()
    cond = manager.Condition(lock)
    lock.acquire()
    assert cond.locked() is True
    lock.release()
    assert cond.locked() is False



def test_queue_and_errors_come_back_as_themselves(manager):
    q = manager.Queue(2)
    q.put('a')
    q.put('b')
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait('c')
    assert q.get() == 'a' and q.get() == 'b'
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    jq = manager.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    jq.join()



def test_remote_error_carries_server_traceback(impl, manager):
    lst = manager.list()
    with pytest.raises(impl.managers.RemoteError) as info:
        lst._callmethod('not_a_method')
    text = str(info.value)
    assert 'Traceback' in text and 'not_a_method' in text
    assert text.startswith('\n' + '-' * 75)



def test_copy_and_deepcopy(manager):
    lst = manager.list([[1], 2])
    twin = copy.copy(lst)
    assert type(twin) is type(lst) and twin._token.id == lst._token.id
    twin.append(3)
    assert len(lst) == 3
    deep = copy.deepcopy(lst)
    assert deep == [[1], 2, 3] and type(deep) is list



def test_pool_proxy(manager):
    with manager.Pool(2) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.apply_async(abs, (-3,)).get(timeout=30) == 3
        assert list(pool.imap(abs, [-4, -5])) == [4, 5]



def test_threads_each_get_a_connection(manager):
    dct = manager.dict()

    def bump(tag):
        for i in range(50):
            dct['%s-%d' % (tag, i)] = i

    threads = [threading.Thread(target=bump, args=(t,)) for t in 'abcd']
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dct) == 200


# -- proxies in child processes ------------------------------------------

def test_proxies_in_child_processes(ctx):
    with ctx.Manager() as m:
        lst, dct, lock, q = m.list(), m.dict(), m.Lock(), m.Queue()
        ns = m.Namespace()
        nested = m.dict(inner=m.list())
        p = ctx.Process(target=_child_uses_proxies,
                         args=(lst, dct, lock, q, ns, nested))
        p.start()
        assert q.get(timeout=30) == 45
        p.join(30)
        assert p.exitcode == 0
        assert lst[:] == ['child'] and dct['pid'] == p.pid
        assert ns.seen is True
        assert nested['inner'][:] == [7]



def test_proxies_carry_the_authkey_to_spawned_children(impl):
    ctx = impl.get_context('spawn')
    # The manager's key is not the child's own: only the proxies carry it.
    with impl.managers.SyncManager(authkey=b'not-the-default', ctx=ctx) as m:
        assert m._authkey != impl.current_process().authkey
        event, value = m.Event(), m.Value('i', 0)
        p = ctx.Process(target=_child_sets_event, args=(event, value))
        p.start()
        p.join(30)
        assert p.exitcode == 0 and event.is_set() and value.value == 42



def test_barrier_across_processes(impl):
    ctx = impl.get_context('fork')
    with ctx.Manager() as m:
        barrier = m.Barrier(3)
        procs = [ctx.Process(target=_child_waits_barrier, args=(barrier,))
                 for _ in range(2)]
        for p in procs:
            p.start()
        barrier.wait(timeout=20)
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0]


# -- reference counting ------------------------------------------------

def test_server_frees_objects_when_proxies_go(manager):
    lst = manager.list(range(5))
    dct = manager.dict()
    assert manager._number_of_objects() == 2
    del lst, dct
    assert manager._number_of_objects() == 0



def test_nested_proxies_are_freed(manager):
    outer = manager.dict()
    outer['l'] = manager.list([1, 2])
    inner = outer['l']
    inner.append(3)
    assert outer['l'][:] == [1, 2, 3]
    del inner
    outer['l'].append(4)
    assert outer['l'][-1] == 4
    del outer
    assert manager._number_of_objects() == 0



def test_long_run_does_not_leak(impl, manager):
    keep = manager.dict()
    for i in range(200):
        tmp = manager.list([i])
        keep[i % 5] = tmp._getvalue()
        for _ in tmp:
            pass
    del tmp
    if impl.__name__ == "multiprocessing" and sys.version_info[:2] == (3, 12):
        # there the standard proxies of this loop end in reference cycles
        # (25-35 left), which only the cyclic collector frees
        gc.collect()
    assert manager._number_of_objects() == 1
    assert 'refcount=1' in manager._debug_info()


# -- BaseManager ----------------------------------------------------------

class Maths:
    def add(self, a, b):
        return a + b

    def fail(self):
        raise ArithmeticError('no')

    def _hidden(self):
        return 'hidden'

    def numbers(self):
        return iter(range(3))



def _counter_gen():
    yield from range(4)



class MathsManager(fmanagers.BaseManager):
    pass



class StdlibMathsManager(smanagers.BaseManager):
    pass



for _manager, _module in ((MathsManager, fmanagers), (StdlibMathsManager, smanagers)):
    _manager.register('Maths', Maths, method_to_typeid={'numbers': 'Iter'})
    _manager.register('Hidden', Maths, exposed=('add', '_hidden'))
    _manager.register('counter', _counter_gen, proxytype=_module.IteratorProxy)
    _manager.register('Iter', proxytype=_module.IteratorProxy, create_method=False)



def maths_manager(impl):
    """MathsManager of `impl`'s managers module."""
    return MathsManager if impl is fastmp else StdlibMathsManager



def _init_server(marker):
    os.environ['FASTMP_TEST_MARKER'] = marker



def test_custom_manager(impl, ctx):
    with maths_manager(impl)(ctx=ctx) as m:
        maths = m.Maths()
        assert maths.add(2, 3) == 5
        assert not hasattr(maths, '_hidden')
        with pytest.raises(ArithmeticError):
            maths.fail()
        with pytest.raises(impl.managers.RemoteError):
            maths._callmethod('_hidden')
        assert list(maths.numbers()) == [0, 1, 2]
        hidden = m.Hidden()
        assert hidden._hidden() == 'hidden' and not hasattr(hidden, 'fail')
        assert list(m.counter()) == [0, 1, 2, 3]
    assert m._process.exitcode == 0



def test_lifecycle_errors_and_initializer(impl):
    manager_class = maths_manager(impl)
    m = manager_class(ctx=impl.get_context('fork'))
    with pytest.raises(TypeError):
        m.start(initializer=42)
    m.start(_init_server, ('set',))
    with pytest.raises(impl.ProcessError):
        m.start()
    with pytest.raises(impl.ProcessError):
        m.get_server()
    address = m.address
    assert isinstance(address, str) and os.path.exists(address)
    other = manager_class(address=address)
    other.connect()
    assert other.Maths().add(1, 1) == 2
    m.shutdown()
    m.join(10)
    assert m._process is None
    with pytest.raises(impl.ProcessError):
        m.start()



def test_xmlrpclib_serializer(impl):
    with maths_manager(impl)(serializer='xmlrpclib', ctx=impl.get_context('fork')) as m:
        maths = m.Maths()
        assert maths.add(2, 3) == 5
        assert maths.add([1], [2]) == [1, 2]



def test_dead_server_raises_not_hangs(manager):
    lst = manager.list([1])
    assert lst[0] == 1
    manager._process.kill()
    manager._process.join(10)
    start = time.monotonic()
    with pytest.raises((EOFError, ConnectionError)):
        lst.append(2)
    with pytest.raises((EOFError, ConnectionError)):
        manager.dict()
    assert time.monotonic() - start < 5


# -- SharedMemoryManager ------------------------------------------------

def test_shared_memory_manager_releases_segments(impl):
    with impl.managers.SharedMemoryManager(ctx=impl.get_context('fork')) as smm:
        shm = smm.SharedMemory(64)
        shm.buf[:3] = b'abc'
        sl = smm.ShareableList([1, 'two', 3.0])
        assert sl[1] == 'two'
        names = [shm.name.lstrip('/'), sl.shm.name.lstrip('/')]
        assert all(os.path.exists('/dev/shm/' + n) for n in names)
        shm.close()
        sl.shm.close()
    assert not any(os.path.exists('/dev/shm/' + n) for n in names)


# ==== fastmp only: the README's "Managers" deviations, a bad call ==========

def test_set_proxy_is_a_mutable_set(fmanager):
    """README "Managers": a set proxy is a MutableSet (the standard one is
    registered as a MutableMapping, gh-142740)."""
    import collections.abc
    s = fmanager.set()
    assert isinstance(s, collections.abc.MutableSet)
    assert not isinstance(s, collections.abc.MutableMapping)



@pytest.mark.parametrize('kind', ['Semaphore', 'BoundedSemaphore'])
def test_semaphore_proxies_locked(fmanager, kind):
    """README "Managers": a Semaphore or BoundedSemaphore proxy answers
    locked() (the standard server holds a threading.Semaphore, which has
    none: the call raises RemoteError)."""
    check_semaphore_locked(getattr(fmanager, kind))



def test_shutdown_escalates_when_server_does_not_stop():
    """README "Managers": shutdown() terminates a server that does not
    answer within shutdown_timeout instead of hanging."""
    m = MathsManager(ctx=fastmp.get_context('fork'), shutdown_timeout=0.2)
    m.start()
    proc = m._process
    os.kill(proc.pid, 19)            # SIGSTOP: it cannot answer
    start = time.monotonic()
    m.shutdown()
    assert time.monotonic() - start < 10
    assert not proc.is_alive()



def _failing_initializer():
    raise LookupError('initializer failed')



def test_start_failure_is_raised_by_start(capfd):
    """README "Managers": start() raises the server's real start-up error
    (a failing initializer, an address in use) instead of a bare
    EOFError."""
    m = MathsManager(ctx=fastmp.get_context('fork'))
    with pytest.raises(LookupError, match='initializer failed'):
        m.start(_failing_initializer)
    assert m._process.exitcode == 1
    busy = fmanagers.BaseManager(address=('127.0.0.1', 0))
    server = busy.get_server()
    try:
        taken = MathsManager(address=server.address,
                             ctx=fastmp.get_context('fork'))
        with pytest.raises(OSError) as info:
            taken.start()
        assert info.value.errno == errno.EADDRINUSE
    finally:
        server.listener.close()



def test_interrupted_call_leaves_the_proxy_usable(fmanager):
    """README "Managers": a call cut short by an exception from a signal
    handler drops its connection, so its late reply is not taken as the
    answer to the next call."""
    event, lst = fmanager.Event(), fmanager.list()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            event.wait(1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    lst.append('after')
    assert lst[:] == ['after'] and event.is_set() is False



def test_many_short_lived_proxies(fmanager):
    """README "Managers" (an object stored inside another is freed when
    nothing refers to it): creating and dropping proxies and nested proxies
    leaves only the objects referred to from outside the server."""
    outer = fmanager.dict()
    outer['inner'] = fmanager.list([0])
    for i in range(100):
        outer['inner'].append(i)
        fmanager.list([i])
    assert len(outer['inner']) == 101
    # Only the dict is referenced from outside the server now.
    assert fmanager._number_of_objects() == 1



class ServerStats:
    """Served by StatsManager: looks at the server's own tables."""

    def held_for_stored_proxies(self):
        server = fastmp.current_process()._manager_server
        return len(server.id_to_local_proxy_obj)



class StatsManager(fmanagers.SyncManager):
    pass



StatsManager.register('Stats', ServerStats)



def test_objects_stored_then_replaced_are_freed():
    """README "Managers": a managed object stored in another and later
    replaced or removed is freed by the server (the standard server keeps
    it until shutdown)."""
    with StatsManager(ctx=fastmp.get_context('fork')) as m:
        stats, dct = m.Stats(), m.dict()
        for i in range(50):
            dct['x'] = m.list([i])
        assert stats.held_for_stored_proxies() == 1
        assert dct['x'][:] == [49]
        dct.clear()
        assert stats.held_for_stored_proxies() == 0
        assert m._number_of_objects() == 2



def test_join_before_start_returns():
    """join() of a manager never started returns at once (the standard one
    raises AttributeError, having no _process yet; not a README deviation)."""
    m = MathsManager(ctx=fastmp.get_context('fork'))
    m.join(0)
    assert m._process is None
