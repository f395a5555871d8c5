"""Go from eBPF (#26) against real Go 1.19 programs (tests/testdata/go/gostacks).

One receiver session (``unwinding: auto``, 199 Hz, 1 s windows) profiles at
once the workload built four ways: pure Go and with cgo, each unstripped and
``-ldflags="-s -w"`` (no .symtab, no DWARF, no CFI for Go code). Truth for
names is the unstripped build's symbol table: the stripped build has the
same functions at the same addresses (checked), so each sample of the
stripped build is named twice, by the agent's reader (``.gopclntab``) and by
the truth. The goroutines of main.burnHere run under pprof.Do with span_id,
trace_id and worker labels, read in BPF.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.formats import otlp, pprof
from telegen.pdata import FrameKind, Profile, Profiles, Sample
from telegen.processors.spanlink.link import LinkCounts, link_profile
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.golabels import read_facts
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.symbols.gopclntab import GoFunctions
from telegen.telemetry import Registry
from telegen.testing.sink import Sink
from telegen.testing.symbols import ElfFunctions

pytestmark = pytest.mark.bpf
SOURCE = Path(__file__).resolve().parents[2] / "testdata" / "go" / "gostacks"
SPAN_ID, TRACE_ID = "00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4736"   # main.go
SECONDS, BURNERS, LOCKERS = "15", "2", "3"
RATE = 999
PROCESS_PID = "process.pid"
# where a whole Go stack ends: a goroutine (goexit), a thread's g0 (mstart, rt0_go),
# or a goroutine parked by mcall (the scheduler runs for no goroutine)
ROOTS = {"runtime.goexit", "runtime.main", "runtime.mstart", "runtime.rt0_go", "runtime.mcall"}
SWITCHES = {"runtime.systemstack", "runtime.asmcgocall", "runtime.morestack",
            "runtime.nanotime1", "runtime.walltime"}
BUILDS = {"gs_pure": ("0", ()), "gs_pure_s": ("0", ("-ldflags=-s -w",)),
          "gs_cgo": ("1", ()), "gs_cgo_s": ("1", ("-ldflags=-s -w",))}


@dataclass
class Program:
    name: str
    path: Path
    truth: ElfFunctions          # the unstripped build's symbols
    pclntab: GoFunctions         # the build's own .gopclntab (what a stripped build has)
    pid: int = 0
    cpu: list[Sample] = field(default_factory=list)
    off_cpu: list[Sample] = field(default_factory=list)

    def names(self, s: Sample, *, truth: bool) -> list[str | None]:
        """Leaf-first function names of the sample's frames in this binary."""
        out: list[str | None] = []
        for f in s.stack:
            if f.kind != FrameKind.NATIVE or f.mapping is None or \
                    not f.mapping.file.endswith("/" + self.path.name):
                continue
            vaddr = self.truth.vaddr(f.address, f.mapping)
            if vaddr is None:
                out.append(None)
            elif truth:
                name = self.truth.function_at(vaddr)
                out.append(name.removesuffix(".abi0") if name else None)
            else:
                frames = self.pclntab.lookup(vaddr)
                out.append(frames[-1].function if frames else None)
        return out


@dataclass
class Session:
    programs: dict[str, Program]
    profiles: list[Profile]
    telemetry: dict[str, float] = field(default_factory=dict)


def _build(tmp: Path) -> dict[str, Path]:
    go = shutil.which("go")
    assert go, "the go command is missing (Debian golang-go): MACHINE.md sets it up"
    env = dict(os.environ, GOCACHE=str(tmp / "gocache"), GOPATH=str(tmp / "gopath"),
               GOFLAGS="-mod=mod", GO111MODULE="on", GOTOOLCHAIN="local")
    src = tmp / "src"
    shutil.copytree(SOURCE, src)
    (src / "go.mod").write_text("module gostacks\n\ngo 1.19\n")
    out = {}
    for name, (cgo, flags) in BUILDS.items():
        subprocess.run([go, "build", *flags, "-o", str(tmp / name), "."], cwd=src,
                       env={**env, "CGO_ENABLED": cgo}, check=True, timeout=300)
        out[name] = tmp / name
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    paths = _build(tmp_path_factory.mktemp("gostacks"))
    programs = {n: Program(n, p, ElfFunctions(paths[n.removesuffix("_s")]),
                           GoFunctions.open_path(str(p)))  # type: ignore[arg-type]
                for n, p in paths.items()}
    registry = Registry()
    settings = CreateSettings(ComponentID("ebpf", "go"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/go"),
                              logging.getLogger("test.ebpf.go"))
    sink = Sink()
    cfg = EbpfConfig(duration=1.0, sample_rate=RATE, unwinding="auto",
                     process_names=[f"^({'|'.join(programs)})$"])
    cfg.validate()
    receiver = EbpfReceiver(settings, cfg, sink)
    receiver.start(None)  # type: ignore[arg-type]
    try:
        procs = {n: subprocess.Popen([str(p.path), SECONDS, BURNERS, LOCKERS],
                                     stdout=subprocess.PIPE, text=True)
                 for n, p in programs.items()}
        for n, proc in procs.items():
            programs[n].pid = proc.pid
        outputs = {n: p.communicate(timeout=120)[0] for n, p in procs.items()}
        assert all(p.returncode == 0 for p in procs.values()), outputs
        time.sleep(0.5)
    finally:
        receiver.shutdown()
    profiles = sink.profiles()
    for prog in programs.values():
        for p in profiles:
            if p.name in ("cpu", "off_cpu"):
                into = prog.cpu if p.name == "cpu" else prog.off_cpu
                into.extend(s for s in p if dict(s.labels).get(PROCESS_PID) == prog.pid)
    telemetry = {k: v for k, v in registry.snapshot().items()
                 if any(w in k for w in ("unwind", "stack_errors", "lost", "truncated"))}
    print(f"\nunwinding: {telemetry}")
    return Session(programs, profiles, telemetry)


def _whole(prog: Program, s: Sample) -> bool:
    if any(f.kind == FrameKind.TRUNCATED for f in s.stack):
        return False
    names = prog.names(s, truth=True)
    return bool(names) and names[-1] in ROOTS


def _split(prog: Program, samples: list[Sample], *, truth: bool) -> tuple[int, int]:
    burn = lock = 0
    for s in samples:
        names = prog.names(s, truth=truth)
        burn += s.values[0] * ("main.burnHere" in names)
        lock += s.values[0] * ("main.lockHere" in names)
    return burn, lock


@pytest.mark.parametrize("name", list(BUILDS))
def test_go_stacks_are_whole(session: Session, name: str) -> None:
    prog = session.programs[name]
    total = sum(s.values[0] for s in prog.cpu)
    whole = sum(s.values[0] for s in prog.cpu if _whole(prog, s))
    bad: Counter[tuple[str | None, ...]] = Counter()
    for s in prog.cpu:
        if not _whole(prog, s):
            bad[tuple(prog.names(s, truth=True)[-3:])] += s.values[0]
    off_total = sum(s.values[1] for s in prog.off_cpu)
    off_whole = sum(s.values[1] for s in prog.off_cpu if _whole(prog, s))
    off_bad: Counter[tuple[str | None, ...]] = Counter()
    for s in prog.off_cpu:
        if not _whole(prog, s):
            off_bad[tuple(prog.names(s, truth=True)[:2] + prog.names(s, truth=True)[-2:])] \
                += s.values[1]
    print(f"{name}: off-CPU not whole (ns): {off_bad.most_common(4)}")
    print(f"{name}: {total} CPU samples, {100 * whole / max(total, 1):.1f}% whole to "
          f"{sorted(ROOTS)}; off-CPU {100 * off_whole / max(off_total, 1):.1f}% of "
          f"{off_total / 1e9:.2f}s whole; not whole: {bad.most_common(4)}")
    # samples on the system stack (g0) that crossed to their goroutine's stack
    switched = [s for s in prog.cpu if SWITCHES & set(prog.names(s, truth=True))]
    crossed = sum(s.values[0] for s in switched if _whole(prog, s) and
                  prog.names(s, truth=True)[-1] == "runtime.goexit")
    on_g0 = sum(s.values[0] for s in switched)
    print(f"{name}: {on_g0} samples through {sorted(SWITCHES)}, "
          f"{100 * crossed / max(on_g0, 1):.1f}% of them whole to runtime.goexit")
    assert total >= 100, f"too few samples of {name} ({total})"
    assert whole >= 0.95 * total
    assert on_g0 >= 10 and crossed >= 0.9 * on_g0     # allocHere, the GC, cgoHere
    if name.startswith("gs_cgo"):       # Go -> C -> Go: backHere called back from C
        back = [s for s in prog.cpu if "main.backHere" in prog.names(s, truth=True)]
        back_whole = sum(s.values[0] for s in back if _whole(prog, s) and
                         "main.cgoBackHere" in prog.names(s, truth=True))
        back_total = sum(s.values[0] for s in back)
        print(f"{name}: {back_total} samples in main.backHere (called from C), "
              f"{100 * back_whole / max(back_total, 1):.1f}% whole through C to goexit")
        assert back_total >= 20 and back_whole >= 0.9 * back_total


@pytest.mark.parametrize("name", ["gs_pure_s", "gs_cgo_s"])
def test_stripped_go_cpu_is_named_from_pclntab(session: Session, name: str) -> None:
    """Every frame in the binary named by its .gopclntab, and as the truth names it."""
    prog = session.programs[name]
    total = named = same = 0
    for s in prog.cpu:
        n = s.values[0]
        total += n
        ours, truth = prog.names(s, truth=False), prog.names(s, truth=True)
        go_truth = [t for t in truth if t is not None and not t.startswith(("_cgo_", "x_cgo"))]
        go_ours = [o for o, t in zip(ours, truth, strict=True) if t in go_truth]
        if go_ours and all(go_ours):
            named += n
        if go_ours == go_truth:
            same += n
    print(f"{name}: {total} CPU samples, {100 * named / max(total, 1):.1f}% named from "
          f".gopclntab, {100 * same / max(total, 1):.1f}% as the symbol table names them")
    assert named >= 0.95 * total
    assert same >= 0.95 * total


def test_burn_lock_split_matches_the_unstripped_build(session: Session) -> None:
    stripped, full = session.programs["gs_pure_s"], session.programs["gs_pure"]
    b_s, l_s = _split(stripped, stripped.cpu, truth=False)      # what the agent's names say
    b_t, l_t = _split(stripped, stripped.cpu, truth=True)       # the same samples, truth
    b_f, l_f = _split(full, full.cpu, truth=True)               # the unstripped build
    share_s, share_t, share_f = (b / max(b + lk, 1) for b, lk in
                                 ((b_s, l_s), (b_t, l_t), (b_f, l_f)))
    # two processes sampled independently: the difference has a binomial spread
    sigma = math.sqrt(share_f * (1 - share_f) * (1 / max(b_s + l_s, 1) + 1 / max(b_f + l_f, 1)))
    print(f"burnHere share: stripped {100 * share_s:.1f}% ({b_s}:{l_s}), same samples by "
          f"the symbol table {100 * share_t:.1f}%, unstripped build {100 * share_f:.1f}% "
          f"({b_f}:{l_f}); sampling spread of the difference {100 * sigma:.1f} points")
    assert b_s + l_s >= 0.7 * sum(s.values[0] for s in stripped.cpu)
    assert abs(share_s - share_t) <= 0.02
    assert abs(share_s - share_f) <= max(0.02, 3 * sigma)


@pytest.mark.parametrize("name", ["gs_pure_s", "gs_cgo"])
def test_goroutine_labels_are_on_samples(session: Session, name: str) -> None:
    prog = session.programs[name]
    inside = labelled = outside = wrong = 0
    for s in prog.cpu:
        labels, n = dict(s.labels), s.values[0]
        names = prog.names(s, truth=True)
        assert len(labels) == len(s.labels)             # no name twice
        if "main.burnHere" in names:
            inside += n
            if labels.get("span_id") == SPAN_ID and labels.get("trace_id") == TRACE_ID \
                    and labels.get("worker") in ("0", "1"):
                labelled += n
        else:
            outside += n
            wrong += n * ("span_id" in labels)
    print(f"{name}: {inside} samples in main.burnHere, {100 * labelled / max(inside, 1):.1f}% "
          f"with its pprof labels; {wrong} of {outside} other samples labelled")
    assert inside >= 50
    assert labelled >= 0.95 * inside
    assert wrong <= 0.01 * outside


def test_span_labels_link_samples_without_a_spanstore(session: Session) -> None:
    prog = session.programs["gs_pure_s"]
    p = next(p for p in session.profiles if p.name == "cpu" and
             any(dict(s.labels).get(PROCESS_PID) == prog.pid and "span_id" in dict(s.labels)
                 for s in p))
    counts = LinkCounts()
    link_profile(p, lambda pid, tid, ts: None, lambda span: None, counts)
    linked = [s for s in p if s.link is not None]
    assert linked and counts.normalised == len(linked)
    assert {(s.link.trace_id, s.link.span_id) for s in linked if s.link} == \
        {(TRACE_ID, SPAN_ID)}
    assert all("span_id" not in dict(s.labels) for s in linked)
    back = otlp.decode_request(otlp.parse_request(
        otlp.encode_request([p]).SerializeToString()))
    assert {(s.link.trace_id, s.link.span_id) for q in back for s in q
            if s.link is not None} == {(TRACE_ID, SPAN_ID)}
    again = pprof.decode(pprof.encode(p))
    assert {(s.link.trace_id, s.link.span_id) for s in again if s.link is not None} == \
        {(TRACE_ID, SPAN_ID)}
    assert Profiles([p]).sample_count() > 0


def _dwarf_member_offset(path: Path, struct_name: str, member: str) -> int:
    from elftools.elf.elffile import ELFFile
    with path.open("rb") as f:
        for cu in ELFFile(f).get_dwarf_info().iter_CUs():
            if cu.get_top_DIE().attributes["DW_AT_name"].value != b"runtime":
                continue
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag == "DW_TAG_structure_type" and name and \
                        name.value == struct_name.encode():
                    for m in die.iter_children():
                        if m.attributes["DW_AT_name"].value == member.encode():
                            return int(m.attributes["DW_AT_data_member_location"].value)
    raise AssertionError(f"{struct_name}.{member} not in the DWARF of {path}")


def test_go_facts_match_the_dwarf_of_the_build(session: Session) -> None:
    """g.labels' offset read from runtime_setProfLabel's code = DWARF's; the
    fixed offsets of golabels.py = DWARF's."""
    from telegen.receivers.ebpf import golabels as gl
    full = session.programs["gs_pure"].path
    truth = _dwarf_member_offset(full, "runtime.g", "labels")
    assert (gl.G_M, gl.G_SCHED) == (_dwarf_member_offset(full, "runtime.g", "m"),
                                    _dwarf_member_offset(full, "runtime.g", "sched"))
    assert (gl.M_G0, gl.M_CURG) == (_dwarf_member_offset(full, "runtime.m", "g0"),
                                    _dwarf_member_offset(full, "runtime.m", "curg"))
    vdso = (_dwarf_member_offset(full, "runtime.m", "vdsoSP"),
            _dwarf_member_offset(full, "runtime.m", "vdsoPC"))
    for name in ("gs_pure", "gs_pure_s", "gs_cgo_s"):
        fd = os.open(session.programs[name].path, os.O_RDONLY)
        try:
            facts = read_facts(fd)
        finally:
            os.close(fd)
        assert facts is not None and facts.version == (1, 19)
        assert (facts.labels_offset, facts.tls_offset, facts.labels_kind) == (truth, -8, 1)
        assert (facts.vdso_sp, facts.vdso_pc) == vdso
