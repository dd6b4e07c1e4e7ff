"""Keeping a network destination alive: reconnect when it drops, and decide what happens to the
media that arrives meanwhile.

An RTMP server restarts, a link blinks: the mux call fails. ``LiveOutput`` then tries to reopen
the destination with capped exponential backoff, for up to ``reconnect_timeout`` seconds, and
tells the server about every attempt. Frames due during the outage follow the session's policy:

- ``drop`` (live semantics, the default): they wait in a bounded backlog (``outage_buffer``
  seconds of media); beyond that the oldest are dropped and counted. On reconnect the backlog goes
  out first, then the stream continues on the wall clock.
- ``block``: nothing is taken from the client while the destination is down (backpressure), and
  pacing resumes where it stopped.

The reopened output starts with fresh encoders, so the first frame the receiver gets is a keyframe.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from framecast_server.encoder.output import OutputWriter, SetupError, describe_error
from framecast_server.messages import Dropped, FromEncoder, Reconnecting, Recovered
from framecast_server.quotas import FilterOutputRefused, QuotaReached

#: First and largest pause between reconnect attempts, seconds.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0


class DestinationLost(Exception):
    """The destination stayed unreachable past the reconnect timeout."""


class LiveOutput:
    """Wraps an OutputWriter for a network destination: emits frames, survives drops.

    Args:
        writer: the open writer.
        notify: sends a message to the server (``Reconnecting``, ``Recovered``, ``Dropped``).
        policy: "drop" or "block" (see the module docstring).
        outage_buffer: seconds of media kept during an outage under "drop".
        reconnect_timeout: seconds of outage after which the session fails.
    """

    def __init__(
        self,
        writer: OutputWriter,
        notify: Callable[[FromEncoder], None],
        policy: str = "drop",
        outage_buffer: float = 5.0,
        reconnect_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.notify = notify
        self.policy = policy
        self.outage_buffer = outage_buffer
        self.reconnect_timeout = reconnect_timeout
        self.clock = clock
        self.down_since: float | None = None
        self.attempts = 0
        self._next_attempt = 0.0
        self._delay = BACKOFF_FIRST
        self._last_reason = ""
        self._backlog: collections.deque[tuple[float, int, Any]] = collections.deque()
        self.dropped = [0] * len(writer.streams)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    @property
    def holding_back(self) -> bool:
        """Under "block", the caller should neither release frames nor read chunks."""
        return self.down and self.policy == "block"

    def emit(self, stream: int, frame: Any) -> None:
        """Encode and send one frame; when the destination is down, keep or drop it."""
        if self.down:
            self._keep(stream, frame)
            return
        try:
            self.writer.emit(stream, [frame])
        except (QuotaReached, FilterOutputRefused, MemoryError):
            raise  # the session's own limits, not the destination's: the session stops
        except Exception as exc:  # the destination dropped mid-stream (EPIPE, ECONNRESET, EIO, ...)
            self._lost(describe_error(exc))
            # The frame that failed may be partly sent; the reopened encoder starts afresh with it.
            self._keep(stream, frame)

    def _keep(self, stream: int, frame: Any) -> None:
        t = float(frame.pts * frame.time_base)
        self._backlog.append((t, stream, frame))
        newest = t
        while self._backlog and newest - self._backlog[0][0] > self.outage_buffer:
            _, old_stream, _ = self._backlog.popleft()
            self.dropped[old_stream] += 1
            self.notify(Dropped(old_stream, 1, self.dropped[old_stream]))

    def _lost(self, reason: str) -> None:
        self.down_since = self.clock()
        self.attempts = 0
        self._delay = BACKOFF_FIRST
        self._next_attempt = self.down_since  # first attempt right away
        self._last_reason = reason

    def tick(self) -> None:
        """While down: attempt a reconnect when one is due; raise DestinationLost past the timeout."""
        if not self.down:
            return
        now = self.clock()
        assert self.down_since is not None
        if now - self.down_since > self.reconnect_timeout:
            raise DestinationLost(
                f"destination unreachable for {self.reconnect_timeout:g} s after {self.attempts} "
                f"reconnect attempts: {self._last_reason}"
            )
        if now < self._next_attempt:
            return
        self.attempts += 1
        self.notify(Reconnecting(self.attempts, self._last_reason))
        try:
            self.writer.reopen()
        except SetupError as exc:
            self._last_reason = str(exc)
            self._next_attempt = self.clock() + self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            return
        outage = self.clock() - self.down_since
        self.down_since = None
        self.notify(Recovered(self.attempts, outage))
        backlog, self._backlog = self._backlog, collections.deque()
        for _, stream, frame in backlog:
            self.emit(stream, frame)

    def next_attempt_in(self) -> float | None:
        """Seconds until the next reconnect attempt, or None when the destination is up."""
        return max(0.0, self._next_attempt - self.clock()) if self.down else None
