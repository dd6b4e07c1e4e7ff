"""The framecast wire format, sans I/O.

Both the SDK and the server import this module; it knows nothing about sockets, asyncio or
websockets, only how messages look as bytes. PROTOCOL.md is the human-readable twin of this file.

Binary messages (all integers little-endian):

    CHUNK   client -> server   one array of media for one stream
    ACK     server -> client   every chunk up to and including ``seq`` is taken into the encoder
    OUTPUT  server -> client   encoded bytes to write at ``offset`` of a client-side destination,
                               numbered so that a reconnecting client applies each exactly once

Every binary message starts with the same 4-byte preamble: ``b"FC"``, the version byte and the
kind byte. Control messages (finish, errors, warnings, events, the final summary) travel as JSON
text messages; they are rare, so their cost does not matter, and JSON keeps them readable.

CHUNK layout::

    offset  size      field
    0       2         magic b"FC"
    2       1         version (1)
    3       1         kind (1 = CHUNK)
    4       2         stream index (u16)
    6       1         dtype code (u8, see DType)
    7       1         flags (bit 0: pts present; bit 1: payload in shared memory;
                      bit 2: payload compressed with zstd)
    8       8         sequence number (u64)
    16      8         pts in seconds (f64; 0.0 when absent)
    24      1         ndim (u8, 1..8)
    25      3         reserved, zero
    28      4*ndim    shape (u32 each)
    ...     pad       zero bytes up to a multiple of 8
    hdr     n         payload: the array's bytes, C order, little-endian

The payload starts 8-byte aligned so that ``np.frombuffer`` gives aligned arrays without a copy.

With flag bit 1 set (a client on the server's host, using the session's shared memory), the
8 bytes after the header are not the payload but its offset (u64) in that memory.

With flag bit 2 set (a session that negotiated ``compression: "zstd"``), the payload is one zstd
frame that decompresses to the array's bytes; it is shorter than they are (``compression.py``).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ProtocolError

MAGIC = b"FC"
VERSION = 1
MAX_NDIM = 8

_PREAMBLE = struct.Struct("<2sBB")
_CHUNK_FIXED = struct.Struct("<2sBBHBBQdB3x")  # 28 bytes
_ACK = struct.Struct("<2sBB4xQ")  # 16 bytes
_OUTPUT_FIXED = struct.Struct("<2sBB4xQQ")  # 24 bytes, then data

FLAG_HAS_PTS = 0x01
FLAG_SHARED = 0x02
FLAG_ZSTD = 0x04
_FLAGS_OFFSET = 7
_SHARED_OFFSET = struct.Struct("<Q")


class Kind(enum.IntEnum):
    """The kind byte of a binary message."""

    CHUNK = 1
    ACK = 2
    OUTPUT = 3


class DType(enum.IntEnum):
    """Element types a chunk may carry, with their numpy equivalents."""

    UINT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    FLOAT32 = 5
    FLOAT64 = 6

    @property
    def numpy(self) -> np.dtype:
        return _NUMPY_DTYPES[self]

    @property
    def label(self) -> str:
        return _NUMPY_NAMES[self]

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        dt = np.dtype(dtype)
        for code, name in _NUMPY_NAMES.items():
            if dt.kind == np.dtype(name).kind and dt.itemsize == np.dtype(name).itemsize:
                return code
        raise ProtocolError(f"unsupported dtype {dt}; expected one of {', '.join(_NUMPY_NAMES.values())}")


_NUMPY_NAMES = {
    DType.UINT8: "uint8",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.FLOAT32: "float32",
    DType.FLOAT64: "float64",
}
#: The little-endian numpy dtype of each code, built once: looked up for every chunk on both ends.
_NUMPY_DTYPES = {code: np.dtype(name).newbyteorder("<") for code, name in _NUMPY_NAMES.items()}

#: Input sample formats of audio streams (StreamWriter's ``format=``) and the dtype each expects.
AUDIO_SAMPLE_FORMATS: dict[str, DType] = {
    "u8": DType.UINT8,
    "s16": DType.INT16,
    "s32": DType.INT32,
    "s64": DType.INT64,
    "flt": DType.FLOAT32,
    "dbl": DType.FLOAT64,
}

#: Input pixel formats of video streams and their channel count; all are uint8.
VIDEO_PIXEL_FORMATS: dict[str, int] = {
    "gray8": 1,
    "rgb24": 3,
    "bgr24": 3,
    "rgb0": 4,
    "bgr0": 4,
    "yuv444p": 3,
}


def _header_size(ndim: int) -> int:
    raw = _CHUNK_FIXED.size + 4 * ndim
    return (raw + 7) & ~7


@dataclass(frozen=True)
class ChunkHeader:
    """The fixed part of a CHUNK message: everything but the payload."""

    stream: int
    seq: int
    dtype: DType
    shape: tuple[int, ...]
    pts: float | None = None
    shared: bool = False  # the payload is in the session's shared memory; the message holds its offset
    compressed: bool = False  # the payload is a zstd frame of the array's bytes

    @property
    def size(self) -> int:
        """Length of the serialized header in bytes (where the payload starts)."""
        return _header_size(len(self.shape))

    @property
    def payload_size(self) -> int:
        """Number of payload bytes the shape and dtype call for."""
        return math.prod(self.shape) * self.dtype.numpy.itemsize

    def serialize(self) -> bytes:
        """Return the header's bytes; append the payload to make a CHUNK message."""
        ndim = len(self.shape)
        if not 1 <= ndim <= MAX_NDIM:
            raise ProtocolError(f"chunk must have 1 to {MAX_NDIM} dimensions, got {ndim}")
        if not 0 <= self.stream <= 0xFFFF:
            raise ProtocolError(f"stream index must be in 0..65535, got {self.stream}")
        if not 0 <= self.seq < 2**64:
            raise ProtocolError(f"sequence number must be in 0..2**64-1, got {self.seq}")
        if any(not 0 <= d <= 0xFFFFFFFF for d in self.shape):
            raise ProtocolError(f"every dimension must be in 0..2**32-1, got {self.shape}")
        if self.pts is not None and not math.isfinite(self.pts):
            raise ProtocolError(f"pts must be a finite number of seconds, got {self.pts}")
        flags = (
            (FLAG_HAS_PTS if self.pts is not None else 0)
            | (FLAG_SHARED if self.shared else 0)
            | (FLAG_ZSTD if self.compressed else 0)
        )
        fixed = _CHUNK_FIXED.pack(
            MAGIC,
            VERSION,
            Kind.CHUNK,
            self.stream,
            int(self.dtype),
            flags,
            self.seq,
            float(self.pts) if self.pts is not None else 0.0,
            ndim,
        )
        shape = struct.pack(f"<{ndim}I", *self.shape)
        return fixed + shape + bytes(self.size - len(fixed) - len(shape))


def _check_preamble(data: bytes | memoryview, kind: Kind | None = None) -> int:
    """Check magic and version (and the kind, if given); return the kind byte."""
    if len(data) < _PREAMBLE.size:
        raise ProtocolError(f"message too short: {len(data)} bytes, need at least {_PREAMBLE.size}")
    magic, version, got_kind = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic: expected {MAGIC!r}, got {bytes(magic)!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}; this side speaks {VERSION}")
    if kind is not None and got_kind != kind:
        raise ProtocolError(f"expected a {kind.name} message (kind {int(kind)}), got kind {got_kind}")
    return int(got_kind)


def parse_chunk_header(data: bytes | bytearray | memoryview) -> ChunkHeader:
    """Parse the header at the start of a CHUNK message; whatever follows it is not looked at.

    Raises:
        ProtocolError: the header is truncated or malformed.
    """
    view = memoryview(data).cast("B")
    _check_preamble(view, Kind.CHUNK)
    if len(view) < _CHUNK_FIXED.size:
        raise ProtocolError(f"truncated chunk header: {len(view)} bytes, need at least {_CHUNK_FIXED.size}")
    _, _, _, stream, dtype_code, flags, seq, pts, ndim = _CHUNK_FIXED.unpack_from(view)
    try:
        dtype = DType(dtype_code)
    except ValueError:
        raise ProtocolError(
            f"unknown dtype code {dtype_code}; expected one of " + ", ".join(f"{int(d)} ({d.label})" for d in DType)
        ) from None
    if not 1 <= ndim <= MAX_NDIM:
        raise ProtocolError(f"chunk must have 1 to {MAX_NDIM} dimensions, got {ndim}")
    hsize = _header_size(ndim)
    if len(view) < hsize:
        raise ProtocolError(f"truncated chunk header: {len(view)} bytes, need {hsize} for ndim={ndim}")
    shape = struct.unpack_from(f"<{ndim}I", view, _CHUNK_FIXED.size)
    if flags & ~(FLAG_HAS_PTS | FLAG_SHARED | FLAG_ZSTD):
        raise ProtocolError(f"unknown flags 0x{flags:02x}")
    if flags & FLAG_SHARED and flags & FLAG_ZSTD:
        raise ProtocolError(f"a chunk in shared memory cannot be compressed (flags 0x{flags:02x})")
    has_pts = bool(flags & FLAG_HAS_PTS)
    if has_pts and not math.isfinite(pts):
        raise ProtocolError(f"pts must be a finite number of seconds, got {pts}")
    return ChunkHeader(
        stream=stream,
        seq=seq,
        dtype=dtype,
        shape=tuple(shape),
        pts=pts if has_pts else None,
        shared=bool(flags & FLAG_SHARED),
        compressed=bool(flags & FLAG_ZSTD),
    )


def parse_chunk(data: bytes | bytearray | memoryview) -> tuple[ChunkHeader, memoryview]:
    """Parse a CHUNK message into its header and a zero-copy view of its payload.

    Raises:
        ProtocolError: the message is truncated, malformed, or its payload length does not match
            the shape and dtype in its header.
    """
    header = parse_chunk_header(data)
    payload = memoryview(data).cast("B")[header.size :]
    if header.shared:
        if len(payload) != _SHARED_OFFSET.size:
            raise ProtocolError(
                f"a shared-memory chunk carries an {_SHARED_OFFSET.size}-byte offset after its header, "
                f"got {len(payload)} bytes"
            )
    elif header.compressed:
        if not 0 < len(payload) < header.payload_size:
            raise ProtocolError(
                f"a compressed payload is shorter than the {header.payload_size} bytes shape {header.shape} of "
                f"{header.dtype.label} needs, got {len(payload)} bytes"
            )
    elif len(payload) != header.payload_size:
        raise ProtocolError(
            f"payload is {len(payload)} bytes but shape {header.shape} of {header.dtype.label} "
            f"needs {header.payload_size}"
        )
    return header, payload


def encode_chunk(stream: int, seq: int, array: np.ndarray, pts: float | None = None) -> tuple[bytes, memoryview]:
    """Serialize ``array`` as a CHUNK: returns (header bytes, payload view).

    The two parts are returned separately so that a sender can hand both to the socket without
    joining them into a new buffer. ``array`` must be C-contiguous (no copy is made here).
    """
    if not array.flags.c_contiguous:
        raise ProtocolError("array must be C-contiguous")
    dtype = DType.from_numpy(array.dtype)
    if array.dtype.byteorder == ">":
        raise ProtocolError("array must be little-endian")
    header = ChunkHeader(stream=stream, seq=seq, dtype=dtype, shape=tuple(array.shape), pts=pts)
    return header.serialize(), array.data.cast("B")


def encode_shared_chunk(stream: int, seq: int, array: np.ndarray, offset: int, pts: float | None = None) -> bytes:
    """A CHUNK whose payload (``array``'s bytes) the sender put at ``offset`` of the session's
    shared memory: the header with the shared flag, then the offset."""
    header = ChunkHeader(stream=stream, seq=seq, dtype=DType.from_numpy(array.dtype), shape=tuple(array.shape), pts=pts)
    return shared_chunk(header, offset)


def compressed_header(header: bytes) -> bytes:
    """A serialized chunk header with the compressed flag set: its payload becomes a zstd frame."""
    marked = bytearray(header)
    marked[_FLAGS_OFFSET] |= FLAG_ZSTD
    return bytes(marked)


def shared_chunk(header: ChunkHeader, offset: int) -> bytes:
    """``header`` as a shared-memory CHUNK whose payload lies at ``offset`` (see encode_shared_chunk)."""
    return shared_header(header.serialize(), offset)


def shared_header(header: bytes, offset: int) -> bytes:
    """A serialized chunk header made the whole of a shared-memory CHUNK whose payload lies at
    ``offset``: the shared flag set and the offset appended, without parsing it again (the SDK
    does this for every chunk it places).

    Raises:
        ProtocolError: the header says its payload is compressed, which shared memory never is.
    """
    marked = bytearray(header)
    if marked[_FLAGS_OFFSET] & FLAG_ZSTD:
        raise ProtocolError("a compressed payload is never placed in shared memory")
    marked[_FLAGS_OFFSET] |= FLAG_SHARED
    return bytes(marked) + _SHARED_OFFSET.pack(offset)


def shared_offset(payload: bytes | memoryview) -> int:
    """The offset a shared-memory CHUNK's 8 bytes after the header give (see ``parse_chunk``)."""
    return int(_SHARED_OFFSET.unpack_from(payload)[0])


def chunk_array(header: ChunkHeader, payload: bytes | memoryview) -> np.ndarray:
    """View a parsed chunk's payload as a numpy array of its shape (no copy)."""
    return np.frombuffer(payload, dtype=header.dtype.numpy).reshape(header.shape)


def encode_ack(seq: int) -> bytes:
    """Serialize an ACK: every chunk with a sequence number <= ``seq`` is taken."""
    return _ACK.pack(MAGIC, VERSION, Kind.ACK, seq)


def encode_output_header(index: int, offset: int) -> bytes:
    """The 24-byte prefix of OUTPUT message number ``index``; the encoded bytes follow it."""
    return _OUTPUT_FIXED.pack(MAGIC, VERSION, Kind.OUTPUT, index, offset)


@dataclass(frozen=True)
class Ack:
    """Every chunk up to and including ``seq`` has been taken into the encoder."""

    seq: int


@dataclass(frozen=True)
class Output:
    """Encoded bytes the client writes at ``offset`` of its destination.

    ``index`` numbers OUTPUT messages from 0 in the order they must be applied; after a reconnect
    the server repeats those the client has not confirmed, and the client skips the ones it has.
    """

    index: int
    offset: int
    data: memoryview


def parse_server_binary(data: bytes | bytearray | memoryview) -> Ack | Output:
    """Parse a binary message the server sent (ACK or OUTPUT)."""
    view = memoryview(data).cast("B")
    kind = _check_preamble(view)
    if kind == Kind.ACK:
        if len(view) != _ACK.size:
            raise ProtocolError(f"ACK must be {_ACK.size} bytes, got {len(view)}")
        return Ack(_ACK.unpack_from(view)[3])
    if kind == Kind.OUTPUT:
        if len(view) < _OUTPUT_FIXED.size:
            raise ProtocolError(f"truncated OUTPUT header: {len(view)} bytes")
        _, _, _, index, offset = _OUTPUT_FIXED.unpack_from(view)
        return Output(index, offset, view[_OUTPUT_FIXED.size :])
    raise ProtocolError(f"unexpected message kind {kind} from server")


# --- control messages (JSON text) -------------------------------------------------------------

#: Client -> server: no more chunks; flush the encoders, write the trailer, close the output.
FINISH = "finish"
#: Client -> server: every OUTPUT message up to ``index`` is applied; the server may forget them.
OUTPUT_ACK = "output_ack"
#: Server -> client: something happened to the session (connected, reconnecting, dropped, ...).
EVENT = "event"
#: Server -> client: a chunk (or a control message) was refused; the session goes on.
ERROR = "error"
#: Server -> client: something worth knowing that is not an error (e.g. an unused option).
WARNING = "warning"
#: Server -> client: the session failed; no further chunks will be taken.
FAILED = "failed"
#: Server -> client: the output is complete; carries the final session summary.
CLOSED = "closed"


def encode_control(type_: str, **fields: Any) -> str:
    """Serialize a control message as a JSON object with a ``type`` field."""
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


#: REST: the response header in which a fleet's session list (GET /v1/sessions) names the replicas
#: that did not answer, as JSON ``[{"replica", "url", "reason"}]``.
UNANSWERED_HEADER = "Framecast-Unanswered"

#: Longest control message the server takes from a client: ``finish`` and ``output_ack`` are a few
#: dozen characters. (Server messages can be longer: ``closed`` carries the session's summary.)
MAX_CLIENT_CONTROL_CHARS = 4096


def parse_control(text: str, max_chars: int | None = None) -> dict[str, Any]:
    """Parse a JSON control message; it must be an object with a string ``type``.

    Args:
        max_chars: refuse longer texts before parsing them (the server passes
            ``MAX_CLIENT_CONTROL_CHARS``).

    Raises:
        ProtocolError: too long, not JSON, nested too deeply for the parser, or not an object with
            a string ``type``. Never RecursionError: a text of ``[[[[...`` is refused like any
            other malformed message, so a receive loop that catches ProtocolError survives it.
    """
    if max_chars is not None and len(text) > max_chars:
        raise ProtocolError(f"control message is {len(text)} characters long; at most {max_chars} are taken")
    try:
        msg = json.loads(text)
    except RecursionError:
        raise ProtocolError("control message is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"control message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("control message must be a JSON object with a string 'type' field")
    return msg
