"""What the agent learns from a Go binary before its BPF reads labels (#26):
version from the build info, g.labels' offset from runtime_setProfLabel's
code, the TLS slot; on the Go binaries this machine has and on hostile bytes."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from telegen.procinfo.elfheaders import read_headers
from telegen.receivers.ebpf.golabels import (
    BUILDINFO_MAGIC,
    LABELS_MAP,
    go_version,
    labels_offset,
    read_facts,
)
from telegen.symbols.gopclntab import GoFunctions

DOCKER = Path("/usr/local/bin/docker")        # go1.24.3, full DWARF (MACHINE.md, #26)


def _facts(path: Path):   # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_facts(fd)
    finally:
        os.close(fd)


def test_docker_is_go_1_24_without_labels() -> None:
    if not DOCKER.exists():
        pytest.skip("no /usr/local/bin/docker on this machine")
    facts = _facts(DOCKER)
    # docker never calls pprof.Do: no runtime_setProfLabel, nothing to read
    assert facts is not None and facts.version == (1, 24) and facts.labels_offset == 0
    assert facts.labels_kind == 0
    # m.vdsoSP / m.vdsoPC from nanotime1's code = runtime.m in docker's DWARF
    # (read with pyelftools once, 15 s: too slow for a unit test)
    assert (facts.vdso_sp, facts.vdso_pc) == (880, 888)


def test_a_stripped_copy_keeps_version_and_offsets(tmp_path: Path) -> None:
    if not DOCKER.exists() or not shutil.which("objcopy"):
        pytest.skip("needs /usr/local/bin/docker and objcopy")
    stripped = tmp_path / "docker"
    subprocess.run(["objcopy", "--strip-all", str(DOCKER), str(stripped)], check=True,
                   timeout=120)
    assert _facts(stripped) == _facts(DOCKER)


def test_build_info_version_forms(tmp_path: Path) -> None:
    """Go 1.18+ inline build info: magic, ptr size, flags (2: inline), then the
    version as a length-prefixed string at +32; pre-release suffixes ignored."""
    def version_of(text: bytes, flags: int = 2) -> tuple[int, int] | None:
        blob = BUILDINFO_MAGIC + bytes([8, flags]) + bytes(16) + bytes([len(text)]) + text
        path = tmp_path / "bi"
        path.write_bytes(_elf_with_section(".go.buildinfo", blob))
        fd = os.open(path, os.O_RDONLY)
        try:
            return go_version(fd, read_headers(fd))
        finally:
            os.close(fd)
    assert version_of(b"go1.19.8") == (1, 19)
    assert version_of(b"go1.25-20250209-RC00 cl/724970549") == (1, 25)
    assert version_of(b"devel +abc") is None
    assert version_of(b"go1.16.3", flags=0) is None          # pointer form (< 1.18): not read


def test_labels_offset_is_found_in_a_real_store(tmp_path: Path) -> None:
    """The code of a Go 1.19 runtime_setProfLabel: MOVQ AX, 0x168(R14) -> 360."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no go")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.go").write_text(
        'package main\nimport ("context"; "runtime/pprof")\n'
        'func main() { pprof.Do(context.Background(), pprof.Labels("k", "v"), '
        'func(context.Context) {}) }\n')
    (src / "go.mod").write_text("module l\n\ngo 1.19\n")
    env = dict(os.environ, GOCACHE=str(tmp_path / "c"), CGO_ENABLED="0", GOTOOLCHAIN="local")
    subprocess.run([go, "build", "-ldflags=-s -w", "-o", str(tmp_path / "l"), "."], cwd=src,
                   env=env, check=True, timeout=300)
    facts = _facts(tmp_path / "l")
    assert facts is not None and facts.labels_offset == 360 and facts.labels_kind == LABELS_MAP
    funcs = GoFunctions.open_path(str(tmp_path / "l"))
    assert funcs is not None
    fd = os.open(tmp_path / "l", os.O_RDONLY)
    try:
        assert labels_offset(fd, funcs) == 360
    finally:
        os.close(fd)


def test_non_go_and_garbage_files_have_no_facts(tmp_path: Path) -> None:
    assert _facts(Path("/bin/true")) is None
    junk = tmp_path / "junk"
    junk.write_bytes(_elf_with_section(".go.buildinfo", BUILDINFO_MAGIC + b"\xff" * 200))
    assert _facts(junk) is None


def _elf_with_section(name: str, data: bytes) -> bytes:
    """A minimal 64-bit little-endian ELF with one PROGBITS section ``name``."""
    shstr = b"\0" + name.encode() + b"\0.shstrtab\0"
    data_off = 64
    shstr_off = data_off + len(data)
    sh_off = (shstr_off + len(shstr) + 7) & ~7
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)
    null = bytes(64)
    sec = struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, data_off, len(data), 0, 0, 1, 0)
    strtab = struct.pack("<IIQQQQIIQQ", 1 + len(name) + 1, 3, 0, 0, shstr_off, len(shstr),
                         0, 0, 1, 0)
    body = ehdr + data + shstr
    return body + bytes(sh_off - len(body)) + null + sec + strtab
