"""Contexts and start methods: the default, set_start_method's force rules,
get_all_start_methods, set_executable, the context API surface."""
import multiprocessing
import os
import sys
import textwrap
from importlib import import_module

import pytest

import fastmp
from support import run_python

pytestmark = pytest.mark.timeout(60)


def do_nothing():
    pass


def test_every_stdlib_context_name_exists():
    for method in ("fork", "spawn", "forkserver"):
        ours = fastmp.get_context(method)
        theirs = multiprocessing.get_context(method)
        public = {n for n in dir(theirs) if not n.startswith("__")}
        missing = public - set(dir(ours))
        assert not missing, (method, missing)
    missing = set(multiprocessing.__all__) - set(fastmp.__all__)
    assert not missing


def test_all_start_methods_and_default_match_stdlib():
    assert fastmp.get_all_start_methods() == multiprocessing.get_all_start_methods()
    code = ("import fastmp, multiprocessing as m;"
            "print(fastmp.get_start_method(allow_none=True), fastmp.get_start_method(),"
            " m.get_start_method())")
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    none, ours, theirs = out.stdout.split()
    assert none == "None" and ours == theirs


SET_START = textwrap.dedent("""
    import {impl} as mp
    log = []
    def attempt(*args, **kw):
        try:
            mp.set_start_method(*args, **kw)
            log.append('ok')
        except Exception as exc:
            log.append(type(exc).__name__)
        log.append(mp.get_start_method(allow_none=True))
    attempt('spawn')
    attempt('fork')
    attempt('fork', force=True)
    attempt(None, force=True)
    attempt('bogus')
    attempt('forkserver')
    try:
        mp.get_context('spawn').set_start_method('fork')
    except ValueError:
        log.append('concrete refused')
    print(' '.join(map(str, log)))
""")


def test_set_start_method_rules_agree(impl):
    out = run_python("-c", SET_START.format(impl=impl.__name__))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "ok", "spawn", "RuntimeError", "spawn", "ok", "fork", "ok", "None",
        "ValueError", "None", "ok", "forkserver", "concrete", "refused"]


START_LEAVES_METHOD_UNSET = textwrap.dedent("""
    import {impl} as mp
    def child():
        print(mp.get_start_method(allow_none=True))
    if __name__ == '__main__':
        for method in ('spawn', 'forkserver', 'fork'):
            p = mp.get_context(method).Process(target=child)
            p.start()
            p.join()
            print(method, mp.get_start_method(allow_none=True), p.exitcode)
""")


def test_starting_a_child_leaves_the_start_method_unset(impl, tmp_path):
    # gh-109263 (3.14): starting a child through a context does not fix
    # the parent's start method (the child runs with its own)
    if impl is multiprocessing and sys.version_info < (3, 14):
        return
    (tmp_path / "prog.py").write_text(START_LEAVES_METHOD_UNSET.format(impl=impl.__name__))
    out = run_python(str(tmp_path / "prog.py"), cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["spawn", "spawn", "None", "0", "forkserver", "forkserver",
                                  "None", "0", "fork", "fork", "None", "0"]


def test_get_context(impl):
    assert impl.get_context("spawn").get_start_method() == "spawn"
    assert impl.get_context("fork").Process.__name__ == "ForkProcess"
    ctx = impl.get_context("forkserver")
    assert ctx.get_context() is ctx
    assert ctx.get_context("spawn") is impl.get_context("spawn")
    with pytest.raises(ValueError):
        impl.get_context("threads")


def test_reducer_defaults_to_reduction_module(impl):
    reduction = import_module(impl.__name__ + ".reduction")
    assert impl.get_context("fork").reducer is reduction
    assert impl.reducer is reduction


def test_exceptions_reexported(impl):
    context = import_module(impl.__name__ + ".context")
    for name in ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"):
        assert getattr(context, name) is getattr(impl, name)
        assert getattr(impl.get_context("spawn"), name) is getattr(impl, name)
        assert getattr(context.BaseContext, name) is getattr(impl, name)
        assert name in dir(impl) and name in impl.__all__
    assert "reducer" in dir(impl) and "reducer" in impl.__all__


def test_spawning_popen_and_assert_spawning(impl):
    context = import_module(impl.__name__ + ".context")
    with pytest.raises(RuntimeError, match="through inheritance"):
        context.assert_spawning(object())
    marker = object()
    context.set_spawning_popen(marker)
    try:
        assert context.get_spawning_popen() is marker
        context.assert_spawning(object())
    finally:
        context.set_spawning_popen(None)
    assert context.get_spawning_popen() is None


@pytest.fixture
def restore_executable(impl):
    spawn = import_module(impl.__name__ + ".spawn")
    saved = spawn.get_executable()
    yield spawn
    spawn.set_executable(saved)


def test_set_executable(impl, restore_executable):
    ctx = impl.get_context("spawn")
    ctx.set_executable(sys.executable)
    # (3.10 keeps a str, later versions bytes)
    assert os.fsencode(restore_executable.get_executable()) == os.fsencode(sys.executable)
    p = ctx.Process(target=do_nothing)
    p.start()
    p.join()
    assert p.exitcode == 0
    # the exec failure is not reported to the parent: the child exits 255,
    # or (3.14 on, when the child is gone before the parent writes to it)
    # start() raises BrokenPipeError
    ctx.set_executable("/nonexistent/python")
    p = ctx.Process(target=do_nothing)
    try:
        p.start()
    except BrokenPipeError:
        assert impl is fastmp or sys.version_info >= (3, 14)
    else:
        p.join(30)
        assert p.exitcode == 255


def test_failed_exec_with_a_big_payload_does_not_hang(impl, restore_executable):
    # the parent holds no copy of the child's read end while it writes the
    # Process object, so a child that never ran makes the write fail
    if impl is multiprocessing and sys.version_info < (3, 14):
        pytest.skip("the standard package blocks forever here before 3.14")
    import_module(impl.__name__ + ".resource_tracker").ensure_running()
    ctx = impl.get_context("spawn")
    ctx.set_executable("/nonexistent/python")
    p = ctx.Process(target=len, args=(bytes(4 << 20),))
    with pytest.raises(BrokenPipeError):
        p.start()


def test_spawn_command_line_names_fastmp():
    """Internal: a spawned child runs fastmp's spawn_main."""
    from fastmp import spawn
    cmd = spawn.get_command_line(pipe_handle=7, tracker_fd=None)
    assert cmd[0] == spawn.get_executable()
    assert cmd[-3:] == ["-c", "from fastmp.spawn import spawn_main; "
                        "spawn_main(pipe_handle=7, tracker_fd=None)",
                        "--multiprocessing-fork"]


FLAGS_SCRIPT = textwrap.dedent("""
    import sys, {impl} as mp
    def show(path):
        with open(path, 'w') as f:
            f.write(repr((sys.flags.optimize, sys.flags.dont_write_bytecode,
                          __name__, sys.argv[1:], sys.path[0])))
    if __name__ == '__main__':
        mp.set_start_method('spawn')
        p = mp.Process(target=show, args=(sys.argv[1],))
        p.start()
        p.join()
""")


def test_spawn_child_gets_flags_argv_and_mp_main(impl, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(FLAGS_SCRIPT.format(impl=impl.__name__))
    result = tmp_path / "seen"
    out = run_python("-O", "-B", str(script), str(result))
    assert out.returncode == 0, out.stderr
    expected = (1, 1, '__mp_main__', [str(result)], os.path.realpath(tmp_path))
    assert result.read_text() == repr(expected)


DEFAULT_PROCESS = textwrap.dedent("""
    import {impl} as mp
    def nothing():
        pass
    if __name__ == '__main__':
        mp.freeze_support()                 # accepted, does nothing here
        early = mp.Process(target=nothing)  # created before the choice
        mp.set_start_method('spawn')
        early.start()
        early.join()
        print(type(early).__name__, early._popen.method, early.exitcode)
""")


def test_default_process_uses_method_chosen_at_start(impl, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(DEFAULT_PROCESS.format(impl=impl.__name__))
    out = run_python(str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Process", "spawn", "0"]


UNCHOSEN = textwrap.dedent("""
    import {impl} as mp
    def nothing():
        pass
    if __name__ == '__main__':
        seen = []
        for method in ('fork', 'spawn', 'forkserver'):
            p = mp.get_context(method).Process(target=nothing)
            p.start()
            p.join()
            seen.append('%s:%s:%s' % (method, p.exitcode,
                                      mp.get_start_method(allow_none=True)))
        mp.set_start_method('spawn')    # still free to choose
        print(' '.join(seen), mp.get_start_method())
""")


def test_a_concrete_context_leaves_the_default_unchosen(impl, tmp_path):
    # gh-109263: starting a child through a concrete context must not fix
    # the default context's start method as a side effect
    if impl is multiprocessing and sys.version_info < (3, 14):
        pytest.skip("fixed in the standard package in 3.14")
    script = tmp_path / "prog.py"
    script.write_text(UNCHOSEN.format(impl=impl.__name__))
    out = run_python(str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "fork:0:None", "spawn:0:None", "forkserver:0:None", "spawn"]


NO_TEMPDIR = textwrap.dedent("""
    import sys, tempfile
    if sys.argv[1] == 'read-only':
        tempfile.tempdir = '/proc'      # no file can be made there, even by root
    else:
        tempfile._candidate_tempdir_list = lambda: ['/nonexistent-tmp']
        tempfile.tempdir = None
    import {impl} as mp
    print(mp.get_start_method(), mp.get_all_start_methods()[0])
""")


@pytest.mark.parametrize("tempdir", ["read-only", "missing"])
def test_default_method_without_a_writable_tempdir(impl, tempdir):
    # gh-155717: from 3.14 the default is forkserver only where its socket
    # can be made; elsewhere spawn
    out = run_python("-c", NO_TEMPDIR.format(impl=impl.__name__), tempdir)
    assert out.returncode == 0, out.stderr
    expected = "spawn" if sys.version_info >= (3, 14) else "fork"
    assert out.stdout.split() == [expected, expected]
