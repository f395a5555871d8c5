"""Flame graphs end to end in headless Chromium (Debian ``chromium``, started here).

* a real eBPF profile of a C workload (hot_a:hot_b = 3:1 CPU) served by the
  ``ui`` extension: hot_a is the widest frame of its row, a click zooms it to
  the full width, search highlights it; screenshots in tests/artifacts/;
* ``telegen diff`` of real Go profiles before/after a known change;
* pages load nothing but themselves; 50k distinct stacks render in < 2 s.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.component import Kind
from telegen.formats.flamegraph import flamegraph_page
from telegen.formats.folded import build_tree, count_frames
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile
from telegen.testing import workloads
from telegen.testing.agent import telegen
from telegen.testing.chromium import Browser, Page, chromium_binary
from telegen.testing.settings import create_settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HIGHLIGHT = "#E600E6"      # d3-flame-graph's search highlight
FRAMES_JS = """Array.from(document.querySelectorAll('#chart g.frame')).map(g => {
  const r = g.querySelector('rect'); const b = r.getBoundingClientRect();
  return {name: g.getAttribute('name'), w: b.width, x: b.x + b.width / 2,
          y: b.y + b.height / 2, fill: r.getAttribute('fill'), depth: g.__data__.depth};
})"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_binary() is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; "
                    "scripts/setup-host.sh installs it)", pytrace=False)
    with Browser(width=1400, height=1000) as b:
        yield b


def open_page(browser: Browser, url: str) -> tuple[Page, float]:
    page = browser.new_page()
    page.navigate(url)
    rendered = float(page.wait_for("window.telegenFlame && telegenFlame.ready "
                                   "&& telegenFlame.renderedMs"))
    return page, rendered


def frames(page: Page) -> list[dict[str, object]]:
    return list(page.evaluate(FRAMES_JS))


def only_self_requested(page: Page, url: str) -> None:
    assert page.requests == [url], f"page loaded more than itself: {page.requests}"


# -- real eBPF profile ------------------------------------------------------------
@pytest.mark.bpf
def test_ebpf_profile_in_the_ui(browser: Browser, tmp_path: Path) -> None:
    from telegen.exporters.ui.config import UiExporterConfig
    from telegen.exporters.ui.exporter import UiExporter
    from telegen.extensions.ui.config import UiConfig
    from telegen.extensions.ui.extension import UiExtension
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor
    from telegen.receivers.ebpf.config import EbpfConfig
    from telegen.receivers.ebpf.receiver import EbpfReceiver

    binary = workloads.build("tg_cpu_split", tmp_path)
    ext = UiExtension(create_settings(Kind.EXTENSION, "ui"), UiConfig(endpoint="127.0.0.1:0"))

    class Host:
        def report_error(self, component: object, error: BaseException) -> None:
            raise AssertionError(error)

        def extension(self, id: object) -> object:
            return ext

    ext.start(Host())  # type: ignore[arg-type]
    try:
        exporter = UiExporter(create_settings(Kind.EXPORTER, "ui"), UiExporterConfig())
        exporter.start(Host())  # type: ignore[arg-type]
        symbolize = SymbolizeProcessor(create_settings(Kind.PROCESSOR, "symbolize"),
                                       SymbolizeConfig(debuginfod_urls=[]), exporter)
        cfg = EbpfConfig(sample_rate=199, duration=1.0, process_names=["^tg_cpu_split"])
        cfg.validate()
        receiver = EbpfReceiver(create_settings(Kind.RECEIVER, "ebpf"), cfg, symbolize)
        receiver.start(Host())  # type: ignore[arg-type]
        try:
            run = subprocess.Popen([binary, "3", "2"], stdout=subprocess.PIPE)
            run.wait(30)
            time.sleep(0.3)
        finally:
            receiver.shutdown()
        symbolize.shutdown()
        url = f"{ext.url}/flamegraph?type=cpu&pid={run.pid}"
        page, rendered_ms = open_page(browser, url)
        only_self_requested(page, url)
        got = {f["name"]: f for f in frames(page)}
        assert "hot_a" in got and "hot_b" in got, sorted(got)[:40]
        hot_a, hot_b = got["hot_a"], got["hot_b"]
        row = [f for f in got.values() if f["depth"] == hot_a["depth"]]
        assert max(row, key=lambda f: f["w"])["name"] == "hot_a"   # widest of its row
        share = hot_a["w"] / (hot_a["w"] + hot_b["w"])
        print(f"ebpf page rendered in {rendered_ms:.0f} ms; hot_a share {share:.3f}")
        assert 0.65 <= share <= 0.85
        page.screenshot(ARTIFACTS / "flamegraph_ebpf.png")

        page.click(hot_a["x"], hot_a["y"])                 # a real click zooms
        full = max(f["w"] for f in frames(page))
        page.wait_for("(() => { const g = Array.from(document.querySelectorAll("
                      "'#chart g.frame')).find(g => g.getAttribute('name') === 'hot_a');"
                      f" return g.querySelector('rect').getBoundingClientRect().width >= "
                      f"{full * 0.99}; }})()", 5)
        page.screenshot(ARTIFACTS / "flamegraph_ebpf_zoomed.png")

        page.call("Runtime.evaluate", expression="document.getElementById('search').focus()")
        page.type_text("hot_a")
        page.wait_for(f"document.querySelector('#chart g.frame[name=\"hot_a\"] rect')"
                      f".getAttribute('fill') === '{HIGHLIGHT}'", 5)
        lit = {f["name"] for f in frames(page) if f["fill"] == HIGHLIGHT}
        assert lit == {"hot_a"}
        page.screenshot(ARTIFACTS / "flamegraph_ebpf_search.png")
    finally:
        ext.shutdown()


# -- diff of real Go profiles ------------------------------------------------------
DIFFHOG = Path(__file__).resolve().parents[1] / "testdata" / "go" / "diffhog"


def test_diff_of_go_profiles_before_and_after(browser: Browser, tmp_path: Path) -> None:
    from telegen.testing.goprog import build_go_program, go_available, run_go_program

    if not go_available():
        pytest.fail("go is not installed (apt-get install golang-go)", pytrace=False)
    binary = build_go_program(DIFFHOG)
    # burnA:burnB = 10:10 ms per round before, 30:10 after: burnA's share 50% -> 75%
    before, after = (10, 10), (30, 10)
    base, new = tmp_path / "base.pb.gz", tmp_path / "new.pb.gz"
    run_go_program(binary, [str(base), *map(str, before), "2"])
    run_go_program(binary, [str(new), *map(str, after), "2"])
    out = tmp_path / "diff.html"
    res = telegen("diff", str(base), str(new), "-n", "0", "-o", str(out), check=True)
    rows = {}
    for line in res.stdout.splitlines()[3:]:
        cells = line.split()
        rows[cells[-1]] = cells
    want_a = 100 * (after[0] / sum(after) - before[0] / sum(before))     # +25 points
    # burnA/burnB spend their time in main.spin (flat), so their change is in ΔCum%
    got_a = float(rows["main.burnA"][7].rstrip("%"))
    got_b = float(rows["main.burnB"][7].rstrip("%"))
    print(f"diff: burnA {got_a:+.1f} points (want {want_a:+.1f}), burnB {got_b:+.1f}")
    assert abs(got_a - want_a) <= 8 and abs(got_b + want_a) <= 8
    # functions in both that did not change share (ancestors of both) stay near 0
    assert abs(float(rows["main.main"][7].rstrip("%"))) <= 3

    page, _ = open_page(browser, out.as_uri())
    only_self_requested(page, out.as_uri())
    fills = {f["name"]: f["fill"] for f in frames(page)}
    r_a, g_a, b_a = map(int, re.findall(r"\d+", str(fills["main.burnA"])))
    r_b, g_b, b_b = map(int, re.findall(r"\d+", str(fills["main.burnB"])))
    assert r_a > b_a and b_b > r_b, (fills["main.burnA"], fills["main.burnB"])
    page.screenshot(ARTIFACTS / "flamegraph_diff.png")


# -- 50k distinct stacks -------------------------------------------------------------
def big_profile(stacks: int, seed: int = 7) -> Profile:
    """``stacks`` distinct stacks over a 6-ary tree of 400 functions, skewed values."""
    rng = random.Random(seed)
    names = [f"pkg{i % 23}.func_{i}" for i in range(400)]
    frames = [Frame(FrameKind.NATIVE, i + 1, None, (Line(n, f"/src/f{i}.c", i + 1),))
              for i, n in enumerate(names)]
    p = Profile(name="cpu", sample_types=CPU, default_sample_type="cpu")
    seen: set[tuple[Frame, ...]] = set()
    while len(seen) < stacks:
        depth = rng.randint(4, 24)
        stack = tuple(frames[rng.randrange(i * 6, i * 6 + 6) % 400 if rng.random() < 0.8
                             else rng.randrange(400)] for i in range(depth))[::-1]
        if stack in seen:
            continue
        seen.add(stack)
        n = max(1, int(rng.paretovariate(1.2)))
        p.add(stack, [n, n * 10_000_000])
    return p


def test_50k_stacks_render_under_2s_and_offline(browser: Browser, tmp_path: Path) -> None:
    profile = big_profile(50_000)
    assert len(profile) == 50_000
    results = {}
    for label, fraction in (("pruned 0.01%", 0.0001), ("unpruned", 0.0)):
        t0 = time.perf_counter()
        html, report = flamegraph_page(profile, min_fraction=fraction)
        build_s = time.perf_counter() - t0
        path = tmp_path / f"big-{fraction}.html"
        path.write_text(html)
        t1 = time.perf_counter()
        page, rendered_ms = open_page(browser, path.as_uri())
        wall_ms = (time.perf_counter() - t1) * 1000
        only_self_requested(page, path.as_uri())
        drawn = page.evaluate("document.querySelectorAll('#chart g.frame').length")
        shown = page.evaluate("document.getElementById('pruned').textContent")
        assert shown == report.describe()
        results[label] = rendered_ms, build_s
        size_mb = path.stat().st_size / 1e6
        sent = count_frames(build_tree(profile)) - report.frames
        print(f"50k stacks {label}: {sent} frames sent, {report.frames} pruned, {drawn} "
              f"drawn; page {size_mb:.1f} MB built in {build_s:.2f} s; rendered "
              f"{rendered_ms:.0f} ms after navigation start ({wall_ms:.0f} ms wall incl. CDP)")
        if label == "pruned 0.01%":
            assert report.frames > 0
            page.screenshot(ARTIFACTS / "flamegraph_50k.png")
        page.close()
    # the promise holds with the default server-side pruning; unpruned is measured
    # and printed (553k frames, ~35 MB of JSON: about 2-3 s here)
    rendered_ms, build_s = results["pruned 0.01%"]
    assert rendered_ms < 2000, f"{rendered_ms:.0f} ms (server-side build {build_s:.2f} s)"
