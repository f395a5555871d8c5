"""CFI (``.eh_frame`` / ``.debug_frame``) unwinding of copied x86-64 user stacks:
compact per-binary tables built once and cached by build-id, and the unwinder
over a stack snapshot. Pure library code: no BPF, no pipeline knowledge."""

from __future__ import annotations

from telegen.unwind.cache import TableCache
from telegen.unwind.table import UnwindTable
from telegen.unwind.unwinder import AddressSpace, UnwindResult, unwind

__all__ = ["AddressSpace", "TableCache", "UnwindResult", "UnwindTable", "unwind"]
