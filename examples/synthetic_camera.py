"""A synthetic camera with an on-screen clock, streamed live through framecast.

Frames are "captured" at the camera's frame rate from the wall clock, like a real camera: a
moving landscape (drifting sun, scrolling hills, a bouncing ball), with the capture time
(HH:MM:SS.mmm, local time) and the frame number burnt into the picture with a 5x7 pixel font
drawn here in numpy. Compare the clock in the picture with a clock next to the player to see the
end-to-end latency of your pipeline.

    python examples/synthetic_camera.py                                  # rtmp://localhost:1935/live/camera
    python examples/synthetic_camera.py --dst rtmp://mediamtx:1935/demo --seconds 600
    python examples/synthetic_camera.py --dst camera.mp4 --seconds 5    # a file, still in real time
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import framecast

# A 5x7 bitmap font: each glyph is 7 rows of 5 bits, most significant bit on the left.
FONT: dict[str, tuple[int, ...]] = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    " ": (0x00,) * 7,
}
GLYPH_W, GLYPH_H = 5, 7
CELL_W, CELL_H = GLYPH_W + 1, GLYPH_H + 2  # one pixel between characters, two between lines


def glyph(char: str) -> np.ndarray:
    """A character as a (7, 5) bool mask."""
    rows = FONT[char]
    return np.array([[(row >> (GLYPH_W - 1 - col)) & 1 for col in range(GLYPH_W)] for row in rows], dtype=bool)


GLYPHS = {char: glyph(char) for char in FONT}


def text_mask(text: str, scale: int) -> np.ndarray:
    """``text`` rendered as a bool mask of (7·scale, 6·scale·len(text)) pixels."""
    cells = [np.pad(GLYPHS[c], ((0, 0), (0, CELL_W - GLYPH_W))) for c in text]
    mask = np.concatenate(cells, axis=1) if cells else np.zeros((GLYPH_H, 0), dtype=bool)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def overlay_scale(height: int) -> int:
    """Font pixel size for a frame height: 2 up to 240 lines, 3 at 360, 4 at 480, ..."""
    return max(2, height // 120)


def overlay_origin(height: int, scale: int, lines: int = 2) -> tuple[int, int]:
    """Top-left corner (row, column) of the first overlay line: the bottom-left of the picture."""
    margin = 2 * scale
    return height - margin - lines * CELL_H * scale, margin


def overlay_lines(captured: float, index: int) -> list[str]:
    """The clock (local wall-clock time of capture) and the frame number."""
    clock = time.strftime("%H:%M:%S", time.localtime(captured)) + f".{int(captured * 1000) % 1000:03d}"
    return [clock, f"#{index:06d}"]


def draw_overlay(frame: np.ndarray, lines: list[str], scale: int) -> None:
    """White text on a black box at the bottom-left of a (3, H, W) frame, in place."""
    top, left = overlay_origin(frame.shape[1], scale, len(lines))
    width = max(len(line) for line in lines) * CELL_W * scale
    pad = scale
    frame[:, max(0, top - pad) : top + len(lines) * CELL_H * scale, max(0, left - pad) : left + width + pad] = 0
    for n, line in enumerate(lines):
        mask = text_mask(line, scale)
        y = top + n * CELL_H * scale
        h, w = mask.shape
        h, w = min(h, frame.shape[1] - y), min(w, frame.shape[2] - left)
        frame[:, y : y + h, left : left + w][:, mask[:h, :w]] = 255


class Scene:
    """A landscape that moves with time: sky, drifting sun, two layers of scrolling hills, a ball."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.y = np.arange(height, dtype=np.float32)[:, None]
        self.x = np.arange(width, dtype=np.float32)[None, :]
        sky_top, sky_bottom = np.array([40, 90, 200], np.float32), np.array([170, 210, 255], np.float32)
        ramp = (self.y / height)[..., None]
        self.sky = (sky_top * (1 - ramp) + sky_bottom * ramp).repeat(width, axis=1)  # (H, W, 3)

    def render(self, t: float) -> np.ndarray:
        """The picture at ``t`` seconds: (3, H, W) uint8."""
        w, h, x, y = self.width, self.height, self.x, self.y
        img = self.sky.copy()
        sun_x, sun_y, sun_r = (0.1 + 0.05 * t) % 1.2 * w, 0.25 * h, 0.08 * h
        img[((x - sun_x) ** 2 + (y - sun_y) ** 2) < sun_r**2] = (255, 220, 80)
        for base, amp, speed, colour in ((0.6, 0.08, 0.03, (60, 130, 70)), (0.75, 0.06, 0.12, (30, 90, 40))):
            ridge = h * (
                base
                + amp * np.sin(2 * np.pi * (x / w * 2 + t * speed))
                + amp / 2 * np.sin(2 * np.pi * (x / w * 5 - t * speed * 1.7))
            )
            img[np.broadcast_to(y > ridge, (h, w))] = colour
        period = 2.0  # seconds for the ball to cross and come back
        phase = (t / period) % 1.0
        ball_x = (phase * 2 if phase < 0.5 else 2 - phase * 2) * (w - 0.2 * h) + 0.1 * h
        ball_y = h * (0.85 - 0.5 * abs(np.sin(np.pi * t * 1.5)))
        img[((x - ball_x) ** 2 + (y - ball_y) ** 2) < (0.06 * h) ** 2] = (230, 40, 40)
        return np.ascontiguousarray(img.astype(np.uint8).transpose(2, 0, 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dst",
        default="rtmp://localhost:1935/live/camera",
        help="where to publish: rtmp://..., udp://..., or a file (default %(default)s)",
    )
    parser.add_argument("--server", default=None, help="framecast server (default $FRAMECAST_SERVER or :8000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the camera runs")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args(argv)

    scene = Scene(args.width, args.height)
    scale = overlay_scale(args.height)
    # The camera runs in real time whatever the destination; the server paces packets too.
    writer = framecast.StreamWriter(args.dst, server=args.server, realtime=True)
    writer.add_video_stream(frame_rate=args.fps, width=args.width, height=args.height)
    frames = int(round(args.seconds * args.fps))
    late = 0
    with writer.open():
        start = time.monotonic()
        for i in range(frames):
            due = start + i / args.fps  # the camera's shutter: one frame every 1/fps seconds
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1 / args.fps:
                late += 1
            captured = time.time()
            frame = scene.render(i / args.fps)
            draw_overlay(frame, overlay_lines(captured, i), scale)
            writer.write_video_chunk(0, frame[None])
    lateness = f", {late} frames captured late (a slow machine?)" if late else ""
    print(
        f"streamed {frames} frames ({args.width}x{args.height} @ {args.fps:g} fps) to {args.dst} "
        f"in {time.monotonic() - start:.1f} s{lateness} (session {writer.session_id})"
    )


if __name__ == "__main__":
    main()
