"""Build and run small Go programs (stdlib only) that write real pprof files.

Used by tests and the bench: ``build_go_program(source_dir)`` compiles with the
system ``go`` (Debian ``golang-go``) into a cache keyed by the sources and the
Go version, so repeated calls are instant. ``go_pprof`` runs ``go tool pprof``.

Example::

    binary = build_go_program(CPUHOG_SOURCE, cache_dir=tmp_path_factory.mktemp("go"))
    run_go_program(binary, [str(out_dir), "2", "1"])    # out_dir/cpu-000.pb.gz ...
    text = go_pprof("-top", "-nodecount=10", str(out_dir / "cpu-000.pb.gz"))
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

# tests/testdata/go/cpuhog in a source checkout: `cpuhog OUTDIR [PROFILES] [SECONDS]`
# writes OUTDIR/cpu-000.pb.gz ... (CPU profiles of SECONDS each) and OUTDIR/heap.pb.gz.
CPUHOG_SOURCE = Path(__file__).resolve().parents[2] / "tests" / "testdata" / "go" / "cpuhog"


class GoError(RuntimeError):
    """``go`` is missing, or building / running a Go program failed."""


def go_binary() -> str | None:
    """Path of the ``go`` command, or None when Go is not installed."""
    return shutil.which("go")


def go_available() -> bool:
    return go_binary() is not None


def _go_env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOCACHE=str(cache_dir / "gocache"), GOPATH=str(cache_dir / "gopath"),
               GOFLAGS="", GO111MODULE="auto", CGO_ENABLED="0", GOTOOLCHAIN="local")
    return env


def _go() -> str:
    go = go_binary()
    if go is None:
        raise GoError("the `go` command is not installed (Debian: apt-get install golang-go)")
    return go


def build_go_program(source_dir: str | os.PathLike[str], *,
                     cache_dir: str | os.PathLike[str] | None = None,
                     timeout_s: float = 300.0) -> Path:
    """Compile the ``*.go`` files of ``source_dir`` (package main, stdlib only)
    and return the binary's path. ``cache_dir`` holds GOCACHE, GOPATH and the
    binaries (default: ``$TMPDIR/telegen-goprog``)."""
    src = Path(source_dir)
    files = sorted(src.glob("*.go"))
    files = [f for f in files if not f.name.endswith("_test.go")]
    if not files:
        raise GoError(f"no .go files in {src}")
    go = _go()
    cache = Path(cache_dir) if cache_dir is not None else (
        Path(tempfile.gettempdir()) / "telegen-goprog")
    cache.mkdir(parents=True, exist_ok=True)
    env = _go_env(cache)
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env,
                             timeout=60, check=False).stdout
    digest = hashlib.sha256(version.encode())
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    binary = cache / "bin" / f"{src.name}-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(binary.name + f".tmp{os.getpid()}")
    proc = subprocess.run([go, "build", "-o", str(tmp), *[str(f) for f in files]],
                          cwd=src, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise GoError(f"go build {src} failed (exit {proc.returncode}):\n{proc.stderr}")
    os.replace(tmp, binary)
    return binary


def run_go_program(binary: str | os.PathLike[str], args: Sequence[str], *,
                   timeout_s: float = 120.0) -> str:
    """Run a built program to completion; return its stdout, raise GoError on failure."""
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise GoError(f"{binary} {' '.join(args)} failed (exit {proc.returncode}):\n"
                      f"{proc.stderr}")
    return proc.stdout


def go_pprof(*args: str, timeout_s: float = 120.0) -> str:
    """Run ``go tool pprof ARGS`` and return stdout; GoError with stderr on failure."""
    go = _go()
    with tempfile.TemporaryDirectory(prefix="telegen-pprof-") as home:
        env = dict(os.environ, PPROF_TMPDIR=home, HOME=home, PPROF_BINARY_PATH=home)
        proc = subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True,
                              env=env, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise GoError(f"go tool pprof {' '.join(args)} failed (exit {proc.returncode}):\n"
                      f"{proc.stderr}")
    return proc.stdout
