"""The long-lived agent never imports pyelftools (#21: ~5 MB resident): the
modules ``telegen run`` imports leave it out, and reading a binary's symbol
tables and debug link — what the agent does in its own process — reads the
sections straight from the file, with the same functions as pyelftools
finds. DWARF and compressed sections (index children, tests) still use it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import telegen.cli, telegen.registry, telegen.service
import telegen.receivers.ebpf.receiver, telegen.receivers.ebpf.uprobes
import telegen.processors.symbolize.symbolize, telegen.symbols.objects
from telegen.symbols.elf import ElfFile
imported = "elftools" in sys.modules
libc = [l.split()[-1] for l in open("/proc/self/maps") if "/libc.so" in l
        or "/libc-" in l][0]
elf = ElfFile(libc)
ours = []
for section in (".dynsym", ".symtab"):
    table = elf.symbols(section)
    if table is not None:
        ours += [(table.name(i), table.starts[i]) for i in range(len(table))]
link = elf.debuglink()
after_symbols = "elftools" in sys.modules
from elftools.elf.sections import SymbolTableSection
theirs = []
for section in (".dynsym", ".symtab"):
    sec = elf.elf.get_section_by_name(section)
    if isinstance(sec, SymbolTableSection):
        for s in sec.iter_symbols():
            # STT_GNU_IFUNC is STT_LOOS (10) to pyelftools
            if s["st_info"]["type"] in ("STT_FUNC", "STT_LOOS") and s["st_value"] \
                    and s["st_shndx"] != "SHN_UNDEF":
                theirs.append((s.name.split("@")[0], s["st_value"]))
raw = elf.elf.get_section_by_name(".gnu_debuglink")
print(json.dumps({"imported": imported, "after_symbols": after_symbols, "libc": libc,
                  "ours": ours, "theirs": theirs, "link": link,
                  "has_link": raw is not None}))
"""


def test_agent_modules_and_symbol_tables_leave_pyelftools_out() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    got = json.loads(out)
    assert not got["imported"], "an agent module imports pyelftools at import time"
    assert not got["after_symbols"], "reading symbol tables imported pyelftools"
    ours = {tuple(e) for e in got["ours"]}
    theirs = {tuple(e) for e in got["theirs"]}
    assert len(ours) > 500, (got["libc"], len(ours))      # libc's .dynsym: ~2500 functions
    # one name per address is kept (aliases ranked): every (name, address) is
    # one pyelftools reads, and every function address pyelftools reads is there
    assert ours <= theirs, sorted(ours - theirs)[:5]
    assert {a for _, a in ours} == {a for _, a in theirs}
    assert {"malloc", "free", "memcpy", "printf"} <= {n for n, _ in ours}
    assert (got["link"] is not None) == got["has_link"]
