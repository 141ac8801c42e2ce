"""Starting a child with the forkserver start method: the fork server
forks it and reports its pid, later its exit status, on a pipe whose read
end is the sentinel; the child reads its preparation data and Process
object from a second pipe, as a spawned child does."""
import io
import os

from .context import reduction, set_spawning_popen
if not reduction.HAVE_SEND_HANDLE:
    raise ImportError('the forkserver start method needs descriptor passing '
                      '(SCM_RIGHTS), which this platform lacks')
from . import forkserver, popen_fork, spawn, util

__all__ = ['Popen']


class _DupFd(object):
    """A descriptor sent to the child with its start request, found there
    by its position among the descriptors the server passed on."""
    __slots__ = ('position',)

    def __init__(self, position):
        self.position = position

    def detach(self):
        """The child's copy of the descriptor."""
        inherited = forkserver.get_inherited_fds()
        return inherited[self.position]


class Popen(popen_fork.Popen):
    """A child forked by the fork server."""
    DupFd = _DupFd
    method = 'forkserver'

    def __init__(self, process_obj):
        self._fds = []   # descriptors the child needs, collected by pickling
        super().__init__(process_obj)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj):
        payload = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(spawn.get_preparation_data(process_obj._name),
                           payload)
            reduction.dump(process_obj, payload)
        finally:
            set_spawning_popen(None)
        self.sentinel, data_w = forkserver.connect_to_new_process(self._fds)
        # The child sees EOF on its copy of the data pipe (its parent
        # sentinel) only once this process has gone: keep a write end open.
        keep_open = os.dup(data_w)
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (keep_open, self.sentinel))
        with open(data_w, 'wb', closefd=True) as to_child:
            to_child.write(payload.getbuffer())
        try:
            self.pid = forkserver.read_signed(self.sentinel)
        except EOFError:
            raise EOFError('the fork server closed the connection without '
                           'starting the child process (the server died, '
                           'or refused the request)') from None

    def poll(self, flag=os.WNOHANG):
        """The exit code the server reported, None if the child still runs
        (flag=0 waits).  255 if the server died before reporting it."""
        if self.returncode is None:
            timeout = 0 if flag == os.WNOHANG else None
            if not util._wait_readable(self.sentinel, timeout):
                return None
            try:
                self.returncode = forkserver.read_signed(self.sentinel)
            except (OSError, EOFError):
                self.returncode = 255
        return self.returncode
