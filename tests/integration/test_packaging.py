"""A wheel install (not the editable one the suite runs from) finds the BPF
sources BCC compiles at start-up: they travel as data-files to
``<prefix>/share/telegen/bpf``."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_carries_the_bpf_sources(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300,
                   cwd=tmp_path)                       # build/ and egg-info land in ROOT
    wheel = next((tmp_path / "dist").glob("telegen-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    # with its dependencies (from the configured index), as a user installs it:
    # the loader imports procinfo, which needs cachetools
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    out = subprocess.run([str(py), "-c", "from telegen.receivers.ebpf.bpf_loader import "
                          "BPF_DIR; print(BPF_DIR)"], check=True, capture_output=True,
                         text=True, cwd=tmp_path, timeout=60).stdout.strip()
    bpf_dir = Path(out)
    assert bpf_dir == env_dir / "share" / "telegen" / "bpf"
    shipped = sorted(p.name for p in bpf_dir.iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "bpf").iterdir()
                             if p.suffix in (".c", ".h")), shipped
