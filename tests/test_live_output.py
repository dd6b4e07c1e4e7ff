"""LiveOutput's outage logic (reconnect schedule, drop-oldest backlog that starts at keyframes,
resuming on a keyframe) with a destination that fails on command. The PyAV, network and server
paths are covered end to end in test_faults.py and test_outputs.py (nginx restarted mid-stream);
this pins the arithmetic no restart can force exactly."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import Any, cast

import pytest

from framecast_server.encoder.errors import SetupError
from framecast_server.encoder.live import DestinationLost, LiveOutput
from framecast_server.encoder.relay import DestinationDropped, Relay
from framecast_server.messages import Connected, Dropped, FromEncoder, Reconnecting, Recovered

VIDEO, AUDIO = 0, 1


class Packet:
    """What LiveOutput reads of a packet: its stream, time and key flag."""

    def __init__(self, stream: int, t: float, key: bool = False) -> None:
        self.stream = SimpleNamespace(index=stream)
        self.pts = round(t * 100)
        self.time_base = Fraction(1, 100)
        self.is_keyframe = key or stream == AUDIO

    @property
    def t(self) -> float:
        return float(self.pts * self.time_base)


class FlakyOutput:
    """Stands in for a network output's Relay: mux fails while ``up`` is False; a reconnect
    attempt (``reopen``, then ``poll``) succeeds when ``up``, is refused when not, and stays
    pending while ``silent``. ``unsent`` packets come back with the next drop, as a relay's do."""

    def __init__(self) -> None:
        self.streams = [SimpleNamespace(type="video"), SimpleNamespace(type="audio")]
        self.plan = SimpleNamespace(index=2)
        self.warnings: list[str] = []
        self.up = True
        self.silent = False
        self.unsent: list[tuple[int, Packet]] = []
        self.sent: list[tuple[int, float, bool]] = []
        self.reopens = self.dropped = self.reconnects = 0

    def mux(self, packet: Packet, stream: int, copy: bool = True) -> None:
        if not self.up:  # the relay never muxed this one either
            unsent, self.unsent = [*self.unsent, (stream, packet)], []
            raise DestinationDropped("Broken pipe", cast(Any, unsent))
        self.sent.append((stream, packet.t, packet.is_keyframe))

    def begin(self) -> None:
        pass

    def check(self) -> None:
        pass

    def reopen(self) -> None:
        self.reopens += 1

    def poll(self) -> bool:
        if self.silent:
            return False
        if not self.up:
            raise SetupError("cannot reach the destination: Connection refused", "destination")
        return True

    def abort(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def live_output(dest: FlakyOutput, told: list[FromEncoder] | None = None, **kw: Any) -> LiveOutput:
    """A LiveOutput around the stand-in (it uses only what FlakyOutput has)."""
    sink: list[FromEncoder] = [] if told is None else told
    live = LiveOutput(cast(Relay, dest), sink.append, **kw)
    live.start()
    live.tick()  # connected
    assert not live.down
    return live


def send(live: LiveOutput, packet: Packet) -> None:
    live.mux(cast(Any, packet), packet.stream.index, copy=False)


def test_outage_keeps_a_bounded_backlog_that_starts_at_a_keyframe_and_recovers_in_order():
    dest, clock, told = FlakyOutput(), Clock(), list[FromEncoder]()
    live = live_output(dest, told, policy="drop", outage_buffer=1.0, reconnect_timeout=30, clock=clock)
    send(live, Packet(VIDEO, 0.0, key=True))
    dest.up = False
    for k in range(1, 31):  # 3 s of 10 fps video, a keyframe every 0.5 s, while the destination is down
        clock.now = k / 10
        send(live, Packet(VIDEO, k / 10, key=k % 5 == 0))
        live.tick()
    assert live.down and dest.sent == [(VIDEO, 0.0, True)]
    # 1 s kept (2.0 .. 3.0 s), and from the first keyframe in it on: 2.0 s is one.
    assert live.dropped == [19, 0] and dest.dropped == 19
    assert [m for m in told if isinstance(m, Dropped)][-1] == Dropped(output=2, stream=VIDEO, frames=1, total=19)
    attempts = [m for m in told if isinstance(m, Reconnecting)]
    assert attempts and all(m.output == 2 and m.reason.startswith(("Broken pipe", "cannot reach")) for m in attempts)
    # Backoff: attempts get sparser (0.25 s, 0.5 s, 1 s, ...), not one per tick.
    assert len(attempts) < 8
    dest.up = True
    clock.now = 10.0
    live.tick()
    assert not live.down and isinstance(told[-1], Recovered) and told[-1].output == 2
    assert [t for _, t, _ in dest.sent] == [0.0] + [round(k / 10, 1) for k in range(20, 31)]
    assert dest.sent[1] == (VIDEO, 2.0, True)


def test_a_trimmed_backlog_drops_up_to_the_next_keyframe():
    dest, clock = FlakyOutput(), Clock()
    live = live_output(dest, policy="drop", outage_buffer=0.45, clock=clock)
    dest.up = False
    for k in range(10):  # keyframes at 0.0 and 0.6 s; 0.45 s kept: 0.5 s on, by time
        send(live, Packet(VIDEO, k / 10, key=k in (0, 6)))
        send(live, Packet(AUDIO, k / 10))
    dest.up = True
    clock.now = 1.0
    live.tick()
    video = [(t, key) for stream, t, key in dest.sent if stream == VIDEO]
    audio = [t for stream, t, _ in dest.sent if stream == AUDIO]
    assert video == [(0.6, True), (0.7, False), (0.8, False), (0.9, False)]  # 0.5 s went: no keyframe before it
    assert audio == [0.5, 0.6, 0.7, 0.8, 0.9]  # every audio packet is a keyframe
    assert live.dropped == [6, 5]


def test_after_a_reconnect_with_no_keyframe_kept_video_waits_for_the_next_one():
    dest, clock = FlakyOutput(), Clock()
    live = live_output(dest, policy="drop", outage_buffer=0.0, clock=clock)
    send(live, Packet(VIDEO, 0.0, key=True))
    dest.up = False
    send(live, Packet(VIDEO, 0.1))  # fails: down; kept alone, then trimmed to nothing
    dest.up = True
    clock.now = 0.2
    live.tick()
    for k, key in ((2, False), (3, False), (4, True), (5, False)):
        send(live, Packet(VIDEO, k / 10, key=key))
    send(live, Packet(AUDIO, 0.5))  # audio needs no keyframe
    assert dest.sent == [(VIDEO, 0.0, True), (VIDEO, 0.4, True), (VIDEO, 0.5, False), (AUDIO, 0.5, True)]
    assert live.dropped[VIDEO] == 3


def test_outage_past_the_reconnect_timeout_fails():
    dest, clock = FlakyOutput(), Clock()
    live = live_output(dest, reconnect_timeout=5, clock=clock)
    dest.up = False
    send(live, Packet(AUDIO, 0.0))
    clock.now = 6.0
    with pytest.raises(DestinationLost, match="unreachable for 5 s"):
        live.tick()


def test_block_policy_holds_back():
    dest, clock = FlakyOutput(), Clock()
    live = live_output(dest, policy="block", clock=clock)
    assert not live.holding_back
    dest.up = False
    send(live, Packet(VIDEO, 0.0, key=True))
    assert live.holding_back


def test_packets_the_relay_never_muxed_go_out_first_after_the_reconnect():
    dest, clock = FlakyOutput(), Clock()
    live = live_output(dest, policy="drop", outage_buffer=5.0, clock=clock)
    send(live, Packet(VIDEO, 0.0, key=True))
    # The relay had taken 0.1 and 0.2 s when its destination dropped, and muxed neither.
    dest.unsent = [(VIDEO, Packet(VIDEO, 0.1)), (VIDEO, Packet(VIDEO, 0.2))]
    dest.up = False
    send(live, Packet(VIDEO, 0.3))
    assert live.down
    dest.up = True
    clock.now = 0.5
    live.tick()
    # After the reconnect video starts at a keyframe: the three were not, so none goes out, but
    # they were kept and counted, in order, not lost silently.
    assert dest.sent == [(VIDEO, 0.0, True)] and live.dropped[VIDEO] == 3
    send(live, Packet(VIDEO, 0.6, key=True))
    assert dest.sent[-1] == (VIDEO, 0.6, True)


def test_a_reconnect_attempt_that_gets_no_answer_holds_nothing_and_is_followed():
    dest, clock, told = FlakyOutput(), Clock(), list[FromEncoder]()
    live = live_output(dest, told, policy="drop", outage_buffer=5.0, reconnect_timeout=30, clock=clock)
    dest.up = False
    send(live, Packet(AUDIO, 0.0))
    dest.silent = True
    live.tick()  # the attempt starts and is pending: tick returns at once
    assert live.down and dest.reopens == 1 and live.next_attempt_in() == pytest.approx(0.02)
    for k in range(1, 5):  # packets keep coming while the attempt is pending
        clock.now = k / 10
        send(live, Packet(AUDIO, k / 10))
        live.tick()
    assert dest.reopens == 1 and dest.sent == []
    dest.silent, dest.up = False, True  # the relay answers
    live.tick()
    assert not live.down and [t for _, t, _ in dest.sent] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert isinstance(told[-1], Recovered)


def test_packets_during_the_first_connect_wait_and_go_out_first():
    dest, told = FlakyOutput(), list[FromEncoder]()
    live = LiveOutput(cast(Relay, dest), told.append, policy="drop", outage_buffer=5.0, clock=Clock())
    dest.silent = True
    live.start()
    live.tick()
    assert live.down and live.next_attempt_in() == pytest.approx(0.02)
    send(live, Packet(VIDEO, 0.0, key=True))
    send(live, Packet(AUDIO, 0.0))
    send(live, Packet(VIDEO, 0.1))
    assert dest.sent == []
    dest.silent = False
    live.tick()
    assert isinstance(told[-1], Connected) and told[-1].output == 2
    assert dest.sent == [(VIDEO, 0.0, True), (AUDIO, 0.0, True), (VIDEO, 0.1, False)]
    assert not live.down and live.dropped == [0, 0]


def test_a_first_connect_that_fails_fails_the_output_without_retrying():
    dest = FlakyOutput()
    live = LiveOutput(cast(Relay, dest), list[FromEncoder]().append, clock=Clock())
    dest.up = False
    live.start()
    with pytest.raises(SetupError, match="Connection refused"):
        live.tick()
    assert dest.reopens == 0
