"""Processor ``symbolize``: addresses → function, file, line (see telegen.symbols)."""
from __future__ import annotations

from dataclasses import dataclass, field

from telegen.symbols.debuginfod import check_url, default_cache_dir, urls_from_env


@dataclass
class SymbolizeConfig:
    # Demangle C++ (Itanium) names: ``_ZN2ns5Klass6methodEi`` → ``ns::Klass::method(int)``.
    demangle_cpp: bool = True
    # Demangle Rust names (legacy ``_ZN…17h<hash>E`` and v0 ``_R…``), hashes removed.
    demangle_rust: bool = True
    # Keep kernel frames, named from /proc/kallsyms; false removes them from stacks.
    include_kernel: bool = False
    # debuginfod servers asked for debug files by build-id; default: $DEBUGINFOD_URLS.
    debuginfod_urls: list[str] = field(default_factory=urls_from_env)
    # Where downloaded debug files are kept (<dir>/<build-id>/debuginfo).
    debuginfod_cache_dir: str = field(default_factory=default_cache_dir)
    # Per-request timeout for debuginfod, seconds: connect, or one read that stalls.
    debuginfod_timeout: float = field(default=5.0, metadata={"duration": True})
    # Deadline of one whole debuginfod download (connect, headers and body): a
    # server trickling bytes is cut here.
    debuginfod_deadline: float = field(default=60.0, metadata={"duration": True})
    # Largest debug file downloaded, bytes (gzip bodies: at most 16 MiB inflated).
    debuginfod_max_bytes: int = 1 << 30
    # Allow plain http:// debuginfod URLs to non-loopback hosts (a network
    # attacker can then replace debug files). Loopback http is always allowed.
    debuginfod_allow_insecure: bool = False
    # Roots searched for separate debug files (.build-id/xx/yyyy.debug, debuglink).
    debug_dirs: list[str] = field(default_factory=lambda: ["/usr/lib/debug"])
    # Bytes the symbolizer keeps in memory, all together (at least 4 MiB):
    # opened objects (symbol tables, the resident pages of their mmapped DWARF
    # indexes), resolved addresses and perf maps; least recently used evicted.
    cache_size: int = 32 << 20

    def validate(self) -> None:
        if self.debuginfod_timeout <= 0:
            raise ValueError(f"debuginfod_timeout must be > 0 (got {self.debuginfod_timeout})")
        if self.cache_size < 1:
            raise ValueError(f"cache_size must be >= 1 (got {self.cache_size})")
        if self.debuginfod_deadline <= 0:
            raise ValueError(f"debuginfod_deadline must be > 0 (got {self.debuginfod_deadline})")
        if self.debuginfod_max_bytes < 4096:
            raise ValueError(f"debuginfod_max_bytes must be >= 4096 "
                             f"(got {self.debuginfod_max_bytes})")
        for url in self.debuginfod_urls:
            try:
                check_url(url, allow_insecure=self.debuginfod_allow_insecure)
            except ValueError as exc:
                raise ValueError(f"debuginfod_urls: {exc}") from None
        for d in self.debug_dirs:
            if not d:
                raise ValueError("debug_dirs: empty path; remove it")
