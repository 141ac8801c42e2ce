"""Starting a child with os.fork() and following it: poll, wait, signals.
popen_spawn_posix and popen_forkserver build on this class."""
import atexit
import os
import signal

from . import util
# imported for its side effect: the program's root pid is set before the
# first fork, so that forked children inherit it
from . import _names  # noqa: F401

__all__ = ['Popen']


class Popen(object):
    """A child started by fork.  `sentinel` is readable once the child has
    exited; the child holds the read end of a pipe we keep open, which it
    sees as its parent's sentinel."""

    method = 'fork'
    finalizer = None    # closes our pipe ends
    returncode = None   # set once the child has been reaped

    def __init__(self, process_obj):
        # buffered output would otherwise be written twice, once by each
        util._flush_std_streams()
        self._launch(process_obj)

    def duplicate_for_child(self, fd):
        # a forked child inherits every descriptor as it is
        return fd

    def poll(self, flag=os.WNOHANG):
        """The exit code once the child has exited (-N for signal N), else
        None.  flag=0 waits for it."""
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, flag)
        except OSError:
            return None  # reaped elsewhere, or interrupted
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        """The exit code, waiting at most `timeout` seconds (None: until
        exit); None if the child still runs."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            if not util._wait_readable(self.sentinel, timeout):
                return None
            if timeout == 0.0:
                return self.poll(os.WNOHANG)
        return self.poll(0)

    def _signal(self, signum):
        """Send `signum` to the child unless it has been reaped already."""
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return
        except OSError:
            # e.g. EPERM on a child that is exiting: fine if it is gone
            if self.wait(timeout=0.1) is None:
                raise

    def interrupt(self):
        """SIGINT the child."""
        self._signal(signal.SIGINT)

    def terminate(self):
        """SIGTERM the child."""
        self._signal(signal.SIGTERM)

    def kill(self):
        """SIGKILL the child."""
        self._signal(signal.SIGKILL)

    def _launch(self, process_obj):
        child_sees_exit_r, child_exit_w = os.pipe()
        parent_alive_r, parent_alive_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            _run_child(process_obj, (child_sees_exit_r, parent_alive_w),
                       parent_alive_r)
        os.close(child_exit_w)
        os.close(parent_alive_r)
        self.sentinel = child_sees_exit_r
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (child_sees_exit_r, parent_alive_w))

    def close(self):
        if self.finalizer is not None:
            self.finalizer()


def _run_child(process_obj, parent_fds, parent_sentinel):
    """The forked child's whole life: run the process object, then the
    child's own atexit hooks, then _exit.  Never returns."""
    code = 1
    try:
        # the parent's atexit hooks are not ours to run
        atexit._clear()
        atexit.register(util._exit_function)
        for fd in parent_fds:
            os.close(fd)
        code = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    finally:
        atexit._run_exitfuncs()
        os._exit(code)
