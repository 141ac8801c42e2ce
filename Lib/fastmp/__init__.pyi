# Type information for fastmp (written for fastmp).  The top-level
# functions are the default context's methods, as at run time.
from fastmp import context as context, process as process, reduction as reducer
from fastmp._dropin import install as install
from fastmp.context import (AuthenticationError as AuthenticationError, BufferTooShort as BufferTooShort,
                            Process as Process, ProcessError as ProcessError, TimeoutError as TimeoutError)
from fastmp.process import (active_children as active_children, current_process as current_process,
                            parent_process as parent_process)

__all__ = [
    'Array', 'AuthenticationError', 'Barrier', 'BoundedSemaphore', 'BufferTooShort', 'Condition', 'Event',
    'JoinableQueue', 'Lock', 'Manager', 'Pipe', 'Pool', 'Process', 'ProcessError', 'Queue', 'RLock', 'RawArray',
    'RawValue', 'Semaphore', 'SimpleQueue', 'TimeoutError', 'Value', 'active_children',
    'allow_connection_pickling', 'cpu_count', 'current_process', 'freeze_support', 'get_all_start_methods',
    'get_context', 'get_logger', 'get_start_method', 'log_to_stderr', 'parent_process', 'reducer',
    'set_executable', 'set_forkserver_preload', 'set_start_method',
]

__version__: str
SUBDEBUG: int
SUBWARNING: int

Array = context._default_context.Array
Barrier = context._default_context.Barrier
BoundedSemaphore = context._default_context.BoundedSemaphore
Condition = context._default_context.Condition
Event = context._default_context.Event
JoinableQueue = context._default_context.JoinableQueue
Lock = context._default_context.Lock
Manager = context._default_context.Manager
Pipe = context._default_context.Pipe
Pool = context._default_context.Pool
Queue = context._default_context.Queue
RLock = context._default_context.RLock
RawArray = context._default_context.RawArray
RawValue = context._default_context.RawValue
Semaphore = context._default_context.Semaphore
SimpleQueue = context._default_context.SimpleQueue
Value = context._default_context.Value
allow_connection_pickling = context._default_context.allow_connection_pickling
cpu_count = context._default_context.cpu_count
freeze_support = context._default_context.freeze_support
get_all_start_methods = context._default_context.get_all_start_methods
get_context = context._default_context.get_context
get_logger = context._default_context.get_logger
get_start_method = context._default_context.get_start_method
log_to_stderr = context._default_context.log_to_stderr
set_executable = context._default_context.set_executable
set_forkserver_preload = context._default_context.set_forkserver_preload
set_start_method = context._default_context.set_start_method
