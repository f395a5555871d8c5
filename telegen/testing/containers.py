"""Real containers for tests: podman with the flags this kind of machine needs
(shared/MACHINE.md, "Real containers"), images built once and cached, and a
context manager that runs a workload in a container and always removes it.

No registry is reachable: every image derives from ``localhost/debian:12``,
which ``scripts/container-base.sh`` makes with debootstrap (cached outside
the repository). Derived images carry a ``telegen.hash`` label, the hash of
everything they are built from, and are rebuilt only when it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/debian:12"
# crun refuses this VM's hybrid cgroups; runc with cgroupfs works.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
# Without explicit limits runc fails with "setrlimit ... Operation not permitted".
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# apt inside a build or container reaches Debian's mirror through the host's
# network and apt configuration.
APT_ACCESS = ("--network=host", "--volume", "/etc/apt:/etc/apt:ro")
HASH_LABEL = "telegen.hash"


class ContainerError(RuntimeError):
    """podman failed; the message carries its stderr."""


def podman(*args: str, timeout: float = 120, check: bool = True,
           input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``podman`` with the runtime flags; raises ContainerError on failure."""
    proc = subprocess.run([*PODMAN, *args], capture_output=True, timeout=timeout,
                          input=input, check=False)
    if check and proc.returncode != 0:
        raise ContainerError(f"podman {' '.join(args[:3])}... -> {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def available() -> str:
    """"" when podman and root are there, else what is missing."""
    if shutil.which("podman") is None:
        return "podman (scripts/setup-host.sh installs it)"
    if os.geteuid() != 0:
        return "root (rootful podman storage holds the test images)"
    return ""


def base_image() -> str:
    """``localhost/debian:12``, made by scripts/container-base.sh when missing."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "container-base.sh")],
                              capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise ContainerError(f"container-base.sh failed: {proc.stderr[-2000:]}")
    return BASE_IMAGE


def image_label(image: str, label: str) -> str | None:
    """A label of a local image; None when there is no such image."""
    proc = podman("image", "inspect", "--format", "{{json .Labels}}", image, check=False)
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout or b"null") or {}
    return str(labels.get(label, ""))


def content_hash(*parts: bytes | str | Path) -> str:
    """sha256 over the parts (files by content), for the image's hash label."""
    h = hashlib.sha256()
    for part in parts:
        data = part.read_bytes() if isinstance(part, Path) else \
            part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


def build_image(tag: str, containerfile: str, *, files: Mapping[str, bytes] | None = None,
                apt: bool = True, timeout: float = 900) -> str:
    """Build ``containerfile`` (a text; ``files`` become its build context) as
    ``tag`` unless an image with the same content hash exists; returns ``tag``."""
    base_image()
    files = dict(files or {})
    digest = content_hash(containerfile, *(f"{k}\0".encode() + v
                                           for k, v in sorted(files.items())))
    if image_label(tag, HASH_LABEL) == digest:
        return tag
    with tempfile.TemporaryDirectory(prefix="telegen-image-") as ctx:
        for name, data in files.items():
            path = Path(ctx) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (Path(ctx) / "Containerfile").write_text(containerfile)
        previous = image_id(tag)
        podman("build", "--quiet", *(APT_ACCESS if apt else ()), *ULIMITS,
               "--label", f"{HASH_LABEL}={digest}", "-t", tag,
               "-f", str(Path(ctx) / "Containerfile"), ctx, timeout=timeout)
    _drop_replaced(tag, previous)
    return tag


def image_id(image: str) -> str:
    proc = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return proc.stdout.decode().strip() if proc.returncode == 0 else ""


def _drop_replaced(tag: str, previous: str) -> None:
    """A rebuild leaves the old image untagged: remove it (still used: kept)."""
    if previous and previous != image_id(tag):
        podman("rmi", previous, check=False)


def build_project_image(tag: str = "localhost/telegen:test", *,
                        timeout: float = 1200) -> tuple[str, float]:
    """The project's Dockerfile built from the local base by
    scripts/container-image.sh (podman's layer cache makes a rebuild after a
    code change take seconds); (tag, seconds taken)."""
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "container-image.sh"), tag],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ContainerError(f"container-image.sh failed: {proc.stderr[-3000:]}")
    return tag, time.monotonic() - t0


@dataclass(frozen=True)
class Container:
    id: str          # the 64-hex id podman reports (and the cgroup path names)
    name: str
    pid: int         # the host pid of the container's first process

    def exec(self, *cmd: str, user: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return podman("exec", *(("--user", user) if user else ()), self.id, *cmd,
                      timeout=timeout)

    def logs(self) -> str:
        proc = podman("logs", self.id, check=False)
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def host_pids(self) -> list[int]:
        """Host pids of every process in the container (``podman top``)."""
        out = podman("top", self.id, "hpid").stdout.decode().split()
        return [int(p) for p in out if p.isdigit()]


def inspect(container: str, fmt: str) -> str:
    return podman("inspect", "--format", fmt, container).stdout.decode().strip()


@contextmanager
def running(image: str, command: Sequence[str], *, user: str | None = None,
            copy_in: Sequence[tuple[Path | str, str]] = (),
            volumes: Sequence[str] = (), env: Mapping[str, str] | None = None,
            extra: Sequence[str] = (), ready: str | None = None,
            ready_timeout: float = 60) -> Iterator[Container]:
    """Run ``command`` in a new container of ``image`` and remove it on exit.

    ``copy_in``: (host path, container path) pairs copied into the container
    before it starts, as ``podman cp`` (so the files exist only inside it;
    ``"DIR/."`` copies a directory's content: a tree laid out as the root); ``user``: "uid:gid"
    to run as; ``ready``: a text the workload prints when it is ready.
    """
    name = f"telegen-test-{secrets.token_hex(6)}"
    args = ["create", "--name", name, *ULIMITS, *extra]
    if user:
        args += ["--user", user]
    for v in volumes:
        args += ["--volume", v]
    for k, val in (env or {}).items():
        args += ["--env", f"{k}={val}"]
    cid = podman(*args, image, *command).stdout.decode().strip()
    try:
        for src, dest in copy_in:
            podman("cp", str(src), f"{cid}:{dest}")
        podman("start", cid)
        pid = int(inspect(cid, "{{.State.Pid}}"))
        container = Container(id=cid, name=name, pid=pid)
        if ready is not None:
            _wait_for(container, ready, ready_timeout)
        yield container
    finally:
        # --volumes: the anonymous volumes of the image's VOLUMEs go with it
        podman("rm", "--force", "--volumes", "--time", "0", cid, check=False, timeout=60)


def _wait_for(container: Container, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = container.logs()
        if text in logs:
            return
        if inspect(container.id, "{{.State.Running}}") != "true":
            raise ContainerError(f"container exited before {text!r}: {logs[-2000:]}")
        time.sleep(0.1)
    raise ContainerError(f"no {text!r} within {timeout} s: {container.logs()[-2000:]}")


def nspid(host_pid: int, proc: str = "/proc") -> list[int]:
    """The ``NSpid`` line of ``/proc/PID/status``: the pid in each pid namespace,
    outermost first (the test's ground truth for the namespaced pid)."""
    with open(f"{proc}/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return [host_pid]
