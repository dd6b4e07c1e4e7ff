"""The websocket ingest: chunks in, acks, output bytes and control messages out.

One connection per session at a time, authenticated by the session's stream token in the
``Authorization: Bearer`` header or, from a browser (whose WebSocket cannot send headers), offered
as the subprotocol ``framecast.bearer.<token>`` beside ``framecast.v1``, which the server selects.
The receive loop only moves bytes: it checks each chunk header and hands the message on to the
session's encoder process, awaiting while that process is busy, which is what slows a client that
writes faster than its encoder (TCP backpressure does the rest).
A separate task sends the session's outbox to the client in order. A large chunk arrives as a
``memoryview`` the websocket protocol lends until the next ``receive()`` (``websocket.py``): each
message is done with, its payload in the ring, before the loop asks for the next. Better still, the
session places a large payload in its ring as soon as the chunk's header has arrived
(``Session.place``), and the protocol receives it there; the loop then gets the header alone.

A refused chunk or control message is answered with an error, within limits: the session's
``Refusals`` (``refusals.py``) decide which refusals get a reply of their own, which are counted
into one ``refused_more`` summary, what is logged, and when a connection that sends nothing but
refused messages is closed with 1008. Everything the outbox holds is bounded (``outbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from framecast import protocol
from framecast.errors import ProtocolError
from framecast_server.api.websocket import PLACEMENT, SEND_NOW
from framecast_server.auth import bearer
from framecast_server.errors import InvalidChunk, SessionNotFound, StateConflict
from framecast_server.session.manager import SessionManager
from framecast_server.session.refusals import shorten
from framecast_server.session.session import Session

log = logging.getLogger(__name__)
router = APIRouter()

# Close codes in the 4000-4999 range the websocket spec leaves to applications.
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409
#: The websocket spec's "policy violation": a client that sends only what is refused.
CLOSE_POLICY = 1008

#: Seconds to wait for room to send a close frame to a client that may not be reading.
CLOSE_WAIT_SECONDS = 10.0

#: The error code of one reply that stands for refusals not answered one by one.
REFUSED_MORE = "refused_more"

#: The subprotocol a browser offers (and the server selects), and the prefix of the one carrying
#: the stream token: a browser's WebSocket sends no headers but these (client/js/writer.js).
SUBPROTOCOL = "framecast.v1"
TOKEN_SUBPROTOCOL_PREFIX = "framecast.bearer."


def _stream_token(ws: WebSocket) -> tuple[str, str | None]:
    """The stream token the client presented, and the subprotocol to select (None: none offered)."""
    token = bearer(ws.headers.get("authorization", ""))
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if not token:
        token = next(
            (p[len(TOKEN_SUBPROTOCOL_PREFIX) :] for p in offered if p.startswith(TOKEN_SUBPROTOCOL_PREFIX)), ""
        )
    return token, SUBPROTOCOL if SUBPROTOCOL in offered else None


async def _send_outbox(ws: WebSocket, session: Session) -> None:
    while True:
        item = await session.outbox.peek()
        if isinstance(item, bytes):
            await ws.send_bytes(item)
        else:
            await ws.send_text(item)
        session.outbox.pop()


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    """One connection to a session: authorize it, take its messages until the client finishes the
    session or goes, then let the session go (another connection may attach to it)."""
    manager: SessionManager = ws.app.state.manager
    session = await _authorize(ws, manager, session_id)
    if session is None:
        return
    sender = asyncio.create_task(_send_outbox(ws, session))
    extensions = ws.scope.get("extensions", {})
    placements = extensions.get(PLACEMENT)
    if placements is not None:  # payloads straight into the ring (websocket.py)
        placements["sink"] = session.place
        placements["take_now"] = functools.partial(_take_now, session)
    send_now = extensions.get(SEND_NOW)
    session.outbox.send_now = send_now  # ACKs without waking the sender (websocket.py)
    try:
        if await _receive_loop(ws, session):
            # Everything the encoder produced, then the final summary, then a normal close.
            await _drain(session, sender, session.settings.finish_timeout)
            await ws.close(1000)
    except WebSocketDisconnect:
        pass
    finally:
        if placements is not None:
            placements.pop("sink", None)
            placements.pop("take_now", None)
        if session.outbox.send_now is send_now:
            session.outbox.send_now = None
        await _finish_connection(session, sender)


async def _authorize(ws: WebSocket, manager: SessionManager, session_id: str) -> Session | None:
    """Accept the connection, then check it may stream to the session and attach it: the session,
    or None when the connection has been closed with the code and reason why not.

    Refusals accept first and then close with a code and reason: a handshake refusal would reach
    the client as a bare HTTP 403 and lose why.
    """
    token, subprotocol = _stream_token(ws)
    await ws.accept(subprotocol=subprotocol)
    try:
        # Any tenant's session: what authorizes a stream is the session's own token, checked next.
        session = manager.live(session_id)
    except SessionNotFound as exc:
        await ws.close(CLOSE_NOT_FOUND, exc.message[:120])
        return None
    if not hmac.compare_digest(token.encode(), session.token.encode()):
        await ws.close(CLOSE_UNAUTHORIZED, "missing or wrong stream token")
        return None
    try:
        session.attach()
    except StateConflict as exc:
        await ws.close(CLOSE_CONFLICT, exc.message[:120])
        return None
    return session


async def _receive_loop(ws: WebSocket, session: Session) -> bool:
    """Take the client's messages until it finishes the session (True), or until it disconnects or
    is closed for sending nothing but refused messages (False).

    Raises:
        WebSocketDisconnect: the connection broke while the server was closing it.
    """
    finished = False
    while not finished:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return False
        data = message.get("bytes")
        try:
            finished = await _take(session, message)
        except (InvalidChunk, _RefusedMessage) as exc:
            close_reason = _refused(ws, session, exc, data if data is not None else message.get("text") or "")
            if close_reason is not None:
                await _close_refused(ws, close_reason)
                return False
            continue
        _accepted(session)
    return True


def _take_now(session: Session, data: memoryview) -> bool:
    """A chunk taken on the websocket's callback (``Session.take_now``), as ``_receive_loop``
    takes one."""
    if not session.take_now(data):
        return False
    _accepted(session)
    return True


def _accepted(session: Session) -> None:
    """A message was taken: if some before it were refused unanswered, say how many."""
    summary = session.refusals.accepted()
    if summary is not None:
        session.outbox.put_notice(_error(None, REFUSED_MORE, summary))


async def _take(session: Session, message: Message) -> bool:
    """Hand one message to the session, a chunk to its encoder process and text as a control
    message; True when that finished the session.

    Raises:
        InvalidChunk: the session refused the chunk.
        _RefusedMessage: not a control message this server takes.
    """
    data = message.get("bytes")
    if data is not None:
        await session.ingest(data, message.get(PLACEMENT))
        return False
    return await _control(session, message.get("text") or "")


async def _close_refused(ws: WebSocket, reason: str) -> None:
    """Close a connection that sends only what is refused, with 1008 and ``reason``.

    Bounded: a client that does not read may leave no room for the close frame.
    """
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ws.close(CLOSE_POLICY, reason), CLOSE_WAIT_SECONDS)


async def _finish_connection(session: Session, sender: asyncio.Task[None]) -> None:
    """However the connection ended: stop sending the outbox, and detach the session from it."""
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await sender
    session.refusals.gone()
    session.detach()


class _RefusedMessage(Exception):
    """A text message that is not a control message the server takes."""

    code = "invalid_message"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(seq: int | None, code: str, message: str) -> str:
    return protocol.encode_control(protocol.ERROR, seq=seq, code=code, message=shorten(message))


def _refused(
    ws: WebSocket, session: Session, exc: InvalidChunk | _RefusedMessage, message: bytes | memoryview | str
) -> str | None:
    """Answer (or count) one refused message; the reason to close the connection, if it is time to."""
    ws.app.state.metrics.errors.labels(exc.code).inc()
    header = None if isinstance(message, str) else _header_of(message)
    seq = header.seq if header is not None else None
    what = "control message" if isinstance(message, str) else "chunk"
    fields = {"stream": header.stream} if header is not None else {}
    verdict = session.refusals.refused(what, len(message), exc.message, **fields)
    if verdict.summary is not None:
        session.outbox.put_notice(_error(None, REFUSED_MORE, verdict.summary))
    if verdict.reply:
        session.outbox.put_notice(_error(seq, exc.code, exc.message))
    return verdict.close_reason


async def _drain(session: Session, sender: asyncio.Task[None], timeout: float) -> None:
    """Wait (bounded) until the sender has delivered everything in the outbox."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(session.outbox) and not sender.done() and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def _control(session: Session, text: str) -> bool:
    """Handle a JSON control message; True when the session is finished and the socket can close.

    Raises:
        _RefusedMessage: not a control message this server takes.
    """
    try:
        control = protocol.parse_control(text, protocol.MAX_CLIENT_CONTROL_CHARS)
    except ProtocolError as exc:
        raise _RefusedMessage(str(exc)) from None
    if control["type"] == protocol.FINISH:
        await session.finish()
        return True
    if control["type"] == protocol.OUTPUT_ACK and isinstance(control.get("index"), int):
        session.confirm_output(control["index"])
        return False
    raise _RefusedMessage(
        f"unknown control message type {shorten(control['type'], 40)!r}; "
        f"expected {protocol.FINISH!r} or {protocol.OUTPUT_ACK!r} with an integer index"
    )


def _header_of(data: bytes | memoryview) -> protocol.ChunkHeader | None:
    """A chunk's header, if it is intact enough to tell (its payload may be what is wrong: a length
    that does not match its shape)."""
    try:
        return protocol.parse_chunk_header(data)
    except ProtocolError:
        return None
