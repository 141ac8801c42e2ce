"""Type information (the .pyi stubs next to the modules): stubtest checks
them against the runtime, `mypy --strict` accepts a program on the public
API (typing_sample.py) and rejects misuse, and that program runs."""
import os
import shutil
import subprocess
import sys
import textwrap

import mypy  # noqa: F401  (requirements-test.txt; a clear failure if missing)
import pytest

import fastmp
from support import HERE, child_env, run_python

SAMPLE = os.path.join(HERE, "typing_sample.py")
ALLOWLIST = os.path.join(HERE, "stubtest_allowlist.txt")
PACKAGE_DIR = os.path.dirname(fastmp.__file__)
# a cold mypy run takes tens of seconds on a loaded machine
MYPY_TIMEOUT = 240
# the interpreter running the tests, and the ends of the supported range
VERSIONS = [None, "3.10", "3.13"]


def _env():
    """The environment for mypy: it finds the fastmp this test imported
    (a PEP 561 package: py.typed) on the PYTHONPATH."""
    parent = os.path.dirname(PACKAGE_DIR)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(
        [parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("MYPYPATH", None)
    return env


def _run(args, cwd, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=MYPY_TIMEOUT)


def _mypy(tmp_path, *args, env=None):
    """`mypy --strict` with a private cache, run in tmp_path (so no
    project configuration applies)."""
    return _run(["-m", "mypy", "--strict", "--cache-dir",
                 str(tmp_path / "mypy-cache"), *args], cwd=tmp_path, env=env)


@pytest.fixture
def stubs_only(tmp_path):
    """The environment for mypy with a copy of the package's stubs (and
    only them) first on its search path."""
    stubs = tmp_path / "stubs"
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".pyi") or name == "py.typed":
                target = stubs / "fastmp" / os.path.relpath(folder, PACKAGE_DIR)
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(os.path.join(folder, name), target)
    env = _env()
    env["MYPYPATH"] = str(stubs)
    return env


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
def test_stubs_match_runtime(tmp_path, stubs_only):
    # stubtest sees the stubs alone, so a runtime module or public name
    # without a stub entry is reported, as is a stub entry the runtime lacks
    # or a signature that differs.
    result = _run(["-m", "mypy.stubtest", "fastmp", "--concise",
                   "--allowlist", ALLOWLIST], cwd=tmp_path, env=stubs_only)
    assert result.returncode == 0, result.stdout + result.stderr


def _version_args(version):
    return [] if version is None else ["--python-version", version]


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
@pytest.mark.parametrize("version", VERSIONS)
def test_stubs_pass_mypy_strict(tmp_path, stubs_only, version):
    # the stubs themselves: consistent, and no ignore comment left unused
    result = _mypy(tmp_path, *_version_args(version), "-p", "fastmp",
                   env=stubs_only)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
@pytest.mark.parametrize("version", VERSIONS)
def test_sample_passes_mypy_strict(tmp_path, version):
    result = _mypy(tmp_path, *_version_args(version), SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
def test_mypy_rejects_misuse(tmp_path):
    program = tmp_path / "misuse.py"
    program.write_text(textwrap.dedent("""\
        from fastmp import Pool, shared_memory
        from fastmp.queues import Queue


        def square(x: int) -> int:
            return x * x


        def main(queue: 'Queue[int]') -> None:
            with Pool(1) as pool:
                pool.map(square, ['a', 'b'])
            queue.put('not an int')
            shared_memory.SharedMemory(size='8')
        """))
    result = _mypy(tmp_path, str(program))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["11", "12", "13"], errors
    assert 'Argument 1 to "map" of "Pool"' in errors[0]
    assert 'Argument 1 to "put" of "Queue"' in errors[1]
    assert 'Argument "size" to "SharedMemory"' in errors[2]


@pytest.mark.timeout(120)
def test_sample_runs_under_fork():
    result = run_python(SAMPLE, "fork", timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"
