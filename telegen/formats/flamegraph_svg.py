"""A standalone SVG flame graph (``telegen flamegraph -o out.svg``), drawn in Python.

For embedding in documents and tickets: a static picture (flame, or icicle
with ``inverted``), one ``<title>`` tooltip per frame with cum, flat and
file:line, and the pruning note. Zoom and search are in the HTML page
(:mod:`telegen.formats.flamegraph`), which needs JavaScript; this needs none.
"""

from __future__ import annotations

import hashlib
import html

from telegen.formats.folded import Node, PruneReport
from telegen.formats.top import format_value

ROW = 17
FONT = 11
CHAR_W = 6.6     # approx. width of one character at FONT px


def _color(name: str, delta: float | None, total: int) -> str:
    if delta is not None:                 # differential: red grew, blue shrank
        v = min(abs(delta) / total, 1.0) if total else 0.0
        fade = round(235 * (1 - v))
        return f"rgb(255,{fade},{fade})" if delta > 0 else (
            f"rgb({fade},{fade},255)" if delta < 0 else "rgb(220,220,220)")
    h = int(hashlib.md5(name.encode()).hexdigest()[:4], 16) / 0xFFFF
    return f"rgb({205 + round(50 * h)},{round(230 * (1 - h))},{round(55 * h)})"


def render_svg(root: Node, *, unit: str, title: str, report: PruneReport | None = None,
               width: int = 1200, inverted: bool = False, min_px: float = 0.5) -> str:
    """The tree as SVG; frames narrower than ``min_px`` are not drawn."""
    total = abs(root.total) or 1
    scale = (width - 20) / total
    placed: list[tuple[Node, float, float, int]] = []
    todo = [(root, 10.0, 0)]
    while todo:
        node, x, depth = todo.pop()
        w = abs(node.total) * scale
        if w < min_px:
            continue
        placed.append((node, x, w, depth))
        cx = x
        for child in sorted(node.children.values(), key=lambda n: n.name):
            todo.append((child, cx, depth + 1))
            cx += abs(child.total) * scale
    graph_h = (max((d for _, _, _, d in placed), default=0) + 1) * ROW
    top = 50
    height = top + graph_h + 10

    def y_of(depth: int) -> float:
        return top + (depth * ROW if inverted else graph_h - (depth + 1) * ROW)

    body = [_frame(node, x, w, y_of(depth), unit, total) for node, x, w, depth in placed]
    note = report.describe() if report is not None else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Verdana,sans-serif" '
            f'font-size="{FONT}">\n<rect width="100%" height="100%" fill="#fff"/>\n'
            f'<text x="10" y="20" font-size="15">{html.escape(title)}</text>\n'
            f'<text x="10" y="38" fill="#666">{html.escape(note)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def _frame(node: Node, x: float, w: float, y: float, unit: str, total: int) -> str:
    tip = [node.name, f"cum {format_value(node.total, unit)} "
           f"({100 * node.total / total:.2f}%), flat {format_value(node.self_value, unit)} "
           f"({100 * node.self_value / total:.2f}%)"]
    if node.delta is not None:
        tip.append(f"delta {node.delta:+.0f} ({100 * node.delta / total:+.2f}% of total)")
    if node.location():
        tip.append(node.location())
    fits = int((w - 6) / CHAR_W)
    label = ""
    if fits >= 3:
        label = node.name if len(node.name) <= fits else node.name[:fits - 2] + ".."
    text = (f'<text x="{x + 3:.1f}" y="{y + 12:.0f}">{html.escape(label)}</text>'
            if label else "")
    return (f'<g><title>{html.escape(chr(10).join(tip))}</title>'
            f'<rect x="{x:.1f}" y="{y:.0f}" width="{w:.1f}" height="{ROW - 1}" '
            f'fill="{_color(node.name, node.delta, total)}" rx="1"/>{text}</g>')
