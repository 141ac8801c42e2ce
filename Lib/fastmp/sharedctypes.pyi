# Type information for fastmp.sharedctypes (written for fastmp).
import ctypes
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload
from weakref import WeakKeyDictionary

from fastmp.context import BaseContext
from fastmp.synchronize import Lock, RLock

__all__ = ['RawValue', 'RawArray', 'Value', 'Array', 'copy', 'synchronized']

_T = TypeVar('_T')
_CT = TypeVar('_CT', bound=ctypes._CData)
_Guard = Literal[True] | Lock | RLock

typecode_to_type: dict[str, type[ctypes._SimpleCData[Any]]]
class_cache: WeakKeyDictionary[type[ctypes._CData], type[SynchronizedBase[Any]]]

@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
@overload
def RawArray(typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> ctypes.Array[Any]: ...
@overload
def Value(
    typecode_or_type: type[ctypes._SimpleCData[_T]], *args: Any, lock: _Guard = True, ctx: BaseContext | None = None
) -> Synchronized[_T]: ...
@overload
def Value(typecode_or_type: type[_CT], *args: Any, lock: Literal[False], ctx: BaseContext | None = None) -> _CT: ...
@overload
def Value(typecode_or_type: str, *args: Any, lock: _Guard = True, ctx: BaseContext | None = None) -> Synchronized[Any]: ...
@overload
def Value(
    typecode_or_type: str | type[ctypes._CData], *args: Any, lock: bool | Lock | RLock = True,
    ctx: BaseContext | None = None,
) -> Any: ...
@overload
def Array(
    typecode_or_type: type[ctypes.c_char], size_or_initializer: int | Sequence[Any], *, lock: _Guard = True,
    ctx: BaseContext | None = None,
) -> SynchronizedString: ...
@overload
def Array(
    typecode_or_type: type[ctypes._SimpleCData[_T]], size_or_initializer: int | Sequence[Any], *, lock: _Guard = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[_T]: ...
@overload
def Array(
    typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any], *, lock: Literal[False],
    ctx: BaseContext | None = None,
) -> ctypes.Array[_CT]: ...
@overload
def Array(
    typecode_or_type: str, size_or_initializer: int | Sequence[Any], *, lock: _Guard = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[Any]: ...
@overload
def Array(
    typecode_or_type: str | type[ctypes._CData], size_or_initializer: int | Sequence[Any], *,
    lock: bool | Lock | RLock = True, ctx: BaseContext | None = None,
) -> Any: ...
def copy(obj: _CT) -> _CT: ...
@overload
def synchronized(
    obj: ctypes._SimpleCData[_T], lock: Lock | RLock | None = None, ctx: BaseContext | None = None
) -> Synchronized[_T]: ...
@overload
def synchronized(
    obj: ctypes.Array[ctypes.c_char], lock: Lock | RLock | None = None, ctx: BaseContext | None = None
) -> SynchronizedString: ...
@overload
def synchronized(
    obj: ctypes.Array[ctypes._SimpleCData[_T]], lock: Lock | RLock | None = None, ctx: BaseContext | None = None
) -> SynchronizedArray[_T]: ...
@overload
def synchronized(obj: _CT, lock: Lock | RLock | None = None, ctx: BaseContext | None = None) -> SynchronizedBase[_CT]: ...
def make_property(name: str) -> property: ...
def reduce_ctype(obj: ctypes._CData) -> tuple[Callable[..., Any], tuple[Any, ...]]: ...
def rebuild_ctype(type_: type[_CT], wrapper: Any, length: int | None) -> Any: ...

class SynchronizedBase(Generic[_CT]):
    # the lock's own methods
    acquire: Callable[..., bool]
    release: Callable[[], None]
    def __init__(self, obj: _CT, lock: Lock | RLock | None = None, ctx: BaseContext | None = None) -> None: ...
    def get_obj(self) -> _CT: ...
    def get_lock(self) -> Lock | RLock: ...
    def __enter__(self) -> bool: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]: ...

class Synchronized(SynchronizedBase[ctypes._SimpleCData[_T]], Generic[_T]):
    value: _T

class SynchronizedArray(SynchronizedBase[ctypes.Array[ctypes._SimpleCData[_T]]], Generic[_T]):
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, key: int, /) -> _T: ...
    @overload
    def __getitem__(self, key: slice, /) -> list[_T]: ...
    @overload
    def __setitem__(self, key: int, value: _T, /) -> None: ...
    @overload
    def __setitem__(self, key: slice, value: Sequence[_T], /) -> None: ...

class SynchronizedString(SynchronizedArray[bytes]):
    @property
    def value(self) -> bytes: ...
    @value.setter
    def value(self, value: bytes) -> None: ...
    @property
    def raw(self) -> bytes: ...
    @raw.setter
    def raw(self, value: bytes) -> None: ...
