"""A pool worker dies mid-task (as under the OOM killer).  The standard
package waits forever for the lost task (here: until the timeout); fastmp
reports the lost worker at once and the pool keeps serving."""
import multiprocessing as mp
import os
import signal


def work(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


if __name__ == "__main__":
    with mp.Pool(2) as pool:
        try:
            print(pool.map_async(work, range(6)).get(timeout=20))
        except Exception as exc:
            print("map failed:", type(exc).__name__)
        print("pool still works:", pool.apply(work, (5,)))
