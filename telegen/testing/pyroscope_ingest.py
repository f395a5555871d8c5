"""A stand-in for Pyroscope's ``POST /ingest``: parses and answers as the
real handler does, so a test fails where a real Pyroscope would refuse.

Written from grafana/pyroscope (v2) source, not from telegen's encoder:

* ``pkg/ingester/pyroscope/ingest_handler.go`` — ``name`` parsed by
  ``api/model/labelset`` (400 on a bad service name or label name); the
  ``format`` query parameter takes precedence over the Content-Type
  (``format=pprof``: the whole body is the pprof; else a multipart
  Content-Type: a form); a failed conversion or push answers 422, a push
  refused for rate (ResourceExhausted) 429, a failed body read 408.
* ``pkg/og/convert/pprof/profile.go`` — form fields ``profile``,
  ``prev_profile`` (refused), ``sample_type_config`` (JSON, replaces the
  default mapping ``pkg/og/storage/tree/pprof.go``); ``metricName`` picks
  ``__name__`` from the sample types' display names; ``createLabels`` adds
  ``__delta__``, ``pyroscope_spy``, ``service_name`` (the name before ``{``
  unless a ``service_name`` label is given) and drops ``__``-prefixed labels.
* ``pkg/validation/validate.go`` — ``ValidateProfile`` (default limits of
  ``limits.go``: 4 MiB uncompressed, 16000 samples; sample types present,
  no ``-`` in a sample type, values per sample = sample types, string 0
  empty, UTF-8) and ``ValidateLabels`` (30 names, 1024-character names,
  2048-character values, legacy label-name sanitizing of dots, duplicates).
* ``pkg/model/pprofsplit`` — string sample labels other than ``trace_id`` /
  ``span_id`` join the series labels before validation.
* ``pkg/phlaredb/labels/labels.go`` — one series per sample type, its
  profile type ``__name__:type:unit:period_type:period_unit``.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from telegen.formats._proto import load_profile_pb2

_pb: Any = load_profile_pb2()

MAX_LABEL_NAMES, MAX_NAME_LENGTH, MAX_VALUE_LENGTH = 30, 1024, 2048
MAX_PROFILE_BYTES, MAX_SAMPLES = 4 * 1024 * 1024, 16_000     # pkg/validation/limits.go
_SERVICE_RUNE = re.compile(r"[A-Za-z0-9_.\-/]")
_LABEL_RUNE = re.compile(r"[A-Za-z0-9_.]")
# pkg/og/storage/tree/pprof.go DefaultSampleTypeMapping: display names only
# (the part metricName reads).
DEFAULT_DISPLAY = {"samples": "cpu", "goroutine": "goroutines", "contentions": "mutex_count",
                   "delay": "mutex_duration"}


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Accepted:
    service_name: str
    series: list[str]                       # profile type ids, one per sample type
    labels: list[dict[str, str]] = field(default_factory=list)   # per sample-label group
    samples: int = 0
    profile: Any = None                     # the decoded google.v1 Profile


def parse_name(name: str) -> tuple[str, dict[str, str]]:
    """``labelset.Parse``: service name before ``{``, then ``k=v`` pairs up to ``}``."""
    service, _, rest = (name + "{").partition("{")
    service = service.strip()
    if not service:
        raise Refusal(400, "name: service name is required")
    for ch in service:
        if not _SERVICE_RUNE.fullmatch(ch):
            raise Refusal(400, f"name: invalid service name: {service}: character is not "
                               f"allowed: {ch!r}")
    labels = {"__name__": service}
    body = rest.split("}", 1)[0] if "}" in rest else rest[:-1]
    for pair in filter(None, body.split(",")) if body else []:
        if "=" not in pair:
            continue
        key, value = pair.split("=", 1)
        key = key.strip()
        if key != "__name__":
            if not key or any(not _LABEL_RUNE.fullmatch(c) for c in key):
                raise Refusal(400, f"name: invalid label name: {key!r}")
        labels[key] = value.strip()
    return service, labels


def metric_name(sample_types: list[str], config: dict[str, Any] | None) -> str:
    """``RawProfile.metricName``."""
    for st in sample_types:
        if st == "wall":
            return st
    st = ""
    for st in sample_types:
        if config is not None:
            entry = config.get(st) or {}
            display = entry.get("display-name", "") if isinstance(entry, dict) else ""
        else:
            display = DEFAULT_DISPLAY.get(st, "")
        if display:
            st = display
        if "cpu" in st:
            return "process_cpu"
        if "alloc_" in st or "inuse_" in st or st in ("space", "objects"):
            return "memory"
        if "mutex_" in st:
            return "mutex"
        if "block_" in st:
            return "block"
        if "goroutines" in st:
            return "goroutines"
    return st


def _form(body: bytes, content_type: str) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        raise Refusal(422, "failed to parse pprof /ingest multipart form")
    parts: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and name not in parts:
            parts[name] = payload
    return parts


def _decode_pprof(data: bytes) -> tuple[Any, int]:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise Refusal(422, f"invalid_argument: {exc}") from None
    profile = _pb.Profile()
    try:
        profile.ParseFromString(data)
    except Exception as exc:
        raise Refusal(422, f"invalid_argument: failed to parse pprof: {exc}") from None
    return profile, len(data)


def _validate_profile(p: Any, size: int) -> None:
    def malformed(what: str) -> Refusal:
        return Refusal(422, f"invalid_argument: {what}")
    if not p.sample_type:
        raise malformed("empty profile")
    if size > MAX_PROFILE_BYTES:
        raise malformed(f"the profile exceeds the size limit (max_profile_size_byte, actual: "
                        f"{size}, limit: {MAX_PROFILE_BYTES})")
    if len(p.sample) > MAX_SAMPLES:
        raise malformed(f"the profile exceeds the samples count limit "
                        f"(max_profile_stacktrace_samples, actual: {len(p.sample)})")
    for s in p.sample:
        if len(s.value) != len(p.sample_type):
            raise malformed("sample value length mismatch")
    if not p.string_table or p.string_table[0] != "":
        raise malformed("string 0 should be empty string")
    for vt in p.sample_type:
        if vt.type >= len(p.string_table):
            raise malformed("sample type type string index out of range")
        if "-" in p.string_table[vt.type]:
            raise malformed("sample type contains -")
    if any(loc.id == 0 for loc in p.location) or any(f.id == 0 for f in p.function):
        raise malformed("location or function id is 0")


def _validate_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABEL_NAMES:
        raise Refusal(422, f"invalid_argument: profile series has {len(labels)} label names; "
                           f"limit {MAX_LABEL_NAMES}")
    if not labels.get("service_name"):
        raise Refusal(422, "invalid_argument: service name is not provided")
    out: dict[str, str] = {}
    for name, value in sorted(labels.items()):
        if len(name) > MAX_NAME_LENGTH:
            raise Refusal(422, f"invalid_argument: label name too long: {name!r}")
        if len(value) > MAX_VALUE_LENGTH:
            raise Refusal(422, f"invalid_argument: label value too long: {value[:40]!r}...")
        if not name or name[0].isdigit() or not re.fullmatch(r"[A-Za-z0-9_.]+", name):
            raise Refusal(422, f"invalid_argument: invalid label name {name!r}")
        clean = name.replace(".", "_")
        if clean in out and out[clean] != value:
            raise Refusal(422, f"invalid_argument: duplicate label name {clean!r}")
        out[clean] = value
    return out


def ingest(query: dict[str, str], content_type: str, body: bytes) -> Accepted | None:
    """What Pyroscope does with one request: :class:`Accepted` (200), None
    (200, nothing stored), or :class:`Refusal` with the status it answers."""
    service, name_labels = parse_name(query.get("name", ""))
    spy = query.get("spyName") or "unknown"
    fmt = query.get("format", "")
    config = None
    if fmt == "pprof":
        raw = body
    elif fmt in ("trie", "tree", "lines", "jfr", "speedscope") or \
            content_type in ("binary/octet-stream+trie", "binary/octet-stream+tree"):
        raise Refusal(422, f"format {fmt or content_type} is not what this stand-in plays")
    elif "multipart/form-data" in content_type:
        parts = _form(body, content_type)
        if "prev_profile" in parts:
            raise Refusal(422, "unsupported client version")
        raw = parts.get("profile", b"")
        if "sample_type_config" in parts:
            try:
                config = json.loads(parts["sample_type_config"])
            except ValueError as exc:
                raise Refusal(422, f"sample_type_config: {exc}") from None
            if not isinstance(config, dict):
                raise Refusal(422, "sample_type_config: not an object")
    else:
        raise Refusal(422, "body taken as the 'groups' (lines) format")
    if not raw:
        return None
    p, size = _decode_pprof(raw)
    strings = list(p.string_table)
    _validate_profile(p, size)
    types = [strings[vt.type] for vt in p.sample_type]
    labels = {"__name__": metric_name(types, config), "__delta__": "false",
              "pyroscope_spy": spy}
    if "service_name" not in name_labels:
        labels["service_name"] = service
    labels.update({k: v for k, v in name_labels.items() if not k.startswith("__")})
    groups: dict[tuple[tuple[str, str], ...], int] = {}
    for s in p.sample:
        extra = tuple(sorted((strings[lb.key], strings[lb.str]) for lb in s.label
                             if lb.str > 0 and strings[lb.key] not in ("trace_id", "span_id")))
        groups[extra] = groups.get(extra, 0) + 1
    validated = []
    for extra in groups or {(): 0}:
        series = dict(labels)
        for k, v in extra:
            series.setdefault(k, v)
        validated.append(_validate_labels(series))
    period = ("", "")
    if p.HasField("period_type"):
        period = (strings[p.period_type.type], strings[p.period_type.unit])
    ids = [f"{labels['__name__']}:{strings[vt.type]}:{strings[vt.unit]}:{period[0]}:{period[1]}"
           for vt in p.sample_type]
    return Accepted(validated[0]["service_name"], ids, validated, len(p.sample), p)
