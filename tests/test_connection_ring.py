"""Pipe(duplex=True) carries its messages through a shared-memory ring per
direction while its socket keeps what the descriptor is used for: fileno()
is readable exactly while a message waits, end of file and BrokenPipeError
come from the socket, descriptors pass over it, and an end travels to
children (with messages already queued in it) under every start method.
A peer killed with SIGKILL anywhere never hangs or crashes the other side."""
import hashlib
import itertools
import os
import random
import select
import signal
import threading
import time

import pytest

import fastmp
from fastmp import connection, reduction

from support import sending_from_a_thread, wait_for

pytestmark = pytest.mark.timeout(60)

BIG = 64 << 20


def readable(conn):
    return bool(select.select([conn.fileno()], [], [], 0)[0])


def assert_ready_exactly_while(conn, waiting):
    """select, poll and wait all say `waiting` about `conn`."""
    assert readable(conn) == waiting
    assert conn.poll() == waiting
    assert (connection.wait([conn], 0) == [conn]) == waiting


# ---- workers (module level: spawn and forkserver children import them) --

def send_all_then_wait(conn, items, done):
    for item in items:
        conn.send(item)
    done.send("sent")
    done.recv()                     # keep the end open until told


def stream_forever(conn):
    i = 0
    while True:
        conn.send(("msg", i))
        i += 1


def send_big_forever(conn):
    conn.send("started")
    while True:
        conn.send_bytes(bytes(BIG))


def stream_checked_messages(conn, seed):
    """Messages of mixed sizes, each carrying its number and a checksum."""
    rng = random.Random(seed)
    conn.send("started")
    for i in itertools.count():
        payload = os.urandom(rng.choice((0, 10, 300, 5000, 400_000, 3 << 20)))
        conn.send((i, hashlib.sha1(payload).hexdigest(), payload))


def read_all_and_answer(conn):
    got = [conn.recv() for _ in range(3)]
    conn.send(("got", got))


def recv_big_forever(conn, report):
    assert conn.recv() == "started"
    conn.recv_bytes()
    report.send("read one")
    while True:
        conn.recv_bytes()


def echo_upper_on_one_of_both_ends(here, there):
    """Given both ends of one Pipe (as a Process subclass holding both
    gets them), close one and serve on the other."""
    there.close()
    for text in iter(here.recv, None):
        here.send(text.upper())


def recv_passed_end_and_answer(carrier):
    end = carrier.recv()
    got = [end.recv() for _ in range(2)]
    end.send(("through the passed end", got))
    end.close()


def recv_handle_and_write(conn):
    assert conn.recv() == "before"
    fd = reduction.recv_handle(conn)
    with os.fdopen(fd, "wb") as f:
        f.write(b"written by the child")
    assert conn.recv() == "after"
    conn.send("done")


# ---- fileno() tells the truth ---------------------------------------------

def test_readiness_follows_each_message_in_one_process():
    a, b = fastmp.Pipe()
    with a, b:
        assert_ready_exactly_while(b, False)
        items = ["x" * n for n in (0, 1, 255, 4096, 300_000)]
        sender = threading.Thread(target=lambda: [a.send(i) for i in items])
        sender.start()
        sender.join(30)
        for left in range(len(items), 0, -1):
            assert_ready_exactly_while(b, True)
            assert b.recv() == items[len(items) - left]
        assert_ready_exactly_while(b, False)
        assert_ready_exactly_while(a, False)


def test_readiness_follows_each_message_from_another_process(fctx):
    a, b = fctx.Pipe()
    done_here, done_there = fctx.Pipe()
    items = list(range(50)) + ["y" * 100_000, "last"]
    p = fctx.Process(target=send_all_then_wait, args=(b, items, done_there))
    p.start()
    try:
        assert done_here.recv() == "sent"
        for item in items:
            assert_ready_exactly_while(a, True)
            assert a.recv() == item
        assert_ready_exactly_while(a, False)
    finally:
        done_here.send("exit")
        p.join(30)
    assert p.exitcode == 0
    # every copy of the peer end is closed now: end of file is readable
    b.close()
    assert readable(a) and a.poll()
    with pytest.raises(EOFError):
        a.recv()


def test_select_wakes_for_a_message_sent_while_it_waits():
    a, b = fastmp.Pipe()
    with a, b:
        threading.Timer(0.2, a.send, ("late",)).start()
        ready, _, _ = select.select([b], [], [], 10)
        assert ready == [b]
        assert b.recv() == "late"
        assert not readable(b)


# ---- end of file and broken pipes -------------------------------------------

def test_queued_messages_come_before_end_of_file():
    a, b = fastmp.Pipe()
    for i in range(100):
        a.send(i)
    a.close()
    with b:
        assert [b.recv() for _ in range(100)] == list(range(100))
        assert b.poll(0)
        with pytest.raises(EOFError):
            b.recv()
        with pytest.raises(EOFError):
            b.recv_bytes()


def test_send_to_a_closed_reader_raises_broken_pipe():
    a, b = fastmp.Pipe()
    b.close()
    with a:
        with pytest.raises(BrokenPipeError):
            a.send("nobody reads this")


def test_a_writer_blocked_on_a_full_ring_learns_its_reader_is_gone():
    a, b = fastmp.Pipe()
    a.send("unread")                # the count stays above 0: no bell to fail
    threading.Timer(0.3, b.close).start()
    with a:
        with pytest.raises(BrokenPipeError):
            for _ in range(10):
                a.send_bytes(bytes(600_000))


# ---- a peer killed with SIGKILL -------------------------------------------

def test_sigkill_of_a_streaming_writer(fctx):
    a, b = fctx.Pipe()
    p = fctx.Process(target=stream_forever, args=(b,))
    p.start()
    b.close()
    first = [a.recv() for _ in range(1000)]
    assert first == [("msg", i) for i in range(1000)]
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    got = first
    with pytest.raises(EOFError):
        while True:
            got.append(a.recv())
    assert got == [("msg", i) for i in range(len(got))]
    assert readable(a) and a.poll(0)     # end of file is readable


def test_sigkill_of_a_writer_mid_message_with_a_writer_left(fctx):
    a, b = fctx.Pipe()
    p = fctx.Process(target=send_big_forever, args=(b,))
    p.start()
    assert a.recv() == "started"
    assert wait_for(lambda: a.poll(0), timeout=30)
    time.sleep(0.2)                 # it waits for room, inside a message
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    # b is still open here: the torn message is dropped, the next arrives
    b.send("after")
    while True:
        msg = a.recv_bytes()
        if msg != bytes(BIG):
            break
    assert msg == reduction.ForkingPickler.dumps("after")
    assert_ready_exactly_while(a, False)
    b.send("still in step")
    assert_ready_exactly_while(a, True)
    assert a.recv() == "still in step"
    a.close()
    b.close()


def test_sigkill_of_a_reader_mid_message(fctx):
    a, b = fctx.Pipe()
    report_here, report_there = fctx.Pipe()
    writer = fctx.Process(target=send_big_forever, args=(a,))
    reader = fctx.Process(target=recv_big_forever, args=(b, report_there))
    writer.start()
    reader.start()
    a.close()
    try:
        assert report_here.recv() == "read one"
        # the reader spends nearly all its time inside a 64 MiB message
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(10)
        # our copy of the read end skips the rest of the torn message
        assert b.recv_bytes() == bytes(BIG)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
    with pytest.raises(EOFError):
        while True:
            assert b.recv_bytes() == bytes(BIG)
    b.close()


def test_random_sigkills_of_a_writer_never_corrupt_or_wedge(fctx):
    a, b = fctx.Pipe()
    rng = random.Random(1234)
    for round_ in range(4):
        p = fctx.Process(target=stream_checked_messages, args=(b, round_))
        p.start()
        assert a.recv() == "started"
        time.sleep(rng.uniform(0, 0.05))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        b.send("sentinel")          # the surviving writer: our copy of b
        expected = 0
        while True:
            msg = a.recv()
            if msg == "sentinel":
                break
            number, digest, payload = msg
            assert number == expected
            assert hashlib.sha1(payload).hexdigest() == digest
            expected += 1
        assert_ready_exactly_while(a, False)
        b.send("in step")
        assert_ready_exactly_while(a, True)
        assert a.recv() == "in step"
        assert_ready_exactly_while(a, False)
    a.close()
    b.close()


# ---- ends travel to children -------------------------------------------

def test_an_end_with_queued_messages_passes_to_a_child(fctx):
    a, b = fctx.Pipe()
    for item in ("one", 2, b"three"):
        a.send(item)
    p = fctx.Process(target=read_all_and_answer, args=(b,))
    p.start()
    assert a.recv() == ("got", ["one", 2, b"three"])
    p.join(30)
    assert p.exitcode == 0
    a.close()
    b.close()


def test_both_ends_of_one_pipe_pass_to_one_child(fctx):
    # both ends name the same two rings: each travels once
    here, there = fctx.Pipe()
    p = fctx.Process(target=echo_upper_on_one_of_both_ends, args=(here, there))
    p.start()
    here.close()
    for word in ("hello", "world"):
        there.send(word)
        assert there.recv() == word.upper()
    there.send(None)
    p.join(30)
    assert p.exitcode == 0
    there.close()


def test_an_end_passes_through_another_connection(fctx):
    a, b = fctx.Pipe()
    carrier_here, carrier_there = fctx.Pipe()
    a.send("queued before passing")
    p = fctx.Process(target=recv_passed_end_and_answer, args=(carrier_there,))
    p.start()
    carrier_here.send(b)
    a.send("sent after passing")
    assert a.recv() == ("through the passed end",
                        ["queued before passing", "sent after passing"])
    p.join(30)
    assert p.exitcode == 0
    for conn in (a, b, carrier_here, carrier_there):
        conn.close()


def test_handle_passing_on_a_pipe_end_between_messages(fctx):
    a, b = fctx.Pipe()
    r, w = os.pipe()
    p = fctx.Process(target=recv_handle_and_write, args=(b,))
    p.start()
    try:
        a.send("before")
        reduction.send_handle(a, w, p.pid)
        a.send("after")
        assert a.recv() == "done"
    finally:
        p.join(30)
        os.close(w)
    assert p.exitcode == 0
    assert os.read(r, 100) == b"written by the child"
    os.close(r)
    a.close()
    b.close()


def test_poll_then_recv_handle_on_a_pipe_end():
    a, b = fastmp.Pipe()
    r, w = os.pipe()
    with a, b:
        with sending_from_a_thread(
                lambda: reduction.send_handle(a, w, os.getpid())):
            assert b.poll(5)        # readable, as the standard package says
            fd = reduction.recv_handle(b)
        os.write(fd, b"ok")
        os.close(fd)
        assert os.read(r, 10) == b"ok"
        assert not b.poll(0.05)
        a.send("then a message")
        assert b.recv() == "then a message"
        assert_ready_exactly_while(b, False)
    os.close(r)
    os.close(w)


def test_handle_passing_against_unread_messages_keeps_readiness():
    # the receiver's messages wait unread when the sender passes a handle:
    # its bell may come before the acknowledgement, and the sender's end
    # is still readable exactly while they wait
    a, b = fastmp.Pipe()
    r, w = os.pipe()
    with a, b:
        b.send("sent before the handle")
        with sending_from_a_thread(
                lambda: reduction.send_handle(a, w, os.getpid())):
            fd = reduction.recv_handle(b)
        os.close(fd)
        assert_ready_exactly_while(a, True)
        assert a.recv() == "sent before the handle"
        assert_ready_exactly_while(a, False)
        assert_ready_exactly_while(b, False)
    os.close(r)
    os.close(w)


# ---- resources ---------------------------------------------------------

def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_closing_and_collecting_pipes_leaks_no_descriptor():
    shm_before = set(os.listdir("/dev/shm"))
    fds_before = _open_fds()
    for _ in range(50):
        a, b = fastmp.Pipe()
        a.send("x")
        a.close()
        del b                       # collected, not closed
    assert _open_fds() == fds_before
    assert set(os.listdir("/dev/shm")) == shm_before


def test_a_pipe_end_keeps_no_ring_after_close():
    a, b = fastmp.Pipe()
    assert a._ring_fds() is not None
    a.close()
    assert a._ring_fds() is None
    with pytest.raises(OSError):
        a.send("closed")
    b.close()
