"""One-call helpers: torchvision's ``write_video`` and ``capabilities()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidConfig
from .progress import bar
from .rest import RestClient
from .streams import to_numpy
from .writer import StreamWriter

_AUDIO_FORMATS = {"float32": "flt", "float64": "dbl", "int16": "s16", "int32": "s32", "int64": "s64", "uint8": "u8"}


def write_video(
    filename: Any,
    video_array: Any,
    fps: float,
    video_codec: str = "libx264",
    options: dict[str, Any] | None = None,
    audio_array: Any = None,
    audio_fps: float | None = None,
    audio_codec: str | None = None,
    audio_options: dict[str, Any] | None = None,
    *,
    server: str | None = None,
    api_key: str | None = None,
    progress: bool = False,
) -> None:
    """Write a [T, H, W, C] uint8 video (and optional [C, N] audio) to ``filename``.

    torchvision.io.write_video's signature and layout. ``filename`` is anything StreamWriter's
    ``dst`` is, a list of destinations included (encoded once, written to each). Unlike
    torchvision, a fractional ``fps`` (29.97) is kept exactly, not rounded to an integer.
    ``progress=True`` shows a tqdm bar of the frames sent (tqdm must be installed).
    """
    video = to_numpy(video_array)
    if video.ndim != 4 or video.shape[3] not in (1, 3):
        raise InvalidConfig(f"video_array must be [T, H, W, C] with C = 3 (or 1), got shape {tuple(video.shape)}")
    if video.dtype != np.uint8:
        raise InvalidConfig(f"video_array must be uint8, got {video.dtype}")
    frames, height, width, channels = video.shape
    writer = StreamWriter(filename, server=server, api_key=api_key)
    writer.add_video_stream(
        frame_rate=float(fps),
        width=width,
        height=height,
        format="rgb24" if channels == 3 else "gray8",
        encoder=video_codec,
        encoder_option=options,
    )
    audio = None
    if audio_array is not None:
        audio = to_numpy(audio_array)
        if audio.ndim != 2:
            raise InvalidConfig(f"audio_array must be [C, N], got shape {tuple(audio.shape)}")
        if audio_fps is None:
            raise InvalidConfig("audio_fps is required with audio_array")
        fmt = _AUDIO_FORMATS.get(audio.dtype.name)
        if fmt is None:
            raise InvalidConfig(f"audio_array dtype {audio.dtype} is not supported; use float32 or int16")
        writer.add_audio_stream(
            sample_rate=int(audio_fps),
            num_channels=audio.shape[0],
            format=fmt,
            encoder=audio_codec,
            encoder_option=audio_options,
        )
    with writer.open():
        # [T, H, W, C] -> [T, C, H, W], in slices so the transposed copy stays small.
        step = max(1, (16 << 20) // max(1, video[:1].nbytes))
        shown = bar(progress, frames, "frame", "write_video")
        try:
            for start in range(0, frames, step):
                piece = video[start : start + step]
                writer.write_video_chunk(0, np.ascontiguousarray(piece.transpose(0, 3, 1, 2)))
                shown.update(len(piece))
        finally:
            shown.close()
        if audio is not None:
            writer.write_audio_chunk(1, np.ascontiguousarray(audio.T))


def capabilities(server: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """What the server's FFmpeg can do: library versions, muxers, encoders, output protocols.

    The framecast counterpart of ``torchaudio.utils.ffmpeg_utils``.
    """
    rest = RestClient(server, api_key)
    try:
        caps: dict[str, Any] = rest.request("GET", "/v1/capabilities")
        return caps
    finally:
        rest.close()
