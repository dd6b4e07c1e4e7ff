"""Keeping a network destination alive: reconnect when it drops, and decide what happens to the
media that arrives meanwhile.

An RTMP server restarts, a link blinks, a peer freezes: the destination's relay (``relay.py``)
says it is lost. ``LiveOutput`` then starts another relay with capped exponential backoff, for up
to ``reconnect_timeout`` seconds, and tells the server about every attempt. An attempt runs in its
relay while the session goes on, and one that gets no answer within the connect timeout counts as
failed. Packets due during the outage, and those the lost relay had not muxed yet, follow the
output's policy:

- ``drop`` (live semantics, the default): they wait in a bounded backlog (``outage_buffer``
  seconds of media); beyond that the oldest are dropped and counted. On reconnect the backlog goes
  out first, then the stream continues on the wall clock.
- ``block``: the session takes nothing from the client while the destination is down
  (backpressure), and pacing resumes where it stopped. With several outputs that holds them all.

The first connect runs in its relay too, while the session's other outputs already stream: what
comes meanwhile waits in the backlog the same way and goes out first once it is connected. A first
connect that fails (refused, or no answer within the connect timeout) fails the output; there is
nothing yet to reconnect to.

The encoders are the session's, shared by every output, so a reopened destination cannot get
fresh ones: instead it gets nothing of a video stream until a keyframe. The backlog is trimmed the
same way: a video stream in it always starts at a keyframe, so what a receiver gets after a
reconnect decodes from its first packet. The other outputs never notice.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable
from typing import Any

import av

from framecast_server.encoder.errors import SetupError
from framecast_server.encoder.output import copy_packet
from framecast_server.encoder.relay import DestinationDropped, Relay
from framecast_server.messages import Connected, Dropped, FromEncoder, Reconnecting, Recovered
from framecast_server.planning.plan import OutputPlan

#: First and largest pause between reconnect attempts, seconds.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
#: Seconds between two looks at a reconnect attempt in progress.
ATTEMPT_POLL = 0.02


class DestinationLost(Exception):
    """The destination stayed unreachable past the reconnect timeout."""


class LinkState(enum.Enum):
    """Where a network output is. Packets are muxed only when UP; in the other states they wait
    in the backlog (or, under "block", the session holds back).

    ::

        CONNECTING ──> UP <──> DOWN <──> ATTEMPTING
                        ^                    │
                        └────────────────────┘
    """

    CONNECTING = "connecting"  # the first connect, in its relay
    UP = "up"
    DOWN = "down"  # dropped; the next reconnect attempt is scheduled
    ATTEMPTING = "attempting"  # a reconnect attempt's relay is connecting


class LiveOutput:
    """Wraps a network output's ``Relay``: connects it, muxes packets, survives drops.

    Args:
        output: the relay, not started yet (``start`` starts it).
        notify: sends a message to the server (``Connected``, ``Reconnecting``, ``Recovered``, ``Dropped``).
        policy: "drop" or "block" (see the module docstring).
        outage_buffer: seconds of media kept during an outage under "drop".
        reconnect_timeout: seconds of outage after which the output fails.
    """

    def __init__(
        self,
        output: Relay,
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
        self.state = LinkState.CONNECTING  # once start() has started the relay
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
        """Not muxing: connecting, or dropped and reconnecting."""
        return self.state is not LinkState.UP

    @property
    def holding_back(self) -> bool:
        """Under "block", the caller should neither release frames nor read chunks."""
        return self.down and self.policy == "block"

    def start(self) -> None:
        """Start connecting (in the relay): packets wait in the backlog until ``tick`` finds it connected."""
        self.state = LinkState.CONNECTING
        self.output.begin()

    def mux(self, packet: av.Packet[Any], stream: int, copy: bool = True) -> None:
        """Send one packet of ``stream``; when the destination is not up, keep or drop it."""
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
        except DestinationDropped as exc:  # dropped, stalled, or its relay died
            self._lost(exc)  # this packet is the last of those its relay never muxed: kept with them

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

    def _lost(self, exc: DestinationDropped) -> None:
        self.state = LinkState.DOWN
        self.down_since = self.clock()
        self.attempts = 0
        self._delay = BACKOFF_FIRST
        self._next_attempt = self.down_since  # first attempt right away
        self._last_reason = exc.reason
        for stream, packet in exc.unsent:  # sent before the drop, never muxed: first in line
            self._keep(packet, stream, copy=False)

    def tick(self) -> None:
        """Move the output along: hear from its relay while up (a drop shows here when no packet
        is due), follow the first connect or a reconnect attempt, start an attempt when due.

        Raises:
            SetupError: the first connect failed (refused, or no answer within the timeout).
            DestinationLost: dropped and still unreachable past the reconnect timeout.
        """
        match self.state:
            case LinkState.UP:
                try:
                    self.output.check()
                except DestinationDropped as exc:
                    self._lost(exc)
            case LinkState.CONNECTING:
                if self.output.poll():
                    self.notify(Connected(self.plan.index, self.output.warnings))
                    self._send_backlog()
            case LinkState.DOWN | LinkState.ATTEMPTING:
                self._reconnect()

    def _reconnect(self) -> None:
        assert self.down_since is not None
        now = self.clock()
        if now - self.down_since > self.reconnect_timeout:
            self.output.abort()
            raise DestinationLost(
                f"destination unreachable for {self.reconnect_timeout:g} s after {self.attempts} "
                f"reconnect attempts: {self._last_reason}"
            )
        if self.state is LinkState.DOWN:
            if now < self._next_attempt:
                return
            self.attempts += 1
            self.output.reconnects += 1
            self.notify(Reconnecting(self.plan.index, self.attempts, self._last_reason))
            self.output.reopen()
            self.state = LinkState.ATTEMPTING
        try:
            if not self.output.poll():
                return
        except SetupError as exc:
            self.state = LinkState.DOWN
            self._last_reason = str(exc)
            self._next_attempt = self.clock() + self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            return
        outage = self.clock() - self.down_since
        self.down_since = None
        self.notify(Recovered(self.plan.index, self.attempts, outage))
        self._send_backlog()

    def _send_backlog(self) -> None:
        """Connected (again): each video stream starts at a keyframe, from the backlog or the
        encoder, and the backlog goes out first."""
        self.state = LinkState.UP
        self._need_key = set(self._video)
        backlog, self._backlog = self._backlog, collections.deque()
        for _, stream, packet in backlog:
            self.mux(packet, stream, copy=False)

    def next_attempt_in(self) -> float | None:
        """Seconds until the output wants looking at again, or None when it is up."""
        match self.state:
            case LinkState.UP:
                return None
            case LinkState.DOWN:
                return max(0.0, self._next_attempt - self.clock())
            case _:
                return ATTEMPT_POLL

    def close(self) -> None:
        self.output.close()

    def abort(self) -> None:
        self.output.abort()


def _seconds(packet: av.Packet[Any], default: float) -> float:
    """A packet's media time in seconds (``default`` for one without a timestamp)."""
    if packet.pts is None or packet.time_base is None:
        return default
    return float(packet.pts * packet.time_base)
