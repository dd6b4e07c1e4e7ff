"""Stream and destination descriptions on the client side, and turning arrays into chunks.

Nothing here does I/O. ``AudioStream`` and ``VideoStream`` hold what ``add_audio_stream`` and
``add_video_stream`` were given (torchaudio's names and defaults) and check chunks locally, so a
wrong chunk fails on the call that wrote it, before a byte leaves the process; the server checks
again, authoritatively.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Union

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

    A path ending in ``.m3u8`` (HLS) or ``.mpd`` (DASH) is a live stream a browser can play: the
    playlist and its segments, written next to it and served by the server while the session
    streams (``StreamWriter.playback_url``).

    Args:
        path: relative to the server's output directory.
        crash_safe: MP4/MOV are written fragmented so that they stay playable (to within a
            second or two) if the server dies mid-stream; False writes plain MP4, which needs a
            clean close. Costs a little size and seeking speed; ``movflags`` you pass win.
        segment_duration: HLS/DASH: seconds a segment lasts, and the keyframe interval (default 2).
        playlist_size: HLS/DASH: segments a live playlist lists; older ones are deleted (default 6).
        playlist_type: HLS/DASH: ``"live"`` (default) or ``"event"``, which keeps every segment.
        segment_format: HLS: ``"fmp4"`` (default) or ``"mpegts"``.
        overwrite: replace files of this name that exist (never another API key's). Default:
            no, and a path that exists is refused with ``InvalidConfig`` naming it.
        segment_time: rotate: a new file (``NAME-00000.EXT``, ``NAME-00001.EXT``, ...) every
            this many seconds, each starting on a keyframe and playable alone.
        segment_name: rotating: the files' names as a strftime pattern without the extension,
            e.g. ``"cam-%Y%m%d-%H%M%S"``.
        retention: rotating: keep the newest N files (an int), or those younger than an age
            (``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``).
        renditions: HLS/DASH: an adaptive ladder, e.g. ``[{"height": 720, "bitrate": "3M"},
            {"height": 360, "bitrate": "800k"}]``: the video encoded once per rung, the audio once,
            one variant each in a master playlist at ``path``.
    """

    path: str
    crash_safe: bool = True
    segment_duration: float | None = None
    playlist_size: int | None = None
    playlist_type: str | None = None
    segment_format: str | None = None
    overwrite: bool | None = None
    segment_time: float | None = None
    segment_name: str | None = None
    retention: int | str | None = None
    renditions: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Discard:
    """A destination that keeps nothing: for measuring throughput and for dry runs.

    Args:
        encode: encode and mux (into FFmpeg's null muxer) instead of only taking the chunks.
    """

    encode: bool = False


Destination = Union[str, "os.PathLike[str]", ServerFile, Discard, Any]

#: What ``on_destination_drop`` may be (the writer's and each Output's).
DROP_POLICIES = ("drop", "block")


@dataclass(frozen=True)
class Output:
    """One destination of a session, with settings of its own: an element of a ``dst`` list.

    A session may write to several destinations at once (``StreamWriter(["rtmp://a/live/k",
    framecast.ServerFile("rec/a.mp4")])``): the server encodes each stream once and muxes the
    packets into every destination. A plain element takes the defaults; wrap it in an Output to
    give it its own muxer, muxer options or live settings, or to make the session depend on it.

    Args:
        dst: one destination, anything a single ``dst`` can be: a URL, a local path, a writable
            file-like object, ``framecast.ServerFile`` or ``framecast.Discard``.
        format: this destination's muxer; default: guessed from its name or URL scheme.
        options: this destination's muxer options (``{"movflags": "+faststart"}``).
        required: whether this destination failing for good fails the session. By default it
            does not: the server reports an ``output_failed`` event (``on_event``,
            ``writer.events``) and the other destinations go on. Meaningless with a single
            destination, whose failure is the session's.
        on_destination_drop: for a network URL, what happens while the server reconnects it:
            ``"drop"`` or ``"block"`` (as the writer's argument, which is the default).
        outage_buffer: seconds of media kept for this destination while it reconnects (with
            ``"drop"``); default: the server's.
        reconnect_timeout: seconds this destination may stay down before it fails; default: the
            server's. Not the writer's ``reconnect_timeout``, which is about the connection
            between the writer and the server.
        bearer_token: for a WHIP endpoint (``whip+https://...``), the token it wants as
            ``Authorization: Bearer ...``; never shown back.

    Raises:
        InvalidConfig: a field of the wrong type or out of range, naming it.
    """

    dst: Any
    format: str | None = None
    options: Mapping[str, Any] | None = None
    required: bool = False
    on_destination_drop: str | None = None
    outage_buffer: float | None = None
    reconnect_timeout: float | None = None
    bearer_token: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.dst, (Output, list, tuple)):
            raise InvalidConfig(
                f"framecast.Output takes one destination as dst, got a {type(self.dst).__name__}", field="dst"
            )
        describe_destination(self.dst)  # refuses what is no destination, as a writer's dst
        if self.format is not None and (not isinstance(self.format, str) or not self.format.strip()):
            raise InvalidConfig(f"Output format must be a muxer name, got {self.format!r}", field="format")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise InvalidConfig(
                f"Output options must be a dict of muxer options, got {type(self.options).__name__}", field="options"
            )
        if not isinstance(self.required, bool):
            raise InvalidConfig(f"Output required must be True or False, got {self.required!r}", field="required")
        if self.on_destination_drop is not None and self.on_destination_drop not in DROP_POLICIES:
            raise InvalidConfig(
                f"Output on_destination_drop must be 'drop' or 'block', got {self.on_destination_drop!r}",
                field="on_destination_drop",
            )
        _check_seconds("outage_buffer", self.outage_buffer, zero=True)
        _check_seconds("reconnect_timeout", self.reconnect_timeout, zero=False)
        if self.bearer_token is not None:
            if not isinstance(self.bearer_token, str) or not self.bearer_token:
                raise InvalidConfig("Output bearer_token must be a non-empty string", field="bearer_token")
            if describe_destination(self.dst)["type"] != "url":
                raise InvalidConfig("Output bearer_token is for a WHIP endpoint URL", field="bearer_token")

    @property
    def destination(self) -> dict[str, Any]:
        """The session config's destination object for ``dst`` alone (today's ``destination``), with
        the WHIP endpoint's bearer token when one is given."""
        destination = describe_destination(self.dst)
        if self.bearer_token is not None:
            destination["bearer_token"] = self.bearer_token
        return destination

    @property
    def settings(self) -> dict[str, Any]:
        """The settings given, by their session config names (those left as None are left out;
        ``required`` only when True, as the server defaults it to False)."""
        given = {
            "format": self.format,
            "options": _options(dict(self.options)) if self.options is not None else None,
            "required": True if self.required else None,
            "on_destination_drop": self.on_destination_drop,
            "outage_buffer": None if self.outage_buffer is None else float(self.outage_buffer),
            "reconnect_timeout": None if self.reconnect_timeout is None else float(self.reconnect_timeout),
        }
        return {k: v for k, v in given.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        """This output as an element of the session config's ``destinations``."""
        return {**self.destination, **self.settings}


def _check_seconds(name: str, value: Any, *, zero: bool) -> None:
    """Refuse ``value`` unless it is None or a finite number of seconds (>= 0, or > 0)."""
    if value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise InvalidConfig(f"Output {name} must be a number of seconds {bound}, got {value!r}", field=name)


def destination_list(dst: Any) -> list[Output]:
    """What the user passed as ``dst`` as a list of Outputs, one per destination, checked.

    A list (or tuple) gives one Output per element, plain elements wrapped with the defaults;
    anything else is the one destination. A local path or file-like object, whose bytes come back
    over the writer's connection, may appear once.

    Raises:
        InvalidConfig: an empty list, an element that is no destination (naming its index), or a
            second local path or file-like object.
    """
    if not isinstance(dst, (list, tuple)):
        return [dst if isinstance(dst, Output) else Output(dst)]
    if not dst:
        raise InvalidConfig("dst is an empty list; give at least one destination", field="dst")
    outputs: list[Output] = []
    client: int | None = None
    for i, item in enumerate(dst):
        if isinstance(item, (list, tuple)):
            raise InvalidConfig(
                f"dst[{i}]: a {type(item).__name__} inside the list of destinations; each element is one destination",
                field=f"dst[{i}]",
            )
        try:
            output = item if isinstance(item, Output) else Output(item)
        except InvalidConfig as exc:
            raise InvalidConfig(f"dst[{i}]: {exc}", field=f"dst[{i}]") from None
        if output.destination["type"] == "client":
            if client is not None:
                raise InvalidConfig(
                    f"dst[{i}]: only one local path or file-like object per session (its bytes come back over "
                    f"this connection); dst[{client}] is one already: send the others to the server "
                    "(framecast.ServerFile) or write them in a session of their own",
                    field=f"dst[{i}]",
                )
            client = i
        outputs.append(output)
    return outputs


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


class Shaped(Protocol):
    """What a chunk's check looks at: a numpy array, or the shape and dtype of a GPU tensor."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...


#: How a video stream's frames may cross the wire (``yuv.py``): None, as ``format`` says.
WIRE_FORMATS = (None, "auto", "rgb24", "yuv420p")


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
    wire_format: str | None = None

    def __post_init__(self) -> None:
        if self.wire_format not in WIRE_FORMATS:
            raise InvalidConfig(
                f"unknown wire_format {self.wire_format!r}; expected one of auto, rgb24, yuv420p (or None)",
                field="wire_format",
            )
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
            **({"wire_format": self.wire_format} if self.wire_format is not None else {}),
        }

    def check(self, i: int, array: Shaped) -> None:
        expected = (self.channels, int(self.height), int(self.width))
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise InvalidChunk(
                f"stream {i} (video) expects shape (frames, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {tuple(array.shape)}"
            )
        _check_dtype(i, "video", array, np.dtype(np.uint8), self.format)


Stream = Union[AudioStream, VideoStream]


def _check_dtype(i: int, kind: str, array: Shaped, expected: np.dtype, fmt: str) -> None:
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


def split(array: np.ndarray, max_bytes: int, frame_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Split along the first axis into pieces of at most ``max_bytes``: yields (offset, piece).
    ``frame_bytes``: what a frame weighs on the wire, where that is not its size here (RGB frames
    sent as yuv420p).

    Raises:
        InvalidChunk: a single frame alone is larger than ``max_bytes``.
    """
    per_frame = frame_bytes if frame_bytes is not None else (array[:1].nbytes if array.shape[0] else 0)
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
        described: dict[str, Any] = {"type": "server_file", "path": dst.path, "crash_safe": dst.crash_safe}
        for option in (
            "segment_duration",
            "playlist_size",
            "playlist_type",
            "segment_format",
            "overwrite",
            "segment_time",
            "segment_name",
            "retention",
        ):
            if getattr(dst, option) is not None:
                described[option] = getattr(dst, option)
        if dst.renditions is not None:
            described["renditions"] = [dict(rung) for rung in dst.renditions]
        return described
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
