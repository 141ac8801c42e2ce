"""Connection workloads: messages between two processes (fork start method)
over Pipe() and over an authenticated AF_UNIX Listener/Client.  Starting
the peer process is left out of the measured time: each peer waits for a
go signal first."""
import importlib
import time

from bench.harness import workload

SMALL_STR = "x" * 256
BIG = 64 << 20


def _echo(conn):
    for obj in iter(conn.recv, None):
        conn.send(obj)


def _stream_strings(conn, n):
    conn.recv()                         # go
    for _ in range(n):
        conn.send(SMALL_STR)
    conn.send(None)


def _stream_bytes(go, writer, n):
    payload = b"b" * BIG
    go.send("ready")
    go.recv()
    for _ in range(n):
        writer.send_bytes(payload)


def _client_echo(package, address, authkey):
    connection = importlib.import_module(package + ".connection")
    with connection.Client(address, family="AF_UNIX", authkey=authkey) as conn:
        _echo(conn)


def _run_peer(mp, target, args, measure):
    """Start `target(*args)` in a forked process, time `measure()`, join."""
    peer = mp.get_context("fork").Process(target=target, args=args)
    peer.start()
    try:
        return measure()
    finally:
        peer.join(60)
        if peer.exitcode is None:
            peer.kill()
            peer.join()


def _ping_pong(conn, n):
    conn.send(0)
    conn.recv()                         # the peer is up
    t0 = time.perf_counter()
    for i in range(n):
        conn.send(i)
        conn.recv()
    elapsed = time.perf_counter() - t0
    conn.send(None)
    return elapsed


@workload("pipe_roundtrip", n=20000, target=1.4)
def pipe_roundtrip(mp, n):
    """small int ping-pong over a duplex Pipe() between two processes"""
    here, there = mp.Pipe()
    return _run_peer(mp, _echo, (there,), lambda: _ping_pong(here, n))


@workload("pipe_256B", n=100000, target=3.0)
def pipe_256B(mp, n):
    """a producer process streams 256-byte str objects through a Pipe()"""
    here, there = mp.Pipe()

    def consume():
        t0 = time.perf_counter()
        here.send("go")
        count = 0
        while here.recv() is not None:
            count += 1
        assert count == n
        return time.perf_counter() - t0
    return _run_peer(mp, _stream_strings, (there, n), consume)


@workload("pipe_64MiB_bytes", n=8, target=5.0)
def pipe_64MiB_bytes(mp, n):
    """send_bytes/recv_bytes of 64 MiB through Pipe(duplex=False)"""
    reader, writer = mp.Pipe(duplex=False)
    go_here, go_there = mp.Pipe()

    def consume():
        go_here.recv()
        t0 = time.perf_counter()
        go_here.send("go")
        for _ in range(n):
            assert len(reader.recv_bytes()) == BIG
        return time.perf_counter() - t0
    return _run_peer(mp, _stream_bytes, (go_there, writer, n), consume)


@workload("listener_client_roundtrip", n=20000, target=1.4)
def listener_client_roundtrip(mp, n):
    """small-object round trips over an AF_UNIX Listener/Client with an authkey"""
    connection = importlib.import_module(mp.__name__ + ".connection")
    authkey = b"bench-key"
    with connection.Listener(family="AF_UNIX", authkey=authkey) as listener:
        def measure():
            with listener.accept() as conn:
                return _ping_pong(conn, n)
        return _run_peer(mp, _client_echo, (mp.__name__, listener.address, authkey), measure)
