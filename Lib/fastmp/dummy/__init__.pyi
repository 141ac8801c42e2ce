# Type information for fastmp.dummy (written for fastmp).
import array
import threading
from builtins import dict as dict, list as list
from collections.abc import Callable, Iterable, Mapping
from queue import Queue as Queue
from threading import (Barrier as Barrier, BoundedSemaphore as BoundedSemaphore, Condition as Condition,
                       Event as Event, Lock as Lock, RLock as RLock, Semaphore as Semaphore)
from types import ModuleType
from typing import Any, Generic, TypeVar

from fastmp._proxies import Namespace as Namespace
from fastmp.dummy.connection import Pipe as Pipe
from fastmp.pool import ThreadPool

__all__ = ['Process', 'current_process', 'active_children', 'freeze_support', 'Lock', 'RLock', 'Semaphore',
           'BoundedSemaphore', 'Condition', 'Event', 'Barrier', 'Queue', 'Manager', 'Pipe', 'Pool',
           'JoinableQueue']

_T = TypeVar('_T')

class DummyProcess(threading.Thread):
    def __init__(
        self, group: None = None, target: Callable[..., object] | None = None, name: str | None = None,
        args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
    ) -> None: ...
    @property
    def exitcode(self) -> int | None: ...

Process = DummyProcess
JoinableQueue = Queue

def current_process() -> threading.Thread: ...
def active_children() -> list[DummyProcess]: ...
def freeze_support() -> None: ...
def Array(typecode: str, sequence: Iterable[Any], lock: object = True) -> array.array[Any]: ...

class Value(Generic[_T]):
    value: _T
    def __init__(self, typecode: str, value: _T, lock: object = True) -> None: ...

def Pool(
    processes: int | None = None, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
) -> ThreadPool: ...
def Manager() -> ModuleType: ...
def shutdown() -> None: ...
