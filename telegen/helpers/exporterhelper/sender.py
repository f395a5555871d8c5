"""The queue + retry machinery an exporter wraps around its ``send``.

``submit`` only enqueues (fast), so a slow or dead backend never holds up the
pipeline or the other exporters of a fan-out; ``num_consumers`` named threads
take requests off the queue and send them, retrying retryable failures with
jittered exponential backoff (honouring a server-given delay) until
``max_elapsed_time``. Telemetry (Collector names): ``exporter_sent_samples``,
``exporter_send_failed_samples``, ``exporter_enqueue_failed_samples``,
``exporter_retries``, gauge ``exporter_queue_size``.

Shutdown: no new retries; the threads try what is still queued once each until
the deadline. Requests that still fail are dropped (memory queue) or stay on
disk for the next start (``storage``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from telegen.component import CreateSettings, PermanentError
from telegen.helpers.exporterhelper.config import QueueConfig, RetryConfig
from telegen.helpers.exporterhelper.queue import MemoryQueue, PersistentQueue, Queue, Request
from telegen.helpers.exporterhelper.retry import Backoff, RetryableError

SendFunc = Callable[[Request], None]


class QueueFullError(Exception):
    """The sending queue is full: the request was not accepted."""


class QueuedSender:
    def __init__(self, settings: CreateSettings, queue: QueueConfig, retry: RetryConfig,
                 send: SendFunc) -> None:
        self._id = str(settings.id)
        self._log = settings.logger
        self._qcfg, self._rcfg, self._send = queue, retry, send
        t = settings.telemetry
        self._sent = t.counter("exporter_sent_samples")
        self._failed = t.counter("exporter_send_failed_samples")
        self._enqueue_failed = t.counter("exporter_enqueue_failed_samples")
        self._retries = t.counter("exporter_retries")
        self._requeued = t.counter("exporter_requests_restored")
        self._queue_size = t.gauge("exporter_queue_size")
        t.gauge("exporter_queue_capacity").set(queue.queue_size)
        self._queue: Queue
        self._disk: PersistentQueue | None = None
        if queue.storage:
            sub = re.sub(r"[^A-Za-z0-9_.-]", "_", self._id)
            self._disk = PersistentQueue(Path(queue.storage) / sub, queue.queue_size, self._log)
            self._queue = self._disk
        else:
            self._queue = MemoryQueue(queue.queue_size)
        self._closing = threading.Event()   # no more retries; drain what is queued
        self._abort = threading.Event()     # deadline passed: stop now
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        if not self._qcfg.enabled or self._threads:
            return
        if self._disk is not None:
            restored = self._disk.open()
            if restored:
                self._requeued.add(restored)
                self._log.info("%s: %d queued requests from a previous run will be sent",
                               self._id, restored)
        self._update_gauge()
        for i in range(self._qcfg.num_consumers):
            th = threading.Thread(target=self._run, name=f"exporter-{self._id}-sender-{i}",
                                  daemon=True)
            th.start()
            self._threads.append(th)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self._closing.set()
        deadline = time.monotonic() + timeout_s
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        for th in self._threads:
            th.join(1.0)
        self._update_gauge()

    # -- producer side -------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue ``request`` (or send it now when the queue is disabled)."""
        if not self._qcfg.enabled:
            self._deliver(request, None)
            return
        try:
            accepted = not self._closing.is_set() and self._queue.put(request)
        except OSError as exc:
            self._enqueue_failed.add(request.samples)
            raise QueueFullError(f"{self._id}: cannot write to the sending queue: {exc}") from exc
        if not accepted:
            self._enqueue_failed.add(request.samples)
            raise QueueFullError(f"{self._id}: sending queue is full "
                                 f"({self._qcfg.queue_size} requests); data dropped")
        self._update_gauge()

    # -- consumer side -------------------------------------------------------------
    def _run(self) -> None:
        while not self._abort.is_set():
            try:
                item = self._queue.get(0.2)
            except Exception:   # never let the thread die
                self._log.exception("%s: reading the sending queue failed", self._id)
                item = None
            if item is None:
                if self._closing.is_set():
                    return
                continue
            handle, request = item
            self._update_gauge()
            try:
                self._deliver(request, handle)
            except Exception:
                self._log.exception("%s: unexpected error while sending", self._id)
            self._update_gauge()

    def _deliver(self, request: Request, handle: object) -> None:
        """Send with retries. Raises only when the queue is disabled."""
        backoff = Backoff(self._rcfg)
        attempt = 0
        while True:
            attempt += 1
            try:
                self._send(request)
            except Exception as exc:
                error: Exception = exc
            else:
                self._sent.add(request.samples)
                self._finish(handle)
                return
            delay = error.delay_s if isinstance(error, RetryableError) else None
            wait = None
            if not isinstance(error, PermanentError) and self._rcfg.enabled \
                    and not self._closing.is_set():
                wait = backoff.next_wait(delay)
            if wait is None or self._abort.is_set():
                self._give_up(request, handle, error, attempt)
                if handle is None:
                    raise error
                return
            self._retries.add(1)
            self._log.warning("%s: send failed (%s), retrying in %.1fs", self._id, error, wait)
            woke = self._wait(wait)
            if woke and self._abort.is_set():
                self._give_up(request, handle, error, attempt)
                return

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early on shutdown; True if shutdown began."""
        return self._closing.wait(seconds)

    def _give_up(self, request: Request, handle: object, error: Exception, attempts: int) -> None:
        if self._disk is not None and handle is not None and self._closing.is_set() \
                and not isinstance(error, PermanentError):
            self._disk.release(handle)      # still on disk: sent after the restart
            self._log.info("%s: shutting down; request kept in %s", self._id,
                           self._qcfg.storage)
            return
        self._failed.add(request.samples)
        permanent = "permanent error" if isinstance(error, PermanentError) else \
            f"after {attempts} attempts"
        self._log.error("%s: dropping %d samples (%s): %s", self._id, request.samples,
                        permanent, error)
        self._finish(handle)

    def _finish(self, handle: object) -> None:
        if handle is not None:
            self._queue.done(handle)

    def _update_gauge(self) -> None:
        self._queue_size.set(self._queue.size())
