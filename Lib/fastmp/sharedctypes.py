"""ctypes objects in shared memory, optionally guarded by a lock.

The objects are real ctypes instances laid over a block of the shared heap
(``fastmp.heap``), so ``memoryview(obj)`` and ``numpy.frombuffer(obj)`` see
the shared bytes.  The synchronized wrappers are built on C cores: reading
or writing ``.value`` of a simple number, or one element of an array of
simple numbers, takes the lock and touches the memory in C.
"""
import ctypes
import weakref

from . import context, heap, reduction
from ._fastmp import (SynchronizedCore as _Core, SynchronizedValueCore as _ValueCore,
                      SynchronizedArrayCore as _ArrayCore, raw_array_attach,
                      raw_array_fast_indexing)
from .context import assert_spawning

__all__ = ['RawValue', 'RawArray', 'Value', 'Array', 'copy', 'synchronized']

typecode_to_type = dict(zip('cubBhHiIlLqQfd', (
    ctypes.c_char, ctypes.c_wchar, ctypes.c_byte, ctypes.c_ubyte,
    ctypes.c_short, ctypes.c_ushort, ctypes.c_int, ctypes.c_uint,
    ctypes.c_long, ctypes.c_ulong, ctypes.c_longlong, ctypes.c_ulonglong,
    ctypes.c_float, ctypes.c_double)))

# The ctypes classes the C accessors load and store themselves (exact
# classes only: subclasses and byte-swapped variants behave differently).
_NUMERIC_CODES = {cls: code for code, cls in typecode_to_type.items() if code not in 'cu'}


# ctypes array type -> the class our arrays of it are made of: for simple
# numbers a subclass whose [i] reads the shared bytes in C, else itself
_array_classes = {}
# fast array class -> element type code
_fast_array_codes = {}


def _array_class(item_type, length):
    """The class of a shared array of `length` `item_type`s."""
    plain = item_type * length
    found = _array_classes.get(plain)
    if found is None:
        found = plain
        code = _NUMERIC_CODES.get(item_type)
        if code is not None:
            fast = type(plain)(plain.__name__, (plain,), {
                '__slots__': ('_fastmp_view',), '__module__': plain.__module__,
                '__doc__': plain.__doc__})
            if raw_array_fast_indexing(fast):
                del fast._fastmp_view  # the slot is the C accessor's alone
                _fast_array_codes[fast] = code
                found = fast
        _array_classes[plain] = found
    return found


def _ctype(typecode_or_type):
    """The ctypes type a type code names, or the ctypes type itself;
    TypeError for anything else."""
    found = typecode_to_type.get(typecode_or_type, typecode_or_type)
    try:
        ctypes.sizeof(found)
    except TypeError as exc:
        raise TypeError('bad typecode %r: expected a ctypes type or one of '
                        'the type codes %s' % (typecode_or_type,
                                               ', '.join(typecode_to_type))
                        ) from exc
    return found


def _default_context():
    return context._default_context.get_context()


def _shared_instance(type_):
    """An instance of ctypes type `type_` over a fresh zeroed heap block."""
    return rebuild_ctype(type_, heap.BufferWrapper(ctypes.sizeof(type_)), None)


def RawValue(typecode_or_type, *args):
    """A ctypes object of the given type code or ctypes type, allocated in
    shared memory and initialised with `args`."""
    obj = _shared_instance(_ctype(typecode_or_type))
    if args:
        obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    """A ctypes array in shared memory: `size_or_initializer` zeroed
    elements, or a copy of the given sequence."""
    item_type = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _shared_instance(_array_class(item_type, size_or_initializer))
    array = _shared_instance(_array_class(item_type, len(size_or_initializer)))
    array.__init__(*size_or_initializer)
    return array


def _guard(obj, lock, ctx):
    """Wrap `obj` in a synchronized wrapper unless `lock` is False."""
    if lock is False:
        return obj
    if lock in (True, None):
        lock = (ctx or _default_context()).RLock()
    elif not hasattr(lock, 'acquire'):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return synchronized(obj, lock, ctx=ctx)


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """A shared ctypes value, guarded by a new RLock (lock=True), by the
    given lock, or unguarded (lock=False)."""
    return _guard(RawValue(typecode_or_type, *args), lock, ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """A shared ctypes array, guarded as for Value."""
    return _guard(RawArray(typecode_or_type, size_or_initializer), lock, ctx)


def copy(obj):
    """A new shared ctypes object holding a copy of `obj`'s bytes."""
    duplicate = _shared_instance(type(obj))
    ctypes.memmove(ctypes.addressof(duplicate), ctypes.addressof(obj), ctypes.sizeof(obj))
    return duplicate


# Synchronized wrapper classes made for Structure types, per type.
class_cache = weakref.WeakKeyDictionary()


def synchronized(obj, lock=None, ctx=None):
    """Wrap the shared ctypes object `obj` so that access goes through
    `lock` (a new RLock if none is given)."""
    assert not isinstance(obj, SynchronizedBase), 'object already synchronized'
    if isinstance(obj, ctypes._SimpleCData):
        wrapper_class = Synchronized
    elif isinstance(obj, ctypes.Array):
        wrapper_class = SynchronizedString if obj._type_ is ctypes.c_char else SynchronizedArray
    else:
        wrapper_class = class_cache.get(type(obj))
        if wrapper_class is None:
            wrapper_class = class_cache[type(obj)] = _structure_wrapper(type(obj))
    return wrapper_class(obj, lock, ctx)


def _structure_wrapper(struct_type):
    fields = {name: make_property(name) for name, *_ in struct_type._fields_}
    return type('Synchronized' + struct_type.__name__, (SynchronizedBase,), fields)


def make_property(name):
    """A property reading and writing attribute `name` of the wrapped object
    with the lock held."""
    def get(self):
        return self._locked_getattr(name)

    def set(self, value):
        self._locked_setattr(name, value)
    return property(get, set, doc='%s, read and written under the lock' % name)


# ---- pickling -----------------------------------------------------------

def reduce_ctype(obj):
    assert_spawning(obj)
    length = obj._length_ if isinstance(obj, ctypes.Array) else None
    item_type = type(obj) if length is None else obj._type_
    return rebuild_ctype, (item_type, obj._wrapper, length)


def rebuild_ctype(type_, wrapper, length):
    """The ctypes object of `type_` (an array of `length` of them if not
    None) over the bytes of `wrapper`."""
    if length is not None:
        type_ = _array_class(type_, length)
    reduction.ForkingPickler.register(type_, reduce_ctype)
    obj = type_.from_buffer(wrapper)
    obj._wrapper = wrapper
    code = _fast_array_codes.get(type_)
    if code is not None:
        raw_array_attach(obj, code)
    return obj


# ---- synchronized wrappers ----------------------------------------------

class SynchronizedBase(_Core):
    """A shared ctypes object together with the lock that guards it."""

    def __init__(self, obj, lock=None, ctx=None):
        if not lock:
            lock = (ctx or _default_context()).RLock()
        code, length = self._fast_access(obj)
        _Core.__init__(self, obj, lock, code, ctypes.addressof(obj), length)

    @staticmethod
    def _fast_access(obj):
        """(struct code, element count) for the C accessors; code '' means
        they go through ctypes."""
        return '', 0

    def __reduce__(self):
        assert_spawning(self)
        return synchronized, (self._obj, self._lock)

    def __repr__(self):
        return '<%s wrapper for %s>' % (type(self).__name__, self._obj)


class Synchronized(SynchronizedBase, _ValueCore):
    """A shared simple ctypes value; ``.value`` is read and written under
    the lock."""

    @staticmethod
    def _fast_access(obj):
        return _NUMERIC_CODES.get(type(obj), ''), 1


class SynchronizedArray(SynchronizedBase, _ArrayCore):
    """A shared ctypes array; items and slices are read and written under
    the lock."""

    @staticmethod
    def _fast_access(obj):
        return _NUMERIC_CODES.get(obj._type_, ''), len(obj)


class SynchronizedString(SynchronizedArray):
    """A shared array of c_char, with ``.value`` and ``.raw`` under the lock."""

    value = make_property('value')
    raw = make_property('raw')
