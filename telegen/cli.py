"""Command line: the only place that exits.

Exit codes: 0 success, 1 runtime failure (a component could not start, a file
could not be read), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from telegen import __version__
from telegen.component import ConfigError, Kind

if TYPE_CHECKING:
    from telegen.pdata import Profile, Sample

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _die(code: int, message: str) -> int:
    print(f"telegen: {message}", file=sys.stderr)
    return code


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from telegen import config

    return config.load_file(path) if path else config.load_default()


def cmd_run(args: argparse.Namespace) -> int:
    from telegen.helpers import heap

    heap.tune()            # before the threads: each would get its own malloc arena

    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _die(EXIT_CONFIG, f"invalid config {args.config or '<embedded default>'}: {exc}")
    level = args.log_level or cfg.telemetry.log_level
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
    for warning in cfg.warnings:
        logging.getLogger("telegen.config").warning("%s", warning)
    if not args.config:
        logging.getLogger("telegen").info("no -c given: running the embedded default config")
    # (#21) a first start's BPF compile begins now, in its child, and overlaps the
    # pipeline's imports, build and start (nothing is started on a start-up cache hit)
    from telegen.receivers.ebpf.bpf_loader import compile_early_for
    compile_early_for(cfg)
    from telegen.service import Service, StartError
    try:
        service = Service(cfg)
        service.run(args.duration)
    except StartError as exc:
        return _die(EXIT_FAILURE, str(exc))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _die(EXIT_CONFIG, f"invalid config {args.config}: {exc}")
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    names = ", ".join(cfg.pipelines) or "none"
    print(f"{args.config or '<embedded default>'}: OK ({len(cfg.pipelines)} pipelines: {names})")
    return EXIT_OK


def cmd_top(args: argparse.Namespace) -> int:
    from telegen.formats.pprof import decode
    from telegen.formats.top import render_top

    try:
        with open(args.file, "rb") as fh:
            profile = decode(fh.read())
    except (OSError, ValueError) as exc:
        return _die(EXIT_FAILURE, f"cannot read {args.file}: {exc}")
    profile, keys = _grouped(profile, args.group_by)
    try:
        for title, part in _groups(profile, keys):
            if title:
                print(f"== {title} ==")
            print(render_top(part, sample_type=args.type, n=args.n), end="")
    except KeyError as exc:
        return _die(EXIT_CONFIG, str(exc.args[0]))
    return EXIT_OK


def _grouped(profile: Profile, names: Sequence[str] | None) -> tuple[Profile, list[str]]:
    """``profile`` ready to be grouped by ``names`` (older names such as
    ``pid`` or ``comm`` are read as their semantic-convention names, also in
    older files' labels; a file of one process has its attributes on the
    resource: they are copied onto its samples), and the names to group by."""
    from telegen.pdata import Sample
    from telegen.semconv import canonical, canonical_labels, with_resource_labels

    keys = list(dict.fromkeys(canonical(n) for n in names or ()))
    if not keys:
        return profile, keys
    if any(canonical_labels(s.labels) is not s.labels for s in profile):
        profile = profile.copy()
        profile.replace_samples([Sample(s.stack, s.values, canonical_labels(s.labels),
                                        s.timestamps, s.link) for s in list(profile)])
    return with_resource_labels(profile, keys), keys


def _groups(profile: Profile, keys: list[str]) -> list[tuple[str, Profile]]:
    """(title, profile) per distinct value of ``keys``, the largest first;
    one untitled group without keys."""
    from telegen.untrusted.text import printable

    if not keys:
        return [("", profile)]
    parts: dict[str, list[Sample]] = {}
    for s in profile:
        labels = dict(s.labels)
        title = ", ".join(f"{k}={printable(str(labels.get(k, '?')))}" for k in keys)
        parts.setdefault(title, []).append(s)
    out = []
    idx = profile.value_index()
    for title, samples in parts.items():
        part = profile.copy()
        part.replace_samples(samples)
        out.append((sum(s.values[idx] for s in samples), title, part))
    out.sort(key=lambda t: -t[0])
    return [(title, part) for _, title, part in out]


def cmd_flamegraph(args: argparse.Namespace) -> int:
    from telegen.formats.render import RenderError, load_merged, write_flamegraph

    try:
        profile = load_merged(args.files)
        profile, keys = _grouped(profile, args.group_by)
        report = write_flamegraph(profile, args.output, sample_type=args.type,
                                  min_fraction=args.min_fraction / 100, inverted=args.icicle,
                                  group_by=keys)
    except RenderError as exc:
        return _die(EXIT_FAILURE, str(exc))
    except KeyError as exc:
        return _die(EXIT_CONFIG, str(exc.args[0]))
    except OSError as exc:
        return _die(EXIT_FAILURE, f"cannot write {args.output}: {exc}")
    note = f" ({report.describe()})" if report is not None else ""
    print(f"wrote {args.output}{note}", file=sys.stderr)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from telegen.formats.diff import render_diff
    from telegen.formats.render import RenderError, load_merged, write_diff

    try:
        (base, keys), (new, _) = (_grouped(load_merged([f]), args.group_by)
                                  for f in (args.base, args.new))
        print(render_diff(base, new, sample_type=args.type, n=args.n), end="")
        if args.output:
            write_diff(base, new, args.output, sample_type=args.type,
                       min_fraction=args.min_fraction / 100, inverted=args.icicle,
                       group_by=keys)
            print(f"wrote {args.output}", file=sys.stderr)
    except RenderError as exc:
        return _die(EXIT_FAILURE, str(exc))
    except KeyError as exc:
        return _die(EXIT_CONFIG, str(exc.args[0]))
    except OSError as exc:
        return _die(EXIT_FAILURE, f"cannot write {args.output}: {exc}")
    return EXIT_OK


def cmd_components(args: argparse.Namespace) -> int:
    from telegen import registry

    if args.reference:
        from telegen.config.reference import reference

        print(reference())
        return EXIT_OK
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        types = registry.types(kind)
        print(f"{kind.section}:")
        for t in types:
            factory = registry.get(kind, t)
            assert factory is not None
            print(f"  {t:<14} {factory.stability:<8} {factory.description}")
        if not types:
            print("  (none)")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from telegen.doctor import run_checks

    checks = run_checks()
    for c in checks:
        status = "PASS" if c.ok else "FAIL"
        print(f"[{status}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            print(f"       fix: {c.fix}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILURE


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telegen", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"telegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", help="YAML config (default: the embedded default)")
    run.add_argument("--duration", type=float, help="stop after SECONDS (flushing everything)")
    run.add_argument("--log-level", choices=sorted(_LEVELS))
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a config file and exit")
    val.add_argument("-c", "--config", required=True)
    val.set_defaults(func=cmd_validate)

    top = sub.add_parser("top", help="the Flat/Cum table of a pprof file")
    top.add_argument("file")
    top.add_argument("--type", help="sample type, e.g. cpu or alloc_space (default: the file's)")
    top.add_argument("-n", type=int, default=10, help="rows (default 10)")
    top.add_argument("--group-by", action="append", metavar="ATTRIBUTE",
                     help="one table per value, e.g. process.pid or thread.name (repeatable)")
    top.set_defaults(func=cmd_top)

    fg = sub.add_parser("flamegraph", help="flame graph of pprof files (.html, .svg, .folded)")
    fg.add_argument("files", nargs="+", metavar="FILE", help="pprof files (merged)")
    fg.add_argument("-o", "--output", required=True,
                    help="out.html (interactive), out.svg (static) or out.folded")
    diff = sub.add_parser("diff", help="compare two pprof files: Flat/Cum deltas (+ -o graph)")
    diff.add_argument("base")
    diff.add_argument("new")
    diff.add_argument("-o", "--output", help="differential flame graph, .html or .svg")
    diff.add_argument("-n", type=int, default=20, help="rows (default 20)")
    for cmd, func in ((fg, cmd_flamegraph), (diff, cmd_diff)):
        cmd.add_argument("--type", help="sample type, e.g. cpu or alloc_space")
        cmd.add_argument("--icicle", action="store_true", help="root at the top")
        cmd.add_argument("--group-by", action="append", metavar="ATTRIBUTE",
                         help="attribute whose values become the outermost frames, e.g. "
                              "process.pid, process.executable.name, thread.name, "
                              "container.id (repeatable)")
        cmd.add_argument("--min-fraction", type=float, default=0.01, metavar="PCT",
                         help="hide frames below PCT%% of the total (default 0.01)")
        cmd.set_defaults(func=func)

    comp = sub.add_parser("components", help="list the component types in this build")
    comp.add_argument("--reference", action="store_true",
                      help="print every component's settings as the README's markdown reference")
    comp.set_defaults(func=cmd_components)

    doc = sub.add_parser("doctor", help="check this host can run the eBPF profiler")
    doc.set_defaults(func=cmd_doctor)

    from telegen.extensions.spanstore import cli as span_cli
    span_cli.add_parser(sub).set_defaults(func=span_cli.cmd_span)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:          # `telegen top x | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
