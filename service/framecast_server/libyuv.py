"""RGB to yuv420p with libyuv: the conversion nearly every tensor video stream needs, 4-5x faster.

Tensors hold RGB; H.264 and most encoders take yuv420p; so each frame is converted on its way in.
swscale (what PyAV's ``encode`` and the ffmpeg CLI use) costs about a fifth of a live x264
veryfast frame's CPU; libyuv, the conversion library of Chromium and WebRTC, is 4-5x faster
(planes merged into packed pixels, then converted: ``framecast.yuv.PlanesToI420``).

Same result, closer to exact: both use BT.601 with limited range, as swscale does when nothing is
said; libyuv's chroma is nearer the exact transform than swscale's wider chroma filter. The numbers
are in BENCHMARKS.md, "Measurements behind design choices".

libyuv has no Python package, so its functions are called through ctypes, which releases the
GIL for the call, from the system library (Debian's ``libyuv0``). Where it cannot be loaded,
encoders convert with swscale (``FRAMECAST_RGB_CONVERSION``, config.py).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Literal

import numpy as np

from framecast import yuv

log = logging.getLogger(__name__)

#: The library's soname on Debian and Ubuntu (package libyuv0).
SONAME = yuv.SONAME

#: Input formats converted with libyuv: which of the chunk's (C, H, W) channels are red, green and
#: blue. The 4-channel forms' 4th channel is ignored, as it is on the swscale path.
RGB_CHANNELS = yuv.RGB_CHANNELS

#: What converts RGB frames for yuv420p encoders, as settings ask for it and as resolved.
Choice = Literal["auto", "libyuv", "swscale"]
Conversion = Literal["libyuv", "swscale"]


def library() -> ctypes.CDLL | None:
    """The loaded libyuv, or None where it is not installed (or lacks the two functions used):
    the SDK's binding (``framecast.yuv``), so a client converting before it sends calls the very
    same functions."""
    return yuv.library()


def available() -> bool:
    return library() is not None


def resolve(choice: Choice) -> Conversion:
    """The converter a setting means on this machine: ``auto`` is libyuv where it loads."""
    if choice == "auto":
        return "libyuv" if available() else "swscale"
    return choice


def applies(in_format: str, width: int, height: int, out_format: str, out_width: int, out_height: int) -> bool:
    """Whether a stream's frames can be converted here: RGB in, yuv420p out, the same even size
    (scaling, other formats and odd sizes stay with swscale)."""
    return (
        in_format in RGB_CHANNELS
        and out_format == "yuv420p"
        and (width, height) == (out_width, out_height)
        and width % 2 == 0
        and height % 2 == 0
    )


class RgbToI420:
    """Converts (C, H, W) RGB frames into yuv420p AVFrames of one stream, with the SDK's
    ``PlanesToI420`` (its packed scratch frame reused for every frame: a stream's frames are built
    on one thread at a time, as its timeline assumes, encoder/output.py)."""

    def __init__(self, in_format: str, width: int, height: int) -> None:
        self.channels = RGB_CHANNELS[in_format]
        self.width, self.height = width, height
        self._planes = yuv.PlanesToI420(width, height)

    def convert(self, chw: np.ndarray, frame: Any) -> None:
        """Fill ``frame`` (a yuv420p av.VideoFrame of this size) from one (C, H, W) uint8 frame."""
        if chw.dtype != np.uint8 or chw.shape[1:] != (self.height, self.width) or chw.strides[2] != 1:
            raise ValueError(
                f"expected a ({len(self.channels)}+, {self.height}, {self.width}) uint8 frame with "
                f"contiguous rows, got {chw.shape} {chw.dtype} strides {chw.strides}"
            )
        r, g, b = (chw[c] for c in self.channels)
        y, u, v = frame.planes
        self._planes.convert(r, g, b, (y.buffer_ptr, y.line_size, u.buffer_ptr, u.line_size, v.buffer_ptr, v.line_size))
