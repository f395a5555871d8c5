"""Two hot functions in a 2:1 split of CPU time, measured inside the program.

Usage: python twohot.py REPORT_PATH [SECONDS]
Writes ``{"hot_a": ns, "hot_b": ns}`` (thread CPU time spent in each) to
REPORT_PATH every 0.5 s and at exit. Works on CPython 3.6+.
"""
import json
import os
import random
import sys
import time


class Worker:
    def hot_a(self, budget_ns):
        end = time.thread_time_ns() + budget_ns
        x = 0
        while time.thread_time_ns() < end:
            for i in range(200):
                x += i * i
        return x

    def hot_b(self, budget_ns):
        end = time.thread_time_ns() + budget_ns
        x = 0
        while time.thread_time_ns() < end:
            for i in range(200):
                x += i * i
        return x


def main():
    report = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    w = Worker()
    spent = {"hot_a": 0, "hot_b": 0}
    stop = time.monotonic() + seconds
    last = 0.0
    while time.monotonic() < stop:
        # budgets vary (same 2:1 ratio) so a fixed sampling rate cannot alias with the cycle
        budget = random.randint(3_000_000, 12_000_000)
        t0 = time.thread_time_ns()
        w.hot_a(2 * budget)
        t1 = time.thread_time_ns()
        w.hot_b(budget)
        t2 = time.thread_time_ns()
        spent["hot_a"] += t1 - t0
        spent["hot_b"] += t2 - t1
        if time.monotonic() - last > 0.5:
            last = time.monotonic()
            tmp = report + ".tmp"
            with open(tmp, "w") as f:
                json.dump(spent, f)
            os.replace(tmp, report)


if __name__ == "__main__":
    main()
