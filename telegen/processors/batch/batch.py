"""Hold profiles for ``timeout``, merging those of the same type and resource."""

from __future__ import annotations

import logging
import threading

from telegen.component import Consumer, CreateSettings, Host
from telegen.helpers.ticker import Ticker
from telegen.pdata import Profile, Profiles
from telegen.processors.batch.config import BatchConfig


class BatchProcessor:
    mutates_data = True   # merges later windows into the profiles it holds

    def __init__(self, settings: CreateSettings, config: BatchConfig,
                 next_consumer: Consumer) -> None:
        self._next = next_consumer
        self._cfg = config
        self._log: logging.Logger = settings.logger
        self._lock = threading.Lock()
        self._pending: dict[tuple[object, ...], Profile] = {}
        self._ticker = Ticker(f"batch-{settings.id}", config.timeout, self.flush)
        t = settings.telemetry
        self._sent = t.counter("processor_batch_batch_send_size")
        self._by_size = t.counter("processor_batch_size_trigger_send")
        self._by_timeout = t.counter("processor_batch_timeout_trigger_send")
        self._failed = t.counter("processor_dropped_samples")
        self._started = False

    def start(self, host: Host) -> None:
        self._started = True
        self._ticker.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self._started:
            self._ticker.stop(timeout_s)
            self._started = False
        self.flush(reason="shutdown")

    def consume(self, profiles: Profiles) -> None:
        full: list[Profile] = []
        cap = self._cfg.send_batch_max_size
        with self._lock:
            for p in profiles:
                key = p.merge_key()
                held = self._pending.get(key)
                if held is None:
                    self._pending[key] = held = p
                else:
                    held.merge(p)
                if cap and len(held) >= cap:
                    full.append(self._pending.pop(key))
        if full:
            self._by_size.add(1)
            self._send(full)

    def flush(self, reason: str = "timeout") -> None:
        with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
        if batch:
            if reason == "timeout":
                self._by_timeout.add(1)
            self._send(batch)

    def _send(self, batch: list[Profile]) -> None:
        out = Profiles(batch)
        n = out.sample_count()
        try:
            self._next.consume(out)
            self._sent.add(n)
        except Exception as exc:
            # Nothing upstream can retry a merged batch: exporters own retries.
            self._failed.add(n)
            self._log.error("batch: sending %d samples failed: %s", n, exc)
