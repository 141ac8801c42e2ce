"""Helpers shared by the tests: running a separate interpreter, polling,
skipping the standard package where it lacks a feature, checks of
locked() that run against both packages, and sending from a thread."""
import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def child_env(extra=None):
    """os.environ plus `extra`, with PYTHONPATH made absolute so a child
    started in another directory imports the same fastmp."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    env.update(extra or {})
    return env


def run_python(*args, timeout=60, cwd=None, env=None, input=None):
    """Run this interpreter with `args`; return the CompletedProcess (text
    output).  Raises subprocess.TimeoutExpired rather than hang."""
    full_env = child_env(env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env,
                           input=input, capture_output=True, text=True,
                           timeout=timeout)


def wait_for(predicate, timeout=10.0, interval=0.01):
    """Poll `predicate` until it is true or `timeout` passes; return its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@contextlib.contextmanager
def sending_from_a_thread(send, timeout=30.0):
    """Run `send()` in a thread while the body receives, then check that it
    finished and re-raise what it raised.  A sender of descriptors waits for
    the receiver's acknowledgement from 3.14 (in both packages), so sending
    and then receiving in one thread would never return."""
    raised = []

    def run():
        try:
            send()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    thread.join(timeout)
    assert not thread.is_alive(), "the sender did not finish"
    if raised:
        raise raised[0]


def skip_stdlib_before(impl, version, what):
    """Skip the standard package's side of a shared test on an interpreter
    whose `multiprocessing` predates `what` (added in `version`); fastmp
    provides it on every version."""
    if impl.__name__ == "multiprocessing" and sys.version_info < version:
        pytest.skip("the standard package has %s from %d.%d"
                    % ((what,) + tuple(version)))


def check_lock_locked(lock, recursive):
    """locked() of an unheld `lock` is true exactly while some thread holds
    it, at any depth if `recursive`; the lock is left held by a thread that
    has ended."""
    assert lock.locked() is False
    with lock:
        assert lock.locked() is True
        if recursive:
            with lock:
                assert lock.locked() is True
            assert lock.locked() is True
    assert lock.locked() is False
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join()
    assert lock.locked() is True


def check_semaphore_locked(make):
    """locked() of semaphores made by make(value) is true exactly while no
    unit is left."""
    sem = make(2)
    sem.acquire()
    assert sem.locked() is False
    sem.acquire()
    assert sem.locked() is True
    sem.release()
    assert sem.locked() is False
    assert make(0).locked() is True


def drain(it, errors):
    """The items of iterator `it`, with "error" where it raised one of
    `errors` (an imap goes on after a failed task)."""
    out = []
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out
        except errors:
            out.append("error")
