"""Output quotas: how many bytes and how many seconds of media a session, and an API key, may produce.

A few bytes of input can ask for a lot of output: 16x16 frames upscaled to 8K rawvideo, a pts gap
that the frame-rate conversion fills with duplicates, a filter that emits frames forever (``loop``,
``tpad``, ``zoompan``). Checking the input is not enough, so what comes *out* is counted:

- ``EncoderLimits`` travels in the SessionPlan to the encoder process: the most encoded bytes and
  media seconds this session may still produce, the largest pts gap, the memory limit and the
  size and rate limits that the filter chains' output must respect.
- ``OutputMeter`` runs in the encoder process. Every frame that reaches an encoder (after the
  filter chain: duplicates and generated frames count) adds its duration, every packet its
  size; past either quota it raises ``QuotaReached``, the worker finalizes the output (trailer
  written, playable up to there) and the session fails with the reason.
- ``KeyLedger`` runs on the server: the bytes and seconds each API key's sessions produced since
  the server started, charged as their encoders report, so a key over its quota gets no new
  session and its open ones are stopped.

Seconds are media seconds as encoded: frames / encoder frame rate for video, samples / sample
rate for audio; a session's seconds are those of its longest stream. Bytes are the encoded
packets of all streams (what a client-side destination receives, too); the container's own
framing comes on top (a few percent at most for the usual muxers).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from framecast_server.config import Settings
from framecast_server.errors import OverBudget
from framecast_server.messages import Stats

#: Setting names, quoted in refusals so that an operator knows what to raise.
SESSION_BYTES = "FRAMECAST_MAX_SESSION_BYTES"
SESSION_SECONDS = "FRAMECAST_MAX_SESSION_SECONDS"
KEY_BYTES = "FRAMECAST_MAX_KEY_BYTES"
KEY_SECONDS = "FRAMECAST_MAX_KEY_SECONDS"
PTS_GAP = "FRAMECAST_MAX_PTS_GAP"


@dataclass(frozen=True)
class EncoderLimits:
    """What an encoder process enforces on itself (None: no limit). Picklable, part of the plan.

    ``bytes_setting``/``seconds_setting`` name the setting a quota came from: a session's own, or
    its key's when less of that was left when the session was created.
    """

    max_bytes: int | None = None
    max_seconds: float | None = None
    bytes_setting: str = SESSION_BYTES
    seconds_setting: str = SESSION_SECONDS
    max_pts_gap: float | None = None
    max_disk_bytes: int | None = None  # FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION
    min_free_disk: int | None = None  # FRAMECAST_MIN_FREE_DISK
    memory_limit: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    max_frame_rate: float | None = None
    max_sample_rate: int | None = None
    max_channels: int | None = None


def encoder_limits(settings: Settings) -> EncoderLimits:
    """A session's limits from the server's settings (before its key's quota is applied)."""
    return EncoderLimits(
        max_bytes=settings.max_session_bytes or None,
        max_seconds=settings.max_session_seconds or None,
        max_pts_gap=settings.max_pts_gap,
        max_disk_bytes=settings.max_output_bytes_per_session or None,
        min_free_disk=settings.min_free_disk or None,
        memory_limit=settings.encoder_memory_limit or None,
        max_width=settings.max_width,
        max_height=settings.max_height,
        max_frame_rate=settings.max_frame_rate,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
    )


class QuotaReached(Exception):
    """A session's output quota ran out (or its key's). Not a failure of the encoder: the output
    is finalized and the session stops with this message as its reason.

    ``flush``: whether the frames inside the encoders are still encoded while finalizing. They
    were counted against the media seconds when they went in; but after the byte quota they are
    dropped, since a frame-threaded rawvideo encoder holds a whole 8K frame per thread.
    """

    def __init__(self, message: str, flush: bool = True) -> None:
        super().__init__(message)
        self.flush = flush


class FilterOutputRefused(Exception):
    """A filter chain put out frames beyond the server's size or rate limits, at run time."""


def size_text(n: float) -> str:
    """Bytes for people: '64 GiB', '1.5 MiB', '512 bytes'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{int(n)} bytes"


def _reached(what: str, setting: str) -> str:
    if setting in (KEY_BYTES, KEY_SECONDS):  # ``what`` is only the part that was left of the key's quota
        return f"stopped: this API key's quota ({setting}) is used up; the output is finalized up to there"
    return f"stopped: output quota of {what} ({setting}) reached; the output is finalized up to there"


class OutputMeter:
    """Counts what a session's encoders produce against its ``EncoderLimits`` (encoder process).

    Args:
        limits: the session's limits.
        video_rates: for each stream, its encoder frame rate (video) or None (audio).
    """

    def __init__(self, limits: EncoderLimits, video_rates: list[Fraction | None]) -> None:
        self.limits = limits
        self.bytes = 0
        self.seconds = [0.0] * len(video_rates)
        self._frame_seconds = [None if r is None else float(1 / r) for r in video_rates]
        #: Set by ``OutputWriter.close``: the encoders' last packets are written whatever the quota.
        self.closing = False

    def frame(self, index: int, frame: Any) -> None:
        """Count one frame on its way into stream ``index``'s encoder.

        Raises:
            QuotaReached: the session's media seconds or bytes are used up; the frame is not encoded.
        """
        limits = self.limits
        if limits.max_bytes is not None and self.bytes >= limits.max_bytes:
            raise QuotaReached(_reached(size_text(limits.max_bytes), limits.bytes_setting), flush=False)
        step = self._frame_seconds[index]
        duration = step if step is not None else frame.samples / frame.sample_rate
        if limits.max_seconds is not None and self.seconds[index] + duration > limits.max_seconds + 1e-9:
            raise QuotaReached(_reached(f"{limits.max_seconds:g} s of media", limits.seconds_setting))
        self.seconds[index] += duration

    def packet(self, size: int) -> None:
        """Count one muxed packet.

        Raises:
            QuotaReached: this packet used up the session's bytes (not while closing).
        """
        self.bytes += size
        limits = self.limits
        if limits.max_bytes is not None and self.bytes >= limits.max_bytes and not self.closing:
            raise QuotaReached(_reached(size_text(limits.max_bytes), limits.bytes_setting), flush=False)


@dataclass
class Usage:
    """Bytes and media seconds produced."""

    bytes: int = 0
    seconds: float = 0.0


@dataclass
class KeyAccount:
    """One session's share of its key's usage: charges what its encoder reports as it goes."""

    ledger: KeyLedger
    owner: str
    last: Usage = field(default_factory=Usage)
    stopped: bool = False

    def charge(self, stats: Stats) -> str | None:
        """Charge the session's totals in an encoder's ``stats`` (only what is new since last time).

        Returns:
            why the session must stop, the first time its key is found over a quota; else None.
        """
        now = Usage(sum(s.bytes for s in stats.streams), max((s.seconds for s in stats.streams), default=0.0))
        used = self.ledger.used(self.owner)
        used.bytes += max(0, now.bytes - self.last.bytes)
        used.seconds += max(0.0, now.seconds - self.last.seconds)
        self.last = now
        if self.stopped:
            return None
        reason = self.ledger.over(self.owner)
        self.stopped = reason is not None
        return reason


class KeyLedger:
    """What each API key's sessions produced since the server started (a restart starts over).

    Keys are named by their fingerprint (``Session.owner``); sessions created without a key are
    not counted. A key's quota holds across all of its sessions, open and finished.
    """

    def __init__(self, max_bytes: int | None, max_seconds: float | None) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._used: dict[str, Usage] = {}

    def used(self, owner: str) -> Usage:
        return self._used.setdefault(owner, Usage())

    def over(self, owner: str) -> str | None:
        """Why ``owner`` may produce nothing more, or None."""
        used = self._used.get(owner)
        if used is None:
            return None
        if self.max_bytes is not None and used.bytes >= self.max_bytes:
            return (
                f"stopped: this API key's output quota of {size_text(self.max_bytes)} ({KEY_BYTES}) is used up "
                f"({size_text(used.bytes)} written since the server started)"
            )
        if self.max_seconds is not None and used.seconds >= self.max_seconds:
            return (
                f"stopped: this API key's quota of {self.max_seconds:g} s of media ({KEY_SECONDS}) is used up "
                f"({used.seconds:.1f} s since the server started)"
            )
        return None

    def admit(self, owner: str | None, limits: EncoderLimits) -> tuple[EncoderLimits, KeyAccount | None]:
        """A new session's limits, narrowed to what its key has left, and its account.

        Raises:
            OverBudget: the key has used up a quota.
        """
        if owner is None:
            return limits, None
        reason = self.over(owner)
        if reason is not None:
            raise OverBudget(reason.removeprefix("stopped: ") + "; no new session can start")
        used = self.used(owner)
        if self.max_bytes is not None and (limits.max_bytes is None or self.max_bytes - used.bytes < limits.max_bytes):
            limits = dataclasses.replace(limits, max_bytes=self.max_bytes - used.bytes, bytes_setting=KEY_BYTES)
        if self.max_seconds is not None and (
            limits.max_seconds is None or self.max_seconds - used.seconds < limits.max_seconds
        ):
            limits = dataclasses.replace(
                limits, max_seconds=self.max_seconds - used.seconds, seconds_setting=KEY_SECONDS
            )
        return limits, KeyAccount(self, owner)


class DiskGuard:
    """Keeps a session's files from filling the disk (encoder process), the way a quota does: past
    ``max_disk_bytes`` of its server files on disk now (a single file's size; a playlist's and its
    segments'; a rotating recording's files still kept: those that delete old files can stream for
    ever within it), or below ``min_free_disk`` free on the output directory's filesystem, the
    output is finalized and the session stops with the reason.

    Read at most every ``every`` seconds, and after each ``step`` bytes muxed (a sixteenth of the
    limit, at most 1 MiB), so a fast writer overshoots by little: a stat per file and a statvfs.

    Args:
        limits: the session's limits.
        directory: the output directory, or None (the free space is then not watched).
        usage: the bytes the session's files take now.
    """

    def __init__(
        self,
        limits: EncoderLimits,
        directory: str | None,
        usage: Callable[[], int],
        every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.directory = directory
        self.usage = usage
        self.every = every
        self.clock = clock
        self.active = limits.max_disk_bytes is not None or (limits.min_free_disk is not None and directory is not None)
        self.step = min(1 << 20, (limits.max_disk_bytes or 1 << 24) // 16)
        self._next = 0.0
        self._since = 0

    def muxed(self, size: int) -> None:
        """Count ``size`` bytes muxed; look at the disk when it is time to.

        Raises:
            QuotaReached: the session's files reached their limit, or the disk is nearly full.
        """
        if not self.active:
            return
        self._since += size
        if self._since < self.step and self.clock() < self._next:
            return
        self._since = 0
        self._next = self.clock() + self.every
        self.check()

    def check(self) -> None:
        """Look at the disk now (``muxed`` does, when it is time to)."""
        limit = self.limits.max_disk_bytes
        if limit is not None:
            used = self.usage()
            if used >= limit:
                raise QuotaReached(
                    f"stopped: the session's files take {size_text(used)} of disk, its limit is {size_text(limit)} "
                    "(FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION); the output is finalized up to there",
                    flush=False,
                )
        least = self.limits.min_free_disk
        if least is not None and self.directory is not None:
            free = free_bytes(self.directory)
            if free < least:
                raise QuotaReached(
                    f"stopped: {size_text(free)} left on the output directory's disk, less than "
                    f"FRAMECAST_MIN_FREE_DISK ({size_text(least)}); the output is finalized up to there",
                    flush=False,
                )


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on ``directory``'s filesystem."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize
