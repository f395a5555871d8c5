"""procinfo.identity and procinfo.container: who a process is, from the cgroup
path shapes the runtimes really write and from the process's own environment
(only OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, bounded)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from telegen.procinfo.container import CgroupIdentity, cgroup_identity, container_id_from_cgroup
from telegen.procinfo.identity import (
    ENVIRON_LIMIT,
    IdentityCache,
    host_attributes,
    otel_environment,
    read_identity,
    service_attributes,
)
from telegen.semconv import MAX_ATTRIBUTES, parse_resource_attributes
from telegen.testing.agent import wait_until

CID = "3f1c2b6a9d8e7f60" * 4            # 64 hex digits
UID = "6a7b9c1d-2e3f-4a5b-8c9d-0e1f2a3b4c5d"
UID_ = UID.replace("-", "_")             # as the kubelet's systemd driver escapes it
NONE = CgroupIdentity("", "")

# (runtime and driver, /proc/PID/cgroup text, expected). Shapes: the kubelet's
# CgroupName.ToSystemd / ToCgroupfs (pkg/kubelet/cm/cgroup_manager_linux.go:
# {"kubepods","burstable","pod<uid>"} -> /kubepods.slice/kubepods-burstable.slice/
# kubepods-burstable-pod<uid with - as _>.slice), containerd's getCgroupsPath
# ("<pod slice>:cri-containerd:<id>" under systemd, "<parent>/<id>" otherwise;
# runc names the unit <prefix>-<id>.scope), CRI-O's crio-<id>.scope and
# crio-conmon-<id>.scope, podman's libpod-<id>.scope (+ /container) and
# libpod-conmon-<id>.scope, docker's /docker/<id> and docker-<id>.scope.
SHAPES = [
    ("containerd systemd burstable v2",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n", CgroupIdentity(CID, UID)),
    ("containerd systemd besteffort v1 (several hierarchies)",
     f"12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n"
     f"11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n1:name=systemd:/kubepods.slice\n", CgroupIdentity(CID, UID)),
    ("containerd systemd guaranteed (no QoS level)",
     f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
     CgroupIdentity(CID, UID)),
    ("containerd cgroupfs burstable v1",
     f"4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n", CgroupIdentity(CID, UID)),
    ("containerd cgroupfs guaranteed v2", f"0::/kubepods/pod{UID}/{CID}\n",
     CgroupIdentity(CID, UID)),
    ("kind / nested kubelet",
     f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
     CgroupIdentity(CID, UID)),
    ("containerd rootless (user systemd)",
     f"0::/user.slice/user-1001.slice/user@1001.service/user.slice/cri-containerd-{CID}.scope\n",
     CgroupIdentity(CID, "")),
    ("cri-o systemd",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-{CID}.scope\n", CgroupIdentity(CID, UID)),
    ("cri-o conmon: the monitor, in the pod but no container",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-conmon-{CID}.scope\n", CgroupIdentity("", UID)),
    ("docker systemd v2", f"0::/system.slice/docker-{CID}.scope\n", CgroupIdentity(CID, "")),
    ("docker cgroupfs v1", f"12:pids:/docker/{CID}\n3:cpuset:/docker/{CID}\n",
     CgroupIdentity(CID, "")),
    ("docker under the kubelet's systemd driver",
     f"0::/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope\n",
     CgroupIdentity(CID, UID)),
    ("podman systemd", f"0::/machine.slice/libpod-{CID}.scope\n", CgroupIdentity(CID, "")),
    ("podman split / systemd inside",
     f"0::/machine.slice/libpod-{CID}.scope/container\n", CgroupIdentity(CID, "")),
    ("podman rootless",
     f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n",
     CgroupIdentity(CID, "")),
    ("podman cgroupfs", f"0::/libpod_parent/libpod-{CID}\n", CgroupIdentity(CID, "")),
    ("podman conmon", f"0::/machine.slice/libpod-conmon-{CID}.scope\n", NONE),
    ("host session", "0::/user.slice/user-0.slice/session-1.scope\n", NONE),
    ("host service", "0::/system.slice/ssh.service\n", NONE),
    ("own cgroup namespace", "0::/\n", NONE),
    ("a 64-hex service name is not a container",
     f"0::/system.slice/{CID}-helper.service\n", NONE),
    ("not a uid", "0::/kubepods/podnotauid/abc\n", NONE),
]


@pytest.mark.parametrize("text, expected", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_cgroup_shapes(text: str, expected: CgroupIdentity) -> None:
    assert cgroup_identity(text) == expected
    assert container_id_from_cgroup(text) == expected.container_id


def test_environment_keeps_only_the_two_variables_and_drops_a_cut_entry() -> None:
    block = (b"PATH=/bin\0AWS_SECRET_ACCESS_KEY=hunter2\0OTEL_SERVICE_NAME=checkout\0"
             b"OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop\0OTEL_SERVICE_NAME=second\0")
    env = otel_environment(block)
    assert env == {"OTEL_SERVICE_NAME": "checkout",
                   "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=shop"}
    # a block cut at the read limit: its last entry may be cut short
    assert otel_environment(b"A=1\0OTEL_SERVICE_NAME=check", complete=False) == {}


def test_resource_attributes_as_the_sdks_read_them_and_bounded() -> None:
    attrs = parse_resource_attributes(
        "service.name=cart, deployment.environment.name=prod%20eu ,bad, =x,team=a%2Cb")
    assert attrs == {"service.name": "cart", "deployment.environment.name": "prod eu",
                     "team": "a,b"}
    many = ",".join(f"k{i}=v" for i in range(1000))
    assert len(parse_resource_attributes(many)) == MAX_ATTRIBUTES
    assert len(parse_resource_attributes("k=" + "x" * 10_000)["k"]) == 256


def test_service_attributes_order_and_what_a_process_cannot_claim() -> None:
    got = service_attributes({
        "OTEL_SERVICE_NAME": "checkout\x1b[2J",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=cart,service.namespace=shop,"
                                    "k8s.pod.uid=someone-elses,container.id=forged,"
                                    "process.pid=1,host.name=other,k8s.namespace.name=ns"})
    # OTEL_SERVICE_NAME over service.name (the SDKs' order); escape made printable
    assert got == {"service.name": "checkout\\x1b[2J", "service.namespace": "shop",
                   "k8s.namespace.name": "ns"}


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    env = {"PATH": os.environ.get("PATH", "/bin:/usr/bin"), "DB_PASSWORD": "hunter2",
           "OTEL_SERVICE_NAME": "checkout",
           "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=shop,k8s.pod.uid=forged"}
    p = subprocess.Popen(["sleep", "30"], env=env)
    yield p
    p.kill()
    p.wait()


def test_a_live_process_identity(child: subprocess.Popen[bytes]) -> None:
    ident = read_identity(child.pid)
    assert ident is not None
    attrs = ident.attributes()
    assert attrs["service.name"] == "checkout" and attrs["service.namespace"] == "shop"
    assert attrs["process.pid"] == child.pid
    assert attrs["process.executable.name"] == "sleep"
    assert str(attrs["process.executable.path"]).endswith("/sleep")
    assert "k8s.pod.uid" not in attrs                # claimed, not in a pod's cgroup
    assert "hunter2" not in repr(ident)              # other variables never kept


def test_environ_is_read_within_its_bound() -> None:
    """A variable past ENVIRON_LIMIT is not seen; one before it is."""
    # one variable is at most 128 KiB (MAX_ARG_STRLEN): several make the block large
    big = {f"BIG{i}": "x" * 100_000 for i in range(ENVIRON_LIMIT // 100_000 + 1)}
    base = {"PATH": os.environ.get("PATH", "/bin:/usr/bin")}
    for env, expected in (({**big, "OTEL_SERVICE_NAME": "late"}, None),
                          ({"OTEL_SERVICE_NAME": "early", **big}, "early")):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**base, **env})
        try:
            # Popen returns once execve closed the child's descriptors, before
            # the kernel set up its new environment: an empty read until then
            assert wait_until(lambda p=p: read_identity(p.pid).environ_seen, 10)  # type: ignore[misc,union-attr]
            ident = read_identity(p.pid)
            assert ident is not None
            assert ident.attributes().get("service.name") == expected
        finally:
            p.kill()
            p.wait()


def test_identity_cache_rereads_when_the_process_changes(
        child: subprocess.Popen[bytes]) -> None:
    cache = IdentityCache(4)
    first, again = object(), object()
    a = cache.attributes(child.pid, first)
    assert cache.attributes(child.pid, first) is a           # same image: cached
    assert cache.attributes(child.pid, again) is not a       # exec / pid reuse: read again
    assert cache.attributes(2**22 + 7, first) == {"process.pid": 2**22 + 7}   # gone
    bare = subprocess.Popen(["/bin/sleep", "30"], env={})   # no environment at all
    try:                      # reads like one caught in execve: never cached
        assert not read_identity(bare.pid).environ_seen      # type: ignore[union-attr]
        assert cache.attributes(bare.pid, first) is not cache.attributes(bare.pid, first)
    finally:
        bare.kill()
        bare.wait()


def test_host_attributes() -> None:
    attrs = host_attributes()
    assert attrs["host.name"] and attrs["os.type"] == "linux"
    with open("/etc/machine-id") as f:
        assert attrs["host.id"] == f.read().strip()
