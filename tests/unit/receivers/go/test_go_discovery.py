"""Discovery pieces against the real /proc: Go ELF recognition and a scan
that must only ask Go processes (sockets and start times: procinfo's tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.receivers.go.discovery import Discovery, GoBinaryCache, is_go_elf
from telegen.testing import require
from telegen.testing.goprog import build_go_program

GOSERVICE = Path(__file__).resolve().parents[3] / "testdata" / "go" / "goservice"
needs_go = pytest.mark.usefixtures("go_command")


@pytest.fixture
def go_command() -> None:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")

@pytest.fixture(scope="module")
def go_binary() -> Path:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")
    return build_go_program(GOSERVICE)


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
def test_go_processes_told_by_their_executable(
        listeners: tuple[subprocess.Popen[str], int, int]) -> None:
    go, _, _ = listeners
    cache = GoBinaryCache()
    assert cache.is_go(go.pid) and cache.is_go(go.pid)      # the second from the cache
    assert len(cache._cache) == 1
    assert not cache.is_go(os.getpid())                     # CPython
    assert not cache.is_go(2**22 + 12345)                   # no such process


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
