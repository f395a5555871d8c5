"""Receiver ``pprof``: read pprof files (e.g. written by Go's runtime/pprof) from disk."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PprofReceiverConfig:
    # Glob patterns of files to read (``**`` matches subdirectories, ``~`` expands).
    # Symlinks are never followed, in the pattern's directories or among the
    # matches: give real paths.
    paths: list[str] = field(default_factory=list)
    # Keep polling for new or changed files; otherwise read what matches once.
    watch: bool = False
    # How often to look for new files when watching. A new or changed file is
    # read once its size and mtime stayed the same for one poll.
    poll_interval: float = field(default=1.0, metadata={"duration": True})
    # Delete each file after it was read and handed on successfully.
    delete_after_read: bool = False
    # Largest file read (as stored, before any gunzip); a bigger one is
    # refused unread. Symlinks, FIFOs and other non-regular files are never read.
    max_file_bytes: int = 64 << 20

    def validate(self) -> None:
        if not self.paths:
            raise ValueError("paths: list at least one file or glob pattern, "
                             "e.g. paths: [\"/var/run/profiles/*.pb.gz\"]")
        for p in self.paths:
            if not p.strip():
                raise ValueError("paths: empty pattern; remove it")
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be > 0 (got {self.max_file_bytes})")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 (got {self.poll_interval}s)")
