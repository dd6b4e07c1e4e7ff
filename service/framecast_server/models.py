"""Pydantic models of the REST API: what clients send and what the server answers.

The session config mirrors torchaudio's StreamWriter: a destination and muxer, metadata, open
options, and streams whose fields carry StreamWriter's names (``encoder_option``,
``encoder_format``, ``codec_config``, ``filter_desc``, ...). These models check shape and ranges;
whether FFmpeg can actually do it is ``plan.py``'s job.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framecast.protocol import AUDIO_SAMPLE_FORMATS, VIDEO_PIXEL_FORMATS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodecConfig(_Strict):
    """Codec settings, as torchaudio's ``CodecConfig``; -1 / null means the encoder's default."""

    bit_rate: int = Field(-1, ge=-1, description="Bits per second; -1 for the encoder default.")
    compression_level: int = Field(-1, ge=-1, description="Encoder-specific compression level.")
    qscale: int | None = Field(None, description="Fixed quality scale (VBR), encoder-specific.")
    gop_size: int = Field(-1, ge=-1, description="Frames between keyframes; -1 for the default.")
    max_b_frames: int = Field(-1, ge=-1, description="Largest run of B-frames; -1 for the default.")


_OPTION_VALUE = Union[str, int, float, bool]


class AudioStreamConfig(_Strict):
    """An audio stream: what the client writes and how it is encoded."""

    type: Literal["audio"] = "audio"
    sample_rate: int = Field(..., gt=0, le=768_000, description="Input sample rate in Hz.")
    num_channels: int = Field(..., gt=0, le=64, description="Input channel count.")
    format: str = Field("flt", description="Input sample format: " + ", ".join(AUDIO_SAMPLE_FORMATS))
    encoder: str | None = Field(None, description="Encoder name; default: the muxer's audio codec.")
    encoder_option: dict[str, _OPTION_VALUE] | None = Field(None, description="Options for the encoder.")
    encoder_format: str | None = Field(None, description="Sample format the encoder gets.")
    encoder_sample_rate: int | None = Field(None, gt=0, le=768_000)
    encoder_num_channels: int | None = Field(None, gt=0, le=64)
    codec_config: CodecConfig | None = None
    filter_desc: str | None = Field(None, description="A linear FFmpeg filter chain, e.g. 'volume=0.5'.")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in AUDIO_SAMPLE_FORMATS:
            raise ValueError(
                f"unknown input sample format {value!r}; expected one of {', '.join(AUDIO_SAMPLE_FORMATS)}"
            )
        return value


def parse_frame_rate(value: float | int | str) -> Fraction:
    """Turn a frame rate into an exact rational.

    Strings like ``"30000/1001"`` are taken as written. Floats within 0.005 of an NTSC rate
    (``N*1000/1001`` for N in 24, 30, 48, 60, 120) mean that rate, so 29.97 is 30000/1001 exactly;
    other floats are taken at their shortest decimal spelling (12.5 -> 25/2).
    """
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d+(\.\d+)?(\s*/\s*\d+)?\s*", value):
            raise ValueError(f"frame rate must be a number or a ratio like '30000/1001', got {value!r}")
        try:
            rate = Fraction(value.replace(" ", ""))
        except ZeroDivisionError:
            raise ValueError(f"frame rate {value!r} divides by zero") from None
    else:
        rate = next(
            (
                Fraction(n * 1000, 1001)
                for n in (24, 30, 48, 60, 120)
                if abs(float(value) - n * 1000 / 1001) < 0.005 and value != n
            ),
            Fraction(repr(float(value))),
        )
    if rate <= 0 or rate > 1000:
        raise ValueError(f"frame rate must be in (0, 1000], got {value!r}")
    if rate.denominator > 1_000_000:
        raise ValueError(f"frame rate {value!r} is not a usable rational")
    return rate


class VideoStreamConfig(_Strict):
    """A video stream: what the client writes and how it is encoded."""

    type: Literal["video"] = "video"
    frame_rate: float | str = Field(..., description="Frames per second; a float or 'num/den'.")
    width: int = Field(..., gt=0, le=16384)
    height: int = Field(..., gt=0, le=16384)
    format: str = Field("rgb24", description="Input pixel format: " + ", ".join(VIDEO_PIXEL_FORMATS))
    encoder: str | None = Field(None, description="Encoder name; default: the muxer's video codec.")
    encoder_option: dict[str, _OPTION_VALUE] | None = None
    encoder_format: str | None = Field(None, description="Pixel format the encoder gets.")
    encoder_frame_rate: float | str | None = None
    encoder_width: int | None = Field(None, gt=0, le=16384)
    encoder_height: int | None = Field(None, gt=0, le=16384)
    codec_config: CodecConfig | None = None
    filter_desc: str | None = Field(None, description="A linear FFmpeg filter chain, e.g. 'hflip'.")
    wire_format: Literal["auto", "rgb24", "yuv420p"] | None = Field(
        None,
        description="How frames cross the wire. Unset: as `format` says. yuv420p: converted by the client "
        "(half the bytes of RGB) for an RGB stream whose encoder takes yuv420p at the same even size and "
        "frame rate, without filter_desc. auto: yuv420p where that holds and this server converts with "
        "libyuv (the client's conversion is then the server's), else as `format` says. rgb24: as format, "
        "which must be rgb24. The answer's streams[i].config.wire_format says what was chosen.",
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in VIDEO_PIXEL_FORMATS:
            raise ValueError(f"unknown input pixel format {value!r}; expected one of {', '.join(VIDEO_PIXEL_FORMATS)}")
        return value

    @field_validator("frame_rate", "encoder_frame_rate")
    @classmethod
    def _rational(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_frame_rate(value)
        return value


StreamConfig = Annotated[AudioStreamConfig | VideoStreamConfig, Field(discriminator="type")]


class ClientDestination(_Strict):
    """The encoded bytes go back to the client, which writes them to its own file or object."""

    type: Literal["client"] = "client"
    filename: str | None = Field(
        None, max_length=4096, description="The client's file name, used only to guess the muxer."
    )
    seekable: bool = Field(True, description="Whether the client's destination can seek.")


class Rendition(_Strict):
    """One rung of an HLS or DASH ladder: the video scaled to ``height`` and encoded at ``bitrate``."""

    height: int = Field(..., ge=16, le=8192, description="Pixels; the width follows the video's aspect (even).")
    bitrate: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*(\.[0-9]+)?[kKM]?$",
        description="Video bit rate ('3M', '800k', '1500000'); default: the encoder's own rate control.",
    )


class ServerFileDestination(_Strict):
    """A file under the server's output directory."""

    type: Literal["server_file"] = "server_file"
    path: str = Field(..., min_length=1, max_length=4096, description="Path relative to the output dir.")
    crash_safe: bool = Field(
        True,
        description="Write MP4/MOV as fragmented MP4 (playable up to its last second or two if the server "
        "dies); false writes plain MP4, which is unplayable until closed. Explicit movflags win.",
    )
    # -- HLS (.m3u8) and DASH (.mpd): a playlist and its segments, written next to it -------------
    segment_duration: float | None = Field(
        None,
        gt=0,
        le=60,
        description="HLS/DASH: seconds a segment lasts, and the keyframe interval; default 2.",
    )
    playlist_size: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="HLS/DASH: segments a live playlist lists; older ones are deleted. Default 6.",
    )
    playlist_type: Literal["live", "event"] | None = Field(
        None,
        description="HLS/DASH: 'live' (default) slides over the last playlist_size segments; 'event' keeps "
        "and lists every segment, so the whole stream can be replayed.",
    )
    segment_format: Literal["fmp4", "mpegts"] | None = Field(
        None, description="HLS: segments as fragmented MP4 (default) or MPEG-TS."
    )
    renditions: list[Rendition] | None = Field(
        None,
        min_length=1,
        max_length=6,
        description="HLS/DASH: an adaptive ladder, one variant per rung (the video encoded once per rung, the "
        "audio once), listed in a master playlist (or the MPD) at this path.",
    )
    overwrite: bool | None = Field(
        None,
        description="Replace files of this name that exist (from an earlier run, or a finished session of "
        "the same API key; never another's). Default: no, and a path that exists is refused (422).",
    )
    # -- recordings that rotate: NAME-00000.EXT, NAME-00001.EXT, ... ---------------------------------
    segment_time: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Rotate: start a new file every segment_time seconds (on a keyframe), each playable alone.",
    )
    segment_name: str | None = Field(
        None,
        max_length=100,
        description="Rotating: the files' names as a strftime pattern without the extension "
        "('cam-%Y%m%d-%H%M%S'); default NAME-00000, NAME-00001, ...",
    )
    retention: Annotated[int, Field(ge=1)] | str | None = Field(
        None,
        description="Rotating: keep the newest N files (a number), or those younger than an age ('90s', "
        "'30m', '12h', '7d'); older ones are deleted. Default: keep all.",
    )


class UrlDestination(_Strict):
    """A network output (rtmp://, rtsp://, udp://, whip+https://, ...)."""

    type: Literal["url"] = "url"
    url: str = Field(..., min_length=1, max_length=4096)
    bearer_token: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        # RFC 6750's b64token: FFmpeg writes it into an HTTP header, so no CR, LF or space may pass.
        pattern=r"^[A-Za-z0-9\-._~+/]+=*$",
        description="For WHIP: the endpoint's bearer token, sent as 'Authorization: Bearer ...'; never shown.",
    )


class DiscardDestination(_Strict):
    """Nowhere: for measuring and dry runs. With ``encode`` the frames are encoded and muxed into
    FFmpeg's null muxer; without, the encoder process only takes and acknowledges chunks."""

    type: Literal["discard"] = "discard"
    encode: bool = Field(False, description="Encode (into the null muxer) instead of only taking chunks.")


Destination = Annotated[
    ClientDestination | ServerFileDestination | UrlDestination | DiscardDestination, Field(discriminator="type")
]


class _OutputFields(_Strict):
    """What one element of ``destinations`` may set for itself; unset, the session's settings apply."""

    format: str | None = Field(None, description="Muxer name; default: guessed from the destination.")
    options: dict[str, _OPTION_VALUE] = Field(default_factory=dict, description="Muxer options.")
    required: bool = Field(
        False, description="Whether this output failing for good fails the session (else the others carry on)."
    )
    on_destination_drop: Literal["drop", "block"] | None = Field(
        None, description="This output's own on_destination_drop ('block' holds the whole session)."
    )
    outage_buffer: float | None = Field(None, ge=0, le=120, description="This output's own outage_buffer.")
    reconnect_timeout: float | None = Field(None, gt=0, le=3600, description="This output's own reconnect_timeout.")


class ClientOutput(ClientDestination, _OutputFields):
    """A client-side destination as one of several (at most one per session)."""


class ServerFileOutput(ServerFileDestination, _OutputFields):
    """A server file as one of several destinations."""


class UrlOutput(UrlDestination, _OutputFields):
    """A network output as one of several destinations."""


class DiscardOutput(DiscardDestination, _OutputFields):
    """Nowhere, as one of several destinations."""


OutputConfig = Annotated[ClientOutput | ServerFileOutput | UrlOutput | DiscardOutput, Field(discriminator="type")]


class SessionConfig(_Strict):
    """Everything needed to open an output: StreamWriter's constructor, streams, metadata, open()."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "destination": {"type": "server_file", "path": "demo/out.mp4"},
                    "streams": [
                        {"type": "video", "frame_rate": 30, "width": 1280, "height": 720},
                        {"type": "audio", "sample_rate": 48000, "num_channels": 2},
                    ],
                },
                {
                    "destination": {"type": "discard"},
                    "streams": [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}],
                },
            ]
        },
    )

    destination: Destination | None = Field(None, description="Where the output goes (or give destinations).")
    destinations: list[OutputConfig] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Several destinations for one encode, each with its own format, options and live settings "
        "(instead of destination; at most FRAMECAST_MAX_OUTPUTS).",
    )
    format: str | None = Field(None, description="Muxer name; default: guessed from the destination.")
    metadata: dict[str, str] = Field(default_factory=dict)
    options: dict[str, _OPTION_VALUE] = Field(
        default_factory=dict, description="Muxer options, as StreamWriter.open(option=...)."
    )
    streams: list[StreamConfig] = Field(..., min_length=1, max_length=16)
    realtime: bool | None = Field(
        None,
        description="Send packets at media time, as ffmpeg -re does. Default: on for network URLs, "
        "off for files and client-side outputs.",
    )
    connect_timeout: float | None = Field(
        None,
        gt=0,
        le=600,
        description="Seconds a network output may take to connect, or take nothing while it streams, before it "
        "counts as unreachable; default: the server's.",
    )
    on_destination_drop: Literal["drop", "block"] = Field(
        "drop",
        description="While a network destination reconnects: 'drop' keeps up to outage_buffer seconds of "
        "media and drops the oldest beyond (live semantics); 'block' stops taking chunks (backpressure).",
    )
    outage_buffer: float = Field(5.0, ge=0, le=120, description="Seconds of media kept during an outage.")
    shared_memory: bool = Field(
        False,
        description="Ask for shared memory to put chunk payloads in (only clients on the server's host can "
        "use it; the SDK asks when the server is on loopback). The answer says whether it was granted.",
    )
    reconnect_timeout: float | None = Field(
        None, gt=0, le=3600, description="Seconds a dropped destination may stay down before the session fails."
    )
    compression: Literal["none", "zstd"] = Field(
        "none",
        description="'zstd': video chunk payloads may come as zstd frames (CHUNK flag bit 2), which the encoder "
        "decompresses: lossless, for a client whose link is slower than its CPU. 'none': never.",
    )


class StreamCounters(BaseModel):
    """What one stream has seen so far."""

    chunks: int = 0
    frames: int = 0
    packets: int = 0
    bytes: int = 0
    errors: int = 0
    dropped: int = 0


class StreamInfo(BaseModel):
    """A stream as resolved by the server: the defaults it filled in, and its counters."""

    index: int
    type: Literal["audio", "video"]
    encoder: str
    encoder_format: str
    config: dict[str, object]
    counters: StreamCounters


class OutputCounters(BaseModel):
    """What one output has seen so far."""

    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    reconnects: int = 0


class SegmentInfo(BaseModel):
    """One finished file of a recording that rotates."""

    name: str
    start: float = Field(description="Media seconds from the session's start to this file's first frame.")
    duration: float = Field(description="Media seconds in this file.")
    url: str = Field(description="Where to download it: /v1/sessions/{id}/files/NAME.")


class OutputInfo(BaseModel):
    """One destination of a session, as the server keeps it: its state, counters and events."""

    index: int
    destination: dict[str, object] = Field(description="Where it goes, credentials masked.")
    format: str
    required: bool
    encoders: list[str] = Field(
        default_factory=list,
        description="The encoder of each stream as this output gets it: the session's (streams), or its own where "
        "its muxer cannot carry those (e.g. Opus for WHIP).",
    )
    state: Literal["connecting", "streaming", "reconnecting", "closed", "failed"]
    error: str | None = None
    counters: OutputCounters
    events: list[dict[str, Any]] = Field(default_factory=list, description="This output's recent events.")
    segments: list[SegmentInfo] | None = Field(
        None, description="A recording that rotates: its finished files that still exist, oldest first."
    )


class SessionInfo(BaseModel):
    """The state of a session, as GET /v1/sessions/{id} reports it."""

    id: str
    replica: str | None = Field(
        None, description="The replica that owns the session (FRAMECAST_REPLICA_ID; None on a single server)."
    )
    state: str
    format: str
    destination: dict[str, object]
    created_at: float
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    streams: list[StreamInfo]
    output_bytes: int = 0
    encoder_pid: int | None = Field(None, description="PID of the session's encoder process.")
    realtime: bool = Field(False, description="Whether packets are paced at media time.")
    reconnects: int = Field(0, description="Attempts made to reconnect a dropped network destination.")
    events: list[dict[str, Any]] = Field(
        default_factory=list, description="Recent session events (connected, reconnecting, recovered, ...)."
    )
    preview_streams: list[int] = Field(
        default_factory=list, description="Video streams with a preview at /v1/sessions/{id}/preview?stream=N."
    )
    audio_levels: dict[str, list[float]] = Field(
        default_factory=dict, description="Latest RMS level of each audio stream, dBFS per channel."
    )
    destination_connected: bool | None = Field(
        None, description="For network outputs: whether the destination is connected (None for files)."
    )
    pacing: dict[str, float] | None = Field(
        None, description="Real-time pacing: the largest lateness of a frame, and media seconds sent."
    )
    owner: str | None = Field(
        None, description="Fingerprint of the API key that created the session (None on a server without keys)."
    )
    playback_url: str | None = Field(
        None,
        description="Where a player fetches the session's first HLS or DASH playlist "
        "(/v1/sessions/{id}/files/NAME, absolute under FRAMECAST_PUBLIC_URL when set); None without one.",
    )
    outputs: list[OutputInfo] = Field(
        default_factory=list,
        description="Every destination, in the order given; format and destination above describe the first.",
    )


class SessionCreated(SessionInfo):
    """The answer to POST /v1/sessions: the session plus how to stream into it."""

    stream_url: str
    token: str
    max_message_bytes: int
    shared_memory: dict[str, Any] | None = Field(
        None,
        description="If granted: the segment to open (name under /dev/shm) and its size in bytes; chunks "
        "may then carry an offset into it instead of their payload (PROTOCOL.md).",
    )


class Capabilities(BaseModel):
    """What this server's FFmpeg can do."""

    versions: dict[str, str]
    ffmpeg: str
    muxers: dict[str, str]
    audio_encoders: dict[str, str]
    video_encoders: dict[str, str]
    protocols: list[str]
    destinations: list[str] = Field(description="Destination types this server takes, as its allowed schemes permit.")
    rgb_conversion: str = Field(
        description="What converts RGB frames for yuv420p encoders here: 'libyuv' or "
        "'swscale' (FRAMECAST_RGB_CONVERSION)."
    )
    compression: list[str] = Field(
        default_factory=list, description="Payload compressions a session config may ask for ('zstd')."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """Every error the API answers with."""

    error: ErrorDetail


class DrainRequest(_Strict):
    """POST /v1/admin/drain."""

    timeout: float | None = Field(
        None, gt=0, le=7 * 86400, description="Seconds the live sessions may go on; default FRAMECAST_DRAIN_TIMEOUT."
    )


class DrainStatus(BaseModel):
    """A replica's drain: whether it is draining, its live sessions, the time left before the rest
    is finalized."""

    replica: str | None
    draining: bool
    sessions: int
    seconds_left: float | None = None
