"""A recording that rotates: one file after another, each cut on a keyframe and playable alone.

``ServerFile("rec/cam.mkv", segment_time=600)`` is written as ``cam-00000.mkv``, ``cam-00001.mkv``,
... (or names from a strftime pattern). ``RotatingOutput`` takes the session's packets like any
output and hands them to an ``Output`` for the current file; the first video keyframe at or after
the next boundary (``segment_time`` seconds after the first packet, then twice that, ...) closes
that file (its trailer written) and begins the next, whose timestamps start from zero. The plan
puts keyframes on the boundaries (``segmenting.rotation_keyframe_seconds``), so files last
``segment_time`` each. Without video, any packet past the boundary begins the next file.

framecast cuts the files itself rather than through FFmpeg's ``segment`` muxer, which holds the
open file's last seconds back (a kill lost all of the current file): here each file is an
ordinary output with the crash-safe options of a single file, so a crash loses what a single
file would lose, a second or two. Each file is created exclusively in the recording's directory,
reached and opened without following a symlink. As each file is finished, a line
``name,start,end`` (media seconds) goes into ``NAME.segments.csv`` beside them, which session info
and downloads read, and ``retention`` deletes the oldest files as new ones begin.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import av

from framecast_server.encoder.errors import SetupError
from framecast_server.encoder.output import Output, copy_packet
from framecast_server.messages import OutputStats
from framecast_server.planning.plan import OutputPlan
from framecast_server.planning.segmenting import SegmentPlan, open_directory

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _File:
    """One file of a rotating recording, as its ``Output`` sees its destination."""

    muxer: str
    options: dict[str, str]
    where: str
    target: str = "stream"  # a file object: the one created here
    path: str | None = None
    given_url: str | None = None
    live: bool = False
    segments: None = None


class RotatingOutput:
    """A rotating recording: the current file's ``Output``, and when to begin the next.

    Args:
        plan: the recording (``plan.segments`` says how it rotates).
        templates: the encoders' streams, in stream order.
        metadata: the session's container metadata, in every file.
        clock: seconds since the epoch (file names from a strftime pattern, retention by age).
    """

    def __init__(
        self,
        plan: OutputPlan,
        templates: Sequence[av.stream.Stream],
        metadata: dict[str, str],
        clock: Any = time.time,
    ) -> None:
        assert plan.segments is not None and plan.segments.rotating
        self.plan = plan
        self.segments: SegmentPlan = plan.segments
        self.streams = list(templates)
        self._metadata = metadata
        self.clock = clock
        self._video = {i for i, stream in enumerate(templates) if stream.type == "video"}
        self.warnings: list[str] = []
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.reconnects = 0
        self.closed = False
        self._dir_fd = open_directory(self.segments.root, self.segments.subdir)
        self._current: Output[_File] | None = None
        self._file: BinaryIO | None = None
        self._name = ""
        self._index = 0
        self._origin: float | None = None  # media seconds of the recording's first packet
        self._begun = 0.0  # media seconds at which the current file begins
        self._last = 0.0  # media seconds of the latest packet
        #: Finished files still on disk, oldest first: (name, when it was finished).
        self._kept: list[tuple[str, float]] = []

    def start(self) -> None:
        """Create the first file and write its header.

        Raises:
            SetupError: the muxer refused the streams, or the file cannot be created.
        """
        self._begin(0.0)
        self.warnings.extend(self._current.warnings if self._current else [])

    def mux(self, packet: av.Packet[Any], index: int, copy: bool = True) -> None:
        """Mux ``packet`` of stream ``index`` into the current file, beginning the next file first
        when this packet is where it should begin."""
        seconds = _seconds(packet)
        if self._origin is None and seconds is not None:
            self._origin = seconds
        if seconds is not None and self._origin is not None:
            at = seconds - self._origin
            boundary = (self._index + 1) * self.segments.segment_seconds
            starts_here = packet.is_keyframe and (index in self._video or not self._video)
            if at >= boundary - 1e-6 and starts_here:
                self._rotate(at)
            self._last = max(self._last, at)
        out = copy_packet(packet) if copy else packet
        _shift(out, self._begun + (self._origin or 0.0))
        assert self._current is not None
        self._current.mux(out, index, copy=False)
        self.packets += 1
        self.bytes += packet.size

    def _rotate(self, at: float) -> None:
        """Finish the current file at media second ``at`` and begin the next there."""
        self._finish(at)
        self._index += 1
        self._begin(at)
        self._retain()

    def _begin(self, at: float) -> None:
        name = self.segments.segment_name(self._index, self.clock())
        try:
            try:
                fd = os.open(name, _CREATE, 0o644, dir_fd=self._dir_fd)
            except FileExistsError:
                if self.segments.name_pattern is None:
                    raise
                name = self.segments.another_name(name, self._index)
                fd = os.open(name, _CREATE, 0o644, dir_fd=self._dir_fd)
        except OSError as exc:
            why = "a symlink is there; not followed" if exc.errno == 40 else exc.strerror
            raise SetupError(f"cannot create {name!r} of the recording: {why}", self.plan.where + ".path") from exc
        self._file = os.fdopen(fd, "wb", buffering=0)  # what the muxer flushes is in the file
        destination = _File(self.plan.muxer, dict(self.plan.options), self.plan.where)
        self._current = Output(destination, self.streams, self._metadata, self._file)
        self._current.start()
        self._name = name
        self._begun = at

    def _finish(self, end: float) -> None:
        """Write the current file's trailer and list it (name, start, end in media seconds)."""
        current, self._current = self._current, None
        if current is None:
            return
        try:
            current.close()
        finally:
            self._close_file()
        line = f"{self._name},{self._begun:.6f},{max(end, self._begun):.6f}\n"
        fd = os.open(self.segments.playlist, _APPEND, 0o644, dir_fd=self._dir_fd)
        with os.fdopen(fd, "w", encoding="utf-8") as listing:
            listing.write(line)
        self._kept.append((self._name, self.clock()))

    def _retain(self) -> None:
        """Delete the oldest finished files past the retention: beyond the newest ``keep_count``
        (the one just begun counted), or finished longer than ``keep_seconds`` ago."""
        segments = self.segments
        if segments.keep_count is not None:
            doomed = self._kept[: max(0, len(self._kept) - (segments.keep_count - 1))]
        elif segments.keep_seconds is not None:
            limit = self.clock() - segments.keep_seconds
            doomed = [(name, finished) for name, finished in self._kept if finished < limit]
        else:
            return
        for entry in doomed:
            self._kept.remove(entry)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry[0], dir_fd=self._dir_fd)  # the name: never through a link

    def close(self) -> None:
        """Finish the current file. Runs once."""
        if self.closed:
            return
        self.closed = True
        try:
            self._finish(self._last)
        finally:
            self._close_dir()

    def abort(self) -> None:
        """Close without caring whether the trailer could be written (the output broke)."""
        self.closed = True
        current, self._current = self._current, None
        if current is not None:
            current.abort()
        self._close_file()
        self._close_dir()

    def stats(self) -> OutputStats:
        return OutputStats(self.packets, self.bytes, self.dropped, self.reconnects)

    def disk_bytes(self) -> int:
        """The bytes the recording's files take now: those kept, the one being written, the list."""
        return self.segments.disk_bytes()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def _seconds(packet: av.Packet[Any]) -> float | None:
    if packet.pts is None or packet.time_base is None:
        return None
    return float(packet.pts * packet.time_base)


def _shift(packet: av.Packet[Any], seconds: float) -> None:
    """Move ``packet`` ``seconds`` earlier: each file's timestamps start from zero."""
    if not seconds or packet.time_base is None:
        return
    offset = round(seconds / packet.time_base)
    if packet.pts is not None:
        packet.pts -= offset
    if packet.dts is not None:
        packet.dts -= offset
