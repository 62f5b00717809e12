"""Python side of the Pool comparison (bench/compare_cube.ts).

Prints one JSON object on its last line:
  imap_cs1_per_s     imap_unordered of x**3 over 100 000 items, chunksize 1
  imap_cs1000_per_s  the same with chunksize 1000
  heavy_serial_ms    64 tasks summing i**3 over range(200 000), serially (median of 3)
  heavy_pool_ms      the same through Pool(2).map (median of 3)
  start_ms           Pool(2) creation to the first apply result (median of 5)
"""
import json
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


def median_ms(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


def rate(pool, chunksize, n=100_000):
    t0 = time.perf_counter()
    count = 0
    for _ in pool.imap_unordered(cube, range(n), chunksize=chunksize):
        count += 1
    assert count == n
    return n / (time.perf_counter() - t0)


def main():
    out = {}
    with Pool(2) as pool:
        pool.apply(noop, (0,))
        out["imap_cs1_per_s"] = rate(pool, 1)
        out["imap_cs1000_per_s"] = rate(pool, 1000)
        out["heavy_pool_ms"] = median_ms(
            lambda: pool.map(heavy, range(64), chunksize=1))
    out["heavy_serial_ms"] = median_ms(lambda: [heavy(x) for x in range(64)])
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        with Pool(2) as pool:
            pool.apply(noop, (1,))
            starts.append((time.perf_counter() - t0) * 1000)
    starts.sort()
    out["start_ms"] = starts[len(starts) // 2]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
