"""The attribute names telegen uses, OpenTelemetry semantic conventions, in one
place, with the older names still accepted where a user types one.

Where an attribute lives:

* the *resource* of a profile says whose samples they are: host, process,
  container, pod, service (``process.pid``, ``container.id``, ``service.name``…);
* a *sample label* says what differs inside one process: ``thread.id``,
  ``thread.name``, span links, a runtime's own labels (Go ``pprof.Do``).

A receiver that watches many processes at once (``ebpf``) may put process
attributes on samples; :func:`split_by_process` moves them to the resource,
one profile per process, so OTLP carries one ``ResourceProfiles`` per process
as the OpenTelemetry eBPF profiler does (Collector processors such as
``k8sattributes`` key on resource attributes). Exporters that write one
artefact per type (pprof files, console) merge them back and keep what differs
as labels (``telegen.helpers.windows``).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING

# pdata is imported where profiles are handled: the SDK imports this module
# on Python 3.8, which pdata does not support
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from telegen.pdata import Labels, LabelValue, Profile, Sample

HOST_NAME = "host.name"
HOST_ID = "host.id"
OS_TYPE = "os.type"
PROCESS_PID = "process.pid"
PROCESS_VPID = "process.vpid"            # the pid inside the process's own pid namespace
PROCESS_EXECUTABLE_NAME = "process.executable.name"
PROCESS_EXECUTABLE_PATH = "process.executable.path"
PROCESS_COMMAND_LINE = "process.command_line"
PROCESS_RUNTIME_NAME = "process.runtime.name"
PROCESS_RUNTIME_VERSION = "process.runtime.version"
THREAD_ID = "thread.id"                  # the OS thread id (a JVM's own id: jvm.thread.id)
THREAD_NAME = "thread.name"
JVM_THREAD_ID = "jvm.thread.id"
JVM_GC_NAME = "jvm.gc.name"
JVM_GC_CAUSE = "jvm.gc.cause"
CONTAINER_ID = "container.id"
K8S_POD_UID = "k8s.pod.uid"
K8S_CONTAINER_NAME = "k8s.container.name"
SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
UNKNOWN_SERVICE = "unknown_service"

# Names of earlier telegen versions (labels, ``--group-by``, UI queries): still
# understood on input, never written.
ALIASES: dict[str, str] = {
    "pid": PROCESS_PID,
    "tid": THREAD_ID,
    "comm": THREAD_NAME,
    "thread_name": THREAD_NAME,
    "thread_id": JVM_THREAD_ID,      # the JFR receiver's Java thread id
    "process.executable": PROCESS_EXECUTABLE_PATH,
}

# Keys of the resource (who), never of one sample (what inside it): these and
# any key in a resource namespace of the semantic conventions.
RESOURCE_PREFIXES = ("process.", "container.", "k8s.", "service.", "host.", "os.",
                     "deployment.", "cloud.", "telemetry.")


MAX_ATTRIBUTES = 32            # read from one OTEL_RESOURCE_ATTRIBUTES
MAX_ATTRIBUTE_KEY = 128
MAX_ATTRIBUTE_VALUE = 256


def parse_resource_attributes(text: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``key1=value1,key2=value2``, values
    percent-encoded, as the OpenTelemetry SDKs read it); malformed pairs are
    skipped, at most :data:`MAX_ATTRIBUTES` kept, keys and values bounded
    (the caller makes values printable where they are shown)."""
    out: dict[str, str] = {}
    for pair in text.split(",", MAX_ATTRIBUTES * 4)[:MAX_ATTRIBUTES * 4]:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key or len(key) > MAX_ATTRIBUTE_KEY or not key.isprintable():
            continue
        out.setdefault(key, urllib.parse.unquote(value.strip()).strip()[:MAX_ATTRIBUTE_VALUE])
        if len(out) >= MAX_ATTRIBUTES:
            break
    return out


def canonical(name: str) -> str:
    """The semantic-convention name of ``name`` (itself when it is one)."""
    return ALIASES.get(name, name)


def names_of(name: str) -> tuple[str, ...]:
    """``name`` and the older names that mean it (``process.pid``, ``pid``)."""
    return (name, *(old for old, new in ALIASES.items() if new == name))


def is_resource_key(key: str) -> bool:
    return key.startswith(RESOURCE_PREFIXES)


def service_name(resource: Mapping[str, LabelValue], configured: str = "") -> str:
    """``service.name`` of a resource, in this order: ``configured`` (an
    exporter's ``service_name``); the resource's own (the process's
    ``OTEL_SERVICE_NAME``, else ``service.name`` in its
    ``OTEL_RESOURCE_ATTRIBUTES``); the Kubernetes container name (when the
    ``k8sattributes`` processor added it); the executable name; only then
    ``unknown_service``."""
    if configured:
        return configured
    for key in (SERVICE_NAME, K8S_CONTAINER_NAME, PROCESS_EXECUTABLE_NAME):
        if resource.get(key):
            return str(resource[key])
    path = resource.get(PROCESS_EXECUTABLE_PATH)
    if path:
        return os.path.basename(str(path)) or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def sample_attributes(profile: Profile, sample: Sample) -> dict[str, LabelValue]:
    """Everything said about one sample: its profile's resource, then its labels."""
    return {**profile.resource, **dict(sample.labels)}


# -- one profile per process ------------------------------------------------------
def _part(labels: Labels) -> tuple[tuple[tuple[str, LabelValue], ...], Labels]:
    who = tuple((k, v) for k, v in labels if is_resource_key(k))
    if not who:
        return (), labels
    return who, tuple((k, v) for k, v in labels if not is_resource_key(k))


def split_by_process(profiles: Iterable[Profile]) -> list[Profile]:
    """Each profile whose samples carry resource keys (``process.pid``,
    ``container.id``, ``service.name``…) as labels becomes one profile per
    distinct set of them, with those keys on its resource; a profile already
    split (or with none) is returned as it is. Comments (loss notes) stay on
    one part only, so they are not counted once per process."""
    from telegen.pdata import Profile, Sample

    out: list[Profile] = []
    for p in profiles:
        parts: dict[tuple[tuple[str, LabelValue], ...], list[Sample]] = {}
        memo: dict[Labels, tuple[tuple[tuple[str, LabelValue], ...], Labels]] = {}
        for s in p:
            hit = memo.get(s.labels)
            if hit is None:
                hit = memo[s.labels] = _part(s.labels)
            parts.setdefault(hit[0], []).append(
                s if hit[1] is s.labels else
                Sample(s.stack, s.values, hit[1], s.timestamps, s.link))
        if not parts or list(parts) == [()]:
            out.append(p)
            continue
        first = () if () in parts else next(iter(parts))
        for who, samples in parts.items():
            part = Profile(name=p.name, sample_types=p.sample_types,
                           period_type=p.period_type, period=p.period, start_ns=p.start_ns,
                           duration_ns=p.duration_ns, resource={**p.resource, **dict(who)},
                           default_sample_type=p.default_sample_type,
                           comments=p.comments if who == first else ())
            part.origin = p.origin
            part.replace_samples(samples)
            out.append(part)
    return out


def with_resource_labels(profile: Profile, keys: Iterable[str]) -> Profile:
    """``profile`` with the resource's values of ``keys`` copied onto every
    sample that lacks them (for grouping by a process attribute of a file
    that holds one process, whose attributes are its resource)."""
    from telegen.pdata import Sample

    extra = tuple((k, profile.resource[k]) for k in keys if k in profile.resource)
    if not extra:
        return profile
    out = profile.copy()
    samples = []
    for s in profile:
        have = {k for k, _ in s.labels}
        add = tuple(kv for kv in extra if kv[0] not in have)
        labels = tuple(sorted(s.labels + add, key=lambda kv: kv[0])) if add else s.labels
        samples.append(Sample(s.stack, list(s.values), labels, list(s.timestamps), s.link))
    out.replace_samples(samples)
    return out


def canonical_labels(labels: Labels) -> Labels:
    """``labels`` under their semantic-convention names (a pushed pprof file
    or an older telegen's labels); the first value of a key wins."""
    if not any(k in ALIASES for k, _ in labels):
        return labels
    seen: dict[str, LabelValue] = {}
    for k, v in labels:
        seen.setdefault(canonical(k), v)
    return tuple(sorted(seen.items(), key=lambda kv: kv[0]))
