"""Python side of the Pool comparison (bench/compare_cube.ts).

Prints one JSON object on its last line:
  imap_cs1_per_s       imap_unordered of x**3 over 100 000 items, chunksize 1
                       (median of 3 after 3 warm-up runs, as ours)
  imap_cs1000_per_s    the same with chunksize 1000
  heavy_serial_ms      64 tasks summing i**3 over range(200 000), serially
  heavy_pool_ms        the same through Pool(2).map, alternating with the
                       serial run: the pair with the median speedup of 5
  apply_us             one pool.apply(noop, (i,)) round trip at a time:
                       200 warm-up calls, then 3 rounds of 2000 sequential
                       calls; the median round, in microseconds per call
  start_spawn_ms       get_context("spawn").Pool(2) creation to the first
                       apply result (median of 5)
  start_forkserver_ms  the same with "forkserver" (the server itself starts
                       once, in the first of the 5)
  start_fork_ms        the same with "fork"
  start_ms             = start_fork_ms (kept for older readers)

The pool of the steady-state figures uses the default start method.
"""
import json
import multiprocessing
import time
from multiprocessing import Pool


def cube(x):
    return x ** 3


def heavy(x):
    s = 0
    for i in range(200_000):
        s += i ** 3
    return s + x


def noop(x):
    return x


def rate(pool, chunksize, n=100_000):
    t0 = time.perf_counter()
    count = 0
    for _ in pool.imap_unordered(cube, range(n), chunksize=chunksize):
        count += 1
    assert count == n
    return n / (time.perf_counter() - t0)


def steady(pool, chunksize):
    for _ in range(3):
        rate(pool, chunksize)
    rates = sorted(rate(pool, chunksize) for _ in range(3))
    return rates[1]


def apply_us(pool, calls=2000):
    for i in range(200):
        pool.apply(noop, (i,))
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(calls):
            assert pool.apply(noop, (i,)) == i
        rounds.append((time.perf_counter() - t0) / calls * 1e6)
    rounds.sort()
    return rounds[1]


def start_ms(method):
    ctx = multiprocessing.get_context(method)
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        with ctx.Pool(2) as pool:
            pool.apply(noop, (1,))
            starts.append((time.perf_counter() - t0) * 1000)
    starts.sort()
    return starts[len(starts) // 2]


def main():
    out = {}
    with Pool(2) as pool:
        pool.apply(noop, (0,))
        out["imap_cs1_per_s"] = steady(pool, 1)
        out["imap_cs1000_per_s"] = steady(pool, 1000)
        pool.map(heavy, range(64), chunksize=1)
        pairs = []
        for _ in range(5):
            t0 = time.perf_counter()
            [heavy(x) for x in range(64)]
            serial = time.perf_counter() - t0
            t0 = time.perf_counter()
            pool.map(heavy, range(64), chunksize=1)
            pairs.append((serial, time.perf_counter() - t0))
        pairs.sort(key=lambda p: p[0] / p[1])
        out["heavy_serial_ms"] = pairs[2][0] * 1000
        out["heavy_pool_ms"] = pairs[2][1] * 1000
        out["apply_us"] = apply_us(pool)
    for method in ("spawn", "forkserver", "fork"):
        out[f"start_{method}_ms"] = start_ms(method)
    out["start_ms"] = out["start_fork_ms"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
