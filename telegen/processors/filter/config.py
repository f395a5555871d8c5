from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class FilterConfig:
    # Glob patterns on function names (``runtime.*``). Matching frames are removed
    # and their time is charged to the nearest kept caller, as ``pprof -hide``.
    exclude_patterns: list[str] = field(default_factory=list)
    # Stacks with fewer samples than this in one profile window are dropped.
    min_samples: int = 1

    def validate(self) -> None:
        for p in self.exclude_patterns:
            if not p:
                raise ValueError("exclude_patterns: empty pattern; remove it")
        if self.min_samples < 0:
            raise ValueError(f"min_samples must be >= 0 (got {self.min_samples})")

    def compiled(self) -> re.Pattern[str] | None:
        import fnmatch

        if not self.exclude_patterns:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.exclude_patterns))
