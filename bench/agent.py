"""The profiling agent as the bench runs it: the ebpf receiver in its own
process with a consumer that drops profiles. Prints ``ready <startup_s>``
once sampling runs; shuts down (emitting the last window) on stdin EOF,
then prints ``telemetry <json>``: the receiver's counters (CFI copies,
unwind outcomes per process, drops). ``--process-names REGEX`` limits it to
the workload's processes (``bench.overhead --only-workload``: on a shared
machine, the agent's CPU and copies are then the workload's, not the host's)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry


class Discard:
    mutates_data = False

    def __init__(self) -> None:
        self.samples = 0

    def consume(self, profiles: Profiles) -> None:
        self.samples += profiles.sample_count()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--unwinding", default="auto", choices=("auto", "frame_pointer", "dwarf"))
    ap.add_argument("--process-names", help="profile only processes matching this regex")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reg = Registry()
    settings = CreateSettings(ComponentID("ebpf", "bench"), Kind.RECEIVER,
                              reg.for_component("receiver", "ebpf/bench"),
                              logging.getLogger("bench.ebpf"))
    sink = Discard()
    cfg = EbpfConfig(sample_rate=args.rate, duration=args.duration, unwinding=args.unwinding,
                     process_names=[args.process_names] if args.process_names else [])
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
