"""Compare two profiles: the seed's Flat/Cum table with deltas, and a differential flame graph.

Deltas are *normalised by total*: BASE is scaled to NEW's total before
subtracting, so a function that kept its share shows 0 even when NEW ran
longer. For a function with flat ``b`` of total ``B`` in BASE and ``n`` of
``N`` in NEW::

    Δflat  = n - b * N / B          (in NEW's unit)
    Δflat% = 100 * (n / N - b / B)  (percentage points of the total)

The differential flame graph has NEW's widths; a frame is red when its cum
grew (Δ > 0), blue when it shrank, by how much relative to its width (the
colouring of Brendan Gregg's differential flame graphs, as d3-flame-graph
implements it). Frames that exist only in BASE have no width in NEW; they are
in the table with a negative delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telegen.formats.flamegraph import (
    DEFAULT_MIN_FRACTION,
    Table,
    render_tree_page,
)
from telegen.formats.folded import Node, build_tree, prune
from telegen.formats.top import format_value, top_rows, total
from telegen.pdata import Profile
from telegen.untrusted.text import printable


@dataclass(frozen=True, slots=True)
class DiffRow:
    name: str
    flat: int            # NEW
    cum: int             # NEW
    flat_pct: float      # NEW, of NEW's total
    cum_pct: float
    flat_delta: float    # normalised, NEW's unit
    cum_delta: float
    flat_delta_pct: float   # percentage points
    cum_delta_pct: float


def _scale(base: Profile, new: Profile, sample_type: str | None) -> float:
    b = total(base, sample_type)
    return total(new, sample_type) / b if b else 0.0


def diff_rows(base: Profile, new: Profile, sample_type: str | None = None, n: int = 20, *,
              node_fraction: float = 0.005) -> list[DiffRow]:
    """Functions whose share changed most first (|Δflat%|, then |Δcum%|, then name).

    Functions whose cum is below ``node_fraction`` of the total in both
    profiles are left out (as ``top``); ``n <= 0`` keeps all.
    """
    old = {r.name: r for r in top_rows(base, sample_type, 0, node_fraction=0)}
    cur = {r.name: r for r in top_rows(new, sample_type, 0, node_fraction=0)}
    scale = _scale(base, new, sample_type)
    rows = []
    for name in old.keys() | cur.keys():
        o, c = old.get(name), cur.get(name)
        if max(o.cum_pct if o else 0.0, c.cum_pct if c else 0.0) < node_fraction * 100:
            continue
        flat, cum = (c.flat, c.cum) if c else (0, 0)
        flat_pct, cum_pct = (c.flat_pct, c.cum_pct) if c else (0.0, 0.0)
        bflat, bcum = (o.flat, o.cum) if o else (0, 0)
        bflat_pct, bcum_pct = (o.flat_pct, o.cum_pct) if o else (0.0, 0.0)
        rows.append(DiffRow(name, flat, cum, flat_pct, cum_pct, flat - bflat * scale,
                            cum - bcum * scale, flat_pct - bflat_pct, cum_pct - bcum_pct))
    rows.sort(key=lambda r: (-abs(r.flat_delta_pct), -abs(r.cum_delta_pct), r.name))
    return rows[:n] if n > 0 else rows


def _signed(value: float, unit: str) -> str:
    text = format_value(round(value), unit)
    return text if text.startswith("-") or text == "0" else "+" + text


def diff_table(base: Profile, new: Profile, sample_type: str | None = None,
               n: int = 20) -> Table:
    unit = new.sample_types[new.value_index(sample_type)].unit
    rows = [(format_value(r.flat, unit), f"{r.flat_pct:.1f}%", _signed(r.flat_delta, unit),
             f"{r.flat_delta_pct:+.1f}%", format_value(r.cum, unit), f"{r.cum_pct:.1f}%",
             _signed(r.cum_delta, unit), f"{r.cum_delta_pct:+.1f}%", r.name)
            for r in diff_rows(base, new, sample_type, n)]
    return Table(("Flat", "Flat%", "ΔFlat", "ΔFlat%", "Cum", "Cum%", "ΔCum", "ΔCum%", "Name"),
                 rows, diff_header(base, new, sample_type))


def diff_header(base: Profile, new: Profile, sample_type: str | None = None) -> str:
    unit = new.sample_types[new.value_index(sample_type)].unit
    return (f"Total: base {format_value(total(base, sample_type), unit)}, new "
            f"{format_value(total(new, sample_type), unit)} "
            f"(deltas normalised by total; Δ% in points)")


def render_diff(base: Profile, new: Profile, sample_type: str | None = None,
                n: int = 20) -> str:
    """The seed-style text table with delta columns."""
    table = diff_table(base, new, sample_type, n)
    widths = [max([len(c)] + [len(str(r[i])) for r in table.rows])
              for i, c in enumerate(table.columns)]
    out = [printable(table.caption), ""]
    for row in [table.columns, *table.rows]:
        cells = [str(c).rjust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.append("  ".join(cells) + "  " + printable(str(row[-1])))
    return "\n".join(out) + "\n"


def diff_tree(base: Profile, new: Profile, sample_type: str | None = None, *,
              group_by: Sequence[str] = ()) -> Node:
    """NEW's call tree; every node's ``delta`` = its cum in NEW minus BASE's, normalised."""
    scale = _scale(base, new, sample_type)
    old = build_tree(base, sample_type, group_by=group_by)
    cur = build_tree(new, sample_type, group_by=group_by)
    todo: list[tuple[Node, Node | None]] = [(cur, old)]
    while todo:
        node, before = todo.pop()
        node.delta = node.total - (before.total if before else 0) * scale
        for name, child in node.children.items():
            todo.append((child, before.children.get(name) if before else None))
    return cur


def render_diff_html(base: Profile, new: Profile, sample_type: str | None = None, *,
                     title: str = "", min_fraction: float = DEFAULT_MIN_FRACTION,
                     group_by: Sequence[str] = (), inverted: bool = False, n: int = 30,
                     extra_html: str = "") -> str:
    """Differential flame graph + delta table, self-contained."""
    root = diff_tree(base, new, sample_type, group_by=group_by)
    report = prune(root, min_fraction)
    vt = new.sample_types[new.value_index(sample_type)]
    table = diff_table(base, new, sample_type, n)
    return render_tree_page(root, unit=vt.unit, title=title or f"diff of {new.name} ({vt})",
                            summary=table.caption, report=report, tables=[table],
                            inverted=inverted, differential=True, extra_html=extra_html)
