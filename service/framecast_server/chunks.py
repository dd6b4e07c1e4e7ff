"""Checking chunks against their streams and placing them on each stream's timeline.

The server runs ``ChunkChecker`` on the event loop for every chunk before it goes anywhere near an
encoder, so a wrong chunk is refused with a message naming what was expected and what came, and
the session goes on. The encoder process runs the same ``Timeline`` arithmetic on the chunks it is
given, so both sides agree on every pts without sending it twice.

Timelines count in ticks: samples for audio, frames for video. A chunk's explicit pts (seconds)
is rounded to the nearest tick; it may leave a gap but never go back before the end of the
previous chunk. The gap is bounded (``max_gap``, FRAMECAST_MAX_PTS_GAP): an encoder fills it with
silence, or with repeated frames where the frame rate is converted, so two tiny chunks far apart
would otherwise ask for any amount of output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from framecast import yuv
from framecast.protocol import ChunkHeader
from framecast_server.errors import InvalidChunk
from framecast_server.planning.plan import AudioPlan, StreamPlan, VideoPlan
from framecast_server.quotas import PTS_GAP


@dataclass
class Timeline:
    """Monotonic pts of one stream, in ticks of ``1/rate`` seconds; ``max_gap`` (seconds, None for
    no limit) bounds how far a chunk's pts may jump past the end of the one before."""

    rate: Fraction
    next_tick: int = 0
    max_gap: float | None = None

    def start_of(self, count: int, pts: float | None) -> int:
        """Where a chunk of ``count`` ticks with optional ``pts`` seconds starts.

        Raises:
            InvalidChunk: the pts goes backwards, or jumps further ahead than ``max_gap``.
        """
        if pts is None:
            return self.next_tick
        if not math.isfinite(pts):
            raise InvalidChunk(f"pts {pts} is not a finite number of seconds")
        tick = round(Fraction(pts) * self.rate)
        end = float(self.next_tick / self.rate)
        if tick < self.next_tick:
            raise InvalidChunk(
                f"pts {pts:.6f} s (tick {tick}) goes backwards: the previous chunk ends at "
                f"{end:.6f} s (tick {self.next_tick})"
            )
        if self.max_gap is not None and tick - self.next_tick > self.max_gap * self.rate:
            raise InvalidChunk(
                f"pts {pts:.6f} s jumps {pts - end:.6f} s past the end of the previous chunk ({end:.6f} s); "
                f"a gap is filled with silence or repeated frames, and this server fills at most "
                f"{self.max_gap:g} s ({PTS_GAP})"
            )
        return tick

    def advance(self, start: int, count: int) -> None:
        self.next_tick = start + count


def _expected_shape(stream: StreamPlan) -> Sequence[int | None]:
    if isinstance(stream, AudioPlan):
        return (None, stream.num_channels)
    assert isinstance(stream, VideoPlan)
    if stream.wire_format == "yuv420p":  # planning/wire.py: the client converted; planes back to back
        return (None, yuv.frame_bytes(stream.width, stream.height))
    return (None, stream.channels, stream.height, stream.width)


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("frames" if d is None else str(d) for d in shape) + ")"


class ChunkChecker:
    """Validates chunk headers of one session against its streams; ``max_pts_gap`` as in Timeline."""

    def __init__(self, streams: list[StreamPlan], max_pts_gap: float | None = None) -> None:
        self.streams = streams
        self.timelines = [Timeline(s.rate, max_gap=max_pts_gap) for s in streams]

    def check(self, header: ChunkHeader) -> int:
        """Check ``header`` and advance its stream's timeline; return the chunk's first tick.

        Raises:
            InvalidChunk: naming what was expected and what came.
        """
        if header.stream >= len(self.streams):
            raise InvalidChunk(
                f"chunk {header.seq}: stream index {header.stream} does not exist; "
                f"this session has streams 0..{len(self.streams) - 1}"
            )
        stream = self.streams[header.stream]
        where = f"chunk {header.seq} for stream {header.stream} ({stream.type})"
        if header.dtype != stream.dtype:
            raise InvalidChunk(
                f"{where}: expected dtype {stream.dtype.label} (format {stream.format!r}), got {header.dtype.label}"
            )
        expected = _expected_shape(stream)
        shape = header.shape
        if len(shape) != len(expected) or any(e is not None and e != g for e, g in zip(expected, shape)):
            wired = " (yuv420p planes: wire_format)" if len(expected) == 2 and stream.type == "video" else ""
            raise InvalidChunk(f"{where}: expected shape {_shape_text(expected)}{wired}, got {tuple(shape)}")
        timeline = self.timelines[header.stream]
        try:
            start = timeline.start_of(shape[0], header.pts)
        except InvalidChunk as exc:
            raise InvalidChunk(f"{where}: {exc}") from None
        timeline.advance(start, shape[0])
        return start
