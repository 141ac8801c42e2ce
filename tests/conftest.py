"""Shared fixtures: start methods, the two implementations, and the leak
checks that every test gets (no child process and no fastmp kernel object
may outlive the test that made it)."""
import multiprocessing
import os
import re
import signal
import time

import pytest

import fastmp
from fastmp import _names

METHODS = ("fork", "spawn", "forkserver")
IMPLS = {"fastmp": fastmp, "stdlib": multiprocessing}

# Long-lived helpers that a test run legitimately keeps: the forkserver and
# the resource tracker (ours and the standard package's).
_INFRA = re.compile(r"(forkserver|resource_tracker) import main")
_TAG = "fmp-%s-" % _names.root_pid
_GRACE = 5.0


@pytest.fixture(params=METHODS)
def start_method(request):
    """Each of fork, spawn and forkserver in turn."""
    return request.param


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    """fastmp, then the standard package: for tests where both must agree."""
    return IMPLS[request.param]


@pytest.fixture
def ctx(impl, start_method):
    """A context of `impl` for `start_method`."""
    return impl.get_context(start_method)


@pytest.fixture
def fctx(start_method):
    """A fastmp context for `start_method`."""
    return fastmp.get_context(start_method)


def _process_table():
    """{pid: (ppid, state, cmdline)} for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read().decode(errors="replace")
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), rest[0], cmd)
    return table


def _stray_descendants():
    """Live (non-zombie) descendants of this process, leaving out the
    forkserver and resource tracker themselves (not their children)."""
    table = _process_table()
    me = os.getpid()
    found, frontier = [], [me]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, state, cmd) in table.items():
            if ppid != parent:
                continue
            frontier.append(pid)
            if parent == me and _INFRA.search(cmd):
                continue
            if state != "Z":
                found.append((pid, cmd))
    return found


def _tagged_shm():
    try:
        return {n for n in os.listdir("/dev/shm") if _TAG in n}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a child process or a fastmp-named object in
    /dev/shm behind (after a short grace period), and clean up after it."""
    before = _tagged_shm()
    yield
    deadline = time.monotonic() + _GRACE
    while True:
        strays = _stray_descendants()
        new_shm = _tagged_shm() - before
        if not strays and not new_shm:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid, _ in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for name in new_shm:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except OSError:
            pass
    problems = []
    if strays:
        problems.append("child processes left running: %r" % (strays,))
    if new_shm:
        problems.append("objects left in /dev/shm: %r" % (sorted(new_shm),))
    pytest.fail("; ".join(problems))
