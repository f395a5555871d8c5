"""Read pprof files matching glob patterns and hand each on as one profile.

Each file is read once per (size, mtime): the receiver remembers what it read.
With ``watch`` it keeps polling and reads a new or changed file once its size
and mtime held still for one poll, so half-written files are left alone (files
already present at start are read at once). A file that does not decode is
logged, counted (``receiver_refused_files``) and skipped until it changes.
Without ``watch`` the thread ends after the first pass and the receiver idles.

What the patterns match is not trusted (:mod:`telegen.helpers.dropdir`): no
symlink is followed (a watched directory swapped for one is refused, so
``delete_after_read`` never unlinks through it), only regular files are read,
at most ``max_file_bytes`` each, and a file is deleted through its directory's
descriptor only while its name still names the file read. Refusals are
counted as ``refused_inputs{source="pprof_file",reason}``, logged once.
"""

from __future__ import annotations

from telegen.component import Consumer, CreateSettings, Host
from telegen.formats.pprof import PprofError, decode
from telegen.helpers import dropdir
from telegen.helpers.emit import Emitter
from telegen.helpers.worker import Worker
from telegen.receivers.pprof.config import PprofReceiverConfig
from telegen.untrusted import Refusals, Refused

Signature = tuple[int, int]   # (size, mtime_ns)


class PprofReceiver:
    def __init__(self, settings: CreateSettings, config: PprofReceiverConfig,
                 next_consumer: Consumer) -> None:
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._name = f"receiver-{settings.id}"
        t = settings.telemetry
        self._emitter = Emitter(settings, next_consumer)
        self._refused_files = t.counter("receiver_refused_files")
        self.refusals = Refusals(t, self._log)
        self._noted: set[tuple[str, str]] = set()
        self._read: dict[str, Signature] = {}      # what we read (or refused)
        self._pending: dict[str, Signature] = {}   # seen once, waiting to hold still
        self._worker = Worker(self._name, self._run)
        self._stop = self._worker.stopping

    def start(self, host: Host) -> None:
        self._worker.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop polling; the file in progress is finished first."""
        self._stop.set()
        self._worker.join(timeout_s)

    # -- polling -----------------------------------------------------------------
    def _run(self) -> None:
        self._safe_scan(first=True)
        if not self._config.watch:
            return
        while not self._stop.wait(self._config.poll_interval):
            self._safe_scan(first=False)

    def _safe_scan(self, *, first: bool) -> None:
        try:
            self.scan(first=first)
        except Exception:  # never let a poll kill the thread
            self._log.exception("%s: scanning %s failed", self._name, self._config.paths)

    def scan(self, *, first: bool = True) -> int:
        """One pass over the patterns; returns how many files were read."""
        found = self._matches()
        present = [f.path for f in found]
        count = 0
        for entry in found:
            if self._stop.is_set():
                break
            path, sig = entry.path, entry.signature
            if self._read.get(path) == sig:
                continue
            if not first and self._pending.get(path) != sig:
                self._pending[path] = sig     # read it next poll if it holds still
                continue
            self._pending.pop(path, None)
            self._read[path] = sig
            self._read_file(entry)
            count += 1
        if self._config.watch:   # forget files that are gone
            gone = set(present)
            self._read = {p: s for p, s in self._read.items() if p in gone}
            self._pending = {p: s for p, s in self._pending.items() if p in gone}
        return count

    def _matches(self) -> list[dropdir.Found]:
        found: dict[str, dropdir.Found] = {}
        for pattern in self._config.paths:
            for entry in dropdir.find(pattern, self._refused):
                found.setdefault(entry.path, entry)
        if len(self._noted) > 4096:
            self._noted.clear()
        return [found[p] for p in sorted(found)]

    def _refused(self, path: str, exc: Refused) -> None:
        if (path, exc.reason) not in self._noted:      # once per file, not per poll
            self._noted.add((path, exc.reason))
            self.refusals.note("pprof_file", exc.reason, exc.detail)

    # -- one file ----------------------------------------------------------------
    def _read_file(self, entry: dropdir.Found) -> None:
        path = entry.path
        try:
            data = dropdir.read(path, self._config.max_file_bytes)
        except Refused as exc:
            self._refused_files.add(1)
            self._refused(path, exc)
            return
        except OSError as exc:          # gone, or unreadable, since it was listed
            self._refused_files.add(1)
            self._log.warning("%s: skipping %s: %s", self._name, path, exc)
            return
        try:
            profile = decode(data)
        except (OSError, PprofError) as exc:
            self._refused_files.add(1)
            self._log.warning("%s: skipping %s: %s", self._name, path, exc)
            return
        if not self._emitter.emit([profile], source=path):
            return
        if self._config.delete_after_read:
            try:
                dropdir.unlink(path, entry)
            except Refused as exc:
                self._refused(path, exc)
            except OSError as exc:
                self._log.warning("%s: could not delete %s after reading: %s",
                                  self._name, path, exc)
            self._read.pop(path, None)
