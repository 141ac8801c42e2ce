# Type information for fastmp.pool (written for fastmp).
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import GenericAlias, TracebackType
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from fastmp.context import BaseContext, ProcessError as ProcessError, TimeoutError as TimeoutError
from fastmp.process import BaseProcess

__all__ = ['Pool', 'ThreadPool']

_S = TypeVar('_S')
_T = TypeVar('_T')

INIT: str
RUN: str
CLOSE: str
TERMINATE: str

class RemoteTraceback(Exception):
    tb: str
    def __init__(self, tb: str) -> None: ...

class MaybeEncodingError(Exception):
    exc: str
    value: str
    def __init__(self, exc: object, value: object) -> None: ...

class WorkerLostError(ProcessError):
    """A worker exited before finishing its task (fastmp's addition)."""
    pid: int | None
    exitcode: int | None
    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None: ...

def worker(
    channel: Any, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
    maxtasks: int | None = None,
) -> None: ...

class ApplyResult(Generic[_T]):
    def __init__(
        self, pool: Any, callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None, ntasks: int = 1,
    ) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def get(self, timeout: float | None = None) -> _T: ...
    def __class_getitem__(cls, item: Any, /) -> GenericAlias: ...

AsyncResult = ApplyResult

class MapResult(ApplyResult[list[_T]]):
    def __init__(
        self, pool: Any, chunksize: int, length: int, callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None: ...

class IMapIterator(Iterator[_T]):
    def __init__(self, pool: Any, feeder: Any = None) -> None: ...
    def __iter__(self) -> Self: ...
    def next(self, timeout: float | None = None) -> _T: ...
    def __next__(self, timeout: float | None = None) -> _T: ...

class IMapUnorderedIterator(IMapIterator[_T]): ...

class Pool:
    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | None = None,
    ) -> None: ...
    @staticmethod
    def Process(ctx: BaseContext, *args: Any, **kwds: Any) -> BaseProcess: ...
    def __reduce__(self) -> Any: ...
    def __del__(self, _warn: Callable[..., object] = ..., RUN: str = ...) -> None: ...
    def apply(self, func: Callable[..., _T], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}) -> _T: ...
    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> ApplyResult[_T]: ...
    def map(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None) -> list[_T]: ...
    def starmap(
        self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[_T]: ...
    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]: ...
    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]: ...
    def imap(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int = 1, buffersize: int | None = None
    ) -> IMapIterator[_T]: ...
    def imap_unordered(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int = 1, buffersize: int | None = None
    ) -> IMapIterator[_T]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None: ...

class ThreadPool(Pool):
    def __init__(
        self, processes: int | None = None, initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None: ...
