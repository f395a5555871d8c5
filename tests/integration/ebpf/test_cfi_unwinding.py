"""CFI (DWARF) unwinding against real processes built without frame pointers.

One receiver session (``unwinding: auto``, 1 s windows) profiles, at once:
C, C++ and Rust CPU workloads built ``-O2 -fomit-frame-pointer`` (Rust:
``-C force-frame-pointers=no``), a C program blocking in libc's ``read``,
``nanosleep`` and ``pthread_mutex_lock`` (Debian's libc has no frame
pointers), and the C workload built with neither frame pointers nor CFI.
Function names come from each program's own symbol table
(telegen.testing.symbols), demangled for C++/Rust.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import FrameKind, Profile, Sample
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.symbols.demangle import Demangler
from telegen.telemetry import Registry, sum_series
from telegen.testing import native
from telegen.testing.sink import Sink
from telegen.testing.symbols import ElfFunctions
from telegen.unwind import TableCache
from telegen.unwind.table import NONE

pytestmark = pytest.mark.bpf
WORKLOADS = Path(__file__).resolve().parents[2] / "testdata" / "workloads"
NOFP = ("-O2", "-g", "-fomit-frame-pointer", "-pthread")
NOCFI = ("-O2", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables")
CPU_SECONDS = "5"
RATE = 199             # more samples per program: the 99% bound needs a few hundred
BLOCK_ROUNDS = "30"      # ~1.8 s: 30 x (30 ms locked + 30 ms unlocked) in the holder

# The program's own functions from leaf to main, per call path (C, C++, Rust).
CHAINS = {
    "c": (["leaf_spin", "mid_b", "mid_a", "main"], ["by_value", "sort_phase", "main"]),
    "cpp": (["step_leaf", "accumulate<unsigned long>", "Driver::run", "main"],
            ["step_leaf", "run_callback", "main"]),
    "rs": (["leaf_spin", "mid_b", "mid_a", "main"],),
}
# "gone": the C program without a build-id, deleted once started (an upgraded
# binary still running): its table can only come through /proc/PID/map_files.
CHAINS["gone"] = CHAINS["c"]
# C++: std::function's invoker and the lambda sit between step_leaf and
# run_callback; they are instantiated in the program, so they are allowed there.
CPP_GLUE = re.compile(r"lambda|_M_invoke|_Function_handler|std::function|operator\(\)|__invoke")


@dataclass
class Program:
    name: str
    path: Path
    elf: ElfFunctions
    demangler: Demangler
    pid: int = 0
    rs_crate: str = ""

    def own_functions(self, s: Sample) -> list[str]:
        """The program's own functions in the stack, leaf first, names normalised."""
        out = []
        for raw in self.elf.stack_functions(s.stack):
            name = self.demangler.demangle(raw)
            name = re.sub(r"::h[0-9a-f]{16}$", "", name)           # Rust legacy hash
            name = name.split("(")[0] if not name.startswith("(") else name
            if self.rs_crate and name.startswith(self.rs_crate + "::"):
                name = name[len(self.rs_crate) + 2:]
            out.append(name.removeprefix("unsigned long ").strip())
        return out


@dataclass
class Session:
    programs: dict[str, Program]
    cpu: list[Profile]
    off_cpu: list[Profile]
    registry: Registry
    outputs: dict[str, str] = field(default_factory=dict)

    def samples(self, kind: str, prog: Program) -> Iterator[Sample]:
        for p in (self.cpu if kind == "cpu" else self.off_cpu):
            for s in p:
                if dict(s.labels).get("process.pid") == prog.pid:
                    yield s

    def metric(self, name: str, **labels: str) -> float:
        return sum_series(self.registry.snapshot(), name, **labels)


def _build(tmp: Path) -> dict[str, Program]:
    dm = Demangler()
    c = native.compile_c((WORKLOADS / "tg_nofp.c").read_text(), tmp / "tg_nofp_c", flags=NOFP)
    cpp = native.compile_c((WORKLOADS / "tg_nofp.cpp").read_text(), tmp / "tg_nofp_cpp",
                           flags=NOFP, cxx=True)
    rs = native.compile_rust((WORKLOADS / "tg_nofp.rs").read_text(), tmp / "tg_nofp_rs",
                             mangling="legacy", opt="2", crate_name="tg_nofp_rs",
                             extra=("-C", "force-frame-pointers=no"))
    block = native.compile_c((WORKLOADS / "tg_block.c").read_text(), tmp / "tg_block_nofp",
                             flags=NOFP)
    nocfi = native.compile_c((WORKLOADS / "tg_nofp.c").read_text(), tmp / "tg_nofp_nocfi",
                             flags=NOCFI)
    gone = native.compile_c((WORKLOADS / "tg_nofp.c").read_text(), tmp / "tg_nofp_gone",
                            flags=(*NOFP, "-Wl,--build-id=none"))
    return {name: Program(name, path, ElfFunctions(path), dm,
                          rs_crate="tg_nofp_rs" if name == "rs" else "")
            for name, path in (("c", c), ("cpp", cpp), ("rs", rs), ("block", block),
                               ("nocfi", nocfi), ("gone", gone))}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    programs = _build(tmp_path_factory.mktemp("cfi"))
    registry = Registry()
    settings = CreateSettings(ComponentID("ebpf", "cfi"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/cfi"),
                              logging.getLogger("test.ebpf.cfi"))
    sink = Sink()
    names = "|".join(p.path.name for p in programs.values())
    cfg = EbpfConfig(duration=1.0, sample_rate=RATE, process_names=[f"^({names})$"],
                     unwinding="auto")
    cfg.validate()
    receiver = EbpfReceiver(settings, cfg, sink)
    receiver.start(None)  # type: ignore[arg-type]
    try:
        procs = {}
        for key, prog in programs.items():
            arg = BLOCK_ROUNDS if key == "block" else CPU_SECONDS
            procs[key] = subprocess.Popen([str(prog.path), arg], stdout=subprocess.PIPE,
                                          text=True)
            prog.pid = procs[key].pid
        programs["gone"].path.unlink()          # Popen returned: exec is done
        outputs = {k: p.communicate(timeout=60)[0] for k, p in procs.items()}
        assert all(p.returncode == 0 for p in procs.values()), outputs
        time.sleep(0.5)
    finally:
        receiver.shutdown()
    return Session(programs, sink.profiles("cpu"), sink.profiles("off_cpu"), registry,
                   outputs)


def _follows_chain(names: list[str], chains: tuple[list[str], ...], lang: str) -> bool:
    """``names`` (leaf first, up to main) is a suffix of one expected chain."""
    if lang == "cpp":
        names = [n for n in names if not CPP_GLUE.search(n)]
    return any(names == chain[len(chain) - len(names):] for chain in chains)


@pytest.mark.parametrize("lang", ["c", "cpp", "rs", "gone"])
def test_cpu_samples_reach_main_without_frame_pointers(session: Session, lang: str) -> None:
    prog = session.programs[lang]
    total = reached = ordered = 0
    bad: Counter[tuple[str, ...]] = Counter()
    for s in session.samples("cpu", prog):
        n = s.values[0]
        total += n
        names = prog.own_functions(s)
        if "main" not in names:
            bad[tuple(names)] += n
            continue
        reached += n
        upto_main = names[:names.index("main") + 1]
        if _follows_chain(upto_main, CHAINS[lang], lang):
            ordered += n
        else:
            bad[tuple(names)] += n
    print(f"{lang}: {total} CPU samples, {100 * reached / max(total, 1):.1f}% reach main, "
          f"{100 * ordered / max(total, 1):.1f}% with the whole chain in order; "
          f"other stacks: {bad.most_common(3)}")
    assert total >= 100, f"too few samples of the {lang} workload ({total})"
    assert ordered >= 0.99 * total
    full = session.metric("ebpf_unwind_full", process=prog.path.name[:15])
    assert full >= 0.99 * total


def test_offcpu_stacks_include_callers_above_libc(session: Session) -> None:
    prog = session.programs["block"]
    chains = {"read": ["wait_pipe", "reader_loop"], "nanosleep": ["nap", "sleeper_loop", "main"],
              "mutex": ["take_lock", "contend"]}
    blocked_ns: Counter[str] = Counter()
    for s in session.samples("off_cpu", prog):
        names = prog.own_functions(s)
        user = [f for f in s.stack if f.kind == FrameKind.NATIVE]
        first_own = next((i for i, f in enumerate(user) if prog.elf.frame_function(f)), None)
        if first_own is None or first_own == 0:
            continue
        below = user[first_own - 1].mapping          # the frame the program called into
        if below is None or "libc.so" not in below.file:
            continue
        for what, chain in chains.items():
            if names[:len(chain)] == chain:
                blocked_ns[what] += s.values[1]
    print("off-CPU ns under libc with the program's callers:", dict(blocked_ns))
    rounds = int(BLOCK_ROUNDS)
    assert blocked_ns["nanosleep"] >= 0.8 * rounds * 20_000_000
    assert blocked_ns["read"] >= 0.5 * rounds * 20_000_000
    assert blocked_ns["mutex"] >= 0.25 * rounds * 30_000_000


def test_binary_without_frame_pointers_or_cfi_is_counted_truncated(session: Session) -> None:
    prog = session.programs["nocfi"]
    table = TableCache(disk=False).get(str(prog.path), "")
    leaf = next(f for f in prog.elf.functions if f.name == "leaf_spin")
    assert table.rule(leaf.start + 4)[0] == NONE, "premise: no CFI for the program's code"
    total = truncated = 0
    for s in session.samples("cpu", prog):
        total += s.values[0]
        if s.stack[-1].kind == FrameKind.TRUNCATED:
            truncated += s.values[0]
            assert s.stack[0].kind == FrameKind.NATIVE       # what frame pointers give
    print(f"no FP, no CFI: {total} samples, {truncated} marked truncated, counter "
          f"{session.metric('ebpf_unwind_truncated', process=prog.path.name[:15])}")
    assert total >= 100
    assert truncated >= 0.99 * total
    assert session.metric("ebpf_unwind_truncated", process=prog.path.name[:15]) >= truncated
