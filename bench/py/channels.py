"""Python's side of bench/compare_channels.ts: multiprocessing Pipe and Queue.

Each workload starts its processes, waits until they are ready, then times
from a "go" signal, as the Deno side does. Prints one JSON object last.
"""

import json
import multiprocessing as mp
import time


def echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def pipe_rtt(trips):
    here, there = mp.Pipe()
    warm = 1000
    p = mp.Process(target=echo, args=(there, warm + trips))
    p.start()
    for i in range(warm):
        here.send(i)
        here.recv()
    t0 = time.perf_counter()
    for i in range(trips):
        here.send(i)
        here.recv()
    dt = time.perf_counter() - t0
    p.join()
    return dt / trips * 1e6


def bytes_sender(conn, n, size):
    b = bytes(size)
    conn.send("ready")
    for _ in range(n):
        conn.send_bytes(b)


def pipe_bytes(count, size=1024):
    here, there = mp.Pipe(duplex=False)
    p = mp.Process(target=bytes_sender, args=(there, count, size))
    p.start()
    here.recv()
    t0 = time.perf_counter()
    total = 0
    for _ in range(count):
        total += len(here.recv_bytes())
    dt = time.perf_counter() - t0
    assert total == count * size
    p.join()
    return count / dt


def producer(q, ready, go, n, kind):
    s = "x" * 1024
    ready.release()
    go.wait()
    if kind == "int":
        for i in range(n):
            q.put(i & 0xFFFF)
    else:
        for _ in range(n):
            q.put(s)
    # Returning joins the queue's feeder thread: every item is in the pipe.


def consumer(q, ready, go, counts, me, done):
    ready.release()
    go.wait()
    n = 0
    while q.get() != -1:
        n += 1
    counts[me] = n
    done.release()


def queue_throughput(items, producers, consumers, kind):
    q = mp.Queue()
    ready = mp.Semaphore(0)
    done = mp.Semaphore(0)
    go = mp.Event()
    counts = mp.Array("i", consumers)
    per = items // producers
    procs = [
        mp.Process(target=producer, args=(q, ready, go, per, kind))
        for _ in range(producers)
    ] + [
        mp.Process(target=consumer, args=(q, ready, go, counts, i, done))
        for i in range(consumers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    # A multiprocessing.Queue is not FIFO across producers (each has its own
    # feeder thread), so the sentinels go in once every producer is done.
    for p in procs[:producers]:
        p.join()
    for _ in range(consumers):
        q.put(-1)
    for _ in range(consumers):
        done.acquire()
    dt = time.perf_counter() - t0
    for p in procs:
        p.join()
    got = sum(counts)
    assert got == per * producers, got
    return got / dt


def steady(fn):
    """The median of 3 runs after one warm-up run (as the Deno side)."""
    fn()
    return sorted(fn() for _ in range(3))[1]


LARGE = 64 * 1024 * 1024


if __name__ == "__main__":
    mp.set_start_method("fork")
    out = {
        "pipe_rtt_us": pipe_rtt(100_000),
        "pipe_bytes_per_s": steady(lambda: pipe_bytes(100_000)),
        "pipe_large_mb_per_s": steady(lambda: pipe_bytes(4, LARGE)) * LARGE / 1e6,
        "queue_int_1_1": queue_throughput(200_000, 1, 1, "int"),
        "queue_int_2_2": queue_throughput(200_000, 2, 2, "int"),
        "queue_str_1_1": queue_throughput(200_000, 1, 1, "str"),
        "queue_str_2_2": queue_throughput(200_000, 2, 2, "str"),
    }
    print(json.dumps(out))
