"""Read pprof files matching glob patterns and hand each on as one profile.

Each file is read once per (size, mtime): the receiver remembers what it read.
With ``watch`` it keeps polling and reads a new or changed file once its size
and mtime held still for one poll, so half-written files are left alone (files
already present at start are read at once). A file that does not decode is
logged, counted (``receiver_refused_files``) and skipped until it changes.
Without ``watch`` the thread ends after the first pass and the receiver idles.
"""

from __future__ import annotations

import glob
import os

from telegen.component import Consumer, CreateSettings, Host
from telegen.formats.pprof import PprofError, decode
from telegen.helpers.emit import Emitter
from telegen.helpers.worker import Worker
from telegen.receivers.pprof.config import PprofReceiverConfig

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
        present = self._matches()
        count = 0
        for path in present:
            if self._stop.is_set():
                break
            try:
                st = os.stat(path)
            except OSError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if self._read.get(path) == sig:
                continue
            if not first and self._pending.get(path) != sig:
                self._pending[path] = sig     # read it next poll if it holds still
                continue
            self._pending.pop(path, None)
            self._read[path] = sig
            self._read_file(path)
            count += 1
        if self._config.watch:   # forget files that are gone
            gone = set(present)
            self._read = {p: s for p, s in self._read.items() if p in gone}
            self._pending = {p: s for p, s in self._pending.items() if p in gone}
        return count

    def _matches(self) -> list[str]:
        found: set[str] = set()
        for pattern in self._config.paths:
            for path in glob.glob(os.path.expanduser(pattern), recursive=True):
                if os.path.isfile(path):
                    found.add(os.path.abspath(path))
        return sorted(found)

    # -- one file ----------------------------------------------------------------
    def _read_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
            profile = decode(data)
        except (OSError, PprofError) as exc:
            self._refused_files.add(1)
            self._log.warning("%s: skipping %s: %s", self._name, path, exc)
            return
        if not self._emitter.emit([profile], source=path):
            return
        if self._config.delete_after_read:
            try:
                os.unlink(path)
            except OSError as exc:
                self._log.warning("%s: could not delete %s after reading: %s",
                                  self._name, path, exc)
            self._read.pop(path, None)
