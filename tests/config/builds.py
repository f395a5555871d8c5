"""A reduced build for config tests: the registry holding only some of the
real component factories, as a build without the others would."""

from __future__ import annotations

import pytest

from telegen import registry
from telegen.component import Kind


def only(monkeypatch: pytest.MonkeyPatch, *types: tuple[Kind, str]) -> None:
    """Make the registry hold exactly the real factories of ``types``."""
    real = registry.factories()
    table = {t: real[t] for t in types}
    monkeypatch.setattr(registry, "factories", lambda: table)
