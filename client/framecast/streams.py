"""Stream and destination descriptions on the client side, and turning arrays into chunks.

Nothing here does I/O. ``AudioStream`` and ``VideoStream`` hold what ``add_audio_stream`` and
``add_video_stream`` were given (torchaudio's names and defaults) and check chunks locally, so a
wrong chunk fails on the call that wrote it, before a byte leaves the process; the server checks
again, authoritatively.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np

from .errors import InvalidChunk, InvalidConfig
from .protocol import AUDIO_SAMPLE_FORMATS, VIDEO_PIXEL_FORMATS


@dataclass
class CodecConfig:
    """Codec settings, as torchaudio.io.CodecConfig; -1 / None keeps the encoder's default."""

    bit_rate: int = -1
    compression_level: int = -1
    qscale: int | None = None
    gop_size: int = -1
    max_b_frames: int = -1


@dataclass(frozen=True)
class ServerFile:
    """A destination on the server: a path under its output directory.

    The file can be downloaded from ``GET /v1/sessions/{id}/output`` once the session is closed
    (``StreamWriter.download()`` does that).

    Args:
        path: relative to the server's output directory.
        crash_safe: MP4/MOV are written fragmented so that they stay playable (to within a
            second or two) if the server dies mid-stream; False writes plain MP4, which needs a
            clean close. Costs a little size and seeking speed; ``movflags`` you pass win.
    """

    path: str
    crash_safe: bool = True


@dataclass(frozen=True)
class Discard:
    """A destination that keeps nothing: for measuring throughput and for dry runs.

    Args:
        encode: encode and mux (into FFmpeg's null muxer) instead of only taking the chunks.
    """

    encode: bool = False


Destination = Union[str, "os.PathLike[str]", ServerFile, Discard, Any]


def _codec_config(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    # torchaudio.io.CodecConfig or anything with the same attributes
    return {k: getattr(value, k) for k in ("bit_rate", "compression_level", "qscale", "gop_size", "max_b_frames")}


def _options(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else {str(k): v for k, v in value.items()}


@dataclass
class AudioStream:
    sample_rate: int
    num_channels: int
    format: str = "flt"
    encoder: str | None = None
    encoder_option: dict[str, Any] | None = None
    encoder_format: str | None = None
    encoder_sample_rate: int | None = None
    encoder_num_channels: int | None = None
    codec_config: Any = None
    filter_desc: str | None = None

    def __post_init__(self) -> None:
        if self.format not in AUDIO_SAMPLE_FORMATS:
            raise InvalidConfig(
                f"unknown audio sample format {self.format!r}; expected one of {', '.join(AUDIO_SAMPLE_FORMATS)}",
                field="format",
            )
        if int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise InvalidConfig(
                f"sample_rate must be a positive integer, got {self.sample_rate!r}", field="sample_rate"
            )
        if int(self.num_channels) != self.num_channels or self.num_channels <= 0:
            raise InvalidConfig(
                f"num_channels must be a positive integer, got {self.num_channels!r}", field="num_channels"
            )

    @property
    def dtype(self) -> np.dtype:
        return AUDIO_SAMPLE_FORMATS[self.format].numpy

    @property
    def rate(self) -> float:
        return float(self.sample_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "audio",
            "sample_rate": int(self.sample_rate),
            "num_channels": int(self.num_channels),
            "format": self.format,
            "encoder": self.encoder,
            "encoder_option": _options(self.encoder_option),
            "encoder_format": self.encoder_format,
            "encoder_sample_rate": self.encoder_sample_rate,
            "encoder_num_channels": self.encoder_num_channels,
            "codec_config": _codec_config(self.codec_config),
            "filter_desc": self.filter_desc,
        }

    def check(self, i: int, array: np.ndarray) -> None:
        if array.ndim != 2 or array.shape[1] != self.num_channels:
            raise InvalidChunk(
                f"stream {i} (audio) expects shape (frames, {self.num_channels}), got {tuple(array.shape)}"
            )
        _check_dtype(i, "audio", array, self.dtype, self.format)


@dataclass
class VideoStream:
    frame_rate: float | str
    width: int
    height: int
    format: str = "rgb24"
    encoder: str | None = None
    encoder_option: dict[str, Any] | None = None
    encoder_format: str | None = None
    encoder_frame_rate: float | str | None = None
    encoder_width: int | None = None
    encoder_height: int | None = None
    codec_config: Any = None
    filter_desc: str | None = None

    def __post_init__(self) -> None:
        if self.format not in VIDEO_PIXEL_FORMATS:
            raise InvalidConfig(
                f"unknown video pixel format {self.format!r}; expected one of {', '.join(VIDEO_PIXEL_FORMATS)}",
                field="format",
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise InvalidConfig(f"{name} must be a positive integer, got {value!r}", field=name)

    @property
    def channels(self) -> int:
        return VIDEO_PIXEL_FORMATS[self.format]

    @property
    def rate(self) -> float:
        if isinstance(self.frame_rate, str):
            num, _, den = self.frame_rate.partition("/")
            return float(num) / float(den or 1)
        return float(self.frame_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "video",
            "frame_rate": self.frame_rate if isinstance(self.frame_rate, str) else float(self.frame_rate),
            "width": int(self.width),
            "height": int(self.height),
            "format": self.format,
            "encoder": self.encoder,
            "encoder_option": _options(self.encoder_option),
            "encoder_format": self.encoder_format,
            "encoder_frame_rate": self.encoder_frame_rate,
            "encoder_width": self.encoder_width,
            "encoder_height": self.encoder_height,
            "codec_config": _codec_config(self.codec_config),
            "filter_desc": self.filter_desc,
        }

    def check(self, i: int, array: np.ndarray) -> None:
        expected = (self.channels, int(self.height), int(self.width))
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise InvalidChunk(
                f"stream {i} (video) expects shape (frames, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {tuple(array.shape)}"
            )
        _check_dtype(i, "video", array, np.dtype(np.uint8), self.format)


Stream = Union[AudioStream, VideoStream]


def _check_dtype(i: int, kind: str, array: np.ndarray, expected: np.dtype, fmt: str) -> None:
    if array.dtype.kind != expected.kind or array.dtype.itemsize != expected.itemsize:
        raise InvalidChunk(f"stream {i} ({kind}, format {fmt!r}) expects dtype {expected.name}, got {array.dtype.name}")


def to_numpy(chunk: Any) -> np.ndarray:
    """A C-contiguous little-endian numpy array of ``chunk`` (torch tensor or array-like).

    CPU tensors and contiguous arrays are viewed, not copied; CUDA tensors are moved to the CPU.
    """
    if type(chunk).__module__.startswith("torch"):
        tensor = chunk.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        array = tensor.contiguous().numpy()
    else:
        array = np.asarray(chunk)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def split(array: np.ndarray, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    """Split along the first axis into pieces of at most ``max_bytes``: yields (offset, piece).

    Raises:
        InvalidChunk: a single frame alone is larger than ``max_bytes``.
    """
    per_frame = array[:1].nbytes if array.shape[0] else 0
    if per_frame > max_bytes:
        raise InvalidChunk(f"one frame is {per_frame} bytes, more than the server's message limit of {max_bytes} bytes")
    step = max(1, max_bytes // per_frame) if per_frame else max(1, array.shape[0])
    if array.shape[0] == 0:
        yield 0, array
        return
    for start in range(0, array.shape[0], step):
        yield start, array[start : start + step]


def describe_destination(dst: Any) -> dict[str, Any]:
    """The session config's ``destination`` for what the user passed as ``dst``."""
    if isinstance(dst, ServerFile):
        return {"type": "server_file", "path": dst.path, "crash_safe": dst.crash_safe}
    if isinstance(dst, Discard):
        return {"type": "discard", "encode": dst.encode}
    if isinstance(dst, (str, os.PathLike)):
        text = os.fspath(dst)
        if "://" in text:
            return {"type": "url", "url": text}
        return {"type": "client", "filename": os.path.basename(text), "seekable": True}
    if hasattr(dst, "write"):
        name = getattr(dst, "name", None)
        return {
            "type": "client",
            "filename": os.path.basename(name) if isinstance(name, str) else None,
            "seekable": is_seekable(dst),
        }
    raise InvalidConfig(
        f"dst must be a path, a URL, a framecast.ServerFile or an object with write(); got {type(dst).__name__}",
        field="dst",
    )


def is_seekable(obj: Any) -> bool:
    if not (hasattr(obj, "seek") and hasattr(obj, "tell")):
        return False
    probe = getattr(obj, "seekable", None)
    try:
        return bool(probe()) if callable(probe) else True
    except Exception:
        return False
