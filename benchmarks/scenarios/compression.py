"""4d. Compressed payloads: what zstd saves on the link, and what it costs the client and the encoder.

``StreamWriter(..., compression="zstd")`` sends a video payload as a zstd frame where that saves
at least 10% (``framecast.compression``), and the session's encoder process decompresses it.
Whether that pays depends on the pictures, so it is measured on three kinds, as the yuv420p the
SDK sends over the websocket:

- camera-like: a photograph (matplotlib's sample ``grace_hopper.jpg``, scaled up) panned a few
  pixels a frame;
- the same with sensor noise (sigma 3 levels);
- rendered: a simulator's view without textures (a graded sky, a checkered floor, shaded boxes
  moving).

For each: the SDK's ``Compressor`` ratio and client milliseconds a frame, and the encoder's
``Decompressor`` milliseconds a frame. Then end to end through the shaped 1 Gbit/s link of
``shaped.py``: rendered 1080p60 as yuv420p is 1.49 Gbit/s raw, more than the link carries;
compression off, then on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from framecast import compression, yuv

from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .shaped import ShapedLink, stream_through

NAME = "compression"
TITLE = "Compressed payloads: link bytes saved against CPU spent, by kind of picture"

KINDS = {"camera": "camera-like", "noisy": "camera + noise", "rendered": "rendered"}


def camera_frames(count: int, height: int, width: int) -> np.ndarray:
    """A photograph panned 8 pixels a frame, (T, 3, H, W) uint8."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = Image.open(f).convert("RGB")
    tall = np.asarray(photo.resize((width, height + 8 * count)))
    return np.stack([np.ascontiguousarray(tall[8 * i : 8 * i + height].transpose(2, 0, 1)) for i in range(count)])


def rendered_frames(count: int, height: int, width: int) -> np.ndarray:
    """A simulator's view, (T, 3, H, W) uint8: a graded sky, a checkered floor, shaded boxes
    moving across it, as a physics or robotics simulator renders without textures."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    sky = np.stack([90 + 80 * rows, 140 + 70 * rows, 220 - 30 * rows]) + 0 * cols
    tile = max(8, width // 24)
    checker = ((np.arange(height)[:, None] // tile + np.arange(width)[None, :] // tile) % 2).astype(np.float32)
    floor = np.stack([70 + 60 * checker, 70 + 60 * checker, 80 + 50 * checker])
    horizon = height * 3 // 5
    background = sky.copy()
    background[:, horizon:] = floor[:, horizon:]
    frames = np.empty((count, 3, height, width), np.uint8)
    box_h, box_w = height // 5, width // 6
    shade = np.linspace(1.0, 0.55, box_w, dtype=np.float32)[None, None, :]  # lit from the left
    boxes = [((200, 70, 60), 0.45, 0.1, 6), ((60, 170, 90), 0.5, 0.5, -4), ((230, 200, 70), 0.55, 0.3, 3)]
    for i in range(count):
        frame = background.copy()
        for colour, top, left, speed in boxes:
            y, x = int(top * height), (int(left * width) + speed * i) % (width - box_w)
            frame[:, y : y + box_h, x : x + box_w] = np.array(colour, np.float32)[:, None, None] * shade
        frames[i] = frame.clip(0, 255).astype(np.uint8)
    return frames


def _measure(frames_yuv: np.ndarray) -> dict[str, float]:
    """The SDK's compressor and the encoder's decompressor over these yuv420p frames."""
    compressor, decompressor = compression.Compressor(), compression.Decompressor()
    packed: list[bytes | None] = []
    start = time.process_time()
    for i, frame in enumerate(frames_yuv):
        packed.append(compressor.compress(i, memoryview(frame)))  # each its own stream: no backoff
    client = time.process_time() - start
    start = time.process_time()
    for frame, data in zip(frames_yuv, packed):
        if data is not None:
            decompressor.decompress(data, frame.nbytes)
    encoder = time.process_time() - start
    sent = sum(frame.nbytes if data is None else len(data) for frame, data in zip(frames_yuv, packed))
    count = len(frames_yuv)
    return {
        "ratio": frames_yuv.nbytes / sent,
        "client_ms": client / count * 1e3,
        "encoder_ms": encoder / count * 1e3,
        "raw_share": sum(data is None for data in packed) / count,
    }


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.compression_size
    count = settings.compression_frames
    camera = camera_frames(count, height, width)
    rng = np.random.default_rng(0)
    noisy = np.clip(camera.astype(np.int16) + rng.normal(0, 3, camera.shape), 0, 255).astype(np.uint8)
    kinds = {"camera": camera, "noisy": noisy, "rendered": rendered_frames(count, height, width)}
    size = f"{width}x{height}"
    for kind, frames in kinds.items():
        m = _measure(np.asarray(yuv.rgb_to_i420(frames, "rgb24")))
        label = KINDS[kind]
        result.add(f"{kind}_ratio", f"{label} {size}: raw / sent bytes", m["ratio"], "x", 2)
        result.add(f"{kind}_client_ms", f"{label} {size}: client CPU a frame (compress)", m["client_ms"], "ms", 2)
        result.add(f"{kind}_encoder_ms", f"{label} {size}: encoder CPU a frame (decompress)", m["encoder_ms"], "ms", 2)
        result.add(f"{kind}_raw", f"{label} {size}: payloads sent raw (saved < 10%)", m["raw_share"] * 100, "%", 0)

    link_width, link_height = settings.compression_link_size
    rate = settings.compression_link_rate
    frames = rendered_frames(16, link_height, link_width)
    runs: dict[str, dict[str, Any]] = {}
    with BenchServer() as server, ShapedLink(server.port, settings.shaped_link_bits / 8) as link:
        stream_through(link, frames[:2], rate, min(settings.compression_link_seconds, 1.0), "yuv420p")  # warm-up
        for mode in ("zstd", "none"):
            runs[mode] = stream_through(
                link, frames, rate, settings.compression_link_seconds, "yuv420p", compression=mode
            )
    what = f"rendered {link_width}x{link_height}@{rate} yuv420p through {settings.shaped_link_bits / 1e9:.3g} Gbit/s"
    for mode, label in (("zstd", "zstd"), ("none", "uncompressed")):
        r = runs[mode]
        result.add(f"link_{mode}_gbits", f"{what}, {label}: link used", r["link_gbits"], "Gbit/s", 3)
        result.add(f"link_{mode}_lag", f"{what}, {label}: last ACK after its media time", r["lag_s"], "s", 2)
        result.add(f"link_{mode}_p99", f"{what}, {label}: ACK latency p99", r["p99"], "ms", 1)
    result.target("rendered 1080p60 holds real time compressed: last ACK within 1 s", "link_zstd_lag", "<", 1.0, "s")
    return result
