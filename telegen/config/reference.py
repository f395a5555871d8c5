"""The config reference in the README, generated from the components' own
config dataclasses (defaults) and the comments above each field, so the
documentation cannot drift from the code. ``telegen components --reference``
prints it; a test checks the README carries the current text."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any

from telegen import registry
from telegen.component import Factory, Kind

BEGIN = "<!-- BEGIN CONFIG REFERENCE (generated: telegen components --reference) -->"
END = "<!-- END CONFIG REFERENCE -->"


def _field_comments(cls: type) -> dict[str, str]:
    """``# comment`` lines directly above each ``name: type = ...`` line."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"(\w+)\s*:", stripped)
        if m and pending:
            comments[m.group(1)] = " ".join(pending)
        pending = []
        trailing = re.match(r"(\w+)\s*:.*?#\s*(.+)$", stripped)
        if trailing and trailing.group(1) not in comments:
            comments[trailing.group(1)] = trailing.group(2)
    return comments


def _default(f: dataclasses.Field[Any]) -> str:
    if "doc_default" in f.metadata:      # defaults that depend on the environment
        return str(f.metadata["doc_default"])
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if f.metadata.get("duration"):
        return f"{value:g}s"
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)  # type: ignore[arg-type]
    return json.dumps(value, default=str)


def component_reference(factory: Factory) -> str:
    cls = factory.config_type
    lines = [f"#### {factory.kind.value} `{factory.type}`", "", factory.description, ""]
    fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
    if not fields:
        return "\n".join(lines + ["No settings.", ""])
    comments = _field_comments(cls)
    lines += ["| key | default | meaning |", "|---|---|---|"]
    for f in fields:
        if f.name.startswith("_"):
            continue
        text = comments.get(f.name, "").replace("|", "\\|")
        lines.append(f"| `{f.name}` | `{_default(f)}` | {text} |")
    return "\n".join(lines + [""])


def reference() -> str:
    parts = [BEGIN, ""]
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        for type_ in registry.types(kind):
            factory = registry.get(kind, type_)
            assert factory is not None
            parts.append(component_reference(factory))
    parts.append(END)
    return "\n".join(parts)


def readme_block(readme_text: str) -> str | None:
    start, end = readme_text.find(BEGIN), readme_text.find(END)
    if start < 0 or end < 0:
        return None
    return readme_text[start:end + len(END)]
