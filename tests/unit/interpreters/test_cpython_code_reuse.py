"""A code object's address reused by another code object: the reader (and
the receiver's per-window check built on it) must name the new one — name,
file *and line* — never what it cached for the old one at that address.

A live CPython 3.12 keeps one code object, the test names it, then the
program frees it and compiles others until one lands at the same address
(pymalloc hands a freed block out again) and the test names that one.
"""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from telegen.interpreters.cpython import CodeReader, detect
from telegen.testing.pyprog import pyenv_python
from telegen.untrusted import Refusals

PROGRAM = r'''
import json, sys

def describe(code, first):
    lines = [p[0] for p in code.co_positions()]
    unit = next(i for i, line in enumerate(lines) if line is not None and line > first)
    return {"addr": id(code), "name": code.co_qualname, "file": code.co_filename,
            "unit": unit, "line": lines[unit]}

def make(name, file, first):
    src = "\n" * (first - 1) + f"def {name}():\n    x = 1\n    y = x + 1\n    return y\n"
    return compile(src, file, "exec").co_consts[0]

keep = make("first_function", "one.py", 10)
print(json.dumps(describe(keep, 10)), flush=True)
sys.stdin.readline()
addr = id(keep)
del keep
held = []
for i in range(200000):
    code = make("second_function", "two.py", 40)
    if id(code) == addr:
        print(json.dumps(describe(code, 40)), flush=True)
        break
    held.append(code)          # keep the misses: the next one takes another block
else:
    print("{}", flush=True)
sys.stdin.readline()
'''


def test_reused_address_names_the_new_code_object() -> None:
    exe = pyenv_python("3.12")
    if exe is None:
        pytest.fail("pyenv's CPython 3.12 not installed (scripts/setup-host.sh)")
    proc = subprocess.Popen([exe, "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        old = json.loads(proc.stdout.readline())
        refusals = Refusals(None, logging.getLogger("test"))
        py = detect(proc.pid, refusals=refusals)
        assert py is not None, refusals.counts
        adaptive = py.offsets["code_adaptive"]
        assert adaptive is not None
        reader = CodeReader(py, refusals=refusals)
        addr = old["addr"]

        def named(unit: int) -> tuple[str, str, int] | None:
            # 3.12 frames hold a pointer into co_code_adaptive (2 bytes per code unit)
            line = reader.line(addr, addr + adaptive + 2 * unit)
            return None if line is None else (line.function, line.file, line.line)

        first = reader.code(addr)
        assert named(old["unit"]) == (old["name"], old["file"], old["line"])
        assert reader.code(addr) is first          # unchanged: the same cached entry
        proc.stdin.write("\n")
        proc.stdin.flush()
        new = json.loads(proc.stdout.readline())
        assert new, "no code object took the freed address"
        assert new["addr"] == addr and new["line"] != old["line"]
        assert new["unit"] == old["unit"]         # the very instruction pointer named before
        assert reader.code(addr) is not first
        assert named(new["unit"]) == (new["name"], new["file"], new["line"])
    finally:
        proc.kill()
        proc.wait()
