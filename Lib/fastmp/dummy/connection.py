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

    @property
    def address(self):
        return self._pending

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._pending = None


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

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def poll(self, timeout=0.0):
        """True when something can be received, waiting up to `timeout`."""
        inbox = self._in
        if inbox.qsize() == 0 and timeout > 0.0:
            with inbox.not_empty:
                inbox.not_empty.wait(timeout)
        return inbox.qsize() != 0

    def close(self):
        """Nothing to release between threads."""
