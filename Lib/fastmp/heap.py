"""Shared memory blocks for sharedctypes, carved out of shared arenas.

The allocator is in C (``fastmp._fastmp.Heap``): arenas are memfd mappings
that forked children inherit and spawn/forkserver children receive by file
descriptor passing; blocks are returned to the heap when the last reference
to their ``BufferWrapper`` in the allocating process goes away.  A forked
child starts with an empty heap of its own and never frees its parent's
blocks.
"""
import contextlib

from . import reduction
from ._fastmp import Arena, Heap as _CHeap, BufferWrapper as _CBufferWrapper

__all__ = ['BufferWrapper']


class Heap(_CHeap):
    """A block allocator over shared arenas, private to one process.

    The attributes with a leading underscore describe the current layout
    (the standard test-suite inspects them); they are computed on demand.
    """

    # Allocation and freeing run in C without releasing the GIL, so they
    # are atomic; holding this "lock" while inspecting needs nothing more.
    _lock = contextlib.nullcontext()
    _pending_free_blocks = ()

    @property
    def _len_to_seq(self):
        """{size: [(arena, start, stop), ...]} of the free blocks."""
        free = {}
        for arena, start, stop, is_free in self._blocks():
            if is_free:
                free.setdefault(stop - start, []).append((arena, start, stop))
        return free

    @property
    def _allocated_blocks(self):
        """{arena: {(start, stop), ...}} of the blocks in use."""
        used = {}
        for arena, start, stop, is_free in self._blocks():
            if not is_free:
                used.setdefault(arena, set()).add((start, stop))
        return used


class BufferWrapper(_CBufferWrapper):
    """``BufferWrapper(size)``: a zeroed block of shared memory of `size`
    bytes; ``create_memoryview()`` gives a writable view of it."""

    _heap = Heap()

    def __reduce__(self):
        return _attach_block, (self._arena, self._start, self._size)


def _attach_block(arena, start, size):
    return BufferWrapper._attach(arena, start, size)


def reduce_arena(arena):
    # the receiving process maps the same memfd through a duplicate of its fd
    return rebuild_arena, (arena.size, reduction.DupFd(arena.fd))


def rebuild_arena(size, dupfd):
    return Arena(size, dupfd.detach())


reduction.register(Arena, reduce_arena)
