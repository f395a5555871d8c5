"""Build the C workloads under tests/testdata/workloads with gcc, into a temp dir.

Workloads are built with frame pointers (``-O2 -fno-omit-frame-pointer``) and
symbols, so frame-pointer stacks are complete inside them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

WORKLOAD_DIR = Path(__file__).resolve().parents[2] / "tests" / "testdata" / "workloads"
CFLAGS = ("-O2", "-g", "-fno-omit-frame-pointer", "-pthread")


class BuildError(RuntimeError):
    pass


def build(name: str, out_dir: Path | str, *, cflags: tuple[str, ...] = CFLAGS,
          source_dir: Path = WORKLOAD_DIR) -> Path:
    """Compile ``<source_dir>/<name>.c`` to ``<out_dir>/<name>``; returns the binary."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found: apt-get install gcc")
    src = source_dir / f"{name}.c"
    out = Path(out_dir) / name
    res = subprocess.run([gcc, *cflags, "-o", str(out), str(src)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise BuildError(f"gcc {src.name} failed:\n{res.stderr}")
    return out


def parse_report(text: str) -> dict[str, int]:
    """``key value`` lines a workload prints (e.g. ``cpu_ns 123``)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out
