"""Exceptions of the framecast SDK: one root, structured fields, builtins where they help.

    FramecastError
    ├── ProtocolError (ValueError)        a message does not follow the wire format
    ├── InvalidConfig (ValueError)        a stream or session config can't work (HTTP 422)
    ├── InvalidChunk (ValueError)         a chunk does not match its stream (local or server check)
    ├── StateError (RuntimeError)         a call that the writer's state does not allow
    ├── TransportError (ConnectionError)  the server could not be reached or the socket broke
    └── ServerError                       the server answered with an error
        ├── SessionNotFound (LookupError) no such session (HTTP 404)
        └── SessionFailed                 the session failed on the server; carries the reason

Every error raised because of something the server said carries the server's message verbatim.
"""

from __future__ import annotations

from typing import Any


class FramecastError(Exception):
    """Root of every exception the framecast SDK raises."""


class ProtocolError(FramecastError, ValueError):
    """A message does not follow the framecast wire format."""


class InvalidConfig(FramecastError, ValueError):
    """A session or stream configuration was refused.

    Attributes:
        field: dotted path of the offending field (``streams.0.encoder``), when known.
        detail: the server's structured error body, when the server refused it.
    """

    def __init__(self, message: str, *, field: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.detail = detail


class InvalidChunk(FramecastError, ValueError):
    """A chunk does not match its stream: wrong index, dtype, shape, or pts.

    Attributes:
        seq: sequence number of the refused chunk, when the server refused it.
    """

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class StateError(FramecastError, RuntimeError):
    """The call is not allowed in the writer's current state (e.g. a write before open())."""


class TransportError(FramecastError, ConnectionError):
    """The server could not be reached, or the connection to it broke."""


class ServerError(FramecastError):
    """The server answered with an error.

    Attributes:
        status: HTTP status code, when the error came from a REST call.
        code: the server's machine-readable error code (``session_not_found``, ...).
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SessionNotFound(ServerError, LookupError):
    """The server has no session with that id."""


class SessionFailed(ServerError):
    """The session failed on the server; nothing more will be written to its output.

    Attributes:
        reason: the server's description of what went wrong (often FFmpeg's own words).
    """

    def __init__(self, reason: str, *, code: str | None = "session_failed") -> None:
        super().__init__(f"session failed: {reason}", code=code)
        self.reason = reason
