"""What the SDK's sampling costs a busy Python service, measured inside one
process in alternating phases.

On a shared VM the same fixed work takes +-7% CPU from one process (or one
second) to the next, which buries a 1-2% effect when whole runs with and
without the SDK are compared (``bench.python_sdk`` does that, end to end).
Here one service process (``bench.pyservice``) runs with the SDK started
(``asyncio=True``, signal mode, uploading every 10 s to a real OTLP gRPC
backend) and its per-thread timer is switched on and off in short phases
(``--phase`` seconds) in ABBA order: the CPU the process uses per slice of
work in "on" phases against the "off" phases next to them is the cost of
sampling at ``--rate`` -- the ticks themselves and everything they do to the
application (caches, the signal, the frames they materialise). Drift and the
process's own luck are shared by both sides of each pair. Printed: the
median and the inter-quartile range of the pairs' differences, the mean
with a 95% interval, the ticks per second reached in "on" phases, the
sampling CPU the SDK counts itself, and the uploader thread's CPU over the
whole run (the part that does not switch off: add it).

    python -m bench.python_sdk_phases [--seconds 90] [--phase 0.1] [--rate 99]
                                      [--no-worker] [--no-asyncio] [--max-tasks 8]
                                      [--idle-threads 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import telegen.sdk
    import telegen.sdk.sampler
    from bench.pyservice import Service, threads_cpu_s, tracer

    telegen.sdk.sampler._STALL = float("inf")      # "off" means off: no thread fallback

    prof = telegen.sdk.start(endpoint=args.endpoint, service_name="bench",
                             sample_rate=args.rate, asyncio=not args.no_asyncio,
                             max_tasks_per_tick=args.max_tasks)
    assert prof is not None and prof.sampler.signal_driven, "signal mode needed"
    timer = prof.sampler._ticks._timer          # type: ignore[union-attr]
    assert timer is not None
    if args.idle_threads:                       # a thread pool's idle workers
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=args.idle_threads)
        for f in [pool.submit(time.sleep, 0.05) for _ in range(args.idle_threads)]:
            f.result()
    end = time.monotonic() + args.seconds
    service = Service(tracer(), lambda kind: time.monotonic() < end)
    phases: list[dict[str, Any]] = []

    async def switch() -> None:
        i = 0
        while time.monotonic() + args.phase < end:
            on = (i % 4) in (1, 2)              # off on on off | off on on off ...
            timer.set(1.0 / args.rate if on else 0.0)
            done0, cpu0 = sum(service.done.values()), time.process_time()
            ticks0, own0 = prof.stats.ticks, prof.stats.sampling_us
            t0 = time.monotonic()
            await asyncio.sleep(args.phase)
            if on:                              # count this phase's samples in it
                prof.sampler.fold()
            phases.append({"on": on, "slices": sum(service.done.values()) - done0,
                           "cpu": time.process_time() - cpu0,
                           "seconds": time.monotonic() - t0,
                           "ticks": prof.stats.ticks - ticks0,
                           "own_us": prof.stats.sampling_us - own0})
            i += 1

    cpu_start = time.process_time()
    service.run(worker=not args.no_worker, alongside=switch)
    cpu_total = time.process_time() - cpu_start
    uploader = threads_cpu_s("telegen-sdk-uploader")
    stats = prof.stats.as_dict()
    telegen.sdk.stop()
    print(json.dumps({"phases": phases, "cpu_total": cpu_total, "uploader_cpu": uploader,
                      "stats": stats}))


def report(args: argparse.Namespace, out: dict[str, Any], uploads: int) -> None:
    phases = out["phases"]
    cost = [p["cpu"] / p["slices"] for p in phases]
    pairs = []                      # each "on" phase against the "off" phase beside it
    for i in range(0, len(phases) - 1, 2):
        a, b = phases[i], phases[i + 1]
        j_on, j_off = (i + 1, i) if b["on"] else (i, i + 1)
        if a["on"] != b["on"]:
            pairs.append((cost[j_on] - cost[j_off]) / cost[j_off] * 100)
    pairs.sort()
    q = statistics.quantiles(pairs, n=4)
    mean = statistics.fmean(pairs)
    half = 1.96 * statistics.stdev(pairs) / len(pairs) ** 0.5
    ons = [p for p in phases if p["on"]]
    ticks = sum(p["ticks"] for p in ons) / sum(p["seconds"] for p in ons)
    own = sum(p["own_us"] for p in ons) / 1e6 / sum(p["cpu"] for p in ons) * 100
    service = "40 asyncio handlers" + ("" if args.no_worker else " + 1 worker thread") + \
        ", 1 ms requests in spans, 20 parked tasks" + \
        (f", {args.idle_threads} idle pool threads" if args.idle_threads else "") + \
        ("; SDK without asyncio task chains" if args.no_asyncio else "")
    print(f"service: {service}; {len(pairs)} on/off pairs of {args.phase} s phases, "
          f"{args.rate} Hz, max_tasks_per_tick {args.max_tasks}\n")
    print("| CPU per unit of work, sampling on vs off | value |")
    print("|---|---:|")
    print(f"| median of pairs (IQR) | {statistics.median(pairs):+.2f}% "
          f"({q[0]:+.1f}% .. {q[2]:+.1f}%) |")
    print(f"| mean of pairs, 95% interval | {mean:+.2f}% +- {half:.2f} |")
    print(f"| ticks per second in on phases | {ticks:.1f} |")
    print(f"| time in the SDK's ticks and folds, of the process's CPU in on phases | {own:.2f}% |")
    print(f"| uploader thread (encode + send every 10 s), of the whole run's CPU | "
          f"{out['uploader_cpu'] / out['cpu_total'] * 100:.2f}% |")
    print(f"\nuploads received: {uploads}; SDK counters: {out['stats']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--phase", type=float, default=0.1)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--max-tasks", type=int, default=8)
    ap.add_argument("--no-worker", action="store_true")
    ap.add_argument("--no-asyncio", action="store_true",
                    help="the SDK without asyncio task chains (threads only)")
    ap.add_argument("--idle-threads", type=int, default=0,
                    help="also keep a thread pool with this many idle workers")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from telegen.testing.backends import OtlpBackend

    backend = OtlpBackend().start()
    try:
        cmd = [sys.executable, "-m", "bench.python_sdk_phases", "--child",
               "--endpoint", f"127.0.0.1:{backend.port}", "--seconds", str(args.seconds),
               "--phase", str(args.phase), "--rate", str(args.rate),
               "--max-tasks", str(args.max_tasks), "--idle-threads", str(args.idle_threads)] + \
            (["--no-worker"] if args.no_worker else []) + \
            (["--no-asyncio"] if args.no_asyncio else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=args.seconds + 120)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        backend.stop()
    report(args, out, len(backend.requests()))


if __name__ == "__main__":
    main()
