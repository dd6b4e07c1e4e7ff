"""The writers' ``event_hooks`` against a live server: what benchmarks/measure.py's AckClock uses
to time every chunk from send to ACK (WriterCore's own tests check the details without one)."""

from __future__ import annotations

import time

import pytest

import framecast
from benchmarks.measure import AckClock

from .conftest import ServerProcess
from .media import patterns


def test_ack_hooks_see_every_chunk_acknowledged(server: ServerProcess) -> None:
    acks: list[tuple[int, float]] = []
    writer = framecast.StreamWriter(
        framecast.Discard(encode=True),
        server=server.url,
        event_hooks={"ack": [lambda seq, now: acks.append((seq, now))]},
    )
    writer.add_video_stream(frame_rate=25, width=64, height=48)
    clock = AckClock.attach(writer)  # appends to writer.event_hooks, after construction
    start = time.perf_counter()
    with writer.open():
        for k in range(6):
            writer.write_video_chunk(0, patterns(5, 48, 64, start=5 * k))
        writer.flush()
    assert writer.summary is not None and writer.summary["state"] == "closed"
    assert sorted(clock.sent) == list(range(6))  # one message per chunk, seqs from 0
    assert acks and acks[-1][0] == 5  # the flush waited for the ACK of the last chunk
    seqs, times = [seq for seq, _ in acks], [now for _, now in acks]
    assert seqs == sorted(seqs) and times == sorted(times)
    assert start < times[0] and times[-1] < time.perf_counter()  # perf_counter() readings
    latencies = clock.latencies_ms()
    assert len(latencies) == 6 and all(ms > 0 for ms in latencies)


def test_an_unknown_hook_is_refused_when_the_writer_is_made_or_its_hooks_are_set() -> None:
    with pytest.raises(framecast.InvalidConfig, match="unknown event hook 'on_ack'") as info:
        framecast.AsyncStreamWriter("out.mp4", event_hooks={"on_ack": [print]})
    assert info.value.field == "event_hooks"
    writer = framecast.StreamWriter("out.mp4")
    assert writer.event_hooks == {"send": [], "ack": []}
    writer.event_hooks = {"ack": [print]}
    assert writer.event_hooks == {"send": [], "ack": [print]}
    with pytest.raises(framecast.InvalidConfig, match="unknown event hook 'sent'"):
        writer.event_hooks = {"sent": [print]}
    assert writer.event_hooks == {"send": [], "ack": [print]}
