# Type information for fastmp._multiprocessing, the stand-in for the C
# module _multiprocessing (written for fastmp).
from typing_extensions import Self, disjoint_base

from fastmp.synchronize import sem_unlink as sem_unlink

__all__ = ['SemLock', 'sem_unlink', 'flags']

flags: dict[str, int]

@disjoint_base
class SemLock:
    SEM_VALUE_MAX: int
    kind: int
    maxvalue: int
    @property
    def handle(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    def __new__(cls, kind: int, value: int, maxvalue: int, name: str, unlink: bool) -> Self: ...
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *args: object) -> None: ...
