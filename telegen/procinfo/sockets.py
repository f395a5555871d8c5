"""A process's listening TCP sockets: the LISTEN entries of
``/proc/PID/net/tcp{,6}`` (its network namespace's tables) whose inode is
among the ``socket:[inode]`` links of ``/proc/PID/fd``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from telegen.procinfo.procfs import PROC, process_file, read_file

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: str      # as text: 127.0.0.1, ::, ...
    port: int
    inode: int

    @property
    def scrape_host(self) -> str | None:
        """How to reach it from the agent's network namespace (when it is the
        process's too), or None when it is not local/any."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_loopback:
            return "[::1]"
        if ip.is_loopback or ip.is_unspecified:
            return "127.0.0.1"
        return None


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_listeners(text: str) -> list[Listener]:
    """LISTEN entries of a ``/proc/net/tcp`` or ``tcp6`` table."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        try:
            addr, port = fields[1].rsplit(":", 1)
            out.append(Listener(_hex_address(addr), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def socket_inodes(pid: int, proc: str = PROC) -> set[int]:
    """Inodes of the sockets ``pid`` has open."""
    inodes: set[int] = set()
    fd_dir = process_file(pid, "fd", proc)
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link.endswith("]"):
            try:
                inodes.add(int(link[8:-1]))
            except ValueError:
                pass
    return inodes


def listening_ports(pid: int, proc: str = PROC) -> list[Listener]:
    """The process's own listening TCP sockets."""
    mine = socket_inodes(pid, proc)
    if not mine:
        return []
    found: list[Listener] = []
    for table in ("net/tcp", "net/tcp6"):
        text = read_file(pid, table, proc)
        if text is not None:
            found += [lst for lst in parse_listeners(text) if lst.inode in mine]
    return found
