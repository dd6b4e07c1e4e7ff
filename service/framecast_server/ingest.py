"""The websocket ingest: chunks in, acks, output bytes and control messages out.

One connection per session at a time, authenticated by the session's stream token in the
``Authorization: Bearer`` header. The receive loop only moves bytes: it checks each chunk header
and hands the message on to the session's encoder process, awaiting while that process is busy,
which is what slows a client that writes faster than its encoder (TCP backpressure does the rest).
A separate task sends the session's outbox to the client in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from framecast import protocol
from framecast.errors import ProtocolError

from .auth import OPERATOR, bearer
from .errors import InvalidChunk, SessionNotFound, StateConflict
from .sessions import Session, SessionManager

log = logging.getLogger(__name__)
router = APIRouter()

# Close codes in the 4000-4999 range the websocket spec leaves to applications.
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409


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
    manager: SessionManager = ws.app.state.manager
    # Refusals accept first and then close with a code and reason: a handshake refusal would
    # reach the client as a bare HTTP 403 and lose why.
    await ws.accept()
    try:
        # Any tenant's session: what authorizes a stream is the session's own token, checked next.
        session = manager.get(session_id, OPERATOR)
    except SessionNotFound as exc:
        await ws.close(CLOSE_NOT_FOUND, exc.message[:120])
        return
    if not hmac.compare_digest(bearer(ws.headers.get("authorization", "")).encode(), session.token.encode()):
        await ws.close(CLOSE_UNAUTHORIZED, "missing or wrong stream token")
        return
    try:
        session.attach()
    except StateConflict as exc:
        await ws.close(CLOSE_CONFLICT, exc.message[:120])
        return
    sender = asyncio.create_task(_send_outbox(ws, session))
    finished = False
    try:
        while not finished:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is not None:
                try:
                    await session.ingest(data)
                except InvalidChunk as exc:
                    ws.app.state.metrics.errors.labels(exc.code).inc()
                    seq = _seq_of(data)
                    session.outbox.put(
                        protocol.encode_control(protocol.ERROR, seq=seq, code=exc.code, message=exc.message)
                    )
                continue
            finished = await _control(session, message.get("text") or "")
        if finished:
            # Everything the encoder produced, then the final summary, then a normal close.
            await _drain(session, sender, session.settings.finish_timeout)
            await ws.close(1000)
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        session.detach()


async def _drain(session: Session, sender: asyncio.Task[None], timeout: float) -> None:
    """Wait (bounded) until the sender has delivered everything in the outbox."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(session.outbox) and not sender.done() and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def _control(session: Session, text: str) -> bool:
    """Handle a JSON control message; True when the session is finished and the socket can close."""
    try:
        control = protocol.parse_control(text)
    except ProtocolError as exc:
        session.outbox.put(protocol.encode_control(protocol.ERROR, seq=None, code="invalid_message", message=str(exc)))
        return False
    if control["type"] == protocol.FINISH:
        await session.finish()
        return True
    if control["type"] == protocol.OUTPUT_ACK and isinstance(control.get("index"), int):
        session.confirm_output(control["index"])
        return False
    session.outbox.put(
        protocol.encode_control(
            protocol.ERROR, seq=None, code="invalid_message",
            message=f"unknown control message type {control['type']!r}; "
            f"expected {protocol.FINISH!r} or {protocol.OUTPUT_ACK!r} with an integer index",
        )
    )
    return False


def _seq_of(data: bytes) -> int | None:
    """The sequence number of a chunk, if its header is intact enough to tell (its payload may be
    what is wrong: a length that does not match its shape)."""
    try:
        return protocol.parse_chunk_header(data).seq
    except ProtocolError:
        return None
