"""Shared memory between processes: a locked counter, an array, and a
named SharedMemory block."""
import multiprocessing as mp
from multiprocessing import shared_memory


def add_many(counter, n):
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


def negate(arr):
    for i in range(len(arr)):
        arr[i] = -arr[i]


def fill(name, size):
    shm = shared_memory.SharedMemory(name=name)
    shm.buf[:size] = bytes(range(size))
    shm.close()


if __name__ == "__main__":
    counter = mp.Value("i", 0)
    procs = [mp.Process(target=add_many, args=(counter, 5000)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print("counter:", counter.value)

    arr = mp.Array("d", [1.5, 2.5, 3.5])
    p = mp.Process(target=negate, args=(arr,))
    p.start()
    p.join()
    print("array:", arr[:])

    shm = shared_memory.SharedMemory(create=True, size=8)
    p = mp.Process(target=fill, args=(shm.name, 8))
    p.start()
    p.join()
    print("shared_memory:", bytes(shm.buf[:8]))
    shm.close()
    shm.unlink()
