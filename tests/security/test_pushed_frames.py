"""Pushed frames must not steer the root agent's file opens.

A local sender POSTs an OTLP profile to a running agent (otlp receiver →
symbolize → pprof_file) whose frames name a planted root-only ELF by path
with the agent's own pid, a build-id made of ``../``, a JIT address (the
agent would read ``/tmp/perf-<agent pid>.map``) and a kernel address. inotify
watches every planted file: none may be opened. Every refusal is counted in
``refused_inputs{source="symbolize"}``; a frame with a real build-id is still
named, from the host's debug directory only."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.formats import pprof
from telegen.formats.otlp import encode_request
from telegen.pdata import CPU, PUSHED, Frame, FrameKind, Mapping, Profile, Profiles, make_labels
from telegen.symbols.elf import ElfFile, read_build_id
from telegen.testing import require
from telegen.testing.agent import free_port, start_telegen, wait_until
from telegen.testing.hostile_elf import OpenWatch
from telegen.testing.native import compile_c

pytestmark = pytest.mark.slow

SECRET_SOURCE = """
__attribute__((noinline)) int secret_function_abc(int x) { return x * 7 + 1; }
int main(int argc, char **argv) { (void)argv; return secret_function_abc(argc); }
"""
LEGIT_SOURCE = """
__attribute__((noinline)) int legit_function_xyz(int x) { return x * 3 + 2; }
int main(int argc, char **argv) { (void)argv; return legit_function_xyz(argc); }
"""


def file_offset(binary: Path, name: str) -> int:
    elf = ElfFile(str(binary))
    try:
        table = elf.symbols(".symtab")
        assert table is not None
        vaddr = table.starts[table.names.index(name)]
        seg = next(s for s in elf.segments if s.vaddr <= vaddr < s.vaddr + s.memsz)
        return vaddr - seg.vaddr + seg.offset
    finally:
        elf.close()


def kernel_address() -> int:
    with open("/proc/kallsyms") as fh:
        for line in fh:
            addr, kind, name = line.split()[:3]
            if kind in "tT" and int(addr, 16) and name == "schedule":
                return int(addr, 16) + 4
    require.prerequisite(False, "/proc/kallsyms with addresses (root)")
    return 0


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A root-only directory under /root holding a real ELF (secret) and a
    copy of it named like a debug file (secret.debug)."""
    require.prerequisite(os.geteuid() == 0, "root (the agent runs as root)")
    build = tmp_path / "build"
    build.mkdir()
    secret_bin = compile_c(SECRET_SOURCE, build / "secret", flags=("-O1", "-g"))
    hidden = Path(tempfile.mkdtemp(prefix=".telegen-planted-", dir="/root"))
    os.chmod(hidden, 0o700)
    shutil.copy(secret_bin, hidden / "secret")
    shutil.copy(secret_bin, hidden / "secret.debug")
    for f in ("secret", "secret.debug"):
        os.chmod(hidden / f, 0o600)
    try:
        yield {"dir": hidden, "secret": hidden / "secret", "debug": hidden / "secret.debug",
               "build": secret_bin}
    finally:
        shutil.rmtree(hidden)


def hostile_profile(agent_pid: int, planted: dict[str, Path], legit: tuple[Path, str],
                    jit_address: int) -> Profile:
    secret, debug_dir_escape = planted["secret"], ".." + "/.." * 30 + str(planted["secret"])
    off = file_offset(planted["build"], "secret_function_abc")
    legit_bin, legit_id = legit
    legit_off = file_offset(legit_bin, "legit_function_xyz")
    by_path = Frame(FrameKind.NATIVE, off, Mapping(0, 1 << 20, 0, str(secret)))
    shadow = Frame(FrameKind.NATIVE, off + 1, Mapping(0, 1 << 20, 0, "/etc/shadow"))
    by_dotdot = Frame(FrameKind.NATIVE, off + 2,
                      Mapping(0, 1 << 20, 0, str(secret), debug_dir_escape))
    jit = Frame(FrameKind.JIT, jit_address, None)
    kernel = Frame(FrameKind.KERNEL, kernel_address(), Mapping(file="[kernel.kallsyms]"))
    # a real build-id, with the planted path beside it: named from the debug dir only
    legit = Frame(FrameKind.NATIVE, legit_off, Mapping(0, 1 << 20, 0, str(secret), legit_id))
    p = Profile(name="cpu", sample_types=CPU, period=10_000_000,
                resource={"pid": agent_pid, "process.pid": agent_pid})
    labels = make_labels(**{"process.pid": agent_pid})
    p.add((by_path, legit), [1, 10_000_000], labels)
    p.add((shadow, by_dotdot, jit, kernel), [1, 10_000_000], labels)
    return p


def refused(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("telegen_refused_inputs{") and 'source="symbolize"' in line:
            series, value = line.rsplit(" ", 1)
            reason = series.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = out.get(reason, 0) + float(value)
    return out


def test_otlp_push_cannot_make_the_agent_open_host_files(tmp_path: Path,
                                                         planted: dict[str, Path]) -> None:
    legit_bin = compile_c(LEGIT_SOURCE, tmp_path / "legit", flags=("-O1", "-g"))
    legit_id = read_build_id(str(legit_bin))
    debug_dir = tmp_path / "debug"
    debug_file = debug_dir / ".build-id" / legit_id[:2] / f"{legit_id[2:]}.debug"
    debug_file.parent.mkdir(parents=True)
    # the unstripped binary as the host's debug file of that build-id: an
    # objcopy --only-keep-debug file has its PT_LOAD offsets zeroed, and
    # without the binary nothing maps a file offset to an address (noted in
    # the report: objects.to_vaddr for debug-only objects)
    shutil.copy(legit_bin, debug_file)
    kept = legit_bin
    out_dir = tmp_path / "out"
    http_port, metrics_port = free_port(), free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
processors:
  symbolize:
    include_kernel: true
    debuginfod_urls: []
    debug_dirs: ["{debug_dir}"]
    debuginfod_cache_dir: "{tmp_path / 'dcache'}"
exporters:
  pprof_file: {{directory: "{out_dir}"}}
service:
  telemetry: {{metrics: {{level: basic, address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    profiles: {{receivers: [otlp], processors: [symbolize], exporters: [pprof_file]}}
""")
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    perf_map = Path(f"/tmp/perf-{agent.pid}.map")
    jit_address = 0x7F0000001000
    perf_map.write_text(f"{jit_address - 0x10:x} 100 SECRET_JIT_NAME\n")
    watch = OpenWatch([planted["secret"], planted["debug"], perf_map])
    try:
        assert wait_until(lambda: bool(refused(metrics_port)) or _serving(metrics_port), 60), \
            log.read_text()
        body = encode_request([hostile_profile(agent.pid, planted, (kept, legit_id),
                                               jit_address)]).SerializeToString()
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1development/profiles",
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        assert wait_until(lambda: bool(list(out_dir.glob("*.pb.gz"))), 30), log.read_text()
        counts = refused(metrics_port)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        opened = watch.opened()
        watch.close()
        perf_map.unlink(missing_ok=True)
    assert opened == [], opened                       # nothing planted was ever opened
    for reason in ("pushed_path", "bad_build_id", "pushed_pid", "pushed_kernel"):
        assert counts.get(reason, 0) >= 1, (reason, counts)
    names = set()
    for f in out_dir.glob("*.pb.gz"):
        for s in pprof.decode(f.read_bytes()):
            for frame in s.stack:
                names.update(ln.function for ln in frame.lines)
    assert "legit_function_xyz" in names, names       # build-id look-ups still work
    assert not {"secret_function_abc", "SECRET_JIT_NAME", "schedule"} & names, names
    text = log.read_text()
    assert text.count("refused symbolize (pushed_path)") == 1, text   # logged once


def _serving(port: int) -> bool:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    return True


def test_pprof_decoded_profiles_are_pushed_and_get_the_same_rule(
        tmp_path: Path, planted: dict[str, Path]) -> None:
    """The pprof decoder (pprof receiver, ui directories) marks profiles pushed;
    in-process: a pprof naming the planted file with this process's pid."""
    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor
    from telegen.telemetry import Registry
    from telegen.testing.sink import Sink

    legit_bin = compile_c(LEGIT_SOURCE, tmp_path / "legit", flags=("-O1", "-g"))
    profile = hostile_profile(os.getpid(), planted, (legit_bin, ""), 0x7F0000001000)
    decoded = pprof.decode(pprof.encode(profile))
    assert decoded.origin == PUSHED
    reg = Registry()
    sink = Sink()
    proc = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       reg.for_component("processor", "symbolize"), logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[], include_kernel=True,
                        debuginfod_cache_dir=str(tmp_path / "c")), sink)
    watch = OpenWatch([planted["secret"], planted["debug"]])
    try:
        proc.consume(Profiles([decoded]))
    finally:
        opened = watch.opened()
        watch.close()
        proc.shutdown()
    assert opened == []
    out = sink.profiles()[-1]
    assert all(not f.lines for s in out for f in s.stack)
    snap = reg.snapshot()
    assert sum(v for k, v in snap.items() if k.startswith("refused_inputs{")
               and 'reason="pushed_path"' in k) >= 2
    # the same frames, observed by this agent itself, are still symbolized by path
    observed = hostile_profile(os.getpid(), planted, (legit_bin, ""), 0x7F0000001000)
    proc2 = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       Registry().for_component("processor", "symbolize"),
                       logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[], debuginfod_cache_dir=str(tmp_path / "c")), sink)
    watch = OpenWatch([planted["secret"]])
    try:
        proc2.consume(Profiles([observed]))
    finally:
        opened = watch.opened()
        watch.close()
        proc2.shutdown()
    names = {ln.function for s in sink.profiles()[-1] for f in s.stack for ln in f.lines}
    assert "secret_function_abc" in names, names
    assert str(planted["secret"]) in opened        # the watch does see an open


def test_new_pushed_build_ids_are_rate_limited(tmp_path: Path) -> None:
    """Random build-ids pushed by the hundred cannot turn the agent into a
    debuginfod request cannon (nor flush its object cache): at most
    PUSHED_BUILD_IDS_PER_MINUTE new ones are looked up, the rest stay raw,
    counted, and are tried again in a later batch."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import (
        PUSHED_BUILD_IDS_PER_MINUTE,
        SymbolizeProcessor,
    )
    from telegen.telemetry import Registry
    from telegen.testing.sink import Sink

    asked: list[str] = []

    class Missing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Missing)
    Thread(target=httpd.serve_forever, daemon=True).start()
    reg, sink = Registry(), Sink()
    proc = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       reg.for_component("processor", "symbolize"), logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[f"http://127.0.0.1:{httpd.server_address[1]}"],
                        debug_dirs=[str(tmp_path / "none")],
                        debuginfod_cache_dir=str(tmp_path / "c")), sink)
    n = PUSHED_BUILD_IDS_PER_MINUTE + 80
    try:
        p = Profile(name="cpu", sample_types=CPU)
        p.origin = PUSHED
        for i in range(n):
            frame = Frame(FrameKind.NATIVE, 0x1000, Mapping(0, 1 << 20, 0, "/x", f"{i:040x}"))
            p.add((frame,), [1, 1])
        t0 = time.monotonic()
        proc.consume(Profiles([p]))
        refilled = int((time.monotonic() - t0) * PUSHED_BUILD_IDS_PER_MINUTE / 60) + 1
    finally:
        proc.shutdown()
        httpd.shutdown()
        httpd.server_close()
    assert PUSHED_BUILD_IDS_PER_MINUTE <= len(asked) <= PUSHED_BUILD_IDS_PER_MINUTE + refilled
    key = ('refused_inputs{component="symbolize",kind="processor",'
           'reason="build_id_rate",source="symbolize"}')
    assert reg.snapshot().get(key) == n - len(asked)
    assert len(sink.profiles()[-1]) == n            # every frame kept, raw


def test_pushed_build_ids_cannot_evict_observed_objects(
        tmp_path: Path, planted: dict[str, Path]) -> None:
    """A flood of pushed build-ids (each an object-cache entry) must not evict
    what observed processes need: pushed frames have their own caches."""
    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor
    from telegen.telemetry import Registry
    from telegen.testing.sink import Sink

    binary = planted["build"]
    bid = read_build_id(str(binary))
    off = file_offset(binary, "secret_function_abc")
    sink = Sink()
    proc = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       Registry().for_component("processor", "symbolize"),
                       logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[], debug_dirs=[str(tmp_path / "none")],
                        debuginfod_cache_dir=str(tmp_path / "c"), cache_size=8), sink)
    try:
        observed = Profile(name="cpu", sample_types=CPU)
        observed.add((Frame(FrameKind.NATIVE, off, Mapping(0, 1 << 20, 0, str(binary), bid)),),
                     [1, 1], make_labels(**{"process.pid": 0}))
        proc.consume(Profiles([observed]))
        assert sink.profiles()[-1].samples[0].stack[0].name == "secret_function_abc"
        kept = dict(proc.symbolizer._objects)
        assert len(kept) == 1
        flood = Profile(name="cpu", sample_types=CPU)
        flood.origin = PUSHED
        for i in range(50):
            flood.add((Frame(FrameKind.NATIVE, off, Mapping(0, 1 << 20, 0, "/x", f"{i:040x}")),),
                      [1, 1])
        proc.consume(Profiles([flood]))
        assert dict(proc.symbolizer._objects) == kept       # nothing evicted
    finally:
        proc.shutdown()
