"""A small program on fastmp's public API.  tests/test_typing.py checks it
with `mypy --strict` (assert_type pins the types the stubs give) and runs it
under the fork start method, where it prints OK.

Usage: python typing_sample.py [start method]
"""
from __future__ import annotations

import ctypes
import sys
from typing import TYPE_CHECKING, Any

import fastmp
from fastmp import shared_memory
from fastmp.managers import DictProxy, ListProxy, SyncManager
from fastmp.pool import AsyncResult
from fastmp.queues import Queue
from fastmp.sharedctypes import Synchronized

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    def assert_type(value, expected_type):
        return value


def square(x: int) -> int:
    return x * x


def produce(queue: Queue[str], count: int) -> None:
    for i in range(count):
        queue.put('item-%d' % i)


def record(shared: DictProxy[str, int], log: ListProxy[str], key: str, value: int) -> None:
    shared[key] = value
    log.append(key)


def fill(name: str, size: int) -> None:
    segment = shared_memory.SharedMemory(name=name)
    segment.buf[:size] = bytes(range(size))
    segment.close()


def bump(counter: Synchronized[int], times: int) -> None:
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def main(method: str) -> None:
    ctx = fastmp.get_context(method)
    assert fastmp.cpu_count() >= 1
    assert_type(fastmp.current_process().name, str)

    # Process and Queue
    queue: Queue[str] = ctx.Queue()
    producer = ctx.Process(target=produce, args=(queue, 3))
    producer.start()
    items = [queue.get(timeout=60) for _ in range(3)]
    producer.join()
    assert_type(items, list[str])
    assert_type(producer.exitcode, int | None)
    assert items == ['item-0', 'item-1', 'item-2'] and producer.exitcode == 0
    queue.close()

    # Pool
    with ctx.Pool(2) as pool:
        squares = pool.map(square, range(5))
        assert_type(squares, list[int])
        pending = pool.apply_async(square, (7,))
        assert_type(pending, AsyncResult[int])
        assert_type(pending.get(timeout=60), int)
        total = sum(pool.imap_unordered(square, [1, 2, 3]))
        assert squares == [0, 1, 4, 9, 16] and pending.get() == 49 and total == 14

    # Manager
    with ctx.Manager() as manager:
        assert_type(manager, SyncManager)
        shared: DictProxy[str, int] = manager.dict()
        log: ListProxy[str] = manager.list()
        writer = ctx.Process(target=record, args=(shared, log, 'answer', 42))
        writer.start()
        writer.join()
        assert_type(shared['answer'], int)
        assert shared['answer'] == 42 and list(log) == ['answer']

    # shared memory and sharedctypes
    segment = shared_memory.SharedMemory(create=True, size=8)
    try:
        assert_type(segment.buf, memoryview)
        filler = ctx.Process(target=fill, args=(segment.name, 8))
        filler.start()
        filler.join()
        assert bytes(segment.buf[:8]) == bytes(range(8))
    finally:
        segment.close()
        segment.unlink()
    numbers = shared_memory.ShareableList([1, 2, 3])
    try:
        assert_type(numbers[0], int)
        numbers[0] = 10
        assert numbers[0] == 10 and len(numbers) == 3
    finally:
        numbers.shm.close()
        numbers.shm.unlink()
    counter = ctx.Value(ctypes.c_int, 0)
    assert_type(counter, 'Synchronized[int]')  # not subscriptable at run time
    adder = ctx.Process(target=bump, args=(counter, 5))
    adder.start()
    adder.join()
    assert counter.value == 5
    raw: Any = ctx.RawArray('d', 4)
    assert len(raw) == 4

    assert not ctx.active_children()
    print('OK')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'fork')
