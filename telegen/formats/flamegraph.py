"""Self-contained flame-graph pages: ``render_html(profile)`` (and SVG in ``flamegraph_svg``).

Renderer choice: the page uses **d3-flame-graph** (Martin Spier, Apache-2.0,
v5.0.0, maintained) and the d3 modules it needs (ISC / BSD-3), bundled with
esbuild into ``flamegraph_static/d3-flamegraph.bundle.min.js`` by
``scripts/build-flamegraph-bundle.sh`` (npm only at build time; licences in
``flamegraph_static/THIRD_PARTY_LICENSES.txt``). It already does everything
asked for — flame or icicle, click-to-zoom, search highlighting, tooltips,
and differential red/blue colouring — so a hand-written renderer would only
re-implement it. What we add is ``telegen-flamegraph.js`` (~100 lines of
wiring: tooltips with flat/cum/file:line, unit formatting, the icicle toggle).

Everything is inlined into one HTML file: the bundle, the CSS, the tree as
JSON (keys ``n`` name, ``v`` cum, ``s`` flat, ``f`` file:line, ``d`` delta,
``c`` children) and the seed's Flat/Cum table. Nothing is fetched.

Large profiles: the tree is pruned on the server (subtrees under
``min_fraction`` of the total, default 0.01%, are removed and the page says
how many frames and how much value that hid), and the browser draws only
frames at least ``min_frame_px`` wide.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from telegen.formats.folded import Node, PruneReport, SampleFilter, build_tree, prune
from telegen.formats.top import format_value, header, top_rows
from telegen.pdata import Profile

STATIC = Path(__file__).with_name("flamegraph_static")
DEFAULT_MIN_FRACTION = 0.0001


@cache
def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def tree_json(root: Node) -> dict[str, object]:
    """The d3-flame-graph data for ``root`` (iterative: any stack depth)."""
    out = _node_json(root)
    todo = [(root, out)]
    while todo:
        node, obj = todo.pop()
        if node.children:
            kids = []
            for child in node.children.values():
                cobj = _node_json(child)
                kids.append(cobj)
                todo.append((child, cobj))
            obj["c"] = kids
    return out


def _node_json(node: Node) -> dict[str, object]:
    obj: dict[str, object] = {"n": node.name, "v": node.total}
    if node.self_value:
        obj["s"] = node.self_value
    loc = node.location()
    if loc:
        obj["f"] = loc
    if node.delta is not None:
        obj["d"] = round(node.delta, 3)
    return obj


@dataclass(frozen=True, slots=True)
class Table:
    """A table shown under the graph: column titles and rows of cell text."""

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""


def top_table(profile: Profile, sample_type: str | None = None, n: int = 20,
              sample_filter: SampleFilter | None = None) -> Table:
    """The seed's Flat/Cum table (``telegen.formats.top``) as a :class:`Table`."""
    if sample_filter is not None:
        sub = profile.copy()
        sub.replace_samples(s for s in profile if sample_filter(s))
        profile = sub
    unit = profile.sample_types[profile.value_index(sample_type)].unit
    rows = [(format_value(r.flat, unit), f"{r.flat_pct:.1f}%", f"{r.sum_pct:.1f}%",
             format_value(r.cum, unit), f"{r.cum_pct:.1f}%", r.name)
            for r in top_rows(profile, sample_type, n)]
    return Table(("Flat", "Flat%", "Sum%", "Cum", "Cum%", "Name"), rows,
                 header(profile, sample_type))


def render_html(profile: Profile, *, sample_type: str | None = None, title: str = "",
                min_fraction: float = DEFAULT_MIN_FRACTION, group_by: Sequence[str] = (),
                inverted: bool = False, sample_filter: SampleFilter | None = None,
                top_n: int = 20, extra_html: str = "") -> str:
    """One profile as a self-contained HTML page: flame graph + Flat/Cum table.

    ``sample_filter`` keeps only some samples (e.g. one process or one span);
    ``extra_html`` (trusted markup) goes above the graph, e.g. navigation links.
    """
    return flamegraph_page(profile, sample_type=sample_type, title=title,
                           min_fraction=min_fraction, group_by=group_by, inverted=inverted,
                           sample_filter=sample_filter, top_n=top_n, extra_html=extra_html)[0]


def flamegraph_page(profile: Profile, *, sample_type: str | None = None, title: str = "",
                    min_fraction: float = DEFAULT_MIN_FRACTION, group_by: Sequence[str] = (),
                    inverted: bool = False, sample_filter: SampleFilter | None = None,
                    top_n: int = 20, extra_html: str = "") -> tuple[str, PruneReport]:
    """:func:`render_html` and the report of what pruning hid."""
    idx = profile.value_index(sample_type)
    vt = profile.sample_types[idx]
    root = build_tree(profile, sample_type, group_by=group_by, sample_filter=sample_filter)
    report = prune(root, min_fraction)
    table = top_table(profile, sample_type, top_n, sample_filter)
    page = render_tree_page(
        root, unit=vt.unit, title=title or f"{profile.name} profile ({vt})",
        summary=table.caption, report=report, tables=[table], inverted=inverted,
        extra_html=extra_html)
    return page, report


def render_tree_page(root: Node, *, unit: str, title: str, summary: str = "",
                     report: PruneReport | None = None, tables: Sequence[Table] = (),
                     inverted: bool = False, differential: bool = False,
                     extra_html: str = "", min_frame_px: float = 1.0) -> str:
    """The page for an already built (and pruned) tree; used by ``diff`` and the UI."""
    meta = {"unit": unit, "total": abs(root.total), "inverted": inverted,
            "differential": differential, "minFrameSize": min_frame_px,
            "pruned": _report_json(report)}
    pruned = report.describe() if report is not None else "no frames pruned"
    legend = ('<p class="legend"><span class="grew">red: grew</span> '
              '<span class="shrank">blue: shrank</span> (normalised by total); widths are '
              'the new profile</p>') if differential else ""
    return _PAGE.format(
        title=html.escape(title), css=_asset("d3-flamegraph.bundle.min.css"),
        own_css=_CSS, summary=html.escape(summary), pruned=html.escape(pruned),
        legend=legend, extra=extra_html,
        tables="".join(_table_html(t) for t in tables),
        meta=_script_json(meta), data=_script_json(tree_json(root)),
        bundle=_asset("d3-flamegraph.bundle.min.js"),
        wiring=_asset("telegen-flamegraph.js"))


def _report_json(report: PruneReport | None) -> dict[str, object] | None:
    if report is None:
        return None
    return {"frames": report.frames, "value": report.value,
            "minFraction": report.min_fraction}


def _script_json(obj: object) -> str:
    """JSON safe inside ``<script>``: no ``</`` or ``<!--`` can end the element."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f'<table class="top">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,Verdana,sans-serif;margin:12px 16px;color:#222}
h1{font-size:18px;margin:4px 0}
.bar{display:flex;gap:8px;align-items:center;margin:6px 0;flex-wrap:wrap}
#details{min-height:1.3em;font-family:monospace;font-size:12px;color:#444}
#chart{width:100%}
.note{color:#666;font-size:12px}
table.top{border-collapse:collapse;font-family:monospace;font-size:12px;margin-top:14px}
table.top caption{text-align:left;font-weight:bold;padding:4px 0}
table.top td,table.top th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}
table.top td:last-child,table.top th:last-child{text-align:left}
.grew{color:#c00}.shrank{color:#00c}
nav a{margin-right:10px}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style><style>{own_css}</style></head>
<body>
{extra}
<h1>{title}</h1>
<div class="note" id="summary">{summary}</div>
<div class="note" id="pruned">{pruned}</div>
{legend}
<div class="bar">
<input id="search" type="search" placeholder="search function (substring)" size="36">
<button id="reset" type="button">Reset zoom</button>
<button id="toggle" type="button">Icicle</button>
</div>
<div id="details"></div>
<div id="chart"></div>
{tables}
<script type="application/json" id="fg-meta">{meta}</script>
<script type="application/json" id="fg-data">{data}</script>
<script>{bundle}</script>
<script>{wiring}</script>
</body></html>
"""
