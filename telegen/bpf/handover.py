"""Descriptors from the compiler child to the agent: SCM_RIGHTS over a
private ``socketpair`` (SOCK_SEQPACKET), then a JSON manifest.

Messages: ``{"fds": n}`` with n descriptors attached (at most
``FDS_PER_MESSAGE`` each), repeated; then ``{"manifest_bytes": n}`` and the
n bytes of ``{"manifest": {...}}`` in messages of at most ``CHUNK`` bytes
(a SOCK_SEQPACKET message must fit the socket's buffer, ~200 KiB; the
manifest carries the compiled object, ~260 KiB with every profile type).
The manifest names descriptors by their index in the order they were sent.
Only the two ends of the pair exist, so nothing but the child can send here.
"""

from __future__ import annotations

import array
import json
import os
import socket
import time
from typing import Any

FDS_PER_MESSAGE = 200
MAX_MESSAGE = 1 << 20
CHUNK = 64 << 10
MAX_MANIFEST = 16 << 20


class HandoverError(RuntimeError):
    pass


def send(sock: socket.socket, fds: list[int], manifest: dict[str, Any]) -> None:
    for i in range(0, len(fds), FDS_PER_MESSAGE):
        chunk = fds[i:i + FDS_PER_MESSAGE]
        sock.sendmsg([json.dumps({"fds": len(chunk)}).encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk))])
    data = json.dumps({"manifest": manifest}).encode()
    if len(data) > MAX_MANIFEST:
        raise HandoverError(f"manifest of {len(data)} bytes is too large")
    sock.sendall(json.dumps({"manifest_bytes": len(data)}).encode())
    for i in range(0, len(data), CHUNK):
        sock.sendall(data[i:i + CHUNK])


def receive(sock: socket.socket, deadline: float) -> tuple[list[int], dict[str, Any]]:
    """Descriptors and manifest; raises HandoverError (closing what it got)
    when the child hangs up or sends something malformed."""
    fds: list[int] = []
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, anc, flags, _ = sock.recvmsg(
                    MAX_MESSAGE, socket.CMSG_SPACE(FDS_PER_MESSAGE * 4),
                    socket.MSG_CMSG_CLOEXEC)
            except TimeoutError:
                raise HandoverError("the compiler child did not answer in time") from None
            got: list[int] = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                    got += a.tolist()
            fds += got
            if not data:
                raise HandoverError("the compiler child hung up before its manifest")
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                raise HandoverError("a hand-over message was truncated")
            msg = json.loads(data)
            if "manifest_bytes" in msg:
                if got:
                    raise HandoverError("descriptors sent with the manifest")
                return fds, _manifest(sock, msg["manifest_bytes"], deadline)
            if msg.get("fds") != len(got):
                raise HandoverError(f"expected {msg.get('fds')} descriptors, got {len(got)}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _manifest(sock: socket.socket, size: object, deadline: float) -> dict[str, Any]:
    if not isinstance(size, int) or not 0 < size <= MAX_MANIFEST:
        raise HandoverError(f"bad manifest size {size!r}")
    parts: list[bytes] = []
    got = 0
    while got < size:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, anc, flags, _ = sock.recvmsg(CHUNK, socket.CMSG_SPACE(4),
                                               socket.MSG_CMSG_CLOEXEC)
        except TimeoutError:
            raise HandoverError("the compiler child did not answer in time") from None
        for level, kind, payload in anc:      # never expected: close what came
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                for fd in a:
                    os.close(fd)
            raise HandoverError("descriptors sent with the manifest")
        if not data:
            raise HandoverError("the compiler child hung up inside its manifest")
        if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or got + len(data) > size:
            raise HandoverError("a manifest message was truncated or too long")
        parts.append(data)
        got += len(data)
    msg = json.loads(b"".join(parts))
    if not isinstance(msg, dict) or not isinstance(msg.get("manifest"), dict):
        raise HandoverError("malformed manifest")
    manifest: dict[str, Any] = msg["manifest"]
    return manifest
