"""Descriptors from the compiler child to the agent: SCM_RIGHTS over a
private ``socketpair`` (SOCK_SEQPACKET), then a JSON manifest.

Messages: ``{"fds": n}`` with n descriptors attached (at most
``FDS_PER_MESSAGE`` each), repeated; then ``{"manifest": {...}}``, which
names descriptors by their index in the order they were sent. Only the two
ends of the pair exist, so nothing but the child can send here.
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


class HandoverError(RuntimeError):
    pass


def send(sock: socket.socket, fds: list[int], manifest: dict[str, Any]) -> None:
    for i in range(0, len(fds), FDS_PER_MESSAGE):
        chunk = fds[i:i + FDS_PER_MESSAGE]
        sock.sendmsg([json.dumps({"fds": len(chunk)}).encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk))])
    data = json.dumps({"manifest": manifest}).encode()
    if len(data) > MAX_MESSAGE:
        raise HandoverError(f"manifest of {len(data)} bytes is too large")
    sock.sendall(data)


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
            if "manifest" in msg:
                if got:
                    raise HandoverError("descriptors sent with the manifest")
                return fds, msg["manifest"]
            if msg.get("fds") != len(got):
                raise HandoverError(f"expected {msg.get('fds')} descriptors, got {len(got)}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
