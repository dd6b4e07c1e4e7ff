"""Every message that crosses the pipe between the server and an encoder process.

Each session's encoder runs in its own process (``session/encoder_process.py`` on the server's
side, ``encoder/main.py`` on the other), joined by one duplex pipe framed as
``multiprocessing.Connection`` frames it. This module is the whole vocabulary of that pipe: a
reader finds here every kind of message, what it carries and who sends it. The records are
NamedTuples: cheap to pickle, immutable, and matched by ``match`` statements on both sides.

Server -> encoder (bytes, built by ``encode_chunk`` and ``encode_control``):

- a chunk descriptor, the hot path: the CHUNK header as the client sent it (already checked by
  the server), then where its payload lies in shared memory (``ring.py``) and when the server
  received it. Binary, not pickled, and told apart from the rest by the protocol's magic bytes.
- ``Watch(seconds)``: someone looks at this session's previews; make them for that long.
- ``Finish()``: no more chunks; flush, write the trailer, close.
- ``Stop(reason)``: the session's API key used up a quota; finalize now and stop.
- ``Assign(...)``: the first message to a spare process (``spares.py``), naming its session.

Encoder -> server (``FromEncoder``, built by ``encode_from_encoder``: the two of every chunk in
a few bytes, ``Free`` as an empty message and ``Ack`` without stats as its seq; the rest pickled):

- ``Ready`` or ``SetupFailed``: the answer to opening the output, always the first message.
- ``Connected``: a network output is connected and its header written.
- ``OutputBytes``: encoded bytes for a client-side destination, at an offset of its file.
- ``Free``: the oldest chunk's payload was copied out of the ring; its space is free again.
- ``Ack``: chunk ``seq`` and all before it are encoded and muxed.
- ``Reconnecting``, ``Recovered``, ``Dropped``: a network destination dropped (``live.py``).
- ``OutputFailed``: one of several destinations failed for good; the others carry on.
- ``Preview``: the latest frames as JPEG and audio levels, while someone watches.
- ``Closed``, ``Stopped``, ``Failed``: the last message; the process exits after it.

``Exited`` never crosses the pipe: the server makes it when the pipe closes, so that a process
that died without a last word is handled like the rest.

An encoder process and each of its relays (``encoder/relay.py``: the process that connects one
network destination and muxes into it) talk over the relay's stdin and stdout, in frames of a
4-byte big-endian length and a pickled record (``encode_relay``, ``RelayFrames``):

- encoder -> relay (``ToRelay``): ``RelayOpen`` (first), then ``RelayPacket`` after packet, then
  ``RelayClose``.
- relay -> encoder (``FromRelay``): ``RelayReady`` or ``RelayLost`` answer the open;
  ``RelayProgress`` now and then while packets flow; ``RelayLost`` when the destination drops;
  ``RelayClosed`` answers the close.
"""

from __future__ import annotations

import pickle
import struct
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from framecast import protocol
from framecast_server.unmasking import NO_MASK

if TYPE_CHECKING:
    from framecast_server.planning.plan import SessionPlan


# -- counters that ride on messages -----------------------------------------------------------


class StreamStats(NamedTuple):
    """One stream's totals so far, as its encoder counts them."""

    chunks: int
    frames: int
    packets: int
    bytes: int
    seconds: float  # media seconds encoded (after the filter chain), as the quotas count them


class PacingStats(NamedTuple):
    """How a paced (real-time) output keeps time (``pacing.py``)."""

    max_lateness_ms: float
    media_seconds: float


class OutputStats(NamedTuple):
    """One output's totals so far: what it muxed, dropped during outages, and its reconnects."""

    packets: int
    bytes: int
    dropped: int
    reconnects: int


class Stats(NamedTuple):
    """Every stream's totals, the pacing of a real-time session (None for the rest), every output's totals."""

    streams: tuple[StreamStats, ...]
    pacing: PacingStats | None
    outputs: tuple[OutputStats, ...] = ()


# -- encoder -> server --------------------------------------------------------------------------


class Ready(NamedTuple):
    """The output is open (for network outputs: not connected yet). Warnings go to the client."""

    warnings: list[str]


class SetupFailed(NamedTuple):
    """The output could not be opened; the session is a 422 naming ``field`` of its config."""

    message: str
    field: str | None


class Connected(NamedTuple):
    """Network output ``output`` (its index among the destinations) is connected, its header written."""

    output: int
    warnings: list[str]


class OutputBytes(NamedTuple):
    """Bytes the muxer wrote at ``offset`` of a client-side destination (seeks included)."""

    offset: int
    data: bytes


class Free(NamedTuple):
    """The oldest chunk's payload is copied out of the ring: the ring may hand out its space."""


class Ack(NamedTuple):
    """Chunk ``seq`` and every chunk before it are encoded and muxed. ``stats`` at most every
    100 ms (None in between): enough for the dashboard and the quotas."""

    seq: int
    stats: Stats | None


class Reconnecting(NamedTuple):
    """Network output ``output`` dropped; reconnect attempt number ``attempt`` starts."""

    output: int
    attempt: int
    reason: str


class Recovered(NamedTuple):
    """Network output ``output`` is back after ``attempts`` attempts and ``outage`` seconds."""

    output: int
    attempts: int
    outage: float


class Dropped(NamedTuple):
    """``frames`` packets of ``stream`` were dropped for ``output`` while it was down (``total`` so far)."""

    output: int
    stream: int
    frames: int
    total: int


class Preview(NamedTuple):
    """The latest frames (stream -> JPEG) and audio levels (stream -> dBFS per channel)."""

    jpegs: dict[int, bytes]
    levels: dict[int, list[float]]


class OutputFailed(NamedTuple):
    """Output ``output`` failed for good (``reason``); the session goes on with the others."""

    output: int
    reason: str


class Closed(NamedTuple):
    """Trailer written and output closed after a ``Finish``; the process exits."""

    stats: Stats


class Stopped(NamedTuple):
    """A quota ran out: the output is finalized all the same (trailer written, closed), and the
    session fails with ``reason``; the process exits."""

    reason: str
    stats: Stats


class Failed(NamedTuple):
    """Encoding or connecting failed; the process exits."""

    reason: str


class Exited(NamedTuple):
    """Made by the server, not sent: the pipe closed and the process exited with ``exitcode``."""

    exitcode: int | None


FromEncoder: TypeAlias = (
    Ready
    | SetupFailed
    | Connected
    | OutputBytes
    | Free
    | Ack
    | Reconnecting
    | Recovered
    | Dropped
    | OutputFailed
    | Preview
    | Closed
    | Stopped
    | Failed
    | Exited
)

#: The one Free message (it carries nothing).
FREE = Free()

#: An ``Ack`` without stats: a tag no pickle starts with (they start with PROTO, 0x80), then seq.
_ACK = struct.Struct("<cq")
_ACK_TAG = b"A"


def encode_from_encoder(message: FromEncoder) -> bytes:
    """An encoder's message as bytes for the pipe. Every chunk brings a ``Free`` and an ``Ack``
    to the server's event loop: those go without pickling, which costs more than the rest of
    their way there."""
    if isinstance(message, Free):
        return b""
    if isinstance(message, Ack) and message.stats is None:
        return _ACK.pack(_ACK_TAG, message.seq)
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def decode_from_encoder(data: bytes | memoryview) -> FromEncoder:
    """What an encoder sent (``encode_from_encoder``).

    Only the server's own encoder processes write this pipe, so the pickle is of their making.
    """
    if not len(data):
        return FREE
    if data[:1] == _ACK_TAG:
        return Ack(_ACK.unpack(data)[1], None)
    message: FromEncoder = pickle.loads(data)
    return message


# -- the pipe's framing ---------------------------------------------------------------------------

#: A message's length before it, as ``multiprocessing.Connection`` frames messages: 4 bytes
#: big-endian, or -1 and then 8 bytes for a message over 2 GiB.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


def pipe_frame(data: bytes) -> bytes:
    """What goes on the pipe before ``data``: its length."""
    size = len(data)
    return _LENGTH.pack(size) if size <= 0x7FFFFFFF else _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)


class PipeFrames:
    """Cuts the pipe's byte stream into messages (sans-I/O: the caller reads, this only parses).

    Both ends read their pipe this way, each as much as is there at a time: a reader that asked
    for a message's length and then for the message would make two system calls a message.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """The messages completed by ``data``, in order."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        start, end = 0, len(buffer)
        while end - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            head = _LENGTH.size
            if size == -1:
                if end - start < head + _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buffer, start + head)
                head += _LONG_LENGTH.size
            if end - start < head + size:
                break
            messages.append(bytes(buffer[start + head : start + head + size]))
            start += head + size
        del buffer[:start]
        return messages


# -- server -> encoder ----------------------------------------------------------------------------


class Assign(NamedTuple):
    """A spare process's session: its plan and the sizes of the memory whose descriptors follow
    (SCM_RIGHTS): the ring, and the client's shared memory if it has any."""

    plan: SessionPlan
    ring_bytes: int
    client_bytes: int | None


class Watch(NamedTuple):
    """Someone looks at the session's previews: make them for the next ``seconds``."""

    seconds: float


class Finish(NamedTuple):
    """No more chunks: flush, write the trailer, close, then answer ``Closed``."""


class Stop(NamedTuple):
    """The session's key is over a quota: finalize now, then answer ``Stopped`` with ``reason``."""

    reason: str


class ChunkDescriptor(NamedTuple):
    """A chunk for the encoder: its header, and where its payload lies (``IN_RING`` or
    ``IN_CLIENT_MEMORY``) at ``offset``; ``size`` bytes of it, fewer than the array's when the
    header says it is compressed (0 when it is not); ``mask``, the websocket masking key the
    payload still carries, for the encoder to undo (``unmasking.NO_MASK``: none); ``received``,
    when the server had the whole chunk (``time.monotonic()``, one clock for every process on the
    host): the pacer schedules by it, not by when a busy encoder got to the descriptor."""

    header: protocol.ChunkHeader
    offset: int
    where: int
    received: float  # no default: a descriptor that came "at time 0" would pace nothing
    size: int = 0
    mask: bytes = NO_MASK


Control: TypeAlias = Watch | Finish | Stop
ToEncoder: TypeAlias = ChunkDescriptor | Control

#: Where a chunk's payload lies: the server's ring, or shared memory the client wrote it into.
IN_RING, IN_CLIENT_MEMORY = 0, 1

#: After the chunk header: the payload's offset, which memory it is in, its size if compressed,
#: the mask it still carries, when the server received it.
_TRAILER = struct.Struct("<QB3xI4sd")


def encode_chunk(
    header: bytes | memoryview,
    offset: int,
    where: int = IN_RING,
    size: int = 0,
    mask: bytes = NO_MASK,
    *,
    received: float,
) -> bytes:
    """A chunk descriptor: the header bytes as they arrived, then the payload's place (and, for a
    compressed payload, its size; for a payload received still masked, the key), then when the
    server received the chunk (``time.monotonic()``)."""
    return bytes(header) + _TRAILER.pack(offset, where, size, mask, received)


def encode_control(message: Control) -> bytes:
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def decode_to_encoder(data: bytes) -> ToEncoder:
    """What the server sent: a chunk descriptor, or a control record.

    Only the server writes this pipe, so the pickle is of its own making.
    """
    if data[:2] == protocol.MAGIC:
        header = protocol.parse_chunk_header(data)
        offset, where, size, mask, received = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
        return ChunkDescriptor(header, offset, where, received, size, mask)
    message = pickle.loads(data)
    if not isinstance(message, Watch | Finish | Stop):
        raise TypeError(f"not a message for an encoder: {message!r}")
    return message


# -- encoder <-> relay ----------------------------------------------------------------------------


class RelayTarget(NamedTuple):
    """A relay's destination: the fields of its ``OutputPlan`` that its muxer needs (not the plan
    itself, whose module a relay would take a while to import)."""

    muxer: str
    given_url: str
    options: dict[str, str]
    where: str
    target: str = "url"
    path: str | None = None
    live: bool = True
    segments: None = None


class RelayOpen(NamedTuple):
    """The relay's destination and streams: ``header`` is a NUT file of the streams the encoder
    muxes (codec parameters and extradata, as FFmpeg writes and reads them), the relay's templates."""

    target: RelayTarget
    header: bytes
    metadata: dict[str, str]


class RelayPacket(NamedTuple):
    """One encoded packet of the relay's ``stream``, as the encoder made it."""

    stream: int
    data: bytes
    pts: int | None
    dts: int | None
    duration: int | None
    time_base: tuple[int, int]
    keyframe: bool


class RelayClose(NamedTuple):
    """No more packets: write the trailer, close, answer ``RelayClosed``, exit."""


class RelayReady(NamedTuple):
    """Connected, header written; ``warnings`` (options the muxer did not use) go to the client."""

    warnings: list[str]


class RelayProgress(NamedTuple):
    """The first ``muxed`` packets are in the destination's muxer (sent at most every 100 ms)."""

    muxed: int


class RelayLost(NamedTuple):
    """The destination could not be reached or dropped (``reason``) after ``muxed`` packets; the
    relay exits."""

    reason: str
    muxed: int


class RelayClosed(NamedTuple):
    """Trailer written after ``muxed`` packets; the relay exits."""

    muxed: int


ToRelay: TypeAlias = RelayOpen | RelayPacket | RelayClose
FromRelay: TypeAlias = RelayReady | RelayProgress | RelayLost | RelayClosed

_RELAY_LENGTH = struct.Struct(">I")


def encode_relay(message: ToRelay | FromRelay) -> bytes:
    """One frame: the pickled record's length, then the record."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _RELAY_LENGTH.pack(len(data)) + data


class RelayFrames:
    """Cuts a byte stream into relay records (sans-I/O: the caller reads, this only parses).

    Both ends of a relay pipe are framecast processes of the same server (the encoder starts its
    relays), so the pickles are of their own making.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ToRelay | FromRelay]:
        """The records completed by ``data``."""
        self._buffer += data
        records: list[ToRelay | FromRelay] = []
        start = 0
        while len(self._buffer) - start >= _RELAY_LENGTH.size:
            (size,) = _RELAY_LENGTH.unpack_from(self._buffer, start)
            end = start + _RELAY_LENGTH.size + size
            if len(self._buffer) < end:
                break
            record = pickle.loads(self._buffer[start + _RELAY_LENGTH.size : end])
            if not isinstance(record, _RELAY_RECORDS):
                raise TypeError(f"not a relay message: {record!r}")
            records.append(record)
            start = end
        del self._buffer[:start]
        return records


_RELAY_RECORDS = (RelayOpen, RelayPacket, RelayClose, RelayReady, RelayProgress, RelayLost, RelayClosed)
