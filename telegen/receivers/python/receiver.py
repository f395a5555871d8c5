"""Receiver ``python``: sample CPython processes from outside.

One named thread, waiting on a stop Event, runs everything:

* every ``scan_interval``: find targets (``pids`` / ``process_names`` /
  discovery) and start a recording window in each new one;
* when a target's window ends (its duration passed or the process exited):
  turn the stacks into one profile, send it on, and start the next window
  while the process lives;
* a target whose recording failed is retried at a later scan; failures are
  counted (``python_sampling_failures``) and logged once per change of a
  target's state (ok -> "permission denied" -> ok...).

Shutdown ends every window early (py-spy writes what it has on SIGINT) and
sends those last partial windows. Nothing raised after start stops the thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegen.component import Consumer, CreateSettings, Host
from telegen.helpers.emit import Emitter
from telegen.helpers.worker import Worker, guarded
from telegen.pdata import Profile
from telegen.procinfo import alive
from telegen.procinfo.identity import IdentityCache, host_attributes
from telegen.receivers.python.config import PythonReceiverConfig
from telegen.receivers.python.convert import FrameCache, build_profile
from telegen.receivers.python.discovery import PythonProcess, find_pythons
from telegen.receivers.python.engine import Engine, EngineError, EngineOptions, Recording
from telegen.receivers.python.pyspy import PySpyEngine, find_py_spy
from telegen.semconv import PROCESS_RUNTIME_NAME, PROCESS_RUNTIME_VERSION

_TICK_S = 0.1


@dataclass
class _Target:
    process: PythonProcess
    recording: Recording | None = None
    start_ns: int = 0
    state: str = "new"
    retry_at: float = 0.0
    windows: int = field(default=0)


def _alive(pid: int) -> bool:
    return alive(pid)


class PythonReceiver:
    def __init__(self, settings: CreateSettings, config: PythonReceiverConfig,
                 next_consumer: Consumer, engine: Engine | None = None) -> None:
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._id = settings.id
        self._name = f"receiver-{settings.id}"
        t = settings.telemetry
        self._emitter = Emitter(settings, next_consumer)
        self._started = t.counter("python_targets_started")
        self._exited = t.counter("python_targets_exited")
        self._failures = t.counter("python_sampling_failures")
        self._engine = engine
        self._targets: dict[int, _Target] = {}
        self._frames = FrameCache()
        self._options = EngineOptions(rate=config.sample_rate, seconds=config.window_seconds,
                                      include_idle=config.include_idle,
                                      gil_only=config.gil_only, native=config.native,
                                      nonblocking=config.nonblocking)
        self._identity = IdentityCache(1024)
        self._worker = Worker(self._name, self._run)
        self._stop = self._worker.stopping
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self, host: Host) -> None:
        if self._engine is None:
            exe = find_py_spy(self._config.py_spy)
            if exe is None:
                raise RuntimeError(f"{self._id}: py-spy not found (pip install py-spy, or set "
                                   f"py_spy: /path/to/py-spy)")
            self._engine = PySpyEngine(exe)
        if self._config.native and self._config.nonblocking:
            self._log.info("%s: native: true pauses each target for every sample (py-spy "
                           "unwinds native stacks only from a paused thread); nonblocking "
                           "does not apply", self._name)
        if self._config.asyncio:
            self._log.info("%s: asyncio await chains come from the in-process SDK "
                           "(telegen.sdk, asyncio=True); this receiver sees thread stacks",
                           self._name)
        self._worker.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the thread, end every window early and send it."""
        self._stop.set()
        self._worker.join(timeout_s)
        with self._lock:
            for target in self._targets.values():
                if target.recording is not None:
                    target.recording.stop()
            for target in list(self._targets.values()):
                self._safe(self._finish, target, min(timeout_s, 10.0))
                if target.recording is not None:
                    target.recording.cancel()
                    target.recording = None
            self._targets.clear()
        close = getattr(self._engine, "close", None)
        if close is not None:
            close()

    @property
    def sampled_pids(self) -> list[int]:
        with self._lock:
            return sorted(p for p, t in self._targets.items() if t.recording is not None)

    def _run(self) -> None:
        next_scan = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_scan:
                self._safe(self._scan)
                next_scan = time.monotonic() + self._config.scan_interval
            self._safe(self._collect)
            self._stop.wait(_TICK_S)

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        guarded(self._log, self._name, fn, *args)

    # -- targets ---------------------------------------------------------------------
    def _scan(self) -> None:
        c = self._config
        found = find_pythons(pids=c.pids, names=c.process_names, discovery=c.discovery)
        now = time.monotonic()
        with self._lock:
            for p in found:
                if self._stop.is_set():
                    return
                target = self._targets.get(p.pid)
                if target is None:
                    target = self._targets[p.pid] = _Target(p)
                    self._log.info("%s: sampling pid %d (%s)", self._name, p.pid,
                                   " ".join(p.cmdline[:4]))
                if target.recording is None and target.retry_at <= now:
                    self._begin(target)

    def _begin(self, target: _Target) -> None:
        assert self._engine is not None
        pid = target.process.pid
        try:
            target.recording = self._engine.record(pid, self._options)
        except EngineError as exc:
            self._failed(target, exc)
            return
        target.start_ns = time.time_ns()
        if target.windows == 0:
            self._started.add(1)

    def _collect(self) -> None:
        with self._lock:
            for pid, target in list(self._targets.items()):
                rec = target.recording
                if rec is None:
                    if not _alive(pid):
                        self._gone(pid)
                    continue
                if not rec.done():
                    continue
                self._finish(target, 10.0)
                if self._stop.is_set():
                    return
                if _alive(pid) and target.recording is None and \
                        target.retry_at <= time.monotonic():
                    self._begin(target)
                elif not _alive(pid):
                    self._gone(pid)

    def _finish(self, target: _Target, timeout_s: float) -> None:
        rec, target.recording = target.recording, None
        if rec is None:
            return
        pid = target.process.pid
        try:
            stacks = rec.result(timeout_s)
        except EngineError as exc:
            if _alive(pid):
                self._failed(target, exc)
            return
        target.windows += 1
        self._set_state(target, "ok", "")
        if not stacks:
            return
        profile = build_profile(stacks, rate=self._config.sample_rate, start_ns=target.start_ns,
                                duration_ns=max(0, time.time_ns() - target.start_ns),
                                resource=self._resource(target.process),
                                wall=self._config.include_idle, frames=self._frames)
        self._emit(profile)

    def _failed(self, target: _Target, exc: EngineError) -> None:
        self._failures.add(1)
        target.retry_at = time.monotonic() + max(10.0, self._config.scan_interval)
        self._set_state(target, exc.reason, str(exc))

    def _set_state(self, target: _Target, state: str, detail: str) -> None:
        if state == target.state:
            return
        before, target.state = target.state, state
        pid = target.process.pid
        if state == "ok":
            if before not in ("new", "ok"):
                self._log.info("%s: pid %d samples again", self._name, pid)
        else:
            self._log.warning("%s: cannot sample pid %d (%s); retrying every %.0fs: %s",
                              self._name, pid, state, max(10.0, self._config.scan_interval),
                              detail)

    def _gone(self, pid: int) -> None:
        target = self._targets.pop(pid, None)
        if target is None:
            return
        if target.recording is not None:
            target.recording.cancel()
        self._exited.add(1)
        self._log.info("%s: pid %d exited", self._name, pid)

    def _resource(self, p: PythonProcess) -> dict[str, str | int]:
        # host, then who the process is (procinfo.identity: pid, executable,
        # container, pod, its OTEL_SERVICE_NAME), then what runs it
        res: dict[str, str | int] = {**host_attributes(), "telegen.receiver": str(self._id)}
        res.update(self._identity.attributes(p.pid, p, p.exe))
        res[PROCESS_RUNTIME_NAME] = "cpython"
        if p.version is not None:
            res[PROCESS_RUNTIME_VERSION] = f"{p.version[0]}.{p.version[1]}"
        return res

    def _emit(self, profile: Profile) -> None:
        self._emitter.emit([profile])
