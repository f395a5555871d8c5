"""``bench.agent`` limited to the workload's processes (``process_names``):
what ``bench.overhead --only-workload`` runs, so that on a shared machine the
agent's CPU and copies are those of the measured workload, not of whatever
else runs on the host. Same protocol as ``bench.agent`` (``ready``, stdin
EOF, ``telemetry``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bench.agent import Discard
from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--unwinding", default="auto", choices=("auto", "frame_pointer", "dwarf"))
    ap.add_argument("--process-names", default="^bench_work$")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reg = Registry()
    settings = CreateSettings(ComponentID("ebpf", "bench"), Kind.RECEIVER,
                              reg.for_component("receiver", "ebpf/bench"),
                              logging.getLogger("bench.ebpf"))
    sink = Discard()
    cfg = EbpfConfig(sample_rate=args.rate, duration=args.duration, unwinding=args.unwinding,
                     process_names=[args.process_names])
    cfg.validate()
    receiver = EbpfReceiver(settings, cfg, sink)
    receiver.start(None)  # type: ignore[arg-type]
    print(f"ready {receiver.startup_s:.3f}", flush=True)
    sys.stdin.read()
    receiver.shutdown()
    print(f"samples {sink.samples}", flush=True)
    print(f"telemetry {json.dumps(reg.snapshot())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
