"""The stream websocket's TCP socket to a server on this machine: opened without kernel pacing.

Where the machine's TCP congestion control is BBR (a common default on cloud machines), Linux
paces every sender with a high-resolution timer, unless the fq qdisc paces for it. On loopback that
pacing buys nothing and costs CPU: a large payload leaves in timer interrupts, in whatever process
runs on that core at the time, which on a busy machine is usually the framecast server receiving
it. Measured (BENCHMARKS.md, issue 18): the server's main process spent 0.72-0.82 ms a 720p frame
received over the websocket with the stream socket on BBR, 0.60-0.70 ms with it on cubic, and the
client less too.

So for a loopback server the SDK opens the stream socket itself and gives it a congestion control
that does not pace (cubic, else reno) before it connects: switching an established connection
leaves its pacing on. A server elsewhere gets the machine's choice, as before; so does any system
without ``TCP_CONGESTION`` or refusing both names (then this changes nothing but who connects).
A loopback server is reached directly, never through a proxy from the environment.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from typing import Any

from .rest import on_this_machine

#: Seconds to connect and open the stream websocket (each; the SDK's writers use it for both).
OPEN_TIMEOUT = 30.0

#: Congestion controls without pacing of their own, in order of preference (both are built into
#: Linux, and unprivileged processes may pick the default and reno).
UNPACED = (b"cubic", b"reno")


def unpaced(sock: socket.socket) -> bytes | None:
    """Give ``sock`` (not connected yet) a congestion control from ``UNPACED``; which one, or None."""
    option = getattr(socket, "TCP_CONGESTION", None)
    if option is None:
        return None
    for name in UNPACED:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, name)
        except OSError:  # not built in, or not allowed for this user
            continue
        return name
    return None


def _addresses(url: str) -> tuple[str, int] | None:
    """Host and port to connect to when ``url`` names this machine, else None.

    Raises:
        OSError: the URL's port is not a port (out of range, not a number).
    """
    if not on_this_machine(url):
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise OSError(f"the URL's port is not a port number from 0 to 65535 ({exc})") from None
    return parts.hostname or "localhost", port or (443 if parts.scheme in ("wss", "https") else 80)


def loopback_socket(url: str, timeout: float) -> socket.socket | None:
    """A connected, blocking, unpaced socket to ``url``'s host when that is this machine, else
    None (websockets connects as usual). Tries each address the name resolves to, as
    ``socket.create_connection`` does.

    Raises:
        OSError: no address could be connected to (the last address's error).
    """
    target = _addresses(url)
    if target is None:
        return None
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(*target, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            unpaced(sock)
            sock.settimeout(timeout)
            sock.connect(address)
            sock.settimeout(None)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"{target[0]} resolves to no address")


async def loopback_socket_async(url: str, timeout: float) -> socket.socket | None:
    """``loopback_socket`` for asyncio: a connected, non-blocking socket, or None."""
    target = _addresses(url)
    if target is None:
        return None
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    infos: list[Any] = await loop.getaddrinfo(*target, type=socket.SOCK_STREAM)
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            unpaced(sock)
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            return sock
        except BaseException as exc:
            sock.close()
            if isinstance(exc, asyncio.TimeoutError):  # not an OSError before Python 3.11
                error = TimeoutError(f"connecting to {address} timed out after {timeout:g} s")
            elif isinstance(exc, OSError):
                error = exc
            else:  # cancelled
                raise
    raise error or OSError(f"{target[0]} resolves to no address")
