"""Connection and Pipe: methods, properties and errors; the wire format,
checked byte by byte and against the standard package's Connection on the
other end; bad input and failures; signals during blocking calls;
Connections handed to child processes; wait().

Everything up to "fastmp only" is the standard behaviour, written once and
run against fastmp and the standard package.  The last part covers the
README's "Connections" deviations (EOFError for a peer that closes
mid-message, lengths checked before allocating, no plain pickling) and
internals of the C Connection."""
import array
import gc
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import fastmp
from fastmp import connection as fconnection
import multiprocessing.connection as sconnection

pytestmark = pytest.mark.timeout(60)


# ---- workers (module level: spawned children import them) ---------------

def echo_until_none(conn):
    for obj in iter(conn.recv, None):
        conn.send(obj)
    conn.close()


def write_through(conn, text):
    """Receive a Connection over `conn` and send `text` through it."""
    other = conn.recv()
    other.send(text)
    other.close()
    conn.close()


def send_then_exit(conn, obj):
    conn.send(obj)
    conn.close()


# ---- helpers -------------------------------------------------------------

def raw_pair(kind):
    """Two raw fds joined by a socketpair ('socket') or a pipe ('pipe';
    the first reads, the second writes)."""
    if kind == "socket":
        a, b = socket.socketpair()
        return a.detach(), b.detach()
    return os.pipe()


def pair_of(module, kind):
    """Two Connections of `module` (fastmp or the stdlib connection module)."""
    r, w = raw_pair(kind)
    if kind == "socket":
        return module.Connection(r), module.Connection(w)
    return module.Connection(r, writable=False), module.Connection(w, readable=False)


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def in_thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# ---- construction, properties, closing -------------------------------------

def test_constructor_rejects_bad_arguments(impl):
    with pytest.raises((ValueError, OSError)):
        impl.connection.Connection(-1)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError):
            impl.connection.Connection(r, readable=False, writable=False)
        with pytest.raises((TypeError, AttributeError)):
            impl.connection.Connection("3")
    finally:
        os.close(r)
        os.close(w)



def test_properties_and_close(impl):
    a, b = impl.Pipe()
    reader, writer = impl.Pipe(duplex=False)
    assert (a.readable, a.writable, a.closed) == (True, True, False)
    assert (reader.readable, reader.writable) == (True, False)
    assert (writer.readable, writer.writable) == (False, True)
    assert isinstance(a.fileno(), int)
    for c in (a, b, reader, writer):
        c.close()
        c.close()                       # a second close does nothing
        assert c.closed
        with pytest.raises(OSError):
            c.fileno()
    for call in (a.recv, a.recv_bytes, a.poll, lambda: a.send(1),
                 lambda: a.send_bytes(b"x"), lambda: a.recv_bytes_into(bytearray(4))):
        with pytest.raises(OSError):
            call()



def test_context_manager_closes(impl):
    a, b = impl.Pipe()
    with a, b:
        a.send(1729)
        assert b.recv() == 1729
    assert a.closed and b.closed



def test_wrong_direction_raises(impl):
    reader, writer = impl.Pipe(duplex=False)
    with reader, writer:
        with pytest.raises(OSError, match="read-only"):
            reader.send(1)
        with pytest.raises(OSError, match="read-only"):
            reader.send_bytes(b"x")
        with pytest.raises(OSError, match="write-only"):
            writer.recv()
        with pytest.raises(OSError, match="write-only"):
            writer.poll()



def test_fd_closed_on_dealloc(impl):
    r, w = os.pipe()
    conn = impl.connection.Connection(r, writable=False)
    del conn
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(r)
    os.close(w)



def test_forgetting_the_handle_leaves_the_fd_open(impl):
    r, w = os.pipe()
    conn = impl.connection.Connection(r, writable=False)
    assert conn._handle == r
    conn._handle = None
    assert conn.closed
    del conn
    os.fstat(r)                          # still open
    os.close(r)
    os.close(w)



def test_subclass_and_attributes(impl):
    class Tagged(impl.connection.Connection):
        pass
    a, b = socket.socketpair()
    c = Tagged(a.detach())
    c.tag = "mine"
    import weakref
    ref = weakref.ref(c)
    c.send("x")
    assert Connection_recv_raw(b) == pickle.dumps("x")
    assert c.tag == "mine" and ref() is c
    c.close()
    b.close()



def Connection_recv_raw(sock):
    (n,) = struct.unpack("!i", sock.recv(4, socket.MSG_WAITALL))
    return sock.recv(n, socket.MSG_WAITALL)


# ---- messages --------------------------------------------------------------

@pytest.mark.parametrize("duplex", [True, False])
def test_send_recv_objects(impl, duplex):
    first, second = impl.Pipe(duplex)
    reader, writer = (first, second)
    with reader, writer:
        for obj in (None, 1, 2.25, "text", b"bytes", [1, (2, 3)], {"k": {1, 2}},
                    "x" * 30000, list(range(5000))):
            writer.send(obj)
            assert reader.recv() == obj



def test_send_bytes_offset_and_size(impl):
    msg = b"abcdefghijklmnopqrstuvwxyz"
    a, b = impl.Pipe()
    with a, b:
        a.send_bytes(msg)
        assert b.recv_bytes() == msg
        a.send_bytes(msg, 5)
        assert b.recv_bytes() == msg[5:]
        a.send_bytes(msg, 7, 8)
        assert b.recv_bytes() == msg[7:15]
        a.send_bytes(msg, 26)
        assert b.recv_bytes() == b""
        a.send_bytes(msg, 26, 0)
        assert b.recv_bytes() == b""
        a.send_bytes(memoryview(msg), size=3)
        assert b.recv_bytes() == b"abc"
        for args in ((27,), (22, 5), (26, 1), (-1,), (4, -1)):
            with pytest.raises(ValueError):
                a.send_bytes(msg, *args)
        assert not b.poll()              # nothing went out for the bad calls



def test_send_bytes_of_typed_arrays_counts_bytes(impl):
    arr = array.array("i", range(4))
    a, b = impl.Pipe()
    with a, b:
        a.send_bytes(arr)
        assert b.recv_bytes() == arr.tobytes()
        a.send_bytes(arr, 4, 8)
        assert b.recv_bytes() == arr.tobytes()[4:12]



def test_recv_bytes_into(impl):
    arr = array.array("i", range(4))
    a, b = impl.Pipe()
    with a, b:
        buf = array.array("i", [0] * 10)
        a.send_bytes(arr)
        assert b.recv_bytes_into(buf, 3 * buf.itemsize) == 16
        assert list(buf) == [0, 0, 0, 0, 1, 2, 3, 0, 0, 0]
        long = b"hello world" * 10
        a.send_bytes(long)
        with pytest.raises(impl.BufferTooShort) as info:
            b.recv_bytes_into(bytearray(40))
        assert info.value.args == (long,)
        a.send_bytes(b"after")           # the stream is still in step
        assert b.recv_bytes() == b"after"
        with pytest.raises(ValueError):
            b.recv_bytes_into(bytearray(4), -1)
        with pytest.raises(ValueError):
            b.recv_bytes_into(bytearray(4), 5)



def test_recv_bytes_into_needs_a_writable_buffer(impl):
    a, b = impl.Pipe()
    with a, b, pytest.raises((TypeError, BufferError)):
        a.send_bytes(b"x")
        b.recv_bytes_into(b"read-only")



def test_poll_and_timeouts(impl):
    a, b = impl.Pipe()
    with a, b:
        assert a.poll() is False
        assert a.poll(-1) is False
        t0 = time.monotonic()
        assert a.poll(0.2) is False
        assert 0.15 < time.monotonic() - t0 < 5
        b.send_bytes(b"")
        assert a.poll() is True and a.poll(None) is True
        assert a.recv_bytes() == b""
        b.close()
        assert a.poll(1) is True         # end of file counts as readable
        with pytest.raises(EOFError):
            a.recv()



def test_maxlength(impl):
    a, b = impl.Pipe()
    with a, b:
        a.send_bytes(b"x" * 10)
        assert b.recv_bytes(10) == b"x" * 10
        with pytest.raises(ValueError):
            b.recv_bytes(-1)
        a.send_bytes(b"x" * 11)
        with pytest.raises(OSError, match="bad message length"):
            b.recv_bytes(10)
        assert not b.readable and b.writable and not b.closed
    reader, writer = impl.Pipe(duplex=False)
    with reader, writer:
        writer.send_bytes(b"x" * 11)
        with pytest.raises(OSError, match="bad message length"):
            reader.recv_bytes(10)
        assert reader.closed             # a read-only end is closed



def test_large_message_both_directions(impl):
    big = os.urandom(1 << 16) * 256          # 16 MiB
    for duplex in (True, False):
        reader, writer = impl.Pipe(duplex)
        with reader, writer:
            t = in_thread(writer.send_bytes, big)
            assert reader.recv_bytes() == big
            t.join()
            t = in_thread(writer.send, big)
            assert reader.recv() == big
            t.join()
            buf = bytearray(len(big) + 8)
            t = in_thread(writer.send_bytes, big)
            assert reader.recv_bytes_into(buf, 8) == len(big)
            assert buf[8:] == big
            t.join()



def test_blocking_recv_lets_other_threads_run(impl):
    a, b = impl.Pipe()
    with a, b:
        ticks = []

        def tick_then_send():
            for _ in range(5):
                ticks.append(1)
                time.sleep(0.01)
            b.send("done")
        t = in_thread(tick_then_send)
        assert a.recv() == "done"
        assert len(ticks) == 5
        t.join()


# ---- the wire ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["socket", "pipe"])
def test_frames_are_byte_identical(impl, kind):
    payloads = [b"", b"a", b"x" * 70000, bytes(range(256))]
    r, w = raw_pair(kind)
    writer = impl.connection.Connection(w, readable=(kind == "socket"))
    for p in payloads:
        t = in_thread(writer.send_bytes, p)
        got = b""
        want = frame(p)
        while len(got) < len(want):
            got += os.read(r, len(want) - len(got))
        t.join()
        assert got == want
    writer.send({"k": 1})
    pickled = pickle.dumps({"k": 1})  # the default protocol, as the standard package
    assert os.read(r, 4 + len(pickled)) == frame(pickled)
    writer.close()
    os.close(r)



def test_long_frame_header_is_understood(impl):
    """Beyond 2 GiB - 1 the length travels as -1 then 8 bytes; a reader
    must accept that form for any length."""
    r, w = os.pipe()
    reader = impl.connection.Connection(r, writable=False)
    os.write(w, struct.pack("!iQ", -1, 5) + b"hello")
    assert reader.recv_bytes() == b"hello"
    reader.close()
    os.close(w)



@pytest.mark.parametrize("kind", ["socket", "pipe"])
@pytest.mark.parametrize("fast_sends", [True, False], ids=["fastmp-sends", "stdlib-sends"])
def test_interoperates_with_the_standard_connection(kind, fast_sends):
    r, w = raw_pair(kind)
    sender_mod, receiver_mod = (fconnection, sconnection) if fast_sends else (sconnection, fconnection)
    if kind == "socket":
        sender, receiver = sender_mod.Connection(w), receiver_mod.Connection(r)
    else:
        sender = sender_mod.Connection(w, readable=False)
        receiver = receiver_mod.Connection(r, writable=False)
    with sender, receiver:
        big = b"z" * (1 << 20)
        for obj in ([1, "two", 3.0], big, "é" * 5000, None):
            t = in_thread(sender.send, obj)
            assert receiver.recv() == obj
            t.join()
        t = in_thread(sender.send_bytes, big, 10, 1000)
        assert receiver.recv_bytes() == big[10:1010]
        t.join()
        sender.send_bytes(b"")
        assert receiver.recv_bytes() == b""
        if kind == "socket":             # and back the other way
            receiver.send_bytes(b"reply")
            assert sender.recv_bytes() == b"reply"


# ---- pickling with ForkingPickler's reducers -----------------------------------

class Registered:
    def __init__(self, value):
        self.value = value



class ViaCopyreg:
    pass



def test_reducers_registered_later_apply(impl):
    """send() pickles with ForkingPickler's reducers, including ones
    registered after the connection was first used, and copyreg's."""
    import copyreg
    reduction = impl.reduction
    a, b = impl.Pipe()
    with a, b:
        a.send(Registered(1))
        assert b.recv().value == 1                   # default pickling
        reduction.register(Registered, lambda obj: (str, ("reduced %d" % obj.value,)))
        copyreg.pickle(ViaCopyreg, lambda obj: (int, (7,)))
        try:
            a.send([Registered(2), ViaCopyreg()])
            assert b.recv() == ["reduced 2", 7]
        finally:
            del reduction.ForkingPickler._extra_reducers[Registered]
            del copyreg.dispatch_table[ViaCopyreg]
        a.send(Registered(3))
        assert b.recv().value == 3



def test_unpicklable_object_leaves_connection_usable(impl):
    a, b = impl.Pipe()
    with a, b:
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            a.send(lambda: None)
        with pytest.raises(TypeError):
            a.send(threading.Lock())
        assert not b.poll()
        a.send("fine")
        assert b.recv() == "fine"



def test_unpicklable_inside_a_reducer_leaves_pickler_reusable(impl):
    class Bad:
        def __reduce__(self):
            raise RuntimeError("no")
    a, b = impl.Pipe()
    with a, b:
        shared = ["shared"]
        with pytest.raises(RuntimeError):
            a.send([shared, Bad()])
        a.send([shared, shared])          # no memo left over from the failure
        got = b.recv()
        assert got == [["shared"], ["shared"]] and got[0] is got[1]



def test_send_from_inside_a_reducer(impl):
    """A reducer may itself send on a connection while the first send is
    pickling."""
    a, b = impl.Pipe()

    class Nested:
        def __reduce__(self):
            a.send("inner")
            return (str, ("outer",))
    with a, b:
        a.send(Nested())
        assert b.recv() == "inner"
        assert b.recv() == "outer"


# ---- failures -------------------------------------------------------------------

def test_clean_eof_is_eoferror(impl):
    a, b = impl.Pipe()
    b.close()
    with a:
        with pytest.raises(EOFError):
            a.recv_bytes()
        with pytest.raises(EOFError):
            a.recv_bytes_into(bytearray(8))



def test_broken_pipe_raises_oserror(impl):
    a, b = impl.Pipe()
    b.close()
    with a, pytest.raises(OSError):
        for _ in range(100):
            a.send_bytes(b"x" * 100000)


# ---- signals -------------------------------------------------------------------

@pytest.fixture
def sigusr1_soon():
    """Deliver SIGUSR1 to this process in 0.1 s; yields the list of
    deliveries recorded by the handler (set by the test via .handler)."""
    hits = []
    state = {"handler": lambda *a: hits.append(1)}
    old = signal.signal(signal.SIGUSR1, lambda *a: state["handler"](*a))
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    yield hits, state
    timer.cancel()
    signal.signal(signal.SIGUSR1, old)



def test_poll_resumes_after_a_signal_against_its_deadline(impl, sigusr1_soon):
    hits, _ = sigusr1_soon
    a, b = impl.Pipe()
    with a, b:
        t0 = time.monotonic()
        assert a.poll(0.6) is False
        elapsed = time.monotonic() - t0
        assert hits == [1]
        assert 0.55 < elapsed < 3



def test_signal_handler_exception_interrupts_recv(impl, sigusr1_soon):
    _, state = sigusr1_soon

    def raise_it(*args):
        raise KeyboardInterrupt
    state["handler"] = raise_it
    a, b = impl.Pipe()
    with a, b, pytest.raises(KeyboardInterrupt):
        a.recv()



def test_recv_resumes_after_a_signal(impl, sigusr1_soon):
    hits, _ = sigusr1_soon
    a, b = impl.Pipe()
    with a, b:
        t = threading.Timer(0.3, b.send, ("late",))
        t.start()
        assert a.recv() == "late"
        assert hits == [1]
        t.join()



def test_wait_resumes_after_a_signal(impl, sigusr1_soon):
    hits, _ = sigusr1_soon
    a, b = impl.Pipe()
    with a, b:
        t0 = time.monotonic()
        assert impl.connection.wait([a], 0.5) == []
        assert hits == [1] and time.monotonic() - t0 > 0.45


# ---- wait() ----------------------------------------------------------------------

def test_wait_on_mixed_objects(impl):
    a, b = impl.Pipe()
    s1, s2 = socket.socketpair()
    r, w = os.pipe()
    with a, b, s1, s2:
        objs = [a, s1, r]
        assert impl.connection.wait(objs, 0) == []
        assert impl.connection.wait(objs, -1) == []
        t0 = time.monotonic()
        assert impl.connection.wait(objs, 0.2) == []
        assert time.monotonic() - t0 > 0.15
        b.send(1)
        assert impl.connection.wait(objs, 5) == [a]
        s2.send(b"x")
        os.write(w, b"y")
        assert sorted(map(id, impl.connection.wait(objs, None))) == sorted(map(id, objs))
    os.close(r)
    os.close(w)



def test_wait_on_process_sentinel(impl, ctx):
    a, b = ctx.Pipe()
    p = ctx.Process(target=send_then_exit, args=(b, "bye"))
    p.start()
    b.close()
    ready = impl.connection.wait([p.sentinel], 30)
    assert ready == [p.sentinel]
    assert a.recv() == "bye"
    p.join()
    a.close()


# ---- Connections and processes ------------------------------------------------------

def test_connection_passed_to_child(ctx):
    here, there = ctx.Pipe()
    p = ctx.Process(target=echo_until_none, args=(there,))
    p.start()
    there.close()
    for obj in ("hello", list(range(1000)), b"x" * 200000):
        here.send(obj)
        assert here.recv() == obj
    here.send(None)
    p.join(30)
    assert p.exitcode == 0
    here.close()



def test_connection_sent_through_a_connection(impl):
    ctx = impl.get_context("fork")
    control, control_child = ctx.Pipe()
    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=write_through, args=(control_child, "through"))
    p.start()
    control_child.close()
    control.send(writer)
    writer.close()
    assert reader.recv() == "through"
    p.join(30)
    assert p.exitcode == 0
    control.close()
    reader.close()


# ==== fastmp only: README "Connections", bad input, internals =============

def test_plain_pickle_refuses_a_connection():
    """README "Connections": plain pickle.dumps(conn) raises TypeError
    (connections travel through process start or another connection)."""
    a, b = fastmp.Pipe()
    with a, b, pytest.raises(TypeError, match="ForkingPickler"):
        pickle.dumps(a)



@pytest.mark.parametrize("cut", [0, 2, 4, 9])
def test_peer_closing_mid_message_raises_eof(cut):
    """README "Connections": a peer that closes in the middle of a
    message gives EOFError (the standard package raises OSError)."""
    data = frame(b"0123456789")[:4 + cut] if cut else frame(b"0123456789")[:2]
    r, w = os.pipe()
    conn = fconnection.Connection(r, writable=False)
    os.write(w, data)
    os.close(w)
    with conn, pytest.raises(EOFError):
        conn.recv_bytes()



@pytest.mark.parametrize("header", [struct.pack("!iQ", -1, 1 << 62),
                                    struct.pack("!iQ", -1, (1 << 64) - 1),
                                    struct.pack("!i", 0x7fffffff)])
def test_huge_length_raises_oserror_without_allocating(header):
    """README "Connections": a header that claims an impossibly large
    length raises OSError before anything is allocated."""
    r, w = os.pipe()
    os.write(w, header)
    conn = fconnection.Connection(r, writable=False)
    with pytest.raises(OSError, match="bad message length"):
        conn.recv_bytes(1 << 20)
    conn = fconnection.Connection(os.dup(w), readable=False)
    conn.close()
    r, w2 = os.pipe()
    os.write(w2, header)
    conn = fconnection.Connection(r)
    t0 = time.monotonic()
    if header.startswith(b"\xff"):
        with pytest.raises(OSError, match="memory|hold"):
            conn.recv()                  # no maxlength: memory is the limit
        assert time.monotonic() - t0 < 1
    conn.close()
    os.close(w)
    os.close(w2)



def test_negative_length_is_rejected():
    """README "Connections": a header that claims a negative length
    raises OSError."""
    r, w = os.pipe()
    os.write(w, struct.pack("!i", -5))
    conn = fconnection.Connection(r, writable=False)
    with pytest.raises(OSError, match="bad message length"):
        conn.recv_bytes()
    os.close(w)



def test_invalid_fd_raises_oserror():
    """Bad input: every call on a closed or impossible descriptor raises
    OSError (the standard poll() reports a closed one readable)."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    conn = fconnection.Connection(r)
    for call in (conn.recv, conn.recv_bytes, conn.poll, lambda: conn.send(1),
                 lambda: conn.send_bytes(b"x")):
        with pytest.raises(OSError):
            call()
    conn._handle = None
    huge = fconnection.Connection(44977608)
    with pytest.raises(OSError):
        huge.poll()
    huge._handle = None



def test_read_only_buffer_raises_before_waiting():
    """Bad input: recv_bytes_into() of a read-only buffer raises at once,
    before waiting for a message (the standard package reads one first)."""
    a, b = fastmp.Pipe()
    with a, b:
        with pytest.raises((TypeError, BufferError)):
            b.recv_bytes_into(b"read-only")
        a.send_bytes(b"next")
        assert b.recv_bytes() == b"next"



def test_forking_dumps_matches_forkingpickler():
    """Internal: the C pickling path of send() makes the bytes of
    ForkingPickler.dumps, and may be re-entered."""
    from fastmp import _fastmp
    from fastmp.reduction import ForkingPickler
    for obj in ("text", [1, 2.5, None], {"k": (1, 2)}, b"x" * 200000):
        assert _fastmp.forking_dumps(obj) == bytes(ForkingPickler.dumps(obj))
        assert pickle.loads(_fastmp.forking_dumps(obj)) == obj

    class Nested:
        def __reduce__(self):
            # pickling again while the reused pickler is busy
            return (pickle.loads, (_fastmp.forking_dumps("inner"),))
    assert pickle.loads(_fastmp.forking_dumps([Nested(), "outer"])) == ["inner", "outer"]



ONE_CALL_PROGRAM = r"""
import os, socket, fastmp
from fastmp.connection import Connection
a, b = (Connection(s.detach()) for s in socket.socketpair())
r, w = fastmp.Pipe(duplex=False)
a.send_bytes(b""); w.send_bytes(b"")      # the first use learns each fd's kind
os.write(1, b"MARK\n")
a.send("x" * 100)
w.send_bytes(b"y" * 1000)
os.write(1, b"END\n")
"""



def run_python_traced(program):
    """strace's log of the write-like system calls of `program`."""
    return subprocess.run(
        ["strace", "-f", "-e", "trace=write,writev,sendmsg,sendto,pwritev,pwritev2",
         sys.executable, "-c", program],
        capture_output=True, text=True, timeout=60).stderr



@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_small_message_leaves_in_one_system_call():
    """Internal (the C write path): a small message's header and
    payload leave in one system call."""
    out = run_python_traced(ONE_CALL_PROGRAM)
    calls = out.split("MARK", 1)[1].split("END", 1)[0]
    writes = [line for line in calls.splitlines()
              if re.match(r"^(\[pid +\d+\] )?(write|writev|sendmsg|sendto|pwritev2?)\(", line)
              and not line.startswith("write(1")]
    assert len(writes) == 2, writes     # one per message: header and payload together
