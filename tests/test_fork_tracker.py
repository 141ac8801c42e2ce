"""fastmp's one fork tracker (Modules/_fastmp/core/fork.c), internals that
the standard package has no counterpart of: the parts' fork hooks run
once per fork however many instances of the extension module exist, and
the cached pid is the child's own in a child made by os.fork() directly."""
import os

import fastmp
from fastmp import queues

from support import run_python

SECOND_INSTANCE = r'''
import importlib.util, os
import fastmp, fastmp._fastmp as first

# a multi-phase module's every load runs its exec, and so adds its
# parts' fork hooks again
spec = importlib.util.spec_from_file_location(first.__name__, first.__file__)
second = importlib.util.module_from_spec(spec)
spec.loader.exec_module(second)
assert second is not first

with fastmp.get_context('fork').Pool(1) as pool:
    assert pool.apply(abs, (-3,)) == 3
    # a prepare hook run twice takes the pool engine's lock twice and
    # the fork never returns
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
'''


def test_second_module_instance_does_not_run_hooks_twice():
    done = run_python("-c", SECOND_INSTANCE, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['7']


def test_queue_feeder_in_a_child_made_by_os_fork():
    # bigger than the ring: each put goes through the putting process's
    # feeder thread, which the child must start for itself (a stale pid
    # would make it take over the parent's, which it does not have)
    big = b'p' * (queues.RING_BYTES * 2)
    q = fastmp.get_context('fork').Queue()
    q.put(big)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            q.put(b'c' * len(big))
            q.close()
            q.join_thread()
            code = 0
        finally:
            os._exit(code)
    got = sorted(q.get(timeout=60)[:1] for _ in range(2))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == [b'c', b'p']
