"""Real-time pacing: frames leave at their media time, as ``ffmpeg -re`` sends them.

A live output must not get a minute of media in a second: receivers buffer a little and drop or
stall on the rest. The ``Pacer`` holds built frames of every stream in one queue ordered by media
time and releases each when the wall clock reaches it, measured from an anchor set by the first
frame's arrival. Because the schedule is absolute (anchor + media time), sleeping late once does
not add up: drift stays at scheduling jitter however long the stream runs.

A chunk arrives when the server has it whole, not when the encoder gets to it (``arrived``): an
encoder process that starts streaming on a busy machine may take its first descriptors a second
late, all at once, and a schedule anchored on that would hold every frame after them by as much,
for the rest of the session. Measured with 23 real-time sessions on two cores: the sessions that
started last took their first frames 1.0-1.2 s after the server did, and then held every frame
115-130 ms (BENCHMARKS.md, issue 18).

The first frame is often slow to arrive too (a connection warming up, a client's first write),
and an anchor set by it would add its delay to every frame after it. So during the first
``settle`` seconds of media the anchor may move earlier: when a frame arrives to an empty queue
ahead of its slot, the client writes in real time and the schedule follows it. Only then: later,
an empty queue also happens whenever a client waits for its ACKs between large chunks, and
following those arrivals would let the stream run ahead of real time a little every time.

Ordering across streams is what makes audio and video interleave at the receiver whatever chunk
sizes the client writes; the worker reads ahead (bounded) while one stream's queue is empty so a
late-arriving stream can catch up with the other.

The pacer also decides when a chunk is acknowledged: once its last frame has left, and only in
sequence order, since ACKs are cumulative.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framecast_server.messages import PacingStats


@dataclass(order=True)
class _Item:
    t: float
    order: int
    stream: int = field(compare=False)
    frame: Any = field(compare=False)
    seq: int = field(compare=False)
    nbytes: int = field(compare=False)


class Pacer:
    """A media-time ordered queue released by the wall clock.

    Args:
        streams: number of streams in the session.
        lookahead: seconds of media to hold beyond the wall clock before refusing more.
        catch_up: seconds of media to hold while a stream's queue is empty, so that stream's
            chunks can arrive and interleave.
        max_bytes: upper bound on buffered frame bytes, whatever the above say.
        settle: seconds of media during which the anchor may move earlier (see above).
        clock: monotonic clock (seconds).
    """

    def __init__(
        self,
        streams: int,
        lookahead: float = 1.0,
        catch_up: float = 10.0,
        max_bytes: int = 256 << 20,
        settle: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle = settle
        self.lookahead = lookahead
        self.catch_up = catch_up
        self.max_bytes = max_bytes
        self.clock = clock
        self.anchor: float | None = None
        self.max_lateness = 0.0
        self.released_media = 0.0
        self._heap: list[_Item] = []
        self._order = itertools.count()
        self._pending = [0] * streams
        self._active = [False] * streams
        self._newest = 0.0
        self._bytes = 0
        self._remaining: dict[int, int] = {}
        self._seqs: collections.deque[int] = collections.deque()
        self._bases: dict[int, tuple[int, int]] = {}  # each stream's time base, as a fraction

    def add(self, stream: int, frames: list[Any], seq: int, nbytes: int, arrived: float | None = None) -> None:
        """Queue the frames of chunk ``seq`` of ``stream`` (``nbytes`` of media in all), which
        arrived at ``arrived`` (this pacer's clock; None: now, and never later than now). Every
        frame of a stream has the same time base, its rate's: a frame's time is ``pts * time_base``."""
        heap = self._heap
        if frames:
            base = self._bases.get(stream)
            if base is None:
                time_base = frames[0].time_base
                base = self._bases[stream] = (time_base.numerator, time_base.denominator)
            num, den = base  # int / int: the float nearest the exact time, as float(Fraction) gives
            if not heap or self.anchor is None:
                now = self.clock()
                when = now if arrived is None else min(arrived, now)
                first = min(frame.pts for frame in frames) * num / den
                if self.anchor is None:
                    self.anchor = when - first
                elif first < self.settle:
                    self.anchor = min(self.anchor, when - first)
        self._seqs.append(seq)
        self._remaining[seq] = len(frames)
        self._active[stream] = True
        if not frames:
            return
        share = nbytes // len(frames)
        order = self._order
        for frame in frames:
            t = frame.pts * num / den
            heapq.heappush(heap, _Item(t, next(order), stream, frame, seq, share))
            if t > self._newest:
                self._newest = t
        self._pending[stream] += len(frames)
        self._bytes += share * len(frames)

    def media_now(self, now: float) -> float:
        """The media time the wall clock has reached."""
        return now - self.anchor if self.anchor is not None else (self._heap[0].t if self._heap else 0.0)

    def wants_more(self, now: float) -> bool:
        """Whether the worker should read another chunk now (else it waits: backpressure)."""
        if not self._heap:
            return True
        if self._bytes >= self.max_bytes:
            return False
        ahead = self._newest - self.media_now(now)
        if ahead < self.lookahead:
            return True
        starving = any(active and pending == 0 for active, pending in zip(self._active, self._pending))
        return starving and ahead < self.catch_up

    def next_due(self) -> float | None:
        """Wall-clock time the next frame is due, or None when nothing is queued."""
        if not self._heap:
            return None
        if self.anchor is None:
            return self.clock()
        return self.anchor + self._heap[0].t

    def pop_due(self, now: float) -> list[tuple[int, Any]]:
        """Remove and return (stream, frame) for every frame due by ``now``, in media order."""
        out = []
        while self._heap and self.anchor is not None and self.anchor + self._heap[0].t <= now:
            item = heapq.heappop(self._heap)  # (``add`` set the anchor with the first frames)
            self.max_lateness = max(self.max_lateness, now - (self.anchor + item.t))
            self.released_media = max(self.released_media, item.t)
            self._pending[item.stream] -= 1
            self._bytes -= item.nbytes
            self._remaining[item.seq] -= 1
            out.append((item.stream, item.frame))
        return out

    def completed(self) -> int | None:
        """The highest seq whose chunk, and every chunk before it, has fully left; None if none new."""
        done = None
        while self._seqs and self._remaining.get(self._seqs[0], 0) <= 0:
            done = self._seqs.popleft()
            self._remaining.pop(done, None)
        return done

    def shift(self, seconds: float) -> None:
        """Move the schedule later by ``seconds`` (after a pause), so nothing bursts out."""
        if self.anchor is not None:
            self.anchor += seconds

    def __len__(self) -> int:
        return len(self._heap)

    def stats(self) -> PacingStats:
        """Pacing health: how late the latest frames left and how far the stream has got."""
        return PacingStats(round(self.max_lateness * 1000, 3), round(self.released_media, 3))
