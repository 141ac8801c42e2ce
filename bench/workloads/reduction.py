"""Pickling workloads: ForkingPickler.dumps, which every message sent to
another process goes through, and the resource tracker's registrations,
which every named semaphore and shared-memory segment costs."""
import time

from bench.harness import workload


class Record:
    """A small user object: pickled through the dispatch table lookup."""

    def __init__(self, key, value):
        self.key = key
        self.value = value


def _dumps_loop(mp, obj, n):
    dumps = mp.reduction.ForkingPickler.dumps
    t0 = time.perf_counter()
    for _ in range(n):
        dumps(obj)
    return time.perf_counter() - t0


@workload("pickle_small_message", n=200000, target=2.0)
def pickle_small_message(mp, n):
    """ForkingPickler.dumps of a small tuple (an int and a 64-char str)"""
    return _dumps_loop(mp, (12345, "x" * 64), n)


@workload("pickle_objects", n=20000, target=1.1)
def pickle_objects(mp, n):
    """ForkingPickler.dumps of a list of 20 small user objects"""
    return _dumps_loop(mp, [Record(i, str(i)) for i in range(20)], n)


@workload("tracker_register_unregister", n=20000, target=1.0)
def tracker_register_unregister(mp, n):
    """resource_tracker.register then unregister of one segment name"""
    from importlib import import_module
    tracker = import_module(mp.__name__ + ".resource_tracker")
    tracker.ensure_running()
    t0 = time.perf_counter()
    for i in range(n):
        name = "/bench-%d" % i
        tracker.register(name, "shared_memory")
        tracker.unregister(name, "shared_memory")
    return time.perf_counter() - t0
