"""The sync SDK's websocket connection (``framecast.writer._Connection``) applies every message on
the thread that receives it, in order, whole: against a real websockets server on loopback that
sends single-frame, fragmented and invalid messages."""

from __future__ import annotations

import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.server import serve

from framecast.writer import _connect


@pytest.fixture
def peer():
    """A websockets server on 127.0.0.1 that sends what ``script`` says once a client connects."""
    script: list = []
    closed = threading.Event()

    def handler(ws):
        # `closed` is set however the script ends: a client that has already failed the connection
        # (invalid UTF-8 below) makes the script's next send raise ConnectionClosed, and on a busy
        # machine that can happen before the handler gets to wait for the close.
        try:
            for item in script:
                if isinstance(item, list):
                    ws.send(iter(item))  # an iterable: one message in several frames
                elif item == "raw-invalid-utf8":
                    # A text frame whose bytes are not UTF-8, written below websockets' send().
                    with ws.send_context():
                        ws.protocol.send_text(b"\xff\xfe")
                else:
                    ws.send(item)
            ws.recv(timeout=10)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            closed.set()

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/", script, closed
        server.shutdown()
        thread.join(10)


def collect(url, expected: int, timeout: float = 10.0):
    got, threads, done = [], [], threading.Event()

    def on_message(ws, message):
        got.append(message)
        threads.append(threading.current_thread().name)
        if len(got) == expected:
            done.set()

    ws = _connect(url, "token", {}, on_message)
    return ws, got, threads, done


def test_messages_arrive_whole_and_in_order_on_the_receiving_thread(peer):
    url, script, _ = peer
    script += ["first", b"\x01\x02", ["frag", "mented ", "text"], [b"\x00" * 5, b"\x01" * 3], "last"]
    ws, got, threads, done = collect(url, 5)
    try:
        assert done.wait(10), got
        assert got == ["first", b"\x01\x02", "fragmented text", b"\x00" * 5 + b"\x01" * 3, "last"]
        # Not the thread that called _connect, and never a second one: websockets' receiving thread.
        assert len(set(threads)) == 1 and threads[0] != threading.current_thread().name
        with pytest.raises(TimeoutError):  # nothing was left queued for recv()
            ws.recv(timeout=0.2)
    finally:
        ws.close()


def test_a_text_message_that_is_not_utf8_fails_the_connection_as_websockets_does(peer):
    url, script, closed = peer
    script += ["fine", "raw-invalid-utf8", "never applied"]
    ws, got, _, _ = collect(url, 3)
    try:
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
        assert caught.value.sent is not None and caught.value.sent.code == CloseCode.INVALID_DATA
        assert got == ["fine"]
    finally:
        ws.close()
    assert closed.wait(10)
