"""Overhead of the in-process SDK (telegen.sdk) on a busy Python service,
side by side in one run.

The service (a child process): an asyncio loop with 40 handler tasks and one
worker thread, each serving "requests" of ~1 ms CPU (10 slices, yielding to
the loop between slices) inside an OpenTelemetry span, plus 20 tasks parked
on a queue. Throughput is completed slices per CPU-second of the service
process (the SDK's own threads included): robust to other load on the host,
which wall-clock throughput is not (also printed). Rounds alternate without /
with the SDK (99 Hz, asyncio=True, uploading to a real OTLP gRPC backend in
this process at the SDK's default interval, 10 s), in ABBA order so drift on
the host does not favour either side; medians are compared. A round with the
SDK ends after ``telegen.sdk.stop()``, which encodes and sends what was
sampled since the last upload: every sample taken in the round is paid for
inside the round. Target: <= 2%. Also printed: each round pair's overhead
(median and spread) and how much of the CPU the SDK's own threads and the
final flush took (the rest is the application's threads running slower).

``--variants`` measures more than none/sdk in the same interleaved rounds, to
see where the cost lies: ``bare`` is no SDK but one thread waking at the rate
that only calls ``sys._current_frames()`` (the floor of any in-process
sampler that takes the GIL); ``threads`` is the SDK with ``asyncio=False``.
``--no-worker`` drops the worker thread (one asyncio thread: no GIL contention
between application threads).

    python -m bench.python_sdk [--seconds 20] [--rounds 6] [--rate 99]
                               [--variants none,bare,threads,sdk] [--no-worker]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICES_PER_REQUEST = 10     # a request: ~1 ms of CPU (10 slices of ~0.1 ms), one span


VARIANTS = ("none", "bare", "threads", "sdk")


def _bare_sampler(rate: int) -> None:
    """A thread that wakes ``rate`` times a second and only takes the GIL to
    call sys._current_frames(): what any in-process sampler pays at least."""
    def run() -> None:
        while True:
            time.sleep(1.0 / rate)
            sys._current_frames()

    threading.Thread(target=run, name="telegen-sdk-bare", daemon=True).start()


def child(seconds: float, variant: str, endpoint: str, rate: int, worker_thread: bool) -> None:
    import asyncio

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("bench")
    prof = None
    sdk = variant in ("threads", "sdk")
    if sdk:
        import telegen.sdk

        prof = telegen.sdk.start(endpoint=endpoint, service_name="bench", sample_rate=rate,
                                 asyncio=variant == "sdk")   # default upload interval: 10 s
    elif variant == "bare":
        _bare_sampler(rate)
    done = [0]
    stop = threading.Event()

    def slice_() -> int:
        x = 0
        for i in range(2000):
            x += i * i
        return x

    def worker() -> None:
        while not stop.is_set():
            with tracer.start_as_current_span("request"):
                for _ in range(SLICES_PER_REQUEST):
                    slice_()
                    done[0] += 1

    async def handler() -> None:
        while True:
            with tracer.start_as_current_span("handle"):
                for _ in range(SLICES_PER_REQUEST):
                    slice_()
                    done[0] += 1
                    await asyncio.sleep(0)

    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue()

        async def parked() -> None:
            await q.get()

        tasks = [asyncio.ensure_future(handler()) for _ in range(40)]
        tasks += [asyncio.ensure_future(parked()) for _ in range(20)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()

    th = threading.Thread(target=worker, name="worker")
    if worker_thread:
        th.start()
    c0 = os.times()
    t0 = time.monotonic()
    asyncio.run(main())
    ops = done[0]
    stop.set()
    if worker_thread:
        th.join()
    sdk_cpu = _sdk_threads_cpu()        # for the report only: what the SDK's own threads used
    c_stop = os.times()
    if sdk:
        import telegen.sdk

        telegen.sdk.stop()              # the last interval's upload counts too
    stats = prof.stats.as_dict() if prof is not None else {}
    elapsed = time.monotonic() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(json.dumps({"ops_per_s": ops / elapsed, "ops_per_cpu_s": ops / cpu, "cpu_s": cpu,
                      "seconds": elapsed,
                      "sdk_threads_cpu_s": sdk_cpu,
                      "stop_cpu_s": (c1.user - c_stop.user) + (c1.system - c_stop.system),
                      "stats": stats}))


def _sdk_threads_cpu() -> float:
    """CPU seconds of the SDK's sampler and uploader threads so far (Linux
    /proc; 0 elsewhere)."""
    total = 0.0
    for th in threading.enumerate():
        if th.name.startswith("telegen-sdk-") and th.native_id:
            try:
                with open(f"/proc/self/task/{th.native_id}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_round(seconds: float, variant: str, endpoint: str, rate: int,
              worker_thread: bool) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "bench.python_sdk", "--child", variant,
                           "--endpoint", endpoint, "--seconds", str(seconds), "--rate",
                           str(rate)] + ([] if worker_thread else ["--no-worker"]),
                          capture_output=True, text=True, cwd=ROOT, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--variants", default="none,sdk",
                    help=f"comma-separated, first is the baseline; of {', '.join(VARIANTS)}")
    ap.add_argument("--no-worker", action="store_true",
                    help="the service without its worker thread (one asyncio thread)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.seconds, args.child, args.endpoint, args.rate, not args.no_worker)
        return
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants) or len(variants) < 2:
        ap.error(f"--variants: two or more of {', '.join(VARIANTS)}")
    from telegen.testing.backends import OtlpBackend

    backend = OtlpBackend().start()
    endpoint = f"127.0.0.1:{backend.port}"
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    try:
        for i in range(args.rounds):        # ABC CBA ...: drift favours no variant
            for v in (variants if i % 2 == 0 else variants[::-1]):
                r = run_round(args.seconds, v, endpoint, args.rate, not args.no_worker)
                runs[v].append(r)                                   # type: ignore[arg-type]
    finally:
        backend.stop()
    service = ("40 asyncio handlers" + ("" if args.no_worker else " + 1 worker thread") +
               ", 1 ms requests in spans, 20 parked tasks")
    base_name = variants[0]
    base = runs[base_name]
    print(f"service: {service}; {args.rounds} x {args.seconds:.0f}s rounds per variant, "
          f"{args.rate} Hz, interleaved\n")
    print(f"| variant | slices per CPU-second (median) | overhead vs {base_name} (medians) | "
          "per-round overhead: median, spread | slices per wall second (median) |")
    print("|---|---:|---:|---|---:|")
    b_cpu = statistics.median(x["ops_per_cpu_s"] for x in base)
    for v in variants:
        rs = runs[v]
        cpu = statistics.median(x["ops_per_cpu_s"] for x in rs)
        wall = statistics.median(x["ops_per_s"] for x in rs)
        if v == base_name:
            print(f"| {v} | {cpu:,.0f} | — | — | {wall:,.0f} |")
            continue
        # each round's runs were back to back: their difference is least exposed to drift
        each = sorted((b["ops_per_cpu_s"] - s["ops_per_cpu_s"]) / b["ops_per_cpu_s"] * 100
                      for b, s in zip(base, rs, strict=True))
        print(f"| {v} | {cpu:,.0f} | {(b_cpu - cpu) / b_cpu * 100:+.2f}% | "
              f"{statistics.median(each):+.2f}%, {each[0]:+.1f}% .. {each[-1]:+.1f}% | "
              f"{wall:,.0f} |")
    print("\nper round, slices per CPU-second: " + "; ".join(
        f"{v}: " + ", ".join(f"{x['ops_per_cpu_s']:,.0f}" for x in runs[v]) for v in variants))
    for v in variants:
        if v in ("threads", "sdk"):
            rs = runs[v]
            own = statistics.median(s["sdk_threads_cpu_s"] / s["cpu_s"] * 100 for s in rs)
            stop_ = statistics.median(s["stop_cpu_s"] / s["cpu_s"] * 100 for s in rs)
            ticks = statistics.median(s["stats"]["ticks"] / s["seconds"]   # type: ignore[index]
                                      for s in rs)
            print(f"{v}: of the service's CPU (median), SDK threads {own:.2f}% (sampler + "
                  f"uploader incl. its first-use imports), final flush at stop {stop_:.2f}%; "
                  f"sampler ticks per second {ticks:.1f} (asked {args.rate}); "
                  f"SDK counters (last round): {rs[-1]['stats']}")
    print(f"uploads received: {len(backend.requests())}")


if __name__ == "__main__":
    main()
