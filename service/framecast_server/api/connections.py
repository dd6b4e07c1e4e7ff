"""HTTP connection limits for ``framecast serve``: a deadline for request headers, a cap on open
connections, and a file descriptor limit that allows them.

Plain uvicorn lets a connection that sends part of a request and then nothing (slowloris) stay
open forever: its keep-alive timer runs only between requests and stops at the first byte, and a
connection that never sends a byte has no timer at all. 20,400 such connections exhausted the
server's file descriptors until ``/healthz`` failed. Here every connection must complete a
request's headers within ``FRAMECAST_HEADER_TIMEOUT`` seconds of connecting, or of finishing its
previous response, or it is closed; and beyond ``FRAMECAST_MAX_CONNECTIONS`` open connections a
new one is closed as soon as it is accepted (uvicorn's ``limit_concurrency``, set to the same
number, answers 503 to requests just before that). A websocket, once upgraded, is no longer
timed here: its session has timeouts of its own.

This bounds what one machine can hold open, not who holds it: deploy behind a reverse proxy
(SECURITY.md) that limits connections per client address.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional for uvicorn; h11 is always there
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

#: Largest request head (request line and headers) the h11 parser buffers; httptools caps its own (80 KiB).
MAX_HEAD_BYTES = 64 * 1024


class _HeaderDeadline:
    """Mixed into uvicorn's HTTP protocol: the connection cap and the header deadline."""

    header_timeout: float = 10.0
    max_connections: int = 1000
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        connections = self.connections  # type: ignore[attr-defined]
        if len(connections) > self.max_connections:
            log.warning(
                "%d connections open, at most %d are taken: closing a new one",
                len(connections) - 1,
                self.max_connections,
            )
            transport.abort()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm_header_timer()  # the next request's headers are due in time too

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)  # type: ignore[attr-defined]

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            log.debug("closing a connection that sent no complete request headers within %g s", self.header_timeout)
            transport.close()  # nothing is buffered to write: it goes at once, with a FIN


class _H11Deadline(_HeaderDeadline, H11Protocol):  # type: ignore[misc]
    def handle_events(self) -> None:
        super().handle_events()
        # h11 has no headers-complete callback: its parser leaves IDLE once a request's head is in.
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()


if HttpToolsProtocol is not None:

    class _HttpToolsDeadline(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()


def limited_protocol(
    header_timeout: float, max_connections: int, parser: Literal["auto", "h11", "httptools"] = "auto"
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a header deadline and a connection cap, for
    ``uvicorn.Config(http=...)``; ``parser`` "auto" takes httptools if installed, as uvicorn does,
    else h11."""
    if parser == "httptools" and HttpToolsProtocol is None:
        raise ValueError("httptools is not installed")
    use_h11 = parser == "h11" or HttpToolsProtocol is None
    base = _H11Deadline if use_h11 else _HttpToolsDeadline
    return type("LimitedProtocol", (base,), {"header_timeout": header_timeout, "max_connections": max_connections})


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit, where allowed; the soft and
    hard limits after. Every connection, session pipe and encoder costs descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open file limit from %d to %d: %s", soft, hard, exc)
    return soft, hard
