"""``python -m telegen.bpfc SOCKET_FD AGENT_PID``: the short-lived BPF compiler child.

The only module that imports ``bcc``. Reads ``{"options": BpfOptions fields}``
as JSON on stdin, compiles the ``bpf/*.bpf.c`` set once (BCC/LLVM), loads
the programs, makes the attachments BCC makes at load (TRACEPOINT_PROBE,
RAW_TRACEPOINT_PROBE) plus the per-CPU cpu-clock perf events, loads the
programs the agent attaches itself later (memory uprobes), and sends every
descriptor with a manifest over the socketpair end ``SOCKET_FD``
(:mod:`telegen.bpf.handover`). Then it exits at once (``os._exit``: BCC's
atexit clean-up would disable the perf events the agent now holds), and
libbcc/LLVM leave with it. Dies with the agent (PR_SET_PDEATHSIG).
A failure is printed on stderr, exit status 2.
"""

from __future__ import annotations

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


def _die_with_parent(agent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != agent_pid:          # the agent died before prctl took effect
        os._exit(3)


def compile_and_load(request: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    from telegen.receivers.ebpf.bpf_loader import BpfOptions

    options = BpfOptions(**request["options"])
    t0 = time.monotonic()
    try:
        from bcc import BPF, PerfSWConfig, PerfType
        from bcc.libbcc import lib
    except ImportError as exc:
        raise SystemExit(f"cannot import bcc ({exc}); doctor check 'bcc' fails: install "
                         "python3-bpfcc and link it into the venv (make install)") from exc
    t1 = time.monotonic()
    try:
        bpf = BPF(text=options.source().encode(), cflags=options.cflags())
    except Exception as exc:
        raise SystemExit(f"BPF compile/load failed: {exc}; run `telegen doctor` (checks "
                         "'kernel headers', 'bpf syscall', 'capabilities')") from exc
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
    t3 = time.monotonic()
    return _manifest(bpf, lib, {"import_s": t1 - t0, "compile_s": t2 - t1,
                                "attach_s": t3 - t2})


def _manifest(bpf: Any, lib: Any, timings: dict[str, float]) -> tuple[list[int], dict[str, Any]]:
    from telegen.bpf import layout
    from telegen.bpf.syscall import map_info

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fds: list[int] = []

    def index(fd: int) -> int:
        fds.append(fd)
        return len(fds) - 1

    maps: dict[str, Any] = {}
    for i in range(lib.bpf_num_tables(bpf.module)):
        name = lib.bpf_table_name(bpf.module, i)
        fd = lib.bpf_table_fd(bpf.module, name)
        info = map_info(fd)
        # BCC's own type decoding, without its Table classes (which refuse
        # e.g. a per-CPU array of structs whose size is not a multiple of 8)
        key = _decode(lib.bpf_table_key_desc(bpf.module, name))
        leaf = _decode(lib.bpf_table_leaf_desc(bpf.module, name))
        maps[name.decode()] = {
            "fd": index(fd), "type": info.type, "max_entries": info.max_entries,
            "key_size": info.key_size, "value_size": info.value_size,
            "key": layout.describe(key) if key is not None else None,
            "leaf": layout.describe(leaf) if leaf is not None else None}
    programs = {fn.name.decode(): {"fd": index(fn.fd), "type": _prog_type(fn.fd)}
                for fn in bpf.funcs.values()}
    links = [{"fd": index(fd), "what": f"tracepoint {tp.decode()}"}
             for tp, fd in bpf.tracepoint_fds.items()]
    links += [{"fd": index(fd), "what": f"raw_tracepoint {tp.decode()}"}
              for tp, fd in bpf.raw_tracepoint_fds.items()]
    for (ev_type, ev_config), per_cpu in bpf.open_perf_events.items():
        links += [{"fd": index(fd), "what": f"perf_event {ev_type}:{ev_config} cpu {cpu}"}
                  for cpu, fd in per_cpu.items()]
    return fds, {"maps": maps, "programs": programs, "links": links, "timings": timings}


def _decode(desc: bytes | None) -> Any:
    from bcc import BPF

    return BPF._decode_table_type(json.loads(desc)) if desc else None


def _prog_type(fd: int) -> int:
    from telegen.bpf.syscall import prog_info

    return prog_info(fd).type


def main(argv: list[str]) -> int:
    sock_fd, agent_pid = int(argv[1]), int(argv[2])
    _die_with_parent(agent_pid)
    sock = socket.socket(fileno=sock_fd)
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    try:
        fds, manifest = compile_and_load(request)
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
