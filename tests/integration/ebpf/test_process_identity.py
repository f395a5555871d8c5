"""A process in a containerd container of a Kubernetes pod, as seen by the
whole-host ``ebpf`` receiver and sent over OTLP (root + BPF, real cgroups).

The cgroups are named as containerd names them under the kubelet's systemd
driver (cgroup v2: ``kubepods.slice/kubepods-burstable.slice/
kubepods-burstable-pod<uid, - as _>.slice/cri-containerd-<id>.scope``) and, for
a second process, as under the cgroupfs driver on a cgroup v1 hierarchy
(``/kubepods/besteffort/pod<uid>/<id>``). Each CPU-busy process is started with
its own ``OTEL_SERVICE_NAME`` and moved into its cgroup before the agent starts;
the agent exports to the fake OTLP backend (which runs profcheck on every
request). Each process must arrive as its own ``ResourceProfiles`` whose
resource carries ``container.id``, ``k8s.pod.uid``, ``service.name``,
``process.pid`` and ``process.executable.name``. The cgroups are removed after.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from telegen.testing.agent import wait_until
from telegen.testing.backends import OtlpBackend
from telegen.testing.otlp_agent import agent_to_otlp_backend

pytestmark = pytest.mark.bpf
BUSY = "import time\nend = time.time() + 900\nwhile time.time() < end: pass\n"   # killed at the end


def _mount(fstype: str, option: str = "") -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        dev, where, kind, opts, *_ = line.split()
        if kind == fstype and (not option or option in opts.split(",")):
            return Path(where)
    pytest.fail(f"no {fstype} {option} hierarchy mounted on this machine", pytrace=False)


@dataclass
class Pod:
    uid: str
    container_id: str
    service: str
    leaf: Path                      # the container's cgroup directory
    created: list[Path]             # directories this test made, outermost first
    process: subprocess.Popen[bytes] | None = None


def _make(root: Path, parts: list[str]) -> tuple[Path, list[Path]]:
    created, path = [], root
    for part in parts:
        path = path / part
        if not path.exists():
            path.mkdir()
            created.append(path)
    return path, created


def _start_in(pod: Pod) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OTEL_SERVICE_NAME": pod.service}
    pod.process = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
    (pod.leaf / "cgroup.procs").write_text(f"{pod.process.pid}\n")      # moved into it


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    made: list[Pod] = []
    try:
        uid = str(uuid.uuid4())
        parts = ["kubepods.slice", "kubepods-burstable.slice",
                 f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"]
        cid = secrets.token_hex(32)
        leaf, created = _make(_mount("cgroup2"), [*parts, f"cri-containerd-{cid}.scope"])
        made.append(Pod(uid, cid, "checkout", leaf, created))
        uid2, cid2 = str(uuid.uuid4()), secrets.token_hex(32)
        leaf2, created2 = _make(_mount("cgroup", "pids"),
                                ["kubepods", "besteffort", f"pod{uid2}", cid2])
        made.append(Pod(uid2, cid2, "cart", leaf2, created2))
        for pod in made:
            _start_in(pod)
        yield made
    finally:
        for pod in made:
            if pod.process is not None:
                pod.process.kill()
                pod.process.wait()
            for d in reversed(pod.created):
                wait_until(lambda d=d: not (d / "cgroup.procs").read_text().strip(), 5)  # type: ignore[misc]
                d.rmdir()


def _resources(backend: OtlpBackend) -> list[dict[str, object]]:
    out = []
    for req in backend.requests():
        for rp in req.resource_profiles:
            attrs: dict[str, object] = {}
            for kv in rp.resource.attributes:
                v = kv.value
                attrs[kv.key] = v.int_value if v.WhichOneof("value") == "int_value" \
                    else v.string_value
            samples = sum(len(p.samples) for sp in rp.scope_profiles for p in sp.profiles)
            out.append({**attrs, "_samples": samples})
    return out


@pytest.mark.timeout(900)
def test_a_pod_container_process_arrives_as_its_own_otlp_resource(
        pods: list[Pod], tmp_path: Path) -> None:
    for pod in pods:
        assert pod.process is not None
        text = Path(f"/proc/{pod.process.pid}/cgroup").read_text()
        assert pod.container_id in text, text
    pids = {pod.process.pid for pod in pods if pod.process is not None}
    with agent_to_otlp_backend(
            tmp_path, "  ebpf: {sample_rate: 99, duration: 1s, off_cpu: false}",
            ["ebpf"]) as run:
        backend = run.backend
        # BCC compiles in 10-15 s here, minutes when the machine is loaded
        assert wait_until(lambda: pids <= {r.get("process.pid") for r in _resources(backend)},
                          400, 0.5), run.tail()
    assert backend.findings == [], backend.findings
    resources = _resources(backend)
    exe = os.path.basename(os.path.realpath(sys.executable))
    for pod in pods:
        assert pod.process is not None
        mine = [r for r in resources if r.get("process.pid") == pod.process.pid]
        assert mine and all(r["_samples"] for r in mine)
        for r in mine:
            assert r["container.id"] == pod.container_id
            assert r["k8s.pod.uid"] == pod.uid
            assert r["service.name"] == pod.service
            assert r["process.executable.name"] == exe
            assert r["host.name"] and r["host.id"]
    # every other resource is one process too, named (never unknown_service
    # where the executable is known)
    for r in resources:
        if "process.pid" in r and r.get("process.executable.name"):
            assert r["service.name"] != "unknown_service", r
