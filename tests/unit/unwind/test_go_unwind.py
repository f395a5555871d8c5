"""Go frames without CFI (#26): pclntab SP deltas against the DWARF CFI the
Go linker writes for the same binary, and the unwinder's stack switches."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from telegen.pdata import Mapping
from telegen.procinfo.elfheaders import ElfHeaders, read_headers
from telegen.symbols.gopclntab import GoFunctions
from telegen.symbols.gopclntab_locate import load_segments
from telegen.unwind import AddressSpace, TableCache, unwind
from telegen.unwind.golang import (
    CHAIN_MAX,
    GO_FAKE,
    GO_MCALL,
    GO_SWITCH,
    GO_TOP,
    HASH_GOROUTINE,
    GoUnwindInfo,
    chain_returns,
    explained_by_chain,
)
from telegen.unwind.table import RSP, Rule, Segment, TableBuilder
from telegen.unwind.unwinder import GO_STACK_SWITCH, SwitchContext

SOURCE = Path(__file__).resolve().parents[2] / "testdata" / "go" / "gostacks"


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "the go command is missing (Debian golang-go)"
    tmp = tmp_path_factory.mktemp("gounwind")
    src = tmp / "src"
    shutil.copytree(SOURCE, src)
    (src / "go.mod").write_text("module gostacks\n\ngo 1.19\n")
    env = dict(os.environ, GOCACHE=str(tmp / "cache"), CGO_ENABLED="0", GOTOOLCHAIN="local",
               GOFLAGS="-mod=mod")
    subprocess.run([go, "build", "-o", str(tmp / "gs"), "."], cwd=src, env=env, check=True,
                   timeout=300)
    return tmp / "gs"


def read_headers_of(path: Path) -> ElfHeaders:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_headers(fd)
    finally:
        os.close(fd)


def test_pclntab_sp_deltas_equal_the_debug_frame(go_binary: Path, tmp_path: Path) -> None:
    table = TableCache(cache_dir=tmp_path, disk=False).get(str(go_binary), "")
    assert table is not None and table.source == ".debug_frame"
    funcs = GoFunctions.open_path(str(go_binary))
    assert funcs is not None
    info = GoUnwindInfo(funcs, load_segments(read_headers_of(go_binary)))
    text = next(s for s in table.segments if s.vaddr <= 0x401000 < s.vaddr + s.filesz)
    checked = same = 0
    special = set()
    for pc in range(0x401000, text.vaddr + text.filesz, 3):
        ours, cfi = info.rule(pc), table.rule(pc)
        if ours is None or cfi[0] != RSP:
            continue
        if ours[0] != RSP:
            special.add(ours[0])
            continue
        checked += 1
        same += ours[1] == cfi[1]
    print(f"{checked} pcs with both rules, {same} equal CFA offsets; special kinds {special}")
    assert checked > 50_000
    assert same == checked
    assert special <= {GO_TOP, GO_SWITCH, GO_MCALL, GO_FAKE}


class _Go:
    """Go unwind info by function start (each function 0x100 bytes)."""

    def __init__(self, rules: dict[int, Rule]) -> None:
        self.rules = rules

    def rule(self, vaddr: int) -> Rule | None:
        return self.rules.get(vaddr & ~0xFF)

    def load_bias(self, map_start: int, map_offset: int, map_size: int) -> int:
        return map_start - map_offset       # linked at its file offsets


def _space(go_rules: dict[int, Rule]) -> AddressSpace:
    table = TableBuilder().build([Segment(0x0, 0x0, 0x10000)])       # no CFI at all
    return AddressSpace([Mapping(start=0x1000, limit=0x9000, offset=0x1000, file="/go")],
                        lambda m: table, lambda m: _Go(go_rules))  # type: ignore[arg-type,return-value]


def _words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(8, "little") for w in ws) + bytes(64)


# g0 stack: fn (0x3000, 16-byte frame) called by systemstack (0x4000); the
# goroutine: resumed at systemstack_switch (0x4100), caller work (0x5000,
# 8-byte frame) called by goexit (0x6000)
RULES: dict[int, Rule] = {0x3000: (RSP, 24, -16, -8), 0x4000: (GO_SWITCH, 8, 0, -8),
                          0x4100: (GO_FAKE, 8, 0, -8), 0x5000: (RSP, 16, 0, -8),
                          0x6000: (GO_TOP, 8, 0, -8), 0x7000: (GO_MCALL, 8, 0, -8)}
G0_SP, G_SP = 0x7FFF_0000, 0x00C0_0000


def test_a_system_stack_sample_continues_on_the_goroutine_stack() -> None:
    g0 = _words(0, 0x1234, 0x4011)          # fn's frame: locals, saved rbp, return
    goroutine = _words(0x5021, 0, 0x6001)   # systemstack's return, work's frame
    ctx = SwitchContext(pc=0x4100, sp=G_SP, bp=0, stack=goroutine)
    res = unwind(_space(RULES), 0x3010, G0_SP, 0, g0, goroutine=ctx)
    assert res.addresses == (0x3010, 0x4011, 0x5021, 0x6001) and res.complete
    cut = unwind(_space(RULES), 0x3010, G0_SP, 0, g0)
    assert cut.addresses == (0x3010, 0x4011) and not cut.complete
    assert cut.reason == GO_STACK_SWITCH


def test_mcall_ends_a_parked_goroutine_and_resumes_a_running_one() -> None:
    g0 = _words(0, 0x1234, 0x7011)          # fn called by mcall
    res = unwind(_space(RULES), 0x3010, G0_SP, 0, g0)
    assert res.addresses == (0x3010, 0x7011) and res.complete
    # mcall saved its caller's pc (a return address, shown) and sp
    ctx = SwitchContext(pc=0x5021, sp=G_SP, bp=0, stack=_words(0, 0x6001))
    res = unwind(_space(RULES), 0x3010, G0_SP, 0, g0, goroutine=ctx)
    assert res.addresses == (0x3010, 0x7011, 0x5021, 0x6001) and res.complete


# -- the chain-keyed dedupe of Go stack copies (bpf/golabels.h go_stack_hash) -----------
# F (0x3000) and G (0x5000) keep a 16-byte frame with the caller's rbp at
# CFA-16, as Go does; L (0x2000) is a frameless leaf; goexit (0x6000) is the top.
CHAIN_RULES: dict[int, Rule] = {0x2000: (RSP, 8, 0, -8), 0x3000: (RSP, 24, -16, -8),
                                0x5000: (RSP, 24, -16, -8), 0x6000: (GO_TOP, 8, 0, -8),
                                0x4000: (GO_SWITCH, 8, 0, -8), 0x4100: (GO_FAKE, 8, 0, -8)}


def _chain_stack(sp: int, local: int, *, saved: bool = True) -> tuple[bytes, int]:
    """F's frame (a local, its record: G's record + return into G), then G's
    (a local, its record: 0 + return into goexit); the bp F holds (or, in
    F's prologue, G's record still)."""
    g_record = sp + 32
    words = [local, g_record if saved else 0xdead, 0x5021, 7, 0, 0x6001]
    return _words(*words), sp + 8 if saved else g_record


def test_a_go_stack_is_explained_by_its_frame_pointer_chain() -> None:
    space = _space(CHAIN_RULES)
    for local in (1, 2, 0x5021):                 # loop values at sp do not matter
        stack, bp = _chain_stack(G_SP, local)
        res = unwind(space, 0x3010, G_SP, bp, stack)
        assert res.addresses == (0x3010, 0x5021, 0x6001) and res.complete
        assert explained_by_chain(res.addresses, 0x3010, G_SP, bp, stack, 2, None)
    # a frameless leaf: its caller's return address is the word at sp
    leaf = (0x3021).to_bytes(8, "little") + _chain_stack(G_SP + 8, 5)[0]
    res = unwind(space, 0x2004, G_SP, G_SP + 16, leaf)
    assert res.addresses == (0x2004, 0x3021, 0x5021, 0x6001) and res.complete
    assert explained_by_chain(res.addresses, 0x2004, G_SP, G_SP + 16, leaf, 2, None)


def test_a_prologue_sample_is_not_explained_so_its_key_is_dropped() -> None:
    """In F's prologue rbp is still G's record: the return into G, read at
    F's CFA-8, is in no frame record the key covered."""
    stack, bp = _chain_stack(G_SP, 1, saved=False)
    res = unwind(_space(CHAIN_RULES), 0x3010, G_SP, bp, stack)
    assert res.addresses == (0x3010, 0x5021, 0x6001)
    words, cut = chain_returns(stack, G_SP, bp)
    assert words == [1, 0x6001] and not cut
    assert not explained_by_chain(res.addresses, 0x3010, G_SP, bp, stack, 2, None)
    assert not explained_by_chain((0x3011, 0x5021), 0x3010, G_SP, bp, stack, 2, None)


def test_a_g0_key_covers_the_goroutine_chain_and_a_deep_chain_is_cut_at_the_bound() -> None:
    g0 = _words(0, 0, 0x4011)               # fn's frame: a local, record (0, into systemstack)
    g_stack, g_bp = _chain_stack(G_SP, 3)
    g_stack = (0x3021).to_bytes(8, "little") + g_stack     # systemstack_switch's return
    ctx = SwitchContext(pc=0x4100, sp=G_SP - 8, bp=g_bp, stack=g_stack)
    res = unwind(_space(CHAIN_RULES), 0x3010, G0_SP, G0_SP + 8, g0, goroutine=ctx)
    assert res.complete and res.addresses[:2] == (0x3010, 0x4011)
    assert explained_by_chain(res.addresses, 0x3010, G0_SP, G0_SP + 8, g0,
                              2 | HASH_GOROUTINE, ctx)
    assert not explained_by_chain(res.addresses, 0x3010, G0_SP, G0_SP + 8, g0, 2, ctx)
    # G calling itself CHAIN_MAX + 8 times: the frames past the bound are not checked
    depth = CHAIN_MAX + 8
    words = []
    for i in range(depth):
        words += [i, G_SP + 24 * (i + 1) + 8 if i + 1 < depth else 0, 0x5021]
    deep = _words(*words)
    addresses, cut = chain_returns(deep, G_SP, G_SP + 8)
    assert cut and len(addresses) == CHAIN_MAX + 1
    assert explained_by_chain((0x5010, *[0x5021] * (depth - 1), 0x6001), 0x5010, G_SP,
                              G_SP + 8, deep, 2, None)
