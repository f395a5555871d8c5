"""Memory (uprobes on the allocator) and lock-contention (futex tracepoints)
profiles against ground truth printed by C workloads (needs root + BPF)."""

from __future__ import annotations

import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.formats.pprof import encode
from telegen.pdata import FrameKind, Profile
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.uprobes import allocator_symbols, mapped_files
from telegen.testing import workloads
from telegen.testing.goprog import go_available, go_pprof
from telegen.testing.symbols import ElfFunctions
from telegen.testing.workloads import parse_report

pytestmark = pytest.mark.bpf
SITES = ("site_small", "site_medium", "site_calloc", "site_realloc_base", "site_realloc",
         "site_memalign")
UPROBE_EVENTS = Path("/sys/kernel/tracing/uprobe_events")
ONLY = {"cpu": False, "off_cpu": False, "duration": 1.0}


@pytest.fixture(scope="module")
def mem_bins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("memlock")
    for name in ("tg_alloc", "tg_mutex"):
        workloads.build(name, d)
    return d


class AllocRun:
    """tg_alloc waiting for "go" on stdin; ``report`` once it printed ``ready``."""

    def __init__(self, binary: Path, rounds: int, leak: int) -> None:
        self.proc = subprocess.Popen([binary, str(rounds), str(leak)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def go_when_attached(self, receiver, timeout_s: float = 10.0) -> dict[str, int]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while self.pid not in receiver.uprobes.attached_pids():
            assert time.monotonic() < deadline, "uprobes never attached to the workload"
            time.sleep(0.01)
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.strip() == "ready":
                break
            lines.append(line)
        return parse_report("".join(lines))

    def finish(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def alloc_runs() -> Iterator[list[AllocRun]]:
    runs: list[AllocRun] = []
    yield runs
    for r in runs:
        r.proc.kill()
        r.proc.wait()


def by_call_site(profiles: list[Profile], pid: int, elf: ElfFunctions) -> dict[str, list[int]]:
    """Values per call site: the workload's function nearest the leaf."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in profiles:
        for s in p:
            if dict(s.labels).get("process.pid") != pid:
                continue
            names = elf.stack_functions(s.stack)
            site = names[0] if names else "[outside]"
            out[site][0] += s.values[0]
            out[site][1] += s.values[1]
    return out


def libc_malloc_byte(pid: int) -> int:
    """The first byte of malloc in ``pid``'s libc (0xCC while a uprobe is set)."""
    path = next(p for p in mapped_files(pid) if os.path.basename(p).startswith("libc.so"))
    base = None
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if parts[-1] == path and int(parts[2], 16) == 0:
                base = int(parts[0].split("-")[0], 16)
                break
    assert base is not None
    fd = os.open(f"/proc/{pid}/root{path}", os.O_RDONLY)
    try:
        addr = base + allocator_symbols(fd, inuse=False)["malloc"]
    finally:
        os.close(fd)
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(addr)
        return mem.read(1)[0]


def check_pprof(profile: Profile, index: str, tmp_path: Path) -> None:
    if not go_available():
        pytest.fail("go is required (Debian golang-go) to check pprof output")
    path = tmp_path / f"{profile.name}.pb.gz"
    path.write_bytes(encode(profile))
    text = go_pprof(f"-sample_index={index}", "-top", str(path))
    assert f"Type: {index}" in text, text
    assert "Showing nodes accounting for" in text, text


def test_alloc_exact_and_sampled_per_call_site(run_receiver, mem_bins: Path, alloc_runs,
                                               tmp_path: Path) -> None:
    """alloc_space / alloc_objects per call site: exact with sample_every_bytes 0,
    within 10% with the default 512 KiB sampling. The workload starts after the
    agent (process_names targeting attaches on exec)."""
    elf = ElfFunctions(mem_bins / "tg_alloc")
    for rate, rounds in ((0, 200), (EbpfConfig().sample_every_bytes, 4000)):
        r = run_receiver(**ONLY, memory=True, memory_mode="alloc", sample_every_bytes=rate,
                         process_names=["^tg_alloc$"])
        run = AllocRun(mem_bins / "tg_alloc", rounds, 0)
        alloc_runs.append(run)
        truth = run.go_when_attached(r.receiver)
        run.finish()
        r.receiver.shutdown()
        profiles = r.sink.profiles("alloc")
        got = by_call_site(profiles, run.pid, elf)
        for site in SITES:
            objects, nbytes = got[site]
            want_b, want_n = truth[f"{site}_bytes"], truth[f"{site}_count"]
            print(f"rate {rate}: {site}: {nbytes} B / {want_b} B ({nbytes / want_b - 1:+.2%}), "
                  f"{objects} / {want_n} objects")
            if rate == 0:
                assert (nbytes, objects) == (want_b, want_n), site
            elif site != "site_realloc_base":     # 1 KiB x 40000: too few bytes to sample
                assert abs(nbytes - want_b) <= 0.10 * want_b, site
        # libc's own (stdio buffer: ~4 KiB) allocations have no workload frame
        assert got.get("[outside]", [0, 0])[1] <= 64 * 1024, "allocations without call site"
        assert all(p.period == max(rate, 1) and p.period_type is not None
                   and (p.period_type.type, p.period_type.unit) == ("space", "bytes")
                   for p in profiles)
        assert r.metric("ebpf_memory_calls") >= sum(truth[f"{s}_count"] for s in SITES)
        if rate:
            sampled = r.metric("ebpf_memory_sampled")
            assert 0 < sampled < 0.2 * r.metric("ebpf_memory_calls")
            merged = profiles[0].copy()
            for p in profiles[1:]:
                for s in p:
                    merged.add_sample(s)
            check_pprof(merged, "alloc_space", tmp_path)


def test_inuse_leak_probes_per_process_and_clean_detach(run_receiver, mem_bins: Path,
                                                        alloc_runs) -> None:
    """inuse: the leak shows at site_leak with its bytes, freed memory does not;
    probes exist only in the targeted process and are gone after shutdown."""
    events_before = UPROBE_EVENTS.read_text()
    elf = ElfFunctions(mem_bins / "tg_alloc")
    bystander = AllocRun(mem_bins / "tg_alloc", 1, 0)
    alloc_runs.append(bystander)
    run = AllocRun(mem_bins / "tg_alloc", 20, 200)
    alloc_runs.append(run)
    time.sleep(0.1)                                   # both have mapped libc
    r = run_receiver(**ONLY, memory=True, memory_mode="inuse", sample_every_bytes=0,
                     pids=[run.pid])
    truth = run.go_when_attached(r.receiver)
    assert libc_malloc_byte(run.pid) == 0xCC, "no breakpoint in the target"
    assert libc_malloc_byte(bystander.pid) != 0xCC, "untargeted process was probed"
    time.sleep(2.5)                                   # windows close while it is alive
    r.receiver.shutdown()
    assert libc_malloc_byte(run.pid) != 0xCC, "breakpoint left after shutdown"
    assert UPROBE_EVENTS.read_text() == events_before
    assert r.receiver.uprobes.probe_count() == 0
    run.finish()

    inuse = [p for p in r.sink.profiles("inuse")
             if any(dict(s.labels).get("process.pid") == run.pid for s in p)]
    assert inuse, "no inuse profile for the workload"
    got = by_call_site([inuse[-1]], run.pid, elf)     # the state at the last window's end
    print({k: v for k, v in got.items()})
    assert got["site_leak"] == [truth["site_leak_count"], truth["site_leak_bytes"]]
    assert got.get("site_freed", [0, 0])[1] == 0
    for site in SITES:
        assert got.get(site, [0, 0])[1] == 0, f"{site} freed everything it allocated"
    assert inuse[-1].default_sample_type == "inuse_space"


def cfi_unwinding() -> bool:
    try:
        EbpfConfig(unwinding="dwarf").validate()
    except ValueError:
        return False
    return True


def test_mutex_contention_delay_per_caller(run_receiver, mem_bins: Path,
                                          tmp_path: Path) -> None:
    """Threads contending on one pthread_mutex_t: delay within 10% of the waits
    the workload measured, attributed to the function that locks.

    Asserted: fp_mutex_lock's caller contend_fp (the workload's frame-pointer
    lock path); for pthread_mutex_lock the frame-pointer walk skips the caller
    (Debian's libc has no frame pointers) so contend_libc is asserted only with
    CFI unwinding, else its thread function worker_libc."""
    cfi = cfi_unwinding()
    r = run_receiver(**ONLY, mutex=True, mutex_threshold=0, process_names=["^tg_mutex$"],
                     **({"unwinding": "dwarf"} if cfi else {}))
    out = subprocess.run([mem_bins / "tg_mutex", "4", "200", "500"], capture_output=True,
                         text=True, check=True, timeout=60)
    time.sleep(0.2)
    r.receiver.shutdown()
    truth = parse_report(out.stdout)
    elf = ElfFunctions(mem_bins / "tg_mutex")
    profiles = r.sink.profiles("mutex")
    delay: dict[str, int] = defaultdict(int)
    contentions: dict[str, int] = defaultdict(int)
    for p in profiles:
        for s in p:
            if dict(s.labels).get("thread.name") != "tg_mutex":
                continue
            names = elf.stack_functions(s.stack)
            for fn in ("contend_fp", "contend_libc", "worker_fp", "worker_libc", "main"):
                if fn in names:
                    delay[fn] += s.values[1]
                    contentions[fn] += s.values[0]
            if "worker_fp" in names:
                assert names[:2] == ["fp_mutex_lock", "contend_fp"], names
            if "worker_libc" in names and s.stack[0].kind is FrameKind.NATIVE:
                assert "libc" in (s.stack[0].mapping.file if s.stack[0].mapping else ""), \
                    "pthread path: the wait is inside libc"
    print(f"fp {delay['contend_fp']} vs {truth['wait_fp_ns']}, libc {delay['worker_libc']} "
          f"(contend_libc {delay['contend_libc']}) vs {truth['wait_libc_ns']}, "
          f"contentions {dict(contentions)}")
    assert abs(delay["contend_fp"] - truth["wait_fp_ns"]) <= 0.10 * truth["wait_fp_ns"]
    libc_fn = "contend_libc" if cfi else "worker_libc"
    assert abs(delay[libc_fn] - truth["wait_libc_ns"]) <= 0.10 * truth["wait_libc_ns"]
    assert delay["worker_fp"] == delay["contend_fp"]
    assert contentions["contend_fp"] > 0 and contentions[libc_fn] > 0
    for p in profiles:
        assert p.default_sample_type == "delay"
    best = max(profiles, key=lambda p: sum(s.values[1] for s in p))
    check_pprof(best, "delay", tmp_path)


def test_mutex_threshold_counts_short_waits(run_receiver, mem_bins: Path) -> None:
    """Waits below mutex_threshold are not samples but are counted."""
    r = run_receiver(**ONLY, mutex=True, mutex_threshold=10.0, process_names=["^tg_mutex$"])
    subprocess.run([mem_bins / "tg_mutex", "4", "50", "200"], check=True, timeout=60,
                   capture_output=True)
    time.sleep(0.2)
    r.receiver.shutdown()
    assert not any(len(p) for p in r.sink.profiles("mutex"))
    waits = r.metric("ebpf_futex_waits")
    assert waits > 0 and r.metric("ebpf_mutex_below_threshold") == waits
    assert any("not shown" in c for p in r.sink.profiles("mutex") for c in p.comments)
