"""Value decoders built from metadata: one reader function per class, so an
event or constant-pool entry is decoded by following its class's field list.

Decoded values are plain Python: ints, floats, bools, ``str`` / ``None`` /
:class:`PoolString` for strings, ``dict`` (field name -> value) for inline
structs, ``list`` for arrays, and for constant-pool fields the ``int`` key
into the pool of the field's type (resolved later, see ``Chunk.resolve``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from telegen.formats.jfr.errors import JfrError
from telegen.formats.jfr.metadata import ClassDesc, FieldDesc, Metadata
from telegen.formats.jfr.reader import Cursor, VarCursor

Reader = Callable[[Cursor], Any]



def _primitive_readers(cls: type[Cursor]) -> dict[str, Reader]:
    return {"boolean": cls.boolean, "byte": cls.i8, "char": cls.char, "short": cls.i16,
            "int": cls.i32, "long": cls.i64, "float": cls.f32, "double": cls.f64,
            "java.lang.String": cls.string}


_READERS = {True: _primitive_readers(VarCursor), False: _primitive_readers(Cursor)}


class Decoders:
    """Readers for the classes of one metadata, compiled on first use."""

    def __init__(self, metadata: Metadata, compressed: bool = True) -> None:
        self.metadata = metadata
        self._primitives = _READERS[compressed]
        self._i64 = self._primitives["long"]
        self._readers: dict[int, Reader] = {}
        self._building: set[int] = set()
        self._lock = threading.RLock()

    def for_class(self, class_id: int) -> Reader:
        reader = self._readers.get(class_id)
        if reader is None:
            with self._lock:          # decoders are shared by chunks of one recording
                reader = self._build(class_id)
                self._readers[class_id] = reader
        return reader

    def _build(self, class_id: int) -> Reader:
        desc = self.metadata.classes.get(class_id)
        if desc is None:
            raise JfrError(f"no metadata for type id {class_id}")
        if desc.is_primitive:
            return self._primitives[desc.name]
        if class_id in self._building:
            raise JfrError(f"type {desc.name} contains itself inline; cannot be decoded")
        self._building.add(class_id)
        try:
            fields = [(f.name, self._field(desc, f)) for f in desc.fields]
        finally:
            self._building.discard(class_id)
        return _struct_reader(fields)

    def _field(self, owner: ClassDesc, fd: FieldDesc) -> Reader:
        element: Reader = self._i64 if fd.constant_pool else self.for_class(fd.type_id)
        if not fd.array:
            return element
        return _array_reader(element, f"{owner.name}.{fd.name}")


def _struct_reader(fields: list[tuple[str, Reader]]) -> Reader:
    def read(cur: Cursor) -> dict[str, Any]:
        return {name: r(cur) for name, r in fields}
    return read


def _array_reader(element: Reader, what: str) -> Reader:
    def read(cur: Cursor) -> list[Any]:
        return [element(cur) for _ in range(cur.count(what))]
    return read
