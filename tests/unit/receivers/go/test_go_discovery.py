"""Discovery pieces against the real /proc: Go ELF recognition, listening
sockets of a process, start times, and a scan that must only ask Go processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.receivers.go.discovery import (
    Discovery,
    Listener,
    is_go_elf,
    listening_ports,
    parse_listeners,
    process_start_ns,
)
from telegen.testing import require
from telegen.testing.goprog import build_go_program

GOSERVICE = Path(__file__).resolve().parents[3] / "testdata" / "go" / "goservice"
needs_go = pytest.mark.usefixtures("go_command")


@pytest.fixture
def go_command() -> None:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")

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


@pytest.fixture(scope="module")
def go_binary() -> Path:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")
    return build_go_program(GOSERVICE)


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


def test_go_elf_recognised_by_buildinfo_or_note(go_binary: Path, tmp_path: Path) -> None:
    assert is_go_elf(str(go_binary))
    # without section headers only the PT_NOTE segment's Go build-id note is left
    data = bytearray(go_binary.read_bytes())
    data[0x28:0x30] = bytes(8)           # e_shoff
    data[0x3C:0x40] = bytes(4)           # e_shnum, e_shstrndx
    stripped = tmp_path / "noshdr"
    stripped.write_bytes(bytes(data))
    assert is_go_elf(str(stripped))
    assert not is_go_elf(os.path.realpath(sys.executable))
    assert not is_go_elf(shutil.which("sh") or "/bin/sh")
    (tmp_path / "text").write_text("not an ELF")
    assert not is_go_elf(str(tmp_path / "text"))
    assert not is_go_elf(str(tmp_path / "missing"))


def test_process_start_time() -> None:
    before = time.time_ns()
    child = subprocess.Popen(["sleep", "5"])
    try:
        start = process_start_ns(child.pid)
        # clock ticks (10ms) and btime (whole seconds) limit the precision
        assert before - 1_100_000_000 <= start <= time.time_ns() + 1_100_000_000
    finally:
        child.kill()
        child.wait()
    assert process_start_ns(2**22 + 12345) == 0


@pytest.fixture
def listeners(go_binary: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A Go service and a Python server, both listening on loopback."""
    go = subprocess.Popen([str(go_binary), "0", "3", "2"], stdout=subprocess.PIPE, text=True)
    py = subprocess.Popen([sys.executable, "-c",
                           "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\n"
                           "s.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)"],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert go.stdout is not None and py.stdout is not None
        go_port = int(go.stdout.readline().split()[1])
        py_port = int(py.stdout.readline())
        yield go, go_port, py_port
    finally:
        for p in (go, py):
            p.kill()
            p.wait()


@needs_go
def test_scan_asks_only_go_processes(listeners: tuple[subprocess.Popen[str], int, int]) -> None:
    go, go_port, py_port = listeners
    asked: list[str] = []

    def probe(url: str) -> bool:
        asked.append(url)
        return url == f"http://127.0.0.1:{go_port}/debug/pprof"

    d = Discovery(probe)
    try:
        targets = d.scan()
        mine = [t for t in targets if t.pid == go.pid]
        assert [t.url for t in mine] == [f"http://127.0.0.1:{go_port}/debug/pprof"]
        assert mine[0].start_ns > 0 and mine[0].process_name.startswith("goservice")
        assert not any(f":{py_port}/" in u for u in asked)
        # answers are remembered: a second scan asks nothing new about this process
        n = len(asked)
        assert go.pid in {t.pid for t in d.scan()}
        assert not any(f":{go_port}/" in u for u in asked[n:])
        go.kill()
        go.wait()
        assert go.pid not in {t.pid for t in d.scan()}
    finally:
        d.close()


def test_go_check_of_a_hostile_executable_is_bounded(go_binary: Path, tmp_path: Path) -> None:
    """The executable is the tenant's: a FIFO does not block, and section
    tables claiming 65 535 entries past the end of the file are refused by
    the struct-level header check instead of being walked."""
    import time

    os.mkfifo(tmp_path / "fifo")
    data = bytearray(go_binary.read_bytes())
    data[0x3C:0x3E] = (0xFFFF).to_bytes(2, "little")    # e_shnum
    (tmp_path / "many").write_bytes(bytes(data))
    t0 = time.monotonic()
    assert not is_go_elf(str(tmp_path / "fifo"))
    assert not is_go_elf(str(tmp_path / "many"))
    assert time.monotonic() - t0 < 1.0
