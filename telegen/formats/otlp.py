"""OTLP profiles (``opentelemetry.proto.profiles.v1development``, proto v1.10)
encoding of :class:`telegen.pdata.Profile`, both directions, in one place.

Encoding builds one :class:`ProfilesDictionary` per request: strings,
functions, mappings, locations, stacks, links and attributes are interned
once and index 0 of every table is the zero value (``string_table[0] == ""``).
OTLP allows one sample type per Profile; each pdata profile becomes the OTLP
profiles receivers expect for its type (``telegen.formats.otlp_shapes``: sample
and period types, values vs timestamps per type, and the series Pyroscope files
each under); the decoder joins them back into one pdata profile, exactly
except for timestamps outside the profile's window.

Conventions (OTel semantic conventions where one exists):
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.profiles.v1development import (  # type: ignore[import-untyped]
    profiles_service_pb2 as svc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import (  # type: ignore[import-untyped]
    profiles_pb2 as pb,
)

from telegen import __version__
from telegen.formats.otlp_shapes import (
    derived_period,
    restore_period,
    split_column,
    valid_link,
    wire_columns,
)
from telegen.pdata import (
    PUSHED,
    Frame,
    FrameKind,
    LabelValue,
    Line,
    Mapping,
    Profile,
    Sample,
    SpanLink,
    ValueType,
    infer_profile_name,
)
from telegen.semconv import service_name, split_by_process

__all__ = ["OtlpError", "encode_request", "decode_request", "parse_request", "svc", "pb",
           "FRAME_TYPE", "service_name"]

ExportRequest = Any   # svc.ExportProfilesServiceRequest (generated, untyped)

FRAME_TYPE = "profile.frame.type"
BUILD_ID = "process.executable.build_id.gnu"
COMMENT = "pprof.profile.comment"
NAME = "telegen.profile.name"
DEFAULT_TYPE = "telegen.profile.default_sample_type"
PERIOD = "telegen.profile.period"        # "type/unit/period" when the wire's differs
SCOPE = "telegen"
_HAS = ("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames")
_KIND_TO_TYPE = {FrameKind.PYTHON: "cpython"}
_TYPE_TO_KIND = {"cpython": FrameKind.PYTHON, **{k.value: k for k in FrameKind}}


class OtlpError(ValueError):
    """The message is not a valid OTLP profiles request."""


# -- encode ------------------------------------------------------------------------
def encode_request(profiles: Iterable[Profile], *, service: str | None = None) -> ExportRequest:
    """One export request for ``profiles``: one ``ResourceProfiles`` per
    resource, and so per process (samples that carry process attributes as
    labels are split first, :func:`telegen.semconv.split_by_process`). With
    ``service`` not None, every resource gets ``service.name`` (see
    :func:`telegen.semconv.service_name`)."""
    enc = _Encoder()
    req = svc.ExportProfilesServiceRequest()
    scopes: dict[tuple[object, ...], Any] = {}
    for p in split_by_process(profiles):
        if not p.sample_types or not len(p):
            continue        # nothing to send; an empty ScopeProfiles is invalid
        resource = dict(p.resource)
        if service is not None:
            resource["service.name"] = service_name(resource, service)
        key = tuple(sorted((k, repr(v)) for k, v in resource.items()))
        scope = scopes.get(key)
        if scope is None:
            rp = req.resource_profiles.add()
            for k, v in resource.items():
                rp.resource.attributes.add(key=k, value=_any_value(v))
            scope = scopes[key] = rp.scope_profiles.add()
            scope.scope.name, scope.scope.version = SCOPE, __version__
        enc.add_profile(scope, p)
    req.dictionary.CopyFrom(enc.d)
    return req


def _any_value(v: object) -> Any:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, list | tuple):
        arr = common_pb2.ArrayValue(values=[_any_value(x) for x in v])
        return common_pb2.AnyValue(array_value=arr)
    return common_pb2.AnyValue(string_value=str(v))


class _Encoder:
    """Interns everything into one dictionary; every table starts with its zero value."""

    def __init__(self) -> None:
        self.d = pb.ProfilesDictionary()
        self.strings: dict[str, int] = {"": 0}
        self.d.string_table.append("")
        for table in (self.d.mapping_table, self.d.location_table, self.d.function_table,
                      self.d.link_table, self.d.attribute_table, self.d.stack_table):
            table.add()
        self.attrs: dict[tuple[str, str, object], int] = {}
        self.functions: dict[tuple[str, str, str, int], int] = {}
        self.mappings: dict[Mapping, int] = {}
        self.locations: dict[Frame, int] = {}
        self.stacks: dict[tuple[int, ...], int] = {(): 0}
        self.links: dict[tuple[bytes, bytes], int] = {(b"", b""): 0}
        self.link_ids: dict[tuple[str, str], int] = {}      # hex ids -> index

    def s(self, text: str) -> int:
        idx = self.strings.get(text)
        if idx is None:
            idx = self.strings[text] = len(self.d.string_table)
            self.d.string_table.append(text)
        return idx

    def attr(self, key: str, value: object) -> int:
        k = (key, type(value).__name__, tuple(value) if isinstance(value, list) else value)
        idx = self.attrs.get(k)
        if idx is None:
            idx = self.attrs[k] = len(self.d.attribute_table)
            self.d.attribute_table.add(key_strindex=self.s(key), value=_any_value(value))
        return idx

    def function(self, ln: Line) -> int:
        key = (ln.function, ln.system_name, ln.file, max(ln.start_line, 0))
        if key == ("", "", "", 0):
            return 0         # the zero Function: never repeated past index 0
        idx = self.functions.get(key)
        if idx is None:
            idx = self.functions[key] = len(self.d.function_table)
            self.d.function_table.add(name_strindex=self.s(ln.function),
                                      system_name_strindex=self.s(ln.system_name),
                                      filename_strindex=self.s(ln.file),
                                      start_line=key[3])
        return idx

    def mapping(self, m: Mapping | None) -> int:
        if m is None:
            return 0
        idx = self.mappings.get(m)
        if idx is None:
            idx = self.mappings[m] = len(self.d.mapping_table)
            attrs = [self.attr(BUILD_ID, m.build_id)] if m.build_id else []
            attrs += [self.attr("pprof.mapping." + f, True) for f in _HAS if getattr(m, f)]
            # a range must be empty (both 0) or start < limit
            start, limit = (m.start, m.limit) if m.start < m.limit else (0, 0)
            self.d.mapping_table.add(memory_start=start, memory_limit=limit,
                                     file_offset=m.offset, filename_strindex=self.s(m.file),
                                     attribute_indices=attrs)
        return idx

    def location(self, f: Frame) -> int:
        idx = self.locations.get(f)
        if idx is None:
            idx = self.locations[f] = len(self.d.location_table)
            kind = _KIND_TO_TYPE.get(f.kind, f.kind.value)
            loc = self.d.location_table.add(mapping_index=self.mapping(f.mapping),
                                            address=f.address,
                                            attribute_indices=[self.attr(FRAME_TYPE, kind)])
            for ln in f.lines:
                loc.lines.add(function_index=self.function(ln), line=max(ln.line, 0))
        return idx

    def stack(self, frames: tuple[Frame, ...]) -> int:
        key = tuple(self.location(f) for f in frames)
        idx = self.stacks.get(key)
        if idx is None:
            idx = self.stacks[key] = len(self.d.stack_table)
            self.d.stack_table.add(location_indices=key)
        return idx

    def link(self, link: SpanLink | None) -> int:
        if link is None:
            return 0
        hit = self.link_ids.get((link.trace_id, link.span_id))
        if hit is not None:
            return hit
        key = valid_link(link)
        if key is None:
            return 0
        idx = self.links.get(key)
        if idx is None:
            idx = self.links[key] = len(self.d.link_table)
            self.d.link_table.add(trace_id=key[0], span_id=key[1])
        self.link_ids[(link.trace_id, link.span_id)] = idx
        return idx

    def sample_attrs(self, labels: tuple[tuple[str, LabelValue], ...],
                     extra: tuple[tuple[str, str], ...] = ()) -> list[int]:
        """Attribute indices of a sample, one per key (the first value wins)."""
        seen: set[str] = set()
        out = []
        for k, v in (*labels, *extra):
            if k not in seen:
                seen.add(k)
                out.append(self.attr(k, v))
        return out

    def add_profile(self, scope: Any, p: Profile) -> None:
        columns = wire_columns(p)
        if not columns:
            return
        base = [self.attr(NAME, p.name)]
        if p.default_sample_type:
            base.append(self.attr(DEFAULT_TYPE, p.default_sample_type))
        if p.comments:
            base.append(self.attr(COMMENT, list(p.comments)))
        rows = []
        by_labels: dict[tuple[object, ...], list[int]] = {}   # many samples share labels
        by_stack: dict[tuple[Frame, ...], int] = {}            # ... and stacks
        for s in p:
            link = self.link(s.link)
            if s.link is not None and link == 0:   # not a valid id: keep it readable
                labels = self.sample_attrs(s.labels, (("trace_id", s.link.trace_id),
                                                      ("span_id", s.link.span_id)))
            elif s.labels in by_labels:
                labels = by_labels[s.labels]
            else:
                labels = by_labels[s.labels] = self.sample_attrs(s.labels)
            stack = by_stack.get(s.stack)
            if stack is None:
                stack = by_stack[s.stack] = self.stack(s.stack)
            rows.append((stack, labels, link, s))
        attrs = list(base)
        if any(c.period_type != p.period_type or c.period != p.period for c in columns):
            pt = p.period_type
            attrs.append(self.attr(PERIOD, f"{pt.type}/{pt.unit}/{p.period}" if pt else ""))
        for col in columns:
            stamped, plain = split_column(p, col, rows)
            for part in (stamped, plain):
                if not part:
                    continue
                out = scope.profiles.add(time_unix_nano=p.start_ns,
                                         duration_nano=p.duration_ns, period=col.period,
                                         attribute_indices=attrs)
                out.sample_type.type_strindex = self.s(col.sample_type.type)
                out.sample_type.unit_strindex = self.s(col.sample_type.unit)
                if col.period_type is not None:
                    out.period_type.type_strindex = self.s(col.period_type.type)
                    out.period_type.unit_strindex = self.s(col.period_type.unit)
                for stack, labels, link, values, stamps in part:
                    out.samples.add(stack_index=stack, attribute_indices=labels,
                                    link_index=link, values=values,
                                    timestamps_unix_nano=stamps)


# -- decode ------------------------------------------------------------------------
def parse_request(data: bytes) -> ExportRequest:
    """Parse serialized ``ExportProfilesServiceRequest`` bytes; raises OtlpError."""
    req = svc.ExportProfilesServiceRequest()
    try:
        req.ParseFromString(data)
    except Exception as exc:  # DecodeError, RuntimeError from the upb backend
        raise OtlpError(f"not an OTLP profiles request: {exc}") from None
    return req


def decode_request(req: ExportRequest) -> list[Profile]:
    """pdata profiles of a request; raises :class:`OtlpError` for any index out
    of range or a shape the spec forbids."""
    return _Decoder(req.dictionary).profiles(req.resource_profiles)


def value_type(strings: list[str], vt: Any) -> ValueType:
    return ValueType(_at(strings, vt.type_strindex, "value type"),
                     _at(strings, vt.unit_strindex, "value type unit"))


def _at(table: list[str], idx: int, what: str) -> str:
    if 0 <= idx < len(table):
        return table[idx]
    raise OtlpError(f"{what} refers to string {idx}, string_table has {len(table)}")


def frame_kind(frame_type: str) -> FrameKind:
    return _TYPE_TO_KIND.get(frame_type, FrameKind.NATIVE)


def _value(v: Any) -> object:
    which = v.WhichOneof("value")
    if which == "string_value":
        return str(v.string_value)
    if which == "int_value":
        return int(v.int_value)
    if which == "bool_value":
        return bool(v.bool_value)
    if which == "double_value":
        return float(v.double_value)
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "bytes_value":
        return bytes(v.bytes_value).hex()
    return ""


def _sorted(labels: list[tuple[str, LabelValue]]) -> tuple[tuple[str, LabelValue], ...]:
    try:
        return tuple(sorted(labels))
    except TypeError:  # str and int values under one key
        return tuple(sorted(labels, key=lambda kv: (kv[0], isinstance(kv[1], str), str(kv[1]))))


def _label(v: object) -> LabelValue:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else repr(v)


class _Decoder:
    def __init__(self, d: Any) -> None:
        self.strings: list[str] = list(d.string_table) or [""]
        if self.strings[0] != "":
            raise OtlpError('string_table[0] must be ""')
        self.attrs = [(_at(self.strings, a.key_strindex, "attribute key"), _value(a.value))
                      for a in d.attribute_table]
        self.functions = [Line(function=_at(self.strings, f.name_strindex, "function name"),
                               system_name=_at(self.strings, f.system_name_strindex,
                                               "function system name"),
                               file=_at(self.strings, f.filename_strindex, "function file"),
                               start_line=f.start_line) for f in d.function_table]
        self.mappings: list[Mapping | None] = [self.mapping(m) for m in d.mapping_table]
        if self.mappings:
            self.mappings[0] = None
        self.frames = [self.frame(loc) for loc in d.location_table]
        self.stacks = [tuple(self._get(self.frames, i, "stack location")
                             for i in st.location_indices) for st in d.stack_table]
        self.links: list[SpanLink | None] = [None] + [
            SpanLink(bytes(ln.trace_id).hex(), bytes(ln.span_id).hex())
            for ln in list(d.link_table)[1:]]

    @staticmethod
    def _get(table: list[Any], idx: int, what: str) -> Any:
        if 0 <= idx < len(table):
            return table[idx]
        raise OtlpError(f"{what} index {idx} out of range (table has {len(table)})")

    def attr_list(self, indices: Iterable[int], what: str) -> list[tuple[str, object]]:
        return [self._get(self.attrs, i, what + " attribute") for i in indices]

    def mapping(self, m: Any) -> Mapping:
        attrs = dict(self.attr_list(m.attribute_indices, "mapping"))
        flags = {f: bool(attrs.get("pprof.mapping." + f)) for f in _HAS}
        return Mapping(start=m.memory_start, limit=m.memory_limit, offset=m.file_offset,
                       file=_at(self.strings, m.filename_strindex, "mapping file"),
                       build_id=str(attrs.get(BUILD_ID, "")), **flags)

    def frame(self, loc: Any) -> Frame:
        attrs = dict(self.attr_list(loc.attribute_indices, "location"))
        lines = []
        for ln in loc.lines:
            fn = self._get(self.functions, ln.function_index, "line function")
            lines.append(Line(fn.function, fn.file, ln.line, fn.system_name, fn.start_line))
        mapping = self._get(self.mappings, loc.mapping_index, "location mapping")
        kind = str(attrs.get(FRAME_TYPE, ""))
        return Frame(frame_kind(kind) if kind else FrameKind.NATIVE, loc.address, mapping,
                     tuple(lines))

    def profiles(self, resource_profiles: Iterable[Any]) -> list[Profile]:
        out: list[Profile] = []
        for rp in resource_profiles:
            resource = {kv.key: _label(_value(kv.value)) for kv in rp.resource.attributes}
            for sp in rp.scope_profiles:
                group: list[Any] = []
                for prof in sp.profiles:
                    if group and not self._joins(group, prof):
                        out.append(self.build(group, resource))
                        group = []
                    group.append(prof)
                if group:
                    out.append(self.build(group, resource))
        return out

    def _key(self, p: Any) -> tuple[object, ...]:
        key = (p.time_unix_nano, p.duration_nano, sorted(p.attribute_indices))
        if any(k == NAME for k, _ in self.attr_list(p.attribute_indices, "profile")):
            return key   # telegen's: the columns of one profile may differ in period
        return (*key, p.period, p.HasField("period_type"), p.period_type.type_strindex,
                p.period_type.unit_strindex)

    def _joins(self, group: list[Any], p: Any) -> bool:
        """Same profile: same key, and a new sample type or the last one's
        again (the second part of a column, see ``_split``)."""
        def vt(g: Any) -> tuple[int, int]:
            return g.sample_type.type_strindex, g.sample_type.unit_strindex
        return self._key(group[0]) == self._key(p) and \
            (vt(p) == vt(group[-1]) or vt(p) not in {vt(g) for g in group})

    def build(self, group: list[Any], resource: dict[str, LabelValue]) -> Profile:
        first = group[0]
        attrs = dict(self.attr_list(first.attribute_indices, "profile"))
        columns = [value_type(self.strings, g.sample_type) for g in group]
        types = list(dict.fromkeys(columns))
        comments = attrs.get(COMMENT, [])
        profile = Profile(
            name=str(attrs.get(NAME) or infer_profile_name(types)), sample_types=types,
            period_type=value_type(self.strings, first.period_type)
            if first.HasField("period_type") else None,
            period=first.period, start_ns=first.time_unix_nano,
            duration_ns=first.duration_nano, resource=resource,
            default_sample_type=str(attrs.get(DEFAULT_TYPE, "")),
            comments=[str(c) for c in comments] if isinstance(comments, list) else [str(comments)])
        profile.origin = PUSHED   # paths and pids in it are the sender's words
        rows: dict[tuple[object, ...], tuple[list[int], list[int], Sample, int]] = {}
        for g, column in zip(group, columns, strict=True):
            col = types.index(column)
            for i, s in enumerate(g.samples):
                if s.values and s.timestamps_unix_nano and \
                        len(s.values) != len(s.timestamps_unix_nano):
                    raise OtlpError(f"sample {i}: {len(s.values)} values but "
                                    f"{len(s.timestamps_unix_nano)} timestamps")
                stack = self._get(self.stacks, s.stack_index, "sample stack")
                link = self._get(self.links, s.link_index, "sample link")
                labels = _sorted([(k, _label(v)) for k, v in
                                  self.attr_list(s.attribute_indices, "sample")])
                key = (stack, labels, link)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = ([0] * len(types), [],
                                       Sample(stack, [], labels, [], link), -1)
                row[0][col] += sum(s.values) if s.values else len(s.timestamps_unix_nano)
                # columns repeat the timestamps (or leave them out): take one column's
                if s.timestamps_unix_nano and row[3] in (-1, col):
                    row[1].extend(s.timestamps_unix_nano)
                    rows[key] = (row[0], row[1], row[2], col)
        derived = derived_period(profile, len(types))
        if derived:
            profile.sample_types = (*profile.sample_types,
                                    ValueType(derived, "nanoseconds"))
            if not profile.default_sample_type and NAME not in attrs:   # a foreign sender's
                profile.default_sample_type = derived
        restore_period(profile, attrs.get(PERIOD))
        for values, stamps, sample, _ in rows.values():
            if derived:
                values = [*values, values[0] * first.period]
            profile.add(sample.stack, values, sample.labels, stamps, sample.link)
        return profile
