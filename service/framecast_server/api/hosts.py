"""The ``Host`` header check that keeps a keyless server from answering DNS-rebound pages.

Without API keys the server trusts whoever reaches it, which is safe only if no one but this
machine can. A web page can: it resolves its own name (``evil.example``) to 127.0.0.1 once its
first answer has expired, and its script then talks to the server as the same origin, sessions,
files and all. What gives it away is the ``Host`` header, which still names ``evil.example``.
So when no API keys are set, only requests naming a loopback host (``localhost``, any
``127.x.x.x``, ``[::1]``, with or without a port), a name the operator lists in
``FRAMECAST_SERVER_NAMES``, the host of ``FRAMECAST_PUBLIC_URL`` or the address the server binds
to are answered; others get 421 with a JSON error naming the host, websockets included. With API
keys, a page without the key gets nowhere anyway, and the check is off.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Status for a request to a host this server does not serve (RFC 9110's Misdirected Request).
STATUS = 421

#: Close code for a websocket whose server cannot send an HTTP refusal (4000 + the status).
CLOSE_CODE = 4000 + STATUS


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port or IPv6 brackets ('' if malformed)."""
    header = header.strip().lower()
    if header.startswith("["):
        inside, bracket, rest = header[1:].partition("]")
        return inside if bracket and (not rest or rest[1:].isdigit() and rest[0] == ":") else ""
    name, colon, port = header.partition(":")
    if colon and not port.isdigit():
        return ""
    return name.rstrip(".")  # "localhost." is localhost


def is_loopback(name: str) -> bool:
    """``localhost`` (and its subdomains, which resolve to loopback per RFC 6761), 127/8 or ::1."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_names(names: Iterable[str], public_url: str | None, bind_host: str) -> frozenset[str]:
    """The names besides loopback ones this server answers to: the operator's, the public URL's
    host, and the address it binds to unless that is a wildcard (0.0.0.0, ::)."""
    found = {host_name(name) for name in names}
    if public_url:
        found.add((urlsplit(public_url).hostname or "").lower())
    if bind_host not in ("0.0.0.0", "::", ""):
        found.add(host_name(bind_host) or bind_host.strip("[]").lower())
    return frozenset(name for name in found if name)


#: Paths that answer whatever the Host: health checks.
PROBES = frozenset({"/healthz", "/readyz"})


class HostCheck:
    """Pure ASGI middleware: answers only requests whose ``Host`` is loopback or in ``allowed``.

    HTTP requests to another host get 421 with ``{"error": {"code": "misdirected_request", ...}}``;
    websocket handshakes get the same response where the server supports sending one
    (``websocket.http.response``, as uvicorn does), or are closed with 4421 before they open.
    A request without a ``Host`` header (HTTP/1.0) is refused the same way.

    The probes (``/healthz``, ``/readyz``) answer any host: a load balancer's or kubelet's check
    names no host of ours (HAProxy's sends none, kubelet's the pod's IP), and what they say (up,
    ready, how many sessions) is no secret worth a rebinding attack.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    def accepts(self, header: str) -> bool:
        name = host_name(header)
        return bool(name) and (is_loopback(name) or name in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        if self.accepts(header) or (scope["type"] == "http" and scope.get("path") in PROBES):
            await self.app(scope, receive, send)
            return
        shown = header[:100] if header else "(none)"
        body = json.dumps(
            {
                "error": {
                    "code": "misdirected_request",
                    "message": f"this server does not answer to host {shown!r}: without API keys it answers only to "
                    "localhost, 127.0.0.1 and [::1] (and the names in FRAMECAST_SERVER_NAMES)",
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "websocket":
            await receive()  # websocket.connect, which comes before any answer
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": STATUS, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": STATUS, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": CLOSE_CODE, "reason": "misdirected request"})
