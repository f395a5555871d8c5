"""Each profile type against an independent tracer run AT THE SAME TIME on the
same workload (needs root + BPF).

The tracer is the small BCC program below (plain hashes keyed by thread id,
nothing shared with bpf/): lock time is futex(FUTEX_WAIT family) enter ->
exit, off-CPU time is sched_switch out -> in, per process. Both observe the
same events while a noisy 2-vCPU VM runs other work, so their ratio, not an
absolute figure, is asserted. Memory ``inuse`` is checked against the bytes
the workload itself says are live. The workloads (C, below) are built per
test session. The main thread of each workload waits in pthread_join for the
whole run; it is left out on both sides (a single wait says nothing).
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profile
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry
from telegen.testing.sink import Sink
from telegen.testing.workloads import parse_report

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

MUTEX_MIN_NS = 10_000
RUN_S = 2.5

TRACER = r"""
struct ostart { u64 ts; u32 tgid; };
BPF_HASH(lock_start, u32, u64, 65536);
BPF_HASH(off_start, u32, struct ostart, 65536);
BPF_HASH(lock_ns, u32, u64, 1024);       /* per process: waits >= MIN_NS, main thread left out */
BPF_HASH(off_ns, u32, u64, 1024);        /* per process: off-CPU ns, main thread left out */
BPF_HASH(off_n, u32, u64, 1024);         /* per process: switch-ins (all threads) */

static inline int target(const char *c)
{
    const char want[] = "tg_truth";
    for (int i = 0; i < sizeof(want); i++)
        if (c[i] != want[i])
            return 0;
    return 1;
}

TRACEPOINT_PROBE(syscalls, sys_enter_futex)
{
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    int cmd = args->op & 0x7f;
    if (!target(comm) || !(cmd == 0 || cmd == 6 || cmd == 9 || cmd == 13))
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    lock_start.update(&tid, &now);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_futex)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, tgid = id >> 32;
    u64 *t = lock_start.lookup(&tid);
    if (!t)
        return 0;
    u64 d = bpf_ktime_get_ns() - *t;
    lock_start.delete(&tid);
    if (d >= MIN_NS && tid != tgid) {
        u64 zero = 0, *v = lock_ns.lookup_or_try_init(&tgid, &zero);
        if (v)
            __sync_fetch_and_add(v, d);
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    if (target(args->prev_comm)) {
        struct ostart s = {now, bpf_get_current_pid_tgid() >> 32};
        u32 prev = args->prev_pid;
        off_start.update(&prev, &s);
    }
    u32 next = args->next_pid;
    struct ostart *s = off_start.lookup(&next);
    if (!s)
        return 0;
    u32 tgid = s->tgid;
    u64 d = now - s->ts, zero = 0, *v;
    off_start.delete(&next);
    v = off_n.lookup_or_try_init(&tgid, &zero);
    if (v)
        __sync_fetch_and_add(v, 1);
    if (next == tgid)
        return 0;
    v = off_ns.lookup_or_try_init(&tgid, &zero);
    if (v)
        __sync_fetch_and_add(v, d);
    return 0;
}
"""

WORKLOAD = r"""
/* tg_truth MODE SECS [US]: waits for a line on stdin, runs SECS, prints its
 * truth and "done", then waits for stdin to close.
 *   mutex:  4 threads take one pthread mutex, spin US holding it, US/2 outside
 *   cond:   4 threads pass a turn round-robin through one condition variable
 *           (each broadcast wakes all, one proceeds), spinning US per turn
 *   switch: 2 threads ping-pong a byte through pipes, and every 2000 round
 *           trips a short-lived thread sleeps 1-3 ms and exits
 *   alloc:  4 threads malloc/calloc/realloc/free blocks they or others made,
 *           plus a chain of short-lived threads doing the same; prints
 *           inuse_bytes (its live blocks), kept until stdin closes */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long spin_ns;
static long long t_end;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int turn;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void spin(long ns)
{
    long long end = now_ns() + ns;
    while (now_ns() < end)
        ;
}

static void *mutex_worker(void *a)
{
    (void)a;
    while (now_ns() < t_end) {
        pthread_mutex_lock(&lock);
        spin(spin_ns);
        pthread_mutex_unlock(&lock);
        spin(spin_ns / 2);
    }
    return NULL;
}

static void *cond_worker(void *a)
{
    int me = (int)(long)a;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (turn >= 0 && turn % 4 != me)
            pthread_cond_wait(&cond, &lock);
        if (turn < 0) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        spin(spin_ns);
        turn = now_ns() < t_end ? turn + 1 : -1;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
}

static int ping[2], pong[2];

static void *ponger(void *a)
{
    char c;
    (void)a;
    while (read(ping[0], &c, 1) == 1 && c)
        if (write(pong[1], &c, 1) != 1)
            break;
    return NULL;
}

static void *brief_sleeper(void *a)
{
    usleep(1000 + (long)a % 2000);
    return NULL;
}

static void *pinger(void *a)
{
    char c = 1;
    long n = 0;
    (void)a;
    while (now_ns() < t_end) {
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
            break;
        if (++n % 2000 == 0) {
            pthread_t t;
            if (pthread_create(&t, NULL, brief_sleeper, (void *)n) == 0)
                pthread_detach(t);
        }
    }
    c = 0;
    if (write(ping[1], &c, 1) != 1)
        return NULL;
    return NULL;
}

#define SLOTS 4096
static void *slots[SLOTS];
static size_t sizes[SLOTS];
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;

static void *alloc_worker(void *a)
{
    unsigned seed = (unsigned)(long)a * 2654435761u;
    while (now_ns() < t_end) {
        seed = seed * 1103515245u + 12345u;
        int i = (seed >> 8) % SLOTS, op = (seed >> 20) % 4;
        size_t size = 64 + ((seed >> 4) % 8192);
        void *p = op == 0 ? calloc(1, size) : malloc(size);
        pthread_mutex_lock(&slot_lock);
        void *old = slots[i];
        if (old && op == 3) {
            void *q = realloc(old, size);
            if (q) {
                slots[i] = q;
                sizes[i] = size;
                old = NULL;
            }
            free(p);
        } else {
            slots[i] = p;
            sizes[i] = size;
        }
        pthread_mutex_unlock(&slot_lock);
        free(old);
    }
    return NULL;
}

static void *alloc_churn(void *a)
{
    long n = 100;
    (void)a;
    while (now_ns() < t_end) {
        pthread_t t;
        if (pthread_create(&t, NULL, alloc_worker, (void *)n++) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "mutex";
    double secs = argc > 2 ? atof(argv[2]) : 2;
    spin_ns = (argc > 3 ? atol(argv[3]) : 5) * 1000L;
    char line[64];
    pthread_t th[8];
    int n = 4;
    if (!fgets(line, sizeof line, stdin))
        return 1;
    t_end = now_ns() + (long long)(secs * 1e9);
    if (!strcmp(mode, "mutex")) {
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, mutex_worker, NULL);
    } else if (!strcmp(mode, "cond")) {
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, cond_worker, (void *)(long)i);
    } else if (!strcmp(mode, "switch")) {
        if (pipe(ping) || pipe(pong))
            return 1;
        n = 2;
        pthread_create(&th[0], NULL, ponger, NULL);
        pthread_create(&th[1], NULL, pinger, NULL);
    } else if (!strcmp(mode, "alloc")) {
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, alloc_worker, (void *)(long)(i + 1));
        pthread_create(&th[n++], NULL, alloc_churn, NULL);
    } else {
        return 2;
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    if (!strcmp(mode, "alloc")) {
        long long live = 0, blocks = 0;
        for (int i = 0; i < SLOTS; i++)
            if (slots[i]) {
                live += sizes[i];
                blocks++;
            }
        printf("inuse_bytes %lld\ninuse_blocks %lld\n", live, blocks);
    }
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
"""


@dataclass
class Bench:
    """telegen (mutex, off_cpu, memory inuse: all on, as in production) and the
    tracer, both attached before any workload starts."""

    binary: Path
    tracer: Any
    receiver: EbpfReceiver
    sink: Sink
    registry: Registry
    done: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, mode: str, arg_us: int = 5, *, attached: bool = False) -> tuple[int, str]:
        """Run one workload to its end; returns (pid, its report)."""
        w = subprocess.Popen([str(self.binary), mode, str(RUN_S), str(arg_us)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.done.append(w)
        assert w.stdin is not None and w.stdout is not None
        if attached:                                  # memory: uprobes first
            uprobes = self.receiver.uprobes
            assert uprobes is not None
            deadline = time.monotonic() + 15
            while w.pid not in uprobes.attached_pids():
                assert time.monotonic() < deadline, "uprobes never attached to the workload"
                time.sleep(0.01)
        w.stdin.write("go\n")
        w.stdin.flush()
        report = []
        for line in w.stdout:
            if line.strip() == "done":
                break
            report.append(line)
        return w.pid, "".join(report)

    def finish(self, pid: int) -> None:
        """Let the workload exit, then two more windows so its last intervals are in."""
        w = next(p for p in self.done if p.pid == pid)
        assert w.stdin is not None
        w.stdin.close()
        w.wait(10)
        self.windows(2)

    def windows(self, n: int) -> None:
        assert self.sink.wait_for(len(self.sink.batches) + n, 10.0), "no window closed"

    def traced(self, table: str, pid: int) -> int:
        t = self.tracer[table.encode()]
        try:
            return int(t[ctypes.c_uint32(pid)].value)
        except KeyError:
            return 0

    def profiled(self, name: str, pid: int, index: int = 1) -> int:
        """Sum of value ``index`` of ``name`` samples of ``pid``, main thread left out."""
        total = 0
        for p in self.sink.profiles(name):
            for s in p:
                labels = dict(s.labels)
                if labels.get("process.pid") == pid and labels.get("thread.id") != pid:
                    total += s.values[index]
        return total

    def pending_starts(self, table: str, pid: int) -> int:
        """Start records telegen still holds for ``pid`` (off_starts, mem_pending)."""
        loaded = self.receiver._bpf              # the maps themselves: what a leak would fill
        assert loaded is not None
        return sum(1 for v in loaded.table(table).values() if v.key.pid == pid)

    def notes(self, name: str) -> list[str]:
        return sorted({c for p in self.sink.profiles(name) for c in p.comments
                       if c.startswith("lost") or "kept without" in c})

    def lost(self) -> dict[str, float]:
        return {k: v for k, v in self.registry.snapshot().items()
                if k.startswith(("ebpf_lost_events", "ebpf_spilled", "ebpf_map_full")) and v}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    from bcc import BPF

    gcc = shutil.which("gcc")
    assert gcc, "gcc is required to build the workload"
    d = tmp_path_factory.mktemp("truth")
    (d / "tg_truth.c").write_text(WORKLOAD)
    subprocess.run([gcc, "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o",
                    str(d / "tg_truth"), str(d / "tg_truth.c")], check=True)
    tracer = BPF(text=TRACER.encode(), cflags=[f"-DMIN_NS={MUTEX_MIN_NS}ULL"])
    registry = Registry()
    settings = CreateSettings(ComponentID("ebpf", "truth"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/truth"),
                              logging.getLogger("test.truth"))
    config = EbpfConfig(cpu=False, off_cpu=True, off_cpu_threshold=0, mutex=True,
                        mutex_threshold=MUTEX_MIN_NS / 1e9, memory=True,
                        memory_mode="inuse", sample_every_bytes=0, duration=1.0,
                        process_names=["^tg_truth$"])
    config.validate()
    sink = Sink()
    receiver = EbpfReceiver(settings, config, sink)
    receiver.start(None)  # type: ignore[arg-type]
    b = Bench(d / "tg_truth", tracer, receiver, sink, registry)
    try:
        yield b
    finally:
        receiver.shutdown()
        tracer.cleanup()
        for w in b.done:
            w.kill()
            w.wait()


def ratio(got: int, want: int) -> float:
    assert want > 0, "the tracer saw nothing: the workload did not run"
    return got / want


@pytest.mark.parametrize("mode,arg_us", [("mutex", 5), ("cond", 20)])
def test_lock_time_matches_tracer(bench: Bench, mode: str, arg_us: int) -> None:
    """Futex waits >= mutex_threshold: the mutex profile's delay within 5% of
    the tracer's (4 threads on one pthread mutex / one condition variable)."""
    pid, _ = bench.run(mode, arg_us)
    bench.finish(pid)
    want = bench.traced("lock_ns", pid)
    got = bench.profiled("mutex", pid)
    r = ratio(got, want)
    print(f"{mode}: telegen {got / 1e9 / RUN_S:.3f} thread-s/s, tracer "
          f"{want / 1e9 / RUN_S:.3f}, ratio {r:.4f}; {bench.lost()} {bench.notes('mutex')}")
    assert want > 0.2 * RUN_S * 1e9, "too little contention to compare"
    assert abs(r - 1) <= 0.05


def test_off_cpu_time_matches_tracer(bench: Bench) -> None:
    """sched_switch out -> in at tens of thousands of switches a second, with
    threads starting and exiting: off-CPU ns within 5% of the tracer's."""
    pid, _ = bench.run("switch")
    bench.finish(pid)
    want = bench.traced("off_ns", pid)
    got = bench.profiled("off_cpu", pid)
    switches = bench.traced("off_n", pid)
    r = ratio(got, want)
    print(f"switch: {switches / RUN_S:.0f} switch-ins/s, telegen {got / 1e9:.3f} s off-CPU, "
          f"tracer {want / 1e9:.3f} s, ratio {r:.4f}; {bench.lost()} {bench.notes('off_cpu')}")
    assert switches >= 10_000 * RUN_S, "the workload switched too little to be a test"
    assert abs(r - 1) <= 0.05
    # every thread of the exited workload (~1 short-lived one per 2000 round trips)
    # took its start record along: none is left to fill the map
    assert bench.pending_starts("off_starts", pid) == 0


def test_inuse_bytes_match_workload(bench: Bench) -> None:
    """Four threads and a chain of short-lived ones allocate, reallocate and
    free each other's blocks (every call sampled): the last inuse profile's
    bytes within 2% of the live bytes the workload counted."""
    pid, report = bench.run("alloc", attached=True)
    truth = parse_report(report)["inuse_bytes"]
    bench.windows(2)                  # a window that closed after the report
    last: Profile | None = None
    for p in bench.sink.profiles("inuse"):
        if any(dict(s.labels).get("process.pid") == pid for s in p):
            last = p
    assert last is not None, "no inuse profile for the workload"
    got = sum(s.values[1] for s in last if dict(s.labels).get("process.pid") == pid)
    bench.finish(pid)
    assert bench.pending_starts("mem_pending", pid) == 0
    r = ratio(got, truth)
    print(f"alloc: telegen {got} B in use, workload {truth} B, ratio {r:.4f}; "
          f"{bench.lost()} {bench.notes('inuse')} {last.comments}")
    assert abs(r - 1) <= 0.02
