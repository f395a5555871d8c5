"""Receiver ``jfr``: record JVMs with Flight Recorder and read dropped files.

One named thread does everything, waiting on a stop Event:

* every ``scan_interval``: find JVMs (``pids`` / ``process_names`` /
  discovery), ``JFR.start`` a recording in each new one, and notice JVMs that
  exited (their dump-on-exit file is read when reachable);
* every ``duration``: ``JFR.dump`` each recording, parse the new chunks and
  emit one window of profiles per JVM (cpu, alloc, mutex, park, gc);
* every ``poll_interval`` (with ``directory``): read new ``.jfr`` files once
  their size held still for one poll.

Shutdown dumps a last window and stops every recording (``JFR.stop``).
Bad chunks are skipped, logged and counted (``receiver_refused_chunks``);
jcmd failures are counted (``jfr_jcmd_failures``) and the JVM retried at the
next scan. Nothing raised after start stops the thread.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from telegen.component import Consumer, CreateSettings, Host
from telegen.formats.jfr import Chunk, JfrError
from telegen.formats.jfr.topdata import ProfileBuilder
from telegen.helpers.emit import Emitter
from telegen.helpers.worker import Worker, guarded
from telegen.procinfo.identity import IdentityCache, host_attributes
from telegen.receivers.jfr.config import JfrReceiverConfig
from telegen.receivers.jfr.discovery import JvmProcess, find_jvms
from telegen.receivers.jfr.files import DroppedFiles
from telegen.receivers.jfr.session import JcmdError, JcmdTimeout, JvmSession, alive
from telegen.semconv import PROCESS_RUNTIME_NAME
from telegen.untrusted import Refusals, Refused


class JfrReceiver:
    def __init__(self, settings: CreateSettings, config: JfrReceiverConfig,
                 next_consumer: Consumer) -> None:
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._id = settings.id
        self._identity = IdentityCache(1024)
        self._name = f"receiver-{settings.id}"
        t = settings.telemetry
        self._emitter = Emitter(settings, next_consumer)
        self._refused_chunks = t.counter("receiver_refused_chunks")
        self._refused_files = t.counter("receiver_refused_files")
        self._attached = t.counter("jfr_recordings_started")
        self._jcmd_failures = t.counter("jfr_jcmd_failures")
        self._exited = t.counter("jfr_jvms_exited")
        self.refusals = Refusals(t, self._log)
        self._sessions: dict[int, JvmSession] = {}
        self._failed: dict[int, float] = {}       # pid -> when to retry
        self._retry_after: dict[int, float] = {}  # pid -> next back-off (doubles, 1 h at most)
        self._jcmd = shutil.which(config.jcmd) or config.jcmd
        self._files = DroppedFiles(config.directory, config.max_file_bytes,
                                   self.refusals) if config.directory else None
        self._worker = Worker(self._name, self._run)
        self._stop = self._worker.stopping
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self, host: Host) -> None:
        self._worker.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the thread, dump a last window and stop every recording."""
        self._stop.set()
        self._worker.join(timeout_s)
        with self._lock:
            for pid, session in list(self._sessions.items()):
                self._safe(self._dump_one, session)
                if pid not in self._sessions:
                    continue                # abandoned: its JVM does not answer
                try:
                    session.stop()
                except JcmdError as exc:
                    self._jcmd_failures.add(1)
                    self._log.warning("%s: stopping the recording of pid %d: %s",
                                      self._name, pid, exc)
                session.cleanup()
            self._sessions.clear()

    @property
    def recorded_pids(self) -> list[int]:
        return sorted(self._sessions)

    def _run(self) -> None:
        c = self._config
        next_scan = next_dump = next_poll = time.monotonic()
        next_dump += c.duration
        while not self._stop.is_set():
            now = time.monotonic()
            if self._files is not None and now >= next_poll:
                self._safe(self._poll_files)
                next_poll = now + c.poll_interval
            if now >= next_scan:
                self._safe(self._scan)
                next_scan = time.monotonic() + c.scan_interval
            if now >= next_dump:
                self._safe(self._dump_all)
                next_dump = time.monotonic() + c.duration
            wake = min(next_scan, next_dump, next_poll if self._files else next_dump)
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        guarded(self._log, self._name, fn, *args)

    # -- JVMs ------------------------------------------------------------------------
    def _scan(self) -> None:
        c = self._config
        with self._lock:
            for pid, session in list(self._sessions.items()):
                if not alive(pid):
                    self._gone(pid, session)
            if self._stop.is_set():
                return
            jvms = find_jvms(pids=c.pids, names=c.process_names, discover=c.discover)
            now = time.monotonic()
            for jvm in jvms:
                if jvm.pid in self._sessions or self._failed.get(jvm.pid, 0) > now:
                    continue
                if self._stop.is_set():
                    return
                self._attach(jvm)

    def _attach(self, jvm: JvmProcess) -> None:
        session = JvmSession(jvm, self._config, self._jcmd, self.refusals)
        try:
            session.start()
        except Refused as exc:          # the JVM's filesystem played a trick on us
            self.refusals.note("jfr_dump_directory", exc.reason, f"pid {jvm.pid}: {exc.detail}")
            self._back_off(jvm.pid)
            session.cleanup()
            return
        except (JcmdError, OSError) as exc:
            self._jcmd_failures.add(1)
            self._back_off(jvm.pid)
            self._log.warning("%s: cannot record pid %d (%s): %s", self._name, jvm.pid,
                              jvm.comm, exc)
            session.cleanup()
            return
        self._failed.pop(jvm.pid, None)
        self._retry_after.pop(jvm.pid, None)
        self._sessions[jvm.pid] = session
        self._attached.add(1)
        self._log.info("%s: recording pid %d (%s)", self._name, jvm.pid,
                       " ".join(jvm.cmdline[:4]))

    def _gone(self, pid: int, session: JvmSession) -> None:
        del self._sessions[pid]
        self._exited.add(1)
        name = session.exit_file()
        if name is not None:
            builder = self._builder(session.jvm)
            try:
                session.read_file(name, lambda chunk: self._add(builder, chunk),
                                  self._bad_chunk, missing_ok=True)
            except OSError as exc:
                self._log.warning("%s: reading the exit dump of pid %d: %s", self._name, pid, exc)
            self._emit(builder)
        session.cleanup()
        self._log.info("%s: pid %d exited; its recording ended with it", self._name, pid)

    def _dump_all(self) -> None:
        with self._lock:
            for session in list(self._sessions.values()):
                if self._stop.is_set():
                    return
                self._dump_one(session)

    def _dump_one(self, session: JvmSession) -> None:
        pid = session.jvm.pid
        if not alive(pid):
            return                      # the next scan reads its exit file
        builder = self._builder(session.jvm)
        try:
            session.dump(lambda chunk: self._add(builder, chunk), self._bad_chunk)
        except JcmdTimeout as exc:
            # A JVM that does not answer (e.g. its dump file is a FIFO nobody
            # reads) would cost jcmd_timeout per window under our lock: drop
            # the session and try again after a growing back-off.
            self._jcmd_failures.add(1)
            self._log.warning("%s: pid %d does not answer; recording again in %.0fs: %s",
                              self._name, pid, self._back_off(pid), exc)
            self._sessions.pop(pid, None)
            session.cleanup()
            return
        except (JcmdError, OSError) as exc:
            self._jcmd_failures.add(1)
            self._log.warning("%s: dump of pid %d failed: %s", self._name, pid, exc)
            return
        self._emit(builder)

    def _back_off(self, pid: int) -> float:
        """Retry ``pid`` later: 30 s (or scan_interval) first, doubling up to 1 h."""
        delay = self._retry_after.get(pid, max(30.0, self._config.scan_interval))
        self._retry_after[pid] = min(3600.0, delay * 2)
        self._failed[pid] = time.monotonic() + delay
        return delay

    def _builder(self, jvm: JvmProcess | None, source: str = "") -> ProfileBuilder:
        resource: dict[str, str | int] = {**host_attributes(), "telegen.receiver": str(self._id)}
        if jvm is not None:     # who (procinfo.identity): pid, executable, container, service
            resource.update(self._identity.attributes(jvm.pid, jvm, jvm.exe))
        resource[PROCESS_RUNTIME_NAME] = "java"
        if source:
            resource["jfr.file"] = source
        return ProfileBuilder(types=self._config.profile_types, resource=resource,
                              default_period_ns=self._config.period_ms * 1_000_000)

    def _add(self, builder: ProfileBuilder, chunk: Chunk) -> None:
        try:
            builder.add_chunk(chunk)
        except JfrError as exc:
            self._bad_chunk(exc)

    def _bad_chunk(self, exc: JfrError) -> None:
        self._refused_chunks.add(1)
        self._log.warning("%s: skipping a bad JFR chunk: %s", self._name, exc)

    def _emit(self, builder: ProfileBuilder) -> None:
        self._emitter.emit(builder.build())

    # -- dropped files ---------------------------------------------------------------
    def _poll_files(self) -> None:
        assert self._files is not None
        for path in self._files.ready():
            if self._stop.is_set():
                return
            self._read_dropped(path)

    def _read_dropped(self, path: str) -> None:
        builder = self._builder(None, os.path.basename(path))
        errors: list[JfrError] = []

        def on_error(exc: JfrError) -> None:
            errors.append(exc)
            self._bad_chunk(exc)

        chunks = self._files.read(path, lambda chunk: self._add(builder, chunk), on_error) \
            if self._files else 0
        if chunks < 0:                  # refused unread (noted): neither emitted nor deleted
            self._refused_files.add(1)
            return
        if chunks == 0 and errors:
            self._refused_files.add(1)
        self._emit(builder)
        if self._config.delete_after_read and self._files is not None:
            self._files.delete(path)
