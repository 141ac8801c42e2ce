"""Run as a script by tests/test_untrusted_input.py: write into the shared
memory of a live Queue or Pipe() as a hostile or buggy process could
(through a second mapping of its memfd), then try it and print, as JSON,
how each call ended and after how long.

    python corrupt_ring.py TARGET CASE EXPECTED...

TARGET is queue, bounded (a Queue(2)) or pipe; CASE one of CASES below;
EXPECTED the outcome foreseen for each step (receive with a timeout,
receive without one, send), which decides when a step is interrupted with
SIGINT: at once for "sigint", else only if it hangs.
"""
import errno
import json
import mmap
import os
import queue
import signal
import struct
import sys
import threading
import time

import fastmp
from fastmp import _fastmp

LAYOUT = _fastmp._channel_layout
HEADER = LAYOUT["header_size"]
WHOLE, FIRST, MORE, LAST = (LAYOUT[k] for k in ("REC_WHOLE", "REC_FIRST", "REC_MORE",
                                                 "REC_LAST"))
RAW, STR, ASCII = LAYOUT["REC_RAW"], LAYOUT["REC_STR"], LAYOUT["REC_ASCII"]
PAYLOAD = b"m" * 100
SIGINT_SOON = 0.3           # a step expected to block is interrupted then
WATCHDOG = 20.0             # any other step, only if it hangs


class Ring:
    """A second mapping of a channel's memfd, written as another process
    would write it."""

    def __init__(self, fd):
        size = os.fstat(fd).st_size
        self.mem = mmap.mmap(fd, size)
        self.capacity = size - HEADER

    def get(self, field, fmt="Q"):
        return struct.unpack_from("<" + fmt, self.mem, LAYOUT[field])[0]

    def set(self, field, value, fmt="Q"):
        struct.pack_into("<" + fmt, self.mem, LAYOUT[field], value)

    def at(self, pos):
        return HEADER + pos % self.capacity

    def head_record(self):
        """(offset of the record at head, its length, its kind)."""
        off = self.at(self.get("head"))
        length, kind = struct.unpack_from("<II", self.mem, off)
        return off, length, kind

    def publish(self, kind, payload):
        """Append a record at tail and publish it."""
        tail = self.get("tail")
        struct.pack_into("<II", self.mem, self.at(tail), len(payload), kind)
        for i, byte in enumerate(payload):
            self.mem[self.at(tail + 8 + i)] = byte
        self.set("tail", tail + 8 + (len(payload) + 7) // 8 * 8)

    def hold_lock(self, field):
        """Make a robust mutex look held by a live thread of another process
        (its owner's thread id is its lock word)."""
        self.set(field, os.getppid(), "I")


class QueueTarget:
    def __init__(self, maxsize=0):
        self.q = fastmp.Queue(maxsize)
        self.ring = Ring(self.q._fds()[0])

    def send(self, obj):
        self.q.put(obj)

    def fill(self, obj):
        """Send, and wait until the message is in the ring."""
        self.sent = obj
        self.q.put(obj)
        self.q._flush()

    def receive(self, timeout=None):
        return self.q.get(timeout=timeout)


class PipeTarget:
    def __init__(self):
        self.here, self.there = fastmp.Pipe()
        self.ring = Ring(self.here._ring_fds()[1])

    def send(self, obj):
        self.there.send_bytes(obj if isinstance(obj, bytes) else repr(obj).encode())

    def fill(self, obj):
        self.sent = obj
        self.send(obj)

    def receive(self, timeout=None):
        if timeout is not None and not self.here.poll(timeout):
            raise queue.Empty
        return self.here.recv_bytes()


def stream(ring, total, pieces):
    """Publish a streamed message announcing `total` bytes."""
    first, *rest = pieces
    ring.publish(FIRST, struct.pack("<Q", total) + first)
    for kind, piece in rest:
        ring.publish(kind, piece)


def set_head_length(length):
    def corrupt(target):
        target.fill(PAYLOAD)
        off, _, kind = target.ring.head_record()
        struct.pack_into("<II", target.ring.mem, off, length, kind)
    return corrupt


def set_head_kind(kind, length=None):
    def corrupt(target):
        target.fill(PAYLOAD)
        off, old_length, _ = target.ring.head_record()
        struct.pack_into("<II", target.ring.mem, off,
                         old_length if length is None else length, kind)
    return corrupt


def move(field, delta_of):
    def corrupt(target):
        target.fill(PAYLOAD)
        ring = target.ring
        ring.set(field, (ring.get(field) + delta_of(ring)) % (1 << 64))
    return corrupt


def set_field(field, value, fmt="I", send=True):
    def corrupt(target):
        if send:
            target.fill(PAYLOAD)
        target.ring.set(field, value, fmt)
    return corrupt


def wrap_then_set(field, value, fmt="I"):
    """Send a message that wraps around the ring's end, then set `field`."""
    def corrupt(target):
        ring = target.ring
        for counter in ("head", "tail"):
            ring.set(counter, ring.capacity - 16)
        target.fill(PAYLOAD)
        ring.set(field, value, fmt)
    return corrupt


def publish(*records):
    def corrupt(target):
        for kind, payload in records:
            target.ring.publish(kind, payload)
    return corrupt


def streamed(total, *pieces):
    def corrupt(target):
        stream(target.ring, total, pieces)
    return corrupt


def lie_in_str(text, index, byte):
    """A str message whose bytes are not what its record says."""
    def corrupt(target):
        target.fill(text)
        off, _, _ = target.ring.head_record()
        target.ring.mem[off + 8 + index] = byte
    return corrupt


def hold(lock, *then):
    def corrupt(target):
        for step in then:
            step(target)
        target.ring.hold_lock(lock)
    return corrupt


CASES = {
    # a record's length past the data published, past what a record holds
    "length_past_data": set_head_length(4096),
    "length_past_ring": set_head_length(0xfffffff8),
    "unknown_kind": set_head_kind(9),
    "unknown_kind_past_data": set_head_kind(9, 4096),
    "unknown_flags": set_head_kind(WHOLE | 0x4000),
    "ascii_without_str": set_head_kind(WHOLE | ASCII),
    "flags_on_a_pipe": set_head_kind(WHOLE | STR),
    "head_past_tail": move("head", lambda ring: 8),
    "tail_past_ring": move("tail", lambda ring: ring.capacity + 8),
    "head_far_behind": move("head", lambda ring: -(ring.capacity + 8)),
    "tail_off_boundary": move("tail", lambda ring: 4),
    "head_off_boundary": move("head", lambda ring: 4),
    "reader_flag": set_field("rd_in_message", 7),
    "writer_flag": set_field("wr_in_message", 5),
    "marked_corrupt": set_field("corrupt", 1),
    "count_over_maxsize": set_field("count", 100),
    # fields that never change: read once, when the channel is mapped
    "capacity_changed": wrap_then_set("capacity", 1 << 40, "Q"),
    "maxsize_changed": set_field("maxsize", 0),
    "kind_changed": set_field("flags", 0xff),
    # streamed messages whose pieces do not add up
    "stream_total_too_small": streamed(4, b"12345678"),
    "stream_overflow": streamed(16, b"12345678", (MORE, b"x" * 16)),
    "stream_ends_short": streamed(32, b"12345678", (LAST, b"x" * 8)),
    "stream_interrupted": streamed(32, b"12345678", (WHOLE, b"x" * 8)),
    "piece_without_message": publish((MORE, b"x" * 8)),
    # str messages whose bytes are not what their record says
    "ascii_that_is_not": lie_in_str("a" * 40, 3, 0xc3),
    "utf8_that_is_not": lie_in_str("\u00e9" * 20, 3, 0xff),
    # locks that look held by a live process, a message that stalls
    "read_lock_held": hold("rlock", lambda target: target.fill(PAYLOAD)),
    "message_stalls": hold("wlock", streamed(64, b"12345678")),
}

TARGETS = {"queue": QueueTarget, "bounded": lambda: QueueTarget(2), "pipe": PipeTarget}


def outcome(call, expected, target):
    """How call() ended ("ok", "corrupt", "empty", "sigint", "wrong: ..."
    for a message received other than the one sent, or "error: ..."), and
    after how many seconds; SIGINT comes at once if `expected` says it
    blocks, else after WATCHDOG seconds."""
    timer = threading.Timer(SIGINT_SOON if expected == "sigint" else WATCHDOG,
                            os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        received = call()
        sent = getattr(target, "sent", None)
        result = "ok" if received is None or received == sent else "wrong: %r" % (received,)
    except KeyboardInterrupt:
        result = "sigint"
    except queue.Empty:
        result = "empty"
    except OSError as exc:
        corrupt = exc.errno == errno.EBADMSG and "shared memory is corrupt" in str(exc)
        result = "corrupt" if corrupt else "error: %r" % (exc,)
    except Exception as exc:
        result = "error: %r" % (exc,)
    finally:
        timer.cancel()
        timer.join()
    return result, time.monotonic() - start


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    target_name, case, *expected = sys.argv[1:]
    target = TARGETS[target_name]()
    CASES[case](target)
    steps = [lambda: target.receive(timeout=0.5), target.receive,
             lambda: target.send(b"after")]
    print(json.dumps([outcome(step, want, target) for step, want in zip(steps, expected)]),
          flush=True)
    # no exit-time flush: a message may wait behind a lock that looks held
    os._exit(0)


if __name__ == "__main__":
    main()
