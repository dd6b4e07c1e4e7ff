"""Encoder memory: what a session's encoders will need, what the server has to give, and the limit
every encoder process runs under.

An encoder holds frames: x264 at its default preset keeps ~40 frames of lookahead, B-frames,
references and one frame per thread, each in several forms (planes, half-resolution copies,
motion data). Measured on this machine (2 cores, peak RSS over the ~95 MiB a PyAV encoder process
starts with): x264 medium 1080p 410 MiB, veryfast 230, ultrafast 75, zerolatency 125; 4K medium
1.4 GiB; 8K medium 4.2 GiB, with 5.8 GiB of address space. So a session of small frames can
still ask for gigabytes, and sixteen such streams for far more than the machine has.

Three defences, all here:

- ``estimate(plan)``: the bytes a session's encoder process is expected to hold at its peak,
  from each stream's encoder frame size and the frames its encoder keeps (from the preset and
  ``rc-lookahead``, ``bf``, ``refs``, ``threads``), plus the chunks on their way to it.
  Deliberately on the high side (``tests/test_quotas.py`` holds real encoders' peaks under it).
- ``EncoderMemoryBudget``: admission. A session whose estimate does not fit into what is left of the
  server's budget (``FRAMECAST_MEMORY_BUDGET`` minus the estimates of open sessions) is refused
  with 503; one that could never fit into one encoder process's limit with 422.
- ``limit_address_space`` and ``out_of_memory``: in the encoder process, an RLIMIT_AS
  (``FRAMECAST_ENCODER_MEMORY_LIMIT``), so that an estimate that was wrong ends that one
  session with a clear reason instead of the kernel's OOM killer picking a process. RLIMIT_AS
  counts address space, not resident memory: thread stacks and malloc arenas reserve more than
  they touch, so the limit must sit well above the estimate (``address_space``).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from collections.abc import Iterable

import av

from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig, OverBudget
from framecast_server.planning.plan import AudioPlan, SessionPlan, StreamPlan, VideoPlan
from framecast_server.quotas import size_text

MEMORY_LIMIT = "FRAMECAST_ENCODER_MEMORY_LIMIT"
MEMORY_BUDGET = "FRAMECAST_MEMORY_BUDGET"

#: An encoder process before its first frame: Python, PyAV and FFmpeg, numpy (measured ~95 MiB RSS).
BASELINE = 128 << 20

#: x264's presets: (rc-lookahead, bframes, refs).
_X264_PRESETS = {
    "ultrafast": (0, 0, 1),
    "superfast": (0, 3, 1),
    "veryfast": (10, 3, 1),
    "faster": (20, 3, 2),
    "fast": (30, 3, 2),
    "medium": (40, 3, 3),
    "slow": (50, 3, 5),
    "slower": (60, 3, 8),
    "veryslow": (60, 8, 16),
    "placebo": (60, 16, 16),
}
#: Bytes x264 holds per frame it keeps, in frames of the encoder's size (planes with borders,
#: half-resolution lookahead planes, motion vectors): fitted to the measurements above (2.2),
#: with some margin.
_X264_COPIES = 2.5
#: Frames other encoders hold at their defaults, in frames of the encoder's size (measured at
#: 1080p: libvpx-vp9 ~90, libsvtav1 ~85 plus ~150 MiB of its own, mpeg4 ~22).
_OTHER_ENCODERS = {
    "libx265": 120,
    "libvpx-vp9": 100,
    "libvpx": 60,
    "libsvtav1": 140,
    "libaom-av1": 120,
    "librav1e": 120,
    "libkvazaar": 100,
}
#: Encoders that code each frame on its own hold the frame and its packet, per thread.
_INTRA_ENCODERS = {
    "rawvideo": 2,
    "png": 6,
    "apng": 6,
    "mjpeg": 6,
    "ljpeg": 6,
    "ffv1": 6,
    "ffvhuff": 6,
    "huffyuv": 6,
    "utvideo": 6,
    "magicyuv": 6,
    "qtrle": 6,
    "prores": 6,
    "prores_ks": 6,
    "dnxhd": 6,
    "v210": 4,
    "gif": 6,
    "bmp": 4,
    "tiff": 4,
}
_DEFAULT_FRAMES = 24
#: Frames a filter chain is expected to keep: at the larger of the input and encoder size for a
#: chain of the client's (it may scale), at the input's size for a frame-rate conversion alone.
_FILTER_FRAMES = 4
#: Frames in flight before the encoder: converted to its size and format, waiting to be encoded.
_CONVERTED_FRAMES = 2
#: Seconds of samples an audio stream holds (its encoder's frame, the resampler, a chunk).
_AUDIO_SECONDS = 2
_AUDIO_BASE = 16 << 20


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def frame_bytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one frame of ``pix_fmt`` at ``width`` x ``height`` (all planes, no padding)."""
    try:
        fmt = av.VideoFormat(pix_fmt, width, height)
        return sum(c.width * c.height * max(1, (c.bits + 7) // 8) for c in fmt.components)
    except Exception:  # a format PyAV cannot describe: assume 4 bytes a pixel
        return width * height * 4


def _int_option(options: dict[str, str], *names: str) -> int | None:
    for name in names:
        try:
            return int(options[name])
        except (KeyError, ValueError):
            continue
    return None


def _x264_frames(stream: VideoPlan, realtime: bool) -> float:
    """Frame-sized buffers x264 is expected to hold, from its preset and options."""
    options = stream.encoder_option
    lookahead, bframes, refs = _X264_PRESETS.get(options.get("preset", "medium"), _X264_PRESETS["medium"])
    zerolatency = "zerolatency" in options.get("tune", "")
    if zerolatency:
        lookahead, bframes = 0, 0
    configured_b = stream.codec_config.get("max_b_frames")
    if configured_b not in (None, -1):
        bframes = int(configured_b)
    lookahead = _first(_int_option(options, "rc-lookahead", "rc_lookahead"), lookahead)
    bframes = _first(_int_option(options, "bf", "bframes"), bframes)
    refs = _first(_int_option(options, "refs"), refs)
    threads = _int_option(options, "threads")
    if not threads:
        # Files: frame threads, 1.5 per core (x264's own choice); paced outputs and zerolatency
        # use slice threads, a single frame in flight.
        threads = 1 if realtime or zerolatency else max(1, int(_cores() * 1.5))
    return _X264_COPIES * (max(0, lookahead) + max(0, bframes) + max(1, refs) + 2 * threads + 8)


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


def stream_bytes(stream: StreamPlan, realtime: bool) -> int:
    """Bytes one stream's encoder (and filter chain, and pacing) is expected to hold at its peak."""
    if isinstance(stream, AudioPlan):
        rate = max(stream.sample_rate, stream.encoder_sample_rate)
        channels = max(stream.num_channels, stream.encoder_num_channels)
        return _AUDIO_BASE + _AUDIO_SECONDS * rate * channels * 8
    size = frame_bytes(stream.encoder_format, stream.encoder_width, stream.encoder_height)
    if stream.encoder in ("libx264", "libx264rgb"):
        frames = _x264_frames(stream, realtime)
    else:
        frames = _OTHER_ENCODERS.get(stream.encoder) or _INTRA_ENCODERS.get(stream.encoder, _DEFAULT_FRAMES)
    need = int(size * (frames + _CONVERTED_FRAMES))
    if stream.filter_desc:
        largest = max(stream.width * stream.height, stream.encoder_width * stream.encoder_height)
        need += _FILTER_FRAMES * largest * 4
    elif stream.frame_rate != stream.encoder_frame_rate:
        need += _FILTER_FRAMES * stream.width * stream.height * 4
    if realtime:  # the pacer holds about a second of frames, two while a stream catches up
        need += min(256 << 20, int(2 * stream.frame_rate * frame_bytes("gbrp", stream.width, stream.height)))
    return need


def estimate(plan: SessionPlan, in_flight: int = 0) -> int:
    """Bytes the encoder process of ``plan`` is expected to hold at its peak (resident), with
    ``in_flight`` bytes of chunks on their way to its encoders (``chunks_in_flight``). Every encoder
    counts: the session's, and those of outputs that cannot share them."""
    if not plan.encode:
        return BASELINE + in_flight
    return BASELINE + in_flight + sum(stream_bytes(s, plan.realtime) for s in plan.encoders)


def chunks_in_flight(settings: Settings) -> int:
    """Chunk bytes an encoder process can hold besides its frames: the shared memory they arrive
    through (``FRAMECAST_ENCODER_BUFFER_BYTES``, its pages touched as chunks pass) and the two
    chunks whose frames wait, built, for the encoder (each up to ``FRAMECAST_MAX_MESSAGE_BYTES``)."""
    return settings.encoder_buffer_bytes + 2 * settings.max_message_bytes


def address_space(resident: int) -> int:
    """Address space an encoder process holding ``resident`` bytes reserves: thread stacks and
    malloc arenas reserve more than they touch (measured: 1.35 times the peak RSS at 4K and 8K,
    340 MiB more at 1080p)."""
    return int(resident * 1.25) + (256 << 20)


def default_budget() -> int:
    """Three quarters of this machine's physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return total * 3 // 4


class EncoderMemoryBudget:
    """Admission of sessions by the memory their encoders will need.

    Args:
        total: bytes all open sessions' encoders may hold together (``FRAMECAST_MEMORY_BUDGET``).
        per_encoder: one encoder process's address-space limit (``FRAMECAST_ENCODER_MEMORY_LIMIT``),
            None for none.
        in_flight: chunk bytes each encoder process may hold besides its frames (``chunks_in_flight``).
    """

    def __init__(self, total: int, per_encoder: int | None, in_flight: int = 0) -> None:
        self.total = total
        self.per_encoder = per_encoder
        self.in_flight = in_flight

    def admit(self, plan: SessionPlan, open_plans: Iterable[SessionPlan]) -> int:
        """Check that ``plan``'s encoder fits; return its estimate.

        Raises:
            InvalidConfig: it could never fit into one encoder process (names ``streams``).
            OverBudget: it does not fit into what open sessions leave of the budget now.
        """
        need = estimate(plan, self.in_flight)
        if self.per_encoder is not None and address_space(need) > self.per_encoder:
            raise InvalidConfig(
                f"these streams need an estimated {size_text(need)} of encoder memory "
                f"({self._breakdown(plan)}), {size_text(address_space(need))} of address space with thread "
                f"stacks and allocator reserves: more than one encoder process may have "
                f"({size_text(self.per_encoder)}, {MEMORY_LIMIT}); use fewer or smaller streams, or a lighter "
                "preset or fewer rc-lookahead, bf, refs or threads",
                "streams",
            )
        held = [estimate(p, self.in_flight) for p in open_plans]
        left = self.total - sum(held)
        if need > left:
            raise OverBudget(
                f"this session needs an estimated {size_text(need)} of encoder memory; "
                f"{size_text(max(0, left))} of this server's {size_text(self.total)} ({MEMORY_BUDGET}) is left, "
                f"{len(held)} open {'session holds' if len(held) == 1 else 'sessions hold'} the rest; "
                "try again later or with smaller streams"
            )
        return need

    @staticmethod
    def _breakdown(plan: SessionPlan) -> str:
        parts = [f"streams.{s.index} {size_text(stream_bytes(s, plan.realtime))}" for s in plan.encoders]
        if len(parts) > 4:
            parts = parts[:3] + [f"{len(parts) - 3} more"]
        return ", ".join(parts)


# -- in the encoder process --------------------------------------------------------------------


def limit_address_space(limit: int | None) -> None:
    """Cap this process's address space at ``limit`` bytes (never above an existing hard limit)."""
    if limit is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def peak_address_space() -> int | None:
    """The most address space this process has had (VmPeak), or None where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Words FFmpeg and its libraries log when an allocation fails (x264: "malloc of size N failed").
_ALLOCATION_WORDS = (
    "malloc",
    "out of memory",
    "cannot allocate memory",
    "can't start new thread",
    "failed to allocate",
    "allocation failed",
)


def out_of_memory(exc: BaseException, text: str, limit: int | None) -> bool:
    """Whether ``exc`` (described by ``text``) came from an allocation that the limit refused.

    Python says MemoryError, FFmpeg ENOMEM; libraries such as x264 log a failed malloc and
    return a generic error, so their words count too, as does a process that got within 64 MiB
    of its limit before the error.
    """
    if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM:
        return True
    if limit is None:
        return False
    if any(word in text.lower() for word in _ALLOCATION_WORDS):
        return True
    peak = peak_address_space()
    return peak is not None and peak >= limit - (64 << 20)


def oom_reason(limit: int | None) -> str:
    where = f": limit {limit >> 20} MiB ({MEMORY_LIMIT})" if limit is not None else ""
    return f"encoder process ran out of memory{where}"


#: Signals a process dies of when an allocation fails where nothing checks it (a library that
#: dereferences a NULL from malloc, or aborts). Not SIGKILL: that is someone's kill -9 as often
#: as the kernel's OOM killer, which RLIMIT_AS keeps encoders away from.
_ALLOCATION_DEATHS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT}


def death_hint(exitcode: int | None, limit: int | None) -> str:
    """For an encoder process that died of ``exitcode``: what to suspect, or ''. Whether it ran out
    of memory cannot be known from outside; a signal that allocation failures end in says maybe."""
    if exitcode is None or exitcode >= 0 or -exitcode not in _ALLOCATION_DEATHS:
        return ""
    if limit is None:
        return "; it may have run out of memory"
    return f"; it may have run out of memory: limit {limit >> 20} MiB ({MEMORY_LIMIT})"
