"""What ``telegen flamegraph`` and ``telegen diff`` do, minus argument parsing and exiting.

``load_merged`` reads pprof files and merges them into one profile (windows of
one type; resource attributes that differ become labels). ``write_flamegraph``
picks the format from the output name: ``.html``/``.htm``, ``.svg`` or
``.folded``/``.txt`` (folded stacks, one ``a;b;c 123`` line per stack).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from telegen.formats.diff import diff_tree, render_diff_html
from telegen.formats.flamegraph import DEFAULT_MIN_FRACTION, flamegraph_page
from telegen.formats.flamegraph_svg import render_svg
from telegen.formats.folded import PruneReport, build_tree, folded_lines, prune
from telegen.formats.pprof import decode
from telegen.helpers.windows import merge_by_type
from telegen.pdata import Profile

FORMATS = {".html": "html", ".htm": "html", ".svg": "svg", ".folded": "folded",
           ".txt": "folded"}


class RenderError(ValueError):
    """Input that cannot be rendered (unreadable file, mixed types, unknown format)."""


def load_merged(paths: Sequence[str | Path]) -> Profile:
    profiles = []
    for path in paths:
        try:
            profiles.append(decode(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise RenderError(f"cannot read {path}: {exc}") from exc
    merged = merge_by_type(profiles)
    if len(merged) != 1:
        kinds = ", ".join(sorted({p.name for p in merged}))
        raise RenderError(f"the files hold {len(merged)} kinds of profile ({kinds}); "
                          f"give files of one kind")
    return merged[0]


def output_format(out: str | Path) -> str:
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise RenderError(f"{out}: unknown output format; use .html, .svg or .folded")
    return fmt


def write_flamegraph(profile: Profile, out: str | Path, *, sample_type: str | None = None,
                     min_fraction: float = DEFAULT_MIN_FRACTION, inverted: bool = False,
                     group_by: Sequence[str] = (), title: str = "") -> PruneReport | None:
    """Write ``out``; returns the pruning report (None for folded output, never pruned)."""
    fmt = output_format(out)
    vt = profile.sample_types[profile.value_index(sample_type)]
    title = title or f"{profile.name} profile ({vt})"
    report: PruneReport | None = None
    if fmt == "folded":
        lines = folded_lines(profile, sample_type, group_by=group_by)
        text = "\n".join(lines) + ("\n" if lines else "")
    elif fmt == "svg":
        root = build_tree(profile, sample_type, group_by=group_by)
        report = prune(root, min_fraction)
        text = render_svg(root, unit=vt.unit, title=title, report=report, inverted=inverted)
    else:
        text, report = flamegraph_page(profile, sample_type=sample_type, title=title,
                                       min_fraction=min_fraction, group_by=group_by,
                                       inverted=inverted)
    Path(out).write_text(text, encoding="utf-8")
    return report


def write_diff(base: Profile, new: Profile, out: str | Path, *,
               sample_type: str | None = None, min_fraction: float = DEFAULT_MIN_FRACTION,
               inverted: bool = False, group_by: Sequence[str] = ()) -> None:
    """The differential flame graph as ``.html`` or ``.svg``."""
    fmt = output_format(out)
    vt = new.sample_types[new.value_index(sample_type)]
    title = f"diff of {new.name} profiles ({vt}): red grew, blue shrank"
    if fmt == "html":
        text = render_diff_html(base, new, sample_type, title=title, min_fraction=min_fraction,
                                group_by=group_by, inverted=inverted)
    elif fmt == "svg":
        root = diff_tree(base, new, sample_type, group_by=group_by)
        text = render_svg(root, unit=vt.unit, title=title, report=prune(root, min_fraction),
                          inverted=inverted)
    else:
        raise RenderError(f"{out}: a diff is written as .html or .svg")
    Path(out).write_text(text, encoding="utf-8")
