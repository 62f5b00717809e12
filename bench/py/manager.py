"""Python's side of bench/compare_manager.ts: multiprocessing managers.

Every workload times the work inside the worker process (after a warm-up),
as the Deno side does; worker start-up is not counted. Prints one JSON
object last.

- dict: a child process alternates d["k"] = i and d["k"] on a Manager dict.
- lock: a child process does lock.acquire(); lock.release() on a Manager Lock.
- queue: a producer process puts N ints on a Manager Queue while a consumer
  process gets them; timed from a "go" event to the last get.
- remote: a SyncManager serving on 127.0.0.1 TCP in its own process; a
  child process connects and alternates set/get on a dict.
- connect: a child process times connect() + the first operation.
- remote threads: the same server; a child process runs argv[2] (default 8)
  threads, each with its own proxy of one dict (Python's proxies must not be
  shared between threads), each alternating set/get on its own key; timed
  from a barrier after every thread's warm-up to the last thread's end;
  the median of 3 runs.
"""

import json
import multiprocessing as mp
import sys
import threading
import time
from multiprocessing.managers import SyncManager

KEY = b"bench-key"


def dict_worker(d, n, out):
    for i in range(1000):
        d["k"] = i
        d["k"]
    t0 = time.perf_counter()
    for i in range(n):
        d["k"] = i
        d["k"]
    out.put((time.perf_counter() - t0) / (2 * n))


def lock_worker(lock, n, out):
    for _ in range(1000):
        lock.acquire()
        lock.release()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    out.put((time.perf_counter() - t0) / n)


def producer(q, go, n):
    go.wait()
    for i in range(n):
        q.put(i)


def consumer(q, go, n, out):
    go.wait()
    t0 = time.time()
    for _ in range(n):
        q.get()
    out.put(time.time())


def remote_worker(addr, n, out):
    m = SyncManager(address=addr, authkey=KEY)
    t0 = time.perf_counter()
    m.connect()
    d = m.dict()
    d["k"] = 0
    connect_s = time.perf_counter() - t0
    for i in range(1000):
        d["k"] = i
        d["k"]
    t0 = time.perf_counter()
    for i in range(n):
        d["k"] = i
        d["k"]
    out.put(((time.perf_counter() - t0) / (2 * n), connect_s))


def remote_threads_worker(addr, threads, n, out):
    m = SyncManager(address=addr, authkey=KEY)
    m.connect()
    d = m.dict()
    per = n // threads
    ready = threading.Barrier(threads + 1)

    def caller(c):
        # Its own proxy of the same dict, so its own connection to the server.
        p = type(d)(d._token, d._serializer, manager=m, authkey=KEY)
        key = "k%d" % c
        for i in range(200):
            p[key] = i
            p[key]
        ready.wait()
        for i in range(per):
            p[key] = i
            p[key]

    ts = [threading.Thread(target=caller, args=(c,)) for c in range(threads)]
    for t in ts:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    out.put(2 * per * threads / (time.perf_counter() - t0))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    res = {}
    with mp.Manager() as m:
        out = mp.Queue()
        d = m.dict()
        p = mp.Process(target=dict_worker, args=(d, n, out))
        p.start()
        res["dict_ops_s"] = 1 / out.get()
        p.join()

        lock = m.Lock()
        p = mp.Process(target=lock_worker, args=(lock, n, out))
        p.start()
        res["lock_pair_us"] = out.get() * 1e6
        p.join()

        q = m.Queue()
        go = m.Event()
        ps = [mp.Process(target=producer, args=(q, go, n)),
              mp.Process(target=consumer, args=(q, go, n, out))]
        for x in ps:
            x.start()
        time.sleep(0.2)
        t0 = time.time()
        go.set()
        end = out.get()
        res["queue_items_s"] = n / (end - t0)
        for x in ps:
            x.join()

    server = SyncManager(address=("127.0.0.1", 0), authkey=KEY)
    server.start()
    try:
        p = mp.Process(target=remote_worker, args=(server.address, n, out))
        p.start()
        per_op, connect_s = out.get()
        p.join()
        res["remote_ops_s"] = 1 / per_op
        res["connect_ms"] = connect_s * 1000
        runs = []
        for _ in range(3):
            p = mp.Process(target=remote_threads_worker,
                           args=(server.address, threads, n, out))
            p.start()
            runs.append(out.get())
            p.join()
        res["remote_threads_ops_s"] = sorted(runs)[1]
    finally:
        server.shutdown()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
