# Type information for fastmp._pipe_pool (written for fastmp).
from typing import Any

from fastmp import pool

__all__ = ['PipePool', 'worker']

def worker(inqueue: Any, outqueue: Any, initializer: Any = None, initargs: tuple[Any, ...] = (),
           maxtasks: int | None = None) -> None: ...

class PipePool(pool.Pool): ...
