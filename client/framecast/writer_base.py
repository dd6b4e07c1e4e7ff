"""The state of a writer, without I/O: shared by StreamWriter and AsyncStreamWriter.

``WriterCore`` holds the streams, the session the server created, the sequence numbers in flight,
and the errors the server reported; it turns user calls into CHUNK messages and server messages
into state changes. The sync and async writers only move its messages over their sockets, the
way httpx's Client and AsyncClient share one model.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import compression, protocol, yuv
from .errors import (
    FramecastError,
    InvalidChunk,
    InvalidConfig,
    ProtocolError,
    SessionFailed,
    StateError,
    TransportError,
)
from .shm import SharedSegment
from .streams import AudioStream, Output, Stream, VideoStream, destination_list, is_seekable, split, to_numpy

log = logging.getLogger("framecast")

#: Media seconds per message for real-time sessions.
REALTIME_PIECE_SECONDS = 0.25
#: Unacknowledged media (summed over streams) a real-time writer may have in flight.
REALTIME_WINDOW_SECONDS = 1.0
#: Unacknowledged bytes any writer may have in flight (and keeps, to resend after a reconnect).
MAX_UNACKED_BYTES = 64 << 20
#: The writer confirms applied OUTPUT messages to the server every this many.
OUTPUT_ACK_EVERY = 16
#: Session events kept on the writer.
MAX_EVENTS = 100


#: Close codes after which reconnecting cannot help: they end the writer at once, whenever they
#: come (while streaming, or on a connection just reopened to resend).
FATAL_CLOSE_CODES = {
    4401: "the server refused the stream token",
    4404: "the server no longer has this session (its server restarted, or its replica is gone)",
}


@dataclass(frozen=True)
class _Described:
    """The shape and dtype of a chunk that is not on the CPU, for ``VideoStream.check``."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def fatal_close(code: int | None) -> bool:
    """Whether a websocket close code ends the writer (``FATAL_CLOSE_CODES``)."""
    return code in FATAL_CLOSE_CODES


def close_code(error: BaseException, connection: Any) -> int | None:
    """The close code a reconnect attempt ended with: the one ``error`` carries (websockets'
    ``ConnectionClosed``), else the one ``connection`` received. A server that closes at once
    (4404) can make the attempt fail with a plain OSError (a socket the receiving thread already
    closed); the code it sent is what decides, not how the failure surfaced."""
    received = getattr(error, "rcvd", None)
    if received is not None:
        return int(received.code)
    return getattr(connection, "close_code", None) if connection is not None else None


class Backoff:
    """Capped exponential backoff within a deadline, for reconnecting (no I/O: the writers sleep)."""

    def __init__(self, timeout: float, clock: Callable[[], float], first: float = 0.05, cap: float = 2.0) -> None:
        self.timeout = timeout
        self.deadline = clock() + timeout
        self.clock = clock
        self.delay = first
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float | None:
        """How long to wait before the next attempt, or None when the deadline would pass."""
        self.attempts += 1
        if self.clock() + self.delay > self.deadline:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def gave_up(self, reason: object) -> TransportError:
        return TransportError(
            f"lost the connection to the framecast server and could not reconnect within {self.timeout:g} s "
            f"({self.attempts} attempts): {reason}"
        )


@dataclass(frozen=True)
class Conversion:
    """RGB frames a message carries as yuv420p, converted only as the message is sent: straight
    into the session's shared memory when it goes there (one pass over the frames, where a copy
    would be), else into memory of the writer's own."""

    frames: np.ndarray  # (T, C, H, W) uint8 on the CPU: the caller's, until the message is sent
    in_format: str
    nbytes: int  # of the yuv420p payload

    def into(self, memory: memoryview) -> None:
        out = np.frombuffer(memory, dtype=np.uint8).reshape(self.frames.shape[0], -1)
        yuv.rgb_to_i420_into(self.frames, out, self.in_format)

    def payload(self) -> memoryview:
        return memoryview(yuv.rgb_to_i420(self.frames, self.in_format)).cast("B")


@dataclass(frozen=True)
class Message:
    """One CHUNK message ready to send: header and payload kept apart (no joining copy).

    For a payload placed in the session's shared memory, ``header`` is the whole message (the
    header with the shared flag and the offset) and ``payload`` is empty. A message with a
    ``conversion`` has no payload yet: ``sending`` makes it.
    """

    seq: int
    header: bytes
    payload: memoryview
    seconds: float  # media seconds the message carries
    stream: int = 0
    owned: bool = False  # the payload is the writer's own (converted or compressed), not the caller's
    conversion: Conversion | None = None

    @property
    def size(self) -> int:
        """The payload's bytes, made or still to make."""
        return self.conversion.nbytes if self.conversion is not None else len(self.payload)

    def fragments(self) -> bytes | list[bytes | memoryview]:
        """What to hand the websocket: one buffer, or header and payload as two frames."""
        assert self.conversion is None, "a message is converted as it is sent"
        return self.header if not len(self.payload) else [self.header, self.payload]


_NO_PAYLOAD = memoryview(b"")


def _in_segment(message: Message, offset: int) -> Message:
    """``message`` once its payload is at ``offset`` of the session's shared memory: its header
    with the shared flag and the offset is the whole message."""
    header = protocol.shared_header(message.header, offset)
    return Message(message.seq, header, _NO_PAYLOAD, message.seconds, message.stream, message.owned)


#: The hooks a writer runs, by name, with their arguments (see ``BaseStreamWriter``'s
#: ``event_hooks``): when a CHUNK message is first sent, and when an ACK arrives.
HOOK_NAMES = {"send": "(seq, stream, seconds, time)", "ack": "(seq, time)"}
EventHooks = dict[str, list[Callable[..., object]]]


def checked_hooks(hooks: Mapping[str, Sequence[Callable[..., object]]] | None) -> EventHooks:
    """``hooks`` as a writer keeps them: a list for every hook name, copied from the caller's.

    Raises:
        InvalidConfig: an unknown hook name (a typo would otherwise never be called), or
            something that is not a list of callables.
    """
    given = dict(hooks or {})
    unknown = sorted(set(given) - set(HOOK_NAMES))
    if unknown:
        raise InvalidConfig(
            f"unknown event hook {unknown[0]!r}; the hooks are {', '.join(map(repr, HOOK_NAMES))}", field="event_hooks"
        )
    checked: EventHooks = {}
    for name in HOOK_NAMES:
        fns = given.get(name, [])
        if callable(fns) or not all(callable(fn) for fn in fns):
            raise InvalidConfig(
                f"event_hooks[{name!r}] must be a list of callables {HOOK_NAMES[name]}", field="event_hooks"
            )
        checked[name] = list(fns)
    return checked


class FramecastWarning(UserWarning):
    """Something the server wants the user to know that is not an error (e.g. unused options)."""


class WriterState(str, enum.Enum):
    CONFIGURING = "configuring"  # streams may be added
    OPEN = "open"  # the session exists; chunks may be written
    CLOSING = "closing"  # finish sent; waiting for the last output bytes
    CLOSED = "closed"
    FAILED = "failed"


class LocalSink:
    """Applies OUTPUT messages to the user's destination: a local path or a file-like object.

    Each message says where its bytes go; the sink seeks there when that is not where the last
    write ended (a muxer going back to patch a header). A destination that cannot seek (a pipe,
    ``sys.stdout.buffer``, an object with ``write`` alone) takes the bytes from wherever the server
    starts, as long as it never has to go back; the server knows it from the session config's
    ``seekable`` and muxes accordingly.
    """

    def __init__(self, dst: Any) -> None:
        self._dst = dst
        self._file: Any = None
        self._owned = False
        self._seekable = False
        self._pos: int | None = None

    def open(self) -> None:
        if isinstance(self._dst, (str, os.PathLike)):
            self._file = open(self._dst, "wb")
            self._owned = True
        else:
            self._file = self._dst
        # seekable(), not hasattr(seek): a pipe's file object has a seek() that always fails.
        self._seekable = is_seekable(self._file)
        self._pos = None

    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset``; raises ProtocolError for a seek the destination cannot do."""
        if self._pos != offset:
            if self._seekable:
                self._file.seek(offset)
            elif self._pos is None:
                self._pos = offset  # a fresh non-seekable stream starts where the server does
            else:
                raise ProtocolError(f"server wrote at offset {offset} but the destination cannot seek (at {self._pos})")
        view = memoryview(data)
        while len(view):
            written = self._file.write(view)
            if written is None:  # io.RawIOBase may return None only when non-blocking
                written = len(view)
            view = view[written:]
        self._pos = offset + len(data)

    def close(self) -> None:
        if self._file is None:
            return
        if self._owned:
            self._file.close()
        elif hasattr(self._file, "flush"):
            self._file.flush()
        self._file = None


class WriterCore:
    """Everything a writer knows and decides, with no sockets.

    Args:
        dst, format, realtime, connect_timeout, on_destination_drop: as the writers take them.
        clock: the time the ``send`` and ``ack`` hooks are given (``self.hooks``).

    Raises:
        InvalidConfig: ``dst`` is no destination or list of them (``streams.destination_list``),
            or ``format`` is given for several destinations, or twice for one.
    """

    def __init__(
        self,
        dst: Any,
        format: str | None,
        *,
        realtime: bool | None = None,
        connect_timeout: float | None = None,
        on_destination_drop: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        #: The destinations asked for, in order (one Output each, plain ones with the defaults).
        self.configured: list[Output] = destination_list(dst)
        #: The session config's destination objects, one per destination, without their settings.
        self.destinations = [output.destination for output in self.configured]
        #: The first destination's: the one the server's top-level ``destination`` describes.
        self.destination = self.destinations[0]
        self.format = self._single_format(format)
        self.realtime = realtime
        self.connect_timeout = connect_timeout
        self.on_destination_drop = on_destination_drop
        self.streams: list[Stream] = []
        self.metadata: dict[str, str] = {}
        self.state = WriterState.CONFIGURING
        client = [output.dst for output in self.configured if output.destination["type"] == "client"]
        self.sink = LocalSink(client[0]) if client else None  # destination_list allows one at most
        self.session: dict[str, Any] = {}
        #: How each stream's frames cross the wire, as the server agreed at open (``yuv.py``).
        self.wire_formats: list[str] = []
        self.summary: dict[str, Any] | None = None
        self._next_seq = 0
        # Every chunk message sent and not yet acknowledged or refused, by seq: kept to send again
        # after a reconnect (the server drops what it already has).
        self._pending: dict[int, Message] = {}
        self._outputs_applied = 0  # OUTPUT messages applied, i.e. the index of the next one
        self._outgoing: list[str] = []  # control messages for the server (output acks)
        self.events: list[dict[str, Any]] = []
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.hooks: EventHooks = checked_hooks(None)
        self._clock = clock  # the time the hooks are given
        self._errors: list[FramecastError] = []
        self._failure: SessionFailed | None = None
        self.shared: SharedSegment | None = None  # the session's shared memory, when granted and opened
        self.compressor: compression.Compressor | None = None  # when the session takes compressed payloads
        self._asked_compression = False

    def _single_format(self, format: str | None) -> str | None:
        """The session's muxer: the writer's ``format`` or its one Output's; None with several
        destinations, where each Output names its own."""
        if len(self.configured) > 1:
            if format is not None:
                raise InvalidConfig(
                    f"format={format!r} applies to a single destination; with {len(self.configured)} destinations "
                    "give each its own framecast.Output(dst, format=...)",
                    field="format",
                )
            return None
        own = self.configured[0].format
        if format is not None and own is not None and format != own:
            raise InvalidConfig(
                f"format is given twice: {format!r} to the writer and {own!r} to its framecast.Output; give one",
                field="format",
            )
        return format or own

    # -- configuration ------------------------------------------------------------------------

    def _require(self, *states: WriterState, action: str) -> None:
        if self.state not in states:
            hint = {
                WriterState.CONFIGURING: "call open() first",
                WriterState.CLOSED: "the writer is closed",
                WriterState.CLOSING: "the writer is closing",
                WriterState.FAILED: "the session has failed",
                WriterState.OPEN: "the writer is already open",
            }[self.state]
            raise StateError(f"cannot {action}: {hint}")

    def add_stream(self, stream: Stream) -> None:
        self._require(WriterState.CONFIGURING, action="add a stream")
        self.streams.append(stream)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._require(WriterState.CONFIGURING, action="set metadata")
        self.metadata = {str(k): str(v) for k, v in metadata.items()}

    def session_config(
        self, option: dict[str, Any] | None, shared_memory: bool = False, compressed: bool = False
    ) -> dict[str, Any]:
        """The body of POST /v1/sessions; ``option`` is what ``open(option=...)`` was given;
        ``compressed``: ask to send video payloads compressed (``compression.py``).

        One destination (``dst`` alone, a list of one, or one Output) makes today's body:
        ``destination`` with the muxer and its options at the top level, so every server takes
        it. Several make ``destinations``, each element with the settings its Output gave; the
        top-level ``on_destination_drop`` is then every output's default.

        Raises:
            StateError: not configuring, or no stream yet.
            InvalidConfig: ``option`` given for several destinations (each Output has its own).
        """
        self._require(WriterState.CONFIGURING, action="open")
        if not self.streams:
            raise StateError("cannot open: add at least one stream first (add_audio_stream / add_video_stream)")
        streams = [s.to_json() for s in self.streams]
        # Over the websocket, yuv420p is half the bytes; into shared memory, the conversion with
        # libyuv is the one pass over the frames where a copy would be, and the encoder's own
        # conversion is saved (``_convert``). Where the server agrees (``auto``).
        if not shared_memory or yuv.library() is not None:
            for stream in streams:
                if stream["type"] == "video" and "wire_format" not in stream:
                    stream["wire_format"] = "auto"
        common = {
            "metadata": self.metadata,
            "streams": streams,
            "realtime": self.realtime,
            "connect_timeout": self.connect_timeout,
            **({"on_destination_drop": self.on_destination_drop} if self.on_destination_drop else {}),
            **({"shared_memory": True} if shared_memory else {}),
            **({"compression": "zstd"} if compressed else {}),
        }
        self._asked_compression = compressed
        if len(self.configured) > 1:
            if option:
                raise InvalidConfig(
                    f"open(option=...) sets the muxer options of a single destination; with "
                    f"{len(self.configured)} destinations give each its own framecast.Output(dst, options=...)",
                    field="options",
                )
            if self.realtime is None:  # paced when any destination is live, as one URL is alone
                common["realtime"] = any(d["type"] == "url" for d in self.destinations)
            return {"destinations": [output.to_json() for output in self.configured], **common}
        settings = self.configured[0].settings
        settings.pop("required", None)  # the one destination's failure is the session's anyway
        settings.pop("format", None)  # in self.format
        options = {**settings.pop("options", {}), **{str(k): v for k, v in (option or {}).items()}}
        return {"destination": self.destination, "format": self.format, "options": options, **common, **settings}

    def opened(self, created: dict[str, Any]) -> None:
        """The server created the session (the body of POST /v1/sessions)."""
        self.session = created
        self.state = WriterState.OPEN
        # Asked for and created: the server took the config (one that does not know compression refuses it).
        self.compressor = compression.Compressor() if self._asked_compression else None
        self.wire_formats = [
            str(((info.get("config") or {}) if isinstance(info, dict) else {}).get("wire_format") or "")
            for info in created.get("streams") or []
        ]
        for message in created.get("warnings", []):
            warnings.warn(message, FramecastWarning, stacklevel=4)
        offered = created.get("shared_memory")
        if offered:
            try:
                self.shared = SharedSegment(offered["name"], int(offered["bytes"]))
            except (OSError, ProtocolError) as exc:
                # Another container or user, or a session that already ended: an optimization
                # missed, not an error (``shared_memory`` on the writer tells).
                log.info("shared memory offered but not usable here (%s); payloads go over the websocket", exc)
        if self.sink is not None:
            self.sink.open()

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The destinations' states as the server last reported them (session info's ``outputs``:
        the final account once closed, else the answer to the POST); [] before open() and from
        servers that do not report them."""
        for info in (self.summary, self.session):
            reported = (info or {}).get("outputs")
            if isinstance(reported, list):
                return [dict(output) for output in reported if isinstance(output, dict)]
        return []

    @property
    def max_message_bytes(self) -> int:
        return int(self.session.get("max_message_bytes", 16 * 1024 * 1024))

    # -- chunks -------------------------------------------------------------------------------

    def chunk_messages(self, i: int, chunk: Any, pts: float | None, kind: str) -> list[Message]:
        """Check a chunk and turn it into CHUNK messages, split to fit.

        Send each with ``sending(message)`` just before it goes out, once ``window_open()``.
        """
        self.raise_pending()
        self._require(WriterState.OPEN, action=f"write a {kind} chunk")
        if not isinstance(i, int) or not 0 <= i < len(self.streams):
            raise InvalidChunk(f"stream index {i!r} does not exist; this writer has streams 0..{len(self.streams) - 1}")
        stream = self.streams[i]
        expected_type = AudioStream if kind == "audio" else VideoStream
        if not isinstance(stream, expected_type):
            other = "video" if kind == "audio" else "audio"
            raise InvalidChunk(f"stream {i} is a {other} stream; use write_{other}_chunk")
        converted = deferred = False
        frame_bytes = None  # on the wire, where that is not the array's own
        if self.wire_format(i) == "yuv420p" and isinstance(stream, VideoStream):
            if self._converts_when_sent(chunk):
                array, deferred = to_numpy(chunk), True  # converted into shared memory as it goes
                stream.check(i, array)
                frame_bytes = yuv.frame_bytes(stream.width, stream.height)
            else:
                array, converted = self._yuv420p(i, stream, chunk), True  # new memory: kept without a copy
        else:
            array = to_numpy(chunk)
            stream.check(i, array)
        if frame_bytes is None:
            frame_bytes = array.nbytes // array.shape[0] if array.shape[0] else 0
        if pts is not None:
            pts = float(pts)
        limit = self.max_message_bytes - 64 - 4 * array.ndim
        if self.session.get("realtime") and array.shape[0]:
            # A paced session takes media as the wall clock goes: small pieces let the server's
            # buffers (about a second) hold back the writer instead of swallowing a whole call.
            per_piece = max(1, int(stream.rate * REALTIME_PIECE_SECONDS))
            limit = min(limit, per_piece * frame_bytes)
        messages = []
        for offset, piece in split(array, limit, frame_bytes):
            piece_pts = None if pts is None else pts + offset / stream.rate
            seq = self._next_seq
            self._next_seq += 1
            seconds = piece.shape[0] / stream.rate
            if deferred:
                shape = (piece.shape[0], frame_bytes)
                header = protocol.ChunkHeader(i, seq, protocol.DType.UINT8, shape, piece_pts).serialize()
                conversion = Conversion(piece, stream.format, piece.shape[0] * frame_bytes)
                messages.append(Message(seq, header, _NO_PAYLOAD, seconds, i, conversion=conversion))
                continue
            header, payload = protocol.encode_chunk(i, seq, piece, piece_pts)
            owned = converted
            if self.compressor is not None and isinstance(stream, VideoStream):
                packed = self.compressor.compress(i, payload)
                if packed is not None:
                    header, payload, owned = protocol.compressed_header(header), memoryview(packed), True
            messages.append(Message(seq, header, payload, seconds, i, owned))
        return messages

    def wire_format(self, i: int) -> str:
        """How stream ``i``'s frames cross the wire, as the server agreed ("" before open or for
        a server that does not say: as the stream's format)."""
        return self.wire_formats[i] if i < len(self.wire_formats) else ""

    def _converts_when_sent(self, chunk: Any) -> bool:
        """Whether a yuv420p chunk is converted as it is sent, straight into shared memory: on the
        CPU, with libyuv, uncompressed, and the session has a segment."""
        if self.shared is None or self.compressor is not None or yuv.library() is None:
            return False
        return not type(chunk).__module__.startswith("torch") or chunk.device.type == "cpu"

    @staticmethod
    def _yuv420p(i: int, stream: VideoStream, chunk: Any) -> np.ndarray:
        """A checked video chunk as the yuv420p planes the server agreed to take: converted where
        the frames are (a GPU tensor on its GPU), then brought to the CPU (``yuv.py``)."""
        on_device = type(chunk).__module__.startswith("torch") and chunk.device.type != "cpu"
        if on_device:
            stream.check(i, _Described(tuple(chunk.shape), np.dtype(str(chunk.dtype).removeprefix("torch."))))
            return to_numpy(yuv.rgb_to_i420(chunk.detach(), stream.format))
        array = to_numpy(chunk)
        stream.check(i, array)
        return np.asarray(yuv.rgb_to_i420(array, stream.format))

    def sending(self, message: Message) -> bytes | list[bytes | memoryview]:
        """Record ``message`` as in flight (until acknowledged); returns what to send.

        With shared memory, the payload is copied there now and the message shrinks to its header
        and the payload's offset.
        """
        if self.hooks["send"]:  # before the copy into shared memory, which is part of sending
            now = self._clock()
            for hook in self.hooks["send"]:
                hook(message.seq, message.stream, message.seconds, now)
        if message.conversion is not None:
            message = self._convert(message)
        elif self.shared is not None and self.shared.takes(len(message.payload)):
            offset = self.shared.put(message.seq, message.payload)
            if offset is not None:
                message = _in_segment(message, offset)
        self._pending[message.seq] = message
        return message.fragments()

    def _convert(self, message: Message) -> Message:
        """``message`` with its frames converted: into shared memory where there is room (the
        window saw to that), else into memory of its own, sent over the websocket."""
        conversion = message.conversion
        assert conversion is not None
        if conversion.nbytes and self.shared is not None and self.shared.takes(conversion.nbytes):
            reserved = self.shared.reserve(message.seq, conversion.nbytes)
            if reserved is not None:
                offset, memory = reserved
                conversion.into(memory)
                return _in_segment(message, offset)
        return dataclasses.replace(message, payload=conversion.payload(), owned=True, conversion=None)

    def retain(self) -> None:
        """Copy the payloads still in flight, which borrow the caller's memory.

        Called when a write returns: the caller may reuse its array from then on, but a chunk not
        yet acknowledged may have to be sent again after a reconnect.
        """
        for seq, message in self._pending.items():
            if not message.owned and not isinstance(message.payload.obj, bytes):
                self._pending[seq] = dataclasses.replace(
                    message, payload=memoryview(message.payload.tobytes()), owned=True
                )

    def resend(self) -> list[Any]:
        """What a new connection sends first: every chunk in flight, in order, then ``finish``
        again if the writer was closing."""
        out: list[Any] = [m.fragments() for _, m in sorted(self._pending.items())]
        if self.state is WriterState.CLOSING:
            out.append(self.finish_message())
        return out

    def lost_connection(self, close_code: int | None, reconnect: bool) -> FramecastError | None:
        """The websocket ended: None if the writer should reconnect, else the error to report: for a
        session the server does not have (4404), ``SessionFailed`` (nothing more will be written)."""
        fatal = FATAL_CLOSE_CODES.get(close_code or 0)
        if fatal is None and reconnect:
            return None
        if close_code == 4404:
            session = self.session.get("id") if self.session else None
            return SessionFailed(f"{fatal} ({session})" if session else str(fatal), code="session_not_found")
        return TransportError(fatal or "the connection to the framecast server closed unexpectedly")

    @property
    def has_outgoing(self) -> bool:
        """Whether control messages wait to be sent (``take_outgoing``)."""
        return bool(self._outgoing)

    def take_outgoing(self) -> list[str]:
        """Control messages the writer should send to the server now (output confirmations)."""
        out, self._outgoing = self._outgoing, []
        return out

    # -- server messages ----------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        """Apply one websocket message from the server."""
        if isinstance(message, str):
            self._handle_control(protocol.parse_control(message))
            return
        parsed = protocol.parse_server_binary(message)
        if isinstance(parsed, protocol.Ack):
            for seq in [s for s in self._pending if s <= parsed.seq]:
                del self._pending[seq]
            if self.shared is not None:
                self.shared.acknowledged(parsed.seq)
            if self.hooks["ack"]:
                now = self._clock()
                for hook in self.hooks["ack"]:
                    hook(parsed.seq, now)
        else:
            if self.sink is None:
                raise ProtocolError("server sent output bytes for a destination that lives on the server")
            if parsed.index < self._outputs_applied:
                return  # a repeat after a reconnect: already written
            if parsed.index > self._outputs_applied:
                raise ProtocolError(f"output message {parsed.index} arrived before {self._outputs_applied}")
            try:
                self.sink.write(parsed.offset, parsed.data)
            except OSError as exc:  # the user's destination refused a write: the writer fails
                raise TransportError(f"writing the output locally failed: {exc}") from exc
            self._outputs_applied += 1
            if self._outputs_applied % OUTPUT_ACK_EVERY == 0:
                # Confirmations are cumulative: only the newest one still needs sending.
                self._outgoing = [protocol.encode_control(protocol.OUTPUT_ACK, index=self._outputs_applied - 1)]

    def _handle_control(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == protocol.ERROR:
            seq = msg.get("seq")
            if seq is not None:
                self._pending.pop(seq, None)
                if self.shared is not None:
                    self.shared.refused(seq)
            self._errors.append(InvalidChunk(msg.get("message", "chunk refused"), seq=seq))
        elif kind == protocol.EVENT:
            event = {k: v for k, v in msg.items() if k != "type"}
            if event.get("event") == "output_failed":  # the session goes on without it: say so
                log.warning("destination %s failed: %s", event.get("output"), event.get("reason", "unknown reason"))
            self.events.append(event)
            del self.events[:-MAX_EVENTS]
            if self.on_event is not None:
                self.on_event(event)
        elif kind == protocol.WARNING:
            warnings.warn(msg.get("message", ""), FramecastWarning, stacklevel=2)
        elif kind == protocol.FAILED:
            self._failure = SessionFailed(msg.get("reason", "unknown reason"))
            self.state = WriterState.FAILED
            self._pending.clear()
            if self.shared is not None:
                self.shared.clear()
        elif kind == protocol.CLOSED:
            self.summary = msg.get("session")
            self.state = WriterState.CLOSED
        # Unknown control types are ignored: newer servers may add informational messages.

    # -- progress and errors ------------------------------------------------------------------

    def window_open(self, message: Message | None = None) -> bool:
        """Whether another message (``message``, if given) may be sent: what is unacknowledged
        fits the window, and its payload fits into shared memory if it goes there.

        The window bounds the SDK's memory and the server's buffers for every session; for
        real-time sessions it also holds the writer to about one second ahead of the wall clock.
        """
        if self.done:
            return True
        if (
            message is not None
            and self.shared is not None
            and self.shared.takes(message.size)
            and not self.shared.has_room(message.size)
        ):
            return False
        if not self._pending:
            return True
        if sum(len(m.payload) for m in self._pending.values()) > MAX_UNACKED_BYTES:
            return False
        ahead = sum(m.seconds for m in self._pending.values())
        return not (self.session.get("realtime") and ahead > REALTIME_WINDOW_SECONDS)

    @property
    def flushed(self) -> bool:
        """True when every chunk sent so far is acknowledged or refused."""
        return not self._pending or self.done

    @property
    def done(self) -> bool:
        return self.state in (WriterState.CLOSED, WriterState.FAILED)

    def raise_pending(self) -> None:
        """Raise the session's failure if it failed (the cause of anything after it), else the
        first chunk error the server reported that was not raised yet."""
        if self._failure is not None:
            raise self._failure
        if self._errors:
            raise self._errors.pop(0)

    def begin_close(self) -> bool:
        """Move to CLOSING; False if there is nothing to close (never opened, or done)."""
        if self.state is WriterState.CONFIGURING:
            self.state = WriterState.CLOSED
            return False
        if self.state is WriterState.OPEN:
            self.state = WriterState.CLOSING
            return True
        return False

    def finish_message(self) -> str:
        return protocol.encode_control(protocol.FINISH)

    def release(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    def download_segments(self) -> list[tuple[str, str]] | None:
        """A rotating recording's files as (file name, REST path), oldest first; None when the
        first destination is a single file. Names that are not plain file names are refused.

        Raises:
            ProtocolError: the server named a file with a path in it.
        """
        outputs = self.outputs
        listed = outputs[0].get("segments") if outputs else None
        if not isinstance(listed, list):
            return None
        files = []
        for entry in listed:
            name, url = str(entry.get("name", "")), str(entry.get("url", ""))
            if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
                raise ProtocolError(f"the server listed a file that is not a plain name: {name!r}")
            files.append((name, url))
        return files

    def download_path(self) -> str:
        """The REST path of a closed ServerFile output (``download()`` of both writers): the
        session's output file, its first destination's.

        Raises:
            StateError: the first destination is not a ServerFile, or the writer is not closed yet.
        """
        if self.destination["type"] != "server_file":
            first = " (with several destinations, the first one's: put the ServerFile first)"
            raise StateError(
                "download() is for framecast.ServerFile destinations" + (first if len(self.destinations) > 1 else "")
            )
        if self.state is not WriterState.CLOSED:
            raise StateError("download() needs a closed writer; call close() first")
        return f"/v1/sessions/{self.session['id']}/output"

    def describe(self, cls: str) -> str:
        wheres = [d.get("filename") or d.get("path") or d.get("url") or "file-like object" for d in self.destinations]
        where = wheres[0] if len(wheres) == 1 else wheres
        muxer = f"format={self.format or 'auto'}" if len(wheres) == 1 else f"destinations={len(wheres)}"
        sid = self.session.get("id")
        return (
            f"<{cls} {where!r} {muxer} streams={len(self.streams)} "
            f"state={self.state.value}{' session=' + sid if sid else ''}>"
        )


def download_directory(dst: Any) -> str:
    """Where ``download()`` puts a rotating recording's files: ``dst`` as a directory, made if missing.

    Raises:
        StateError: ``dst`` is a file object: a rotating recording is several files.
    """
    if hasattr(dst, "write") or not isinstance(dst, (str, os.PathLike)):
        raise StateError("this recording rotates: it is several files; download() takes a directory path")
    directory = os.fspath(dst)
    os.makedirs(directory, exist_ok=True)
    return directory
