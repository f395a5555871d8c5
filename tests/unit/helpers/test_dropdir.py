"""helpers.dropdir: glob-like matching through directory descriptors that
never follows a symlink, with bounded depth and listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telegen.helpers import dropdir
from telegen.untrusted import Refused


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("top.pb", "a/one.pb", "a/b/two.pb", "a/b/skip.txt", ".hidden.pb"):
        (root / rel).write_bytes(b"x" * 3)
    (root / ".dot").mkdir()
    (root / ".dot" / "in-hidden-dir.pb").write_bytes(b"y")


def _found(pattern: str) -> tuple[list[str], list[tuple[str, str]]]:
    refused: list[tuple[str, str]] = []
    found = dropdir.find(pattern, lambda p, e: refused.append((p, e.reason)))
    return [f.path for f in found], refused


def test_matching_follows_glob(tmp_path: Path) -> None:
    _tree(tmp_path)
    t = str(tmp_path)
    assert _found(f"{t}/*.pb")[0] == [f"{t}/top.pb"]                  # hidden names skipped
    assert _found(f"{t}/.*.pb")[0] == [f"{t}/.hidden.pb"]
    assert _found(f"{t}/**/*.pb")[0] == [f"{t}/a/b/two.pb", f"{t}/a/one.pb", f"{t}/top.pb"]
    assert _found(f"{t}/a/*/t?o.pb")[0] == [f"{t}/a/b/two.pb"]
    assert _found(f"{t}/a/one.pb")[0] == [f"{t}/a/one.pb"]             # a literal path
    assert _found(f"{t}/missing/*.pb") == ([], [])
    f = dropdir.find(f"{t}/top.pb", lambda p, e: None)[0]
    assert (f.size, f.signature[0]) == (3, 3)


def test_symlinks_are_reported_never_followed(tmp_path: Path) -> None:
    _tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pb").write_bytes(b"s")
    (tmp_path / "a" / "link.pb").symlink_to(outside / "secret.pb")
    (tmp_path / "a" / "linkdir").symlink_to(outside)
    os.mkfifo(tmp_path / "a" / "fifo.pb")
    found, refused = _found(f"{tmp_path}/a/**/*.pb")
    assert found == [f"{tmp_path}/a/b/two.pb", f"{tmp_path}/a/one.pb"]
    assert sorted(refused) == [(f"{tmp_path}/a/fifo.pb", "not_regular"),
                               (f"{tmp_path}/a/link.pb", "symlink")]
    found, refused = _found(f"{tmp_path}/a/linkdir/*.pb")             # the literal base
    assert found == [] and refused == [(f"{tmp_path}/a/linkdir", "symlink")]
    with pytest.raises(Refused) as info:
        dropdir.read(f"{tmp_path}/a/link.pb", 100)
    assert info.value.reason == "symlink"


def test_depth_and_listing_are_bounded(tmp_path: Path) -> None:
    deep = tmp_path
    for i in range(6):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "x.pb").write_bytes(b"x")
    refused: list[str] = []
    assert dropdir.find(f"{tmp_path}/**/*.pb", lambda p, e: refused.append(e.reason),
                        max_depth=3) == []
    assert refused == ["too_deep"]
    for i in range(50):
        (tmp_path / f"f{i:02}.pb").write_bytes(b"x")
    refused.clear()
    got = dropdir.find(f"{tmp_path}/*.pb", lambda p, e: refused.append(e.reason),
                       max_entries=10)
    assert len(got) <= 10 and refused == ["too_many_entries"]


def test_read_caps_and_unlink_checks_identity(tmp_path: Path) -> None:
    p = tmp_path / "f.pb"
    p.write_bytes(b"12345")
    assert dropdir.read(str(p), 5) == b"12345"
    with pytest.raises(Refused) as info:
        dropdir.read(str(p), 4)
    assert info.value.reason == "too_large"
    (entry,) = dropdir.find(str(p), lambda path, e: None)
    os.link(p, tmp_path / "old")                   # keeps its inode from being reused
    p.unlink()
    p.write_bytes(b"replaced")                     # another file under the same name
    assert not dropdir.unlink(str(p), entry) and p.exists()
    (entry,) = dropdir.find(str(p), lambda path, e: None)
    assert dropdir.unlink(str(p), entry) and not p.exists()
