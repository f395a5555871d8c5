"""ctypes layouts as JSON: the compiler child describes the Key/Leaf classes
BCC generated for each map, the agent rebuilds the same classes from that.

A description is ``{"scalar": code}`` (a ctypes simple type's ``_type_``
code), ``{"array": desc, "length": n}``, or ``{"struct"|"union": name,
"pack": n, "anonymous": [...], "fields": [[name, desc] | [name, desc, bits]]}``.
Rebuilding checks sizes against what the kernel says about the map.
"""

from __future__ import annotations

import ctypes
from typing import Any

_SIMPLE = (ctypes.c_bool, ctypes.c_char, ctypes.c_wchar, ctypes.c_byte, ctypes.c_ubyte,
           ctypes.c_short, ctypes.c_ushort, ctypes.c_int, ctypes.c_uint, ctypes.c_long,
           ctypes.c_ulong, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_float,
           ctypes.c_double, ctypes.c_longdouble)
SCALARS: dict[str, Any] = {}
for _t in _SIMPLE:
    SCALARS.setdefault(_t._type_, _t)   # type: ignore[attr-defined]
MAX_DEPTH = 16


def describe(ctype: Any) -> dict[str, Any]:
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        return {"array": describe(ctype._type_), "length": ctype._length_}
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure | ctypes.Union):
        fields = []
        for f in ctype._fields_:
            fields.append([f[0], describe(f[1]), *f[2:]])
        kind = "union" if issubclass(ctype, ctypes.Union) else "struct"
        return {kind: ctype.__name__, "pack": getattr(ctype, "_pack_", 0),
                "anonymous": list(getattr(ctype, "_anonymous_", ())), "fields": fields}
    code = getattr(ctype, "_type_", None)
    if isinstance(code, str) and SCALARS.get(code) is not None:
        return {"scalar": code}
    raise ValueError(f"cannot describe ctypes type {ctype!r}")


def build(desc: dict[str, Any], depth: int = 0) -> Any:
    """The ctypes class of a description (raises ValueError on a malformed one)."""
    if depth > MAX_DEPTH or not isinstance(desc, dict):
        raise ValueError("malformed layout")
    if "scalar" in desc:
        t = SCALARS.get(desc["scalar"])
        if t is None:
            raise ValueError(f"unknown scalar {desc['scalar']!r}")
        return t
    if "array" in desc:
        n = desc["length"]
        if not isinstance(n, int) or n < 0:
            raise ValueError("bad array length")
        return build(desc["array"], depth + 1) * n
    kind = "union" if "union" in desc else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    fields: list[tuple[Any, ...]] = []
    for f in desc["fields"]:
        if not isinstance(f[0], str):
            raise ValueError("bad field name")
        fields.append((f[0], build(f[1], depth + 1), *[int(b) for b in f[2:3]]))
    ns: dict[str, Any] = {"_fields_": fields, "_anonymous_": list(desc.get("anonymous", []))}
    if desc.get("pack"):
        ns["_pack_"] = int(desc["pack"])
    return type(str(desc[kind]), (base,), ns)
