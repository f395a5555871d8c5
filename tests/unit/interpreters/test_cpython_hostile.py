"""Processes that look like CPython and are not: refused and counted, never
a crash or a wrong answer."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from telegen.interpreters.cpython import CodeReader, detect
from telegen.interpreters.cpython.code import linetable_line, lnotab_line, location_line
from telegen.testing.pyprog import pyenv_python
from telegen.untrusted import Refusals

MAPPER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || mmap(0, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED)
        return 1;
    puts("1"); fflush(stdout);
    sleep(60);
    return 0;
}
"""


def test_a_garbage_libpython_is_refused(tmp_path: Path) -> None:
    # a C program mapping a file named like CPython's library that is not ELF
    fake = tmp_path / "libpython3.11.so.1.0"
    fake.write_bytes(b"\x7fELF" + os.urandom(8188))
    (tmp_path / "mapper.c").write_text(MAPPER_C)
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "mapper"), str(tmp_path / "mapper.c")],
                   check=True)
    proc = subprocess.Popen([str(tmp_path / "mapper"), str(fake)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        refusals = Refusals(None, logging.getLogger("test"))
        assert detect(proc.pid, refusals=refusals) is None
        assert refusals.counts.get(("cpython", "bad_elf")) == 1
    finally:
        proc.kill()
        proc.wait()


def test_addresses_that_are_not_code_objects() -> None:
    exe = pyenv_python("3.12")
    assert exe
    proc = subprocess.Popen([exe, "-c", "import time; x = b'A' * 4096; print(id(x), flush=True);"
                             " time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        bytes_addr = int(proc.stdout.readline())
        py = detect(proc.pid)
        assert py is not None
        refusals = Refusals(None, logging.getLogger("test"))
        reader = CodeReader(py, refusals=refusals)
        assert reader.line(bytes_addr, 0) is None           # an object of another type
        assert reader.line(8, 0) is None                    # unmapped
        assert reader.line(py.runtime, 0) is None           # not an object at all
        assert refusals.counts.get(("cpython", "not_code"), 0) >= 1
    finally:
        proc.kill()
        proc.wait()


def test_line_tables_of_garbage_end_in_bounded_time() -> None:
    junk = os.urandom(1 << 16)
    for unit in (0, 10, 1 << 20):
        location_line(junk, 1, unit)
        linetable_line(junk, 1, unit)
        lnotab_line(junk, 1, unit)
    # continuation bits forever: the varint stops at the end of the bytes
    assert location_line(b"\xf0" + b"\x7f" * 1000, 5, 0) >= 0
