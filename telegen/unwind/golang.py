"""Unwinding Go code from its ``pclntab`` (no ``.eh_frame`` needed).

Go binaries carry no CFI for Go code (only ``.debug_frame``, which
``-ldflags=-w`` removes), but every Go binary keeps the tables its own
runtime unwinds with: per function, the SP delta at each pc (``pcsp``). With
it a Go frame's CFA is ``sp + delta + 8`` at every instruction, prologue and
frameless leaf functions included — which frame pointers get wrong (a
frameless leaf hides its caller). The caller's rbp is saved at CFA-16 once
the frame is set up (delta > 0), as Go on amd64 always does.

Some runtime functions are not ordinary frames (names from the pclntab,
checked once per function):

* the outermost frame of a goroutine or thread: ``runtime.goexit``,
  ``runtime.mstart``, ``runtime.rt0_go`` — the stack is complete there;
* stack switches: ``runtime.systemstack``, ``runtime.asmcgocall`` (cgo: C runs
  on the system stack), ``runtime.morestack``, ``runtime.mcall``. The frames
  above them live on the goroutine's stack, whose registers the runtime
  saved in ``g.sched``; BPF copies that stack when the sample is on the
  system stack (``bpf/golabels.h``) and the unwinder continues there. Without
  it, ``mcall`` ends a complete stack (the goroutine has been parked:
  ``schedule`` runs for no goroutine, as Go's own tracebacks show it), the
  others end a truncated one.

BPF dedupes the copies of a stack whose leaf is Go code on the stack's
frame-pointer chain (``go_stack_hash`` in bpf/golabels.h), not on the words
at sp. :func:`explained_by_chain` tells whether an unwound stack is made
only of what that key covered; when it is not (a sample in a prologue, in a
signal handler), the caller drops the key so that the next sample there is
copied again.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from telegen.pdata import Mapping
from telegen.procinfo.elfheaders import read_headers
from telegen.procinfo.maps import MappedFile, open_mapped
from telegen.symbols.gopclntab import GoFunctions, is_go
from telegen.symbols.gopclntab_locate import Segment, load_segments
from telegen.untrusted import Refusals, Refused
from telegen.unwind.table import RSP, Rule, load_bias

if TYPE_CHECKING:
    from telegen.unwind.unwinder import SwitchContext

log = logging.getLogger(__name__)

# Rule kinds of Go's special frames (beyond telegen.unwind.table's kinds; they
# exist only in an AddressSpace's per-pc memo, never in a serialized table).
GO_TOP = 16        # outermost frame: the stack is complete
GO_SWITCH = 17     # the caller is on the goroutine's stack (g.sched)
GO_MCALL = 18      # as GO_SWITCH, and complete when no goroutine is left
GO_FAKE = 19       # runtime.systemstack_switch: the pc g.sched holds, not a real frame

TOP_FUNCTIONS = frozenset({"runtime.goexit", "runtime.mstart", "runtime.rt0_go"})
SWITCH_FUNCTIONS = frozenset({"runtime.systemstack", "runtime.asmcgocall",
                              "runtime.morestack", "runtime.asmcgocall_landingpad",
                              # vDSO calls run on g0's stack (m.vdsoPC/SP: the caller)
                              "runtime.nanotime1", "runtime.walltime", "runtime.walltime1"})
MCALL_FUNCTIONS = frozenset({"runtime.mcall"})
FAKE_FUNCTIONS = frozenset({"runtime.systemstack_switch"})
MAX_SP_DELTA = 1 << 20       # a Go frame larger than this is a corrupt table
CHAIN_MAX = 32               # bpf/golabels.h GO_CHAIN_MAX
CHAIN_SPAN = 1 << 20         # bpf/golabels.h GO_CHAIN_SPAN
HASH_RAW, HASH_GOROUTINE = 1, 4    # usnap_key.hash low bits (bpf/golabels.h)
BINARIES = 64                # open Go binaries kept (each an mmap of the file)
_FUNCS_PER_BINARY = 65536    # per-function facts memoized per binary


class GoUnwindInfo:
    """The unwind rules of one Go binary's functions, at link-time addresses."""

    def __init__(self, funcs: GoFunctions, segments: list[Segment]) -> None:
        self.funcs = funcs
        self.segments = segments
        self.version = funcs.version
        self._lock = threading.Lock()        # GoFunctions' caches are not locked
        self._kinds: LRUCache[int, int] = LRUCache(_FUNCS_PER_BINARY)   # entry -> kind

    def load_bias(self, map_start: int, map_offset: int, map_size: int = 1) -> int | None:
        """``address - bias`` = link-time vaddr in a mapping of this binary
        (the PT_LOAD segment that overlaps the mapping most)."""
        return load_bias(self.segments, map_start, map_offset, map_size)

    def rule(self, vaddr: int) -> Rule | None:
        """The rule for a pc (link-time ``vaddr``); None outside Go code or
        when its tables cannot be read."""
        with self._lock:
            try:
                entry = self.funcs.func_entry(vaddr)
                if entry is None:
                    return None
                kind = self._kinds.get(entry)
                if kind is None:
                    kind = self._kind(entry)
                    self._kinds[entry] = kind
                delta = self.funcs.sp_delta(vaddr)
            except (Refused, ValueError, IndexError, struct.error):
                return None
        if delta is None or not 0 <= delta < MAX_SP_DELTA or delta & 7:
            return (kind, 8, 0, -8) if kind != RSP else None
        # special kinds carry the frame's own rule too (a sample inside them)
        return (kind, delta + 8, -16 if delta else 0, -8)

    def _kind(self, entry: int) -> int:
        frames = self.funcs.lookup(entry)
        name = frames[-1].function if frames else ""
        if name in TOP_FUNCTIONS:
            return GO_TOP
        if name in SWITCH_FUNCTIONS:
            return GO_SWITCH
        if name in MCALL_FUNCTIONS:
            return GO_MCALL
        if name in FAKE_FUNCTIONS:
            return GO_FAKE
        return RSP


class GoBinaries:
    """``for_mapping(pid, mapping)`` → the Go unwind info of the file a
    process maps, None for other files. Opened once per build-id (and file
    identity); non-Go files are remembered as such. Thread-safe."""

    def __init__(self, refusals: Refusals | None = None, maxsize: int = BINARIES) -> None:
        self._refusals = refusals or Refusals(None, log)
        self._infos: LRUCache[tuple[Any, ...], GoUnwindInfo | None] = LRUCache(maxsize * 16)
        self._lock = threading.Lock()

    def for_mapping(self, pid: int, m: Mapping) -> GoUnwindInfo | None:
        if not m.file or m.file.startswith("["):
            return None
        mapped = open_mapped(pid, m.file, m.start, refusals=self._refusals,
                             build_id=m.build_id)
        if mapped is None:
            return None
        with mapped:
            st = mapped.stat
            key = (m.build_id, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                if key in self._infos:
                    return self._infos[key]
            info = self._open(mapped)
            with self._lock:
                self._infos[key] = info
            return info

    def _open(self, mapped: MappedFile) -> GoUnwindInfo | None:
        try:
            headers = read_headers(mapped.fd)
            if not is_go(headers, mapped.fd):
                return None
            funcs = GoFunctions.open(mapped)
            segments = load_segments(headers)
        except Refused as exc:
            self._refusals.note("go_binary", exc.reason, f"{mapped.path}: {exc.detail}")
            return None
        except (OSError, ValueError, struct.error) as exc:
            log.debug("cannot read Go tables of %s: %s", mapped.path, exc)
            return None
        return GoUnwindInfo(funcs, segments) if funcs is not None else None


_LINK = struct.Struct("<QQ")


def chain_returns(stack: bytes, sp: int, bp: int) -> tuple[list[int], bool]:
    """The words BPF's dedupe key covers on one stack (``go_chain``), read from
    its copy: the word at sp, then each frame record's return address. Also
    whether the walk stopped at the bound (CHAIN_MAX records) rather than at
    the chain's end."""
    out = [int.from_bytes(stack[:8], "little")] if len(stack) >= 8 else []
    at, floor = bp, sp
    for _ in range(CHAIN_MAX):
        off = at - sp
        if at < floor or at & 7 or off > CHAIN_SPAN or off + 16 > len(stack):
            return out, False
        at, ret = _LINK.unpack_from(stack, off)
        out.append(ret)
        floor = sp + off + 16
    return out, True


def explained_by_chain(addresses: tuple[int, ...], ip: int, sp: int, bp: int, stack: bytes,
                       key_hash: int, goroutine: SwitchContext | None) -> bool:
    """Whether an unwound Go stack holds only addresses its dedupe key covered,
    in order: the leaf ``ip``, then return addresses each found (in order) in
    the chain words of the sampled stack and, for a key of a g0 sample, of its
    goroutine (g.sched's pc, then its chain). Frames past a chain cut at
    CHAIN_MAX records are taken as covered (the key's bound, as the raw key's
    64 words are for other stacks)."""
    if not addresses or addresses[0] != ip:
        return False
    words, cut = chain_returns(stack, sp, bp)
    if key_hash & HASH_GOROUTINE and goroutine is not None:
        more, cut_g = chain_returns(goroutine.stack, goroutine.sp, goroutine.bp)
        words = [*words, goroutine.pc, *more] if not cut else words
        cut = cut or cut_g
    i = 0
    for address in addresses[1:]:
        while i < len(words) and words[i] != address:
            i += 1
        if i == len(words):
            return cut
        i += 1
    return True
