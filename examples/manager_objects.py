"""A Manager shares ordinary Python objects: a dict and a list."""
import multiprocessing as mp


def record(d, log, key):
    d[key] = key * key
    log.append(key)


if __name__ == "__main__":
    with mp.Manager() as manager:
        d = manager.dict()
        log = manager.list()
        procs = [mp.Process(target=record, args=(d, log, k)) for k in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print("dict:", dict(sorted(d.items())))
        print("list:", sorted(log))
