"""Print one top table per profile type per ``consume`` call (one window).

Profiles of one type are merged across resources first, so the table covers
every process of the window. Every name written (functions, the profile
type, the header) goes through :func:`telegen.untrusted.text.printable`: control
characters from profiled binaries or pushed profiles are shown escaped, never
sent to the terminal raw::

    == cpu profile: 2024-01-31 12:00:00 UTC + 10s, 3 resources, 412 samples ==
    Total CPU time: 60s

    Flat      Flat%   Sum%    Cum       Cum%    Name
    ...
"""

from __future__ import annotations

import sys
import threading
import time

from telegen.component import CreateSettings, Host
from telegen.exporters.console.config import ConsoleConfig
from telegen.formats.top import format_value, render_top
from telegen.helpers.windows import merge_by_type
from telegen.pdata import Profile, Profiles
from telegen.untrusted.text import printable


class ConsoleExporter:
    mutates_data = False

    def __init__(self, settings: CreateSettings, config: ConsoleConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        t = settings.telemetry
        self._sent = t.counter("exporter_sent_samples")
        self._failed = t.counter("exporter_send_failed_samples")

    def start(self, host: Host) -> None:
        pass

    def shutdown(self, timeout_s: float = 30.0) -> None:
        pass

    def consume(self, profiles: Profiles) -> None:
        resources: dict[str, int] = {}
        for p in profiles:
            resources[p.name] = resources.get(p.name, 0) + 1
        text = []
        samples = 0
        for merged in merge_by_type(profiles):
            if not len(merged):
                continue
            text.append(self.render(merged, resources.get(merged.name, 1)))
            samples += len(merged)
        if not text:
            return
        stream = sys.stderr if self._config.output == "stderr" else sys.stdout
        try:
            with self._lock:
                stream.write("\n".join(text))
                stream.flush()
        except (OSError, ValueError):
            self._failed.add(samples)
            raise
        self._sent.add(samples)

    def render(self, profile: Profile, resources: int = 1) -> str:
        want = self._config.sample_type or None
        if want is not None:
            try:
                profile.value_index(want)
            except KeyError:
                want = None
        return (f"{window_line(profile, resources)}\n"
                f"{render_top(profile, want, self._config.top)}")


def window_line(profile: Profile, resources: int = 1) -> str:
    """``== cpu profile: 2024-01-31 12:00:00 UTC + 10s, 2 resources, 41 samples ==``"""
    if profile.start_ns:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(profile.start_ns / 1e9))
    else:
        when = "time unknown"
    if profile.duration_ns:
        when += " + " + format_value(profile.duration_ns, "nanoseconds")
    plural = "" if resources == 1 else "s"
    return (f"== {printable(profile.name)} profile: {when}, {resources} resource{plural}, "
            f"{len(profile)} samples ==")
