# Type information for fastmp._standard_shape (written for fastmp).
from collections.abc import Callable, Mapping

__all__ = ['take_standard_shape']

def take_standard_shape(cls: type, mechanics: frozenset[str],
                        counterparts: Callable[[], Mapping[type, type | None]]) -> None: ...
