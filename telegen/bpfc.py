"""``python -m telegen.bpfc SOCKET_FD AGENT_PID``: the short-lived BPF compiler child.

The only module that imports ``bcc``. Reads ``{"options": BpfOptions fields}``
as JSON on stdin, narrows ``/proc/kallsyms`` for itself
(:mod:`telegen.bpf.kallsyms`), compiles the ``bpf/*.bpf.c`` set with
BCC/LLVM (SELF_TGID as a sentinel) and takes what BCC produced as a compiled
object (:mod:`telegen.bpf.compiled`: instructions, map relocations, map
definitions, attachments). It loads that object through
:mod:`telegen.bpf.loader` on BCC's maps — the same path the agent takes on
a start-up cache hit: the cpu-clock sampler first, then the tracepoints and
the programs the agent attaches itself (memory uprobes). With memory or
mutex profiling the compile is split (``BpfOptions.phases``): the sampler is
compiled alone, loaded and sampling while the rest compiles, whose programs
then refer to the maps the first phase made (the same kernel objects; BCC's
second copies are left unused and go with the child). It sends every
descriptor and a manifest carrying the object (for the agent's cache) over
the socketpair end ``SOCKET_FD`` (:mod:`telegen.bpf.handover`). What that
loader cannot load, BCC compiles again and loads itself (not cacheable).
Then it exits at once (``os._exit``: BCC's atexit clean-up would disable
the perf events the agent now holds), and libbcc/LLVM leave with it. Dies
with the agent (PR_SET_PDEATHSIG). A failure is printed on stderr, exit
status 2.
"""
from __future__ import annotations

import base64
import ctypes
import json
import os
import signal
import socket
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PROG_TYPES = {"kprobe": 2, "tracepoint": 5, "perf_event": 7, "raw_tracepoint": 17}
MAX_REQUEST = 1 << 20
# No debug information in the compiles telegen.bpf.loader loads: BCC's default
# -g only feeds the BTF BCC itself would load the programs with; the loader
# loads the bare instructions (the same either way: the integration test
# compares them), and DWARF for every type was 10-20% of the compile's CPU.
NO_DEBUG_INFO = ["-g0"]


def _die_with_parent(agent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != agent_pid:          # the agent died before prctl took effect
        os._exit(3)


def compile_and_load(request: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """Compile with BCC, then load and attach what it produced through
    :mod:`telegen.bpf.loader` (the agent's own path on a cache hit) on BCC's
    maps, phase by phase (:meth:`BpfOptions.phases`: the cpu sampler
    sampling while the rest compiles; a later phase's programs refer to the
    maps the earlier ones made). The manifest carries the compiled object
    (the phases merged) for the agent's cache."""
    from telegen.bpf import compiled
    from telegen.bpf.loader import LoadError, Loading
    from telegen.receivers.ebpf.bpf_loader import BpfOptions

    options = BpfOptions(**request["options"])
    marks = {"child_start": float(request.get("child_start", time.monotonic()))}
    t0 = time.monotonic()
    try:
        from bcc import BPF  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"cannot import bcc ({exc}); doctor check 'bcc' fails: install "
                         "python3-bpfcc and link it into the venv (make install)") from exc
    t1 = marks["bcc_imported"] = time.monotonic()
    loading = Loading(self_tgid=options.self_tgid, sample_rate=options.sample_rate)
    compile_s = 0.0
    obj: dict[str, Any] | None = None
    try:
        if request.get("loader") == "bcc":
            raise compiled.ObjectError("BCC's own loader asked for")
        for n, files in enumerate(options.phases()):
            start = time.monotonic()
            part, map_fds = compile_object(options, files)
            marks["compiled" if n == 0 else f"compiled_{n + 1}"] = done = time.monotonic()
            compile_s += done - start
            obj = part if obj is None else compiled.merge(obj, part)
            loading.add(part, map_fds)
        assert obj is not None
        check_self_tgid(obj, options)
    except (compiled.ObjectError, LoadError) as exc:
        # what telegen.bpf.loader cannot load (a relocation it does not know, a
        # program the kernel wants with its BTF) BCC loads itself: compiled
        # again with the agent's pid, not cacheable, never lost
        loading.abort()
        fds, manifest = bcc_compile_and_load(options)
        manifest["fallback"] = str(exc)[:4000]
        return fds, manifest
    except BaseException:
        loading.abort()
        raise
    fds, manifest = loading.finish()
    manifest["timings"] = {"import_s": t1 - t0, "compile_s": compile_s, **manifest["timings"]}
    manifest["marks"] = {**marks, **manifest["marks"]}
    manifest["object"] = obj
    return fds, manifest


def check_self_tgid(obj: dict[str, Any], options: Any) -> None:
    from telegen.bpf.compiled import ObjectError

    if not options.self_profile and not any(p["self_tgid"] for p in obj["programs"].values()):
        raise ObjectError("SELF_TGID: the sentinel is in no instruction (the agent would "
                          "profile itself)")


def bcc_compile_and_load(options: Any) -> tuple[list[int], dict[str, Any]]:
    """BCC compiles, loads and attaches by itself (its autoload, load_func,
    attach_perf_event); the manifest of what it holds."""
    from bcc import BPF, PerfSWConfig, PerfType
    from bcc.libbcc import lib

    t1 = time.monotonic()
    bpf = _compile(BPF, options, options.cflags())
    t2 = time.monotonic()
    for name, kind in options.programs().items():
        bpf.load_func(name.encode(), PROG_TYPES[kind])
    if options.cpu:
        try:
            bpf.attach_perf_event(ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                                  fn_name=b"on_cpu_sample", sample_freq=options.sample_rate,
                                  cpu=-1)
        except Exception as exc:
            raise SystemExit(f"attaching the cpu-clock perf event failed: {exc}; doctor "
                             "check 'perf_event access' / 'capabilities'") from exc
    from telegen.bpf.compiled import manifest_map
    from telegen.bpf.syscall import prog_info

    fds: list[int] = []

    def index(fd: int) -> int:
        fds.append(fd)
        return len(fds) - 1

    definitions, map_fds = _maps(bpf, lib)
    maps = {name: manifest_map(d, index(map_fds[name])) for name, d in definitions.items()}
    programs = {fn.name.decode(): {"fd": index(fn.fd), "type": prog_info(fn.fd).type}
                for fn in bpf.funcs.values()}
    links = [{"fd": index(fd), "what": f"tracepoint {tp.decode()}"}
             for tp, fd in bpf.tracepoint_fds.items()]
    links += [{"fd": index(fd), "what": f"raw_tracepoint {tp.decode()}"}
              for tp, fd in bpf.raw_tracepoint_fds.items()]
    for (ev_type, ev_config), per_cpu in bpf.open_perf_events.items():
        links += [{"fd": index(fd), "what": f"perf_event {ev_type}:{ev_config} cpu {cpu}"}
                  for cpu, fd in per_cpu.items()]
    return fds, {"maps": maps, "programs": programs, "links": links, "loader": "bcc",
                 "timings": {"compile_s": t2 - t1, "load_s": time.monotonic() - t2}}


def wanted_programs(options: Any, names: list[str],
                    files: list[str] | None = None) -> dict[str, tuple[int, Any]]:
    """The functions to load of a compile of ``files`` (default: all):
    name -> (program type, attachment), as BCC's autoload
    (TRACEPOINT_PROBE, RAW_TRACEPOINT_PROBE) plus the sampler and the
    programs the agent attaches itself."""
    files = options.source_files() if files is None else files
    out: dict[str, tuple[int, Any]] = {}
    for name in names:
        if name.startswith("tracepoint__"):
            target = name[len("tracepoint__"):].replace("__", ":", 1)
            out[name] = (PROG_TYPES["tracepoint"], {"kind": "tracepoint", "target": target})
        elif name.startswith("raw_tracepoint__"):
            out[name] = (PROG_TYPES["raw_tracepoint"],
                         {"kind": "raw_tracepoint", "target": name[len("raw_tracepoint__"):]})
        elif name.startswith(("kprobe__", "kretprobe__", "kfunc__", "kretfunc__", "lsm__")):
            from telegen.bpf.compiled import ObjectError

            raise ObjectError(f"BPF function {name}: telegen.bpf.loader does not attach "
                              "its kind")
    if options.cpu and "cpu.bpf.c" in files:
        out["on_cpu_sample"] = (PROG_TYPES["perf_event"], {"kind": "cpu_clock"})
    if "memory.bpf.c" in files:
        for name, kind in options.programs().items():
            out[name] = (PROG_TYPES[kind], None)
    return out


def compile_object(options: Any, files: list[str] | None = None
                   ) -> tuple[dict[str, Any], dict[str, int]]:
    """BCC's compile of ``files`` (default: every selected one) with
    ``options``' flags as a compiled object (:mod:`telegen.bpf.compiled`),
    SELF_TGID as the sentinel, and the fds of the maps BCC created for it
    (name -> fd; they live as long as this process)."""
    from bcc import BPF
    from bcc.libbcc import lib

    from telegen.bpf import compiled

    class Compiler(BPF):  # type: ignore[misc]
        def _trace_autoload(self) -> None:     # loaded and attached by telegen.bpf.loader
            pass

    cflags = [f"-DSELF_TGID={compiled.SELF_TGID_SENTINEL}" if f.startswith("-DSELF_TGID=")
              else f for f in options.cflags()] + NO_DEBUG_INFO
    bpf = _compile(Compiler, options, cflags, files)
    maps, map_fds = _maps(bpf, lib)
    fd_names = {fd: name for name, fd in map_fds.items()}
    names = [lib.bpf_function_name(bpf.module, i).decode()
             for i in range(lib.bpf_num_functions(bpf.module))]
    programs: dict[str, Any] = {}
    for name, (prog_type, attach) in wanted_programs(options, names, files).items():
        if name not in names:
            raise SystemExit(f"BPF function {name} is not in the compiled programs")
        insns, relocs, tgid = compiled.extract_relocations(bpf.dump_func(name.encode()),
                                                           fd_names)
        programs[name] = {"type": prog_type, "attach": attach, "maps": relocs,
                          "self_tgid": tgid, "insns": base64.b64encode(insns).decode()}
    obj = {"format": compiled.FORMAT, "maps": maps, "programs": programs,
           "license": lib.bpf_module_license(bpf.module).decode(),
           "kern_version": lib.bpf_module_kern_version(bpf.module)}
    return compiled.check(obj), map_fds


def _compile(cls: Any, options: Any, cflags: list[str], files: list[str] | None = None) -> Any:
    try:
        return cls(text=options.source(files).encode(), cflags=cflags)
    except Exception as exc:
        raise SystemExit(f"BPF compile/load failed: {exc}; run `telegen doctor` (checks "
                         "'kernel headers', 'bpf syscall', 'capabilities')") from exc


def _maps(bpf: Any, lib: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """BCC's maps: name -> definition (as a compiled object holds it:
    :mod:`telegen.bpf.compiled`), name -> its fd here."""
    from telegen.bpf import layout
    from telegen.bpf.syscall import map_info

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    maps: dict[str, Any] = {}
    map_fds: dict[str, int] = {}
    for i in range(lib.bpf_num_tables(bpf.module)):
        raw = lib.bpf_table_name(bpf.module, i)
        name = raw.decode()
        fd = lib.bpf_table_fd(bpf.module, raw)
        info = map_info(fd)
        # BCC's own type decoding, without its Table classes (which refuse
        # e.g. a per-CPU array of structs whose size is not a multiple of 8)
        key = _decode(lib.bpf_table_key_desc(bpf.module, raw))
        leaf = _decode(lib.bpf_table_leaf_desc(bpf.module, raw))
        map_fds[name] = fd
        maps[name] = {"kname": info.name or name[:15], "type": info.type,
                      "key_size": info.key_size, "value_size": info.value_size,
                      "max_entries": info.max_entries, "flags": info.flags,
                      "key": layout.describe(key) if key is not None else None,
                      "leaf": layout.describe(leaf) if leaf is not None else None}
    return maps, map_fds


def _decode(desc: bytes | None) -> Any:
    from bcc import BPF

    return BPF._decode_table_type(json.loads(desc)) if desc else None


def main(argv: list[str]) -> int:
    sock_fd, agent_pid = int(argv[1]), int(argv[2])
    _die_with_parent(agent_pid)
    sock = socket.socket(fileno=sock_fd)
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    try:
        from telegen.bpf import kallsyms

        # before bcc is imported: BCC's rewriter then loads a few lines, not 120k
        narrowed = kallsyms.narrow() if request.get("narrow_kallsyms", True) else "full"
        fds, manifest = compile_and_load(request)
        manifest["kallsyms"] = narrowed
        from telegen.bpf.handover import send

        send(sock, fds, manifest)
    except SystemExit as exc:
        print(exc.code, file=sys.stderr, flush=True)
        os._exit(2)
    except BaseException as exc:
        print(f"telegen.bpfc: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(2)
    sys.stderr.flush()
    os._exit(0)       # not sys.exit: BCC's atexit clean-up must not run


if __name__ == "__main__":
    main(sys.argv)
