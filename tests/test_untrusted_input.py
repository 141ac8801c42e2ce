"""Bytes from another process are not trusted: a frame header commits no
memory before its payload arrives, a Queue or Pipe() whose shared memory
another process overwrote raises a clear error (and stays broken) instead
of crashing, spinning or hanging, and a peer's pickle is read by fastmp's
own reader only when the pickle module would read it the same way."""
import fcntl
import importlib
import json
import os
import pickle
import socket
import struct
import termios
import threading
import time

import pytest

import fastmp
from fastmp import _fastmp
from corrupt_ring import FIRST, Ring
from support import HERE, run_python, wait_for

GIB = 1 << 30
# far below the 1 GiB announced: what a reader may allocate as it waits
RSS_SLACK = 64 << 20


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def thread_state(tid):
    with open("/proc/self/task/%d/stat" % tid) as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


def unread_bytes(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class BlockedCall:
    """call() in a thread, which records its native id and how it ended."""

    def __init__(self, call):
        self.tid = None
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(call,))
        self.thread.start()
        assert wait_for(lambda: self.tid is not None)

    def _run(self, call):
        self.tid = threading.get_native_id()
        try:
            self.result = call()
        except BaseException as exc:
            self.result = exc

    def wait_asleep(self, fd=None):
        """Until the thread sleeps, with nothing left unread in `fd`."""
        def asleep():
            return ((fd is None or unread_bytes(fd) == 0)
                    and thread_state(self.tid) == "S")
        assert wait_for(lambda: asleep() and (time.sleep(0.05) or asleep()))

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result


def connection_module(impl):
    return importlib.import_module(impl.__name__ + ".connection")


def test_a_frame_header_alone_takes_no_memory(impl):
    here, there = socket.socketpair()
    conn = connection_module(impl).Connection(here.detach())
    reader = BlockedCall(conn.recv_bytes)
    before = rss()
    there.sendall(struct.pack("!i", GIB - 1))
    reader.wait_asleep(conn.fileno())
    assert rss() - before < RSS_SLACK
    there.close()
    assert isinstance(reader.join(), EOFError)
    conn.close()


def test_a_long_frame_header_alone_takes_no_memory():
    here, there = socket.socketpair()
    conn = fastmp.connection.Connection(here.detach())
    reader = BlockedCall(conn.recv_bytes)
    before = rss()
    there.sendall(struct.pack("!iQ", -1, 3 * GIB))
    reader.wait_asleep(conn.fileno())
    assert rss() - before < RSS_SLACK
    there.close()
    assert isinstance(reader.join(), EOFError)
    conn.close()


def test_a_listener_refuses_a_huge_handshake_reply(impl):
    with connection_module(impl).Listener(family="AF_UNIX", authkey=b"key") as listener:
        before = rss()
        server = BlockedCall(listener.accept)
        with socket.socket(socket.AF_UNIX) as peer:
            peer.connect(listener.address)
            length, = struct.unpack("!i", peer.recv(4))
            assert length <= 256
            peer.recv(length)                       # the challenge
            peer.sendall(struct.pack("!i", GIB - 1))
            error = server.join()
            assert rss() - before < RSS_SLACK
    assert isinstance(error, OSError) and "bad message length" in str(error)


def test_a_client_refuses_a_huge_challenge(impl):
    with socket.socket(socket.AF_UNIX) as server:
        address = "\0fastmp-untrusted-%d" % os.getpid()
        server.bind(address)
        server.listen(1)
        before = rss()
        client = BlockedCall(lambda: connection_module(impl).Client(address, authkey=b"key"))
        peer, _ = server.accept()
        with peer:
            peer.sendall(struct.pack("!i", GIB - 1))
            error = client.join()
            assert rss() - before < RSS_SLACK
    assert isinstance(error, OSError) and "bad message length" in str(error)


def test_a_pipe_message_announced_alone_takes_no_memory():
    here, there = fastmp.Pipe()
    reader = BlockedCall(here.recv_bytes)
    reader.wait_asleep()
    before = rss()
    ring = Ring(there._ring_fds()[0])
    ring.publish(FIRST, struct.pack("<Q", GIB))
    # the reader takes the record in, then waits for the rest
    assert wait_for(lambda: ring.get("head") == ring.get("tail"))
    reader.wait_asleep()
    assert rss() - before < RSS_SLACK
    ring.mem.close()
    there.close()
    assert isinstance(reader.join(), EOFError)
    here.close()


# ---- shared memory overwritten by another process --------------------

CORRUPT = ("corrupt", "corrupt", "corrupt")
RING_CASES = [
    "length_past_data", "length_past_ring", "unknown_kind", "unknown_kind_past_data",
    "unknown_flags",
    "head_past_tail", "tail_past_ring", "head_far_behind", "tail_off_boundary",
    "head_off_boundary", "reader_flag", "marked_corrupt", "stream_total_too_small",
    "stream_overflow", "stream_ends_short", "stream_interrupted",
    "piece_without_message",
]
EXPECTED = (
    [("queue", case, CORRUPT) for case in RING_CASES + [
        "ascii_without_str", "ascii_that_is_not", "utf8_that_is_not"]]
    + [("pipe", case, CORRUPT) for case in RING_CASES + ["flags_on_a_pipe"]]
    + [
        # found by the next writer; the reader is not told
        ("queue", "writer_flag", ("ok", "sigint", "corrupt")),
        ("pipe", "writer_flag", ("ok", "sigint", "corrupt")),
        ("bounded", "count_over_maxsize", ("ok", "sigint", "corrupt")),
        # read once, when mapped: a change later goes unnoticed, and unused
        ("queue", "capacity_changed", ("ok", "sigint", "ok")),
        ("pipe", "capacity_changed", ("ok", "sigint", "ok")),
        ("bounded", "maxsize_changed", ("ok", "sigint", "ok")),
        ("queue", "kind_changed", ("ok", "sigint", "ok")),
        # nothing to find: the calls wait as they would for a slow peer,
        # within their timeout and open to Ctrl-C
        ("queue", "read_lock_held", ("empty", "sigint", "ok")),
        ("queue", "message_stalls", ("sigint", "sigint", "ok")),
        ("pipe", "message_stalls", ("sigint", "sigint", "sigint")),
    ])


@pytest.mark.parametrize("target, case, expected", EXPECTED,
                         ids=["%s-%s" % (t, c) for t, c, _ in EXPECTED])
def test_overwritten_shared_memory(target, case, expected):
    """Receive with a timeout, receive without one, send: each ends as
    expected (after SIGINT for "sigint"), the process does not crash."""
    proc = run_python(os.path.join(HERE, "corrupt_ring.py"), target, case, *expected)
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)
    assert [result for result, _ in outcomes] == list(expected), proc.stdout
    (first, took), _, _ = outcomes
    if first == "empty":
        assert took >= 0.45                     # the timeout is honoured


def test_a_blocked_put_learns_that_the_queue_is_corrupt():
    q = fastmp.Queue(1)
    q.put(b"first")
    ring = Ring(q._fds()[0])
    putter = BlockedCall(lambda: q.put(b"second"))
    putter.wait_asleep()
    off, length, _ = ring.head_record()
    struct.pack_into("<II", ring.mem, off, length, 9)
    with pytest.raises(OSError, match="corrupt"):
        q.get(timeout=5)
    error = putter.join()
    assert isinstance(error, OSError) and "shared memory is corrupt" in str(error)
    ring.mem.close()
    q.close()
    q.join_thread()


@pytest.mark.parametrize("field, value, fmt", [
    ("magic", 0, "I"), ("capacity", 12288, "Q"), ("capacity", 1 << 41, "Q"),
    ("flags", 0x80, "I"), ("maxsize", 1 << 31, "I")])
def test_a_channel_with_a_bad_header_is_refused(field, value, fmt):
    q = fastmp.Queue()
    ring = Ring(q._fds()[0])
    ring.set(field, value, fmt)
    fds = [os.dup(fd) for fd in q._fds()]
    with pytest.raises(OSError):
        _fastmp.Channel()._attach(*fds)
    for fd in fds:
        os.close(fd)                    # not taken over when refused
    ring.mem.close()
    q.close()


def test_a_channel_of_another_kind_is_refused():
    """A Pipe() ring given to a Queue (or a Queue's to a Pipe()) is not
    mapped."""
    here, there = fastmp.Pipe()
    fds = [os.dup(fd) for fd in here._ring_fds()]
    with pytest.raises(OSError):
        _fastmp.Channel()._attach(*fds)
    for fd in fds:
        os.close(fd)                    # not taken over when refused
    q = fastmp.Queue()
    with pytest.raises(OSError):
        here._attach_rings(os.dup(q._fds()[0]), os.dup(q._fds()[0]))
    here.close()
    there.close()


# ---- pickles from a peer (found by make fuzz) --------------------------

@pytest.mark.parametrize("data", [
    b"]((])]]]e])]]]e.",                        # APPENDS reaching below a MARK
    b"\x80\x04\x95\xff" + b"\0" * 7 + b"K\x01.",  # a FRAME longer than the rest
])
def test_quick_loads_declines_what_pickle_refuses(data):
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    assert _fastmp.quick_loads(data, None) is None


def test_quick_loads_memoizes_where_pickle_does():
    # a PUT at 1 leaves entry 0 unset: MEMOIZE then writes entry 1 again
    # (pickle counts the entries set), and GET 1 finds the list
    data = b"](X\x06\0\0\0s\0aredq\x01h\x01]" + b"\x94" * 9 + b"h\x01e."
    assert _fastmp.quick_loads(data, None) == pickle.loads(data) == ["s\0ared", "s\0ared", [], []]
