"""The pacer's schedule, driven by an explicit clock: when frames leave, and when the anchor moves;
then once end to end, a real server's real-time session whose encoder process was held up."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
from fractions import Fraction

import av
import httpx
import numpy as np

import framecast
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


def test_frames_are_scheduled_from_when_the_server_had_them_not_when_a_busy_encoder_took_them() -> None:
    """A real-time client: the server receives frame k at start + k/30. The encoder, busy, takes
    the first 40 frames late (1.1 s for the first, catching up until frame 40), so its backlog
    lasts past the first second of media, in which the anchor may still move. Scheduled by when
    the server had them, the frames after the backlog leave as they come; scheduled by when the
    encoder took them, every one of them would wait as long as frame 29 was late (0.3 s)."""
    for by_arrival in (True, False):
        clock = Clock()
        pacer = Pacer(1, settle=1.0, clock=clock)
        start = clock.now
        held = []  # how long each frame waits in the pacer after the encoder took it
        for k in range(90):
            received = start + k / 30
            clock.now = received + max(0.0, 1.1 * (1 - k / 40))  # when the encoder takes it
            pacer.pop_due(clock.now)
            pacer.add(0, frames(k, 1), seq=k, nbytes=1, arrived=received if by_arrival else None)
            assert pacer.anchor is not None
            held.append(max(0.0, pacer.anchor + k / 30 - clock.now))
        assert pacer.anchor is not None
        if by_arrival:
            assert pacer.anchor == start
            assert held == [0.0] * 90
        else:
            assert abs(pacer.anchor - (start + 1.1 * (1 - 29 / 40))) < 1e-9
            assert min(held[40:]) > 0.3


def test_an_arrival_is_never_later_than_the_pacers_own_clock() -> None:
    clock = Clock()
    pacer = Pacer(1, clock=clock)
    pacer.add(0, frames(0, 1), seq=0, nbytes=1, arrived=clock.now + 5.0)  # a clock it cannot have
    assert pacer.anchor == clock.now
    assert [f.pts for _, f in pacer.pop_due(clock.now)] == [0]


def test_a_session_whose_encoder_took_its_first_frames_late_does_not_stay_late(server):
    """A real-time session's encoder process is stopped (SIGSTOP) for the first 1.5 s its client
    writes, as a busy machine can hold up a process, and then goes on. Once it has caught up, each
    frame is encoded as it comes: the schedule is the client's, as the server received it. Were it
    anchored on when the held-up encoder took the frames, every frame after the backlog would wait
    about half a second in the pacer, for the rest of the session."""
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    writer = framecast.StreamWriter(
        framecast.Discard(encode=True),
        server=server.url,
        realtime=True,
        event_hooks={
            "send": [lambda seq, stream, seconds, t: sent.setdefault(seq, t)],
            "ack": [lambda seq, t: acked.setdefault(seq, t)],
        },
    )
    writer.add_video_stream(frame_rate=30, width=160, height=120)
    writer.open()
    pid = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}", timeout=30).json()["encoder_pid"]
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(1.5, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        frame = np.zeros((1, 3, 120, 160), np.uint8)
        start = time.monotonic()
        for k in range(150):  # 5 s in real time; the writes wait while the window is full
            time.sleep(max(0.0, start + k / 30 - time.monotonic()))
            frame[:] = k % 256
            writer.write_video_chunk(0, frame)
        writer.close()
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # (it exits once the session is closed)
            os.kill(pid, signal.SIGCONT)
    assert writer.summary is not None
    assert writer.summary["streams"][0]["counters"]["packets"] == 150
    # A chunk is acknowledged once its frame is encoded: the last 2 s, long after the backlog.
    waits = [acked[seq] - sent[seq] for seq in sorted(sent)[-60:]]
    assert statistics.median(waits) < 0.25, f"frames waited {statistics.median(waits):.3f} s (median)"
