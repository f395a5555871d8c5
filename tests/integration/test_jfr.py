"""JFR end to end on real JVMs (JDK 17 on the machine), judged by the JDK's
own ``jfr`` tool and by ``go tool pprof``."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.formats.jfr import read_chunks, summarize
from telegen.formats.jfr.topdata import ProfileBuilder
from telegen.receivers.jfr.config import JfrReceiverConfig
from telegen.receivers.jfr.receiver import JfrReceiver
from telegen.receivers.jfr.session import settings_xml
from telegen.telemetry import Registry
from telegen.testing import require
from telegen.testing.agent import start_telegen, wait_until
from telegen.testing.goprog import go_pprof
from telegen.testing.sink import Sink

JAVA_SRC = Path(__file__).resolve().parents[1] / "testdata" / "java" / "Workload.java"


@pytest.fixture(autouse=True)
def _jdk() -> None:
    require.tools("javac", "jcmd", "jfr", provider="a JDK")


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("javaclasses")
    subprocess.run(["javac", "-d", str(out), str(JAVA_SRC)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def recordings(classes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One JVM, two recordings: the JDK's ``profile`` settings and ours."""
    out = tmp_path_factory.mktemp("recordings")
    ours = out / "telegen.jfc"
    ours.write_text(settings_xml(JfrReceiverConfig(sample_rate=100, lock_threshold=0.002)))
    subprocess.run(["java", f"-XX:StartFlightRecording:name=a,settings=profile,"
                            f"filename={out}/profile.jfr",
                    f"-XX:StartFlightRecording:name=b,settings={ours},filename={out}/ours.jfr",
                    "-cp", str(classes), "Workload", "5"],
                   check=True, timeout=120, capture_output=True)
    return {"profile": out / "profile.jfr", "ours": out / "ours.jfr"}


def _jfr_summary(path: Path) -> Counter[str]:
    text = subprocess.run(["jfr", "summary", str(path)], capture_output=True, text=True,
                          check=True).stdout
    counts: Counter[str] = Counter()
    for m in re.finditer(r"^\s+(\w+\.\w[\w.]*)\s+(\d+)\s+\d+\s*$", text, re.M):
        if int(m.group(2)):
            counts[m.group(1)] = int(m.group(2))
    return counts


def _jfr_leaf_methods(path: Path, event: str) -> Counter[str]:
    """Leaf method per event as `jfr print --json` shows it."""
    text = subprocess.run(["jfr", "print", "--json", "--events", event, str(path)],
                          capture_output=True, text=True, check=True).stdout
    counts: Counter[str] = Counter()
    for ev in json.loads(text)["recording"]["events"]:
        frames = (ev["values"].get("stackTrace") or {}).get("frames") or []
        if frames:
            m = frames[0]["method"]
            counts[f"{m['type']['name'].replace('/', '.')}.{m['name']}"] += 1
    return counts


def _our_leaf_methods(path: Path, profile: str) -> Counter[str]:
    b = ProfileBuilder(types=[profile])
    with open(path, "rb") as f:
        for c in read_chunks(f):
            b.add_chunk(c)
    counts: Counter[str] = Counter()
    for p in b.build():
        for s in p:
            if s.stack:
                counts[s.stack[0].name] += s.values[0]
    return counts


def _top10(c: Counter[str]) -> list[tuple[str, int]]:
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:10]


@pytest.mark.parametrize("which", ["profile", "ours"])
def test_event_counts_equal_jfr_summary(recordings: dict[str, Path], which: str) -> None:
    ours = summarize(str(recordings[which]))
    ref = _jfr_summary(recordings[which])
    assert ref["jdk.ExecutionSample"] > 50
    assert dict(ours) == dict(ref)


@pytest.mark.parametrize("which", ["profile", "ours"])
def test_top10_methods_equal_jfr_print(recordings: dict[str, Path], which: str) -> None:
    ref = _jfr_leaf_methods(recordings[which], "jdk.ExecutionSample")
    ours = _our_leaf_methods(recordings[which], "cpu")
    assert "Workload.hotMethod" in dict(_top10(ref))
    assert _top10(ours) == _top10(ref)
    assert ours == ref          # every method, not only the top 10


def test_lock_delay_is_attributed_to_the_contended_method(recordings: dict[str, Path]) -> None:
    b = ProfileBuilder(types=["mutex", "park"])
    with open(recordings["ours"], "rb") as f:
        for c in read_chunks(f):
            b.add_chunk(c)
    by = {p.name: p for p in b.build()}
    delay: Counter[str] = Counter()
    for s in by["mutex"]:
        delay[s.stack[0].name] += s.values[1]
    assert delay.most_common(1)[0][0] == "Workload.contendedMethod"
    assert delay["Workload.contendedMethod"] / sum(delay.values()) > 0.9
    parked = sum(s.values[1] for s in by["park"]
                 if any(f.name == "Workload.parkingMethod" for f in s.stack))
    assert parked / by["park"].totals()[1] > 0.9
    # mutex counts equal the JDK's JavaMonitorEnter events
    assert by["mutex"].totals()[0] == _jfr_summary(recordings["ours"])["jdk.JavaMonitorEnter"]


def _receiver(config: JfrReceiverConfig, sink: Sink) -> tuple[JfrReceiver, dict[str, Any]]:
    registry = Registry()
    tel = registry.for_component("receiver", "jfr")
    rx = JfrReceiver(CreateSettings(ComponentID("jfr"), Kind.RECEIVER, tel,
                                    logging.getLogger("test.jfr")), config, sink)
    return rx, {"telemetry": tel}


def _count(tel: Any, name: str) -> int:
    return int(tel.counter(name).value)


def test_dropped_files_are_read_and_bad_chunks_counted(recordings: dict[str, Path],
                                                      tmp_path: Path) -> None:
    data = recordings["profile"].read_bytes()
    (tmp_path / "good.jfr").write_bytes(data)
    (tmp_path / "truncated.jfr").write_bytes(data + data[:100])   # cut in a chunk
    (tmp_path / "garbage.jfr").write_bytes(b"not a recording" * 100)
    sink = Sink()
    rx, ctx = _receiver(JfrReceiverConfig(directory=str(tmp_path), discover=False,
                                          poll_interval=0.2, duration=3600), sink)
    rx.start(host=None)  # type: ignore[arg-type]
    try:
        assert sink.wait_for(2, timeout_s=20)
        assert wait_until(lambda: _count(ctx["telemetry"], "receiver_refused_chunks") >= 2, 10)
    finally:
        rx.shutdown()
    cpu = [p for p in sink.profiles("cpu")]
    want = _jfr_summary(recordings["profile"])["jdk.ExecutionSample"]
    # good.jfr, and truncated.jfr up to its cut chunk; garbage refused whole
    assert sorted(p.totals()[0] for p in cpu) == [want, want]
    assert _count(ctx["telemetry"], "receiver_refused_files") == 1


def test_jvm_started_after_the_agent_is_recorded_and_stopped_with_it(
        classes: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    cfg = tmp_path / "jfr.yaml"
    cfg.write_text(f"""
receivers:
  jfr:
    process_names: [Workload]
    duration: 2s
    scan_interval: 500ms
    sample_rate: 100
exporters:
  pprof_file:
    directory: {out}
service:
  pipelines:
    profiles:
      receivers: [jfr]
      exporters: [pprof_file]
""")
    agent = start_telegen(["run", "-c", str(cfg)], tmp_path / "agent.log")
    jvm = None
    try:
        time.sleep(2)                                   # the agent is up first
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        jvm = subprocess.Popen(["java", "-cp", str(classes), "Workload", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def recording() -> bool:
            return "name=telegen" in _jcmd(jvm.pid, "JFR.check")
        assert wait_until(recording, 60, 0.5), (tmp_path / "agent.log").read_text()
        assert wait_until(lambda: any(out.glob("*cpu*.pb.gz")) and
                          any(out.glob("*mutex*.pb.gz")), 60, 0.5), \
            (tmp_path / "agent.log").read_text()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, (tmp_path / "agent.log").read_text()
        check = _jcmd(jvm.pid, "JFR.check")
        assert "No available recordings" in check and "telegen" not in check
    finally:
        if agent.poll() is None:
            agent.kill()
        if jvm is not None:
            jvm.kill()
            jvm.wait()
    files = sorted(out.glob("*.pb.gz"))
    cpu = [f for f in files if "cpu" in f.name]
    top = go_pprof("-top", "-nodecount=200", str(cpu[0]))
    assert "Workload.hotMethod" in top
    mutex = [f for f in files if "mutex" in f.name]
    assert "Workload.contendedMethod" in go_pprof("-top", str(mutex[0]))
    for f in files:                                   # every file readable
        go_pprof("-raw", str(f))


def _jcmd(pid: int, *args: str) -> str:
    return subprocess.run(["jcmd", str(pid), *args], capture_output=True, text=True,
                          timeout=60).stdout
