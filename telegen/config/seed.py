"""Translate the seed document's ``agent.profiling`` block into a pipeline.

The block becomes pipeline ``profiles/agent`` built from components named
``<type>/agent``:

    receivers   ebpf (cpu, off_cpu, memory, memory_mode, mutex, sample_rate,
                duration, include_kernel), go (goroutine, block, mutex; with
                discovery on and cpu off, as ebpf samples Go programs' CPU),
                jfr (java.*), python (python.*)
    processors  symbolize (symbols.*) -> filter (filters.*) -> batch (upload_interval
                as timeout)
    exporters   see below

Decisions:

* A present block means "on": ``enabled`` defaults to true, because the
  seed's per-feature snippets (memory, Go, Java...) leave it out; only
  ``enabled: false`` turns the agent pipeline off. Unset profile types follow
  the seed: cpu and off_cpu on, everything else off.
* Exporters: when the file has a non-empty top-level ``exporters`` section,
  the agent pipeline sends to the exporters its own pipelines use (in order of
  first use); if it has no pipelines, to every configured exporter. Otherwise
  it sends to ``pprof_file/agent`` (directory ./profiles) and ``console/agent``.
* Only component types present in the registry at run time are emitted, and
  only settings their config dataclass has. A setting that cannot be honoured
  yields a warning naming the seed path; a ``false`` switch for a missing
  component is honoured trivially and stays silent.
* ``java.jfr_enabled`` / ``python.enabled`` decide whether the jfr / python
  receiver is added; the other keys of those blocks are passed to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from telegen import registry
from telegen.component import Kind

ROOT = "agent::profiling"
PIPELINE = "profiles/agent"
NAME = "agent"
_EBPF_SWITCHES = ("cpu", "off_cpu", "memory", "mutex")
_GO_SWITCHES = ("goroutine", "block", "mutex")
_SEED_DEFAULTS = {"cpu": True, "off_cpu": True}
_DEFAULT_EXPORTERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("pprof_file", {"directory": "./profiles"}),
    ("console", {}),
)
_ORDER = {
    Kind.RECEIVER: ("ebpf", "go", "jfr", "python"),
    Kind.PROCESSOR: ("symbolize", "filter", "batch"),
    Kind.EXPORTER: tuple(t for t, _ in _DEFAULT_EXPORTERS),
}


@dataclass
class Translation:
    # kind -> component id string -> raw settings, to merge into the document
    components: dict[Kind, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # raw pipeline body for ``profiles/agent``; None when there is nothing to run
    pipeline: dict[str, list[str]] | None = None
    # generated config path ("receivers::ebpf/agent::sample_rate") -> seed path
    origins: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # why no pipeline was made although the block is enabled (for "nothing to run" errors)
    skipped: str | None = None


class _Translator:
    def __init__(self) -> None:
        self.plan: dict[tuple[Kind, str], dict[str, Any]] = {}
        self.missing: list[str] = []
        self.out = Translation()

    def warn(self, message: str) -> None:
        if message not in self.out.warnings:
            self.out.warnings.append(message)

    def include(self, kind: Kind, type_: str, warn_path: str, ignored: str = "ignored") -> bool:
        """Plan component ``type_/agent``; warn at ``warn_path`` when it is missing."""
        if registry.get(kind, type_) is None:
            if f'{kind.value} "{type_}"' not in self.missing:
                self.missing.append(f'{kind.value} "{type_}"')
            self.warn(f'{warn_path}: needs {kind.value} "{type_}", which this build does not '
                      f"include yet; {ignored}")
            return False
        self.plan.setdefault((kind, type_), {})
        self.out.origins.setdefault(f"{kind.section}::{type_}/{NAME}", warn_path)
        return True

    def put(self, kind: Kind, type_: str, key: str, value: Any, seed_path: str,
            warn_path: str | None = None, target: str | None = None,
            ignored: str = "ignored") -> None:
        """Set ``target`` (default ``key``) on ``type_/agent`` to ``value``."""
        target = target or key
        requested = value is not False
        factory = registry.get(kind, type_)
        if factory is None:
            if requested:
                self.include(kind, type_, warn_path or seed_path, ignored)
            return
        names = {f.name for f in dataclasses.fields(factory.config_type)}
        if target not in names:
            if requested:
                self.warn(f'{seed_path}: {kind.value} "{type_}" in this build has no '
                          f'"{target}" setting yet; ignored')
            return
        self.plan.setdefault((kind, type_), {})[target] = value
        self.out.origins.setdefault(f"{kind.section}::{type_}/{NAME}", ROOT)
        self.out.origins[f"{kind.section}::{type_}/{NAME}::{target}"] = seed_path


def translate(profiling: dict[str, Any] | None, document: dict[str, Any]) -> Translation:
    """Translate an (already schema-checked) ``agent.profiling`` block."""
    p = profiling or {}
    t = _Translator()
    if p.get("enabled", True) is False:
        return t.out
    _receivers(t, p)
    _processors(t, p)
    receivers = _ids(t, Kind.RECEIVER)
    if not receivers:
        if not any(p.get(k, _SEED_DEFAULTS.get(k, False)) for k in _EBPF_SWITCHES + _GO_SWITCHES):
            return _skip(t, "every profile type is off")
        return _skip(t, "no receiver in this build can collect the requested profiles")
    exporters = _exporters(t, document)
    if not exporters:
        return _skip(t, "no exporter is available in this build")
    for (kind, type_), raw in t.plan.items():
        t.out.components.setdefault(kind, {})[f"{type_}/{NAME}"] = raw
    t.out.pipeline = {"receivers": receivers, "processors": _ids(t, Kind.PROCESSOR),
                      "exporters": exporters}
    return t.out


def _skip(t: _Translator, reason: str) -> Translation:
    if t.missing:
        reason += f" ({', '.join(t.missing)} not included yet)"
    t.out.skipped = reason
    t.warn(f"{ROOT}: {reason}; no agent pipeline is created")
    return t.out


def _planned(t: _Translator, kind: Kind) -> list[tuple[Kind, str]]:
    return [(kind, ty) for ty in _ORDER[kind] if (kind, ty) in t.plan]


def _ids(t: _Translator, kind: Kind) -> list[str]:
    return [f"{ty}/{NAME}" for _, ty in _planned(t, kind)]


def _receivers(t: _Translator, p: dict[str, Any]) -> None:
    rk = Kind.RECEIVER
    for key in _EBPF_SWITCHES:
        value = p.get(key, _SEED_DEFAULTS.get(key))
        if value is not None:
            t.put(rk, "ebpf", key, value, f"{ROOT}::{key}")
    if "memory_mode" in p:
        if p.get("memory"):
            t.put(rk, "ebpf", "memory_mode", p["memory_mode"], f"{ROOT}::memory_mode")
        else:
            t.warn(f"{ROOT}::memory_mode: has no effect unless memory: true; ignored")
    for key in ("sample_rate", "duration"):
        if key in p:
            t.put(rk, "ebpf", key, p[key], f"{ROOT}::{key}")
    symbols = p.get("symbols") or {}
    if "include_kernel" in symbols:
        t.put(rk, "ebpf", "include_kernel", symbols["include_kernel"],
              f"{ROOT}::symbols::include_kernel")
    ebpf = t.plan.get((rk, "ebpf"))
    if ebpf is not None and not any(ebpf.get(k) for k in _EBPF_SWITCHES):
        del t.plan[(rk, "ebpf")]  # nothing to collect: leave the receiver out

    for key in _GO_SWITCHES:
        if key in p:
            shared = bool(t.plan.get((rk, "ebpf"), {}).get(key))
            t.put(rk, "go", key, p[key], f"{ROOT}::{key}",
                  ignored="ignored for Go programs" if shared else "ignored")
    go = t.plan.get((rk, "go"))
    if go is not None and not any(go.get(k) for k in _GO_SWITCHES):
        del t.plan[(rk, "go")]
    elif go is not None:
        # the seed names no Go endpoints: find them; CPU is the ebpf receiver's job
        t.put(rk, "go", "discovery", True, ROOT)
        t.put(rk, "go", "cpu", False, ROOT)

    for block, switch, type_ in (("java", "jfr_enabled", "jfr"), ("python", "enabled", "python")):
        if block not in p or (p[block] or {}).get(switch, True) is False:
            continue
        settings = {k: v for k, v in (p[block] or {}).items() if k != switch}
        if t.include(rk, type_, f"{ROOT}::{block}"):
            for key, value in settings.items():
                t.put(rk, type_, key, value, f"{ROOT}::{block}::{key}")


def _processors(t: _Translator, p: dict[str, Any]) -> None:
    pk = Kind.PROCESSOR
    symbols = p.get("symbols") or {}
    if registry.get(pk, "symbolize") is not None:
        t.include(pk, "symbolize", f"{ROOT}::symbols")
    for key, value in symbols.items():
        t.put(pk, "symbolize", key, value, f"{ROOT}::symbols::{key}", warn_path=f"{ROOT}::symbols")
    if "filters" in p:
        filters = p["filters"] or {}
        if t.include(pk, "filter", f"{ROOT}::filters"):
            for key, value in filters.items():
                t.put(pk, "filter", key, value, f"{ROOT}::filters::{key}")
    if registry.get(pk, "batch") is not None:
        t.include(pk, "batch", f"{ROOT}::upload_interval")
    if "upload_interval" in p:
        t.put(pk, "batch", "timeout", p["upload_interval"], f"{ROOT}::upload_interval",
              target="timeout")


def _exporters(t: _Translator, document: dict[str, Any]) -> list[str]:
    configured = document.get("exporters") or {}
    if configured:
        pipelines = ((document.get("service") or {}).get("pipelines") or {}).values()
        used: list[str] = []
        for body in pipelines:
            for ref in (body or {}).get("exporters") or []:
                if ref not in used:
                    used.append(ref)
        return used or [str(k) for k in configured]
    for type_, settings in _DEFAULT_EXPORTERS:
        if t.include(Kind.EXPORTER, type_, ROOT):
            for key, value in settings.items():
                t.put(Kind.EXPORTER, type_, key, value, ROOT)
    return _ids(t, Kind.EXPORTER)
