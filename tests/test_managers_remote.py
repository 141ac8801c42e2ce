"""Managers served on TCP with get_server().serve_forever(): remote clients,
wire compatibility with the standard package in both directions, a wrong
authkey, a client killed mid-call, a server that dies."""
import multiprocessing
import multiprocessing.managers as smanagers
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastmp
import fastmp.managers as fmanagers
from support import HERE, child_env

pytestmark = pytest.mark.timeout(60)

AUTHKEY = b'remote-secret'

# The server program: `python -c SERVER fastmp|multiprocessing` serves a
# queue, a dict and a slow object on an ephemeral TCP port, printing it.
SERVER = textwrap.dedent('''
    import importlib, queue, sys, time
    managers = importlib.import_module(sys.argv[1] + '.managers')

    class Slow:
        def nap(self, seconds):
            time.sleep(seconds)
            return 'rested'
        def echo(self, value):
            return value

    shared_queue = queue.Queue()
    shared_store = {}

    class Served(managers.BaseManager):
        pass

    Served.register('get_queue', callable=lambda: shared_queue)
    Served.register('get_store', callable=lambda: shared_store,
                    proxytype=managers.DictProxy)
    Served.register('Slow', Slow)
    server = Served(address=('127.0.0.1', 0), authkey=%r).get_server()
    print(server.address[1], flush=True)
    server.serve_forever()
''' % AUTHKEY)

IMPLS = {'fastmp': (fastmp, fmanagers), 'stdlib': (multiprocessing, smanagers)}


def _client_class(managers):
    class Remote(managers.BaseManager):
        pass
    Remote.register('get_queue')
    Remote.register('get_store', proxytype=managers.DictProxy)
    Remote.register('Slow')
    return Remote


CLIENTS = {name: _client_class(mods[1]) for name, mods in IMPLS.items()}


def _env():
    """The environment of a server or client program: it imports this
    fastmp, and this file's helpers."""
    lib = os.path.dirname(os.path.dirname(fastmp.__file__))
    return child_env({'PYTHONPATH': os.pathsep.join([lib, HERE])})


class _RemoteServer:
    """A server subprocess of one implementation."""

    def __init__(self, impl):
        module = 'fastmp' if impl == 'fastmp' else 'multiprocessing'
        self.proc = subprocess.Popen([sys.executable, '-c', SERVER, module],
                                     stdout=subprocess.PIPE, env=_env(),
                                     stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError('the %s server did not start' % impl)
        self.address = ('127.0.0.1', int(line))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture(params=sorted(IMPLS))
def server_impl(request):
    return request.param


@pytest.fixture(params=sorted(IMPLS))
def client_impl(request):
    return request.param


@pytest.fixture
def fastmp_server():
    server = _RemoteServer('fastmp')
    yield server
    server.stop()


def _connect(impl, address, authkey=AUTHKEY):
    manager = CLIENTS[impl](address=address, authkey=authkey)
    manager.connect()
    return manager


def test_remote_use_across_implementations(server_impl, client_impl):
    """Every pairing of fastmp and standard server and client works."""
    server = _RemoteServer(server_impl)
    try:
        manager = _connect(client_impl, server.address)
        q = manager.get_queue()
        q.put(('hello', 1))
        assert q.get(timeout=10) == ('hello', 1)
        store = manager.get_store()
        store['k'] = [1, 2]
        store.update(j=3)
        assert store['k'] == [1, 2] and sorted(store.keys()) == ['j', 'k']
        slow = manager.Slow()
        assert slow.echo({'a': b'bytes'}) == {'a': b'bytes'}
        # plain data of every kind, and what only the pickle module takes
        for value in [None, True, -2 ** 40, 2 ** 70, 1.5, 'é€', (1, [2], {3: 4}),
                      {1, 2}, bytearray(b'x'), ValueError('v')]:
            back = slow.echo(value)
            assert repr(back) == repr(value) and type(back) is type(value)
        with pytest.raises(KeyError):
            store['missing']
        # A second client sees the first one's data.
        other = _connect(client_impl, server.address)
        assert other.get_store()['j'] == 3
        del q, store, slow, other
    finally:
        server.stop()


def test_wrong_authkey_is_refused_and_server_keeps_serving(fastmp_server):
    with pytest.raises(fastmp.AuthenticationError):
        _connect('fastmp', fastmp_server.address, authkey=b'wrong')
    with pytest.raises(multiprocessing.AuthenticationError):
        _connect('stdlib', fastmp_server.address, authkey=b'wrong')
    manager = _connect('fastmp', fastmp_server.address)
    assert manager.Slow().echo(5) == 5


CLIENT_THAT_NAPS = textwrap.dedent('''
    import sys
    from test_managers_remote import _connect
    manager = _connect('fastmp', ('127.0.0.1', int(sys.argv[1])))
    slow = manager.Slow()
    print('calling', flush=True)
    slow.nap(30)
''')


def test_client_killed_mid_call_does_not_disturb_server(fastmp_server):
    port = str(fastmp_server.address[1])
    victim = subprocess.Popen([sys.executable, '-c', CLIENT_THAT_NAPS, port],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert victim.stdout.readline().strip() == 'calling'
        time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        victim.stdout.close()
    manager = _connect('fastmp', fastmp_server.address)
    start = time.monotonic()
    slow = manager.Slow()
    assert slow.echo('still here') == 'still here'
    assert slow.nap(0) == 'rested'
    assert time.monotonic() - start < 5


def test_dead_server_gives_clients_an_error(fastmp_server):
    manager = _connect('fastmp', fastmp_server.address)
    store = manager.get_store()
    store['x'] = 1
    fastmp_server.stop()
    start = time.monotonic()
    with pytest.raises((EOFError, ConnectionError)):
        store['y'] = 2
    with pytest.raises(ConnectionError):
        manager.Slow()
    assert time.monotonic() - start < 5


PLAIN_STANDARD_CLIENT = textwrap.dedent('''
    import sys
    from multiprocessing.managers import BaseManager, DictProxy
    try:
        import fastmp
    except ImportError:
        pass
    else:
        raise SystemExit('fastmp should not be importable here')

    class Remote(BaseManager):
        pass

    Remote.register('get_queue')
    Remote.register('get_store', proxytype=DictProxy)
    Remote.register('Slow')
    manager = Remote(address=('127.0.0.1', int(sys.argv[1])), authkey=%r)
    manager.connect()
    store = manager.get_store()
    store['from'] = 'standard'
    q = manager.get_queue()
    q.put([1, 2.5, 'three'])
    print(q.get(timeout=10), store['from'], manager.Slow().echo(None))
''' % AUTHKEY)


def test_standard_client_needs_no_fastmp(fastmp_server, tmp_path):
    """The bytes a fastmp server sends for ordinary calls name nothing
    from fastmp: a standard client without it installed works."""
    # -I -S: no PYTHONPATH, no site-packages (where a venv has fastmp).
    out = subprocess.run([sys.executable, '-I', '-S', '-c',
                          PLAIN_STANDARD_CLIENT, str(fastmp_server.address[1])],
                         capture_output=True, text=True, cwd=str(tmp_path),
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[1, 2.5, 'three'] standard None\n"
