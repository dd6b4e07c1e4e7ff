"""The SDK's REST boundary: every way a server (or the network) can answer becomes the right
framecast exception, with its fields.

The answers come from ``httpx.MockTransport``, so no server runs: the bodies are the ones the
server's exception handler writes (``{"error": {"code", "message", "field"?}}``) and the ones a
proxy or FastAPI itself can put in front of it. Each case runs through both RestClient and
AsyncRestClient, which share ``raise_for_error`` and ``map_transport_errors``.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from framecast.errors import (
    FramecastError,
    InvalidConfig,
    ProtocolError,
    ServerError,
    SessionNotFound,
    TransportError,
)
from framecast.rest import AsyncRestClient, RestClient

SERVER = "http://framecast.test"
Handler = Callable[[httpx.Request], httpx.Response]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def call(handler: Handler, client_kind: str, method: str = "GET", path: str = "/v1/sessions/r0.abc") -> Any:
    """One request through the chosen client, answered by ``handler``."""
    if client_kind == "sync":
        client = RestClient(SERVER, transport=httpx.MockTransport(handler))
        try:
            return client.request(method, path)
        finally:
            client.close()

    async def main() -> Any:
        aclient = AsyncRestClient(SERVER, transport=httpx.MockTransport(handler))
        try:
            return await aclient.request(method, path)
        finally:
            await aclient.aclose()

    return asyncio.run(asyncio.wait_for(main(), 10))


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def answer(status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def test_success_returns_the_json_body_and_sends_the_api_key(client_kind: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "r0.abc", "state": "streaming"})

    if client_kind == "sync":
        client = RestClient(SERVER, api_key="k-123", transport=httpx.MockTransport(handler))
        assert client.request("GET", "/v1/sessions/r0.abc") == {"id": "r0.abc", "state": "streaming"}
        client.close()
    else:

        async def main() -> Any:
            aclient = AsyncRestClient(SERVER, api_key="k-123", transport=httpx.MockTransport(handler))
            try:
                return await aclient.request("GET", "/v1/sessions/r0.abc")
            finally:
                await aclient.aclose()

        assert asyncio.run(main()) == {"id": "r0.abc", "state": "streaming"}
    assert [str(r.url) for r in seen] == [f"{SERVER}/v1/sessions/r0.abc"]
    assert seen[0].headers["authorization"] == "Bearer k-123"


def test_an_empty_success_is_none(client_kind: str) -> None:
    assert call(lambda request: httpx.Response(204), client_kind, "DELETE") is None


def test_401_is_a_server_error_with_status_and_code(client_kind: str) -> None:
    body = error_body("unauthorized", "missing or wrong API key")
    handler = answer(401, body, headers={"WWW-Authenticate": "Bearer"})
    with pytest.raises(ServerError) as info:
        call(handler, client_kind)
    assert type(info.value) is ServerError
    assert (info.value.status, info.value.code, str(info.value)) == (401, "unauthorized", "missing or wrong API key")


def test_404_session_not_found_is_session_not_found(client_kind: str) -> None:
    handler = answer(404, error_body("session_not_found", "no session r0.abc"))
    with pytest.raises(SessionNotFound) as info:
        call(handler, client_kind)
    assert isinstance(info.value, LookupError)  # a builtin callers may already catch
    assert (info.value.status, info.value.code, str(info.value)) == (404, "session_not_found", "no session r0.abc")


def test_another_404_is_not_session_not_found(client_kind: str) -> None:
    # A proxy's 404 (no such route, or no such replica) says nothing about the session.
    with pytest.raises(ServerError) as info:
        call(answer(404, text="<html>Not Found</html>"), client_kind)
    assert not isinstance(info.value, SessionNotFound)
    assert (info.value.status, info.value.code) == (404, None)
    assert str(info.value) == "HTTP 404: <html>Not Found</html>"


def test_409_is_a_state_conflict(client_kind: str) -> None:
    handler = answer(409, error_body("state_conflict", "session r0.abc is finishing"))
    with pytest.raises(ServerError) as info:
        call(handler, client_kind, "POST")
    assert (info.value.status, info.value.code) == (409, "state_conflict")
    assert str(info.value) == "session r0.abc is finishing"


def test_422_is_invalid_config_naming_the_field(client_kind: str) -> None:
    body = error_body("invalid_config", "unknown encoder 'libx999'", field="streams.0.encoder")
    with pytest.raises(InvalidConfig) as info:
        call(answer(422, body), client_kind, "POST")
    assert isinstance(info.value, ValueError)
    assert info.value.field == "streams.0.encoder"
    assert str(info.value) == "unknown encoder 'libx999'"
    assert info.value.detail == body["error"]


def test_fastapis_own_422_is_invalid_config_too(client_kind: str) -> None:
    body = {"detail": [{"loc": ["body", "streams"], "msg": "Field required", "type": "missing"}]}
    with pytest.raises(InvalidConfig) as info:
        call(answer(422, body), client_kind, "POST")
    assert info.value.field is None
    assert str(info.value).startswith("HTTP 422: ") and "Field required" in str(info.value)


def test_503_keeps_the_servers_code(client_kind: str) -> None:
    handler = answer(503, error_body("too_many_sessions", "this server runs 16 sessions, its limit"))
    with pytest.raises(ServerError) as info:
        call(handler, client_kind, "POST")
    assert (info.value.status, info.value.code) == (503, "too_many_sessions")
    assert str(info.value) == "this server runs 16 sessions, its limit"


def test_500_internal_error(client_kind: str) -> None:
    with pytest.raises(ServerError) as info:
        call(answer(500, error_body("internal_error", "internal server error")), client_kind)
    assert (info.value.status, info.value.code, str(info.value)) == (500, "internal_error", "internal server error")


@pytest.mark.parametrize("body", ["Bad Gateway", "[1, 2]", '"just a string"', '{"error": "flat text"}', "{"])
def test_an_error_body_that_is_not_the_servers_shape(client_kind: str, body: str) -> None:
    with pytest.raises(ServerError) as info:
        call(answer(502, text=body), client_kind)
    assert type(info.value) is ServerError
    assert (info.value.status, info.value.code) == (502, None)
    assert str(info.value) == f"HTTP 502: {body}"


def test_a_long_error_body_is_cut_in_the_message(client_kind: str) -> None:
    with pytest.raises(ServerError) as info:
        call(answer(500, text="x" * 5000), client_kind)
    assert str(info.value) == "HTTP 500: " + "x" * 200


def test_a_success_that_is_not_json_is_a_protocol_error(client_kind: str) -> None:
    with pytest.raises(ProtocolError, match=r"HTTP 200 from http://framecast.test/v1/sessions/r0.abc is not JSON"):
        call(answer(200, text="<html>captive portal</html>"), client_kind)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_a_refused_connection_is_a_transport_error(client_kind: str) -> None:
    with pytest.raises(
        TransportError,
        match=r"cannot reach the framecast server at http://framecast.test: "
        r"\[Errno 111\] Connection refused",
    ) as info:
        call(raising(httpx.ConnectError("[Errno 111] Connection refused")), client_kind)
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("timeout", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.PoolTimeout])
def test_a_timeout_is_a_transport_error_that_says_so(client_kind: str, timeout: type[httpx.TimeoutException]) -> None:
    with pytest.raises(TransportError, match=r"framecast server at http://framecast.test did not answer in time"):
        call(raising(timeout("timed out")), client_kind)


def test_an_undecodable_answer_is_a_transport_error(client_kind: str) -> None:
    with pytest.raises(TransportError, match="answered unreadably"):
        call(raising(httpx.DecodingError("bad gzip")), client_kind)


def test_no_httpx_exception_leaks(client_kind: str) -> None:
    # Every failure above is a FramecastError: callers catch one root, never httpx's.
    for handler in (
        raising(httpx.RemoteProtocolError("peer closed")),
        raising(httpx.WriteError("broken pipe")),
        answer(418, text="teapot"),
    ):
        with pytest.raises(FramecastError):
            call(handler, client_kind)


def test_download_streams_the_body_and_maps_errors() -> None:
    payload = bytes(range(256)) * 1000

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gone/output"):
            return httpx.Response(404, json=error_body("session_not_found", "no session gone"))
        return httpx.Response(200, content=payload)

    client = RestClient(SERVER, transport=httpx.MockTransport(handler))
    try:
        sink = io.BytesIO()
        assert client.download("/v1/sessions/r0.abc/output", sink) == len(payload)
        assert sink.getvalue() == payload
        with pytest.raises(SessionNotFound, match="no session gone"):
            client.download("/v1/sessions/gone/output", io.BytesIO())
    finally:
        client.close()

    async def main() -> tuple[int, bytes]:
        aclient = AsyncRestClient(SERVER, transport=httpx.MockTransport(handler))
        try:
            sink = io.BytesIO()
            count = await aclient.download("/v1/sessions/r0.abc/output", sink)
            with pytest.raises(SessionNotFound):
                await aclient.download("/v1/sessions/gone/output", io.BytesIO())
            return count, sink.getvalue()
        finally:
            await aclient.aclose()

    assert asyncio.run(main()) == (len(payload), payload)


def test_the_request_body_reaches_the_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"echo": json.loads(request.content), "method": request.method})

    client = RestClient(SERVER, transport=httpx.MockTransport(handler))
    try:
        assert client.request("POST", "/v1/sessions", json={"format": "mp4"}) == {
            "echo": {"format": "mp4"},
            "method": "POST",
        }
    finally:
        client.close()


def test_clients_made_on_many_threads_at_once_share_one_tls_context(monkeypatch):
    """Building a TLS context loads the CA bundle (20-60 ms of CPU): writers opened on eight threads
    at once build it once, not eight times."""
    from framecast import rest

    built = []
    real = httpx.create_ssl_context

    def slow_and_counted(*args, **kwargs):
        built.append(threading.current_thread().name)
        time.sleep(0.05)  # every thread arrives while the first is still building
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", slow_and_counted)
    rest.tls_context.cache_clear()
    rest._built_tls_context.cache_clear()
    try:
        start = threading.Barrier(8)
        contexts = []

        def open_one():
            start.wait(timeout=10)
            contexts.append(rest.tls_context())

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(contexts) == 8 and all(context is contexts[0] for context in contexts)
        assert len(built) == 1, built
    finally:
        rest.tls_context.cache_clear()
        rest._built_tls_context.cache_clear()
