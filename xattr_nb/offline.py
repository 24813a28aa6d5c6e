"""The offline guard: refuse every network connection that is not to this machine.

xattr-nb runs offline (weights and data come from ``data/``, the worlds and the offline MiniLM), and
its tests prove it: the test suite sets ``XATTR_NB_BLOCK_NETWORK=1``, ``import xattr_nb`` then calls
:func:`block_network` in that process and in every notebook kernel started from it (they inherit the
environment), so a hub download or any other outside connection fails loudly instead of silently
succeeding on a machine that happens to have network. Loopback (the Jupyter kernel's sockets, a local
JupyterLab for the browser tests) and Unix sockets stay allowed. Standard library only: no library
offers a guard of this shape (pytest-socket exists but reaches neither kernels nor papermill runs).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

__all__ = ["NetworkBlockedError", "block_network", "blocked", "unblock_network"]

ENV = "XATTR_NB_BLOCK_NETWORK"
_ORIGINAL: dict[str, Any] = {}


class NetworkBlockedError(RuntimeError):
    """A connection to another machine was attempted while the offline guard is on.

    Not an ``OSError`` on purpose: libraries catch ``OSError`` to fall back quietly, and an attempt
    must fail the run that made it.
    """


def _is_local(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("", "localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_local(host):
            raise NetworkBlockedError(
                f"network access blocked: a connection to {address!r} was attempted, and xattr-nb runs offline "
                f"(${ENV} is set). Load models from local folders or data/, never from a hub."
            )


def block_network() -> None:
    """Refuse socket connections to anything but loopback in this process (idempotent)."""
    if _ORIGINAL:
        return
    _ORIGINAL["connect"] = socket.socket.connect
    _ORIGINAL["connect_ex"] = socket.socket.connect_ex
    _ORIGINAL["getaddrinfo"] = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        _check(self, address)
        return _ORIGINAL["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address)
        return _ORIGINAL["connect_ex"](self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if host is not None and not _is_local(host) and not _is_literal(host) and host != socket.gethostname():
            raise NetworkBlockedError(
                f"network access blocked: {host!r} was looked up, and xattr-nb runs offline (${ENV} is set)"
            )
        return _ORIGINAL["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo


def unblock_network() -> None:
    """Undo :func:`block_network`."""
    if _ORIGINAL:
        socket.socket.connect = _ORIGINAL.pop("connect")  # type: ignore[method-assign]
        socket.socket.connect_ex = _ORIGINAL.pop("connect_ex")  # type: ignore[method-assign]
        socket.getaddrinfo = _ORIGINAL.pop("getaddrinfo")


def blocked() -> bool:
    """Whether the guard is on in this process."""
    return bool(_ORIGINAL)


if os.environ.get(ENV, "") not in ("", "0"):
    block_network()
