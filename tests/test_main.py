"""`python -m fastmp -c CODE [args]` runs CODE as `python -c CODE [args]`
does (sys.argv, sys.path[0], the __main__ module, exit status, traceback),
on fastmp; and the runner's usage text names every form."""
import os
import textwrap

import pytest

import fastmp
import support

# The programs run in a directory of their own: find fastmp there even
# when the suite runs with a relative PYTHONPATH (PYTHONPATH=Lib).
_FASTMP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))


def run_python(*args, **kwargs):
    path = os.pathsep.join(p for p in (_FASTMP_ROOT, os.environ.get("PYTHONPATH")) if p)
    return support.run_python(*args, env={"PYTHONPATH": path}, **kwargs)


def both(tmp_path, code, *args):
    """(python -c, python -m fastmp -c) run from tmp_path."""
    return (run_python("-c", code, *args, cwd=str(tmp_path)),
            run_python("-m", "fastmp", "-c", code, *args, cwd=str(tmp_path)))


DESCRIBE = textwrap.dedent("""
    import sys, __main__
    print(sys.argv, repr(sys.path[0]), __name__, __main__.__spec__,
          hasattr(__main__, '__file__'), __main__.__loader__)
    sys.exit(int(sys.argv[-1]))
""")


def test_runs_as_python_c(tmp_path):
    plain, ours = both(tmp_path, DESCRIBE, "x", "-v", "3")
    assert (ours.returncode, ours.stdout, ours.stderr) == (3, plain.stdout, "")
    assert plain.stdout.startswith("['-c', 'x', '-v', '3'] '' __main__ None False")


@pytest.mark.parametrize("code", [
    "def inner():\n    raise ValueError('no good')\n\ninner()\n",
    "x = (1 +\n",
    "raise SystemExit('leaving')",
])
def test_failures_report_as_python_c(tmp_path, code):
    plain, ours = both(tmp_path, code)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    assert plain.returncode == 1 and plain.stderr


CHILDREN = textwrap.dedent("""
    import sys
    import multiprocessing
    ctx = multiprocessing.get_context(sys.argv[1])
    with ctx.Pool(1) as pool:
        # a builtin: code given with -c defines nothing a child can import
        seen = pool.apply(eval, ("__import__('multiprocessing').__name__",))
    print(multiprocessing.__name__, seen)
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_of_c_code_run_on_fastmp(tmp_path, method):
    out = run_python("-m", "fastmp", "-c", CHILDREN, method, cwd=str(tmp_path))
    assert (out.returncode, out.stdout, out.stderr) == (0, "fastmp fastmp\n", "")


def test_usage_names_every_form():
    out = run_python("-m", "fastmp", "-c")
    assert out.returncode == 2
    assert out.stderr.startswith("Argument expected for the -c option\nusage: ")
    helped = run_python("-m", "fastmp", "--help")
    assert helped.returncode == 0
    usage = helped.stdout.splitlines()
    assert usage[:3] == ["usage: python -m fastmp program.py [args...]",
                         "       python -m fastmp -m module [args...]",
                         "       python -m fastmp -c code [args...]"]
    assert out.stderr.endswith(helped.stdout)
