"""Test prerequisites: what the project's setup (scripts/setup-host.sh) or
this machine kind provides. A missing one fails the test with its name —
never a skip, so a broken set-up cannot pass as a green run."""

from __future__ import annotations

import shutil


def prerequisite(ok: bool, what: str) -> None:
    if not ok:
        import pytest

        pytest.fail(f"missing test prerequisite: {what}", pytrace=False)


def tools(*names: str, provider: str) -> None:
    """Every command in ``names`` is on PATH (``provider``: what installs them)."""
    missing = [n for n in names if shutil.which(n) is None]
    prerequisite(not missing, f"{', '.join(missing)} ({provider})")
