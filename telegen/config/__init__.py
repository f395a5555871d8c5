"""Load a telegen configuration: YAML -> ``${env:...}`` expansion -> document
schema (``schema/config.json``) -> seed ``agent.profiling`` translation ->
per-component schema + dataclass + ``validate()`` -> pipelines and service.

Every problem is a :class:`~telegen.component.ConfigError` whose message is one
line naming the config path (``receivers::ebpf::sample_rate``) and the fix.
Components configured but used by no pipeline are warnings, as in the
OpenTelemetry Collector.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from telegen import registry
from telegen.component import ComponentID, ConfigError, Kind
from telegen.config import seed
from telegen.config.expand import expand, join, load_yaml, parse_duration
from telegen.config.schema import build_component_config, did_you_mean, show, validate

__all__ = [
    "Config", "ConfigError", "PipelineConfig", "TelemetryConfig", "build_component_config",
    "load_default", "load_file", "load_text", "parse_duration",
]

DEFAULT_SOURCE = "<embedded default>"
SIGNAL = "profiles"
TRACES = "traces"        # only to feed span linking and forward traces on unchanged
_PIPELINE_KINDS = (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER)
_OTHER_SIGNALS = ("metrics", "logs")


@dataclass
class PipelineConfig:
    id: str                       # "profiles[/name]" or "traces[/name]"
    receivers: list[ComponentID]
    processors: list[ComponentID]
    exporters: list[ComponentID]

    @property
    def signal(self) -> str:
        return self.id.partition("/")[0]


@dataclass
class TelemetryConfig:
    metrics_enabled: bool = False
    metrics_address: str = "127.0.0.1:8888"
    log_level: str = "info"


@dataclass
class Config:
    components: dict[Kind, dict[ComponentID, Any]]   # built, validated config objects
    pipelines: dict[str, PipelineConfig]
    extensions: list[ComponentID]                     # service.extensions
    telemetry: TelemetryConfig
    source: str                                       # file path or "<embedded default>"
    warnings: list[str] = field(default_factory=list)


def load_file(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("", "the file is not UTF-8 text") from None
    return load_text(text, path, env)


def load_default() -> Config:
    text = resources.files("telegen").joinpath("default.yaml").read_text(encoding="utf-8")
    return load_text(text, DEFAULT_SOURCE)


def load_text(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    document = load_yaml(text)
    if document is None:
        raise ConfigError("", "the configuration is empty; give at least receivers, exporters "
                              "and service::pipelines, or an agent::profiling block")
    if not isinstance(document, dict):
        raise ConfigError("", f"the top level must be a mapping of sections (receivers, "
                              f"processors, exporters, service, agent), not {show(document)}")
    document = expand(document, os.environ if env is None else env)
    validate(document, "config.json")
    warnings: list[str] = []
    origins: dict[str, str] = {}
    skipped: str | None = None
    profiling = document.get("agent") or {}
    if "profiling" in profiling:
        translation = seed.translate(profiling["profiling"], document)
        _merge(document, translation)
        warnings += translation.warnings
        origins, skipped = translation.origins, translation.skipped
    components = _build_components(document, origins)
    service = document.get("service") or {}
    pipelines = _pipelines(service.get("pipelines") or {}, components)
    extensions = _service_extensions(service.get("extensions") or [], components)
    telemetry = _telemetry(service.get("telemetry") or {})
    if not pipelines and skipped:
        raise ConfigError(seed.ROOT, f"{skipped}, so there is nothing to run")
    if not pipelines:
        raise ConfigError("service::pipelines", "no pipeline to run; add one such as "
                          "profiles: {receivers: [...], exporters: [...]}, or an "
                          "agent::profiling block")
    warnings += _unused(components, pipelines, extensions)
    return Config(components=components, pipelines=pipelines, extensions=extensions,
                  telemetry=telemetry, source=source, warnings=warnings)


def _merge(document: dict[str, Any], translation: seed.Translation) -> None:
    for kind, generated in translation.components.items():
        section = document.get(kind.section) or {}
        for cid, raw in generated.items():
            if cid in section:
                raise ConfigError(join(kind.section, cid),
                                  f"this id is reserved for the translation of "
                                  f"agent::profiling; rename your {kind.value}")
            section[cid] = raw
        document[kind.section] = section
    if translation.pipeline is not None:
        service = document.get("service") or {}
        pipelines = service.get("pipelines") or {}
        if seed.PIPELINE in pipelines:
            raise ConfigError(f"service::pipelines::{seed.PIPELINE}",
                              "this pipeline id is reserved for the translation of "
                              "agent::profiling; rename your pipeline")
        pipelines[seed.PIPELINE] = translation.pipeline
        service["pipelines"] = pipelines
        document["service"] = service


def _build_components(document: dict[str, Any],
                      origins: dict[str, str]) -> dict[Kind, dict[ComponentID, Any]]:
    components: dict[Kind, dict[ComponentID, Any]] = {}
    for kind in (*_PIPELINE_KINDS, Kind.EXTENSION):
        built: dict[ComponentID, Any] = {}
        for key, raw in (document.get(kind.section) or {}).items():
            path = join(kind.section, key)
            cid = ComponentID.parse(key, path)
            factory = registry.get(kind, cid.type)
            if factory is None:
                available = registry.types(kind)
                listing = ", ".join(available) if available else "none in this build"
                raise ConfigError(path, f"unknown {kind.value} type \"{cid.type}\""
                                        f"{did_you_mean(cid.type, available)}; available "
                                        f"{kind.value} types: {listing}")
            try:
                built[cid] = build_component_config(factory, raw, path)
            except ConfigError as exc:
                raise _from_seed(exc, origins) from None
        components[kind] = built
    return components


def _from_seed(error: ConfigError, origins: dict[str, str]) -> ConfigError:
    """Re-home an error in a generated ``<type>/agent`` component onto the seed
    path it came from (longest matching generated path wins)."""
    for generated, seed_path in sorted(origins.items(), key=lambda kv: -len(kv[0])):
        if error.path == generated or error.path.startswith((generated + "::", generated + "[")):
            return ConfigError(seed_path + error.path[len(generated):], error.message)
    return error


def _pipeline_id(key: object, path: str) -> str:
    text = str(key)
    signal, sep, name = text.partition("/")
    if signal in _OTHER_SIGNALS:
        raise ConfigError(path, f"telegen runs only profiles pipelines (and traces pipelines "
                                f"that forward spans), not {signal}; rename it to "
                                f"\"profiles\" or \"profiles/<name>\" (send {signal} "
                                f"to an OpenTelemetry Collector)")
    bad_name = sep and (not name or "/" in name or any(c.isspace() for c in name))
    if signal not in (SIGNAL, TRACES) or bad_name:
        raise ConfigError(path, f"invalid pipeline id \"{text}\": use \"profiles\" or "
                                f"\"profiles/<name>\" (or traces[/<name>] to forward traces)"
                                f"{did_you_mean(signal, [SIGNAL, TRACES])}")
    return text


def _pipelines(raw: dict[Any, Any],
               components: dict[Kind, dict[ComponentID, Any]]) -> dict[str, PipelineConfig]:
    pipelines: dict[str, PipelineConfig] = {}
    for key, body in raw.items():
        path = f"service::pipelines::{key}"
        pid = _pipeline_id(key, path)
        body = body or {}
        lists: dict[Kind, list[ComponentID]] = {}
        for kind in _PIPELINE_KINDS:
            ids: list[ComponentID] = []
            for i, ref in enumerate(body.get(kind.section) or []):
                cid = ComponentID.parse(ref, f"{path}::{kind.section}[{i}]")
                if cid not in components[kind]:
                    configured = ", ".join(str(c) for c in components[kind]) or "none"
                    raise ConfigError(path, f"references {kind.value} \"{cid}\" which is not "
                                            f"configured; add it under {kind.section} "
                                            f"(configured: {configured})")
                if cid in ids:
                    raise ConfigError(join(path, kind.section),
                                      f"lists {kind.value} \"{cid}\" twice; remove one")
                _check_signal(kind, cid, pid, path)
                ids.append(cid)
            lists[kind] = ids
        for kind in (Kind.RECEIVER, Kind.EXPORTER):
            if not lists[kind]:
                raise ConfigError(path, f"has no {kind.section}; list at least one "
                                        f"{kind.value} under {kind.section}")
        pipelines[pid] = PipelineConfig(id=pid, receivers=lists[Kind.RECEIVER],
                                        processors=lists[Kind.PROCESSOR],
                                        exporters=lists[Kind.EXPORTER])
    return pipelines


def _check_signal(kind: Kind, cid: ComponentID, pipeline: str, path: str) -> None:
    signal = pipeline.partition("/")[0]
    factory = registry.get(kind, cid.type)
    if factory is None or signal in factory.signals:
        return
    able = [t for t in registry.types(kind)
            if signal in getattr(registry.get(kind, t), "signals", ())]
    raise ConfigError(path, f"{kind.value} \"{cid}\" does not handle {signal}; {kind.value}s "
                            f"for {signal} pipelines: {', '.join(able) or 'none'}")


def _service_extensions(raw: list[Any],
                        components: dict[Kind, dict[ComponentID, Any]]) -> list[ComponentID]:
    ids: list[ComponentID] = []
    for i, ref in enumerate(raw):
        cid = ComponentID.parse(ref, f"service::extensions[{i}]")
        if cid not in components[Kind.EXTENSION]:
            raise ConfigError("service::extensions", f"references extension \"{cid}\" which is "
                                                     f"not configured; add it under extensions")
        if cid in ids:
            raise ConfigError("service::extensions", f"lists extension \"{cid}\" twice")
        ids.append(cid)
    return ids


def _telemetry(raw: dict[str, Any]) -> TelemetryConfig:
    telemetry = TelemetryConfig()
    metrics = raw.get("metrics") or {}
    telemetry.metrics_enabled = metrics.get("level", "none") != "none"
    if "address" in metrics:
        address = metrics["address"]
        port = int(address.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ConfigError("service::telemetry::metrics::address",
                              f"port must be between 1 and 65535 (got {port})")
        telemetry.metrics_address = address
    telemetry.log_level = (raw.get("logs") or {}).get("level", telemetry.log_level)
    return telemetry


def _unused(components: dict[Kind, dict[ComponentID, Any]], pipelines: dict[str, PipelineConfig],
            extensions: list[ComponentID]) -> list[str]:
    used = {(kind, cid) for p in pipelines.values()
            for kind, ids in ((Kind.RECEIVER, p.receivers), (Kind.PROCESSOR, p.processors),
                              (Kind.EXPORTER, p.exporters)) for cid in ids}
    used |= {(Kind.EXTENSION, cid) for cid in extensions}
    where = {Kind.EXTENSION: "service::extensions"}
    return [f"{kind.section}::{cid}: configured but not used in "
            f"{where.get(kind, 'any pipeline')}; it will not run"
            for kind, built in components.items() for cid in built if (kind, cid) not in used]
