"""Everything known about one object file: the binary, its separate debug file
(local or from debuginfod) and their DWARF, queried in priority order.

DWARF is answered from symbol indexes (:mod:`telegen.symbols.symindex`)
built in a limited child in the background; a debug file from debuginfod is
downloaded in the background too. Until they are ready the object answers
from its symbol tables and says so (:attr:`ObjectSymbols.pending`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from telegen.procinfo.maps import MappedFile
from telegen.symbols import gopclntab_object
from telegen.symbols.budget import DEFAULT_LIMITS, Budget, ParseLimits, Rejected
from telegen.symbols.debugfile import DebugFile, find_by_build_id, find_debug_file
from telegen.symbols.debuginfod import DebuginfodClient
from telegen.symbols.elf import ElfFile, SymbolTable
from telegen.symbols.gopclntab import GoFunctions
from telegen.symbols.symindex import IndexBuilder, IndexJob, IndexLine, clean_name, is_clone
from telegen.untrusted import Refusals, Refused

log = logging.getLogger(__name__)

# A raw answer: (source, [(raw name, plain name, file, line, decl line), ...] innermost
# first, final: False when from a symbol table, which a DWARF index may better)
RawAnswer = tuple[str, list[IndexLine], bool]
Background = Callable[[Callable[[], None]], bool]     # False: not taken (queue full)


class ObjectSymbols:
    """Symbols of one object. Look-up order for an address:

    DWARF of the binary → DWARF of the debug file → binary ``.symtab`` →
    debug file ``.symtab`` → binary ``.dynsym``. Answers from the debug file are
    labelled ``debuginfo_file`` (found on disk) or ``debuginfod`` (downloaded).

    ``mapped`` is the binary, open (a profiled process's file: never reopened
    by path). Every parse step in this process — opening, reading headers and
    symbol tables — runs under one :class:`~telegen.symbols.budget.Budget`;
    over it the object is :attr:`rejected` (with the reason) and answers
    nothing. The DWARF index is built by a child under ``RLIMIT_CPU`` and
    ``RLIMIT_AS`` (``builder``); over those (or on malformed DWARF) the
    index is skipped, counted with its reason, and the symbol tables answer.
    ``background`` runs a debuginfod download off the caller's thread (None:
    no debuginfod).
    """

    def __init__(self, mapped: MappedFile | None, build_id: str, *, debug_dirs: Sequence[str],
                 debuginfod: DebuginfodClient | None = None,
                 limits: ParseLimits = DEFAULT_LIMITS, refusals: Refusals | None = None,
                 on_rejected: Callable[[str], None] | None = None,
                 builder: IndexBuilder | None = None,
                 background: Background | None = None) -> None:
        self.binary: ElfFile | None = None
        self.debug: ElfFile | None = None
        self.debug_source = ""
        self.build_id = build_id
        self.identity = mapped.identity if mapped is not None else None
        self.used_at = 0.0      # monotonic time of the symbolizer's last use
        self.has_dwarf = self.has_functions = False
        self._bin_job: IndexJob | None = None
        self._dbg_job: IndexJob | None = None
        self._builder = builder
        self._download: threading.Event | None = None
        self._tables: list[tuple[str, SymbolTable]] = []
        self._go: GoFunctions | None = None    # a Go binary without DWARF: its pclntab
        self._refusals = refusals
        self._on_rejected = on_rejected
        self._limits = limits
        self.budget = Budget(limits, mapped.path if mapped is not None else build_id)
        self.rejected = ""
        try:
            self.budget.run(self._load, mapped, debug_dirs)
        except Rejected as exc:
            self._reject(exc.reason, exc.detail)
        except Exception as exc:     # malformed input pyelftools chokes on: what loaded stays
            log.debug("reading %s stopped: %s", self.budget.name, exc)
        if (not self.rejected and not self.has_dwarf and debuginfod is not None
                and self.build_id and background is not None):
            self._download = threading.Event()
            if not background(lambda: self._fetch(debuginfod)):
                self._download.set()      # too many waiting: the tables answer

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected = reason
        self._note("object", Refused(reason, f"{detail or self.build_id}: skipped"))
        if self._on_rejected is not None:
            self._on_rejected(reason)
        self.close()
        self.binary = self.debug = None
        self._bin_job = self._dbg_job = None
        self._tables = []
        self.has_dwarf = self.has_functions = False

    def _load(self, mapped: MappedFile | None, debug_dirs: Sequence[str]) -> None:
        build_id = self.build_id
        if mapped is not None:
            try:
                self.binary = ElfFile(mapped.fd, name=mapped.path, limits=self._limits)
            except Refused as exc:
                self._note("mapped_file", exc)
            except Exception as exc:
                log.debug("cannot read %s: %s", mapped.path, exc)
        if self.binary is not None and build_id and self.binary.build_id \
                and self.binary.build_id != build_id:
            log.debug("%s has build-id %s, wanted %s: using debug files only",
                      self.binary.path, self.binary.build_id, build_id)
            self.binary.close()
            self.binary = None
        self.build_id = build_id or (self.binary.build_id if self.binary else "")
        root = mapped.root if mapped is not None else ""
        bin_dwarf = self.binary is not None and self.binary.has_dwarf
        if not bin_dwarf:
            self._find_debug(debug_dirs, root)
        self._bin_job = self._index(self.binary) if bin_dwarf else None
        self._dbg_job = self._index(self.debug) if self.debug and self.debug.has_dwarf else None
        self.has_dwarf = self._bin_job is not None or self._dbg_job is not None
        self._tables = self._read_tables()
        if self.binary is not None and not self.has_dwarf:   # Go: names, lines, inlines
            self._go = gopclntab_object.open_for_object(self.binary.fd, self.binary.headers,
                                                        self._note)
        self.has_functions = self.has_dwarf or bool(self._tables) or self._go is not None
        for elf in (self.binary, self.debug):
            for what in elf.skipped if elf is not None else ():
                self._note("elf_section", Refused("section_too_large", what))

    def _read_tables(self) -> list[tuple[str, SymbolTable]]:
        return [(src, t) for src, t in (
            ("symtab", self.binary.symbols(".symtab") if self.binary else None),
            (self.debug_source, self.debug.symbols(".symtab") if self.debug else None),
            ("dynsym", self.binary.symbols(".dynsym") if self.binary else None),
        ) if t is not None]

    def _index(self, elf: ElfFile | None) -> IndexJob | None:
        """The DWARF index of ``elf``: opened from disk, or queued to be built."""
        if elf is None or self._builder is None:
            return None
        try:
            elf.check_dwarf_sizes()
        except Refused as exc:       # DWARF over its caps: the symbol tables still answer
            self._note("dwarf", exc)
            return None
        return self._builder.open_or_build(elf.fd, elf.build_id or self.build_id,
                                           elf.identity, elf.path)

    def _fetch(self, debuginfod: DebuginfodClient) -> None:
        """In the background: the debug file from debuginfod, its symbol table
        and DWARF index; look-ups meanwhile answer from the binary's tables."""
        try:
            path = debuginfod.debuginfo(self.build_id)
            if path and not self.rejected:
                debug = ElfFile(path, limits=self._limits)
                tables = [(src, t) for src, t in (
                    ("symtab", self.binary.symbols(".symtab") if self.binary else None),
                    ("debuginfod", debug.symbols(".symtab")),
                    ("dynsym", self.binary.symbols(".dynsym") if self.binary else None),
                ) if t is not None]
                job = self._index(debug) if debug.has_dwarf else None
                self.debug, self.debug_source = debug, "debuginfod"
                self._dbg_job = job
                self._tables = tables
                self.has_dwarf = self.has_dwarf or job is not None
                self.has_functions = self.has_dwarf or bool(tables)
        except Refused as exc:
            self._note("debug_file", exc)
        except Exception as exc:
            log.debug("debug file of %s unusable: %s", self.build_id, exc)
        finally:
            if self._download is not None:
                self._download.set()

    @property
    def pending(self) -> bool:
        """A debug file is being downloaded or a DWARF index built: answers
        from the symbol tables are provisional."""
        if self._download is not None and not self._download.is_set():
            return True
        return any(job is not None and not job.done.is_set()
                   for job in (self._bin_job, self._dbg_job))

    def wait(self, timeout_s: float) -> None:
        """Until nothing is :attr:`pending`, at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for event in (self._download, *(j.done if j else None
                                         for j in (self._bin_job, self._dbg_job))):
            left = deadline - time.monotonic()
            if event is not None and left > 0:
                event.wait(left)
        left = deadline - time.monotonic()
        job = self._dbg_job            # set by the download just waited for
        if job is not None and left > 0:
            job.done.wait(left)

    def _note(self, source: str, exc: Refused) -> None:
        if self._refusals is not None:
            self._refusals.note_exc(source, exc)
        else:
            log.debug("refused %s: %s", source, exc)

    @property
    def usable(self) -> bool:
        """Something can answer, now or once the debug file is downloaded."""
        downloading = self._download is not None and not self._download.is_set()
        return not self.rejected and (self.binary is not None or self.debug is not None
                                      or downloading)

    def _find_debug(self, debug_dirs: Sequence[str], root: str) -> None:
        found: DebugFile | None = None
        if self.binary is not None:
            found = find_debug_file(self.binary, debug_dirs, root=root,
                                    refusals=self._refusals)
        elif self.build_id:   # the file is gone: the host's debug directories only
            found = find_by_build_id(self.build_id, debug_dirs, refusals=self._refusals)
        if found is None:
            return           # debuginfod, if any: in the background (_fetch)
        try:
            self.debug = ElfFile(found.fd, name=found.path, limits=self._limits)
            self.debug_source = "debuginfo_file"
        except Refused as exc:
            self._note("debug_file", exc)
        except Exception as exc:
            log.debug("cannot read debug file %s: %s", found.path, exc)
        finally:
            os.close(found.fd)

    def to_vaddr(self, file_offset: int) -> int | None:
        elf = self.binary or self.debug
        return elf.offset_to_vaddr(file_offset) if elf is not None else None

    def lookup(self, vaddr: int) -> RawAnswer | None:
        if self.rejected:
            return None
        for source, job in (("dwarf", self._bin_job), (self.debug_source, self._dbg_job)):
            if job is None or not job.done.is_set():
                continue
            if job.index is None:
                if job.reason and not job.noted:   # over its limits, malformed: the tables answer
                    job.noted = True
                    self._note("dwarf", Refused(job.reason, f"{job.name}: DWARF index skipped"))
                    if self._on_rejected is not None:
                        self._on_rejected(job.reason)
                continue
            try:
                found = job.index.lookup_entry(vaddr)
            except Exception as exc:   # a malformed index must not lose the frame
                log.debug("index look-up failed at 0x%x: %s", vaddr, exc)
                found = None
            if found is not None and found[0]:
                return source, self._outer_name(vaddr, *found), True
        if self._go is not None:
            go = gopclntab_object.answer(self._go, vaddr, self._note)
            if go is not None:
                return go[0], go[1], True      # final: nothing is built for it
        for source, table in self._tables:
            hit = table.lookup(vaddr)
            if hit is not None:
                return source, [(hit[0], hit[0], "", 0, 0)], False
        return None

    def _outer_name(self, vaddr: int, lines: list[IndexLine], entry: int,
                    indexed: str) -> list[IndexLine]:
        """SymCache names the outermost function by an ELF symbol at its
        lowest address (``indexed``). When that is a clone's piece, or
        ``vaddr`` is in one, other symbols there may belong to nothing (an
        empty ``ast2obj_expr.cold`` where ``_PyEval_EvalFrameDefault.cold``
        starts): our table's symbol holding ``vaddr``, when it starts where
        this range of the function does, names it."""
        system, _plain, file, line, decl = lines[-1]
        for _source, table in self._tables:
            hit = table.lookup(vaddr)
            if hit is None:
                continue
            if hit[1] == entry and (is_clone(hit[0]) or is_clone(indexed)):
                name = clean_name(hit[0])
                if name and name != system:
                    return [*lines[:-1], (name, name, file, line, decl)]
            break
        return self._public_name(vaddr, lines)

    def _public_name(self, vaddr: int, lines: list[IndexLine]) -> list[IndexLine]:
        """DWARF names C functions by their internal name (``__nanosleep``,
        ``__GI___wait4``); when the symbol table has the same function under a
        public name (``nanosleep``) show that one, as perf and eu-stack do."""
        system, plain, file, line, decl = lines[-1]
        if system.startswith(("_Z", "_R")):
            return lines
        for _source, table in self._tables:
            hit = table.lookup(vaddr)
            if hit is None:
                continue
            public = hit[0]
            if public != plain and public.lstrip("_") == plain.lstrip("_"):
                return [*lines[:-1], (system, public, file, line, decl)]
            return lines
        return lines

    def memory_bytes(self) -> int:
        """What this object keeps in memory: its symbol tables and the
        resident pages of its mapped indexes."""
        total = sum(t.memory_bytes() for _, t in self._tables)
        for job in (self._bin_job, self._dbg_job):
            if job is not None and job.index is not None:
                total += job.index.resident
        return total + 4096

    def measure(self, resident: Mapping[int, int]) -> None:
        """Note its indexes' resident bytes (by mapping start, from smaps)."""
        for job in (self._bin_job, self._dbg_job):
            if job is not None and job.index is not None:
                job.index.resident = resident.get(job.index.address, 0)

    def trim(self) -> None:
        """Drop the resident pages of its mapped indexes (they come back on
        use); the symbol tables stay."""
        for job in (self._bin_job, self._dbg_job):
            if job is not None and job.index is not None:
                job.index.trim()

    def close(self) -> None:
        if self._go is not None:
            self._go.close()
        for elf in (self.binary, self.debug):
            if elf is not None:
                elf.close()
        for job in (self._bin_job, self._dbg_job):
            if job is not None and job.index is not None:
                job.index.close()
