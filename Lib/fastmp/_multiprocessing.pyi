# Type information for fastmp._multiprocessing, the stand-in for the C
# module _multiprocessing (written for fastmp).
from fastmp._fastmp import SemLock as SemLock, sem_unlink as sem_unlink

__all__ = ['SemLock', 'sem_unlink', 'flags']

flags: dict[str, int]
