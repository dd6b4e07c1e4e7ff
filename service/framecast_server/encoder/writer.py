"""The PyAV side: turn arrays into frames, frames into packets, packets into every output.

``SessionWriter`` owns the session's encoders, one per stream, and its outputs (``output.py``),
which all mux the same packets: encode once, send to many. It runs inside the session's encoder
process (``encoder/main.py``) and never on the server's event loop. It knows the SessionPlan and
the chunk arrays, nothing of sockets.

Frame building copies each frame exactly once: straight from the client's (T, C, H, W) array into
the AVFrame's own planes, a row copy per channel plane. RGB frames bound for a yuv420p encoder at
their own size are converted on the way instead, with libyuv (``libyuv.py``), where the settings
allow it; all others are converted with swscale before encoding (``_VideoStream.ready``).

Nothing between a chunk and the muxer is unbounded: frames leave a filter chain one at a time and
each is encoded and its packets muxed before the next is pulled, silence for a pts gap is built a
piece at a time as the encoder takes it, and every frame reaching an encoder and every packet
leaving it is counted against the session's quotas (``quotas.OutputMeter``). A filter chain's
output must stay within the server's size limits: checked once with a probe frame when the
stream is set up, and on every frame it puts out.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO, TypeAlias

import av
import numpy as np

from framecast_server import libyuv
from framecast_server.chunks import Timeline
from framecast_server.encoder.errors import SetupError, describe_error
from framecast_server.encoder.live import DestinationLost, LiveOutput
from framecast_server.encoder.output import Output, wants_global_header
from framecast_server.encoder.relay import Relay
from framecast_server.encoder.rotation import RotatingOutput
from framecast_server.messages import FromEncoder, OutputFailed, OutputStats, StreamStats
from framecast_server.planning.plan import AudioPlan, OutputPlan, SessionPlan, StreamPlan, VideoPlan, split_filter_chain
from framecast_server.quotas import DiskGuard, EncoderLimits, FilterOutputRefused, OutputMeter, QuotaReached

log = logging.getLogger(__name__)

#: Seconds between two looks at the network outputs that are connecting.
CONNECT_POLL = 0.01

#: What flows through a stream: frames of either medium, and the streams that encode them.
Frame: TypeAlias = av.VideoFrame | av.AudioFrame
EncoderStream: TypeAlias = av.video.stream.VideoStream | av.audio.stream.AudioStream


@dataclass
class _Counts:
    """One stream's running totals (sent to the server as ``messages.StreamStats``)."""

    chunks: int = 0
    frames: int = 0
    packets: int = 0
    bytes: int = 0


class _FilterChain:
    """A linear filter graph between the input frames and the encoder."""

    def __init__(self, source_args: dict[str, Any], media: str, chain: list[tuple[str, str | None]]) -> None:
        self.graph = av.filter.Graph()
        if media == "video":
            nodes = [self.graph.add("buffer", **source_args)]
        else:
            nodes = [self.graph.add("abuffer", **source_args)]
        for name, args in chain:
            nodes.append(self.graph.add(name, args))
        nodes.append(self.graph.add("buffersink" if media == "video" else "abuffersink"))
        self.graph.link_nodes(*nodes).configure()

    def push(self, frame: Frame | None) -> Iterator[Frame]:
        """Push ``frame`` (None: end of stream) and yield what comes out, one frame at a time.

        Lazily: a filter may put out any number of frames for one (``loop``, ``tpad``,
        ``zoompan``, a frame-rate conversion across a gap), and each is encoded before the next
        is pulled, so the quota stops an endless one.
        """
        self.graph.push(frame)
        while True:
            try:
                yield self.graph.pull()
            except (BlockingIOError, av.error.EOFError):
                return

    def first(self, frame: Frame) -> Frame | None:
        """The first frame out for ``frame``, flushing the chain if it holds it back; for probing."""
        for pushed in (frame, None):
            self.graph.push(pushed)
            try:
                return self.graph.pull()
            except (BlockingIOError, av.error.EOFError):
                continue
        return None


class Memory(enum.Enum):
    """Whose memory a chunk's array is, which decides whether its frames may use it as it is."""

    #: The server's ring, written again as soon as the chunk's frames are built: frames copy it.
    RING = "ring"
    #: The client's shared memory, written again once the chunk is acknowledged, which is after
    #: its frames are encoded: frames may use it for encoders that copy them (``COPYING_ENCODERS``).
    CLIENT = "client"
    #: The chunk's own (a payload unmasked or decompressed into fresh memory): frames may keep it.
    OWN = "own"


class ChunkFrames:
    """A chunk's frames, in order: the silence filling a pts gap before it, built lazily a piece at
    a time as the encoder takes it, then the chunk's own frames, built already (their pixels
    copied out of the ring the chunk came through, which can then be written again, or over memory
    that stays as it is until they are encoded: ``Memory``)."""

    def __init__(self, gap: Iterator[Frame] | None, built: list[Frame]) -> None:
        self.gap = gap
        self.built = built

    def __iter__(self) -> Iterator[Frame]:
        if self.gap is not None:
            yield from self.gap
        yield from self.built

    def __bool__(self) -> bool:
        return self.gap is not None or bool(self.built)


class _Stream:
    """One output stream: builds frames from arrays, filters, encodes."""

    def __init__(
        self, plan: StreamPlan, stream: EncoderStream, chain: _FilterChain | None, limits: EncoderLimits
    ) -> None:
        self.plan = plan
        self.stream = stream
        self.chain = chain
        self.limits = limits
        self.timeline = Timeline(plan.rate, max_gap=limits.max_pts_gap)
        self.time_base = Fraction(1, 1) / plan.rate
        self.stats = _Counts()

    def frames(self, array: np.ndarray, start: int, memory: Memory = Memory.RING) -> list[Frame]:
        """Frames for a (T, ...) chunk whose first tick is ``start``, in ``array``, which is
        ``memory``: frames use it as it is where that is safe (``_VideoStream.uses``), else copy it."""
        raise NotImplementedError

    def ready(self, frames: list[Frame]) -> list[Frame]:
        """Frames as the encoder takes them (see _VideoStream); others as they are."""
        return frames

    def gap(self, end: int, start: int) -> Iterator[Frame] | None:
        """Frames that fill the time between the previous chunk's ``end`` and ``start``, or None.

        Video needs none: a frame lasts until the next one. Audio containers like WAV have no
        timestamps, so an explicit pts past the end is kept by writing silence up to it.
        """
        return None

    def encode(
        self, frames: Iterable[Frame | None], meter: OutputMeter, counted: bool = True
    ) -> Iterator[av.Packet[Any]]:
        """Filter and encode ``frames`` (None: flush), yielding packets as they come; every frame
        that reaches the encoder is checked and counted first (``QuotaReached``,
        ``FilterOutputRefused``), but by a second encoder of the same stream (``counted`` False)."""
        index = self.plan.index
        for frame in frames:
            filtered: Iterable[Frame | None] = (frame,) if self.chain is None else self.chain.push(frame)
            for f in filtered:
                if f is not None:
                    if self.chain is not None:
                        self._check_filtered(f)
                    if counted:
                        meter.frame(index, f)
                yield from self.stream.encode(f)  # type: ignore[arg-type]  # frames of the stream's own medium
            if frame is None and self.chain is not None:
                yield from self.stream.encode(None)

    def _check_filtered(self, frame: Frame) -> None:
        """A filter chain's frame must be within the server's limits (see ``_check_probe``)."""
        problem = _beyond_limits(frame, self.limits) or self._timing(frame)
        if problem is not None:
            raise FilterOutputRefused(f"streams.{self.plan.index}.filter_desc: the filter chain put out {problem}")

    def _timing(self, frame: Frame) -> str | None:
        """Check (and for video, mend) a filter chain's frame's timestamp; what is wrong, or None."""
        return None


class _VideoStream(_Stream):
    plan: VideoPlan
    stream: av.video.stream.VideoStream

    def ready(self, frames: list[Frame]) -> list[Frame]:
        """Convert frames to the encoder's pixel format and size now, as PyAV's ``encode`` would
        (the same swscale call and settings), so the conversion can run before encoding, on
        another thread (the direct loop's prepare stage, as the ffmpeg CLI converts next to x264),
        and paced frames wait in the encoder's smaller format. Not with a filter chain, which
        takes the frames as built."""
        if self.chain is not None or not frames:
            return frames
        ctx = self.stream.codec_context
        first = frames[0]
        assert isinstance(first, av.VideoFrame)
        if (first.format.name, first.width, first.height) == (ctx.pix_fmt, ctx.width, ctx.height):
            return frames
        if self._reformatter is None:
            self._reformatter = av.video.reformatter.VideoReformatter()
        out: list[Frame] = []
        for frame in frames:
            converted = self._reformatter.reformat(frame, ctx.width, ctx.height, ctx.format, threads=ctx.thread_count)
            converted.pts, converted.time_base = frame.pts, frame.time_base
            out.append(converted)
        return out

    _reformatter: Any = None
    #: Media times of the first and the last frame a filter chain put out, and how many (``_timing``).
    _first_time: Fraction | None = None
    _last_time: Fraction | None = None
    _filtered = 0

    def _timing(self, frame: Frame) -> str | None:
        """A frame out of the filter chain without a timestamp, or with one not after the frame
        before, follows that frame by one frame at the encoder's rate. Filters that make frames
        do that with the push API this uses: ``tpad`` pads past the end without timestamps, ``loop``
        starts its repeats over at the first frame's; the muxer would refuse them.

        Returns what is wrong if the chain puts out frames faster than the frame-rate limit
        (``fps=100000``): more than the limit's frames in any stretch of media from the first
        frame, a second of slack included."""
        step = 1 / self.plan.encoder_frame_rate
        time = None if frame.pts is None or frame.time_base is None else frame.pts * frame.time_base
        last = self._last_time
        if time is None or (last is not None and time <= last):
            time = Fraction(0) if last is None else last + step
            base = frame.time_base or step
            frame.pts = math.ceil(time / base)
            frame.time_base = base
            time = frame.pts * base
        self._last_time = time
        if self._first_time is None:
            self._first_time = time
        self._filtered += 1
        limit = self.limits.max_frame_rate
        span = float(time - self._first_time)
        if limit is not None and self._filtered > limit * (span + 1):
            return (
                f"{self._filtered} frames in {span:.3f} s of media, faster than this server's limit of "
                f"{limit:g} frames per second (FRAMECAST_MAX_FRAME_RATE)"
            )
        return None

    #: Converts RGB chunks straight into the encoder's yuv420p frames where libyuv applies (set by
    #: OutputWriter); then frames come out of ``frames`` ready and ``ready`` has nothing to do.
    rgb_to_i420: libyuv.RgbToI420 | None = None

    #: Frames of yuv420p chunks in the client's shared memory use it as it is (set by SessionWriter).
    lends = False

    def uses(self, memory: Memory) -> bool:
        """Whether this stream's frames use a chunk in ``memory`` as it is: a yuv420p chunk of its
        own, or in the client's memory where the session's encoders allow it (``lends``). PyAV
        reads yuv420p memory as (H*3/2, W) rows, which gives the height back only in multiples of 4."""
        if self.plan.wire_format != "yuv420p" or self.plan.height % 4:
            return False
        return memory is Memory.OWN or (memory is Memory.CLIENT and self.lends)

    def frames(self, array: np.ndarray, start: int, memory: Memory = Memory.RING) -> list[Frame]:
        plan = self.plan
        frame_format, planes = _PLANAR_LAYOUT[plan.format]
        out: list[Frame] = []
        if plan.wire_format == "yuv420p":
            if self.uses(memory):
                return self._lent_frames(array, start)
            return self._yuv420p_frames(array, start)
        for i in range(array.shape[0]):
            src = array[i]  # (C, H, W): channel planes, as the client sent them
            if self.rgb_to_i420 is not None:
                frame = av.VideoFrame(plan.width, plan.height, "yuv420p")
                self.rgb_to_i420.convert(src, frame)
            else:
                frame = av.VideoFrame(plan.width, plan.height, frame_format)
                for plane, channel in enumerate(planes):
                    _plane_rows(frame.planes[plane], plan.height, plan.width)[...] = src[channel]
            frame.pts = start + i
            frame.time_base = self.time_base
            out.append(frame)
        return out

    def _yuv420p_frames(self, array: np.ndarray, start: int) -> list[Frame]:
        """Frames of a stream whose client sent yuv420p (``planning/wire.py``): each (W*H*3/2,)
        row is the Y, U and V planes back to back, copied into the frame's planes once."""
        w, h = self.plan.width, self.plan.height
        luma, chroma = w * h, (w // 2) * (h // 2)
        out: list[Frame] = []
        for i in range(array.shape[0]):
            src = array[i]
            frame = av.VideoFrame(w, h, "yuv420p")
            y, u, v = frame.planes
            _plane_rows(y, h, w)[...] = src[:luma].reshape(h, w)
            _plane_rows(u, h // 2, w // 2)[...] = src[luma : luma + chroma].reshape(h // 2, w // 2)
            _plane_rows(v, h // 2, w // 2)[...] = src[luma + chroma :].reshape(h // 2, w // 2)
            frame.pts = start + i
            frame.time_base = self.time_base
            out.append(frame)
        return out

    def _lent_frames(self, array: np.ndarray, start: int) -> list[Frame]:
        """Frames of a yuv420p chunk that use its memory without a copy: each (W*H*3/2,) row seen
        as (H*3/2, W), the Y plane's rows then the U and V planes' at half the stride, as FFmpeg
        lays out yuv420p. The frames reference the array (PyAV keeps it alive with them); ``uses``
        says when that is safe."""
        w, h = self.plan.width, self.plan.height
        out: list[Frame] = []
        for i in range(array.shape[0]):
            frame = av.VideoFrame.from_numpy_buffer(array[i].reshape(h * 3 // 2, w), format="yuv420p")
            frame.pts = start + i
            frame.time_base = self.time_base
            out.append(frame)
        return out


#: How a (C, H, W) chunk maps onto a planar AVFrame: the frame's pixel format, and which input
#: channel fills each of its planes. Channels-first input is planar already, so frames are built
#: with one plain copy per plane: FFmpeg's gbrp holds G, B, R planes, so RGB and BGR (and their
#: padded 4-channel forms, whose 4th channel is ignored) need no interleaving at all. swscale then
#: converts gbrp to the encoder's format as fast as from packed RGB, with identical results.
_PLANAR_LAYOUT = {
    "rgb24": ("gbrp", (1, 2, 0)),
    "rgb0": ("gbrp", (1, 2, 0)),
    "bgr24": ("gbrp", (1, 0, 2)),
    "bgr0": ("gbrp", (1, 0, 2)),
    "yuv444p": ("yuv444p", (0, 1, 2)),
    "gray8": ("gray", (0,)),
}


def _plane_rows(plane: Any, height: int, row_bytes: int) -> np.ndarray:
    """A writable (height, row_bytes) view of a frame plane, skipping its line padding."""
    buf = np.frombuffer(plane, dtype=np.uint8)
    return buf[: height * plane.line_size].reshape(height, plane.line_size)[:, :row_bytes]


class _AudioStream(_Stream):
    plan: AudioPlan

    #: Largest frame built from a chunk; paced outputs use short frames so audio leaves smoothly
    #: and interleaves with video within one codec frame. None: one frame per chunk.
    max_samples: int | None = None

    def frames(self, array: np.ndarray, start: int, memory: Memory = Memory.RING) -> list[Frame]:
        plan = self.plan
        step = self.max_samples or max(1, array.shape[0])
        out: list[Frame] = []
        for offset in range(0, array.shape[0], step):
            piece = array[offset : offset + step]
            # Packed samples go straight into the frame's one plane (PyAV's from_ndarray lacks s64).
            frame = av.AudioFrame(format=plan.format, layout=_layout(plan.num_channels), samples=piece.shape[0])
            np.frombuffer(memoryview(frame.planes[0]), dtype=piece.dtype)[: piece.size] = piece.reshape(-1)
            frame.sample_rate = plan.sample_rate
            frame.pts = start + offset
            frame.time_base = self.time_base
            out.append(frame)
        return out

    def gap(self, end: int, start: int) -> Iterator[Frame] | None:
        if start <= end:
            return None
        return self._silence(end, start)

    def _silence(self, end: int, start: int) -> Iterator[Frame]:
        """Silent frames from tick ``end`` to ``start``, SILENCE_PIECE samples at most each, built
        one at a time (a gap of a minute at 384 kHz in 16 channels would be 1.5 GB at once)."""
        step = min(SILENCE_PIECE, self.max_samples or SILENCE_PIECE)
        piece = np.full(
            (min(step, start - end), self.plan.num_channels),
            128 if self.plan.format == "u8" else 0,
            dtype=self.plan.dtype.numpy,
        )
        for tick in range(end, start, step):
            yield from self.frames(piece[: min(step, start - tick)], tick)


#: Most samples in one frame of silence filling a gap.
SILENCE_PIECE = 8192


def _beyond_limits(frame: Frame, limits: EncoderLimits) -> str | None:
    """What about a filter chain's ``frame`` is beyond ``limits`` (as words), or None."""
    if isinstance(frame, av.VideoFrame):
        too_wide = limits.max_width is not None and frame.width > limits.max_width
        too_high = limits.max_height is not None and frame.height > limits.max_height
        if too_wide or too_high:
            return (
                f"{frame.width}x{frame.height} frames, above this server's limit of "
                f"{limits.max_width}x{limits.max_height} (FRAMECAST_MAX_WIDTH/_HEIGHT)"
            )
        return None
    if limits.max_sample_rate is not None and frame.sample_rate > limits.max_sample_rate:
        return (
            f"audio at {frame.sample_rate} Hz, above this server's limit of {limits.max_sample_rate} Hz "
            "(FRAMECAST_MAX_SAMPLE_RATE)"
        )
    channels = len(frame.layout.channels)
    if limits.max_channels is not None and channels > limits.max_channels:
        return f"{channels} audio channels, above this server's limit of {limits.max_channels} (FRAMECAST_MAX_CHANNELS)"
    return None


def _layout(channels: int) -> av.AudioLayout:
    """FFmpeg's default layout for a channel count (1 mono, 2 stereo, 6 5.1, ...)."""
    return av.AudioLayout(f"{channels}c")


#: Pixels per second up to which a real-time video stream is encoded (and converted) on one
#: thread: 640x480 at 60 fps. x264 veryfast takes ~1.5 ms for a 640x360 frame on one core here.
SINGLE_THREAD_PIXEL_RATE = 640 * 480 * 60


#: Encoders that copy each frame into memory of their own before ``encode`` returns: x264 copies
#: the picture first thing in ``x264_encoder_encode``, whatever its threads. A frame for them may
#: use memory that is written again once it is encoded. Others may keep a reference to the frame
#: after ``encode`` (FFmpeg's frame-threaded encoders and hardware ones do): they get copies.
COPYING_ENCODERS = frozenset({"libx264"})

#: Encoders whose FFmpeg wrapper turns the slice thread type into the library's own sliced threads
#: (x264's ``sliced_threads``). Files from other encoders keep FFmpeg's choice (``AUTO``): frame
#: threads where the encoder has them and no slices.
SLICED_LIBRARIES = frozenset({"libx264", "libx264rgb"})

#: Files from x264 use its slice threads on machines with at most this many cores: one slice per
#: core, at most four bands of a frame. Beyond, slices would cut frames thinner (less efficient
#: compression) where frame threads keep scaling; the measurements were made on two cores.
SLICED_FILES_MAX_CORES = 4


def available_cores() -> int:
    """The cores this process may run on (its affinity, which containers narrow), else the count."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _threading(realtime: bool, plan: VideoPlan, codec: str, cores: int) -> tuple[str, int]:
    """FFmpeg's thread type and count for the video encoder ``codec`` on a machine of ``cores``
    (``thread_type`` and ``threads`` in encoder_option win).

    Paced outputs use slice threads, so packets leave as soon as each frame is encoded; small ones
    a single thread, because slicing a frame that takes a millisecond or two buys no latency worth
    the thread wake-ups, and with many sessions on a machine the threads of every encoder would
    contend for the same cores (measured in BENCHMARKS.md).

    Files from x264 use its slice threads too on small machines (``SLICED_FILES_MAX_CORES``), as
    PyAV in-process does. Frame threads (three on two cores) take a few frames at once and go
    further where the encoder has the machine to itself, but a server shares its cores between
    sessions, its event loop and, on the same machine, the client: beside them x264's slice threads
    spend less CPU per frame, and files were written 4-5% faster at ``preset=ultrafast``, no slower
    at ``medium`` (BENCHMARKS.md, "Measurements behind design choices").
    The count also sets the threads PyAV's swscale uses to convert frames for the encoder.
    """
    if realtime:
        if plan.encoder_width * plan.encoder_height * plan.encoder_frame_rate <= SINGLE_THREAD_PIXEL_RATE:
            return "SLICE", 1
        return "SLICE", 0
    if codec in SLICED_LIBRARIES and cores <= SLICED_FILES_MAX_CORES:
        return "SLICE", 0
    return "AUTO", 0


def _apply_codec_config(ctx: Any, cfg: dict[str, int | None], options: dict[str, str]) -> None:
    if cfg.get("bit_rate", -1) not in (-1, None):
        ctx.bit_rate = cfg["bit_rate"]
    if cfg.get("compression_level", -1) not in (-1, None):
        options.setdefault("compression_level", str(cfg["compression_level"]))
    if cfg.get("qscale") is not None:
        ctx.qscale = cfg["qscale"]
    if ctx.type == "video":
        if cfg.get("gop_size", -1) not in (-1, None):
            ctx.gop_size = cfg["gop_size"]
        if cfg.get("max_b_frames", -1) not in (-1, None):
            ctx.max_b_frames = cfg["max_b_frames"]


def _video_filter_steps(plan: VideoPlan) -> list[tuple[str, str | None]]:
    """The video filter chain's steps: the client's filters, then an ``fps`` step when the encoder
    runs at another frame rate than the input (empty: no chain)."""
    steps = split_filter_chain(plan.filter_desc) if plan.filter_desc else []
    if plan.encoder_frame_rate != plan.frame_rate:
        steps.append(("fps", str(plan.encoder_frame_rate)))
    return steps


def _video_source(plan: VideoPlan) -> dict[str, Any]:
    """The ``buffer`` source's arguments: the input frames as ``_VideoStream.frames`` builds them."""
    return {
        "video_size": f"{plan.width}x{plan.height}",
        "pix_fmt": _PLANAR_LAYOUT[plan.format][0],  # as frames() builds them
        "time_base": str(1 / plan.frame_rate),
        "pixel_aspect": "1/1",
    }


def _audio_source(plan: AudioPlan) -> dict[str, Any]:
    """The ``abuffer`` source's arguments: the input frames as ``_AudioStream.frames`` builds them."""
    return {
        "sample_rate": str(plan.sample_rate),
        "sample_fmt": plan.format,
        "channel_layout": _layout(plan.num_channels).name,
        "time_base": f"1/{plan.sample_rate}",
    }


class SessionWriter:
    """A session's encoders and its outputs: every stream encoded once, its packets muxed into
    every output (``output.py``).

    Construction opens the encoders and every output's container (nothing is written yet);
    ``start_files()`` writes the headers of the outputs that are not network ones (at create time,
    so that a muxer's refusal is a 422), ``connect()`` those of the network outputs, which is where
    FFmpeg connects. Chunks then go through ``write()``, or through ``frames_for()`` and ``emit()``
    when a pacer decides when each frame leaves.

    Network outputs reconnect on their own (``live.py``). An output that fails for good is dropped
    and reported (``OutputFailed``) while the others carry on, unless it is ``required``: then, as
    when the last output fails, the session fails.

    Args:
        plan: the resolved session.
        file: a writable file object for a client-side destination, if there is one.
        notify: sends a message to the server (``Connected``, ``Reconnecting``, ``OutputFailed``, ...).
    """

    def __init__(
        self, plan: SessionPlan, file: BinaryIO | None = None, notify: Callable[[FromEncoder], None] | None = None
    ) -> None:
        self.plan = plan
        self.notify: Callable[[FromEncoder], None] = notify or (lambda message: None)
        self.warnings: list[str] = []
        self._closed = False
        #: Why the output stopped early (a quota ran out while closing), if it did.
        self.stopped: str | None = None
        self.meter = OutputMeter(
            plan.limits, [s.encoder_frame_rate if isinstance(s, VideoPlan) else None for s in plan.streams]
        )
        # The encoders live in a container of their own, FFmpeg's null muxer, apart from every output.
        self._global_header = any(wants_global_header(o.muxer) for o in plan.outputs if o.encode)
        self.home = av.open("null", "w", format="null")
        try:
            #: Every encoder: the session's, one per stream, then those of outputs that cannot share them.
            self.encoders: list[_Stream] = [self._add_stream(s) for s in plan.encoders]
            self.home.start_encoding()
        except BaseException:
            self._abort()
            raise
        self.streams = self.encoders[: len(plan.streams)]  # the session's own: frames are built by these
        #: For each output (by index), the encoder each of its streams comes from.
        self._sources: dict[int, list[_Stream]] = {
            output.index: [self._encoder_of(p) for p in output.encoders(plan.streams)] for output in plan.outputs
        }
        #: Where each output takes each encoder's packets: (output index, encoder) -> its stream there
        #: (the session's stream index, but in an HLS/DASH ladder, which has a stream per rung).
        self._positions: dict[tuple[int, int], int] = {
            (index, id(encoder)): position
            for index, sources in self._sources.items()
            for position, encoder in enumerate(sources)
        }
        #: For each stream, its encoders: the session's first.
        self._by_stream: list[list[_Stream]] = [
            [e for e in self.encoders if e.plan.index == i] for i in range(len(self.streams))
        ]
        for stream in self.streams:
            if isinstance(stream, _VideoStream):
                stream.lends = self._may_lend(stream)
        #: Every output, in the config's order: a network one is muxed by a relay process
        #: (``relay.py``), the others here.
        self.outputs: list[Output[OutputPlan] | Relay | RotatingOutput] = []
        try:
            for output_plan in plan.outputs:
                templates = [e.stream for e in self._sources[output_plan.index]]
                output = Output(output_plan, templates, plan.metadata, file if output_plan.target == "client" else None)
                if output_plan.live:  # its muxer took the streams (else a 422 now); its relay muxes
                    output.abort()
                    self.outputs.append(Relay(output_plan, templates, plan.metadata))
                elif output_plan.segments is not None and output_plan.segments.rotating:
                    output.abort()  # likewise; one file after another takes them (``rotation.py``)
                    self.outputs.append(RotatingOutput(output_plan, templates, plan.metadata))
                else:
                    self.outputs.append(output)
        except BaseException:
            self._abort()
            raise
        #: The session's files against the disk limits (``quotas.DiskGuard``).
        # (Given the outputs, not the writer: a cycle through the writer would keep the encoders
        # alive past the process's end, and x264 writes its pass-1 statistics when it is freed.)
        self.disk = DiskGuard(
            plan.limits,
            os.path.dirname(plan.workdir) if plan.workdir else None,
            functools.partial(_disk_bytes, self.outputs),
        )
        #: Where packets go: each output, network ones behind their reconnecting LiveOutput.
        self.links: list[Output[OutputPlan] | RotatingOutput | LiveOutput] = [
            LiveOutput(
                output, self.notify, output.plan.on_drop, output.plan.outage_buffer, output.plan.reconnect_timeout
            )
            if isinstance(output, Relay)
            else output
            for output in self.outputs
        ]
        #: The links still working (failed outputs leave it).
        self.active: list[Output[OutputPlan] | RotatingOutput | LiveOutput] = list(self.links)
        #: For each encoder, the working links whose stream it feeds (failed outputs leave these too).
        self._users: dict[int, list[Output[OutputPlan] | RotatingOutput | LiveOutput]] = {
            id(encoder): [link for link in self.links if encoder in self._sources[link.plan.index]]
            for encoder in self.encoders
        }

    def _encoder_of(self, plan: StreamPlan) -> _Stream:
        return next(e for e in self.encoders if e.plan is plan or e.plan == plan)

    def start_files(self) -> None:
        """Write the header of every output that is not a network one.

        Raises:
            SetupError: a muxer refused the streams.
        """
        for output in self.outputs:
            if not output.plan.live:
                output.start()
                self.warnings.extend(output.warnings)

    def connect(self) -> None:
        """Start connecting every network output, each in its relay, and wait until the session
        has somewhere to deliver: an output that is not a network one, or the first network one
        connected. The rest connect while the session streams (``tick``), and tell the server as
        each is connected; one that cannot be reached, or answers nothing within its connect
        timeout, fails (the session, if it is required or the last one).

        Raises:
            SetupError: a required network output (or the only output left) cannot be reached.
        """
        for link in self.active:
            if isinstance(link, LiveOutput):
                link.start()
        while not any(not isinstance(link, LiveOutput) or not link.down for link in self.active):
            self.tick()
            time.sleep(CONNECT_POLL)

    # -- the state of network outputs (``loops.py`` waits and reconnects with these) ------------

    @property
    def down(self) -> bool:
        """A network output is not muxing: connecting, or dropped and reconnecting."""
        return any(isinstance(link, LiveOutput) and link.down for link in self.active)

    @property
    def holding_back(self) -> bool:
        """A network output whose policy is "block" is not up: release nothing, read nothing."""
        return any(isinstance(link, LiveOutput) and link.holding_back for link in self.active)

    def next_attempt_in(self) -> float | None:
        """Seconds until any output that is not up wants looking at again (``LiveOutput.tick``), or None."""
        waits = [
            w for link in self.active if isinstance(link, LiveOutput) and (w := link.next_attempt_in()) is not None
        ]
        return min(waits, default=None)

    def tick(self) -> None:
        """Move every network output along (``LiveOutput.tick``): hear from the relays, follow
        connects, start reconnect attempts when due. One that fails for good is dropped and reported.

        Raises:
            SetupError: a required output (or the last one) could not connect.
            DestinationLost: a required output (or the last one) stayed down past its reconnect timeout.
        """
        for link in list(self.active):
            if isinstance(link, LiveOutput):
                try:
                    link.tick()
                except (SetupError, DestinationLost) as exc:
                    self._failed(link, exc, str(exc))

    def _failed(self, link: Output[OutputPlan] | RotatingOutput | LiveOutput, exc: Exception, reason: str) -> None:
        """``link`` failed for good: the session fails if it was required or the last one left;
        else it is closed, reported and forgotten, and the others carry on."""
        if link.plan.required or len(self.active) == 1:
            raise exc
        self.active.remove(link)
        for users in self._users.values():
            if link in users:
                users.remove(link)
        link.abort()
        self.notify(OutputFailed(link.plan.index, reason))

    def _add_stream(self, plan: StreamPlan) -> _Stream:
        """Add ``plan``'s stream to the container with its encoder open, then set up how the
        client's arrays become the frames that encoder takes (filter chain, conversion, frame length)."""
        where = f"streams.{plan.index}"
        stream = self._open_encoder(plan, where)
        if isinstance(plan, VideoPlan):
            return self._video_stream(plan, stream, where)
        return self._audio_stream(plan, stream, where)

    def _open_encoder(self, plan: StreamPlan, where: str) -> EncoderStream:
        """Add the stream, configure its encoder from the plan and open it; options the encoder did
        not use become a warning for the client.

        Raises:
            SetupError: PyAV refused a setting, or the encoder refused to open with them.
        """
        options = dict(plan.encoder_option)
        try:
            if isinstance(plan, VideoPlan):
                stream = self._add_video_encoder(plan)
            else:
                stream = self._add_audio_encoder(plan)
            ctx = stream.codec_context
            _apply_codec_config(ctx, plan.codec_config, options)
            ctx.options = options
            if self._global_header:  # parameter sets in extradata, as a FLV, MP4 or RTSP output wants
                ctx.flags |= av.codec.context.Flags.global_header
        except Exception as exc:
            raise SetupError(f"cannot configure encoder {plan.encoder!r}: {describe_error(exc)}", where) from exc
        try:
            ctx.open()
        except Exception as exc:
            raise SetupError(f"encoder {plan.encoder!r} refused the settings: {describe_error(exc)}", where) from exc
        unused = dict(ctx.options or {})
        if unused:
            self.warnings.append(f"{where}.encoder_option: not used by {plan.encoder}: {unused}")
        return stream

    def _add_video_encoder(self, plan: VideoPlan) -> EncoderStream:
        """A video stream whose encoder takes the plan's encoder size, pixel format and frame rate,
        threaded as the output's pacing wants (``_threading``)."""
        stream = self.home.add_stream(plan.encoder, rate=plan.encoder_frame_rate)
        assert isinstance(stream, av.video.stream.VideoStream), f"{plan.encoder} is a video encoder"
        ctx = stream.codec_context
        ctx.width = plan.encoder_width
        ctx.height = plan.encoder_height
        ctx.pix_fmt = plan.encoder_format
        ctx.time_base = 1 / plan.encoder_frame_rate
        ctx.framerate = plan.encoder_frame_rate
        ctx.thread_type, ctx.thread_count = _threading(self.plan.realtime, plan, ctx.name, available_cores())
        return stream

    def _add_audio_encoder(self, plan: AudioPlan) -> EncoderStream:
        """An audio stream whose encoder takes the plan's encoder sample format, rate and channels."""
        stream = self.home.add_stream(plan.encoder, rate=plan.encoder_sample_rate)
        assert isinstance(stream, av.audio.stream.AudioStream), f"{plan.encoder} is an audio encoder"
        ctx = stream.codec_context
        ctx.format = plan.encoder_format
        ctx.layout = _layout(plan.encoder_num_channels)
        ctx.time_base = Fraction(1, plan.encoder_sample_rate)
        return stream

    def _video_stream(self, plan: VideoPlan, stream: EncoderStream, where: str) -> _VideoStream:
        """The video stream's frame path: its filter chain if it needs one, else libyuv's RGB to
        yuv420p conversion where the settings ask for it and it applies."""
        chain = self._video_chain(plan, where)
        video = _VideoStream(plan, stream, chain, self.plan.limits)
        if chain is None:
            video.rgb_to_i420 = self._rgb_converter(plan, stream.codec_context, where)
        return video

    def _video_chain(self, plan: VideoPlan, where: str) -> _FilterChain | None:
        """The video filter chain (``_video_filter_steps``), None if it has no steps. The client's
        filters are probed (``_check_probe``); a frame-rate conversion alone needs no probe."""
        steps = _video_filter_steps(plan)
        if not steps:
            return None
        source = _video_source(plan)
        chain = self._chain(where, "video", steps, source)
        if plan.filter_desc:
            self._check_probe(where, "video", split_filter_chain(plan.filter_desc), source, plan)
        return chain

    def _rgb_converter(self, plan: VideoPlan, ctx: Any, where: str) -> libyuv.RgbToI420 | None:
        """libyuv's converter for RGB chunks bound for a yuv420p encoder at their own size, where the
        settings choose libyuv and it applies; None: swscale converts (``_VideoStream.ready``)."""
        if self.plan.rgb_conversion != "libyuv" or plan.wire_format == "yuv420p":
            return None
        if not libyuv.applies(plan.format, plan.width, plan.height, ctx.pix_fmt, ctx.width, ctx.height):
            return None
        try:
            return libyuv.RgbToI420(plan.format, plan.width, plan.height)
        except RuntimeError as exc:  # the server found libyuv, this process did not: same frames, slower
            log.warning("%s: converting with swscale: %s", where, exc)
            return None

    def _audio_stream(self, plan: AudioPlan, stream: EncoderStream, where: str) -> _AudioStream:
        """The audio stream's frame path: its filter chain if it has one, and short frames when the
        output is paced (``_AudioStream.max_samples``)."""
        audio = _AudioStream(plan, stream, self._audio_chain(plan, where), self.plan.limits)
        if self.plan.realtime:
            audio.max_samples = max(1, plan.sample_rate // 50)  # 20 ms
        return audio

    def _audio_chain(self, plan: AudioPlan, where: str) -> _FilterChain | None:
        """The audio filter chain, probed (``_check_probe``); None without ``filter_desc``."""
        if not plan.filter_desc:
            return None
        source = _audio_source(plan)
        chain = self._chain(where, "audio", split_filter_chain(plan.filter_desc), source)
        self._check_probe(where, "audio", split_filter_chain(plan.filter_desc), source, plan)
        return chain

    @staticmethod
    def _chain(where: str, media: str, steps: list[tuple[str, str | None]], source: dict[str, Any]) -> _FilterChain:
        try:
            return _FilterChain(source, media, steps)
        except Exception as exc:
            raise SetupError(f"filter chain refused: {describe_error(exc)}", where + ".filter_desc") from exc

    def _check_probe(
        self, where: str, media: str, steps: list[tuple[str, str | None]], source: dict[str, Any], plan: StreamPlan
    ) -> None:
        """Push one blank input frame through a copy of the stream's filter chain and refuse the
        chain if what comes out is beyond the server's limits (``scale``, ``pad``, ``zoompan``
        and friends choose their own output size, whatever the input's)."""
        if media == "video":
            assert isinstance(plan, VideoPlan)
            frame: Frame = av.VideoFrame(plan.width, plan.height, _PLANAR_LAYOUT[plan.format][0])
        else:
            assert isinstance(plan, AudioPlan)
            frame = av.AudioFrame(format=plan.format, layout=_layout(plan.num_channels), samples=1024)
            frame.sample_rate = plan.sample_rate
        for plane in frame.planes:
            np.frombuffer(memoryview(plane), dtype=np.uint8)[:] = 128 if getattr(plan, "format", "") == "u8" else 0
        frame.pts = 0
        frame.time_base = Fraction(1, 1) / plan.rate
        try:
            out = _FilterChain(source, media, steps).first(frame)
        except Exception as exc:
            raise SetupError(
                f"filter chain refused a first frame: {describe_error(exc)}", where + ".filter_desc"
            ) from exc
        problem = _beyond_limits(out, self.plan.limits) if out is not None else None
        if problem is not None:
            raise SetupError(f"the filter chain puts out {problem}", where + ".filter_desc")

    def write(self, index: int, array: np.ndarray, pts: float | None) -> None:
        """Encode one chunk of stream ``index`` and mux its packets."""
        self.emit(index, self.frames_for(index, array, pts))

    def _may_lend(self, stream: _VideoStream) -> bool:
        """Whether frames of the session's video ``stream`` may use the client's shared memory as
        it is, which the client writes again once their chunk is acknowledged (after the frames are
        encoded): when every encoder of the stream takes the frame itself, with no filter chain (a
        graph may hold frames back, ``fps`` does), and is one that copies each frame before
        ``encode`` returns (``COPYING_ENCODERS``)."""
        encoders = self._by_stream[stream.plan.index]
        return all(e.chain is None and e.stream.codec_context.name in COPYING_ENCODERS for e in encoders)

    def frames_for(self, index: int, array: np.ndarray, pts: float | None, memory: Memory = Memory.RING) -> ChunkFrames:
        """Place a chunk on its stream's timeline and build its frames (nothing encoded yet).

        Each frame's ``pts * time_base`` is its media time in seconds. Silence for a gap before
        the chunk is built later, as the encoder takes it (``ChunkFrames``). ``memory``: whose
        memory the array is, which decides whether frames may use it as it is (``Memory``).

        Raises:
            InvalidChunk: its pts goes backwards or jumps too far (``Timeline``).
        """
        stream = self.streams[index]
        previous_end = stream.timeline.next_tick
        start = stream.timeline.start_of(array.shape[0], pts)
        stream.timeline.advance(start, array.shape[0])
        stream.stats.chunks += 1
        stream.stats.frames += array.shape[0]
        return ChunkFrames(stream.gap(previous_end, start), stream.ready(stream.frames(array, start, memory)))

    def emit(self, index: int, frames: Iterable[Frame]) -> None:
        """Encode frames of stream ``index`` and mux the packets into every output as they come out.

        Raises:
            QuotaReached: the session's output quota ran out; what was encoded before is muxed.
            FilterOutputRefused: the stream's filter chain put out frames beyond the limits.
        """
        encoders = self._by_stream[index]
        if len(encoders) == 1:
            self._fan_out(encoders[0], encoders[0].encode(frames, self.meter))
            return
        # Several encoders of this stream (an output that cannot share the session's): each frame
        # goes to each, in turn, so a gap's silence is still built a piece at a time.
        for frame in frames:
            for encoder in encoders:
                self._fan_out(encoder, encoder.encode([frame], self.meter, counted=encoder is encoders[0]))

    def _fan_out(self, encoder: _Stream, packets: Iterable[av.Packet[Any]]) -> None:
        index = encoder.plan.index
        primary = encoder is self.streams[index]
        for packet in packets:
            if primary:
                counts = encoder.stats
                counts.packets += 1
                counts.bytes += packet.size
            users = self._users[id(encoder)]
            last = len(users) - 1
            for i, link in enumerate(list(users)):
                try:
                    position = self._positions.get((link.plan.index, id(encoder)), index)
                    link.mux(packet, position, copy=i != last)  # the last output takes the packet itself
                except (QuotaReached, FilterOutputRefused, MemoryError):
                    raise  # the session's own limits: the session stops
                except Exception as exc:  # this output broke (a network one reconnects by itself)
                    self._failed(link, exc, describe_error(exc))
            self.meter.packet(packet.size)
            if not self.meter.closing:
                self.disk.muxed(packet.size)

    def close(self) -> None:
        """Flush every filter chain and encoder, write every output's trailer and close. Runs once.

        A quota that runs out while a filter chain flushes (``tpad`` can pad forever) stops that
        chain: its encoder is flushed without it, the outputs are finalized all the same, and
        ``stopped`` says why.
        """
        if self._closed:
            return
        self.meter.closing = True
        try:
            for stream in self.encoders:
                try:
                    self._fan_out(stream, stream.encode([None], self.meter))
                except QuotaReached as exc:
                    self.stopped = self.stopped or str(exc)
                    if exc.flush:
                        self._fan_out(stream, stream.stream.encode(None))
        finally:
            self._close_outputs()

    def finish_early(self, reason: str, flush: bool = True) -> None:
        """Finalize the outputs after a quota ran out or encoding failed: flush the encoders unless
        told not to (never the filter chains, which may never end), write the trailers, close;
        ``stopped`` says why."""
        if self._closed:
            return
        self.stopped = reason
        self.meter.closing = True
        try:
            for stream in self.encoders if flush else ():
                self._fan_out(stream, stream.stream.encode(None))
        finally:
            self._close_outputs()

    def _close_outputs(self) -> None:
        """Write every working output's trailer; the first failure is raised once all are closed."""
        self._closed = True
        error: Exception | None = None
        for link in self.active:
            try:
                link.close()
            except Exception as exc:
                error = error or exc
        _close_quietly(self.home)
        if error is not None:
            raise error

    def _abort(self) -> None:
        self._closed = True
        for output in getattr(self, "outputs", []):
            output.abort()
        _close_quietly(self.home)

    def stats(self) -> tuple[StreamStats, ...]:
        """Every stream's totals so far."""
        return tuple(
            StreamStats(s.stats.chunks, s.stats.frames, s.stats.packets, s.stats.bytes, round(seconds, 6))
            for s, seconds in zip(self.streams, self.meter.seconds)
        )

    def output_stats(self) -> tuple[OutputStats, ...]:
        """Every output's totals so far, failed ones included."""
        return tuple(output.stats() for output in self.outputs)


def _disk_bytes(outputs: list[Output[OutputPlan] | Relay | RotatingOutput]) -> int:
    """The bytes the session's server files take on disk now."""
    return sum(output.disk_bytes() for output in outputs if not isinstance(output, Relay))


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # the container is broken already; the original error is what matters
        log.debug("closing a half-open container failed", exc_info=True)
