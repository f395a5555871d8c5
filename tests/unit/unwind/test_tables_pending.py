"""CfiStacks never builds a big table in the pipeline: a copy whose binary's
table is still being built by the builder child is unwound with frame
pointers at once (counted), then again once the table is ready, so the
snapshot id's result — which BPF reuses for identical stacks — becomes the
complete CFI stack. The copy is a real one: a program built without frame
pointers copies its own registers and stack the way BPF does
(``struct ustack_hdr`` + the bytes above sp) and waits."""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

from telegen.procinfo import ProcessCache
from telegen.receivers.ebpf.unwinding import FULL, TRUNCATED, USNAP_BIT, CfiStacks
from telegen.testing import native
from telegen.testing.symbols import ElfFunctions
from telegen.unwind import TableCache

SNAP = USNAP_BIT | 7
SELF_COPY = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static unsigned char out[48 + 16384];
static uint64_t stack_end(void) {
    char line[512]; uint64_t lo, hi, end = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[stack]") && sscanf(line, "%lx-%lx", &lo, &hi) == 2) end = hi;
    fclose(f);
    return end;
}
__attribute__((noinline)) void copy_self(void) {
    uint64_t sp, bp, ip;
    __asm__ volatile("lea (%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp));
    uint64_t len = stack_end() - sp;
    if (len > 16384) len = 16384;
    uint32_t hdr[4] = {SNAP, (uint32_t)getpid(), (uint32_t)getpid(), (uint32_t)len};
    memcpy(out, hdr, 16);
    memcpy(out + 16, &ip, 8); memcpy(out + 24, &sp, 8); memcpy(out + 32, &bp, 8);
    memcpy(out + 40, (void *)sp, len);
    fwrite(out, 1, 40 + len, stdout);
    fflush(stdout);
    pause();
}
__attribute__((noinline)) void middle(int n) { if (n > 0) middle(n - 1); else copy_self(); }
int main(void) { middle(3); return 0; }
"""


class NoFramePointerIds:
    """The frame-pointer stack source CfiStacks wraps (not used here)."""

    def begin(self, seq: int) -> None:
        pass

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        return None

    def end(self, seq: int, still_needed: set[tuple[int, int]]) -> None:
        pass


def test_copy_waits_for_its_table_without_blocking(tmp_path: Path) -> None:
    prog = native.compile_c(SELF_COPY.replace("SNAP", str(SNAP)), tmp_path / "self_copy",
                            flags=("-O1", "-g", "-fomit-frame-pointer", "-no-pie"))
    functions = ElfFunctions(prog)
    proc = subprocess.Popen([str(prog)], stdout=subprocess.PIPE)
    tables = TableCache(cache_dir=tmp_path / "cache", inline_cfi_bytes=0)   # all via the child
    try:
        assert proc.stdout is not None
        head = proc.stdout.read(40)
        length = struct.unpack_from("<IIII", head)[3]
        raw = head + proc.stdout.read(length)
        cfi = CfiStacks(NoFramePointerIds(), ProcessCache(), name="auto",  # type: ignore[arg-type]
                        tables=tables, max_wait_s=30.0)
        cfi._pending.append(raw)                 # what the ring callback does
        t0 = time.monotonic()
        cfi.process_pending()
        took = time.monotonic() - t0
        first = cfi.addresses(1, SNAP)
        assert took < 1.0 and cfi.outcome(SNAP) == TRUNCATED     # frame pointers meanwhile
        assert cfi.table_pending_copies == 1 and tables.pending >= 1
        cfi.begin(1)                             # waits (at most max_wait_s) and unwinds again
        assert tables.pending == 0 and cfi.outcome(SNAP) == FULL
        full = cfi.addresses(1, SNAP)
        assert full is not None and first is not None and len(full) > len(first)
        names = [n for n in (functions.function_at(a - (i > 0)) for i, a in enumerate(full))
                 if n is not None]
        print(f"pending: {len(first)} frames; ready: {names}")
        assert names[:6] == ["copy_self", "middle", "middle", "middle", "middle", "main"]
        assert cfi.table_pending_copies == 1      # counted once
    finally:
        proc.kill()
        proc.wait()
        tables.close()
