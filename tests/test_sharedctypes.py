"""Shared ctypes values and arrays, with and without locks, across fork,
spawn and forkserver children.

All but the last part is the standard behaviour, written once and run
against fastmp and the standard package.  The last part, "fastmp only",
covers the README's lock-free array deviation ("Shared memory": a subclass of
the ctypes array type whose [i] read runs in C) and the C wrapper's own
paths."""
import ctypes
import importlib
import pickle
import sys

import pytest

import fastmp
from fastmp import sharedctypes

NUMERIC_CODES = "bBhHiIlLqQfd"
ALL_CODES = NUMERIC_CODES + "cu"

# A sample value per type code that survives a round trip exactly.
SAMPLES = {"b": -7, "B": 250, "h": -300, "H": 65000, "i": -70000, "I": 4000000000,
           "l": -(2 ** 40), "L": 2 ** 63, "q": -(2 ** 62), "Q": 2 ** 64 - 1,
           "f": 0.5, "d": 1 / 3, "c": b"x", "u": "\u00e9"}


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double), ("tag", ctypes.c_char * 4)]


# ---- children (module level: spawn/forkserver import them) ----------------

def _set_every_code(values, arrays):
    for code, value in values.items():
        value.value = SAMPLES[code]
    for code, array in arrays.items():
        array[1] = SAMPLES[code]


def _double_structures(point, points):
    point.x *= 2
    point.y *= 2
    for p in points:
        p.x += 100


def _numpy_fill(array):
    import numpy
    numpy.frombuffer(array.get_obj(), dtype=numpy.float64)[:] = numpy.arange(len(array))


def _increment(counter, times):
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def _increment_array(array, times):
    for _ in range(times):
        with array.get_lock():
            array[0] += 1
            array[1] -= 1


def _run(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode == 0


# ---- across processes, on both packages ----------------------------------

def test_every_type_code_in_child(ctx):
    values = {code: ctx.Value(code) for code in ALL_CODES}
    arrays = {code: ctx.Array(code, 3) for code in ALL_CODES}
    _run(ctx, _set_every_code, values, arrays)
    for code in ALL_CODES:
        assert values[code].value == SAMPLES[code], code
        assert arrays[code][1] == SAMPLES[code], code
        assert arrays[code][0] == arrays[code][2] == (b"\0" if code == "c" else
                                                    "\0" if code == "u" else 0)


def test_structure_and_array_of_structures(ctx):
    point = ctx.Value(Point, 3, 1.5, b"ab")
    points = ctx.Array(Point, [(1, 0.0, b"p"), (2, 0.0, b"q")], lock=False)
    _run(ctx, _double_structures, point, points)
    assert (point.x, point.y, point.tag) == (6, 3.0, b"ab")
    assert [(p.x, p.tag) for p in points] == [(101, b"p"), (102, b"q")]


def test_numpy_view_sees_shared_bytes(ctx):
    numpy = pytest.importorskip("numpy")
    array = ctx.Array("d", 5)
    _run(ctx, _numpy_fill, array)
    assert array[:] == [0.0, 1.0, 2.0, 3.0, 4.0]
    view = numpy.frombuffer(array.get_obj(), dtype=numpy.float64)
    view[4] = 42.0
    assert array[4] == 42.0
    assert memoryview(array.get_obj()).cast("B").nbytes == 40


@pytest.mark.timeout(90)
def test_concurrent_increments_are_exact(ctx):
    counter = ctx.Value("i", 0)
    pair = ctx.Array("q", 2)
    workers = [ctx.Process(target=_increment, args=(counter, 1500)) for _ in range(3)]
    workers += [ctx.Process(target=_increment_array, args=(pair, 1500)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(80)
        assert w.exitcode == 0
    assert counter.value == 4500
    assert pair[:] == [3000, -3000]


# ---- behaviour that must match the standard package ------------------------

@pytest.mark.parametrize("code", ALL_CODES)
def test_value_and_array_per_code(impl, code):
    v = impl.Value(code, SAMPLES[code])
    assert v.value == SAMPLES[code]
    a = impl.Array(code, 4)
    a[2] = SAMPLES[code]
    a[-1] = SAMPLES[code]
    assert a[2] == a[3] == SAMPLES[code]
    assert len(a) == 4
    raw = impl.RawValue(code, SAMPLES[code])
    assert raw.value == SAMPLES[code]
    assert type(raw) is sharedctypes.typecode_to_type[code]


@pytest.mark.parametrize("factory, args", [
    ("Value", ()), ("RawValue", ()), ("Array", ([],)), ("RawArray", ([],)),
    ("Array", (3,)), ("RawArray", (3,)), ("Value", (ctypes.c_int(1),))])
@pytest.mark.parametrize("typecode", ["x", "ii", 7, int])
def test_bad_typecode_is_a_type_error(impl, factory, args, typecode):
    with pytest.raises(TypeError) as raised:
        getattr(impl, factory)(typecode, *args)
    # the standard package names the problem from 3.15 (not when it
    # multiplies a non-ctypes type by an array length first)
    if impl is fastmp or (sys.version_info >= (3, 15) and typecode is not int):
        assert "bad typecode" in str(raised.value)


def test_slicing_like_stdlib(impl):
    a = impl.Array("i", range(10))
    assert a[2:5] == [2, 3, 4]
    assert a[::-3] == [9, 6, 3, 0]
    a[1:3] = [-1, -2]
    assert a[:4] == [0, -1, -2, 3]
    with pytest.raises(ValueError):
        a[0:2] = [1, 2, 3]
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(IndexError):
        a[-11] = 0
    assert list(a)[5:] == [5, 6, 7, 8, 9]
    assert 7 in a


@pytest.mark.parametrize("code", NUMERIC_CODES)
def test_lock_free_indexing_like_stdlib(impl, code):
    # fastmp reads [i] of these arrays in C; every index must behave as
    # the standard package's plain ctypes array does
    a = impl.RawArray(code, 5)
    a[3] = SAMPLES[code]
    assert isinstance(a, sharedctypes.typecode_to_type[code] * 5)
    assert (a[3], a[-2], a[0], a[-5]) == (SAMPLES[code], SAMPLES[code], 0, 0)
    assert a[1:4] == [0, 0, SAMPLES[code]]
    for bad, error in ((5, IndexError), (-6, IndexError), (2 ** 70, IndexError),
                       ("1", TypeError), (1.0, TypeError)):
        with pytest.raises(error):
            a[bad]
    assert a[True] == a[1]
    assert memoryview(a).nbytes == 5 * ctypes.sizeof(sharedctypes.typecode_to_type[code])


def test_lock_free_array_reads_shared_bytes(impl, ctx):
    # a read, a copy and a child all see the same bytes
    a = ctx.Array("d", 4, lock=False)
    b = importlib.import_module(impl.__name__ + ".sharedctypes").copy(a)
    a[2] = 2.5
    assert (a[2], b[2]) == (2.5, 0.0)
    _run(ctx, _set_every_code, {}, {"d": a})
    assert a[1] == SAMPLES["d"] and a[-3] == SAMPLES["d"]


@pytest.mark.parametrize("code,value,expected", [
    ("i", 2 ** 32 + 5, 5),       # ctypes truncates integers to the field
    ("B", -1, 255),
    ("h", True, 1),
    ("d", 3, 3.0),
    ("f", 0.1, ctypes.c_float(0.1).value),
])
def test_store_conversions_like_stdlib(impl, code, value, expected):
    v = impl.Value(code)
    v.value = value
    assert v.value == expected
    a = impl.Array(code, 1)
    a[0] = value
    assert a[0] == expected


@pytest.mark.parametrize("code,value,error", [
    ("i", 1.5, TypeError),
    ("d", "x", TypeError),
    ("q", None, TypeError),
    ("d", 10 ** 400, OverflowError),
])
def test_store_errors_like_stdlib(impl, code, value, error):
    v = impl.Value(code, 1)
    with pytest.raises(error):
        v.value = value
    a = impl.Array(code, 1)
    with pytest.raises(error):
        a[0] = value
    assert v.value == 1 and a[0] == 0
    # the lock was released on the error path
    assert v.get_lock().acquire(timeout=1)
    v.get_lock().release()


def test_string_value_and_raw(impl):
    s = impl.Array("c", b"hello world")
    assert s.value == b"hello world"
    s.value = b"hi"
    assert s.raw == b"hi\0lo world"
    s.raw = b"HELLO WORLD"
    assert s[:5] == b"HELLO"
    assert type(s).__name__ == "SynchronizedString"


def test_lock_argument(impl):
    assert isinstance(impl.Value("i", 1, lock=False), ctypes.c_int)
    assert isinstance(impl.Array("i", 2, lock=False), ctypes.Array)
    lock = impl.Lock()
    v = impl.Value("d", 2.0, lock=lock)
    assert v.get_lock() is lock
    rlock = impl.RLock()
    a = impl.Array("i", 3, lock=rlock)
    with a:
        a[0] = 4     # re-entrant under the RLock
    assert a.get_lock() is rlock and a[0] == 4
    with pytest.raises(AttributeError):
        impl.Value("i", lock="nolock")


def test_structure_wrapper_and_repr(impl):
    p = impl.Value(Point, 1, 2.0, b"z")
    assert type(p).__name__ == "SynchronizedPoint"
    p.x = 5
    assert (p.x, p.y) == (5, 2.0)
    assert repr(impl.Value("i", 3)) == "<Synchronized wrapper for c_int(3)>"
    assert repr(impl.Array("i", 1)).startswith("<SynchronizedArray wrapper for <")


def test_copy_and_synchronized(impl):
    ms = importlib.import_module(impl.__name__ + ".sharedctypes")
    original = ms.RawValue(Point, 7, 8.0, b"c")
    duplicate = ms.copy(original)
    original.x = 0
    assert (duplicate.x, duplicate.y, duplicate.tag) == (7, 8.0, b"c")
    wrapped = ms.synchronized(ms.RawArray("i", [1, 2]))
    assert isinstance(wrapped, ms.SynchronizedArray)
    with pytest.raises(AssertionError):
        ms.synchronized(wrapped)


def test_pickling_outside_process_start_fails(impl):
    with pytest.raises(RuntimeError):
        pickle.dumps(impl.Value("i", 1))
    forking_pickler = importlib.import_module(impl.__name__ + ".reduction").ForkingPickler
    with pytest.raises(RuntimeError):
        forking_pickler.dumps(impl.RawArray("i", 1))


def test_wrapper_lock_methods(impl):
    v = impl.Value("i", 0)
    assert v.acquire() is True
    v.release()
    with v as entered:
        assert entered is True
    assert v.get_obj()._wrapper is not None


# ==== fastmp only: the README's lock-free arrays and the C wrapper ==========

@pytest.mark.parametrize("code", NUMERIC_CODES)
def test_lock_free_array_is_a_subclass_of_the_ctypes_array(code):
    """README "Shared memory": a RawArray of a simple numeric code is an
    instance of a subclass of `ctype * n` (whose [i] read runs in C), not
    that type itself, and the C accessor's slot is hidden."""
    a = fastmp.RawArray(code, 3)
    array_type = sharedctypes.typecode_to_type[code] * 3
    assert isinstance(a, array_type) and type(a) is not array_type
    assert not hasattr(type(a), "_fastmp_view")


def test_uninitialised_wrapper_fails_cleanly():
    """Internal (the C wrapper): a wrapper made without __init__ raises
    ValueError instead of reading through a missing object."""
    bare = sharedctypes.Synchronized.__new__(sharedctypes.Synchronized)
    with pytest.raises(ValueError):
        bare.value
    with pytest.raises(ValueError):
        bare.get_obj()


def test_overridden_lock_methods_are_called():
    """Internal (the C wrapper): the C path that takes a lock for .value and
    [i] calls the Python acquire of a lock subclass that overrides it."""
    from fastmp import synchronize
    calls = []

    class TracingRLock(synchronize.RLock):
        def acquire(self, *args, **kwargs):
            calls.append("acquire")
            return super().acquire(*args, **kwargs)

    lock = TracingRLock(ctx=fastmp.get_context())
    v = fastmp.Value("i", 0, lock=lock)
    a = fastmp.Array("i", 2, lock=lock)
    v.value = 5
    a[1] = a[0] + 1
    assert calls == ["acquire"] * 3
    plain = fastmp.Value("i", 0, lock=fastmp.RLock())
    plain.value = 1                       # the C path: nothing to trace
    assert calls == ["acquire"] * 3 and (v.value, a[1], plain.value) == (5, 1, 1)
