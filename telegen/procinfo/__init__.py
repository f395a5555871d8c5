"""Process metadata from /proc: mappings, executable, command line, start
times, build-ids, container ids, namespaces, sockets, discovery scans. The
one owner of ``/proc``: every other module asks this package (a test,
tests/unit/test_proc_owner.py, fails on a ``/proc`` path anywhere else).
Pure library code (no BPF knowledge), shared by the receivers and the
symbolizer. Paths go through ``/proc/PID/root`` so files of processes in
containers are read from their own mount namespace."""

from telegen.procinfo.buildid import BuildIdCache, read_build_id
from telegen.procinfo.container import container_id_from_cgroup
from telegen.procinfo.maps import (
    MapEntry,
    MappedFile,
    executable_files,
    open_mapped,
    parse_maps,
    read_maps,
)
from telegen.procinfo.process import (
    ProcessCache,
    ProcessInfo,
    container_attributes,
    read_ids,
    read_process,
)
from telegen.procinfo.procfs import (
    KALLSYMS,
    PROC,
    Command,
    alive,
    fd_path,
    list_pids,
    process_root,
    read_command,
    read_text,
)
from telegen.procinfo.times import start_ticks, start_time_ns

__all__ = [
    "KALLSYMS", "PROC", "BuildIdCache", "Command", "MapEntry", "ProcessCache", "ProcessInfo",
    "alive", "container_attributes", "container_id_from_cgroup", "executable_files", "fd_path",
    "list_pids", "MappedFile", "open_mapped", "parse_maps", "process_root", "read_build_id",
    "read_command", "read_ids", "read_maps", "read_process", "read_text", "start_ticks",
    "start_time_ns",
]
