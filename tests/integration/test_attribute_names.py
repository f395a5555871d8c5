"""One set of attribute names from every receiver (root + BPF, real workloads).

One agent runs the ``ebpf``, ``go``, ``jfr``, ``python`` and ``otlp``
receivers in one pipeline, exporting OTLP to the fake backend: ebpf and python
sample a CPython program (twohot.py), go scrapes goservice (discovered: its
pid known), jfr records Workload.java, and the telegen SDK in asyncapp.py
pushes to the otlp receiver — the workloads the receivers' own tests use.
Every resource must name its process with the OpenTelemetry semantic
conventions (``process.pid``, ``process.executable.name``, ``service.name``,
``host.name``…), no sample may carry a process attribute or any of the older
names (``pid``, ``tid``, ``comm``, ``thread_name``, ``thread_id``,
``process.executable``), and thread samples say ``thread.id``/``thread.name``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from telegen.semconv import ALIASES, is_resource_key
from telegen.testing import require
from telegen.testing.agent import free_port, wait_until
from telegen.testing.backends import OtlpBackend
from telegen.testing.goprog import build_go_program
from telegen.testing.otlp_agent import agent_to_otlp_backend
from telegen.testing.pyprog import require_pythons

pytestmark = pytest.mark.bpf
TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
ROOT = Path(__file__).resolve().parents[2]
OLD = set(ALIASES)
EVERY = {"process.pid", "process.executable.name", "service.name", "host.name"}
AGENT = EVERY | {"process.executable.path", "host.id", "os.type"}
REQUIRED = {"ebpf": AGENT, "python": AGENT | {"process.runtime.name", "process.runtime.version"},
            "jfr": AGENT | {"process.runtime.name"}, "go": AGENT,
            "sdk": EVERY | {"process.runtime.name", "process.executable.path"}}
THREADS = {"ebpf", "python", "jfr", "sdk"}      # their samples name the thread


def _value(v: Any) -> object:
    return v.int_value if v.WhichOneof("value") == "int_value" else v.string_value


def _producer(res: dict[str, object]) -> str:
    if "telemetry.sdk.name" in res:
        return "sdk"
    if "telegen.target" in res:
        return "go"
    return str(res.get("telegen.receiver", "?")).split("/")[0]


def _collect(backend: OtlpBackend) -> dict[str, list[tuple[dict[str, object], set[str]]]]:
    """producer -> [(resource attributes, sample attribute names)]"""
    out: dict[str, list[tuple[dict[str, object], set[str]]]] = defaultdict(list)
    for req in backend.requests():
        d = req.dictionary
        names = [d.string_table[a.key_strindex] for a in d.attribute_table]
        for rp in req.resource_profiles:
            res = {kv.key: _value(kv.value) for kv in rp.resource.attributes}
            keys = {names[i] for sp in rp.scope_profiles for p in sp.profiles
                    for s in p.samples for i in s.attribute_indices}
            out[_producer(res)].append((res, keys))
    return out


@pytest.mark.timeout(1200)   # five start-ups; BCC alone takes minutes on a loaded machine
def test_every_receiver_uses_the_same_names(tmp_path: Path) -> None:
    require.tools("go", "javac", "java", "jcmd", provider="golang-go, a JDK")
    python = require_pythons(("3.12",))["3.12"]
    goservice = build_go_program(TESTDATA / "go" / "goservice")
    subprocess.run(["javac", "-d", str(tmp_path), str(TESTDATA / "java" / "Workload.java")],
                   check=True, timeout=120)
    procs: list[subprocess.Popen[Any]] = [
        subprocess.Popen([python, str(TESTDATA / "python" / "twohot.py"),
                          str(tmp_path / "twohot.json"), "900"]),
        subprocess.Popen(["java", "-cp", str(tmp_path), "Workload", "900"],
                         stdout=subprocess.DEVNULL),
        subprocess.Popen([str(goservice), "0", "3", "2"], stdout=subprocess.PIPE, text=True)]
    py, jvm, go = procs
    try:
        assert go.stdout is not None
        port = int(go.stdout.readline().split()[1])
        grpc_port = free_port()
        receivers = f"""  ebpf: {{pids: [{py.pid}], duration: 1s, off_cpu: false}}
  python: {{pids: [{py.pid}], duration: 1s, discovery: false}}
  jfr: {{pids: [{jvm.pid}], duration: 2s, discover: false}}
  go:
    targets: [{{endpoint: "127.0.0.1:{port}"}}]
    discovery: true
    interval: 2s
    cpu_seconds: 1s
  otlp:
    protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}}}"""
        with agent_to_otlp_backend(tmp_path, receivers,
                                   ["ebpf", "python", "jfr", "go", "otlp"]) as run:
            backend = run.backend
            # BCC compiles in 10-15 s here, minutes when the machine is loaded
            assert wait_until(lambda: "ebpf receiver started" in run.tail(10**6), 400, 0.5), \
                run.tail()
            app = subprocess.run([sys.executable, str(TESTDATA / "python" / "asyncapp.py"),
                                  f"127.0.0.1:{grpc_port}", "0", "3", str(tmp_path / "app.json"),
                                  "0.5"], capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert app.returncode == 0, app.stderr
            assert wait_until(lambda: set(REQUIRED) <= set(_collect(backend)), 90, 0.5), \
                (sorted(_collect(backend)), run.tail())
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert backend.findings == [], backend.findings
    got = _collect(backend)
    pids = {"ebpf": py.pid, "python": py.pid, "jfr": jvm.pid, "go": go.pid}
    for producer, required in REQUIRED.items():
        resources = got[producer]
        if producer in pids:      # the workload's own resources (ebpf: nothing else asked)
            resources = [(r, k) for r, k in resources if r.get("process.pid") == pids[producer]]
        assert resources, producer
        for res, sample_keys in resources:
            assert required <= set(res), (producer, sorted(required - set(res)))
            assert not OLD & (set(res) | sample_keys), (producer, OLD & (set(res) | sample_keys))
            assert not {k for k in sample_keys if is_resource_key(k)}, (producer, sample_keys)
            assert res["service.name"] not in ("", "unknown_service"), (producer, res)
            if producer in THREADS and sample_keys:
                assert {"thread.id", "thread.name"} & sample_keys, (producer, sample_keys)
    # one process, one name: ebpf and python agree on who twohot.py is
    ebpf, pyres = (next(r for r, _ in got[p] if r.get("process.pid") == py.pid)
                   for p in ("ebpf", "python"))
    for key in ("process.executable.name", "process.executable.path", "service.name",
                "host.name", "host.id"):
        assert ebpf[key] == pyres[key], key
    assert ebpf["service.name"] == os.path.basename(os.path.realpath(python))
    assert next(r for r, _ in got["sdk"])["service.name"] == "asyncapp"
