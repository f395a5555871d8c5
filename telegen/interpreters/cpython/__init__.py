"""CPython from outside the process: which processes run it, where its
runtime lives, the struct offsets of its version (for the BPF frame walker),
and code objects read from its memory into names and lines."""

from telegen.interpreters.cpython.code import CodeEntry, CodeReader, PyLine
from telegen.interpreters.cpython.detect import CPythonProcess, detect

__all__ = ["CPythonProcess", "CodeEntry", "CodeReader", "PyLine", "detect"]
