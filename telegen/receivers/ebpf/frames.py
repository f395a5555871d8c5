"""Addresses to pdata frames, following the convention shared with the symbolizer:

* leaf first; kernel frames (if kept) before user frames;
* the leaf keeps its exact instruction pointer; every other frame holds
  ``return_address - 1`` so it falls inside the call instruction. The top
  user frame of a sample taken in kernel mode (a syscall's return point) is a
  return address too;
* user frames carry the process's mapping (start, limit, file offset, file,
  build-id); an address outside every mapping gets ``mapping=None``;
* kernel frames carry ``Mapping(file="[kernel.kallsyms]")``;
* a stack that could not be read, or was cut at the depth limit, ends with a
  ``[truncated]`` marker frame, so its time is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from telegen.pdata import Frame, FrameKind, Line, Mapping

KERNEL_MAPPING = Mapping(file="[kernel.kallsyms]")
TRUNCATED = Frame(FrameKind.TRUNCATED, 0, None, (Line("[truncated]"),))
# Kernel-mode time with no user stack (kernel threads) when kernel frames are stripped.
KERNEL_ONLY = Frame(FrameKind.KERNEL, 0, KERNEL_MAPPING, (Line("[kernel]"),))

MappingLookup = Callable[[int], "Mapping | None"]


def build_stack(*, kernel: Sequence[int], user: Sequence[int] | None, user_mode: bool,
                find_mapping: MappingLookup, truncated: bool = False) -> tuple[Frame, ...]:
    """One sample's frames.

    ``user`` None means the user stack could not be read (a marker frame
    replaces it); empty means there is none (kernel thread).
    """
    frames: list[Frame] = []
    for i, ip in enumerate(kernel):
        frames.append(Frame(FrameKind.KERNEL, ip if i == 0 else ip - 1, KERNEL_MAPPING))
    if user is None:
        frames.append(TRUNCATED)
        return tuple(frames)
    for i, ip in enumerate(user):
        exact = i == 0 and not frames and user_mode
        addr = ip if exact else ip - 1
        frames.append(Frame(FrameKind.NATIVE, addr, find_mapping(addr)))
    if truncated:
        frames.append(TRUNCATED)
    if not frames:
        frames.append(KERNEL_ONLY)
    return tuple(frames)
