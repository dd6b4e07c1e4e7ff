"""framecast: stream tensors into FFmpeg encoders running on a framecast server.

    import framecast
    s = framecast.StreamWriter("out.mp4")          # was: torchaudio.io.StreamWriter
    s.add_video_stream(frame_rate=30, width=128, height=96)
    with s.open():
        s.write_video_chunk(0, frames)              # (T, C, H, W) uint8 tensor or array

The SDK needs only numpy, httpx and websockets; torch is optional.
"""

from .aio import AsyncStreamWriter
from .errors import (
    FramecastError,
    InvalidChunk,
    InvalidConfig,
    ProtocolError,
    ServerError,
    SessionFailed,
    SessionNotFound,
    StateError,
    TransportError,
)
from .functional import capabilities, write_video
from .streams import CodecConfig, Discard, ServerFile
from .writer import StreamWriter
from .writer_base import FramecastWarning, WriterState

__all__ = [
    "AsyncStreamWriter",
    "CodecConfig",
    "Discard",
    "FramecastError",
    "FramecastWarning",
    "InvalidChunk",
    "InvalidConfig",
    "ProtocolError",
    "ServerError",
    "ServerFile",
    "SessionFailed",
    "SessionNotFound",
    "StateError",
    "StreamWriter",
    "TransportError",
    "WriterState",
    "capabilities",
    "write_video",
]
