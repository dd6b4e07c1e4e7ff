"""The disk (issue 16): a session whose files reach FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION, or a
disk down to FRAMECAST_MIN_FREE_DISK, stops the session cleanly: its output is finalized and
playable, and the session fails saying which limit. /metrics shows the output directory's size."""

from __future__ import annotations

import os
import shutil

import httpx
import numpy as np
import pytest

import framecast

from .media import decode, patterns, read_stamp

W, H, FPS = 320, 240, 30


def noisy(count: int, start: int) -> np.ndarray:
    """Stamped frames whose rest is noise: 30-60 KB a frame of H.264, so a file grows fast."""
    frames = patterns(count, H, W, start=start)
    frames[:, :, 24:, :] = np.random.default_rng(start).integers(0, 256, frames[:, :, 24:, :].shape, dtype=np.uint8)
    return frames


def write_until_stopped(writer: framecast.StreamWriter, seconds: int) -> str:
    """Write noisy video a second at a time until the session fails; its reason."""
    with pytest.raises(framecast.FramecastError) as failed:
        with writer.open():
            for k in range(seconds):
                writer.write_video_chunk(0, noisy(FPS, k * FPS))
    return str(failed.value)


def stamps(path: str) -> list[int]:
    return [read_stamp(frame) for frame in decode(path)["streams"][0]["frames"]]


def test_a_session_whose_files_reach_their_limit_is_finalized_and_stopped(own_server):
    limit = 1_500_000
    server = own_server(FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION=str(limit))
    writer = framecast.StreamWriter(framecast.ServerFile("disk/big.mkv"), server=server.url)
    writer.add_video_stream(frame_rate=FPS, width=W, height=H)
    reason = write_until_stopped(writer, 30)
    assert "FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION" in reason and "finalized" in reason, reason
    path = server.output_dir / "disk" / "big.mkv"
    # Stopped soon after the limit (a check every 1/16 of it), and playable: every frame from the
    # first, consecutive, up to where it stopped.
    assert os.path.getsize(path) <= limit * 1.25, os.path.getsize(path)
    got = stamps(str(path))
    assert len(got) > FPS and got == list(range(len(got)))


def test_a_live_playlist_streams_on_within_a_small_disk_limit(own_server):
    """HLS deletes the segments that left the playlist: its files stay within the limit."""
    server = own_server(FRAMECAST_MAX_OUTPUT_BYTES_PER_SESSION=str(4_000_000))
    writer = framecast.StreamWriter(
        framecast.ServerFile("disk/live.m3u8", playlist_size=2, segment_duration=1), server=server.url
    )
    writer.add_video_stream(frame_rate=FPS, width=W, height=H, encoder_option={"crf": "35"})
    with writer.open():
        for k in range(8):
            writer.write_video_chunk(0, patterns(FPS, H, W, start=k * FPS))
    assert writer.summary is not None and writer.summary["state"] == "closed"


def test_a_nearly_full_disk_stops_sessions_and_refuses_new_ones(own_server):
    output = shutil.disk_usage("/tmp").free
    # Leave this session about 30 MB before the disk counts as full (other writers on this
    # machine only bring that closer).
    server = own_server(FRAMECAST_MIN_FREE_DISK=str(output - 30_000_000))
    writer = framecast.StreamWriter(framecast.ServerFile("disk/fill.mkv"), server=server.url)
    writer.add_video_stream(frame_rate=FPS, width=W, height=H, encoder_option={"qp": "0"})
    reason = write_until_stopped(writer, 60)
    assert "FRAMECAST_MIN_FREE_DISK" in reason, reason
    got = stamps(str(server.output_dir / "disk" / "fill.mkv"))
    assert got and got == list(range(len(got)))
    full = own_server(FRAMECAST_MIN_FREE_DISK=str(output + 1024**4))
    refused = httpx.post(
        f"{full.url}/v1/sessions",
        json={
            "destination": {"type": "server_file", "path": "x.mkv"},
            "streams": [{"type": "video", "width": 64, "height": 48, "frame_rate": 10}],
        },
        timeout=30,
    )
    assert refused.status_code == 507 and refused.json()["error"]["code"] == "disk_full", refused.text
    assert "FRAMECAST_MIN_FREE_DISK" in refused.json()["error"]["message"]


def test_metrics_show_the_output_directory(server):
    writer = framecast.StreamWriter(framecast.ServerFile("disk/metrics.mkv"), server=server.url)
    writer.add_video_stream(frame_rate=FPS, width=W, height=H)
    with writer.open():
        writer.write_video_chunk(0, patterns(FPS, H, W))
    size = os.path.getsize(server.output_dir / "disk" / "metrics.mkv")
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    lines = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("framecast_output_dir")
    }
    assert lines["framecast_output_dir_bytes"] >= size
    assert lines["framecast_output_dir_free_bytes"] > 0
