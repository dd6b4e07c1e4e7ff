"""The websocket protocol the server runs (framecast_server/api/websocket.py), frame by frame.

It parses data frames itself and receives their payloads in place, so what ``websockets`` checked
for us it must check too. An echo app under a real uvicorn (both event loops it may run on) is
driven by ``websockets``' own client for traffic that follows RFC 6455, and by hand-built frames on
a raw socket for traffic that does not: each broken rule must close with the RFC's code.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from framecast_server.api.websocket import (
    LEND_MIN_BYTES,
    PLACEMENT,
    SCRATCH_BYTES,
    SEND_NOW,
    SEND_NOW_MAX_BYTES,
    InPlaceWebSocketProtocol,
)
from framecast_server.unmasking import unmask

from .conftest import free_port

MAX_SIZE = 3 * 1024 * 1024


class EchoApp:
    """Sends every message back as it came; remembers how each connection ended. Binary messages
    that start with ``b"now:"`` go back through ``send_now`` where it takes them (``sent_now``
    counts those), else the usual way."""

    def __init__(self) -> None:
        self.disconnects: list[int] = []
        self.sent_now = 0
        self.taken: list[bytes] = []  # messages ``take_now`` took (those that start with b"take:")

    def _take_now(self, message: memoryview) -> bool:
        if bytes(message[:5]) != b"take:":
            return False
        if bytes(message) == b"take:boom":
            raise RuntimeError("the app failed on this message")
        self.taken.append(bytes(message))
        return True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        scope["extensions"][PLACEMENT]["take_now"] = self._take_now
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message["code"])
                return
            if message.get("bytes") is not None:
                data = bytes(message["bytes"])
                if data == b"slow":
                    await asyncio.sleep(1.0)  # busy with this one: what comes meanwhile waits its turn
                if data.startswith(b"now:") and scope["extensions"][SEND_NOW](data):
                    self.sent_now += 1
                    continue
                # Lent buffers are valid until the next receive(): echo before asking for more.
                await asyncio.sleep(0)  # let more of the socket be read meanwhile
                await send({"type": "websocket.send", "bytes": data})
            elif message["text"] == "close please":
                await send({"type": "websocket.close", "code": 4000, "reason": "asked to"})
                return
            else:
                await send({"type": "websocket.send", "text": message["text"]})


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def echo(request: pytest.FixtureRequest) -> Iterator[tuple[int, EchoApp]]:
    app = EchoApp()
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=InPlaceWebSocketProtocol,  # type: ignore[arg-type]  # a BufferedProtocol: websocket.py says why
        ws_max_size=MAX_SIZE,
        loop=request.param,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port, app
    server.should_exit = True
    thread.join(10)


# -- RFC-abiding traffic, from websockets' own client -------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 125, 126, 127, 65535, 65536, LEND_MIN_BYTES - 1, LEND_MIN_BYTES, SCRATCH_BYTES + 7, 1_382_400]
)
def test_binary_messages_come_back_whole(echo: tuple[int, EchoApp], size: int) -> None:
    port, _ = echo
    payload = os.urandom(size)
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        for _ in range(3):  # the same buffers again: lent, returned, reused
            ws.send(payload)
            assert ws.recv(timeout=10) == payload


def test_fragmented_messages_in_random_pieces(echo: tuple[int, EchoApp]) -> None:
    """Messages split into fragments of every size, back to back: each comes back exactly."""
    port, _ = echo
    rng = random.Random(7)
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        for _ in range(20):
            payload = os.urandom(rng.choice([10, 3000, 70_000, 400_000, 1_400_000]))
            cuts = sorted(rng.sample(range(1, len(payload)), min(6, len(payload) - 1)))
            pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
            ws.send(pieces)
            assert ws.recv(timeout=10) == payload


def test_text_split_inside_a_character(echo: tuple[int, EchoApp]) -> None:
    port, _ = echo
    text = "frames é 漢字 🎞️ " * 50
    encoded = text.encode()
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        ws.send([encoded[:8], encoded[8:9], encoded[9:]], text=True)  # "é" is bytes 7-8: cut between them
        assert ws.recv(timeout=10) == text


def test_many_messages_pipelined(echo: tuple[int, EchoApp]) -> None:
    """Small and large messages sent without waiting: the server reads many frames per read."""
    port, _ = echo
    rng = random.Random(3)
    payloads = [os.urandom(rng.choice([0, 5, 200, 90_000, 300_000])) for _ in range(60)]
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        for payload in payloads:
            ws.send(payload)
        assert [ws.recv(timeout=10) for _ in payloads] == payloads


def test_small_messages_sent_now_arrive_whole_and_in_order(echo: tuple[int, EchoApp]) -> None:
    """``send_now`` (the session's ACKs) writes a frame of every length it takes, between messages
    sent the usual way, and refuses what does not fit its 2-byte frame header: that goes the usual
    way, in order."""
    port, app = echo
    before = app.sent_now
    sizes = [4, 5, 100, SEND_NOW_MAX_BYTES, SEND_NOW_MAX_BYTES + 1, 1000]
    payloads = [b"now:" + os.urandom(size - 4) for size in sizes] + [b"plain", b"now:x"]
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        for payload in payloads:
            ws.send(payload)
            assert ws.recv(timeout=10) == payload
        for payload in payloads:  # pipelined too
            ws.send(payload)
        assert [ws.recv(timeout=10) for _ in payloads] == payloads
    sent_now = 2 * sum(1 for p in payloads if p.startswith(b"now:") and len(p) <= SEND_NOW_MAX_BYTES)
    assert app.sent_now - before == sent_now == 10


def test_take_now_takes_a_message_only_while_the_app_waits_for_one(echo: tuple[int, EchoApp]) -> None:
    """``take_now`` (shared-memory chunks) is offered a small binary message only when the app is
    waiting in ``receive()`` with nothing queued: one that comes while the app is busy with the
    message before reaches it through ``receive()``, after that one, in order."""
    port, app = echo
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        taken = len(app.taken)
        ws.send(b"slow")
        ws.send(b"take:1")  # the app is asleep over "slow": queued, and echoed like any message
        assert ws.recv(timeout=10) == b"slow" and ws.recv(timeout=10) == b"take:1"
        ws.send(b"take:2")  # the app waits: taken at once, never echoed
        ws.send(b"take:" + bytes(LEND_MIN_BYTES))  # too large to be offered
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"take:" + bytes(LEND_MIN_BYTES)
        assert ws.recv(timeout=10) == b"ping"
    assert app.taken[taken:] == [b"take:2"]


def test_take_now_failing_closes_that_connection_with_1011_and_the_server_goes_on(
    echo: tuple[int, EchoApp],
) -> None:
    """An app that raises in ``take_now`` fails as it would in its own task: that connection is
    closed with 1011 (internal error), and the next one works."""
    port, _ = echo
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"ping"  # the app now waits in receive(): take_now is offered
        ws.send(b"take:boom")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        ws.send(b"still here")
        assert ws.recv(timeout=10) == b"still here"


def test_deflate_is_not_negotiated(echo: tuple[int, EchoApp]) -> None:
    """A client offering permessage-deflate (browsers do) gets plain frames, and works."""
    port, _ = echo
    with connect(f"ws://127.0.0.1:{port}/", compression="deflate") as ws:
        assert ws.response is not None and ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.send(b"x" * 100_000)
        assert ws.recv(timeout=10) == b"x" * 100_000


def test_server_close_reaches_the_client(echo: tuple[int, EchoApp]) -> None:
    port, _ = echo
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


# -- hand-built frames on a raw socket ----------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame, as RFC 6455 lays it out (or, with the keywords, as it must not)."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    body = bytearray(payload)
    unmask(body, key)  # masking and unmasking are the same XOR
    return head + key + bytes(body)


class RawClient:
    """A websocket client that sends whatever bytes it is told to, and reads the server's frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def _need(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = self._need(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._need(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._need(8))
        return first & 0x0F, self._need(size)

    def close_code(self) -> int:
        """Frames until the server's close frame; its code."""
        for _ in range(100):
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])
        raise AssertionError("no close frame")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(echo: tuple[int, EchoApp]) -> Iterator[RawClient]:
    client = RawClient(echo[0])
    yield client
    client.close()


def test_byte_by_byte(raw: RawClient) -> None:
    """A message that trickles in one byte per write, with a ping between its fragments."""
    payload = os.urandom(300)
    data = frame(0x2, payload[:100], fin=False) + frame(0x9, b"are you there") + frame(0x0, payload[100:])
    for i in range(len(data)):
        raw.sock.sendall(data[i : i + 1])
        if i % 50 == 0:
            time.sleep(0.001)
    assert raw.read_frame() == (0xA, b"are you there")
    assert raw.read_frame() == (0x2, payload)


def test_a_large_fragmented_message_with_pings_inside(raw: RawClient) -> None:
    payload = os.urandom(1_000_000)
    parts = [payload[:10], payload[10:500_000], payload[500_000:]]
    data = frame(0x2, parts[0], fin=False) + frame(0x9, b"1") + frame(0x0, parts[1], fin=False)
    data += frame(0x9, b"2") + frame(0x0, parts[2])
    raw.sock.sendall(data)
    assert raw.read_frame() == (0xA, b"1")
    assert raw.read_frame() == (0xA, b"2")
    assert raw.read_frame() == (0x2, payload)


@pytest.mark.parametrize(
    "frames, code",
    [
        pytest.param(frame(0x2, b"data", masked=False), 1002, id="unmasked"),
        pytest.param(frame(0x2, b"data", rsv=4), 1002, id="rsv1-without-deflate"),
        pytest.param(frame(0x2, b"data", rsv=1), 1002, id="rsv3"),
        pytest.param(frame(0x0, b"data"), 1002, id="continuation-first"),
        pytest.param(frame(0x2, b"da", fin=False) + frame(0x1, b"ta"), 1002, id="new-message-inside-one"),
        pytest.param(frame(0x3, b"data"), 1002, id="reserved-data-opcode"),
        pytest.param(frame(0xB, b"data"), 1002, id="reserved-control-opcode"),
        pytest.param(frame(0x9, b"p" * 126), 1002, id="control-too-long"),
        pytest.param(frame(0x9, b"ping", fin=False), 1002, id="fragmented-control"),
        pytest.param(frame(0x1, b"caf\xc3"), 1007, id="truncated-utf8"),
        pytest.param(frame(0x1, b"\xff\xfe"), 1007, id="invalid-utf8"),
        # Refused on its header; the rest of the frame is still read (and dropped), else closing a
        # socket with unread data resets it and the close frame never arrives.
        pytest.param(frame(0x2, b"a" * (MAX_SIZE + 1)), 1009, id="one-frame-too-big"),
        pytest.param(frame(0x2, b"a" * (MAX_SIZE + 1))[:100], 1009, id="one-frame-too-big-truncated"),
        pytest.param(frame(0x2, b"a" * (MAX_SIZE + 1)) + frame(0x2, b"after") * 50, 1009, id="too-big-then-more"),
        pytest.param(
            frame(0x2, b"a" * (MAX_SIZE // 2), fin=False) + frame(0x0, b"a" * (MAX_SIZE // 2 + 1))[:100],
            1009,
            id="fragments-too-big",
        ),
    ],
)
def test_broken_rules_close_with_the_rfc_code(
    echo: tuple[int, EchoApp], raw: RawClient, frames: bytes, code: int
) -> None:
    """Each rule of RFC 6455 §5 a client breaks fails its connection with the code for it; the
    app hears the same code; the server goes on taking other connections."""
    _, app = echo
    before = len(app.disconnects)
    raw.sock.sendall(frames)
    assert raw.close_code() == code
    deadline = time.monotonic() + 10
    while len(app.disconnects) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.disconnects[-1] == code
    test_binary_messages_come_back_whole(echo, 1000)


def test_close_from_the_client_completes_the_handshake(echo: tuple[int, EchoApp], raw: RawClient) -> None:
    _, app = echo
    before = len(app.disconnects)
    raw.sock.sendall(frame(0x2, b"last"))
    assert raw.read_frame() == (0x2, b"last")
    raw.sock.sendall(frame(0x8, struct.pack("!H", 1000) + b"bye"))
    assert raw.close_code() == 1000
    deadline = time.monotonic() + 10
    while len(app.disconnects) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.disconnects[-1] == 1000
