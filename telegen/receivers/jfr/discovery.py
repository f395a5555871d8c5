"""Finding JVMs: by pid, by name, or by discovery (a ``java`` launcher
executable, or a HotSpot ``hsperfdata_<user>/<pid>`` file in the process's
own /tmp, reached inside the process's root without following its symlinks,
so JVMs in containers are found)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from telegen.procinfo import PROC, process_root, read_command, read_ids
from telegen.procinfo.scan import find_targets
from telegen.untrusted import Refused, open_in_root

_MAX_PERF_DIRS = 64


@dataclass(frozen=True, slots=True)
class JvmProcess:
    pid: int
    nspid: int          # the pid inside the JVM's own pid namespace
    comm: str
    exe: str            # inside its mount namespace, " (deleted)" removed
    cmdline: tuple[str, ...]
    uid: int
    gid: int


def read_jvm(pid: int, proc: str = PROC) -> JvmProcess | None:
    ids = read_ids(pid, proc)
    command = read_command(pid, proc)
    if ids is None or command is None:
        return None
    return JvmProcess(pid, ids.nspid or pid, command.comm, command.exe, command.cmdline,
                      ids.uid, ids.gid)


def looks_like_jvm(p: JvmProcess, proc: str = PROC) -> bool:
    if os.path.basename(p.exe) == "java":
        return True
    return has_hsperfdata(p, proc)


def has_hsperfdata(p: JvmProcess, proc: str = PROC) -> bool:
    """A regular ``/tmp/hsperfdata_*/<nspid>`` file in the process's own root,
    owned by the process's user (another user's planted file, or a symlink,
    does not make a root process look like a JVM for jcmd to signal)."""
    try:
        tmp = open_in_root(process_root(p.pid, proc), "/tmp", directory=True)
    except (Refused, OSError):
        return False
    try:
        with os.scandir(tmp) as it:
            names = [e.name for e in it if e.name.startswith("hsperfdata_")][:_MAX_PERF_DIRS]
        for name in names:
            try:
                fd = open_in_root(tmp, f"{name}/{p.nspid}")
            except (Refused, OSError):
                continue
            try:
                if os.fstat(fd).st_uid == p.uid:
                    return True
            finally:
                os.close(fd)
        return False
    except OSError:
        return False
    finally:
        os.close(tmp)


def is_jdk_tool(p: JvmProcess) -> bool:
    """A JDK launcher other than ``java`` (jcmd, jfr, javac, jps...)."""
    exe = p.exe
    base = os.path.basename(exe)
    return base != "java" and os.path.basename(os.path.dirname(exe)) == "bin" and \
        os.path.exists(os.path.join(os.path.dirname(exe), "java"))


def name_tokens(p: JvmProcess) -> set[str]:
    """Names a JVM answers to: comm, launcher name, main class (and its last
    dotted part) or jar file name."""
    tokens = {p.comm, os.path.basename(p.exe)}
    args = list(p.cmdline[1:])
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg in ("-cp", "-classpath", "--class-path", "-p", "--module-path"):
            skip_next = True
            continue
        if arg.startswith("-"):
            continue
        tokens.add(os.path.basename(arg))
        tokens.add(arg.rsplit(".", 1)[-1] if not arg.endswith(".jar") else arg)
        tokens.add(arg.split("/", 1)[-1])     # module/main.Class
        break                                 # the rest are the program's arguments
    for i, arg in enumerate(args):
        if arg == "-jar" and i + 1 < len(args):
            tokens.add(os.path.basename(args[i + 1]))
    tokens.discard("")
    return tokens


def find_jvms(*, pids: list[int], names: list[str], discover: bool,
              proc: str = PROC, self_pid: int | None = None) -> list[JvmProcess]:
    """JVMs to record now. Listed pids are taken as they are (jcmd will tell
    if one is not a JVM); names and discovery only pick processes that look
    like JVMs, never the JDK's own tools (jcmd, jfr, javac... are JVMs too)."""
    return find_targets(
        pids=pids, names=names, discover=discover, proc=proc, self_pid=self_pid,
        read=lambda pid: read_jvm(pid, proc),
        accept=lambda p: bool(p.cmdline) and looks_like_jvm(p, proc) and not is_jdk_tool(p),
        tokens=name_tokens)
