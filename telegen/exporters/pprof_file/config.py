"""Exporter ``pprof_file``: write each window as gzipped pprof files, one per profile type."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

PLACEHOLDERS = ("type", "timestamp", "seq")


@dataclass
class PprofFileConfig:
    # Where files go; created at start.
    directory: str = "./profiles"
    # Keep at most this many files (oldest deleted first; 0: no limit).
    max_files: int = 0
    # Keep at most this many bytes of files (oldest deleted first; 0: no limit).
    max_bytes: int = 0
    # File name; {type} is the profile type, {timestamp} the window start (UTC,
    # 20240131T120000Z), {seq} a counter that keeps names unique.
    filename: str = "{type}-{timestamp}-{seq}.pb.gz"

    def validate(self) -> None:
        if not self.directory:
            raise ValueError("directory must not be empty")
        if self.max_files < 0:
            raise ValueError(f"max_files must be >= 0 (got {self.max_files})")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (got {self.max_bytes})")
        if "/" in self.filename or "\\" in self.filename or self.filename.startswith("."):
            raise ValueError(f"filename must be a plain file name without '/' and not hidden "
                             f"(got {self.filename!r}); set the directory instead")
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(self.filename)
                      if f is not None and not spec and not conv]
            specs = [spec or conv for _, f, spec, conv in string.Formatter().parse(self.filename)
                     if f is not None and (spec or conv)]
        except ValueError as exc:
            raise ValueError(f"filename {self.filename!r}: {exc}") from None
        unknown = [f for f in fields if f not in PLACEHOLDERS]
        if unknown or specs:
            raise ValueError(f"filename {self.filename!r}: only the placeholders "
                             f"{{type}}, {{timestamp}} and {{seq}} are allowed, without format "
                             f"specs")
        if "seq" not in fields:
            raise ValueError(f"filename {self.filename!r} must contain {{seq}} so every file "
                             f"gets a unique name")

    def name_regex(self) -> re.Pattern[str]:
        """Matches exactly the names this pattern makes (for retention)."""
        parts = {"type": r"[A-Za-z0-9_.-]+", "timestamp": r"\d{8}T\d{6}Z", "seq": r"\d+"}
        out, seen = "", set()
        for literal, name, _, _ in string.Formatter().parse(self.filename):
            out += re.escape(literal)
            if name is not None:
                out += f"(?P={name})" if name in seen else f"(?P<{name}>{parts[name]})"
                seen.add(name)
        return re.compile(out)
