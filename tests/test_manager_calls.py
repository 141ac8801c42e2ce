"""The per-call paths of managers: plain-data pickling without a Pickler
(quick_dumps/quick_loads), the proxy's _callmethod and the server's
serve_calls loop, and the requests and replies they hand to Python.

The calls through a manager are the standard behaviour and run against both
packages.  The first part (fastmp only) covers the README's plain-data
manager calls, pickled without a Pickler and still standard pickles; the
last compares the server's queue with queue.Queue (README "Managers")."""
import inspect
import math
import multiprocessing.managers as smanagers
import os
import pickle
import queue
import sys
import threading

import pytest

import fastmp
import fastmp.connection
import fastmp.managers as fmanagers
import fastmp.queues as fqueues
from fastmp._fastmp import exchange_frame, quick_dumps, quick_loads

pytestmark = pytest.mark.timeout(60)

MISSING = object()

PLAIN = [
    None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -2 ** 31,
    2 ** 31 - 1, 2 ** 31, -2 ** 31 - 1, 2 ** 39, -2 ** 39 - 1, 2 ** 47 - 1,
    -2 ** 47, 2 ** 55, -2 ** 55 - 1, 2 ** 63 - 1, -2 ** 63,
    0.0, -0.0, 1.5, float('inf'), -1e300,
    '', 'abc', 'x' * 255, 'x' * 256, 'é€😀', b'', b'ab', b'x' * 300,
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1], [1, 2, [3]],
    {}, {'a': 1}, {'a': 1, 2: (3, [4])}, list(range(200)),
    ('7f00', '__getitem__', (5,), {}), ('#RETURN', 5),
]

NOT_PLAIN = [
    2 ** 63, -2 ** 63 - 1, 10 ** 30, '\ud800', 'x' * 70000, bytearray(b'x'),
    {1, 2}, frozenset(), 1j, Exception('e'), [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]],
    type('S', (str,), {})('sub'),
]


# ==== fastmp only: README "plain data ... pickled without a Pickler" =======

def _same(a, b):
    """Equal, of the same types all the way down (and -0.0 is not 0.0)."""
    return repr(a) == repr(b) and type(a) is type(b)


@pytest.mark.parametrize('obj', PLAIN, ids=lambda o: repr(o)[:20])
def test_quick_dumps_loads_as_pickle_does(obj):
    data = quick_dumps(obj)
    assert data is not None
    assert _same(pickle.loads(data), obj)
    assert _same(quick_loads(data, MISSING), obj)


@pytest.mark.parametrize('obj', PLAIN, ids=lambda o: repr(o)[:20])
@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_quick_loads_reads_pickle_dumps(obj, protocol):
    got = quick_loads(pickle.dumps(obj, protocol), MISSING)
    if protocol < 4 and got is MISSING:
        return      # older protocols pickle some plain types by reduction
    assert _same(got, obj)


@pytest.mark.parametrize('obj', NOT_PLAIN, ids=lambda o: repr(o)[:20])
def test_quick_dumps_leaves_other_objects_to_pickle(obj):
    assert quick_dumps(obj) is None


def test_long_text_met_twice_goes_to_pickle():
    text = ''.join(['y'] * 100)
    assert quick_dumps([text, text]) is None        # pickle writes it once
    assert quick_dumps([text, ''.join(['y'] * 100)]) is not None
    short = ''.join(['y'] * 10)
    assert quick_loads(quick_dumps([short, short]), MISSING) == [short, short]


def test_many_containers():
    nested = [[i, {i: [i]}] for i in range(500)]
    assert quick_loads(quick_dumps(nested), MISSING) == nested


def test_ints_written_as_pickle_writes_them():
    for v in (2 ** 31, -2 ** 31 - 1, 2 ** 39, 2 ** 47 - 1, -2 ** 55 - 1, 2 ** 63 - 1):
        # the same opcode and bytes as pickle's, which wraps them in a FRAME
        assert quick_dumps(v)[2:] == pickle.dumps(v, 4)[11:]


def test_long_lists_round_trip():
    long = list(range(3000))
    assert pickle.loads(quick_dumps(long)) == long     # written in batches
    assert quick_loads(quick_dumps(long), MISSING) == long
    assert quick_loads(pickle.dumps(long), MISSING) in (long, MISSING)


def test_nan_round_trips():
    assert math.isnan(pickle.loads(quick_dumps(float('nan'))))


def test_shared_and_recursive_containers_keep_their_shape():
    inner = [1]
    shared = [inner, inner]
    assert quick_dumps(shared) is None          # needs the memo
    back = quick_loads(pickle.dumps(shared), MISSING)
    assert back == shared and back[0] is back[1]
    loop = []
    loop.append(loop)
    assert quick_dumps(loop) is None
    back = quick_loads(pickle.dumps(loop), MISSING)
    assert back[0] is back


@pytest.mark.parametrize('data', [
    b'', b'\x80', b'\x80\x04', b'\x80\x04N', b'\x80\x04NN.', b'\x80\x04t.',
    b'\x80\x04a.', b'\x80\x04\x8c\x05ab.', b'\x80\x04h\x00.', b'.', b'(.',
    b'\x80\x04K\x01\x94h\x01.', b'\x80\x04N.N', b'\x80\x09N.',
    b'\x80\x04}]Ns.', b'\x80\x04]N(N\x86\x86e.', pickle.dumps(Exception('e')),
])
def test_quick_loads_leaves_malformed_or_other_pickles(data):
    assert quick_loads(data, MISSING) is MISSING


# -- through a manager, on both packages --------------------------------------

@pytest.fixture
def fmanager():
    m = fastmp.get_context('fork').Manager()
    yield m
    m.shutdown()


@pytest.fixture
def manager(impl):
    """A started SyncManager of each package (fork)."""
    m = impl.get_context('fork').Manager()
    yield m
    m.shutdown()


def test_values_cross_unchanged(impl, manager):
    values = PLAIN + NOT_PLAIN[:-3] + [Exception]
    lst = manager.list()
    for v in values:
        lst.append(v)
    got = lst._getvalue()
    assert len(got) == len(values)
    for sent, back in zip(values, got):
        assert repr(sent) == repr(back) and type(sent) is type(back)
    # one at a time, through the fast path of both sides
    for i, v in enumerate(values[:len(PLAIN)]):
        assert _same(lst[i], v)


def test_keyword_arguments_and_callmethod_forms(impl, manager):
    dct = manager.dict({'a': 1})
    assert dct.get('b', 2) == 2
    assert dct.pop('a') == 1
    assert dct._callmethod('setdefault', ('k', 'v')) == 'v'
    assert dct._callmethod(methodname='get', args=('k',)) == 'v'
    assert impl.managers.BaseProxy._callmethod(dct, '__len__') == 1
    lst = manager.list([3, 1, 2])
    lst.sort(reverse=True)
    assert lst._getvalue() == [3, 2, 1]
    with pytest.raises(TypeError):
        dct._callmethod()
    with pytest.raises(TypeError):
        dct._callmethod('get', ('k',), {}, 'extra')
    with pytest.raises(TypeError):
        dct._callmethod('get', methodname='get')
    # the standard package's signature, bound and unbound
    assert (str(inspect.signature(impl.managers.BaseProxy._callmethod))
            == str(inspect.signature(smanagers.BaseProxy._callmethod)))
    assert str(inspect.signature(dct._callmethod)) == '(methodname, args=(), kwds={})'


def test_errors_the_method_raises_come_back(impl, manager):
    lst = manager.list([1])
    with pytest.raises(IndexError):
        lst[5]
    with pytest.raises(ValueError):
        lst.index(42)
    dct = manager.dict()
    with pytest.raises(KeyError):
        dct['missing']
    assert lst[0] == 1      # the connection still serves


def test_requests_left_to_python(impl, manager):
    lst = manager.list([1, 2])
    # not exposed, then the fallbacks every object answers
    with pytest.raises(impl.managers.RemoteError, match='not in exposed'):
        lst._callmethod('__class__')
    assert lst._callmethod('__repr__') == '[1, 2]'
    assert str(lst) == '[1, 2]'
    # a method returning a proxy, and an unknown object id
    dct = manager.dict({'a': 1})
    it = iter(dct)
    assert list(it) == ['a']
    with pytest.raises(impl.managers.RemoteError, match='KeyError'):
        impl.managers.dispatch(lst._tls.connection, 'no-such-id', '__len__')
    assert len(lst) == 2


class _Unpicklable:
    def __reduce__(self):
        raise TypeError('cannot pickle this')


class _Holder:
    def unpicklable(self):
        return _Unpicklable()

    def raises_unpicklable(self):
        raise _UnpicklableError()


class _UnpicklableError(Exception):
    def __reduce__(self):
        raise TypeError('cannot pickle this error')


class _HolderManager(fmanagers.BaseManager):
    pass


class _StdlibHolderManager(smanagers.BaseManager):
    pass


_HolderManager.register('Holder', _Holder)
_StdlibHolderManager.register('Holder', _Holder)


def test_replies_that_do_not_pickle(impl):
    holder_manager = _HolderManager if impl is fastmp else _StdlibHolderManager
    with holder_manager(ctx=impl.get_context('fork')) as m:
        holder = m.Holder()
        with pytest.raises(impl.managers.RemoteError, match='Unserializable'):
            holder.unpicklable()
        with pytest.raises(impl.managers.RemoteError, match='Unserializable'):
            holder.raises_unpicklable()
        assert holder.unpicklable.__name__ == 'unpicklable'
        assert repr(holder._callmethod('__repr__')).startswith("'<")


def test_finalizer_during_a_call_uses_another_connection(impl, manager):
    """A proxy dropped while this thread's connection is mid-exchange (its
    finalizer runs on a GC pass inside the call) sends its decref
    elsewhere, and the call's reply stays the call's."""
    lst = manager.list(range(10))
    before = manager._number_of_objects()
    extra = manager.list()
    gate = threading.Event()

    class Trigger:
        def __reduce__(self):
            # runs while the request is being pickled, mid-exchange
            nonlocal extra
            extra = None
            gate.set()
            return (int, (7,))

    assert lst.count(Trigger()) == 1
    assert gate.is_set()
    assert lst[5] == 5
    assert manager._number_of_objects() == before


def test_a_request_that_does_not_unpickle_gets_a_traceback(impl, manager):
    lst = manager.list([1])
    assert lst[0] == 1          # the proxy's own connection is open
    conn = lst._tls.connection
    conn.send_bytes(b'\x80\x04cno_such_module\nthing\n.')
    kind, text = conn.recv()
    assert kind == '#TRACEBACK' and 'no_such_module' in text
    assert lst[0] == 1


def test_clients_are_served_together_while_one_waits_in_a_method(ctx):
    # Serving threads take turns with the server's GIL; one blocked in a
    # method (a contended Lock) must not hold the others up or make them
    # lose a request.
    with ctx.Manager() as m:
        lock, lst = m.Lock(), m.list()
        lock.acquire()
        blocked = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
        blocked.start()
        errors = []

        def client(tag):
            try:
                for i in range(300):
                    lst.append((tag, i))
                    assert lst[-1][1] >= 0
            except Exception as e:   # reported by the assertion below
                errors.append(e)
        clients = [threading.Thread(target=client, args=(tag,)) for tag in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
        assert blocked.is_alive()
        lock.release()
        blocked.join(30)
        assert not errors and not blocked.is_alive()
        got = lst._getvalue()
        assert sorted(got) == sorted((tag, i) for tag in range(4) for i in range(300))
        for tag in range(4):
            assert [i for t, i in got if t == tag] == list(range(300))


# ==== fastmp only: the queue the server keeps behind manager.Queue() ========

@pytest.fixture(params=['standard', 'shared'])
def queue_type(request):
    """queue.Queue, and the server's faster subclass, which must agree."""
    return queue.Queue if request.param == 'standard' else fmanagers._SharedQueue


def test_shared_queue_agrees_with_queue(queue_type):
    q = queue_type()
    for i in range(3):
        q.put(i)
    assert q.qsize() == 3 and not q.empty() and not q.full()
    assert [q.get(), q.get(block=False), q.get(timeout=1)] == [0, 1, 2]
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    q.put('x')
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    assert q.get_nowait() == 'x'
    bounded = queue_type(1)
    bounded.put(1)
    assert bounded.full()
    with pytest.raises(queue.Full):
        bounded.put(2, timeout=0.01)
    with pytest.raises(queue.Full):
        bounded.put_nowait(2)
    assert bounded.get() == 1


def test_shared_queue_wakes_waiting_threads(queue_type):
    q, bounded = queue_type(), queue_type(1)
    got = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    getter.start()
    q.put('item')           # a waiting getter is notified
    getter.join(30)
    assert got == ['item']
    bounded.put(1)
    putter = threading.Thread(target=lambda: bounded.put(2, timeout=30))
    putter.start()
    assert bounded.get() == 1   # a waiting putter is notified
    putter.join(30)
    assert not putter.is_alive() and bounded.get() == 2


def test_shared_queue_task_accounting(queue_type):
    q = queue_type()
    q.put(1)
    q.put(2)
    q.get()
    q.task_done()
    q.get()
    q.task_done()
    q.join()
    with pytest.raises(ValueError):
        q.task_done()


def test_shared_queue_shutdown(queue_type):
    # the server's queue has it on every version, queue.Queue from 3.13
    if not hasattr(queue_type, 'shutdown'):
        assert queue_type is queue.Queue and sys.version_info < (3, 13)
        return
    q = queue_type()
    q.put(1)
    q.shutdown()
    with pytest.raises(fqueues.ShutDown):
        q.put(2)
    assert q.get() == 1
    with pytest.raises(fqueues.ShutDown):
        q.get()


def test_manager_queue_is_the_shared_queue(fmanager):
    """README "Managers": the server's Queue is a queue.Queue subclass with
    the same methods, and shutdown() on every version."""
    q = fmanager.Queue()
    # (shutdown before 3.13 too)
    expected = set(fmanagers.public_methods(queue.Queue())) | {'shutdown'}
    assert sorted(q._exposed_) == sorted(expected)
    q.put('a')
    assert q.get() == 'a'


# -- the connection: its C functions directly, or its methods -------------

class _RecordingConnection(fastmp.connection.Connection):
    """Overrides the methods a proxy's call uses: calls go through them."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self.calls = []

    def send(self, obj):
        self.calls.append('send')
        super().send(obj)

    def recv_bytes(self, maxlength=None):
        self.calls.append('recv_bytes')
        return super().recv_bytes(maxlength)


class _KeepingConnection(fastmp.connection.Connection):
    """A subclass that keeps the C methods: called directly."""


def test_calls_use_overridden_connection_methods(fmanager):
    lst = fmanager.list([1, 2])
    assert lst[0] == 1
    conn = lst._tls.connection
    assert type(conn) is fastmp.connection.Connection
    recording = _RecordingConnection(os.dup(conn.fileno()))
    keeping = _KeepingConnection(os.dup(conn.fileno()))
    try:
        lst._tls.connection = recording
        assert lst[1] == 2
        assert recording.calls == ['send', 'recv_bytes']
        lst._tls.connection = keeping
        assert lst[1] == 2
        # a method replaced on the instance is the one called
        seen = []
        keeping.recv_bytes = lambda: seen.append(1) or fastmp.connection.Connection.recv_bytes(keeping)
        assert lst[0] == 1
        assert seen == [1]
        del keeping.recv_bytes
        assert lst[0] == 1
        assert seen == [1]
    finally:
        lst._tls.connection = conn
        recording.close()
        keeping.close()
    assert lst[1] == 2


def test_calls_use_a_method_replaced_on_the_plain_type(fmanager, monkeypatch):
    lst = fmanager.list([1, 2])
    assert lst[0] == 1          # the plain type's methods looked up and kept
    plain = fastmp.connection.Connection
    assert type(lst._tls.connection) is plain
    kept_recv_bytes = plain.recv_bytes
    seen = []

    def recording(self, *args):
        seen.append(1)
        return kept_recv_bytes(self, *args)

    monkeypatch.setattr(plain, 'recv_bytes', recording)
    assert lst[1] == 2
    assert seen == [1]
    monkeypatch.undo()
    assert lst[0] == 1
    assert seen == [1]


def test_closed_connections_fail_alike_on_either_path():
    errors = []
    for kind in (fastmp.connection.Connection, _KeepingConnection, _RecordingConnection):
        reader, writer = os.pipe()
        os.close(reader)
        conn = kind(writer, readable=False)
        conn.close()
        with pytest.raises(OSError) as info:
            exchange_frame(conn, ('0', 'f', (), {}))
        errors.append((type(info.value), str(info.value)))
    assert errors == [(OSError, 'handle is closed')] * 3


def test_a_read_only_end_fails_alike_on_either_path():
    errors = []
    for kind in (fastmp.connection.Connection, _KeepingConnection, _RecordingConnection):
        reader, writer = os.pipe()
        conn = kind(reader, writable=False)
        try:
            with pytest.raises(OSError) as info:
                exchange_frame(conn, ('0', 'f', (), {}))
        finally:
            conn.close()
            os.close(writer)
        errors.append((type(info.value), str(info.value)))
    assert errors == [(OSError, 'connection is read-only')] * 3
