"""Who a process is, as OpenTelemetry resource attributes: ``process.pid``,
``process.vpid``, ``process.executable.name``/``.path``, ``container.id``,
``k8s.pod.uid`` and — from the process's own environment — ``service.name``
and the other attributes of ``OTEL_RESOURCE_ATTRIBUTES``.

Everything read here is the process's (untrusted): ``/proc/PID/environ`` is
read as a bounded prefix and only two variables are taken from it,
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (other variables hold
secrets and are never kept); their values are cut to a length, made printable
and at most :data:`MAX_ATTRIBUTES` attributes are kept. ``/proc/PID/cgroup`` is
read bounded too.

``service.name`` is the process's ``OTEL_SERVICE_NAME``, else the
``service.name`` of its ``OTEL_RESOURCE_ATTRIBUTES``; when neither says, it is
left unset here and decided where it is sent (``telegen.semconv.service_name``:
Kubernetes container name, else executable name).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from cachetools import LRUCache

from telegen import semconv as sc
from telegen.procinfo.container import CgroupIdentity, cgroup_identity
from telegen.procinfo.process import read_ids
from telegen.untrusted import Refused
from telegen.untrusted.fs import open_regular
from telegen.untrusted.text import printable

ENVIRON_LIMIT = 256 * 1024     # bytes of /proc/PID/environ looked at
CGROUP_LIMIT = 64 * 1024
MAX_VALUE = sc.MAX_ATTRIBUTE_VALUE
WANTED = (b"OTEL_SERVICE_NAME=", b"OTEL_RESOURCE_ATTRIBUTES=")
_DELETED = " (deleted)"


def read_prefix(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of a regular file (a /proc
    file reports size 0: no size check can refuse it up front)."""
    fd = open_regular(path)
    try:
        parts, total = [], 0
        while total < limit:
            chunk = os.read(fd, min(65536, limit - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def otel_environment(environ: bytes, *, complete: bool = True) -> dict[str, str]:
    """``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` of a NUL-separated
    environment block, nothing else. With ``complete`` False the block was cut
    at the read limit and its last entry is dropped (it may be cut short)."""
    entries = environ.split(b"\0")
    if not complete:
        entries = entries[:-1]
    out: dict[str, str] = {}
    for entry in entries:
        for prefix in WANTED:
            if entry.startswith(prefix):
                name = prefix[:-1].decode()
                out.setdefault(name, entry[len(prefix):].decode("utf-8", "replace"))
    return out


def _clean(text: str, limit: int) -> str:
    return printable(text.strip()[:limit])


# What /proc says about a process, never taken from its own claims (a process
# naming another pod's uid would have its samples attributed to that pod).
OBSERVED_PREFIXES = ("process.", "container.", "host.", "os.", "k8s.pod.uid")


def service_attributes(env: dict[str, str]) -> dict[str, str]:
    """Resource attributes a process gives itself: those of
    ``OTEL_RESOURCE_ATTRIBUTES``, with ``OTEL_SERVICE_NAME`` over its
    ``service.name`` (the OpenTelemetry SDKs' order), without those /proc
    decides (:data:`OBSERVED_PREFIXES`)."""
    attrs = {k: printable(v) for k, v in
             sc.parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")).items()}
    name = _clean(env.get("OTEL_SERVICE_NAME", ""), MAX_VALUE)
    if name:
        attrs[sc.SERVICE_NAME] = name
    return {k: v for k, v in attrs.items() if v and not k.startswith(OBSERVED_PREFIXES)}



@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    vpid: int = 0                     # pid in its own namespace; 0 when unknown
    executable_path: str = ""         # as the process sees it (its mount namespace)
    cgroup: CgroupIdentity = CgroupIdentity()
    service: dict[str, str] = field(default_factory=dict)   # from its environment
    # False when /proc/PID/environ was empty or unreadable: a process caught
    # inside execve (its new environment not yet set up) reads as empty
    environ_seen: bool = True

    def attributes(self) -> dict[str, str | int]:
        """Its resource attributes (semantic-convention names)."""
        attrs: dict[str, str | int] = dict(self.service)
        attrs[sc.PROCESS_PID] = self.pid
        if self.vpid and self.vpid != self.pid:
            attrs[sc.PROCESS_VPID] = self.vpid
        if self.executable_path:
            attrs[sc.PROCESS_EXECUTABLE_PATH] = self.executable_path
            attrs[sc.PROCESS_EXECUTABLE_NAME] = os.path.basename(self.executable_path)
        if self.cgroup.container_id:
            attrs[sc.CONTAINER_ID] = self.cgroup.container_id
        if self.cgroup.pod_uid:
            attrs[sc.K8S_POD_UID] = self.cgroup.pod_uid
        return attrs


def read_identity(pid: int, *, proc: str = "/proc", exe: str | None = None,
                  refused: list[Refused] | None = None) -> ProcessIdentity | None:
    """The identity of ``pid``; None when it is gone. ``exe``: the executable
    path when the caller already read it. What could not be read is left out;
    refusals (a read over its bound) are appended to ``refused``."""
    base = f"{proc}/{pid}"
    if exe is None:
        try:
            exe = os.readlink(f"{base}/exe")
        except OSError:
            exe = ""
    exe = printable(exe.removesuffix(_DELETED))
    try:
        cgroup_text = read_prefix(f"{base}/cgroup", CGROUP_LIMIT).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except (OSError, Refused):
        cgroup_text = ""
    raw = b""
    try:
        raw = read_prefix(f"{base}/environ", ENVIRON_LIMIT)
    except Refused as exc:
        if refused is not None:
            refused.append(exc)
    except OSError:
        pass
    env = otel_environment(raw, complete=len(raw) < ENVIRON_LIMIT)
    ids = read_ids(pid, proc)
    return ProcessIdentity(pid=pid, vpid=ids.nspid if ids else 0, executable_path=exe,
                           cgroup=cgroup_identity(cgroup_text),
                           service=service_attributes(env), environ_seen=bool(raw))


class IdentityCache:
    """``pid -> attributes``, bounded, read once per process image: an entry
    is tied to a token (the caller's record of the process, e.g. its
    ``ProcessInfo``) and re-read when the token changes (exec, pid reuse)."""

    def __init__(self, maxsize: int = 8192, *, proc: str = "/proc") -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self._cache: LRUCache[int, tuple[object, dict[str, str | int]]] = LRUCache(maxsize)

    def attributes(self, pid: int, token: object, exe: str | None = None) -> dict[str, str | int]:
        with self._lock:
            hit = self._cache.get(pid)
        if hit is not None and (hit[0] is token or hit[0] == token):
            return hit[1]
        ident = read_identity(pid, proc=self._proc, exe=exe)
        attrs: dict[str, str | int] = ident.attributes() if ident is not None \
            else {sc.PROCESS_PID: pid}
        if ident is not None and ident.environ_seen:   # else: read again next time
            with self._lock:
                self._cache[pid] = (token, attrs)
        return attrs


_HOST: dict[str, str] = {}


def host_attributes() -> dict[str, str]:
    """``host.name``, ``host.id`` (the machine id, as the OpenTelemetry host
    detectors read it) and ``os.type`` of this host."""
    if not _HOST:
        attrs = {sc.HOST_NAME: socket.gethostname(), sc.OS_TYPE: "linux"}
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                machine = read_prefix(path, 64).decode("ascii", "replace").strip()
            except (OSError, Refused):
                continue
            if machine:
                attrs[sc.HOST_ID] = printable(machine)
                break
        _HOST.update(attrs)
    return dict(_HOST)
