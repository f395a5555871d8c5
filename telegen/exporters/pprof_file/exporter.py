"""Write one gzipped pprof file per profile type per ``consume`` call (one window).

Profiles of the same type in one call are merged into one file; resource
attributes that differ between them become sample labels (see
``telegen.helpers.windows``). Files are written atomically: a hidden temp file
in the same directory, fsync, ``os.replace``. After each write, retention
deletes the oldest files *this pattern makes* until at most ``max_files`` /
``max_bytes`` remain; the file just written is always kept.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from telegen.component import CreateSettings, Host
from telegen.exporters.pprof_file.config import PprofFileConfig
from telegen.formats.pprof import encode
from telegen.helpers.files import atomic_write
from telegen.helpers.windows import merge_by_type
from telegen.pdata import Profile, Profiles

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class PprofFileExporter:
    mutates_data = False

    def __init__(self, settings: CreateSettings, config: PprofFileConfig) -> None:
        self._config = config
        self._dir = Path(config.directory)
        self._names = config.name_regex()
        self._log = settings.logger
        self._id = str(settings.id)
        self._lock = threading.Lock()
        self._seq = 0
        t = settings.telemetry
        self._sent = t.counter("exporter_sent_samples")
        self._failed = t.counter("exporter_send_failed_samples")
        self._written = t.counter("exporter_files_written")
        self._deleted = t.counter("exporter_files_deleted")

    def start(self, host: Host) -> None:
        """Create the directory (fails fast) and continue the existing ``{seq}``."""
        self._dir.mkdir(parents=True, exist_ok=True)
        seqs = [int(m.group("seq")) for _, m in self._own_files()]
        self._seq = max(seqs, default=-1) + 1

    def shutdown(self, timeout_s: float = 30.0) -> None:
        pass

    def consume(self, profiles: Profiles) -> None:
        first_error: Exception | None = None
        with self._lock:
            for merged in merge_by_type(profiles):
                try:
                    path = self._write(merged)
                except Exception as exc:
                    self._failed.add(len(merged))
                    self._log.error("%s: writing %s profile to %s failed: %s",
                                    self._id, merged.name, self._dir, exc)
                    first_error = first_error or exc
                    continue
                self._sent.add(len(merged))
                self._written.add(1)
                self._retain(keep=path)
        if first_error is not None:
            raise first_error

    # -- writing -------------------------------------------------------------------
    def _file_name(self, profile: Profile) -> str:
        ns = profile.start_ns or time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ns / 1e9))
        kind = _UNSAFE.sub("_", profile.name) or "profile"
        while True:
            name = self._config.filename.format(type=kind, timestamp=stamp, seq=self._seq)
            self._seq += 1
            if not (self._dir / name).exists():
                return name

    def _write(self, profile: Profile) -> Path:
        final = self._dir / self._file_name(profile)
        atomic_write(final, encode(profile))
        return final

    # -- retention -----------------------------------------------------------------
    def _own_files(self) -> list[tuple[Path, re.Match[str]]]:
        out = []
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return []
        for entry in entries:
            m = self._names.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False):
                out.append((Path(entry.path), m))
        return out

    def _retain(self, keep: Path) -> None:
        max_files, max_bytes = self._config.max_files, self._config.max_bytes
        if not max_files and not max_bytes:
            return
        files = []
        for path, m in self._own_files():
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, int(m.group("seq")), path, st.st_size))
        files.sort()
        count, total = len(files), sum(f[3] for f in files)
        for _, _, path, size in files:
            if not ((max_files and count > max_files) or (max_bytes and total > max_bytes)):
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except OSError as exc:
                self._log.warning("%s: retention could not delete %s: %s", self._id, path, exc)
                continue
            self._deleted.add(1)
            count, total = count - 1, total - size

