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

Names come from the symbol tables of profiled binaries: untrusted. The
line protocol stays in step whatever a name holds:

* only names made of the mangled alphabet (``[A-Za-z0-9_.$]``, at most
  :data:`MAX_NAME` characters) are sent; any other name (a newline, a NUL, a
  space, an escape sequence…) is returned unchanged, never written to the pipe;
* each name is followed by a sentinel line and the answer is read up to that
  sentinel, so an answer of several lines cannot shift later answers;
* each answer has a deadline (:data:`DEADLINE_S`): a ``c++filt`` that takes
  longer (libiberty on a pathological name) is killed, the name stays
  mangled, and the next name starts a fresh ``c++filt``;
* an answer containing control characters is discarded (the raw name is kept).

Rust output is shown the way ``rustc-demangle``'s alternate form shows it: the
legacy ``::h<16 hex>`` hash and v0 crate disambiguators (``crate[1a2b]``) are
removed.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import subprocess
import threading
import time

from telegen.procinfo import agent

log = logging.getLogger(__name__)

MAX_NAME = 4096          # longer names stay mangled (libiberty's cost grows with length)
DEADLINE_S = 1.0         # per name; c++filt is killed and restarted past it
_SENTINEL = b"telegen-demangle-end"
_MANGLED = re.compile(r"[A-Za-z0-9_.$]+")     # fullmatch: "$" would allow a final "\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
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


def sendable(name: str) -> bool:
    """True when ``name`` may go down the pipe: the mangled alphabet only."""
    return len(name) <= MAX_NAME and _MANGLED.fullmatch(name) is not None


class Demangler:
    """Demangles C++ and/or Rust names; others pass through unchanged. Thread-safe."""

    def __init__(self, *, cpp: bool = True, rust: bool = True, tool: str = "c++filt",
                 deadline_s: float = DEADLINE_S) -> None:
        self.cpp = cpp
        self.rust = rust
        self.deadline_s = deadline_s
        self._tool = shutil.which(tool) if (cpp or rust) else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._warned = False
        self.refused = 0       # names not sent (outside the mangled alphabet or too long)
        self.timeouts = 0      # answers past the deadline

    def demangle(self, name: str) -> str:
        lang = language(name)
        if not lang or (lang == "cpp" and not self.cpp) or (lang == "rust" and not self.rust):
            return name
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        if not sendable(name):
            self.refused += 1
            return name
        out = self._run(name)
        if _CONTROL.search(out):
            out = name
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
                    answer = self._ask(name.encode("ascii"))
                except TimeoutError:
                    self.timeouts += 1
                    log.debug("c++filt took over %.1fs on a %d-character name; restarted",
                              self.deadline_s, len(name))
                    self._stop(kill=True)
                    return name
                except (OSError, ValueError):
                    answer = None
                if answer is not None:
                    return answer
                self._stop()
        return name

    def _ask(self, name: bytes) -> str | None:
        """One round trip: the name, then the sentinel; the answer is every
        line before the sentinel's echo. None when c++filt died."""
        proc = self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(name + b"\n" + _SENTINEL + b"\n")
        proc.stdin.flush()
        deadline = time.monotonic() + self.deadline_s
        fd = proc.stdout.fileno()
        marker = b"\n" + _SENTINEL + b"\n"
        while True:
            buf = b"\n" + self._pending
            end = buf.find(marker)
            if end >= 0:
                self._pending = buf[end + len(marker):]
                return buf[1:end].decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._pending += chunk

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            assert self._tool is not None
            if self._proc is not None:                # it died (and was reaped by poll)
                agent.child_ended(self._proc.pid)
            self._pending = b""
            self._proc = subprocess.Popen(
                [self._tool], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, bufsize=0)
            agent.child_started(self._proc.pid)      # the agent's tool: not profiled
        return self._proc

    def _stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        self._pending = b""
        if proc is None:
            return
        try:
            if kill:
                proc.kill()
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=2)
        except Exception:
            proc.kill()
            proc.wait()
        finally:
            agent.child_ended(proc.pid)
            if proc.stdout:
                proc.stdout.close()
