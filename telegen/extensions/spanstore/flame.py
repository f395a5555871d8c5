"""A minimal SVG flame graph of one profile (root at the bottom, one box per
function per call path, width proportional to the value). The full renderer
(issue 12, ``telegen.formats.flamegraph``) replaces it when present."""

from __future__ import annotations

import zlib
from html import escape

from telegen.formats.top import frame_function_names
from telegen.pdata import Profile

WIDTH, ROW = 1200, 18


class _Node:
    __slots__ = ("value", "children")

    def __init__(self) -> None:
        self.value = 0
        self.children: dict[str, _Node] = {}


def _tree(profile: Profile, idx: int) -> _Node:
    root = _Node()
    for s in profile:
        v = abs(s.values[idx])
        root.value += v
        node = root
        for frame in reversed(s.stack):                       # root first
            for name in reversed(frame_function_names(frame)):   # outer to inlined
                node = node.children.setdefault(name, _Node())
                node.value += v
    return root


def render_svg(profile: Profile, sample_type: str | None = None, title: str = "") -> str:
    idx = profile.value_index(sample_type)
    root = _tree(profile, idx)
    boxes: list[tuple[int, float, float, str, int]] = []   # depth, x, w, name, value

    def walk(node: _Node, depth: int, x: float, scale: float) -> int:
        deepest = depth
        for name, child in sorted(node.children.items()):
            w = child.value * scale
            if w >= 0.5:
                boxes.append((depth, x, w, name, child.value))
                deepest = max(deepest, walk(child, depth + 1, x, scale))
            x += w
        return deepest

    scale = WIDTH / root.value if root.value else 0.0
    depth = walk(root, 0, 0.0, scale) + 1 if root.value else 1
    height = (depth + 2) * ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<text x="4" y="13">{escape(title)}</text>']
    for d, x, w, name, value in boxes:
        y = height - (d + 1) * ROW
        hue = 10 + zlib.crc32(name.encode()) % 40
        label = escape(name) if w > 40 else ""
        pct = 100.0 * value / root.value
        out.append(f'<g><title>{escape(name)} ({value}, {pct:.1f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
                   f'fill="hsl({hue},85%,60%)"/><text x="{x + 3:.1f}" y="{y + 12}">'
                   f'{label[: max(0, int(w / 7))]}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
