"""Python's side of bench/compare_shared.ts: Value, Array and Lock.

Each workload starts its processes; they meet at a Barrier and each times
its own loop with perf_counter, as the Deno side does; a figure is the total
work divided by the slower process's time. Prints one JSON object last.
"""

import json
import multiprocessing as mp
import time

WARM = 20_000


def worker(kind, n, w, workers, start, times, v, lock, arr):
    per = len(arr) // workers if kind in ("elements", "raw") else n
    lo = w * per
    hi = lo + per
    if kind == "locked":
        for _ in range(WARM):
            with v.get_lock():
                v.value += 1
    elif kind in ("pairs", "contended"):
        for _ in range(WARM):
            lock.acquire()
            lock.release()
    start.wait()
    t0 = time.perf_counter()
    if kind == "locked":
        for _ in range(n):
            with v.get_lock():
                v.value += 1
    elif kind == "elements":
        for i in range(lo, hi):
            arr[i] += 1.0
    elif kind == "raw":
        raw = arr.get_obj()
        for i in range(lo, hi):
            raw[i] += 1.0
    elif kind in ("pairs", "contended"):
        for _ in range(n):
            lock.acquire()
            lock.release()
    times[w] = time.perf_counter() - t0


def run(kind, n, workers=2):
    v = mp.Value("i", 0)
    lock = mp.Lock()
    arr = mp.Array("d", n if kind in ("elements", "raw") else 1)
    start = mp.Barrier(workers)
    times = mp.RawArray("d", workers)
    ps = [
        mp.Process(
            target=worker,
            args=(kind, n, w, workers, start, times, v, lock, arr),
        )
        for w in range(workers)
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
        assert p.exitcode == 0, p.exitcode
    slowest = max(times[:])
    if kind == "locked":
        assert v.value == workers * (n + WARM), v.value
    total = n if kind in ("elements", "raw") else workers * n
    return total / slowest


def best(kind, n, workers=2, repeat=3):
    return max(run(kind, n, workers) for _ in range(repeat))


if __name__ == "__main__":
    mp.set_start_method("fork")
    out = {
        "locked_ops_per_s": best("locked", 100_000),
        "array_elements_per_s": best("elements", 1_000_000, repeat=1),
        "array_raw_per_s": best("raw", 1_000_000, repeat=1),
        "pairs_uncontended_per_s": best("pairs", 1_000_000, 1, repeat=1),
        "pairs_contended_per_s": best("contended", 200_000, repeat=1),
    }
    print(json.dumps(out))
