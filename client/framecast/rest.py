"""REST calls to the server, sync and async, with httpx errors mapped at this one boundary."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx

from .errors import InvalidConfig, ServerError, SessionNotFound, TransportError

DEFAULT_SERVER = "http://127.0.0.1:8000"


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


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (httpx's default: certifi's CA bundle), shared by
    every client: building one loads the certificates, ~20 ms every writer's open() would pay."""
    return httpx.create_ssl_context()


def raise_for_error(response: httpx.Response) -> Any:
    """Return the JSON body of a successful response, or raise the matching framecast error."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    message = error.get("message") or f"HTTP {response.status_code}: {response.text[:200]}"
    code = error.get("code")
    if response.status_code == 422:
        raise InvalidConfig(message, field=error.get("field"), detail=error)
    if response.status_code == 404 and code == "session_not_found":
        raise SessionNotFound(message, status=404, code=code)
    raise ServerError(message, status=response.status_code, code=code)


class RestClient:
    """Blocking REST calls."""

    def __init__(self, server: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.server = server_url(server)
        self.headers = auth_headers(api_key)
        self._http = httpx.Client(base_url=self.server, headers=self.headers, timeout=timeout, verify=tls_context())

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with map_transport_errors(self.server):
            return raise_for_error(self._http.request(method, path, **kwargs))

    def download(self, path: str, sink: Any) -> int:
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
    """Non-blocking REST calls for asyncio code."""

    def __init__(self, server: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.server = server_url(server)
        self.headers = auth_headers(api_key)
        self._http = httpx.AsyncClient(base_url=self.server, headers=self.headers, timeout=timeout,
                                       verify=tls_context())

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with map_transport_errors(self.server):
            return raise_for_error(await self._http.request(method, path, **kwargs))

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
