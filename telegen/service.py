"""Builds the pipeline graph from a Config and runs it.

Collector semantics: a receiver or exporter listed in several pipelines is one
instance; each pipeline has its own processor instances. Start order is
extensions, exporters, processors (last first), receivers; shutdown is the
reverse so every buffered sample drains to the exporters before exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from telegen import registry
from telegen.component import ComponentID, Consumer, CreateSettings, Kind, PermanentError
from telegen.config import Config
from telegen.fanout import Fanout
from telegen.pdata import Profiles
from telegen.ptrace import Traces, TracesConsumer
from telegen.telemetry import MetricsServer, Registry

log = logging.getLogger("telegen.service")


class StartError(Exception):
    """A component could not start (missing privilege, bad BPF, port in use...)."""


class _Observed:
    """Counts what enters a processor/exporter and what it fails on."""

    def __init__(self, inner: Any, kind: Kind, cid: ComponentID, telemetry: Registry,
                 pipeline: str = "") -> None:
        self.inner = inner
        self.mutates_data = inner.mutates_data
        labels = {"kind": kind.value, "component": str(cid)}
        if pipeline:
            labels["pipeline"] = pipeline
        self._incoming = telemetry.counter("incoming_samples", **labels)
        self._failed = telemetry.counter("failed_samples", **labels)

    def consume(self, profiles: Profiles) -> None:
        n = profiles.sample_count()
        self._incoming.add(n)
        try:
            self.inner.consume(profiles)
        except Exception:
            self._failed.add(n)
            raise


class _ReceiverGuard:
    """What a receiver hands data to: errors downstream are counted and logged
    (once per distinct message per minute), never raised into the receiver.
    ``traces_enabled`` tells a receiver that also speaks traces whether it is
    in a ``traces`` pipeline (``consume_traces``)."""

    def __init__(self, cid: ComponentID, next_consumer: Consumer | None, telemetry: Registry,
                 traces: list[TracesConsumer] | None = None) -> None:
        self._next = next_consumer
        self._traces = traces or []
        self.traces_enabled = bool(self._traces)
        self._cid = cid
        self.mutates_data = False
        self._accepted = telemetry.counter("receiver_sent_samples", component=str(cid))
        self._refused = telemetry.counter("receiver_refused_samples", component=str(cid))
        self._spans_sent = telemetry.counter("receiver_sent_spans", component=str(cid))
        self._spans_refused = telemetry.counter("receiver_refused_spans", component=str(cid))
        self._last_logged: dict[str, float] = {}

    def consume(self, profiles: Profiles) -> None:
        n = profiles.sample_count()
        try:
            if self._next is None:
                raise PermanentError("this receiver is in no profiles pipeline")
            self._next.consume(profiles)
            self._accepted.add(n)
        except Exception as exc:
            self._refused.add(n)
            self._log_once(f"downstream failed, {n} samples dropped: {exc}")

    def consume_traces(self, traces: Traces) -> None:
        for consumer in self._traces:   # each exporter queues on its own: one failing is not all
            try:
                consumer.consume_traces(traces)
                self._spans_sent.add(traces.span_count)
            except Exception as exc:
                self._spans_refused.add(traces.span_count)
                self._log_once(f"traces downstream failed, {traces.span_count} spans "
                               f"dropped: {exc}")

    def _log_once(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(msg, -1e9) > 60:
            self._last_logged[msg] = now
            log.error("%s: %s", self._cid, msg)


@dataclass
class _Built:
    kind: Kind
    id: ComponentID
    component: Any
    pipeline: str = ""
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.kind.value} {self.id}" + (
            f" in {self.pipeline}" if self.pipeline else "")


class Service:
    def __init__(self, config: Config, telemetry: Registry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Registry()
        self._errors = self.telemetry.counter("component_errors")
        self._extensions: list[_Built] = []
        self._exporters: list[_Built] = []
        self._processors: list[_Built] = []      # in pipeline order, per pipeline
        self._receivers: list[_Built] = []
        self._started: list[_Built] = []
        self._metrics: MetricsServer | None = None
        self._stop = threading.Event()
        self._build()

    # -- Host ------------------------------------------------------------------
    def report_error(self, component: ComponentID, error: BaseException) -> None:
        self._errors.add(1)
        self.telemetry.counter("component_errors", component=str(component)).add(1)
        log.error("%s: %s", component, error)

    def extension(self, id: ComponentID) -> Any:
        return next((b.component for b in self._extensions if b.id == id), None)

    # -- graph -------------------------------------------------------------------
    def _create(self, kind: Kind, cid: ComponentID, next_consumer: Consumer | None,
                pipeline: str = "") -> _Built:
        factory = registry.get(kind, cid.type)
        if factory is None:   # config validation already rejects this
            raise StartError(f"no {kind.value} type {cid.type!r}")
        settings = CreateSettings(
            id=cid, kind=kind,
            telemetry=self.telemetry.for_component(kind.value, str(cid)),
            logger=logging.getLogger(f"telegen.{kind.value}.{cid}"),
        )
        cfg = self.config.components[kind][cid]
        return _Built(kind, cid, factory.create(settings, cfg, next_consumer), pipeline)

    def _build(self) -> None:
        pipelines = self.config.pipelines
        for cid in self.config.extensions:
            self._extensions.append(self._create(Kind.EXTENSION, cid, None))
        exporters: dict[ComponentID, Consumer] = {}
        raw: dict[ComponentID, Any] = {}
        for p in pipelines.values():
            for cid in p.exporters:
                if cid not in exporters:
                    built = self._create(Kind.EXPORTER, cid, None)
                    self._exporters.append(built)
                    raw[cid] = built.component
                    exporters[cid] = _Observed(built.component, Kind.EXPORTER, cid,
                                               self.telemetry)
        heads: dict[str, Consumer] = {}
        for pid, p in pipelines.items():
            if p.signal != "profiles":
                continue
            outs = [exporters[c] for c in p.exporters]
            nxt: Consumer = outs[0] if len(outs) == 1 else Fanout(outs)
            chain: list[_Built] = []
            for cid in reversed(p.processors):
                built = self._create(Kind.PROCESSOR, cid, nxt, pid)
                chain.insert(0, built)
                nxt = _Observed(built.component, Kind.PROCESSOR, cid, self.telemetry, pid)
            self._processors.extend(chain)
            heads[pid] = nxt
        receiver_ids: list[ComponentID] = []
        for p in pipelines.values():
            receiver_ids += [r for r in p.receivers if r not in receiver_ids]
        for cid in receiver_ids:
            firsts = [heads[pid] for pid, p in pipelines.items()
                      if cid in p.receivers and pid in heads]
            target: Consumer | None = (firsts[0] if len(firsts) == 1 else
                                       Fanout(firsts) if firsts else None)
            # traces pipelines: receivers -> exporters (forwarding), no processors
            forward = [raw[e] for p in pipelines.values()
                       if p.signal == "traces" and cid in p.receivers for e in p.exporters]
            guard = _ReceiverGuard(cid, target, self.telemetry, list(dict.fromkeys(forward)))
            self._receivers.append(self._create(Kind.RECEIVER, cid, guard))

    def components(self) -> list[_Built]:
        return self._extensions + self._exporters + self._processors + self._receivers

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        order = (self._extensions + self._exporters + list(reversed(self._processors))
                 + self._receivers)
        tel = self.config.telemetry
        if tel.metrics_enabled:
            host, _, port = tel.metrics_address.rpartition(":")
            try:
                self._metrics = MetricsServer(self.telemetry, host or "127.0.0.1", int(port))
            except OSError as exc:
                raise StartError(f"service::telemetry::metrics: cannot listen on "
                                 f"{tel.metrics_address}: {exc}") from exc
            self._metrics.start()
            log.info("metrics on http://%s:%s/metrics", *self._metrics.address[:2])
        for built in order:
            try:
                built.component.start(self)
            except Exception as exc:
                log.error("%s failed to start: %s", built.name, exc)
                self.shutdown()
                raise StartError(f"{built.kind.section}::{built.id}: failed to start: "
                                 f"{exc}") from exc
            self._started.append(built)
        log.info("started %d components in %d pipelines", len(self._started),
                 len(self.config.pipelines))

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop receivers first, then processors in pipeline order, then exporters."""
        started = {id(b) for b in self._started}
        order = self._receivers + self._processors + self._exporters + self._extensions
        for built in order:
            if id(built) not in started:
                continue
            try:
                built.component.shutdown(timeout_s)
            except Exception as exc:
                self.report_error(built.id, exc)
        self._started.clear()
        if self._metrics:
            self._metrics.stop()
            self._metrics = None

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None) -> None:
        """Start, wait for a signal or ``duration_s``, then drain and stop."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            self._wait(duration_s)
            log.info("stopping: flushing every processor and exporter")
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.telemetry.log_summary()

    def _wait(self, duration_s: float | None) -> None:
        """Until stopped or ``duration_s`` passed, waking twice a second: a
        signal the kernel delivers to another thread only runs its Python
        handler when the main thread wakes, and an untimed wait never does."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while True:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0 or self._stop.wait(left):
                return

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop.is_set():
            log.warning("signal %d again: already shutting down", signum)
            return
        log.info("signal %d received", signum)
        self._stop.set()
