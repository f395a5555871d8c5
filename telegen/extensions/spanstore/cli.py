"""``telegen span SPAN_ID``: the span's hot functions (the seed's Flat/Cum
table over the samples linked to it), from the running agent's loopback view
(``--agent``, default 127.0.0.1:4041: GET /spans/<id>/profile) or from the
pprof files an agent wrote (``--dir``, e.g. a ``pprof_file`` directory:
samples whose ``span_id`` label matches)."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # imported when the command runs: keep `telegen --help` fast
    from telegen.pdata import Profile

DEFAULT_AGENT = "127.0.0.1:4041"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("span", help="hot functions of one trace span")
    p.add_argument("span_id", help="16 hex digits")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--agent", default=DEFAULT_AGENT,
                     help=f"the agent's spanstore endpoint (default {DEFAULT_AGENT})")
    src.add_argument("--dir", help="read pprof files (*.pb.gz, *.pprof) in DIR instead")
    p.add_argument("--type", help="profile type, e.g. cpu or off_cpu (default cpu)")
    p.add_argument("-n", type=int, default=10, help="rows (default 10)")
    return p


MAX_PROFILE_BYTES = 64 << 20    # a span's profile as the agent sends it (gzipped pprof)


def _from_agent(agent: str, span_id: str, type_name: str | None) -> Profile | None:
    from telegen.formats.pprof import decode
    from telegen.untrusted import read_stream

    query = f"?type={urllib.parse.quote(type_name)}" if type_name else ""
    url = f"http://{agent}/spans/{span_id}/profile{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            length = resp.headers.get("Content-Length")
            return decode(read_stream(resp, MAX_PROFILE_BYTES,
                                      int(length) if length is not None else None))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise OSError(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"cannot reach the agent at {agent}: {exc.reason}") from None


def _from_dir(directory: str, span_id: str, type_name: str | None) -> Profile | None:
    from telegen.extensions.spanstore.server import choose
    from telegen.formats.pprof import decode

    merged: dict[str, Profile] = {}
    files = sorted(f for pattern in ("*.pb.gz", "*.pprof", "*.pb")
                   for f in Path(directory).rglob(pattern))
    if not files and not Path(directory).is_dir():
        raise OSError(f"{directory}: not a directory")
    for path in files:
        try:
            profile = decode(path.read_bytes())
        except (OSError, ValueError):
            continue
        mine = [s for s in profile if s.link is not None and s.link.span_id == span_id]
        if not mine:
            continue
        profile.replace_samples(mine)
        held = merged.get(profile.name)
        if held is None or held.merge_key() != profile.merge_key():
            merged.setdefault(profile.name, profile)
        else:
            held.merge(profile)
    return choose(list(merged.values()), type_name)


def cmd_span(args: argparse.Namespace) -> int:
    from telegen.formats.top import render_top

    span_id = args.span_id.lower()
    if len(span_id) != 16 or any(c not in "0123456789abcdef" for c in span_id):
        print(f"telegen: span id must be 16 hex digits (got {args.span_id!r})", file=sys.stderr)
        return 2
    try:
        profile = (_from_dir(args.dir, span_id, args.type) if args.dir
                   else _from_agent(args.agent, span_id, args.type))
    except (OSError, ValueError) as exc:
        print(f"telegen: {exc}", file=sys.stderr)
        return 1
    if profile is None:
        where = args.dir or args.agent
        print(f"telegen: no samples linked to span {span_id} in {where}", file=sys.stderr)
        return 1
    links = {s.link.trace_id for s in profile if s.link is not None}
    trace = f" (trace {', '.join(sorted(links))})" if links else ""
    print(f"Span {span_id}{trace}, {profile.name}")
    try:
        print(render_top(profile, sample_type=args.type, n=args.n), end="")
    except KeyError:
        print(render_top(profile, n=args.n), end="")
    return 0
