"""The drop-in: `python -m fastmp program.py`, `python -m fastmp -m module`
and fastmp.install() run an unchanged multiprocessing program on fastmp, in
the program and in every process it starts, under every start method."""
import os
import sys
import textwrap

import pytest

import fastmp
import support

pytestmark = pytest.mark.timeout(90)

# The programs run in their own directory: find fastmp there even when the
# suite runs with a relative PYTHONPATH (PYTHONPATH=Lib).
_FASTMP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))


def run_python(*args, env=None, **kwargs):
    path = os.pathsep.join(p for p in (_FASTMP_ROOT, os.environ.get("PYTHONPATH")) if p)
    return support.run_python(*args, env=dict(env or {}, PYTHONPATH=path), **kwargs)

# A library the program imports; it imports multiprocessing itself.
LIBRARY = textwrap.dedent("""
    import multiprocessing
    import multiprocessing.util
    from multiprocessing import process as mp_process

    def describe(tag):
        import multiprocessing.spawn  # a submodule imported late
        return '%s mp=%s util=%s process=%s spawn=%s name=%s' % (
            tag, multiprocessing.__name__, multiprocessing.util.__name__,
            mp_process.__name__, multiprocessing.spawn.__name__,
            multiprocessing.current_process().name)
""")

PROGRAM = textwrap.dedent("""
    import sys
    import multiprocessing as mp
    import mylib

    def child(path, method):
        with open(path, 'a') as f:
            f.write(mylib.describe(method) + ' main=' + __name__ + '\\n')

    if __name__ == '__main__':
        print(mylib.describe('parent'), 'argv=%s' % sys.argv[1:])
        path = sys.argv[1]
        for method in [m for m in sys.argv[2:] if m != 'fail']:
            p = mp.get_context(method).Process(target=child, args=(path, method),
                                               name='Kid-' + method)
            p.start()
            p.join()
            assert p.exitcode == 0, p.exitcode
        if 'fail' in sys.argv:
            raise RuntimeError('program failed')
""")


def expected_line(tag, name):
    return ("%s mp=fastmp util=fastmp.util process=fastmp.process "
            "spawn=fastmp.spawn name=%s" % (tag, name))


@pytest.fixture
def program(tmp_path):
    (tmp_path / "mylib.py").write_text(LIBRARY)
    (tmp_path / "prog.py").write_text(PROGRAM)
    pkg = tmp_path / "apppkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(PROGRAM.replace("import mylib", "from apppkg import mylib"))
    (pkg / "mylib.py").write_text(LIBRARY)
    return tmp_path


def check_children(result_file, methods):
    """Each child saw fastmp; spawn and forkserver re-imported the main
    module as __mp_main__."""
    want = []
    for method in methods:
        main = "__main__" if method == "fork" else "__mp_main__"
        want.append("%s main=%s" % (expected_line(method, "Kid-" + method), main))
    assert sorted(result_file.read_text().splitlines()) == sorted(want)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_run_script(program, method):
    out_file = program / "seen"
    out = run_python("-m", "fastmp", "prog.py", str(out_file), method,
                     cwd=str(program))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "%s argv=['%s', '%s']" % (
        expected_line("parent", "MainProcess"), out_file, method)
    check_children(out_file, [method])


def test_run_module(program):
    out_file = program / "seen"
    # from elsewhere: -m finds the package through the current directory
    out = run_python("-m", "fastmp", "-m", "apppkg.cli", str(out_file), "fork", "spawn",
                     cwd=str(program))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(expected_line("parent", "MainProcess"))
    check_children(out_file, ["fork", "spawn"])


def test_exit_status_and_traceback_like_python(program):
    ours = run_python("-m", "fastmp", "prog.py", str(program / "a"), "fail",
                      cwd=str(program))
    plain = run_python("prog.py", str(program / "b"), "fail", cwd=str(program))
    assert ours.returncode == plain.returncode == 1
    assert ours.stderr.startswith("Traceback (most recent call last):\n  File \"%s\"" %
                                  os.path.join(os.path.realpath(program), "prog.py"))
    assert "fastmp" not in ours.stderr.replace(str(program), "")
    assert ours.stderr.splitlines()[-1] == "RuntimeError: program failed"
    assert plain.stderr.splitlines()[-1] == "RuntimeError: program failed"


def test_sys_exit_code_passes_through(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text("import sys\nprint(__name__, sys.argv)\nsys.exit(7)\n")
    out = run_python("-m", "fastmp", str(script), "x", cwd=str(tmp_path))
    assert out.returncode == 7
    assert out.stdout.strip() == "__main__ [%r, 'x']" % str(script)


def test_missing_script_and_usage(tmp_path):
    out = run_python("-m", "fastmp", "nope.py", cwd=str(tmp_path))
    assert out.returncode == 2 and "can't open file" in out.stderr
    out = run_python("-m", "fastmp")
    assert out.returncode == 2 and "usage" in out.stderr
    out = run_python("-m", "fastmp", "-m", "no_such_module_here")
    assert out.returncode == 1 and "No module named" in out.stderr


INSTALL_PROGRAM = textwrap.dedent("""
    import sys
    import multiprocessing.util     # the standard package, imported first
    import fastmp
    fastmp.install()
    import multiprocessing
    import mylib

    def child(path, method):
        with open(path, 'a') as f:
            f.write(mylib.describe(method) + ' main=' + __name__ + '\\n')

    if __name__ == '__main__':
        assert multiprocessing.util.__name__ == 'fastmp.util'
        print(mylib.describe('parent'))
        for method in ('fork', 'spawn', 'forkserver'):
            p = multiprocessing.get_context(method).Process(
                target=child, args=(sys.argv[1], method), name='Kid-' + method)
            p.start()
            p.join()
""")


def test_install_from_inside_a_program(program):
    (program / "inst.py").write_text(INSTALL_PROGRAM)
    out_file = program / "seen"
    out = run_python("inst.py", str(out_file), cwd=str(program))
    assert out.returncode == 0, out.stderr
    # mylib was imported after install(): it sees fastmp
    assert out.stdout.strip() == expected_line("parent", "MainProcess")
    check_children(out_file, ["fork", "spawn", "forkserver"])


def test_missing_submodule_stays_missing():
    code = ("import fastmp; fastmp.install()\n"
            "try:\n import multiprocessing.no_such_part\n"
            "except ImportError as e: print('missing', e.name)\n"
            "import multiprocessing; print(multiprocessing.__spec__.name)")
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["missing", "multiprocessing.no_such_part", "fastmp"]


def test_plain_import_does_not_alias():
    out = run_python("-c", "import fastmp, multiprocessing; print(multiprocessing.__name__)",
                     env={"FASTMP_DROPIN": ""})
    assert out.stdout.strip() == "multiprocessing"
    assert sys.modules["multiprocessing"].__name__ == "multiprocessing"


def test_syntax_error_reported_like_python(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("x = 1\nif x\n    pass\n")
    ours = run_python("-m", "fastmp", str(script))
    plain = run_python(str(script))
    assert ours.returncode == plain.returncode == 1
    assert ours.stderr == plain.stderr


EXECUTOR_PROGRAM = textwrap.dedent("""
    import sys
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    def square(x):
        return x * x

    if __name__ == '__main__':
        ctx = multiprocessing.get_context(sys.argv[1])
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            print(type(ctx).__module__, list(pool.map(square, range(6))))
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_concurrent_futures_runs_on_fastmp(tmp_path, method):
    # the standard library's own user of multiprocessing gets fastmp too
    script = tmp_path / "executor.py"
    script.write_text(EXECUTOR_PROGRAM)
    out = run_python("-m", "fastmp", str(script), method, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "fastmp.context [0, 1, 4, 9, 16, 25]"
