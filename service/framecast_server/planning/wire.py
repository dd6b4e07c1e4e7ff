"""How a video stream's frames cross the wire: as the client's ``format`` says, or as yuv420p.

Nearly every RGB stream is converted to yuv420p for its encoder, and a yuv420p frame is half the
bytes of the RGB one. So a client may convert before it sends (``framecast/yuv.py``: on the GPU
with torch, with libyuv, or with numpy), and the server then builds the encoder's frames straight
from the planes it got. That is only the same picture if the server would have done exactly that
conversion and nothing else: an RGB stream, bound for a yuv420p encoder at its own even size and
frame rate, without a filter chain (which works on what the client declared). ``auto`` also wants
the server's own conversion to be libyuv's, the one the client computes; a server converting with
swscale sends RGB, as before.

A chunk of a yuv420p stream is ``(frames, W*H*3/2)`` uint8: per frame its Y plane, then U, then
V, rows unpadded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from framecast_server.errors import InvalidConfig
from framecast_server.libyuv import RGB_CHANNELS, Conversion
from framecast_server.models import SessionConfig, VideoStreamConfig

if TYPE_CHECKING:  # plan.py calls resolve() while it plans
    from framecast_server.planning.plan import StreamPlan, VideoPlan

YUV420P = "yuv420p"


def why_not_yuv420p(stream: VideoPlan) -> str | None:
    """Why ``stream``'s frames cannot come as yuv420p, or None when they can."""
    if stream.format not in RGB_CHANNELS:
        return f"its format is {stream.format!r}, not RGB ({', '.join(RGB_CHANNELS)})"
    if stream.encoder_format != YUV420P:
        return f"its encoder takes {stream.encoder_format!r}, not yuv420p"
    if (stream.encoder_width, stream.encoder_height) != (stream.width, stream.height):
        return f"it is scaled ({stream.width}x{stream.height} to {stream.encoder_width}x{stream.encoder_height})"
    if stream.width % 2 or stream.height % 2:
        return f"its size {stream.width}x{stream.height} is odd"
    if stream.encoder_frame_rate != stream.frame_rate:
        return "its frame rate is converted"
    if stream.filter_desc:
        return "it has a filter_desc, which works on the frames as declared"
    return None


def resolve(streams: Sequence[StreamPlan], config: SessionConfig, conversion: Conversion) -> None:
    """Set each video plan's ``wire_format`` from its config's.

    Raises:
        InvalidConfig: a wire format the stream cannot take, naming ``streams.N.wire_format``.
    """
    for stream, cfg in zip(streams, config.streams):
        if stream.type != "video" or not isinstance(cfg, VideoStreamConfig):
            continue
        asked = cfg.wire_format
        where = f"streams.{stream.index}.wire_format"
        if asked is None:
            stream.wire_format = stream.format
        elif asked == "rgb24":
            if stream.format != "rgb24":
                raise InvalidConfig(f"rgb24 frames on the wire, but the stream's format is {stream.format!r}", where)
            stream.wire_format = stream.format
        elif asked == YUV420P:
            reason = why_not_yuv420p(stream)
            if reason is not None:
                raise InvalidConfig(
                    f"yuv420p frames on the wire need an RGB stream encoded as they come; {reason}", where
                )
            stream.wire_format = YUV420P
        else:  # auto
            usable = why_not_yuv420p(stream) is None and conversion == "libyuv"
            stream.wire_format = YUV420P if usable else stream.format
