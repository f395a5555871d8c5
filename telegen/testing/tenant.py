"""A hostile local tenant for tests: commands run as ``nobody`` through
``setpriv``, a root-only directory to aim planted symlinks at, and a
snapshot of a tree (owner, mode, content) to prove nothing there changed."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
import tempfile
from pathlib import Path

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def nobody_ids() -> tuple[int, int]:
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def as_nobody(argv: list[str]) -> list[str]:
    return [*NOBODY, *argv]


def run_as_nobody(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as nobody (cwd ``/``); fails the caller when it fails."""
    return subprocess.run(as_nobody(argv), cwd="/", capture_output=True, text=True,
                          timeout=timeout, check=True)


def root_only_dir(prefix: str = "telegen-victim-") -> Path:
    """A directory only root may enter (0700 root:root) holding a file and a
    subdirectory: what a tenant would like the agent to chown, fill or delete."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o700)
    (d / "secret").write_text("root's own\n")
    os.chmod(d / "secret", 0o600)
    (d / "sub").mkdir(mode=0o700)
    (d / "sub" / "keep.jfr").write_bytes(b"not yours")
    return d


def world_readable_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that nobody may read (for class files)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def nobody_dir(prefix: str) -> Path:
    """A fresh directory under /tmp owned by nobody (the tenant controls it)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chown(d, *nobody_ids())
    os.chmod(d, 0o755)
    return d


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under ``root`` (symlinks not followed): relative path ->
    (mode, uid, gid, sha256 of a file's content or a symlink's target)."""
    out: dict[str, tuple[int, int, int, str]] = {}

    def add(path: Path) -> None:
        st = path.lstat()
        if path.is_symlink():
            digest = os.readlink(path)
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, digest)

    add(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            add(Path(dirpath) / name)
    return out
