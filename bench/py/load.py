"""Python's side of bench/compare_load.ts: three workloads while the caller
runs a CPU hog (one `yes > /dev/null`) beside them, so both runtimes wait on
a machine with more runnable threads than cores.

Reuses the workloads of channels.py and manager.py. Prints one JSON object.

- dict: a child process alternates d["k"] = i and d["k"] on a Manager dict.
- pipe: parent <-> child round trips of a small int over a Pipe.
- queue: one producer process, one consumer process, small ints.
"""

import json
import multiprocessing as mp
import sys

import channels
import manager


def dict_ops(n):
    with mp.Manager() as m:
        out = mp.Queue()
        d = m.dict()
        p = mp.Process(target=manager.dict_worker, args=(d, n, out))
        p.start()
        per_op = out.get()
        p.join()
    return 1 / per_op


def median3(fn):
    return sorted(fn() for _ in range(3))[1]


if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    out = {
        "dict_ops_s": median3(lambda: dict_ops(n)),
        "pipe_rtt_us": median3(lambda: channels.pipe_rtt(20_000)),
        "queue_int_1_1": median3(
            lambda: channels.queue_throughput(200_000, 1, 1, "int")),
    }
    print(json.dumps(out))
