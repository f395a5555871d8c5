"""The raw configuration map: YAML loading, ``${env:VAR}`` expansion, durations.

Everything here works on plain YAML trees (dicts, lists, scalars) and knows
nothing about components. Paths are written Collector style, ``a::b::c``, with
list items as ``c[0]``.

Expansion rules (applied to string values only, never to mapping keys):

* ``${env:VAR}`` and ``${VAR}`` are replaced by the variable's value;
  ``${env:VAR:-default}`` uses ``default`` when VAR is unset *or empty* (as in
  the shell). An unset variable without a default is an error.
* ``$$`` is a literal ``$``; a ``$`` not followed by ``{`` or ``$`` is kept.
* When a reference is the whole value, the substituted text is parsed as YAML,
  so ``pids: [${env:PID}]`` yields an int; inside a longer string it is spliced
  in as text. An empty substitution is the empty string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from telegen.component import ConfigError

_REF_RE = re.compile(r"\$\$|\$\{([^}]*)\}")
_RAW_REF_RE = re.compile(r"\$\{[^}\n]*\}")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)"
                          r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))*$")
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
DURATION_HINT = ("use a number with a unit: 10s, 500ms, 250us, 2m, 1h30m "
                 "(or a plain number of seconds)")


def join(path: str, key: object) -> str:
    """``join("receivers", "ebpf") == "receivers::ebpf"``."""
    return f"{path}::{key}" if path else str(key)


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            mark = key_node.start_mark
            raise ConfigError("", f"YAML error at line {mark.line + 1}, column {mark.column + 1}: "
                                  f"a mapping key must be a plain value") from None
        if key in result:
            mark = key_node.start_mark
            raise ConfigError("", f"YAML error at line {mark.line + 1}, column {mark.column + 1}: "
                                  f"duplicate key \"{key}\"; keep only one")
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; syntax errors become a one-line ConfigError.

    ``${...}`` references are swapped for plain placeholders while parsing (and
    restored after), because ``{`` may not appear in a plain scalar inside a
    flow collection: ``pids: [${env:PID}]`` must still load."""
    nonce = 0
    while f"__telegen{nonce}_" in text:
        nonce += 1
    prefix = f"__telegen{nonce}_"
    refs: list[str] = []

    def protect(m: re.Match[str]) -> str:
        refs.append(m.group(0))
        return f"{prefix}{len(refs) - 1}__"

    protected = _RAW_REF_RE.sub(protect, text)
    tree = _parse(protected)
    if not refs:
        return tree
    placeholder = re.compile(re.escape(prefix) + r"(\d+)__")
    return _restore(tree, lambda s: placeholder.sub(lambda m: refs[int(m.group(1))], s), prefix)


def _restore(tree: Any, fix: Any, prefix: str) -> Any:
    if isinstance(tree, dict):
        return {_restore(k, fix, prefix): _restore(v, fix, prefix) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_restore(v, fix, prefix) for v in tree]
    if isinstance(tree, str) and prefix in tree:
        return fix(tree)
    return tree


def _parse(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError("", f"YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", "YAML syntax error: " + " ".join(str(exc).split())) from None


# ---------------------------------------------------------------------- expansion


def expand(tree: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Return ``tree`` with every ``${...}`` in string values substituted."""
    if isinstance(tree, dict):
        return {k: expand(v, env, join(path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, env, f"{path}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, str) and "$" in tree:
        return _expand_string(tree, env, path)
    return tree


def _expand_string(text: str, env: Mapping[str, str], path: str) -> Any:
    whole = _REF_RE.fullmatch(text)
    if whole and whole.group(0) != "$$":
        value = _resolve(whole.group(1), env, path)
        if value == "":
            return ""
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if parsed is None and value.strip() not in ("null", "Null", "NULL", "~"):
            return value  # e.g. "#tag": text, not a YAML comment
        return parsed
    return _REF_RE.sub(lambda m: "$" if m.group(0) == "$$" else _resolve(m.group(1), env, path),
                       text)


def _resolve(ref: str, env: Mapping[str, str], path: str) -> str:
    body = ref
    if ":" in body.split(":-", 1)[0]:
        scheme, _, body = body.partition(":")
        if scheme != "env":
            raise ConfigError(path, f"unsupported reference \"${{{ref}}}\": only environment "
                                    f"variables are supported, as ${{env:VAR}} or ${{VAR}}")
    name, has_default, default = body.partition(":-")
    if not _VAR_RE.match(name):
        raise ConfigError(path, f"invalid reference \"${{{ref}}}\": write ${{env:VAR}} or "
                                f"${{env:VAR:-default}} with VAR made of letters, digits and "
                                f"'_' (use $$ for a literal $)")
    value = env.get(name)
    if value:
        return value
    if has_default:
        return default
    if value is None:
        raise ConfigError(path, f"environment variable {name} is not set; set it or give a "
                                f"default with ${{env:{name}:-default}}")
    return value


# ---------------------------------------------------------------------- durations


def is_duration(value: object) -> bool:
    """True for ``10s``, ``1h30m``, ``1.5s``, ``250us`` and non-negative numbers."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value) and value >= 0
    return isinstance(value, str) and bool(_DURATION_RE.match(value.strip()))


def parse_duration(value: str | int | float, path: str = "") -> float:
    """Seconds in ``value``: a duration string (``10s``, ``500ms``, ``1h30m``)
    or a plain non-negative number of seconds."""
    if not is_duration(value):
        if isinstance(value, int | float) and not isinstance(value, bool) or (
                isinstance(value, str) and value.strip().startswith("-")):
            raise ConfigError(path, f"duration must not be negative (got {value})")
        raise ConfigError(path, f"invalid duration {value!r}: {DURATION_HINT}")
    if isinstance(value, int | float):
        return float(value)
    return sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(value.strip()))
