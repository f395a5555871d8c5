"""The child's hand-over over a socketpair: descriptors in batches, then a
manifest larger than one SOCK_SEQPACKET message (the compiled object with
every profile type is ~260 KiB) arrives whole; a lying size is refused and
every received descriptor closed."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from telegen.bpf import handover


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_descriptors_and_a_manifest_of_a_megabyte_arrive_whole() -> None:
    ours, theirs = _pair()
    pipes = [os.pipe() for _ in range(250)]          # more than one fd batch
    manifest = {"object": {"insns": "A" * (1 << 20)}, "maps": {"m": {"fd": 3}}}
    sender = threading.Thread(target=handover.send,
                              args=(theirs, [r for r, _ in pipes], manifest))
    sender.start()
    fds, got = handover.receive(ours, time.monotonic() + 10)
    sender.join()
    try:
        assert got == manifest
        assert len(fds) == 250
        os.write(pipes[7][1], b"x")
        assert os.read(fds[7], 1) == b"x"             # the same pipe, passed over
    finally:
        for fd in fds:
            os.close(fd)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        ours.close()
        theirs.close()


@pytest.mark.parametrize("announced,sent", [(1000, b'{"manifest": {}}'),      # short
                                             (5, b'{"manifest": {}}'),         # long
                                             (10 ** 9, b"{}")])                # too big
def test_a_manifest_of_another_size_than_announced_is_refused_and_fds_closed(
        announced: int, sent: bytes) -> None:
    ours, theirs = _pair()
    r, w = os.pipe()
    theirs.sendmsg([json.dumps({"fds": 1}).encode()],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, "little"))])
    theirs.send(json.dumps({"manifest_bytes": announced}).encode())
    theirs.send(sent)
    theirs.close()
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(handover.HandoverError, match="manifest"):
        handover.receive(ours, time.monotonic() + 5)
    assert set(os.listdir("/proc/self/fd")) <= before     # the received copy closed
    for fd in (r, w):
        os.close(fd)
    ours.close()
