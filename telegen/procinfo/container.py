"""Container id from the cgroup path (docker, containerd/CRI, cri-o, podman)."""

from __future__ import annotations

import re

# A 64-hex-digit id as the last component of a cgroup path, optionally wrapped
# as docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope.
_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")


def container_id_from_cgroup(text: str) -> str:
    """The container id in a ``/proc/PID/cgroup`` text, or "" for host processes."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1].strip()
        for part in reversed(path.split("/")):
            m = _ID.search(part)
            if m:
                return m.group(1)
    return ""
