"""Which names an agent server answers to (``Host:``). A web page can make
the host's browser send requests to ``127.0.0.1`` under the page's own name
(DNS rebinding); refusing every ``Host`` but ours defeats it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, brackets allowed) is this machine's loopback."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostAllowList:
    """The names a server answers to: the loopback names, the host of its
    endpoint and ``extra`` names. A server bound to a non-loopback address
    also answers to any IP literal and to this machine's host names: an IP
    literal cannot be rebound to another address, only a DNS name can.
    ``"*"`` among the extra names turns the check off."""

    def __init__(self, bind_host: str, extra: Iterable[str] = ()) -> None:
        extra = list(extra)
        self.any = "*" in extra
        names = set(LOOPBACK_NAMES) | {_norm(bind_host)} | {_norm(n) for n in extra}
        self.remote = not is_loopback(bind_host)
        if self.remote:
            names |= {_norm(socket.gethostname()), _norm(socket.getfqdn())}
        self.names = frozenset(n for n in names if n)

    def allows(self, host_header: str) -> bool:
        if self.any:
            return True
        host = _host_part(host_header)
        if host is None:
            return False
        if host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return self.remote or address.is_loopback


def _norm(name: str) -> str:
    return name.strip().strip("[]").lower().rstrip(".")


def _host_part(header: str) -> str | None:
    """The host of a ``Host`` header without its port; None when malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        tail = header[end + 1:]
        if end < 0 or tail and not (tail.startswith(":") and tail[1:].isdigit()):
            return None
        return header[1:end]
    host, sep, port = header.partition(":")
    if sep and not port.isdigit():
        return None
    return host.rstrip(".") or None
