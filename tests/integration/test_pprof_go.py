"""Real Go profiles (runtime/pprof) against telegen's pprof codec and top table,
with ``go tool pprof`` as the judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from telegen.formats.pprof import decode, encode
from telegen.formats.top import TopRow, top_rows
from telegen.pdata import Profile
from telegen.testing import require
from telegen.testing.goprog import (
    CPUHOG_SOURCE,
    build_go_program,
    go_pprof,
    run_go_program,
)
from telegen.testing.pprof_checks import parse_pprof_top, profile_state, synthetic_profiles

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _go() -> None:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")


@pytest.fixture(scope="module")
def go_profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    binary = build_go_program(CPUHOG_SOURCE, cache_dir=tmp_path_factory.mktemp("gocache"))
    out = tmp_path_factory.mktemp("cpuhog")
    run_go_program(binary, [str(out), "2", "1"])
    files = {p.name: p for p in sorted(out.iterdir())}
    assert set(files) == {"cpu-000.pb.gz", "cpu-001.pb.gz", "heap.pb.gz"}
    return files


def assert_top_agrees(path: Path, profile: Profile, sample_type: str | None = None) -> None:
    args = ["-top", "-nodecount=10", "-symbolize=none"]
    if sample_type:
        args.append(f"-sample_index={sample_type}")
    theirs = parse_pprof_top(go_pprof(*args, str(path)))
    ours: list[TopRow] = top_rows(profile, sample_type, n=10)
    assert theirs, "go tool pprof printed no rows"
    assert [r.name for r in ours] == [r.name for r in theirs]
    for mine, go in zip(ours, theirs, strict=True):
        assert abs(mine.flat - go.flat) <= go.tolerance, (mine, go)
        assert abs(mine.cum - go.cum) <= go.tolerance, (mine, go)


@pytest.mark.parametrize("name", ["cpu-000.pb.gz", "cpu-001.pb.gz", "heap.pb.gz"])
def test_go_profile_decodes_and_round_trips(go_profiles: dict[str, Path], name: str,
                                            tmp_path: Path) -> None:
    original = go_profiles[name]
    profile = decode(original.read_bytes())
    assert len(profile) > 0
    again = decode(encode(profile))
    assert profile_state(again) == profile_state(profile)
    functions = {ln.function for s in profile for f in s.stack for ln in f.lines}
    assert "main.main" in functions
    assert any(fn.startswith("runtime.") for fn in functions)
    if name.startswith("cpu"):
        assert profile.name == "cpu"
        assert {"main.burn", "main.churn"} <= functions
        assert any(len(f.lines) > 1 for s in profile for f in s.stack), "no inlined frames"
    else:
        assert profile.name == "inuse"
        assert [str(t) for t in profile.sample_types] == [
            "alloc_objects/count", "alloc_space/bytes", "inuse_objects/count",
            "inuse_space/bytes"]


@pytest.mark.parametrize("name", ["cpu-000.pb.gz", "cpu-001.pb.gz", "heap.pb.gz"])
def test_top_rows_agree_with_go_tool_pprof(go_profiles: dict[str, Path], name: str,
                                           tmp_path: Path) -> None:
    profile = decode(go_profiles[name].read_bytes())
    assert_top_agrees(go_profiles[name], profile)
    reencoded = tmp_path / ("re-" + name)
    reencoded.write_bytes(encode(profile))
    assert_top_agrees(reencoded, profile)
    if name == "heap.pb.gz":
        assert_top_agrees(go_profiles[name], profile, "alloc_space")
        assert_top_agrees(reencoded, profile, "alloc_objects")


def test_go_reads_reencoded_go_profile_identically(go_profiles: dict[str, Path],
                                                   tmp_path: Path) -> None:
    original = go_profiles["cpu-000.pb.gz"]
    reencoded = tmp_path / "re.pb.gz"
    reencoded.write_bytes(encode(decode(original.read_bytes())))
    raw_a = go_pprof("-raw", "-symbolize=none", str(original))
    raw_b = go_pprof("-raw", "-symbolize=none", str(reencoded))
    samples_a = raw_a.split("Samples:")[1].split("Locations")[0]
    samples_b = raw_b.split("Samples:")[1].split("Locations")[0]
    assert sorted(samples_a.split("\n")) == sorted(samples_b.split("\n"))
    top_a = go_pprof("-top", "-symbolize=none", str(original)).split("flat%", 1)[1]
    top_b = go_pprof("-top", "-symbolize=none", str(reencoded)).split("flat%", 1)[1]
    assert top_a == top_b


@pytest.mark.parametrize("profile", synthetic_profiles(), ids=lambda p: p.name)
def test_go_tool_pprof_reads_synthetic_profiles(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / f"{profile.name}.pb.gz"
    path.write_bytes(encode(profile))
    raw = go_pprof("-raw", "-symbolize=none", str(path))
    assert "Samples:" in raw and "Locations" in raw
    assert_top_agrees(path, profile)
    header = go_pprof("-top", "-symbolize=none", str(path))
    for key, value in profile.resource.items():
        assert f"resource:{key}=" in header and str(value) in header
    if profile.name == "cpu":
        assert "parse_digit (inline)" in header
        assert "[[kernel.kallsyms]]" in header


def test_receiver_to_pprof_file_exporter_keeps_go_profiles_intact(
        go_profiles: dict[str, Path], tmp_path: Path) -> None:
    import logging

    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.exporters.pprof_file.config import PprofFileConfig
    from telegen.exporters.pprof_file.exporter import PprofFileExporter
    from telegen.receivers.pprof.config import PprofReceiverConfig
    from telegen.receivers.pprof.receiver import PprofReceiver
    from telegen.telemetry import Registry
    from telegen.testing.sink import Sink

    reg, sink = Registry(), Sink()
    log = logging.getLogger("t")
    rx = PprofReceiver(CreateSettings(ComponentID("pprof"), Kind.RECEIVER,
                                      reg.for_component("receiver", "pprof"), log),
                       PprofReceiverConfig(paths=[str(go_profiles["heap.pb.gz"].parent / "*")]),
                       sink)
    assert rx.scan() == 3
    out = tmp_path / "out"
    exp = PprofFileExporter(CreateSettings(ComponentID("pprof_file"), Kind.EXPORTER,
                                           reg.for_component("exporter", "pprof_file"), log),
                            PprofFileConfig(directory=str(out)))
    exp.start(host=None)  # type: ignore[arg-type]
    for batch in sink.batches:
        exp.consume(batch)
    written = sorted(out.iterdir())
    assert len(written) == 3
    for path in written:
        profile = decode(path.read_bytes())
        assert_top_agrees(path, profile)
    heap_out = next(p for p in written if p.name.startswith("inuse-"))
    mine = go_pprof("-top", "-symbolize=none", str(heap_out)).split("flat%", 1)[1]
    theirs = go_pprof("-top", "-symbolize=none", str(go_profiles["heap.pb.gz"]))
    assert mine == theirs.split("flat%", 1)[1]


def test_merged_window_file_is_valid_for_go(tmp_path: Path) -> None:
    import logging

    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.exporters.pprof_file.config import PprofFileConfig
    from telegen.exporters.pprof_file.exporter import PprofFileExporter
    from telegen.pdata import Profiles
    from telegen.telemetry import Registry

    cpu_a = synthetic_profiles()[0]
    cpu_b = synthetic_profiles()[0]
    cpu_b.resource["process.pid"] = 777
    exp = PprofFileExporter(CreateSettings(ComponentID("pprof_file"), Kind.EXPORTER,
                                           Registry().for_component("exporter", "f"),
                                           logging.getLogger("t")),
                            PprofFileConfig(directory=str(tmp_path)))
    exp.start(host=None)  # type: ignore[arg-type]
    exp.consume(Profiles([cpu_a, cpu_b]))
    (path,) = tmp_path.iterdir()
    raw = go_pprof("-raw", "-symbolize=none", str(path))
    assert "process.pid:[4242]" in raw and "process.pid:[777]" in raw
    assert_top_agrees(path, decode(path.read_bytes()))
