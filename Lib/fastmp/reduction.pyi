# Type information for fastmp.reduction (written for fastmp).
import pickle
import socket
from abc import ABCMeta
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

from _typeshed import HasFileno, ReadableBuffer, SupportsWrite

__all__ = ['send_handle', 'recv_handle', 'ForkingPickler', 'register', 'dump', 'DupFd', 'sendfds', 'recvfds']

class _Detachable(Protocol):
    def detach(self) -> int: ...

HAVE_SEND_HANDLE: bool
ACKNOWLEDGE: bool

class ForkingPickler(pickle.Pickler):
    _extra_reducers: ClassVar[dict[type[Any], Callable[[Any], Any]]]
    _copyreg_dispatch_table: ClassVar[dict[type[Any], Callable[[Any], Any]]]
    def __init__(self, *args: Any) -> None: ...
    @classmethod
    def register(cls, type: type[Any], reduce: Callable[[Any], Any]) -> None: ...
    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> bytes | memoryview: ...
    @staticmethod
    def loads(
        data: ReadableBuffer, /, *, fix_imports: bool = True, encoding: str = 'ASCII', errors: str = 'strict',
        buffers: Iterable[Any] | None = (),
    ) -> Any: ...

def register(type: type[Any], reduce: Callable[[Any], Any]) -> None: ...
def dump(obj: Any, file: SupportsWrite[bytes], protocol: int | None = None) -> None: ...
def sendfds(sock: socket.socket, fds: Sequence[int]) -> None: ...
def recvfds(sock: socket.socket, size: int) -> list[int]: ...
def send_handle(conn: HasFileno, handle: int, destination_pid: int | None) -> None: ...
def recv_handle(conn: HasFileno) -> int: ...
def DupFd(fd: int) -> _Detachable: ...

class AbstractReducer(metaclass=ABCMeta):
    ForkingPickler: ClassVar[type[pickle.Pickler]]
    register: ClassVar[Callable[[type[Any], Callable[[Any], Any]], None]]
    dump: ClassVar[Callable[..., None]]
    send_handle: ClassVar[Callable[[HasFileno, int, int | None], None]]
    recv_handle: ClassVar[Callable[[HasFileno], int]]
    sendfds: ClassVar[Callable[[socket.socket, Sequence[int]], None]]
    recvfds: ClassVar[Callable[[socket.socket, int], list[int]]]
    DupFd: ClassVar[Callable[[int], _Detachable]]
    def __init__(self, *args: Any) -> None: ...
