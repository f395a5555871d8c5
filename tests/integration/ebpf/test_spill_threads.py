"""A full ``lock_counts`` map spills per thread (bpf/telegen.h spill()): the
waits of 300 threads, each its own key, overflow a 256-entry counts map, and
the spilled samples still say which thread waited. (Spilled without the
thread, a process's main thread could not be told from its workers: in
test_truth the main thread's 2.5 s pthread_join was added to the workers'.)"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from telegen.receivers.ebpf.losses import SPILLED

THREADS = 300

WORKLOAD = f"""
import sys, threading
go = threading.Event()
def waiter():
    go.wait()
    for _ in range(20):
        threading.Event().wait(0.002)      # futex waits of ~2 ms, >= mutex_threshold
ts = [threading.Thread(target=waiter) for _ in range({THREADS})]
for t in ts:
    t.start()
sys.stdin.readline()
go.set()
for t in ts:
    t.join()
print("done", flush=True)
sys.stdin.readline()
"""


def test_spilled_lock_waits_keep_their_thread(run_receiver: Any) -> None:
    w = subprocess.Popen([sys.executable, "-c", WORKLOAD], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert w.stdin is not None and w.stdout is not None
    try:
        r = run_receiver(cpu=False, off_cpu=False, mutex=True, max_stacks=256,
                         duration=1.0, pids=[w.pid], unwinding="frame_pointer")
        w.stdin.write("go\n")
        w.stdin.flush()
        assert w.stdout.readline().strip() == "done"
        n = len(r.sink.batches)
        assert r.sink.wait_for(n + 2, 10.0), "no window closed"
        spilled_tids: set[int] = set()
        kept = 0
        for p in r.sink.profiles("mutex"):
            for s in p:
                labels = dict(s.labels)
                if labels.get("process.pid") == w.pid and SPILLED in s.stack:
                    spilled_tids.add(int(labels.get("thread.id", 0)))
                    kept += s.values[0]
        assert kept > 0, "the 256-entry counts map never filled: no spill to check"
        assert 0 not in spilled_tids, "a spilled wait lost its thread"
        assert len(spilled_tids) > 10
    finally:
        w.stdin.close()
        w.kill()
        w.wait()
