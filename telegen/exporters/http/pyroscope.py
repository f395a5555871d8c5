"""What Pyroscope's ``POST /ingest`` wants, as its own Go client sends it.

Read against grafana/pyroscope (v2): ``pkg/ingester/pyroscope/ingest_handler.go``
(a ``format`` query parameter wins over the Content-Type, so a multipart body
goes *without* ``format``), ``pkg/og/convert/pprof/profile.go`` (multipart
fields ``profile`` and ``sample_type_config``; the series name ``__name__`` is
picked from the sample types through the config's ``display-name``),
``api/model/labelset`` (the part of ``name`` before ``{`` is the service name:
``[A-Za-z0-9_.\\-/]``; label names ``[A-Za-z0-9_.]``; values end at ``,`` or
``}``) and ``pkg/validation`` (30 label names per series, values up to 2048
characters). grafana/pyroscope-go's ``upstream/remote`` is the client shape.

Series per telegen profile type (``__name__:type:unit:period_type:period_unit``):

==========  ======================================================================
cpu         process_cpu:samples:count:cpu:nanoseconds, process_cpu:cpu:nanoseconds:cpu:nanoseconds
wall        wall:samples:count:wall:nanoseconds, wall:wall:nanoseconds:wall:nanoseconds
off_cpu     process_cpu:off_cpu:nanoseconds:off_cpu:nanoseconds (Pyroscope names
            every sample type containing "cpu" process_cpu; the off_cpu sample
            type keeps it apart from CPU time; the count column is not sent)
alloc       memory:alloc_objects:count:space:bytes, memory:alloc_space:bytes:space:bytes
inuse       memory:inuse_objects:count:space:bytes, memory:inuse_space:bytes:space:bytes
mutex       mutex:contentions:count:contentions:count, mutex:delay:nanoseconds:contentions:count
block/park  block:contentions:count:contentions:count, block:delay:nanoseconds:contentions:count
goroutine   goroutines:goroutine:count:goroutine:count
gc (JFR)    gc:gc:count:gc:count, gc:pause:nanoseconds:gc:count
==========  ======================================================================
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Mapping

from telegen.component import PermanentError
from telegen.formats.pprof import encode
from telegen.helpers.exporterhelper import RetryableError, parse_retry_after
from telegen.helpers.windows import merge_group
from telegen.pdata import LabelValue, Profile, Sample, ValueType
from telegen.semconv import is_resource_key, service_name, split_by_process

SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_LABEL_NAMES = 30          # Pyroscope's validation.max-label-names-per-series
MAX_LABEL_VALUE = 2048        # validation.max-length-label-value
MAX_SAMPLES = 16_000          # validation.max-profile-stacktrace-samples
MAX_PROFILE_BYTES = 4 * 1024 * 1024   # validation.max-profile-size-bytes (uncompressed)
# Labels Pyroscope adds itself to every /ingest series: __name__, __delta__,
# pyroscope_spy, service_name.
SERVER_LABELS = 4
MAX_OWN_LABELS = MAX_LABEL_NAMES - SERVER_LABELS
PARAMETERS = ("name", "from", "until", "spyName", "sampleRate")

# profile name -> display name per sample type: the display names steer
# Pyroscope's metric-name heuristic (metricName) to the series above.
_DISPLAY: dict[str, dict[str, str]] = {
    "cpu": {"samples": "cpu", "cpu": "cpu"},
    "wall": {"samples": "wall", "wall": "wall"},
    "off_cpu": {"off_cpu": "off_cpu"},
    "alloc": {"alloc_objects": "alloc_objects", "alloc_space": "alloc_space"},
    "inuse": {"inuse_objects": "inuse_objects", "inuse_space": "inuse_space"},
    "mutex": {"contentions": "mutex_count", "delay": "mutex_duration"},
    "block": {"contentions": "block_count", "delay": "block_duration"},
    "park": {"contentions": "block_count", "delay": "block_duration"},
    "goroutine": {"goroutine": "goroutines", "goroutines": "goroutines"},
}
_AVERAGE = {"inuse", "goroutine"}
_BAD_SERVICE_CHAR = re.compile(r"[^A-Za-z0-9_.\-/]")
_BAD_VALUE_CHAR = re.compile(r"[,}\x00-\x1f]")


def check_service_name(name: str) -> None:
    if not SERVICE_NAME.match(name):
        raise ValueError(f"service_name {name!r} is refused by Pyroscope: use only letters, "
                         f"digits and _ . - /")


def check_label(key: str, value: str) -> None:
    if not LABEL_NAME.match(key) or key.startswith("__") or key == "service_name":
        raise ValueError(f"label name {key!r}: Pyroscope wants [A-Za-z_][A-Za-z0-9_]*, not "
                         f"starting with __, and service_name comes from service_name")
    if _BAD_VALUE_CHAR.search(value) or value != value.strip() or not value \
            or len(value) > MAX_LABEL_VALUE:
        raise ValueError(f"label {key}: value {value!r} must be 1..{MAX_LABEL_VALUE} characters "
                         f"without , }} control characters or surrounding spaces")


def service_label(raw: str) -> str:
    """A service name Pyroscope accepts, from a resource's (``:`` and other
    characters outside ``[A-Za-z0-9_.\\-/]`` become ``_``)."""
    return _BAD_SERVICE_CHAR.sub("_", raw)[:MAX_LABEL_VALUE] or "unknown_service"


def label_name(attribute: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", attribute)
    return "_" + name if name[:1].isdigit() else name


def label_value(value: LabelValue) -> str:
    return _BAD_VALUE_CHAR.sub("_", str(value)).strip()[:MAX_LABEL_VALUE]


def sample_label_names(profile: Profile) -> set[str]:
    """String sample labels: Pyroscope adds them to the series labels (all but
    ``trace_id`` / ``span_id``), so they count against the 30 names."""
    return {k for s in profile for k, v in s.labels
            if isinstance(v, str) and k not in ("trace_id", "span_id")}


def series_labels(resource: Mapping[str, LabelValue], allow: tuple[str, ...] | list[str],
                  static: Mapping[str, str], reserved: set[str] | None = None) -> dict[str, str]:
    """Static ``labels`` first, then the allowed resource attributes, so that
    with the ``reserved`` names (sample labels) at most :data:`MAX_OWN_LABELS`
    names reach Pyroscope."""
    out = dict(static)
    taken = set(out) | set(reserved or ())
    for attribute in allow:
        value = resource.get(attribute)
        if value is None or attribute == "service.name":
            continue
        key, text = label_name(attribute), label_value(value)
        if text and key not in taken and len(taken) < MAX_OWN_LABELS:
            out[key] = text
            taken.add(key)
    return out


def by_series(profiles: Iterable[Profile], configured_service: str,
              allow: tuple[str, ...] | list[str],
              static: Mapping[str, str]) -> list[tuple[str, dict[str, str], Profile]]:
    """(service, series labels, profile) per Pyroscope series of a window:
    profiles are split per process (``telegen.semconv.split_by_process``),
    named (:func:`telegen.semconv.service_name`) and the processes of one
    service with the same series labels merged into one upload. Process
    attributes (``process.pid``, ``container.id``…) reach Pyroscope only as
    the allowed series labels, never as per-sample labels (Pyroscope makes
    every string sample label a series label: unbounded series)."""
    groups: dict[tuple[object, ...], tuple[str, dict[str, str], list[Profile]]] = {}
    for p in split_by_process(profiles):
        app = configured_service or service_label(service_name(p.resource))
        labels = series_labels(p.resource, allow, static, sample_label_names(p))
        key = (app, tuple(sorted(labels.items())), p.name, p.sample_types, p.period_type,
               p.period)
        groups.setdefault(key, (app, labels, []))[2].append(p)
    out = []
    for app, labels, members in groups.values():
        merged = merge_group(members) if len(members) > 1 else members[0]
        if any(is_resource_key(k) for s in merged for k, _ in s.labels):
            merged = merged.copy()
            merged.replace_samples(
                Sample(s.stack, s.values, tuple(kv for kv in s.labels
                                                if not is_resource_key(kv[0])),
                       s.timestamps, s.link) for s in list(merged))
        out.append((app, labels, merged))
    return out


def ingest_name(service: str, labels: Mapping[str, str]) -> str:
    body = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{service}{{{body}}}"


def columns(profile: Profile) -> list[int]:
    """Value columns sent for ``profile`` (off-CPU: the time only)."""
    if profile.name == "off_cpu":
        keep = [i for i, vt in enumerate(profile.sample_types) if vt.type == "off_cpu"]
        if keep:
            return keep
    return list(range(len(profile.sample_types)))


# Period types Pyroscope's series use for these profile types (Go's, and what
# its own JFR converter writes for memory), whatever the producer said.
_PERIOD_TYPES = {"alloc": ValueType("space", "bytes"), "inuse": ValueType("space", "bytes"),
                 "off_cpu": ValueType("off_cpu", "nanoseconds")}


def shape_for_ingest(profile: Profile) -> Profile:
    """The profile as sent: off-CPU keeps its time column only; off-CPU and
    memory get the period type of their Pyroscope series."""
    keep = columns(profile)
    period_type = _PERIOD_TYPES.get(profile.name, profile.period_type)
    if keep == list(range(len(profile.sample_types))) and period_type == profile.period_type:
        return profile
    out = profile.copy()
    out.sample_types = tuple(profile.sample_types[i] for i in keep)
    if out.default_sample_type not in {vt.type for vt in out.sample_types}:
        out.default_sample_type = out.sample_types[-1].type
    if period_type != profile.period_type:
        out.period_type, out.period = period_type, max(profile.period, 1)
    for s in out:
        s.values = [s.values[i] for i in keep]
    return out


def chunks(profile: Profile, max_samples: int = MAX_SAMPLES,
           max_bytes: int = MAX_PROFILE_BYTES) -> list[tuple[Profile, bytes]]:
    """(profile, gzipped pprof) pieces within Pyroscope's default limits on
    samples and uncompressed size (more is a permanent 422): disjoint sets of
    samples of one window, which Pyroscope adds up in the same series."""
    samples = list(profile)
    if len(samples) > max_samples:
        parts = [samples[i:i + max_samples] for i in range(0, len(samples), max_samples)]
        return [c for part in parts for c in chunks(_subset(profile, part), max_samples,
                                                     max_bytes)]
    raw = encode(profile, compress=False)
    if len(raw) > max_bytes and len(samples) > 1:
        half = len(samples) // 2
        return chunks(_subset(profile, samples[:half]), max_samples, max_bytes) + \
            chunks(_subset(profile, samples[half:]), max_samples, max_bytes)
    return [(profile, gzip.compress(raw, compresslevel=6, mtime=0))]


def _subset(profile: Profile, samples: list[Sample]) -> Profile:
    out = Profile(name=profile.name, sample_types=profile.sample_types,
                  period_type=profile.period_type, period=profile.period,
                  start_ns=profile.start_ns, duration_ns=profile.duration_ns,
                  resource=dict(profile.resource),
                  default_sample_type=profile.default_sample_type,
                  comments=list(profile.comments))
    out.origin = profile.origin
    for s in samples:
        out.add(s.stack, list(s.values), s.labels, list(s.timestamps), s.link)
    return out


def _units(profile_name: str, vt: ValueType) -> str:
    lock = profile_name in ("mutex", "block", "park")
    if vt.unit == "bytes":
        return "bytes"
    if vt.unit == "nanoseconds":
        return "lock_nanoseconds" if lock else "nanoseconds"
    if lock:
        return "lock_samples"
    if profile_name in ("alloc", "inuse"):
        return "objects"
    return "goroutines" if profile_name == "goroutine" else "samples"


def sample_type_config(profile: Profile) -> bytes:
    """The ``sample_type_config`` part: per sample type its display name
    (which picks the series), units and aggregation."""
    display = _DISPLAY.get(profile.name, {})
    fallback = profile.name if SERVICE_NAME.match(profile.name or "") else "custom"
    config = {vt.type: {"units": _units(profile.name, vt),
                        "display-name": display.get(vt.type, fallback),
                        "aggregation": "average" if profile.name in _AVERAGE else "sum",
                        "sampled": profile.name in ("cpu", "wall")}
              for vt in profile.sample_types}
    return json.dumps(config, sort_keys=True).encode()


def query(service: str, labels: Mapping[str, str], profile: Profile, spy: str) -> dict[str, str]:
    params = {"name": ingest_name(service, labels), "spyName": spy}
    if profile.start_ns:
        start = profile.start_ns // 1_000_000_000
        params["from"] = str(start)
        params["until"] = str(max(profile.end_ns // 1_000_000_000, start))
    pt = profile.period_type
    if pt is not None and pt.unit == "nanoseconds" and profile.period > 0 and \
            profile.name in ("cpu", "wall"):
        params["sampleRate"] = str(max(1, round(1e9 / profile.period)))
    return params


# Connect error codes (as Pyroscope writes them into a 422's message) that
# say the push failed for a reason that can pass.
_TRANSIENT = ("unavailable:", "deadline_exceeded:", "aborted:", "canceled:",
              "resource_exhausted:", "context deadline exceeded", "connection refused",
              "too many unhealthy instances", "at least 1 live replicas required")


def classify(status: int, body: str, retry_after: str | None, message: str) -> Exception:
    """Pyroscope's answers: 429 and 5xx retry; 408 (the server failed reading
    the body) retries; 422 retries when the push behind it failed for a
    transient reason (its message names the connect code), otherwise it is
    a validation or conversion refusal and permanent; 3xx (redirects are not
    followed) and other 4xx are permanent."""
    delay = parse_retry_after(retry_after)
    if status in (408, 429) or 500 <= status <= 599:
        return RetryableError(message, delay)
    if status == 422:
        text = body.lower()
        if "invalid_argument" not in text and any(t in text for t in _TRANSIENT):
            return RetryableError(message, delay)
    return PermanentError(message)
