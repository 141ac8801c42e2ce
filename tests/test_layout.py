"""The C tree's layering (tools/check_layers.py): each folder of
Modules/_fastmp includes only its own headers and those of the folders
below it, by their path from Modules/_fastmp; pthread_atfork is
registered once, by the fork tracker core/fork.c; and only core/spin.{c,h}
define spin budgets or spin."""
import os
import subprocess
import sys

import pytest

from support import ROOT

CHECKER = os.path.join(ROOT, "tools", "check_layers.py")
TREE = os.path.join(ROOT, "Modules", "_fastmp")


def _check(tree):
    return subprocess.run([sys.executable, CHECKER, tree], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.timeout(90)
def test_folders_include_only_the_layers_below():
    done = _check(TREE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


@pytest.mark.timeout(90)
def test_checker_reports_an_include_of_a_layer_above(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "wire.h").write_text("")
    (tmp_path / "core" / "errors.c").write_text('#include "pool/wire.h"\n')
    done = _check(str(tmp_path))
    assert done.returncode == 1
    assert 'core/errors.c: #include "pool/wire.h": pool/ is above core/' in done.stdout


@pytest.mark.timeout(90)
def test_checker_reports_pthread_atfork_outside_the_fork_tracker(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "queues").mkdir()
    (tmp_path / "core" / "fork.c").write_text(
        "static int setup(void) { return pthread_atfork(a, b, c); }\n")
    (tmp_path / "queues" / "feeder.c").write_text(
        "int refresh(void) { return pthread_atfork(NULL, NULL, renew); }\n")
    done = _check(str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "queues/feeder.c: pthread_atfork outside core/fork.c "
        "(add fork hooks with fastmp_fork_add_hooks, core/fork.h)"]


@pytest.mark.timeout(90)
def test_checker_reports_a_fork_tracker_without_its_one_registration(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "fork.c").write_text(
        "void install(void) { pthread_atfork(a, b, c); pthread_atfork(d, e, f); }\n")
    done = _check(str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "core/fork.c: calls pthread_atfork 2 times, not once"]


@pytest.mark.timeout(90)
def test_checker_reports_a_spin_outside_core_spin(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "queues").mkdir()
    (tmp_path / "core" / "spin.c").write_text("#define SPIN_NS 50000\nvoid f(void) { sched_yield(); }\n")
    (tmp_path / "core" / "fork.c").write_text("int setup(void) { return pthread_atfork(a, b, c); }\n")
    (tmp_path / "queues" / "ring.c").write_text(
        "/* sched_yield() in a comment is fine */\n"
        "#define LINGER_NS 5000\n"
        "static void wait(void) { while (!ready()) { fastmp_cpu_relax(); (void)sched_yield(); } }\n")
    done = _check(str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "queues/ring.c: #define LINGER_NS: spin budgets belong in core/spin.c",
        "queues/ring.c: fastmp_cpu_relax: spin through fastmp_spin (core/spin.h)",
        "queues/ring.c: sched_yield: spin through fastmp_spin (core/spin.h)",
    ]
