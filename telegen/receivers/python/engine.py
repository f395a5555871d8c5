"""The sampling engine behind the ``python`` receiver, as a small interface.

An engine records one process for one window and hands back aggregated
thread stacks. The receiver owns scheduling, targets, conversion to pdata and
failure accounting, so another engine (an in-house memory reader, Austin...)
only has to implement :class:`Engine` and :class:`Recording`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EngineOptions:
    rate: int                 # samples per second
    seconds: int              # window length
    include_idle: bool = False
    gil_only: bool = False
    native: bool = False
    nonblocking: bool = True


@dataclass(frozen=True)
class RawFrame:
    function: str             # as the engine reports it: ``Class.method``, ``func``, ``0x7f..``
    file: str                 # full path of the source file or native object
    line: int = 0
    native: bool = False


@dataclass(frozen=True)
class ThreadStack:
    tid: int                  # OS thread id
    thread_name: str
    frames: tuple[RawFrame, ...]   # leaf first
    count: int


class EngineError(Exception):
    """The engine could not record the process; ``reason`` is short and stable
    (for state-change logging), the message has the detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Recording(Protocol):
    pid: int

    def done(self) -> bool:
        """True once the window is over (or the process exited)."""

    def stop(self) -> None:
        """End the window early; ``result`` then returns what was recorded."""

    def result(self, timeout_s: float = 10.0) -> list[ThreadStack]:
        """The window's stacks; raises :class:`EngineError`."""

    def cancel(self) -> None:
        """Abandon the window and release everything (idempotent)."""


class Engine(Protocol):
    name: str

    def record(self, pid: int, options: EngineOptions) -> Recording:
        """Start recording ``pid`` for one window; returns at once."""
