"""Named POSIX shared memory segments (SharedMemory) and a fixed-length
list stored in one (ShareableList).

Segments this package names itself are called ``fmp-<root pid>-<hex>``
(see ``fastmp._names``).  A segment is registered with the resource
tracker while a process uses it (unless ``track=False``), so one that a
program forgets to unlink is removed when the program ends, even if its
processes were killed.
"""
import functools
import os
import struct
import types

from . import _names, resource_tracker
from ._fastmp import shm_map as _shm_map, shm_unlink as _shm_unlink

__all__ = ['SharedMemory', 'ShareableList']

_USE_POSIX = True
_SHM_NAME_PREFIX = '/fmp-'


def _make_filename():
    """A fresh segment name, with the leading slash POSIX wants."""
    return '/' + _names.fresh_name('fmp')


class SharedMemory:
    """``SharedMemory(name=None, create=False, size=0, *, track=True)``

    Create a new segment (``create=True``; a fresh name if `name` is None)
    or attach to the existing segment `name`.  ``buf`` is a memoryview of
    its bytes.  ``close()`` detaches this handle; ``unlink()`` destroys the
    segment and should be called once, by one process.  With
    ``track=False`` the resource tracker leaves the segment alone, so it
    outlives the program unless someone unlinks it.
    """

    # Class-level defaults, so close()/unlink() work on a half-built object;
    # subclasses may change _flags/_mode (create-or-attach, permissions).
    # No file descriptor is kept: the mapping alone holds the segment.
    _name = None
    _mmap = None
    _buf = None
    _flags = os.O_RDWR
    _mode = 0o600
    _prepend_leading_slash = True
    _track = True

    def __init__(self, name=None, create=False, size=0, *, track=True):
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create:
            self._flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
        if name is None and not self._flags & os.O_EXCL:
            raise ValueError("'name' can only be None if create=True")
        self._track = track
        if name is None:
            self._name, self._mmap = self._map_fresh(size)
        else:
            self._name = '/' + name if self._prepend_leading_slash else name
            self._mmap = _shm_map(self._name, self._flags, self._mode, size)
        if track:
            resource_tracker.register(self._name, "shared_memory")
        self._size = self._mmap.size
        self._buf = memoryview(self._mmap)

    def _map_fresh(self, size):
        """(name, mapping) of a new segment under an unused name."""
        while True:
            candidate = _make_filename()
            try:
                return candidate, _shm_map(candidate, self._flags, self._mode, size)
            except FileExistsError:
                continue

    def __del__(self):
        # no module global here: late in shutdown they are None
        try:
            self.close()
        except OSError:
            pass

    def __reduce__(self):
        # the receiver attaches by name
        return type(self), (self.name, False, self.size)

    def __repr__(self):
        return '%s(%r, size=%d)' % (type(self).__name__, self.name, self.size)

    @property
    def buf(self):
        """A memoryview of the segment's bytes."""
        return self._buf

    @property
    def name(self):
        """The segment's name, as given to attach to it."""
        if self._prepend_leading_slash and self._name.startswith('/'):
            return self._name[1:]
        return self._name

    @property
    def size(self):
        """Size in bytes."""
        return self._size

    def close(self):
        """Detach this handle; the segment itself stays.  BufferError while
        views taken from ``buf`` are still alive."""
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        if self._mmap is not None:
            mapping, self._mmap = self._mmap, None
            mapping.close()

    def unlink(self):
        """Destroy the segment (FileNotFoundError if it is already gone).
        Handles that are still open keep their memory until closed."""
        if self._name:
            _shm_unlink(self._name)
            if self._track:
                resource_tracker.unregister(self._name, "shared_memory")


_ENCODING = 'utf8'
_SLOT = 8          # every item's slot is a multiple of 8 bytes

# An item's kind, stored in one byte per item.
_NUMBER, _STR, _BYTES, _NONE = range(4)

# struct formats of the fixed-size kinds; str and bytes use '<n>s'
_FIXED_FORMATS = {
    int: 'q',
    float: 'd',
    bool: 'xxxxxxx?',
    type(None): 'xxxxxx?x',
}


def _kind_of(value):
    if isinstance(value, str):
        return _STR
    if isinstance(value, bytes):
        return _BYTES
    if value is None:
        return _NONE
    return _NUMBER


def _format_for(value):
    """The struct format of `value`'s slot when it is first stored."""
    if isinstance(value, (str, bytes)):
        return '%ds' % (_SLOT * (len(value) // _SLOT + 1))
    return _FIXED_FORMATS[type(value)]


def _slot_size(fmt):
    return int(fmt[:-1]) if fmt.endswith('s') else _SLOT


def _decode(kind, raw):
    if kind == _STR:
        return raw.rstrip(b'\0').decode(_ENCODING)
    if kind == _BYTES:
        return raw.rstrip(b'\0')
    if kind == _NONE:
        return None
    return raw


class ShareableList:
    """``ShareableList(sequence=None, *, name=None)``: a list of int, float,
    bool, str, bytes and None items in a shared memory segment.

    Its length is fixed; an item may be replaced by one of another type, a
    str or bytes item only by one that fits the space first allocated for
    it.  ``ShareableList(name=...)`` attaches to an existing list.

    Segment layout (the standard package's, so both can share a list):
    item count (q); N+1 slot offsets into the data area (q each); the data
    area; each item's struct format (8s each); each item's kind (b each).
    """

    def __init__(self, sequence=None, *, name=None):
        if name is None or sequence is not None:
            items = tuple(sequence or ())
            formats = [_format_for(item) for item in items]
            offsets = [0]
            for fmt in formats:
                offsets.append(offsets[-1] + _slot_size(fmt))
            self._set_layout(offsets)
            self.shm = SharedMemory(name, create=True, size=self._kinds_start + len(items))
            self._write_new(items, formats)
        else:
            self.shm = SharedMemory(name)
            count = struct.unpack_from('q', self.shm.buf, 0)[0]
            self._set_layout(list(struct.unpack_from('%dq' % (count + 1), self.shm.buf, 8)))

    def _set_layout(self, offsets):
        """Record where the parts of the segment start, given the N+1 slot
        offsets."""
        self._allocated_offsets = offsets
        self._list_len = count = len(offsets) - 1
        self._data_start = 8 * (count + 2)
        self._formats_start = self._data_start + offsets[-1]
        self._kinds_start = self._formats_start + 8 * count

    def _write_new(self, items, formats):
        buf, count = self.shm.buf, self._list_len
        struct.pack_into('%dq' % (count + 2), buf, 0, count, *self._allocated_offsets)
        struct.pack_into(''.join(formats), buf, self._data_start,
                         *(item.encode(_ENCODING) if isinstance(item, str) else item
                           for item in items))
        struct.pack_into('8s' * count, buf, self._formats_start,
                         *(fmt.encode(_ENCODING) for fmt in formats))
        struct.pack_into('%db' % count, buf, self._kinds_start, *map(_kind_of, items))

    def _check_position(self, position):
        if not 0 <= position < self._list_len:
            raise IndexError("Requested position out of range.")

    def _get_packing_format(self, position):
        """The struct format of the item at `position`."""
        position = position if position >= 0 else position + self._list_len
        self._check_position(position)
        (fmt,) = struct.unpack_from('8s', self.shm.buf, self._formats_start + position * 8)
        return fmt.rstrip(b'\0').decode(_ENCODING)

    def _kind_at(self, position):
        return self.shm.buf[self._kinds_start + position]

    def _set_format_and_kind(self, position, fmt, value):
        struct.pack_into('8s', self.shm.buf, self._formats_start + position * 8,
                         fmt.encode(_ENCODING))
        self.shm.buf[self._kinds_start + position] = _kind_of(value)

    # -- list API ----------------------------------------------------------

    def __getitem__(self, position):
        position = position if position >= 0 else position + self._list_len
        try:
            self._check_position(position)
        except IndexError:
            raise IndexError("index out of range") from None
        (raw,) = struct.unpack_from(self._get_packing_format(position), self.shm.buf,
                                    self._data_start + self._allocated_offsets[position])
        return _decode(self._kind_at(position), raw)

    def __setitem__(self, position, value):
        position = position if position >= 0 else position + self._list_len
        try:
            self._check_position(position)
        except IndexError:
            raise IndexError("assignment index out of range") from None
        start = self._allocated_offsets[position]
        if isinstance(value, (str, bytes)):
            room = self._allocated_offsets[position + 1] - start
            stored = value.encode(_ENCODING) if isinstance(value, str) else value
            if len(stored) > room:
                raise ValueError("bytes/str item exceeds available storage")
            fmt = '%ds' % room
        else:
            stored = value
            fmt = _FIXED_FORMATS[type(value)]
        self._set_format_and_kind(position, fmt, value)
        struct.pack_into(fmt, self.shm.buf, self._data_start + start, stored)

    def __len__(self):
        return struct.unpack_from('q', self.shm.buf, 0)[0]

    def __reduce__(self):
        return functools.partial(type(self), name=self.shm.name), ()

    def __repr__(self):
        return '%s(%s, name=%r)' % (type(self).__name__, list(self), self.shm.name)

    @property
    def format(self):
        """The struct formats of all items, concatenated."""
        return ''.join(self._get_packing_format(i) for i in range(self._list_len))

    def count(self, value):
        """Number of items equal to `value`."""
        return sum(1 for item in self if value == item)

    def index(self, value):
        """Position of the first item equal to `value`; ValueError if none
        (worded as list.index words it, as the standard package does from
        3.14)."""
        for position, item in enumerate(self):
            if value == item:
                return position
        raise ValueError("ShareableList.index(x): x not in list")

    __class_getitem__ = classmethod(types.GenericAlias)
