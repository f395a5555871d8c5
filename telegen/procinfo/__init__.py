"""Process metadata from /proc: mappings, executable, command line, build-ids,
container ids. Pure library code (no BPF knowledge), shared by the ebpf
receiver and the symbolizer. Paths go through ``/proc/PID/root`` so files of
processes in containers are read from their own mount namespace."""

from telegen.procinfo.buildid import BuildIdCache, read_build_id
from telegen.procinfo.container import container_id_from_cgroup
from telegen.procinfo.maps import MapEntry, MappedFile, open_mapped, parse_maps
from telegen.procinfo.process import (
    ProcessCache,
    ProcessInfo,
    container_attributes,
    read_process,
    read_text,
)

__all__ = [
    "BuildIdCache", "MapEntry", "ProcessCache", "ProcessInfo", "container_attributes",
    "container_id_from_cgroup",
    "MappedFile", "open_mapped", "parse_maps", "read_build_id", "read_process", "read_text",
]
