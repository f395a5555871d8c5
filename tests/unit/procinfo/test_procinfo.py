from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from telegen.procinfo import (
    BuildIdCache,
    ProcessCache,
    container_id_from_cgroup,
    parse_maps,
    read_build_id,
    read_process,
)
from telegen.testing import workloads

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0a01000-55d0c0a05000 r-xp 00001000 08:01 1234 /usr/bin/app
7f1a2b000000-7f1a2b021000 rw-p 00000000 00:00 0
7f1a2c000000-7f1a2c100000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2d000000-7f1a2d001000 r-xp 00000000 00:01 77 /tmp/jit (deleted)
7ffd5e7f0000-7ffd5e7f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
"""


def test_parse_maps_offsets_paths_and_flags() -> None:
    entries = parse_maps(MAPS)
    assert len(entries) == 6
    text = entries[1]
    assert (text.start, text.end, text.offset, text.path) == (
        0x55d0c0a01000, 0x55d0c0a05000, 0x1000, "/usr/bin/app")
    assert text.executable and text.is_file
    assert not entries[2].executable and entries[2].path == ""
    assert entries[4].deleted
    assert entries[5].path == "[vdso]" and not entries[5].is_file


@pytest.mark.parametrize("cgroup, expected", [
    ("0::/system.slice/docker-" + "a" * 64 + ".scope\n", "a" * 64),
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
     "cri-containerd-" + "b" * 64 + ".scope\n", "b" * 64),
    ("12:pids:/docker/" + "c" * 64 + "\n", "c" * 64),
    ("0::/machine.slice/libpod-" + "d" * 64 + ".scope/container\n", "d" * 64),
    ("0::/user.slice/user-0.slice/session-1.scope\n", ""),
    ("0::/\n", ""),
])
def test_container_id_from_cgroup(cgroup: str, expected: str) -> None:
    assert container_id_from_cgroup(cgroup) == expected


@pytest.fixture(scope="module")
def brief(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return workloads.build("tg_brief", tmp_path_factory.mktemp("bin"),
                           cflags=(*workloads.CFLAGS, "-Wl,--build-id=sha1"))


def test_build_id_matches_readelf(brief: Path) -> None:
    out = subprocess.run(["readelf", "-n", str(brief)], capture_output=True, text=True).stdout
    want = out.split("Build ID:")[1].split()[0]
    assert read_build_id(str(brief)) == want
    cache = BuildIdCache(4)
    assert cache.get(str(brief)) == want and cache.get(str(brief)) == want
    assert len(cache) == 1
    assert read_build_id("/nonexistent") == ""


def test_read_process_of_a_live_child(brief: Path) -> None:
    child = subprocess.Popen([str(brief), "3000"])
    try:
        deadline = time.monotonic() + 5
        info = read_process(child.pid)
        while info is not None and (info.exe != str(brief) or not info.cmdline or not any(
                m.file == str(brief) for m in info.mappings)) \
                and time.monotonic() < deadline:
            time.sleep(0.01)       # fork done, exec not yet
            info = read_process(child.pid)
        assert info is not None
        assert info.comm == "tg_brief"
        assert info.exe == str(brief)
        assert info.cmdline == (str(brief), "3000")
        own = [m for m in info.mappings if m.file == str(brief)]
        assert own and own[0].build_id == read_build_id(str(brief))
        assert own[0].offset > 0      # the text segment starts past the ELF header
        m = own[0]
        assert info.find_mapping(m.start) is m
        assert info.find_mapping(m.limit - 1) is m
        assert info.find_mapping(m.limit) is not m
    finally:
        child.kill()
        child.wait()
    assert read_process(child.pid) is None


def test_cache_keeps_exited_process_for_one_more_window(brief: Path) -> None:
    cache = ProcessCache(maxsize=4)
    child = subprocess.Popen([str(brief), "3000"])
    time.sleep(0.2)
    info = cache.capture(child.pid)
    child.kill()
    child.wait()
    assert info is not None and cache.get(child.pid) is info   # still there after exit
    cache.mark_exited(child.pid)
    assert cache.release_exited() == 0 and child.pid in cache  # window with its samples
    cache.release_exited()
    assert child.pid not in cache


def test_cache_is_bounded() -> None:
    cache = ProcessCache(maxsize=2)
    pid = os.getpid()
    cache.capture(pid)
    cache.capture(1)
    cache.capture(os.getppid())
    assert len(cache) == 2


def test_capture_reads_each_mapped_files_build_id_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache a ProcessCache makes is the one it uses: an empty cache is falsy,
    and ``build_ids or BuildIdCache()`` read every file's headers at every capture."""
    from telegen.procinfo import buildid
    from telegen.procinfo.process import ProcessCache

    reads: list[int] = []
    real = buildid.read_build_id_fd
    monkeypatch.setattr(buildid, "read_build_id_fd", lambda fd: reads.append(fd) or real(fd))
    child = subprocess.Popen(["sleep", "30"])
    try:
        cache = ProcessCache()
        for _ in range(20):
            while cache.capture(child.pid) is None or not cache.get(child.pid).mappings:
                pass
        files = {m.file for m in cache.get(child.pid).mappings if m.file.startswith("/")}
    finally:
        child.kill()
        child.wait()
    assert len(files) >= 2 and len(reads) == len(files)     # once per file, not 20 times
