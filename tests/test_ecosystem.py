"""Libraries built on multiprocessing, run unchanged on the drop-in
(`python -m fastmp program.py`): joblib (and the loky it bundles) and
concurrent.futures.  One fast check per regression; `make ecosystem` runs
the libraries' own test-suites."""
import os
import sys
import textwrap

import pytest

import fastmp
import support

pytestmark = pytest.mark.timeout(90)

# The programs run in a temporary directory: find this fastmp from there.
_FASTMP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))


def run_dropin(tmp_path, program, *args):
    """Run `program` with `python -m fastmp`; its stdout lines.  Fails the
    test with the program's stderr if it fails."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(program))
    path = os.pathsep.join(p for p in (_FASTMP_ROOT, os.environ.get("PYTHONPATH")) if p)
    result = support.run_python("-m", "fastmp", str(script), *map(str, args),
                                cwd=str(tmp_path), env={"PYTHONPATH": path}, timeout=80)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


@pytest.fixture
def joblib():
    return pytest.importorskip("joblib")


def test_joblib_imports_on_the_dropin(tmp_path, joblib):
    out = run_dropin(tmp_path, """
        import multiprocessing.queues
        import joblib
        from joblib.externals.loky.backend import queues
        print(multiprocessing.queues.__name__)
        print(issubclass(queues.Queue, multiprocessing.queues.Queue))
    """)
    assert out == ["fastmp.queues", "True"]


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_joblib_parallel(tmp_path, joblib, backend):
    out = run_dropin(tmp_path, """
        import sys
        from joblib import Parallel, delayed

        if __name__ == "__main__":
            squares = Parallel(n_jobs=2, backend=sys.argv[1])(
                delayed(pow)(i, 2) for i in range(20))
            print(squares == [i * i for i in range(20)])
    """, backend)
    assert out == ["True"]


def test_loky_queue_round_trip(tmp_path, joblib, start_method):
    # loky's Queue overrides the standard feeder mechanics: it must get the
    # standard shape, and its reducers must reach the child
    out = run_dropin(tmp_path, """
        import sys
        import multiprocessing as mp
        from joblib.externals.loky.backend.queues import Queue

        def reply(inbox, outbox):
            outbox.put(inbox.get(timeout=30) * 2)

        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            inbox, outbox = Queue(ctx=ctx), Queue(ctx=ctx)
            child = ctx.Process(target=reply, args=(inbox, outbox))
            child.start()
            inbox.put(21)
            print(outbox.get(timeout=30))
            child.join(30)
            print(child.exitcode, type(inbox).__mro__[1].__name__)
            for queue in (inbox, outbox):
                queue.close()
                queue.join_thread()
    """, start_method)
    assert out == ["42", "0 PipeQueue"]


def test_loky_context_pipe_reaches_a_loky_worker(tmp_path, joblib):
    # loky passes a Pipe() end to its own process with its own reducer
    out = run_dropin(tmp_path, """
        from joblib.externals.loky.backend import get_context

        def echo(conn):
            conn.send(conn.recv() * 2)

        if __name__ == "__main__":
            ctx = get_context("loky")
            here, there = ctx.Pipe()
            child = ctx.Process(target=echo, args=(there,))
            child.start()
            here.send(21)
            print(here.recv() if here.poll(30) else "no answer")
            child.join(30)
            print(child.exitcode)
    """)
    assert out == ["42", "0"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="the executor survives a failing put from 3.12 on (gh-109047)")
def test_executor_whose_feeder_cannot_start_is_broken(tmp_path):
    # CPython's test_python_finalization_error: the call queue's feeder is
    # a thread started through `threading`, and its failure breaks the pool
    out = run_dropin(tmp_path, """
        import threading
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        start = threading.Thread.start

        def start_unless_feeder(thread):
            if thread.name == "QueueFeederThread":
                raise RuntimeError("can't create new thread at interpreter shutdown")
            start(thread)

        if __name__ == "__main__":
            threading.Thread.start = start_unless_feeder
            with ProcessPoolExecutor(2) as executor:
                try:
                    list(executor.map(abs, [-1] * 10))
                except BrokenProcessPool:
                    print("broken")
    """)
    assert out == ["broken"]


def test_unpicklable_argument_freed_without_the_gc(tmp_path):
    # nothing keeps the refused argument (nor a finished thread) in a
    # reference cycle: it goes as soon as the failed future does
    out = run_dropin(tmp_path, """
        import gc
        import time
        import weakref
        from concurrent.futures import ProcessPoolExecutor

        class Unpicklable:
            def __reduce__(self):
                raise TypeError("refuses pickling")

        if __name__ == "__main__":
            gc.disable()
            with ProcessPoolExecutor(1) as executor:
                argument = Unpicklable()
                ref = weakref.ref(argument)
                future = executor.submit(id, argument)
                print(type(future.exception(timeout=30)).__name__)
                del argument, future
                deadline = time.monotonic() + 10
                while ref() is not None and time.monotonic() < deadline:
                    time.sleep(0.01)
                print("freed" if ref() is None else "alive")
    """)
    assert out == ["TypeError", "freed"]
