"""JSON Schema validation of configuration maps, with one-line, path-naming errors.

Schemas live under ``telegen/schema/`` (Draft 2020-12). Besides the standard
keywords they may use ``"format": "duration"`` (``10s``, ``500ms``, ``1h30m``,
or a non-negative number of seconds) and the annotation ``"x-expected"``: a
noun phrase used in type errors instead of the derived one, e.g.
``"x-expected": "a list of glob strings"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from telegen.component import ConfigError
from telegen.config.expand import DURATION_HINT, is_duration, join, parse_duration

FORMAT_CHECKER = FormatChecker()
FORMAT_CHECKER.checks("duration")(is_duration)

_TYPE_NAMES = {
    "string": "a string", "integer": "an integer", "number": "a number",
    "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "nothing",
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema ``telegen/schema/<name>`` (or at absolute path ``name``). A
    missing or broken file is a bug in telegen, but still a one-line ConfigError."""
    try:
        if os.path.isabs(name):  # plug-ins ship their schema next to their code
            with open(name, encoding="utf-8") as f:
                text = f.read()
        else:
            text = resources.files("telegen").joinpath("schema", *name.split("/")).read_text()
        schema = json.loads(text)
        Draft202012Validator.check_schema(schema)
    except (OSError, ValueError, SchemaError) as exc:
        raise ConfigError("", f"internal error: schema {name} cannot be used "
                              f"({' '.join(str(exc).split())[:200]}); please report this") from None
    return schema


def _retrieve(uri: str) -> Resource:
    """``$ref`` to another file names it relative to ``telegen/schema`` (e.g.
    ``helpers/exporterhelper.json#/$defs/sending_queue``): shared fragments."""
    return Resource.from_contents(load_schema(uri), default_specification=DRAFT202012)


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FORMAT_CHECKER,
                                registry=Registry(retrieve=_retrieve))  # type: ignore[call-arg]


def validate(instance: Any, schema_name: str, path: str = "") -> None:
    """Raise ConfigError for the most relevant schema violation in ``instance``."""
    error = best_match(_validator(schema_name).iter_errors(instance))
    if error is not None:
        raise translate_error(error, path)


# ------------------------------------------------------------------ translation


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a value for messages."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _path(base: str, parts: Iterable[Any]) -> str:
    path = base
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else join(path, part)
    return path


def expected(schema: Any) -> str:
    """A noun phrase for what ``schema`` accepts."""
    if not isinstance(schema, dict):
        return "a value"
    if "x-expected" in schema:
        return str(schema["x-expected"])
    if schema.get("format") == "duration":
        return "a duration like 10s, 500ms or 1h30m"
    if "enum" in schema:
        return "one of " + ", ".join(show(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if types == ["array"]:
        items = schema.get("items")
        if isinstance(items, dict) and ("type" in items or "x-expected" in items):
            inner = expected(items)
            bare = inner.split(" ", 1)[1] if inner.startswith(("a ", "an ")) else inner
            if " " not in bare:
                return f"a list of {bare}s"
            return f"a list where each item is {inner}"
        return "a list"
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types) or "a valid value"


def translate_error(error: ValidationError, base: str) -> ConfigError:
    path = _path(base, error.absolute_path)
    v, value, schema = error.validator, error.instance, error.schema
    arg = error.validator_value
    if v == "additionalProperties" and isinstance(value, dict) and isinstance(schema, dict):
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [k for k in value if k not in known and not any(re.search(p, str(k))
                                                                 for p in patterns)]
        key = str(extra[0]) if extra else "?"
        hint = did_you_mean(key, known)
        if not hint and known:
            hint = "; valid keys: " + ", ".join(known)
        return ConfigError(path, f'unknown key "{key}"{hint}')
    if v == "type":
        return ConfigError(path, f"expected {expected(schema)} (got {show(value)})")
    if v == "enum":
        hint = did_you_mean(str(value), [str(a) for a in arg])
        return ConfigError(path, f"must be one of {', '.join(show(a) for a in arg)} "
                                 f"(got {show(value)}){hint}")
    if v == "const":
        return ConfigError(path, f"must be {show(arg)} (got {show(value)})")
    if v in ("minimum", "maximum") and "minimum" in schema and "maximum" in schema:
        return ConfigError(path, f"must be between {schema['minimum']} and {schema['maximum']} "
                                 f"(got {show(value)})")
    ops = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if v in ops:
        return ConfigError(path, f"must be {ops[v]} {arg} (got {show(value)})")
    if v == "format" and arg == "duration":
        if isinstance(value, int | float) or str(value).strip().startswith("-"):
            return ConfigError(path, f"duration must not be negative (got {show(value)})")
        return ConfigError(path, f"invalid duration {show(value)}: {DURATION_HINT}")
    if v == "format":
        return ConfigError(path, f"{show(value)} is not a valid {arg}")
    if v == "required":
        missing = [k for k in arg if isinstance(value, dict) and k not in value]
        return ConfigError(path, f'missing required key "{missing[0] if missing else arg[0]}"')
    if v == "minItems":
        return ConfigError(path, f"must list at least {arg} item{'s' if arg != 1 else ''}")
    if v == "maxItems":
        return ConfigError(path, f"must list at most {arg} item{'s' if arg != 1 else ''}")
    if v == "uniqueItems":
        return ConfigError(path, "must not list the same item twice")
    if v == "minLength":
        return ConfigError(path, "must not be empty" if arg == 1 else
                           f"must be at least {arg} characters (got {show(value)})")
    if v == "maxLength":
        return ConfigError(path, f"must be at most {arg} characters")
    if v == "pattern":
        want = schema.get("x-expected") if isinstance(schema, dict) else None
        return ConfigError(path, f"invalid value {show(value)}: expected {want}" if want else
                           f"invalid value {show(value)} (must match {arg})")
    if v is None or schema is False:
        return ConfigError(path, "this key is not allowed here")
    return ConfigError(path, " ".join(error.message.split())[:200])


# ------------------------------------------------------------- component configs


def build_component_config(factory: Any, raw: dict[str, Any] | None, path: str) -> Any:
    """Validate ``raw`` against ``factory.schema``, lay it over the defaults of
    ``factory.config_type`` (``metadata={"duration": True}`` fields become float
    seconds; nested dataclass fields are overlaid recursively), then call
    ``validate()``, whose ValueError becomes a ConfigError at ``path``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of settings (got {show(raw)}); "
                                f"write {{}} or leave it empty for the defaults")
    validate(raw, factory.schema, path)
    config = overlay(factory.config_type(), raw, path)
    check = getattr(config, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(path, " ".join(str(exc).split()) or "invalid setting") from None
    return config


def overlay(default: Any, raw: dict[str, Any], path: str) -> Any:
    """A copy of dataclass instance ``default`` with the keys of ``raw`` laid over it."""
    fields = {f.name: f for f in dataclasses.fields(default) if f.init}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = join(path, key)
        field = fields.get(key)
        if field is None:
            raise ConfigError(path, f'unknown key "{key}"{did_you_mean(str(key), fields)}')
        current = getattr(default, key)
        if field.metadata.get("duration") and value is not None:
            value = parse_duration(value, key_path)
        elif dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = overlay(current, value, key_path)
        changes[key] = value
    return dataclasses.replace(default, **changes)
