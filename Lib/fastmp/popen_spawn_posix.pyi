# Type information for fastmp.popen_spawn_posix (written for fastmp).
from fastmp import popen_fork

__all__ = ['Popen']

class _DupFd:
    fd: int
    def __init__(self, fd: int) -> None: ...
    def detach(self) -> int: ...

class Popen(popen_fork.Popen):
    DupFd = _DupFd
