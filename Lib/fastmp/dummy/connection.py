"""fastmp.dummy.connection: Listener, Client and Pipe between threads,
built on queue.Queue (objects are passed by reference, not pickled)."""
from queue import Queue

__all__ = ['Client', 'Listener', 'Pipe']

families = [None]


class Listener(object):
    """Accepts Client() calls made with its `address` (a queue of pending
    connections, at most `backlog` waiting)."""

    def __init__(self, address=None, family=None, backlog=1):
        self._pending = Queue(backlog)

    def accept(self):
        inbox, outbox = self._pending.get()
        return Connection(inbox, outbox)

    def close(self):
        self._pending = None

    @property
    def address(self):
        return self._pending

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()


def Client(address):
    """Connect to the Listener whose address is `address`."""
    to_server, to_client = Queue(), Queue()
    address.put((to_server, to_client))
    return Connection(to_client, to_server)


def Pipe(duplex=True):
    """Two connected Connections (always duplex between threads)."""
    left, right = Queue(), Queue()
    return Connection(left, right), Connection(right, left)


class Connection(object):
    """One end: receives from `inbox`, sends to `outbox`."""

    def __init__(self, inbox, outbox):
        self._in = inbox
        self._out = outbox
        self.send = self.send_bytes = outbox.put
        self.recv = self.recv_bytes = inbox.get

    def poll(self, timeout=0.0):
        if self._in.qsize() > 0:
            return True
        if timeout <= 0.0:
            return False
        with self._in.not_empty:
            self._in.not_empty.wait(timeout)
        return self._in.qsize() > 0

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()
