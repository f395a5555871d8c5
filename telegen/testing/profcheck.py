"""A Python port of ``profcheck``, OpenTelemetry's conformance checker for
OTLP profiles (open-telemetry/sig-profiling, ``profcheck/check.go``), run with
every optional check on (dictionary duplicates, sample timestamp shape,
dictionary orphans), plus the invariants issue #27 lists that it does not
check yet: an all-empty Function past index 0, and an ``ExportProfilesServiceRequest``
whose scope has no profiles.

``check(request)`` returns the findings as strings (empty: conformant). Written
from the Go source's checks, not from telegen's encoder.
"""

from __future__ import annotations

from typing import Any

from telegen.formats.otlp import pb


def check(req: Any, *, orphans: bool = True) -> list[str]:
    d = req.dictionary
    out: list[str] = []
    if not req.resource_profiles:
        out.append("resource profiles are empty")
    for i, rp in enumerate(req.resource_profiles):
        if not rp.scope_profiles:
            out.append(f"resource_profiles[{i}]: resource profiles has no scope profiles")
        for j, sp in enumerate(rp.scope_profiles):
            where = f"resource_profiles[{i}].scope_profiles[{j}]"
            if not sp.profiles:
                out.append(f"{where}: scope profiles has no profiles")
            for k, prof in enumerate(sp.profiles):
                out += [f"{where}.profile[{k}]: {e}" for e in _profile(prof, d)]
    out += [f"dictionary: {e}" for e in _dictionary(d)]
    if orphans:
        out += [f"dictionary: {e}" for e in _orphans(req)]
    return out


def _index(length: int, idx: int, what: str) -> list[str]:
    return [] if 0 <= idx < length else [f"{what}: index {idx} is out of range [0..{length})"]


def _attribute_indices(indices: Any, d: Any, what: str) -> list[str]:
    out: list[str] = []
    keys: dict[str, int] = {}
    for pos, idx in enumerate(indices):
        bad = _index(len(d.attribute_table), idx, f"{what}[{pos}]")
        if bad:
            out += bad
            continue
        attr = d.attribute_table[idx]
        bad = _index(len(d.string_table), attr.key_strindex, f"{what}[{pos}].key_strindex")
        if bad:
            out += bad
            continue
        key = d.string_table[attr.key_strindex]
        if key in keys:
            out.append(f"{what}[{pos}].key_strindex: duplicate key {key!r}, previously seen "
                       f"at [{keys[key]}]")
        else:
            keys[key] = pos
    return out


def _value_type(vt: Any, d: Any, what: str) -> list[str]:
    return (_index(len(d.string_table), vt.unit_strindex, f"{what}.unit_strindex") +
            _index(len(d.string_table), vt.type_strindex, f"{what}.type_strindex"))


def _profile(prof: Any, d: Any) -> list[str]:
    out = _attribute_indices(prof.attribute_indices, d, "attribute_indices")
    out += _value_type(prof.sample_type, d, "sample_type")
    out += _value_type(prof.period_type, d, "period_type")
    start, end = prof.time_unix_nano, prof.time_unix_nano + prof.duration_nano
    expected = ""
    for i, s in enumerate(prof.samples):
        where = f"sample[{i}]"
        out += _index(len(d.stack_table), s.stack_index, f"{where}.stack_index")
        out += _attribute_indices(s.attribute_indices, d, f"{where}.attribute_indices")
        out += _index(len(d.link_table), s.link_index, f"{where}.link_index")
        for n, ts in enumerate(s.timestamps_unix_nano):
            if ts < start or ts >= end:
                out.append(f"{where}.timestamps_unix_nano[{n}]={ts} is outside profile time "
                           f"range [{start}, {end})")
        values, stamps = len(s.values), len(s.timestamps_unix_nano)
        if values and stamps:
            shape = "both_values_and_timestamps"
            if values != stamps:
                out.append(f"{where}: values (len={values}) and timestamps_unix_nano "
                           f"(len={stamps}) must contain the same number of elements")
        elif values:
            shape = "values_only"
            if values != 1:
                out.append(f"{where}: values (len={values}) must contain a single element if "
                           f"timestamps_unix_nano is not set")
        elif stamps:
            shape = "timestamps_only"
        else:
            shape = "invalid"
            out.append(f"{where}: sample must have at least one values or "
                       f"timestamps_unix_nano entry")
        if not expected:
            expected = shape
        elif shape != expected:
            out.append(f"{where}: sample shape {shape} does not match expected sample shape "
                       f"{expected}")
    return out


def _zero(table: Any, zero: Any, what: str) -> list[str]:
    if len(table) == 0:
        return [f"{what}: empty table, must have at least zero value entry"]
    return [] if table[0] == zero else [f"{what}: must have zero value at index 0"]


def _dictionary(d: Any) -> list[str]:
    ns = len(d.string_table)
    out = _zero(d.mapping_table, pb.Mapping(), "mapping_table")
    seen: set[tuple[object, ...]] = set()
    for i, m in enumerate(list(d.mapping_table)[1:]):
        out += _index(ns, m.filename_strindex, f"mapping_table[{i}].filename_strindex")
        out += _attribute_indices(m.attribute_indices, d, f"mapping_table[{i}].attribute_indices")
        if not (m.memory_start == 0 and m.memory_limit == 0) and \
                not m.memory_start < m.memory_limit:
            out.append(f"mapping_table[{i}]: memory_start={m.memory_start:016x}, "
                       f"memory_limit={m.memory_limit:016x}: must be both zero or start < limit")
        key = (m.filename_strindex, tuple(sorted(m.attribute_indices)), m.memory_start,
               m.memory_limit, m.file_offset)
        if key in seen:
            out.append(f"mapping_table: duplicate mapping at index {i}")
        seen.add(key)
    out += _zero(d.location_table, pb.Location(), "location_table")
    for i, loc in enumerate(d.location_table):
        where = f"location_table[{i}]"
        out += _index(len(d.mapping_table), loc.mapping_index, f"{where}.mapping_index")
        out += _attribute_indices(loc.attribute_indices, d, f"{where}.attribute_indices")
        for j, line in enumerate(loc.lines):
            out += _index(len(d.function_table), line.function_index,
                          f"location_table[{i}].line[{j}].function_index")
            if line.line < 0 or line.column < 0:
                out.append(f"location_table[{i}].line[{j}]: line/column must be non-negative")
    out += _zero(d.function_table, pb.Function(), "function_table")
    for i, fn in enumerate(d.function_table):
        for what in ("name_strindex", "system_name_strindex", "filename_strindex"):
            out += _index(ns, getattr(fn, what), f"function_table[{i}].{what}")
        if fn.start_line < 0:
            out.append(f"function_table[{i}].start_line: {fn.start_line} < 0")
        if i > 0 and fn == pb.Function():     # issue #27 item 11
            out.append(f"function_table[{i}]: all-empty function past index 0")
    out += _zero(d.link_table, pb.Link(), "link_table")
    for i, link in enumerate(list(d.link_table)[1:]):
        if len(link.trace_id) != 16:
            out.append(f"link_table: len([{i}].trace_id) == {len(link.trace_id)}, want 16")
        if len(link.span_id) != 8:
            out.append(f"link_table: len([{i}].span_id) == {len(link.span_id)}, want 8")
    if not ns:
        out.append("string_table: empty string table, must have at least empty string")
    elif d.string_table[0] != "":
        out.append(f"string_table: must have empty string at index 0, got {d.string_table[0]!r}")
    firsts: dict[str, int] = {}
    for i, s in enumerate(d.string_table):
        if s in firsts:
            out.append(f"string_table: duplicate string at index {i}, orig index {firsts[s]}")
        else:
            firsts[s] = i
    if not len(d.attribute_table):
        out.append("attribute_table: empty table, must have at least zero value entry")
    else:
        first = d.attribute_table[0]
        if first.key_strindex or first.unit_strindex or \
                (first.HasField("value") and first.value.WhichOneof("value") is not None):
            out.append("attribute_table: first attribute must be the zero value")
    for i, kvu in enumerate(d.attribute_table):
        out += _index(ns, kvu.key_strindex, f"attribute_table[{i}].key_strindex")
        out += _index(ns, kvu.unit_strindex, f"attribute_table[{i}].unit_strindex")
    out += _zero(d.stack_table, pb.Stack(), "stack_table")
    for i, st in enumerate(d.stack_table):
        for j, loc in enumerate(st.location_indices):
            out += _index(len(d.location_table), loc, f"stack_table[{i}].location_indices[{j}]")
    return out


def _orphans(req: Any) -> list[str]:
    d = req.dictionary
    refs: dict[str, set[int]] = {t: {0} for t in
                                 ("string", "attribute", "mapping", "function", "location",
                                  "stack", "link")}
    for rp in req.resource_profiles:
        for sp in rp.scope_profiles:
            for prof in sp.profiles:
                refs["string"] |= {prof.sample_type.type_strindex, prof.sample_type.unit_strindex,
                                   prof.period_type.type_strindex, prof.period_type.unit_strindex}
                refs["attribute"] |= set(prof.attribute_indices)
                for s in prof.samples:
                    refs["stack"].add(s.stack_index)
                    refs["link"].add(s.link_index)
                    refs["attribute"] |= set(s.attribute_indices)
    for st in d.stack_table:
        refs["location"] |= set(st.location_indices)
    for loc in d.location_table:
        refs["mapping"].add(loc.mapping_index)
        refs["attribute"] |= set(loc.attribute_indices)
        refs["function"] |= {ln.function_index for ln in loc.lines}
    for m in d.mapping_table:
        refs["string"].add(m.filename_strindex)
        refs["attribute"] |= set(m.attribute_indices)
    for fn in d.function_table:
        refs["string"] |= {fn.name_strindex, fn.system_name_strindex, fn.filename_strindex}
    for kvu in d.attribute_table:
        refs["string"] |= {kvu.key_strindex, kvu.unit_strindex}
    tables = {"string": d.string_table, "attribute": d.attribute_table,
              "mapping": d.mapping_table, "function": d.function_table,
              "location": d.location_table, "stack": d.stack_table, "link": d.link_table}
    return [f"{name}_table: unreferenced entry at index {i}"
            for name, table in tables.items() for i in range(len(table))
            if i not in refs[name]]
