"""Workload of tests/integration/ebpf/test_cpython_frames.py (any CPython 3.8+).

Main thread: py_alpha does twice the pure-Python work of py_beta, in turns.
Thread hasher: py_hash hashes 1 MiB with hashlib's SHA-256 (OpenSSL, GIL
released). Thread waiter: py_wait sleeps in time.sleep. Prints one JSON
line (pid), waits for a line on stdin (so the profiler can start on a quiet
machine and see the process before it works), starts, prints the waiter's
native thread id and runs SECONDS (argv[1]).
"""

import hashlib
import json
import os
import select
import sys
import threading
import time

N = 20000
DATA = b"x" * (1 << 20)
stop = threading.Event()
ids = {}


def py_alpha():
    s = 0
    for i in range(2 * N):
        s += i * i
    return s


def py_beta():
    s = 0
    for i in range(N):
        s += i * i
    return s


def py_hash():
    return hashlib.sha256(DATA).digest()


def hasher():
    while not stop.is_set():
        py_hash()
        time.sleep(0.006)


def py_wait():
    time.sleep(0.05)


def waiter():
    ids["waiter"] = threading.get_native_id() if hasattr(threading, "get_native_id") else 0
    while not stop.is_set():
        py_wait()


def main():
    seconds = float(sys.argv[1])
    print(json.dumps({"pid": os.getpid(), "version": "{}.{}".format(*sys.version_info[:2])}),
          flush=True)
    while not select.select([sys.stdin], [], [], 0.01)[0]:
        pass                  # wakes up 100x/s: sampled (off-CPU), so registered early
    sys.stdin.readline()
    threads = [threading.Thread(target=hasher), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    while "waiter" not in ids:
        time.sleep(0.01)
    print(json.dumps({"waiter": ids["waiter"]}), flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        py_alpha()
        py_beta()
    stop.set()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
