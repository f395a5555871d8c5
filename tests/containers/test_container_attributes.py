"""procinfo's view of a process in a real container: the id podman reports,
the pid inside the container next to the host pid; nothing for a host process."""

from __future__ import annotations

import os

from telegen.procinfo import container_attributes
from telegen.procinfo.process import read_process
from telegen.testing import containers


def test_container_id_and_vpid_of_a_podman_container(base_image: str) -> None:
    command = ["sh", "-c", "sleep 60 & echo ready; wait"]
    with containers.running(base_image, command, ready="ready") as c:
        podman_id = containers.inspect(c.id, "{{.Id}}")
        [sleeper] = [p for p in c.host_pids() if p != c.pid]
        inner = containers.nspid(sleeper)
        assert len(inner) == 2 and inner[0] == sleeper and inner[1] > 1
        assert container_attributes(sleeper) == {"container.id": podman_id,
                                                 "process.vpid": inner[1]}
        info = read_process(sleeper)
        assert info is not None
        assert (info.container_id, info.vpid, info.exe) == (podman_id, inner[1],
                                                            "/usr/bin/sleep")
    assert container_attributes(os.getpid()) == {}
