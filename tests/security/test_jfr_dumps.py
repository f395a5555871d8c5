"""The JFR receiver against a hostile tenant, for real: a JVM run as
``nobody``, symlinks, renames and FIFOs planted as ``nobody`` (``setpriv``),
a root-only directory (0700 root:root) as the prize. Whatever the tenant
does, that directory keeps its owner, mode and content, the agent keeps
running, and each refusal is logged once and counted."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.jfr.config import JfrReceiverConfig
from telegen.receivers.jfr.dumpdir import DumpDirectory
from telegen.receivers.jfr.receiver import JfrReceiver
from telegen.telemetry import Registry
from telegen.testing import require
from telegen.testing.agent import wait_until
from telegen.testing.sink import Sink
from telegen.testing.tenant import (
    as_nobody,
    nobody_dir,
    nobody_ids,
    root_only_dir,
    run_as_nobody,
    snapshot,
    world_readable_dir,
)
from telegen.untrusted import Refused

pytestmark = pytest.mark.slow
JAVA_SRC = Path(__file__).resolve().parents[1] / "testdata" / "java" / "Workload.java"
LOG = "test.security.jfr"


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require.tools("javac", "java", "jcmd", "setpriv", provider="a JDK and util-linux")
    require.prerequisite(os.geteuid() == 0, "root (the agent's own privilege)")


@pytest.fixture(scope="module")
def classes() -> Iterator[Path]:
    out = world_readable_dir("telegen-jfr-classes-")
    subprocess.run(["javac", "-d", str(out), str(JAVA_SRC)], check=True, timeout=120)
    for f in out.iterdir():
        os.chmod(f, 0o644)
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def nobody_jvm(classes: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A JVM run by nobody, ready to be attached to."""
    jvm = subprocess.Popen(as_nobody(["java", "-cp", str(classes), "Workload", "0"]), cwd="/",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: os.path.exists(f"/tmp/hsperfdata_nobody/{jvm.pid}"), 30)
        assert os.stat(f"/proc/{jvm.pid}").st_uid == nobody_ids()[0]
        yield jvm
    finally:
        jvm.terminate()                 # SIGTERM: the JVM removes its hsperfdata file
        try:
            jvm.wait(15)
        except subprocess.TimeoutExpired:
            jvm.kill()
            jvm.wait()


@pytest.fixture
def victim() -> Iterator[Path]:
    d = root_only_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _receiver(**cfg: Any) -> tuple[JfrReceiver, Sink, Registry]:
    config = JfrReceiverConfig(**cfg)
    config.validate()
    registry, sink = Registry(), Sink()
    tel = registry.for_component("receiver", "jfr")
    rx = JfrReceiver(CreateSettings(ComponentID("jfr"), Kind.RECEIVER, tel,
                                    logging.getLogger(LOG)), config, sink)
    return rx, sink, registry


def _refused(registry: Registry, source: str, reason: str) -> int:
    return int(registry.for_component("receiver", "jfr").counter(
        "refused_inputs", source=source, reason=reason).value)


def _dump_dirs(parent: str = "/tmp") -> set[str]:
    return {n for n in os.listdir(parent) if n.startswith("telegen-jfr-")}


def _cpu_samples(sink: Sink) -> int:
    return sum(int(p.totals()[0]) for p in sink.profiles("cpu"))


def _alive(rx: JfrReceiver) -> bool:
    thread = next((t for t in threading.enumerate() if t.name == "receiver-jfr"), None)
    return thread is not None and thread.is_alive()


def test_the_issue_attack_plant_in_tmp_telegen_jfr_changes_nothing_and_jfr_still_works(
        nobody_jvm: subprocess.Popen[bytes], victim: Path) -> None:
    """The attack as filed: nobody made /tmp/telegen-jfr first with a
    symlink ``<jvm pid>`` -> a root-only directory. Now that directory is
    untouched, the dump directory is a fresh random one owned by the JVM's
    user, the JVM (run as nobody) still yields a profile, and nothing is
    left behind."""
    before = snapshot(victim)
    plant = Path("/tmp/telegen-jfr")
    if plant.is_symlink() or plant.is_file():
        plant.unlink()
    elif plant.exists():
        shutil.rmtree(plant)
    run_as_nobody(["mkdir", "-m", "0777", str(plant)])
    run_as_nobody(["ln", "-s", str(victim), f"{plant}/{nobody_jvm.pid}"])
    old_dirs = _dump_dirs()
    rx, sink, registry = _receiver(pids=[nobody_jvm.pid], discover=False, duration=2.0,
                                   scan_interval=0.5, jcmd_timeout=60.0)
    rx.start(host=None)  # type: ignore[arg-type]
    try:
        assert wait_until(lambda: _cpu_samples(sink) > 0, 90, 0.5), "no profile from the JVM"
        ours = _dump_dirs() - old_dirs
        assert len(ours) == 1
        st = os.lstat(f"/tmp/{ours.pop()}")
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert (st.st_uid, st.st_gid) == nobody_ids()        # fchown-ed to the JVM's user
    finally:
        rx.shutdown()
    assert snapshot(victim) == before
    assert os.readlink(f"{plant}/{nobody_jvm.pid}") == str(victim)   # the plant: not used
    assert _dump_dirs() - old_dirs == set()                          # cleaned up
    names = {s.stack[0].name for p in sink.profiles("cpu") for s in p if s.stack}
    assert "Workload.hotMethod" in names
    shutil.rmtree(plant)


def test_dump_directory_swapped_for_a_symlink_is_refused_logged_once_and_counted(
        nobody_jvm: subprocess.Popen[bytes], victim: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    before = snapshot(victim)
    tenant = nobody_dir("telegen-tenant-")
    run_as_nobody(["ln", "-s", str(victim), f"{tenant}/dumps"])
    rx, sink, registry = _receiver(pids=[nobody_jvm.pid], discover=False, duration=3600.0,
                                   scan_interval=0.2, dump_directory=f"{tenant}/dumps")
    try:
        with caplog.at_level(logging.DEBUG, logger=LOG):
            rx.start(host=None)  # type: ignore[arg-type]
            assert wait_until(lambda: _refused(registry, "jfr_dump_directory", "symlink") >= 1,
                              30)
            rx._failed.clear()                  # retry now instead of in 30 s: a second refusal
            assert wait_until(lambda: _refused(registry, "jfr_dump_directory", "symlink") >= 2,
                              30)
            assert _alive(rx)
    finally:
        rx.shutdown()
        shutil.rmtree(tenant)
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "refused jfr_dump_directory" in r.message]
    assert len(warnings) == 1
    assert snapshot(victim) == before
    assert rx.recorded_pids == []


RACER = r"""
import os, sys, time
parent, victim, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end, n = time.time() + seconds, 0
while time.time() < end:
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith("telegen-jfr-") and not os.path.islink(path):
            try:
                os.rename(path, os.path.join(parent, ".moved-%d" % n))
                os.symlink(victim, path)
                n += 1
            except OSError:
                pass
print(n)
"""


def test_a_tenant_racing_to_swap_the_fresh_directory_for_a_symlink_gains_nothing(
        nobody_jvm: subprocess.Popen[bytes], victim: Path) -> None:
    """The parent directory is the tenant's own (not sticky): it renames our
    fresh directory away as soon as it appears and puts a symlink to the
    root-only directory in its place. The agent works through descriptors
    and never by path, so nothing reaches the root-only directory."""
    before = snapshot(victim)
    tenant = nobody_dir("telegen-tenant-")
    os.chmod(tenant, 0o777)
    racer = subprocess.Popen(as_nobody([sys.executable, "-c", RACER, str(tenant), str(victim),
                                        "12"]), cwd="/", stdout=subprocess.PIPE, text=True)
    rx, sink, registry = _receiver(pids=[nobody_jvm.pid], discover=False, duration=1.0,
                                   scan_interval=0.2, dump_directory=str(tenant),
                                   jcmd_timeout=20.0)
    try:
        time.sleep(0.5)
        rx.start(host=None)  # type: ignore[arg-type]
        swaps = int(racer.communicate(timeout=60)[0].strip() or 0)
        assert _alive(rx)
    finally:
        rx.shutdown()
        if racer.poll() is None:
            racer.kill()
    assert swaps >= 1, "the racer never saw the agent's directory"
    assert snapshot(victim) == before
    shutil.rmtree(tenant)


FIFO_PLANTER = r"""
import os, sys, time
end, me, planted = time.time() + float(sys.argv[1]), os.getuid(), 0
while time.time() < end and not planted:
    for pid in os.listdir("/proc"):          # jcmd runs as us: its arguments name the dump
        try:
            if not pid.isdigit() or os.stat("/proc/" + pid).st_uid != me:
                continue
            args = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
        except OSError:
            continue
        for a in args:
            if a.startswith(b"filename=") and b"/dump-" in a:
                try:
                    os.mkfifo(a[len(b"filename="):].decode())
                    planted += 1
                    print(a[len(b"filename="):].decode())
                except OSError:
                    pass
    time.sleep(0.005)
"""


def test_a_fifo_planted_under_the_next_dump_name_costs_one_timeout_then_a_back_off(
        nobody_jvm: subprocess.Popen[bytes]) -> None:
    """The JVM's user reads jcmd's arguments (jcmd runs as that user) and
    plants a FIFO under the dump's random name before the JVM opens it: the
    JVM blocks writing, jcmd times out once, the session is dropped and
    retried after a back-off, so the receiver's lock is never held past one
    ``jcmd_timeout`` and shutdown has nothing left to wait for. The agent
    itself never opens a FIFO (O_NONBLOCK + S_ISREG; see the next test)."""
    planter = subprocess.Popen(as_nobody([sys.executable, "-c", FIFO_PLANTER, "150"]), cwd="/",
                               stdout=subprocess.PIPE, text=True)
    rx, sink, registry = _receiver(pids=[nobody_jvm.pid], discover=False, duration=1.0,
                                   scan_interval=0.5, jcmd_timeout=10.0)
    failures = registry.for_component("receiver", "jfr").counter("jfr_jcmd_failures")
    rx.start(host=None)  # type: ignore[arg-type]
    fifos: list[str] = []
    try:
        fifos = planter.communicate(timeout=200)[0].split()
        assert len(fifos) == 1
        t0 = time.monotonic()
        assert wait_until(lambda: failures.value >= 1, 30, 0.2)
        assert rx._lock.acquire(timeout=15.0), "the session lock is held"
        rx._lock.release()
        waited = time.monotonic() - t0
        assert rx.recorded_pids == []               # dropped, retried after the back-off
        assert _alive(rx)
    finally:
        if planter.poll() is None:
            planter.kill()
        t0 = time.monotonic()
        rx.shutdown(timeout_s=30)
        shutdown_s = time.monotonic() - t0
        # the JVM stays blocked opening the FIFO (its directory is gone with
        # the session), deaf to SIGTERM: killed, and its hsperfdata removed
        nobody_jvm.kill()
        nobody_jvm.wait()
        Path(f"/tmp/hsperfdata_nobody/{nobody_jvm.pid}").unlink(missing_ok=True)
    print(f"FIFO plant: one jcmd timeout, lock free {waited:.2f}s after the plant was seen; "
          f"shutdown took {shutdown_s:.2f}s")
    assert shutdown_s < 5
    assert failures.value == 1


def test_fifo_and_sparse_huge_dump_are_refused_fast(tmp_path: Path) -> None:
    """Measured: opening a FIFO or a sparse 100 GiB file planted under a
    dump's name is refused at once, reading nothing."""
    tenant = nobody_dir("telegen-tenant-")
    uid, gid = nobody_ids()
    d = DumpDirectory.create("/", str(tenant), uid, gid, {"telegen.jfc": b"<x/>"})
    try:
        run_as_nobody(["mkfifo", f"{tenant}/{d.name}/dump-1.jfr"])
        run_as_nobody(["truncate", "-s", "100G", f"{tenant}/{d.name}/dump-2.jfr"])
        timings = {}
        for name, reason in (("dump-1.jfr", "not_regular"), ("dump-2.jfr", "too_large")):
            t0 = time.perf_counter()
            with pytest.raises(Refused) as info:
                d.open_dump(name, 256 << 20)
            timings[name] = time.perf_counter() - t0
            assert info.value.reason == reason
        print(f"refused: FIFO in {timings['dump-1.jfr'] * 1e3:.2f} ms, sparse 100 GiB in "
              f"{timings['dump-2.jfr'] * 1e3:.2f} ms")
        assert max(timings.values()) < 0.5
    finally:
        d.remove()
        shutil.rmtree(tenant)


@pytest.fixture(scope="module")
def recording(classes: Path) -> Iterator[Path]:
    out = world_readable_dir("telegen-jfr-recording-")
    subprocess.run(["java", f"-XX:StartFlightRecording:filename={out}/r.jfr,settings=profile",
                    "-cp", str(classes), "Workload", "2"],
                   check=True, timeout=120, capture_output=True)
    os.chmod(out / "r.jfr", 0o644)
    yield out / "r.jfr"
    shutil.rmtree(out, ignore_errors=True)


def test_dropped_files_directory_does_not_follow_what_the_tenant_plants(
        recording: Path, victim: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``directory`` owned by the tenant: a symlink to a root-only recording,
    a FIFO, a sparse 100 GiB file, then the directory itself swapped for a
    symlink to the root-only directory. Only the tenant's own good recording
    is read (and deleted); nothing outside is read or deleted."""
    shutil.copy(recording, victim / "trap.jfr")
    os.chmod(victim / "trap.jfr", 0o600)
    before = snapshot(victim)
    tenant = nobody_dir("telegen-tenant-")
    drops = f"{tenant}/drops"
    run_as_nobody(["mkdir", drops])
    run_as_nobody(["cp", str(recording), f"{drops}/good.jfr"])
    run_as_nobody(["ln", "-s", f"{victim}/trap.jfr", f"{drops}/evil.jfr"])
    run_as_nobody(["mkfifo", f"{drops}/fifo.jfr"])
    run_as_nobody(["truncate", "-s", "100G", f"{drops}/huge.jfr"])
    rx, sink, registry = _receiver(directory=drops, discover=False, poll_interval=0.2,
                                   duration=3600.0, delete_after_read=True)

    def counted(reason: str, n: int = 1) -> bool:
        return _refused(registry, "jfr_file", reason) >= n
    try:
        with caplog.at_level(logging.DEBUG, logger=LOG):
            t0 = time.monotonic()
            rx.start(host=None)  # type: ignore[arg-type]
            assert wait_until(lambda: _cpu_samples(sink) > 0 and counted("symlink") and
                              counted("not_regular") and counted("too_large"), 30)
            first_pass = time.monotonic() - t0
            run_as_nobody(["mv", drops, f"{drops}.old"])
            run_as_nobody(["ln", "-s", str(victim), drops])
            assert wait_until(lambda: counted("symlink", 2), 10)     # the directory itself
            time.sleep(1.0)                                          # more polls
            assert _alive(rx)
    finally:
        rx.shutdown()
    print(f"first pass (good file read, symlink/FIFO/100 GiB refused): {first_pass:.2f}s")
    assert snapshot(victim) == before
    assert len(sink.profiles("cpu")) == 1
    old = set(os.listdir(f"{drops}.old"))
    assert old == {"evil.jfr", "fifo.jfr", "huge.jfr"}          # good.jfr read and deleted
    assert [_refused(registry, "jfr_file", r) for r in ("symlink", "not_regular", "too_large")
            ] == [2, 1, 1]
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING
              and "refused jfr_file" in r.message]
    assert len(warned) == 3                     # one per kind, however often it recurs
    shutil.rmtree(tenant)


CONTAINED_JVM = r"""
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec setpriv --reuid=nobody --regid=nogroup --clear-groups java -cp "$1" Workload 0
"""


def test_jvm_in_its_own_namespaces_is_recorded_with_nothing_written_on_the_host(
        tmp_path: Path) -> None:
    """A container-like JVM: own pid and mount namespaces, its own /tmp,
    run as nobody. Its profile arrives; the dump directory lives in its /tmp
    and nothing appears in the host's /tmp."""
    classes = Path(tempfile.mkdtemp(prefix="telegen-jfr-classes-", dir="/var/tmp"))
    os.chmod(classes, 0o755)
    subprocess.run(["javac", "-d", str(classes), str(JAVA_SRC)], check=True, timeout=120)
    for f in classes.iterdir():
        os.chmod(f, 0o644)
    outer = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child",
                              "--mount-proc", "--propagation", "private",
                              "sh", "-c", CONTAINED_JVM, "sh", str(classes)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host_before = _dump_dirs()
    try:
        pid = 0

        def started() -> bool:
            nonlocal pid
            kids = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
            if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "java":
                pid = int(kids[0])
            return bool(pid) and os.path.exists(f"/proc/{pid}/root/tmp/hsperfdata_nobody/1")
        assert wait_until(started, 30, 0.1)
        rx, sink, registry = _receiver(pids=[pid], discover=False, duration=2.0,
                                       scan_interval=0.5, jcmd_timeout=60.0)
        rx.start(host=None)  # type: ignore[arg-type]
        try:
            assert wait_until(lambda: _cpu_samples(sink) > 0, 90, 0.5), "no profile"
            inside = _dump_dirs(f"/proc/{pid}/root/tmp")
            assert len(inside) == 1
            st = os.stat(f"/proc/{pid}/root/tmp/{inside.pop()}")
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody_ids()[0], 0o700)
            assert _dump_dirs() == host_before
        finally:
            rx.shutdown()
        assert _dump_dirs(f"/proc/{pid}/root/tmp") == set()
        assert _dump_dirs() == host_before
        names = {s.stack[0].name for p in sink.profiles("cpu") for s in p if s.stack}
        assert "Workload.hotMethod" in names
    finally:
        if pid:             # setpriv's uid change cleared --kill-child's death signal
            os.kill(pid, signal.SIGKILL)
        outer.kill()
        outer.wait()
        shutil.rmtree(classes, ignore_errors=True)


def test_an_hsperfdata_file_planted_for_a_root_process_does_not_make_it_a_jvm() -> None:
    """jcmd attaches by sending SIGQUIT: had discovery taken nobody's
    ``/tmp/hsperfdata_nobody/<pid>`` for a root process as a JVM, root's
    jcmd would have killed that process. Only a file owned by the process's
    own user counts."""
    from telegen.receivers.jfr.discovery import find_jvms

    bindir = Path(tempfile.mkdtemp(prefix="telegen-bin-", dir="/var/tmp"))
    os.chmod(bindir, 0o755)
    sleep = str(shutil.copy("/bin/sleep", bindir / "sleep"))  # not beside a java launcher
    root_proc = subprocess.Popen([sleep, "60"])
    nobody_proc = subprocess.Popen(as_nobody([sleep, "60"]), cwd="/")
    try:
        run_as_nobody(["mkdir", "-p", "/tmp/hsperfdata_nobody"])
        for p in (root_proc, nobody_proc):
            run_as_nobody(["touch", f"/tmp/hsperfdata_nobody/{p.pid}"])
        found = {j.pid for j in find_jvms(pids=[], names=[], discover=True)}
        assert root_proc.pid not in found
        assert nobody_proc.pid in found          # its own user's file: looks like a JVM
    finally:
        for p in (root_proc, nobody_proc):
            p.kill()
            p.wait()
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/hsperfdata_nobody/{p.pid}")
        shutil.rmtree(bindir)
