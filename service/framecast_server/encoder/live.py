"""Keeping a network destination alive: reconnect when it drops, and decide what happens to the
media that arrives meanwhile.

An RTMP server restarts, a link blinks: the mux call fails. ``LiveOutput`` then tries to reopen
the destination with capped exponential backoff, for up to ``reconnect_timeout`` seconds, and
tells the server about every attempt. Packets due during the outage follow the output's policy:

- ``drop`` (live semantics, the default): they wait in a bounded backlog (``outage_buffer``
  seconds of media); beyond that the oldest are dropped and counted. On reconnect the backlog goes
  out first, then the stream continues on the wall clock.
- ``block``: the session takes nothing from the client while the destination is down
  (backpressure), and pacing resumes where it stopped. With several outputs that holds them all.

The encoders are the session's, shared by every output, so a reopened destination cannot get
fresh ones: instead it gets nothing of a video stream until a keyframe. The backlog is trimmed the
same way: a video stream in it always starts at a keyframe, so what a receiver gets after a
reconnect decodes from its first packet. The other outputs never notice.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import av

from framecast_server.encoder.errors import SetupError, describe_error
from framecast_server.encoder.output import Output, copy_packet
from framecast_server.messages import Dropped, FromEncoder, Reconnecting, Recovered
from framecast_server.planning.plan import OutputPlan
from framecast_server.quotas import FilterOutputRefused, QuotaReached

#: First and largest pause between reconnect attempts, seconds.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0


class DestinationLost(Exception):
    """The destination stayed unreachable past the reconnect timeout."""


class LiveOutput:
    """Wraps a network ``Output``: muxes packets, survives drops.

    Args:
        output: the output, its header not written yet (``Output.start`` connects).
        notify: sends a message to the server (``Reconnecting``, ``Recovered``, ``Dropped``).
        policy: "drop" or "block" (see the module docstring).
        outage_buffer: seconds of media kept during an outage under "drop".
        reconnect_timeout: seconds of outage after which the output fails.
    """

    def __init__(
        self,
        output: Output,
        notify: Callable[[FromEncoder], None],
        policy: str = "drop",
        outage_buffer: float = 5.0,
        reconnect_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output = output
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
        self._backlog: collections.deque[tuple[float, int, av.Packet[Any]]] = collections.deque()
        self._video = {i for i, stream in enumerate(output.streams) if stream.type == "video"}
        #: Video streams that send nothing until their next keyframe (after a reconnect).
        self._need_key: set[int] = set()
        self.dropped = [0] * len(output.streams)

    @property
    def plan(self) -> OutputPlan:
        return self.output.plan

    @property
    def down(self) -> bool:
        return self.down_since is not None

    @property
    def holding_back(self) -> bool:
        """Under "block", the caller should neither release frames nor read chunks."""
        return self.down and self.policy == "block"

    def mux(self, packet: av.Packet[Any], stream: int, copy: bool = True) -> None:
        """Send one packet of ``stream``; when the destination is down, keep or drop it."""
        if stream in self._need_key:
            if not packet.is_keyframe:
                self._drop(stream)
                return
            self._need_key.discard(stream)
        if self.down:
            self._keep(packet, stream, copy)
            return
        try:
            self.output.mux(packet, stream, copy)
        except (QuotaReached, FilterOutputRefused, MemoryError):
            raise  # the session's own limits, not the destination's: the session stops
        except Exception as exc:  # the destination dropped mid-stream (EPIPE, ECONNRESET, EIO, ...)
            self._lost(describe_error(exc))
            # The packet that failed may be partly sent; the reopened output gets it again.
            self._keep(packet, stream, copy)

    def _keep(self, packet: av.Packet[Any], stream: int, copy: bool) -> None:
        kept = copy_packet(packet) if copy else packet
        newest = _seconds(kept, self._backlog[-1][0] if self._backlog else 0.0)
        self._backlog.append((newest, stream, kept))
        trimmed = False
        while self._backlog and newest - self._backlog[0][0] > self.outage_buffer:
            _, old, _ = self._backlog.popleft()
            self._drop(old)
            trimmed = True
        if trimmed:
            self._start_backlog_at_keyframes()

    def _start_backlog_at_keyframes(self) -> None:
        """Drop the packets of each video stream before its first keyframe left in the backlog."""
        waiting = set(self._video)
        kept: collections.deque[tuple[float, int, av.Packet[Any]]] = collections.deque()
        for t, stream, packet in self._backlog:
            if stream in waiting:
                if not packet.is_keyframe:
                    self._drop(stream)
                    continue
                waiting.discard(stream)
            kept.append((t, stream, packet))
        self._backlog = kept

    def _drop(self, stream: int) -> None:
        self.dropped[stream] += 1
        self.output.dropped += 1
        self.notify(Dropped(self.plan.index, stream, 1, self.dropped[stream]))

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
        self.output.reconnects += 1
        self.notify(Reconnecting(self.plan.index, self.attempts, self._last_reason))
        try:
            self.output.reopen()
        except SetupError as exc:
            self._last_reason = str(exc)
            self._next_attempt = self.clock() + self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            return
        outage = self.clock() - self.down_since
        self.down_since = None
        self.notify(Recovered(self.plan.index, self.attempts, outage))
        # A new connection: each video stream starts at a keyframe, from the backlog or the encoder.
        self._need_key = set(self._video)
        backlog, self._backlog = self._backlog, collections.deque()
        for _, stream, packet in backlog:
            self.mux(packet, stream, copy=False)

    def next_attempt_in(self) -> float | None:
        """Seconds until the next reconnect attempt, or None when the destination is up."""
        return max(0.0, self._next_attempt - self.clock()) if self.down else None

    def close(self) -> None:
        self.output.close()

    def abort(self) -> None:
        self.output.abort()


def _seconds(packet: av.Packet[Any], default: float) -> float:
    """A packet's media time in seconds (``default`` for one without a timestamp)."""
    if packet.pts is None or packet.time_base is None:
        return default
    return float(packet.pts * packet.time_base)
