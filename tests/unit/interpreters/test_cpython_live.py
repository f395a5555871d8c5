"""The CPython offsets and code-object reader against real interpreters.

Each interpreter runs a program that prints its own stack (``sys._getframe``:
the interpreter's view, the independent truth) and then sleeps inside it; the
test finds the runtime with :func:`detect`, walks thread state and frames
through ``process_vm_readv`` with the offsets (what the BPF walker does),
and names every frame with :class:`CodeReader`.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import time

import pytest

from telegen.interpreters.cpython import CodeReader, CPythonProcess, detect
from telegen.interpreters.cpython.offsets import FRAME_OWNED_BY_CSTACK
from telegen.procinfo.memory import read_memory
from telegen.testing.pyprog import pyenv_python
from telegen.untrusted import Refusals

PROGRAM = r'''
import json, sys, time

class Shop:
    def checkout(self):
        return inner_wait()

def inner_wait():
    stack = []
    f = sys._getframe()
    while f is not None:
        code = f.f_code
        stack.append([getattr(code, "co_qualname", code.co_name), code.co_filename,
                      f.f_lineno if f is not sys._getframe() else None])
        f = f.f_back
    stack[0][2] = sys._getframe().f_lineno + 2
    print(json.dumps(stack), flush=True)
    time.sleep(1000)

def outer():
    return Shop().checkout()

outer()
'''

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]


def _interpreters() -> list[tuple[str, str]]:
    found = [(v, pyenv_python(v)) for v in VERSIONS]
    missing = [v for v, exe in found if exe is None]
    if missing:
        pytest.fail(f"pyenv's CPython {missing} not installed (scripts/setup-host.sh)")
    return [(v, exe) for v, exe in found if exe] + [("debian-3.11", "/usr/bin/python3.11")]


def _u64(pid: int, addr: int) -> int:
    raw = read_memory(pid, addr, 8)
    assert raw is not None, f"unreadable {addr:#x}"
    return struct.unpack("<Q", raw)[0]


def walk(py: CPythonProcess, tid: int) -> list[tuple[int, int]]:
    """(code address, instruction value) of thread ``tid``'s frames, leaf
    first: the BPF walker's algorithm, in Python."""
    o, pid = py.offsets, py.pid
    interp = _u64(pid, py.runtime + o["runtime_interpreters_head"])
    tstate = _u64(pid, interp + o["interp_threads_head"])
    for _ in range(64):
        if o["tstate_native_thread_id"] is None \
                or _u64(pid, tstate + o["tstate_native_thread_id"]) == tid:
            break
        tstate = _u64(pid, tstate + o["tstate_next"])
    frame = _u64(pid, tstate + o["tstate_frame"])
    if o["cframe_current_frame"] is not None:
        frame = _u64(pid, frame + o["cframe_current_frame"])
    out = []
    while frame and len(out) < 64:
        code = _u64(pid, frame + o["frame_code"])
        instr = _u64(pid, frame + o["frame_instr"])
        if py.version < 311:
            instr &= 0xFFFFFFFF
        owner = read_memory(pid, frame + o["frame_owner"], 1) if o["frame_owner"] else None
        if not (py.version >= 312 and owner and owner[0] == FRAME_OWNED_BY_CSTACK):
            out.append((code, instr))
        frame = _u64(pid, frame + o["frame_back"])
    return out


@pytest.mark.parametrize("version,exe", _interpreters())
def test_frames_and_lines_as_the_interpreter_sees_them(version: str, exe: str) -> None:
    proc = subprocess.Popen([exe, "-c", PROGRAM], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        truth = [tuple(f) for f in json.loads(proc.stdout.readline())]
        time.sleep(0.2)
        refusals = Refusals(None, logging.getLogger("test"))
        py = detect(proc.pid, refusals=refusals)
        assert py is not None, refusals.counts
        if version.startswith("3."):
            assert py.version == int(version.replace(".", "")[0]) * 100 + int(version[2:])
        assert py.eval_ranges and all(lo < hi for lo, hi in py.eval_ranges)
        reader = CodeReader(py, refusals=refusals)
        got = [reader.line(code, instr) for code, instr in walk(py, proc.pid)]
        names = [(g.function, g.file, g.line) if g else None for g in got]
        assert names == truth, refusals.counts
        # a second look-up is served from the cache and is the same
        assert [reader.line(c, i) for c, i in walk(py, proc.pid)] == got
    finally:
        proc.kill()
        proc.wait()
