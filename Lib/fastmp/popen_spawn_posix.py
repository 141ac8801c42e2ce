"""Starting a child with the spawn start method: a fresh interpreter runs
spawn.spawn_main, which reads the pickled preparation data and Process
object from a pipe.  Waiting and signalling are popen_fork's."""
import io
import os

from . import popen_fork, spawn, util
from .context import reduction, set_spawning_popen

__all__ = ['Popen']


class _DupFd(object):
    """A descriptor the child receives under the same number (it is kept
    open across the exec)."""

    __slots__ = ('fd',)

    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return self.fd


class Popen(popen_fork.Popen):
    DupFd = _DupFd
    method = 'spawn'

    def __init__(self, process_obj):
        # descriptors the child must inherit, collected while pickling
        self._fds = []
        super().__init__(process_obj)

    def duplicate_for_child(self, fd):
        # passed through the exec: the child sees the same number
        self._fds.append(fd)
        return self._fds[-1]

    def _pickled_child(self, process_obj):
        """The bytes the child reads: preparation data, then the Process
        object (pickled while this Popen is the spawning one, which lets
        authkeys and inheritable objects through)."""
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            for obj in (prep_data, process_obj):
                reduction.dump(obj, buf)
        finally:
            set_spawning_popen(None)
        return buf.getbuffer()

    def _launch(self, process_obj):
        from . import resource_tracker
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        payload = self._pickled_child(process_obj)
        to_close_here = []   # the child's ends, closed once it has them
        kept = []            # our ends, closed by the finalizer
        try:
            sentinel_r, child_exit_w = os.pipe()
            kept.append(sentinel_r)
            to_close_here.append(child_exit_w)
            child_r, data_w = os.pipe()
            kept.append(data_w)
            to_close_here.append(child_r)
            cmd = spawn.get_command_line(tracker_fd=tracker_fd,
                                         pipe_handle=child_r)
            self._fds += [child_r, child_exit_w]
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd,
                                           self._fds)
            self.sentinel = sentinel_r
        finally:
            self.finalizer = util.Finalize(self, util.close_fds, kept)
            util.close_fds(*to_close_here)
        # Only the child holds the read end now: if it is gone (its exec
        # failed) the write fails instead of blocking forever on a payload
        # larger than the pipe.
        try:
            with open(data_w, 'wb', closefd=False) as to_child:
                to_child.write(payload)
        except OSError:
            self._discard_child()
            raise

    def _discard_child(self):
        """Kill and reap a child that cannot receive its Process object."""
        self.kill()
        self.poll(0)
