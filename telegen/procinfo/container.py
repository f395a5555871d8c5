"""Container id from the cgroup path (docker, containerd/CRI, cri-o, podman),
and the resource attributes of a process in a container."""

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


def container_attributes(pid: int, proc: str = "/proc") -> dict[str, str | int]:
    """OTel resource attributes of a containerized ``pid``: ``container.id``
    (from its cgroup) and ``process.vpid`` (its pid in its own pid namespace,
    when that differs from ``pid``); {} for a host process or one that is gone."""
    from telegen.procinfo.process import namespaced_pid, read_text

    attrs: dict[str, str | int] = {}
    cid = container_id_from_cgroup(read_text(f"{proc}/{pid}/cgroup") or "")
    if cid:
        attrs["container.id"] = cid
    vpid = namespaced_pid(read_text(f"{proc}/{pid}/status") or "")
    if vpid and vpid != pid:
        attrs["process.vpid"] = vpid
    return attrs
