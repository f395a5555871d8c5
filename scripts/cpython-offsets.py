#!/usr/bin/env python3
"""Print the CPython struct offsets telegen's eBPF walker needs, read from a
libpython's DWARF with gdb (the pyenv builds on the CI machine carry DWARF).

    scripts/cpython-offsets.py /root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0

The output is the literal used in telegen/interpreters/cpython/tables.py;
tests/unit/interpreters/test_cpython_offsets.py re-runs this on every pyenv
build found and checks the tables against it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

# field -> candidate C expressions (first that gdb accepts wins; none: absent)
FIELDS: dict[str, list[str]] = {
    "runtime_interpreters_head": ["&((_PyRuntimeState*)0)->interpreters.head"],
    "interp_threads_head": ["&((PyInterpreterState*)0)->threads.head",
                            "&((PyInterpreterState*)0)->tstate_head"],
    "tstate_next": ["&((PyThreadState*)0)->next"],
    "tstate_thread_id": ["&((PyThreadState*)0)->thread_id"],
    "tstate_native_thread_id": ["&((PyThreadState*)0)->native_thread_id"],
    # 3.13+ current_frame; 3.8-3.10 frame (3.10 has a cframe too, without frames);
    # 3.11/3.12 cframe (then cframe_current_frame)
    "tstate_frame": ["&((PyThreadState*)0)->current_frame", "&((PyThreadState*)0)->frame",
                     "&((PyThreadState*)0)->cframe"],
    "cframe_current_frame": ["&((_PyCFrame*)0)->current_frame"],
    "frame_back": ["&((struct _PyInterpreterFrame*)0)->previous", "&((PyFrameObject*)0)->f_back"],
    "frame_code": ["&((struct _PyInterpreterFrame*)0)->f_executable",
                   "&((struct _PyInterpreterFrame*)0)->f_code", "&((PyFrameObject*)0)->f_code"],
    "frame_instr": ["&((struct _PyInterpreterFrame*)0)->instr_ptr",
                    "&((struct _PyInterpreterFrame*)0)->prev_instr",
                    "&((PyFrameObject*)0)->f_lasti"],
    "frame_owner": ["&((struct _PyInterpreterFrame*)0)->is_entry",
                    "&((struct _PyInterpreterFrame*)0)->owner"],
    "code_adaptive": ["&((PyCodeObject*)0)->co_code_adaptive"],
    # user space only (the code-object reader)
    "code_filename": ["&((PyCodeObject*)0)->co_filename"],
    "code_name": ["&((PyCodeObject*)0)->co_name"],
    "code_qualname": ["&((PyCodeObject*)0)->co_qualname"],
    "code_firstlineno": ["&((PyCodeObject*)0)->co_firstlineno"],
    "code_linetable": ["&((PyCodeObject*)0)->co_linetable", "&((PyCodeObject*)0)->co_lnotab"],
    "bytes_sval": ["&((PyBytesObject*)0)->ob_sval"],
    "unicode_state": ["&((PyASCIIObject*)0)->state"],
    "unicode_ascii_size": ["sizeof(PyASCIIObject)"],
    "unicode_compact_size": ["sizeof(PyCompactUnicodeObject)"],
}


def offsets(lib: str) -> dict[str, int | None]:
    exprs = [(f, e) for f, cands in FIELDS.items() for e in cands]
    cmd = ["gdb", "-batch", "-nx", lib]
    for _, e in exprs:
        cmd += ["-ex", "echo @@\\n", "-ex", f"print (long)({e})"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    answers = out.split("@@\n")[1:]
    found: dict[str, int | None] = {f: None for f in FIELDS}
    for (field, _), answer in zip(exprs, answers, strict=False):
        m = re.match(r"\$\d+ = (-?\d+)", answer.strip())
        if m and found[field] is None:
            found[field] = int(m.group(1))
    return found


if __name__ == "__main__":
    print(json.dumps(offsets(sys.argv[1]), indent=1))
