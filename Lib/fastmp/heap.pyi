# Type information for fastmp.heap (written for fastmp).
from collections.abc import Callable
from typing import Any

from typing_extensions import Self, disjoint_base

from fastmp.reduction import _Detachable

__all__ = ['BufferWrapper']

@disjoint_base
class Arena:
    """A shared mapping (memfd) that heap blocks are carved from."""
    fd: int
    size: int
    def __new__(cls, size: int, fd: int = -1) -> Self: ...

class Heap:
    def _blocks(self) -> list[tuple[Arena, int, int, bool]]: ...

class BufferWrapper:
    _heap: Heap
    def __new__(cls, size: int) -> Self: ...
    def create_memoryview(self) -> memoryview: ...
    def __reduce__(self) -> tuple[Callable[..., BufferWrapper], tuple[Any, ...]]: ...

def reduce_arena(arena: Arena) -> tuple[Callable[..., Arena], tuple[int, _Detachable]]: ...
def rebuild_arena(size: int, dupfd: _Detachable) -> Arena: ...
