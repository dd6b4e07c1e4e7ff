"""LiveOutput's outage logic (reconnect schedule, drop-oldest backlog) with a destination that
fails on command. The PyAV, network and server paths are covered end to end in test_faults.py
(nginx restarted mid-stream); this pins the arithmetic no restart can force exactly."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import pytest

from framecast_server.encoder.live import DestinationLost, LiveOutput
from framecast_server.encoder.output import OutputWriter, SetupError
from framecast_server.messages import Dropped, FromEncoder, Reconnecting, Recovered


class Frame:
    def __init__(self, t: float) -> None:
        self.pts = round(t * 100)
        self.time_base = Fraction(1, 100)


class FlakyDestination:
    """Stands in for OutputWriter's emit/reopen: fails while ``up`` is False."""

    def __init__(self) -> None:
        self.streams = [object(), object()]
        self.up = True
        self.sent: list[tuple[int, float]] = []
        self.reopens = 0

    def emit(self, stream, frames):
        if not self.up:
            raise BrokenPipeError("Broken pipe")
        self.sent += [(stream, float(f.pts * f.time_base)) for f in frames]

    def reopen(self):
        self.reopens += 1
        if not self.up:
            raise SetupError("cannot reach the destination: Connection refused", "destination")


def writer(dest: FlakyDestination) -> OutputWriter:
    """The stand-in where LiveOutput takes an OutputWriter (it uses only what FlakyDestination has)."""
    return cast(OutputWriter, dest)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_outage_keeps_a_bounded_backlog_drops_oldest_and_recovers_in_order():
    dest, clock = FlakyDestination(), Clock()
    told: list[FromEncoder] = []
    live = LiveOutput(writer(dest), told.append, policy="drop", outage_buffer=1.0, reconnect_timeout=30, clock=clock)
    live.emit(0, Frame(0.0))
    dest.up = False
    for k in range(1, 31):  # 3 s of 10 fps video while the destination is down
        clock.now = k / 10
        live.emit(0, Frame(k / 10))
        live.tick()
    assert live.down and dest.sent == [(0, 0.0)]
    assert live.dropped == [19, 0]  # 30 frames, 1 s (11 frames) kept, the oldest 19 dropped
    assert [m for m in told if isinstance(m, Dropped)][-1] == Dropped(stream=0, frames=1, total=19)
    attempts = [m for m in told if isinstance(m, Reconnecting)]
    assert attempts and all(m.reason.startswith(("Broken pipe", "cannot reach")) for m in attempts)
    # Backoff: attempts get sparser (0.25 s, 0.5 s, 1 s, ...), not one per tick.
    assert len(attempts) < 8
    dest.up = True
    clock.now = 10.0
    live.tick()
    assert not live.down and isinstance(told[-1], Recovered)
    assert [t for _, t in dest.sent] == [0.0] + [round(k / 10, 1) for k in range(20, 31)]


def test_outage_past_the_reconnect_timeout_fails():
    dest, clock = FlakyDestination(), Clock()
    live = LiveOutput(writer(dest), lambda m: None, reconnect_timeout=5, clock=clock)
    dest.up = False
    live.emit(1, Frame(0.0))
    clock.now = 6.0
    with pytest.raises(DestinationLost, match="unreachable for 5 s"):
        live.tick()


def test_block_policy_holds_back():
    dest, clock = FlakyDestination(), Clock()
    live = LiveOutput(writer(dest), lambda m: None, policy="block", clock=clock)
    assert not live.holding_back
    dest.up = False
    live.emit(0, Frame(0.0))
    assert live.holding_back
