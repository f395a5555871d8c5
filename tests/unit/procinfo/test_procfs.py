"""procinfo's readers of /proc against the real /proc (and a fake tree where
the real one cannot show a case): commands, start times, sockets,
namespaces, mappings, the agent's own process and the kernel's files."""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from telegen.procinfo import (
    alive,
    executable_files,
    fd_path,
    list_pids,
    process_root,
    read_command,
    read_maps,
    start_ticks,
)
from telegen.procinfo.agent import (
    address_space_bytes,
    fd_info,
    read_own_memory,
    rss_bytes,
    vdso_span,
)
from telegen.procinfo.kernel import mount_points, perf_event_paranoid
from telegen.procinfo.procfs import exe_stat, namespace_inode, open_exe
from telegen.procinfo.sockets import Listener, listening_ports, parse_listeners
from telegen.procinfo.times import boot_time_ns, parse_start_ticks, start_time_ns

GONE = 2**22 + 12345        # above pid_max: never a process

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1
   2: 0500000A:0051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1
   3: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4444 1
"""
_REST = "0A 00000000:00000000 00:00000000 00000000     0        0"
TCP6 = "\n".join([
    "  sl  local_address                         remote_address                        st ...",
    f"   0: 00000000000000000000000001000000:1F91 {'0' * 32}:0000 {_REST} 5555 1",
    f"   1: 00000000000000000000000000000000:1F92 {'0' * 32}:0000 {_REST} 6666 1",
    f"   2: 0000000000000000FFFF00000100007F:1F93 {'0' * 32}:0000 {_REST} 7777 1",
]) + "\n"




def test_parse_listen_entries_only() -> None:
    got = parse_listeners(TCP) + parse_listeners(TCP6)
    assert got == [Listener("127.0.0.1", 8080, 1111), Listener("0.0.0.0", 80, 2222),
                   Listener("10.0.0.5", 81, 3333), Listener("::1", 8081, 5555),
                   Listener("::", 8082, 6666), Listener("::ffff:7f00:1", 8083, 7777)]
    assert [lst.scrape_host for lst in got] == ["127.0.0.1", "127.0.0.1", None, "[::1]",
                                                "127.0.0.1", "127.0.0.1"]


def test_listening_ports_of_this_process() -> None:
    with socket.socket() as a, socket.socket(socket.AF_INET6) as b, socket.socket() as c:
        a.bind(("127.0.0.1", 0))
        a.listen()
        b.bind(("::1", 0))
        b.listen()
        c.bind(("127.0.0.1", 0))        # bound, not listening: not a listener
        ports = {(lst.address, lst.port) for lst in listening_ports(os.getpid())}
        assert ("127.0.0.1", a.getsockname()[1]) in ports
        assert ("::1", b.getsockname()[1]) in ports
        assert all(p != c.getsockname()[1] for _, p in ports)


def test_start_time_of_a_child() -> None:
    before = time.time_ns()
    child = subprocess.Popen(["sleep", "5"])
    try:
        start = start_time_ns(child.pid)
        # clock ticks (10ms) and btime (whole seconds) limit the precision
        assert before - 1_100_000_000 <= start <= time.time_ns() + 1_100_000_000
    finally:
        child.kill()
        child.wait()
    assert start_time_ns(2**22 + 12345) == 0


def test_start_ticks_counted_after_the_last_parenthesis() -> None:
    """comm is the process's to choose: spaces and ")" in it must not shift
    the fields (both former parsers split after the last ")")."""
    fields = " ".join(str(n) for n in range(3, 30))
    assert parse_start_ticks(f"42 (a) b) c) {fields}") == 22
    assert parse_start_ticks("42 (short) S 1") is None
    assert parse_start_ticks(f"42 (x) {fields.replace('22', 'zz')}") is None
    assert start_ticks(GONE) is None and start_time_ns(GONE) == 0
    # the same process, the same start; a child started later has a later one
    me = start_ticks(os.getpid())
    assert me is not None and me == start_ticks(os.getpid())
    child = subprocess.Popen(["sleep", "5"])
    try:
        later = start_ticks(child.pid)
        assert later is not None and later >= me
    finally:
        child.kill()
        child.wait()
    assert boot_time_ns() > 0


def test_command_of_a_live_child_and_of_a_gone_one(tmp_path: Path) -> None:
    sleep = Path(tmp_path / "my sleep")
    sleep.write_bytes(Path("/bin/sleep").read_bytes())
    sleep.chmod(0o755)
    child = subprocess.Popen([str(sleep), "30"])
    try:
        deadline = time.monotonic() + 5
        while (c := read_command(child.pid)) is not None and c.comm != "my sleep" \
                and time.monotonic() < deadline:
            time.sleep(0.01)               # until the exec (comm is set last)
        assert c is not None
        assert (c.pid, c.comm, c.exe, c.cmdline) == (child.pid, "my sleep", str(sleep),
                                                     (str(sleep), "30"))
        sleep.unlink()                     # the file is gone: " (deleted)" is not kept
        c = read_command(child.pid)
        assert c is not None and c.exe == str(sleep)
        assert alive(child.pid) and child.pid in list_pids()
        assert executable_files(child.pid)[0] == str(sleep)
    finally:
        child.kill()
        child.wait()
    assert read_command(child.pid) is None and not alive(child.pid)
    assert read_maps(child.pid) is None


def test_executable_of_a_process_through_its_magic_link() -> None:
    fd = open_exe(os.getpid())
    try:
        assert os.fstat(fd).st_ino == os.stat(os.path.realpath(sys.executable)).st_ino
    finally:
        os.close(fd)
    st = exe_stat(os.getpid())
    assert st is not None and st.st_ino == os.stat(os.path.realpath(sys.executable)).st_ino
    assert exe_stat(GONE) is None


def test_paths_take_pids_only() -> None:
    """A pid is an int (or "self"): a string from elsewhere cannot walk the tree."""
    assert process_root(7) == "/proc/7/root" and process_root("12") == "/proc/12/root"
    for bad in ("../etc", "1/../../etc", ""):
        try:
            process_root(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted as a pid")
    assert fd_path(3) == "/proc/self/fd/3"


def test_namespaces_compare_by_inode() -> None:
    assert namespace_inode("self", "net") == namespace_inode(os.getpid(), "net") > 0
    assert namespace_inode(GONE, "net") == -1


def test_agent_facts() -> None:
    span = vdso_span()
    assert span is not None and 0 < span[1] - span[0] <= 1 << 20
    image = read_own_memory(span[0], span[1] - span[0])
    assert image[:4] == b"\x7fELF"
    before, space = rss_bytes(), address_space_bytes()
    # a new mapping, every page written (malloc may reuse address space an
    # earlier test in this process freed: VmSize would not move)
    block = mmap.mmap(-1, 64 << 20)
    for at in range(0, 64 << 20, mmap.PAGESIZE):
        block[at] = 1
    assert rss_bytes() - before >= 60 << 20
    assert address_space_bytes() - space >= 60 << 20
    status = Path("/proc/self/status").read_text()   # the kernel's own words for both
    vm_size = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmSize:"))
    assert abs(address_space_bytes() - vm_size * 1024) < 8 << 20
    block.close()
    r, w = os.pipe()
    try:
        assert fd_info(r, "flags") is not None and fd_info(r, "prog_id") is None
    finally:
        os.close(r)
        os.close(w)


def test_kernel_facts(tmp_path: Path) -> None:
    assert "/proc" in mount_points() and "/" in mount_points()
    assert perf_event_paranoid() is not None
    (tmp_path / "paranoid").write_text("2\n")
    assert perf_event_paranoid(str(tmp_path / "paranoid")) == 2
    (tmp_path / "paranoid").write_text("x\n")
    assert perf_event_paranoid(str(tmp_path / "paranoid")) is None
    assert perf_event_paranoid(str(tmp_path / "missing")) is None
