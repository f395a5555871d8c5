"""Flame-graph pages, SVG, diff tables, the CLI commands and the ui extension (no browser)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from telegen.cli import main
from telegen.component import ComponentID, Kind
from telegen.exporters.ui.config import UiExporterConfig
from telegen.exporters.ui.exporter import UiExporter
from telegen.extensions.ui.config import UiConfig
from telegen.extensions.ui.extension import UiExtension
from telegen.formats.diff import diff_rows, diff_tree, render_diff, render_diff_html
from telegen.formats.flamegraph import render_html
from telegen.formats.flamegraph_svg import render_svg
from telegen.formats.folded import build_tree, prune
from telegen.formats.pprof import encode
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, Profiles, make_labels
from telegen.testing.pprof_checks import synthetic_profiles
from telegen.testing.settings import create_settings

# XML namespace names inside d3 (identifiers, never fetched)
XML_NAMESPACES = {"http://www.w3.org/1999/xhtml", "http://www.w3.org/1999/xlink",
                  "http://www.w3.org/2000/svg", "http://www.w3.org/2000/xmlns/",
                  "http://www.w3.org/XML/1998/namespace"}
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*")


def external_urls(text: str) -> set[str]:
    return {u for u in URL.findall(text) if u not in XML_NAMESPACES}


def embedded(page: str, element_id: str) -> object:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page,
                  re.S)
    assert m, element_id
    return json.loads(m.group(1))


def split_profile(a: int, b: int, pid: int = 1) -> Profile:
    """CPU profile: main -> work -> {fa: a, fb: b} samples of 10 ms."""
    frames = {n: Frame(FrameKind.NATIVE, i + 1, None, (Line(n, "/src/w.c", 10 + i),))
              for i, n in enumerate(("main", "work", "fa", "fb"))}
    p = Profile(name="cpu", sample_types=CPU, start_ns=1_700_000_000 * 10**9,
                duration_ns=10**9, default_sample_type="cpu")
    labels = make_labels(**{"process.pid": pid, "process.executable.name": "w"})
    p.add((frames["fa"], frames["work"], frames["main"]), [a, a * 10**7], labels)
    p.add((frames["fb"], frames["work"], frames["main"]), [b, b * 10**7], labels)
    return p


def test_html_is_self_contained_and_carries_the_tree() -> None:
    cpu = synthetic_profiles()[0]
    page = render_html(cpu)
    assert external_urls(page) == set()
    assert "<link" not in page and "src=" not in page
    data = embedded(page, "fg-data")
    root = build_tree(cpu)
    assert isinstance(data, dict) and data["v"] == root.total
    names = {c["n"]: c for c in data["c"]}
    assert names["main"]["v"] == root.children["main"].total
    meta = embedded(page, "fg-meta")
    assert isinstance(meta, dict) and meta["unit"] == "nanoseconds"
    assert "Total CPU time" in page and "parse_digit" in page   # the Flat/Cum table


def test_names_cannot_break_out_of_the_script_element() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    evil = Frame(FrameKind.NATIVE, 1, None, (Line("</script><script>alert(1)</script>"),))
    p.add((evil,), [1, 10])
    page = render_html(p)
    assert "<script>alert(1)" not in page
    data = embedded(page, "fg-data")
    assert isinstance(data, dict) and data["c"][0]["n"].startswith("</script>")


def test_pruning_is_reported_on_the_page() -> None:
    cpu = synthetic_profiles()[0]
    smallest = min(n.total for n in build_tree(cpu).walk())
    fraction = (smallest + 1) / build_tree(cpu).total
    report = prune(build_tree(cpu), fraction)
    page = render_html(cpu, min_fraction=fraction)
    assert report.frames > 0 and report.describe() in page
    meta = embedded(page, "fg-meta")
    assert isinstance(meta, dict) and meta["pruned"]["frames"] == report.frames


def test_svg_is_well_formed_with_a_tooltip_per_frame() -> None:
    cpu = synthetic_profiles()[0]
    root = build_tree(cpu)
    svg = render_svg(root, unit="nanoseconds", title="t")
    doc = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    frames = doc.findall(f"{ns}g")
    assert len(frames) == sum(1 for _ in root.walk())
    assert all(g.find(f"{ns}title") is not None for g in frames)
    assert external_urls(svg) == set()


def test_diff_rows_follow_the_normalised_formula() -> None:
    base, new = split_profile(50, 50), split_profile(150, 50)
    rows = {r.name: r for r in diff_rows(base, new, n=0)}
    scale = 200 / 100
    fa_new, fa_base = 150 * 10**7, 50 * 10**7
    assert rows["fa"].flat_delta == pytest.approx(fa_new - fa_base * scale)
    assert rows["fa"].flat_delta_pct == pytest.approx(100 * (150 / 200 - 50 / 100))
    assert rows["fb"].flat_delta_pct == pytest.approx(100 * (50 / 200 - 50 / 100))
    assert rows["work"].cum_delta_pct == pytest.approx(0.0)
    first = render_diff(base, new).splitlines()[3]
    assert first.endswith(" fa") or first.endswith(" fb")
    tree = diff_tree(base, new)
    work = tree.children["main"].children["work"]
    assert work.children["fa"].delta == pytest.approx(fa_new - fa_base * scale)
    assert work.children["fb"].delta < 0
    page = render_diff_html(base, new)
    meta = embedded(page, "fg-meta")
    assert isinstance(meta, dict) and meta["differential"] is True


def test_cli_flamegraph_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, new = tmp_path / "base.pb.gz", tmp_path / "new.pb.gz"
    base.write_bytes(encode(split_profile(50, 50)))
    new.write_bytes(encode(split_profile(150, 50)))
    for name in ("g.html", "g.svg", "g.folded"):
        assert main(["flamegraph", str(base), str(new), "-o", str(tmp_path / name)]) == 0
    folded = (tmp_path / "g.folded").read_text().splitlines()
    assert folded == ["main;work;fa 2000000000", "main;work;fb 1000000000"]
    assert main(["diff", str(base), str(new), "-o", str(tmp_path / "d.html")]) == 0
    out = capsys.readouterr().out
    fa = next(line for line in out.splitlines() if line.endswith(" fa"))
    assert "+25.0%" in fa and "+500ms" in fa
    assert (tmp_path / "d.html").stat().st_size > 10_000
    off = tmp_path / "off.pb.gz"
    off.write_bytes(encode(synthetic_profiles()[1]))
    assert main(["flamegraph", str(base), str(off), "-o", str(tmp_path / "x.html")]) == 1
    assert main(["flamegraph", str(base), "-o", str(tmp_path / "x.png")]) == 1


class _Host:
    def __init__(self, ext: UiExtension) -> None:
        self.ext = ext

    def report_error(self, component: ComponentID, error: BaseException) -> None:
        raise AssertionError(error)

    def extension(self, id: ComponentID) -> object:
        return self.ext if id == ComponentID("ui") else None


def test_ui_extension_serves_memory_and_directory(tmp_path: Path) -> None:
    (tmp_path / "cpu-1.pb.gz").write_bytes(encode(split_profile(10, 30, pid=9)))
    cfg = UiConfig(endpoint="127.0.0.1:0", directories=[str(tmp_path)])
    cfg.validate()
    ext = UiExtension(create_settings(Kind.EXTENSION, "ui"), cfg)
    host = _Host(ext)
    ext.start(host)  # type: ignore[arg-type]
    try:
        exporter = UiExporter(create_settings(Kind.EXPORTER, "ui"), UiExporterConfig())
        exporter.start(host)  # type: ignore[arg-type]
        exporter.consume(Profiles([split_profile(30, 10, pid=5), split_profile(1, 1, pid=6)]))
        ext.add_route("/spans/", lambda path, q: (200, "text/plain", path.encode()))

        def get(path: str) -> str:
            with urllib.request.urlopen(ext.url + path, timeout=10) as resp:
                return str(resp.read().decode())
        index = get("/")
        assert "2 windows" in index and "5 w" in index
        top = get("/top?type=cpu&pid=5")
        assert top.splitlines()[3].endswith("fa")          # 30 of 40 samples
        page = get("/flamegraph?type=cpu&pid=6")
        assert embedded(page, "fg-data")["v"] == 2 * 10**7  # type: ignore[index]
        from_dir = get(f"/top?src={tmp_path}&type=cpu")
        assert from_dir.splitlines()[3].endswith("fb")
        assert "red: grew" in get(f"/diff?type=cpu&pid=5&base_src={tmp_path}&base_pid=9")
        assert get("/spans/abc") == "/spans/abc"
        with pytest.raises(urllib.error.HTTPError) as err:
            get("/flamegraph?type=alloc")
        assert err.value.code == 404
    finally:
        ext.shutdown()


def test_ui_exporter_fails_fast_without_the_extension() -> None:
    exporter = UiExporter(create_settings(Kind.EXPORTER, "ui"), UiExporterConfig())
    with pytest.raises(RuntimeError, match="not running"):
        exporter.start(_Host(None))  # type: ignore[arg-type]
