"""Hold samples for ``delay``, then link them to spans and pass them on.

Batches that need time-based linking (some sample has pid, tid and
timestamps and no link yet) wait in a FIFO for ``delay`` so the spans active
when they were taken — exported by SDKs only when they end — can arrive
first; other batches pass through at once (span labels normalised). One
named thread releases due batches; past ``max_pending_samples`` the oldest
batches are released early. After linking, the linked samples are recorded
in the span store for the per-span view, and the newest released timestamp
is reported so spans arriving after it are counted late.

Telemetry: ``spanlink_linked_samples`` / ``spanlink_unlinked_samples``
(sample events by timestamp), ``spanlink_split_samples``,
``spanlink_normalised_samples``, ``spanlink_unresolved_span_labels``,
``spanlink_early_released_samples``, ``spanlink_dropped_samples``, gauge
``spanlink_pending_samples``; late spans are ``spanstore_late_spans``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from telegen.component import ComponentID, ConfigError, Consumer, CreateSettings, Host
from telegen.pdata import Profiles
from telegen.processors.spanlink.config import SpanLinkConfig
from telegen.processors.spanlink.link import LinkCounts, link_profile


def _needs_time(profiles: Profiles) -> bool:
    for p in profiles:
        for s in p:
            if s.link is None and s.timestamps:
                return True
    return False


class SpanLinkProcessor:
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: SpanLinkConfig,
                 next_consumer: Consumer) -> None:
        self._cfg = config
        self._next = next_consumer
        self._id = str(settings.id)
        self._log = settings.logger
        self._t = settings.telemetry
        self._pending_gauge = self._t.gauge("spanlink_pending_samples")
        self._lock = threading.Lock()
        self._held: deque[tuple[float, Profiles, int]] = deque()
        self._pending = 0
        self._store: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, host: Host) -> None:
        cid = ComponentID.parse(self._cfg.spanstore, f"processors::{self._id}::spanstore")
        store = host.extension(cid) if host is not None else None
        if store is None or not hasattr(store, "index"):
            raise ConfigError(f"processors::{self._id}::spanstore",
                              f"extension \"{cid}\" is not running; configure a spanstore "
                              f"under extensions and list it in service::extensions")
        self._store = store
        self._thread = threading.Thread(target=self._run, name=f"processor-{self._id}",
                                        daemon=True)
        self._thread.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._thread = None
        self._release(force=True)

    def consume(self, profiles: Profiles) -> None:
        if self._store is None or not _needs_time(profiles):
            self._link_and_send(profiles)
            return
        n = profiles.sample_count()
        with self._lock:
            self._held.append((time.monotonic() + self._cfg.delay, profiles, n))
            self._pending += n
            over = self._pending > self._cfg.max_pending_samples
        self._pending_gauge.set(self._pending)
        if over:
            self._wake.set()

    # -- release ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._release()
            except Exception:   # never let the thread die
                self._log.exception("%s: releasing held samples failed", self._id)
            with self._lock:
                due = self._held[0][0] - time.monotonic() if self._held else 0.25
            self._wake.wait(min(max(due, 0.01), 0.25))
            self._wake.clear()

    def _release(self, force: bool = False) -> None:
        while True:
            with self._lock:
                if not self._held:
                    break
                due, profiles, n = self._held[0]
                early = self._pending > self._cfg.max_pending_samples
                if not (force or early or due <= time.monotonic()):
                    break
                self._held.popleft()
                self._pending -= n
            self._pending_gauge.set(self._pending)
            if early and not force:
                self._t.counter("spanlink_early_released_samples").add(n)
            self._link_and_send(profiles)

    def _link_and_send(self, profiles: Profiles) -> None:
        n = profiles.sample_count()
        try:
            if self._store is not None:
                self._link(profiles)
        except Exception as exc:    # pass the samples on unlinked rather than lose them
            self._log.error("%s: linking failed, %d samples sent unlinked: %s",
                            self._id, n, exc)
        try:
            self._next.consume(profiles)
        except Exception as exc:
            self._t.counter("spanlink_dropped_samples").add(n)
            self._log.error("%s: sending %d samples failed: %s", self._id, n, exc)

    def _link(self, profiles: Profiles) -> None:
        store = self._store
        counts = LinkCounts()
        for p in profiles:
            link_profile(p, store.index.find, store.index.get, counts)
            linked = [s for s in p if s.link is not None]
            if linked:
                store.record(p, linked)
        if counts.max_ts:
            store.index.mark_released(counts.max_ts)
        for name in ("linked", "unlinked", "split", "normalised"):
            value = getattr(counts, name)
            if value:
                self._t.counter(f"spanlink_{name}_samples").add(value)
        if counts.unresolved:
            self._t.counter("spanlink_unresolved_span_labels").add(counts.unresolved)
