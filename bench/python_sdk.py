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

    python -m bench.python_sdk [--seconds 20] [--rounds 6] [--rate 99]
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


def child(seconds: float, sdk: str, rate: int) -> None:
    import asyncio

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("bench")
    prof = None
    if sdk:
        import telegen.sdk

        prof = telegen.sdk.start(endpoint=sdk, service_name="bench", sample_rate=rate,
                                 asyncio=True)          # default upload interval: 10 s
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
    th.start()
    c0 = os.times()
    t0 = time.monotonic()
    asyncio.run(main())
    ops = done[0]
    stop.set()
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


def run_round(seconds: float, sdk: str, rate: int) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "bench.python_sdk", "--child", sdk or "-",
                           "--seconds", str(seconds), "--rate", str(rate)],
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
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    if args.child:
        child(args.seconds, "" if args.child == "-" else args.child, args.rate)
        return
    from telegen.testing.backends import OtlpBackend

    backend = OtlpBackend().start()
    endpoint = f"127.0.0.1:{backend.port}"
    base: list[dict[str, float]] = []
    with_sdk: list[dict[str, float]] = []
    stats: object = {}
    try:
        for i in range(args.rounds):
            for with_ in ((False, True) if i % 2 == 0 else (True, False)):
                r = run_round(args.seconds, endpoint if with_ else "", args.rate)
                (with_sdk if with_ else base).append(r)             # type: ignore[arg-type]
                if with_:
                    stats = r["stats"]
    finally:
        backend.stop()
    print(f"| service: 40 asyncio handlers + 1 thread, 1 ms requests in spans, 20 parked "
          f"tasks; {args.rounds} x {args.seconds:.0f}s rounds | without SDK | with SDK "
          f"({args.rate} Hz, asyncio) | overhead |")
    print("|---|---|---|---|")
    for key, label in (("ops_per_cpu_s", "slices per CPU-second (median)"),
                       ("ops_per_s", "slices per wall second (median; noisy on a shared host)")):
        b = statistics.median(x[key] for x in base)
        s = statistics.median(x[key] for x in with_sdk)
        print(f"| {label} | {b:,.0f} | {s:,.0f} | {(b - s) / b * 100:+.2f}% |")
    pairs = list(zip(base, with_sdk, strict=True))
    print("\nper round, slices per CPU-second (without / with): " + ", ".join(
        f"{b['ops_per_cpu_s']:,.0f} / {s['ops_per_cpu_s']:,.0f}" for b, s in pairs))
    # each round's pair ran back to back: their difference is the least exposed to drift
    each = sorted((b["ops_per_cpu_s"] - s["ops_per_cpu_s"]) / b["ops_per_cpu_s"] * 100
                  for b, s in pairs)
    print(f"per-round overhead: median {statistics.median(each):+.2f}%, spread "
          f"{each[0]:+.2f}% .. {each[-1]:+.2f}% ({', '.join(f'{x:+.1f}%' for x in each)})")
    own = statistics.median(s["sdk_threads_cpu_s"] / s["cpu_s"] * 100 for s in with_sdk)
    stop_ = statistics.median(s["stop_cpu_s"] / s["cpu_s"] * 100 for s in with_sdk)
    print(f"of the service's CPU with the SDK (median): SDK threads {own:.2f}% (sampler + "
          f"uploader incl. its first-use imports), final flush at stop {stop_:.2f}%; the "
          f"rest of the overhead is the application's own threads running slower")
    print(f"\nSDK counters (last round): {stats}; uploads received: {len(backend.requests())}")


if __name__ == "__main__":
    main()
