"""Keyframe phases: real-time sessions started together do not put their keyframes (several times
the CPU of another frame) into the same frame time. Each new real-time session forces one extra
keyframe early in its first interval, at a phase of its own; files are left as the encoder makes
them. A real server on its own (so the phase sequence starts at its beginning), real x264,
outputs demuxed."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

import framecast
from framecast_server.sessions import keyframe_phases

from .conftest import ServerProcess
from .media import patterns

GOP = 10
#: A keyframe every GOP frames and no others: scene-cut detection off, so the patterns' motion
#: cannot add keyframes of its own.
OPTIONS = {"g": str(GOP), "sc_threshold": "0", "preset": "veryfast", "bf": "0"}


@pytest.fixture
def own_server(tmp_path):
    server = ServerProcess(tmp_path / "out")
    yield server
    server.stop()


def keyframes(path) -> list[int]:
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        return [i for i, p in enumerate(packets) if p.is_keyframe]


def write(server: ServerProcess, name: str, realtime: bool, frames: np.ndarray) -> None:
    writer = framecast.StreamWriter(framecast.ServerFile(name), server=server.url, realtime=realtime)
    writer.add_video_stream(frame_rate=30, width=frames.shape[3], height=frames.shape[2], encoder="libx264",
                            encoder_option=OPTIONS)
    with writer.open():
        writer.write_video_chunk(0, frames)


def test_real_time_sessions_take_turns_at_keyframe_phases_and_files_keep_theirs(own_server):
    frames = patterns(30, 48, 64)
    write(own_server, "first.mkv", True, frames)
    write(own_server, "file.mkv", False, frames)
    write(own_server, "second.mkv", True, frames)
    write(own_server, "third.mkv", True, frames)
    out = own_server.output_dir
    assert keyframes(out / "first.mkv") == [0, 10, 20]  # phase 0: as the encoder puts them
    assert keyframes(out / "file.mkv") == [0, 10, 20]  # not real time: untouched, and no phase used up
    assert keyframes(out / "second.mkv") == [0, 6, 16, 26]  # phase 0.618: one keyframe more, at 6
    assert keyframes(out / "third.mkv") == [0, 2, 12, 22]  # phase 0.236


def test_phases_spread_any_number_of_consecutive_sessions_over_the_interval():
    for n in range(2, 65):
        phases = sorted(itertools.islice(keyframe_phases(), n))
        gaps = [b - a for a, b in zip(phases, phases[1:])] + [1 - phases[-1] + phases[0]]
        assert 0.4 / n <= min(gaps) and max(gaps) <= 2 / n, (n, min(gaps) * n, max(gaps) * n)
