"""Processes talking through a Pipe and a Queue: plain multiprocessing code."""
import multiprocessing as mp


def echo(conn):
    # Answer every message until the parent says stop.
    while (msg := conn.recv()) != "stop":
        conn.send(msg.upper())


def square_worker(tasks, results):
    for n in iter(tasks.get, None):
        results.put((n, n * n))


if __name__ == "__main__":
    parent, child = mp.Pipe()
    p = mp.Process(target=echo, args=(child,))
    p.start()
    for word in ["hello", "fastmp"]:
        parent.send(word)
        print("pipe echo:", parent.recv())
    parent.send("stop")
    p.join()

    tasks, results = mp.Queue(), mp.Queue()
    workers = [mp.Process(target=square_worker, args=(tasks, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for n in range(10):
        tasks.put(n)
    for _ in workers:
        tasks.put(None)
    squares = dict(results.get() for _ in range(10))
    for w in workers:
        w.join()
    print("queue squares:", [squares[n] for n in range(10)])
