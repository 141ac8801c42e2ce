# Type information for fastmp.popen_forkserver (written for fastmp).
from fastmp import popen_fork

__all__ = ['Popen']

class _DupFd:
    position: int
    def __init__(self, position: int) -> None: ...
    def detach(self) -> int: ...

class Popen(popen_fork.Popen):
    DupFd = _DupFd
