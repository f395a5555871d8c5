"""telegen's in-process profiler for Python applications.

One line in the application::

    import telegen.sdk; telegen.sdk.start(endpoint="127.0.0.1:4317", service_name="shop")

samples every thread's stack ``sample_rate`` times a second -- in the main
thread's SIGPROF handler driven by a per-thread timer when it can, else from a
daemon thread (``telegen-sdk-sampler``; see ``mode``) -- and, with ``asyncio=True``, the await
chain of every suspended asyncio task, so time spent awaiting shows under the
coroutine that awaits. Samples carry the OpenTelemetry span active in their
thread or task: ``start`` adds a SpanProcessor to the global opentelemetry-sdk
TracerProvider when there is one (or pass ``tracer_provider``; or add
``telegen.sdk.span_processor()`` yourself). Every ``upload_interval`` a second
thread (``telegen-sdk-uploader``) sends an OTLP profile (type ``wall``:
``samples/count`` + ``wall/nanoseconds``, frames ``module.function`` with
file:line, labels ``tid``, ``thread_name``, ``task_name``) over gRPC to
telegen's ``otlp`` receiver or any OTLP profiles endpoint.

Importing this module loads only the standard library; gRPC and the OTLP
encoder are imported by the uploader thread. Nothing here raises into the
application: ``start`` logs and returns None on bad arguments, and a down
agent only fills a bounded queue whose drops are counted (``stats()``).
The sampling core runs on CPython 3.8+; the OTLP encoder is the agent's
(Python 3.11+).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from telegen.sdk.sampler import Sampler
from telegen.sdk.spans import SpanTracker, make_span_processor
from telegen.sdk.stats import Stats
from telegen.sdk.uploader import Uploader

__all__ = ["Profiler", "start", "stop", "stats", "span_processor"]

log = logging.getLogger("telegen.sdk")
_lock = threading.Lock()
_profiler: Profiler | None = None
_started_with: dict[str, Any] = {}         # Profiler arguments, for a forked child


class Profiler:
    """A running sampler + uploader pair; see :func:`start`."""

    def __init__(self, *, endpoint: str, service_name: str, sample_rate: int,
                 asyncio: bool, upload_interval: float, max_stacks: int, max_pending: int,
                 timeout: float, headers: dict[str, str] | None,
                 resource: dict[str, str | int] | None, mode: str = "auto",
                 max_tasks_per_tick: int = 0, tracker: SpanTracker | None = None) -> None:
        self.stats = Stats()
        self.tracker = tracker or SpanTracker()
        self.sampler = Sampler(rate=sample_rate, asyncio=asyncio, tracker=self.tracker,
                               stats=self.stats, max_stacks=max_stacks, mode=mode,
                               max_tasks=max_tasks_per_tick)
        self.uploader = Uploader(self.sampler, self.stats, endpoint=endpoint,
                                 service_name=service_name, upload_interval=upload_interval,
                                 timeout=timeout, max_pending=max_pending, headers=headers,
                                 resource=resource)
        self._processor: Any = None

    def start(self) -> None:
        self.sampler.start()
        self.uploader.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and send what is left (waits at most ~``timeout_s``)."""
        self.sampler.stop(timeout_s)
        self.uploader.stop(timeout_s)

    def span_processor(self) -> Any:
        if self._processor is None:
            self._processor = make_span_processor(self.tracker)
        return self._processor

    def attach(self, tracer_provider: Any = None) -> bool:
        """Add the span processor to ``tracer_provider`` (default: the global one)
        when it is an opentelemetry-sdk TracerProvider."""
        try:
            if tracer_provider is None:
                from opentelemetry import trace

                tracer_provider = trace.get_tracer_provider()
            add = getattr(tracer_provider, "add_span_processor", None)
            if add is None:
                return False
            add(self.span_processor())
            return True
        except Exception as exc:
            log.info("telegen.sdk: no span context for profiles: %r", exc)
            return False


def _check(sample_rate: int, upload_interval: float, endpoint: str) -> None:
    if not 1 <= int(sample_rate) <= 1000:
        raise ValueError(f"sample_rate must be between 1 and 1000 Hz (got {sample_rate})")
    if not upload_interval > 0:
        raise ValueError(f"upload_interval must be > 0 seconds (got {upload_interval})")
    if not endpoint or ":" not in endpoint:
        raise ValueError(f"endpoint must be host:port (got {endpoint!r})")


def start(*, endpoint: str = "127.0.0.1:4317", service_name: str = "",
          sample_rate: int = 99, asyncio: bool = False, upload_interval: float = 10.0,
          tracer_provider: Any = None, max_stacks: int = 20000, max_pending: int = 6,
          timeout: float = 5.0, headers: dict[str, str] | None = None,
          resource: dict[str, str | int] | None = None, mode: str = "auto",
          max_tasks_per_tick: int = 2) -> Profiler | None:
    """Start profiling this process (once; later calls return the running
    profiler). Returns None, after logging why, when it cannot start.

    ``mode`` -- what drives the sampling: ``signal`` (SIGPROF from a timer to
    the main thread; the sampling runs there, no GIL hand-off), ``thread`` (a
    thread that waits for the GIL at every tick), ``auto`` (``signal`` when
    started from the main thread on Linux with SIGPROF unused, else
    ``thread``). See :mod:`telegen.sdk.sampler`.

    ``max_tasks_per_tick`` -- with more asyncio tasks than this, a tick
    visits them in rotation and each sample counts for the ticks it stands
    for (0: every task at every tick); see :class:`telegen.sdk.tasks.ChainWalker`.
    A task sample costs ~10 us (its visit in a tick, its count in a fold;
    measured: 4 -> 2 took the SDK's own time from 0.74-0.82% to 0.57-0.58%
    of a busy service's CPU at 99 Hz); 2 gives ~200 task samples a second."""
    global _profiler
    try:
        with _lock:
            if _profiler is not None:
                return _profiler
            _check(sample_rate, upload_interval, endpoint)
            if not service_name:
                import sys

                from telegen.semconv import SERVICE_NAME, parse_resource_attributes

                # as the OpenTelemetry SDKs: OTEL_SERVICE_NAME, else service.name
                # in OTEL_RESOURCE_ATTRIBUTES; then (telegen's order for every
                # receiver) the executable's name, never a bare unknown_service
                service_name = os.environ.get("OTEL_SERVICE_NAME") or \
                    parse_resource_attributes(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
                                              ).get(SERVICE_NAME) or \
                    os.path.basename(sys.executable)
            args = dict(endpoint=endpoint, service_name=service_name,
                        sample_rate=int(sample_rate), asyncio=bool(asyncio),
                        upload_interval=float(upload_interval), max_stacks=max_stacks,
                        max_pending=max_pending, timeout=timeout, headers=headers,
                        resource=resource, mode=mode, max_tasks_per_tick=int(max_tasks_per_tick))
            prof = Profiler(**args)             # type: ignore[arg-type]
            prof.attach(tracer_provider)
            prof.start()
            _profiler = prof
            if not _started_with and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _started_with.clear()
            _started_with.update(args)
            return prof
    except Exception as exc:
        log.warning("telegen.sdk: profiler not started: %s", exc)
        return None


def _after_fork_in_child() -> None:
    """A forked child (a pre-forking server's worker) gets a profiler of its own:
    the parent's threads and timer did not survive the fork. It keeps the span
    processor already on the TracerProvider (and so its tracker, minus the
    spans of threads that are not in the child)."""
    global _lock, _profiler
    _lock = threading.Lock()            # another parent thread may have held it
    old, _profiler = _profiler, None
    if old is None:
        return
    try:
        old.sampler.forget_after_fork()
        old.tracker.after_fork()
        prof = Profiler(**_started_with, tracker=old.tracker)
        prof._processor = old._processor
        prof.start()
        _profiler = prof
    except Exception as exc:
        log.warning("telegen.sdk: not profiling the forked child: %r", exc)


def stop(timeout_s: float = 5.0) -> None:
    """Stop the profiler started by :func:`start` and flush (never raises)."""
    global _profiler
    with _lock:
        prof, _profiler = _profiler, None
    if prof is not None:
        try:
            prof.stop(timeout_s)
        except Exception as exc:
            log.warning("telegen.sdk: stopping: %r", exc)


def stats() -> dict[str, int]:
    """Counters of the running profiler (empty when not started)."""
    prof = _profiler
    return prof.stats.as_dict() if prof is not None else {}


def span_processor() -> Any:
    """The running profiler's SpanProcessor, to add to a TracerProvider by hand."""
    prof = _profiler
    return prof.span_processor() if prof is not None else None
