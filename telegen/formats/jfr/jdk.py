"""Views of the JDK's own types in a chunk: stack traces, frames, threads.

Resolved values are cached per chunk (constant-pool keys are chunk-local), so
a stack trace shared by many samples is built once.

Method names are ``package.Class.method``: the class's internal name
(``java/util/HashMap$Node``) with ``/`` turned into ``.``, as ``jfr print``'s
``RecordedClass.getName()`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telegen.formats.jfr.chunk import Chunk


@dataclass(frozen=True, slots=True)
class JavaFrame:
    function: str          # package.Class.method
    descriptor: str        # (J)J
    line: int
    bytecode_index: int
    type: str              # Interpreted, JIT compiled, Inlined, Native, ...


@dataclass(frozen=True, slots=True)
class StackTrace:
    frames: tuple[JavaFrame, ...]     # leaf first
    truncated: bool


@dataclass(frozen=True, slots=True)
class JavaThread:
    name: str
    java_id: int
    os_id: int


EMPTY_STACK = StackTrace((), False)
UNKNOWN_THREAD = JavaThread("", 0, 0)


class JdkView:
    """Resolves JDK constant-pool types of one chunk, with caches."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        by_name = chunk.metadata.by_name
        self._ids = {name: (by_name[name].id if name in by_name else -1) for name in (
            "jdk.types.StackTrace", "jdk.types.Method", "java.lang.Class", "jdk.types.Symbol",
            "java.lang.Thread", "jdk.types.FrameType")}
        self._stacks: dict[int, StackTrace] = {}
        self._methods: dict[int, tuple[str, str]] = {}
        self._classes: dict[int, str] = {}
        self._symbols: dict[int, str] = {}
        self._frame_types: dict[int, str] = {}
        self._threads: dict[int, JavaThread] = {}

    def _entry(self, type_name: str, key: Any) -> Any:
        if not isinstance(key, int):
            return None
        return self.chunk.pool_entry(self._ids[type_name], key)

    def symbol(self, key: Any) -> str:
        got = self._symbols.get(key)
        if got is None:
            entry = self._entry("jdk.types.Symbol", key)
            text = self.chunk.text(entry.get("string")) if isinstance(entry, dict) else None
            got = self._symbols[key] = text or ""
        return got

    def class_name(self, key: Any) -> str:
        got = self._classes.get(key)
        if got is None:
            entry = self._entry("java.lang.Class", key)
            name = self.symbol(entry.get("name")) if isinstance(entry, dict) else ""
            got = self._classes[key] = name.replace("/", ".")
        return got

    def method(self, key: Any) -> tuple[str, str]:
        got = self._methods.get(key)
        if got is None:
            entry = self._entry("jdk.types.Method", key)
            if isinstance(entry, dict):
                cls = self.class_name(entry.get("type"))
                name = self.symbol(entry.get("name"))
                function = f"{cls}.{name}" if cls else name or "[unknown]"
                got = (function, self.symbol(entry.get("descriptor")))
            else:
                got = ("[unknown]", "")
            self._methods[key] = got
        return got

    def frame_type(self, key: Any) -> str:
        got = self._frame_types.get(key)
        if got is None:
            entry = self._entry("jdk.types.FrameType", key)
            if isinstance(entry, dict):
                text = self.chunk.text(entry.get("description"))
            else:
                text = self.chunk.text(entry) if isinstance(entry, str) else None
            got = self._frame_types[key] = text or ""
        return got

    def stack_trace(self, key: Any) -> StackTrace:
        if not isinstance(key, int):
            return EMPTY_STACK
        got = self._stacks.get(key)
        if got is None:
            entry = self._entry("jdk.types.StackTrace", key)
            if not isinstance(entry, dict):
                got = EMPTY_STACK
            else:
                frames = []
                for f in entry.get("frames") or ():
                    function, descriptor = self.method(f.get("method"))
                    frames.append(JavaFrame(function, descriptor, _int(f.get("lineNumber")),
                                            _int(f.get("bytecodeIndex")),
                                            self.frame_type(f.get("type"))))
                got = StackTrace(tuple(frames), bool(entry.get("truncated")))
            self._stacks[key] = got
        return got

    def thread(self, key: Any) -> JavaThread:
        if not isinstance(key, int):
            return UNKNOWN_THREAD
        got = self._threads.get(key)
        if got is None:
            entry = self._entry("java.lang.Thread", key)
            if isinstance(entry, dict):
                name = (self.chunk.text(entry.get("javaName"))
                        or self.chunk.text(entry.get("osName")) or "")
                got = JavaThread(name, _int(entry.get("javaThreadId")),
                                 _int(entry.get("osThreadId")))
            else:
                got = UNKNOWN_THREAD
            self._threads[key] = got
        return got


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
