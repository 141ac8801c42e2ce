"""Names for the kernel objects fastmp creates (named semaphores, shared
memory segments): ``fmp-<root pid>-<random hex>``.

The root pid is that of the first process of the program that imported
fastmp, so every object a program tree creates carries the same tag.  That
tells an operator (and the test-suite's leak check) which program a stray
object in /dev/shm came from.  It reaches the program's other processes
without touching the environment: a forked child has it in the memory it
inherits (popen_fork imports this module before the first fork), a spawned
child gets it with its preparation data and the forkserver with its
arguments, and each adopts it before running any of the program's code.
"""

__all__ = ['fresh_name', 'root_pid']

import os

root_pid = str(os.getpid())


def adopt_root_pid(pid):
    """Take `pid`, the root pid of the process that started this one, as
    this process's (a spawned child, the forkserver)."""
    global root_pid
    root_pid = str(pid)


def fresh_name(kind="fmp"):
    """A new unique name ``<kind>-<root pid>-<16 hex digits>`` (no slash)."""
    return "%s-%s-%s" % (kind, root_pid, os.urandom(8).hex())
