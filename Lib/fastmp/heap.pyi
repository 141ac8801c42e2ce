# Type information for fastmp.heap (written for fastmp).
from collections.abc import Callable
from typing import Any

from fastmp import _fastmp
from fastmp._fastmp import Arena as Arena
from fastmp.reduction import _Detachable

__all__ = ['BufferWrapper']

class Heap(_fastmp.Heap): ...

class BufferWrapper(_fastmp.BufferWrapper):
    _heap: Heap
    def __reduce__(self) -> tuple[Callable[..., BufferWrapper], tuple[Any, ...]]: ...

def reduce_arena(arena: Arena) -> tuple[Callable[..., Arena], tuple[int, _Detachable]]: ...
def rebuild_arena(size: int, dupfd: _Detachable) -> Arena: ...
