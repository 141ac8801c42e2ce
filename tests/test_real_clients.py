"""A real client of multiprocessing: concurrent.futures.ProcessPoolExecutor
handed a fastmp context (mp_context=fastmp.get_context(m)), without
install(), so the executor's own `import multiprocessing` is the standard
package and the two meet in one program.  Every start method."""
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import pytest

import fastmp

pytestmark = pytest.mark.timeout(90)

HAS_MAX_TASKS = sys.version_info >= (3, 11)


def square(x):
    return x * x


def fail(message):
    raise ValueError(message)


def which_process(_=None):
    """The worker's pid and its process class, as fastmp sees it."""
    proc = fastmp.current_process()
    return os.getpid(), type(proc).__module__, proc.name


def die(_=None):
    os._exit(3)


_initialized = []


def remember(tag):
    _initialized.append(tag)


def initialized(_=None):
    return list(_initialized)


@pytest.fixture
def executor_ctx(start_method):
    return fastmp.get_context(start_method)


def test_submit_runs_in_fastmp_workers(executor_ctx):
    with ProcessPoolExecutor(2, mp_context=executor_ctx) as pool:
        assert pool.submit(square, 7).result(timeout=30) == 49
        pid, module, name = pool.submit(which_process).result(timeout=30)
    assert pid != os.getpid()
    # the worker is a fastmp process, started by the fastmp context
    assert module.startswith("fastmp.")
    assert name != "MainProcess"


def test_map_keeps_order_and_chunks(executor_ctx):
    with ProcessPoolExecutor(2, mp_context=executor_ctx) as pool:
        assert list(pool.map(square, range(50), timeout=60)) == [x * x for x in range(50)]
        assert list(pool.map(square, range(50), chunksize=7, timeout=60)) == \
            [x * x for x in range(50)]
        futures = [pool.submit(square, x) for x in range(20)]
        assert sorted(f.result() for f in as_completed(futures, timeout=60)) == \
            [x * x for x in range(20)]


def test_exceptions_come_back_with_the_remote_traceback(executor_ctx):
    with ProcessPoolExecutor(2, mp_context=executor_ctx) as pool:
        future = pool.submit(fail, "bad input")
        error = future.exception(timeout=30)
        assert type(error) is ValueError and error.args == ("bad input",)
        # the worker's traceback rides along as the cause
        assert "in fail" in str(error.__cause__)
        with pytest.raises(ValueError, match="bad input"):
            list(pool.map(fail, ["bad input"], timeout=30))
        # the pool still works after a task failed
        assert pool.submit(square, 3).result(timeout=30) == 9


def test_shutdown_waits_and_refuses_new_work(executor_ctx):
    pool = ProcessPoolExecutor(2, mp_context=executor_ctx)
    futures = [pool.submit(square, x) for x in range(10)]
    workers = list(pool._processes.values())
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [x * x for x in range(10)]
    assert workers and all(p.exitcode == 0 for p in workers)
    with pytest.raises(RuntimeError):
        pool.submit(square, 1)


def test_shutdown_cancel_futures(executor_ctx):
    pool = ProcessPoolExecutor(1, mp_context=executor_ctx)
    first = pool.submit(square, 2)
    assert first.result(timeout=30) == 4
    futures = [pool.submit(square, x) for x in range(200)]
    pool.shutdown(wait=True, cancel_futures=True)
    # those already handed to the worker finish, the rest are cancelled
    done = [f for f in futures if not f.cancelled()]
    assert all(f.result(timeout=0) == square(futures.index(f)) for f in done)
    assert all(f.done() for f in futures)


def test_initializer_runs_in_each_worker(executor_ctx):
    with ProcessPoolExecutor(1, mp_context=executor_ctx,
                             initializer=remember, initargs=("ready",)) as pool:
        assert pool.submit(initialized).result(timeout=30) == ["ready"]


def test_killed_worker_breaks_the_pool(executor_ctx):
    with ProcessPoolExecutor(2, mp_context=executor_ctx) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(die).result(timeout=30)
        with pytest.raises(BrokenProcessPool):
            pool.submit(square, 1)


@pytest.mark.skipif(not HAS_MAX_TASKS, reason="max_tasks_per_child is new in 3.11")
def test_max_tasks_per_child_replaces_workers(executor_ctx, start_method):
    if start_method == "fork":
        # the executor refuses it with fork, as it does for the standard package
        with pytest.raises(ValueError, match="fork"):
            ProcessPoolExecutor(1, mp_context=executor_ctx, max_tasks_per_child=2)
        return
    with ProcessPoolExecutor(1, mp_context=executor_ctx, max_tasks_per_child=2) as pool:
        pids = [pool.submit(which_process).result(timeout=30)[0] for _ in range(6)]
    # each worker served exactly two tasks before being replaced
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [2, 2, 2]


def put_in(queue, item):
    queue.put(item)


def test_standard_queue_on_a_fastmp_context_reaches_a_child(executor_ctx):
    # what the executor does: a standard Queue built with a fastmp context,
    # handed to a fastmp child at start (pickled, under spawn and forkserver)
    import multiprocessing.queues
    queue = multiprocessing.queues.Queue(ctx=executor_ctx)
    child = executor_ctx.Process(target=put_in, args=(queue, "through"))
    child.start()
    try:
        assert queue.get(timeout=30) == "through"
    finally:
        child.join(30)
        queue.close()
        queue.join_thread()
    assert child.exitcode == 0
