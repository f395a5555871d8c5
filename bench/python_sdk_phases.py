"""What the SDK's sampling costs a busy Python service, measured inside one
process in alternating phases.

On a shared VM the same fixed work takes +-7% CPU from one process (or one
second) to the next, which buries a 1-2% effect when whole runs with and
without the SDK are compared (``bench.python_sdk`` does that, end to end).
Here one service process (``bench.pyservice``) runs with the SDK started
(``asyncio=True``, signal mode) through blocks of three short phases
(``--phase`` seconds) in shuffled order: "off" (the per-thread timer
stopped), "null" (the timer running, the handler returning at once) and "on"
(sampling at ``--rate`` and the SDK's span processor on the application's
TracerProvider). The CPU the process uses per slice of work in each phase,
against the "off" phase of the same block, is the cost of that state -- for
"on", the ticks and everything they do to the application (caches, the
signal, the frames they materialise); "null" is what the timer and the
signal alone cost on this host, which no in-process sampler avoids. Drift
and the process's own luck are shared by the phases of a block; processes
differ by about a point (memory layout), so ``--runs`` pools several.

Left out of the phases, and reported apart: the first ``WARM_UP`` seconds
(imports, the code table, the first upload) and the uploads, which this
process makes itself every 10 s between two blocks (to a real OTLP gRPC
backend) and times: the SDK's own threads would get the GIL only at ticks,
so their work would land in "on" phases and count three times there.
Printed: per comparison the median and the inter-quartile range of the
blocks' differences and the mean with a 95% interval; per run, the ticks
per second, the time the SDK counts in its ticks and folds, and the uploads'
share of the CPU (add it to "on vs off").

    python -m bench.python_sdk_phases [--seconds 90] [--phase 0.1] [--rate 99]
                                      [--no-worker] [--io] [--no-asyncio] [--max-tasks 2]
                                      [--idle-threads 0] [--no-spans] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

STATES = ("off", "null", "on")
WARM_UP = 3.0               # s before the phases, sampling on
UPLOAD_EVERY = 10.0         # s: the SDK's default upload_interval
ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import telegen.sdk
    import telegen.sdk.sampler
    from bench.pyservice import Service, threads_cpu_s, tracer

    telegen.sdk.sampler._STALL = float("inf")      # "off" means off: no thread fallback
    # ... and no sampler thread waking to supervise and fold 4 times a second:
    # in an off or null phase no tick would hand it the GIL, and a thread
    # starved of the GIL costs the loop (a futex wake at every release) in
    # the phases the SDK is meant to be absent from; the "on" phases fold
    # at their end instead (telegen.sdk.turns)
    telegen.sdk.sampler._SUPERVISE = 3600.0

    tr = tracer()                               # the application's TracerProvider
    # uploads are driven from here, between blocks, and timed apart: the
    # uploader thread gets the GIL only at ticks, so its work would land in
    # the "on" phases (a third of the time) and count three times there
    prof = telegen.sdk.start(endpoint=args.endpoint, service_name="bench",
                             sample_rate=args.rate, asyncio=not args.no_asyncio,
                             max_tasks_per_tick=args.max_tasks, tracer_provider=object(),
                             upload_interval=3600.0)
    assert prof is not None and prof.sampler.signal_driven, "signal mode needed"
    spans = Switched(prof.span_processor())     # the SDK's span processor, switchable
    tr_provider = __import__("opentelemetry.trace").trace.get_tracer_provider()
    tr_provider.add_span_processor(spans)
    timer = prof.sampler._ticks._timer          # type: ignore[union-attr]
    assert timer is not None
    if args.idle_threads:                       # a thread pool's idle workers
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=args.idle_threads)
        for f in [pool.submit(time.sleep, 0.05) for _ in range(args.idle_threads)]:
            f.result()
    end = time.monotonic() + WARM_UP + args.seconds
    service = Service(tr, lambda kind: time.monotonic() < end, io=args.io)
    phases: list[dict[str, Any]] = []
    uploads = {"cpu": 0.0, "n": 0, "cpu_total": 0.0, "threads": 0.0}

    def upload() -> None:
        cpu0 = time.process_time()
        prof.uploader.flush()
        uploads["cpu"] += time.process_time() - cpu0
        uploads["n"] += 1

    async def switch() -> None:
        spans.on = not args.no_spans            # warm-up: one-time costs (imports, the
        await asyncio.sleep(WARM_UP)            # code table, the first upload) left out
        prof.uploader.flush()
        cpu_start, next_upload = time.process_time(), time.monotonic() + UPLOAD_EVERY
        uploads["threads"] = -threads_cpu_s("telegen-sdk-")
        order = random.Random(1)
        while time.monotonic() + 3 * args.phase < end:
            if time.monotonic() >= next_upload:
                upload()
                next_upload += UPLOAD_EVERY
            block = list(STATES)
            order.shuffle(block)                # each block: the three states, shuffled
            for state in block:
                timer.set(0.0 if state == "off" else 1.0 / args.rate)
                prof.sampler._busy = state == "null"    # the handler returns at once
                spans.on = state == "on" and not args.no_spans
                done0, cpu0 = sum(service.done.values()), time.process_time()
                ticks0, own0 = prof.stats.ticks, prof.stats.sampling_us
                t0 = time.monotonic()
                await asyncio.sleep(args.phase)
                if state == "on":               # count this phase's samples in it
                    prof.sampler.fold()
                phases.append({"state": state, "slices": sum(service.done.values()) - done0,
                               "cpu": time.process_time() - cpu0,
                               "seconds": time.monotonic() - t0,
                               "ticks": prof.stats.ticks - ticks0,
                               "own_us": prof.stats.sampling_us - own0})
        prof.sampler._busy = False
        uploads["cpu_total"] = time.process_time() - cpu_start
        uploads["threads"] += threads_cpu_s("telegen-sdk-")    # ~0: nothing left to them

    service.run(worker=not args.no_worker, alongside=switch)
    stats = prof.stats.as_dict()
    telegen.sdk.stop()
    print(json.dumps({"phases": phases, "cpu_total": uploads["cpu_total"],
                      "uploader_cpu": uploads["cpu"], "uploads": uploads["n"],
                      "threads_cpu": uploads["threads"], "stats": stats}))


def _row(name: str, diffs: list[float]) -> str:
    q = statistics.quantiles(diffs, n=4)
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    return (f"| {name} | {statistics.median(diffs):+.2f}% ({q[0]:+.1f}% .. {q[2]:+.1f}%) | "
            f"{statistics.fmean(diffs):+.2f}% +- {half:.2f} |")


class Switched(SpanProcessor):  # type: ignore[misc]
    """A SpanProcessor passing span starts to another while ``on`` (ends
    always, so no span is left open): the SDK's span tracking is part of
    what the "on" phases cost."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.on = inner, False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: Any) -> None:
        self.inner.on_end(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# two-sided 95% t quantiles by degrees of freedom (runs - 1)
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def _blocks(out: dict[str, Any]) -> list[dict[str, float]]:
    phases = out["phases"]
    return [{p["state"]: p["cpu"] / p["slices"] for p in phases[i:i + 3]}
            for i in range(0, len(phases) - 2, 3)]


def _diffs(blocks: list[dict[str, float]], a: str, b: str) -> list[float]:
    return [(x[a] - x[b]) / x["off"] * 100 for x in blocks]


def _shares(out: dict[str, Any]) -> tuple[float, float, float, float]:
    """(ticks/s, own time % of the on phases' CPU, uploader %, sampler thread %)."""
    ons = [p for p in out["phases"] if p["state"] == "on"]
    ticks = sum(p["ticks"] for p in ons) / sum(p["seconds"] for p in ons)
    own = sum(p["own_us"] for p in ons) / 1e6 / sum(p["cpu"] for p in ons) * 100
    return (ticks, own, out["uploader_cpu"] / out["cpu_total"] * 100,
            out["threads_cpu"] / out["cpu_total"] * 100)


def report(args: argparse.Namespace, outs: list[dict[str, Any]], uploads: int) -> None:
    runs = [_blocks(out) for out in outs]
    blocks = [b for run in runs for b in run]
    service = "40 asyncio handlers" + (" waiting 1 ms on I/O between slices" if args.io else
                                       " always runnable") + \
        ("" if args.no_worker else " + 1 worker thread") + \
        ", 1 ms requests in spans, 20 parked tasks" + \
        (f", {args.idle_threads} idle pool threads" if args.idle_threads else "") + \
        ("; SDK without asyncio task chains" if args.no_asyncio else "") + \
        ("; span processor off" if args.no_spans else "")
    print(f"service: {service}; {len(outs)} run(s), {len(blocks)} blocks of {args.phase} s "
          f"phases (off, null ticks, sampling; shuffled), {args.rate} Hz, "
          f"max_tasks_per_tick {args.max_tasks}\n")
    print("| CPU per unit of work, vs the off phase of the same block | median (IQR) | "
          "mean, 95% interval |")
    print("|---|---:|---:|")
    print(_row("sampling + span tracking vs off (the SDK's cost)", _diffs(blocks, "on", "off")))
    print(_row("null ticks vs off (timer + signal + a handler that returns)",
               _diffs(blocks, "null", "off")))
    print(_row("sampling + span tracking vs null ticks", _diffs(blocks, "on", "null")))
    shares = [_shares(out) for out in outs]
    print("\n| run | on vs off (mean) | null vs off (mean) | ticks/s | ticks + folds | "
          "uploads (every 10 s) | SDK threads |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    means = []
    for i, (run, (ticks, own, up, st)) in enumerate(zip(runs, shares, strict=True), 1):
        means.append(statistics.fmean(_diffs(run, "on", "off")))
        print(f"| {i} | {means[-1]:+.2f}% | {statistics.fmean(_diffs(run, 'null', 'off')):+.2f}% "
              f"| {ticks:.1f} | {own:.2f}% | {up:.2f}% | {st:.2f}% |")
    if len(outs) > 1:       # processes differ (memory layout): the runs are the samples
        half = _T95.get(len(means) - 1, 2.0) * statistics.stdev(means) / len(means) ** 0.5
        up = statistics.fmean(s[2] for s in shares)
        print(f"\nacross runs: on vs off {statistics.fmean(means):+.2f}% +- {half:.2f} "
              f"(95%, t over {len(means)} run means); + uploader {up:.2f}% = "
              f"{statistics.fmean(means) + up:+.2f}%")
    print(f"\nuploads received: {uploads}; SDK counters (last run): {outs[-1]['stats']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--runs", type=int, default=1,
                    help="service processes, one after another (each --seconds long)")
    ap.add_argument("--phase", type=float, default=0.1)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--max-tasks", type=int, default=2)
    ap.add_argument("--no-worker", action="store_true")
    ap.add_argument("--io", action="store_true",
                    help="handlers wait 1 ms on I/O between slices (not always runnable)")
    ap.add_argument("--no-asyncio", action="store_true",
                    help="the SDK without asyncio task chains (threads only)")
    ap.add_argument("--no-spans", action="store_true",
                    help="the SDK's span processor stays off (sampling alone)")
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
    outs = []
    try:
        cmd = [sys.executable, "-m", "bench.python_sdk_phases", "--child",
               "--endpoint", f"127.0.0.1:{backend.port}", "--seconds", str(args.seconds),
               "--phase", str(args.phase), "--rate", str(args.rate),
               "--max-tasks", str(args.max_tasks), "--idle-threads", str(args.idle_threads)] + \
            (["--no-worker"] if args.no_worker else []) + (["--io"] if args.io else []) + \
            (["--no-asyncio"] if args.no_asyncio else []) + \
            (["--no-spans"] if args.no_spans else [])
        for _ in range(args.runs):
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  timeout=args.seconds + 120)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        backend.stop()
    report(args, outs, len(backend.requests()))


if __name__ == "__main__":
    main()
