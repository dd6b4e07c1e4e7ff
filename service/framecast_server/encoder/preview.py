"""Live previews for the dashboard: the latest video frame as a small JPEG, and audio levels.

While someone watches (the server tells the encoder when the dashboard or the API asks about
the session, ``watch``), the encoder process takes a video frame of each stream at most
``interval`` seconds apart as it is encoded, scales it to ``width`` pixels wide, and encodes that
with FFmpeg's MJPEG encoder (a few milliseconds), so a server full of sessions nobody looks at
spends nothing on previews. No frame is kept past the moment it is offered, only the small copy:
a frame may use memory the client writes again once its chunk is acknowledged (``writer.py``).
Audio levels are the RMS of each chunk per channel, in dBFS. Both go to the server with the
worker's other messages; nothing here touches the output.
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
    """Turns a video frame of each stream into a JPEG now and then, while someone watches."""

    def __init__(self, interval: float = 0.5, width: int = 320) -> None:
        self.interval = interval
        self._watched_until = 0.0
        self.width = width
        self._latest: dict[int, Any] = {}  # stream -> its small frame, until take()
        self._taken_at: dict[int, float] = {}  # stream -> when its last small frame was made
        self._sent_at = 0.0
        self._encoders: dict[tuple[int, int], Any] = {}
        self.levels: dict[int, list[float]] = {}
        self._levels_changed = False
        self._count = 0

    def offer_video(self, stream: int, frames: list[Any], now: float | None = None) -> None:
        """Frames of ``stream`` as they are encoded: the last one becomes the stream's next preview
        (scaled down now, a copy) if someone watches and its last one is ``interval`` old."""
        if not frames:
            return
        now = now or time.monotonic()
        if now >= self._watched_until or stream in self._latest:
            return
        if now - self._taken_at.get(stream, -math.inf) < self.interval:
            return
        self._taken_at[stream] = now
        try:
            self._latest[stream] = self._small(frames[-1])
        except Exception:
            log.warning("could not make a preview of stream %d", stream, exc_info=True)

    def offer_audio(self, stream: int, array: np.ndarray) -> None:
        self.offer_levels(stream, levels_db(array))

    def offer_levels(self, stream: int, levels: list[float]) -> None:
        self.levels[stream] = levels
        self._levels_changed = True

    def due(self, now: float | None = None) -> bool:
        """Whether ``take()`` has something to send: a video preview, or levels not sent for
        ``interval`` seconds, while someone watches."""
        now = now or time.monotonic()
        if now >= self._watched_until:
            return False
        return bool(self._latest) or (self._levels_changed and now - self._sent_at >= self.interval)

    def watch(self, seconds: float) -> None:
        """Make previews for the next ``seconds`` (someone is looking)."""
        self._watched_until = max(self._watched_until, time.monotonic() + seconds)

    def take(self) -> dict[int, bytes]:
        """JPEGs of the frames taken since the last call, by stream.

        A preview is a nicety: if one cannot be made, it is skipped (and logged), never fatal.
        """
        self._sent_at = time.monotonic()
        self._levels_changed = False
        out = {}
        for stream, small in self._latest.items():
            try:
                out[stream] = self._jpeg(small)
            except Exception:
                log.warning("could not make a preview of stream %d", stream, exc_info=True)
        self._latest.clear()
        return out

    def _small(self, frame: Any) -> Any:
        """``frame`` scaled to the preview's width (even sizes), as the JPEG encoder takes it: a copy."""
        width = min(self.width, frame.width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width) // 2 * 2)
        return frame.reformat(width=width, height=height, format="yuvj420p")

    def _jpeg(self, small: Any) -> bytes:
        width, height = small.width, small.height
        encoder = self._encoders.get((width, height))
        if encoder is None:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
            encoder.time_base = Fraction(1, 25)
            encoder.open()
            self._encoders[(width, height)] = encoder
        self._count += 1
        small.pts = self._count  # the encoder wants increasing pts; the preview's own count
        small.time_base = encoder.time_base
        return b"".join(bytes(p) for p in encoder.encode(small))
