"""The one exception the JFR parser raises."""

from __future__ import annotations


class JfrError(Exception):
    """A recording (or part of one) that cannot be read: bad magic, truncated
    chunk, inconsistent metadata, an offset outside its chunk...  ``offset``
    is the absolute file position where the problem was found, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(f"{message} (at byte {offset})" if offset is not None else message)
        self.offset = offset
