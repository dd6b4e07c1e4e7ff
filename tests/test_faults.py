"""Real faults, each bounded in time: cut connections, killed processes, restarted peers."""

from __future__ import annotations

import io

import numpy as np
import pytest

from framecast import ServerFile, StreamWriter

from .faults import CuttingProxy
from .media import decode, patterns, read_stamp

W, H = 160, 120


@pytest.mark.parametrize("destination", ["server_file", "client_bytesio"])
def test_websocket_cuts_lose_and_duplicate_nothing(server, destination):
    frames = patterns(240, H, W)  # 13.8 MB of rgb24
    with CuttingProxy(server.port, cuts=6, min_bytes=200_000, max_bytes=1_800_000, seed=7) as proxy:
        dst = ServerFile(f"faults/cut-{destination}.mkv") if destination == "server_file" else io.BytesIO()
        events = []
        writer = StreamWriter(dst, format="matroska", server=proxy.url, reconnect_timeout=20,
                              on_event=events.append)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with writer.open():
            for k in range(0, len(frames), 8):
                writer.write_video_chunk(0, frames[k : k + 8])
        assert proxy.cuts == 6
    assert writer.reconnects >= 1  # (a cut during a reconnect is retried within that reconnect)
    assert any(e["event"] == "client_reconnected" for e in writer.events)
    source = server.output_dir / "faults" / f"cut-{destination}.mkv" if destination == "server_file" else dst
    (video,) = decode(source if not isinstance(source, io.BytesIO) else source.getvalue())["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(240))  # each frame once, in order
    assert writer.summary["streams"][0]["counters"]["frames"] == 240


@pytest.mark.parametrize("policy", ["drop", "block"])
def test_rtmp_server_restart_mid_stream_recovers(server, tmp_path, policy):
    from .peers import NginxRtmp

    fps, seconds = 15, 8
    frames = patterns(fps * seconds, H, W)
    with NginxRtmp(tmp_path / "nginx", record_append=True) as rtmp:
        writer = StreamWriter(rtmp.url("restart"), server=server.url, on_destination_drop=policy)
        writer.add_video_stream(frame_rate=fps, width=W, height=H)
        writer.add_audio_stream(sample_rate=16000, num_channels=1)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(16000 * seconds) / 16000)).astype(np.float32)[:, None]
        with writer.open():
            for second in range(seconds):
                if second == 3:
                    rtmp.restart(down_for=1.0, how="terminate")
                writer.write_video_chunk(0, frames[second * fps : (second + 1) * fps])
                writer.write_audio_chunk(1, tone[second * 16000 : (second + 1) * 16000])
        assert rtmp.wait_closed("restart", timeout=10)
        out = decode(str(rtmp.recording("restart")))
    names = [e["event"] for e in writer.events]
    assert "reconnecting" in names and "recovered" in names, writer.events
    assert writer.summary["reconnects"] >= 1 and writer.summary["state"] == "closed"
    video = next(s for s in out["streams"] if s["type"] == "video")
    stamps = [read_stamp(f) for f in video["frames"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # in order, no repeats
    assert stamps[0] < fps and stamps[-1] == fps * seconds - 1  # recorded before and after the restart
    dropped = writer.summary["streams"][0]["counters"]["dropped"]
    # What the restart can cost: frames in flight in the dead connection, and (drop) what the
    # outage buffer could not hold; the rest of the stream is all there.
    assert len(stamps) >= fps * seconds - fps - dropped
