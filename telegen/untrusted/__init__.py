"""The trust boundary: everything the agent reads from a profiled process,
another local user, a container's filesystem or a network peer goes through
here first. See SECURITY.md.

- :mod:`.refusals` — :class:`Refused` (raised) and :class:`Refusals`
  (counted as ``refused_inputs{source,reason}``, logged once per kind).
- :mod:`.limits` — bounded reads and the one bounded gunzip.
- :mod:`.fs` — opening files inside a target's root without following its
  symlinks out (``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)``).
"""

from __future__ import annotations

from telegen.untrusted.fs import (
    open_in_root,
    open_regular,
    read_in_root,
    read_regular,
)
from telegen.untrusted.limits import (
    MiB,
    capped_reader,
    gunzip,
    maybe_gunzip,
    read_fd,
    read_stream,
)
from telegen.untrusted.refusals import Refusals, Refused

__all__ = ["MiB", "Refusals", "Refused", "capped_reader", "gunzip", "maybe_gunzip",
           "open_in_root", "open_regular", "read_fd", "read_in_root", "read_regular",
           "read_stream"]
