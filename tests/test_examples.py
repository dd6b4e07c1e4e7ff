"""The examples, run as a user would (a subprocess with tiny durations) against a live server;
then their outputs are decoded: streams, codecs, frame and sample counts, and content where the
example puts something checkable in (the synthetic camera's burnt-in frame number and clock).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from .conftest import ROOT
from .media import decode, dominant_frequency
from .peers import NginxRtmp

EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, server: str, cwd: Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--server", server, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(cwd),
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def load_example(name: str) -> ModuleType:
    """Import an example file as a module, to reuse its font and layout when reading its output."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rtmp(tmp_path):
    with NginxRtmp(tmp_path / "nginx") as server:
        yield server


# -- spectrum visualizer -----------------------------------------------------------------------


def check_spectrum_video(frames: list[np.ndarray], width: int, height: int) -> None:
    """Black background, the orange spectrum around the middle row, and it moves."""
    stack = np.stack(frames).astype(np.float32)
    assert stack.shape[1:] == (height, width, 3)
    orange = (stack[..., 0] > 150) & (stack[..., 1] < 140) & (stack[..., 2] < 120)
    per_frame = orange.reshape(len(frames), -1).mean(axis=1)
    assert per_frame.max() > 0.002, "no spectrum drawn"
    assert per_frame.std() > 0, "the spectrum does not change"
    assert np.median(stack) < 40, "the background should be black"
    rows = np.nonzero(orange.any(axis=(0, 2)))[0]
    assert rows.min() < height // 2 < rows.max()  # drawn symmetrically around the middle


def test_spectrum_visualizer_to_mp4(server, tmp_path):
    out = tmp_path / "spectrum.mp4"
    stdout = run_example(
        "spectrum_visualizer.py",
        "--seconds",
        "2",
        "--fps",
        "10",
        "--width",
        "160",
        "--height",
        "120",
        "--n-fft",
        "512",
        "--dst",
        str(out),
        server=server.url,
        cwd=tmp_path,
    )
    assert "wrote 20 frames" in stdout, stdout
    result = decode(out)
    audio, video = result["streams"]  # the tutorial's order: audio is stream 0
    assert (audio["type"], audio["codec"], audio["sample_rate"], audio["channels"]) == ("audio", "aac", 16000, 1)
    assert abs(audio["sample_count"] - 32000) <= 2048  # AAC priming and padding
    assert (video["type"], video["codec"], video["width"], video["height"]) == ("video", "h264", 160, 120)
    assert video["frame_count"] == 20
    check_spectrum_video(video["frames"], 160, 120)
    # Speech-like: the energy is in the voice band, not a single test tone or silence.
    pcm = audio["pcm"][:, 0]
    assert np.sqrt(np.mean(pcm**2)) > 0.01
    assert 80 < dominant_frequency(pcm, 16000) < 4000


def test_spectrum_visualizer_to_rtmp(server, rtmp, tmp_path):
    stdout = run_example(
        "spectrum_visualizer.py",
        "--seconds",
        "2",
        "--fps",
        "10",
        "--width",
        "160",
        "--height",
        "120",
        "--n-fft",
        "512",
        "--dst",
        rtmp.url("spectrum"),
        server=server.url,
        cwd=tmp_path,
    )
    assert "wrote 20 frames" in stdout, stdout
    assert rtmp.wait_closed("spectrum", timeout=15), rtmp.log()
    summary = rtmp.decode("spectrum")
    assert sorted(summary["stream_types"]) == ["audio", "video"]
    assert summary["video"]["codec"] == "h264" and summary["video"]["frames"] == 20
    assert summary["audio"]["codec"] == "aac" and abs(summary["audio"]["samples"] - 32000) <= 2048
    check_spectrum_video(summary["rgb"], 160, 120)


# -- synthetic camera --------------------------------------------------------------------------


def read_overlay(rgb: np.ndarray, camera: ModuleType, chars: int = 12) -> list[str]:
    """Read the camera's two overlay lines back from a decoded (H, W, 3) frame, glyph by glyph:
    sample the middle of every font pixel and take the closest glyph of the example's own font.
    """
    height = rgb.shape[0]
    scale = camera.overlay_scale(height)
    top, left = camera.overlay_origin(height, scale, 2)
    gray = rgb.astype(np.float32).mean(axis=2)
    lines = []
    for n in range(2):
        text = ""
        for k in range(chars):
            y = top + n * camera.CELL_H * scale + scale // 2
            x = left + k * camera.CELL_W * scale + scale // 2
            cell = gray[y : y + camera.GLYPH_H * scale : scale, x : x + camera.GLYPH_W * scale : scale] > 127
            text += min(camera.GLYPHS, key=lambda c: int(np.count_nonzero(camera.GLYPHS[c] != cell)))
        lines.append(text.rstrip())
    return lines


def seconds_of_day(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def local_seconds_of_day(timestamp: float) -> float:
    local = time.localtime(timestamp)
    return local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + timestamp % 1


def check_camera_frames(frames: list[np.ndarray], fps: float, started: float, ended: float) -> None:
    """Frame k shows "#k", and a clock that advances by about 1/fps within the run's wall time."""
    camera = load_example("synthetic_camera")
    texts = [read_overlay(frame, camera) for frame in frames]
    assert [t[1] for t in texts] == [f"#{k:06d}" for k in range(len(frames))], texts
    clocks = np.array([seconds_of_day(t[0]) for t in texts])
    first, last = local_seconds_of_day(started), local_seconds_of_day(ended)
    if last < first:  # the run spanned midnight
        clocks[clocks < first] += 86400
        last += 86400
    assert first - 0.01 <= clocks.min() and clocks.max() <= last + 0.01, (clocks, first, last)
    steps = np.diff(clocks)
    assert (steps >= 0).all(), steps  # (a frame captured late is followed at once by the next)
    assert abs(steps.mean() - 1 / fps) < 0.25 / fps, steps  # captured in real time


def test_synthetic_camera_to_rtmp(server, rtmp, tmp_path):
    started = time.time()
    stdout = run_example(
        "synthetic_camera.py",
        "--seconds",
        "2",
        "--fps",
        "15",
        "--width",
        "320",
        "--height",
        "180",
        "--dst",
        rtmp.url("camera"),
        server=server.url,
        cwd=tmp_path,
    )
    assert rtmp.wait_closed("camera", timeout=15), rtmp.log()
    ended = time.time()
    assert "streamed 30 frames" in stdout, stdout
    summary = rtmp.decode("camera")
    assert summary["stream_types"] == ["video"]
    video = summary["video"]
    assert (video["codec"], video["width"], video["height"], video["frames"]) == ("h264", 320, 180, 30)
    assert summary["errors"] == 0
    check_camera_frames(summary["rgb"], 15, started, ended)
    # A moving scene: consecutive pictures differ outside the overlay too.
    top = np.stack(summary["rgb"])[:, :100].astype(np.int16)
    assert (np.abs(np.diff(top, axis=0)).mean(axis=(1, 2, 3)) > 0.1).all()


def test_synthetic_camera_to_file(server, tmp_path):
    out = tmp_path / "camera.mkv"
    started = time.time()
    run_example(
        "synthetic_camera.py",
        "--seconds",
        "1",
        "--fps",
        "10",
        "--width",
        "240",
        "--height",
        "120",
        "--dst",
        str(out),
        server=server.url,
        cwd=tmp_path,
    )
    ended = time.time()
    (video,) = decode(out)["streams"]
    assert (video["codec"], video["width"], video["height"], video["frame_count"]) == ("h264", 240, 120, 10)
    check_camera_frames(video["frames"], 10, started, ended)


# -- in-memory MP3 -----------------------------------------------------------------------------


def test_in_memory_mp3(server, tmp_path):
    out = tmp_path / "tone.mp3"
    stdout = run_example(
        "in_memory_mp3.py",
        "--seconds",
        "2",
        "--rate",
        "16000",
        "--chunk-seconds",
        "0.3",
        "--save",
        str(out),
        server=server.url,
        cwd=tmp_path,
    )
    assert "identical" in stdout, stdout
    size = out.stat().st_size
    assert f"one-shot: {size} bytes" in stdout and f"chunked:  {size} bytes" in stdout, stdout
    assert "(7 chunks of 4800 frames)" in stdout, stdout
    (audio,) = decode(out)["streams"]
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("mp3", 16000, 1)
    assert abs(audio["sample_count"] - 32000) <= 2 * 1152  # encoder delay and padding
    assert abs(dominant_frequency(audio["pcm"][:, 0], 16000) - 220) < 5  # the chord's root is loudest
