"""REST calls to the server, sync and async, with httpx errors mapped at this one boundary."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from . import protocol
from .errors import InvalidConfig, ProtocolError, ServerError, SessionNotFound, TransportError

DEFAULT_SERVER = "http://127.0.0.1:8000"

#: 503 answers to POST /v1/sessions that say nothing was created and another try may succeed: a
#: full replica, a draining one, no replica at all for the moment (the proxy's answer). Behind a
#: proxy, the next try goes to another replica.
RETRY_CREATE_CODES = frozenset({"too_many_sessions", "draining", "no_replica"})
#: Seconds before each retry of a session's creation.
RETRY_CREATE_DELAYS = (0.2, 0.5, 1.0)


def retry_create(exc: ServerError) -> bool:
    """Whether a refused session creation may be tried again (nothing was created)."""
    return exc.status == 503 and exc.code in RETRY_CREATE_CODES


@dataclass(frozen=True)
class SessionList:
    """``GET /v1/sessions``: the sessions, and the fleet's replicas that did not answer (each
    ``{"replica", "url", "reason"}``), when the server lists a fleet."""

    sessions: list[dict[str, Any]]
    unanswered: list[dict[str, Any]]


def session_list(response: httpx.Response) -> SessionList:
    unanswered: list[dict[str, Any]] = []
    header = response.headers.get(protocol.UNANSWERED_HEADER)
    if header:
        with contextlib.suppress(ValueError):
            parsed = json.loads(header)
            unanswered = [p for p in parsed if isinstance(p, dict)] if isinstance(parsed, list) else []
    return SessionList(raise_for_error(response) or [], unanswered)


def server_url(server: str | None) -> str:
    """``server``, else $FRAMECAST_SERVER, else http://127.0.0.1:8000 (no trailing slash)."""
    return (server or os.environ.get("FRAMECAST_SERVER") or DEFAULT_SERVER).rstrip("/")


def on_this_machine(server: str) -> bool:
    """Whether ``server``'s URL names this machine (a loopback address or localhost)."""
    host = urllib.parse.urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wants_shared_memory(choice: bool | None, server: str) -> bool:
    """Whether a writer asks for shared memory: as the user chose, else when the server is local."""
    return on_this_machine(server) if choice is None else choice


def auth_headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("FRAMECAST_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@contextlib.contextmanager
def map_transport_errors(server: str) -> Iterator[None]:
    """Translate httpx's exceptions into framecast's."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransportError(f"framecast server at {server} did not answer in time: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"cannot reach the framecast server at {server}: {exc}") from exc
    except httpx.RequestError as exc:  # an answer that could not be decoded, too many redirects
        raise TransportError(f"the framecast server at {server} answered unreadably: {exc}") from exc


_tls_lock = threading.Lock()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (httpx's default: certifi's CA bundle), shared by
    every client: building one loads the certificates, 20-60 ms of CPU that every writer's open()
    would pay. Built under a lock: writers opened on many threads at once would each build one
    (``functools.cache`` does not hold back concurrent first calls)."""
    with _tls_lock:
        return _built_tls_context()


@functools.cache
def _built_tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def raise_for_error(response: httpx.Response) -> Any:
    """Return the JSON body of a successful response, or raise the matching framecast error.

    The server's error bodies are ``{"error": {"code", "message", "field"?}}``. Anything else (a
    proxy's HTML page, FastAPI's own ``{"detail": ...}``) still becomes a framecast error, with
    the status and the start of the body as its message.

    Raises:
        InvalidConfig: HTTP 422; ``field`` names the refused field when the server did.
        SessionNotFound: HTTP 404 with the code ``session_not_found``.
        ServerError: any other error status, with ``status`` and the server's ``code``.
        ProtocolError: a successful answer whose body is not JSON.
    """
    if response.is_success:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ProtocolError(
                f"HTTP {response.status_code} from {response.request.url} is not JSON: {response.text[:200]!r}"
            ) from None
    error = _error_body(response)
    message = error.get("message") or f"HTTP {response.status_code}: {response.text[:200]}"
    code = error.get("code")
    if response.status_code == 422:
        raise InvalidConfig(message, field=error.get("field"), detail=error)
    if response.status_code == 404 and code == "session_not_found":
        raise SessionNotFound(message, status=404, code=code)
    raise ServerError(message, status=response.status_code, code=code)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an error response, or ``{}`` when the body has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


class RestClient:
    """Blocking REST calls.

    Args:
        server: base URL; default $FRAMECAST_SERVER, else http://127.0.0.1:8000.
        api_key: sent as a bearer token; default $FRAMECAST_API_KEY.
        timeout: seconds httpx waits to connect, and for each read and write.
        transport: the httpx transport to send requests through; default: httpx's own over the
            network. Tests pass ``httpx.MockTransport`` to answer without a server.
    """

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        self.headers = auth_headers(api_key)
        self._http = httpx.Client(
            base_url=self.server, headers=self.headers, timeout=timeout, verify=tls_context(), transport=transport
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request (``kwargs`` go to httpx); returns the JSON body, or None if empty.

        Raises:
            TransportError: the server could not be reached or did not answer in time.
            ServerError: the server answered with an error (see ``raise_for_error``).
        """
        with map_transport_errors(self.server):
            return raise_for_error(self._http.request(method, path, **kwargs))

    def create_session(self, config: dict[str, Any]) -> Any:
        """``POST /v1/sessions``, tried again (``RETRY_CREATE_DELAYS``) while the answer is a 503
        that created nothing: behind a proxy the next try reaches another replica."""
        for delay in (*RETRY_CREATE_DELAYS, None):
            try:
                return self.request("POST", "/v1/sessions", json=config)
            except ServerError as exc:
                if delay is None or not retry_create(exc):
                    raise
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def list_sessions(self) -> SessionList:
        """``GET /v1/sessions``: the caller's sessions (a fleet's, behind a proxy), and which
        replicas did not answer."""
        with map_transport_errors(self.server):
            return session_list(self._http.get("/v1/sessions"))

    def download(self, path: str, sink: Any) -> int:
        """Stream a GET's body into ``sink`` (a binary file object); returns the bytes written."""
        total = 0
        with map_transport_errors(self.server):
            with self._http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                for block in response.iter_bytes():
                    sink.write(block)
                    total += len(block)
        return total

    def close(self) -> None:
        self._http.close()


class AsyncRestClient:
    """Non-blocking REST calls for asyncio code; the arguments are RestClient's, with an
    ``httpx.AsyncBaseTransport`` for ``transport``."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        self.headers = auth_headers(api_key)
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=self.headers, timeout=timeout, verify=tls_context(), transport=transport
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; as ``RestClient.request``."""
        with map_transport_errors(self.server):
            return raise_for_error(await self._http.request(method, path, **kwargs))

    async def create_session(self, config: dict[str, Any]) -> Any:
        """``POST /v1/sessions``, tried again as ``RestClient.create_session`` does."""
        for delay in (*RETRY_CREATE_DELAYS, None):
            try:
                return await self.request("POST", "/v1/sessions", json=config)
            except ServerError as exc:
                if delay is None or not retry_create(exc):
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def download(self, path: str, sink: Any) -> int:
        """Stream a GET's body into ``sink`` (a binary file object; its writes are plain calls)."""
        total = 0
        with map_transport_errors(self.server):
            async with self._http.stream("GET", path) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_error(response)
                async for block in response.aiter_bytes():
                    sink.write(block)
                    total += len(block)
        return total

    async def aclose(self) -> None:
        await self._http.aclose()
