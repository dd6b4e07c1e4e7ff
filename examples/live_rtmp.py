"""Stream a moving test pattern with a tone to an RTMP server, in real time, through framecast.

    python examples/live_rtmp.py --url rtmp://mediamtx:1935/demo --seconds 60

With the compose deployment, watch it at http://localhost:8888/demo/ (HLS) or
http://localhost:8889/demo/ (WebRTC), or `ffplay rtmp://localhost:1935/demo`.
The frames are numpy arrays made here; a model's torch tensors go in the same way.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import framecast


def test_pattern(index: int, width: int, height: int, fps: float) -> np.ndarray:
    """Frame ``index``: colour bars sliding left, a white box bouncing across. (3, H, W) uint8."""
    x = np.arange(width)
    bars = np.array(
        [
            [255, 255, 255],
            [255, 255, 0],
            [0, 255, 255],
            [0, 255, 0],
            [255, 0, 255],
            [255, 0, 0],
            [0, 0, 255],
            [16, 16, 16],
        ],
        dtype=np.uint8,
    )
    shift = int(index * width / (4 * fps))  # one screen width every 4 s
    columns = bars[((x + shift) * len(bars) // width) % len(bars)]  # (W, 3)
    frame = np.repeat(columns.T[:, None, :], height, axis=1).copy()  # (3, H, W)
    size = height // 6
    phase = (index / fps) % 2.0
    left = int((phase if phase < 1 else 2 - phase) * (width - size))
    top = (height - size) // 2
    frame[:, top : top + size, left : left + size] = 255
    return frame


def tone(start: int, count: int, rate: int) -> np.ndarray:
    """A 440 Hz tone with a 1 kHz beep on every second, (count, 2) float32."""
    t = (start + np.arange(count)) / rate
    beep = (t % 1.0) < 0.1
    wave = np.where(beep, np.sin(2 * math.pi * 1000 * t), 0.3 * np.sin(2 * math.pi * 440 * t))
    return np.repeat((0.5 * wave).astype(np.float32)[:, None], 2, axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="rtmp://localhost:1935/demo", help="where to publish")
    parser.add_argument("--server", default=None, help="framecast server (default $FRAMECAST_SERVER or :8000)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=48000)
    args = parser.parse_args(argv)

    writer = framecast.StreamWriter(args.url, server=args.server)
    writer.add_video_stream(frame_rate=args.fps, width=args.width, height=args.height)
    writer.add_audio_stream(sample_rate=args.rate, num_channels=2)
    frames = int(args.seconds * args.fps)
    samples_per_frame = args.rate / args.fps
    with writer.open():  # real time is the default for network URLs: writes are paced
        for i in range(frames):
            writer.write_video_chunk(0, test_pattern(i, args.width, args.height, args.fps)[None])
            start, end = round(i * samples_per_frame), round((i + 1) * samples_per_frame)
            writer.write_audio_chunk(1, tone(start, end - start, args.rate))
    print(f"streamed {frames} frames to {args.url}")


if __name__ == "__main__":
    main()
