"""Recordings that rotate (issue 16): ``ServerFile("rec/cam.mkv", segment_time=5)`` writes
``cam-00000.mkv``, ``cam-00001.mkv``, ..., each starting on a keyframe and playable on its own;
``retention`` deletes the oldest; the session info lists the segments with their times; a kill -9
leaves every earlier segment whole and the current one playable up to its last second or two.
"""

from __future__ import annotations

import io
import os
import re
import signal
import time

import httpx
import pytest

import framecast

from .media import decode, read_stamp
from .test_hls import stream_seconds
from .test_live import FPS, av_writer


def stamps(path: str) -> list[int]:
    video = next(s for s in decode(path)["streams"] if s["type"] == "video")
    return [read_stamp(f) for f in video["frames"]]


def test_a_20_s_session_rotates_into_4_segments_of_every_frame_once(server, tmp_path):
    writer = av_writer(framecast.ServerFile("rot/cam.mkv", segment_time=5), server.url)
    with writer.open():
        stream_seconds(writer, 0, 20 * FPS)
    directory = server.output_dir / "rot"
    names = sorted(n for n in os.listdir(directory) if n.endswith(".mkv"))
    assert names == [f"cam-{k:05d}.mkv" for k in range(4)], names
    got: list[int] = []
    for name in names:  # each decodes alone, from its first frame (a keyframe), consecutively
        mine = stamps(str(directory / name))
        assert mine and mine == list(range(mine[0], mine[0] + len(mine))), name
        got += mine
    assert got == list(range(20 * FPS))  # every stamped frame, exactly once, across the segments
    output = writer.outputs[0]
    listed = output["segments"]
    assert [s["name"] for s in listed] == names
    assert [round(s["start"]) for s in listed] == [0, 5, 10, 15]
    assert all(4.5 <= s["duration"] <= 5.5 for s in listed), listed
    # Downloading a rotated recording gives the list; each entry downloads.
    answer = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}/output", timeout=10)
    assert answer.status_code == 200 and [s["name"] for s in answer.json()["segments"]] == names
    first = httpx.get(server.url + answer.json()["segments"][0]["url"], timeout=10)
    assert first.status_code == 200 and first.content == (directory / names[0]).read_bytes()
    # The SDK downloads the files into a directory.
    copied = tmp_path / "copies"
    total = writer.download(copied)
    assert sorted(os.listdir(copied)) == names
    assert all((copied / n).read_bytes() == (directory / n).read_bytes() for n in names)
    assert total == sum((directory / n).stat().st_size for n in names)
    with pytest.raises(framecast.StateError, match="several files"):
        writer.download(io.BytesIO())


@pytest.mark.parametrize("extension", ["mkv", "ts", "mp4"])
def test_retention_keeps_the_newest(server, extension):
    directory = server.output_dir / f"ret-{extension}"
    writer = av_writer(
        framecast.ServerFile(f"ret-{extension}/cam.{extension}", segment_time=2, retention=2), server.url
    )
    with writer.open():
        stream_seconds(writer, 0, 9 * FPS)
    names = sorted(n for n in os.listdir(directory) if n.endswith(f".{extension}"))
    assert names == [f"cam-00003.{extension}", f"cam-00004.{extension}"], names
    assert [s["name"] for s in writer.outputs[0]["segments"]] == names
    got = stamps(str(directory / names[0])) + stamps(str(directory / names[1]))
    assert got == list(range(6 * FPS, 9 * FPS))  # the last two files: 6 to 8 s and 8 to 9 s, whole


def test_strftime_names_and_an_age_limit(server):
    writer = av_writer(
        framecast.ServerFile("age/cam.mp4", segment_time=2, segment_name="cam-%Y%m%d-%H%M%S", retention="3s"),
        server.url,
        realtime=True,  # names a second apart or more: a file every 2 s of wall clock
    )
    with writer.open():
        stream_seconds(writer, 0, 8 * FPS)
    names = sorted(n for n in os.listdir(server.output_dir / "age") if n.endswith(".mp4"))
    assert names and all(re.fullmatch(r"cam-\d{8}-\d{6}\.mp4", n) for n in names), names
    assert len(names) <= 3  # 4 were written; those ended more than 3 s before the newest began are gone


def test_a_kill_mid_segment_leaves_earlier_segments_whole_and_the_last_playable(server):
    writer = av_writer(framecast.ServerFile("kill/cam.mkv", segment_time=3), server.url)
    writer.open()
    try:
        # 10 s written; x264 holds its lookahead (a second or two) until the session closes, so
        # about 8 s are muxed when the encoder dies: two files done, the third a second or two in.
        stream_seconds(writer, 0, 10 * FPS)
        writer.flush()  # every chunk taken by the encoder
        info = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}", timeout=10).json()
        os.kill(info["encoder_pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/v1/sessions/{writer.session_id}", timeout=10).json()["state"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        with pytest.raises(framecast.FramecastError):
            writer.close()
    directory = server.output_dir / "kill"
    names = sorted(n for n in os.listdir(directory) if n.endswith(".mkv"))
    assert names == ["cam-00000.mkv", "cam-00001.mkv", "cam-00002.mkv"], names
    got: list[int] = []
    for name in names[:2]:
        got += stamps(str(directory / name))
    assert got == list(range(len(got))) and len(got) == 6 * FPS  # whole, up to the cut at 6 s
    last = stamps(str(directory / names[2]))
    # Playable up to its last second or two: clusters are closed every second, the open one is lost.
    assert last and last[0] == 6 * FPS and last == list(range(last[0], last[0] + len(last)))
    assert len(last) >= FPS // 2, len(last)


@pytest.mark.parametrize(
    "extra, field, message",
    [
        ({"segment_time": 5, "playlist_size": 3}, "destination.playlist_size", "HLS"),
        ({"retention": 2}, "destination.retention", "segment_time"),
        ({"segment_name": "x"}, "destination.segment_name", "segment_time"),
        ({"segment_time": 5, "segment_name": "../x-%Y"}, "destination.segment_name", "letters"),
        ({"segment_time": 5, "segment_name": "x-%n"}, "destination.segment_name", "%Y"),
        ({"segment_time": 5, "segment_name": "x-%05d"}, "destination.segment_name", "%Y"),
        ({"segment_time": 5, "retention": "soon"}, "destination.retention", "seconds"),
    ],
)
def test_rotation_fields_are_checked(api, extra, field, message):
    config = {
        "destination": {"type": "server_file", "path": "chk/cam.mkv", **extra},
        "streams": [{"type": "video", "width": 64, "height": 48, "frame_rate": 10}],
    }
    response = api.post("/v1/sessions", json=config)
    assert response.status_code == 422, response.text
    assert response.json()["error"].get("field") == field, response.json()
    assert message in response.json()["error"]["message"]
