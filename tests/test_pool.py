"""Pool and ThreadPool: the standard API and behaviour, run against both
packages; then, fastmp only, worker death of every kind (the README's "Pool
workers that die": WorkerLostError, the pool keeps serving), Ctrl-C,
orphaned workers, imap's buffersize and a large ordered run.  The contract
every pool dispatcher keeps is in test_pool_dispatchers.py."""
import ctypes
import gc
import importlib
import itertools
import os
import pickle
import signal
import sys
import textwrap
import time

import pytest

import fastmp
import fastmp.pool
from support import drain, run_python, wait_for

# what pickling a lambda or a local function raises (the type differs
# between versions)
PICKLING_ERRORS = (pickle.PicklingError, AttributeError)


# ---- worker functions (module level: spawn and forkserver import them) -----

def square(x):
    return x * x


def mul(a, b):
    return a * b


def ident(x):
    return x


def sleep_then(x, seconds=0.2):
    time.sleep(seconds)
    return x


def fail_with(message):
    raise KeyError(message)  # the line the remote traceback must show


def unpicklable():
    return lambda: 1


def getpid(_=None):
    return os.getpid()


def exit_hard(code):
    os._exit(code)


def segfault():
    return ctypes.string_at(0)


def slow_unless_last(x):
    time.sleep(0.5 if x < 6 else 0)
    return x


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


_INIT_VALUE = None


def set_init_value(value):
    global _INIT_VALUE
    _INIT_VALUE = value


def read_init_value(_=None):
    return _INIT_VALUE


class Scaler:
    """Task functions that are not pickled by name: a bound method and a
    callable instance."""

    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        return x * self.factor

    def __call__(self, x):
        return x + self.factor


# ---- every method, both implementations agreeing ---------------------------

def test_every_method_agrees_with_stdlib(ctx):
    with ctx.Pool(2) as pool:
        assert pool.apply(square, (7,)) == 49
        assert pool.apply(mul, (), {"a": 3, "b": 4}) == 12
        assert pool.apply_async(square, (8,)).get(timeout=30) == 64
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]
        assert pool.map_async(square, range(5)).get(timeout=30) == [0, 1, 4, 9, 16]
        pairs = list(zip(range(20), range(20, 0, -1)))
        assert pool.starmap(mul, pairs) == [a * b for a, b in pairs]
        assert pool.starmap_async(mul, pairs, 3).get(timeout=30) == [a * b for a, b in pairs]
        assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
        assert list(pool.imap(square, range(50), chunksize=8)) == [x * x for x in range(50)]
        assert sorted(pool.imap_unordered(square, range(50), 4)) == [x * x for x in range(50)]
        assert pool.map(square, []) == []
        assert list(pool.imap(square, [])) == []
        assert list(pool.imap_unordered(square, iter([]))) == []
        # a generator argument (no len) for imap is fed in the background
        assert list(pool.imap(square, (x for x in range(30)))) == [x * x for x in range(30)]
        result = pool.apply_async(sleep_then, (5, 0.3))
        assert not result.ready()
        result.wait(timeout=30)
        assert result.ready() and result.successful() and result.get() == 5



def test_task_functions_of_every_kind(ctx):
    # plain functions and module-level builtins are pickled once and kept
    # by the workers; the others travel with each task
    import functools
    with ctx.Pool(2) as pool:
        for _ in range(3):
            assert pool.apply(square, (3,)) == 9
            assert pool.apply(abs, (-4,)) == 4
            assert pool.apply(functools.partial(mul, 5), (6,)) == 30
            assert pool.apply(Scaler(2).scale, (7,)) == 14
            assert pool.apply(Scaler(3).scale, (7,)) == 21
            assert pool.apply(Scaler(10), (1,)) == 11
        assert pool.map(Scaler(4).scale, range(5)) == [0, 4, 8, 12, 16]
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
        assert pool.starmap(divmod, [(7, 2), (9, 4)]) == [(3, 1), (2, 1)]
        assert list(pool.imap(Scaler(1), range(4))) == [1, 2, 3, 4]



class Point:
    def __init__(self, x):
        self.x = x

    def __repr__(self):
        return 'Point(%r)' % self.x



def shared_pair(x):
    inner = [x]
    return (inner, inner)



def shared_text(x):
    text = 'z' * 100 + str(x)
    return [text, text]



# results of every shape: plain data (written without a Pickler by the
# worker and read without an Unpickler by the parent) and data that only
# the pickle module writes faithfully (custom classes, sets, ints past 64
# bits, lone surrogates, strings past the quick writer's limit)
RESULT_SHAPES = [
    0, 255, 65536, 2 ** 31, -2 ** 31 - 1, 2 ** 39, -2 ** 39 - 1, 2 ** 47,
    -2 ** 55, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1, 10 ** 40,
    1.5, -0.0, 'é€😀', 'x' * 300, b'raw', None, True, (1, 'a', [2.5]),
    {'k': [1, {2: 3}]}, [[], ()], {1, 2}, Point(3), '\ud800', 'y' * (17 * 1024 * 1024),
]



def shape_at(i):
    return RESULT_SHAPES[i]



def test_results_of_every_shape(ctx):
    expected = [repr(v) for v in RESULT_SHAPES]
    with ctx.Pool(2) as pool:
        for chunksize in (1, 3, len(RESULT_SHAPES)):
            got = pool.map(shape_at, range(len(RESULT_SHAPES)), chunksize)
            assert [repr(v) for v in got] == expected
            assert [type(v) for v in got] == [type(v) for v in RESULT_SHAPES]
        assert [repr(v) for v in pool.imap(shape_at, range(len(RESULT_SHAPES)))] == expected
        assert pool.apply(shape_at, (2,)) == 65536
        # a list met twice keeps its identity (the pickle module's memo)
        first, second = pool.map(shared_pair, range(4))[3]
        assert first is second and first == [3]
        # so does a long string (written once)
        first, second = pool.map(shared_text, range(4))[3]
        assert first is second and first == 'z' * 100 + '3'



def cube_unless_13(x):
    if x == 13_013:
        raise ValueError("no cube for %d" % x)
    return x ** 3



def test_large_plain_results_in_order(ctx):
    n = 100_000
    with ctx.Pool(2) as pool:
        assert pool.map(cube_unless_13, range(14_000, 14_000 + n)) == [
            x ** 3 for x in range(14_000, 14_000 + n)]
        # a failure in the middle of a chunk fails the map, as in the standard package
        with pytest.raises(ValueError, match="no cube for 13013"):
            pool.map(cube_unless_13, range(n))
        assert pool.map(square, range(10)) == [x * x for x in range(10)]



def test_pool_lifecycle_errors(ctx):
    pool = ctx.Pool(1)
    assert len(pool._pool) == 1
    with pytest.raises(ValueError):
        pool.join()                      # still running
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(square, (1,))
    with pytest.raises(ValueError):
        pool.map(square, [1])
    with pytest.raises(ValueError):
        with pool:
            pass
    pool.join()
    with pytest.raises(ValueError):
        ctx.Pool(0)
    with pytest.raises(ValueError):
        ctx.Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError):
        ctx.Pool(1, initializer=1)



@pytest.mark.parametrize("start_method", ["fork"])
def test_remote_exception_and_traceback(ctx):
    with ctx.Pool(1) as pool:
        with pytest.raises(KeyError) as info:
            pool.apply(fail_with, ("boom",))
        cause = info.value.__cause__
        assert type(cause).__name__ == "RemoteTraceback"
        assert "the line the remote traceback must show" in cause.tb
        with pytest.raises(type(info.value)):
            pool.map(fail_with, ["a", "b"])
        pool_module = sys.modules[type(pool).__module__]
        with pytest.raises(pool_module.MaybeEncodingError) as enc:
            pool.apply(unpicklable)
        assert enc.value.exc and enc.value.value
        assert pool.apply(square, (3,)) == 9      # the worker survived



@pytest.mark.parametrize("start_method", ["fork"])
def test_callbacks_run_in_parent(ctx):
    import threading
    seen, errors = [], []
    with ctx.Pool(2) as pool:
        pool.apply_async(square, (4,), callback=seen.append).wait(30)
        pool.map_async(square, [1, 2], callback=seen.append).wait(30)
        pool.apply_async(fail_with, ("x",), error_callback=errors.append).wait(30)
        pool.map_async(int, ["a"], error_callback=errors.append).wait(30)
        threads = []
        pool.apply_async(getpid, callback=lambda pid: threads.append(
            (pid, os.getpid(), threading.current_thread() is threading.main_thread()))).wait(30)
    assert seen == [16, [1, 4]]
    assert isinstance(errors[0], KeyError) and isinstance(errors[1], ValueError)
    worker_pid, callback_pid, in_main = threads[0]
    assert worker_pid != callback_pid == os.getpid() and not in_main



@pytest.mark.parametrize("start_method", ["fork"])
def test_timeouts(ctx):
    with ctx.Pool(1) as pool:
        result = pool.apply_async(sleep_then, (1, 2.0))
        started = time.monotonic()
        with pytest.raises(ctx.TimeoutError):
            result.get(timeout=0.2)
        assert time.monotonic() - started < 1.5
        it = pool.imap(sleep_then, [1, 2])
        with pytest.raises(ctx.TimeoutError):
            it.next(timeout=0.05)
        assert result.get(timeout=30) == 1
        with pytest.raises(ValueError):
            pool.apply_async(sleep_then, (1, 1.0)).successful()



def test_maxtasksperchild_replaces_workers(ctx):
    with ctx.Pool(2, maxtasksperchild=3) as pool:
        first = {w.pid for w in pool._pool}
        pids = [pool.apply_async(getpid).get(timeout=60) for _ in range(12)]
        assert len(set(pids)) >= 4
        assert wait_for(lambda: len(pool._pool) == 2 and
                        all(w.is_alive() for w in pool._pool), timeout=30)
        assert {w.pid for w in pool._pool} != first
        assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]



def test_maxtasksperchild_with_queued_tasks(ctx):
    # each worker's tasks arrive queued, several per read; results that a
    # worker holds back while it has queued tasks still reach the parent
    # when its budget ends the loop
    with ctx.Pool(2, maxtasksperchild=15) as pool:
        assert pool.map(ident, range(50), chunksize=1) == list(range(50))
        assert list(pool.imap(ident, range(40))) == list(range(40))



def test_quick_result_not_held_behind_a_long_task(ctx):
    # a worker sends the results of quick tasks together only while the
    # next one runs the same (quick) function: a result queued before a
    # long task of another function comes without waiting for it
    with ctx.Pool(1) as pool:
        quick = [pool.apply_async(ident, (i,)) for i in range(50)]
        pool.apply_async(sleep_then, (0, 60))
        assert [r.get(timeout=30) for r in quick] == list(range(50))



def test_callback_with_no_thread_waiting(ctx):
    import threading
    with ctx.Pool(2) as pool:
        for i in range(20):
            # apply() reads its result itself; the callback of the next
            # task must come although no thread waits in the pool
            assert pool.apply(square, (i,)) == i * i
            done = threading.Event()
            pool.apply_async(square, (i,), callback=lambda _: done.set())
            assert done.wait(30)



def test_threads_waiting_on_one_result_all_get_it(impl):
    # one of them collects the job from the dispatcher; the others must
    # get its value, not a WorkerLostError for a job they find gone
    import threading
    with impl.get_context("fork").Pool(2) as pool:
        for i in range(40):
            result = pool.apply_async(sleep_then, (i, 0.005))
            got = []

            def wait():
                try:
                    got.append(result.get(30))
                except Exception as e:
                    got.append(e)
            threads = [threading.Thread(target=wait) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert got == [i] * 6



def test_initializer(ctx):
    with ctx.Pool(2, initializer=set_init_value, initargs=(42,)) as pool:
        assert pool.map(read_init_value, range(4)) == [42] * 4



@pytest.mark.parametrize("start_method", ["fork"])
def test_imap_input_failures_come_from_next(ctx):
    # imap reads and pickles its input in C: a non-iterable argument and an
    # item that cannot be pickled fail at next(), after the items before;
    # with chunksize 1 the items after an unpicklable one still come
    with ctx.Pool(2) as pool:
        it = pool.imap(square, 5)
        with pytest.raises(TypeError):
            next(it)
        it = pool.imap(ident, [1, 2, lambda: 3, 4])
        assert [next(it), next(it)] == [1, 2]
        with pytest.raises(PICKLING_ERRORS):
            next(it)
        assert list(it) == [4]
        items = (x for x in [1, lambda: 2, 3, lambda: 4])
        assert sorted(map(str, drain(pool.imap_unordered(ident, items), PICKLING_ERRORS))) == \
            ["1", "3", "error", "error"]
        for chunksize in (1, 3):
            assert sorted(pool.imap_unordered(square, iter(range(20)), chunksize)) == \
                [x * x for x in range(20)]



@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dropped_pool_leaves_no_process(ctx):
    def make():
        pool = ctx.Pool(2)
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        return [w.pid for w in pool._pool]
    with pytest.warns(ResourceWarning):
        pids = make()
        gc.collect()

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=10)



def test_threadpool_api(impl):
    ThreadPool = importlib.import_module(impl.__name__ + ".pool").ThreadPool
    with ThreadPool(3) as pool:
        assert pool.map(lambda x: x + 1, range(10)) == list(range(1, 11))
        assert pool.apply(lambda a, b: a - b, (5, 3)) == 2
        assert list(pool.imap(str, range(5), chunksize=2)) == ["0", "1", "2", "3", "4"]
        assert sorted(pool.imap_unordered(abs, range(-3, 3))) == [0, 1, 1, 2, 2, 3]
        assert pool.starmap(mul, [(2, 3), (4, 5)]) == [6, 20]
        seen = []
        pool.apply_async(abs, (-4,), callback=seen.append).wait(10)
        assert seen == [4]
        with pytest.raises(KeyError) as info:
            pool.apply(fail_with, ("thread",))
        assert info.value.__cause__ is None       # not wrapped for threads
        with pytest.raises(impl.TimeoutError):
            pool.apply_async(time.sleep, (0.5,)).get(timeout=0.05)
        assert len(pool._pool) == 3
    pool.join()


# ==== fastmp only: README "Pool workers that die" ===========================

@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork"])
def test_failing_initializer_does_not_hang(fctx):
    """README "Pool workers that die": a task of a pool whose initializer
    fails fails with WorkerLostError instead of waiting for ever."""
    pool = fctx.Pool(1, initializer=failing_initializer)
    result = pool.apply_async(square, (2,))
    with pytest.raises(fastmp.pool.WorkerLostError):
        result.get(timeout=30)
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 5



def _kill_one_busy_worker(pool):
    victim = pool._pool[0].pid
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    return victim



@pytest.mark.timeout(90)
def test_sigkill_mid_map(fctx):
    """README "Pool workers that die": a worker killed with SIGKILL fails its
    tasks with WorkerLostError naming its pid and signal; the pool goes on."""
    with fctx.Pool(2) as pool:
        pool.map(square, range(4))                       # workers up
        result = pool.map_async(sleep_then, range(8), chunksize=1)
        victim = _kill_one_busy_worker(pool)
        with pytest.raises(fastmp.pool.WorkerLostError) as info:
            result.get(timeout=30)
        assert info.value.pid == victim
        assert info.value.exitcode == -signal.SIGKILL
        assert str(victim) in str(info.value) and "SIGKILL" in str(info.value)
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert wait_for(lambda: len(pool._pool) == 2, timeout=30)
        assert victim not in [w.pid for w in pool._pool]



@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_os_exit_in_task(fctx):
    """README "Pool workers that die": os._exit in a task fails it with
    WorkerLostError carrying the exit code."""
    with fctx.Pool(2) as pool:
        with pytest.raises(fastmp.pool.WorkerLostError) as info:
            pool.apply(exit_hard, (7,))
        assert info.value.exitcode == 7
        it = pool.imap(exit_hard, [3])
        with pytest.raises(fastmp.pool.WorkerLostError):
            next(it)
        assert pool.apply(square, (5,)) == 25



@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_segfault_in_task(fctx):
    """README "Pool workers that die": a segfault in a task fails it with
    WorkerLostError."""
    with fctx.Pool(1) as pool:
        with pytest.raises(fastmp.pool.WorkerLostError) as info:
            pool.apply(segfault)
        # under ASan (make sanitize) the crash is reported, then aborts
        crash_signals = {signal.SIGSEGV}
        if os.environ.get("FASTMP_SANITIZED"):
            crash_signals.add(signal.SIGABRT)
        assert -info.value.exitcode in crash_signals
        assert pool.map(square, [1, 2, 3]) == [1, 4, 9]



@pytest.mark.parametrize("start_method", ["fork"])
def test_other_tasks_survive_a_death(fctx):
    """README "Pool workers that die": only the tasks the dead worker held
    fail; the others finish."""
    with fctx.Pool(2) as pool:
        good = [pool.apply_async(sleep_then, (i, 0.05)) for i in range(10)]
        bad = pool.apply_async(exit_hard, (1,))
        assert [r.get(timeout=60) for r in good] == list(range(10))
        with pytest.raises(fastmp.pool.WorkerLostError):
            bad.get(timeout=60)



_CHANNEL_FD = None



def remember_channel():
    """Initializer: note the worker's socket to the parent (worker()'s
    `channel`), for a task that writes half a result frame on it."""
    global _CHANNEL_FD
    _CHANNEL_FD = sys._getframe(1).f_locals["channel"].fd



def die_mid_result(x):
    # for item 0: the header of a large result (kind RESULT, status QUICK,
    # 1 MiB of payload), a tenth of that payload, then death
    if x != 0:
        return x
    import struct
    os.write(_CHANNEL_FD, struct.pack("=IIQQQ", 8, 3, 0, 0, 1 << 20) + b"\0" * 100_000)
    os._exit(7)



@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_death_in_the_middle_of_a_large_result(fctx):
    """README "Pool workers that die": a worker dying in the middle of
    sending a large result fails that chunk alone, and the channel stays
    in step."""
    with fctx.Pool(1, initializer=remember_channel) as pool:
        assert pool.map(square, range(50_000)) == [x * x for x in range(50_000)]
        with pytest.raises(fastmp.pool.WorkerLostError) as info:
            pool.map(die_mid_result, range(4), chunksize=2)    # chunk 1 runs, unasked
        assert info.value.exitcode == 7
        assert pool.map(square, range(50_000)) == [x * x for x in range(50_000)]



@pytest.mark.parametrize("start_method", ["fork"])
def test_terminate_while_tasks_run(fctx):
    """README "Pool workers that die": tasks cut short by terminate() fail
    with WorkerLostError instead of never finishing."""
    pool = fctx.Pool(2)
    result = pool.map_async(time.sleep, [30] * 100, chunksize=1)
    time.sleep(0.2)
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 2
    with pytest.raises(fastmp.pool.WorkerLostError):
        result.get(timeout=5)


# ==== fastmp only: Ctrl-C, orphaned workers, buffersize, a large run ========

_CTRL_C_PROGRAM = textwrap.dedent("""
    import os, signal, sys, threading, time
    sys.path.insert(0, %(tests)r)
    import fastmp
    from test_pool import sleep_then
    if __name__ == "__main__":
        pool = fastmp.get_context(%(method)r).Pool(2)
        pool.apply(sleep_then, (0, 0))
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            pool.map(time.sleep, [30] * 4, chunksize=1)
        except KeyboardInterrupt:
            print("interrupted after %%.1f s" %% (time.monotonic() - started))
        started = time.monotonic()
        pool.terminate()
        pool.join()
        print("terminated in %%.1f s" %% (time.monotonic() - started))
""")



@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_ctrl_c_while_waiting(start_method):
    """Internal: Ctrl-C interrupts a map waiting on long tasks at once, and
    terminate() then ends the pool within a few seconds."""
    program = _CTRL_C_PROGRAM % {"tests": os.path.dirname(__file__), "method": start_method}
    out = run_python("-c", program, timeout=50)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("interrupted after ") and float(lines[0].split()[2]) < 3
    assert lines[1].startswith("terminated in ") and float(lines[1].split()[2]) < 3



_ORPHAN_PROGRAM = textwrap.dedent("""
    import os, sys, time
    import fastmp
    if __name__ == "__main__":
        pool = fastmp.get_context(%(method)r).Pool(2, maxtasksperchild=2)
        for i in range(6):                      # some workers replaced
            pool.apply(abs, (i,))
        deadline = time.monotonic() + 10        # replacements start async
        while len(pool._pool) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(" ".join(str(w.pid) for w in pool._pool), flush=True)
        os._exit(0)                             # no clean-up at all
""")



@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_exit_when_parent_dies(start_method):
    """Internal: the workers of a parent that exits without any clean-up
    (os._exit) exit too, seeing end of file on their channel."""
    out = run_python("-c", _ORPHAN_PROGRAM % {"method": start_method}, timeout=60)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=10), pids



@pytest.mark.parametrize("start_method", ["fork"])
def test_imap_buffersize_bounds_read_ahead(fctx):
    """fastmp only: imap(buffersize=) bounds how far the input is read ahead
    (an extension the standard package does not have; not in the README)."""
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i
    with fctx.Pool(2) as pool:
        it = pool.imap(square, endless(), buffersize=4)
        assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
        assert len(produced) <= 10 + 4 + 1
        unordered = pool.imap_unordered(square, range(1000), chunksize=2, buffersize=3)
        assert sorted(unordered) == [x * x for x in range(1000)]
        with pytest.raises(ValueError):
            pool.imap(square, range(3), buffersize=0)
        # an item that cannot be pickled fails alone, within the bound too
        it = pool.imap(ident, [1, lambda: 2, 3, 4, 5], buffersize=2)
        assert drain(it, PICKLING_ERRORS) == [1, "error", 3, 4, 5]



@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["fork"])
def test_100k_tiny_tasks_in_order(fctx):
    """Internal (the C dispatcher's batching of quick results): 100,000
    tiny tasks come back whole and in order."""
    n = 100_000
    with fctx.Pool(2) as pool:
        assert list(pool.imap(ident, range(n))) == list(range(n))
        assert pool.map(ident, range(n), chunksize=1)[-3:] == [n - 3, n - 2, n - 1]
