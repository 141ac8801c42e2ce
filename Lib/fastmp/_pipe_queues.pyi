# Type information for fastmp._pipe_queues (written for fastmp).
from typing import TypeVar

from fastmp import queues

__all__ = ['PipeQueue', 'PipeJoinableQueue', 'PipeSimpleQueue', 'SHAPES']

_T = TypeVar('_T')

class PipeQueue(queues.Queue[_T]): ...
class PipeJoinableQueue(PipeQueue[_T], queues.JoinableQueue[_T]): ...
class PipeSimpleQueue(queues.SimpleQueue[_T]): ...

SHAPES: dict[type, type]
