"""Parse throughput of the JFR reader on a >= 20 MB recording.

Makes a recording with the test workload (tests/testdata/java/Workload.java)
under the JDK's ``profile`` settings with 1 ms CPU sampling (or takes one
with ``--recording``), concatenates it until it is at least ``--min-mb``
(a JFR file is a sequence of self-contained chunks), then times
chunk-by-chunk parsing into profiles (the receiver's path) and event
counting, and reports peak RSS and the tracemalloc peak of a separate pass.

    .venv/bin/python bench/jfr_parse.py [--recording FILE] [--min-mb 20]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from telegen.formats.jfr import count_events, read_chunks
from telegen.formats.jfr.topdata import ProfileBuilder

ROOT = Path(__file__).resolve().parents[1]


def make_recording(work: Path, seconds: int) -> Path:
    subprocess.run(["javac", "-d", str(work), str(ROOT / "tests/testdata/java/Workload.java")],
                   check=True)
    jfc = work / "fast.jfc"
    profile = subprocess.run(["jfr", "configure", "--input", "profile", "--output", str(jfc),
                              "jdk.ExecutionSample#period=1ms"], capture_output=True)
    settings = str(jfc) if profile.returncode == 0 else "profile"
    rec = work / "workload.jfr"
    subprocess.run(["java", f"-XX:StartFlightRecording:settings={settings},filename={rec}",
                    "-cp", str(work), "Workload", str(seconds)], check=True, capture_output=True)
    return rec


def parse(path: Path) -> tuple[int, int, int]:
    builder = ProfileBuilder()
    events = chunks = 0
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            chunks += 1
            events += sum(count_events(chunk).values())
            builder.add_chunk(chunk)
    samples = sum(len(p) for p in builder.build())
    return chunks, events, samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recording", type=Path)
    ap.add_argument("--min-mb", type=float, default=20.0)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jfr-bench-") as tmp:
        work = Path(tmp)
        rec = args.recording or make_recording(work, args.seconds)
        one = rec.read_bytes()
        big = work / "big.jfr"
        copies = max(1, int(args.min_mb * 1e6 // len(one)) + 1)
        with open(big, "wb") as f:
            for _ in range(copies):
                f.write(one)
        size = big.stat().st_size
        t0 = time.perf_counter()
        chunks, events, samples = parse(big)
        dt = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        parse(big)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"recording     {len(one) / 1e6:.2f} MB x {copies} = {size / 1e6:.1f} MB, "
              f"{chunks} chunks, {events} events, {samples} distinct samples")
        print(f"throughput    {size / 1e6 / dt:.1f} MB/s ({dt:.2f} s)")
        print(f"peak RSS      {rss_mb:.0f} MB   tracemalloc peak {peak / 1e6:.1f} MB "
              f"(largest chunk {max_chunk(big) / 1e6:.2f} MB)")
        return 0 if size / 1e6 / dt >= 5 else 1


def max_chunk(path: Path) -> int:
    with open(path, "rb") as f:
        return max((c.header.size for c in read_chunks(f)), default=0)


if __name__ == "__main__":
    sys.exit(main())
