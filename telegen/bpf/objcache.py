"""The start-up cache: BCC's compiled objects (:mod:`telegen.bpf.compiled`)
kept on disk, so a restart loads the programs with ``bpf()`` syscalls (the
verifier's time only) instead of compiling them again (1-3 s of LLVM idle,
more under load).

Key: SHA-256 of everything the compile depends on — the object format, the
BPF sources (every ``bpf/*.c``/``*.h``), the cflags (SELF_TGID as the
sentinel: one object serves every agent pid), the options, the kernel
(release, version, machine), the kernel's BTF (``/sys/kernel/btf/vmlinux``,
hashed), the kernel headers BCC compiles against and BCC's version.

File: ``cache_dir("bpf")/<key>.bpfobj``, a header line ``telegen-bpf-object
1 <SHA-256 of the body>`` then the JSON body. Written by the agent (root)
with mode 0600 in a 0700 directory, atomically (temporary file + rename).
Read only if the directory and the file belong to this user and nobody
else can write them, the file is regular (not followed through a symlink)
and at most :data:`MAX_FILE_BYTES`, its digest matches and the object is
well-formed; anything else is :class:`Refused` (the caller counts it,
removes the file and compiles). At most :data:`MAX_FILES` files are kept;
a temporary file older than an hour (its writer died) is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import time
from pathlib import Path
from typing import Any

from telegen.bpf import compiled
from telegen.cachedir import cache_dir
from telegen.untrusted import Refused
from telegen.untrusted.limits import read_fd

MAGIC = b"telegen-bpf-object 1 "
SUFFIX = ".bpfobj"
MAX_FILE_BYTES = 8 << 20
MAX_FILES = 8
BTF = "/sys/kernel/btf/vmlinux"
DIRECTORY_REASONS = ("not_directory", "unsafe_directory")
STALE_TMP_S = 3600.0         # a writer's temporary file left this long: it died


def default_dir() -> str:
    return cache_dir("bpf")


def cache_key(bpf_dir: Path, cflags: list[str], options: dict[str, Any]) -> str:
    h = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)

    part("format", str(compiled.FORMAT).encode())
    for src in sorted(bpf_dir.iterdir()):
        if src.suffix in (".c", ".h") and src.is_file():
            part(f"source {src.name}", src.read_bytes())
    flags = [f"-DSELF_TGID={compiled.SELF_TGID_SENTINEL}" if f.startswith("-DSELF_TGID=")
             else f for f in cflags]
    part("cflags", json.dumps(flags).encode())
    opts = {k: v for k, v in options.items() if k not in ("self_tgid", "sample_rate")}
    part("options", json.dumps(opts, sort_keys=True).encode())
    u = os.uname()
    part("kernel", f"{u.release}\0{u.version}\0{platform.machine()}".encode())
    try:
        with open(BTF, "rb") as f:
            part("btf", hashlib.sha256(f.read()).digest())
    except OSError:
        part("btf", b"none")
    headers = f"/lib/modules/{u.release}/build"
    part("headers", _identity(headers, "include/generated/autoconf.h").encode())
    part("bcc", _bcc_version().encode())
    return h.hexdigest()


def _identity(root: str, probe: str) -> str:
    real = os.path.realpath(root)
    try:
        st = os.stat(os.path.join(real, probe))
        return f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return f"{real}\0missing"


def _bcc_version() -> str:
    """BCC's version.py (and its identity), found without importing bcc."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return "none"
    path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        with open(path, "rb") as f:
            text = f.read(4096)
        st = os.stat(path)
    except OSError:
        return "unknown"
    return f"{text!r}\0{st.st_size}\0{st.st_mtime_ns}"


def _check_dir(directory: str) -> None:
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused("not_directory", f"{directory}: mode {stat.filemode(st.st_mode)}")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise Refused("unsafe_directory", f"{directory}: uid {st.st_uid}, mode "
                      f"{stat.filemode(st.st_mode)}")


def read(directory: str, key: str) -> dict[str, Any] | None:
    """The checked object for ``key``; None when there is none; Refused when
    a file is there that must not be used."""
    path = os.path.join(directory, key + SUFFIX)
    try:
        _check_dir(directory)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:           # ELOOP: a symlink
        raise Refused("unreadable", f"{path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not_regular", f"{path}: mode {stat.filemode(st.st_mode)}")
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise Refused("unsafe_file", f"{path}: uid {st.st_uid}, mode "
                          f"{stat.filemode(st.st_mode)}")
        data = read_fd(fd, MAX_FILE_BYTES)
    finally:
        os.close(fd)
    header, _, body = data.partition(b"\n")
    if not header.startswith(MAGIC):
        raise Refused("bad_header", path)
    if hashlib.sha256(body).hexdigest().encode() != header[len(MAGIC):]:
        raise Refused("digest_mismatch", path)
    try:
        return compiled.check(json.loads(body))
    except (ValueError, RecursionError) as exc:      # ObjectError is a ValueError
        raise Refused("malformed", f"{path}: {exc}") from exc


def write(directory: str, key: str, obj: dict[str, Any]) -> str:
    """Store ``obj`` under ``key`` (atomically); returns the path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _check_dir(directory)
    body = json.dumps(obj, separators=(",", ":")).encode()
    data = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"compiled object of {len(data)} bytes is over {MAX_FILE_BYTES}")
    final = os.path.join(directory, key + SUFFIX)
    tmp = os.path.join(directory, f".{key}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, final)
    _evict(directory, keep=final)
    return final


def remove(directory: str, key: str) -> None:
    try:
        os.unlink(os.path.join(directory, key + SUFFIX))
    except OSError:
        pass


def _evict(directory: str, keep: str) -> None:
    """At most MAX_FILES objects: the least recently written go first."""
    entries = []
    stale = time.time() - STALE_TMP_S
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if name.endswith(SUFFIX):
                entries.append((st.st_mtime_ns, path))
            elif name.endswith(".tmp") and st.st_mtime < stale:
                os.unlink(path)
        except OSError:
            pass
    entries.sort(reverse=True)
    for _, path in entries[MAX_FILES:]:
        if path != keep:
            try:
                os.unlink(path)
            except OSError:
                pass
