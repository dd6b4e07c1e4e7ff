"""Turn a SessionConfig into an SessionPlan: every default filled in, every static check done.

This is where StreamWriter's defaults live (encoder = the muxer's default for the media type,
encoder format = the input format when the encoder takes it, else the encoder's first format, and
so on) and where configs that cannot work are refused with the field to blame. The plan is a set
of plain dataclasses, picklable, handed to the encoder process, which opens the real encoder and
muxer; whatever FFmpeg itself still refuses there is reported as a 422 too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Literal, Union

import av

from framecast import yuv
from framecast.protocol import AUDIO_SAMPLE_FORMATS, VIDEO_PIXEL_FORMATS, DType
from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.libyuv import Conversion
from framecast_server.models import (
    AudioStreamConfig,
    ClientDestination,
    CodecConfig,
    Destination,
    DiscardDestination,
    OutputConfig,
    ServerFileDestination,
    SessionConfig,
    UrlDestination,
    VideoStreamConfig,
    parse_frame_rate,
)
from framecast_server.planning import avoptions, destinations, ffmpeg, filtergraph, policy, segmenting, urls, wire
from framecast_server.planning.segmenting import SegmentPlan
from framecast_server.quotas import EncoderLimits, encoder_limits
from framecast_server.scheduling import Policy


@dataclass
class AudioPlan:
    index: int
    sample_rate: int
    num_channels: int
    format: str  # input sample format (packed), e.g. "flt"
    encoder: str
    encoder_format: str
    encoder_sample_rate: int
    encoder_num_channels: int
    encoder_option: dict[str, str]
    codec_config: dict[str, int | None]
    filter_desc: str | None
    type: Literal["audio"] = "audio"

    @property
    def dtype(self) -> DType:
        return AUDIO_SAMPLE_FORMATS[self.format]

    @property
    def rate(self) -> Fraction:
        """Ticks per second of this stream's timeline (one tick per sample)."""
        return Fraction(self.sample_rate)

    def chunk_shape_hint(self) -> str:
        return f"(frames, {self.num_channels}) of {self.dtype.label}"


@dataclass
class VideoPlan:
    index: int
    frame_rate: Fraction
    width: int
    height: int
    format: str  # input pixel format, e.g. "rgb24"
    encoder: str
    encoder_format: str
    encoder_frame_rate: Fraction
    encoder_width: int
    encoder_height: int
    encoder_option: dict[str, str]
    codec_config: dict[str, int | None]
    filter_desc: str | None
    type: Literal["video"] = "video"
    #: How frames cross the wire: the input ``format`` itself, or "yuv420p" (converted by the client,
    #: ``wire.py``); chunks are then (frames, W*H*3/2) uint8.
    wire_format: str = ""

    def __post_init__(self) -> None:
        self.wire_format = self.wire_format or self.format

    @property
    def dtype(self) -> DType:
        return DType.UINT8

    @property
    def channels(self) -> int:
        return VIDEO_PIXEL_FORMATS[self.format]

    @property
    def rate(self) -> Fraction:
        """Ticks per second of this stream's timeline (one tick per frame)."""
        return self.frame_rate

    @property
    def wire_frame_bytes(self) -> int:
        """Bytes of one frame as it crosses the wire (``wire_format``)."""
        if self.wire_format == "yuv420p":
            return yuv.frame_bytes(self.width, self.height)
        return self.width * self.height * self.channels

    def chunk_shape_hint(self) -> str:
        if self.wire_format == "yuv420p":
            return f"(frames, {yuv.frame_bytes(self.width, self.height)}) of uint8 (yuv420p planes)"
        return f"(frames, {self.channels}, {self.height}, {self.width}) of uint8"


StreamPlan = Union[AudioPlan, VideoPlan]

#: The encoder processes' working directory, inside the output directory.
ENCODER_WORKDIR = ".encoders"


@dataclass
class OutputPlan:
    """One destination of a session: where, which muxer, with which options, how kept alive."""

    muxer: str
    target: str  # "client", "file", "url" or "discard"
    index: int = 0  # its place in the session's destinations
    where: str = "destination"  # the config's path to it, for errors: "destination" or "destinations.N"
    path: str | None = None  # absolute path for "file"
    relative_path: str | None = None  # the same, as the client named it (what listings show)
    url: str | None = None  # for "url", as the config names it (with the live defaults added)
    seekable: bool = True  # for "client"
    encode: bool = True  # False: a discard destination that only takes chunks
    required: bool = True  # its failing for good fails the session (a single destination always does)
    on_drop: str = "drop"  # network outputs: "drop" or "block" while reconnecting
    outage_buffer: float = 5.0  # seconds of media kept while reconnecting under "drop"
    reconnect_timeout: float = 60.0  # seconds a dropped destination may stay down
    #: Seconds a network destination may take to connect, or take nothing while streaming,
    #: before it counts as unreachable (``encoder/relay.py``).
    connect_timeout: float = 10.0
    options: dict[str, str] = field(default_factory=dict)
    #: An HLS or DASH output's playlist and segments (``segmenting.py``); None for the rest.
    segments: SegmentPlan | None = None
    #: Files of this name from before (an earlier run, a finished session of the same API key) may
    #: be replaced: only when the config says so, for a single file as for a playlist and its segments.
    overwrite: bool = False
    #: Its own encoders, one per stream, where it cannot take the session's (``SessionPlan.streams``)
    #: for some stream: a muxer that cannot carry that codec, or WHIP's H.264 baseline and Opus.
    #: None: it takes every stream from the session's encoders.
    streams: list[StreamPlan] | None = None

    @property
    def live(self) -> bool:
        """A network output: connects after the session is created, fails by itself."""
        return self.target == "url"

    def collides(self, other: OutputPlan) -> bool:
        """Whether this server-side output and ``other`` would write the same file."""
        if self.path is None or other.path is None:
            return False
        return self.path == other.path or self._claims(other) or other._claims(self)

    def _claims(self, other: OutputPlan) -> bool:
        """Whether this HLS or DASH output may write ``other``'s file, or one of the same stem."""
        segments = self.segments
        if segments is None or other.path is None:
            return False
        directory, name = os.path.split(other.path)
        if directory != segments.directory:
            return False
        return segments.writes(name) or (other.segments is not None and other.segments.stem == segments.stem)

    @property
    def given_url(self) -> str | None:
        """The URL FFmpeg is given: the config's, but a WHIP endpoint's own http(s) URL."""
        return self.url.removeprefix("whip+") if self.url is not None else None

    def encoders(self, session: list[StreamPlan]) -> list[StreamPlan]:
        """The encoder each stream of this output comes from (``session``: the session's own)."""
        return session if self.streams is None else self.streams

    def describe_destination(self) -> dict[str, object]:
        if self.target == "file":
            return {"type": "server_file", "path": self.relative_path or self.path}
        if self.target == "url":
            return {"type": "url", "url": destinations.masked(self.url or "")}
        if self.target == "discard":
            return {"type": "discard", "encode": self.encode}
        return {"type": "client", "seekable": self.seekable}


@dataclass
class SessionPlan:
    """A fully resolved session: its streams and their encoders (one encode), its outputs (every
    destination the encoded packets go to), how it is paced and what it may cost."""

    outputs: list[OutputPlan] = field(default_factory=list)
    realtime: bool = False  # pace packets at media time, as ffmpeg -re
    scheduling: Policy = "batch"  # how the kernel schedules the encoder process (scheduling.py)
    rgb_conversion: Conversion = "swscale"  # what converts RGB frames to yuv420p (libyuv.py)
    limits: EncoderLimits = field(default_factory=EncoderLimits)  # quotas the encoder enforces (quotas.py)
    compressed: bool = False  # video payloads may come as zstd frames (framecast.compression)
    metadata: dict[str, str] = field(default_factory=dict)
    streams: list[StreamPlan] = field(default_factory=list)
    workdir: str | None = None  # the encoder process's working directory: inside the output dir (encoder/main.py)

    @property
    def first(self) -> OutputPlan:
        """The first destination: what the session's ``format`` and ``destination`` describe."""
        return self.outputs[0]

    @property
    def encode(self) -> bool:
        """Whether frames are encoded at all (not for a lone discard destination that only takes chunks)."""
        return any(output.encode for output in self.outputs)

    @property
    def live(self) -> bool:
        """Whether any output is a network output."""
        return any(output.live for output in self.outputs)

    @property
    def segmented(self) -> bool:
        """Whether any output is an HLS or DASH stream (watched live: paced, like a network output)."""
        return any(output.segments is not None and not output.segments.rotating for output in self.outputs)

    @property
    def steady_keyframes(self) -> bool:
        """Whether any output is cut into files at keyframes (HLS, DASH, a rotating recording): the
        keyframes then fall on the interval only, not on scene cuts too."""
        return any(output.segments is not None for output in self.outputs)

    @property
    def keyframe_seconds(self) -> float | None:
        """The keyframe interval the outputs want: each HLS/DASH output's segment length, one that
        falls on every boundary of a rotating recording, and a network output's few seconds; the
        shortest of them (None: the encoders' own)."""
        wanted = [
            segmenting.rotation_keyframe_seconds(o.segments.segment_seconds)
            if o.segments.rotating
            else o.segments.segment_seconds
            for o in self.outputs
            if o.segments is not None
        ]
        if self.live:
            wanted.append(destinations.LIVE_KEYFRAME_SECONDS)
        return min(wanted, default=None)

    @property
    def client(self) -> OutputPlan | None:
        """The output whose bytes go back to the client, if there is one (at most one)."""
        return next((output for output in self.outputs if output.target == "client"), None)

    @property
    def files(self) -> list[OutputPlan]:
        """The outputs that are files on the server."""
        return [output for output in self.outputs if output.target == "file"]

    @property
    def encoders(self) -> list[StreamPlan]:
        """Every distinct encoder of the session: its own streams first, then those of outputs that
        cannot share them (one each, however many outputs need the same)."""
        found: list[StreamPlan] = list(self.streams)
        for output in self.outputs:
            for stream in output.encoders(self.streams):
                if not any(stream is known or stream == known for known in found):
                    found.append(stream)
        return found


def _options(values: Mapping[str, object] | None) -> dict[str, str]:
    out = {}
    for key, value in (values or {}).items():
        if isinstance(value, bool):
            value = int(value)
        out[str(key)] = str(value)
    return out


def _resolve_muxer(wanted: _Wanted, hint: str | None, implied: str | None = None) -> str:
    if wanted.format is not None:
        if wanted.format not in ffmpeg.muxers():
            raise InvalidConfig(
                f"unknown muxer {wanted.format!r}; GET /v1/capabilities lists them", wanted.format_field
            )
        return wanted.format
    if implied:
        return implied
    if hint:
        guessed = ffmpeg.guess_muxer(hint)
        if guessed:
            return guessed
        raise InvalidConfig(
            f"cannot guess a muxer from {os.path.basename(hint)!r}; pass format= (e.g. 'mp4')", wanted.format_field
        )
    raise InvalidConfig("required when the destination has no file name (e.g. a file-like object)", wanted.format_field)


def _pick_encoder(name: str | None, media: str, default: str | None, muxer: str, where: str) -> av.Codec:
    if name is None:
        if default is None:
            raise InvalidConfig(f"muxer {muxer!r} has no default {media} encoder; set encoder=", where + ".encoder")
        name = default
    try:
        codec = av.Codec(name, "w")
    except Exception:
        raise InvalidConfig(
            f"unknown {media} encoder {name!r}; GET /v1/capabilities lists this server's encoders",
            where + ".encoder",
        ) from None
    if codec.type != media:
        raise InvalidConfig(f"{name!r} is a {codec.type} encoder, not a {media} encoder", where + ".encoder")
    return codec


def _pick_format(requested: str | None, input_format: str, supported: list[str], encoder: str, where: str) -> str:
    if requested is not None:
        if supported and requested not in supported:
            raise InvalidConfig(
                f"encoder {encoder!r} does not take {requested!r}; it takes {', '.join(supported)}",
                where + ".encoder_format",
            )
        return requested
    if not supported or input_format in supported:
        return input_format
    return supported[0]


def _check_even(fmt: str, width: int, height: int, where: str) -> None:
    name = fmt.lower()
    if ("420" in name or name.startswith(("nv12", "nv21"))) and (width % 2 or height % 2):
        raise InvalidConfig(f"{fmt} needs an even width and height, got {width}x{height}", where)
    if ("422" in name or name.startswith(("nv16", "yuyv", "uyvy"))) and width % 2:
        raise InvalidConfig(f"{fmt} needs an even width, got {width}", where)
    if "411" in name and width % 4:
        raise InvalidConfig(f"{fmt} needs a width divisible by 4, got {width}", where)


def _codec_config(cfg: CodecConfig | None) -> dict[str, int | None]:
    return cfg.model_dump() if cfg is not None else {}


def _plan_audio(i: int, cfg: AudioStreamConfig, muxer: str, default: str | None) -> AudioPlan:
    where = f"streams.{i}"
    codec = _pick_encoder(cfg.encoder, "audio", default, muxer, where)
    supported = [f.name for f in (codec.audio_formats or [])]
    # The encoder sees planar or packed data as it prefers: match the input's sample type first.
    input_fmt = cfg.format
    encoder_format = _pick_format(cfg.encoder_format, input_fmt, supported, codec.name, where)
    if cfg.encoder_format is None and input_fmt not in supported and supported:
        planar = input_fmt + "p"
        if planar in supported:
            encoder_format = planar
    rate = cfg.encoder_sample_rate or cfg.sample_rate
    rates = list(codec.audio_rates or [])
    if rates and rate not in rates:
        if cfg.encoder_sample_rate is not None:
            raise InvalidConfig(
                f"encoder {codec.name!r} does not take {rate} Hz; it takes {', '.join(map(str, sorted(rates)))}",
                where + ".encoder_sample_rate",
            )
        higher = sorted(r for r in rates if r >= rate)
        rate = higher[0] if higher else max(rates)
    return AudioPlan(
        index=i,
        sample_rate=cfg.sample_rate,
        num_channels=cfg.num_channels,
        format=cfg.format,
        encoder=codec.name,
        encoder_format=encoder_format,
        encoder_sample_rate=rate,
        encoder_num_channels=cfg.encoder_num_channels or cfg.num_channels,
        encoder_option=_options(cfg.encoder_option),
        codec_config=_codec_config(cfg.codec_config),
        filter_desc=_check_filter(cfg.filter_desc, where),
    )


def _plan_video(i: int, cfg: VideoStreamConfig, muxer: str, default: str | None) -> VideoPlan:
    where = f"streams.{i}"
    codec = _pick_encoder(cfg.encoder, "video", default, muxer, where)
    supported = [f.name for f in (codec.video_formats or [])]
    encoder_format = _pick_format(cfg.encoder_format, cfg.format, supported, codec.name, where)
    width = cfg.encoder_width or cfg.width
    height = cfg.encoder_height or cfg.height
    _check_even(encoder_format, width, height, where + (".encoder_height" if height % 2 else ".encoder_width"))
    frame_rate = parse_frame_rate(cfg.frame_rate)
    encoder_rate = parse_frame_rate(cfg.encoder_frame_rate) if cfg.encoder_frame_rate is not None else frame_rate
    return VideoPlan(
        index=i,
        frame_rate=frame_rate,
        width=cfg.width,
        height=cfg.height,
        format=cfg.format,
        encoder=codec.name,
        encoder_format=encoder_format,
        encoder_frame_rate=encoder_rate,
        encoder_width=width,
        encoder_height=height,
        encoder_option=_options(cfg.encoder_option),
        codec_config=_codec_config(cfg.codec_config),
        filter_desc=_check_filter(cfg.filter_desc, where),
    )


def split_filter_chain(desc: str) -> list[tuple[str, str | None]]:
    """Parse a linear chain as FFmpeg does (``filtergraph.py``) into ``(filter, arguments)`` pairs,
    the arguments with every option named and escaped: ``"hflip,scale=64:48"`` is
    ``[("hflip", None), ("scale", "w=64:h=48")]``.

    The encoder process builds its graph from these, so FFmpeg sets exactly the options
    ``allowlist.check_filters`` checked, however the client spelled them. No allowlist here.

    Raises:
        ValueError: not a linear chain FFmpeg would parse, or an unknown filter.
    """
    steps = []
    for raw in filtergraph.split_graph(desc):
        if raw.name not in av.filter.filters_available:
            raise filtergraph.FilterSyntaxError(f"unknown filter {raw.name!r}")
        shorthand = [o.name for o in avoptions.filter_shorthand(raw.name)]
        steps.append((raw.name, filtergraph.split_options(raw.args, shorthand, raw.name).args()))
    return steps


def _check_filter(desc: str | None, where: str) -> str | None:
    if desc is None or not desc.strip():
        return None
    try:
        split_filter_chain(desc)
    except ValueError as exc:
        raise InvalidConfig(str(exc), where + ".filter_desc") from None
    return desc


@dataclass
class _Wanted:
    """One destination as the config asks for it, whichever way it was given (``destination`` with
    the session's ``format`` and ``options``, or an element of ``destinations`` with its own)."""

    index: int
    where: str  # "destination" or "destinations.N"
    dest: Destination | OutputConfig
    format: str | None
    format_field: str
    options: Mapping[str, object]
    options_field: str
    required: bool
    on_drop: str
    outage_buffer: float
    reconnect_timeout: float | None
    connect_timeout: float | None


def make_plan(config: SessionConfig, settings: Settings) -> SessionPlan:
    """Resolve ``config`` into a SessionPlan or raise InvalidConfig naming the field.

    Every policy check (``policy.py``) runs here, before anything reaches FFmpeg. The steps run in
    this order, so a config wrong in several places is refused for the same field every time:
    each destination and its muxer, streams, the streams' policies, the codecs each muxer takes,
    metadata, muxer options.
    """
    plan = SessionPlan()
    wanted = _wanted_outputs(config, settings)
    muxers: list[str] = []  # as resolved, before a client destination's swap for its pipe twin
    filenames: list[str | None] = []
    for each in wanted:
        output, muxer, filename = _plan_destination(each, settings)
        scheme = urls.scheme_of(output.url) if output.url else None
        policy.check_muxer(muxer, output.path, each.format_field, each.where + ".path", scheme)
        plan.outputs.append(output)
        muxers.append(muxer)
        filenames.append(filename)
    _check_outputs(plan.outputs)
    _apply_session_options(plan, config, settings)
    # One encode for every output that can take it: the first destination's muxer chooses the
    # encoders; an output that cannot carry them gets its own (``_own_streams``).
    default_video, default_audio = _default_encoders(plan.first, muxers[0], filenames[0])
    plan.streams = _plan_streams(
        config,
        muxers[0],
        default_video,
        default_audio,
        live=plan.live,
        whip=muxers[0] == "whip",
        keyframe_seconds=plan.keyframe_seconds,
        steady_keyframes=plan.steady_keyframes,
    )
    _check_stream_policies(plan.streams, settings)
    wire.resolve(plan.streams, config, plan.rgb_conversion)
    _ladder(plan, plan.first, wanted[0], settings)
    for each, output, muxer, filename in list(zip(wanted, plan.outputs, muxers, filenames))[1:]:
        output.streams = _own_streams(config, plan, output, muxer, filename)
        if output.streams is not None:
            _check_stream_policies([s for s in output.streams if s not in plan.streams], settings)
        _ladder(plan, output, each, settings)
    policy.check_metadata(config.metadata)
    plan.metadata = dict(config.metadata)
    for each, output, muxer in zip(wanted, plan.outputs, muxers):
        output.options = _plan_muxer_options(output, muxer, each, settings)
    return plan


def _ladder(plan: SessionPlan, output: OutputPlan, wanted: _Wanted, settings: Settings) -> None:
    """An HLS or DASH output's adaptive ladder (``renditions``): its video encoded once per rung,
    scaled to the rung's height at the video's aspect, its audio once. The first output's top rung
    is the session's own video encoder (no encode is spent on a size nobody gets).

    Raises:
        InvalidConfig: renditions on another kind of output, a ladder of no or several video
            streams or several audio streams, two rungs alike, a rung beyond the server's limits.
    """
    dest = wanted.dest
    renditions = getattr(dest, "renditions", None)
    if not renditions:
        return
    field = wanted.where + ".renditions"
    if output.segments is None or output.segments.rotating:
        raise InvalidConfig("renditions are for HLS (.m3u8) and DASH (.mpd) outputs", field)
    streams = output.encoders(plan.streams)
    video = [s for s in streams if isinstance(s, VideoPlan)]
    audio = [s for s in streams if isinstance(s, AudioPlan)]
    if len(video) != 1 or len(audio) > 1:
        raise InvalidConfig(
            f"a ladder is one video stream (and at most one audio stream), got {len(video)} and {len(audio)}", field
        )
    base = video[0]
    rungs: list[VideoPlan] = []
    names: list[str] = []
    for k, rung in enumerate(renditions):
        height = rung.height - rung.height % 2
        width = max(2, round(height * base.width / base.height / 2) * 2)
        options = dict(base.encoder_option)
        if rung.bitrate is not None:
            options["b"] = rung.bitrate
        plan_k = dataclasses.replace(base, encoder_width=width, encoder_height=height, encoder_option=options)
        if any(plan_k == other for other in rungs):
            raise InvalidConfig(f"renditions.{k} is the same as an earlier rung", field)
        _check_stream_policies([plan_k], settings)
        rungs.append(plan_k)
        names.append(f"{height}p" if f"{height}p" not in names else f"{height}p{k}")
    if output is plan.first:  # the session's own video encoder is the top rung
        plan.streams[base.index] = rungs[0]
    output.streams = [*rungs, *audio]
    if output.muxer == "hls":
        variants = (*names, *(["audio"] if audio else []))
        output.segments = dataclasses.replace(output.segments, variants=variants, has_audio=bool(audio))


def _wanted_outputs(config: SessionConfig, settings: Settings) -> list[_Wanted]:
    """The destinations the config asks for, each with its own format, options and live settings
    (the session's where it sets none).

    Raises:
        InvalidConfig: neither or both of ``destination`` and ``destinations``; more destinations
            than FRAMECAST_MAX_OUTPUTS; the session's ``format`` or ``options`` with a list.
    """
    if (config.destination is None) == (config.destinations is None):
        if config.destination is None:
            raise InvalidConfig("a session needs a destination (or a list of them: destinations)", "destination")
        raise InvalidConfig("give destination or destinations, not both", "destinations")
    if config.destination is not None:
        return [
            _Wanted(
                0,
                "destination",
                config.destination,
                config.format,
                "format",
                config.options,
                "options",
                True,
                config.on_destination_drop,
                config.outage_buffer,
                config.reconnect_timeout,
                config.connect_timeout,
            )
        ]
    elements = config.destinations or []
    if len(elements) > settings.max_outputs:
        raise InvalidConfig(
            f"at most {settings.max_outputs} destinations per session (FRAMECAST_MAX_OUTPUTS), got {len(elements)}",
            "destinations",
        )
    for name in ("format", "options"):
        if getattr(config, name):
            raise InvalidConfig(
                f"{name} applies to a single destination; with destinations, give each element its own {name}",
                name,
            )
    return [
        _Wanted(
            i,
            f"destinations.{i}",
            element,
            element.format,
            f"destinations.{i}.format",
            element.options,
            f"destinations.{i}.options",
            element.required,
            element.on_destination_drop or config.on_destination_drop,
            config.outage_buffer if element.outage_buffer is None else element.outage_buffer,
            element.reconnect_timeout or config.reconnect_timeout,
            config.connect_timeout,
        )
        for i, element in enumerate(elements)
    ]


def _check_outputs(outputs: list[OutputPlan]) -> None:
    """Destinations that cannot go together: two client-side ones (there is one connection to
    send the bytes back on), or two writing the same server file."""
    clients = [output for output in outputs if output.target == "client"]
    if len(clients) > 1:
        raise InvalidConfig(
            f"only one client destination (a local path or file-like object) per session; "
            f"{clients[0].where} is one already",
            clients[1].where,
        )
    for i, output in enumerate(outputs):
        for earlier in outputs[:i]:
            if output.collides(earlier):
                raise InvalidConfig(f"{earlier.where} writes that file already", output.where + ".path")


def _own_streams(
    config: SessionConfig, plan: SessionPlan, output: OutputPlan, muxer: str, filename: str | None
) -> list[StreamPlan] | None:
    """The encoders of an output after the first: the session's where its muxer carries them (a
    WHIP output: where they are what it would choose), else its own, chosen for its muxer as the
    first's were for the first (None: it shares them all).

    Raises:
        InvalidConfig: the muxer cannot carry an encoder the config names explicitly.
    """
    default_video, default_audio = _default_encoders(output, muxer, filename)
    own = _plan_streams(
        config,
        muxer,
        default_video,
        default_audio,
        live=plan.live,
        whip=muxer == "whip",
        keyframe_seconds=plan.keyframe_seconds,
        steady_keyframes=plan.steady_keyframes,
    )
    chosen: list[StreamPlan] = []
    whip_made = plan.first.muxer == "whip"  # the session's encoders are WebRTC's: Opus is no RTMP's
    for shared, mine, cfg in zip(plan.streams, own, config.streams):
        if ffmpeg.muxer_takes(output.muxer, shared.encoder) is False:
            if cfg.encoder is not None:
                raise InvalidConfig(
                    f"{output.muxer} cannot carry {cfg.encoder} (streams.{shared.index}.encoder); "
                    f"leave it unset to give each destination an encoder it takes",
                    output.where + ".format",
                )
            chosen.append(mine)
        elif shared == mine or (muxer != "whip" and not (whip_made and shared.encoder != mine.encoder)):
            chosen.append(shared)
        else:
            chosen.append(mine)
    return None if all(a is b for a, b in zip(chosen, plan.streams)) else chosen


def _plan_destination(wanted: _Wanted, settings: Settings) -> tuple[OutputPlan, str, str | None]:
    """The plan for one destination, before its streams: ``(plan, muxer, filename)``.

    ``muxer`` is the muxer as resolved, which the encoder defaults and muxer options follow;
    ``plan.muxer`` may differ from it (``destinations.client_muxer``). ``filename`` is the name the
    muxer's default encoders are guessed from (image2: ``.png`` or ``.jpg``), None for URLs.
    """
    dest = wanted.dest
    if isinstance(dest, UrlDestination):
        output, muxer, filename = _plan_url(dest, wanted, settings)
    elif isinstance(dest, DiscardDestination):
        output, muxer, filename = _plan_discard(dest, wanted)
    elif isinstance(dest, ServerFileDestination):
        output, muxer, filename = _plan_server_file(dest, wanted, settings)
    else:
        assert isinstance(dest, ClientDestination)
        output, muxer, filename = _plan_client(dest, wanted, settings)
    output.index, output.where, output.required = wanted.index, wanted.where, wanted.required
    output.on_drop = wanted.on_drop
    output.outage_buffer = wanted.outage_buffer
    output.reconnect_timeout = wanted.reconnect_timeout or settings.reconnect_timeout
    output.connect_timeout = wanted.connect_timeout or settings.connect_timeout
    return output, muxer, filename


def _plan_url(dest: UrlDestination, wanted: _Wanted, settings: Settings) -> tuple[OutputPlan, str, None]:
    """A network output: an allowed URL, the muxer its scheme implies, paced at media time."""
    url = dest.url
    if wanted.format == "whip" and urls.scheme_of(url) in ("http", "https"):
        url = "whip+" + url  # an https URL with format="whip" is a WHIP endpoint
    if dest.bearer_token is not None and not urls.scheme_of(url).startswith("whip+"):
        raise InvalidConfig("a bearer token is for WHIP endpoints (whip+https://...)", wanted.where + ".bearer_token")
    policy.check_url(settings, url, wanted.where + ".url")
    target = destinations.network_url(url, wanted.where + ".url")
    muxer = _resolve_muxer(wanted, None, target.muxer)
    return OutputPlan(muxer=muxer, target="url", url=target.url, options=target.options), muxer, None


def _plan_discard(dest: DiscardDestination, wanted: _Wanted) -> tuple[OutputPlan, str, None]:
    """No output at all: FFmpeg's null muxer unless the config names one."""
    muxer = _resolve_muxer(wanted, None, "null")
    return OutputPlan(muxer=muxer, target="discard", encode=dest.encode), muxer, None


def _plan_server_file(dest: ServerFileDestination, wanted: _Wanted, settings: Settings) -> tuple[OutputPlan, str, str]:
    """A file in the server's output directory, confined to it; the muxer guessed from its name."""
    policy.check_destination_scheme(settings, "file", wanted.where)
    path = destinations.confine(settings.output_dir, dest.path, wanted.where + ".path")
    filename = str(path)
    muxer = _resolve_muxer(wanted, filename)
    output = OutputPlan(muxer=muxer, target="file", path=str(path), relative_path=dest.path)
    fields = {
        "segment_duration": dest.segment_duration,
        "playlist_size": dest.playlist_size,
        "playlist_type": dest.playlist_type,
        "segment_format": dest.segment_format,
    }
    rotation = {"segment_time": dest.segment_time, "segment_name": dest.segment_name, "retention": dest.retention}
    if muxer in segmenting.MUXERS:
        segmenting.only_for_rotation({k: v for k, v in rotation.items()}, wanted.where, "HLS and DASH")
        output.segments = segmenting.plan_segments(
            muxer,
            settings.output_dir.resolve(),
            dest.path,
            wanted.where,
            **fields,  # type: ignore[arg-type]
        )
    elif dest.segment_time is not None:
        segmenting.only_for_segmenting(fields, wanted.where)
        output.segments = segmenting.plan_rotation(
            muxer,
            settings.output_dir.resolve(),
            dest.path,
            wanted.where,
            dest.segment_time,
            dest.segment_name,
            dest.retention,
        )
    else:
        segmenting.only_for_segmenting(fields, wanted.where)
        segmenting.only_for_rotation(rotation, wanted.where, "")
    output.overwrite = bool(dest.overwrite)
    return output, muxer, filename


def _plan_client(dest: ClientDestination, wanted: _Wanted, settings: Settings) -> tuple[OutputPlan, str, str | None]:
    """Bytes sent back to the client: a file all the same as far as the allowed schemes go."""
    policy.check_destination_scheme(settings, "file", wanted.where)
    filename = dest.filename
    muxer = _resolve_muxer(wanted, filename)
    output = OutputPlan(muxer=destinations.client_muxer(muxer), target="client", seekable=dest.seekable)
    return output, muxer, filename


def _apply_session_options(plan: SessionPlan, config: SessionConfig, settings: Settings) -> None:
    """Copy what the session and the server decide about running the encoder (pacing, scheduling,
    conversion, working directory, quotas) onto ``plan``. Network outputs are paced unless the
    config says otherwise."""
    plan.realtime = (plan.live or plan.segmented) if config.realtime is None else config.realtime
    plan.scheduling = settings.encoder_scheduling
    plan.rgb_conversion = settings.rgb_converter
    # Whatever an encoder library or filter still writes to a relative path lands in the output dir.
    plan.workdir = str(settings.output_dir.resolve() / ENCODER_WORKDIR)
    plan.limits = encoder_limits(settings)
    plan.compressed = config.compression == "zstd"


def _default_encoders(output: OutputPlan, muxer: str, filename: str | None) -> tuple[str | None, str | None]:
    """The ``(video, audio)`` encoders a stream without ``encoder=`` gets: the muxer's own, except
    on network outputs whose muxer's defaults no live viewer wants (``destinations.LIVE_ENCODERS``)
    and on discard, whose null muxer would default to no encoding at all."""
    default_video = ffmpeg.default_encoder(muxer, "video", filename)
    default_audio = ffmpeg.default_encoder(muxer, "audio", filename)
    if output.live and muxer in destinations.LIVE_ENCODERS:
        default_video, default_audio = destinations.LIVE_ENCODERS[muxer]
    if output.target == "discard":
        default_video, default_audio = "libx264", "aac"
    return default_video, default_audio


def _plan_streams(
    config: SessionConfig,
    muxer: str,
    default_video: str | None,
    default_audio: str | None,
    *,
    live: bool,
    whip: bool = False,
    keyframe_seconds: float | None = None,
    steady_keyframes: bool = False,
) -> list[StreamPlan]:
    """A plan for each of the config's streams, in order; a live output's video gets the encoder
    options a receiver needs to join mid-stream (``destinations.live_video_defaults``), and WHIP's
    what WebRTC takes (``destinations.whip_video``, ``whip_audio``); every video stream a keyframe
    each ``keyframe_seconds`` if the outputs want one (an HLS/DASH segment starts on a keyframe),
    and only those for outputs cut into files at keyframes (``steady_keyframes``: HLS, DASH and
    rotating recordings, whose files then last what they should)."""
    streams: list[StreamPlan] = []
    for i, stream in enumerate(config.streams):
        if isinstance(stream, AudioStreamConfig):
            audio = _plan_audio(i, stream, muxer, default_audio)
            if whip:
                destinations.whip_audio(audio, f"streams.{i}")
            streams.append(audio)
            continue
        video = _plan_video(i, stream, muxer, default_video)
        if live or whip:
            video.encoder_option, video.codec_config = destinations.live_video_defaults(
                video.encoder, video.encoder_frame_rate, video.encoder_option, video.codec_config
            )
        if keyframe_seconds is not None:
            video.codec_config = destinations.keyframe_defaults(
                video.encoder_frame_rate, video.encoder_option, video.codec_config, keyframe_seconds
            )
        if steady_keyframes:
            video.encoder_option = destinations.steady_keyframes(video.encoder, video.encoder_option)
        if whip:
            destinations.whip_video(video, f"streams.{i}")
        streams.append(video)
    return streams


def _check_stream_policies(streams: list[StreamPlan], settings: Settings) -> None:
    """The server's policies for each planned stream: its encoder options, its filter chain, and its
    size and rate, input and encoder side alike (whichever is larger is what the encoder costs)."""
    for stream in streams:
        where = f"streams.{stream.index}"
        policy.check_encoder_options(settings, stream.encoder, stream.encoder_option, where + ".encoder_option")
        if stream.filter_desc:
            policy.check_filters(settings, stream.type, stream.filter_desc, where + ".filter_desc")
        if isinstance(stream, VideoPlan):
            policy.check_limits(
                settings,
                "video",
                where,
                width=max(stream.width, stream.encoder_width),
                height=max(stream.height, stream.encoder_height),
                frame_rate=float(max(stream.frame_rate, stream.encoder_frame_rate)),
            )
        else:
            policy.check_limits(
                settings,
                "audio",
                where,
                sample_rate=max(stream.sample_rate, stream.encoder_sample_rate),
                num_channels=max(stream.num_channels, stream.encoder_num_channels),
            )


def _plan_muxer_options(output: OutputPlan, muxer: str, wanted: _Wanted, settings: Settings) -> dict[str, str]:
    """One output's muxer options: the client's, checked against the policy, then what a live
    output or a crash-safe file adds to them (added after the check: they are the server's own)."""
    options = _options(wanted.options)
    if output.segments is not None and not output.segments.rotating:
        segmenting.check_options(output.muxer, options, wanted.options_field)
    policy.check_muxer_options(settings, output.muxer, options, wanted.options_field)
    options.update(output.options)  # what the destination's URL asked for (checked with it)
    if output.live:
        options = destinations.live_muxer_options(muxer, options)
    if output.muxer == "whip":
        options["cert_file"], options["key_file"] = destinations.whip_certificate(
            settings.output_dir.resolve() / ENCODER_WORKDIR
        )
        dest = wanted.dest
        if isinstance(dest, UrlDestination) and dest.bearer_token is not None:
            options["authorization"] = dest.bearer_token
    dest = wanted.dest
    if isinstance(dest, ServerFileDestination) and dest.crash_safe:
        options = destinations.crash_safe_options(muxer, options)
    if output.segments is not None and not output.segments.rotating:
        options.update(output.segments.options())  # every file's name: the server's, never the config's
    return options


def describe_stream(stream: StreamPlan) -> dict[str, object]:
    """A JSON-friendly view of a stream plan (fractions as 'num/den' strings)."""
    out = asdict(stream)
    for key, value in out.items():
        if isinstance(value, Fraction):
            out[key] = f"{value.numerator}/{value.denominator}"
    return out
