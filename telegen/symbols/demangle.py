"""C++ and Rust demangling through binutils' ``c++filt`` (libiberty).

Choice: one long-lived ``c++filt`` process, one name per line. libiberty is the
demangler gdb and binutils use; it handles Itanium C++ and both Rust schemes
(legacy ``_ZN…17h<hash>E`` and v0 ``_R…``). Measured here: ~45 µs per name
round trip, paid once per distinct symbol (results are cached, and the
symbolizer caches whole results per address), so it never touches the warm
path. Alternatives weighed: ``cxxfilt`` (PyPI) wraps libstdc++'s
``__cxa_demangle`` — C++ only, no Rust v0; pure-Python demanglers are
hand-written re-implementations with fewer users. ``c++filt`` comes with
``binutils``, which ``scripts/setup-host.sh`` already installs.

Rust output is shown the way ``rustc-demangle``'s alternate form shows it: the
legacy ``::h<16 hex>`` hash and v0 crate disambiguators (``crate[1a2b]``) are
removed.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading

log = logging.getLogger(__name__)

_RUST_LEGACY = re.compile(r"^_ZN.*17h[0-9a-f]{16}E(\..*)?$")
_LEGACY_HASH = re.compile(r"::h[0-9a-f]{16}(?=$|\s|\.)")
_V0_DISAMBIGUATOR = re.compile(r"(?<=[A-Za-z0-9_])\[[0-9a-f]+\](?=::|>|$)")


def language(name: str) -> str:
    """'rust', 'cpp' or '' for a raw symbol name."""
    if name.startswith("_R"):
        return "rust"
    if name.startswith("_Z"):
        return "rust" if _RUST_LEGACY.match(name) else "cpp"
    return ""


class Demangler:
    """Demangles C++ and/or Rust names; others pass through unchanged. Thread-safe."""

    def __init__(self, *, cpp: bool = True, rust: bool = True, tool: str = "c++filt") -> None:
        self.cpp = cpp
        self.rust = rust
        self._tool = shutil.which(tool) if (cpp or rust) else None
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._warned = False

    def demangle(self, name: str) -> str:
        lang = language(name)
        if not lang or (lang == "cpp" and not self.cpp) or (lang == "rust" and not self.rust):
            return name
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        out = self._run(name)
        if lang == "rust" and out != name:
            out = _V0_DISAMBIGUATOR.sub("", _LEGACY_HASH.sub("", out))
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[name] = out
        return out

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _run(self, name: str) -> str:
        if self._tool is None:
            if not self._warned:
                self._warned = True
                log.warning("c++filt not found: C++/Rust names stay mangled (install binutils)")
            return name
        with self._lock:
            for _attempt in range(2):
                try:
                    proc = self._ensure()
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(name + "\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                    if line:
                        return line.rstrip("\n")
                except (OSError, ValueError):
                    pass
                self._stop()
        return name

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            assert self._tool is not None
            self._proc = subprocess.Popen(
                [self._tool], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=2)
        except Exception:
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()
