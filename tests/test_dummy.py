"""fastmp.dummy: the multiprocessing API over threads, compared with the
standard multiprocessing.dummy."""
import multiprocessing.dummy as std_dummy
import threading
import time

import pytest

import fastmp.dummy as dummy
from fastmp.dummy import connection


def test_same_public_names():
    assert set(dummy.__all__) == set(std_dummy.__all__)
    for name in std_dummy.__all__ + ["Namespace", "Value", "Array", "dict", "list",
                                     "DummyProcess", "shutdown"]:
        assert hasattr(dummy, name), name
    assert set(connection.__all__) == {"Client", "Listener", "Pipe"}


def _append_after(items, value, delay):
    time.sleep(delay)
    items.append(value)


@pytest.mark.parametrize("mod", [dummy, std_dummy], ids=["fastmp", "stdlib"])
def test_process_is_a_thread(mod):
    items = []
    p = mod.Process(target=_append_after, args=(items, 1, 0.1))
    assert p.exitcode is None
    p.start()
    assert p in mod.active_children()
    p.join()
    assert items == [1] and p.exitcode == 0 and not p.is_alive()
    assert p not in mod.active_children()
    assert mod.current_process() is threading.current_thread()


@pytest.mark.parametrize("mod", [dummy, std_dummy], ids=["fastmp", "stdlib"])
def test_start_from_other_thread_is_refused(mod):
    p = mod.Process(target=lambda: None)
    errors = []

    def starter():
        try:
            p.start()
        except RuntimeError as exc:
            errors.append(exc)
    t = threading.Thread(target=starter)
    t.start()
    t.join()
    assert errors and "current_process" in str(errors[0])


@pytest.mark.parametrize("mod", [dummy, std_dummy], ids=["fastmp", "stdlib"])
def test_manager_namespace_value_array(mod):
    m = mod.Manager()
    assert m is mod
    ns = m.Namespace(b=2, a=1, _hidden=3)
    assert repr(ns) == "Namespace(a=1, b=2)"
    v = m.Value("i", 5)
    v.value += 1
    assert v.value == 6 and repr(v) == "<Value('i', 6)>"
    assert list(m.Array("i", [1, 2, 3])) == [1, 2, 3]
    assert m.list([1]) == [1] and m.dict(a=1) == {"a": 1}
    q = m.JoinableQueue()
    q.put(1)
    assert q.get() == 1
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
                 "Event", "Barrier"):
        assert getattr(m, name) is getattr(threading, name)


@pytest.mark.parametrize("mod", [dummy, std_dummy], ids=["fastmp", "stdlib"])
def test_pipe_and_listener(mod):
    a, b = mod.Pipe()
    a.send({"x": 1})
    assert b.poll(1.0) and b.recv() == {"x": 1}
    assert not a.poll()
    b.send_bytes(b"raw")
    assert a.recv_bytes() == b"raw"
    assert not a.poll(0.05)
    conn_mod = connection if mod is dummy else std_dummy.connection
    with conn_mod.Listener() as listener:
        client = conn_mod.Client(listener.address)
        server = listener.accept()
        client.send("ping")
        assert server.recv() == "ping"
        server.send("pong")
        assert client.recv() == "pong"
        with client, server:
            pass


@pytest.mark.parametrize("mod", [dummy, std_dummy], ids=["fastmp", "stdlib"])
def test_pool_is_a_threadpool(mod):
    with mod.Pool(2) as pool:
        assert pool.map(lambda x: x * 2, range(5)) == [0, 2, 4, 6, 8]
        assert type(pool).__name__ == "ThreadPool"
    pool.join()
