"""The start-up cache's files: written 0600 in a 0700 directory and read back
whole; a tampered, truncated, foreign-owned, loose-mode or symlinked file is
refused (never loaded); the key follows what the compile depends on and not
the agent's pid."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from telegen.bpf import compiled, objcache
from telegen.untrusted import Refused

KEY = "ab" * 32


def _good() -> dict[str, Any]:
    """r0 = 0; if r6 == SELF_TGID goto +0; exit"""
    insns = compiled.INSN.pack(0xB7, 0, 0, 0) + \
        compiled.INSN.pack(0x15, 6, 0, compiled.SELF_TGID_SENTINEL) + \
        compiled.INSN.pack(0x95, 0, 0, 0)
    return {"format": compiled.FORMAT, "license": "GPL", "kern_version": 0, "maps": {},
            "programs": {"tracepoint__sched__sched_switch": {
                "type": 5, "attach": {"kind": "tracepoint", "target": "sched:sched_switch"},
                "maps": [], "self_tgid": [1], "insns": base64.b64encode(insns).decode()}}}


def _written(tmp_path: Path) -> tuple[str, str]:
    directory = str(tmp_path / "bpf")
    return directory, objcache.write(directory, KEY, _good())


def test_round_trip_with_private_modes(tmp_path: Path) -> None:
    directory, path = _written(tmp_path)
    assert objcache.read(directory, KEY) == _good()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert objcache.read(directory, "cd" * 32) is None
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]


def _refused(directory: str) -> str:
    with pytest.raises(Refused) as caught:
        objcache.read(directory, KEY)
    return caught.value.reason


def test_a_tampered_byte_is_refused(tmp_path: Path) -> None:
    directory, path = _written(tmp_path)
    data = bytearray(Path(path).read_bytes())
    data[-40] ^= 0x01                     # inside the instructions' base64 or a name
    Path(path).write_bytes(bytes(data))
    assert _refused(directory) == "digest_mismatch"


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    directory, path = _written(tmp_path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])
    assert _refused(directory) == "digest_mismatch"


def test_a_file_with_a_right_digest_but_a_malformed_object_is_refused(tmp_path: Path) -> None:
    bad: dict[str, Any] = _good()
    bad["programs"]["tracepoint__sched__sched_switch"]["self_tgid"] = [0]
    directory = str(tmp_path / "bpf")
    os.makedirs(directory, mode=0o700)
    import hashlib
    import json
    body = json.dumps(bad).encode()
    path = Path(directory, KEY + objcache.SUFFIX)
    path.write_bytes(objcache.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    path.chmod(0o600)
    assert _refused(directory) == "malformed"


def test_loose_modes_symlinks_and_foreign_owners_are_refused(tmp_path: Path) -> None:
    directory, path = _written(tmp_path)
    os.chmod(path, 0o644)
    assert _refused(directory) == "unsafe_file"
    os.chmod(path, 0o600)
    os.chown(path, 12345, 12345)
    assert _refused(directory) == "unsafe_file"
    os.chown(path, os.geteuid(), os.getegid())
    os.chmod(directory, 0o777)
    assert _refused(directory) == "unsafe_directory"
    os.chmod(directory, 0o700)
    elsewhere = tmp_path / "elsewhere"
    os.rename(path, elsewhere)
    os.symlink(elsewhere, path)
    assert _refused(directory) == "unreadable"          # O_NOFOLLOW: ELOOP
    os.unlink(path)
    os.mkfifo(path, 0o600)
    assert _refused(directory) == "not_regular"          # and it did not block


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    directory, path = _written(tmp_path)
    os.truncate(path, objcache.MAX_FILE_BYTES + 1)
    with pytest.raises(Refused):
        objcache.read(directory, KEY)


def test_at_most_max_files_are_kept(tmp_path: Path) -> None:
    directory = str(tmp_path / "bpf")
    keys = [f"{i:064x}" for i in range(objcache.MAX_FILES + 3)]
    for i, key in enumerate(keys):
        path = objcache.write(directory, key, _good())
        os.utime(path, ns=(i * 10**9, i * 10**9))
    left = sorted(n for n in os.listdir(directory) if n.endswith(objcache.SUFFIX))
    assert left == sorted(k + objcache.SUFFIX for k in keys[-objcache.MAX_FILES:])


def test_the_key_follows_sources_and_flags_not_the_pid_or_rate(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "telegen.h").write_text("int x;")
    options = {"cpu": True, "self_tgid": 100, "sample_rate": 99}
    flags = ["-DMAX_STACKS=16", "-DSELF_TGID=100"]
    key = objcache.cache_key(src, flags, options)
    assert objcache.cache_key(src, ["-DMAX_STACKS=16", "-DSELF_TGID=200"],
                              {**options, "self_tgid": 200, "sample_rate": 19}) == key
    assert objcache.cache_key(src, ["-DMAX_STACKS=32", "-DSELF_TGID=100"], options) != key
    assert objcache.cache_key(src, flags, {**options, "cpu": False}) != key
    (src / "telegen.h").write_text("int y;")
    assert objcache.cache_key(src, flags, options) != key


def test_a_dead_writers_temporary_file_is_removed_a_live_ones_kept(tmp_path: Path) -> None:
    directory, _ = _written(tmp_path)
    old, new = Path(directory, ".x.1.tmp"), Path(directory, ".y.2.tmp")
    for p in (old, new):
        p.write_bytes(b"partial")
    os.utime(old, (1, 1))
    objcache.write(directory, "cd" * 32, _good())
    assert not old.exists() and new.exists()
