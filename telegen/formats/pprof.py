"""pprof (``profile.proto``, gzipped) encoding of :class:`telegen.pdata.Profile`.

``decode(encode(p))`` reproduces ``p``. Where pprof has no field for something
in pdata, telegen uses these conventions (all readable by ``go tool pprof``):

* Resource attributes are comments ``resource:<key>=<json value>``
  (``resource:host.name="web-1"``, ``resource:process.pid=42``); pprof prints
  them in its report header. A value that is not JSON is read as a string.
* A span link is two string labels, ``trace_id`` and ``span_id``.
* Frame kinds: a frame without a mapping whose kind is not ``native`` gets a
  pseudo-mapping (no addresses, no build id) named ``[kernel.kallsyms]``,
  ``[python]``, ``[jvm]``, ``[go]``, ``[jit]`` or ``[truncated]``; on decode
  such a mapping becomes "no mapping" again. A real mapping whose file starts
  with ``[kernel.kallsyms]`` holds kernel frames; any other mapping holds
  native frames unless a hidden comment ``#telegen:kinds <id>=<kind> ...``
  says otherwise (pprof does not print comments starting with ``#``).
* A profile name that ``infer_profile_name`` would not guess is kept in the
  hidden comment ``#telegen:name=<name>``.
* ``Line.system_name`` is written as the function name when pdata leaves it
  empty (as Go does), and read back as empty when it equals the name.

Not carried: per-sample timestamps, label ``num_unit``, ``drop_frames`` /
``keep_frames``, ``is_folded`` and line columns (pdata has no place for them).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from google.protobuf.message import DecodeError

from telegen.formats._proto import load_profile_pb2
from telegen.pdata import (
    PUSHED,
    Frame,
    FrameKind,
    LabelValue,
    Line,
    Mapping,
    Profile,
    SpanLink,
    ValueType,
    infer_profile_name,
)
from telegen.untrusted import Refused, gunzip

pb: Any = load_profile_pb2()

__all__ = ["PprofError", "encode", "decode", "KERNEL_MAPPING", "RESOURCE_PREFIX"]

KERNEL_MAPPING = "[kernel.kallsyms]"
RESOURCE_PREFIX = "resource:"
_NAME_NOTE = "#telegen:name="
_KINDS_NOTE = "#telegen:kinds "
_PSEUDO_FILE = {
    FrameKind.KERNEL: KERNEL_MAPPING,
    FrameKind.PYTHON: "[python]",
    FrameKind.JVM: "[jvm]",
    FrameKind.GO: "[go]",
    FrameKind.JIT: "[jit]",
    FrameKind.TRUNCATED: "[truncated]",
}
_PSEUDO_KIND = {name: kind for kind, name in _PSEUDO_FILE.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class PprofError(ValueError):
    """The bytes are not a valid pprof profile. ``reason`` is a short label
    (``not_pprof``, or the trust boundary's: ``decompressed_too_large``,
    ``nested_gzip``, ``bad_gzip``) for ``refused_inputs{reason}``."""

    def __init__(self, message: str, reason: str = "not_pprof") -> None:
        super().__init__(message)
        self.reason = reason


# Inflated size allowed by default: a big Go heap profile is ~10-30 MB raw.
MAX_DECOMPRESSED = 64 << 20


def mapping_default_kind(file: str) -> FrameKind:
    return FrameKind.KERNEL if file.startswith(KERNEL_MAPPING) else FrameKind.NATIVE


def pseudo_mapping_file(kind: FrameKind) -> str:
    """The object-file name pprof shows for a frame of ``kind`` with no mapping."""
    return _PSEUDO_FILE.get(kind, "")


# -- encode -----------------------------------------------------------------------
def encode(profile: Profile, *, compress: bool = True) -> bytes:
    """Serialize one profile as pprof; gzipped (as pprof files are) by default."""
    raw = _Encoder(profile).build().SerializeToString()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


class _Encoder:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.msg = pb.Profile()
        self.strings: dict[str, int] = {}
        self.functions: dict[tuple[str, str, str, int], int] = {}
        self.mappings: dict[tuple[Mapping | None, FrameKind], Any] = {}
        self.locations: dict[Frame, int] = {}
        self.kind_notes: list[str] = []
        self.s("")

    def s(self, text: str) -> int:
        idx = self.strings.get(text)
        if idx is None:
            idx = self.strings[text] = len(self.msg.string_table)
            self.msg.string_table.append(text)
        return idx

    def build(self) -> Any:
        p, msg = self.profile, self.msg
        for vt in p.sample_types:
            msg.sample_type.add(type=self.s(vt.type), unit=self.s(vt.unit))
        for sample in p:
            out = msg.sample.add()
            out.location_id.extend(self.location_id(f) for f in sample.stack)
            out.value.extend(sample.values)
            labels: list[tuple[str, LabelValue]] = list(sample.labels)
            if sample.link is not None:
                labels += [("trace_id", sample.link.trace_id), ("span_id", sample.link.span_id)]
            for key, value in labels:
                if isinstance(value, str):
                    out.label.add(key=self.s(key), str=self.s(value))
                else:
                    out.label.add(key=self.s(key), num=int(value))
        if p.period_type is not None:
            msg.period_type.type = self.s(p.period_type.type)
            msg.period_type.unit = self.s(p.period_type.unit)
        msg.period = p.period
        msg.time_nanos = p.start_ns
        msg.duration_nanos = p.duration_ns
        default = p.default_sample_type.partition("/")[0]
        if default:
            msg.default_sample_type = self.s(default)
        notes = [f"{RESOURCE_PREFIX}{k}={json.dumps(v)}" for k, v in p.resource.items()]
        notes += p.comments
        if p.name != infer_profile_name(p.sample_types):
            notes.append(_NAME_NOTE + p.name)
        if self.kind_notes:
            notes.append(_KINDS_NOTE + " ".join(self.kind_notes))
        msg.comment.extend(self.s(n) for n in notes)
        return msg

    def location_id(self, frame: Frame) -> int:
        loc_id = self.locations.get(frame)
        if loc_id is not None:
            return loc_id
        loc_id = self.locations[frame] = len(self.msg.location) + 1
        loc = self.msg.location.add(id=loc_id, address=frame.address)
        loc.mapping_id = self.mapping_id(frame)
        for ln in frame.lines:
            loc.line.add(function_id=self.function_id(ln), line=ln.line)
        return loc_id

    def mapping_id(self, frame: Frame) -> int:
        m, kind = frame.mapping, frame.kind
        if m is None and kind is FrameKind.NATIVE:
            return 0
        out = self.mappings.get((m, kind))
        if out is None:
            new_id = len(self.msg.mapping) + 1
            if m is None:
                out = self.msg.mapping.add(id=new_id, filename=self.s(_PSEUDO_FILE[kind]),
                                           has_functions=True, has_filenames=True,
                                           has_line_numbers=True)
            else:
                out = self.msg.mapping.add(
                    id=new_id, memory_start=m.start, memory_limit=m.limit, file_offset=m.offset,
                    filename=self.s(m.file), build_id=self.s(m.build_id),
                    has_functions=m.has_functions, has_filenames=m.has_filenames,
                    has_line_numbers=m.has_line_numbers, has_inline_frames=m.has_inline_frames)
                if kind is not mapping_default_kind(m.file):
                    self.kind_notes.append(f"{new_id}={kind.value}")
            self.mappings[(m, kind)] = out
        if m is None:  # a pseudo-mapping claims only what all its frames have
            lines = frame.lines
            out.has_functions &= bool(lines)
            out.has_filenames &= bool(lines) and all(ln.file for ln in lines)
            out.has_line_numbers &= bool(lines) and all(ln.line for ln in lines)
            out.has_inline_frames |= len(lines) > 1
        return int(out.id)

    def function_id(self, line: Line) -> int:
        key = (line.function, line.system_name or line.function, line.file, line.start_line)
        fn_id = self.functions.get(key)
        if fn_id is None:
            fn_id = self.functions[key] = len(self.msg.function) + 1
            self.msg.function.add(id=fn_id, name=self.s(key[0]), system_name=self.s(key[1]),
                                  filename=self.s(key[2]), start_line=key[3])
        return fn_id


# -- decode -----------------------------------------------------------------------
def decode(data: bytes, *, max_decompressed: int = MAX_DECOMPRESSED) -> Profile:
    """Parse a pprof profile (gzipped or raw), inflating at most
    ``max_decompressed`` bytes through the agent's one bounded gunzip (gzip
    inside gzip refused). Raises :class:`PprofError`."""
    if not data:
        raise PprofError("empty input: not a pprof profile")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gunzip(data, max_decompressed)
        except Refused as exc:
            reason = exc.reason
            raise PprofError(f"corrupt gzip data: {exc}" if reason == "bad_gzip"
                             else f"refused: {exc}", reason) from exc
    msg = pb.Profile()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PprofError(f"not a pprof profile: {exc}") from exc
    return _Decoder(msg).build()


class _Decoder:
    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.table: list[str] = list(msg.string_table)
        if not self.table or self.table[0] != "":
            raise PprofError("not a pprof profile: string_table must start with \"\"")

    def s(self, idx: int, what: str) -> str:
        if 0 <= idx < len(self.table):
            return self.table[idx]
        raise PprofError(f"not a pprof profile: {what} refers to string {idx}, "
                         f"table has {len(self.table)}")

    def vt(self, v: Any, what: str) -> ValueType:
        return ValueType(self.s(v.type, what + ".type"), self.s(v.unit, what + ".unit"))

    def build(self) -> Profile:
        msg = self.msg
        if not msg.sample_type:
            raise PprofError("not a pprof profile: no sample types")
        sample_types = [self.vt(v, "sample_type") for v in msg.sample_type]
        resource: dict[str, LabelValue] = {}
        comments: list[str] = []
        name = ""
        kinds: dict[int, FrameKind] = {}
        for idx in msg.comment:
            text = self.s(idx, "comment")
            if text.startswith(RESOURCE_PREFIX) and "=" in text:
                key, _, value = text[len(RESOURCE_PREFIX):].partition("=")
                resource[key] = _resource_value(value)
            elif text.startswith(_NAME_NOTE):
                name = text[len(_NAME_NOTE):]
            elif text.startswith(_KINDS_NOTE):
                kinds.update(_parse_kinds(text[len(_KINDS_NOTE):]))
            else:
                comments.append(text)
        profile = Profile(
            name=name or infer_profile_name(sample_types), sample_types=sample_types,
            period_type=self.vt(msg.period_type, "period_type")
            if msg.HasField("period_type") else None,
            period=msg.period, start_ns=msg.time_nanos, duration_ns=msg.duration_nanos,
            resource=resource, comments=comments,
            default_sample_type=self.s(msg.default_sample_type, "default_sample_type"))
        profile.origin = PUSHED   # paths and pids in it are the writer's words
        frames = self.frames(kinds)
        for i, s in enumerate(msg.sample):
            if len(s.value) != len(sample_types):
                raise PprofError(f"not a pprof profile: sample {i} has {len(s.value)} values "
                                 f"for {len(sample_types)} sample types")
            try:
                stack = tuple(frames[loc] for loc in s.location_id)
            except KeyError as exc:
                raise PprofError(f"not a pprof profile: sample {i} refers to unknown "
                                 f"location {exc.args[0]}") from None
            labels, link = self.labels(s.label)
            profile.add(stack, list(s.value), labels, link=link)
        return profile

    def frames(self, kinds: dict[int, FrameKind]) -> dict[int, Frame]:
        functions = {}
        for f in self.msg.function:
            name = self.s(f.name, "function.name")
            system = self.s(f.system_name, "function.system_name")
            functions[f.id] = (name, "" if system == name else system,
                               self.s(f.filename, "function.filename"), f.start_line)
        mappings: dict[int, tuple[Mapping | None, FrameKind]] = {0: (None, FrameKind.NATIVE)}
        for m in self.msg.mapping:
            file = self.s(m.filename, "mapping.filename")
            build_id = self.s(m.build_id, "mapping.build_id")
            if file in _PSEUDO_KIND and not (m.memory_start or m.memory_limit
                                             or m.file_offset or build_id):
                mappings[m.id] = (None, _PSEUDO_KIND[file])
                continue
            mapping = Mapping(start=m.memory_start, limit=m.memory_limit, offset=m.file_offset,
                              file=file, build_id=build_id, has_functions=m.has_functions,
                              has_filenames=m.has_filenames,
                              has_line_numbers=m.has_line_numbers,
                              has_inline_frames=m.has_inline_frames)
            mappings[m.id] = (mapping, kinds.get(m.id) or mapping_default_kind(file))
        frames: dict[int, Frame] = {}
        for loc in self.msg.location:
            if loc.id == 0 or loc.id in frames:
                raise PprofError(f"not a pprof profile: bad or repeated location id {loc.id}")
            if loc.mapping_id not in mappings:
                raise PprofError(f"not a pprof profile: location {loc.id} refers to unknown "
                                 f"mapping {loc.mapping_id}")
            lines = []
            for ln in loc.line:
                fn = functions.get(ln.function_id)
                if fn is None:
                    raise PprofError(f"not a pprof profile: location {loc.id} refers to "
                                     f"unknown function {ln.function_id}")
                lines.append(Line(function=fn[0], system_name=fn[1], file=fn[2], line=ln.line,
                                  start_line=fn[3]))
            mapped, kind = mappings[loc.mapping_id]
            frames[loc.id] = Frame(kind, loc.address, mapped, tuple(lines))
        return frames

    def labels(self, raw: Any) -> tuple[tuple[tuple[str, LabelValue], ...], SpanLink | None]:
        labels: list[tuple[str, LabelValue]] = []
        for lb in raw:
            key = self.s(lb.key, "label.key")
            if lb.str:
                labels.append((key, self.s(lb.str, "label.str")))
            else:
                labels.append((key, lb.num))
        link = None
        trace = [v for k, v in labels if k == "trace_id" and isinstance(v, str)]
        span = [v for k, v in labels if k == "span_id" and isinstance(v, str)]
        if len(trace) == 1 and len(span) == 1:
            link = SpanLink(trace[0], span[0])
            labels = [kv for kv in labels if kv[0] not in ("trace_id", "span_id")]
        try:
            labels.sort()
        except TypeError:  # str and int values under one key
            labels.sort(key=lambda kv: (kv[0], isinstance(kv[1], str), str(kv[1])))
        return tuple(labels), link


def _resource_value(text: str) -> LabelValue:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return text


def _parse_kinds(text: str) -> dict[int, FrameKind]:
    out: dict[int, FrameKind] = {}
    for item in text.split():
        ident, _, kind = item.partition("=")
        try:
            out[int(ident)] = FrameKind(kind)
        except ValueError:
            continue
    return out
