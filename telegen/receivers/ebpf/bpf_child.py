"""Running the BPF compiler child (``python -P -m telegen.bpfc``) for
:mod:`telegen.receivers.ebpf.bpf_loader`: started with the options as JSON
on its stdin and one end of a private ``socketpair``, its descriptors and
manifest received (:mod:`telegen.bpf.handover`), always reaped (killed past
the deadline), its stderr the message of a failure. Started either by the
load itself or earlier, by ``bpf_loader.compile_early`` (#21)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from telegen.bpf import handover
from telegen.procinfo import agent

REAP_TIMEOUT_S = 10.0        # after a complete hand-over the child only exits
FAILED_REAP_TIMEOUT_S = 2.0
NARROW_KALLSYMS = True       # the child's BCC sees the probe-read helpers only (bpf/kallsyms.py)
CHILD_LOADER = "telegen"     # "bcc": the child loads with BCC itself (its fallback; tests)


class BpfLoadError(RuntimeError):
    """Compiling, loading or attaching failed; the message says what to run."""


@dataclass
class Child:
    """A started compiler child, its end of the socketpair, its stderr."""
    process: subprocess.Popen[bytes]
    sock: socket.socket
    errors: Any

    def close(self) -> None:
        self.sock.close()
        self.errors.close()


def spawn(options: dict[str, Any]) -> Child:
    """Start the child for ``options`` (BpfOptions' fields); it compiles at once."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    errors = tempfile.TemporaryFile()
    request = json.dumps({"options": options, "narrow_kallsyms": NARROW_KALLSYMS,
                          "loader": CHILD_LOADER, "child_start": time.monotonic()}).encode()
    try:
        # -P and cwd "/": `-m` would otherwise put the agent's working
        # directory (maybe a tenant's) first on the child's sys.path
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "telegen.bpfc", str(theirs.fileno()),
             str(os.getpid())], cwd="/",
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
            pass_fds=(theirs.fileno(),), close_fds=True)
    except BaseException:
        ours.close()
        errors.close()
        raise
    finally:
        theirs.close()
    agent.child_started(process.pid)      # the agent's own work: not profiled
    child = Child(process, ours, errors)
    try:
        assert process.stdin is not None
        process.stdin.write(request)      # the pipe's buffer holds it until the child
        process.stdin.close()             # reads it, at its start
    except OSError:
        pass                              # it died already: receive() says how
    return child


def receive(child: Child, timeout_s: float) -> tuple[list[int], dict[str, Any]]:
    """The child's descriptors and manifest, or BpfLoadError with its stderr;
    the child is reaped either way."""
    process, errors = child.process, child.errors
    try:
        fds, manifest = handover.receive(child.sock, time.monotonic() + timeout_s)
    except (handover.HandoverError, OSError, ValueError) as exc:
        reap(process, FAILED_REAP_TIMEOUT_S)       # a failed child exits by itself
        raise BpfLoadError(f"BPF compile/load in telegen.bpfc failed "
                           f"(exit {process.returncode}): {tail(errors) or exc}") from exc
    except BaseException:
        reap(process, 0.0)
        raise
    if reap(process) != 0:
        for fd in fds:
            os.close(fd)
        raise BpfLoadError(f"telegen.bpfc exited {process.returncode}: {tail(errors)}")
    return fds, manifest


def end(child: Child) -> None:
    """Kill, reap and close a child nobody will receive from."""
    reap(child.process, 0.0)
    child.close()


def reap(process: subprocess.Popen[bytes], timeout_s: float = REAP_TIMEOUT_S) -> int:
    """Wait for the child to exit, killing it past ``timeout_s``."""
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
    finally:
        agent.child_ended(process.pid)


def tail(f: Any, limit: int = 8192) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - limit))
    return f.read().decode("utf-8", "replace").strip()
