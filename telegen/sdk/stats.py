"""The SDK's own counters, which the application reads (``telegen.sdk.stats()``)."""

from __future__ import annotations


class Stats:
    """Counters the application can read (``telegen.sdk.stats()``)."""

    def __init__(self) -> None:
        self.ticks = 0              # sampling rounds taken (rate x seconds when not starved)
        self.signal_ticks = 0       # of which in the main thread's signal handler
        self.sampling_us = 0        # time the ticks and folds took (the thread was held)
        self.gil_handoffs = 0       # ticks that let one of our threads have the GIL
        self.samples = 0
        self.dropped_samples = 0
        self.errors = 0
        self.exported_profiles = 0
        self.export_failures = 0
        self.dropped_uploads = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))
