"""A Pool spreading work over processes: map, imap and apply_async."""
import multiprocessing as mp


def cube(x):
    return x ** 3


if __name__ == "__main__":
    with mp.Pool(2) as pool:
        print("map:", pool.map(cube, range(10)))
        print("imap sum:", sum(pool.imap(cube, range(10_000), chunksize=100)))
        print("apply_async:", pool.apply_async(cube, (7,)).get(timeout=10))
