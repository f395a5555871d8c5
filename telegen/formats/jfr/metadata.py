"""The metadata event: the string table and the element tree describing every
type in a chunk (classes, their fields, annotations and settings).

Layout (all integers in the chunk's integer encoding)::

    size, type id (0), start ticks, duration ticks, metadata id,
    string count, strings...,
    root element

    element := name (string index), attribute count,
               (key index, value index) * count, child count, element * count

The root holds a ``metadata`` element whose ``class`` children carry
attributes ``id``, ``name``, ``superType``, ``simpleType`` and children
``field`` (``name``, ``class`` = type id, ``constantPool``, ``dimension``),
``annotation`` (``class`` + ``value``/``value-N``) and ``setting``; and a
``region`` element (locale, GMT offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telegen.formats.jfr.errors import JfrError
from telegen.formats.jfr.reader import Cursor

PRIMITIVES = frozenset({"boolean", "byte", "char", "short", "int", "long", "float",
                        "double", "java.lang.String"})
_MAX_DEPTH = 24
_MAX_ELEMENTS = 1 << 20


@dataclass(slots=True)
class Element:
    name: str
    attributes: dict[str, str]
    children: list[Element]


@dataclass(slots=True)
class FieldDesc:
    name: str
    type_id: int
    constant_pool: bool = False
    array: bool = False
    annotations: dict[str, str] = field(default_factory=dict)   # class name -> value


@dataclass(slots=True)
class SettingDesc:
    name: str
    type_id: int
    default: str = ""


@dataclass(slots=True)
class ClassDesc:
    id: int
    name: str
    super_type: str = ""
    simple_type: bool = False
    fields: list[FieldDesc] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    settings: list[SettingDesc] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        return self.super_type == "jdk.jfr.Event"

    @property
    def is_primitive(self) -> bool:
        return self.name in PRIMITIVES and not self.fields

    @property
    def label(self) -> str:
        return self.annotations.get("jdk.jfr.Label", "")


@dataclass(slots=True)
class Metadata:
    id: int
    start_ticks: int
    classes: dict[int, ClassDesc]
    by_name: dict[str, ClassDesc]
    region: dict[str, str]


def read_metadata(cur: Cursor, end: int) -> Metadata:
    """Parse the metadata event whose body starts at ``cur`` (after size and
    type id); ``end`` bounds it."""
    cur.end = min(cur.end, end)
    start_ticks = cur.i64()
    cur.i64()                       # duration
    metadata_id = cur.i64()
    n = cur.count("metadata strings")
    strings = [cur.plain_string() for _ in range(n)]
    budget = [_MAX_ELEMENTS]
    root = _element(cur, strings, 0, budget)
    return _build(root, metadata_id, start_ticks, cur)


def _string(strings: list[str], index: int, cur: Cursor) -> str:
    if 0 <= index < len(strings):
        return strings[index]
    raise cur.error(f"metadata string index {index} out of range ({len(strings)} strings)")


def _element(cur: Cursor, strings: list[str], depth: int, budget: list[int]) -> Element:
    if depth > _MAX_DEPTH:
        raise cur.error("metadata elements nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise cur.error("too many metadata elements")
    name = _string(strings, cur.i32(), cur)
    attrs: dict[str, str] = {}
    for _ in range(cur.count("metadata attributes")):
        key = _string(strings, cur.i32(), cur)
        attrs[key] = _string(strings, cur.i32(), cur)
    children = [_element(cur, strings, depth + 1, budget)
                for _ in range(cur.count("metadata children"))]
    return Element(name, attrs, children)


def _int_attr(el: Element, key: str, cur: Cursor) -> int:
    try:
        return int(el.attributes[key])
    except (KeyError, ValueError):
        raise cur.error(f"metadata {el.name} element lacks a numeric {key!r}") from None


def _annotations(el: Element, cur: Cursor) -> list[tuple[int, str]]:
    out = []
    for child in el.children:
        if child.name == "annotation":
            values = [v for k, v in sorted(child.attributes.items()) if k.startswith("value")]
            out.append((_int_attr(child, "class", cur), values[0] if len(values) == 1
                        else ",".join(values)))
    return out


def _build(root: Element, metadata_id: int, start_ticks: int, cur: Cursor) -> Metadata:
    classes: dict[int, ClassDesc] = {}
    pending: list[tuple[dict[str, str], list[tuple[int, str]]]] = []
    region: dict[str, str] = {}
    for section in root.children:
        if section.name == "region":
            region = dict(section.attributes)
            continue
        if section.name != "metadata":
            continue
        for el in section.children:
            if el.name != "class":
                continue
            desc = ClassDesc(id=_int_attr(el, "id", cur), name=el.attributes.get("name", ""),
                             super_type=el.attributes.get("superType", ""),
                             simple_type=el.attributes.get("simpleType") == "true")
            pending.append((desc.annotations, _annotations(el, cur)))
            for child in el.children:
                if child.name == "field":
                    fd = FieldDesc(name=child.attributes.get("name", ""),
                                   type_id=_int_attr(child, "class", cur),
                                   constant_pool=child.attributes.get("constantPool") == "true",
                                   array=child.attributes.get("dimension", "0") not in ("", "0"))
                    pending.append((fd.annotations, _annotations(child, cur)))
                    desc.fields.append(fd)
                elif child.name == "setting":
                    desc.settings.append(SettingDesc(child.attributes.get("name", ""),
                                                     _int_attr(child, "class", cur),
                                                     child.attributes.get("defaultValue", "")))
            classes[desc.id] = desc
    for target, found in pending:
        for class_id, value in found:
            ann = classes.get(class_id)
            if ann is not None:
                target[ann.name] = value
    for desc in classes.values():
        for fd in desc.fields:
            if fd.type_id not in classes:
                raise JfrError(f"metadata: field {desc.name}.{fd.name} has unknown type "
                               f"{fd.type_id}")
    return Metadata(metadata_id, start_ticks, classes,
                    {c.name: c for c in classes.values()}, region)
