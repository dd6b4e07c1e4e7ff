"""framecast: stream tensors into FFmpeg encoders running on a framecast server.

    import framecast
    s = framecast.StreamWriter("out.mp4")          # was: torchaudio.io.StreamWriter
    s.add_video_stream(frame_rate=30, width=128, height=96)
    with s.open():
        s.write_video_chunk(0, frames)              # (T, C, H, W) uint8 tensor or array

The SDK needs only numpy, httpx and websockets; torch is optional.

The names below are imported when first used (PEP 562), not by ``import framecast``: the server
and every encoder process import ``framecast.protocol``, which runs this file, and should pay for
the wire format alone, not for httpx and websockets (about 0.4 s). ``from framecast import
StreamWriter`` and ``framecast.StreamWriter`` work as before; type checkers and IDEs read the
imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .streams import CodecConfig, Discard, Output, ServerFile
    from .writer import StreamWriter
    from .writer_base import FramecastWarning, WriterState

#: Each public name and the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "AsyncStreamWriter": "aio",
    "CodecConfig": "streams",
    "Discard": "streams",
    "FramecastError": "errors",
    "FramecastWarning": "writer_base",
    "InvalidChunk": "errors",
    "InvalidConfig": "errors",
    "Output": "streams",
    "ProtocolError": "errors",
    "ServerError": "errors",
    "ServerFile": "streams",
    "SessionFailed": "errors",
    "SessionNotFound": "errors",
    "StateError": "errors",
    "StreamWriter": "writer",
    "TransportError": "errors",
    "WriterState": "writer_base",
    "capabilities": "functional",
    "write_video": "functional",
}

#: Submodules reachable as attributes (``framecast.rest``) without importing them first, as they
#: were when this file imported everything.
_SUBMODULES = frozenset({"aio", "errors", "functional", "protocol", "rest", "streams", "writer", "writer_base"})

# A literal list, which type checkers read as the package's re-exports (the test of the lazy
# import checks it names exactly the keys of _EXPORTS).
__all__ = [
    "AsyncStreamWriter",
    "CodecConfig",
    "Discard",
    "FramecastError",
    "FramecastWarning",
    "InvalidChunk",
    "InvalidConfig",
    "Output",
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


def __getattr__(name: str) -> Any:
    """Import the submodule behind a public name on first use, and keep the name here."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        # name and obj let Python suggest a close public name ("Did you mean: 'StreamWriter'?").
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}; its public names are listed in framecast.__all__",
            name=name,
            obj=sys.modules[__name__],
        )
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
