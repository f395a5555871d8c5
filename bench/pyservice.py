"""The busy Python service both SDK benches run (``bench.python_sdk``,
``bench.python_sdk_phases``): an asyncio loop with 40 handler tasks serving
"requests" of ~1 ms CPU (10 slices) inside an OpenTelemetry span, 20 tasks
parked on a queue, and optionally a worker thread serving the same requests.
Between two slices a handler either yields to the loop (``await
asyncio.sleep(0)``: always runnable, so no task is ever blocked on a future
-- the sampler's worst case) or, with ``io``, waits 1 ms as on a database or
socket (``await asyncio.sleep(0.001)``); 40 handlers keep the loop busy
either way."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

SLICES_PER_REQUEST = 10     # a request: ~1 ms of CPU (10 slices of ~0.1 ms), one span


def slice_() -> int:
    x = 0
    for i in range(2000):
        x += i * i
    return x


class Service:
    """``more(kind)`` says whether the loop (``"async"``) or the worker
    (``"worker"``) takes another request; ``done`` counts slices."""

    def __init__(self, tracer: Any, more: Callable[[str], bool], io: bool = False) -> None:
        self.tracer = tracer
        self.more = more
        self.wait = 0.001 if io else 0.0
        self.done = {"async": 0, "worker": 0}

    def worker(self) -> None:
        done, span = self.done, self.tracer.start_as_current_span
        while self.more("worker"):
            with span("request"):
                for _ in range(SLICES_PER_REQUEST):
                    slice_()
                    done["worker"] += 1

    async def handler(self) -> None:
        done, span, wait = self.done, self.tracer.start_as_current_span, self.wait
        while self.more("async"):
            with span("handle"):
                for _ in range(SLICES_PER_REQUEST):
                    slice_()
                    done["async"] += 1
                    await asyncio.sleep(wait)

    async def main(self, alongside: Awaitable[Any] | None = None) -> None:
        q: asyncio.Queue[int] = asyncio.Queue()

        async def parked() -> None:
            await q.get()

        waiting = [asyncio.ensure_future(parked()) for _ in range(20)]
        jobs = [self.handler() for _ in range(40)]
        await asyncio.gather(*jobs, *([alongside] if alongside is not None else []))
        for t in waiting:
            t.cancel()

    def run(self, worker: bool, alongside: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Serve until ``more`` says no (the worker thread too, when asked)."""
        th = threading.Thread(target=self.worker, name="worker")
        if worker:
            th.start()
        asyncio.run(self.main(alongside() if alongside is not None else None))
        if worker:
            th.join()


def threads_cpu_s(prefix: str) -> float:
    """CPU seconds so far of this process's threads whose names start with
    ``prefix`` (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for th in threading.enumerate():
        if th.name.startswith(prefix) and th.native_id:
            try:
                with open(f"/proc/self/task/{th.native_id}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tracer() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    return trace.get_tracer("bench")
