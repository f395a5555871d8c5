"""An asyncio service for the SDK tests.

Usage: python asyncapp.py ENDPOINT ASYNCIO(0|1) SECONDS REPORT [UPLOAD_INTERVAL]

Tasks suspended in known coroutines, in a 3:2:1 split:
  3 x sleeper -> nap -> asyncio.sleep
  2 x consumer -> asyncio.Queue.get (never fed)
  1 x wait_lock -> asyncio.Lock.acquire (held by holder, which sleeps)
Spans (opentelemetry-sdk): a thread burns CPU in ``crunch`` inside span
"crunch"; the consumers wait inside span "consume". Their ids go to REPORT
as JSON, with telegen.sdk.stats() at exit.
"""

import asyncio
import json
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import telegen.sdk

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("asyncapp")
ENDPOINT, ASYNC, SECONDS, REPORT = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), sys.argv[4]
UPLOAD = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
spans = {}


def ids(span):
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def crunch(stop):
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i * i
    return x


def cpu_thread(stop):
    with tracer.start_as_current_span("crunch") as span:
        spans["crunch"] = ids(span)
        crunch(stop)


async def nap():
    await asyncio.sleep(0.5)


async def sleeper():
    while True:
        await nap()


async def consumer(queue):
    with tracer.start_as_current_span("consume") as span:
        spans["consume"] = ids(span)
        await queue.get()


async def holder(lock):
    async with lock:
        await asyncio.sleep(3600)


async def wait_lock(lock):
    async with lock:
        pass


async def main():
    queue = asyncio.Queue()
    lock = asyncio.Lock()
    tasks = [asyncio.ensure_future(sleeper()) for _ in range(3)]
    tasks += [asyncio.ensure_future(consumer(queue)) for _ in range(2)]
    tasks.append(asyncio.ensure_future(holder(lock)))
    await asyncio.sleep(0.05)
    tasks.append(asyncio.ensure_future(wait_lock(lock)))
    await asyncio.sleep(SECONDS)
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    prof = telegen.sdk.start(endpoint=ENDPOINT, service_name="asyncapp", sample_rate=99,
                             asyncio=ASYNC, upload_interval=UPLOAD)
    stop = threading.Event()
    worker = threading.Thread(target=cpu_thread, args=(stop,), name="cruncher")
    worker.start()
    started = time.monotonic()
    asyncio.run(main())
    stop.set()
    worker.join()
    telegen.sdk.stop()
    with open(REPORT, "w") as f:
        json.dump({"spans": spans, "stats": prof.stats.as_dict() if prof else None,
                   "seconds": time.monotonic() - started}, f)
