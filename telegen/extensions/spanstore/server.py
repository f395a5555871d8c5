"""The loopback per-span view, for a tracing UI to link to:

* ``GET /spans`` — the newest spans with linked samples (JSON);
* ``GET /spans/<span_id>`` — HTML: the flame graph and the seed's Flat/Cum table
  (``telegen.formats.flamegraph``);
* ``GET /spans/<span_id>/top`` — the table as text (``?type=cpu&n=10``);
* ``GET /spans/<span_id>/profile`` — the span's samples as gzipped pprof
  (``?type=off_cpu`` for another profile type; default cpu, else the first).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from html import escape
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from telegen.extensions.spanstore.profiles import SpanProfiles
from telegen.extensions.spanstore.store import SpanIndex
from telegen.formats.pprof import encode
from telegen.formats.top import render_top
from telegen.helpers.httpserver import BackgroundHTTPServer, reply
from telegen.pdata import Profile
from telegen.untrusted import Refusals


class SpanStore(Protocol):
    """What the view reads of the ``spanstore`` extension."""

    index: SpanIndex
    profiles: SpanProfiles

    def count(self, name: str, n: int) -> None: ...

_PATH = re.compile(r"^/spans/([0-9a-fA-F]{16})(/top|/profile)?/?$")


def choose(profiles: list[Profile], type_name: str | None) -> Profile | None:
    """The profile of type ``type_name`` (``cpu``, ``off_cpu``...), default cpu."""
    for want in ([type_name] if type_name else ["cpu"]):
        for p in profiles:
            if p.name == want or any(want in (vt.type, str(vt)) for vt in p.sample_types):
                return p
    return None if type_name else (profiles[0] if profiles else None)


class SpanViewServer(BackgroundHTTPServer):
    """The view on its own loopback port, bounded like every agent server
    (:mod:`telegen.helpers.httpserver`: Host allow-list, timeouts, connection
    cap); refusals counted when the store passes ``refusals``."""

    def __init__(self, store: SpanStore, endpoint: str, name: str,
                 refusals: Refusals | None = None) -> None:
        super().__init__(endpoint, _handler(store), name, refusals=refusals,
                         source="spanstore_http")


def _page(store: SpanStore, span_id: str, profile: Profile, query: dict[str, str]) -> str:
    """The flame-graph page (``telegen.formats.flamegraph``: graph + Flat/Cum
    table) with the span's facts and a pprof download link above it."""
    from telegen.formats.flamegraph import render_html

    span = store.index.get(span_id)
    link = store.profiles.link(span_id)
    title = f"span {span_id}" + (f" {span.name}" if span is not None else "")
    facts = [f"trace {link.trace_id if link else '?'}"]
    if span is not None:
        facts.append(f"{(span.end_ns - span.start_ns) / 1e6:.1f} ms on pid {span.pid} "
                     f"tid {span.tid}")
    extra = (f"<p>{escape(', '.join(facts))} — <a href='/spans/{span_id}/profile"
             f"?type={escape(profile.name)}'>pprof</a></p>")
    return render_html(profile, title=f"{title} ({profile.name})",
                       top_n=int(query.get("n", "20")), extra_html=extra)


Reply = tuple[int, str, bytes, dict[str, str]]


def respond(store: SpanStore, path: str, query: dict[str, str]) -> Reply:
    """One GET of the span view: (status, content type, body, extra headers).
    Served by :class:`SpanViewServer` or mounted on the ``ui`` extension."""
    if path.rstrip("/") == "/spans":
        spans = [{"trace_id": link.trace_id, "span_id": link.span_id, "samples": counts}
                 for link, counts in store.profiles.recent()]
        return 200, "application/json", json.dumps(spans).encode(), {}
    m = _PATH.match(path)
    if m is None:
        return 404, "text/plain", b"use /spans/<16-hex-digit span id>\n", {}
    span_id, what = m.group(1).lower(), m.group(2) or ""
    profile = choose(store.profiles.profiles(span_id), query.get("type"))
    if profile is None:
        of_type = f" of type {query['type']}" if "type" in query else ""
        return 404, "text/plain", f"no samples linked to span {span_id}{of_type}\n".encode(), {}
    if what == "/profile":
        return (200, "application/octet-stream", encode(profile),
                {"Content-Disposition": f"attachment; filename={span_id}.pb.gz"})
    if what == "/top":
        text = render_top(profile, n=int(query.get("n", "10")))
        return 200, "text/plain; charset=utf-8", text.encode(), {}
    return 200, "text/html; charset=utf-8", _page(store, span_id, profile, query).encode(), {}


def safe_respond(store: SpanStore, path: str, query: dict[str, str]) -> Reply:
    """:func:`respond`, with a failure counted and answered 500 (one bad
    request must not hurt the server)."""
    try:
        return respond(store, path, query)
    except Exception as exc:
        store.count("view_errors", 1)
        return 500, "text/plain", f"internal error: {exc}\n".encode(), {}


def _handler(store: SpanStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            reply(self, *safe_respond(store, url.path, dict(urllib.parse.parse_qsl(url.query))))

    return Handler
