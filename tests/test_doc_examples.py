"""The documentation's example programs (../shared/doc-examples) run
unchanged under `python -m fastmp` and print what they print on the
standard package, up to pids, worker numbers, timings and ordering."""
import os
import re
import subprocess
import sys

import pytest

from support import SHARED, child_env

DOC_EXAMPLES = os.path.join(SHARED, "doc-examples")

def _examples():
    if not os.path.isdir(DOC_EXAMPLES):
        return []
    return sorted(f for f in os.listdir(DOC_EXAMPLES) if f.endswith(".py"))


_CTIME = re.compile(r"\b[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\b")
_WORKER = re.compile(r"\b((?:Fork|Spawn|ForkServer)?PoolWorker|Process)-\d+(?::\d+)*")
_PIDLIKE = re.compile(r"\b\d{3,7}\b")


def normalize(text):
    """The multiset of printed characters of `text` (children's prints may
    interleave mid-line), with pids, worker numbers, clock times and the
    progress dots of timeout loops taken out."""
    text = text.replace("fastmp", "multiprocessing")
    text = _CTIME.sub("TIME", text)
    text = _WORKER.sub(r"\1-N", text)
    text = _PIDLIKE.sub("N", text)
    lines = [re.sub(r"\.+$", "", line.rstrip()) for line in text.splitlines()]
    return sorted("".join(lines).replace(" ", "").replace("\t", ""))


def _last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1].replace("fastmp", "multiprocessing") if lines else ""


# Programs that exit without joining the children they gave a lock: under
# forkserver and spawn (the default from 3.14) a child may start after the
# parent's exit unlinked that lock, on both packages alike, so what they
# print is a race.  They run under fork, the method they were written for.
_RUN_UNDER_FORK = {"lock_print.py"}
_UNDER_FORK = ("import sys, runpy{install}; import multiprocessing; "
               "multiprocessing.set_start_method('fork'); sys.argv[:] = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")


def _argv(example, fastmp):
    """The command line that runs `example` on fastmp or on the standard package."""
    if example in _RUN_UNDER_FORK:
        install = ", fastmp; fastmp.install()" if fastmp else ""
        return ["-c", _UNDER_FORK.format(install=install), example]
    return ["-m", "fastmp", example] if fastmp else [example]


def _start(argv):
    return subprocess.Popen([sys.executable, *argv], cwd=DOC_EXAMPLES,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=child_env())


@pytest.mark.timeout(100)
@pytest.mark.parametrize("example", _examples() or ["<none>"])
def test_doc_example_matches_stdlib(example):
    if example == "<none>":
        pytest.skip("../shared/doc-examples is not present in this checkout")
    # Both runs at once: the slow examples mostly sleep.
    ours = _start(_argv(example, fastmp=True))
    theirs = _start(_argv(example, fastmp=False))
    try:
        our_out, our_err = ours.communicate(timeout=80)
        their_out, their_err = theirs.communicate(timeout=80)
    finally:
        for p in (ours, theirs):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert ours.returncode == theirs.returncode, (our_err, their_err)
    assert normalize(our_out) == normalize(their_out), (our_out, their_out)
    if theirs.returncode != 0:
        assert _last_line(our_err) == _last_line(their_err)
