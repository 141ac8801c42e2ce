"""How fastmp's Connections move data: Pipe(duplex=True) carries messages
through a shared-memory ring per direction (tests/test_connection_ring.py
has the rest), a message larger than its pipe is handed over by reference
(vmsplice) and its send waits for the reader, and a reader spins briefly
before sleeping, but not on an idle or slow peer.  fileno() stays truthful
for select() throughout."""
import fcntl
import os
import select
import socket
import threading
import time

import pytest

import fastmp
from fastmp import connection, reduction

from support import sending_from_a_thread

pytestmark = pytest.mark.timeout(60)

WHOLE_MAX = (1 << 18) - 8


def in_thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def readable(conn):
    return bool(select.select([conn.fileno()], [], [], 0)[0])


# ---- messages through the rings -------------------------------------------

def test_duplex_pipe_is_a_stream_socketpair_with_rings():
    a, b = fastmp.Pipe()
    with a, b:
        sock = socket.socket(fileno=os.dup(a.fileno()))
        with sock:
            assert sock.type == socket.SOCK_STREAM
        assert a._ring_fds() is not None and b._ring_fds() is not None


# a record of the 1 MiB ring holds 256 KiB - 8 bytes; larger messages stream
@pytest.mark.parametrize("size", [0, 1, WHOLE_MAX - 1, WHOLE_MAX, WHOLE_MAX + 1,
                                  3 * WHOLE_MAX + 7, 5 << 20])
def test_messages_across_record_boundaries(size):
    a, b = fastmp.Pipe()
    payload = os.urandom(size)
    with a, b:
        t = in_thread(a.send_bytes, payload)
        assert b.recv_bytes() == payload
        t.join()
        t = in_thread(b.send, [payload, size])
        assert a.recv() == [payload, size]
        t.join()


def test_recv_bytes_into_and_buffer_too_short_span_records():
    a, b = fastmp.Pipe()
    payload = os.urandom(2 * WHOLE_MAX + 11)
    with a, b:
        t = in_thread(lambda: [a.send_bytes(payload) for _ in range(2)])
        buf = bytearray(len(payload) + 3)
        assert b.recv_bytes_into(buf, 3) == len(payload)
        assert buf[3:] == payload
        with pytest.raises(fastmp.BufferTooShort) as info:
            b.recv_bytes_into(bytearray(10))
        assert info.value.args[0] == payload
        t.join()
        a.send("still in step")
        assert b.recv() == "still in step"


def test_closed_peer_gives_eoferror():
    a, b = fastmp.Pipe()
    a.send("last")
    a.close()
    with b:
        assert b.recv() == "last"
        with pytest.raises(EOFError):
            b.recv()


def test_descriptor_passing_between_messages():
    a, b = fastmp.Pipe()
    r, w = os.pipe()
    with a, b:
        a.send("before")

        def send_handle_then_message():
            reduction.send_handle(a, w, os.getpid())
            a.send("after")

        with sending_from_a_thread(send_handle_then_message):
            assert b.recv() == "before"
            fd = reduction.recv_handle(b)
            assert b.recv() == "after"
        os.write(fd, b"through the passed fd")
        os.close(fd)
        assert os.read(r, 100) == b"through the passed fd"
    os.close(r)
    os.close(w)


# ---- fileno() stays truthful ---------------------------------------------

@pytest.mark.parametrize("duplex", [True, False])
def test_select_sees_the_second_of_two_queued_messages(duplex):
    reader, writer = fastmp.Pipe(duplex)
    with reader, writer:
        writer.send("one")
        writer.send("two")
        assert reader.recv() == "one"
        assert readable(reader)
        assert reader.poll()
        assert connection.wait([reader], 0) == [reader]
        assert reader.recv() == "two"
        assert not readable(reader)
        assert not reader.poll()


def test_select_sees_the_second_message_over_a_listener():
    with connection.Listener(family="AF_UNIX") as listener:
        client = connection.Client(listener.address)
        with client, listener.accept() as server:
            client.send_bytes(b"one")
            client.send_bytes(b"two")
            assert server.recv_bytes() == b"one"
            assert readable(server)
            assert server.recv_bytes() == b"two"
            assert not readable(server)


# ---- large messages through a pipe (vmsplice) ----------------------------

def test_a_message_larger_than_the_pipe_survives_the_sender_reusing_its_buffer():
    reader, writer = fastmp.Pipe(duplex=False)
    capacity = fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ)
    original = os.urandom(capacity + (1 << 20))
    buf = bytearray(original)
    got = []
    with reader, writer:
        t = in_thread(lambda: (time.sleep(0.3), got.append(reader.recv_bytes())))
        writer.send_bytes(buf)
        # the send returned: the reader has the whole message already
        buf[:] = bytes(len(buf))
        t.join()
    assert got == [original]


def test_a_large_send_to_a_vanished_reader_does_not_hang():
    reader, writer = fastmp.Pipe(duplex=False)
    capacity = fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ)
    payload = bytes(capacity + (1 << 20))

    def read_header_then_close():
        os.read(reader.fileno(), 4)
        reader.close()
    with writer:
        t = in_thread(read_header_then_close)
        with pytest.raises(BrokenPipeError):
            writer.send_bytes(payload)
        t.join()


def test_large_messages_through_a_pipe_keep_their_order():
    reader, writer = fastmp.Pipe(duplex=False)
    capacity = fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ)
    payloads = [bytes([i]) * (capacity + (1 << 20) + i * 4097) for i in range(3)]
    with reader, writer:
        t = in_thread(lambda: [writer.send_bytes(p) for p in payloads] + [writer.send("end")])
        assert [reader.recv_bytes() for _ in payloads] == payloads
        assert reader.recv() == "end"
        t.join()


# ---- spinning before sleeping ---------------------------------------------

def _cpu_of_reader(conn, count):
    """Receive `count` messages in a thread; its CPU seconds."""
    spent = []

    def read():
        start = time.thread_time()
        for _ in range(count):
            conn.recv()
        spent.append(time.thread_time() - start)
    in_thread(read).join(30)
    return spent[0]


def test_a_reader_of_an_idle_peer_sleeps():
    a, b = fastmp.Pipe()
    with a, b:
        threading.Timer(1.0, a.send, ("late",)).start()
        # spinning all along would cost about a second of CPU
        assert _cpu_of_reader(b, 1) < 0.2


def test_a_reader_of_a_slow_peer_stops_spinning():
    a, b = fastmp.Pipe()
    count = 40

    def slow_sender():
        for i in range(count):
            time.sleep(0.02)
            a.send(i)
    with a, b:
        in_thread(slow_sender)
        assert _cpu_of_reader(b, count) < 0.2


def test_poll_with_a_timeout_on_an_idle_peer_sleeps():
    a, b = fastmp.Pipe()
    with a, b:
        start = time.thread_time()
        for _ in range(20):
            assert not b.poll(0.02)
        assert time.thread_time() - start < 0.1
