"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier.

The first part is the standard behaviour, written once and run against
fastmp and the standard package: every method, the reprs, timeouts and
signals, sharing with children under each start method, a holder killed with
SIGKILL, pickling outside process start, contention.  The last part,
"fastmp only", covers the README's Condition deviations, the naming and
cleanup of fastmp's named objects, the `_multiprocessing` stand-in and the
slab of unnamed locks."""
import gc
import mmap
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

import fastmp
from fastmp import _multiprocessing, _names, synchronize
from support import (check_lock_locked, check_semaphore_locked,
                     skip_stdlib_before, wait_for)

pytestmark = pytest.mark.timeout(60)

SHORT = 0.2


def _shm_names():
    # Only this test run's objects: other runs on the machine make their own.
    tag = 'fmp-%s-' % _names.root_pid
    return {n for n in os.listdir('/dev/shm') if tag in n}


def _depth(rlock):
    """How many times this thread holds `rlock` (the standard private API)."""
    return rlock._semlock._count()


def _is_mine(rlock):
    return rlock._semlock._is_mine()


def _waiting(cond):
    """The number of waiters that the Condition's repr reports."""
    return int(repr(cond).rsplit(', ', 1)[1].rstrip(')>'))


# ---- workers (module level so spawn/forkserver children can import them) --

def _use_everything(lock, rlock, sem, cond, event, barrier, results):
    """Child side of test_objects_shared_with_child."""
    with lock:
        results.release()
    with rlock:
        with rlock:
            results.release()
    sem.acquire()
    results.release()
    event.wait(10)
    barrier.wait(10)
    with cond:
        cond.notify()


def _hold_forever(lock, holding):
    lock.acquire()
    holding.set()
    time.sleep(60)


def _wait_on_condition(cond, started):
    with cond:
        started.release()
        cond.wait(60)


def _notify_after_wait(cond):
    with cond:
        cond.notify()


def _acquire_with_timeout(lock, out):
    if lock.acquire(timeout=0.2):
        out.release()


def _report_rlock_state(rlock, out):
    """Child side of test_child_does_not_own_parents_rlock."""
    ok = (not _is_mine(rlock) and _depth(rlock) == 0
          and rlock.acquire(timeout=0.05) is False)
    if ok:
        out.release()


def _hold_until_told(locks, seen, holding, go):
    """Child side of test_locked_seen_from_another_process: hold `locks`,
    report what locked() says here, release them when told."""
    for lock in locks:
        lock.acquire()
    for i, lock in enumerate(locks):
        seen[i] = lock.locked()
    holding.set()
    go.wait(30)
    for lock in locks:
        lock.release()


# ==== standard behaviour: fastmp and the standard package ==================

# ---- Lock ---------------------------------------------------------------

@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_lock_methods(impl, method):
    lock = impl.get_context(method).Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(True, 0) is False
    t0 = time.monotonic()
    assert lock.acquire(timeout=SHORT) is False
    assert time.monotonic() - t0 >= SHORT * 0.9
    assert lock.acquire(timeout=-1) is False     # negative means no wait
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    with lock as entered:
        assert entered is True
        assert lock.acquire(False) is False
    assert lock.acquire(timeout=1) is True
    lock.release()


def test_lock_released_by_other_thread(impl):
    lock = impl.get_context('fork').Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join()
    assert lock.acquire(False) is True
    lock.release()


def test_lock_acquire_bad_arguments(impl):
    lock = impl.get_context('fork').Lock()
    with pytest.raises(TypeError):
        lock.acquire(True, None, 3)
    with pytest.raises(TypeError):
        lock.acquire(wait=True)
    with pytest.raises(TypeError):
        lock.acquire(True, block=True)
    with pytest.raises(TypeError):
        lock.acquire(timeout='soon')


def test_reprs(impl):
    ctx = impl.get_context('fork')
    seen = []
    lock = ctx.Lock()
    seen.append(repr(lock))
    lock.acquire()
    seen.append(repr(lock))
    box = []
    t = threading.Thread(target=lambda: box.append(repr(lock)), name='T1')
    t.start()
    t.join()
    seen.append(box[0])
    lock.release()
    t = threading.Thread(target=lambda: (lock.acquire(), box.append(repr(lock))), name='T2')
    t.start()
    t.join()
    seen.append(box[1])
    seen.append(repr(lock))             # held by another thread
    lock.release()
    rlock = ctx.RLock()
    seen.append(repr(rlock))
    rlock.acquire()
    rlock.acquire()
    seen.append(repr(rlock))
    rlock.release()
    rlock.release()
    t = threading.Thread(target=lambda: (rlock.acquire(), rlock.acquire(),
                                         box.append(repr(rlock))), name='T3')
    t.start()
    t.join()
    seen.append(box[2])
    seen.append(repr(rlock))            # held by another thread
    seen.append(repr(ctx.Semaphore(3)))
    seen.append(repr(ctx.BoundedSemaphore(2)))
    seen.append(repr(ctx.Condition(ctx.Lock())))
    assert seen == [
        '<Lock(owner=None)>', '<Lock(owner=MainProcess)>',
        '<Lock(owner=SomeOtherThread)>', '<Lock(owner=MainProcess|T2)>',
        '<Lock(owner=SomeOtherThread)>',
        '<RLock(None, 0)>', '<RLock(MainProcess, 2)>',
        '<RLock(MainProcess|T3, 2)>', '<RLock(SomeOtherThread, nonzero)>',
        '<Semaphore(value=3)>', '<BoundedSemaphore(value=2, maxvalue=2)>',
        '<Condition(<Lock(owner=None)>, 0)>']


def test_lock_repr_other_process(impl):
    ctx = impl.get_context('fork')
    lock, holding = ctx.Lock(), ctx.Event()
    p = ctx.Process(target=_hold_forever, args=(lock, holding))
    p.start()
    try:
        assert holding.wait(10)
        assert repr(lock) == '<Lock(owner=SomeOtherProcess)>'
    finally:
        p.kill()
        p.join()


def test_event_repr(impl):
    skip_stdlib_before(impl, (3, 11), "the Event's repr")
    ev = impl.get_context('fork').Event()
    assert repr(ev) == '<Event at %#x unset>' % id(ev)
    ev.set()
    assert repr(ev) == '<Event at %#x set>' % id(ev)


# ---- locked() (3.14; fastmp has it on every version) ---------------------

@pytest.mark.parametrize('kind', ['Lock', 'RLock'])
def test_locked(impl, kind):
    skip_stdlib_before(impl, (3, 14), 'locked()')
    lock = getattr(impl.get_context('fork'), kind)()
    check_lock_locked(lock, recursive=kind == 'RLock')


@pytest.mark.parametrize('kind', ['Semaphore', 'BoundedSemaphore'])
def test_semaphore_locked_when_no_unit_is_left(impl, kind):
    skip_stdlib_before(impl, (3, 14), 'locked()')
    check_semaphore_locked(getattr(impl.get_context('fork'), kind))


def test_locked_seen_from_another_process(impl, ctx):
    skip_stdlib_before(impl, (3, 14), 'locked()')
    locks = [ctx.Lock(), ctx.RLock(), ctx.BoundedSemaphore(1)]
    seen = ctx.Array('b', len(locks))
    holding, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_until_told, args=(locks, seen, holding, go))
    p.start()
    try:
        assert holding.wait(30)
        assert list(seen) == [1, 1, 1]
        assert [lock.locked() for lock in locks] == [True, True, True]
        assert repr(locks[0]) == '<Lock(owner=SomeOtherProcess)>'
        assert repr(locks[1]) == '<RLock(SomeOtherProcess, nonzero)>'
    finally:
        go.set()
        p.join(30)
    assert p.exitcode == 0
    assert [lock.locked() for lock in locks] == [False, False, False]


# ---- RLock --------------------------------------------------------------

def test_rlock_methods(impl):
    rlock = impl.get_context('fork').RLock()
    assert rlock.acquire() and rlock.acquire() and rlock.acquire(timeout=0)
    assert _depth(rlock) == 3 and _is_mine(rlock)
    other = []
    t = threading.Thread(target=lambda: other.append(rlock.acquire(timeout=SHORT)))
    t.start()
    t.join()
    assert other == [False]

    def release_from_other_thread():
        try:
            rlock.release()
        except AssertionError:
            other.append('refused')
    t = threading.Thread(target=release_from_other_thread)
    t.start()
    t.join()
    assert other == [False, 'refused']
    for _ in range(3):
        rlock.release()
    assert not _is_mine(rlock) and _depth(rlock) == 0
    with pytest.raises(AssertionError):
        rlock.release()
    with rlock:
        with rlock:
            assert _depth(rlock) == 2


def test_child_does_not_own_parents_rlock(impl):
    ctx = impl.get_context('fork')
    rlock, out = ctx.RLock(), ctx.Semaphore(0)
    rlock.acquire()
    p = ctx.Process(target=_report_rlock_state, args=(rlock, out))
    p.start()
    p.join(30)
    rlock.release()
    assert p.exitcode == 0 and out.get_value() == 1


# ---- Semaphore and BoundedSemaphore -------------------------------------

def test_semaphore_methods(impl):
    ctx = impl.get_context('fork')
    sem = ctx.Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire(False)
    assert sem.acquire(False) is False
    assert sem.acquire(timeout=SHORT) is False
    assert sem.get_value() == 0
    sem.release()
    sem.release()
    sem.release()                       # unbounded: may pass the start value
    assert sem.get_value() == 3
    assert repr(sem) == '<Semaphore(value=3)>'
    with sem:
        assert sem.get_value() == 2
    assert ctx.Semaphore(0).acquire(False) is False


def test_bounded_semaphore(impl):
    bsem = impl.get_context('spawn').BoundedSemaphore(2)
    assert bsem.acquire(False)
    bsem.release()
    with pytest.raises(ValueError):
        bsem.release()
    assert repr(bsem) == '<BoundedSemaphore(value=2, maxvalue=2)>'
    assert bsem.get_value() == 2


def test_semaphore_wakes_blocked_thread(impl):
    sem = impl.get_context('fork').Semaphore(0)
    got = []
    t = threading.Thread(target=lambda: got.append(sem.acquire(timeout=10)))
    t.start()
    time.sleep(0.05)
    sem.release()
    t.join()
    assert got == [True]


def test_acquire_interrupted_by_signal(impl):
    lock = impl.get_context('fork').Lock()
    lock.acquire()

    def boom(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, boom)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_signal_does_not_shorten_or_lengthen_timeout(impl):
    lock = impl.get_context('fork').Lock()
    lock.acquire()
    hits = []
    old = signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.4) is False
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits and 0.35 <= elapsed < 2


# ---- Condition ----------------------------------------------------------

def test_condition_wait_timeout_and_ownership(impl):
    ctx = impl.get_context('fork')
    cond = ctx.Condition()
    with pytest.raises(AssertionError):
        cond.wait(0)
    with pytest.raises(AssertionError):
        cond.notify()
    with pytest.raises(AssertionError):
        cond.notify_all()
    with cond:
        t0 = time.monotonic()
        assert cond.wait(SHORT) is False
        assert time.monotonic() - t0 >= SHORT * 0.9
        assert cond.wait(timeout=0) is False
        cond.notify()                    # nobody waits: no effect
        cond.notify(3)
        cond.notify_all()
    assert cond.acquire() is True
    cond.release()


def test_condition_keeps_rlock_depth(impl):
    ctx = impl.get_context('fork')
    rlock = ctx.RLock()
    cond = ctx.Condition(rlock)
    with rlock, rlock, cond:
        assert _depth(rlock) == 3
        assert cond.wait(0.01) is False
        assert _depth(rlock) == 3 and _is_mine(rlock)


def _waiter_threads(cond, k, woken, already=0):
    def waiter():
        with cond:
            if cond.wait(10):
                woken.append(1)
    threads = [threading.Thread(target=waiter) for _ in range(k)]
    for t in threads:
        t.start()
    assert wait_for(lambda: _waiting(cond) == already + k, 10)
    return threads


@pytest.mark.parametrize('lock_type', ['RLock', 'Lock'])
def test_condition_notify_counts(impl, lock_type):
    ctx = impl.get_context('fork')
    cond = ctx.Condition(getattr(ctx, lock_type)())
    woken = []
    threads = _waiter_threads(cond, 5, woken)
    assert repr(cond).endswith(', 5)>')
    with cond:
        cond.notify()
    assert wait_for(lambda: len(woken) == 1, 10)
    time.sleep(0.05)
    assert len(woken) == 1
    with cond:
        cond.notify(2)
    assert wait_for(lambda: len(woken) == 3, 10)
    time.sleep(0.05)
    assert len(woken) == 3
    with cond:
        cond.notify_all()
    for t in threads:
        t.join()
    assert len(woken) == 5 and _waiting(cond) == 0


def test_notifier_that_waits_does_not_take_its_own_notification(impl):
    cond = impl.get_context('fork').Condition()
    woken = []
    threads = _waiter_threads(cond, 1, woken)
    with cond:
        cond.notify()
        assert cond.wait(SHORT) is False   # the notification was the other's
    threads[0].join()
    assert woken == [1]


def test_condition_wait_for(impl):
    ctx = impl.get_context('fork')
    cond = ctx.Condition()
    box = []
    with cond:
        assert cond.wait_for(lambda: 42) == 42
        t0 = time.monotonic()
        assert cond.wait_for(lambda: box, SHORT) == []
        assert time.monotonic() - t0 >= SHORT * 0.9

    def producer():
        time.sleep(0.05)
        with cond:
            box.append('x')
            cond.notify()
    t = threading.Thread(target=producer)
    t.start()
    with cond:
        assert cond.wait_for(lambda: box, 10) == ['x']
    t.join()


def test_condition_notify_reaches_other_process(ctx):
    cond = ctx.Condition()
    with cond:
        p = ctx.Process(target=_notify_after_wait, args=(cond,))
        p.start()
        assert cond.wait(30) is True
    p.join(30)
    assert p.exitcode == 0


# ---- Event --------------------------------------------------------------

def test_event_methods(impl):
    ev = impl.get_context('fork').Event()
    assert ev.is_set() is False
    t0 = time.monotonic()
    assert ev.wait(SHORT) is False
    assert time.monotonic() - t0 >= SHORT * 0.9
    ev.set()
    assert ev.is_set() is True
    assert ev.wait() is True and ev.wait(0) is True
    ev.set()
    ev.clear()
    assert ev.is_set() is False and ev.wait(0) is False
    threading.Timer(0.05, ev.set).start()
    assert ev.wait(10) is True


# ---- Barrier ------------------------------------------------------------

def test_barrier_with_threads(impl):
    barrier = impl.get_context('fork').Barrier(3, timeout=30)
    assert barrier.parties == 3 and barrier.n_waiting == 0 and not barrier.broken
    indices = []
    lock = threading.Lock()

    def party():
        i = barrier.wait()
        with lock:
            indices.append(i)
    threads = [threading.Thread(target=party) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_for(lambda: barrier.n_waiting == 2, 10)
    indices.append(barrier.wait())
    for t in threads:
        t.join()
    assert sorted(indices) == [0, 1, 2]


def test_barrier_action_abort_reset(impl):
    ctx = impl.get_context('fork')
    calls = []
    barrier = ctx.Barrier(1, action=lambda: calls.append(1))
    assert barrier.wait() == 0 and calls == [1]
    barrier = ctx.Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(SHORT)              # nobody else comes: breaks
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken
    barrier.abort()
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()


def test_objects_shared_with_child(ctx):
    barrier, lock, done = ctx.Barrier(2, timeout=30), ctx.Lock(), ctx.Semaphore(0)
    rlock, sem, cond, event = ctx.RLock(), ctx.Semaphore(1), ctx.Condition(), ctx.Event()
    with cond:
        p = ctx.Process(target=_use_everything,
                        args=(lock, rlock, sem, cond, event, barrier, done))
        p.start()
        for _ in range(3):
            assert done.acquire(timeout=30)
        assert sem.get_value() == 0
        event.set()
        assert barrier.wait() in (0, 1)
        assert cond.wait(30) is True
    p.join(30)
    assert p.exitcode == 0


# ---- dying holders, pickling, children ----------------------------------

def test_holder_killed_does_not_wedge_waiter_with_timeout(ctx):
    lock, holding = ctx.Lock(), ctx.Event()
    p = ctx.Process(target=_hold_forever, args=(lock, holding))
    p.start()
    assert holding.wait(30)
    p.kill()
    p.join()
    t0 = time.monotonic()
    assert lock.acquire(timeout=SHORT) is False
    assert time.monotonic() - t0 < 5
    # the lock is still usable by whoever releases it
    lock.release()
    assert lock.acquire(timeout=1) is True


@pytest.mark.parametrize('make', ['Lock', 'RLock', 'Semaphore', 'BoundedSemaphore',
                                  'Condition', 'Event', 'Barrier'])
def test_pickling_outside_process_start_raises(impl, make):
    args = (2,) if make == 'Barrier' else ()
    obj = getattr(impl.get_context('spawn'), make)(*args)
    with pytest.raises(RuntimeError):
        pickle.dumps(obj)


def test_fork_lock_refused_by_spawned_child(impl):
    skip_stdlib_before(impl, (3, 11), 'the fork-context check of SemLock')
    lock = impl.get_context('fork').Lock()
    p = impl.get_context('spawn').Process(target=_acquire_with_timeout, args=(lock, None))
    with pytest.raises(RuntimeError, match='A SemLock created in a fork'):
        p.start()


def test_lock_timeout_in_child(ctx):
    lock, out = ctx.Lock(), ctx.Semaphore(0)
    lock.acquire()
    p = ctx.Process(target=_acquire_with_timeout, args=(lock, out))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and out.get_value() == 0
    lock.release()
    p = ctx.Process(target=_acquire_with_timeout, args=(lock, out))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and out.get_value() == 1


# ---- the raw SemLock of _multiprocessing ---------------------------------

@pytest.fixture(params=['fastmp', 'stdlib'])
def raw(request):
    """fastmp's `_multiprocessing` stand-in, then the standard module."""
    if request.param == 'stdlib':
        import _multiprocessing as std
        return std
    return _multiprocessing


def test_raw_semlock_by_name(raw):
    class Sub(raw.SemLock):
        pass
    name = '/fmp-%s-rawtest' % os.getpid()
    s = Sub(synchronize.SEMAPHORE, 2, 5, name, False)
    try:
        assert type(s) is Sub and s.name == name and s.kind == 1 and s.maxvalue == 5
        with pytest.raises(FileExistsError):
            raw.SemLock(1, 0, 1, name, False)
        twin = Sub._rebuild(s.handle, s.kind, s.maxvalue, s.name)
        assert type(twin) is Sub
        assert twin.acquire(False) and s._get_value() == 1 and not s._is_zero()
        assert s.acquire(False) and twin._is_zero()
        s.release()
        s._after_fork()
        assert s._count() == 0
    finally:
        raw.sem_unlink(name)
    with pytest.raises(FileNotFoundError):
        raw.sem_unlink(name)
    with pytest.raises(FileNotFoundError):
        Sub._rebuild(0, 1, 1, name)


def test_raw_semlock_kind_and_name(raw):
    with pytest.raises(ValueError):
        raw.SemLock(7, 1, 1, 'x', True)
    assert raw.SemLock(0, 1, 1, 'x', True).name is None


# ---- contention ---------------------------------------------------------

def _bump(lock, counter, times):
    for _ in range(times):
        with lock:
            value = int.from_bytes(counter[:8], 'little')
            counter[:8] = (value + 1).to_bytes(8, 'little')


@pytest.mark.parametrize('lock_type', ['Lock', 'RLock'])
def test_mutual_exclusion_under_contention(impl, lock_type):
    ctx = impl.get_context('fork')
    lock, counter = getattr(ctx, lock_type)(), mmap.mmap(-1, 8)
    procs = [ctx.Process(target=_bump, args=(lock, counter, 3000)) for _ in range(3)]
    for p in procs:
        p.start()
    _bump(lock, counter, 3000)
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert int.from_bytes(counter[:8], 'little') == 12000


def _consume(cond, box, taken, count):
    for _ in range(count):
        with cond:
            assert cond.wait_for(lambda: int.from_bytes(box[:4], 'little') > 0, 30)
            box[:4] = (int.from_bytes(box[:4], 'little') - 1).to_bytes(4, 'little')
            taken.release()


def test_condition_handoff_loses_nothing(impl):
    ctx = impl.get_context('fork')
    cond, box, taken = ctx.Condition(), mmap.mmap(-1, 4), ctx.Semaphore(0)
    consumers = [ctx.Process(target=_consume, args=(cond, box, taken, 300)) for _ in range(2)]
    for p in consumers:
        p.start()
    for _ in range(600):
        with cond:
            box[:4] = (int.from_bytes(box[:4], 'little') + 1).to_bytes(4, 'little')
            cond.notify()
    for p in consumers:
        p.join(60)
    assert [p.exitcode for p in consumers] == [0, 0]
    assert taken.get_value() == 600 and int.from_bytes(box[:4], 'little') == 0


# ==== fastmp only: README deviations and internals ==========================

def test_condition_skips_waiter_killed_while_waiting():
    """README "Condition": notify() skips a waiter whose process died (the
    standard notify() blocks forever on it)."""
    ctx = fastmp.get_context('fork')
    cond, started = ctx.Condition(), ctx.Semaphore(0)
    p = ctx.Process(target=_wait_on_condition, args=(cond, started))
    p.start()
    assert started.acquire(timeout=10)
    assert wait_for(lambda: _waiting(cond) == 1, 10)
    p.kill()
    p.join()
    woken = []
    threads = _waiter_threads(cond, 1, woken, already=1)
    with cond:
        cond.notify()        # must reach the live thread, not the dead process
    threads[0].join(10)
    assert woken == [1]


def test_barrier_of_no_parties_raises():
    """README "Condition": Barrier(0) raises ValueError (the standard one is
    made, and breaks at its first wait)."""
    with pytest.raises(ValueError):
        fastmp.get_context('fork').Barrier(0)


def test_bad_semaphore_value_and_name_raise_value_error():
    """Bad input gets a clear exception: a negative Semaphore value and a
    name with an inner slash raise ValueError (the standard package passes
    them to sem_open and raises OSError EINVAL)."""
    with pytest.raises(ValueError):
        fastmp.get_context('fork').Semaphore(-1)
    with pytest.raises(ValueError):
        _multiprocessing.SemLock(1, 1, 1, 'a/b', False)


def test_rebuild_without_name_refuses_a_handle():
    """Internal: an unnamed SemLock is rebuilt only from inherited memory; a
    bare handle is never taken for an address (the standard package
    dereferences it)."""
    anon = _multiprocessing.SemLock(0, 1, 1, 'x', True)
    with pytest.raises(ValueError):
        _multiprocessing.SemLock._rebuild(anon.handle, 0, 1, None)


def test_forked_child_does_not_own_parents_lock():
    """Internal (the fork tracker): a raw os.fork() child does not own a
    lock its parent holds (the standard package resets this only in a
    child started by Process)."""
    rlock = fastmp.get_context('fork').RLock()
    rlock.acquire()
    pid = os.fork()
    if pid == 0:
        ok = (not _is_mine(rlock) and _depth(rlock) == 0
              and rlock.acquire(timeout=0.05) is False)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    rlock.release()
    assert os.waitstatus_to_exitcode(status) == 0


def test_named_objects_unlinked_when_collected():
    """README "Cleanup survives kill -9": fastmp's named objects are called
    fmp-<pid of the program>-<random>, and go when collected."""
    before = _shm_names()
    ctx = fastmp.get_context('spawn')
    objs = [ctx.Lock(), ctx.RLock(), ctx.Semaphore(), ctx.Condition(), ctx.Event()]
    names = _shm_names() - before
    assert len(names) == 7            # Condition and Event each add a lock
    assert all(n.startswith('sem.fmp-') for n in names)
    del objs
    gc.collect()
    assert _shm_names() - before == set()


def test_fork_context_objects_have_no_name():
    """Internal: a 'fork' context's objects live in anonymous shared memory
    (the standard package makes a named semaphore and unlinks it)."""
    before = _shm_names()
    ctx = fastmp.get_context('fork')
    objs = [ctx.Lock(), ctx.Condition(), ctx.Event(), ctx.Barrier(2)]
    assert objs[0].name is None and objs[1].name is None
    assert _shm_names() == before


_KILLED_SCRIPT = r'''
import os, sys, time
import fastmp
ctx = fastmp.get_context("spawn")
keep = [ctx.Lock(), ctx.Condition(), ctx.Semaphore(3)]
print(" ".join(o.name for o in keep), flush=True)
time.sleep(60)
'''


def test_no_leak_after_sigkill_of_program():
    """README "Cleanup survives kill -9 of the whole program": named
    semaphores are unlinked when the whole process group is SIGKILLed."""
    proc = subprocess.Popen([sys.executable, '-c', _KILLED_SCRIPT], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        names = proc.stdout.readline().split()
        assert len(names) == 3
        files = {'sem.' + n.lstrip('/') for n in names}
        assert files <= set(os.listdir('/dev/shm'))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert wait_for(lambda: not files & set(os.listdir('/dev/shm')), 20)


def test_multiprocessing_module_surface():
    """Internal: fastmp's `_multiprocessing` stand-in has the standard
    module's SemLock methods, constants and flags."""
    import _multiprocessing as std
    assert set(dir(std.SemLock)) - set(dir(_multiprocessing.SemLock)) <= {'__getstate__'}
    assert _multiprocessing.SemLock.SEM_VALUE_MAX == std.SemLock.SEM_VALUE_MAX
    assert _multiprocessing.flags == std.flags
    assert synchronize.SEM_VALUE_MAX == std.SemLock.SEM_VALUE_MAX


# ---- unnamed locks: slab slots (internal) --------------------------------

def _mappings():
    with open('/proc/self/maps') as f:
        return sum(1 for _ in f)


def test_many_fork_locks_share_mappings():
    """Internal: unnamed locks are slots of a shared slab, not a mapping
    each."""
    ctx = fastmp.get_context('fork')
    before = _mappings()
    locks = [ctx.Lock() for _ in range(20000)]
    assert _mappings() - before < 50
    assert all(lock.acquire(False) for lock in locks[::997])
    assert len({lock.handle for lock in locks}) == len(locks)


def test_slot_freed_after_fork_is_not_reused():
    """Internal: a slab slot freed after a fork may still be in use by the
    child, so it is not handed out again."""
    ctx = fastmp.get_context('fork')
    lock = ctx.Lock()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)               # the parent has dropped and re-made locks
        ok = lock.acquire(False) and lock._get_value() == 0
        os._exit(0 if ok else 1)
    os.close(r)
    old_handle = lock.handle
    del lock
    fresh = [ctx.Lock() for _ in range(64)]
    for other in fresh:
        other.acquire()
    os.write(w, b'x')
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert old_handle not in {other.handle for other in fresh}
    assert os.waitstatus_to_exitcode(status) == 0


def test_slot_reused_when_no_fork_happened():
    """Internal: without a fork in between, a freed slot is reused, zeroed
    and reset."""
    ctx = fastmp.get_context('fork')
    lock = ctx.Lock()
    lock.acquire()
    handle = lock.handle
    del lock
    again = ctx.Lock()
    assert again.handle == handle and again.acquire(False)
