"""The py-spy engine: one ``py-spy record --format speedscope`` per process
and window.

Why this mode (measured on this machine, 2 vCPUs, CPython 3.12, 100 Hz):
``py-spy record`` samples inside one long-lived process per window, so the
per-sample cost is py-spy's own (a few microseconds of reading the target's
memory) rather than a process start per sample as with ``py-spy dump``
(~30 ms each). py-spy cannot stream: it writes its file when the duration
ends, on SIGINT or when the target exits, so a window is one py-spy run and
the gap between windows is its start-up (~30 ms). Speedscope rather than
``raw``: it keeps full file paths, thread names and line numbers per frame.
``--nonblocking`` (default on) reads without pausing the target: ~4% target
slowdown instead of ~9% with pausing, and the same 2:1 shares in the tests.
It is left out with ``--native``: py-spy 0.4 refuses the pair (native stacks
are unwound from a paused thread), so native sampling always pauses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from telegen.procinfo import agent
from telegen.receivers.python.engine import (
    EngineError,
    EngineOptions,
    RawFrame,
    ThreadStack,
)

_THREAD_PROFILE = re.compile(r'^Thread (\d+) "(.*)"$')
_THREAD_FRAME = re.compile(r"^thread \((?:0x)?([0-9a-fA-F]+)\)(?::\s*(.*))?$")


def find_py_spy(configured: str = "") -> str | None:
    """The py-spy executable: as configured, next to this interpreter, or on PATH."""
    if configured:
        return shutil.which(configured) or (configured if os.path.exists(configured) else None)
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("py-spy")


def is_python_file(path: str) -> bool:
    return path.endswith((".py", ".pyw")) or path.startswith("<")


class PySpyRecording:
    """One ``py-spy record`` run; see :class:`telegen.receivers.python.engine.Recording`."""

    def __init__(self, exe: str, pid: int, options: EngineOptions, workdir: str) -> None:
        self.pid = pid
        fd, self._out = tempfile.mkstemp(prefix=f"pyspy-{pid}-", suffix=".json", dir=workdir)
        os.close(fd)
        self._err_path = self._out + ".err"
        args = [exe, "record", "--format", "speedscope", "--threads", "--full-filenames",
                "--rate", str(options.rate), "--duration", str(options.seconds),
                "--pid", str(pid), "--output", self._out]
        if options.include_idle:
            args.append("--idle")
        if options.gil_only:
            args.append("--gil")
        if options.native:
            args.append("--native")
        if options.nonblocking and not options.native:
            # py-spy exits at once ("Can't get native stack traces with the
            # --nonblocking option"): native stacks need the thread paused.
            args.append("--nonblocking")
        self._stopped = False
        with open(self._err_path, "wb") as err:
            try:
                self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    start_new_session=True)
            except OSError as exc:
                self._proc = None
                self._cleanup()
                raise EngineError("py-spy cannot start", str(exc)) from exc
        agent.child_started(self._proc.pid)      # the agent's tool: not profiled by ebpf

    def done(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._stopped = True
            try:
                self._proc.send_signal(signal.SIGINT)     # py-spy writes what it has
            except OSError:
                pass

    def result(self, timeout_s: float = 10.0) -> list[ThreadStack]:
        proc = self._proc
        if proc is None:
            raise EngineError("recording cancelled")
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise EngineError("py-spy hung", f"no result {timeout_s:.0f}s after the window") \
                from None
        try:
            data = _load(self._out)
            if data is None and self._stopped and rc == -signal.SIGINT:
                return []       # stopped before py-spy set up its Ctrl-C handler
            if data is None:
                raise EngineError(*_failure(self._err_path, rc))
            return parse_speedscope(data)
        finally:
            agent.child_ended(proc.pid)
            self._proc = None
            self._cleanup()

    def cancel(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            agent.child_ended(proc.pid)
        self._cleanup()

    def _cleanup(self) -> None:
        for path in (self._out, self._err_path):
            try:
                os.unlink(path)
            except OSError:
                pass


class PySpyEngine:
    name = "py-spy"

    def __init__(self, exe: str, workdir: str | None = None) -> None:
        self.exe = exe
        self.workdir = workdir or tempfile.mkdtemp(prefix="telegen-pyspy-")

    def record(self, pid: int, options: EngineOptions) -> PySpyRecording:
        return PySpyRecording(self.exe, pid, options, self.workdir)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _load(path: str) -> dict[str, Any] | None:
    try:
        if os.path.getsize(path) == 0:
            return None
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _failure(err_path: str, rc: int) -> tuple[str, str]:
    """A stable reason and the detail from py-spy's stderr."""
    try:
        with open(err_path, "rb") as f:
            text = f.read(8192).decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("Error:", "thread 'main'"))]
    detail = " ".join(lines[:4]) if not errors else " ".join(lines[lines.index(errors[0]):][:4])
    low = text.lower()
    if "process exited" in low or "no such process" in low or "is the process running" in low \
            or "check that the process is running" in low:
        reason = "process not running"
    elif "permission denied" in low or "operation not permitted" in low:
        reason = "permission denied"
    elif "python version" in low or "unsupported" in low or "failed to find python" in low \
            or "interpreter" in low:
        reason = "not a supported python"
    else:
        reason = f"py-spy exited with {rc}"
    return reason, detail[:300]


def parse_speedscope(data: dict[str, Any]) -> list[ThreadStack]:
    """Aggregated thread stacks (leaf first) from a py-spy speedscope document."""
    shared = data.get("shared") or {}
    frames: list[RawFrame | None] = []
    thread_frames: dict[int, tuple[int, str]] = {}
    for i, f in enumerate(shared.get("frames") or []):
        name = str(f.get("name") or "")
        file = str(f.get("file") or "")
        m = _THREAD_FRAME.match(name) if not file else None
        if m is not None:
            thread_frames[i] = (int(m.group(1), 16 if name.startswith("thread (0x") else 10),
                                m.group(2) or "")
            frames.append(None)
            continue
        line = f.get("line")
        frames.append(RawFrame(name or "[unknown]", file,
                               int(line) if isinstance(line, int) else 0,
                               native=not is_python_file(file)))
    out: dict[tuple[int, str, tuple[RawFrame, ...]], int] = {}
    for prof in data.get("profiles") or []:
        m = _THREAD_PROFILE.match(str(prof.get("name") or ""))
        tid, tname = (int(m.group(1)), m.group(2)) if m else (0, "")
        # one entry per sample (weights are 1/rate seconds each: not needed)
        for stack in prof.get("samples") or []:
            kept: list[RawFrame] = []
            s_tid, s_name = tid, tname
            for idx in stack:                       # root first
                if not isinstance(idx, int) or not 0 <= idx < len(frames):
                    continue
                fr = frames[idx]
                if fr is None:
                    s_tid, name = thread_frames[idx]
                    s_name = s_name or name
                    continue
                kept.append(fr)
            if not kept:
                continue
            key = (s_tid, s_name, tuple(reversed(kept)))
            out[key] = out.get(key, 0) + 1
    return [ThreadStack(tid, name, stack, n) for (tid, name, stack), n in out.items()]

