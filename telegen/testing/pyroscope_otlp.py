"""What Pyroscope's OTLP ingest makes of an ``ExportProfilesServiceRequest``:
the series each OTLP Profile lands in, or the error that fails the whole
Export. Written from grafana/pyroscope (v2) ``pkg/ingester/otlp/convert.go``
(``newProfileBuilder``: one pprof per OTLP Profile and service; the profile
type ``type:unit:period_type:period_unit`` — period type only when ``period``
is not 0 — names the series: ``samples:count:cpu:nanoseconds`` becomes
``process_cpu`` with values × period, ``off_cpu:nanoseconds::`` becomes
``off_cpu`` with values summed, anything else takes its period type as name;
``convertSampleBack``: timestamps-only samples count 1 per timestamp, and with
a period a sample must end with exactly one value, "sample values length
mismatch" otherwise) and ``ingest_handler.go`` (labels: ``__name__``, the
resource's and scope's attributes with dots as they are, ``service_name`` from
the resource's ``service.name``), validated as ``pkg/validation/validate.go``
does (30 label names, a valid metric name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_LABEL_NAMES = 30
# getDefaultLabels in ingest_handler.go adds __delta__ and the OTel scope marks.
_DEFAULT_LABELS = 2


class ExportRefused(Exception):
    """Pyroscope fails the whole Export (InvalidArgument)."""


@dataclass
class Series:
    service_name: str
    profile_type: str               # __name__:type:unit:period_type:period_unit
    total: int                      # sum of the converted values
    label_names: int


def _s(d: Any, idx: int) -> str:
    if not 0 <= idx < len(d.string_table):
        raise ExportRefused(f"index {idx} out of bounds")
    return str(d.string_table[idx])


def _value(v: Any) -> str:
    which = v.WhichOneof("value")
    return "" if which is None else str(getattr(v, which))


def convert(req: Any) -> list[Series]:
    d = req.dictionary
    out: list[Series] = []
    for rp in req.resource_profiles:
        attrs = {kv.key: _value(kv.value) for kv in rp.resource.attributes}
        service = attrs.get("service.name") or "unknown_service" + (
            f":{attrs['process.executable.name']}" if attrs.get("process.executable.name")
            else "")
        for sp in rp.scope_profiles:
            scope_attrs = {kv.key: _value(kv.value) for kv in sp.scope.attributes}
            for prof in sp.profiles:
                out += _profile(prof, d, service, {**scope_attrs, **attrs})
    return out


def _profile(prof: Any, d: Any, service: str, attrs: dict[str, str]) -> list[Series]:
    if not prof.HasField("sample_type"):
        raise ExportRefused("sample type is missing")
    st_type, st_unit = _s(d, prof.sample_type.type_strindex), _s(d, prof.sample_type.unit_strindex)
    pt_type = pt_unit = ""
    has_period_type = prof.HasField("period_type")
    if has_period_type and prof.period != 0:
        pt_type, pt_unit = _s(d, prof.period_type.type_strindex), \
            _s(d, prof.period_type.unit_strindex)
    profile_type = f"{st_type}:{st_unit}:{pt_type}:{pt_unit}"
    scale, sum_events = 1, False
    if profile_type == "samples:count:cpu:nanoseconds":
        name, st_type, st_unit, scale = "process_cpu", "cpu", "nanoseconds", prof.period
    elif profile_type == "off_cpu:nanoseconds::":
        name, sum_events = "off_cpu", True
    else:
        name = profile_type.split(":")[2]
    if not name:
        raise ExportRefused(f"profile type {profile_type}: empty series name (invalid metric "
                            f"name)")
    total = 0
    for i, s in enumerate(prof.samples):
        values = list(s.values)
        if not values and s.timestamps_unix_nano:
            values = [len(s.timestamps_unix_nano)]
        if not values:
            raise ExportRefused(f"sample {i}: sample value is required")
        if sum_events:
            values = [sum(values)]
        values[0] *= scale
        if prof.period != 0 and has_period_type and len(values) != 1:
            raise ExportRefused(f"sample values length mismatch {len(values)} 1")
        total += values[0]
    if has_period_type:
        pt_type, pt_unit = _s(d, prof.period_type.type_strindex), \
            _s(d, prof.period_type.unit_strindex)
    names = {"__name__", "service_name", *attrs} - {"service.name"}
    if len(names) + _DEFAULT_LABELS > MAX_LABEL_NAMES:
        raise ExportRefused(f"{len(names) + _DEFAULT_LABELS} label names; limit "
                            f"{MAX_LABEL_NAMES}")
    series_type = f"{name}:{st_type}:{st_unit}:{pt_type}:{pt_unit}"
    return [Series(service, series_type, total, len(names) + _DEFAULT_LABELS)] \
        if prof.samples else []
