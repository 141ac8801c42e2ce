"""The Process API: exit codes, signals, join/close, naming, daemons,
parent_process, active_children, sentinels.  Behaviour that must agree
with the standard package runs against both (the `impl` fixture); start
methods are covered where they matter."""
import json
import os
import select
import signal
import sys
import textwrap
import time

import pytest

import fastmp
from support import run_python, skip_stdlib_before

pytestmark = pytest.mark.timeout(60)


# ---- workers (module level: spawned children import them) ---------------

def exit_with(code):
    sys.exit(code)


def kill_self(signum):
    os.kill(os.getpid(), signum)


def raise_error():
    raise ValueError("boom from child")


def sleep_for(seconds):
    time.sleep(seconds)


def sleep_after_signalling(ready, sigint_action):
    """Set `ready`, then sleep until a signal ends the process.  With
    sigint_action 'default' SIGINT is left as the start method leaves it
    (Python's KeyboardInterrupt); 'caught' exits 7 on KeyboardInterrupt;
    'SIG_DFL' lets SIGINT kill the process."""
    if sigint_action == "SIG_DFL":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ready.set()
        time.sleep(60)
    except KeyboardInterrupt:
        if sigint_action == "caught":
            sys.exit(7)
        raise


def report(path):
    """Write what the child knows about itself to `path` (JSON)."""
    mp = impl_for(path)
    me = mp.current_process()
    parent = mp.parent_process()
    data = {
        "name": me.name, "pid": os.getpid(), "ident": me.ident,
        "daemon": me.daemon, "parent_pid": parent.pid,
        "parent_name": parent.name, "parent_alive": parent.is_alive(),
        "identity": list(me._identity), "authkey": me.authkey.hex(),
    }
    with open(path, "w") as f:
        json.dump(data, f)


def impl_for(path):
    # the implementation under test is named in the result file's name
    import multiprocessing
    return fastmp if "fastmp" in os.path.basename(path) else multiprocessing


def start_grandchild(path, method):
    """Start a child of this child; record what happened."""
    mp = impl_for(path)
    try:
        p = mp.get_context(method).Process(target=report, args=(path + ".gc",))
        p.start()
        p.join()
        outcome = "started:%s" % p.name
    except AssertionError as exc:
        outcome = "refused:%s" % exc
    with open(path, "w") as f:
        f.write(outcome)


def _result(tmp_path, impl, tag="r"):
    return str(tmp_path / ("%s-%s" % (tag, impl.__name__)))


# ---- exit codes and signals ---------------------------------------------

@pytest.mark.parametrize("code", [0, 3])
def test_exitcode_from_sys_exit(ctx, code):
    p = ctx.Process(target=exit_with, args=(code,))
    assert p.exitcode is None
    p.start()
    p.join()
    assert p.exitcode == code
    assert not p.is_alive()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exitcode_of_uncaught_exception_is_1(impl, method, capfd):
    # (a forkserver child writes to the forkserver's stderr, not ours)
    p = impl.get_context(method).Process(target=raise_error)
    p.start()
    p.join()
    assert p.exitcode == 1
    err = capfd.readouterr().err
    assert "Process %s:" % p.name in err
    assert "ValueError: boom from child" in err


def test_exitcode_is_negative_signal(impl):
    p = impl.get_context("fork").Process(target=kill_self, args=(signal.SIGKILL,))
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    assert "exitcode=-SIGKILL" in repr(p)


def test_terminate_and_kill(ctx):
    victims = [ctx.Process(target=sleep_for, args=(30,)) for _ in range(2)]
    for p in victims:
        p.start()
    victims[0].terminate()
    victims[1].kill()
    for p in victims:
        p.join(10)
    assert victims[0].exitcode == -signal.SIGTERM
    assert victims[1].exitcode == -signal.SIGKILL


def _needs_interrupt(impl):
    skip_stdlib_before(impl, (3, 14), "Process.interrupt()")


@pytest.mark.parametrize("sigint_action, exitcode", [
    ("default", 1), ("SIG_DFL", -signal.SIGINT)])
def test_interrupt_sends_sigint(ctx, impl, sigint_action, exitcode, capfd):
    _needs_interrupt(impl)
    ready = ctx.Event()
    p = ctx.Process(target=sleep_after_signalling, args=(ready, sigint_action))
    p.start()
    assert ready.wait(30)
    p.interrupt()
    p.join(30)
    assert p.exitcode == exitcode
    capfd.readouterr()   # the KeyboardInterrupt traceback, where it is ours


def test_interrupt_can_be_handled_by_the_child(impl):
    _needs_interrupt(impl)
    ctx = impl.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=sleep_after_signalling, args=(ready, "caught"))
    p.start()
    assert ready.wait(30)
    p.interrupt()
    p.join(30)
    assert p.exitcode == 7
    p.interrupt()   # after the exit: nothing happens
    p.close()
    with pytest.raises(ValueError):
        p.interrupt()


def test_interrupt_is_not_a_thread_method():
    # the dummy (thread) Process has no interrupt() in the standard package
    import multiprocessing.dummy
    import fastmp.dummy
    assert (hasattr(fastmp.dummy.Process, "interrupt")
            == hasattr(multiprocessing.dummy.Process, "interrupt"))


def test_kwargs_none_means_no_keyword_arguments(impl):
    skip_stdlib_before(impl, (3, 14), "kwargs=None")
    p = impl.get_context("fork").Process(target=exit_with, args=(5,), kwargs=None)
    p.start()
    p.join(30)
    assert p.exitcode == 5


def test_join_timeout_returns_while_running(impl):
    p = impl.get_context("fork").Process(target=sleep_for, args=(30,))
    p.start()
    t0 = time.monotonic()
    p.join(0.2)
    elapsed = time.monotonic() - t0
    assert 0.15 < elapsed < 5
    assert p.is_alive() and p.exitcode is None
    assert p in impl.active_children()
    p.join(0)
    assert p.exitcode is None
    p.kill()
    p.join()
    assert p not in impl.active_children()


def test_sentinel_becomes_ready_at_exit(ctx):
    p = ctx.Process(target=sleep_for, args=(0.3,))
    with pytest.raises(ValueError):
        p.sentinel
    p.start()
    ready, _, _ = select.select([p.sentinel], [], [], 30)
    assert ready == [p.sentinel]
    p.join()
    assert p.exitcode == 0


# ---- lifecycle rules ------------------------------------------------------

def test_start_twice_and_join_unstarted(impl):
    p = impl.get_context("fork").Process(target=exit_with, args=(0,))
    with pytest.raises(AssertionError):
        p.join()
    p.start()
    with pytest.raises(AssertionError):
        p.start()
    p.join()


def test_close(impl):
    p = impl.get_context("fork").Process(target=sleep_for, args=(30,))
    p.start()
    with pytest.raises(ValueError):
        p.close()
    p.kill()
    p.join()
    p.close()
    p.close()  # twice is fine
    assert "closed" in repr(p)
    for use in (lambda: p.pid, lambda: p.exitcode, p.is_alive, p.join,
                lambda: p.sentinel, p.terminate):
        with pytest.raises(ValueError):
            use()


def test_repr_states(impl):
    p = impl.get_context("fork").Process(target=sleep_for, args=(30,), name="worker")
    assert repr(p).startswith("<ForkProcess name='worker' parent=%d initial" % os.getpid())
    p.daemon = True
    p.start()
    assert " started daemon>" in repr(p) and "pid=%d" % p.pid in repr(p)
    p.terminate()
    p.join()
    assert repr(p).endswith("stopped exitcode=-SIGTERM daemon>")


def test_daemon_cannot_change_after_start(impl):
    p = impl.get_context("fork").Process(target=exit_with, args=(0,))
    p.start()
    with pytest.raises(AssertionError):
        p.daemon = True
    p.join()


def test_name_and_authkey_attributes(impl):
    p = impl.Process(target=exit_with, args=(0,))
    with pytest.raises(AssertionError):
        p.name = 42
    p.name = "renamed"
    assert p.name == "renamed"
    p.authkey = b"secret"
    assert p.authkey == b"secret" and type(p.authkey).__name__ == "AuthenticationString"
    assert p.pid is None and p.ident is None


# ---- what the child sees --------------------------------------------------

def test_child_identity_and_parent(ctx, impl, tmp_path):
    path = _result(tmp_path, impl)
    p = ctx.Process(target=report, args=(path,), daemon=True)
    p.start()
    p.join()
    assert p.exitcode == 0
    with open(path) as f:
        seen = json.load(f)
    me = impl.current_process()
    assert seen["name"] == p.name
    assert p.name.endswith("Process-%s" % ":".join(map(str, p._identity)))
    assert seen["pid"] == seen["ident"] == p.pid
    assert seen["daemon"] is True
    assert seen["parent_pid"] == os.getpid()
    assert seen["parent_name"] == me.name == "MainProcess"
    assert seen["parent_alive"] is True
    assert seen["authkey"] == bytes(me.authkey).hex()


@pytest.mark.parametrize("daemon", [False, True])
def test_daemon_may_not_have_children(impl, tmp_path, daemon):
    path = _result(tmp_path, impl)
    p = impl.get_context("fork").Process(target=start_grandchild,
                                         args=(path, "fork"), daemon=daemon)
    p.start()
    p.join()
    with open(path) as f:
        outcome = f.read()
    if daemon:
        assert outcome == "refused:daemonic processes are not allowed to have children"
    else:
        # nested identity: the first child of the first child
        assert outcome.startswith("started:ForkProcess-") and ":1" in outcome
        with open(path + ".gc") as f:
            assert json.load(f)["parent_pid"] == p.pid


def test_names_count_per_process(impl):
    ctx = impl.get_context("fork")
    first, second = ctx.Process(), ctx.Process()
    n1 = int(first.name.rsplit("-", 1)[1])
    assert second.name == "ForkProcess-%d" % (n1 + 1)
    assert impl.Process().name.startswith("Process-")


def test_parent_process_none_in_main(impl):
    assert impl.parent_process() is None
    assert impl.current_process().name == "MainProcess"
    assert impl.current_process().is_alive()


# ---- exit of the main process --------------------------------------------

EXIT_SCRIPT = textwrap.dedent("""
    import sys, time, os
    import {impl} as mp
    def linger(path, seconds):
        time.sleep(seconds)
        open(path, 'w').write('done')
    if __name__ == '__main__':
        mp.set_start_method('fork')
        keep = mp.Process(target=linger, args=(sys.argv[1], 0.5))
        doomed = mp.Process(target=linger, args=(sys.argv[2], 60), daemon=True)
        keep.start(); doomed.start()
        print(doomed.pid, flush=True)
""")


def test_exit_joins_children_and_terminates_daemons(impl, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(EXIT_SCRIPT.format(impl=impl.__name__))
    joined, terminated = tmp_path / "joined", tmp_path / "terminated"
    out = run_python(str(script), str(joined), str(terminated), timeout=30)
    assert out.returncode == 0, out.stderr
    assert joined.read_text() == "done"
    assert not terminated.exists()
    daemon_pid = int(out.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(daemon_pid, 0)


def test_active_children_and_cpu_count(impl):
    assert impl.cpu_count() == os.cpu_count()
    p = impl.get_context("fork").Process(target=sleep_for, args=(30,))
    assert p not in impl.active_children()
    p.start()
    assert p in impl.active_children()
    p.terminate()
    p.join()
    assert p not in impl.active_children()


# What a spawned child must not import just to run a plain function: the
# standard package's start-up cost comes largely from these.
_HEAVY_AT_START = {"socket", "selectors", "subprocess", "signal", "pickle",
                   "fastmp._fastmp", "fastmp.reduction", "fastmp.connection"}


def test_light_start_up(tmp_path):
    """Internal (start-up cost): neither `import fastmp` nor a spawned
    child that runs a plain function loads the heavy modules (the standard
    package does); the child still works fully."""
    (tmp_path / "probe.py").write_text(textwrap.dedent('''
        import json, sys
        def dump(path):
            import fastmp
            json.dump([sorted(sys.modules), fastmp.parent_process().pid,
                       fastmp.current_process().name], open(path, "w"))
        if __name__ == "__main__":
            import fastmp
            loaded = sorted(sys.modules)
            ctx = fastmp.get_context("spawn")
            p = ctx.Process(target=dump, args=(sys.argv[1],))
            p.start()
            p.join(30)
            print(json.dumps([loaded, p.exitcode]))
    '''))
    out = tmp_path / "child.json"
    result = run_python(str(tmp_path / "probe.py"), str(out), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    parent_modules, exitcode = json.loads(result.stdout)
    child_modules, parent_pid, name = json.loads(out.read_text())
    assert exitcode == 0 and name == "SpawnProcess-1"
    assert parent_pid > 0
    assert not _HEAVY_AT_START & set(parent_modules)
    assert not _HEAVY_AT_START & set(child_modules)


def test_submodules_the_standard_package_loads_are_attributes(impl):
    # after a bare `import multiprocessing`, multiprocessing.reduction (like
    # .context and .process) is there; programs reach for it that way
    code = ("import {0}; print({0}.reduction.ForkingPickler.__name__,"
            " {0}.context.__name__, {0}.process.__name__)").format(impl.__name__)
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "ForkingPickler", impl.__name__ + ".context", impl.__name__ + ".process"]


def test_process_exceptions_are_fastmp_context_classes():
    """Internal: the C core raises the very exception classes of
    fastmp.context."""
    from fastmp import context
    for name in ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"):
        cls = getattr(fastmp, name)
        assert cls is getattr(context, name) is getattr(fastmp._fastmp, name)
        assert cls.__module__ == "fastmp.context"
        assert issubclass(cls, fastmp.ProcessError)
