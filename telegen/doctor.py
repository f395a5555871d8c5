"""``telegen doctor``: are the prerequisites for eBPF profiling in place?

Each check is PASS/FAIL with the fix (the seed's Troubleshooting section,
automated). ``run_checks()`` runs them all; ``require(names)`` raises
:class:`DoctorError` naming the failing checks — the ebpf receiver calls it
at start so ``telegen run`` fails fast with the same message.
"""

from __future__ import annotations

import os
import platform
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from telegen.bpf import syscall as sc
from telegen.bpf.perf import TRACEFS
from telegen.procinfo.agent import cap_eff
from telegen.procinfo.kernel import PERF_EVENT_PARANOID, mount_points, perf_event_paranoid

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'PASS' if self.ok else 'FAIL'}  {self.name:<18} {self.detail}"
        if not self.ok and self.fix:
            text += f"\n      fix: {self.fix}"
        return text


class DoctorError(RuntimeError):
    def __init__(self, failed: list[Check]) -> None:
        self.failed = failed
        lines = "\n".join(c.line() for c in failed)
        super().__init__(f"eBPF prerequisites missing (telegen doctor):\n{lines}")


def check_root() -> Check:
    uid = os.geteuid()
    return Check("root", uid == 0, f"euid {uid}",
                 "run as root (sudo telegen ...), or grant CAP_BPF+CAP_PERFMON "
                 "(containers: --privileged or --cap-add SYS_ADMIN)")


def check_capabilities() -> Check:
    caps = cap_eff()
    have = {n: bool(caps >> bit & 1) for n, bit in
            (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))}
    ok = have["CAP_SYS_ADMIN"] or (have["CAP_BPF"] and have["CAP_PERFMON"])
    detail = " ".join(f"{n}={'yes' if v else 'no'}" for n, v in have.items())
    return Check("capabilities", ok, detail,
                 "needs CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON: `capsh --print | grep -E "
                 "'sys_admin|perfmon|bpf'`; containers need --cap-add SYS_ADMIN (or BPF,PERFMON)")


def check_perf_event() -> Check:
    level = perf_event_paranoid()
    if level is None:
        return Check("perf_event access", False, f"cannot read {PERF_EVENT_PARANOID}",
                     "the kernel needs CONFIG_PERF_EVENTS")
    caps = cap_eff()
    privileged = bool(caps >> CAP_PERFMON & 1 or caps >> CAP_SYS_ADMIN & 1)
    ok = level <= 1 or privileged
    detail = f"perf_event_paranoid={level}" + (" (bypassed: CAP_PERFMON/CAP_SYS_ADMIN)"
                                               if level > 1 and privileged else "")
    return Check("perf_event access", ok, detail,
                 "sysctl -w kernel.perf_event_paranoid=1 (or run with CAP_PERFMON)")


def check_bpf_syscall() -> Check:
    """Load the smallest valid program (r0 = 0; exit) through bpf(BPF_PROG_LOAD)."""
    if platform.machine() not in sc.SYS_BPF:
        return Check("bpf syscall", False, f"unknown architecture {platform.machine()}")
    insns = struct.pack("<QQ", 0x00000000000000B7, 0x0000000000000095)
    fd, _ = sc.prog_load(1, insns, b"GPL", 0, b"")      # SOCKET_FILTER
    if fd < 0:
        return Check("bpf syscall", False, f"BPF_PROG_LOAD failed: {os.strerror(-fd)}",
                     "needs CAP_BPF/CAP_SYS_ADMIN; check kernel.unprivileged_bpf_disabled, "
                     "seccomp/AppArmor profiles of the container, CONFIG_BPF_SYSCALL")
    os.close(fd)
    return Check("bpf syscall", True, "a test program loaded")


def check_btf() -> Check:
    path = Path("/sys/kernel/btf/vmlinux")
    return Check("btf", path.exists(), str(path) + (" present" if path.exists() else " missing"),
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def _tracefs() -> str | None:
    mounted = mount_points()
    for d in TRACEFS:
        if d in mounted and Path(d, "events").is_dir():
            return d
    return None


def check_tracefs() -> Check:
    d = _tracefs()
    return Check("tracefs", d is not None, f"mounted at {d}" if d else "not mounted",
                 "mount -t tracefs nodev /sys/kernel/tracing")


def check_kernel_headers() -> Check:
    build = Path(f"/lib/modules/{platform.release()}/build")
    ok = (build / "include").is_dir()
    return Check("kernel headers", ok, f"{build} {'found' if ok else 'missing'}",
                 "apt-get install linux-headers-amd64 and link them: "
                 "scripts/setup-host.sh (BCC compiles against /lib/modules/$(uname -r)/build)")


def check_bcc() -> Check:
    """In a child: importing bcc maps libbcc and LLVM into the process for good,
    and only the short-lived compiler child (telegen.bpfc) may hold them."""
    try:
        res = subprocess.run([sys.executable, "-P", "-c", "import bcc; print(bcc.__file__)"],
                             capture_output=True, text=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        res = subprocess.CompletedProcess([], 1, "", str(exc))
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        return Check("bcc", False, f"import bcc failed: {last}",
                     "apt-get install python3-bpfcc libbpfcc, then `make install` to link "
                     "the bcc package into the venv")
    return Check("bcc", True, f"bcc importable ({Path(res.stdout.strip()).parent})")


def check_uprobes() -> Check:
    d = _tracefs()
    path = Path(d or TRACEFS[0], "uprobe_events")
    ok = path.exists() and os.access(path, os.W_OK)
    return Check("uprobes", ok, f"{path} {'writable' if ok else 'not writable'}",
                 "needs CONFIG_UPROBE_EVENTS, a mounted tracefs and root "
                 "(memory/lock profiles use uprobes)")


CHECKS: dict[str, Callable[[], Check]] = {
    "root": check_root,
    "capabilities": check_capabilities,
    "perf_event access": check_perf_event,
    "bpf syscall": check_bpf_syscall,
    "btf": check_btf,
    "tracefs": check_tracefs,
    "kernel headers": check_kernel_headers,
    "bcc": check_bcc,
    "uprobes": check_uprobes,
}

# What the ebpf receiver's CPU/off-CPU profiling needs (BTF and uprobes are not).
EBPF_PROFILING = ("capabilities", "perf_event access", "bpf syscall", "tracefs",
                  "kernel headers", "bcc")


def _safe(fn: Callable[[], Check], name: str) -> Check:
    try:
        return fn()
    except Exception as exc:   # a broken check is a failed check, not a crash
        return Check(name, False, f"check raised {type(exc).__name__}: {exc}")


def run_checks(names: Iterable[str] | None = None) -> list[Check]:
    chosen = list(names) if names is not None else list(CHECKS)
    unknown = [n for n in chosen if n not in CHECKS]
    if unknown:
        raise KeyError(f"unknown doctor checks: {', '.join(unknown)}")
    return [_safe(CHECKS[n], n) for n in chosen]


def require(checks_needed: Iterable[str] = EBPF_PROFILING) -> None:
    failed = [c for c in run_checks(checks_needed) if not c.ok]
    if failed:
        raise DoctorError(failed)


def report(checks: list[Check]) -> str:
    lines = [c.line() for c in checks]
    bad = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - bad} passed, {bad} failed")
    return "\n".join(lines)


def main() -> int:
    checks = run_checks()
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
