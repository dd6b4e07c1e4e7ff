"""How an encoder process names what went wrong: ``SetupError`` for an output that cannot be
opened (a 422 naming the config's field), ``describe_error`` for FFmpeg's own words."""

from __future__ import annotations

import re

import av

from framecast_server import masking


class SetupError(Exception):
    """The output could not be opened; ``field`` says which part of the config is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def describe_error(exc: BaseException) -> str:
    """FFmpeg's own words for an error where it left some (its last log line), else the error text.

    FFmpeg quotes URLs with their credentials (``Connection to tcp://user:pass@...``): the text is
    masked (``masking.redact``) here, where every failure reason of an encoder is made.
    """
    log_entry = getattr(exc, "log", None)
    if isinstance(exc, av.FFmpegError) and log_entry and len(log_entry) == 3 and log_entry[2]:
        return masking.redact(_without_sdp(f"{log_entry[2].strip()} ({exc.strerror})"))
    text = str(exc)
    return masking.redact(_without_sdp(text)) if text else type(exc).__name__


def _without_sdp(text: str) -> str:
    """FFmpeg's WHIP muxer quotes its whole SDP offer in its error line: a kilobyte saying nothing
    of what went wrong."""
    return re.sub(r", offer: v=0.*?(?= \(|$)", "", text, flags=re.DOTALL)
