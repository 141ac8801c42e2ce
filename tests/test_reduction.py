"""reduction: ForkingPickler and its registered reducers, fd passing
(sendfds/recvfds, send_handle/recv_handle), DupFd under each start method
and the resource sharer.  All of it is the standard behaviour and runs
against both packages, but for the last part, "fastmp only"."""
import copyreg
import functools
import importlib
import multiprocessing
import os
import pickle
import socket
import sys
import threading

import pytest

import fastmp
from fastmp import reduction

from support import sending_from_a_thread

pytestmark = pytest.mark.timeout(60)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


class Registered:
    """Only picklable through a reducer registered in a test."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError('Registered needs its ForkingPickler reducer')


def _rebuild_registered(value):
    return Registered(value * 10)


def _reduce_registered(obj):
    return _rebuild_registered, (obj.value,)


class ViaCopyreg:
    pass


def _reduce_via_copyreg(obj):
    return str, ('from copyreg',)


def roundtrip(impl, obj):
    return pickle.loads(impl.reduction.ForkingPickler.dumps(obj))


@pytest.mark.parametrize('obj', [
    None, 42, 'text' * 100, b'\x00' * 70000, [1, (2, 3), {'k': {4, 5}}],
])
def test_plain_objects_roundtrip(impl, obj):
    assert roundtrip(impl, obj) == obj


def test_callables_plain_pickle_refuses(impl):
    # bound methods of instances, method descriptors, slot wrappers, partials
    p = Point(3, -4)
    assert roundtrip(impl, p.norm1)() == 7
    assert roundtrip(impl, list.append) is list.append
    assert roundtrip(impl, int.__add__)(2, 3) == 5
    bound_builtin = roundtrip(impl, [1, 2].count)
    assert bound_builtin(2) == 1
    part = roundtrip(impl, functools.partial(int, base=16))
    assert part('ff') == 255


def test_register_applies_to_later_dumps(impl):
    with pytest.raises(TypeError):
        impl.reduction.ForkingPickler.dumps(Registered(1))
    impl.reduction.register(Registered, _reduce_registered)
    try:
        assert roundtrip(impl, [Registered(2), Registered(3)])[1].value == 30
        buf = __import__('io').BytesIO()
        impl.reduction.dump(Registered(4), buf)
        assert pickle.loads(buf.getvalue()).value == 40
    finally:
        del impl.reduction.ForkingPickler._extra_reducers[Registered]


def test_copyreg_changes_are_seen(impl):
    impl.reduction.ForkingPickler.dumps(ViaCopyreg)   # warm any cache
    copyreg.pickle(ViaCopyreg, _reduce_via_copyreg)
    try:
        assert roundtrip(impl, ViaCopyreg()) == 'from copyreg'
    finally:
        del copyreg.dispatch_table[ViaCopyreg]
    # once removed, the reducer no longer applies
    assert isinstance(roundtrip(impl, ViaCopyreg()), ViaCopyreg)


def test_protocol_argument(impl):
    data = impl.reduction.ForkingPickler.dumps([1, 2], protocol=2)
    assert bytes(data)[:2] == b'\x80\x02'
    assert pickle.loads(data) == [1, 2]


def test_reducer_that_calls_dumps_itself(impl):
    class Nested:
        """Its reducer pickles something else with ForkingPickler.dumps."""

        def __reduce__(self):
            inner = impl.reduction.ForkingPickler.dumps(['inner', Point(1, 2).norm1])
            return pickle.loads, (bytes(inner),)

    out = roundtrip(impl, [Nested(), 'after', Nested()])
    assert out[0][0] == 'inner' and out[0][1]() == 3
    assert out[1] == 'after' and out[2][0] == 'inner'


def test_failed_dump_leaves_no_residue(impl):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        impl.reduction.ForkingPickler.dumps(['prefix' * 1000, lambda: 0])
    assert roundtrip(impl, 'clean') == 'clean'


def test_threads_pickle_independently(impl):
    errors = []

    def worker(n):
        for i in range(300):
            value = [n, i, 'x' * (i % 50)]
            if roundtrip(impl, value) != value:
                errors.append((n, i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_large_bytes_are_kept_whole(impl):
    payload = os.urandom(1 << 20) * 3
    assert roundtrip(impl, {'p': payload, 'q': bytearray(payload[:99])}) == {
        'p': payload, 'q': bytearray(payload[:99])}


def test_abstract_reducer_exposes_module_api(impl):
    class MyReducer(impl.reduction.AbstractReducer):
        pass

    assert MyReducer.ForkingPickler is impl.reduction.ForkingPickler
    assert MyReducer.sendfds is impl.reduction.sendfds
    MyReducer()   # re-registers the built-in reducers
    assert impl.reduction.ForkingPickler._extra_reducers[functools.partial] \
        is impl.reduction._reduce_partial
    assert impl.reduction.HAVE_SEND_HANDLE


# ---- fd passing ------------------------------------------------------------

def _fd_content(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 100)


def _send_and_receive_files(reduction_module, tmp_path):
    """Three files' descriptors passed over a socketpair: (sent, received)."""
    left, right = socket.socketpair()
    fds = []
    for i in range(3):
        path = tmp_path / ('f%d' % i)
        path.write_bytes(b'file %d' % i)
        fds.append(os.open(path, os.O_RDONLY))
    with left, right:
        with sending_from_a_thread(lambda: reduction_module.sendfds(left, fds)):
            got = reduction_module.recvfds(right, 3)
        return fds, got


def test_sendfds_recvfds_roundtrip(impl, tmp_path):
    fds, got = _send_and_receive_files(impl.reduction, tmp_path)
    try:
        assert len(got) == 3 and not set(got) & set(fds)
        assert [_fd_content(fd) for fd in got] == [b'file 0', b'file 1',
                                                   b'file 2']
    finally:
        for fd in fds + got:
            os.close(fd)


def _unread_byte(sock):
    """The next byte waiting in `sock`, or None if there is none."""
    sock.setblocking(False)
    try:
        return sock.recv(1)
    except BlockingIOError:
        return None
    finally:
        sock.setblocking(True)


def test_recvfds_errors(impl):
    left, right = socket.socketpair()
    with left, right:
        left.send(b'x')   # data without descriptors
        with pytest.raises(RuntimeError):
            impl.reduction.recvfds(right, 1)
        # acknowledged all the same, where the sender waits for it
        assert _unread_byte(left) == (b'A' if sys.version_info >= (3, 14)
                                      else None)
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            impl.reduction.recvfds(right, 1)


def test_recv_handle_on_a_message_without_fd_raises(impl):
    # the standard suite's InvalidHandle/handle tests expect RuntimeError
    left, right = socket.socketpair()
    with left, right:
        left.send(b'\x01')
        with pytest.raises(RuntimeError):
            impl.reduction.recv_handle(right)


def _read_passed_file(tmp_path, sender, left, receiver, right):
    """Pass a descriptor of a new file with `sender`'s send_handle over
    `left` (from a thread) to `receiver`'s recv_handle over `right`;
    return what the received descriptor reads."""
    path = tmp_path / 'data'
    path.write_bytes(b'handed over')
    fd = os.open(path, os.O_RDONLY)
    try:
        with sending_from_a_thread(
                lambda: sender.send_handle(left, fd, os.getpid())):
            got = receiver.recv_handle(right)
    finally:
        os.close(fd)
    try:
        return _fd_content(got)
    finally:
        os.close(got)


def test_send_handle_keeps_the_connection_open(impl, tmp_path):
    left, right = socket.socketpair()
    with left, right:
        assert _read_passed_file(tmp_path, impl.reduction, left,
                                 impl.reduction, right) == b'handed over'
        # the borrowed socket objects did not close the connection
        left.sendall(b'still open')
        assert right.recv(20) == b'still open'


@pytest.mark.parametrize('sender, receiver', [(fastmp, multiprocessing),
                                               (multiprocessing, fastmp)],
                         ids=['fastmp-to-stdlib', 'stdlib-to-fastmp'])
def test_fd_passing_between_the_packages(sender, receiver, tmp_path):
    # the receiver acknowledges exactly when the running interpreter's
    # standard package waits for it (from 3.14): the sender returns and no
    # byte is left behind on either end
    left, right = socket.socketpair()
    with left, right:
        assert _read_passed_file(tmp_path, sender.reduction, left,
                                 receiver.reduction, right) == b'handed over'
        assert _unread_byte(left) is None and _unread_byte(right) is None


# ---- across processes: DupFd (through a socket's reducer) and send_handle

def child_reads_handle(module_name, sock, reply):
    """Receive a descriptor over `sock` (itself pickled through DupFd) and
    send back what the file holds."""
    fd = importlib.import_module(module_name).recv_handle(sock)
    with os.fdopen(fd, 'rb') as f:
        reply.sendall(b'child read: ' + f.read())
    sock.close()
    reply.close()


def test_send_handle_to_child(impl, ctx, tmp_path):
    path = tmp_path / 'payload'
    path.write_bytes(b'secret sauce')
    ours, theirs = socket.socketpair()
    reply_r, reply_w = socket.socketpair()
    with ours, theirs, reply_r, reply_w:
        proc = ctx.Process(target=child_reads_handle,
                           args=(impl.reduction.__name__, theirs, reply_w))
        proc.start()
        with open(path, 'rb') as f:
            impl.reduction.send_handle(ours, f.fileno(), proc.pid)
        reply_r.settimeout(30)
        assert reply_r.recv(100) == b'child read: secret sauce'
        proc.join(30)
    assert proc.exitcode == 0


def child_echoes(sock):
    sock.sendall(b'echo:' + sock.recv(100))
    sock.close()


def test_pickled_socket_reaches_child_under_each_method(ctx):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = ctx.Process(target=child_echoes, args=(theirs,))
        proc.start()
        ours.sendall(b'ping')
        ours.settimeout(30)
        assert ours.recv(100) == b'echo:ping'
        proc.join(30)
    assert proc.exitcode == 0


def test_dupfd_while_spawning_uses_the_popen(impl, monkeypatch):
    calls = []

    class FakePopen:
        def duplicate_for_child(self, fd):
            calls.append(fd)
            return fd + 1000

        class DupFd:
            def __init__(self, handle):
                self.handle = handle

    monkeypatch.setattr(impl.reduction.context, 'get_spawning_popen',
                        lambda: FakePopen())
    assert impl.reduction.DupFd(7).handle == 1007
    assert calls == [7]


# ---- DupFd outside a process start: the resource sharer ------------------

def child_uses_shared_objects(conn):
    sock = conn.recv()     # pickled through resource_sharer.DupFd
    sock.sendall(b'hello over the shared socket')
    sock.close()
    passed = conn.recv()   # a Connection pickled the same way
    passed.send(('via the passed connection', os.getpid()))
    passed.close()
    conn.close()


def test_objects_sent_to_a_running_child(impl, ctx):
    resource_sharer = importlib.import_module(impl.__name__ + '.resource_sharer')
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=child_uses_shared_objects, args=(theirs,))
    proc.start()
    try:
        left, right = socket.socketpair()
        with left, right:
            ours.send(right)
            right.close()
            left.settimeout(30)
            assert left.recv(100) == b'hello over the shared socket'
        reader, writer = ctx.Pipe(duplex=False)
        ours.send(writer)
        writer.close()
        assert reader.poll(30)
        assert reader.recv() == ('via the passed connection', proc.pid)
        reader.close()
    finally:
        proc.join(30)
        ours.close()
        theirs.close()
    assert proc.exitcode == 0
    resource_sharer.stop(timeout=5)
    assert resource_sharer._resource_sharer._thread is None


# ==== fastmp only: received descriptors, a resource asked for twice =======

def test_received_descriptors_are_not_inheritable(tmp_path):
    """Internal (PEP 446): descriptors that recvfds() receives are not
    inherited by exec'd programs (the standard package's are)."""
    fds, got = _send_and_receive_files(reduction, tmp_path)
    try:
        assert not any(os.get_inheritable(fd) for fd in got)
    finally:
        for fd in fds + got:
            os.close(fd)


def test_a_shared_descriptor_is_handed_over_once(tmp_path):
    """Bad input: a resource asked for a second time raises EOFError that
    says it was already received (the standard sharer's thread prints a
    KeyError traceback and the receiver gets a bare EOFError)."""
    from fastmp import resource_sharer
    path = tmp_path / 'once'
    path.write_bytes(b'only once')
    with open(path, 'rb') as f:
        shared = resource_sharer.DupFd(f.fileno())
    twin = pickle.loads(pickle.dumps(shared))   # a second receiver
    fd = shared.detach()
    try:
        assert _fd_content(fd) == b'only once'
    finally:
        os.close(fd)
    with pytest.raises(EOFError, match='already received'):
        twin.detach()
    resource_sharer.stop(timeout=5)
