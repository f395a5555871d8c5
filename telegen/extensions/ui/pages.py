"""The web view's pages, as functions of a :class:`Catalog` and the query string.

Routes (all GET; every page is self-contained, nothing external is loaded):

* ``/`` — pick source, profile type, process and time range; list of windows.
* ``/flamegraph?src&type&pid&from&to`` — flame graph + Flat/Cum table, with
  links to the per-span view of the spans found in the selection.
* ``/diff?...&base_from&base_to[&base_src&base_pid]`` — differential graph
  and delta table: BASE is the same selection over the base range.
* ``/top?...`` — the seed's text table; ``/profile.pb.gz?...`` — pprof.

Times are unix seconds or ISO-8601 (UTC when no offset is given).
"""

from __future__ import annotations

import html
import time
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlencode

from telegen.extensions.ui.store import MEMORY, Catalog, Selection, Window
from telegen.formats.diff import render_diff_html
from telegen.formats.flamegraph import render_html
from telegen.formats.pprof import encode
from telegen.formats.top import render_top
from telegen.pdata import Profile
from telegen.semconv import PROCESS_PID, names_of

PID_NAMES = names_of(PROCESS_PID)

Query = dict[str, str]
Response = tuple[int, str, bytes]
HTML = "text/html; charset=utf-8"


class BadRequest(ValueError):
    pass


def parse_time(text: str) -> int:
    """Unix seconds or ISO-8601 (naive = UTC) → ns; "" → 0 (open)."""
    if not text:
        return 0
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"bad time {text!r}: use unix seconds or ISO-8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def selection(q: Query, prefix: str = "") -> Selection:
    def get(key: str) -> str:
        return q.get(prefix + key, q.get(key, "")) if prefix else q.get(key, "")
    # the process by its process.pid (older names still read)
    return Selection(source=get("src") or MEMORY, type=get("type"),
                     process=next((v for k in PID_NAMES if (v := get(k))), ""),
                     start_ns=parse_time(get("from")), end_ns=parse_time(get("to")))


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S") if ns else ""


def _nav(q: Query) -> str:
    keep = {k: v for k, v in q.items() if k in ("src", "type", *PID_NAMES, "from", "to")}
    qs = html.escape(urlencode(keep))
    return (f'<nav><a href="/">windows</a><a href="/flamegraph?{qs}">flame graph</a>'
            f'<a href="/top?{qs}">top (text)</a><a href="/profile.pb.gz?{qs}">pprof</a></nav>')


def _describe(sel: Selection, picked: list[Window]) -> str:
    who = f"pid {sel.process}" if sel.process else "all processes"
    span = ""
    if picked:
        span = f" {_iso(min(w.start_ns for w in picked))} – {_iso(max(w.end_ns for w in picked))}"
    return f"{len(picked)} windows, {who}{span} UTC ({sel.source})"


def _span_links(profile: Profile, span_url: str, limit: int = 20) -> str:
    counts: Counter[str] = Counter()
    idx = profile.value_index()
    for s in profile:
        if s.link is not None:
            counts[s.link.span_id] += abs(s.values[idx])
    if not counts:
        return ""
    items = "".join(
        f'<li><a href="{html.escape(span_url.format(span_id=sid))}">{html.escape(sid)}</a> '
        f"({v})</li>" for sid, v in counts.most_common(limit))
    return f'<details><summary>spans in this selection ({len(counts)})</summary><ul>' \
           f"{items}</ul></details>"


def _pick(catalog: Catalog, sel: Selection) -> tuple[Profile, list[Window]]:
    profile, picked = catalog.select(sel)
    if profile is None:
        raise LookupError("no windows match this selection")
    return profile, picked


def flamegraph(catalog: Catalog, q: Query, *, min_fraction: float, span_url: str) -> Response:
    sel = selection(q)
    profile, picked = _pick(catalog, sel)
    extra = _nav(q) + f'<p class="note">{html.escape(_describe(sel, picked))}</p>' \
        + _span_links(profile, span_url)
    page = render_html(profile, sample_type=q.get("sample") or None, min_fraction=min_fraction,
                       inverted=q.get("icicle") == "1", extra_html=extra)
    return 200, HTML, page.encode()


def diff(catalog: Catalog, q: Query, *, min_fraction: float) -> Response:
    new_sel = selection(q)
    base_sel = selection(q, "base_")
    if base_sel.type != new_sel.type:
        base_sel = Selection(base_sel.source, new_sel.type, base_sel.process,
                             base_sel.start_ns, base_sel.end_ns)
    new, new_w = _pick(catalog, new_sel)
    base, base_w = _pick(catalog, base_sel)
    extra = _nav(q) + (f'<p class="note">base: {html.escape(_describe(base_sel, base_w))}'
                       f'<br>new: {html.escape(_describe(new_sel, new_w))}</p>')
    page = render_diff_html(base, new, q.get("sample") or None, min_fraction=min_fraction,
                            inverted=q.get("icicle") == "1", extra_html=extra)
    return 200, HTML, page.encode()


def top(catalog: Catalog, q: Query) -> Response:
    profile, _ = _pick(catalog, selection(q))
    text = render_top(profile, q.get("sample") or None, n=int(q.get("n", "30")))
    return 200, "text/plain; charset=utf-8", text.encode()


def profile_pprof(catalog: Catalog, q: Query) -> Response:
    profile, _ = _pick(catalog, selection(q))
    return 200, "application/octet-stream", encode(profile)


def index(catalog: Catalog, q: Query) -> Response:
    src = q.get("src") or MEMORY
    windows = catalog.windows(src)
    types = sorted({w.name for w in windows})
    procs: dict[str, str] = {}
    for w in windows:
        for pid, name in w.processes.items():
            procs.setdefault(pid, name)

    def options(values: list[tuple[str, str]], current: str) -> str:
        return "".join(f'<option value="{html.escape(v)}"{" selected" if v == current else ""}>'
                       f"{html.escape(label)}</option>" for v, label in values)
    srcs = options([(s, s) for s in catalog.sources()], src)
    type_opts = options([("", "(first found)")] + [(t, t) for t in types], q.get("type", ""))
    proc_opts = options([("", "(all)")] + [(p, f"{p} {n}".strip()) for p, n in
                                           sorted(procs.items(), key=lambda kv: kv[1])],
                        next((q[k] for k in PID_NAMES if q.get(k)), ""))
    rows = []
    for w in windows[:300]:
        link = html.escape(urlencode({"src": w.source, "type": w.name,
                                      "from": f"{w.start_ns / 1e9:.3f}",
                                      "to": f"{w.end_ns / 1e9:.3f}"}))
        names = ", ".join(f"{p} {n}".strip() for p, n in list(w.processes.items())[:4])
        more = f" (+{len(w.processes) - 4})" if len(w.processes) > 4 else ""
        rows.append(f'<tr><td><a href="/flamegraph?{link}">{_iso(w.start_ns)}</a></td>'
                    f"<td>{(w.end_ns - w.start_ns) / 1e9:.1f}s</td><td>{html.escape(w.name)}"
                    f"</td><td>{w.samples}</td><td>{html.escape(names + more)}</td></tr>")
    now = _iso(time.time_ns())
    body = _INDEX.format(srcs=srcs, types=type_opts, procs=proc_opts, now=now,
                         rows="".join(rows) or '<tr><td colspan="5">no windows yet</td></tr>',
                         count=len(windows), src=html.escape(src))
    return 200, HTML, body.encode()


_INDEX = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>telegen</title><style>
body{{font-family:system-ui,sans-serif;margin:14px}} td,th{{padding:2px 10px;text-align:left}}
fieldset{{margin:8px 0}} label{{margin-right:12px}}
</style></head><body><h1>telegen profiles</h1>
<form action="/flamegraph" method="get">
<fieldset><legend>selection</legend>
<label>source <select name="src">{srcs}</select></label>
<label>type <select name="type">{types}</select></label>
<label>process <select name="process.pid">{procs}</select></label>
<label>from <input name="from" placeholder="ISO UTC or unix s"></label>
<label>to <input name="to" placeholder="{now}"></label>
<label><input type="checkbox" name="icicle" value="1"> icicle</label>
<button>flame graph</button> <button formaction="/top">top table</button>
</fieldset>
<fieldset><legend>diff: compare with a base range (same source/type/process)</legend>
<label>base from <input name="base_from"></label>
<label>base to <input name="base_to"></label>
<button formaction="/diff">diff</button></fieldset></form>
<h2>{count} windows in {src}</h2>
<table><thead><tr><th>start (UTC)</th><th>length</th><th>type</th><th>samples</th>
<th>processes</th></tr></thead><tbody>{rows}</tbody></table></body></html>
"""
