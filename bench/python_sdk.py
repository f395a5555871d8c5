"""Overhead of the in-process SDK (telegen.sdk) on a busy Python service,
side by side in one run.

The service (a child process): an asyncio loop with 40 handler tasks and one
worker thread, each serving "requests" of ~1 ms CPU (10 slices, yielding to
the loop between slices) inside an OpenTelemetry span, plus 20 tasks parked
on a queue. Every round does the same fixed work (the loop and the worker
each complete a quota of slices, sized by a calibration run to take about
``--seconds``) and the bench compares the CPU time (user + system) the
service process needed for it: the SDK's own work, in whichever thread,
included, and the split of work between the two application threads fixed
(a throughput measure lets it drift with GIL scheduling, and the two paths do
not cost the same per slice). Rounds alternate variants in ABC CBA order so
drift on the host favours none; medians are compared, and each round's
difference to the baseline run next to it is shown too. A round with the SDK
ends after ``telegen.sdk.stop()``, which encodes and sends what was sampled
since the last upload (to a real OTLP gRPC backend in this process; the SDK's
default 10 s interval): every sample taken in the round is paid for in it.
Target: <= 2% at 99 Hz.

Variants: ``none`` (baseline), ``sdk`` (``asyncio=True``, default mode: the
main thread's SIGPROF handler samples), ``sdk-thread`` (the same from a
sampler thread, ``mode="thread"``), ``threads`` (``asyncio=False``), ``bare``
(no SDK, one thread waking at the rate that only calls
``sys._current_frames()``: the floor of any sampler thread), ``spans`` (only
the SDK's span processor, no sampling). ``--no-worker``
drops the worker thread (one asyncio thread).

    python -m bench.python_sdk [--seconds 10] [--rounds 6] [--rate 99]
                               [--variants none,sdk,sdk-thread] [--no-worker]
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


VARIANTS = ("none", "bare", "spans", "threads", "sdk", "sdk-thread")


def _bare_sampler(rate: int) -> None:
    """A thread that wakes ``rate`` times a second and only takes the GIL to
    call sys._current_frames(): what any in-process sampler thread pays at least."""
    def run() -> None:
        while True:
            time.sleep(1.0 / rate)
            sys._current_frames()

    threading.Thread(target=run, name="telegen-sdk-bare", daemon=True).start()


def child(variant: str, endpoint: str, rate: int, quota_async: int, quota_worker: int,
          seconds: float) -> None:
    """One round: do the quotas of work (or, with ``seconds``, as much as fits
    in that time: the calibration run) and print what it cost as JSON."""
    from opentelemetry import trace

    from bench.pyservice import Service, threads_cpu_s, tracer

    service = Service(tracer(), lambda kind: False)
    prof = None
    c0 = os.times()
    t0 = time.monotonic()
    if variant in ("threads", "sdk", "sdk-thread"):
        import telegen.sdk

        prof = telegen.sdk.start(endpoint=endpoint, service_name="bench", sample_rate=rate,
                                 asyncio=variant != "threads",      # upload interval: 10 s
                                 mode="thread" if variant == "sdk-thread" else "auto")
    elif variant == "bare":
        _bare_sampler(rate)
    elif variant == "spans":
        from telegen.sdk.spans import SpanTracker, make_span_processor

        trace.get_tracer_provider().add_span_processor(  # type: ignore[attr-defined]
            make_span_processor(SpanTracker()))
    done = service.done
    deadline = t0 + seconds if seconds else float("inf")
    quota = {"async": quota_async, "worker": quota_worker}
    service.more = (lambda kind: done[kind] < quota[kind]) if not seconds else \
        (lambda kind: time.monotonic() < deadline)
    service.run(worker=bool(quota_worker))
    work_s = time.monotonic() - t0
    sdk_threads = threads_cpu_s("telegen-sdk-")
    c_stop = os.times()
    if prof is not None:
        import telegen.sdk

        telegen.sdk.stop()              # the last interval's upload counts too
    stats = prof.stats.as_dict() if prof is not None else {}
    c1 = os.times()
    print(json.dumps({"cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
                      "stop_cpu_s": (c1.user - c_stop.user) + (c1.system - c_stop.system),
                      "seconds": time.monotonic() - t0, "work_s": work_s, "done": done,
                      "sdk_threads_cpu_s": sdk_threads, "stats": stats}))


def run_round(variant: str, endpoint: str, rate: int, quota: tuple[int, int],
              seconds: float = 0.0) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.python_sdk", "--child", variant,
                           "--endpoint", endpoint, "--rate", str(rate),
                           "--quota", f"{quota[0]},{quota[1]}", "--seconds", str(seconds)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="about how long a round's work takes without the SDK")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--variants", default="none,sdk,sdk-thread",
                    help=f"comma-separated, first is the baseline; of {', '.join(VARIANTS)}")
    ap.add_argument("--no-worker", action="store_true",
                    help="the service without its worker thread (one asyncio thread)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    ap.add_argument("--quota", default="0,0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        qa, qw = (int(x) for x in args.quota.split(","))
        child(args.child, args.endpoint, args.rate, qa, qw, args.seconds)
        return
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants) or len(set(variants)) < 2:
        ap.error(f"--variants: two or more of {', '.join(VARIANTS)}")
    from telegen.testing.backends import OtlpBackend

    backend = OtlpBackend().start()
    endpoint = f"127.0.0.1:{backend.port}"
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        cal = run_round("none", endpoint, args.rate, (0, 0 if args.no_worker else 1), 3.0)
        scale = args.seconds / cal["work_s"]
        quota = (int(cal["done"]["async"] * scale),
                 0 if args.no_worker else int(cal["done"]["worker"] * scale))
        for i in range(args.rounds):        # ABC CBA ...: drift favours no variant
            for v in (variants if i % 2 == 0 else variants[::-1]):
                runs[v].append(run_round(v, endpoint, args.rate, quota))
    finally:
        backend.stop()
    report(args, variants, runs, quota, len(backend.requests()))


def report(args: argparse.Namespace, variants: list[str], runs: dict[str, list[dict[str, Any]]],
           quota: tuple[int, int], uploads: int) -> None:
    service = ("40 asyncio handlers" + ("" if args.no_worker else " + 1 worker thread") +
               ", 1 ms requests in spans, 20 parked tasks")
    base_name = variants[0]
    base = runs[base_name]
    print(f"service: {service}; work per round: {quota[0]:,} slices in the loop + "
          f"{quota[1]:,} in the worker; {args.rounds} rounds per variant, {args.rate} Hz, "
          "interleaved\n")
    print(f"| variant | CPU seconds for the work (median) | overhead vs {base_name} (medians) | "
          "per-round overhead: median, spread | wall seconds (median) | ticks/s | "
          "SDK sampling CPU, of the service's |")
    print("|---|---:|---:|---|---:|---:|---:|")
    b_cpu = statistics.median(x["cpu_s"] for x in base)
    for v in variants:
        rs = runs[v]
        cpu = statistics.median(x["cpu_s"] for x in rs)
        wall = statistics.median(x["seconds"] for x in rs)
        sdk = [x for x in rs if x["stats"]]
        ticks = own = "—"
        if sdk:
            ticks = f"{statistics.median(x['stats']['ticks'] / x['seconds'] for x in sdk):.1f}"
            own = statistics.median(x["stats"]["sampling_us"] / 1e4 / x["cpu_s"]
                                    for x in sdk)
            own = f"{own:.2f}%"
        if v == base_name:
            print(f"| {v} | {cpu:.3f} | — | — | {wall:.2f} | {ticks} | {own} |")
            continue
        # each round's runs were back to back: their difference is least exposed to drift
        each = sorted((s["cpu_s"] - b["cpu_s"]) / b["cpu_s"] * 100
                      for b, s in zip(base, rs, strict=True))
        print(f"| {v} | {cpu:.3f} | {(cpu - b_cpu) / b_cpu * 100:+.2f}% | "
              f"{statistics.median(each):+.2f}%, {each[0]:+.1f}% .. {each[-1]:+.1f}% | "
              f"{wall:.2f} | {ticks} | {own} |")
    print("\nper round, CPU seconds: " + "; ".join(
        f"{v}: " + ", ".join(f"{x['cpu_s']:.3f}" for x in runs[v]) for v in variants))
    for v in variants:
        rs = runs[v]
        if rs[-1]["stats"]:
            threads = statistics.median(x["sdk_threads_cpu_s"] / x["cpu_s"] * 100 for x in rs)
            flush = statistics.median(x["stop_cpu_s"] / x["cpu_s"] * 100 for x in rs)
            print(f"{v}: SDK threads' CPU (sampler + uploader, incl. first-use imports) "
                  f"{threads:.2f}% of the service's, final flush at stop {flush:.2f}%; "
                  f"counters (last round): {rs[-1]['stats']}")
    print(f"uploads received: {uploads}")


if __name__ == "__main__":
    main()
