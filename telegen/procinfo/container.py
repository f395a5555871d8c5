"""Container id and Kubernetes pod uid from a process's cgroup paths.

The shapes, cgroup v1 (``N:controllers:/path``) and v2 (``0::/path``) alike:

* docker: ``/docker/<id>`` (cgroupfs driver), ``/system.slice/docker-<id>.scope``
  (systemd driver);
* containerd's CRI plugin: ``cri-containerd-<id>.scope`` under a pod slice when
  the kubelet uses the systemd driver (containerd's ``getCgroupsPath`` passes
  ``<pod slice>:cri-containerd:<id>`` to runc, which names the unit
  ``<prefix>-<name>.scope``), ``/kubepods/<qos>/pod<uid>/<id>`` with cgroupfs;
* CRI-O: ``crio-<id>.scope`` (``crio-conmon-<id>.scope`` is its monitor, not
  the container);
* podman: ``libpod-<id>.scope`` (``/container`` below it when the container runs
  systemd or with ``--cgroups=split``), ``/libpod_parent/libpod-<id>`` with
  cgroupfs; ``libpod-conmon-<id>.scope`` is the monitor;
* Kubernetes pods: the kubelet's ``CgroupName{"kubepods", "burstable",
  "pod<uid>"}`` is ``/kubepods/burstable/pod<uid>`` with cgroupfs and
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice``
  with systemd, where ``-`` in the uid is escaped to ``_``
  (kubernetes ``pkg/kubelet/cm/cgroup_manager_linux.go``, ``ToSystemd``);
  guaranteed pods have no QoS level; kind/k3s nest it under another prefix
  (``kubelet-kubepods-...``).

Pure parsing: the caller reads ``/proc/PID/cgroup`` (bounded, see
``telegen.procinfo.identity``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# A 64-hex-digit id as a whole cgroup path component, optionally wrapped as
# docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope.
_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")
_MONITOR = re.compile(r"(?:^|-)conmon-[0-9a-f]{64}(?:\.scope)?$")
# pod<uid> as a cgroupfs component or the tail of a systemd slice name
_POD_CGROUPFS = re.compile(r"^pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_POD_SYSTEMD = re.compile(
    r"-pod([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})\.slice$")
MAX_LINES = 64      # a process is in one cgroup per v1 hierarchy: a dozen lines


class CgroupIdentity(NamedTuple):
    container_id: str = ""     # 64 hex digits, "" for a host process
    pod_uid: str = ""          # Kubernetes pod uid with dashes, "" outside a pod


def _paths(text: str) -> list[str]:
    return [line.split(":", 2)[-1].strip() for line in text.splitlines()[:MAX_LINES]]


def container_id_in_path(path: str) -> str:
    for part in reversed(path.split("/")):
        if _MONITOR.search(part):
            return ""          # conmon: the runtime's monitor process, not the container
        m = _ID.search(part)
        if m:
            return m.group(1)
    return ""


def pod_uid_in_path(path: str) -> str:
    for part in reversed(path.split("/")):
        m = _POD_CGROUPFS.match(part)
        if m:
            return m.group(1)
        m = _POD_SYSTEMD.search(part)
        if m:
            return m.group(1).replace("_", "-")
    return ""


def container_id_from_cgroup(text: str) -> str:
    """The container id in a ``/proc/PID/cgroup`` text, or "" for host processes."""
    return cgroup_identity(text).container_id


def cgroup_identity(text: str) -> CgroupIdentity:
    """Container id and pod uid of a ``/proc/PID/cgroup`` text; the first line
    (v2's ``0::`` or any v1 hierarchy) that names a container decides both."""
    pod = ""
    for path in _paths(text):
        cid = container_id_in_path(path)
        if cid:
            return CgroupIdentity(cid, pod_uid_in_path(path))
        pod = pod or pod_uid_in_path(path)
    return CgroupIdentity("", pod)
