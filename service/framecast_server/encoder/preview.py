"""Live previews for the dashboard: the latest video frame as a small JPEG, and audio levels.

The encoder process keeps a reference to the newest frame of each video stream and, at most
``interval`` seconds apart, scales it to ``width`` pixels wide and encodes it with FFmpeg's MJPEG
encoder (a few milliseconds), but only while someone watches: the server tells the encoder when
the dashboard or the API asks about the session (``watch``), so a server full of sessions nobody
looks at spends nothing on previews. Audio levels are the RMS of each chunk per channel, in dBFS. Both go
to the server with the worker's other messages; nothing here touches the output.
"""

from __future__ import annotations

import logging
import math
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

log = logging.getLogger(__name__)

#: Lowest level reported, for silence.
FLOOR_DB = -90.0


def levels_db(array: np.ndarray) -> list[float]:
    """RMS level per channel of a (frames, channels) chunk, in dBFS (0 dB = full scale)."""
    if array.shape[0] == 0:
        return [FLOOR_DB] * array.shape[1]
    samples = array.astype(np.float64)
    if array.dtype.kind == "u":
        samples = (samples - 128.0) / 128.0
    elif array.dtype.kind == "i":
        samples /= float(np.iinfo(array.dtype).max)
    rms = np.sqrt(np.mean(np.square(samples), axis=0))
    return [round(max(FLOOR_DB, 20 * math.log10(r)) if r > 0 else FLOOR_DB, 1) for r in rms]


class Previewer:
    """Turns the newest video frame into a JPEG now and then."""

    def __init__(self, interval: float = 0.5, width: int = 320) -> None:
        self.interval = interval
        self._watched_until = 0.0
        self.width = width
        self._latest: dict[int, Any] = {}
        self._sent_at = 0.0
        self._encoders: dict[tuple[int, int], Any] = {}
        self.levels: dict[int, list[float]] = {}
        self._levels_changed = False
        self._count = 0

    def offer_video(self, stream: int, frames: list[Any]) -> None:
        if frames:
            self._latest[stream] = frames[-1]

    def offer_audio(self, stream: int, array: np.ndarray) -> None:
        self.offer_levels(stream, levels_db(array))

    def offer_levels(self, stream: int, levels: list[float]) -> None:
        self.levels[stream] = levels
        self._levels_changed = True

    def due(self, now: float | None = None) -> bool:
        fresh = bool(self._latest) or self._levels_changed
        now = now or time.monotonic()
        return fresh and now < self._watched_until and now - self._sent_at >= self.interval

    def watch(self, seconds: float) -> None:
        """Make previews for the next ``seconds`` (someone is looking)."""
        self._watched_until = max(self._watched_until, time.monotonic() + seconds)

    def take(self) -> dict[int, bytes]:
        """JPEGs of the newest frame of each video stream offered since the last call.

        A preview is a nicety: if one cannot be made, it is skipped (and logged), never fatal.
        """
        self._sent_at = time.monotonic()
        self._levels_changed = False
        out = {}
        for stream, frame in self._latest.items():
            try:
                out[stream] = self._jpeg(frame)
            except Exception:
                log.warning("could not make a preview of stream %d", stream, exc_info=True)
        self._latest.clear()
        return out

    def _jpeg(self, frame: Any) -> bytes:
        width = min(self.width, frame.width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width) // 2 * 2)
        encoder = self._encoders.get((width, height))
        if encoder is None:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
            encoder.time_base = Fraction(1, 25)
            encoder.open()
            self._encoders[(width, height)] = encoder
        small = frame.reformat(width=width, height=height, format="yuvj420p")
        self._count += 1
        small.pts = self._count  # the encoder wants increasing pts; the preview's own count
        small.time_base = encoder.time_base
        return b"".join(bytes(p) for p in encoder.encode(small))
