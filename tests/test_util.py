"""multiprocessing.util: finalizers and their exit priorities, after-fork
hooks, logging, the temp directory, fork-aware primitives, fd helpers.
Each test of standard behaviour runs against fastmp.util and the standard
package's util; the last part is where the standard one has a bug."""
import gc
import importlib
import os
import sys
import textwrap

import pytest

import fastmp.util
from support import run_python, skip_stdlib_before

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def util(impl):
    """The util module of fastmp, then of the standard package."""
    return importlib.import_module(impl.__name__ + ".util")


class Thing:
    pass


def test_finalize_runs_when_object_dies(util):
    calls = []
    obj = Thing()
    fin = util.Finalize(obj, calls.append, args=("collected",))
    assert fin.still_active()
    assert "callback=append" in repr(fin) and "args=('collected',)" in repr(fin)
    del obj
    gc.collect()
    assert calls == ["collected"]
    assert not fin.still_active()
    assert fin() is None  # second call does nothing
    assert calls == ["collected"]
    assert repr(fin) == "<Finalize object, dead>"


def test_finalize_call_cancel_and_arguments(util):
    calls = []
    obj = Thing()
    fin = util.Finalize(obj, lambda *a, **k: calls.append((a, k)) or "result",
                        args=(1,), kwargs={"k": 2}, exitpriority=3)
    assert "exitpriority=3" in repr(fin)
    assert fin() == "result"
    assert calls == [((1,), {"k": 2})]
    other = util.Finalize(obj, calls.append, args=("never",), exitpriority=0)
    other.cancel()
    assert not other.still_active()
    util._run_finalizers(0)
    assert calls == [((1,), {"k": 2})]


def test_finalize_argument_checks(util):
    with pytest.raises(TypeError):
        util.Finalize(Thing(), print, exitpriority=1.5)
    with pytest.raises(ValueError):
        util.Finalize(None, print)


def test_run_finalizers_priority_order(util):
    order = []
    made = [util.Finalize(None, order.append, args=(name,), exitpriority=prio)
            for name, prio in (("a", 1), ("b", 10), ("c", 1), ("d", -5), ("e", 10))]
    util._run_finalizers(1)  # only priorities >= 1: high first, newest first
    assert order == ["e", "b", "c", "a"]
    assert made[3].still_active()
    made[3].cancel()


EXIT_ORDER = textwrap.dedent("""
    import {impl}.util as u
    class Obj: pass
    keep = Obj()
    u.Finalize(None, print, args=('low',), exitpriority=-10)
    u.Finalize(None, print, args=('high',), exitpriority=100)
    u.Finalize(keep, print, args=('object, no priority',))
    u.Finalize(None, print, args=('zero-1',), exitpriority=0)
    u.Finalize(None, print, args=('zero-2',), exitpriority=0)
    print('exiting', u.is_exiting())
""")


def test_finalizers_at_exit_agree(impl):
    out = run_python("-c", EXIT_ORDER.format(impl=impl.__name__))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["exiting False", "high", "zero-2", "zero-1", "low"]


def test_finalizer_skipped_in_other_process(util):
    calls = []
    fin = util.Finalize(None, calls.append, args=("x",), exitpriority=1)
    pid = os.fork()
    if pid == 0:
        try:
            fin()
            os._exit(0 if calls == [] else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fin()
    assert calls == ["x"]


def test_register_after_fork_runs_in_forked_child(impl):
    code = textwrap.dedent("""
        import {impl} as mp, {impl}.util as u
        class Obj: pass
        a, b = Obj(), Obj()
        u.register_after_fork(a, lambda o: print('first', o is a, flush=True))
        u.register_after_fork(b, lambda o: print('second', flush=True))
        def child(): print('child runs', flush=True)
        if __name__ == '__main__':
            for method in ('fork', 'spawn'):
                p = mp.get_context(method).Process(target=child)
                p.start(); p.join()
    """).format(impl=impl.__name__)
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    # spawn's child is a fresh interpreter: no hooks, and `child` cannot be
    # found in a -c program's __main__, so only fork's run is printed
    assert out.stdout.startswith("first True\nsecond\nchild runs\n")


def test_log_to_stderr_names_the_process(impl):
    code = textwrap.dedent("""
        import logging, {impl} as mp
        def child():
            mp.util.info('hello from child')
        if __name__ == '__main__':
            logger = mp.log_to_stderr(logging.INFO)
            assert logger is mp.get_logger() and logger.name == 'multiprocessing'
            assert logger.propagate in (0, False)
            mp.util.debug('hidden debug')
            p = mp.get_context('fork').Process(target=child, name='Kid')
            p.start(); p.join()
    """).format(impl=impl.__name__)
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "[INFO/Kid] child process calling self.run()" in lines
    assert "[INFO/Kid] hello from child" in lines
    assert "[INFO/Kid] process exiting with exitcode 0" in lines
    assert "[INFO/MainProcess] process shutting down" in lines
    assert not any("hidden debug" in line for line in lines)


def test_warn_logs_at_warning_level(impl, util):
    skip_stdlib_before(impl, (3, 14), "util.warn()")
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = util.get_logger()
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(util.SUBWARNING)
    try:
        util.sub_debug("not shown")
        util.warn("disk %s", "full")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
    assert [(r.levelno, r.getMessage(), r.funcName) for r in records] == [
        (30, "disk full", "test_warn_logs_at_warning_level")]


def test_temp_dir_is_removed_at_exit(impl):
    code = ("import os, {impl}.util as u; d = u.get_temp_dir();"
            "assert d == u.get_temp_dir() and os.path.isdir(d);"
            "print(d)").format(impl=impl.__name__)
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()
    assert os.path.basename(path).startswith("pymp-")
    assert not os.path.exists(path)


def test_fork_aware_thread_lock_is_free_in_child(util):
    lock = util.ForkAwareThreadLock()
    local = util.ForkAwareLocal()
    local.value = 1
    with lock:
        pid = os.fork()
        if pid == 0:
            try:
                util._run_after_forkers()
                ok = lock.acquire(timeout=1) and not hasattr(local, "value")
                os._exit(0 if ok else 1)
            finally:
                os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert local.value == 1
    assert lock.acquire(timeout=1)
    lock.release()


def test_spawnv_passfds_keeps_only_given_fds(util):
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(w, True)
    os.set_inheritable(other_w, True)
    code = ("import os, sys; os.write(%d, b'hi');"
            "sys.exit(0 if not os.path.exists('/proc/self/fd/%d') else 3)" % (w, other_w))
    # the path as spawn.get_executable() gives it on POSIX (bytes from 3.11)
    pid = util.spawnv_passfds(os.fsencode(sys.executable), [sys.executable, "-c", code], [w])
    os.close(w)
    os.close(other_w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 10) == b"hi"
    util.close_fds(r, other_r)
    assert os.waitstatus_to_exitcode(status) == 0


def test_abstract_socket_names(util):
    assert util.is_abstract_socket_namespace(b"\0name")
    assert util.is_abstract_socket_namespace("\0name")
    assert not util.is_abstract_socket_namespace("/tmp/sock")
    assert not util.is_abstract_socket_namespace(None)
    with pytest.raises(TypeError):
        util.is_abstract_socket_namespace(42)
    assert util.abstract_sockets_supported is (sys.platform == "linux")


def test_public_names_match_stdlib():
    import multiprocessing.util as std
    util = fastmp.util
    assert set(std.__all__) <= set(dir(util))
    for name in ("_exit_function", "_run_after_forkers", "_cleanup_tests",
                 "_close_stdin", "_flush_std_streams", "spawnv_passfds",
                 "close_fds", "_args_from_interpreter_flags", "MAXFD",
                 "_afterfork_registry", "_finalizer_registry", "_logger",
                 "_log_to_stderr", "LOGGER_NAME", "DEFAULT_LOGGING_FORMAT"):
        assert hasattr(util, name), name


# ==== fastmp only: where the standard package has a bug ===================

def test_close_all_fds_except():
    """fastmp only: the standard package's close_all_fds_except() closes
    every descriptor when it is told to keep fd 0 (it calls
    os.closerange(0, 0), which closes them all), on every version; that
    stdlib bug is not in the README's deviations."""
    util = fastmp.util
    fds = [fd for pair in (os.pipe(), os.pipe()) for fd in pair]
    pid = os.fork()
    if pid == 0:
        try:
            util.close_all_fds_except([0, 1, 2, fds[1]])
            closed = []
            for fd in fds:
                try:
                    os.fstat(fd)
                except OSError:
                    closed.append(fd)
            os._exit(0 if closed == [fds[0], fds[2], fds[3]] else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    util.close_fds(*fds)
    assert os.waitstatus_to_exitcode(status) == 0
