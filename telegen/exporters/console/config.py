"""Exporter ``console``: print the seed-style top table of each window."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ConsoleConfig:
    # Rows per table.
    top: int = 10
    # Value column to rank by (``cpu``, ``alloc_space``, ``samples/count``...);
    # empty: the profile's default (its default_sample_type, else the last).
    # Profiles without this column use their default.
    sample_type: str = ""
    # Where tables go: stdout or stderr.
    output: str = "stdout"

    def validate(self) -> None:
        if self.top < 1:
            raise ValueError(f"top must be >= 1 (got {self.top})")
        if self.output not in ("stdout", "stderr"):
            raise ValueError(f"output must be stdout or stderr (got {self.output!r})")
