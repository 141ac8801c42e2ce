"""Sharing descriptors with another process of the program outside of a
process start (pickling a socket or Connection to send it through a Pipe
or a Queue): DupFd keeps a duplicate of the descriptor, and a background
thread hands it over, by SCM_RIGHTS, to the first process that connects to
this process's listener (authenticated with the program's authkey) and
asks for it by key.
"""
import itertools
import os
import signal
import sys
import threading

from . import process, util
from .context import reduction

__all__ = ['stop', 'DupFd']


class DupFd(object):
    """A picklable stand-in for a descriptor, valid until the one process
    that calls detach() has received its copy."""

    def __init__(self, fd):
        copy = os.dup(fd)

        def hand_over(conn, pid):
            reduction.send_handle(conn, copy, pid)

        self._id = _resource_sharer.register(hand_over,
                                             lambda: os.close(copy))

    def detach(self):
        """Fetch the descriptor from the process that pickled it; call it
        once."""
        with _resource_sharer.get_connection(self._id) as conn:
            try:
                return reduction.recv_handle(conn)
            except EOFError:
                raise EOFError('the process that pickled this descriptor '
                               'no longer holds it (it was already '
                               'received once)') from None


class _ResourceSharer(object):
    """The registry of shared resources and the thread that serves them."""

    def __init__(self):
        self._keys = itertools.count(1)
        self._cache = {}          # key -> (send(conn, pid), close())
        self._lock = threading.Lock()
        self._no_server()
        util.register_after_fork(self, _ResourceSharer._afterfork)

    def register(self, send, close):
        """Keep a resource until a process asks for it: `send(conn, pid)`
        hands it over, `close()` releases our copy afterwards.  Returns the
        identifier the receiving process needs."""
        with self._lock:
            if self._address is None:
                self._start()
            key = next(self._keys)
            self._cache[key] = (send, close)
            return self._address, key

    @staticmethod
    def get_connection(ident):
        """A connection to the process holding resource `ident`, over which
        that resource is about to arrive."""
        from .connection import Client
        address, key = ident
        conn = Client(address, authkey=process.current_process().authkey)
        conn.send((key, os.getpid()))
        return conn

    def stop(self, timeout=None):
        """Stop the serving thread and release every resource not handed
        over yet."""
        from .connection import Client
        with self._lock:
            if self._address is None:
                return
            with Client(self._address,
                        authkey=process.current_process().authkey) as conn:
                conn.send(None)   # asks the thread to stop
            self._thread.join(timeout)
            if self._thread.is_alive():
                util.sub_warning('_ResourceSharer thread did not stop when '
                                 'asked')
            self._listener.close()
            self._no_server()
            self._release_all()

    def _no_server(self):
        self._listener = None
        self._address = None   # where the listener accepts requests
        self._thread = None

    def _release_all(self):
        for _send, close in self._cache.values():
            close()
        self._cache.clear()

    def _afterfork(self):
        # The thread does not exist in a forked child, and what the parent
        # registered is the parent's to hand over.
        self._release_all()
        self._lock = threading.Lock()
        if self._listener is not None:
            self._listener.close()
        self._no_server()

    def _start(self):
        from .connection import Listener
        util.debug('starting listener and thread for sending handles')
        self._listener = Listener(authkey=process.current_process().authkey,
                                  backlog=128)
        self._address = self._listener.address
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name='fastmp-resource-sharer')
        self._thread.start()

    def _serve(self):
        """The thread: hand each requested resource over, until stopped."""
        # Signals belong to the program's own threads.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            try:
                with self._listener.accept() as conn:
                    request = conn.recv()
                    if request is None:
                        return
                    key, pid = request
                    try:
                        send, close = self._cache.pop(key)
                    except KeyError:
                        continue   # already handed over: the peer sees EOF
                    try:
                        send(conn, pid)
                    finally:
                        close()
            except Exception:
                if not util.is_exiting():
                    sys.excepthook(*sys.exc_info())


_resource_sharer = _ResourceSharer()
stop = _resource_sharer.stop
