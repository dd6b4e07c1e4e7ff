"""The stream websocket's socket to a server on this machine (``framecast/sockets.py``): opened by
the SDK, unpaced (a congestion control without kernel pacing) before it connects, for the sync and
the asyncio writer; a server elsewhere is left to websockets and the machine's defaults."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from framecast import AsyncStreamWriter, StreamWriter, sockets
from framecast.errors import TransportError
from framecast.writer import _connect

from .conftest import ServerProcess, free_port
from .media import decode, patterns, read_stamp

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", None)
needs_tcp_congestion = pytest.mark.skipif(TCP_CONGESTION is None, reason="TCP_CONGESTION is Linux's")


def congestion_control(sock: socket.socket) -> bytes:
    assert TCP_CONGESTION is not None
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).rstrip(b"\0")


@pytest.fixture
def reno(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask for reno, which no machine has as its default: a socket on it was set by the SDK."""
    monkeypatch.setattr(sockets, "UNPACED", (b"reno",))


@needs_tcp_congestion
def test_the_sync_writers_stream_socket_is_unpaced_and_carries_the_stream(
    server: ServerProcess, tmp_path: Path, reno: None
) -> None:
    frames = patterns(12, 64, 96)
    writer = StreamWriter(str(tmp_path / "sync.mkv"), format="matroska", server=server.url, shared_memory=False)
    writer.add_video_stream(30, 96, 64, encoder="ffv1")
    with writer.open():
        assert writer._ws is not None
        assert congestion_control(writer._ws.socket) == b"reno"
        writer.write_video_chunk(0, frames)
    (video,) = decode(tmp_path / "sync.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(12))


@needs_tcp_congestion
def test_the_async_writers_stream_socket_is_unpaced_and_carries_the_stream(
    server: ServerProcess, tmp_path: Path, reno: None
) -> None:
    frames = patterns(12, 64, 96)

    async def main() -> None:
        writer = AsyncStreamWriter(
            str(tmp_path / "async.mkv"), format="matroska", server=server.url, shared_memory=False
        )
        writer.add_video_stream(30, 96, 64, encoder="ffv1")
        async with writer.open():
            assert writer._ws is not None
            assert congestion_control(writer._ws.transport.get_extra_info("socket")) == b"reno"
            await writer.write_video_chunk(0, frames)

    asyncio.run(main())
    (video,) = decode(tmp_path / "async.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(12))


@pytest.fixture
def listening() -> Iterator[int]:
    """The port of a TCP listener on 127.0.0.1 alone (nothing accepts: connecting is enough)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@needs_tcp_congestion
def test_a_name_that_resolves_to_several_addresses_gets_the_one_that_listens(reno: None, listening: int) -> None:
    """localhost may resolve to ::1 first; a server on 127.0.0.1 alone is still reached."""
    sock = sockets.loopback_socket(f"ws://localhost:{listening}/v1/x", 5)
    assert sock is not None
    with sock:
        assert sock.getpeername() == ("127.0.0.1", listening)
        assert congestion_control(sock) == b"reno"
        assert sock.gettimeout() is None  # blocking, as websockets expects


def test_a_server_elsewhere_is_left_to_websockets() -> None:
    # 192.0.2.0/24 is TEST-NET-1: nothing is connected to, only the URL is looked at.
    assert sockets.loopback_socket("ws://192.0.2.7:8000/v1/sessions/x/stream", 5) is None
    assert asyncio.run(sockets.loopback_socket_async("wss://192.0.2.7/v1/sessions/x/stream", 5)) is None


def test_a_refused_loopback_connection_names_the_url_and_the_reason() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/sessions/x/stream"
    with pytest.raises(TransportError, match=r"cannot open the stream websocket ws://127\.0\.0\.1:\d+/.*refused"):
        _connect(url, "token", {}, lambda ws, message: None)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(sockets.loopback_socket_async(url, 5))


def test_without_a_congestion_control_it_may_pick_the_socket_connects_as_it_is(
    monkeypatch: pytest.MonkeyPatch, listening: int
) -> None:
    monkeypatch.setattr(sockets, "UNPACED", (b"no-such-algorithm",))
    sock = sockets.loopback_socket(f"ws://127.0.0.1:{listening}/", 5)
    assert sock is not None
    with sock:
        assert sock.getpeername() == ("127.0.0.1", listening)


@pytest.mark.parametrize("port", ["99999", "-1", "abc"])
def test_a_loopback_url_whose_port_is_not_a_port_is_a_clear_error(port: str) -> None:
    url = f"ws://127.0.0.1:{port}/v1/sessions/x/stream"
    with pytest.raises(TransportError, match=r"cannot open the stream websocket .*port is not a port number"):
        _connect(url, "token", {}, lambda ws, message: None)
    with pytest.raises(OSError, match="not a port number"):
        asyncio.run(sockets.loopback_socket_async(url, 5))
