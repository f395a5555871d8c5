"""The per-version offset tables equal what each pyenv build's DWARF says
(``scripts/cpython-offsets.py`` runs gdb on it), and 3.13's own
``_Py_DebugOffsets`` agrees with the table."""

from __future__ import annotations

import glob
import importlib.util
import subprocess

import pytest

from telegen.interpreters.cpython.offsets import from_debug_offsets, table_offsets
from telegen.interpreters.cpython.tables import TABLES
from telegen.procinfo.memory import read_memory
from telegen.testing.pyprog import PYENV_ROOT, pyenv_python
from telegen.untrusted import Refused


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("cpython_offsets", "scripts/cpython-offsets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", sorted(TABLES))
def test_table_row_is_what_the_dwarf_says(version: int) -> None:
    source, row = TABLES[version]
    libs = glob.glob(f"{PYENV_ROOT}/versions/{source}/lib/libpython3.*.so.1.0")
    assert libs, f"pyenv build {source} missing"
    assert _script().offsets(libs[0]) == row


def test_debug_offsets_of_a_live_313_match_the_table() -> None:
    exe = pyenv_python("3.13")
    assert exe
    proc = subprocess.Popen([exe, "-c", "import time; print(1, flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        from telegen.interpreters.cpython import detect
        py = detect(proc.pid)
        assert py is not None
        raw = read_memory(proc.pid, py.runtime, 1024)
        assert raw is not None
        published = from_debug_offsets(313, raw)
        table = table_offsets(313)
        assert {k: v for k, v in published.fields.items() if k != "cframe_current_frame"} == \
               {k: v for k, v in table.fields.items() if k != "cframe_current_frame"}
        with pytest.raises(Refused):
            from_debug_offsets(313, b"xdebugpz" + raw[8:])          # wrong cookie
        with pytest.raises(Refused):
            from_debug_offsets(313, raw[:8] + (0x030C0000).to_bytes(8, "little") + raw[16:])
    finally:
        proc.kill()
        proc.wait()


def test_unsupported_versions_are_refused() -> None:
    for version in (307, 314, 400):
        with pytest.raises(Refused):
            table_offsets(version)
