"""A cheaper BCC compile: ``/proc/kallsyms`` narrowed in the compiler child.

BCC's rewriter loads the whole of ``/proc/kallsyms`` (~120k symbols here)
into a hash map, only to ask whether ``bpf_probe_read_kernel`` and
``bpf_probe_read_user`` exist, and frees it again: measured 0.5-0.8 s of the
compile's ~3 s of CPU. :func:`narrow` gives the child (and only it) a
private mount namespace in which ``/proc/kallsyms`` holds the kernel's own
lines of the ``bpf_probe_read*`` helpers: the same answers, the same
instructions (the integration test compares the compiled objects).

Run by ``python -m telegen.bpfc`` before it imports ``bcc``, single-threaded.
The namespace is made private (``MS_REC | MS_PRIVATE`` on ``/``) before
anything is mounted, so nothing propagates to the host; it ends with the
child. Any failure (no ``CAP_SYS_ADMIN`` in a container, no kallsyms) leaves
the full file: the compile is then as before, only slower.
"""

from __future__ import annotations

import ctypes
import os
import tempfile

from telegen.procinfo.procfs import KALLSYMS

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
HELPERS = (b"bpf_probe_read", b"bpf_probe_read_str", b"bpf_probe_read_kernel",
           b"bpf_probe_read_kernel_str", b"bpf_probe_read_user", b"bpf_probe_read_user_str")
MAX_KALLSYMS = 64 << 20


def helper_lines(data: bytes) -> list[bytes]:
    """The kallsyms lines (``addr type name\\n``) of the probe-read helpers."""
    lines = []
    for name in HELPERS:
        pos = data.find(b" " + name + b"\n")
        if pos >= 0:
            start = data.rfind(b"\n", 0, pos) + 1
            lines.append(data[start:pos + len(name) + 2])
    return lines


def narrow() -> str:
    """Narrow ``/proc/kallsyms`` for this process; says what was done."""
    try:
        with open(KALLSYMS, "rb") as f:
            lines = helper_lines(f.read(MAX_KALLSYMS))
    except OSError as exc:
        return f"full ({exc.strerror})"
    if not lines:
        return "full (no bpf_probe_read helper listed)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return f"full (unshare: {os.strerror(ctypes.get_errno())})"
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return f"full (private mounts: {os.strerror(ctypes.get_errno())})"
    directory = tempfile.mkdtemp(prefix="telegen-bpfc-")
    path = os.path.join(directory, "kallsyms")
    try:
        with open(path, "wb") as f:
            f.write(b"".join(lines))
        if libc.mount(path.encode(), KALLSYMS.encode(), None, MS_BIND, None) != 0:
            return f"full (bind mount: {os.strerror(ctypes.get_errno())})"
    finally:
        os.unlink(path)
        os.rmdir(directory)
    return f"narrowed to {len(lines)} helpers"
