"""A JVM inside a real container (the container image's own JRE, run as uid
1000, classes copied in) found by name and recorded by the ``jfr`` receiver
with the host's jcmd: the dump directory is made in the container's /tmp,
nothing is written in the host's /tmp, and the profile names the workload's
hot method."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.jfr.config import JfrReceiverConfig
from telegen.receivers.jfr.receiver import JfrReceiver
from telegen.telemetry import Registry
from telegen.testing import containers, require
from telegen.testing.agent import wait_until
from telegen.testing.sink import Sink

pytestmark = pytest.mark.slow

JAVA_SRC = Path(__file__).resolve().parents[1] / "testdata" / "java" / "Workload.java"
JRE_IMAGE = "localhost/telegen-test-jre17:latest"
JRE_CONTAINERFILE = """FROM localhost/debian:12
RUN mkdir -p /usr/share/man/man1 \\
 && apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="session")
def jre_image(base_image: str) -> str:
    """Debian 12 with its JRE 17: built once (~1 min), rebuilt when the text changes."""
    return containers.build_image(JRE_IMAGE, JRE_CONTAINERFILE)


def _dump_dirs(parent: str) -> set[str]:
    return {n for n in os.listdir(parent) if n.startswith("telegen-jfr-")}


def test_jvm_in_container_recorded_by_name_nothing_on_the_host(tmp_path: Path,
                                                               jre_image: str) -> None:
    require.tools("javac", "jcmd", provider="a JDK (scripts/setup-host.sh)")
    classes = tmp_path / "classes"
    classes.mkdir(mode=0o755)
    subprocess.run(["javac", "-d", str(classes), str(JAVA_SRC)], check=True, timeout=120)
    host_tmp_before = set(os.listdir("/tmp"))
    registry, sink = Registry(), Sink()
    config = JfrReceiverConfig(process_names=["Workload"], duration=2.0, scan_interval=0.5,
                               jcmd_timeout=60.0)
    config.validate()
    rx = JfrReceiver(CreateSettings(ComponentID("jfr"), Kind.RECEIVER,
                                    registry.for_component("receiver", "jfr"),
                                    logging.getLogger("test.containers.jfr")), config, sink)
    with containers.running(jre_image, ["java", "-cp", "/opt/app", "Workload", "0"],
                            user="1000:1000", copy_in=[(f"{classes}/.", "/opt/app")]) as c:
        assert wait_until(lambda: os.path.exists(f"/proc/{c.pid}/root/tmp/hsperfdata_1000/1"),
                          60, 0.2), c.logs()
        assert containers.nspid(c.pid)[-1] == 1
        rx.start(host=None)  # type: ignore[arg-type]
        try:
            assert wait_until(lambda: _cpu_samples(sink) > 0, 120, 0.5), c.logs()
            inside = _dump_dirs(f"/proc/{c.pid}/root/tmp")
            assert len(inside) == 1, inside
        finally:
            t0 = time.monotonic()
            rx.shutdown()
            print(f"jfr receiver shutdown {time.monotonic() - t0:.1f} s")
        assert _dump_dirs(f"/proc/{c.pid}/root/tmp") == set()
    new_on_host = {n for n in set(os.listdir("/tmp")) - host_tmp_before
                   if n.startswith("telegen-jfr-") or n.endswith(".jfr")}
    assert not new_on_host, new_on_host
    profiles = sink.profiles("cpu")
    names = {s.stack[0].name for p in profiles for s in p if s.stack}
    assert "Workload.hotMethod" in names, sorted(names)[:20]
    assert {p.resource.get("process.pid") for p in profiles} == {c.pid}
    assert {p.resource.get("container.id") for p in profiles} == {c.id}
    assert {p.resource.get("process.vpid") for p in profiles} == {1}


def _cpu_samples(sink: Sink) -> int:
    return sum(int(p.totals()[0]) for p in sink.profiles("cpu"))
