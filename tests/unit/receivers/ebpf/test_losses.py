"""What the kernel side could not keep: spilled samples stay in the profile
under a marker frame, lost ones are counted and noted; the stat slots user
space reads match the BPF enums slot for slot."""

from __future__ import annotations

import re
from types import SimpleNamespace

from telegen.pdata import OFF_CPU, Profile, ValueType
from telegen.receivers.ebpf import locks, memory, window
from telegen.receivers.ebpf.bpf_loader import BPF_DIR
from telegen.receivers.ebpf.keys import KEY_SPILLED, CSampleKey
from telegen.receivers.ebpf.losses import SPILL_LOCK, SPILL_OFFCPU, SPILLED, Losses, read_spill
from telegen.telemetry import Registry, sum_series


def enum_names(file: str, enum: str, prefix: str) -> list[str]:
    """Slot names of a C enum in bpf/ (``ST_CPU_SAMPLES`` -> ``cpu_samples``)."""
    text = (BPF_DIR / file).read_text()
    body = re.search(rf"enum {enum} \{{(.*?)\}};", text, re.S)
    assert body, enum
    code = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    names = [n.strip() for n in code.replace("\n", ",").split(",")]
    names = [n.split("=")[0].strip() for n in names if n.strip()]
    assert names[-1] == f"{prefix}NSTATS"
    return [n[len(prefix):].lower() for n in names[:-1]]


def test_stat_slots_match_the_bpf_enums() -> None:
    assert list(window.STAT_NAMES) == enum_names("telegen.h", "telegen_stat", "ST_")
    assert list(locks.STAT_NAMES) == enum_names("lock.bpf.c", "lock_stat", "LS_")
    assert list(memory.STAT_NAMES) == enum_names("memory.bpf.c", "mem_stat", "MS_")


def spill_row(pid: int, kind: int, count: int, value: int, comm: bytes = b"app") -> tuple:
    k = CSampleKey(pid=pid, tid=0, user_stack=-28, kernel_stack=-28, stack_seq=3,
                   flags=KEY_SPILLED | (kind << 8), comm=comm)
    return k, SimpleNamespace(count=count, value=value, extra=0)


def off_cpu_profile() -> Profile:
    return Profile(name="off_cpu", sample_types=OFF_CPU,
                   period_type=ValueType("off_cpu", "nanoseconds"), period=1)


def test_spilled_samples_keep_their_time_under_a_marker_frame() -> None:
    spilled = read_spill([spill_row(10, SPILL_OFFCPU, 4, 4000), spill_row(11, SPILL_OFFCPU, 1, 7),
                          spill_row(10, SPILL_LOCK, 2, 99)])
    registry = Registry()
    losses = Losses(registry.for_component("receiver", "ebpf/t"))
    p = off_cpu_profile()
    losses.spilled(p, "off_cpu", spilled, {"lost_offcpu": 3, "lost_offcpu_value": 500},
                   labels=lambda key: (("pid", key.pid),), wanted=lambda pid: pid == 10,
                   values=lambda n, ns, _e: [n, ns])
    samples = list(p)
    assert [(s.stack, s.values, dict(s.labels)["pid"]) for s in samples] == [
        ((SPILLED,), [4, 4000], 10)]                 # pid 11 not wanted, the lock row not ours
    assert any("4 samples kept without stack" in c for c in p.comments)
    assert any(c.startswith("lost: 3 samples (500 ns)") for c in p.comments)
    snap = registry.snapshot()
    assert sum_series(snap, "ebpf_lost_events", reason="spill_full", profile="off_cpu") == 3


def test_lost_pairs_are_counted_by_reason_and_noted() -> None:
    registry = Registry()
    losses = Losses(registry.for_component("receiver", "ebpf/t"))
    p = off_cpu_profile()
    losses.lost(p, "mutex", "unpaired", 2, "futex waits")
    losses.lost(p, "mutex", "starts_full", 0, "futex waits")      # nothing lost: no note
    assert len(p.comments) == 1 and p.comments[0].startswith("lost: 2 futex waits: ")
    snap = registry.snapshot()
    assert sum_series(snap, "ebpf_lost_events", reason="unpaired", profile="mutex") == 2
    assert sum_series(snap, "ebpf_lost_events", reason="starts_full") == 0
