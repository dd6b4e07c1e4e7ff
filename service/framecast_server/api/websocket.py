"""The websocket protocol uvicorn runs for framecast: message payloads received in place.

uvicorn's websocket protocol (``websockets``' sans-I/O parser under it) copies a 1.4 MB chunk about
five times on its way to the app: from the socket into a ``bytes``, onto the parser's buffer, out
of it as a slice, through the unmasking, and into one ``bytes`` joining the message's fragments.
At 720p that was most of the server's CPU per frame. Here the socket is read with
``asyncio.BufferedProtocol``: a data frame's payload is received straight into the buffer that
assembles its message and unmasked there, in place, so the app gets the message after one copy
(the kernel's), and copies it once more, into the session's ring.

Everything else stays uvicorn's and ``websockets``': the handshake, what the app sends, keepalive
pings, closing. Control frames (ping, pong, close) are handed to ``websockets``' parser as they
came. Data frames are checked here as RFC 6455 says (masked, no reserved bits, continuation
frames only inside a message, the message within ``ws_max_size``, text in UTF-8) and a frame that
breaks a rule fails the connection with the RFC's close code, as ``websockets`` would; what the
client still sends is read and dropped until it answers the close.

A binary message of at least ``LEND_MIN_BYTES`` reaches the app as a ``memoryview`` of the
assembling buffer, lent until the app's next ``receive()``: the buffer is then reused for a later
message. The ingest consumes each message before it asks for the next, which is what this needs;
smaller messages and text arrive as ``bytes`` and ``str``, as under uvicorn's own protocol.

The app can take the last copy away too. Through the ASGI extension ``framecast.placement`` (a
dict in the scope's extensions) it sets a ``sink``: called with the first fragment of a binary
message, it may answer with a ``Placement``, a writable region where the rest of the message is
then received, straight into the session's ring. The message reaches the app as its first
fragment, with the placement under the event's ``framecast.placement`` key. A message whose rest
does not exactly fill the region is received as usual after all, and the placement cancelled.
When the rest comes in one frame, the placement may take it still masked
(``Placement.leave_masked``): then whoever reads the region unmasks it, and the event loop never
passes over the payload's bytes at all (the session's encoder process does, as it reads them).
The sink may also answer that there is no room yet, with a future done when there may be: the
socket is not read until then and the sink is asked again, so a full ring pushes back on the
client through TCP instead of the payload being received as usual and copied in later.

Two more shortcuts take the hot path of a client on the same host (a small message each way per
frame) off the app's task: ``take_now``, set by the app in the same extension dict, is offered a
small binary message while the app waits for its next one with nothing queued, and may take it
there and then (a shared-memory chunk's header: no task switch, and no pause and resume of
reading); ``send_now`` (the scope's ``framecast.send_now`` extension) writes a small binary message
(an ACK) at once when nothing stands in the way. Either one declines when it cannot, and the
message goes the usual way, in order.

``InPlaceWebSocketProtocol`` is what ``uvicorn.Config(ws=...)`` takes. It is a thin
``asyncio.BufferedProtocol`` around the receiver because uvloop reads into a protocol's buffers
only when it is not also an ``asyncio.Protocol``, which uvicorn's class is.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol, cast

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..unmasking import unmask

log = logging.getLogger(__name__)

#: Bytes read at a time while the next thing on the socket is a frame header or a small payload.
SCRATCH_BYTES = 64 * 1024

#: A payload this large (or what is left of it) is received straight into the message's buffer;
#: smaller ones are read with what follows them, which saves system calls.
DIRECT_MIN_BYTES = 16 * 1024

#: Binary messages this large are lent to the app as a memoryview rather than copied out.
LEND_MIN_BYTES = 64 * 1024

#: Message buffers kept for reuse beyond the one lent to the app.
SPARE_BUFFERS = 2

#: The ASGI extension (a key of the scope's ``extensions``, and of a receive event) for placements.
PLACEMENT = "framecast.placement"

#: The ASGI extension whose value is ``send_now``: a small binary message sent from the caller's
#: own stack, where ``send()`` would take a task switch. The session's ACKs go this way.
SEND_NOW = "framecast.send_now"

#: The largest message ``send_now`` takes: one whose frame has the 2-byte header.
SEND_NOW_MAX_BYTES = 125


class Placement(Protocol):
    """A region the app has set aside for the rest of a message (``ring.Placed`` is one)."""

    @property
    def view(self) -> memoryview: ...

    def leave_masked(self, key: bytes) -> bool:
        """The rest of the message comes in one frame, masked with ``key`` (lined up with
        ``view[0]``): True when whoever reads the view will unmask it (``unmasking.unmask``), so
        the receiver does not; False to have it unmasked here."""
        ...

    def cancel(self) -> None: ...


#: What the app may set as ``scope["extensions"][PLACEMENT]["take_now"]``: called with a small binary
#: message (a view, valid during the call) when the app waits for its next message and none is
#: queued; True: the app took it there and then, and it is not queued.
TakeNow = Callable[[memoryview], bool]

#: What the app sets as ``scope["extensions"][PLACEMENT]["sink"]``: called with a binary message's
#: first fragment, it answers with where the rest goes, a future done when it should be asked
#: again (no room now; nothing is read meanwhile), or None (received as usual).
Sink = Callable[[memoryview], "Placement | asyncio.Future[None] | None"]

_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE = 0x0, 0x1, 0x2, 0x8
_FIN, _RSV, _OPCODE, _MASKED, _LENGTH = 0x80, 0x70, 0x0F, 0x80, 0x7F
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class _Frame:
    """The data frame whose payload is being received."""

    __slots__ = ("key", "remaining", "received", "fin", "discard", "masked")

    def __init__(self, key: bytes, remaining: int, fin: bool, discard: bool) -> None:
        self.key = key
        self.remaining = remaining
        self.received = 0  # payload bytes so far
        self.fin = fin
        self.discard = discard  # the server is closing: the frame is read and dropped
        self.masked = False  # left masked for the placement's reader (``Placement.leave_masked``)


class _Receiver(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, with data frames parsed here and received in place."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # No extensions (permessage-deflate): compressed frames would have to be inflated, a copy
        # and far more CPU than the bytes it saves on the link (framecast compresses payloads itself).
        self.conn = ServerProtocol(extensions=[], max_size=config.ws_max_size, logger=self.conn.logger)
        self._max_size = config.ws_max_size
        self._scratch = bytearray(SCRATCH_BYTES)
        self._head = 0  # first unparsed byte in the scratch buffer
        self._tail = 0  # end of what the socket put there
        self._direct = False  # the last buffer handed to the transport was the message's own
        self._frame: _Frame | None = None
        self._kind: str | None = None  # "text" or "bytes" while a message is being assembled
        self._buffer = bytearray()  # the message being assembled ...
        self._size = 0  # ... and how much of it has arrived
        self._lent: bytearray | None = None
        self._spares: list[bytearray] = []
        self._placement_extension: dict[str, Sink | TakeNow] = {}
        self._app_waiting = False  # the app is in ``receive()``, waiting for a message
        self._failed = False  # a frame broke the rules: everything after it is dropped
        self._placement: Placement | None = None  # where the rest of this message goes ...
        self._prefix = 0  # ... after its first fragment, which is in the buffer
        self._left_masked: bytes | None = None  # ... and the key the placement holds it masked with
        self._room: asyncio.Future[None] | None = None  # the sink's "ask again": nothing is parsed till then
        # Binary messages received as usual that the app has not finished with (it has when it
        # asks for the message after one), whether the one it holds is such, and a future done
        # when there are none: a payload placed before they are through would hold ring space
        # their payloads, still to be copied in, may need.
        self._unplaced = 0
        self._holding_unplaced = False
        self._unplaced_done: asyncio.Future[None] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        extensions = cast(dict[str, Any], self.scope).setdefault("extensions", {})
        extensions[PLACEMENT] = self._placement_extension
        extensions[SEND_NOW] = self.send_now

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_placement()
        super().connection_lost(exc)

    # -- the transport's reads ------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        frame = self._frame
        if frame is not None and not frame.discard and self._head == self._tail and frame.remaining >= DIRECT_MIN_BYTES:
            self._direct = True
            target, at = self._target()
            return memoryview(target)[at : at + frame.remaining]
        self._direct = False
        if self._head == self._tail:
            self._head = self._tail = 0
        elif self._tail == len(self._scratch):
            if not self._head:  # only while the connection is being dropped: nothing more is parsed
                self._head = self._tail = 0
            pending = self._tail - self._head
            self._scratch[:pending] = self._scratch[self._head : self._tail]
            self._head, self._tail = 0, pending
        return memoryview(self._scratch)[self._tail :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            frame = self._frame
            assert frame is not None
            self._payload_arrived(frame, nbytes)
        else:
            self._tail += nbytes
        self._parse()

    # -- parsing --------------------------------------------------------------------------------

    def _parse(self) -> None:
        """Take everything the scratch buffer holds: frame headers, control frames, small payloads."""
        while not self.transport.is_closing():
            if self._room is not None:
                return
            if not self.handshake_complete:
                # Frames before the handshake's answer: RFC 6455 forbids them; kept (bounded) until
                # the app accepts, or the connection is dropped.
                if self._tail == len(self._scratch):
                    self.transport.close()
                return
            if self.initial_response is not None:  # the app answered with HTTP: nothing is read
                self._head = self._tail
                return
            available = self._tail - self._head
            frame = self._frame
            if frame is not None:
                if not available:
                    return
                take = min(available, frame.remaining)
                if not frame.discard:
                    target, at = self._target()
                    target[at : at + take] = memoryview(self._scratch)[self._head : self._head + take]
                self._head += take
                self._payload_arrived(frame, take)
                continue
            if not self._header(available):
                return

    def _header(self, available: int) -> bool:
        """Parse the frame header at ``_head`` and start its frame; False when it is incomplete."""
        if available < 2:
            return False
        scratch, head = self._scratch, self._head
        first, second = scratch[head], scratch[head + 1]
        length = second & _LENGTH
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & _MASKED else 0)
        if available < size:
            return False
        if length == 126:
            (length,) = _U16.unpack_from(scratch, head + 2)
        elif length == 127:
            (length,) = _U64.unpack_from(scratch, head + 2)
        opcode = first & _OPCODE
        if opcode >= 0x8:
            return self._control(opcode, size, length, available)
        problem = None if self._failed else self._refusal(first, second, opcode, length)
        if self._failed or problem is not None:
            self._head += size
            self._skip(length)
            if problem is not None:
                self._fail(*problem)
            return True
        self._head += size
        discard = self.close_sent or self.conn.state is not State.OPEN
        if opcode != _OP_CONTINUATION:
            self._kind = "text" if opcode == _OP_TEXT else "bytes"
        if not discard:
            placement = self._placement
            if placement is not None and self._size - self._prefix + length > len(placement.view):
                self._unplace(self._size)  # more than the chunk's header said: the app will refuse it
            if self._placement is None:
                self._reserve(self._size + length, keep=self._size)
        key = bytes(scratch[head + size - 4 : head + size])
        self._frame = _Frame(key, length, bool(first & _FIN), discard)
        placement = self._placement
        if placement is not None and not discard and self._size == self._prefix and length == len(placement.view):
            # The whole rest in this frame (websockets' clients then end the message with an empty one).
            self._frame.masked = placement.leave_masked(key)
            self._left_masked = key if self._frame.masked else None
        if not length:
            self._frame_complete(self._frame)
        return True

    def _refusal(self, first: int, second: int, opcode: int, length: int) -> tuple[int, str] | None:
        """Why a data frame breaks RFC 6455 (the close code and reason), or None."""
        if first & _RSV:
            return CloseCode.PROTOCOL_ERROR, "reserved bits must be 0"
        if not second & _MASKED:
            return CloseCode.PROTOCOL_ERROR, "incorrect masking"
        if opcode not in (_OP_CONTINUATION, _OP_TEXT, _OP_BINARY):
            return CloseCode.PROTOCOL_ERROR, f"invalid opcode: {opcode}"
        if opcode == _OP_CONTINUATION and self._kind is None:
            return CloseCode.PROTOCOL_ERROR, "unexpected continuation frame"
        if opcode != _OP_CONTINUATION and self._kind is not None:
            return CloseCode.PROTOCOL_ERROR, "expected a continuation frame"
        if self._max_size is not None and self._size + length > self._max_size:
            return CloseCode.MESSAGE_TOO_BIG, f"over size limit ({self._size + length} > {self._max_size} bytes)"
        return None

    def _control(self, opcode: int, header_size: int, length: int, available: int) -> bool:
        """Hand a whole control frame to ``websockets``, which answers pings and closes."""
        if length > 125:
            self._head += header_size
            self._skip(length)
            if not self._failed:
                self._fail(CloseCode.PROTOCOL_ERROR, "control frame too long")
            return True
        if available < header_size + length:
            return False
        raw = bytes(self._scratch[self._head : self._head + header_size + length])
        self._head += header_size + length
        if self._failed:  # websockets no longer parses: the peer's close is the answer to ours
            if opcode == _OP_CLOSE:
                self.transport.close()
            return True
        self.conn.receive_data(raw)
        if self.conn.parser_exc is not None:
            self._close_after_failure()
        else:
            self.handle_events()
        return True

    def _skip(self, length: int) -> None:
        """Read the next ``length`` bytes (a refused frame's payload) and drop them."""
        if length:
            self._frame = _Frame(bytes(4), length, False, True)

    def _payload_arrived(self, frame: _Frame, nbytes: int) -> None:
        """``nbytes`` more of the frame's payload are at the end of the message; once all of it
        is, it is unmasked there in one pass (unless it is left masked for the placement's reader).

        One pass at the end costs less than unmasking read by read, even with the bytes still in
        the core's cache: each call costs more than the XOR of a read's worth, and the kernel's
        copy of a large read does not leave it in the cache anyway."""
        frame.received += nbytes
        frame.remaining -= nbytes
        if not frame.discard:
            self._size += nbytes
        if not frame.remaining:
            if not frame.discard and not frame.masked:
                target, end = self._target()
                unmask(memoryview(target)[end - frame.received : end], frame.key)
            self._frame_complete(frame)

    def _frame_complete(self, frame: _Frame) -> None:
        self._frame = None
        if frame.fin:
            kind, size = self._kind, self._size
            self._kind, self._size = None, 0
            if frame.discard:
                self._cancel_placement()
            else:
                self._deliver(kind, size)
        elif self._kind == "bytes" and self._placement is None and self._size == frame.received and not frame.discard:
            self._offer(self._size)  # the message's first fragment

    # -- placements -----------------------------------------------------------------------------

    def _offer(self, size: int) -> None:
        """Show the app a binary message's first fragment; it may place the rest, or have the
        socket wait until it has room (``Sink``)."""
        sink = cast("Sink | None", self._placement_extension.get("sink"))
        if sink is None:
            return
        if self._unplaced:
            if self._unplaced_done is None:
                self._unplaced_done = self.loop.create_future()
            answer: Placement | asyncio.Future[None] | None = self._unplaced_done
        else:
            answer = sink(memoryview(self._buffer)[:size])
        if isinstance(answer, asyncio.Future):
            self._room = answer
            self.transport.pause_reading()
            answer.add_done_callback(self._room_freed)
        elif answer is not None:
            self._placement, self._prefix, self._left_masked = answer, size, None

    def _room_freed(self, room: asyncio.Future[None]) -> None:
        """The sink may have room now: offer the first fragment again, then read on."""
        if room is not self._room:  # the wait was called off (``_cancel_placement``)
            return
        self._room = None
        if self.transport.is_closing() or self.close_sent or self._failed:
            return
        self._offer(self._size)
        if self._room is None:
            if not self.read_paused:  # (else uvicorn resumes once the app takes its message)
                self.transport.resume_reading()
            self._parse()

    def _target(self) -> tuple[bytearray | memoryview, int]:
        """Where the message's next payload bytes go: a buffer and the offset in it."""
        if self._placement is not None:
            return self._placement.view, self._size - self._prefix
        return self._buffer, self._size

    def _unplace(self, size: int) -> None:
        """Take the message (``size`` bytes so far) as usual after all: what the placement holds
        joins the first fragment in the buffer."""
        placement = self._placement
        assert placement is not None
        self._placement = None
        self._reserve(size, keep=self._prefix)
        self._buffer[self._prefix : size] = placement.view[: size - self._prefix]
        if self._left_masked is not None:  # the placement was filled, still masked
            unmask(memoryview(self._buffer)[self._prefix : self._prefix + len(placement.view)], self._left_masked)
            self._left_masked = None
        placement.cancel()

    def _cancel_placement(self) -> None:
        if self._room is not None:  # stop waiting for room: the message is dropped or received as usual
            self._room = None
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()
        if self._placement is not None:
            self._placement.cancel()
            self._placement = None

    # -- messages -------------------------------------------------------------------------------

    def _reserve(self, size: int, keep: int) -> None:
        """Make the message buffer hold at least ``size`` bytes, keeping its first ``keep``."""
        if len(self._buffer) >= size:
            return
        buffer = next((b for b in self._spares if len(b) >= size), None)
        if buffer is not None:
            self._spares.remove(buffer)
        else:
            buffer = bytearray(max(size, 2 * len(self._buffer), SCRATCH_BYTES))
        buffer[:keep] = memoryview(self._buffer)[:keep]
        self._buffer = buffer

    def _deliver(self, kind: str | None, size: int) -> None:
        """Queue a whole message for the app (as uvicorn does, then pause reading until it is taken)."""
        if self.close_sent:  # the app is past websocket.close: uvicorn drops such messages too
            self._cancel_placement()
            return
        if self._placement is not None and size - self._prefix != len(self._placement.view):
            self._unplace(size)  # less than the chunk's header said: the app will refuse it
        view = memoryview(self._buffer)[:size]
        if self._placement is not None:
            event: dict[str, Any] = {"type": "websocket.receive", "bytes": bytes(view[: self._prefix])}
            event[PLACEMENT] = self._placement
            self._placement = None
        elif kind == "text":
            try:
                event = {"type": "websocket.receive", "text": str(view, "utf-8")}
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                return
        elif self._taken_now(view):
            return
        elif size >= LEND_MIN_BYTES:
            event = {"type": "websocket.receive", "bytes": view}
            self._buffer = bytearray()  # lent: the next message takes another
            self._unplaced += 1
        else:
            event = {"type": "websocket.receive", "bytes": bytes(view)}
            self._unplaced += 1
        self.queue.put_nowait(cast(ASGIReceiveEvent, event))
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _taken_now(self, message: memoryview) -> bool:
        """Whether the app's ``take_now`` took this binary message at once: offered only when the
        app waits for a message and none is queued before this one, so messages stay in order."""
        take_now = cast("TakeNow | None", self._placement_extension.get("take_now"))
        if take_now is None or not self._app_waiting or not self.queue.empty() or len(message) >= LEND_MIN_BYTES:
            return False
        try:
            return take_now(message)
        except Exception:  # the app failed on it, as it would in its task: 1011, and the client reconnects
            log.exception("taking a message on the websocket's callback failed")
            self._fail(CloseCode.INTERNAL_ERROR, "internal error")
            return True

    async def receive(self) -> ASGIReceiveEvent:
        # The app asks for the next message, so it is done with the one before (lent, or not placed).
        if self._lent is not None:
            if len(self._spares) < SPARE_BUFFERS:
                self._spares.append(self._lent)
            self._lent = None
        if self._holding_unplaced:
            self._holding_unplaced = False
            self._unplaced -= 1
            if not self._unplaced and self._unplaced_done is not None:
                self._unplaced_done.set_result(None)  # (``_room_freed`` offers the waiting header)
                self._unplaced_done = None
        self._app_waiting = True
        try:
            event = await super().receive()
        finally:
            self._app_waiting = False
        if self._room is not None:  # uvicorn resumed reading for the next message: not yet
            self.transport.pause_reading()
        data = event.get("bytes")
        self._holding_unplaced = data is not None and PLACEMENT not in event
        if isinstance(data, memoryview):
            self._lent = data.obj  # type: ignore[assignment]
        return event

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self._tail > self._head:
            self._parse()  # frames a client sent before the answer (RFC 6455 says it may not)
        elif self.close_sent and self._room is not None:  # read on to the client's close
            self._cancel_placement()
            self._parse()

    def send_now(self, data: bytes) -> bool:
        """Send ``data`` as one binary message now, without waiting, if nothing stands in the way;
        False (nothing sent) if something does: the connection is not open, it is closing, the
        transport's buffer is full (``send()`` would wait), or ``data`` is over
        ``SEND_NOW_MAX_BYTES``. The caller then sends it the usual way.

        The caller keeps messages in order: it sends this way only when nothing it sent through
        ``send()`` is still on its way. No extensions are negotiated (see ``__init__``), so the
        frame is exactly the payload behind its header; a server's frames are not masked.
        """
        if (
            len(data) > SEND_NOW_MAX_BYTES
            or not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(bytes((_FIN | _OP_BINARY, len(data))) + data)
        return True

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code``, as ``websockets`` does for a frame it cannot take."""
        self.conn.fail(code, reason)
        self._close_after_failure()

    def _close_after_failure(self) -> None:
        """Send the close frame ``websockets`` made for a failure, tell the app, and read on,
        dropping everything, until the peer answers with its close (or ``close_timeout``).

        uvicorn closes the socket at once, which is fine for a parser that has just read all
        there was. Here the rest of a frame may still be on its way (the payload of a message
        over the size limit): a socket closed with unread data is reset, and the reset would
        overtake the close frame, so the client would never learn why.
        """
        self._cancel_placement()
        self._kind, self._size, self._failed = None, 0, True
        close = self.conn.close_sent
        if close is None:  # not open any more: nothing to say
            self.transport.close()
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


class InPlaceWebSocketProtocol(asyncio.BufferedProtocol):
    """What uvicorn runs for a websocket connection (``uvicorn.Config(ws=InPlaceWebSocketProtocol)``)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.receiver = _Receiver(config, server_state, app_state, _loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.receiver.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """The upgrade request, which uvicorn's HTTP protocol hands over before the switch."""
        self.receiver.data_received(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.receiver.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.receiver.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        self.receiver.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.connection_lost(exc)

    def pause_writing(self) -> None:
        self.receiver.pause_writing()

    def resume_writing(self) -> None:
        self.receiver.resume_writing()
