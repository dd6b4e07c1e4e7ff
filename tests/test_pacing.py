"""The pacer's schedule, driven by an explicit clock: when frames leave, and when the anchor moves."""

from __future__ import annotations

from fractions import Fraction

import av

from framecast_server.encoder.pacing import Pacer


class Clock:
    """A clock the test advances by hand (the pacer takes its clock as a parameter)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frames(start: int, count: int, rate: int = 30) -> list[av.VideoFrame]:
    out = []
    for i in range(start, start + count):
        frame = av.VideoFrame(16, 16, "rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, rate)
        out.append(frame)
    return out


def test_frames_leave_at_anchor_plus_media_time() -> None:
    clock = Clock()
    pacer = Pacer(1, clock=clock)
    pacer.add(0, frames(0, 3), seq=0, nbytes=3)
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [0]  # the first frame sets the anchor
    assert pacer.next_due() == clock.now + 1 / 30
    clock.now += 1 / 60
    assert pacer.pop_due(clock.now) == []
    clock.now += 1 / 60
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [1]
    assert pacer.completed() is None
    clock.now += 1 / 30
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [2]
    assert pacer.completed() == 0


def test_a_slow_first_frame_does_not_delay_the_ones_after_it() -> None:
    """Frame 0 left 50 ms after it arrived; frame 1 arrives on time for a real-time client: it is
    released at once, not 50 ms later, and the schedule follows the client from then on."""
    clock = Clock()
    pacer = Pacer(1, clock=clock)
    client_start = clock.now
    clock.now += 0.050  # frame 0 was built slowly
    pacer.add(0, frames(0, 1), seq=0, nbytes=1)
    pacer.pop_due(clock.now)
    clock.now = client_start + 1 / 30  # frame 1 arrives exactly when the client sent it
    pacer.add(0, frames(1, 1), seq=1, nbytes=1)
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [1]
    assert pacer.next_due() is None
    assert pacer.anchor == client_start
    clock.now = client_start + 2 / 30 + 0.005  # late: it leaves at once, and the schedule stays
    pacer.add(0, frames(2, 1), seq=2, nbytes=1)
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [2]
    assert pacer.anchor == client_start
    assert abs(pacer.stats().max_lateness_ms - 5.0) < 1e-6


def test_the_anchor_never_moves_while_frames_are_queued_or_after_settling() -> None:
    clock = Clock()
    pacer = Pacer(1, settle=1.0, clock=clock)
    pacer.add(0, frames(0, 30), seq=0, nbytes=30)  # a second of video at once: a full queue
    pacer.pop_due(clock.now)
    anchor = pacer.anchor
    assert anchor is not None
    pacer.add(0, frames(30, 30), seq=1, nbytes=30)  # more, faster than real time: the queue is not empty
    assert pacer.anchor == anchor
    clock.now += 2.0  # everything is due; the queue drains
    assert len(pacer.pop_due(clock.now)) == 59
    # A chunk waiting for its ACKs arrives to an empty queue, but past the first second of media:
    # following it would run the stream ahead of real time, so the schedule stays.
    clock.now = anchor + 60 / 30 - 0.020
    pacer.add(0, frames(60, 1), seq=2, nbytes=1)
    assert pacer.anchor == anchor
    assert pacer.pop_due(clock.now) == []


def test_acknowledgements_are_cumulative_and_in_order() -> None:
    clock = Clock()
    pacer = Pacer(2, clock=clock)
    pacer.add(0, frames(0, 2), seq=0, nbytes=2)  # video 0.000, 0.033
    audio = av.AudioFrame(format="s16", layout="mono", samples=480)
    audio.pts, audio.time_base = 0, Fraction(1, 48000)
    pacer.add(1, [audio], seq=1, nbytes=960)
    released = pacer.pop_due(clock.now)
    assert sorted(stream for stream, _ in released) == [0, 1]
    assert pacer.completed() is None  # chunk 0 still has a frame queued, so chunk 1 is not acked yet
    clock.now += 1 / 30
    pacer.pop_due(clock.now)
    assert pacer.completed() == 1
