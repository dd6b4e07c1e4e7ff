"""Test media, built before any clock starts.

Video is a moving pattern: a colour gradient with a checkerboard and a fixed noise texture, all
scrolling 4 pixels a frame, so encoders see motion and detail (not a flat or a static picture).
Frames are slices of one wide canvas, which makes building hundreds of 720p frames cheap.
"""

from __future__ import annotations

import numpy as np

SCROLL = 4  # pixels per frame


def _canvas(height: int, width: int, seed: int) -> np.ndarray:
    """A (3, height, width) uint8 canvas: gradients, an 16-pixel checkerboard, noise."""
    yy, xx = np.mgrid[0:height, 0:width]
    checker = ((xx // 16 + yy // 16) % 2).astype(np.uint8) * 96
    noise = np.random.default_rng(seed).integers(0, 48, (3, height, width), dtype=np.uint8)
    canvas = np.empty((3, height, width), np.uint8)
    canvas[0] = (xx % 256) // 2 + checker
    canvas[1] = (yy * 255 // max(1, height - 1)) // 2 + checker
    canvas[2] = ((xx + yy) % 256) // 2
    return canvas // 2 + noise


def moving_frames(count: int, height: int, width: int, layout: str = "tchw", seed: int = 0) -> np.ndarray:
    """``count`` frames of the moving pattern, C-contiguous uint8.

    Args:
        layout: ``"tchw"`` (T, 3, H, W), what framecast's SDK takes (torchaudio's layout), or
            ``"thwc"`` (T, H, W, 3), packed rgb24 as PyAV's from_ndarray and ffmpeg's rawvideo
            input take it. Both layouts hold the same pixels.
    """
    canvas = _canvas(height, width + SCROLL * count, seed)
    if layout == "thwc":
        canvas = np.ascontiguousarray(canvas.transpose(1, 2, 0))
        return np.stack([canvas[:, SCROLL * i : SCROLL * i + width] for i in range(count)])
    if layout == "tchw":
        return np.stack([canvas[:, :, SCROLL * i : SCROLL * i + width] for i in range(count)])
    raise ValueError(f"layout must be 'tchw' or 'thwc', got {layout!r}")


def tone(seconds: float, sample_rate: int, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    """A sine at ``freq`` Hz, amplitude 0.2, (samples, channels) float32."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    wave = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.ascontiguousarray(np.repeat(wave[:, None], channels, axis=1))
