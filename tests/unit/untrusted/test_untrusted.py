"""The trust boundary's primitives, each against the attack it exists for:
symlinks planted by another uid, escapes with ``..`` and absolute links,
FIFOs, sparse huge files, gzip bombs and double gzip. Both ways of opening
are tested: openat2 and the per-component fallback used without it."""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.telemetry import Registry
from telegen.untrusted import (
    MiB,
    Refusals,
    Refused,
    gunzip,
    maybe_gunzip,
    open_in_root,
    read_fd,
    read_in_root,
    read_stream,
)
from telegen.untrusted import fs as untrusted_fs


@pytest.fixture(params=["openat2", "walk"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with openat2, then again with the fallback walk."""
    if request.param == "walk":
        monkeypatch.setattr(untrusted_fs, "_have_openat2", False)
    else:
        read_in_root("/", "/etc/hostname", 4096)   # probes openat2 on this kernel
        assert untrusted_fs._have_openat2 is True, "openat2 must exist on this 6.x kernel"
    return str(request.param)


@pytest.fixture()
def rootfs() -> Iterator[Path]:
    """A little target filesystem with a world-writable /tmp (so ``nobody``
    can plant things in it), and a root-only secret outside it on the
    "host". Not under pytest's tmp_path: that is 0700, closed to nobody."""
    tmp_path = Path(tempfile.mkdtemp(prefix="telegen-untrusted-"))
    os.chmod(tmp_path, 0o755)
    yield from _fill(tmp_path)
    shutil.rmtree(tmp_path)


def _fill(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "host-secret").write_text("root only")
    os.chmod(tmp_path / "host-secret", 0o600)
    root = tmp_path / "target"
    (root / "tmp").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("inside\n")
    os.chmod(root / "tmp", 0o1777)
    yield root


def _as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                   check=True, timeout=30)


def test_symlinks_planted_by_another_uid_are_refused(rootfs: Path, opener: str) -> None:
    secret = rootfs.parent / "host-secret"
    # planted as nobody, as a tenant would: absolute, relative-climbing, and a dir link
    _as_nobody("ln", "-s", str(secret), str(rootfs / "tmp" / "abs"))
    _as_nobody("ln", "-s", "../../host-secret", str(rootfs / "tmp" / "rel"))
    _as_nobody("ln", "-s", str(rootfs.parent), str(rootfs / "tmp" / "dir"))
    for name in ("tmp/abs", "tmp/rel", "tmp/dir/host-secret"):
        with pytest.raises(Refused) as info:
            read_in_root(str(rootfs), name, MiB)
        assert info.value.reason == "symlink", name
    assert secret.read_text() == "root only"


def test_dotdot_never_leaves_the_root(rootfs: Path, opener: str) -> None:
    with pytest.raises((Refused, FileNotFoundError)):
        read_in_root(str(rootfs), "../host-secret", MiB)
    with pytest.raises((Refused, FileNotFoundError)):
        read_in_root(str(rootfs), "tmp/../../host-secret", MiB)


def test_symlinks_when_allowed_stay_inside_the_root(rootfs: Path) -> None:
    """Debug-file trees are symlinks; followed, an absolute link resolves
    against the target's root, never the host's (openat2 only)."""
    os.symlink("/etc/os-release", rootfs / "tmp" / "abs")
    os.symlink("../../../../../etc/os-release", rootfs / "tmp" / "climb")
    assert read_in_root(str(rootfs), "tmp/abs", MiB, symlinks=True) == b"inside\n"
    assert read_in_root(str(rootfs), "tmp/climb", MiB, symlinks=True) == b"inside\n"


def test_fifo_and_devices_refused_without_blocking(rootfs: Path, opener: str) -> None:
    _as_nobody("mkfifo", str(rootfs / "tmp" / "dump.jfr"))
    t0 = time.monotonic()
    with pytest.raises(Refused) as info:
        read_in_root(str(rootfs), "tmp/dump.jfr", MiB)
    assert info.value.reason == "not_regular"
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(Refused):
        read_in_root("/", "/dev/zero", MiB)


def test_owner_is_checked(rootfs: Path, opener: str) -> None:
    _as_nobody("sh", "-c", f"echo forged > {rootfs}/tmp/perf-1.map")
    with pytest.raises(Refused) as info:
        read_in_root(str(rootfs), "tmp/perf-1.map", MiB, owner=0)
    assert info.value.reason == "wrong_owner"
    nobody = (rootfs / "tmp" / "perf-1.map").stat().st_uid
    assert read_in_root(str(rootfs), "tmp/perf-1.map", MiB, owner=nobody) == b"forged\n"


def test_sparse_huge_file_refused_before_reading(rootfs: Path, opener: str) -> None:
    huge = rootfs / "tmp" / "big"
    with open(huge, "wb") as f:
        f.truncate(100 << 30)   # 100 GiB, sparse
    t0 = time.monotonic()
    with pytest.raises(Refused) as info:
        read_in_root(str(rootfs), "tmp/big", 16 * MiB)
    assert info.value.reason == "too_large"
    assert time.monotonic() - t0 < 0.5


def test_read_fd_refuses_a_stream_past_its_limit() -> None:
    r, w = os.pipe()
    os.write(w, b"x" * 5000)
    os.close(w)
    try:
        with pytest.raises(Refused):
            read_fd(r, 4096)
    finally:
        os.close(r)


def test_read_stream_checks_the_declared_length_before_reading() -> None:
    class Exploding(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise AssertionError("read before the length check")

    with pytest.raises(Refused) as info:
        read_stream(Exploding(), limit=MiB, length=2 * MiB)
    assert info.value.reason == "too_large"
    with pytest.raises(Refused) as info:
        read_stream(io.BytesIO(b"abc"), limit=MiB, length=10)
    assert info.value.reason == "truncated"
    assert read_stream(io.BytesIO(b"abc"), limit=3) == b"abc"
    with pytest.raises(Refused):
        read_stream(io.BytesIO(b"abcd"), limit=3)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_gzip_bomb_refused_with_bounded_memory() -> None:
    comp = __import__("zlib").compressobj(9, wbits=31)
    zeros = b"\0" * MiB
    bomb = b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush()   # 1 GiB of zeros
    assert len(bomb) < 2 * MiB
    before = _rss_kb()
    with pytest.raises(Refused) as info:
        gunzip(bomb, 64 * MiB)
    assert info.value.reason == "decompressed_too_large"
    assert _rss_kb() - before < 100 * 1024   # the limit plus one chunk, never the whole GiB


def test_nested_gzip_refused_and_multi_member_kept() -> None:
    with pytest.raises(Refused) as info:
        gunzip(gzip.compress(gzip.compress(b"payload" * 100)), MiB)
    assert info.value.reason == "nested_gzip"
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    with pytest.raises(Refused) as info:
        gunzip(gzip.compress(b"x" * 1000)[:-12], MiB)
    assert info.value.reason == "bad_gzip"
    assert maybe_gunzip(b"plain", 10) == b"plain"
    with pytest.raises(Refused):
        maybe_gunzip(b"plain" * 10, 10)


def test_refusals_count_every_one_and_log_the_first(caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry()
    refusals = Refusals(reg.for_component("receiver", "jfr"), logging.getLogger("t"))
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(5):
            refusals.note("jfr_dump", "symlink", "tmp/x\x1b[2J")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\x1b" not in warnings[0].getMessage()
    snap = reg.snapshot()
    assert snap['refused_inputs{component="jfr",kind="receiver",reason="symlink",'
                'source="jfr_dump"}'] == 5
    assert refusals.total() == 5


def test_open_in_root_gives_directories_only_when_asked(rootfs: Path, opener: str) -> None:
    fd = open_in_root(str(rootfs), "/tmp", directory=True)
    try:
        os.mkdir("x", dir_fd=fd)
    finally:
        os.close(fd)
    assert (rootfs / "tmp" / "x").is_dir()
    with pytest.raises(Refused):
        open_in_root(str(rootfs), "/tmp")


def test_a_directory_that_is_a_symlink_is_refused_as_one(rootfs: Path, opener: str) -> None:
    _as_nobody("ln", "-s", str(rootfs.parent), str(rootfs / "tmp" / "dirlink"))
    with pytest.raises(Refused) as info:
        open_in_root(str(rootfs), "/tmp/dirlink", directory=True)
    assert info.value.reason == "symlink"


def test_capped_reader_refuses_big_files_up_front_and_growing_streams() -> None:
    from telegen.untrusted import capped_reader

    with tempfile.NamedTemporaryFile() as f:
        f.truncate(10 << 20)
        with pytest.raises(Refused):
            capped_reader(os.open(f.name, os.O_RDONLY), MiB, f.name)
    r, w = os.pipe()
    os.write(w, b"y" * 5000)
    os.close(w)
    reader = capped_reader(r, 4096, "pipe")
    with pytest.raises(Refused):
        reader.read()
    reader.close()
