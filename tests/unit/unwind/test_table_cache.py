"""The unwind-table cache: tables used in place from their mmapped file, the
disk cap, and the never-waiting path (``lookup``) whose builds run in the
builder child under ``nice 19`` and per-object CPU / memory limits."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from telegen.procinfo import agent
from telegen.procinfo.maps import MappedFile, open_host_file
from telegen.symbols.budget import ParseLimits
from telegen.testing import native
from telegen.testing.hostile_elf import add_section, remember_state_cfi
from telegen.unwind import TableCache
from telegen.unwind.build import build_table

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LIBS = [LIBC, "/usr/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libz.so.1"]


def host(path: str | Path) -> MappedFile:
    return MappedFile(open_host_file(str(path)), str(path), "")


def wait_ready(tables: TableCache, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while tables.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not tables.pending, "background build did not finish"


def nice_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[16])                      # field 19 of stat: nice


def test_small_cfi_is_built_at_once_big_cfi_in_the_child(tmp_path: Path) -> None:
    """libc's 150 KiB of .eh_frame: decoded in the caller's thread (~0.05 s);
    libjvm's 1.4 MiB: queued for the child, None meanwhile."""
    libjvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"   # setup-host
    tables = TableCache(cache_dir=tmp_path)
    try:
        with host(LIBC) as libc, host(libjvm) as jvm:
            table = tables.lookup(libc, "")
            assert table is not None and table.has_cfi and tables.built_inline == 1
            t0 = time.monotonic()
            assert tables.lookup(jvm, "") is None and time.monotonic() - t0 < 0.5
            assert tables.wait_ready(60)
            big = tables.lookup(jvm, "")
            assert big is not None and len(big) > 100_000 and tables.built_inline == 1
    finally:
        tables.close()


def test_lookup_never_waits_and_the_child_builds(tmp_path: Path) -> None:
    tables = TableCache(cache_dir=tmp_path, inline_cfi_bytes=0)
    try:
        with host(LIBC) as libc:
            t0 = time.monotonic()
            assert tables.lookup(libc, "") is None          # not ready: frame pointers
            assert tables.lookup(libc, "") is None          # queued once
            took = time.monotonic() - t0
            assert tables.pending == 1 and took < 0.5      # no build: it is queued
            wait_ready(tables)
            pid = tables.builder_pid
            assert pid is not None and pid != os.getpid() and nice_of(pid) == 19
            table = tables.lookup(libc, "")
        assert table is not None and isinstance(table.starts, memoryview)   # used in place
        reference = build_table(LIBC)
        assert list(table.starts) == list(reference.starts)
        assert [table.rules[i] for i in table.indices] == \
            [reference.rules[i] for i in reference.indices]
        assert tables.built == 1 and tables.generation >= 1 and 0 < tables.build_cpu_s < 5
        assert len(list(tmp_path.glob("*.unw"))) == 1
    finally:
        tables.close()


def test_the_builders_worker_is_the_agents_own_child_while_it_runs(tmp_path: Path) -> None:
    """The child forks a worker per table: it is announced before it works
    (so the ebpf receiver excludes it, procinfo.agent) and ended after."""
    events: list[tuple[int, bool, str]] = []

    def seen(pid: int, started: bool) -> None:
        events.append((pid, started, process_parent(pid) if started else ""))

    stop = agent.on_children(seen)
    tables = TableCache(cache_dir=tmp_path, inline_cfi_bytes=0)
    try:
        with host(LIBC) as libc, host("/usr/lib/x86_64-linux-gnu/libm.so.6") as libm:
            assert tables.lookup(libc, "") is None and tables.lookup(libm, "") is None
            wait_ready(tables)
        builder = tables.builder_pid
    finally:
        stop()
        tables.close()
    # (other children of this process, still running from earlier tests, are
    # replayed to a new listener: only the builder's are its workers)
    workers = [pid for pid, started, parent in events if started and parent == str(builder)]
    assert len(workers) == 2, events
    for pid in workers:                     # each ended, after it started
        assert events.index((pid, False, "")) > events.index((pid, True, str(builder)))
    assert not set(agent.own_children()) & set(workers)


def process_parent(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
    except FileNotFoundError:
        return ""


def nop_cfi(count: int) -> bytes:
    """A ``.debug_frame`` of one CIE and one FDE of ``count`` ``DW_CFA_nop``:
    seconds of decoding for a few MB."""
    def pad(body: bytes) -> bytes:
        return body + b"\0" * (-(len(body) + 4) % 8)
    cie = pad(struct.pack("<IB", 0xFFFFFFFF, 1) + b"\0" + bytes([1, 0x78, 16])
              + bytes([0x0C, 7, 8, 0x90, 1]))
    fde = pad(struct.pack("<IQQ", 0, 0x1000, 0x100) + b"\0" * count)
    return struct.pack("<I", len(cie)) + cie + struct.pack("<I", len(fde)) + fde


def hostile_lib(tmp_path: Path, name: str, cfi: bytes) -> Path:
    base = native.compile_c("int f(void) { return 1; }\n", tmp_path / f"{name}.base.so",
                            flags=("-O1", "-shared", "-fPIC"))
    subprocess.run(["objcopy", "--remove-section", ".eh_frame", "--remove-section",
                    ".eh_frame_hdr", str(base)], check=True, capture_output=True)
    return add_section(base, ".debug_frame", cfi, tmp_path / f"{name}.so")


@pytest.mark.parametrize("attack", ["cpu_time", "memory"])
def test_hostile_cfi_costs_its_budget_in_the_child_and_is_counted(
        tmp_path: Path, attack: str) -> None:
    """40 MB of nops (several seconds of decoding) stops at the 1 s RLIMIT_CPU
    of its worker; 400 000 nested remember_state is refused as a memory bomb.
    Either way: an empty table, counted, not built again; the agent never
    spent the CPU."""
    cfi = nop_cfi(40 << 20) if attack == "cpu_time" else remember_state_cfi(400_000, 0x1000,
                                                                            0x100)
    lib = hostile_lib(tmp_path, attack, cfi)
    tables = TableCache(cache_dir=tmp_path / "cache", limits=ParseLimits(object_cpu_s=1.0),
                        inline_cfi_bytes=0)
    try:
        cpu0 = time.process_time()
        with host(lib) as f:
            assert tables.lookup(f, "") is None
            wait_ready(tables)
            table = tables.lookup(f, "")
            assert table is not None and not table.has_cfi
            assert tables.lookup(f, "") is table and tables.pending == 0
        agent_cpu = time.process_time() - cpu0
        print(f"{attack}: worker {tables.build_cpu_s:.2f} s CPU, "
              f"peak {tables.build_peak_rss >> 20} MiB; agent {agent_cpu:.2f} s")
        assert tables.rejected == {attack: 1}
        assert tables.build_cpu_s < 2.5 and agent_cpu < 1.0
        assert list((tmp_path / "cache").glob("*.unw")) == []
    finally:
        tables.close()


def test_disk_cap_deletes_the_least_recently_used_tables(tmp_path: Path) -> None:
    sizes = {}
    for lib in LIBS:
        TableCache(cache_dir=tmp_path / "probe").get(lib, "")
    for f in (tmp_path / "probe").glob("*.unw"):
        sizes[f.name] = f.stat().st_size
    libc_size = max(sizes.values())
    cap = sum(sizes.values()) - 1                        # one table too many
    tables = TableCache(cache_dir=tmp_path / "capped", max_disk_bytes=cap)
    for i, lib in enumerate(LIBS):
        tables.get(lib, "")
        for f in (tmp_path / "capped").glob("*.unw"):   # make the order explicit
            if f.stat().st_mtime_ns > time.time_ns() - 10**9:
                os.utime(f, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    kept = list((tmp_path / "capped").glob("*.unw"))
    total = sum(f.stat().st_size for f in kept)
    assert tables.evicted >= 1 and total <= cap
    assert libc_size not in [f.stat().st_size for f in kept]     # libc: least recently used
    # a table in memory stays usable after its file was evicted (mapped inode)
    again = tables.get(LIBC, "")
    assert again.has_cfi and len(again) > 10_000


def test_child_imports_the_agents_telegen_not_one_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -c`` puts the working directory first on sys.path: a
    ``telegen`` package planted there must not be what the child runs."""
    planted = tmp_path / "cwd" / "telegen"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise SystemExit('planted telegen imported')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    tables = TableCache(cache_dir=tmp_path / "cache", inline_cfi_bytes=0)
    try:
        with host(LIBC) as libc:
            assert tables.lookup(libc, "") is None
            assert tables.wait_ready(60)
            table = tables.lookup(libc, "")
        assert table is not None and table.has_cfi and tables.failed == 0
    finally:
        tables.close()


def test_inline_builds_stop_at_their_share_of_a_window(tmp_path: Path) -> None:
    """A host seen for the first time has hundreds of small binaries: past
    INLINE_S_PER_WINDOW of inline builds in one window, the rest are queued."""
    tables = TableCache(cache_dir=tmp_path)
    try:
        tables.inline_s_per_window = 0.0                    # this window's share is spent
        with host(LIBC) as libc:
            assert tables.lookup(libc, "") is None and tables.built_inline == 0
            assert tables.wait_ready(60)
            assert tables.lookup(libc, "") is not None and tables.built == 1
        tables.inline_s_per_window = 0.5
        tables.new_window()
        with host(LIBS[1]) as libm:
            assert tables.lookup(libm, "") is not None and tables.built_inline == 1
    finally:
        tables.close()


def process_state(pid: int) -> str:
    """``R``/``S``/… from /proc/PID/stat; ``Z`` for a zombie; "" when reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return ""


def test_an_idle_builder_child_is_ended_and_reaped_then_started_again(tmp_path: Path) -> None:
    """Steady state costs no process: after ``builder_idle_s`` without a
    request the cache's thread ends the child and reaps it (no zombie left
    until the next table); the next table starts a new one."""
    tables = TableCache(cache_dir=tmp_path, inline_cfi_bytes=0, builder_idle_s=0.6)
    try:
        with host(LIBC) as libc:
            assert tables.lookup(libc, "") is None
            wait_ready(tables)
        first = tables.builder_pid
        assert first is not None and process_state(first) not in ("", "Z")
        deadline = time.monotonic() + 10
        while process_state(first) != "" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(first) == "", "the idle child is still there (or a zombie)"
        assert tables.builder_pid is None
        with host("/usr/lib/x86_64-linux-gnu/libm.so.6") as libm:
            assert tables.lookup(libm, "") is None
            wait_ready(tables)
            table = tables.lookup(libm, "")
        assert table is not None and table.has_cfi
        assert tables.builder_pid not in (None, first)
    finally:
        tables.close()


def resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                inside = len(head) > 5 and head[5] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def test_a_mapped_table_holds_only_the_pages_its_lookups_touch(tmp_path: Path) -> None:
    """libjvm's table (191k rows, ~2.3 MB) read from the disk cache: loading
    it checks every rule index, yet leaves nothing resident; 20 look-ups in
    one region map a few pages — not the 2 MB folios a file just written sits
    in (ext4, kernel 6.18: the builder drops it from the page cache); ``trim``
    gives them back, and the answers stay the same."""
    libjvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"   # setup-host
    builder = TableCache(cache_dir=tmp_path, inline_cfi_bytes=0)
    try:
        with host(libjvm) as jvm:
            assert builder.lookup(jvm, "") is None
            wait_ready(builder)
    finally:
        builder.close()
    [path] = tmp_path.glob("*.unw")
    assert path.stat().st_size > 2 << 20
    tables = TableCache(cache_dir=tmp_path)
    try:
        with host(libjvm) as jvm:
            table = tables.get(jvm, "")
        assert isinstance(table.starts, memoryview) and len(table) > 100_000
        assert resident_kb(path) <= 64, "the load left the checked pages resident"
        first = len(table) // 3
        near = [table.starts[i] + 1 for i in range(first, first + 2000, 100)]
        near_rules = [table.rule(pc) for pc in near]
        assert 0 < resident_kb(path) < 1024, f"{resident_kb(path)} kB for 20 look-ups"
        pcs = [table.starts[i] + 1 for i in range(0, len(table), len(table) // 200)]
        rules = [table.rule(pc) for pc in pcs]
        assert tables.trim() == 1 and resident_kb(path) == 0
        table._memo.clear()                       # look the pcs up in the file again
        assert [table.rule(pc) for pc in pcs] == rules
        reference = build_table(libjvm)
        assert rules == [reference.rule(pc) for pc in pcs]
        assert near_rules == [reference.rule(pc) for pc in near]
    finally:
        tables.close()
