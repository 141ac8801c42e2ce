"""fastmp's stand-in for the C module ``_multiprocessing``: the same names
(``SemLock``, ``sem_unlink``, ``flags``), backed by fastmp._fastmp, so code
written against the standard C module can use fastmp's locks.

fastmp's SemLock keeps its count in a futex word in shared memory.  A named
one is the POSIX shared-memory object ``sem.<name>`` (the file glibc gives a
named semaphore), so the standard ``_multiprocessing.sem_unlink`` removes it
as well as ours does.
"""
from fastmp._fastmp import SemLock, sem_unlink

__all__ = ["SemLock", "sem_unlink", "flags"]

# What the platform offers, as the standard module reports it.
flags = {"HAVE_SEM_OPEN": 1, "HAVE_SEM_TIMEDWAIT": 1}
