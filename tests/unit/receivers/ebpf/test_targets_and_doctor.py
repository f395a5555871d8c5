from __future__ import annotations

import re
from pathlib import Path

import pytest

from telegen import doctor
from telegen.procinfo.agent import cap_eff, parse_cap_eff
from telegen.receivers.ebpf.targets import NO, YES, Targets, process_matches


class FakeMap(dict):
    class Key(int):
        pass

    class Leaf(int):
        pass


def fake_proc(tmp_path: Path, procs: dict[int, tuple[str, str]]) -> str:
    for pid, (comm, exe) in procs.items():
        d = tmp_path / str(pid)
        d.mkdir(exist_ok=True)
        (d / "comm").write_text(comm + "\n")
        (d / "exe").unlink(missing_ok=True)
        (d / "exe").symlink_to(exe)
    return str(tmp_path)


def test_targets_by_name_pid_and_exclusions(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {10: ("nginx", "/usr/sbin/nginx"),
                                11: ("python3", "/usr/bin/python3.11"),
                                12: ("bash", "/usr/bin/bash"),
                                13: ("nginx", "/usr/sbin/nginx")})
    t = Targets(pids=[12], pattern=re.compile("nginx|python3\\.11$"), exclude_pids=[13],
                self_pid=11, self_profile=False, proc=proc)
    targets, excluded = FakeMap(), FakeMap()
    t.install(targets, excluded)
    assert dict(targets) == {12: YES}        # explicit pids at once; names on first sight
    assert set(excluded) == {13}
    # first sight of each process (the BPF new-process event) classifies it
    for pid in (10, 11, 12, 13):
        t.classify(pid)
    assert dict(targets) == {10: YES, 11: NO, 12: YES, 13: NO}   # 11 is the agent
    assert t.wanted(10) and t.wanted(12) and not t.wanted(11) and not t.wanted(13)
    # a process seen before it was classified is decided at read time
    fake_proc(tmp_path, {30: ("nginx", "/usr/sbin/nginx"), 31: ("sh", "/bin/sh")})
    assert t.wanted(30) and not t.wanted(31)
    # exec may change the answer
    fake_proc(tmp_path, {20: ("worker", "/usr/bin/sleep")})
    t.classify(20)
    assert targets[20] == NO
    fake_proc(tmp_path, {20: ("worker", "/usr/sbin/nginx")})
    t.on_exec(20)
    assert targets[20] == YES and t.wanted(20)
    # after exit, the decision outlives the windows that may hold its samples
    t.on_exit(20)
    (tmp_path / "20" / "comm").unlink()
    t.end_window()
    assert t.wanted(20)
    t.end_window()
    assert not t.wanted(20)                  # forgotten, and the process is gone
    t.on_exit(12)
    t.end_window()
    t.end_window()
    assert t.wanted(12)                      # explicit pids stay targeted


def test_process_matches_missing_process(tmp_path: Path) -> None:
    assert not process_matches(999, re.compile("."), str(tmp_path))


def test_whole_host_installs_only_exclusions() -> None:
    t = Targets(pids=[], pattern=None, exclude_pids=[5], self_pid=1, self_profile=False)
    targets, excluded = FakeMap(), FakeMap()
    t.install(targets, excluded)
    assert not t.filtering and not targets and set(excluded) == {5}
    assert t.wanted(42) and not t.wanted(1)


def test_doctor_checks_have_fixes_and_require_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = doctor.run_checks()
    assert [c.name for c in checks] == list(doctor.CHECKS)
    for c in checks:
        assert c.line().startswith("PASS" if c.ok else "FAIL")
    monkeypatch.setitem(doctor.CHECKS, "tracefs", lambda: doctor.Check(
        "tracefs", False, "not mounted", "mount -t tracefs nodev /sys/kernel/tracing"))
    with pytest.raises(doctor.DoctorError) as err:
        doctor.require(["tracefs"])
    assert "mount -t tracefs" in str(err.value) and "FAIL" in str(err.value)
    monkeypatch.setitem(doctor.CHECKS, "btf", lambda: 1 / 0)
    [broken] = doctor.run_checks(["btf"])
    assert not broken.ok and "ZeroDivisionError" in broken.detail


def test_capabilities_from_status(tmp_path: Path) -> None:
    assert parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n") >> doctor.CAP_BPF & 1
    assert parse_cap_eff("CapEff:\t0000000000000000\n") == 0
    assert parse_cap_eff("CapEff:\tzz\n") == 0 and parse_cap_eff("") == 0
    # the agent's own, through a fake /proc: what the doctor's checks read
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("CapEff:\t0000008000000000\n")
    assert cap_eff(str(tmp_path)) == 1 << doctor.CAP_BPF
