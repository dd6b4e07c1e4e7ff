"""Test media: patterns with known content, and decoding outputs to check what arrived.

Video patterns are smooth gradients that move with the frame number, so lossy codecs keep them
well (PSNR is meaningful), plus a frame number stamped into the top rows as big binary blocks
that survive encoding, so a decoded frame tells which input frame it was.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Union

import av
import numpy as np

STAMP_BITS = 12  # frame numbers up to 4095
STAMP_ROWS = 16


def pattern(index: int, height: int, width: int) -> np.ndarray:
    """Frame ``index`` of a moving colour gradient, (3, H, W) uint8, with its number stamped in."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    t = index / 30.0
    r = 0.5 + 0.4 * np.sin(2 * np.pi * (x + t * 0.25))
    g = 0.5 + 0.4 * np.sin(2 * np.pi * (y + t * 0.15))
    b = 0.5 + 0.4 * np.sin(2 * np.pi * (x + y - t * 0.1))
    frame = (np.stack([r + 0 * y, g + 0 * x, b]) * 255).astype(np.uint8)
    stamp(frame, index)
    return frame


def patterns(count: int, height: int, width: int, start: int = 0) -> np.ndarray:
    """(T, 3, H, W) uint8 frames ``start .. start+count-1``."""
    return np.stack([pattern(start + i, height, width) for i in range(count)])


def stamp(frame: np.ndarray, number: int) -> None:
    """Write ``number`` as STAMP_BITS black/white blocks across the top rows of a (C, H, W) frame."""
    width = frame.shape[2]
    block = width // STAMP_BITS
    for bit in range(STAMP_BITS):
        value = 255 if (number >> bit) & 1 else 0
        frame[:, :STAMP_ROWS, bit * block : (bit + 1) * block] = value


def read_stamp(rgb: np.ndarray) -> int:
    """The frame number stamped into a decoded (H, W, 3) frame."""
    width = rgb.shape[1]
    block = width // STAMP_BITS
    number = 0
    for bit in range(STAMP_BITS):
        cell = rgb[2 : STAMP_ROWS - 2, bit * block + 2 : (bit + 1) * block - 2].astype(np.float32)
        if cell.mean() > 127:
            number |= 1 << bit
    return number


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def sine(freq: float, rate: int, seconds: float, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """(frames, channels) float32 sine."""
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency of a mono signal, by FFT peak."""
    samples = samples - samples.mean()
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


Source = Union[str, Path, bytes, io.BytesIO]


def decode(source: Source, format: str | None = None, truncated: bool = False) -> dict[str, Any]:
    """Decode every stream of an output: codecs, sizes, frame and sample counts, content.

    ``truncated``: the file may end mid-packet (a crash); decode what is there and stop.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, io.BytesIO):
        source.seek(0)
    elif isinstance(source, Path):
        source = str(source)
    result: dict[str, Any] = {"streams": []}
    with av.open(source, "r", format=format) as container:
        result["format"] = container.format.name
        result["metadata"] = dict(container.metadata)
        infos: list[dict[str, Any]] = []
        for stream in container.streams:
            info: dict[str, Any] = {"type": stream.type, "codec": stream.codec_context.codec.canonical_name}
            if stream.type == "video":
                assert isinstance(stream, av.VideoStream)
                info.update(
                    width=stream.codec_context.width,
                    height=stream.codec_context.height,
                    pix_fmt=stream.codec_context.pix_fmt,
                    frames=[],
                    average_rate=stream.average_rate,
                    time_base=stream.time_base,
                )
            else:
                assert isinstance(stream, av.AudioStream)
                info.update(
                    sample_rate=stream.codec_context.sample_rate, channels=stream.codec_context.channels, samples=[]
                )
            infos.append(info)
        try:
            for packet in container.demux():
                info = infos[packet.stream.index]
                for frame in packet.decode():
                    if info["type"] == "video":
                        assert isinstance(frame, av.VideoFrame)
                        info["frames"].append(frame.to_ndarray(format="rgb24"))
                    else:
                        assert isinstance(frame, av.AudioFrame)
                        pcm = frame.to_ndarray()
                        info["samples"].append(pcm.T if frame.format.is_planar else pcm.reshape(frame.samples, -1))
        except (av.error.EOFError, av.error.InvalidDataError):
            if not truncated:
                raise
        for info in infos:
            if info["type"] == "video":
                info["frame_count"] = len(info["frames"])
            else:
                pcm = np.concatenate(info["samples"]) if info["samples"] else np.zeros((0, info["channels"]))
                info["pcm"] = pcm
                info["sample_count"] = pcm.shape[0]
                del info["samples"]
        result["streams"] = infos
    return result


def chw_to_hwc(frames: np.ndarray) -> np.ndarray:
    return frames.transpose(0, 2, 3, 1)


def assert_planes_as_written(path: Path, frames: np.ndarray) -> None:
    """The video of ``path``, encoded losslessly, decodes to exactly the yuv420p planes of the
    (T, 3, H, W) rgb24 ``frames`` as the client converts them (``framecast.yuv``), frame by frame."""
    from framecast import yuv

    expected = yuv.rgb_to_i420(frames)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="yuv420p").reshape(-1) for f in container.decode(video=0)]
    assert len(decoded) == len(frames)
    for k, planes in enumerate(decoded):
        assert np.array_equal(planes, expected[k]), f"frame {k} is not the one written"
