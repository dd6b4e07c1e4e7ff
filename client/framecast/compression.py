"""Lossless compression of chunk payloads (zstd), for links where bytes cost more than CPU.

A remote client's link is the websocket's limit: raw 1080p60 is 1.5 Gbit/s even as yuv420p. A
session that negotiates ``compression: "zstd"`` lets the SDK send a video payload as one zstd
frame (flag bit 2 of the CHUNK header), which the encoder process decompresses, never the
server's event loop. It pays on frames with flat regions (rendered scenes, simulators, UIs: tens
of times smaller, at about a millisecond a 720p frame) and little on camera-like frames (about
1.5x at level 1, for 10-15 ms of a CPU core per 720p frame; BENCHMARKS.md), so it is off unless
asked for, never used on loopback by ``"auto"``, and a payload that does not shrink to
``WORTH`` of its size is sent as it is (and the stream stops trying for ``BACKOFF_CHUNKS``
chunks). Lossless: the encoder gets the very same bytes.

Sans I/O: both sides import this; ``zstandard`` is imported when compression is first used.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import InvalidConfig, ProtocolError

#: What a writer's ``compression`` may be.
MODES = ("none", "zstd", "auto")

#: Payloads smaller than this are sent as they are: not worth a call.
MIN_BYTES = 64 * 1024

#: zstd's level: 1 is its fastest that still finds the long runs of rendered frames.
LEVEL = 1

#: A compressed payload is sent only if it is at most this fraction of the raw one.
WORTH = 0.9

#: After a payload that did not shrink enough, a stream's next this many are sent raw.
BACKOFF_CHUNKS = 16

_INSTALL = "pip install 'framecast[zstd]'"


def available() -> bool:
    """Whether the zstandard package is installed here."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def check_mode(mode: str) -> None:
    """Raises InvalidConfig unless ``mode`` is one of MODES (and, for "zstd", usable here)."""
    if mode not in MODES:
        raise InvalidConfig(
            f"compression must be one of {', '.join(map(repr, MODES))}, got {mode!r}", field="compression"
        )
    if mode == "zstd" and not available():
        raise InvalidConfig(f"compression='zstd' needs the zstandard package: {_INSTALL}", field="compression")


def wanted(mode: str, local_server: bool, shared_memory: bool) -> bool:
    """Whether a writer asks the server for compressed payloads: "zstd" always over the websocket,
    "auto" only when the server is on another machine (and zstandard is installed)."""
    if shared_memory or mode == "none":
        return False
    return mode == "zstd" or (not local_server and available())


class Compressor:
    """The SDK's side: compresses the payloads worth it, stream by stream. Thread-safe."""

    def __init__(self) -> None:
        self._local = threading.local()  # a ZstdCompressor is not to be shared between threads
        self._skip: dict[int, int] = {}  # stream -> payloads still to send raw

    def compress(self, stream: int, payload: memoryview) -> bytes | None:
        """``payload`` as a zstd frame, or None to send it as it is."""
        if len(payload) < MIN_BYTES:
            return None
        if self._skip.get(stream, 0) > 0:
            self._skip[stream] -= 1
            return None
        packed: bytes = self._compressor().compress(payload)
        if len(packed) > WORTH * len(payload):
            self._skip[stream] = BACKOFF_CHUNKS
            return None
        return packed

    def _compressor(self) -> Any:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True, write_checksum=True)
            self._local.compressor = compressor
        return compressor


def content_size(frame: bytes | memoryview) -> int:
    """The size a zstd frame says it decompresses to (-1 when it does not say).

    Raises:
        ProtocolError: not the start of a zstd frame.
    """
    import zstandard

    try:
        return int(zstandard.frame_content_size(frame))
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"not a zstd frame: {exc}") from None


class Decompressor:
    """The encoder's side: one frame back to the array's bytes, checked against its size."""

    def __init__(self) -> None:
        import zstandard

        self._zstd = zstandard
        self._decompressor = zstandard.ZstdDecompressor()

    def decompress(self, frame: bytes | memoryview, size: int) -> bytes:
        """The ``size`` bytes ``frame`` decompresses to.

        Raises:
            ProtocolError: it does not decompress (corrupt, or its checksum does not match), or not
                to ``size`` bytes.
        """
        try:
            data: bytes = self._decompressor.decompress(frame, max_output_size=size)
        except self._zstd.ZstdError as exc:
            raise ProtocolError(f"the zstd payload does not decompress: {exc}") from None
        if len(data) != size:
            raise ProtocolError(f"the zstd payload decompresses to {len(data)} bytes, expected {size}")
        return data
