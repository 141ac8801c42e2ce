"""Names for the kernel objects fastmp creates (named semaphores, shared
memory segments): ``fmp-<root pid>-<random hex>``.

The root pid is that of the first process of the program that imported
fastmp; children inherit it through the environment, so every object a
program tree creates carries the same tag.  That tells an operator (and the
test-suite's leak check) which program a stray object in /dev/shm came from.
"""

__all__ = ['fresh_name', 'root_pid']

import os
import secrets

_ROOT_ENV = "FASTMP_ROOT_PID"

root_pid = os.environ.setdefault(_ROOT_ENV, str(os.getpid()))


def fresh_name(kind="fmp"):
    """A new unique name ``<kind>-<root pid>-<16 hex digits>`` (no slash)."""
    return "%s-%s-%s" % (kind, root_pid, secrets.token_hex(8))
