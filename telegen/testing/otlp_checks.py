"""Checks on OTLP profiles requests for tests: dictionary invariants."""

from __future__ import annotations

from typing import Any

from telegen.formats.otlp import pb


def check_dictionary(req: Any) -> None:
    """Every table starts with its zero value and every index is in range."""
    d = req.dictionary
    assert d.string_table[0] == ""
    for table, zero in ((d.mapping_table, pb.Mapping()), (d.location_table, pb.Location()),
                        (d.function_table, pb.Function()), (d.link_table, pb.Link()),
                        (d.attribute_table, pb.KeyValueAndUnit()), (d.stack_table, pb.Stack())):
        assert len(table) >= 1 and table[0] == zero
    ns, nf, nm, nl = len(d.string_table), len(d.function_table), len(d.mapping_table), \
        len(d.location_table)
    assert len(set(d.string_table)) == ns          # no duplicates
    for f in d.function_table:
        assert max(f.name_strindex, f.system_name_strindex, f.filename_strindex) < ns
    for m in d.mapping_table:
        assert m.filename_strindex < ns
        assert all(0 < i < len(d.attribute_table) for i in m.attribute_indices)
    for loc in d.location_table:
        assert loc.mapping_index < nm
        assert all(0 < ln.function_index < nf for ln in loc.lines)
        assert all(0 < i < len(d.attribute_table) for i in loc.attribute_indices)
    for st in d.stack_table:
        assert all(0 < i < nl for i in st.location_indices)
    for a in d.attribute_table:
        assert a.key_strindex < ns and a.unit_strindex < ns
    for rp in req.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                assert p.sample_type.type_strindex < ns and p.sample_type.unit_strindex < ns
                assert all(0 < i < len(d.attribute_table) for i in p.attribute_indices)
                for s in p.samples:
                    assert s.stack_index < len(d.stack_table)
                    assert s.link_index < len(d.link_table)
                    assert all(0 < i < len(d.attribute_table) for i in s.attribute_indices)
                    assert s.values or s.timestamps_unix_nano
                    if s.values and s.timestamps_unix_nano:
                        assert len(s.values) == len(s.timestamps_unix_nano)
